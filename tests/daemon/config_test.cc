// The configuration: the key table, layering, refusals with the key and the reason, and the
// shipped files generated from the table (config/witmqd.json, docs/CONFIGURATION.md).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "daemon/command_line.h"
#include "daemon/config.h"
#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Result<Config> load(std::vector<std::string> args) {
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  auto cl = parse_command_line(argv);
  if (!cl) return std::move(cl).error();
  return load_config(*cl);
}

// The error of loading `args`, which must fail.
std::string refusal(std::vector<std::string> args) {
  auto c = load(std::move(args));
  EXPECT_FALSE(c.ok());
  return c.ok() ? std::string() : c.error().message;
}

TEST(ConfigTest, DefaultsListenLocallyWithDataInDotData) {
  auto c = load({});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->listen_host, "127.0.0.1");
  EXPECT_EQ(c->listen_port, 7400);
  EXPECT_EQ(c->broker.data_dir, "./data");
  EXPECT_GE(c->io_threads, 1u);
  EXPECT_EQ(c->server.max_in_flight, 1024u);
  EXPECT_TRUE(c->guests.empty());
}

TEST(ConfigTest, EveryKeyHasADocAndItsDefaultPassesItsOwnChecks) {
  for (const auto& k : config_keys()) {
    EXPECT_FALSE(k.doc.empty()) << k.name;
    Config c;
    auto v = json::parse(k.default_value.dump());
    EXPECT_TRUE(k.apply(v, c).ok()) << k.name;
    if (k.type == KeyType::kInteger) {
      EXPECT_LE(k.min, v.get<int64_t>()) << k.name;
      EXPECT_LE(v.get<int64_t>(), k.max) << k.name;
    }
  }
}

