// Who gets which message: fan-out, competing consumers, groups, start positions, blocking waits.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include "broker/channel.h"
#include "broker/receipt.h"
#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

class DeliveryTest : public BrokerTest {
 protected:
  void declare_topic(const std::string& name) {
    ChannelSettings s;
    s.kind = ChannelKind::kPublishSubscribe;
    ASSERT_TRUE(broker_->declare_channel(name, s).ok());
  }
  std::vector<Message> batch(int n, const std::string& prefix = "m") {
    std::vector<Message> out;
    for (int i = 0; i < n; ++i) out.push_back(msg(prefix + std::to_string(i)));
    return out;
  }
};

// A receipt settles by its lease id alone (no client is checked), so a consumer must not be able
// to work out the lease of a message delivered to another: the 312 leases of its own deliveries
// would give a Mersenne Twister's state, and with it the next lease the thread hands out.
TEST_F(DeliveryTest, LeasesSeenDoNotRevealTheNextOne) {
  ChannelSettings s;
  s.kind = ChannelKind::kPointToPoint;
  ASSERT_TRUE(broker_->declare_channel("d.lease", s).ok());
  auto producer = connect();
  auto attacker = connect();
  auto victim = connect();
  std::vector<Message> batch;
  for (int i = 0; i < 313; ++i) batch.push_back(msg("m"));
  send_ok(producer, "d.lease", std::move(batch));
  std::stringstream state;
  for (int i = 0; i < 312; ++i) {
    auto got = receive_ok(attacker, "d.lease", 1);
    ASSERT_EQ(got.size(), 1u);
    auto r = parse_receipt(md(got[0], meta::kReceipt));
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    state << untemper_mt19937_64(r->lease) << ' ';
  }
  std::mt19937_64 predictor;
  state >> predictor;
  const uint64_t predicted = predictor();
  auto got = receive_ok(victim, "d.lease", 1);
  ASSERT_EQ(got.size(), 1u);
  auto r = parse_receipt(md(got[0], meta::kReceipt));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_NE(r->lease, predicted);
}

TEST_F(DeliveryTest, EverySubscriptionOfATopicGetsEveryMessage) {
  declare_topic("news");
  std::vector<ClientPtr> subs = {connect("a"), connect("b"), connect("c")};
  for (auto& s : subs) ASSERT_TRUE(broker_->update_guest_configuration(s, {{"news"}, {}}).ok());
  auto p = connect();
  send_ok(p, "news", batch(50));
  for (auto& s : subs) {
    std::vector<std::string> got;
    while (got.size() < 50) {
      auto r = receive_ok(s, "news", 0, 2000ms);
      ASSERT_FALSE(r.empty());
      for (auto& m : r) {
        got.push_back(text(m));
        ASSERT_TRUE(broker_->complete_message(m).ok());
      }
    }
    for (int i = 0; i < 50; ++i) EXPECT_EQ(got[i], "m" + std::to_string(i));
  }
  EXPECT_EQ(stats("news").subscriptions.size(), 3u);
}

TEST_F(DeliveryTest, TopicSubscriptionSeesOnlyMessagesAfterItBegan) {
  declare_topic("t");
  auto p = connect();
  send_ok(p, "t", batch(5, "old"));
  auto s = connect("late");
  ASSERT_TRUE(broker_->update_guest_configuration(s, {{"t"}, {}}).ok());
  send_ok(p, "t", batch(2, "new"));
  auto got = receive_ok(s, "t");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(text(got[0]), "new0");
}

