// A real broker on a real RocksDB in a fresh temporary directory, with an io_context thread, and
// blocking helpers for tests.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <random>
#include <string>
#include <thread>

#include "broker/broker.h"

namespace witmq::broker::testing {

inline std::string make_temp_dir(const std::string& tag) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             ("witmq-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The inverse of std::mt19937_64's tempering: an output back to the state word it came from (for
// tests that check that values meant to be unguessable do not come from such a generator).
inline uint64_t untemper_mt19937_64(uint64_t y) {
  auto undo_right = [](uint64_t v, int shift, uint64_t mask) {
    uint64_t x = v;
    for (int i = 0; i < 64 / shift + 1; ++i) x = v ^ ((x >> shift) & mask);
    return x;
  };
  auto undo_left = [](uint64_t v, int shift, uint64_t mask) {
    uint64_t x = v;
    for (int i = 0; i < 64 / shift + 1; ++i) x = v ^ ((x << shift) & mask);
    return x;
  };
  y = undo_right(y, 43, ~uint64_t{0});
  y = undo_left(y, 37, 0xFFF7EEE000000000ULL);
  y = undo_left(y, 17, 0x71D67FFFEDA60000ULL);
  return undo_right(y, 29, 0x5555555555555555ULL);
}

inline Message msg(std::string_view text, Metadata md = {}) {
  Message m;
  m.data.assign(text.begin(), text.end());
  m.format = Format::kRaw;
  if (!md.empty()) m.metadata = std::move(md);
  return m;
}

inline std::string text(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

inline std::string md(const Message& m, std::string_view key) {
  const std::string* v = find_metadata(m, key);
  return v ? *v : std::string();
}

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("broker");
    thread_ = std::thread([this] { io_.run(); });
    open();
  }

  void TearDown() override {
    broker_.reset();
    work_.reset();
    io_.stop();
    thread_.join();
    std::filesystem::remove_all(dir_);
  }

  virtual void configure(BrokerOptions&) {}

  void open() {
    BrokerOptions o;
    o.data_dir = dir_;
    configure(o);
    auto b = Broker::open(o, io_.get_executor());
    ASSERT_TRUE(b.ok()) << b.error().to_string();
    broker_ = std::move(*b);
  }

  void reopen() {
    broker_.reset();
    open();
  }

  ClientPtr connect(std::string_view name = "") {
    auto c = broker_->connect(name);
    EXPECT_TRUE(c.ok());
    return c.ok() ? *c : nullptr;
  }

  Status send(const ClientPtr& c, std::string_view ch, std::vector<Message> msgs) {
    std::promise<Status> p;
    auto f = p.get_future();
    broker_->send(c, ch, std::move(msgs), [&p](Status s) { p.set_value(std::move(s)); });
    return f.get();
  }

  void send_ok(const ClientPtr& c, std::string_view ch, std::vector<Message> msgs) {
    auto s = send(c, ch, std::move(msgs));
    ASSERT_TRUE(s.ok()) << s.error().to_string();
  }

  Result<std::vector<Message>> receive(const ClientPtr& c, std::vector<std::string> chs,
                                       std::optional<std::chrono::milliseconds> timeout =
                                           std::chrono::milliseconds(0),
                                       uint32_t max = 0) {
    std::promise<Result<std::vector<Message>>> p;
    auto f = p.get_future();
    broker_->receive(c, std::move(chs), ReceiveOptions{max, timeout},
                     [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
    return f.get();
  }

  std::vector<Message> receive_ok(const ClientPtr& c, const std::string& ch, uint32_t max = 0,
                                  std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
    auto r = receive(c, {ch}, timeout, max);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r.ok() ? std::move(*r) : std::vector<Message>{};
  }

  ChannelStats stats(std::string_view ch) {
    auto s = broker_->channel_stats(ch);
    EXPECT_TRUE(s.ok()) << s.error().to_string();
    return s.ok() ? *s : ChannelStats{};
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      io_.get_executor()};
  std::thread thread_;
  std::string dir_;
  std::unique_ptr<Broker> broker_;
};

}  // namespace witmq::broker::testing
