// Request-reply in the broker: competing responders on a point-to-point channel, scatter-gather
// on a publish-subscribe one, timeouts, inboxes that go with their client, replies to a gone
// inbox, and reserved metadata that producers cannot forge.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <future>
#include <random>
#include <sstream>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

class RequestReplyTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override { o.max_pending_requests_per_client = 10'000; }

  void declare(const std::string& name, ChannelKind kind, uint32_t lease_ms = 30'000) {
    ChannelSettings s;
    s.kind = kind;
    s.lease = std::chrono::milliseconds(lease_ms);
    ASSERT_TRUE(broker_->declare_channel(name, s).ok());
  }

  using Replies = Result<std::vector<Message>>;

  // Starts a request; the future holds its outcome.
  std::future<Replies> request(const ClientPtr& c, std::string_view ch, std::string_view data,
                               std::chrono::milliseconds timeout, uint32_t expected = 1) {
    auto p = std::make_shared<std::promise<Replies>>();
    auto f = p->get_future();
    broker_->request(c, ch, msg(data), RequestOptions{timeout, expected},
                     [p](Replies r) { p->set_value(std::move(r)); });
    return f;
  }

  // Receives one request on `ch`, answers it with `answer` and completes it.
  void respond(const ClientPtr& c, const std::string& ch, std::string_view answer) {
    auto got = receive_ok(c, ch, 1, 5000ms);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_TRUE(broker_->reply(got[0], msg(answer)).ok());
    ASSERT_TRUE(broker_->complete_message(got[0]).ok());
  }
};

TEST_F(RequestReplyTest, PointToPointRoundTripCarriesReservedAddressAndCorrelation) {
  declare("rr.q", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto responder = connect();
  auto f = request(requester, "rr.q", "ping", 5000ms);
  auto got = receive_ok(responder, "rr.q", 1, 5000ms);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(text(got[0]), "ping");
  const std::string to = md(got[0], meta::kReplyTo);
  const std::string correlation = md(got[0], meta::kCorrelationId);
  EXPECT_EQ(to.size(), 32u);
  EXPECT_EQ(correlation.size(), 16u);
  ASSERT_TRUE(broker_->reply(got[0], msg("pong", {{"k", "v"}, {"witmq-id", "forged"}})).ok());
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text((*r)[0]), "pong");
  EXPECT_EQ(md((*r)[0], "k"), "v");
  EXPECT_EQ(md((*r)[0], meta::kCorrelationId), correlation);
  EXPECT_EQ(md((*r)[0], "witmq-id"), "") << "reserved keys of a reply are dropped";
  EXPECT_EQ(broker_->tables().pending_requests, 0u);
}