TEST_F(DeliveryTest, StartPositions) {
  declare_topic("t");
  auto p = connect();
  send_ok(p, "t", batch(10));
  auto earliest = connect("e");
  ASSERT_TRUE(
      broker_->update_guest_configuration(earliest, {{"t"}, Metadata{{"start", "earliest"}}}).ok());
  EXPECT_EQ(receive_ok(earliest, "t").size(), 10u);

  auto from7 = connect("s");
  ASSERT_TRUE(broker_->update_guest_configuration(from7, {{"t"}, Metadata{{"start", "7"}}}).ok());
  auto got = receive_ok(from7, "t");
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(text(got[0]), "m7");

  std::this_thread::sleep_for(20ms);
  const int64_t cut = wall_ms();
  std::this_thread::sleep_for(20ms);
  send_ok(p, "t", batch(2, "late"));
  auto by_time = connect("time");
  ASSERT_TRUE(broker_
                  ->update_guest_configuration(
                      by_time, {{"t"}, Metadata{{"start", "time:" + std::to_string(cut)}}})
                  .ok());
  got = receive_ok(by_time, "t");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(text(got[0]), "late0");

  auto bad =
      broker_->update_guest_configuration(connect("x"), {{"t"}, Metadata{{"start", "soon"}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("start"), std::string::npos);
}

TEST_F(DeliveryTest, GroupsCompeteWithinAndFanOutAcross) {
  declare_topic("t");
  auto g1a = connect();
  auto g1b = connect();
  auto g2 = connect();
  Metadata g1{{"group", "billing"}}, gg2{{"group", "audit"}};
  ASSERT_TRUE(broker_->update_guest_configuration(g1a, {{"t"}, g1}).ok());
  ASSERT_TRUE(broker_->update_guest_configuration(g1b, {{"t"}, g1}).ok());
  ASSERT_TRUE(broker_->update_guest_configuration(g2, {{"t"}, gg2}).ok());
  send_ok(connect(), "t", batch(20));
  auto a = receive_ok(g1a, "t", 10);
  auto b = receive_ok(g1b, "t", 100);
  EXPECT_EQ(a.size(), 10u);
  EXPECT_EQ(b.size(), 10u);  // the other ten: the group shares one subscription
  EXPECT_EQ(receive_ok(g2, "t", 100).size(), 20u);
}

TEST_F(DeliveryTest, CompetingConsumersAcceptEachMessageExactlyOnce) {
  constexpr int kMessages = 3000, kConsumers = 4;
  auto p = connect();
  for (int i = 0; i < kMessages; i += 100) {
    std::vector<Message> b;
    for (int j = i; j < i + 100; ++j) b.push_back(msg(std::to_string(j)));
    send_ok(p, "work", std::move(b));
  }
  std::mutex mu;
  std::map<std::string, int> accepted;
  std::vector<std::thread> threads;
  for (int t = 0; t < kConsumers; ++t) {
    threads.emplace_back([&] {
      auto c = connect();
      for (;;) {
        auto r = receive(c, {"work"}, 200ms, 17);
        ASSERT_TRUE(r.ok());
        if (r->empty()) return;
        for (auto& m : *r) {
          if (broker_->complete_message(m).ok()) {
            std::lock_guard lock(mu);
            ++accepted[text(m)];
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(accepted.size(), static_cast<size_t>(kMessages));
  for (auto& [k, n] : accepted) EXPECT_EQ(n, 1) << k;
  EXPECT_EQ(stats("work").depth, 0u);
}

TEST_F(DeliveryTest, BlockingReceiveIsWokenBySend) {
  auto c = connect();
  std::promise<Result<std::vector<Message>>> p;
  auto f = p.get_future();
  broker_->receive(c, {"q"}, ReceiveOptions{0, std::nullopt},
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  EXPECT_EQ(f.wait_for(100ms), std::future_status::timeout);
  send_ok(connect(), "q", {msg("wake")});
  ASSERT_EQ(f.wait_for(2s), std::future_status::ready);
  auto r = f.get();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text((*r)[0]), "wake");
}

TEST_F(DeliveryTest, TryReceiveTimesOutEmpty) {
  auto c = connect();
  auto t0 = std::chrono::steady_clock::now();
  auto r = receive(c, {"empty"}, 150ms);
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  EXPECT_GE(waited, 140ms);
  EXPECT_LT(waited, 2s);
}

TEST_F(DeliveryTest, ReceiveOnSeveralChannelsTakesFromWhicheverHasMessages) {
  auto c = connect();
  std::promise<Result<std::vector<Message>>> p;
  auto f = p.get_future();
  broker_->receive(c, {"a", "b", "c"}, ReceiveOptions{0, 2000ms},
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  send_ok(connect(), "b", {msg("from-b")});
  auto r = f.get();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(md((*r)[0], "witmq-channel"), "b");
  // The waiter is gone from a and c: a later send there is not lost to it.
  send_ok(connect(), "a", {msg("from-a")});
  EXPECT_EQ(receive_ok(c, "a").size(), 1u);
}

TEST_F(DeliveryTest, DisconnectEndsPendingReceive) {
  auto c = connect();
  std::promise<Result<std::vector<Message>>> p;
  broker_->receive(c, {"q"}, ReceiveOptions{0, std::nullopt},
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  broker_->disconnect(c);
  auto r = p.get_future().get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
}

TEST_F(DeliveryTest, EphemeralSubscriptionGoesWithItsClient) {
  declare_topic("t");
  auto anon = connect("");
  ASSERT_TRUE(broker_->update_guest_configuration(anon, {{"t"}, {}}).ok());
  EXPECT_EQ(stats("t").subscriptions.size(), 1u);
  EXPECT_FALSE(stats("t").subscriptions[0].durable);
  broker_->disconnect(anon);
  EXPECT_EQ(stats("t").subscriptions.size(), 0u);
}

TEST_F(DeliveryTest, UnconfiguringAChannelUnsubscribes) {
  declare_topic("t");
  auto anon = connect("");
  ASSERT_TRUE(broker_->update_guest_configuration(anon, {{"t"}, {}}).ok());
  ASSERT_TRUE(broker_->update_guest_configuration(anon, {{}, {}}).ok());
  EXPECT_EQ(stats("t").subscriptions.size(), 0u);
}

TEST_F(DeliveryTest, BatchSizeExtensionLimitsReceive) {
  auto c = connect();
  ASSERT_TRUE(broker_->update_guest_configuration(c, {{"q"}, Metadata{{"batch-size", "3"}}}).ok());
  send_ok(c, "q", batch(10));
  EXPECT_EQ(receive_ok(c, "q").size(), 3u);
}

TEST_F(DeliveryTest, SettledMessagesAreRemovedFromStorage) {
  auto c = connect();
  for (int i = 0; i < 9; ++i) send_ok(c, "q", batch(1000));
  for (;;) {
    auto got = receive_ok(c, "q", 1000);
    if (got.empty()) break;
    // Completed together, as a client pipelines them: each reply waits for its write.
    std::vector<std::future<Status>> replies;
    for (auto& m : got) {
      std::promise<Status> p;
      replies.push_back(p.get_future());
      broker_->complete_message(m, [p = std::move(p)](Status s) mutable { p.set_value(s); });
    }
    for (auto& r : replies) ASSERT_TRUE(r.get().ok());
  }
  // The trim threshold (8192) was crossed: the log's first retained seq moved up.
  EXPECT_GE(stats("q").first_seq, 8192u);
  auto browse = broker_->browse("q", 0, 10);
  ASSERT_TRUE(browse.ok());
  if (!browse->empty()) {
    EXPECT_GE(std::stoull(md((*browse)[0], "witmq-sequence")), 8192u);
  }
}

// A consumer far behind the tail cache with settlement=auto: its messages are settled, and may be
// trimmed, as they are acquired; every one must still reach it, in order, with its data.
class BehindTheTailCacheTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override { o.tail_cache_bytes = 4096; }
};

TEST_F(BehindTheTailCacheTest, AutoSettledReceivesLoseNothingWhenTheTrimFollows) {
  auto producer = connect();
  constexpr int kMessages = 30000;  // well past the trim threshold (8192 settled messages)
  for (int sent = 0; sent < kMessages;) {
    std::vector<Message> batch;
    for (int i = 0; i < 1000 && sent < kMessages; ++i) batch.push_back(msg(std::to_string(sent++)));
    send_ok(producer, "behind", std::move(batch));
  }
  auto consumer = connect();
  ASSERT_TRUE(
      broker_
          ->update_guest_configuration(
              consumer, {{"behind"}, Metadata{{"settlement", "auto"}, {"batch-size", "5000"}}})
          .ok());
  int next = 0;
  while (next < kMessages) {
    auto got = receive_ok(consumer, "behind", 5000);
    ASSERT_FALSE(got.empty()) << "nothing more after " << next;
    for (const auto& m : got) {
      ASSERT_EQ(text(m), std::to_string(next)) << "at " << next;
      ++next;
    }
  }
  EXPECT_EQ(stats("behind").depth, 0u);
}

}  // namespace
}  // namespace witmq::broker::testing
