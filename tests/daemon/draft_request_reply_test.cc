// Request-reply for guests of the upstream draft's messaging-request-reply world inside the real
// witmqd: a C guest requester answered by a TCP responder, a C guest responder answering TCP
// requests (many at once, and one that traps mid-request), hostile guest calls, and the same
// guests as components.
#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "daemon_process.h"
#include "guest_daemon.h"
#include "http_client.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

json guest(const std::string& name, const std::string& stem, const std::string& channel,
           int instances = 1) {
  return {
      {"name", name}, {"module", wasm(stem)}, {"channels", {channel}}, {"instances", instances}};
}

// A request over TCP: the replies' texts, or the error.
Result<std::vector<std::string>> tcp_request(Conn& c, const std::string& channel, Message m,
                                             uint32_t timeout_ms, uint32_t expected = 1) {
  Frame f = c.call(net::Request{channel, timeout_ms, expected, std::move(m)}, 30s);
  if (auto e = error_of(f)) return *e;
  auto* ok = std::get_if<net::RequestOk>(&f.body);
  if (!ok) return Error(ErrorCode::kInternal, describe(f));
  std::vector<std::string> out;
  for (const Message& r : ok->replies) out.push_back(text(r));
  return out;
}

class DraftRequestReplyDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef WITMQ_C_TEST_GUESTS_BUILT
    GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
  }
};

TEST_F(DraftRequestReplyDaemonTest, AGuestRequesterIsAnsweredByATcpResponder) {
  auto d =
      start_with_guests(json::array({guest("requester", "draft_requester_guest", "draft.in")}));
  Conn producer(d->port());
  producer.hello();
  Conn responder(d->port());
  responder.hello();
  Conn consumer(d->port());
  consumer.hello();

  EXPECT_FRAME(producer.call(net::Send{"draft.in", {text_message("ping")}}), kSendOk);
  // The responder takes the request from the channel and replies to the address it carries.
  Message request;
  for (int i = 0; i < 40 && request.data.empty(); ++i) {
    Frame f = responder.call(net::SubscribeTryReceive{"rr.svc", 500}, 5s);
    auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
    ASSERT_NE(ok, nullptr) << describe(f);
    if (ok->messages && !ok->messages->empty()) request = ok->messages->front();
  }
  ASSERT_EQ(text(request), "ping");
  const std::string to = meta_value(request, meta::kReplyTo);
  const std::string correlation = meta_value(request, meta::kCorrelationId);
  ASSERT_FALSE(to.empty());
  ASSERT_FALSE(correlation.empty());
  EXPECT_FRAME(responder.call(net::Reply{to, correlation, text_message("pong")}), kReplyOk);
  EXPECT_FRAME(responder.call(net::CompleteMessage{receipt_of(request)}), kCompleteMessageOk);
  EXPECT_EQ(next_text(consumer, "draft.out"), "ok:1:pong");

  // No responder: the guest's request ends with the world's timeout error.
  EXPECT_FRAME(
      producer.call(net::Send{
          "draft.in", {text_message("anyone?", {{"topic", "rr.none"}, {"timeout-ms", "200"}})}}),
      kSendOk);
  EXPECT_EQ(next_text(consumer, "draft.out"), "err:0:");
  EXPECT_EQ(d->stop(), 0) << d->log();
}

TEST_F(DraftRequestReplyDaemonTest, AGuestResponderAnswersManyConcurrentTcpRequests) {
  auto d =
      start_with_guests(json::array({guest("responder", "draft_responder_guest", "rr.svc", 2)}));
  constexpr int kClients = 8;
  constexpr int kRequests = 25;
  std::atomic<int> answered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      Conn c(d->port());
      c.hello();
      // Each client keeps several requests in flight before reading the replies.
      std::vector<std::pair<uint32_t, std::string>> ids;
      for (int i = 0; i < kRequests; ++i) {
        const std::string body = std::to_string(t) + "." + std::to_string(i);
        ids.emplace_back(c.send(net::Request{"rr.svc", 20000, 1, text_message(body)}), body);
      }
      for (const auto& [id, body] : ids) {
        Frame f = c.reply(id, 30s);
        auto* ok = std::get_if<net::RequestOk>(&f.body);
        if (!ok) {
          ADD_FAILURE() << body << ": " << describe(f);
          continue;
        }
        EXPECT_EQ(ok->replies.size(), 1u);
        if (!ok->replies.empty() && text(ok->replies[0]) == "re:" + body) ++answered;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(answered.load(), kClients * kRequests);

  // A responder that traps mid-request: the requester times out, the host replaces the instance
  // and the next request is answered.
  Conn c(d->port());
  c.hello();
  auto r = tcp_request(c, "rr.svc", text_message("trap"), 500);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout) << r.error().to_string();
  EXPECT_TRUE(d->wait_for_log("trap")) << d->log();
  r = tcp_request(c, "rr.svc", text_message("after"), 10000);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*r, std::vector<std::string>{"re:after"});
  // Several replies to one request.
  r = tcp_request(c, "rr.svc", text_message("n", {{"replies", "3"}}), 10000, 3);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*r, (std::vector<std::string>{"re:n", "re:n#1", "re:n#2"}));
  EXPECT_EQ(d->stop(), 0) << d->log();
}

