// The HTTP side of the real witmqd (docs/HTTP.md), driven by a real HTTP client: health and
// readiness, a /metrics scrape checked against traffic the test made, the /v1 admin API, dead
// letters, CloudEvents publishing (binary and structured) and raw publishing received back over
// TCP, and bad input answered with the right status and a JSON error, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

// The samples of an exposition, "name{labels}" -> value, and the TYPE of each family.
struct Scrape {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::set<std::string> helps;

  double at(const std::string& key) const {
    auto it = samples.find(key);
    if (it == samples.end()) {
      ADD_FAILURE() << "no sample " << key;
      return -1;
    }
    return it->second;
  }
};

Scrape parse_metrics(const std::string& text) {
  Scrape s;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.starts_with("# HELP ")) {
      s.helps.insert(line.substr(7, line.find(' ', 7) - 7));
    } else if (line.starts_with("# TYPE ")) {
      const auto sp = line.find(' ', 7);
      s.types[line.substr(7, sp - 7)] = line.substr(sp + 1);
    } else {
      const auto sp = line.rfind(' ');
      s.samples[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
  }
  return s;
}

class HttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon_ = new Daemon(); }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    delete daemon_;
  }
  static uint16_t http() { return daemon_->http_port(); }

  static std::unique_ptr<Conn> client() {
    auto c = std::make_unique<Conn>(daemon_->port());
    c->hello();
    return c;
  }
  static std::vector<Message> try_receive(Conn& c, const std::string& channel,
                                          uint32_t timeout_ms = 0) {
    Frame f = c.call(net::SubscribeTryReceive{channel, timeout_ms},
                     std::chrono::milliseconds(timeout_ms) + 10s);
    auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
    EXPECT_NE(ok, nullptr) << describe(f);
    if (!ok || !ok->messages) return {};
    return std::move(*ok->messages);
  }
  static HttpReply post(const std::string& target, const std::string& body,
                        std::vector<std::pair<std::string, std::string>> headers = {}) {
    return http_request(http(), "POST", target, body, headers);
  }

  static Daemon* daemon_;
};
Daemon* HttpTest::daemon_ = nullptr;

TEST_F(HttpTest, HealthAndReadiness) {
  ASSERT_NE(http(), 0);
  HttpReply h = http_get(http(), "/healthz");
  EXPECT_EQ(h.status, 200u) << h;
  EXPECT_EQ(h.json["status"], "alive");
  EXPECT_EQ(h.header("content-type"), "application/json");
  HttpReply r = http_get(http(), "/readyz");
  EXPECT_EQ(r.status, 200u) << r;
  EXPECT_EQ(r.json["status"], "ready");
  EXPECT_EQ(r.json["checks"]["storage"], "ok");
  EXPECT_EQ(r.json["checks"]["listeners"], "ok");
  EXPECT_EQ(r.json["checks"]["guests"], "ok");
  HttpReply head = http_request(http(), "HEAD", "/healthz");
  EXPECT_EQ(head.status, 200u);
}

