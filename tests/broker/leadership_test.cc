// Cluster leadership changes as the broker sees them: a channel released (this node no longer
// leads it) is served by nothing here and acknowledged by nothing, and a channel adopted again is
// loaded from the store exactly as a restart recovers it.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

// A broker whose store writes can be held back, and whose may_serve answer the test sets.
class LeadershipTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    o.default_channel.backoff_initial = 0ms;
    o.default_channel.max_deliveries = 3;
    o.may_serve = [this](std::string_view channel) {
      return !(fenced_.load() && channel == "q");
    };
    o.store.test_hooks.before_write = [this]() -> Status {
      std::unique_lock lock(mu_);
      ++waiting_writes_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return !hold_; });
      --waiting_writes_;
      return ok_status();
    };
  }
  void hold_writes() {
    std::lock_guard lock(mu_);
    hold_ = true;
  }
  bool wait_for_held_write() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [this] { return waiting_writes_ > 0; });
  }
  void release_writes() {
    std::lock_guard lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  void TearDown() override {
    release_writes();
    BrokerTest::TearDown();
  }

  std::atomic<bool> fenced_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  int waiting_writes_ = 0;
};

TEST_F(LeadershipTest, AReleasedChannelIsServedByNothingUntilAdoptedFromTheStore) {
  auto c = connect();
  send_ok(c, "q", {msg("a"), msg("b"), msg("c"), msg("d")});
  auto got = receive_ok(c, "q", 3);
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(broker_->complete_message(got[1]).ok());  // b settled; a held
  ASSERT_TRUE(broker_->abandon_message(got[2]).ok());   // c back, attempt counted
  // A receive waiting on another channel when that one is released ends with unavailable.
  std::promise<Result<std::vector<Message>>> waiting;
  broker_->receive(connect(), {"w"}, ReceiveOptions{1, 30s},
                   [&](Result<std::vector<Message>> r) { waiting.set_value(std::move(r)); });

  broker_->release_channel("q");
  broker_->release_channel("w");
  auto w = waiting.get_future();
  ASSERT_EQ(w.wait_for(10s), std::future_status::ready);
  auto ended = w.get();
  ASSERT_FALSE(ended.ok());
  EXPECT_EQ(ended.error().code, ErrorCode::kUnavailable) << ended.error().message;

  auto sent = send(c, "q", {msg("e")});
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(sent.error().message.find("channel 'q'"), std::string::npos) << sent.error().message;
  auto r = receive(c, {"q"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  auto settled = broker_->complete_message(got[0]);
  ASSERT_FALSE(settled.ok());
  EXPECT_EQ(settled.error().code, ErrorCode::kUnavailable) << settled.error().message;
  EXPECT_EQ(broker_->declare_channel("q", ChannelSettings{}).error().code,
            ErrorCode::kUnavailable);
  EXPECT_EQ(broker_->delete_channel("q").error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(broker_->channel_stats("q").error().code, ErrorCode::kNotFound);
  for (const auto& s : broker_->list_channels()) EXPECT_NE(s.name, "q");

  ASSERT_TRUE(broker_->adopt_channel("q").ok());
  // As a restart: a (held when released) and c come back with their attempts counted, b is
  // settled, d was never delivered; the sequence goes on.
  auto again = receive_ok(connect(), "q", 10);
  ASSERT_EQ(again.size(), 3u);
  std::map<std::string, std::string> attempts;
  for (const auto& m : again) attempts[text(m)] = md(m, "witmq-attempt");
  EXPECT_EQ(attempts, (std::map<std::string, std::string>{{"a", "2"}, {"c", "2"}, {"d", "1"}}));
  send_ok(c, "q", {msg("e")});
  auto next = receive_ok(c, "q");
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(md(next[0], "witmq-sequence"), "4");
  // A receipt from before the release settles nothing now.
  EXPECT_EQ(broker_->complete_message(got[0]).error().code, ErrorCode::kStaleReceipt);

  // Adopting a channel served already, or one the store does not hold, changes nothing.
  ASSERT_TRUE(broker_->adopt_channel("q").ok());
  EXPECT_EQ(stats("q").head_seq, 5u);
  ASSERT_TRUE(broker_->adopt_channel("w").ok());
  send_ok(c, "w", {msg("x")});
  EXPECT_EQ(receive_ok(c, "w").size(), 1u);
}

TEST_F(LeadershipTest, AdoptionRestoresDeadLettersCursorsAndSubscriptions) {
  ChannelSettings topic;
  topic.kind = ChannelKind::kPublishSubscribe;
  topic.max_deliveries = 1;
  ASSERT_TRUE(broker_->declare_channel("t", topic).ok());
  auto reader = connect("reader");
  ASSERT_TRUE(broker_->update_guest_configuration(reader, {{"t"}, {}}).ok());
  auto p = connect();
  send_ok(p, "t", {msg("m0"), msg("m1"), msg("m2")});
  auto got = receive_ok(reader, "t", 2);
  ASSERT_EQ(got.size(), 2u);
  ASSERT_TRUE(broker_->complete_message(got[0]).ok());
  ASSERT_TRUE(broker_->abandon_message(got[1]).ok());  // max-deliveries 1: to t.dlq
  ASSERT_EQ(stats("t.dlq").head_seq, 1u);

  broker_->release_channel("t");
  broker_->release_channel("t.dlq");
  ASSERT_TRUE(broker_->adopt_channel("t").ok());
  ASSERT_TRUE(broker_->adopt_channel("t.dlq").ok());

  auto st = stats("t");
  EXPECT_EQ(st.settings.max_deliveries, 1u);
  ASSERT_EQ(st.subscriptions.size(), 1u);
  EXPECT_EQ(st.subscriptions[0].name, "reader");
  auto rest = receive_ok(connect("reader"), "t", 10);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(text(rest[0]), "m2");
  auto dead = broker_->browse("t.dlq", 0, 10);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ(text((*dead)[0]), "m1");
  EXPECT_EQ(md((*dead)[0], "witmq-dlq-source"), "t");
}

// A send whose write is under way when the node loses the channel is not acknowledged.
TEST_F(LeadershipTest, AReplyAfterTheReleaseSaysUnavailable) {
  auto c = connect();
  send_ok(c, "q", {msg("a")});
  auto held = receive_ok(c, "q", 1);
  ASSERT_EQ(held.size(), 1u);
  hold_writes();
  std::promise<Status> send_reply, settle_reply;
  broker_->send(c, "q", {msg("b")}, [&](Status s) { send_reply.set_value(std::move(s)); });
  ASSERT_TRUE(wait_for_held_write());
  broker_->complete_message(held[0], [&](Status s) { settle_reply.set_value(std::move(s)); });
  broker_->release_channel("q");
  release_writes();
  for (auto* reply : {&send_reply, &settle_reply}) {
    auto f = reply->get_future();
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    auto s = f.get();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  }
}

// The instant may_serve says no (the lease's deadline passed, before the node released the
// channel), nothing is served or acknowledged, also for a write already under way.
TEST_F(LeadershipTest, MayServeFencesAtOnceAndAtTheReply) {
  auto c = connect();
  send_ok(c, "q", {msg("a")});
  auto held = receive_ok(c, "q", 1);
  ASSERT_EQ(held.size(), 1u);
  hold_writes();
  std::promise<Status> send_reply;
  broker_->send(c, "q", {msg("b")}, [&](Status s) { send_reply.set_value(std::move(s)); });
  ASSERT_TRUE(wait_for_held_write());
  fenced_.store(true);
  release_writes();
  auto f = send_reply.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().error().code, ErrorCode::kUnavailable);

  EXPECT_EQ(send(c, "q", {msg("c")}).error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(receive(c, {"q"}).error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(broker_->complete_message(held[0]).error().code, ErrorCode::kUnavailable);
  // Other channels are served as before.
  send_ok(c, "other", {msg("x")});
  fenced_.store(false);
  EXPECT_TRUE(broker_->complete_message(held[0]).ok());
}

}  // namespace
}  // namespace witmq::broker::testing