// Hostile calls from a guest of the draft world trap that guest only: the daemon, its other
// guests and its clients carry on.
TEST_F(DraftRequestReplyDaemonTest, HostileGuestCallsHarmNoOne) {
  auto d = start_with_guests(json::array({guest("requester", "draft_requester_guest", "draft.in"),
                                          guest("responder", "draft_responder_guest", "rr.svc")}));
  Conn producer(d->port());
  producer.hello();
  Conn consumer(d->port());
  consumer.hello();
  // One at a time (a trap abandons the rest of its batch), each waited for in the log.
  const std::pair<const char*, const char*> cases[] = {
      {"bad-client", "client handle 99 is not live"},
      {"bad-message", "message handle 777 is not live"},
      {"bad-options", "request-options handle 555 is not live"},
      {"bad-option-tag", "invalid option discriminant 7"},
      {"huge-topic", "request-reply.request topic: ["},
      {"bad-retptr", "request-reply.request: [4294967280, 4294967296)"},
      {"reply-bad-handle", "message handle 4242 is not live"},
      {"reply-same-handle", "both as reply-to (borrowed) and as the reply (moved)"},
      {"options-double-drop", "[resource-drop]request-options: request-options handle"},
      {"send-bad-client", "producer.send: client handle 99 is not live"},
      {"send-huge-topic", "producer.send topic: ["},
      {"send-dropped-message", "producer.send: message handle"},
      {"huge-data", "list<u8>: [16, 2147483648)"},
      {"bad-utf8", "is not valid UTF-8"},
      {"message-flood", "message handles: 1024 are live"},
      {"metadata-flood", "a message holds at most 1024 metadata entries"},
  };
  for (const auto& [what, logged] : cases) {
    EXPECT_FRAME(
        producer.call(net::Send{"draft.in", {text_message(std::string("hostile:") + what)}}),
        kSendOk);
    EXPECT_TRUE(d->wait_for_log(logged)) << what << ": " << d->log();
  }
  // Each hostile message comes back after its trap until max-deliveries sends it to the
  // dead-letter channel, and a message batched with one shares its abandonment: the next ones
  // are sent once the channel is empty.
  const auto until = std::chrono::steady_clock::now() + 120s;
  json stats;
  while (std::chrono::steady_clock::now() < until) {
    stats = http_get(d->http_port(), "/v1/channels/draft.in").json;
    if (stats.value("depth", 1) == 0 && stats.value("in-flight", 1) == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(stats.value("depth", 1), 0) << stats.dump();
  ASSERT_EQ(stats.value("in-flight", 1), 0) << stats.dump();
  EXPECT_FRAME(producer.call(net::Send{"draft.in", {text_message("hostile:reply-not-request")}}),
               kSendOk);
  // Options out of range, and a request that passes the guest's work to the guest responder.
  EXPECT_FRAME(
      producer.call(net::Send{"draft.in", {text_message("x", {{"expected-replies", "0"}})}}),
      kSendOk);
  EXPECT_FRAME(producer.call(net::Send{"draft.in", {text_message("fine")}}), kSendOk);
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) got.push_back(next_text(consumer, "draft.out"));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got,
            (std::vector<std::string>{
                "err:3:reply: the reply-to message has no witmq-reply-to metadata: only a "
                "message delivered as a request can be replied to",
                "err:3:request: expected-replies: 0 is out of range 1..1000", "ok:1:re:fine"}));
  Conn other(d->port());
  other.hello();
  EXPECT_FRAME(other.call(net::Ping{}), kPong);
  EXPECT_EQ(d->stop(), 0) << d->log();
}

TEST_F(DraftRequestReplyDaemonTest, ComponentsOfTheDraftWorldsRequestAndReply) {
#ifndef WITMQ_COMPONENT_GUESTS_BUILT
  GTEST_SKIP() << "no jco (node, npm): the component guests were not built";
#endif
  auto d =
      start_with_guests(json::array({guest("requester", "component_draft_requester", "draft.in"),
                                     guest("responder", "component_draft_responder", "rr.svc"),
                                     guest("forward", "component_draft_forward", "fwd.in")}));
  Conn c(d->port());
  c.hello();
  EXPECT_FRAME(c.call(net::Send{"draft.in", {text_message("hello")}}), kSendOk);
  EXPECT_EQ(next_text(c, "draft.out"), "ok:1:re:hello");
  auto r = tcp_request(c, "rr.svc", text_message("tcp"), 10000);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*r, std::vector<std::string>{"re:tcp"});
  EXPECT_FRAME(c.call(net::Send{"fwd.in", {text_message("f")}}), kSendOk);
  EXPECT_EQ(next_text(c, "draft.out"), "fwd:f");
  EXPECT_EQ(d->stop(), 0) << d->log();
}

}  // namespace
}  // namespace witmq::daemon::testing