TEST_F(HttpTest, MetricsFollowTheTraffic) {
  auto c = client();
  std::vector<Message> seven;
  for (int i = 0; i < 7; ++i) seven.push_back(text_message("m" + std::to_string(i)));
  EXPECT_FRAME(c->call(net::Send{"metrics.orders", seven}), kSendOk);
  // Take three and complete them; the other four stay queued.
  EXPECT_FRAME(
      c->call(net::UpdateGuestConfiguration{{{"metrics.orders"}, Metadata{{"batch-size", "3"}}}}),
      kUpdateGuestConfigurationOk);
  auto got = try_receive(*c, "metrics.orders");
  ASSERT_EQ(got.size(), 3u);
  for (const auto& m : got)
    EXPECT_FRAME(c->call(net::CompleteMessage{receipt_of(m)}), kCompleteMessageOk);

  HttpReply r = http_get(http(), "/metrics");
  ASSERT_EQ(r.status, 200u) << r;
  EXPECT_EQ(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const Scrape s = parse_metrics(r.body);
  const std::string ch = "{channel=\"metrics.orders\"}";
  EXPECT_EQ(s.at("witmq_channel_sends_total" + ch), 7);
  EXPECT_EQ(s.at("witmq_channel_completes_total" + ch), 3);
  EXPECT_EQ(s.at("witmq_channel_depth" + ch), 4);
  EXPECT_EQ(s.at("witmq_channel_in_flight" + ch), 0);
  EXPECT_GE(s.at("witmq_channel_deliveries_total" + ch), 3);
  EXPECT_EQ(s.at("witmq_channel_dead_letters_total" + ch), 0);
  EXPECT_GE(s.at("witmq_channel_oldest_message_age_seconds" + ch), 0);
  EXPECT_EQ(s.at("witmq_subscription_lag{channel=\"metrics.orders\",subscription=\"\"}"), 4);
  EXPECT_GE(s.at("witmq_connections_open{listener=\"tcp\"}"), 1);
  EXPECT_GE(s.at("witmq_connections_total{listener=\"http\"}"), 1);
  EXPECT_GE(s.at("witmq_requests_total{listener=\"tcp\"}"), 6);
  EXPECT_GT(s.at("witmq_received_bytes_total{listener=\"tcp\"}"), 0);
  EXPECT_GE(s.at("witmq_store_commit_requests_total"), 1);
  EXPECT_GE(s.at("witmq_store_writes_total"), 1);
  EXPECT_GE(s.at("witmq_store_sync_seconds_total"), 0);
  EXPECT_EQ(s.at("witmq_guests_refused"), 0);
  EXPECT_EQ(s.at("witmq_build_info{version=\"0.1.0\"}"), 1);
  // Every family has HELP and TYPE; counters end in _total; every sample belongs to a family.
  for (const auto& [name, type] : s.types) {
    EXPECT_TRUE(name.starts_with("witmq_")) << name;
    EXPECT_TRUE(s.helps.count(name)) << name;
    EXPECT_TRUE(type == "counter" || type == "gauge") << name << " " << type;
    if (type == "counter") {
      EXPECT_TRUE(name.ends_with("_total")) << name;
    }
  }
  for (const auto& [key, value] : s.samples) {
    EXPECT_TRUE(s.types.count(key.substr(0, key.find('{')))) << key;
  }
}

TEST_F(HttpTest, DeclareListStatsDelete) {
  HttpReply created = http_request(http(), "PUT", "/v1/channels/adm.topic",
                                   R"({"kind": "publish-subscribe", "max-deliveries": 4})");
  ASSERT_EQ(created.status, 201u) << created;
  EXPECT_EQ(created.json["name"], "adm.topic");
  EXPECT_EQ(created.json["settings"]["kind"], "publish-subscribe");
  EXPECT_EQ(created.json["settings"]["max-deliveries"], 4);
  // Declaring again updates; keys left out keep their value.
  HttpReply updated = post("/v1/channels/adm.topic", R"({"lease-ms": 5000})");
  ASSERT_EQ(updated.status, 200u) << updated;
  EXPECT_EQ(updated.json["settings"]["lease-ms"], 5000);
  EXPECT_EQ(updated.json["settings"]["max-deliveries"], 4);
  HttpReply kind =
      http_request(http(), "PUT", "/v1/channels/adm.topic", R"({"kind": "point-to-point"})");
  EXPECT_EQ(kind.status, 409u) << kind;
  EXPECT_EQ(kind.error_code(), "already-exists");

  // A queue with two messages published over HTTP: its subscription lags by two.
  ASSERT_EQ(http_request(http(), "PUT", "/v1/channels/adm.queue", "").status, 201u);
  EXPECT_EQ(post("/v1/channels/adm.queue/messages", "one").status, 201u);
  EXPECT_EQ(post("/v1/channels/adm.queue/messages", "two").status, 201u);
  HttpReply stats = http_get(http(), "/v1/channels/adm.queue");
  ASSERT_EQ(stats.status, 200u) << stats;
  EXPECT_EQ(stats.json["depth"], 2);
  EXPECT_EQ(stats.json["sends-total"], 2);
  ASSERT_EQ(stats.json["subscriptions"].size(), 1u);
  EXPECT_EQ(stats.json["subscriptions"][0]["lag"], 2);

  HttpReply list = http_get(http(), "/v1/channels");
  ASSERT_EQ(list.status, 200u) << list;
  std::set<std::string> names;
  for (const auto& ch : list.json["channels"]) names.insert(ch["name"]);
  EXPECT_TRUE(names.count("adm.topic"));
  EXPECT_TRUE(names.count("adm.queue"));

  HttpReply browse = http_get(http(), "/v1/channels/adm.queue/messages?max=1");
  ASSERT_EQ(browse.status, 200u) << browse;
  ASSERT_EQ(browse.json["messages"].size(), 1u);
  EXPECT_EQ(browse.json["messages"][0]["data"], "one");
  EXPECT_EQ(browse.json["next"], 1);

  EXPECT_EQ(http_request(http(), "DELETE", "/v1/channels/adm.topic").status, 200u);
  HttpReply gone = http_get(http(), "/v1/channels/adm.topic");
  EXPECT_EQ(gone.status, 404u) << gone;
  EXPECT_EQ(gone.error_code(), "not-found");
}

TEST_F(HttpTest, DeadLettersBrowseReplayPurge) {
  ASSERT_EQ(
      http_request(http(), "PUT", "/v1/channels/dl.orders", R"({"abandon-policy": "dead-letter"})")
          .status,
      201u);
  // Nothing dead-lettered yet: an empty page, nothing to replay.
  HttpReply empty = http_get(http(), "/v1/channels/dl.orders/dead-letters");
  ASSERT_EQ(empty.status, 200u) << empty;
  EXPECT_EQ(empty.json["messages"].size(), 0u);
  EXPECT_EQ(empty.json["channel"], "dl.orders.dlq");
  EXPECT_EQ(post("/v1/channels/dl.orders/messages", "p1").status, 201u);
  EXPECT_EQ(post("/v1/channels/dl.orders/messages", "p2").status, 201u);
  auto c = client();
  auto got = try_receive(*c, "dl.orders");
  ASSERT_EQ(got.size(), 2u);
  for (const auto& m : got)
    EXPECT_FRAME(c->call(net::AbandonMessage{receipt_of(m)}), kAbandonMessageOk);

  // The move to the dead-letter channel is asynchronous: wait for it.
  HttpReply page;
  for (int i = 0; i < 200; ++i) {
    page = http_get(http(), "/v1/channels/dl.orders/dead-letters");
    if (page.json.is_object() && page.json["messages"].size() == 2) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(page.status, 200u) << page;
  ASSERT_EQ(page.json["messages"].size(), 2u) << page;
  EXPECT_EQ(page.json["messages"][0]["data"], "p1");
  EXPECT_EQ(page.json["messages"][0]["metadata"]["witmq-dlq-reason"], "abandoned");
  EXPECT_EQ(page.json["messages"][0]["metadata"]["witmq-dlq-source"], "dl.orders");
  HttpReply one = http_get(http(), "/v1/channels/dl.orders/dead-letters?from=1&max=1");
  ASSERT_EQ(one.json["messages"].size(), 1u) << one;
  EXPECT_EQ(one.json["messages"][0]["data"], "p2");
  EXPECT_EQ(one.json["next"], 2);

  HttpReply replay = post("/v1/channels/dl.orders/dead-letters/replay", "{}");
  ASSERT_EQ(replay.status, 200u) << replay;
  EXPECT_EQ(replay.json["moved"], 2);
  EXPECT_EQ(replay.json["dead-letter-channel"], "dl.orders.dlq");
  // The moved messages reach the source channel asynchronously too.
  json depth;
  for (int i = 0; i < 200; ++i) {
    depth = http_get(http(), "/v1/channels/dl.orders").json["depth"];
    if (depth == 2) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(depth, 2);

  HttpReply purge = post("/v1/channels/dl.orders/purge", "");
  ASSERT_EQ(purge.status, 200u) << purge;
  EXPECT_EQ(purge.json["purged"], 2);
  EXPECT_EQ(http_get(http(), "/v1/channels/dl.orders").json["depth"], 0);
  EXPECT_TRUE(try_receive(*c, "dl.orders").empty());
}

TEST_F(HttpTest, CloudEventsBinaryMode) {
  HttpReply r = post("/v1/channels/ce.binary/messages", R"({"n": 1})",
                     {{"ce-specversion", "1.0"},
                      {"ce-id", "evt-1"},
                      {"ce-source", "/orders"},
                      {"ce-type", "com.example.created"},
                      {"ce-subject", "caf%C3%A9"},
                      {"ce-witmq-id", "forged"},
                      {"Content-Type", "application/json"}});
  ASSERT_EQ(r.status, 201u) << r;
  EXPECT_EQ(r.json["mode"], "binary");
  EXPECT_EQ(r.json["id"], "evt-1");
  auto c = client();
  auto got = try_receive(*c, "ce.binary");
  ASSERT_EQ(got.size(), 1u);
  const Message& m = got[0];
  EXPECT_EQ(m.format, Format::kCloudevents);
  EXPECT_EQ(text(m), R"({"n": 1})");
  EXPECT_EQ(meta_value(m, "id"), "evt-1");
  EXPECT_EQ(meta_value(m, "source"), "/orders");
  EXPECT_EQ(meta_value(m, "type"), "com.example.created");
  EXPECT_EQ(meta_value(m, "specversion"), "1.0");
  EXPECT_EQ(meta_value(m, "subject"), "caf\xc3\xa9");
  EXPECT_EQ(meta_value(m, "datacontenttype"), "application/json");
  // Reserved keys cannot be forged: the broker's own witmq-id is there.
  EXPECT_EQ(meta_value(m, meta::kId), "ce.binary/0");
}

TEST_F(HttpTest, CloudEventsStructuredMode) {
  const std::vector<std::pair<std::string, std::string>> ct = {
      {"Content-Type", "application/cloudevents+json; charset=utf-8"}};
  HttpReply r = post("/v1/channels/ce.structured/messages",
                     R"({"specversion": "1.0", "id": "s-1", "source": "/s", "type": "t.json",
                         "datacontenttype": "application/json", "data": {"a": [1, 2]},
                         "priority": 5})",
                     ct);
  ASSERT_EQ(r.status, 201u) << r;
  EXPECT_EQ(r.json["mode"], "structured");
  r = post("/v1/channels/ce.structured/messages",
           R"({"specversion": "1.0", "id": "s-2", "source": "/s", "type": "t.bin",
               "data_base64": "AAEC/w=="})",
           ct);
  ASSERT_EQ(r.status, 201u) << r;
  r = post("/v1/channels/ce.structured/messages",
           R"({"specversion": "1.0", "id": "s-3", "source": "/s", "type": "t.text",
               "datacontenttype": "text/plain", "data": "plain words"})",
           ct);
  ASSERT_EQ(r.status, 201u) << r;

  auto c = client();
  auto got = try_receive(*c, "ce.structured");
  ASSERT_EQ(got.size(), 3u);
  for (const auto& m : got) EXPECT_EQ(m.format, Format::kCloudevents);
  EXPECT_EQ(meta_value(got[0], "id"), "s-1");
  EXPECT_EQ(meta_value(got[0], "type"), "t.json");
  EXPECT_EQ(meta_value(got[0], "priority"), "5");
  EXPECT_EQ(meta_value(got[0], "datacontenttype"), "application/json");
  EXPECT_EQ(json::parse(text(got[0])), json::parse(R"({"a": [1, 2]})"));
  EXPECT_EQ(got[1].data, (std::vector<uint8_t>{0, 1, 2, 255}));
  EXPECT_EQ(meta_value(got[1], "id"), "s-2");
  EXPECT_EQ(text(got[2]), "plain words");
}

