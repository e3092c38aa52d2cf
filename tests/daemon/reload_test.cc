// SIGHUP reload of the real witmqd: the config file changed under a running daemon adds a guest
// and declares a channel; a bad file is refused with its key and reason and changes nothing; a
// key that only a start applies is reported as needing a restart. Also the key comparison itself.
#include "daemon/reload.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon/config.h"
#include "daemon_process.h"
#include "guest_daemon.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

// A config file in a temporary directory, rewritten by the test and removed with it.
class ConfigFile {
 public:
  ConfigFile() : dir_(make_temp_dir("reload")), path_(dir_ + "/witmqd.json") {}
  ~ConfigFile() { std::filesystem::remove_all(dir_); }
  void write(const json& config) { write_text(config.dump(2)); }
  void write_text(const std::string& text) {
    // Replaced in one rename, as an editor or a deployment tool would.
    const std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

json admin(Conn& c, net::AdminOp op, const json& request) {
  Frame f = c.call(net::AdminRequest{op, request.dump()});
  auto* ok = std::get_if<net::AdminReply>(&f.body);
  EXPECT_NE(ok, nullptr) << describe(f);
  return ok ? json::parse(ok->json) : json();
}

// Counts the occurrences of `text` in the log, so a test can wait for the next reload's line.
size_t count(const std::string& log, std::string_view text) {
  size_t n = 0;
  for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

bool wait_for_count(Daemon& d, std::string_view text, size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (count(d.log(), text) < n) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

const json kForwarder = {{"name", "forwarder"}, {"module", ""}};

TEST(ReloadTest, SighupStartsAGuestAndDeclaresAChannel) {
  ConfigFile config;
  config.write(json::object());
  Daemon d({"--config", config.path()});
  Conn admin_conn(d.port());
  admin_conn.hello();
  EXPECT_EQ(admin(admin_conn, net::AdminOp::kServerStats, json::object())["guests"].size(), 0u);

  json forwarder = kForwarder;
  forwarder["module"] = wasm("forward_guest");
  config.write({{"log-level", "debug"},
                {"guests", {forwarder}},
                {"channels",
                 {{"orders", {{"kind", "publish-subscribe"}, {"max-deliveries", 3}}},
                  {"jobs", {{"lease-ms", 2500}}}}}});
  d.signal(SIGHUP);
  ASSERT_TRUE(d.wait_for_log("reload done")) << d.log();
  const std::string log = d.log();
  EXPECT_NE(log.find("reload: log-level info -> debug"), std::string::npos) << log;
  EXPECT_NE(log.find("guests 1 started, 0 replaced, 0 stopped, 0 unchanged, 0 refused; "
                     "channels 2 declared, 0 refused; nothing needs a restart"),
            std::string::npos)
      << log;

  // The guest now forwards guest.in to guest.out.
  EXPECT_EQ(forward_round(d.port(), 3, "a"), (std::vector<std::string>{"a0", "a1", "a2"}));
  const json stats = admin(admin_conn, net::AdminOp::kServerStats, json::object());
  ASSERT_EQ(stats["guests"].size(), 1u) << stats.dump();
  EXPECT_EQ(stats["guests"][0]["name"], "forwarder");

  // The channels exist with the declared settings; what the entry leaves out is the default.
  json orders = admin(admin_conn, net::AdminOp::kChannelStats, {{"name", "orders"}});
  EXPECT_EQ(orders["settings"]["kind"], "publish-subscribe") << orders.dump();
  EXPECT_EQ(orders["settings"]["max-deliveries"], 3) << orders.dump();
  const json jobs = admin(admin_conn, net::AdminOp::kChannelStats, {{"name", "jobs"}});
  EXPECT_EQ(jobs["settings"]["kind"], "point-to-point") << jobs.dump();
  EXPECT_EQ(jobs["settings"]["lease-ms"], 2500) << jobs.dump();

  // A second reload: orders changes, jobs leaves the file (kept), the guest is removed.
  config.write(
      {{"channels", {{"orders", {{"kind", "publish-subscribe"}, {"max-deliveries", 7}}}}}});
  d.signal(SIGHUP);
  ASSERT_TRUE(wait_for_count(d, "reload done", 2)) << d.log();
  EXPECT_NE(d.log().find("guests 0 started, 0 replaced, 1 stopped, 0 unchanged, 0 refused; "
                         "channels 1 declared, 0 refused"),
            std::string::npos)
      << d.log();
  EXPECT_NE(d.log().find("channel 'jobs' is no longer in the configuration; it is kept"),
            std::string::npos)
      << d.log();
  orders = admin(admin_conn, net::AdminOp::kChannelStats, {{"name", "orders"}});
  EXPECT_EQ(orders["settings"]["max-deliveries"], 7) << orders.dump();
  EXPECT_EQ(admin(admin_conn, net::AdminOp::kChannelStats, {{"name", "jobs"}})["name"], "jobs");
  EXPECT_EQ(admin(admin_conn, net::AdminOp::kServerStats, json::object())["guests"].size(), 0u);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(ReloadTest, ABadConfigOnReloadChangesNothing) {
  ConfigFile config;
  json forwarder = kForwarder;
  forwarder["module"] = wasm("forward_guest");
  config.write({{"guests", {forwarder}}});
  Daemon d({"--config", config.path()});
  EXPECT_EQ(forward_round(d.port(), 2, "a"), (std::vector<std::string>{"a0", "a1"}));

  // A value out of range: refused with the key, the file and the reason.
  config.write({{"guests", json::array()}, {"max-in-flight", -1}});
  d.signal(SIGHUP);
  ASSERT_TRUE(d.wait_for_log("reload refused, nothing changed")) << d.log();
  EXPECT_NE(
      d.log().find("max-in-flight (from " + config.path() + "): -1 is out of range 0..1000000"),
      std::string::npos)
      << d.log();
  // Not JSON at all: the same.
  config.write_text("{\"guests\": [");
  d.signal(SIGHUP);
  ASSERT_TRUE(wait_for_count(d, "reload refused, nothing changed", 2)) << d.log();
  EXPECT_NE(d.log().find("not valid JSON"), std::string::npos) << d.log();
  // A guest entry with a wrong key: refused as a whole, the running guest is not stopped.
  config.write({{"guests", {{{"name", "other"}, {"module", wasm("ok_guest")}, {"colour", 1}}}}});
  d.signal(SIGHUP);
  ASSERT_TRUE(wait_for_count(d, "reload refused, nothing changed", 3)) << d.log();

  // Everything still runs: new connections, the guest.
  EXPECT_EQ(forward_round(d.port(), 2, "b"), (std::vector<std::string>{"b0", "b1"}));
  EXPECT_EQ(d.log().find("guest 'forwarder': stopping"), std::string::npos) << d.log();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(ReloadTest, AModuleRebuiltInPlaceIsReplacedOnReload) {
  // The guest's entry stays the same; only the file at its module path changes.
  ConfigFile config;
  const std::string dir = make_temp_dir("module");
  const std::string module = dir + "/guest.wasm";
  std::filesystem::copy_file(wasm("ok_guest"), module);
  config.write({{"guests", {{{"name", "g"}, {"module", module}, {"channels", {"guest.in"}}}}}});
  Daemon d({"--config", config.path()});
  ASSERT_TRUE(d.wait_for_log("guest 'g': 1 instance(s)")) << d.log();

  // An unchanged file: nothing is replaced.
  d.signal(SIGHUP);
  ASSERT_TRUE(d.wait_for_log("reload done")) << d.log();
  EXPECT_NE(d.log().find("guests 0 started, 0 replaced, 0 stopped, 1 unchanged"), std::string::npos)
      << d.log();

  // Rebuilt in place (written aside, renamed over it): the reload replaces the guest.
  std::filesystem::copy_file(wasm("forward_guest"), module + ".new");
  std::filesystem::rename(module + ".new", module);
  d.signal(SIGHUP);
  ASSERT_TRUE(wait_for_count(d, "reload done", 2)) << d.log();
  EXPECT_NE(d.log().find("guests 0 started, 1 replaced, 0 stopped, 0 unchanged"), std::string::npos)
      << d.log();
  EXPECT_EQ(forward_round(d.port(), 2, "n"), (std::vector<std::string>{"n0", "n1"}));
  EXPECT_EQ(d.stop(), 0) << d.log();
  std::filesystem::remove_all(dir);
}

TEST(ReloadTest, AChangedListenAddressNeedsARestart) {
  // The fixture's --listen flag would override the file, so this daemon takes listen from it.
  ConfigFile config;
  const std::string data_dir = make_temp_dir("data");
  config.write({{"listen", "127.0.0.1:0"}, {"io-threads", 1}});
  Process p({"--config", config.path(), "--data-dir", data_dir, "--http-listen", "127.0.0.1:0"});
  uint16_t port = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (port == 0 && std::chrono::steady_clock::now() < deadline) {
    const std::string out = p.out();
    const auto at = out.find("listening on 127.0.0.1:");
    if (at != std::string::npos && out.find('\n', at) != std::string::npos) {
      port = static_cast<uint16_t>(std::stoi(out.substr(at + 23)));
    }
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_NE(port, 0) << p.err();

  config.write({{"listen", "127.0.0.1:1"}, {"io-threads", 2}, {"log-level", "warn"}});
  p.kill(SIGHUP);
  const auto reload_deadline = std::chrono::steady_clock::now() + 20s;
  while (p.err().find("needs a restart: listen, io-threads") == std::string::npos &&
         std::chrono::steady_clock::now() < reload_deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(p.err().find("WARN reload: needs a restart: listen, io-threads"), std::string::npos)
      << p.err();
  // The daemon still serves on the address it bound at start.
  Conn c(port);
  c.hello();
  p.kill(SIGTERM);
  EXPECT_EQ(p.wait(60s), 0) << p.err();
  std::filesystem::remove_all(data_dir);
}

TEST(ReloadTest, ASighupDuringStartDoesNotEndTheDaemon) {
  // SIGHUPs from the first log line (the store is open; the guests load next) until it listens:
  // none may end it. (Before that line the child may not have reached witmqd's main yet.) The
  // window is short and a start can pass it before one signal goes out: try a few starts until
  // some signals landed in it.
  ConfigFile config;
  config.write({{"guests", {{{"name", "g"}, {"module", wasm("forward_guest")}}}}});
  int sent_total = 0;
  for (int attempt = 0; attempt < 20 && sent_total < 3; ++attempt) {
    const std::string data_dir = make_temp_dir("data");
    Process p({"--config", config.path(), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
               "--data-dir", data_dir});
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (p.err().empty() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    int sent = 0;
    while (p.out().find("listening on") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      p.kill(SIGHUP);
      ++sent;
      if (p.wait(1ms)) break;
    }
    sent_total += sent;
    ASSERT_EQ(p.wait(0ms), std::nullopt) << "witmqd ended after " << sent << " SIGHUPs:\n"
                                         << p.err();
    EXPECT_NE(p.out().find("listening on"), std::string::npos) << p.err();
    p.kill(SIGTERM);
    EXPECT_EQ(p.wait(60s), 0) << p.err();
    std::filesystem::remove_all(data_dir);
  }
  EXPECT_GT(sent_total, 0) << "no start was slow enough to receive a SIGHUP";
}

Config built(const json& values) {
  auto c = build_config({ConfigLayer{"test", values}});
  EXPECT_TRUE(c) << c.error().message;
  return c ? *c : Config{};
}

TEST(ReloadTest, OnlyStartTimeKeysNeedARestart) {
  const Config running = built({{"listen", "127.0.0.1:7400"}});
  EXPECT_TRUE(keys_needing_restart(running, running).empty());
  // The live keys never do.
  EXPECT_TRUE(keys_needing_restart(running, built({{"listen", "127.0.0.1:7400"},
                                                   {"log-level", "debug"},
                                                   {"channels", {{"a", json::object()}}},
                                                   {"guests", json::array()}}))
                  .empty());
  // Every other key does, in table order; a key set to its default is no change.
  EXPECT_EQ(keys_needing_restart(running, built({{"max-in-flight", 5},
                                                 {"listen", "0.0.0.0:7400"},
                                                 {"data-dir", "./data"},
                                                 {"default-channel", {{"lease-ms", 1000}}}})),
            (std::vector<std::string>{"listen", "max-in-flight", "default-channel"}));
  // The TLS keys are start-time keys like the listeners.
  EXPECT_EQ(keys_needing_restart(running, built({{"listen", "127.0.0.1:7400"},
                                                 {"tls-min-version", "1.3"},
                                                 {"tls-handshake-timeout-ms", 500}})),
            (std::vector<std::string>{"tls-min-version", "tls-handshake-timeout-ms"}));
  EXPECT_TRUE(reloadable_key("guests"));
  EXPECT_FALSE(reloadable_key("data-dir"));
  EXPECT_FALSE(reloadable_key("tls-cert-file"));
}

}  // namespace
TEST(ReloadTest, GuestFiguresAnswerWhileAReloadStartsASlowGuest) {
  // Issue 18: a guest whose configure waits until its call timeout holds the reload that starts
  // it for that long. The guests' figures (server-stats, GET /metrics) are served on the I/O
  // threads: they must answer meanwhile, not wait for the reload (with as many waiting as there
  // are I/O threads, every client of the daemon would wait).
  ConfigFile config;
  json forwarder = kForwarder;
  forwarder["module"] = wasm("forward_guest");
  config.write({{"guests", {forwarder}}});
  Daemon d({"--config", config.path()});
  Conn c(d.port());
  c.hello();
  const json slow = {
      {"name", "slow"}, {"module", wasm("block_config_guest")}, {"call-timeout-ms", 10'000}};
  config.write({{"guests", {forwarder, slow}}});
  d.signal(SIGHUP);
  ASSERT_TRUE(d.wait_for_log("received SIGHUP")) << d.log();
  for (int i = 0; i < 6; ++i) {
    Frame f = c.call(net::AdminRequest{net::AdminOp::kServerStats, "{}"}, 3s);
    auto* ok = std::get_if<net::AdminReply>(&f.body);
    ASSERT_NE(ok, nullptr) << "server-stats " << i << " did not answer during the reload";
    ASSERT_EQ(d.log().find("guest 'slow': refused"), std::string::npos) << d.log();
    const json stats = json::parse(ok->json);
    ASSERT_EQ(stats["guests"].size(), 1u) << stats.dump();
    EXPECT_EQ(stats["guests"][0]["name"], "forwarder");
    std::this_thread::sleep_for(500ms);
  }
  ASSERT_TRUE(d.wait_for_log("guest 'slow': refused", 60s)) << d.log();
  ASSERT_TRUE(d.wait_for_log("reload done")) << d.log();
  EXPECT_EQ(d.stop(SIGTERM, 30s), 0) << d.log();
}

}  // namespace witmq::daemon::testing
