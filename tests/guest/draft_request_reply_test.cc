// The draft's messaging-request-reply world (guest_world_draft.cc): a guest requester answered by
// a broker client, a guest responder answering broker requests, timeouts, a responder that traps,
// stopping while a request waits, and hostile calls to request-reply; and the same guests as
// components of the draft's worlds (built with jco from wit/wasi-messaging-draft/).
#include <gtest/gtest.h>

#include <future>

#include "guest/guest_fixture.h"
#include "guest/guest_instance.h"

namespace witmq::guest {
namespace {

using namespace testing;  // NOLINT

class DraftRequestReplyTest : public GuestHostTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_EXAMPLE_GUESTS_BUILT
    GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
    GuestHostTest::SetUp();
  }

  GuestOptions guest(const std::string& name, const std::string& stem, const std::string& in) {
    GuestOptions o = options(name, stem);
    o.channels = {in};
    return o;
  }
  GuestHost* requester() { return start(guest("requester", "draft_requester_guest", "draft.in")); }

  // A message for the requester: `data`, with the request's settings as metadata.
  static Message ask(const std::string& data, Metadata md = {}) {
    Message m = text_message(data);
    if (!md.empty()) m.metadata = std::move(md);
    return m;
  }

  // The next report of the requester on draft.out.
  std::string next_out(std::chrono::milliseconds wait = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = receive("draft.out", 200ms);
      if (r.empty()) continue;
      EXPECT_EQ(r.size(), 1u);
      EXPECT_TRUE(broker_->complete_message(r[0]).ok());
      return text_of(r[0]);
    }
    return "(nothing on draft.out)";
  }

  // Answers the next `n` requests on `channel` from the test's client with "pong:<data>".
  void respond(const std::string& channel, size_t n) {
    size_t done = 0;
    eventually([&] {
      for (Message& m : receive(channel, 100ms)) {
        EXPECT_TRUE(broker_->reply(m, text_message("pong:" + text_of(m))).ok());
        EXPECT_TRUE(broker_->complete_message(m).ok());
        ++done;
      }
      return done >= n;
    });
  }

  std::string last_log_line() {
    std::lock_guard lock(log_mu_);
    return log_.empty() ? std::string() : log_.back();
  }

  Result<std::vector<Message>> request(const std::string& channel, Message m,
                                       broker::RequestOptions o) {
    std::promise<Result<std::vector<Message>>> p;
    auto f = p.get_future();
    broker_->request(client_, channel, std::move(m), o,
                     [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
    return f.get();
  }
};

TEST_F(DraftRequestReplyTest, AGuestRequestGetsTheRepliesAsMessages) {
  GuestHost* h = requester();
  ASSERT_TRUE(h);
  send("draft.in", {ask("ping")});
  respond("rr.svc", 1);
  EXPECT_EQ(next_out(), "ok:1:pong:ping");
  // Without options: one reply, the longest timeout.
  send("draft.in", {ask("bare", {{"no-options", "1"}})});
  respond("rr.svc", 1);
  EXPECT_EQ(next_out(), "ok:1:pong:bare");
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(DraftRequestReplyTest, ExpectedRepliesGathersFromEverySubscriber) {
  GuestHost* h = requester();
  ASSERT_TRUE(h);
  send("draft.in", {ask("all", {{"expected-replies", "2"}, {"timeout-ms", "5000"}})});
  // Two replies to the one request (scatter-gather answered by one test client twice).
  size_t replied = 0;
  ASSERT_TRUE(eventually([&] {
    for (Message& m : receive("rr.svc", 100ms)) {
      EXPECT_TRUE(broker_->reply(m, text_message("a")).ok());
      EXPECT_TRUE(broker_->reply(m, text_message("b")).ok());
      EXPECT_TRUE(broker_->complete_message(m).ok());
      ++replied;
    }
    return replied == 1;
  }));
  EXPECT_EQ(next_out(), "ok:2:a|b");
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(DraftRequestReplyTest, NoResponderEndsWithTheTimeoutCase) {
  GuestHost* h = requester();
  ASSERT_TRUE(h);
  send("draft.in", {ask("anyone?", {{"topic", "rr.nobody"}, {"timeout-ms", "100"}})});
  EXPECT_EQ(next_out(), "err:0:");
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(DraftRequestReplyTest, OptionsOutOfRangeAreErrorsNamingTheOption) {
  GuestHost* h = requester();
  ASSERT_TRUE(h);
  send("draft.in", {ask("x", {{"expected-replies", "0"}})});
  EXPECT_EQ(next_out(), "err:3:request: expected-replies: 0 is out of range 1..1000");
  send("draft.in", {ask("x", {{"expected-replies", "4000000000"}})});
  EXPECT_EQ(next_out(), "err:3:request: expected-replies: 4000000000 is out of range 1..1000");
  send("draft.in", {ask("x", {{"timeout-ms", "0"}})});
  EXPECT_EQ(next_out(), "err:3:request: timeout-ms: 0 is out of range 1..300000");
  send("draft.in", {ask("x", {{"timeout-ms", "4294967295"}})});
  EXPECT_EQ(next_out(), "err:3:request: timeout-ms: 4294967295 is out of range 1..300000");
  // A topic that is no channel name.
  send("draft.in", {ask("x", {{"topic", ""}})});
  const std::string empty_topic = next_out();
  EXPECT_EQ(empty_topic.rfind("err:3:", 0), 0u) << empty_topic;
  EXPECT_EQ(h->stats().traps, 0u);
  EXPECT_EQ(channel("rr.svc").head_seq, 0u) << "no refused request reached the channel";
}

TEST_F(DraftRequestReplyTest, ARequestOutsideTheGrantsIsPermissionDenied) {
  GuestOptions o = guest("requester", "draft_requester_guest", "draft.in");
  auth::Grants grants;
  grants.receive.push_back(*auth::ChannelPattern::parse("draft.in"));
  grants.send.push_back(*auth::ChannelPattern::parse("draft.out"));
  o.permissions = grants;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("draft.in", {ask("x")});
  const std::string out = next_out();
  EXPECT_EQ(out.rfind("err:2:", 0), 0u) << out;
  EXPECT_NE(out.find("rr.svc"), std::string::npos) << out;
  EXPECT_EQ(channel("rr.svc").head_seq, 0u);
}

TEST_F(DraftRequestReplyTest, ACallDeadlineShorterThanTheWaitFailsTheCall) {
  GuestOptions o = guest("requester", "draft_requester_guest", "draft.in");
  o.call_timeout = 300ms;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("draft.in", {ask("x", {{"topic", "rr.nobody"}, {"timeout-ms", "60000"}})});
  ASSERT_TRUE(eventually([&] { return h->stats().time_limit_hits >= 1; }));
  // Each wait ended with its call (the message is retried up to max-deliveries, then no request
  // is left waiting).
  EXPECT_TRUE(eventually([&] { return broker_->tables().pending_requests == 0; }));
}

TEST_F(DraftRequestReplyTest, StoppingEndsAWaitingRequest) {
  GuestHost* h = requester();
  ASSERT_TRUE(h);
  send("draft.in", {ask("x", {{"topic", "rr.nobody"}, {"timeout-ms", "300000"}})});
  ASSERT_TRUE(eventually([&] { return broker_->tables().pending_requests >= 1; }));
  h->stop();  // returns once the worker is out of the request (a hang fails the test's timeout)
  EXPECT_EQ(broker_->tables().pending_requests, 0u);
}

TEST_F(DraftRequestReplyTest, AGuestResponderAnswersRequests) {
  GuestHost* h = start(guest("responder", "draft_responder_guest", "rr.svc"));
  ASSERT_TRUE(h);
  auto r = request("rr.svc", text_message("ping"), {5s, 1});
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text_of((*r)[0]), "re:ping");
  Message three = text_message("n");
  three.metadata = Metadata{{"replies", "3"}};
  r = request("rr.svc", std::move(three), {5s, 3});
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ(text_of((*r)[2]), "re:n#2");
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(DraftRequestReplyTest, AResponderThatTrapsLeavesTheRequesterToTimeOut) {
  GuestHost* h = start(guest("responder", "draft_responder_guest", "rr.svc"));
  ASSERT_TRUE(h);
  auto r = request("rr.svc", text_message("trap"), {300ms, 1});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout) << r.error().to_string();
  ASSERT_TRUE(eventually([&] { return h->stats().traps >= 1; }));
  // The instance was replaced: the next request is answered.
  r = request("rr.svc", text_message("after"), {5s, 1});
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(text_of((*r)[0]), "re:after");
}

TEST_F(DraftRequestReplyTest, GuestRequesterAndGuestResponderTalk) {
  GuestHost* responder = start(guest("responder", "draft_responder_guest", "rr.svc"));
  GuestHost* req = requester();
  ASSERT_TRUE(responder && req);
  for (int i = 0; i < 5; ++i) {
    send("draft.in", {ask("q" + std::to_string(i))});
    EXPECT_EQ(next_out(), "ok:1:re:q" + std::to_string(i));
  }
}

TEST_F(DraftRequestReplyTest, ReplyingToAMessageThatIsNoRequestIsAnError) {
  GuestHost* h = requester();
  ASSERT_TRUE(h);
  send("draft.in", {ask("hostile:reply-not-request")});
  EXPECT_EQ(next_out(),
            "err:3:reply: the reply-to message has no witmq-reply-to metadata: only a message "
            "delivered as a request can be replied to");
  EXPECT_EQ(h->stats().traps, 0u);
}

// Each hostile call (of request-reply, types and producer) traps the guest with a message naming
// what was wrong; the host, the broker and the next request are fine.
TEST_F(DraftRequestReplyTest, HostileCallsTrapTheGuestOnly) {
  GuestHost* h = requester();
  ASSERT_TRUE(h);
  const std::pair<const char*, const char*> cases[] = {
      {"bad-client", "request-reply.request: client handle 99 is not live"},
      {"bad-message", "request-reply.request: message handle 777 is not live"},
      {"bad-options", "request-reply.request: request-options handle 555 is not live"},
      {"bad-option-tag", "request-reply.request: options: invalid option discriminant 7"},
      {"huge-topic", "request-reply.request topic: ["},
      {"bad-retptr", "request-reply.request: [4294967280, 4294967296) is outside guest memory"},
      {"reply-bad-handle", "request-reply.reply: message handle 4242 is not live"},
      {"reply-same-handle", "both as reply-to (borrowed) and as the reply (moved)"},
      {"options-double-drop", "[resource-drop]request-options: request-options handle"},
      // The types and producer interfaces.
      {"send-bad-client", "producer.send: client handle 99 is not live"},
      {"send-huge-topic", "producer.send topic: ["},
      {"send-dropped-message", "producer.send: message handle"},
      {"huge-data", "list<u8>: [16, 2147483648) is outside guest memory"},
      {"bad-utf8", "message.set-content-type: string at"},
      {"message-flood", "message handles: 1024 are live, the most an instance may hold"},
      {"metadata-flood", "add-metadata: a message holds at most 1024 metadata entries"},
  };
  // One at a time: a trap abandons the rest of its batch, which counts as a delivery attempt.
  for (const auto& [what, text] : cases) {
    send("draft.in", {ask(std::string("hostile:") + what)});
    EXPECT_TRUE(eventually([&] { return logged(text); }))
        << what << ": no log line with: " << text << "\nlast: " << last_log_line();
  }
  EXPECT_GE(h->stats().traps, std::size(cases));
  EXPECT_TRUE(receive("draft.out", 100ms).empty()) << "no hostile call survived";
  send("draft.in", {ask("still")});
  respond("rr.svc", 1);
  EXPECT_EQ(next_out(), "ok:1:pong:still");
}

class DraftComponentTest : public DraftRequestReplyTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_COMPONENT_GUESTS_BUILT
    GTEST_SKIP() << "no jco (node, npm) or wasm32-wasi clang: the component guests were not built";
#endif
    DraftRequestReplyTest::SetUp();
  }
};

TEST_F(DraftComponentTest, ComponentsOfTheDraftWorldsAreRecognized) {
  for (const char* stem :
       {"component_draft_forward", "component_draft_requester", "component_draft_responder"}) {
    auto m = load_guest_module(wasm_path(stem), WasmLimits{});
    ASSERT_TRUE(m.ok()) << stem << ": " << m.error().message;
    EXPECT_EQ(module_world(**m), World::kMessagingCore) << stem;
  }
}

TEST_F(DraftComponentTest, AMessagingCoreComponentReceivesAndSends) {
  GuestHost* h = start(guest("fwd", "component_draft_forward", "draft.in"));
  ASSERT_TRUE(h);
  send("draft.in", {text_message("a"), text_message("b")});
  std::vector<std::string> got;
  ASSERT_TRUE(eventually([&] {
    for (const Message& m : receive("draft.out", 100ms)) {
      got.push_back(text_of(m));
      const std::string* from = find_metadata(m, "from");
      EXPECT_TRUE(from && *from == "draft.in");
    }
    return got.size() >= 2;
  }));
  EXPECT_EQ(got, (std::vector<std::string>{"fwd:a", "fwd:b"}));
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(DraftComponentTest, RequestReplyComponentsTalk) {
  GuestHost* responder = start(guest("responder", "component_draft_responder", "rr.svc"));
  GuestHost* req = start(guest("requester", "component_draft_requester", "draft.in"));
  ASSERT_TRUE(responder && req);
  send("draft.in", {ask("hello")});
  EXPECT_EQ(next_out(), "ok:1:re:hello");
  send("draft.in", {ask("late", {{"topic", "rr.nobody"}, {"timeout-ms", "100"}})});
  EXPECT_EQ(next_out(), "err:0:");
  auto r = request("rr.svc", text_message("direct"), {5s, 1});
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(text_of((*r)[0]), "re:direct");
  EXPECT_EQ(responder->stats().traps + req->stats().traps, 0u);
}

}  // namespace
}  // namespace witmq::guest