TEST(ConfigTest, FlagsOverrideTheFileAndLaterFlagsWin) {
  const std::string dir = make_temp_dir("config");
  const std::string path = dir + "/c.json";
  std::ofstream(path) << R"({"listen": "127.0.0.1:9000", "max-in-flight": 8,
                            "default-channel": {"durability": "sync"},
                            "channels": {"orders": {"kind": "queue", "max-deliveries": 3},
                                         "events": {"kind": "topic"}}})";
  auto c = load({"--config", path, "--listen=0.0.0.0:1", "--set", "max-in-flight=16",
                 "--data-dir", "/tmp/x", "--set", "max-in-flight=32", "--log-level", "warn"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->listen_host, "0.0.0.0");
  EXPECT_EQ(c->listen_port, 1);
  EXPECT_EQ(c->server.max_in_flight, 32u);
  EXPECT_EQ(c->broker.data_dir, "/tmp/x");
  EXPECT_EQ(c->log_level, log::Level::kWarn);
  ASSERT_EQ(c->broker.channels.size(), 2u);
  for (const auto& [name, s] : c->broker.channels) {
    // Channel settings start from default-channel.
    EXPECT_EQ(s.durability, storage::Durability::kSync) << name;
    if (name == "orders") {
      EXPECT_EQ(s.max_deliveries, 3u);
    } else {
      EXPECT_EQ(s.kind, broker::ChannelKind::kPublishSubscribe);
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, ListenAcceptsIpv6InBrackets) {
  auto c = load({"--listen", "[::1]:0"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->listen_host, "::1");
  EXPECT_EQ(c->listen_port, 0);
}

TEST(ConfigTest, HttpListenDefaultsOnAndAnEmptyValueTurnsItOff) {
  auto c = load({});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->http.enabled);
  EXPECT_EQ(c->http.host, "127.0.0.1");
  EXPECT_EQ(c->http.port, 7401);
  // The HTTP request limits follow the protocol's.
  EXPECT_EQ(c->http.max_body_bytes, c->server.limits.max_frame_bytes);
  c = load({"--http-listen", "[::1]:0", "--set", "http-max-connections=3"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->http.host, "::1");
  EXPECT_EQ(c->http.port, 0);
  EXPECT_EQ(c->http.max_connections, 3u);
  c = load({"--http-listen", ""});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->http.enabled);
  const std::string e = refusal({"--http-listen", "nowhere"});
  EXPECT_NE(e.find("http-listen (from --http-listen)"), std::string::npos) << e;
  EXPECT_NE(e.find("HOST:PORT"), std::string::npos) << e;
}

TEST(ConfigTest, RefusalsNameTheKeyTheSourceAndTheReason) {
  std::string e = refusal({"--set", "max-in-flight=-1"});
  EXPECT_NE(e.find("max-in-flight (from --set)"), std::string::npos) << e;
  EXPECT_NE(e.find("out of range 0..1000000"), std::string::npos) << e;

  e = refusal({"--set", "max-frame-bytes=\"big\""});
  EXPECT_NE(e.find("max-frame-bytes"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;

  e = refusal({"--set", "max-in-flight=lots"});
  EXPECT_NE(e.find("'lots' is not a JSON value"), std::string::npos) << e;

  e = refusal({"--listen", "localhost"});
  EXPECT_NE(e.find("listen (from --listen)"), std::string::npos) << e;
  EXPECT_NE(e.find("HOST:PORT"), std::string::npos) << e;

  e = refusal({"--listen", "127.0.0.1:99999"});
  EXPECT_NE(e.find("0..65535"), std::string::npos) << e;

  e = refusal({"--log-level", "loud"});
  EXPECT_NE(e.find("log-level"), std::string::npos) << e;
  EXPECT_NE(e.find("'loud'"), std::string::npos) << e;

  e = refusal({"--set", "colour=blue"});
  EXPECT_NE(e.find("'colour' is not a configuration key"), std::string::npos) << e;

  e = refusal({"--bogus"});
  EXPECT_NE(e.find("--bogus: unknown flag"), std::string::npos) << e;

  e = refusal({"--config"});
  EXPECT_NE(e.find("--config: a value is expected"), std::string::npos) << e;

  e = refusal({"--set", "default-batch-size=500", "--set", "max-batch-size=100"});
  EXPECT_NE(e.find("default-batch-size (from --set): 500 exceeds max-batch-size 100"),
            std::string::npos)
      << e;

  e = refusal({"--set", "max-frame-bytes=65536"});
  EXPECT_NE(e.find("max-frame-bytes (from --set): 65536 cannot hold one message"),
            std::string::npos)
      << e;

  e = refusal({"--set", R"(default-channel={"durability":"eventually"})"});
  EXPECT_NE(e.find("default-channel"), std::string::npos) << e;
  EXPECT_NE(e.find("durability"), std::string::npos) << e;

  e = refusal({"--set", R"(channels={"bad name":{}})"});
  EXPECT_NE(e.find("channels (from --set): 'bad name'"), std::string::npos) << e;

  e = refusal({"--set", R"(channels={"orders":{"kind":"ring"}})"});
  EXPECT_NE(e.find("channels.orders"), std::string::npos) << e;

  e = refusal({"--set", "guests=[7]"});
  EXPECT_NE(e.find("guests (from --set)"), std::string::npos) << e;

  e = refusal({"--set", R"(guests=[{"name":"g"}])"});
  EXPECT_NE(e.find("module"), std::string::npos) << e;
}

TEST(ConfigTest, FileRefusalsNameTheFile) {
  const std::string dir = make_temp_dir("config");
  const std::string path = dir + "/c.json";
  std::ofstream(path) << R"({"max-in-flight": 8, "colour": "blue"})";
  std::string e = refusal({"--config", path});
  EXPECT_NE(e.find("colour (from " + path + "): unknown key"), std::string::npos) << e;

  std::ofstream(path, std::ios::trunc) << R"({"max-in-flight": 8,)";
  e = refusal({"--config", path});
  EXPECT_NE(e.find("config file '" + path + "': not valid JSON"), std::string::npos) << e;

  std::ofstream(path, std::ios::trunc) << R"([1, 2])";
  e = refusal({"--config", path});
  EXPECT_NE(e.find("expected an object"), std::string::npos) << e;

  // A number a double cannot hold is refused like a syntax error, not thrown out of the loader
  // (found by fuzz/config_fuzzer; fuzz/corpus/config/regression-number-overflow.json).
  std::ofstream(path, std::ios::trunc) << R"({"max-in-flight": 1e999})";
  e = refusal({"--config", path});
  EXPECT_NE(e.find("config file '" + path + "': not valid JSON"), std::string::npos) << e;
  EXPECT_NE(e.find("1e999"), std::string::npos) << e;
  auto layer = parse_config_text(R"({"channels": {"a": {"lease-ms": -1E400}}})", "text");
  ASSERT_FALSE(layer);
  EXPECT_NE(layer.error().message.find("config file 'text': not valid JSON"), std::string::npos)
      << layer.error().message;

  e = refusal({"--config", dir + "/missing.json"});
  EXPECT_NE(e.find("cannot open it"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, TheDaemonRefusesABadConfigWithExitCode2) {
  RunResult r = run_witmqd({"--set", "max-connections=0"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 2);
  EXPECT_NE(r.err.find("max-connections (from --set): 0 is out of range 1..1000000"),
            std::string::npos)
      << r.err;

  r = run_witmqd({"--no-such-flag"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 2);
  EXPECT_NE(r.err.find("--no-such-flag"), std::string::npos) << r.err;

  r = run_witmqd({"--config", "/nonexistent/witmqd.json"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 2);
  EXPECT_NE(r.err.find("/nonexistent/witmqd.json"), std::string::npos) << r.err;
}

TEST(ConfigTest, CheckConfigHelpAndVersion) {
  RunResult r = run_witmqd({"--check-config", "--set", "max-in-flight=5"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 0) << r.err;
  r = run_witmqd({"--help"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 0);
  for (const auto& k : config_keys()) {
    EXPECT_NE(r.out.find(std::string(k.name)), std::string::npos) << k.name;
  }
  for (const char* flag : {"--config", "--listen", "--http-listen", "--data-dir", "--log-level",
                           "--set", "--print-default-config", "--print-config-reference",
                           "--version"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  }
  r = run_witmqd({"--version"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 0);
  EXPECT_EQ(r.out, "witmqd 0.1.0 (protocol version 1)\n");
}

TEST(ConfigTest, ShippedConfigIsTheEmbeddedDefault) {
  RunResult r = run_witmqd({"--print-default-config"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 0);
  EXPECT_EQ(r.out, default_config_text());
  EXPECT_EQ(read_file(std::string(WITMQ_SOURCE_DIR) + "/config/witmqd.json"), r.out)
      << "config/witmqd.json differs from the embedded default; regenerate it with "
         "`witmqd --print-default-config > config/witmqd.json`";
}

TEST(ConfigTest, ConfigurationReferenceIsUpToDate) {
  RunResult r = run_witmqd({"--print-config-reference"});
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 0);
  EXPECT_EQ(read_file(std::string(WITMQ_SOURCE_DIR) + "/docs/CONFIGURATION.md"), r.out)
      << "docs/CONFIGURATION.md differs from the key table; regenerate it with "
         "`witmqd --print-config-reference > docs/CONFIGURATION.md`";
}

TEST(ConfigTest, TheShippedConfigRuns) {
  Daemon d({"--config", std::string(WITMQ_SOURCE_DIR) + "/config/witmqd.json", "--listen",
            "127.0.0.1:0"});
  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Ping{1}), kPong);
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace witmq::daemon::testing
