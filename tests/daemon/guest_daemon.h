// What the daemon tests of guests share: the test guests' modules, a config file naming them, a
// daemon started with guests, and the messages guests send on, received over TCP.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {

// The test guest `stem` as tests/guest/ built it.
inline std::string wasm(const std::string& stem) {
  return std::string(WITMQ_GUEST_WASM_DIR) + "/" + stem + ".wasm";
}

// Writes `config` to a file in the temporary directory named after the running test; the caller
// removes it once the daemon has read it.
inline std::string write_config(const nlohmann::json& config) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  auto path =
      std::filesystem::temp_directory_path() /
      fmt::format("witmqd-{}-{}-{}.json", test->test_suite_name(), ::getpid(), test->name());
  std::ofstream(path) << config.dump(2);
  return path.string();
}

// Starts witmqd with `guests` (an array of guest entries) and waits until the log names each
// guest (running or refused).
inline std::unique_ptr<Daemon> start_with_guests(const nlohmann::json& guests) {
  const std::string config = write_config({{"guests", guests}});
  auto d = std::make_unique<Daemon>(std::vector<std::string>{"--config", config});
  std::filesystem::remove(config);
  for (const auto& g : guests) {
    EXPECT_TRUE(d->wait_for_log(fmt::format("guest '{}'", g["name"].get<std::string>())))
        << d->log();
  }
  return d;
}

// Receives (and completes) messages from `channel` until there are `n` or `wait` has passed.
inline std::vector<Message> receive_messages(Conn& c, const std::string& channel, size_t n,
                                             std::chrono::seconds wait = std::chrono::seconds(20)) {
  std::vector<Message> got;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (got.size() < n && std::chrono::steady_clock::now() < deadline) {
    Frame f = c.call(net::SubscribeTryReceive{channel, 1000}, std::chrono::seconds(5));
    auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
    if (!ok) {
      ADD_FAILURE() << "receiving from '" << channel << "': " << describe(f);
      break;
    }
    if (!ok->messages) continue;
    for (Message& m : *ok->messages) {
      EXPECT_FRAME(c.call(net::CompleteMessage{receipt_of(m)}), kCompleteMessageOk);
      got.push_back(std::move(m));
    }
  }
  return got;
}

inline std::vector<std::string> texts(const std::vector<Message>& messages) {
  std::vector<std::string> out;
  for (const Message& m : messages) out.push_back(text(m));
  return out;
}

// The text of the next message on `channel` (completed), or "(nothing on <channel>)".
inline std::string next_text(Conn& c, const std::string& channel,
                             std::chrono::seconds wait = std::chrono::seconds(20)) {
  std::vector<Message> got = receive_messages(c, channel, 1, wait);
  return got.empty() ? "(nothing on " + channel + ")" : text(got.front());
}

// Sends `n` messages (<tag>0, <tag>1, ...) to guest.in and returns the texts a TCP consumer
// receives from guest.out within `wait` (each completed): a round through a forwarding guest.
inline std::vector<std::string> forward_round(
    uint16_t port, int n, const std::string& tag,
    std::chrono::seconds wait = std::chrono::seconds(20)) {
  Conn producer(port);
  producer.hello();
  Conn consumer(port);
  consumer.hello();
  std::vector<Message> batch;
  for (int i = 0; i < n; ++i) batch.push_back(text_message(tag + std::to_string(i)));
  EXPECT_FRAME(producer.call(net::Send{"guest.in", std::move(batch)}), kSendOk);
  return texts(receive_messages(consumer, "guest.out", static_cast<size_t>(n), wait));
}

}  // namespace witmq::daemon::testing
