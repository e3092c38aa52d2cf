// Streaming with credit (docs/PROTOCOL.md section 7) against the real witmqd: the server never
// delivers more than the credit granted, and a consumer that stops granting stalls only itself.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

class StreamingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon_ = new Daemon(); }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    delete daemon_;
  }

  static std::unique_ptr<Conn> client(std::string name = "") {
    auto c = std::make_unique<Conn>(daemon_->port());
    c->hello(std::move(name));
    return c;
  }

  static void configure(Conn& c, std::vector<std::string> channels, Metadata extensions = {}) {
    std::optional<Metadata> ext;
    if (!extensions.empty()) ext = std::move(extensions);
    EXPECT_FRAME(
        c.call(net::UpdateGuestConfiguration{GuestConfiguration{std::move(channels), ext}}),
        kUpdateGuestConfigurationOk);
  }

  static void produce(const std::string& channel, int count, const std::string& prefix = "m") {
    auto p = client();
    std::vector<Message> batch;
    for (int i = 0; i < count; ++i) batch.push_back(text_message(prefix + std::to_string(i)));
    EXPECT_FRAME(p->call(net::Send{channel, std::move(batch)}), kSendOk);
  }

  // Every message delivered on `c`'s stream `stream_id` until nothing comes for `quiet`.
  static std::vector<Message> collect(Conn& c, uint32_t stream_id, std::chrono::milliseconds quiet) {
    std::vector<Message> got;
    while (auto f = c.next_push(quiet)) {
      EXPECT_EQ(f->request_id, stream_id);
      auto* d = std::get_if<net::Deliver>(&f->body);
      EXPECT_NE(d, nullptr) << describe(*f);
      if (!d) break;
      EXPECT_FALSE(d->messages.empty());
      for (auto& m : d->messages) got.push_back(std::move(m));
    }
    return got;
  }

  static Daemon* daemon_;
};
Daemon* StreamingTest::daemon_ = nullptr;

TEST_F(StreamingTest, NeverExceedsTheCredit) {
  auto consumer = client();
  configure(*consumer, {"st.credit"});
  const uint32_t stream = consumer->send(net::StreamStart{5});
  EXPECT_FRAME(consumer->reply(stream), kStreamStartOk);
  produce("st.credit", 50);
  auto got = collect(*consumer, stream, 500ms);
  EXPECT_EQ(got.size(), 5u);
  EXPECT_FRAME(consumer->call(net::Credit{10}), kCreditOk);
  auto more = collect(*consumer, stream, 500ms);
  EXPECT_EQ(more.size(), 10u);
  // Settling returns no credit.
  for (const auto& m : got) {
    EXPECT_FRAME(consumer->call(net::CompleteMessage{receipt_of(m)}), kCompleteMessageOk);
  }
  EXPECT_TRUE(collect(*consumer, stream, 300ms).empty());
  // In channel order, each exactly once.
  got.insert(got.end(), more.begin(), more.end());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(text(got[i]), "m" + std::to_string(i));
  EXPECT_FRAME(consumer->call(net::StreamStop{}), kStreamStopOk);
}

TEST_F(StreamingTest, DeliversAsMessagesArriveAndGrantsKeepItFlowing) {
  auto consumer = client();
  configure(*consumer, {"st.flow"}, {{"batch-size", "7"}});
  const uint32_t stream = consumer->send(net::StreamStart{20});
  EXPECT_FRAME(consumer->reply(stream), kStreamStartOk);
  std::thread producer([] { produce("st.flow", 300); });
  size_t received = 0, outstanding = 20;
  int next = 0;
  while (received < 300) {
    auto f = consumer->next_push(5s);
    ASSERT_TRUE(f) << "stalled after " << received;
    auto& d = std::get<net::Deliver>(f->body);
    EXPECT_EQ(d.channel, "st.flow");
    EXPECT_LE(d.messages.size(), 7u);  // the batch-size extension
    ASSERT_LE(d.messages.size(), outstanding);
    outstanding -= d.messages.size();
    for (const auto& m : d.messages) {
      EXPECT_EQ(text(m), "m" + std::to_string(next++));
      consumer->send(net::CompleteMessage{receipt_of(m)});
    }
    received += d.messages.size();
    consumer->send(net::Credit{static_cast<uint32_t>(d.messages.size())});
    outstanding += d.messages.size();
  }
  producer.join();
  const uint32_t stop = consumer->send(net::StreamStop{});
  EXPECT_FRAME(consumer->reply(stop), kStreamStopOk);
}

TEST_F(StreamingTest, AConsumerWithoutCreditStallsOnlyItself) {
  auto stalled = client();
  auto busy = client();
  configure(*stalled, {"st.shared"});
  configure(*busy, {"st.shared"});
  const uint32_t s1 = stalled->send(net::StreamStart{3});
  EXPECT_FRAME(stalled->reply(s1), kStreamStartOk);
  const uint32_t s2 = busy->send(net::StreamStart{1000});
  EXPECT_FRAME(busy->reply(s2), kStreamStartOk);

  produce("st.shared", 100);
  auto stalled_got = collect(*stalled, s1, 300ms);
  auto busy_got = collect(*busy, s2, 300ms);
  EXPECT_LE(stalled_got.size(), 3u);
  EXPECT_EQ(stalled_got.size() + busy_got.size(), 100u);

  // Meanwhile other traffic on other connections and channels proceeds.
  auto other = client();
  EXPECT_FRAME(other->call(net::Send{"st.elsewhere", {text_message("x")}}), kSendOk);
  Frame r = other->call(net::SubscribeTryReceive{"st.elsewhere", 1000});
  ASSERT_FRAME(r, kSubscribeTryReceiveOk);

  // More messages keep flowing to the consumer that grants; the stalled one gets none.
  produce("st.shared", 50, "late");
  auto busy_late = collect(*busy, s2, 300ms);
  auto stalled_late = collect(*stalled, s1, 300ms);
  EXPECT_EQ(busy_late.size() + stalled_late.size(), 50u);
  EXPECT_LE(stalled_got.size() + stalled_late.size(), 3u);
}

