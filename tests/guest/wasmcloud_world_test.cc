// wasmCloud's wasmcloud:messaging world (worlds.h, guest_world_wasmcloud.cc): recognition,
// channels from the settings, handle-message + consumer.publish + consumer.request end to end
// with the real broker (responders in the test, in a guest, and a guest answering a request),
// grants, the call's wall time bounding a request, stopping during a request, and hostile guests.
#include <gtest/gtest.h>

#include <algorithm>

#include "guest/guest_fixture.h"
#include "guest/guest_instance.h"

namespace witmq::guest {
namespace {

using namespace testing;  // NOLINT

class WasmcloudWorldTest : public GuestHostTest {
 protected:
  GuestOptions wasmcloud(const std::string& name, const std::string& stem,
                         std::vector<std::string> channels) {
    GuestOptions o = options(name, stem);
    o.channels = std::move(channels);
    return o;
  }
  // The texts that arrive on `channel` until it stays empty for a while.
  std::vector<std::string> drain(const std::string& channel, size_t at_least) {
    std::vector<std::string> out;
    eventually([&] {
      for (const Message& m : receive(channel, 100ms)) {
        out.push_back(text_of(m));
        EXPECT_TRUE(broker_->complete_message(m).ok());
      }
      return out.size() >= at_least;
    });
    return out;
  }
  // Answers every request on `channel` with "answer:<data>" until stopped.
  void respond(const std::string& channel) {
    auto c = broker_->connect("");
    ASSERT_TRUE(c.ok());
    responder_client_ = *c;
    responder_ = std::thread([this, channel, c = *c] {
      while (!responder_stop_) {
        std::promise<Result<std::vector<Message>>> p;
        auto f = p.get_future();
        broker_->receive(c, {channel}, broker::ReceiveOptions{0, 100ms},
                         [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
        auto r = f.get();
        if (!r.ok()) continue;
        for (const Message& m : *r) {
          EXPECT_TRUE(broker_->reply(m, text_message("answer:" + text_of(m))).ok());
          EXPECT_TRUE(broker_->complete_message(m).ok());
        }
      }
    });
  }
  void TearDown() override {
    responder_stop_ = true;
    if (responder_.joinable()) responder_.join();
    responder_client_.reset();
    GuestHostTest::TearDown();
  }

  std::thread responder_;
  std::atomic<bool> responder_stop_{false};
  broker::ClientPtr responder_client_;
};

class WasmcloudCGuestTest : public WasmcloudWorldTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_EXAMPLE_GUESTS_BUILT
    GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
    WasmcloudWorldTest::SetUp();
  }
};

// The same C guest wrapped into a component of wasmCloud's world with jco.
class WasmcloudComponentTest : public WasmcloudWorldTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_COMPONENT_GUESTS_BUILT
    GTEST_SKIP() << "no clang, node or npm: the component guests were not built";
#endif
    WasmcloudWorldTest::SetUp();
  }
};

std::string load_error(const std::string& stem) {
  auto m = load_guest_module(wasm_path(stem), WasmLimits{});
  EXPECT_FALSE(m.ok()) << stem << " was accepted";
  return m.ok() ? std::string() : m.error().message;
}

TEST_F(WasmcloudCGuestTest, IsRecognizedAsWasmcloudMessaging) {
  auto m = load_guest_module(wasm_path("wasmcloud_guest"), WasmLimits{});
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(module_world(**m), World::kWasmcloudMessaging);
  EXPECT_STREQ(world_name(World::kWasmcloudMessaging), "wasmcloud-messaging");
}

TEST_F(WasmcloudCGuestTest, HandlesEachMessageAndPublishesWithReplyTo) {
  GuestHost* h = start(wasmcloud("wc", "wasmcloud_guest", {"wc.in"}));
  ASSERT_TRUE(h);
  send("wc.in", {text_message("a"), text_message("b")});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("wc.out", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return got.size() >= 2;
  }));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(text_of(got[0]), "fwd:a");
  EXPECT_EQ(text_of(got[1]), "fwd:b");
  for (const Message& m : got) {
    // The reply-to the guest published with; its subject was the channel.
    const std::string* reply_to = find_metadata(m, "reply-to");
    ASSERT_NE(reply_to, nullptr);
    EXPECT_EQ(*reply_to, "from:wc.in");
  }
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; })) << h->stats().completed;
  EXPECT_EQ(h->stats().traps, 0u);
  EXPECT_EQ(h->stats().handler_errors, 0u);
}

