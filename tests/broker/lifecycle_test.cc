// The message lifecycle of DESIGN.md, transition by transition, against a real store.
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <limits>
#include <thread>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

class LifecycleTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    o.default_channel.lease = 300ms;
    o.default_channel.backoff_initial = 0ms;
    o.default_channel.max_deliveries = 3;
  }
};

TEST_F(LifecycleTest, DeliveredMessageCarriesIdentityAndData) {
  auto c = connect("worker");
  Message m = msg("hello", {{"k", "v"}});
  m.format = Format::kCloudevents;
  send_ok(c, "orders", {m});
  auto got = receive_ok(c, "orders");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(text(got[0]), "hello");
  EXPECT_EQ(got[0].format, Format::kCloudevents);
  EXPECT_EQ(md(got[0], "k"), "v");
  EXPECT_EQ(md(got[0], "witmq-id"), "orders/0");
  EXPECT_EQ(md(got[0], "witmq-channel"), "orders");
  EXPECT_EQ(md(got[0], "witmq-attempt"), "1");
  EXPECT_FALSE(md(got[0], "witmq-receipt").empty());
  EXPECT_FALSE(md(got[0], "witmq-published-at").empty());
}

TEST_F(LifecycleTest, ProducerCannotForgeReservedKeys) {
  auto c = connect();
  send_ok(c, "q",
          {msg("x", {{"witmq-receipt", "r1.1.1.0.1"}, {"witmq-attempt", "9"}, {"a", "b"}})});
  auto got = receive_ok(c, "q");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(md(got[0], "witmq-attempt"), "1");
  EXPECT_EQ(md(got[0], "a"), "b");
  int receipts = 0;
  for (auto& [k, v] : *got[0].metadata) receipts += k == "witmq-receipt";
  EXPECT_EQ(receipts, 1);
  EXPECT_NE(md(got[0], "witmq-receipt"), "r1.1.1.0.1");
}

TEST_F(LifecycleTest, AcquiredMessageIsNotDeliveredTwice) {
  auto c = connect();
  send_ok(c, "q", {msg("one")});
  ASSERT_EQ(receive_ok(c, "q").size(), 1u);
  EXPECT_TRUE(receive_ok(c, "q").empty());
  auto st = stats("q");
  EXPECT_EQ(st.in_flight, 1u);
  EXPECT_EQ(st.depth, 1u);
}

TEST_F(LifecycleTest, CompleteSettlesAndSecondCompleteIsStale) {
  auto c = connect();
  send_ok(c, "q", {msg("one")});
  auto got = receive_ok(c, "q");
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(broker_->complete_message(got[0]).ok());
  auto again = broker_->complete_message(got[0]);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kStaleReceipt);
  auto st = stats("q");
  EXPECT_EQ(st.depth, 0u);
  EXPECT_EQ(st.in_flight, 0u);
  EXPECT_EQ(st.completes_total, 1u);
  EXPECT_TRUE(receive_ok(c, "q").empty());
}

TEST_F(LifecycleTest, SettleWithoutOrWithBadReceiptIsRefused) {
  auto none = broker_->complete_message(msg("no receipt"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(none.error().message.find("witmq-receipt"), std::string::npos);
  auto garbage = broker_->abandon_message(msg("x", {{"witmq-receipt", "nonsense"}}));
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code, ErrorCode::kInvalidArgument);
  auto unknown = broker_->complete_message(msg("x", {{"witmq-receipt", "r1.999.1.0.1"}}));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kStaleReceipt);
}

TEST_F(LifecycleTest, AbandonRequeuesWithAttemptCounted) {
  auto c = connect();
  send_ok(c, "q", {msg("one")});
  auto first = receive_ok(c, "q");
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(broker_->abandon_message(first[0]).ok());
  auto second = receive_ok(c, "q");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(text(second[0]), "one");
  EXPECT_EQ(md(second[0], "witmq-attempt"), "2");
  EXPECT_EQ(md(second[0], "witmq-id"), md(first[0], "witmq-id"));
  // The first delivery's receipt no longer settles anything.
  auto stale = broker_->complete_message(first[0]);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kStaleReceipt);
  EXPECT_TRUE(broker_->complete_message(second[0]).ok());
}

TEST_F(LifecycleTest, LeaseExpiryMakesMessageAvailableAndOldReceiptStale) {
  auto c = connect();
  send_ok(c, "q", {msg("one")});
  auto first = receive_ok(c, "q");
  ASSERT_EQ(first.size(), 1u);
  // Blocks until the lease (300 ms) expires and the message comes back.
  auto second = receive_ok(c, "q", 0, 5000ms);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(md(second[0], "witmq-attempt"), "2");
  auto stale = broker_->complete_message(first[0]);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kStaleReceipt);
  EXPECT_EQ(stats("q").lease_expiries_total, 1u);
}