TEST_F(StreamingTest, StreamStopEndsTheStreamBeforeItsOk) {
  auto consumer = client();
  configure(*consumer, {"st.stop"});
  const uint32_t stream = consumer->send(net::StreamStart{100});
  EXPECT_FRAME(consumer->reply(stream), kStreamStartOk);
  // The stream waits on the broker; stop must end that wait.
  const uint32_t stop = consumer->send(net::StreamStop{});
  EXPECT_FRAME(consumer->reply(stop, 2s), kStreamStopOk);
  produce("st.stop", 10);
  EXPECT_FALSE(consumer->next_push(300ms));
  // The messages went nowhere: a receive gets them.
  Frame r = consumer->call(net::SubscribeTryReceive{"st.stop", 1000});
  ASSERT_FRAME(r, kSubscribeTryReceiveOk);
  EXPECT_EQ(std::get<net::SubscribeTryReceiveOk>(r.body).messages->size(), 10u);
  // Credit after the stop: no stream.
  Frame credit = consumer->call(net::Credit{1});
  ASSERT_FRAME(credit, kError);
  EXPECT_EQ(error_of(credit)->code, ErrorCode::kFailedPrecondition);
  // A stop with no stream is fine; a new stream can start.
  EXPECT_FRAME(consumer->call(net::StreamStop{}), kStreamStopOk);
  EXPECT_FRAME(consumer->call(net::StreamStart{1}), kStreamStartOk);
}

TEST_F(StreamingTest, ReceivesOnTheSameConnectionSurviveAStreamStop) {
  auto consumer = client();
  configure(*consumer, {"st.mixed"});
  const uint32_t stream = consumer->send(net::StreamStart{0});
  EXPECT_FRAME(consumer->reply(stream), kStreamStartOk);
  // A waiting receive on another channel, then a stop (which ends the client's broker waits).
  const uint32_t receive = consumer->send(net::SubscribeReceive{"st.mixed.other"});
  EXPECT_FRAME(consumer->call(net::Credit{5}), kCreditOk);
  EXPECT_FRAME(consumer->call(net::StreamStop{}), kStreamStopOk);
  EXPECT_EQ(consumer->read(200ms).status, Conn::Status::kTimeout);
  produce("st.mixed.other", 1);
  Frame r = consumer->reply(receive);
  ASSERT_FRAME(r, kSubscribeReceiveOk);
  EXPECT_EQ(std::get<net::SubscribeReceiveOk>(r.body).messages.size(), 1u);
}

TEST_F(StreamingTest, ConfigurationChangesTheStreamsChannels) {
  auto consumer = client();
  configure(*consumer, {"st.before"});
  const uint32_t stream = consumer->send(net::StreamStart{10});
  EXPECT_FRAME(consumer->reply(stream), kStreamStartOk);
  configure(*consumer, {"st.after"});
  produce("st.before", 3);
  produce("st.after", 2);
  auto got = collect(*consumer, stream, 500ms);
  ASSERT_EQ(got.size(), 2u);
  for (const auto& m : got) EXPECT_EQ(meta_value(m, meta::kChannel), "st.after");
}

TEST_F(StreamingTest, RefusalsFollowTheProtocol) {
  auto c = client();
  Frame no_config = c->call(net::StreamStart{1});
  ASSERT_FRAME(no_config, kError);
  EXPECT_EQ(error_of(no_config)->code, ErrorCode::kFailedPrecondition);
  Frame no_stream = c->call(net::Credit{1});
  ASSERT_FRAME(no_stream, kError);
  EXPECT_EQ(error_of(no_stream)->code, ErrorCode::kFailedPrecondition);

  configure(*c, {"st.refusals"});
  Frame too_much = c->call(net::StreamStart{10'001});
  ASSERT_FRAME(too_much, kError);
  EXPECT_EQ(error_of(too_much)->code, ErrorCode::kResourceExhausted);
  EXPECT_FRAME(c->call(net::StreamStart{9'000}), kStreamStartOk);
  Frame twice = c->call(net::StreamStart{1});
  ASSERT_FRAME(twice, kError);
  EXPECT_EQ(error_of(twice)->code, ErrorCode::kFailedPrecondition);
  Frame over = c->call(net::Credit{1'001});
  ASSERT_FRAME(over, kError);
  EXPECT_EQ(error_of(over)->code, ErrorCode::kResourceExhausted);
  EXPECT_FRAME(c->call(net::Credit{1'000}), kCreditOk);  // unchanged by the refusal: 10000 now
}

TEST_F(StreamingTest, AutoSettlementCompletesOnDelivery) {
  auto consumer = client();
  configure(*consumer, {"st.auto"}, {{"settlement", "auto"}});
  const uint32_t stream = consumer->send(net::StreamStart{10});
  EXPECT_FRAME(consumer->reply(stream), kStreamStartOk);
  produce("st.auto", 4);
  EXPECT_EQ(collect(*consumer, stream, 500ms).size(), 4u);
  EXPECT_FRAME(consumer->call(net::StreamStop{}), kStreamStopOk);
  auto other = client();
  Frame r = other->call(net::SubscribeTryReceive{"st.auto", 200});
  ASSERT_FRAME(r, kSubscribeTryReceiveOk);
  EXPECT_FALSE(std::get<net::SubscribeTryReceiveOk>(r.body).messages);
}

}  // namespace
}  // namespace witmq::daemon::testing
