// A real broker on RocksDB in a temporary directory with an io_context thread, plus helpers to
// start guests on it and to send and receive with an ordinary broker client.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "guest/guest_host.h"
#include "guest/test_wasm.h"

namespace witmq::guest::testing {

using namespace std::chrono_literals;

inline Message text_message(std::string_view text) {
  Message m;
  m.data.assign(text.begin(), text.end());
  m.format = Format::kRaw;
  return m;
}

inline std::string text_of(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 15s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return done();
}

class GuestHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = (std::filesystem::temp_directory_path() /
            ("witmq-guest-" + std::to_string(getpid()) + "-" + std::to_string(rd())))
               .string();
    std::filesystem::create_directories(dir_);
    thread_ = std::thread([this] { io_.run(); });
    broker::BrokerOptions o;
    o.data_dir = dir_;
    o.default_channel.max_deliveries = 3;
    o.default_channel.lease = 2000ms;
    o.default_channel.backoff_initial = 10ms;
    o.default_channel.backoff_max = 20ms;
    auto b = broker::Broker::open(o, io_.get_executor());
    ASSERT_TRUE(b.ok()) << b.error().to_string();
    broker_ = std::move(b).value();
    auto c = broker_->connect("");
    ASSERT_TRUE(c.ok());
    client_ = std::move(c).value();
  }

  void TearDown() override {
    hosts_.clear();
    client_.reset();
    broker_.reset();
    work_.reset();
    io_.stop();
    thread_.join();
    std::filesystem::remove_all(dir_);
  }

  GuestOptions options(const std::string& name, const std::string& stem) {
    GuestOptions o;
    o.name = name;
    o.module_path = wasm_path(stem);
    o.instruction_budget = 2'000'000;
    o.memory_pages = 16;
    o.batch_wait = 50ms;
    o.restart_backoff = 5ms;
    return o;
  }

  GuestHost* start(GuestOptions o) {
    auto h = GuestHost::load(*broker_, std::move(o), [this](LogLevel, std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_.emplace_back(line);
    });
    EXPECT_TRUE(h.ok()) << h.error().message;
    if (!h.ok()) return nullptr;
    Status st = (*h)->start();
    EXPECT_TRUE(st.ok()) << st.error().message;
    if (!st.ok()) return nullptr;
    hosts_.push_back(std::move(h).value());
    return hosts_.back().get();
  }

  void send(const std::string& channel, std::vector<Message> messages) {
    std::promise<Status> p;
    auto f = p.get_future();
    broker_->send(client_, channel, std::move(messages),
                  [&p](Status s) { p.set_value(std::move(s)); });
    Status st = f.get();
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  }

  std::vector<Message> receive(const std::string& channel, std::chrono::milliseconds wait) {
    std::promise<Result<std::vector<Message>>> p;
    auto f = p.get_future();
    broker_->receive(client_, {channel}, broker::ReceiveOptions{0, wait},
                     [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
    auto r = f.get();
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r.ok() ? std::move(r).value() : std::vector<Message>{};
  }

  broker::ChannelStats channel(const std::string& name) {
    auto s = broker_->channel_stats(name);
    return s.ok() ? *s : broker::ChannelStats{};
  }

  bool logged(const std::string& needle) {
    std::lock_guard lock(log_mu_);
    for (const auto& line : log_) {
      if (line.find(needle) != std::string::npos) return true;
    }
    return false;
  }

  // Waits for the dead-letter channel `dlq` to hold `n` messages and returns them.
  std::vector<Message> dead_letters(size_t n, const std::string& dlq = "guest.in.dlq") {
    std::vector<Message> out;
    eventually([&] { return channel(dlq).head_seq >= n; });
    while (out.size() < n) {
      auto got = receive(dlq, 2000ms);
      if (got.empty()) break;
      for (auto& m : got) {
        EXPECT_TRUE(broker_->complete_message(m).ok());
        out.push_back(std::move(m));
      }
    }
    return out;
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      io_.get_executor()};
  std::thread thread_;
  std::string dir_;
  std::unique_ptr<broker::Broker> broker_;
  broker::ClientPtr client_;
  std::vector<std::unique_ptr<GuestHost>> hosts_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

}  // namespace witmq::guest::testing