TEST_F(LifecycleTest, ExtendLeaseKeepsMessageAcquired) {
  auto c = connect();
  send_ok(c, "q", {msg("one")});
  auto got = receive_ok(c, "q");
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(broker_->extend_lease(got[0], 5000ms).ok());
  EXPECT_TRUE(receive_ok(c, "q", 0, 600ms).empty());  // well past the original 300 ms lease
  EXPECT_TRUE(broker_->complete_message(got[0]).ok());
}

TEST_F(LifecycleTest, MaxDeliveriesDeadLettersWithReasonAndOrigin) {
  auto c = connect();
  send_ok(c, "jobs", {msg("poison", {{"trace", "t1"}})});
  for (int i = 1; i <= 3; ++i) {
    auto got = receive_ok(c, "jobs", 0, 2000ms);
    ASSERT_EQ(got.size(), 1u) << "attempt " << i;
    EXPECT_EQ(md(got[0], "witmq-attempt"), std::to_string(i));
    ASSERT_TRUE(broker_->abandon_message(got[0]).ok());
  }
  EXPECT_TRUE(receive_ok(c, "jobs", 0, 200ms).empty());
  auto dead = receive_ok(c, "jobs.dlq", 0, 2000ms);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text(dead[0]), "poison");
  EXPECT_EQ(md(dead[0], "trace"), "t1");
  EXPECT_EQ(md(dead[0], "witmq-dlq-reason"), "max-deliveries");
  EXPECT_EQ(md(dead[0], "witmq-dlq-source"), "jobs");
  EXPECT_EQ(md(dead[0], "witmq-dlq-source-sequence"), "0");
  EXPECT_EQ(md(dead[0], "witmq-dlq-attempts"), "3");
  EXPECT_EQ(stats("jobs").dead_letters_total, 1u);
  EXPECT_EQ(stats("jobs").depth, 0u);
  EXPECT_TRUE(stats("jobs.dlq").is_dead_letter);
}

TEST_F(LifecycleTest, LeaseExpiriesCountTowardMaxDeliveries) {
  auto c = connect();
  send_ok(c, "jobs", {msg("slow")});
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(receive_ok(c, "jobs", 0, 3000ms).size(), 1u);
  auto dead = receive_ok(c, "jobs.dlq", 0, 3000ms);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(md(dead[0], "witmq-dlq-reason"), "max-deliveries");
}

TEST_F(LifecycleTest, DeadLetterPolicyMovesAtOnceAndDropForgets) {
  ChannelSettings dl;
  dl.abandon = AbandonPolicy::kDeadLetter;
  ASSERT_TRUE(broker_->declare_channel("a", dl).ok());
  ChannelSettings drop;
  drop.abandon = AbandonPolicy::kDrop;
  ASSERT_TRUE(broker_->declare_channel("b", drop).ok());
  auto c = connect();
  send_ok(c, "a", {msg("x")});
  send_ok(c, "b", {msg("y")});
  auto ga = receive_ok(c, "a");
  auto gb = receive_ok(c, "b");
  ASSERT_EQ(ga.size(), 1u);
  ASSERT_EQ(gb.size(), 1u);
  ASSERT_TRUE(broker_->abandon_message(ga[0]).ok());
  ASSERT_TRUE(broker_->abandon_message(gb[0]).ok());
  auto dead = receive_ok(c, "a.dlq", 0, 2000ms);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(md(dead[0], "witmq-dlq-reason"), "abandoned");
  EXPECT_TRUE(receive_ok(c, "a", 0, 100ms).empty());
  EXPECT_TRUE(receive_ok(c, "b", 0, 100ms).empty());
  EXPECT_EQ(stats("b").depth, 0u);
  EXPECT_FALSE(broker_->channel_stats("b.dlq").ok());
}

TEST_F(LifecycleTest, RequeueBackoffDelaysRedelivery) {
  ChannelSettings s;
  s.backoff_initial = 400ms;
  s.backoff_max = 400ms;
  ASSERT_TRUE(broker_->declare_channel("slow", s).ok());
  auto c = connect();
  send_ok(c, "slow", {msg("x")});
  auto got = receive_ok(c, "slow");
  ASSERT_EQ(got.size(), 1u);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(broker_->abandon_message(got[0]).ok());
  EXPECT_TRUE(receive_ok(c, "slow").empty());  // not yet
  auto again = receive_ok(c, "slow", 0, 3000ms);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 350ms);
  EXPECT_EQ(md(again[0], "witmq-attempt"), "2");
}

