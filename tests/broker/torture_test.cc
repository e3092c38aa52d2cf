// Randomized concurrency: several threads doing random operations over a few channels (send,
// receive, complete, abandon, declare with changing dead-letter / requeue / drop policies,
// delete, purge, replay, disconnect, reconfigure), checking as they go that every receive is
// answered within its timeout plus a margin and that channel stats stay consistent; then the
// broker is closed and opened again and every confirmed send on a channel that was never
// deleted or purged must still be there (or have been completed).
//
// Seeded: the seed is printed, and WITMQ_BROKER_TORTURE_SEED=N runs each thread's sequence of
// operations again (the interleaving is the scheduler's). WITMQ_BROKER_TORTURE_MS sets how long
// the threads run (default 3000). Build with tools/test.sh --tsan or --sanitize to debug a
// failure under a sanitizer.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

// Channels p0 and p1 are never deleted or purged and keep requeue with unlimited deliveries: no
// confirmed message of theirs may be lost. v0 and v1 get everything else.
const std::vector<std::string> kKept = {"p0", "p1"};
const std::vector<std::string> kVolatile = {"v0", "v1"};
// A receive must be answered by its timeout plus this (a loaded machine; not a figure under test).
constexpr auto kAnswerMargin = 5s;

class TortureTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    o.default_channel.backoff_initial = 0ms;
    o.default_channel.max_deliveries = 3;
  }

  static ChannelSettings kept_settings() {
    ChannelSettings s;
    s.max_deliveries = 0;
    s.backoff_initial = 0ms;
    s.lease = 150ms;  // short: lease expiries race settles
    return s;
  }

  struct Shared {
    std::mutex mu;
    std::map<std::string, std::set<std::string>> confirmed;  // kept channel -> data sent
    std::set<std::string> completed;                         // data completed (kept channels)
  };

  void check_stats(const ChannelStats& st, bool kept, ChannelStats* last) {
    const std::string where = fmt::format("channel {}", st.name);
    EXPECT_LE(st.first_seq, st.head_seq) << where;
    for (const auto& sub : st.subscriptions) {
      const std::string w = fmt::format("{} subscription '{}'", where, sub.name);
      EXPECT_LE(sub.floor, sub.next) << w;
      EXPECT_LE(sub.next, st.head_seq) << w;
      EXPECT_LE(sub.lag, st.head_seq - sub.floor) << w;
      EXPECT_LE(sub.in_flight + sub.available, sub.lag) << w;
    }
    EXPECT_LE(st.in_flight, st.head_seq - st.first_seq) << where;
    if (kept && last) {
      EXPECT_GE(st.head_seq, last->head_seq) << where;
      EXPECT_GE(st.sends_total, last->sends_total) << where;
      EXPECT_GE(st.deliveries_total, last->deliveries_total) << where;
      EXPECT_GE(st.completes_total, last->completes_total) << where;
      EXPECT_GE(st.abandons_total, last->abandons_total) << where;
      EXPECT_GE(st.lease_expiries_total, last->lease_expiries_total) << where;
      EXPECT_GE(st.redeliveries_total, last->redeliveries_total) << where;
      for (const auto& sub : st.subscriptions) {
        for (const auto& old : last->subscriptions) {
          if (old.name == sub.name) {
            EXPECT_GE(sub.floor, old.floor) << where;
          }
        }
      }
    }
  }

  // One worker's life: random operations until `deadline`.
  void work(int id, uint64_t seed, std::chrono::steady_clock::time_point deadline, Shared& shared) {
    std::mt19937_64 rng(seed);
    auto pick = [&](uint64_t n) { return static_cast<size_t>(rng() % n); };
    auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
    auto any_channel = [&]() -> std::string {
      switch (pick(5)) {
        case 0:
        case 1:
          return kKept[pick(kKept.size())];
        case 4:
          return kVolatile[pick(kVolatile.size())] + ".dlq";
        default:
          return kVolatile[pick(kVolatile.size())];
      }
    };
    auto is_kept = [](const std::string& ch) {
      return std::find(kKept.begin(), kKept.end(), ch) != kKept.end();
    };
    ClientPtr client = connect(chance(50) ? fmt::format("worker-{}", id) : "");
    std::vector<Message> held;
    uint64_t sent = 0;
    std::map<std::string, ChannelStats> last_stats;

    auto settle = [&](const Message& m) {
      const std::string ch = md(m, "witmq-channel");
      if (chance(70)) {
        auto st = broker_->complete_message(m);
        if (st.ok()) {
          if (is_kept(ch)) {
            std::lock_guard lock(shared.mu);
            shared.completed.insert(text(m));
          }
        } else {
          EXPECT_EQ(st.error().code, ErrorCode::kStaleReceipt) << st.error().to_string();
        }
      } else {
        auto st = broker_->abandon_message(m);
        if (!st.ok()) {
          EXPECT_EQ(st.error().code, ErrorCode::kStaleReceipt) << st.error().to_string();
        }
      }
    };

    while (std::chrono::steady_clock::now() < deadline && !::testing::Test::HasFailure()) {
      const int op = static_cast<int>(rng() % 100);
      if (op < 30) {  // send
        const std::string ch = chance(60) ? kKept[pick(kKept.size())] : any_channel();
        std::vector<Message> batch;
        const size_t n = 1 + pick(5);
        for (size_t i = 0; i < n; ++i) batch.push_back(msg(fmt::format("w{}-{}", id, sent++)));
        std::vector<std::string> datas;
        for (auto& m : batch) datas.push_back(text(m));
        auto st = send(client, ch, std::move(batch));
        if (is_kept(ch)) {
          EXPECT_TRUE(st.ok()) << ch << ": " << st.error().to_string();
          if (st.ok()) {
            std::lock_guard lock(shared.mu);
            shared.confirmed[ch].insert(datas.begin(), datas.end());
          }
        } else if (!st.ok()) {
          EXPECT_EQ(st.error().code, ErrorCode::kNotFound) << ch << ": " << st.error().to_string();
        }
      } else if (op < 60) {  // receive, then settle some now and hold the rest
        std::vector<std::string> chs{any_channel()};
        if (chance(30)) chs.push_back(any_channel());
        if (chs.size() == 2 && chs[0] == chs[1]) chs.pop_back();
        const auto timeout = std::chrono::milliseconds(pick(30));
        auto p = std::make_shared<std::promise<Result<std::vector<Message>>>>();
        auto f = p->get_future();
        broker_->receive(client, chs, ReceiveOptions{static_cast<uint32_t>(1 + pick(8)), timeout},
                         [p](Result<std::vector<Message>> r) { p->set_value(std::move(r)); });
        if (f.wait_for(timeout + kAnswerMargin) != std::future_status::ready) {
          ADD_FAILURE() << "worker " << id << ": a receive on " << chs[0] << " with timeout "
                        << timeout.count() << " ms was not answered";
          return;
        }
        auto r = f.get();
        if (!r.ok()) {
          EXPECT_EQ(r.error().code, ErrorCode::kNotFound) << r.error().to_string();
          continue;
        }
        for (auto& m : *r) {
          if (chance(80)) {
            settle(m);
          } else {
            held.push_back(std::move(m));
          }
        }
      } else if (op < 68) {  // settle something held earlier
        if (!held.empty()) {
          const size_t i = pick(held.size());
          settle(held[i]);
          held.erase(held.begin() + static_cast<ptrdiff_t>(i));
        }
      } else if (op < 76) {  // declare with a changing policy
        ChannelSettings s;
        s.abandon = static_cast<AbandonPolicy>(pick(3));
        s.max_deliveries = static_cast<uint32_t>(pick(4));
        s.backoff_initial = std::chrono::milliseconds(pick(2) * 5);
        s.lease = std::chrono::milliseconds(100 + pick(200));
        const std::string ch = kVolatile[pick(kVolatile.size())];
        auto st = broker_->declare_channel(ch, s);
        EXPECT_TRUE(st.ok()) << ch << ": " << st.error().to_string();
      } else if (op < 80) {  // delete
        const std::string ch = kVolatile[pick(kVolatile.size())];
        auto st = broker_->delete_channel(chance(20) ? ch + ".dlq" : ch);
        if (!st.ok()) {
          EXPECT_EQ(st.error().code, ErrorCode::kNotFound) << st.error().to_string();
        }
      } else if (op < 83) {  // purge
        auto r = broker_->purge(kVolatile[pick(kVolatile.size())]);
        if (!r.ok()) {
          EXPECT_EQ(r.error().code, ErrorCode::kNotFound) << r.error().to_string();
        }
      } else if (op < 87) {  // replay dead letters
        auto r =
            broker_->replay_dead_letters(kVolatile[pick(kVolatile.size())] + ".dlq", 1 + pick(20));
        if (!r.ok()) {
          EXPECT_EQ(r.error().code, ErrorCode::kNotFound) << r.error().to_string();
        }
      } else if (op < 90) {  // disconnect: what it holds is released
        broker_->disconnect(client);
        held.clear();
        client = connect(chance(50) ? fmt::format("worker-{}", id) : "");
      } else if (op < 93) {  // reconfigure
        GuestConfiguration config;
        config.channels.push_back(any_channel());
        if (chance(50)) config.extensions = Metadata{{"batch-size", std::to_string(1 + pick(5))}};
        auto st = broker_->update_guest_configuration(client, config);
        if (!st.ok()) {
          EXPECT_EQ(st.error().code, ErrorCode::kNotFound) << st.error().to_string();
        }
      } else {  // stats
        const std::string ch = any_channel();
        auto st = broker_->channel_stats(ch);
        if (!st.ok()) {
          EXPECT_FALSE(is_kept(ch)) << st.error().to_string();
          continue;
        }
        auto it = last_stats.find(ch);
        check_stats(*st, is_kept(ch), it == last_stats.end() ? nullptr : &it->second);
        last_stats[ch] = *st;
      }
    }
    broker_->disconnect(client);
  }
};

