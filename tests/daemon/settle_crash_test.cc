// Settlements under load against the real witmqd, SIGKILLed at a random moment: no message whose
// complete-message was answered ok is delivered again after the restart, and no confirmed send is
// lost. The seed is printed; WITMQ_SETTLE_CRASH_SEED reruns one.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

// The reply to `id`, or nullopt once the connection is gone (the daemon was killed).
std::optional<Frame> reply_or_gone(Conn& c, uint32_t id, std::chrono::milliseconds timeout = 10s) {
  for (;;) {
    Conn::Read r = c.read(timeout);
    if (r.status != Conn::Status::kFrame) return std::nullopt;
    if (r.frame.request_id == id) return std::move(r.frame);
  }
}

// What every client saw, shared by the threads of all rounds.
struct Ledger {
  std::mutex mu;
  std::set<std::string> completed;       // complete-message answered ok
  std::set<std::string> delivered;       // ever delivered
  std::vector<std::string> came_back;    // delivered again after their complete was answered ok
  std::map<std::string, uint64_t> sent;  // producer prefix -> sends confirmed (all below it)

  void delivered_now(const std::string& t) {
    std::lock_guard lock(mu);
    delivered.insert(t);
    if (completed.count(t)) came_back.push_back(t);
  }
  void completed_now(const std::string& t) {
    std::lock_guard lock(mu);
    completed.insert(t);
  }
};

// Receives and completes every message, pipelining the completes of a batch, until the
// connection is gone or `stop` is set. Returns the completes answered ok.
uint64_t consume(uint16_t port, const std::string& ch, Ledger& ledger,
                 const std::atomic<bool>& stop) {
  Conn c(port);
  c.hello();
  uint64_t completes = 0;
  while (!stop.load()) {
    const uint32_t rid = c.send(net::SubscribeTryReceive{ch, 100});
    auto f = reply_or_gone(c, rid);
    if (!f) break;
    auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f->body);
    if (!ok) {
      ADD_FAILURE() << "receive: " << describe(*f);
      break;
    }
    if (!ok->messages) continue;
    std::map<uint32_t, std::string> pending;
    for (const Message& m : *ok->messages) {
      const std::string t = text(m);
      ledger.delivered_now(t);
      pending[c.send(net::CompleteMessage{receipt_of(m)})] = t;
    }
    while (!pending.empty()) {
      Conn::Read r = c.read(10s);
      if (r.status != Conn::Status::kFrame) return completes;
      auto it = pending.find(r.frame.request_id);
      if (it == pending.end()) continue;
      if (r.frame.type() == net::FrameType::kCompleteMessageOk) {
        ledger.completed_now(it->second);
        ++completes;
      } else {
        ADD_FAILURE() << "complete of " << it->second << ": " << describe(r.frame);
      }
      pending.erase(it);
    }
  }
  return completes;
}

// Sends "<who><n>" with up to 32 sends unconfirmed until the connection is gone or `stop` is
// set; records the confirmed prefix.
void produce(uint16_t port, const std::string& ch, const std::string& who, Ledger& ledger,
             const std::atomic<bool>& stop) {
  Conn c(port);
  c.hello();
  std::map<uint32_t, uint64_t> outstanding;
  uint64_t next = 0;
  while (next < 1'000'000) {
    while (outstanding.size() < 32 && !stop.load()) {
      const uint32_t id = c.send(net::Send{ch, {text_message(who + std::to_string(next))}});
      outstanding[id] = next++;
    }
    if (outstanding.empty()) return;
    Conn::Read r = c.read(10s);
    if (r.status != Conn::Status::kFrame) return;
    auto it = outstanding.find(r.frame.request_id);
    if (it == outstanding.end() || r.frame.type() != net::FrameType::kSendOk) {
      ADD_FAILURE() << "send: " << describe(r.frame);
      return;
    }
    {
      std::lock_guard lock(ledger.mu);
      ledger.sent[who] = it->second + 1;
    }
    outstanding.erase(it);
  }
}

