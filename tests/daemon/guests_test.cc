// Guests inside the real witmqd: started from the config, refused one by one when their module is
// bad, their sends received by TCP clients, their figures in server-stats.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "guest_daemon.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

json server_stats(Conn& c) {
  Frame f = c.call(net::AdminRequest{net::AdminOp::kServerStats, "{}"});
  auto* ok = std::get_if<net::AdminReply>(&f.body);
  EXPECT_NE(ok, nullptr) << describe(f);
  return ok ? json::parse(ok->json) : json();
}

TEST(GuestsTest, AGuestsSendReachesATcpClientAndABadModuleIsRefusedAlone) {
  const std::string config =
      write_config({{"guests",
                     {{{"name", "forwarder"}, {"module", wasm("forward_guest")}},
                      {{"name", "broken"}, {"module", wasm("missing_export_guest")}}}}});
  Daemon d({"--config", config});
  std::filesystem::remove(config);
  // The bad module is refused with its name and the missing export; the daemon runs on.
  EXPECT_TRUE(d.wait_for_log("guest 'broken': refused")) << d.log();
  EXPECT_NE(d.log().find("wasi:messaging/messaging-guest@0.2.0-draft#handler"), std::string::npos)
      << d.log();

  // The forwarder sends each batch to guest.out through the broker: a TCP client receives it.
  EXPECT_EQ(forward_round(d.port(), 5, "m"),
            (std::vector<std::string>{"m0", "m1", "m2", "m3", "m4"}));

  // Its input was completed (handler ok), and server-stats reports the running guest only.
  Conn producer(d.port());
  producer.hello();
  json stats;
  for (int i = 0; i < 200; ++i) {
    stats = server_stats(producer);
    if (stats["guests"].size() == 1 && stats["guests"][0]["completed"] == 5) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(stats["guests"].size(), 1u) << stats.dump();
  const json& g = stats["guests"][0];
  EXPECT_EQ(g["name"], "forwarder");
  EXPECT_EQ(g["messages-handled"], 5);
  EXPECT_EQ(g["completed"], 5);
  EXPECT_EQ(g["traps"], 0);
  EXPECT_GE(g["batches"].get<int>(), 1);
  EXPECT_EQ(g["instances-running"], 1);
  Frame in =
      producer.call(net::AdminRequest{net::AdminOp::kChannelStats, R"({"name":"guest.in"})"});
  ASSERT_FRAME(in, kChannelStatsOk);
  EXPECT_EQ(json::parse(std::get<net::AdminReply>(in.body).json)["depth"], 0);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(GuestsTest, HostileGuestsFailAloneAndSigtermEndsAGuestStillStarting) {
  // Issue 18 against the real daemon: a configure that waits forever (refused at its call
  // timeout, so the daemon still starts), a start function and `_initialize` that call imports,
  // a send that would make the host copy 256 MiB, and a guest whose re-instantiation waits
  // forever in configure while SIGTERM arrives (its call timeout is far away on purpose).
  const std::string config = write_config(
      {{"guests",
        {{{"name", "blocker"}, {"module", wasm("block_config_guest")}, {"call-timeout-ms", 500}},
         {{"name", "initer"}, {"module", wasm("init_import_guest")}, {"channels", {"init.in"}}},
         {{"name", "amplifier"},
          {"module", wasm("amplify_guest")},
          {"memory-pages", 64},
          {"channels", {"amp.in"}}},
         {{"name", "gated"},
          {"module", wasm("gate_guest")},
          {"channels", {"gated.in"}},
          {"call-timeout-ms", 3'600'000}}}}});
  Daemon d({"--config", config});
  std::filesystem::remove(config);
  EXPECT_TRUE(d.wait_for_log("guest 'blocker': refused")) << d.log();
  EXPECT_NE(d.log().find("wall time limit of 500 ms exceeded"), std::string::npos) << d.log();
  EXPECT_EQ(d.log().find("guest 'initer': refused"), std::string::npos) << d.log();

  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Send{"amp.in", {text_message("go")}}), kSendOk);
  EXPECT_TRUE(d.wait_for_log("would exceed what this call may copy out of guest memory"))
      << d.log();
  EXPECT_FRAME(c.call(net::Send{"gate", {text_message("close")}}), kSendOk);
  EXPECT_FRAME(c.call(net::Send{"gated.in", {text_message("trap")}}), kSendOk);
  EXPECT_TRUE(d.wait_for_log("guest 'gated' instance 0: trap in")) << d.log();
  json stats;
  for (int i = 0; i < 200; ++i) {
    stats = server_stats(c);
    bool again = false;
    for (const json& g : stats["guests"]) {
      if (g["name"] == "gated" && g["instantiations"].get<int>() >= 2) again = true;
    }
    if (again) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(d.stop(SIGTERM, 30s), 0) << d.log();
}

TEST(GuestsTest, AWasiGuestPrintsToTheDaemonLogAndItsExitFailsOnlyItsCall) {
#ifndef WITMQ_C_TEST_GUESTS_BUILT
  GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
  // A C guest built with wasi-libc (printf, time, getentropy, getenv, nanosleep) beside a guest
  // that calls proc_exit and one that floods stdout.
  const std::string config = write_config(
      {{"guests",
        {{{"name", "wasi-c"}, {"module", wasm("wasi_guest")}, {"env", {{"GREETING", "hi"}}}},
         {{"name", "exiter"}, {"module", wasm("wasi_probe_guest")}, {"channels", {"exit.in"}}},
         {{"name", "flooder"},
          {"module", wasm("wasi_probe_guest")},
          {"channels", {"flood.in"}}}}}});
  Daemon d({"--config", config});
  std::filesystem::remove(config);
  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Send{"exit.in", {text_message("x")}}), kSendOk);
  EXPECT_FRAME(c.call(net::Send{"flood.in", {text_message("f")}}), kSendOk);
  EXPECT_FRAME(c.call(net::Send{"wasi.in", {text_message("one")}}), kSendOk);
  EXPECT_TRUE(d.wait_for_log("guest 'wasi-c' stdout: batch 1 of 1 message(s) at ")) << d.log();
  EXPECT_TRUE(d.wait_for_log("greeting hi")) << d.log();
  EXPECT_TRUE(d.wait_for_log("guest 'exiter' instance 0: trap in")) << d.log();
  EXPECT_TRUE(d.wait_for_log("proc_exit(3): the guest exited")) << d.log();

  Frame f = c.call(net::SubscribeTryReceive{"wasi.out", 10000}, 15s);
  auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
  ASSERT_NE(ok, nullptr) << describe(f);
  ASSERT_TRUE(ok->messages && !ok->messages->empty());
  const Message& m = ok->messages->front();
  EXPECT_EQ(text(m), "one");
  const std::string* greeting = find_metadata(m, "greeting");
  ASSERT_NE(greeting, nullptr);
  EXPECT_EQ(*greeting, "hi");

  json stats;
  for (int i = 0; i < 200; ++i) {
    stats = server_stats(c);
    int done = 0;
    for (const json& g : stats["guests"]) {
      if (g["name"] == "flooder" && g["completed"] == 1) done++;
      if (g["name"] == "wasi-c" && g["completed"] == 1) done++;
    }
    if (done == 2) break;
    std::this_thread::sleep_for(50ms);
  }
  for (const json& g : stats["guests"]) {
    if (g["name"] == "flooder") {
      EXPECT_EQ(g["output-lines"].get<int>() + g["output-lines-dropped"].get<int>(), 1000)
          << g.dump();
      EXPECT_GT(g["output-lines-dropped"].get<int>(), 0) << g.dump();
    }
    if (g["name"] == "wasi-c") {
      EXPECT_GE(g["output-lines"].get<int>(), 2) << g.dump();
      EXPECT_EQ(g["traps"], 0) << g.dump();
    }
  }
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(GuestsTest, ComponentGuestsLoadByConfigAndMoveMessages) {
#ifndef WITMQ_COMPONENT_GUESTS_BUILT
  GTEST_SKIP() << "no wasm32-wasi clang or no node/npm: the component guests were not built";
#endif
  // Two components built with jco: the echo example alone, and a C guest using printf and time
  // wrapped with the WASI preview1 adapter (it imports WASI 0.2); and a core module renamed
  // .component that is a truncated component, refused alone.
  const std::string truncated = (std::filesystem::temp_directory_path() /
                                 ("witmqd-truncated-" + std::to_string(::getpid()) + ".wasm"))
                                    .string();
  {
    std::ifstream in(wasm("component_echo"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  const std::string config =
      write_config({{"guests",
                     {{{"name", "echo-component"}, {"module", wasm("component_echo")}},
                      {{"name", "hello-component"}, {"module", wasm("component_hello")}},
                      {{"name", "cut-component"}, {"module", truncated}}}}});
  Daemon d({"--config", config});
  std::filesystem::remove(config);
  EXPECT_TRUE(d.wait_for_log("guest 'cut-component': refused")) << d.log();
  EXPECT_TRUE(d.wait_for_log("malformed component at byte offset")) << d.log();
  std::filesystem::remove(truncated);

  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Send{"orders", {text_message("o1"), text_message("o2")}}), kSendOk);
  EXPECT_FRAME(c.call(net::Send{"hello.in", {text_message("h1")}}), kSendOk);
  EXPECT_EQ(texts(receive_messages(c, "orders.audit", 2)), (std::vector<std::string>{"o1", "o2"}));
  Frame f = c.call(net::SubscribeTryReceive{"hello.out", 10000}, 15s);
  auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
  ASSERT_NE(ok, nullptr) << describe(f);
  ASSERT_TRUE(ok->messages && !ok->messages->empty());
  EXPECT_EQ(text(ok->messages->front()), "h1");
  EXPECT_NE(find_metadata(ok->messages->front(), "seen-at"), nullptr);
  EXPECT_TRUE(d.wait_for_log("guest 'hello-component' stdout: hello: 1 message(s) at ")) << d.log();

  json stats;
  for (int i = 0; i < 200; ++i) {
    stats = server_stats(c);
    int done = 0;
    for (const json& g : stats["guests"]) {
      if (g["name"] == "echo-component" && g["completed"] == 2) done++;
      if (g["name"] == "hello-component" && g["completed"] == 1) done++;
    }
    if (done == 2) break;
    std::this_thread::sleep_for(50ms);
  }
  for (const json& g : stats["guests"]) {
    if (g["name"] == "hello-component") {
      EXPECT_EQ(g["completed"], 1) << g.dump();
      EXPECT_GE(g["output-lines"].get<int>(), 1) << g.dump();
      EXPECT_EQ(g["traps"], 0) << g.dump();
    }
    if (g["name"] == "echo-component") {
      EXPECT_EQ(g["completed"], 2) << g.dump();
    }
  }
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