// A lease cut short (0 releases the message, as the protocol server does for messages it cannot
// deliver) ends then, not at the deadline the timer was armed for. Before, the message stayed
// acquired until its original lease ran out.
TEST_F(LifecycleTest, ALeaseCutShortEndsAtOnce) {
  ChannelSettings s;
  s.lease = 30s;
  ASSERT_TRUE(broker_->declare_channel("cut", s).ok());
  auto c = connect();
  send_ok(c, "cut", {msg("m")});
  auto got = receive_ok(c, "cut");
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(broker_->extend_lease(got[0], 0ms).ok());
  auto again = receive_ok(c, "cut", 1, 5000ms);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(md(again[0], "witmq-attempt"), "2");
}

TEST_F(LifecycleTest, ReplayMovesDeadLettersBackToSource) {
  ChannelSettings dl;
  dl.abandon = AbandonPolicy::kDeadLetter;
  ASSERT_TRUE(broker_->declare_channel("src", dl).ok());
  auto c = connect();
  send_ok(c, "src", {msg("m0"), msg("m1"), msg("m2")});
  auto got = receive_ok(c, "src", 3);
  ASSERT_EQ(got.size(), 3u);
  for (auto& m : got) ASSERT_TRUE(broker_->abandon_message(m).ok());
  // Wait until all three moves are confirmed in the dead-letter channel.
  for (int i = 0; i < 200; ++i) {
    auto dlq = broker_->channel_stats("src.dlq");
    if (dlq.ok() && dlq->head_seq == 3) break;
    std::this_thread::sleep_for(10ms);
  }
  auto browse = broker_->browse("src.dlq", 0, 10);
  ASSERT_TRUE(browse.ok());
  ASSERT_EQ(browse->size(), 3u);
  auto moved = broker_->replay_dead_letters("src.dlq", 100);
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  EXPECT_EQ(*moved, 3u);
  EXPECT_EQ(stats("src.dlq").depth, 0u);
  // Each move is its own write, so the moves may arrive in more than one receive.
  std::vector<Message> back;
  while (back.size() < 3) {
    auto got = receive_ok(c, "src", 10, 2000ms);
    ASSERT_FALSE(got.empty());
    for (auto& m : got) back.push_back(std::move(m));
  }
  std::set<std::string> texts;
  for (auto& m : back) {
    texts.insert(text(m));
    EXPECT_EQ(md(m, "witmq-dlq-reason"), "");  // dead-letter bookkeeping is gone
  }
  EXPECT_EQ(texts, (std::set<std::string>{"m0", "m1", "m2"}));
}

TEST_F(LifecycleTest, ReplayLeavesMessagesWithoutASourceAndEnds) {
  // A message sent to a dead-letter channel directly has no source to go back to. Replay used to
  // put it back and take it again forever, spinning on the caller's thread.
  ChannelSettings dl;
  dl.abandon = AbandonPolicy::kDeadLetter;
  ASSERT_TRUE(broker_->declare_channel("src", dl).ok());
  auto c = connect();
  send_ok(c, "src.dlq", {msg("direct")});
  send_ok(c, "src", {msg("m0")});
  auto got = receive_ok(c, "src", 1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(broker_->abandon_message(got[0]).ok());
  for (int i = 0; i < 200 && stats("src.dlq").head_seq < 2; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(stats("src.dlq").head_seq, 2u);

  auto replay = std::async(std::launch::async, [this] {
    return broker_->replay_dead_letters("src.dlq", std::numeric_limits<uint64_t>::max());
  });
  if (replay.wait_for(10s) != std::future_status::ready) {
    ADD_FAILURE() << "replay-dead-letters did not end within 10 s";
    std::_Exit(1);  // the replay cannot be stopped; the test binary cannot end cleanly
  }
  auto moved = replay.get();
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  EXPECT_EQ(*moved, 1u);
  // The direct message stays in the dead-letter channel, available again.
  const ChannelStats dlq = stats("src.dlq");
  EXPECT_EQ(dlq.depth, 1u);
  EXPECT_EQ(dlq.in_flight, 0u);
  auto left = receive_ok(c, "src.dlq", 10);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(text(left[0]), "direct");
  auto back = receive_ok(c, "src", 10, 2000ms);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(text(back[0]), "m0");
}

TEST_F(LifecycleTest, PurgeRemovesAvailableButNotAcquired) {
  auto c = connect();
  std::vector<Message> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(msg("m" + std::to_string(i)));
  send_ok(c, "q", batch);
  auto held = receive_ok(c, "q", 2);
  ASSERT_EQ(held.size(), 2u);
  auto purged = broker_->purge("q");
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 8u);
  EXPECT_TRUE(receive_ok(c, "q").empty());
  EXPECT_TRUE(broker_->complete_message(held[0]).ok());
  EXPECT_TRUE(broker_->complete_message(held[1]).ok());
  EXPECT_EQ(stats("q").depth, 0u);
}

TEST_F(LifecycleTest, AutoSettlementCompletesOnDelivery) {
  auto c = connect();
  ASSERT_TRUE(
      broker_->update_guest_configuration(c, {{"q"}, Metadata{{"settlement", "auto"}}}).ok());
  send_ok(c, "q", {msg("x")});
  auto got = receive_ok(c, "q");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(md(got[0], "witmq-receipt"), "");
  EXPECT_EQ(stats("q").depth, 0u);
  EXPECT_EQ(stats("q").in_flight, 0u);
}

TEST_F(LifecycleTest, DisconnectReleasesHeldMessagesAsFailedAttempt) {
  auto a = connect();
  auto b = connect();
  send_ok(a, "q", {msg("x")});
  ASSERT_EQ(receive_ok(a, "q").size(), 1u);
  broker_->disconnect(a);
  auto got = receive_ok(b, "q", 0, 2000ms);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(md(got[0], "witmq-attempt"), "2");
}

TEST_F(LifecycleTest, SendLimitsAreEnforcedWithClearErrors) {
  auto c = connect();
  Message big;
  big.data.resize((1 << 20) + 1);
  auto s = send(c, "q", {msg("ok"), big});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kResourceExhausted);
  EXPECT_NE(s.error().message.find("message[1].data"), std::string::npos);
  Metadata many;
  for (int i = 0; i < 65; ++i) many.emplace_back("k" + std::to_string(i), "v");
  s = send(c, "q", {msg("x", many)});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("message[0].metadata"), std::string::npos);
  s = send(c, "bad name!", {msg("x")});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
  // Nothing of the refused batches was stored; the channel was not even created.
  EXPECT_FALSE(broker_->channel_stats("q").ok());
  send_ok(c, "q", {msg("fine")});
  EXPECT_EQ(stats("q").head_seq, 1u);
}

