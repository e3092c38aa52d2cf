// A channel deleted while other threads move, settle, release or wait on its messages: nothing
// naming the deleted channel may reach storage after its deletion (the next start would find
// records without an owner), and no waiting receive may be lost.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <future>
#include <thread>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

class DeleteRaceTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    o.default_channel.backoff_initial = 0ms;
    o.default_channel.max_deliveries = 0;
  }

  // Fills `name` with `n` messages and returns them acquired by a durable client.
  std::vector<Message> held(const std::string& name, const ChannelSettings& s, int n,
                            ClientPtr& consumer) {
    EXPECT_TRUE(broker_->declare_channel(name, s).ok());
    std::vector<Message> batch;
    for (int i = 0; i < n; ++i) batch.push_back(msg("m" + std::to_string(i)));
    send_ok(connect(), name, batch);
    consumer = connect("consumer-" + name);
    auto got = receive_ok(consumer, name, static_cast<uint32_t>(n));
    EXPECT_EQ(got.size(), static_cast<size_t>(n));
    return got;
  }

  // Restarts the broker: it must open, and find nothing to remove.
  void expect_clean_restart() {
    broker_.reset();
    BrokerOptions o;
    o.data_dir = dir_;
    configure(o);
    auto b = Broker::open(o, io_.get_executor());
    ASSERT_TRUE(b.ok()) << b.error().to_string();
    broker_ = std::move(*b);
    const auto orphans = broker_->store_stats().recovered_orphans;
    EXPECT_EQ(orphans.total(), 0u)
        << "records written after their channel's deletion: " << orphans.cursors << " cursors, "
        << orphans.delivery_records << " delivery records, " << orphans.heads << " heads, "
        << orphans.subscriptions << " subscriptions, " << orphans.message_channels
        << " message ranges";
  }
};

// Issue 17 item 1: abandons with policy dead-letter racing delete_channel of their channel.
TEST_F(DeleteRaceTest, DeadLetterMovesRacingDeleteLeaveNothingBehind) {
  constexpr int kRounds = 20, kMessages = 40, kAbandoners = 3;
  ChannelSettings s;
  s.abandon = AbandonPolicy::kDeadLetter;
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = "dl" + std::to_string(round);
    ClientPtr consumer;
    auto got = held(name, s, kMessages, consumer);
    std::barrier start(kAbandoners + 1);
    std::vector<std::thread> threads;
    for (int t = 0; t < kAbandoners; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        for (size_t i = t; i < got.size(); i += kAbandoners) {
          auto st = broker_->abandon_message(got[i]);
          // Refused only as stale: the channel is gone.
          if (!st.ok()) {
            EXPECT_EQ(st.error().code, ErrorCode::kStaleReceipt);
          }
        }
      });
    }
    start.arrive_and_wait();
    std::this_thread::sleep_for(std::chrono::microseconds(50 * (round % 5)));
    EXPECT_TRUE(broker_->delete_channel(name).ok());
    for (auto& t : threads) t.join();
  }
  expect_clean_restart();
}

// The same pattern on disconnect: the held messages of many channels are released (delivery
// records written) while another thread deletes those channels.
TEST_F(DeleteRaceTest, DisconnectRacingDeleteLeavesNothingBehind) {
  constexpr int kRounds = 10, kChannels = 12, kMessages = 10;
  ChannelSettings s;
  s.backoff_initial = 0ms;
  for (int round = 0; round < kRounds; ++round) {
    auto consumer = connect("consumer");
    std::vector<std::string> names;
    for (int k = 0; k < kChannels; ++k) {
      names.push_back(fmt::format("dc{}-{}", round, k));
      ASSERT_TRUE(broker_->declare_channel(names.back(), s).ok());
      std::vector<Message> batch;
      for (int i = 0; i < kMessages; ++i) batch.push_back(msg("m" + std::to_string(i)));
      send_ok(connect(), names.back(), batch);
      // Abandoned once and received again: attempt 2 has a delivery record to rewrite.
      for (auto& m : receive_ok(consumer, names.back(), kMessages)) {
        ASSERT_TRUE(broker_->abandon_message(m).ok());
      }
      ASSERT_EQ(receive_ok(consumer, names.back(), kMessages).size(),
                static_cast<size_t>(kMessages));
    }
    std::barrier start(2);
    std::thread t([&] {
      start.arrive_and_wait();
      broker_->disconnect(consumer);
    });
    start.arrive_and_wait();
    for (const auto& name : names) EXPECT_TRUE(broker_->delete_channel(name).ok());
    t.join();
  }
  expect_clean_restart();
}

