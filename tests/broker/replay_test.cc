// Replaying dead letters: a large replay goes in bounded steps, one write each, so that other
// clients' writes interleave with it instead of queuing behind all of it.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <limits>
#include <mutex>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;
using storage::Durability;

class ReplayTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    o.store.test_hooks.before_write = [this] {
      const uint64_t n = ++writes_;
      if (n == pause_at_.load()) {
        paused_.set_value();
        resume_.get_future().wait();
      }
      return ok_status();
    };
  }

  // Fills "src.dlq" with `n` dead letters of "src" (abandoned with the dead-letter policy), then
  // makes "src" a `sync` channel: every write of a move back is then one of its own in the store
  // unless the broker puts several moves in it.
  void dead_letters(uint32_t n) {
    ChannelSettings s;
    s.durability = Durability::kNone;
    s.abandon = AbandonPolicy::kDeadLetter;
    s.max_deliveries = 0;
    ASSERT_TRUE(broker_->declare_channel("src", s).ok());
    auto c = connect();
    std::vector<Message> batch;
    for (uint32_t i = 0; i < n; ++i) batch.push_back(msg("m" + std::to_string(i)));
    send_ok(c, "src", std::move(batch));
    auto got = receive_ok(c, "src", n);
    ASSERT_EQ(got.size(), n);
    std::atomic<uint32_t> left{n};
    std::promise<void> all;
    for (const auto& m : got) {
      broker_->abandon_message(m, [&](Status st) {
        EXPECT_TRUE(st.ok()) << st.error().to_string();
        if (--left == 0) all.set_value();
      });
    }
    ASSERT_EQ(all.get_future().wait_for(60s), std::future_status::ready);
    ASSERT_EQ(stats("src.dlq").depth, n);
    s.durability = Durability::kSync;
    ASSERT_TRUE(broker_->declare_channel("src", s).ok());
  }

  std::atomic<uint64_t> writes_{0};
  // The commit thread stops before write number pause_at_ until resume_ is set.
  std::atomic<uint64_t> pause_at_{0};
  std::promise<void> paused_, resume_;
};

TEST_F(ReplayTest, AReplayWritesItsMovesInBoundedSteps) {
  ASSERT_NO_FATAL_FAILURE(dead_letters(2000));
  const uint64_t before = writes_.load();
  auto moved = broker_->replay_dead_letters("src.dlq", std::numeric_limits<uint64_t>::max());
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  EXPECT_EQ(*moved, 2000u);
  // Steps of at most 256 messages: 8 of them, each one write of the moves plus the dead-letter
  // channel's own bookkeeping (its cursor, its floor), not one write per message.
  EXPECT_LE(writes_.load() - before, 8u * 3 + 4);
  EXPECT_EQ(stats("src.dlq").depth, 0u);
  EXPECT_EQ(stats("src").depth, 2000u);
}

// The replay's writes and the sends of others share the store's one commit path. While a replay
// runs, a send waits for the replay write being made and its own, never for the rest of the
// replay (a 955-message replay into a sync channel used to hold sends for seconds: one fsync per
// message, all queued at once).
TEST_F(ReplayTest, ASendDuringAReplayWaitsForAtMostOneOfItsWrites) {
  ASSERT_NO_FATAL_FAILURE(dead_letters(1000));
  auto c = connect();
  send_ok(c, "probe", {msg("first")});  // the channel exists: the probe's send is one write
  const uint64_t start = writes_.load();
  pause_at_ = start + 2;  // a write well into the replay
  auto replay = std::async(std::launch::async, [this] {
    return broker_->replay_dead_letters("src.dlq", std::numeric_limits<uint64_t>::max());
  });
  ASSERT_EQ(paused_.get_future().wait_for(30s), std::future_status::ready);
  // The commit thread is held at that write; whatever the replay queued so far waits behind it.
  const uint64_t held_at = writes_.load();
  std::promise<uint64_t> answered;
  broker_->send(c, "probe", {msg("probe")}, [&](Status st) {
    EXPECT_TRUE(st.ok()) << st.error().to_string();
    answered.set_value(writes_.load());  // on the commit thread, right after its write
  });
  resume_.set_value();
  auto at = answered.get_future();
  ASSERT_EQ(at.wait_for(60s), std::future_status::ready);
  // The held write, at most one more the replay had queued meanwhile (its bookkeeping before its
  // next step), then the send's.
  EXPECT_LE(at.get() - held_at, 2u);
  auto moved = replay.get();
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  EXPECT_EQ(*moved, 1000u);
  EXPECT_EQ(stats("src").depth, 1000u);
  EXPECT_EQ(stats("src.dlq").depth, 0u);
}