TEST_F(LifecycleTest, UnknownExtensionIsRefusedNamingTheKey) {
  auto c = connect();
  auto s = broker_->update_guest_configuration(c, {{"q"}, Metadata{{"colour", "blue"}}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("colour"), std::string::npos);
  s = broker_->update_guest_configuration(c, {{"q"}, Metadata{{"batch-size", "0"}}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("batch-size"), std::string::npos);
}

TEST_F(LifecycleTest, DeclareCannotChangeKind) {
  ChannelSettings topic;
  topic.kind = ChannelKind::kPublishSubscribe;
  ASSERT_TRUE(broker_->declare_channel("t", topic).ok());
  auto s = broker_->declare_channel("t", ChannelSettings{});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kAlreadyExists);
  topic.max_deliveries = 7;
  ASSERT_TRUE(broker_->declare_channel("t", topic).ok());
  EXPECT_EQ(stats("t").settings.max_deliveries, 7u);
}

// Retention of a topic declared while the broker runs: nothing but its appends schedules its
// checks (a restart schedules those of the topics it recovers), and no subscription's floor moves
// on a topic nobody subscribes to.
TEST_F(LifecycleTest, RetentionTrimsATopicDeclaredWhileRunning) {
  ChannelSettings topic;
  topic.kind = ChannelKind::kPublishSubscribe;
  topic.retention_bytes = 20000;
  ASSERT_TRUE(broker_->declare_channel("kept", topic).ok());
  auto c = connect();
  std::vector<Message> batch;
  for (int i = 0; i < 60; ++i) batch.push_back(msg(std::string(1000, static_cast<char>('a' + i % 26))));
  send_ok(c, "kept", std::move(batch));
  ASSERT_EQ(stats("kept").first_seq, 0u);
  // The check runs every 5 s (kRetentionCheckInterval); two of them are allowed.
  const auto deadline = std::chrono::steady_clock::now() + 12s;
  while (stats("kept").first_seq == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  const ChannelStats s = stats("kept");
  EXPECT_GT(s.first_seq, 0u) << "retention never trimmed the topic";
  // About 20 KB of the 60 KB are kept: the newest messages, never all of them gone.
  EXPECT_LT(s.first_seq, 60u);
  EXPECT_EQ(s.head_seq, 60u);
}

TEST_F(LifecycleTest, DeleteChannelEndsWaitersAndForgetsIt) {
  auto c = connect();
  send_ok(c, "gone", {msg("x")});
  std::promise<Result<std::vector<Message>>> p;
  auto w = connect();
  ASSERT_EQ(receive_ok(w, "gone").size(), 1u);
  broker_->receive(w, {"gone"}, ReceiveOptions{0, std::nullopt},
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(broker_->delete_channel("gone").ok());
  auto r = p.get_future().get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(broker_->channel_stats("gone").ok());
}

}  // namespace
}  // namespace witmq::broker::testing