TEST_F(TortureTest, RandomOperationsKeepEveryPromise) {
  const uint64_t seed = env_or("WITMQ_BROKER_TORTURE_SEED", std::random_device{}());
  const auto run_for = std::chrono::milliseconds(env_or("WITMQ_BROKER_TORTURE_MS", 3000));
  constexpr int kWorkers = 6;
  std::cout << "torture seed " << seed << " (WITMQ_BROKER_TORTURE_SEED=" << seed
            << " replays each thread's operations), " << kWorkers << " threads for "
            << run_for.count() << " ms" << std::endl;
  SCOPED_TRACE(fmt::format("WITMQ_BROKER_TORTURE_SEED={}", seed));
  RecordProperty("seed", std::to_string(seed));

  for (const auto& ch : kKept) ASSERT_TRUE(broker_->declare_channel(ch, kept_settings()).ok());
  Shared shared;
  const auto deadline = std::chrono::steady_clock::now() + run_for;
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) {
    threads.emplace_back([&, i] { work(i, seed * 1000 + i, deadline, shared); });
  }
  for (auto& t : threads) t.join();
  if (HasFailure()) return;

  // Closed and opened again: everything confirmed on the kept channels is still there.
  reopen();
  // A long lease for the drain: a slow (sanitizer) build must not see its receipts expire.
  for (const auto& ch : kKept) {
    ChannelSettings s = kept_settings();
    s.lease = 1h;
    ASSERT_TRUE(broker_->declare_channel(ch, s).ok());
  }
  auto drain = connect();
  std::set<std::string> there;
  for (const auto& ch : kKept) {
    for (int round = 0; round < 10'000; ++round) {
      auto got = receive_ok(drain, ch, 1000);
      if (got.empty()) break;
      for (auto& m : got) {
        there.insert(text(m));
        auto st = broker_->complete_message(m);
        ASSERT_TRUE(st.ok()) << st.error().to_string();
      }
    }
  }
  size_t confirmed = 0, missing = 0;
  std::string first_missing;
  for (const auto& [ch, datas] : shared.confirmed) {
    for (const auto& data : datas) {
      ++confirmed;
      if (!there.count(data) && !shared.completed.count(data)) {
        if (missing++ == 0) first_missing = ch + ": " + data;
      }
    }
  }
  EXPECT_EQ(missing, 0u) << "confirmed sends lost, first " << first_missing;
  EXPECT_GT(confirmed, 0u);
  std::cout << "torture: " << confirmed << " confirmed sends on kept channels, "
            << shared.completed.size() << " completed during the run, " << there.size()
            << " still there after the restart" << std::endl;
  // Nothing of the deleted channels was left behind for the restart to remove.
  EXPECT_EQ(broker_->store_stats().recovered_orphans.total(), 0u);
}

}  // namespace
}  // namespace witmq::broker::testing