// Steps are cut into runs of one source and at most kReplayStepBytes: every dead letter goes back
// to its own source once, in the order it was dead-lettered.
TEST_F(ReplayTest, DeadLettersOfSeveralSourcesGoBackInOrderOnce) {
  ChannelSettings s;
  s.durability = Durability::kNone;
  s.abandon = AbandonPolicy::kDeadLetter;
  s.max_deliveries = 0;
  s.dead_letter_channel = "shared.dead";
  ASSERT_TRUE(broker_->declare_channel("a", s).ok());
  ASSERT_TRUE(broker_->declare_channel("b", s).ok());
  auto c = connect();
  // "a" sends 300 KB messages (a step's bytes hold three), "b" small ones; they are dead-lettered
  // alternately, so that the dead-letter channel holds a0 b0 a1 b1 ...
  for (int i = 0; i < 6; ++i) {
    std::string big = "a" + std::to_string(i) + "|" + std::string(300 << 10, 'x');
    send_ok(c, "a", {msg(big)});
    send_ok(c, "b", {msg("b" + std::to_string(i) + "|")});
  }
  for (int i = 0; i < 6; ++i) {
    for (const char* ch : {"a", "b"}) {
      auto got = receive_ok(c, ch, 1);
      ASSERT_EQ(got.size(), 1u);
      ASSERT_TRUE(broker_->abandon_message(got[0]).ok());
    }
  }
  ASSERT_EQ(stats("shared.dead").depth, 12u);
  auto moved = broker_->replay_dead_letters("shared.dead", std::numeric_limits<uint64_t>::max());
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  EXPECT_EQ(*moved, 12u);
  EXPECT_EQ(stats("shared.dead").depth, 0u);
  for (const char* ch : {"a", "b"}) {
    std::vector<std::string> back;
    for (const auto& m : receive_ok(c, ch, 100)) back.push_back(text(m).substr(0, 3));
    std::vector<std::string> want;
    for (int i = 0; i < 6; ++i) want.push_back(std::string(ch) + std::to_string(i) + "|");
    EXPECT_EQ(back, want) << ch;
  }
}

// Dead letters with no source to go back to (sent to the dead-letter channel directly) stay, and
// do not hide the ones behind them, however many more of them than a step holds.
TEST_F(ReplayTest, DeadLettersWithoutASourceDoNotHideTheOnesBehindThem) {
  ChannelSettings s;
  s.durability = Durability::kNone;
  s.abandon = AbandonPolicy::kDeadLetter;
  s.max_deliveries = 0;
  ASSERT_TRUE(broker_->declare_channel("src", s).ok());
  auto c = connect();
  std::vector<Message> direct;
  for (int i = 0; i < 1200; ++i) direct.push_back(msg("direct"));
  send_ok(c, "src.dlq", std::move(direct));
  send_ok(c, "src", {msg("real")});
  auto got = receive_ok(c, "src", 1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(broker_->abandon_message(got[0]).ok());
  ASSERT_EQ(stats("src.dlq").depth, 1201u);
  auto moved = broker_->replay_dead_letters("src.dlq", std::numeric_limits<uint64_t>::max());
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  EXPECT_EQ(*moved, 1u);
  const ChannelStats dlq = stats("src.dlq");
  EXPECT_EQ(dlq.depth, 1200u);
  EXPECT_EQ(dlq.in_flight, 0u);
  auto back = receive_ok(c, "src", 10);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(text(back[0]), "real");
  // The ones left are available again, to consumers and to the next replay alike.
  EXPECT_EQ(receive_ok(c, "src.dlq", 2000).size(), 1200u);
}

}  // namespace
}  // namespace witmq::broker::testing