TEST_F(RequestReplyTest, CompetingRespondersEachRequestAnsweredOnce) {
  declare("rr.compete", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto a = connect();
  auto b = connect();
  constexpr int kRequests = 20;
  std::vector<std::future<Replies>> pending;
  for (int i = 0; i < kRequests; ++i) {
    pending.push_back(request(requester, "rr.compete", std::to_string(i), 5000ms));
  }
  // Each responder takes some; together they take each request once.
  int answered_by_a = 0, answered_by_b = 0;
  for (int i = 0; i < kRequests; ++i) {
    const auto& who = (i % 2 == 0) ? a : b;
    auto got = receive_ok(who, "rr.compete", 1, 5000ms);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_TRUE(broker_->reply(got[0], msg("re:" + text(got[0]))).ok());
    ASSERT_TRUE(broker_->complete_message(got[0]).ok());
    ++(who == a ? answered_by_a : answered_by_b);
  }
  EXPECT_EQ(answered_by_a, kRequests / 2);
  EXPECT_EQ(answered_by_b, kRequests / 2);
  for (int i = 0; i < kRequests; ++i) {
    auto r = pending[i].get();
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ(text((*r)[0]), "re:" + std::to_string(i));
  }
  EXPECT_TRUE(receive_ok(a, "rr.compete", 1).empty()) << "no request was delivered twice";
}

TEST_F(RequestReplyTest, PublishSubscribeScatterGathersUpToN) {
  declare("rr.topic", ChannelKind::kPublishSubscribe);
  auto requester = connect();
  std::vector<ClientPtr> responders;
  for (int i = 0; i < 3; ++i) {
    responders.push_back(connect());
    GuestConfiguration config{{"rr.topic"}, std::nullopt};
    ASSERT_TRUE(broker_->update_guest_configuration(responders.back(), config).ok());
  }
  // Three subscriptions, three replies expected: answered as soon as the third arrives.
  auto all = request(requester, "rr.topic", "who", 10'000ms, 3);
  for (int i = 0; i < 3; ++i) respond(responders[i], "rr.topic", "r" + std::to_string(i));
  auto r = all.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 3u);
  std::set<std::string> texts;
  for (auto& m : *r) texts.insert(text(m));
  EXPECT_EQ(texts, (std::set<std::string>{"r0", "r1", "r2"}));

  // Five expected, two answer: the timeout returns the two that came.
  auto some = request(requester, "rr.topic", "who", 300ms, 5);
  respond(responders[0], "rr.topic", "x");
  respond(responders[1], "rr.topic", "y");
  auto partial = some.get();
  ASSERT_TRUE(partial.ok()) << partial.error().to_string();
  EXPECT_EQ(partial->size(), 2u);
  EXPECT_EQ(broker_->tables().requests_timed_out_total, 0u) << "replies arrived: no timeout";
}

TEST_F(RequestReplyTest, NoResponderTimesOutWithTimeoutCode) {
  declare("rr.nobody", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto r = request(requester, "rr.nobody", "anyone?", 50ms).get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout);
  EXPECT_NE(r.error().message.find("rr.nobody"), std::string::npos) << r.error().message;
  EXPECT_EQ(broker_->tables().requests_timed_out_total, 1u);
  EXPECT_EQ(broker_->tables().pending_requests, 0u);
}

TEST_F(RequestReplyTest, OptionsOutOfRangeAreRefusedNamingTheField) {
  auto c = connect();
  auto zero = request(c, "rr.opts", "x", 0ms).get();
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(zero.error().message.find("timeout-ms"), std::string::npos);
  auto too_long = request(c, "rr.opts", "x", std::chrono::milliseconds(5 * 60 * 1000 + 1)).get();
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().message.find("timeout-ms"), std::string::npos);
  auto none = request(c, "rr.opts", "x", 1000ms, 0).get();
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message.find("expected-replies"), std::string::npos);
  auto huge = request(c, "rr.opts", "x", 1000ms, kMaxExpectedReplies + 1).get();
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message.find("expected-replies"), std::string::npos);
  EXPECT_EQ(broker_->tables().pending_requests, 0u);
}