TEST(SettleCrashTest, NoAnsweredCompleteComesBackAfterSigkill) {
  uint64_t seed = std::random_device{}();
  if (const char* env = std::getenv("WITMQ_SETTLE_CRASH_SEED")) seed = std::stoull(env);
  std::cout << "settle crash test: seed " << seed << " (WITMQ_SETTLE_CRASH_SEED=" << seed
            << " reruns it)\n";
  std::mt19937_64 rng(seed);

  Daemon d({"--set", "default-channel={\"durability\": \"group\"}"});
  const std::string ch = "crash.settle";
  Ledger ledger;
  constexpr int kRounds = 3;
  constexpr int kProducers = 2;
  constexpr int kConsumers = 2;
  uint64_t completes = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> answered{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < kProducers; ++p) {
      const std::string who = "r" + std::to_string(round) + "p" + std::to_string(p) + "-";
      threads.emplace_back([&, who] { produce(d.port(), ch, who, ledger, stop); });
    }
    for (int c = 0; c < kConsumers; ++c) {
      threads.emplace_back([&] { answered += consume(d.port(), ch, ledger, stop); });
    }
    // SIGKILL at a random moment of the load, once completes are being answered.
    const auto kill_after = std::chrono::milliseconds(200 + rng() % 1300);
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    auto completed = [&] {
      std::lock_guard lock(ledger.mu);
      return ledger.completed.size();
    };
    const size_t before = completed();
    while (completed() < before + 100 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);  // waiting for the load to start, bounded
    }
    std::this_thread::sleep_for(kill_after);
    EXPECT_EQ(d.stop(SIGKILL), 128 + SIGKILL);
    stop = true;
    for (auto& t : threads) t.join();
    completes += answered.load();
    std::cout << "round " << round << ": killed after " << kill_after.count() << " ms, "
              << answered.load() << " completes answered\n";
    d.start();
  }

  // Drain what is left, checking each delivery the same way.
  for (int empty = 0, tries = 0; empty < 2 && tries < 200; ++tries) {
    {
      Conn c(d.port());
      c.hello();
      const uint32_t rid = c.send(net::SubscribeTryReceive{ch, 200});
      auto f = reply_or_gone(c, rid);
      ASSERT_TRUE(f.has_value());
      auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f->body);
      ASSERT_NE(ok, nullptr) << describe(*f);
      if (!ok->messages || ok->messages->empty()) {
        ++empty;
        continue;
      }
      empty = 0;
      for (const Message& m : *ok->messages) {
        ledger.delivered_now(text(m));
        Frame done = c.call(net::CompleteMessage{receipt_of(m)});
        ASSERT_FRAME(done, kCompleteMessageOk);
        ledger.completed_now(text(m));
      }
    }
  }

  EXPECT_GT(completes, 0u);
  EXPECT_TRUE(ledger.came_back.empty())
      << ledger.came_back.size() << " messages were delivered again after their complete was "
      << "answered ok, the first " << ledger.came_back.front() << " (seed " << seed << ")";
  size_t lost = 0;
  std::string first_lost;
  for (const auto& [who, n] : ledger.sent) {
    size_t missing = 0;
    for (uint64_t i = 0; i < n; ++i) {
      if (!ledger.delivered.count(who + std::to_string(i))) {
        ++missing;
        if (!lost++) first_lost = who + std::to_string(i);
      }
    }
    std::cout << who << ": " << n << " sends confirmed, " << missing << " never delivered\n";
  }
  EXPECT_EQ(lost, 0u) << "confirmed sends never delivered, the first " << first_lost << " (seed "
                      << seed << ")";
  std::cout << "settle crash test: " << completes << " completes answered, "
            << ledger.delivered.size() << " messages delivered\n";
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace witmq::daemon::testing