// Settles and lease expiries racing delete: every write of theirs lands before the deletion.
TEST_F(DeleteRaceTest, SettlesRacingDeleteLeaveNothingBehind) {
  constexpr int kRounds = 40, kMessages = 60;
  ChannelSettings s;
  s.kind = ChannelKind::kPublishSubscribe;
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = "st" + std::to_string(round);
    ASSERT_TRUE(broker_->declare_channel(name, s).ok());
    auto consumer = connect("reader");
    ASSERT_TRUE(broker_->update_guest_configuration(consumer, {{name}, {}}).ok());
    std::vector<Message> batch;
    for (int i = 0; i < kMessages; ++i) batch.push_back(msg("m" + std::to_string(i)));
    send_ok(connect(), name, batch);
    auto got = receive_ok(consumer, name, kMessages);
    ASSERT_EQ(got.size(), static_cast<size_t>(kMessages));
    // Out of order, so that the floor stays and each complete writes a delivery record.
    std::barrier start(3);
    std::thread completer([&] {
      start.arrive_and_wait();
      for (size_t i = got.size(); i-- > 1;) (void)broker_->complete_message(got[i]);
    });
    std::thread abandoner([&] {
      start.arrive_and_wait();
      (void)broker_->abandon_message(got[0]);
    });
    start.arrive_and_wait();
    EXPECT_TRUE(broker_->delete_channel(name).ok());
    completer.join();
    abandoner.join();
    broker_->disconnect(consumer);
  }
  expect_clean_restart();
}

// Issue 20 item 1: a receive with a timeout on a channel that is deleted and sent to (so created
// again) in a loop is always answered: with messages, with an empty batch at its timeout, or at
// once with not-found.
TEST_F(DeleteRaceTest, ReceiveOnChannelDeletedAndCreatedAgainIsAlwaysAnswered) {
  constexpr int kIterations = 300;
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    auto p = connect();
    for (int i = 0; !stop.load(); ++i) {
      (void)broker_->delete_channel("h.x");
      (void)send(p, "h.x", {msg("x" + std::to_string(i))});
    }
  });
  auto c = connect("h-reader");
  int answered = 0, deleted = 0;
  auto receive_loop = [&] {
    for (int i = 0; i < kIterations; ++i) {
      std::promise<Result<std::vector<Message>>> p;
      auto f = p.get_future();
      broker_->receive(c, {"h.x"}, ReceiveOptions{1, 20ms},
                       [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
      // 20 ms timeout plus a generous margin for a loaded machine.
      ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "receive " << i << " never answered";
      auto r = f.get();
      if (r.ok()) {
        ++answered;
        for (auto& m : *r) (void)broker_->complete_message(m);
      } else {
        ASSERT_EQ(r.error().code, ErrorCode::kNotFound) << r.error().to_string();
        EXPECT_NE(r.error().message.find("h.x"), std::string::npos) << r.error().message;
        ++deleted;
      }
    }
  };
  receive_loop();  // its assertions return from it, not from the test: the thread is joined
  stop = true;
  churn.join();
  if (HasFatalFailure()) return;
  EXPECT_EQ(answered + deleted, kIterations);
}

// A receive without a timeout waiting on a channel that is deleted ends at once with not-found.
TEST_F(DeleteRaceTest, WaitingReceiveEndsWhenItsChannelIsDeleted) {
  auto c = connect();
  ASSERT_TRUE(broker_->declare_channel("gone", ChannelSettings{}).ok());
  std::promise<Result<std::vector<Message>>> p;
  auto f = p.get_future();
  broker_->receive(c, {"gone"}, ReceiveOptions{1, std::nullopt},
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  ASSERT_EQ(f.wait_for(50ms), std::future_status::timeout);
  ASSERT_TRUE(broker_->delete_channel("gone").ok());
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  auto r = f.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(r.error().message, "channel 'gone' was deleted");
}

// A waiter whose subscription was removed under it (the client's configuration changed) keeps
// waiting on the one its options name now, and is answered by its timeout or a message.
TEST_F(DeleteRaceTest, WaiterOutlivesItsRemovedSubscription) {
  ChannelSettings topic;
  topic.kind = ChannelKind::kPublishSubscribe;
  ASSERT_TRUE(broker_->declare_channel("t", topic).ok());
  auto c = connect();  // ephemeral subscriptions: removed when unconfigured
  ASSERT_TRUE(broker_->update_guest_configuration(c, {{"t"}, {}}).ok());
  std::promise<Result<std::vector<Message>>> p;
  auto f = p.get_future();
  broker_->receive(c, {"t"}, ReceiveOptions{1, 300ms},
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(broker_->update_guest_configuration(c, {{"other"}, {}}).ok());
  send_ok(connect(), "t", {msg("after")});
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "the waiter was lost";
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
}

}  // namespace
}  // namespace witmq::broker::testing
