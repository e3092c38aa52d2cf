// Guests of wasmCloud's wasmcloud:messaging world inside the real witmqd: a TCP request answered
// by a guest through its reply-to, a guest's consumer.request answered by a TCP responder and by
// another guest, a request outside the guest's grants, and a hostile guest of the world.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "guest_daemon.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

TEST(WasmcloudGuestsTest, RequestsAndRepliesThroughTcpAndGuests) {
#ifndef WITMQ_C_TEST_GUESTS_BUILT
  GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
  const std::string config = write_config(
      {{"guests",
        {{{"name", "svc"}, {"module", wasm("wasmcloud_guest")}, {"channels", {"wc.svc"}}},
         {{"name", "asker"},
          {"module", wasm("wasmcloud_guest")},
          {"channels", {"wc.ask"}},
          {"permissions", {{"receive", {"wc.ask"}}, {"send", {"wc.out", "svc.*", "wc.svc"}}}}},
         {{"name", "hostile"},
          {"module", wasm("wasmcloud_hostile_guest")},
          {"channels", {"wc.hostile"}}}}}});
  Daemon d({"--config", config});
  std::filesystem::remove(config);
  ASSERT_TRUE(d.wait_for_log("guest 'asker'")) << d.log();

  Conn client(d.port());
  client.hello();
  Conn out(d.port());
  out.hello();

  // 1. A TCP request answered by the guest on wc.svc, which publishes to its reply-to.
  {
    Frame f = client.call(net::Request{"wc.svc", 10'000, 1, text_message("ping")}, 15s);
    auto* ok = std::get_if<net::RequestOk>(&f.body);
    ASSERT_NE(ok, nullptr) << describe(f);
    ASSERT_EQ(ok->replies.size(), 1u);
    EXPECT_EQ(text(ok->replies[0]), "re:ping");
  }

  // 2. The guest's consumer.request answered by a TCP responder.
  {
    EXPECT_FRAME(client.call(net::Send{"wc.ask", {text_message("svc.tcp 10000 hi")}}), kSendOk);
    Conn responder(d.port());
    responder.hello();
    bool answered = false;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!answered && std::chrono::steady_clock::now() < deadline) {
      Frame f = responder.call(net::SubscribeTryReceive{"svc.tcp", 1000}, 5s);
      auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
      ASSERT_NE(ok, nullptr) << describe(f);
      if (!ok->messages) continue;
      for (const Message& m : *ok->messages) {
        const std::string* reply_to = find_metadata(m, meta::kReplyTo);
        const std::string* correlation = find_metadata(m, meta::kCorrelationId);
        ASSERT_NE(reply_to, nullptr);
        ASSERT_NE(correlation, nullptr);
        EXPECT_EQ(text(m), "hi");
        EXPECT_FRAME(responder.call(net::Reply{*reply_to, *correlation, text_message("answer")}),
                     kReplyOk);
        EXPECT_FRAME(responder.call(net::CompleteMessage{receipt_of(m)}), kCompleteMessageOk);
        answered = true;
      }
    }
    ASSERT_TRUE(answered);
    EXPECT_EQ(next_text(out, "wc.out"), "got:answer|svc.tcp");
  }

  // 3. A guest's request answered by another guest.
  EXPECT_FRAME(client.call(net::Send{"wc.ask", {text_message("wc.svc 10000 x")}}), kSendOk);
  EXPECT_EQ(next_text(out, "wc.out"), "got:re:x|wc.svc");

  // 4. A request outside the guest's grants: a clear error, nothing sent.
  EXPECT_FRAME(client.call(net::Send{"wc.ask", {text_message("secret.x 1000 y")}}), kSendOk);
  const std::string denied = next_text(out, "wc.out");
  EXPECT_NE(denied.find("err:permission-denied"), std::string::npos) << denied;
  EXPECT_NE(denied.find("secret.x"), std::string::npos) << denied;

  // 5. A hostile guest traps alone; the others and the daemon carry on.
  EXPECT_FRAME(client.call(net::Send{"wc.hostile", {text_message("h"), text_message("r")}}),
               kSendOk);
  EXPECT_TRUE(d.wait_for_log("consumer.publish subject")) << d.log();
  {
    Frame f = client.call(net::Request{"wc.svc", 10'000, 1, text_message("again")}, 15s);
    auto* ok = std::get_if<net::RequestOk>(&f.body);
    ASSERT_NE(ok, nullptr) << describe(f);
    ASSERT_EQ(ok->replies.size(), 1u);
    EXPECT_EQ(text(ok->replies[0]), "re:again");
  }
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(WasmcloudGuestsTest, AComponentGuestAnswersTcpRequestsAndRequestsItself) {
#ifndef WITMQ_COMPONENT_GUESTS_BUILT
  GTEST_SKIP() << "no clang, node or npm: the component guests were not built";
#endif
  const std::string config = write_config(
      {{"guests",
        {{{"name", "svc"}, {"module", wasm("component_wasmcloud")}, {"channels", {"wc.svc2"}}},
         {{"name", "asker"}, {"module", wasm("component_wasmcloud")}, {"channels", {"wc.ask"}}}}}});
  Daemon d({"--config", config});
  std::filesystem::remove(config);
  Conn client(d.port());
  client.hello();
  Conn out(d.port());
  out.hello();
  for (const char* body : {"one", "two", ""}) {
    Frame f = client.call(net::Request{"wc.svc2", 10'000, 1, text_message(body)}, 15s);
    auto* ok = std::get_if<net::RequestOk>(&f.body);
    ASSERT_NE(ok, nullptr) << describe(f);
    ASSERT_EQ(ok->replies.size(), 1u);
    EXPECT_EQ(text(ok->replies[0]), std::string("re:") + body);
  }
  EXPECT_FRAME(client.call(net::Send{"wc.ask", {text_message("wc.svc2 10000 x")}}), kSendOk);
  EXPECT_EQ(next_text(out, "wc.out"), "got:re:x|wc.svc2");
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