TEST_F(RequestReplyTest, DisconnectEndsPendingRequestsAndForgetsTheInbox) {
  declare("rr.gone", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto responder = connect();
  std::vector<std::future<Replies>> pending;
  for (int i = 0; i < 10'000; ++i) pending.push_back(request(requester, "rr.gone", "q", 60'000ms));
  auto t = broker_->tables();
  EXPECT_EQ(t.inboxes, 1u);
  EXPECT_EQ(t.pending_requests, 10'000u);
  // One more than the limit is refused.
  auto over = request(requester, "rr.gone", "q", 60'000ms).get();
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, ErrorCode::kResourceExhausted);
  EXPECT_NE(over.error().message.find("max-pending-requests-per-connection"), std::string::npos);

  auto got = receive_ok(responder, "rr.gone", 1, 5000ms);
  ASSERT_EQ(got.size(), 1u);
  broker_->disconnect(requester);
  for (auto& f : pending) {
    auto r = f.get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  }
  t = broker_->tables();
  EXPECT_EQ(t.inboxes, 0u);
  EXPECT_EQ(t.pending_requests, 0u);
  EXPECT_EQ(t.clients, 1u);
  // A reply to the gone inbox is dropped and counted, not refused.
  auto st = broker_->reply(got[0], msg("late"));
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(broker_->tables().replies_dropped_total, 1u);
}

TEST_F(RequestReplyTest, ReplyAfterTimeoutOrToUnknownAddressIsDroppedAndCounted) {
  declare("rr.late", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto responder = connect();
  auto f = request(requester, "rr.late", "q", 50ms);
  auto got = receive_ok(responder, "rr.late", 1, 5000ms);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(f.get().error().code, ErrorCode::kTimeout);
  EXPECT_TRUE(broker_->reply(got[0], msg("late")).ok());
  // An address nobody has: the same answer, so replying reveals nothing about other clients.
  EXPECT_TRUE(
      broker_->reply_to("0123456789abcdef0123456789abcdef", "0011223344556677", msg("guess")).ok());
  EXPECT_EQ(broker_->tables().replies_dropped_total, 2u);
  // The inbox itself stays while its client does.
  EXPECT_EQ(broker_->tables().inboxes, 1u);
}

// What replies a client can make the broker hold is bounded in bytes: a request is answered once
// its replies fill its own bound (the TCP server's: half a frame), and all the waiting requests
// of one client hold at most kMaxGatheredReplyBytesPerClient; replies past either are dropped
// and counted. Without these, one client answering its own requests with 1 MiB replies held
// gigabytes.
TEST_F(RequestReplyTest, RepliesAClientCanMakeTheBrokerHoldAreBoundedInBytes) {
  declare("rr.big", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto responder = connect();
  const std::string mib(1 << 20, 'r');
  // Its own bound: 3 MiB and a bit; the fourth reply does not fit and answers it with three.
  auto p = std::make_shared<std::promise<Replies>>();
  auto f = p->get_future();
  broker_->request(requester, "rr.big", msg("q"),
                   RequestOptions{5000ms, 1000, (3u << 20) + 1000},
                   [p](Replies r) { p->set_value(std::move(r)); });
  auto got = receive_ok(responder, "rr.big", 1, 5000ms);
  ASSERT_EQ(got.size(), 1u);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(broker_->reply(got[0], msg(mib)).ok());
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->size(), 3u);
  EXPECT_EQ(broker_->tables().replies_dropped_total, 1u);
  // The client-wide bound: 8 requests that would each take 16 MiB hold 64 MiB together at most.
  std::vector<std::future<Replies>> waiting;
  for (int i = 0; i < 8; ++i) waiting.push_back(request(requester, "rr.big", "w", 60'000ms, 1000));
  std::vector<Message> many;
  for (int i = 0; i < 8 && many.size() < 8; ++i) {
    for (Message& m : receive_ok(responder, "rr.big", 8 - many.size(), 5000ms)) {
      many.push_back(std::move(m));
    }
  }
  ASSERT_EQ(many.size(), 8u);
  for (int round = 0; round < 16; ++round) {
    for (const Message& m : many) ASSERT_TRUE(broker_->reply(m, msg(mib)).ok());
  }
  const uint64_t held = 8 * 16 - (broker_->tables().replies_dropped_total - 1);
  EXPECT_LE(held * (1u << 20), kMaxGatheredReplyBytesPerClient + (1u << 20)) << held;
  EXPECT_GE(held, 60u) << "the bound is the client's, not smaller";
  // The requester leaves: its requests end and what they held goes with them.
  broker_->disconnect(requester);
  for (auto& w : waiting) EXPECT_FALSE(w.get().ok());
  EXPECT_EQ(broker_->tables().pending_requests, 0u);
}

// A request answered at once cancels its timeout; cancelled timers do not pile up until their
// deadlines (3,000 answered requests with a minute's timeout left 3,000 timers before).
TEST_F(RequestReplyTest, AnsweredRequestsLeaveFewTimersBehind) {
  declare("rr.timers", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto responder = connect();
  const uint64_t before = broker_->tables().timers;
  for (int i = 0; i < 3000; ++i) {
    auto f = request(requester, "rr.timers", "q", 60'000ms);
    respond(responder, "rr.timers", "a");
    ASSERT_TRUE(f.get().ok());
  }
  EXPECT_LT(broker_->tables().timers, before + 1100);
}

TEST_F(RequestReplyTest, ReplyNeedsTheReservedAddressAndSendCannotForgeIt) {
  declare("rr.spoof", ChannelKind::kPointToPoint);
  auto requester = connect();
  auto responder = connect();
  auto f = request(requester, "rr.spoof", "q", 5000ms);
  auto real = receive_ok(responder, "rr.spoof", 1, 5000ms);
  ASSERT_EQ(real.size(), 1u);
  // A plain send that names the requester's inbox and correlation id arrives without them: the
  // broker drops every reserved key on send, so no message but a request carries an address.
  auto forger = connect();
  send_ok(
      forger, "rr.spoof",
      {msg("forged", {{std::string(meta::kReplyTo), md(real[0], meta::kReplyTo)},
                      {std::string(meta::kCorrelationId), md(real[0], meta::kCorrelationId)}})});
  auto forged = receive_ok(responder, "rr.spoof", 1, 5000ms);
  ASSERT_EQ(forged.size(), 1u);
  EXPECT_EQ(md(forged[0], meta::kReplyTo), "");
  EXPECT_EQ(md(forged[0], meta::kCorrelationId), "");
  auto refused = broker_->reply(forged[0], msg("to whom?"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message.find("witmq-reply-to"), std::string::npos);
  // Oversized addresses are refused before any lookup.
  auto big = broker_->reply_to(std::string(kMaxReplyAddressBytes + 1, 'a'), "c", msg("x"));
  EXPECT_EQ(big.error().code, ErrorCode::kInvalidArgument);
  ASSERT_TRUE(broker_->reply(real[0], msg("real")).ok());
  auto r = f.get();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(text((*r)[0]), "real");
}

// A reply address is the only proof a reply needs, so no client may be able to work out one it
// was not given: a responder that sees a run of correlation ids must learn nothing about the next
// inbox and correlation id. Were they drawn from a Mersenne Twister, 312 of them would give its
// state (outputs are only tempered), and with it every address the thread hands out next.
TEST_F(RequestReplyTest, AddressesSeenDoNotRevealTheNextOnes) {
  declare("rr.seen", ChannelKind::kPointToPoint);
  declare("rr.victim", ChannelKind::kPointToPoint);
  auto attacker = connect();
  auto responder = connect();
  std::vector<uint64_t> seen;
  // The attacker's first request also makes its inbox; the 312 correlation ids that follow are
  // consecutive draws of this thread's generator.
  for (int i = 0; i < 313; ++i) {
    auto f = request(attacker, "rr.seen", "q", 60'000ms);
    auto got = receive_ok(responder, "rr.seen", 1, 5000ms);
    ASSERT_EQ(got.size(), 1u);
    if (i > 0) seen.push_back(std::stoull(md(got[0], meta::kCorrelationId), nullptr, 16));
    ASSERT_TRUE(broker_->reply(got[0], msg("a")).ok());
    ASSERT_TRUE(broker_->complete_message(got[0]).ok());
    ASSERT_TRUE(f.get().ok());
  }
  std::stringstream state;
  for (uint64_t v : seen) state << untemper_mt19937_64(v) << ' ';
  std::mt19937_64 predictor;
  state >> predictor;
  const std::string predicted_inbox = fmt::format("{:016x}{:016x}", predictor(), predictor());
  const std::string predicted_correlation = fmt::format("{:016x}", predictor());

  auto victim = connect();
  auto f = request(victim, "rr.victim", "q", 60'000ms);
  // The forged reply reaches nothing; the real one answers.
  ASSERT_TRUE(broker_->reply_to(predicted_inbox, predicted_correlation, msg("forged")).ok());
  auto got = receive_ok(responder, "rr.victim", 1, 5000ms);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(md(got[0], meta::kReplyTo), predicted_inbox);
  EXPECT_NE(md(got[0], meta::kCorrelationId), predicted_correlation);
  ASSERT_TRUE(broker_->reply(got[0], msg("real")).ok());
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text((*r)[0]), "real");
}

TEST_F(RequestReplyTest, RequestToAChannelItCannotCreateFailsWithTheSendError) {
  auto requester = connect();
  auto r = request(requester, "bad name with spaces", "q", 5000ms).get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(broker_->tables().pending_requests, 0u);
}

TEST_F(RequestReplyTest, ResponderThatDiesIsReplacedAfterItsLease) {
  declare("rr.die", ChannelKind::kPointToPoint, 100);
  auto requester = connect();
  auto dying = connect();
  auto f = request(requester, "rr.die", "q", 10'000ms);
  ASSERT_EQ(receive_ok(dying, "rr.die", 1, 5000ms).size(), 1u);
  // It never replies; its lease runs out and another responder gets the request again.
  auto second = connect();
  respond(second, "rr.die", "from the second");
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(text((*r)[0]), "from the second");
}

TEST_F(RequestReplyTest, ShutdownEndsPendingRequests) {
  auto requester = connect();
  auto f = request(requester, "rr.shut", "q", 60'000ms);
  broker_->shutdown();
  auto r = f.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace witmq::broker::testing