TEST_F(HttpTest, RawPublish) {
  const std::string body("\x00\x01raw\xff", 6);
  HttpReply r =
      post("/v1/channels/raw.in/messages", body, {{"Content-Type", "application/octet-stream"}});
  ASSERT_EQ(r.status, 201u) << r;
  EXPECT_EQ(r.json["mode"], "raw");
  EXPECT_EQ(r.json["format"], "raw");
  EXPECT_EQ(r.json["bytes"], 6);
  auto c = client();
  auto got = try_receive(*c, "raw.in");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].format, Format::kRaw);
  EXPECT_EQ(text(got[0]), body);
  EXPECT_EQ(meta_value(got[0], "content-type"), "application/octet-stream");
  // Data that is not UTF-8 is browsed as base64.
  HttpReply page = http_get(http(), "/v1/channels/raw.in/messages");
  ASSERT_EQ(page.json["messages"].size(), 1u) << page;
  EXPECT_EQ(page.json["messages"][0]["data_base64"], "AAFyYXf/");
}

TEST_F(HttpTest, ServerGuestsAndCheckpoint) {
  HttpReply server = http_get(http(), "/v1/server");
  ASSERT_EQ(server.status, 200u) << server;
  EXPECT_TRUE(server.json.contains("store"));
  EXPECT_EQ(server.json["server"], "witmqd/0.1.0");
  HttpReply guests = http_get(http(), "/v1/guests");
  ASSERT_EQ(guests.status, 200u) << guests;
  EXPECT_TRUE(guests.json["guests"].is_array());
  EXPECT_EQ(guests.json["refused"], 0);

  const std::string dir = make_temp_dir("checkpoint") + "/cp";
  HttpReply cp = post("/v1/checkpoint", json{{"dir", dir}}.dump());
  ASSERT_EQ(cp.status, 201u) << cp;
  EXPECT_TRUE(std::filesystem::exists(dir + "/CURRENT")) << dir;
  HttpReply again = post("/v1/checkpoint", json{{"dir", dir}}.dump());
  EXPECT_EQ(again.status, 409u) << again;
  EXPECT_EQ(again.error_code(), "already-exists");
  HttpReply no_dir = post("/v1/checkpoint", "{}");
  EXPECT_EQ(no_dir.status, 400u) << no_dir;
  EXPECT_NE(no_dir.error_message().find("'dir'"), std::string::npos) << no_dir;
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

TEST_F(HttpTest, BadInputIsAnsweredNotFatal) {
  auto expect_error = [](const HttpReply& r, unsigned status, const std::string& code,
                         const std::string& mentions) {
    EXPECT_EQ(r.status, status) << r;
    EXPECT_EQ(r.error_code(), code) << r;
    EXPECT_NE(r.error_message().find(mentions), std::string::npos) << r;
  };
  expect_error(http_request(http(), "PUT", "/v1/channels/bad.json", "{not json"), 400,
               "invalid-argument", "not valid JSON");
  expect_error(http_request(http(), "PUT", "/v1/channels/bad.field", R"({"max-deliverie": 3})"),
               400, "invalid-argument", "max-deliverie");
  expect_error(http_request(http(), "PUT", "/v1/channels/bad.type", R"({"lease-ms": "long"})"), 400,
               "invalid-argument", "lease-ms");
  expect_error(post("/v1/channels/%2Ebad/messages", "x"), 400, "invalid-argument", ".bad");
  expect_error(post("/v1/channels/bad.ce/messages", "x",
                    {{"ce-specversion", "1.0"}, {"ce-source", "/s"}, {"ce-type", "t"}}),
               400, "invalid-argument", "ce-id");
  expect_error(post("/v1/channels/bad.ce/messages", R"({"specversion": "1.0", "id": "x"})",
                    {{"Content-Type", "application/cloudevents+json"}}),
               400, "invalid-argument", "source");
  expect_error(post("/v1/channels/bad.ce/messages", "[1]",
                    {{"Content-Type", "application/cloudevents+json"}}),
               400, "invalid-argument", "object");
  expect_error(http_get(http(), "/v1/nowhere"), 404, "not-found", "/v1/nowhere");
  expect_error(http_get(http(), "/v1/channels/bad.none/dead-letters"), 404, "not-found",
               "bad.none");
  expect_error(http_get(http(), "/v1/channels/adm.queue/messages?max=x"), 400, "invalid-argument",
               "max");
  expect_error(http_get(http(), "/v1/channels/adm.queue/messages?size=1"), 400, "invalid-argument",
               "size");
  HttpReply method = http_request(http(), "DELETE", "/metrics");
  expect_error(method, 405, "unsupported", "DELETE");
  EXPECT_EQ(method.header("allow"), "GET, HEAD");
  expect_error(http_request(http(), "PATCH", "/v1/channels/x"), 405, "unsupported", "PATCH");
  // Nothing was declared by the refused requests, and the daemon still serves both sides.
  EXPECT_EQ(http_get(http(), "/v1/channels/bad.json").status, 404u);
  EXPECT_EQ(http_get(http(), "/healthz").status, 200u);
  auto c = client();
  EXPECT_FRAME(c->call(net::Ping{7}), kPong);
}

// Limits need a daemon of their own: a small max-message-bytes and max-frame-bytes.
TEST(HttpLimitsTest, OversizedBodiesAre413) {
  Daemon d({"--set", "max-message-bytes=1024", "--set", "max-frame-bytes=65536"});
  ASSERT_NE(d.http_port(), 0);
  // Within the request limit but above max-message-bytes: the broker refuses the message.
  HttpReply big =
      http_request(d.http_port(), "POST", "/v1/channels/lim/messages", std::string(2000, 'x'));
  EXPECT_EQ(big.status, 413u) << big;
  EXPECT_EQ(big.error_code(), "resource-exhausted") << big;
  // Above the request body limit: refused before the body is read.
  HttpReply huge =
      http_request(d.http_port(), "POST", "/v1/channels/lim/messages", std::string(200'000, 'x'));
  EXPECT_EQ(huge.status, 413u) << huge;
  EXPECT_NE(huge.error_message().find("65536"), std::string::npos) << huge;
  // Headers above their limit.
  HttpReply headers =
      http_request(d.http_port(), "GET", "/healthz", "", {{"x-filler", std::string(40'000, 'h')}});
  EXPECT_EQ(headers.status, 431u) << headers;
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200u);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(HttpLimitsTest, ConnectionCapAndIdleTimeout) {
  Daemon d({"--set", "http-max-connections=1", "--set", "http-idle-timeout-ms=500"});
  ASSERT_NE(d.http_port(), 0);
  // A connection that sends nothing holds the one slot: the next is answered 503, unless it is a
  // health probe.
  Conn idle(d.http_port());
  std::this_thread::sleep_for(100ms);
  HttpReply refused = http_get(d.http_port(), "/v1/channels");
  EXPECT_EQ(refused.status, 503u) << refused;
  EXPECT_EQ(refused.error_code(), "resource-exhausted") << refused;
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200u);
  // The idle connection is closed after http-idle-timeout-ms, which frees the slot.
  EXPECT_EQ(idle.read(5s).status, Conn::Status::kClosed);
  // (Each request's connection frees the slot once the server has seen it close.)
  HttpReply served;
  for (int i = 0; i < 100 && served.status != 200; ++i) {
    served = http_get(d.http_port(), "/metrics");
    if (served.status != 200) std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(served.status, 200u) << served;
  const Scrape s = parse_metrics(served.body);
  EXPECT_GE(s.at("witmq_connections_refused_total{listener=\"http\"}"), 1);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// The guests' figures reach /metrics, /readyz and /v1/guests from the daemon.
TEST(HttpGuestsTest, GuestFiguresInMetricsReadinessAndTheAdminApi) {
  const auto config = std::filesystem::temp_directory_path() /
                      ("witmqd-http-guests-" + std::to_string(::getpid()) + ".json");
  const auto wasm = [](const std::string& stem) {
    return std::string(WITMQ_GUEST_WASM_DIR) + "/" + stem + ".wasm";
  };
  std::ofstream(config) << json{{"guests",
                                 {{{"name", "forwarder"}, {"module", wasm("forward_guest")}},
                                  {{"name", "broken"}, {"module", wasm("missing_export_guest")}}}}}
                               .dump();
  Daemon d({"--config", config.string()});
  std::filesystem::remove(config);
  ASSERT_NE(d.http_port(), 0);

  // One configured guest was refused: not ready, and the check says why.
  HttpReply ready = http_get(d.http_port(), "/readyz");
  EXPECT_EQ(ready.status, 503u) << ready;
  EXPECT_EQ(ready.json["checks"]["guests"], "1 refused") << ready;
  HttpReply guests = http_get(d.http_port(), "/v1/guests");
  ASSERT_EQ(guests.status, 200u) << guests;
  EXPECT_EQ(guests.json["refused"], 1);
  ASSERT_EQ(guests.json["guests"].size(), 1u) << guests;
  EXPECT_EQ(guests.json["guests"][0]["name"], "forwarder");

  Conn producer(d.port());
  producer.hello();
  std::vector<Message> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(text_message("m" + std::to_string(i)));
  EXPECT_FRAME(producer.call(net::Send{"guest.in", std::move(batch)}), kSendOk);
  Scrape s;
  for (int i = 0; i < 400; ++i) {
    s = parse_metrics(http_get(d.http_port(), "/metrics").body);
    auto it = s.samples.find("witmq_guest_messages_handled_total{guest=\"forwarder\"}");
    if (it != s.samples.end() && it->second == 5) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(s.at("witmq_guest_messages_handled_total{guest=\"forwarder\"}"), 5);
  EXPECT_GE(s.at("witmq_guest_invocations_total{guest=\"forwarder\"}"), 1);
  EXPECT_EQ(s.at("witmq_guest_instances{guest=\"forwarder\"}"), 1);
  EXPECT_EQ(s.at("witmq_guest_errors_total{guest=\"forwarder\"}"), 0);
  EXPECT_EQ(s.at("witmq_guest_traps_total{guest=\"forwarder\"}"), 0);
  EXPECT_GT(s.at("witmq_guest_handler_seconds_total{guest=\"forwarder\"}"), 0);
  EXPECT_EQ(s.at("witmq_guests_refused"), 1);
  EXPECT_EQ(s.samples.count("witmq_guest_instances{guest=\"broken\"}"), 0u);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(HttpLimitsTest, AnEmptyHttpListenTurnsItOff) {
  Daemon d({"--http-listen", ""});
  EXPECT_EQ(d.http_port(), 0);
  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Ping{1}), kPong);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(HttpLimitsTest, SigtermStopsTheHttpSideGracefully) {
  Daemon d;
  ASSERT_EQ(http_request(d.http_port(), "POST", "/v1/channels/stop.q/messages", "kept").status,
            201u);
  // An idle connection does not hold the stop up: it is closed at once.
  Conn idle(d.http_port());
  std::this_thread::sleep_for(100ms);
  const auto before = std::chrono::steady_clock::now();
  EXPECT_EQ(d.stop(), 0) << d.log();
  EXPECT_LT(std::chrono::steady_clock::now() - before, 5s);
  EXPECT_EQ(idle.read(1s).status, Conn::Status::kClosed);
  EXPECT_NE(d.log().find("http: stopping"), std::string::npos) << d.log();
  d.start();
  auto page = http_get(d.http_port(), "/v1/channels/stop.q/messages");
  ASSERT_EQ(page.json["messages"].size(), 1u) << page;
  EXPECT_EQ(page.json["messages"][0]["data"], "kept");
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