TEST_F(WasmcloudCGuestTest, AReplyToInTheMetadataReachesTheGuestThatHandlesTheMessage) {
  // A guest on wc.svc answers to the reply-to it is handed: here a plain channel.
  GuestHost* h = start(wasmcloud("svc", "wasmcloud_guest", {"wc.svc"}));
  ASSERT_TRUE(h);
  Message m = text_message("ping");
  m.metadata.emplace().emplace_back("reply-to", "wc.answers");
  send("wc.svc", {std::move(m)});
  EXPECT_EQ(drain("wc.answers", 1), std::vector<std::string>{"re:ping"});
}

TEST_F(WasmcloudCGuestTest, AnErrAbandonsOnlyThatMessage) {
  GuestHost* h = start(wasmcloud("wc", "wasmcloud_guest", {"wc.in"}));
  ASSERT_TRUE(h);
  send("wc.in", {text_message("ok1"), text_message("fail"), text_message("ok2")});
  auto dead = dead_letters(1, "wc.in.dlq");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "fail");
  std::vector<std::string> out;
  for (auto r = receive("wc.out", 500ms); !r.empty(); r = receive("wc.out", 200ms)) {
    for (const Message& m : r) out.push_back(text_of(m));
  }
  EXPECT_EQ(out, (std::vector<std::string>{"fwd:ok1", "fwd:ok2"}));
  EXPECT_TRUE(logged("refused: fail"));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(WasmcloudCGuestTest, ARequestIsAnsweredByAResponderClient) {
  respond("svc.echo");
  GuestHost* h = start(wasmcloud("asker", "wasmcloud_guest", {"wc.ask"}));
  ASSERT_TRUE(h);
  send("wc.ask", {text_message("svc.echo 5000 hello")});
  EXPECT_EQ(drain("wc.out", 1), std::vector<std::string>{"got:answer:hello|svc.echo"});
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(WasmcloudCGuestTest, AGuestAnswersARequestThroughItsReplyTo) {
  GuestHost* h = start(wasmcloud("svc", "wasmcloud_guest", {"wc.svc"}));
  ASSERT_TRUE(h);
  std::promise<Result<std::vector<Message>>> p;
  auto f = p.get_future();
  broker::RequestOptions ro;
  ro.timeout = 10s;
  broker_->request(client_, "wc.svc", text_message("ping"), ro,
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text_of(r->front()), "re:ping");
  // An empty body reaches the guest as an empty list.
  std::promise<Result<std::vector<Message>>> empty;
  auto fe = empty.get_future();
  broker_->request(client_, "wc.svc", text_message(""), ro,
                   [&empty](Result<std::vector<Message>> r) { empty.set_value(std::move(r)); });
  auto re = fe.get();
  ASSERT_TRUE(re.ok()) << re.error().to_string();
  ASSERT_EQ(re->size(), 1u);
  EXPECT_EQ(text_of(re->front()), "re:");
  EXPECT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(WasmcloudCGuestTest, AGuestRequestIsAnsweredByAGuestResponder) {
  ASSERT_TRUE(start(wasmcloud("svc", "wasmcloud_guest", {"wc.svc"})));
  ASSERT_TRUE(start(wasmcloud("asker", "wasmcloud_guest", {"wc.ask"})));
  send("wc.ask", {text_message("wc.svc 5000 one"), text_message("wc.svc 5000 two")});
  EXPECT_EQ(drain("wc.out", 2),
            (std::vector<std::string>{"got:re:one|wc.svc", "got:re:two|wc.svc"}));
}

TEST_F(WasmcloudCGuestTest, ManyInstancesRequestAtOnce) {
  respond("svc.echo");
  GuestOptions o = wasmcloud("asker", "wasmcloud_guest", {"wc.ask"});
  o.instances = 4;
  o.batch_size = 1;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  std::vector<Message> asks;
  std::vector<std::string> expected;
  for (int i = 0; i < 40; ++i) {
    asks.push_back(text_message("svc.echo 10000 " + std::to_string(i)));
    expected.push_back("got:answer:" + std::to_string(i) + "|svc.echo");
  }
  send("wc.ask", std::move(asks));
  std::vector<std::string> out = drain("wc.out", expected.size());
  std::sort(out.begin(), out.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(out, expected);
  EXPECT_EQ(h->stats().traps, 0u);
  EXPECT_EQ(h->stats().handler_errors, 0u);
}

TEST_F(WasmcloudCGuestTest, ARequestWithoutResponderTimesOutWithAClearError) {
  GuestHost* h = start(wasmcloud("asker", "wasmcloud_guest", {"wc.ask"}));
  ASSERT_TRUE(h);
  send("wc.ask", {text_message("svc.none 200 x"), text_message("svc.none 0 y")});
  auto out = drain("wc.out", 2);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NE(out[0].find("err:"), std::string::npos) << out[0];
  EXPECT_NE(out[0].find("no reply on channel 'svc.none' within 200 ms"), std::string::npos)
      << out[0];
  EXPECT_NE(out[1].find("timeout-ms: 0 is out of range"), std::string::npos) << out[1];
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(WasmcloudCGuestTest, TheCallsWallTimeBoundsARequest) {
  GuestOptions o = wasmcloud("asker", "wasmcloud_guest", {"wc.ask"});
  o.call_timeout = 300ms;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  // Asks for 60 s; the call may take 300 ms: the wait ends there and the call fails.
  send("wc.ask", {text_message("svc.none 60000 x")});
  ASSERT_TRUE(eventually([&] { return h->stats().traps + h->stats().time_limit_hits >= 1; }));
  EXPECT_TRUE(logged("wall time")) << "the end of the call is logged";
  EXPECT_TRUE(receive("wc.out", 100ms).empty());
}

TEST_F(WasmcloudCGuestTest, StoppingEndsAWaitingRequest) {
  GuestHost* h = start(wasmcloud("asker", "wasmcloud_guest", {"wc.ask"}));
  ASSERT_TRUE(h);
  send("wc.ask", {text_message("svc.none 60000 x")});
  // The request is out (it waits on svc.none) before the guest is stopped.
  ASSERT_TRUE(eventually([&] { return channel("svc.none").head_seq >= 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  h->stop();
  // stop() returned although the request asked for 60 s: interrupt() ended it.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
}

TEST_F(WasmcloudCGuestTest, RequestAndPublishOutsideTheGrantsAreRefused) {
  GuestOptions o = wasmcloud("asker", "wasmcloud_guest", {"wc.ask", "wc.svc"});
  auth::Grants grants;
  grants.receive.push_back(*auth::ChannelPattern::parse("wc.*"));
  grants.send.push_back(*auth::ChannelPattern::parse("wc.out"));
  o.permissions = grants;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("wc.ask", {text_message("svc.secret 1000 x")});
  auto out = drain("wc.out", 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].find("err:permission-denied"), std::string::npos) << out[0];
  EXPECT_NE(out[0].find("svc.secret"), std::string::npos) << out[0];
  EXPECT_EQ(channel("svc.secret").head_seq, 0u) << "nothing reached the channel";
  // A publish to a channel outside the grants (the reply-to of a message) fails handle-message.
  Message m = text_message("ping");
  m.metadata.emplace().emplace_back("reply-to", "wc.elsewhere");
  send("wc.svc", {std::move(m)});
  ASSERT_TRUE(eventually([&] { return h->stats().handler_errors >= 1; }));
  EXPECT_TRUE(logged("may not send to channel 'wc.elsewhere'"));
  EXPECT_EQ(channel("wc.elsewhere").head_seq, 0u);
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(WasmcloudCGuestTest, APublishToAMalformedReplyAddressIsAClearError) {
  GuestHost* h = start(wasmcloud("svc", "wasmcloud_guest", {"wc.svc"}));
  ASSERT_TRUE(h);
  Message m = text_message("ping");
  m.metadata.emplace().emplace_back("reply-to", "@witmq-reply/nothing-here");
  send("wc.svc", {std::move(m)});
  ASSERT_TRUE(eventually([&] { return h->stats().handler_errors >= 1; }));
  EXPECT_TRUE(logged("is malformed"));
  // A well-formed address that names no request is dropped, like any stale reply.
  Message forged = text_message("ping");
  forged.metadata.emplace().emplace_back("reply-to", "@witmq-reply/0123/4567");
  send("wc.svc", {std::move(forged)});
  ASSERT_TRUE(eventually([&] { return broker_->tables().replies_dropped_total >= 1; }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(WasmcloudCGuestTest, WithoutChannelsTheGuestIsRefused) {
  auto h = GuestHost::load(*broker_, options("wc", "wasmcloud_guest"), nullptr);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.error().message.find("wasmcloud-messaging"), std::string::npos) << h.error().message;
  EXPECT_NE(h.error().message.find("\"channels\""), std::string::npos) << h.error().message;
}

TEST_F(WasmcloudComponentTest, IsRecognizedAsWasmcloudMessaging) {
  auto m = load_guest_module(wasm_path("component_wasmcloud"), WasmLimits{});
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(module_world(**m), World::kWasmcloudMessaging);
}

TEST_F(WasmcloudComponentTest, AComponentRequestsAnswersAndPublishes) {
  respond("svc.echo");
  ASSERT_TRUE(start(wasmcloud("svc", "component_wasmcloud", {"wc.svc"})));
  ASSERT_TRUE(start(wasmcloud("asker", "component_wasmcloud", {"wc.ask"})));
  ASSERT_TRUE(start(wasmcloud("fwd", "component_wasmcloud", {"wc.in"})));
  // A request answered by the component through its reply-to.
  std::promise<Result<std::vector<Message>>> p;
  auto f = p.get_future();
  broker::RequestOptions ro;
  ro.timeout = 10s;
  broker_->request(client_, "wc.svc", text_message("ping"), ro,
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text_of(r->front()), "re:ping");
  // The component's requests, answered by a client and by the component on wc.svc.
  send("wc.ask", {text_message("svc.echo 5000 a")});
  EXPECT_EQ(drain("wc.out", 1), std::vector<std::string>{"got:answer:a|svc.echo"});
  send("wc.ask", {text_message("wc.svc 5000 b")});
  EXPECT_EQ(drain("wc.out", 1), std::vector<std::string>{"got:re:b|wc.svc"});
  send("wc.in", {text_message("c")});
  EXPECT_EQ(drain("wc.out", 1), std::vector<std::string>{"fwd:c"});
}

TEST_F(WasmcloudWorldTest, AnImportWithTheWrongSignatureIsRefused) {
  const std::string e = load_error("wasmcloud_wrong_signature_guest");
  EXPECT_NE(e.find("\"wasmcloud:messaging/consumer@0.2.0\".\"publish\""), std::string::npos) << e;
  EXPECT_NE(e.find("expected (func (param i32 i32 i32 i32 i32 i32 i32 i32))"), std::string::npos)
      << e;
}

TEST_F(WasmcloudWorldTest, AnExportWithTheWrongSignatureIsRefused) {
  const std::string e = load_error("wasmcloud_wrong_export_guest");
  EXPECT_NE(e.find(wasmcloud_names::kHandleMessage), std::string::npos) << e;
  EXPECT_NE(e.find("expected (func (param i32 i32 i32 i32 i32 i32 i32) (result i32))"),
            std::string::npos)
      << e;
}

TEST_F(WasmcloudWorldTest, AModuleOfNoWorldNamesThisWorldToo) {
  const std::string e = load_error("no_world_guest");
  EXPECT_NE(e.find(wasmcloud_names::kHandleMessage), std::string::npos) << e;
}

TEST_F(WasmcloudWorldTest, ABIMisuseTrapsTheGuestOnly) {
  const std::pair<const char*, const char*> cases[] = {
      {"h", "consumer.publish subject"},
      {"p", "consumer.publish: [4294967280"},
      {"d", "invalid option discriminant 7 of reply-to"},
      {"r", "list<u8>: [0, 2147483647) is outside guest memory"},
      {"x", "the result of handle-message"},
      {"e", "invalid result discriminant 5"},
  };
  for (const auto& [op, expected] : cases) {
    SCOPED_TRACE(op);
    const std::string in = std::string("hx.") + op;
    GuestHost* h = start(wasmcloud(in, "wasmcloud_hostile_guest", {in}));
    ASSERT_TRUE(h);
    send(in, {text_message(op)});
    ASSERT_TRUE(eventually([&] { return h->stats().traps >= 1; }));
    EXPECT_TRUE(logged(expected)) << expected;
    EXPECT_EQ(h->stats().completed, 0u);
  }
  // A message the guest handles correctly still goes through, and the broker carries on.
  GuestHost* ok = start(wasmcloud("hx.ok", "wasmcloud_hostile_guest", {"hx.ok"}));
  ASSERT_TRUE(ok);
  send("hx.ok", {text_message("fine")});
  ASSERT_TRUE(eventually([&] { return ok->stats().completed == 1; }));
  EXPECT_EQ(ok->stats().traps, 0u);
}

}  // namespace
}  // namespace witmq::guest
