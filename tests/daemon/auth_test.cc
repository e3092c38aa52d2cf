// Authentication and authorization against the real witmqd: tokens at connect, grants on every
// operation, per-identity connection limits, bearer tokens on the HTTP side, reloads that change
// identities under live connections, guests held to their permissions, and the loud warning of
// anonymous access.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "auth/token.h"
#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

// Tokens as witmqd --generate-token makes them; the config holds only their digests.
const std::string kProducerToken = "witmq_producer-token-0123456789abcdefghijklmnopqrs";
const std::string kConsumerToken = "witmq_consumer-token-0123456789abcdefghijklmnopqrs";
const std::string kAdminToken = "witmq_admin-token-0123456789abcdefghijklmnopqrstuvw";
const std::string kLimitedToken = "witmq_limited-token-0123456789abcdefghijklmnopqrst";
const std::string kOrdersAdminToken = "witmq_orders-admin-token-0123456789abcdefghijklmn";

std::string digest(const std::string& token) { return auth::to_hex(auth::sha256(token)); }

json identities() {
  return json::array({
      {{"name", "producer"},
       {"token-sha256", digest(kProducerToken)},
       {"send", {"orders.*"}},
       {"max-connections", 2}},
      {{"name", "consumer"}, {"token-sha256", digest(kConsumerToken)}, {"receive", {"orders.*"}}},
      {{"name", "admin"},
       {"token-sha256", digest(kAdminToken)},
       {"manage", {"*"}},
       {"monitor", true}},
      {{"name", "limited"}, {"token-sha256", digest(kLimitedToken)}, {"send", {"other"}}},
      {{"name", "orders-admin"},
       {"token-sha256", digest(kOrdersAdminToken)},
       {"send", {"orders.*"}},
       {"manage", {"orders.*"}}},
  });
}

class ConfigFile {
 public:
  explicit ConfigFile(const json& config) : dir_(make_temp_dir("auth")), path_(dir_ + "/c.json") {
    write(config);
  }
  ~ConfigFile() { std::filesystem::remove_all(dir_); }
  void write(const json& config) {
    const std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << config.dump(2);
    std::filesystem::rename(tmp, path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

json secured() {
  return {{"log-level", "debug"}, {"anonymous", {{"enabled", false}}}, {"identities", identities()}};
}

Frame connect(Conn& c, std::optional<std::string> token, const std::string& name = "") {
  return c.call(net::Connect{{1}, name, std::move(token)});
}

// A connected client, or a test failure.
std::unique_ptr<Conn> as(uint16_t port, const std::string& token, const std::string& name = "") {
  auto c = std::make_unique<Conn>(port);
  Frame f = connect(*c, token, name);
  EXPECT_FRAME(f, kConnectOk);
  return c;
}

Error error_from(const Frame& f) {
  auto e = error_of(f);
  EXPECT_TRUE(e.has_value()) << describe(f);
  return e.value_or(Error());
}

class AuthTest : public ::testing::Test {
 protected:
  AuthTest() : config_(secured()), daemon_({"--config", config_.path()}) {}
  uint16_t port() { return daemon_.port(); }

  ConfigFile config_;
  Daemon daemon_;
};

TEST_F(AuthTest, ConnectNeedsAValidTokenAndTheTokenIsNeverLogged) {
  {
    Conn c(port());
    Frame f = connect(c, std::nullopt);
    ASSERT_FRAME(f, kGoaway);
    EXPECT_EQ(error_from(f).code, ErrorCode::kPermissionDenied);
    EXPECT_EQ(error_from(f).message,
              "connect: a token is required: anonymous access is off on this server");
    EXPECT_EQ(c.read(2s).status, Conn::Status::kClosed);
  }
  const std::string wrong = "witmq_not-a-configured-token-0123456789abcdefghij";
  {
    Conn c(port());
    Frame f = connect(c, wrong);
    ASSERT_FRAME(f, kGoaway);
    EXPECT_EQ(error_from(f).code, ErrorCode::kPermissionDenied);
    EXPECT_EQ(error_from(f).message.find(wrong), std::string::npos);
  }
  {
    // A refused connect does not harm a pipelined, valid one on another connection.
    auto ok = as(port(), kProducerToken, "p");
    EXPECT_FRAME(ok->call(net::Send{"orders.eu", {text_message("m")}}), kSendOk);
  }
  EXPECT_TRUE(daemon_.wait_for_log("connect refused")) << daemon_.log();
  EXPECT_TRUE(daemon_.wait_for_log("as identity 'producer'")) << daemon_.log();
  const std::string log = daemon_.log();
  EXPECT_EQ(log.find(wrong), std::string::npos) << "a refused token was logged";
  EXPECT_EQ(log.find(kProducerToken), std::string::npos) << "a valid token was logged";
}

TEST_F(AuthTest, EveryOperationIsCheckedAndADenialLeavesTheConnectionUsable) {
  auto producer = as(port(), kProducerToken);
  auto consumer = as(port(), kConsumerToken, "c1");
  auto admin = as(port(), kAdminToken);

  auto denied = [](const Frame& f, std::string_view fragment) {
    ASSERT_FRAME(f, kError);
    EXPECT_EQ(error_from(f).code, ErrorCode::kPermissionDenied);
    EXPECT_NE(error_from(f).message.find(fragment), std::string::npos) << error_from(f).message;
  };
  denied(producer->call(net::Send{"billing", {text_message("x")}}),
         "identity 'producer' may not send to channel 'billing' (its send grants: orders.*)");
  EXPECT_FRAME(producer->call(net::Send{"orders.eu", {text_message("one")}}), kSendOk);
  denied(producer->call(net::SubscribeTryReceive{"orders.eu", 0}),
         "may not receive from channel 'orders.eu'");
  denied(consumer->call(net::Send{"orders.eu", {text_message("x")}}), "may not send to");
  denied(consumer->call(net::SubscribeTryReceive{"billing", 0}),
         "may not receive from channel 'billing'");
  GuestConfiguration gc;
  gc.channels = {"orders.eu", "billing"};
  denied(consumer->call(net::UpdateGuestConfiguration{gc}),
         "update-guest-configuration: identity 'consumer' may not receive from channel 'billing'");

  // The permitted operations work on the same connections.
  Frame got = consumer->call(net::SubscribeTryReceive{"orders.eu", 5000});
  ASSERT_FRAME(got, kSubscribeTryReceiveOk);
  const auto& messages = std::get<net::SubscribeTryReceiveOk>(got.body).messages;
  ASSERT_TRUE(messages && messages->size() == 1);
  EXPECT_EQ(text((*messages)[0]), "one");
  EXPECT_FRAME(consumer->call(net::CompleteMessage{receipt_of((*messages)[0])}),
               kCompleteMessageOk);

  // Admin ops: manage for declare/delete/purge/replay, receive or manage for browse, monitor
  // for server-stats; channel-list shows only what the identity has a grant on.
  auto adm = [](Conn& c, net::AdminOp op, const json& request) {
    return c.call(net::AdminRequest{op, request.dump()});
  };
  denied(adm(*producer, net::AdminOp::kChannelDeclare, {{"name", "orders.x"}}),
         "channel-declare: identity 'producer' may not manage channel 'orders.x'");
  denied(adm(*producer, net::AdminOp::kPurge, {{"channel", "orders.eu"}}), "may not manage");
  denied(adm(*producer, net::AdminOp::kChannelDelete, {{"name", "orders.eu"}}), "may not manage");
  denied(adm(*producer, net::AdminOp::kReplayDeadLetters, {{"channel", "orders.eu.dlq"}}),
         "may not manage");
  denied(adm(*producer, net::AdminOp::kBrowse, {{"channel", "orders.eu"}}), "may not receive");
  denied(adm(*producer, net::AdminOp::kServerStats, json::object()), "needs the monitor grant");
  EXPECT_FRAME(adm(*consumer, net::AdminOp::kBrowse, {{"channel", "orders.eu"}}), kBrowseOk);
  EXPECT_FRAME(adm(*admin, net::AdminOp::kChannelDeclare, {{"name", "billing"}}),
               kChannelDeclareOk);
  EXPECT_FRAME(adm(*admin, net::AdminOp::kServerStats, json::object()), kServerStatsOk);

  auto names = [&](Conn& c) {
    Frame f = adm(c, net::AdminOp::kChannelList, json::object());
    std::vector<std::string> out;
    auto* r = std::get_if<net::AdminReply>(&f.body);
    EXPECT_NE(r, nullptr) << describe(f);
    if (r) {
      const json reply = json::parse(r->json);
      for (const auto& ch : reply["channels"]) out.push_back(ch["name"]);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(names(*producer), std::vector<std::string>{"orders.eu"});
  EXPECT_EQ(names(*admin), (std::vector<std::string>{"billing", "orders.eu"}));
}

TEST_F(AuthTest, MaxConnectionsPerIdentityRefusesOnlyThatIdentity) {
  auto a = as(port(), kProducerToken);
  auto b = as(port(), kProducerToken);
  {
    Conn third(port());
    Frame f = connect(third, kProducerToken);
    ASSERT_FRAME(f, kGoaway);
    EXPECT_EQ(error_from(f).code, ErrorCode::kResourceExhausted);
    EXPECT_EQ(error_from(f).message,
              "connect: identity 'producer' has 2 connections open, its max-connections");
  }
  auto other = as(port(), kConsumerToken);
  // Closing one frees its slot.
  a.reset();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    Conn again(port());
    Frame f = connect(again, kProducerToken);
    if (f.type() == net::FrameType::kConnectOk) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << describe(f);
    std::this_thread::sleep_for(20ms);
  }
}

TEST_F(AuthTest, HttpTakesTheSameIdentitiesAsBearerTokens) {
  const uint16_t http = daemon_.http_port();
  auto bearer = [](const std::string& token) {
    return std::vector<std::pair<std::string, std::string>>{{"Authorization", "Bearer " + token}};
  };
  EXPECT_EQ(http_get(http, "/healthz").status, 200u) << "health needs no token";
  EXPECT_EQ(http_get(http, "/readyz").status, 200u);

  HttpReply none = http_get(http, "/metrics");
  EXPECT_EQ(none.status, 401u) << none;
  EXPECT_EQ(none.headers["www-authenticate"], "Bearer realm=\"witmq\"");
  EXPECT_EQ(none.error_code(), "permission-denied");
  EXPECT_EQ(http_request(http, "GET", "/metrics", "", bearer("wrong")).status, 401u);
  EXPECT_EQ(http_request(http, "GET", "/metrics", "", {{"Authorization", "Basic eDp5"}}).status,
            401u);
  HttpReply no_monitor = http_request(http, "GET", "/metrics", "", bearer(kProducerToken));
  EXPECT_EQ(no_monitor.status, 403u) << no_monitor;
  auto producer = as(port(), kProducerToken);
  HttpReply scrape = http_request(http, "GET", "/metrics", "", bearer(kAdminToken));
  EXPECT_EQ(scrape.status, 200u) << scrape;
  EXPECT_NE(scrape.body.find("witmq_build_info"), std::string::npos);
  EXPECT_NE(scrape.body.find("witmq_identity_connections{identity=\"producer\"} 1\n"),
            std::string::npos)
      << scrape.body;
  // The request without a token and the one with a wrong token; the producer's 403 is a denial.
  EXPECT_NE(scrape.body.find("witmq_auth_refused_total 2\n"), std::string::npos) << scrape.body;
  EXPECT_NE(scrape.body.find("witmq_auth_denied_total 1\n"), std::string::npos) << scrape.body;

  HttpReply forbidden =
      http_request(http, "POST", "/v1/channels/billing/messages", "x", bearer(kProducerToken));
  EXPECT_EQ(forbidden.status, 403u) << forbidden;
  EXPECT_NE(forbidden.error_message().find("may not send to channel 'billing'"),
            std::string::npos);
  HttpReply published =
      http_request(http, "POST", "/v1/channels/orders.http/messages", "x", bearer(kProducerToken));
  EXPECT_LT(published.status, 300u) << published;
  EXPECT_EQ(http_request(http, "PUT", "/v1/channels/made", "{}", bearer(kProducerToken)).status,
            403u);
  EXPECT_EQ(http_request(http, "PUT", "/v1/channels/made", "{}", bearer(kAdminToken)).status, 201u);
  EXPECT_EQ(
      http_request(http, "GET", "/v1/channels/orders.http/messages", "", bearer(kProducerToken))
          .status,
      403u);
  EXPECT_EQ(
      http_request(http, "GET", "/v1/channels/orders.http/messages", "", bearer(kConsumerToken))
          .status,
      200u);
  EXPECT_EQ(http_request(http, "POST", "/v1/checkpoint", R"({"dir": "/nonexistent/x"})",
                         bearer(kConsumerToken))
                .status,
            403u);
  HttpReply listed = http_request(http, "GET", "/v1/channels", "", bearer(kConsumerToken));
  ASSERT_EQ(listed.status, 200u) << listed;
  for (const auto& ch : listed.json["channels"]) {
    EXPECT_EQ(ch["name"].get<std::string>().rfind("orders.", 0), 0u) << ch["name"];
  }
  EXPECT_EQ(daemon_.log().find(kAdminToken), std::string::npos);
}

TEST_F(AuthTest, AReloadAppliesNewGrantsAndEndsRevokedConnections) {
  auto producer = as(port(), kProducerToken);
  auto limited = as(port(), kLimitedToken);
  EXPECT_FRAME(limited->call(net::Send{"other", {text_message("x")}}), kSendOk);
  ASSERT_FRAME(producer->call(net::Send{"billing", {text_message("x")}}), kError);

  json next = secured();
  next["identities"][0]["send"] = {"orders.*", "billing"};
  next["identities"].erase(3);  // limited
  config_.write(next);
  daemon_.signal(SIGHUP);
  ASSERT_TRUE(daemon_.wait_for_log("identities replaced")) << daemon_.log();

  EXPECT_FRAME(producer->call(net::Send{"billing", {text_message("now allowed")}}), kSendOk);
  // The revoked connection is told at once, without sending anything, and closed.
  Conn::Read r = limited->read(10s);
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(error_from(r.frame).code, ErrorCode::kPermissionDenied);
  EXPECT_NE(error_from(r.frame).message.find("identity 'limited' is no longer valid"),
            std::string::npos);
  EXPECT_EQ(limited->read(10s).status, Conn::Status::kClosed);
  Conn again(port());
  ASSERT_FRAME(connect(again, kLimitedToken), kGoaway);
}

std::vector<std::pair<std::string, std::string>> bearer(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

// Issue 19 item 6: naming a dead-letter channel takes the grants that writing to it takes.
TEST_F(AuthTest, ADeadLetterChannelNeedsTheGrantsOfWritingToIt) {
  const uint16_t http = daemon_.http_port();
  ASSERT_EQ(http_request(http, "PUT", "/v1/channels/billing", "{}", bearer(kAdminToken)).status,
            201u);
  HttpReply refused = http_request(http, "PUT", "/v1/channels/orders.x",
                                   R"({"dead-letter-channel": "billing", "max-deliveries": 1})",
                                   bearer(kOrdersAdminToken));
  EXPECT_EQ(refused.status, 403u) << refused;
  EXPECT_NE(refused.error_message().find("dead-letter-channel 'billing'"), std::string::npos)
      << refused;
  EXPECT_NE(refused.error_message().find("may not send to channel 'billing'"), std::string::npos)
      << refused;
  EXPECT_EQ(http_request(http, "GET", "/v1/channels/orders.x", "", bearer(kAdminToken)).status,
            404u);
  // Nor by changing an existing channel, nor over the protocol's admin frames.
  ASSERT_EQ(
      http_request(http, "PUT", "/v1/channels/orders.y", "{}", bearer(kOrdersAdminToken)).status,
      201u);
  EXPECT_EQ(http_request(http, "PUT", "/v1/channels/orders.y",
                         R"({"dead-letter-channel": "billing"})", bearer(kOrdersAdminToken))
                .status,
            403u);
  auto c = as(port(), kOrdersAdminToken);
  Frame f = c->call(
      net::AdminRequest{net::AdminOp::kChannelDeclare,
                        R"({"name": "orders.z", "settings": {"dead-letter-channel": "billing"}})"});
  EXPECT_EQ(error_from(f).code, ErrorCode::kPermissionDenied) << describe(f);
  HttpReply stats = http_request(http, "GET", "/v1/channels/billing", "", bearer(kAdminToken));
  EXPECT_EQ(stats.json.value("is-dead-letter", true), false) << stats;
  // A dead-letter channel it may write to (and manage) is fine.
  EXPECT_EQ(http_request(http, "PUT", "/v1/channels/orders.w",
                         R"({"dead-letter-channel": "orders.w.dead"})", bearer(kOrdersAdminToken))
                .status,
            201u);
}

TEST(AuthDeadLetterTest, WithoutAutoCreateTheDeadLetterChannelMustExist) {
  ConfigFile config(secured());
  Daemon d({"--config", config.path(), "--set", "auto-create-channels=false"});
  HttpReply refused =
      http_request(d.http_port(), "PUT", "/v1/channels/orders.x",
                   R"({"dead-letter-channel": "orders.dead"})", bearer(kOrdersAdminToken));
  EXPECT_EQ(refused.status, 409u) << refused;
  EXPECT_NE(refused.error_message().find("auto-create-channels is off"), std::string::npos)
      << refused;
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// Issue 19 item 8: whether a channel exists, and where its dead letters go, is not told to an
// identity without a grant on it.
TEST_F(AuthTest, DeadLettersCheckGrantsBeforeAnythingElse) {
  const uint16_t http = daemon_.http_port();
  ASSERT_EQ(http_request(http, "PUT", "/v1/channels/secret",
                         R"({"dead-letter-channel": "secret.hidden"})", bearer(kAdminToken))
                .status,
            201u);
  for (const std::string channel : {"secret", "missing"}) {
    for (const std::string suffix : {"/dead-letters", "/dead-letters/replay"}) {
      const std::string method = suffix == "/dead-letters" ? "GET" : "POST";
      HttpReply r = http_request(http, method, "/v1/channels/" + channel + suffix, "",
                                 bearer(kProducerToken));
      EXPECT_EQ(r.status, 403u) << channel << suffix << ": " << r;
      EXPECT_EQ(r.body.find("hidden"), std::string::npos) << r;
      EXPECT_EQ(r.body.find(".dlq"), std::string::npos) << r;
    }
  }
  EXPECT_EQ(http_request(http, "GET", "/v1/channels/missing/dead-letters", "", bearer(kAdminToken))
                .status,
            404u);
}

// Issue 19 item 7: a reload that revokes an identity ends its waiting receives at once (nothing
// published afterwards reaches it) and closes its protocol and HTTP connections.
TEST_F(AuthTest, ARevokingReloadEndsWaitingReceivesAndClosesConnections) {
  auto consumer = as(port(), kConsumerToken);
  consumer->send(net::SubscribeReceive{"orders.wait"});
  // An HTTP keep-alive connection whose last request came from the consumer.
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket http(io);
  http.connect({boost::asio::ip::make_address("127.0.0.1"), daemon_.http_port()});
  {
    namespace bhttp = boost::beast::http;
    bhttp::request<bhttp::string_body> req{bhttp::verb::get, "/v1/channels", 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::authorization, "Bearer " + kConsumerToken);
    bhttp::write(http, req);
    boost::beast::flat_buffer buffer;
    bhttp::response<bhttp::string_body> res;
    bhttp::read(http, buffer, res);
    ASSERT_EQ(res.result_int(), 200u);
    ASSERT_TRUE(res.keep_alive());
  }
  std::this_thread::sleep_for(100ms);  // the receive is waiting

  json next = secured();
  next["identities"].erase(1);  // consumer
  config_.write(next);
  daemon_.signal(SIGHUP);
  ASSERT_TRUE(daemon_.wait_for_log("identities replaced")) << daemon_.log();
  auto producer = as(port(), kProducerToken);
  EXPECT_FRAME(producer->call(net::Send{"orders.wait", {text_message("after the reload")}}),
               kSendOk);

  Conn::Read r = consumer->read(10s);
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(error_from(r.frame).code, ErrorCode::kPermissionDenied);
  for (;;) {
    Conn::Read more = consumer->read(10s);
    if (more.status != Conn::Status::kFrame) {
      EXPECT_EQ(more.status, Conn::Status::kClosed);
      break;
    }
    EXPECT_EQ(describe(more.frame).find("after the reload"), std::string::npos)
        << "delivered after the reload: " << describe(more.frame);
  }
  // The HTTP connection is closed by the server.
  char byte;
  boost::system::error_code ec;
  http.read_some(boost::asio::buffer(&byte, 1), ec);
  EXPECT_TRUE(ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset)
      << ec.message();
  // The message is still there for a consumer that may have it.
  HttpReply browse = http_request(daemon_.http_port(), "GET", "/v1/channels/orders.wait/messages",
                                  "", bearer(kAdminToken));
  EXPECT_NE(browse.body.find("after the reload"), std::string::npos) << browse;
}

// A receive or a stream round that waits across a reload taking the grant away gets nothing:
// the receive fails, the stream ends, both with permission-denied, and the messages they took
// stay in the channel. Before, the first message after the reload was delivered anyway.
TEST_F(AuthTest, AReloadThatTakesAGrantAwayEndsWaitingReceivesAndStreams) {
  auto streamer = as(port(), kConsumerToken, "s");
  auto waiter = as(port(), kConsumerToken, "w");
  EXPECT_FRAME(streamer->call(net::UpdateGuestConfiguration{GuestConfiguration{{"orders.s"}, {}}}),
               kUpdateGuestConfigurationOk);
  EXPECT_FRAME(waiter->call(net::UpdateGuestConfiguration{GuestConfiguration{{"orders.r"}, {}}}),
               kUpdateGuestConfigurationOk);
  const uint32_t stream = streamer->send(net::StreamStart{10});
  EXPECT_FRAME(streamer->reply(stream), kStreamStartOk);
  const uint32_t receive = waiter->send(net::SubscribeReceive{"orders.r"});
  EXPECT_FRAME(waiter->call(net::Ping{1}), kPong);  // the receive is waiting

  json next = secured();
  next["identities"][1]["receive"] = {"orders.other"};
  config_.write(next);
  daemon_.signal(SIGHUP);
  ASSERT_TRUE(daemon_.wait_for_log("identities replaced")) << daemon_.log();
  auto producer = as(port(), kProducerToken);
  EXPECT_FRAME(producer->call(net::Send{"orders.s", {text_message("s")}}), kSendOk);
  EXPECT_FRAME(producer->call(net::Send{"orders.r", {text_message("r")}}), kSendOk);

  Frame f = waiter->reply(receive);
  ASSERT_FRAME(f, kError);
  EXPECT_EQ(error_from(f).code, ErrorCode::kPermissionDenied) << describe(f);
  auto end = streamer->next_push(10s);
  ASSERT_TRUE(end.has_value());
  ASSERT_FRAME(*end, kStreamEnd);
  auto admin = as(port(), kAdminToken);
  for (const std::string channel : {"orders.s", "orders.r"}) {
    json j;
    // Released: the lease ends at once, and its expiry is handled by the broker's housekeeping.
    for (int i = 0; i < 100; ++i) {
      Frame stats = admin->call(
          net::AdminRequest{net::AdminOp::kChannelStats, json{{"name", channel}}.dump()});
      ASSERT_FRAME(stats, kChannelStatsOk);
      j = json::parse(std::get<net::AdminReply>(stats.body).json);
      if (j["in-flight"] == 0) break;
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(j["depth"], 1) << channel << ": " << j.dump();
    EXPECT_EQ(j["in-flight"], 0) << channel << ": " << j.dump();
  }
}

std::string wasm(const std::string& stem) {
  return std::string(WITMQ_GUEST_WASM_DIR) + "/" + stem + ".wasm";
}

TEST(AuthGuestTest, AGuestSendsAndReceivesOnlyWhereItIsGranted) {
  // The forwarder receives from guest.in and sends each message to guest.out.
  json config = secured();
  config["guests"] = json::array(
      {{{"name", "allowed"},
        {"module", wasm("forward_guest")},
        {"permissions", {{"receive", {"guest.in"}}, {"send", {"guest.out"}}}}},
       {{"name", "no-receive"},
        {"module", wasm("forward_guest")},
        {"channels", {"guest.other"}},
        {"permissions", {{"receive", {"guest.in"}}, {"send", {"guest.out"}}}}}});
  config["identities"].push_back(
      {{"name", "tester"}, {"token-sha256", digest("t")}, {"send", {"*"}}, {"receive", {"*"}}});
  ConfigFile file(config);
  Daemon d({"--config", file.path()});
  EXPECT_TRUE(d.wait_for_log("guest 'no-receive' may not receive from channel 'guest.other'"))
      << d.log();

  auto c = as(d.port(), "t");
  EXPECT_FRAME(c->call(net::Send{"guest.in", {text_message("fwd")}}), kSendOk);
  Frame f = c->call(net::SubscribeTryReceive{"guest.out", 10'000}, 15s);
  ASSERT_FRAME(f, kSubscribeTryReceiveOk);
  const auto& got = std::get<net::SubscribeTryReceiveOk>(f.body).messages;
  ASSERT_TRUE(got && !got->empty());
  EXPECT_EQ(text((*got)[0]), "fwd");
}

TEST(AuthGuestTest, AGuestWithoutASendGrantCannotForward) {
  json config = secured();
  config["guests"] = json::array({{{"name", "mute"},
                                   {"module", wasm("forward_guest")},
                                   {"permissions", {{"receive", {"guest.in"}}}}}});
  config["identities"].push_back(
      {{"name", "tester"}, {"token-sha256", digest("t")}, {"send", {"*"}}, {"receive", {"*"}}});
  ConfigFile file(config);
  Daemon d({"--config", file.path()});
  auto c = as(d.port(), "t");
  EXPECT_FRAME(c->call(net::Send{"guest.in", {text_message("fwd")}}), kSendOk);
  EXPECT_TRUE(d.wait_for_log("guest 'mute' may not send to channel 'guest.out'")) << d.log();
  Frame f = c->call(net::SubscribeTryReceive{"guest.out", 300});
  ASSERT_FRAME(f, kSubscribeTryReceiveOk);
  EXPECT_FALSE(std::get<net::SubscribeTryReceiveOk>(f.body).messages.has_value());
}

TEST(AuthDefaultsTest, TheDefaultConfigurationAllowsAnonymousAccessAndSaysSoLoudly) {
  Daemon d;
  EXPECT_TRUE(d.wait_for_log("ANONYMOUS ACCESS IS ON")) << d.log();
  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Send{"anything", {text_message("x")}}), kSendOk);
}

TEST(AuthDefaultsTest, AnOffSwitchedAnonymousKeyIsLoggedAsOff) {
  ConfigFile file(json{{"anonymous", {{"enabled", false}}}});
  Daemon d({"--config", file.path()});
  EXPECT_TRUE(d.wait_for_log("anonymous access is off")) << d.log();
  EXPECT_EQ(d.log().find("ANONYMOUS ACCESS IS ON"), std::string::npos);
}

// Issue 19 item 10: the warning names every listener anonymous access applies to, the HTTP one
// included, and a reload that switches anonymous access on says so again.
TEST(AuthDefaultsTest, TheAnonymousWarningNamesTheHttpListenerAndFollowsReloads) {
  ConfigFile file(json{{"anonymous", {{"enabled", false}}}});
  Daemon d({"--config", file.path()});
  ASSERT_TRUE(d.wait_for_log("anonymous access is off")) << d.log();
  file.write(json{{"anonymous", {{"enabled", true}, {"send", {"*"}}}}});
  d.signal(SIGHUP);
  ASSERT_TRUE(d.wait_for_log("ANONYMOUS ACCESS IS ON")) << d.log();
  const std::string log = d.log();
  const auto warning = log.find("ANONYMOUS ACCESS IS ON");
  const std::string line = log.substr(warning, log.find('\n', warning) - warning);
  EXPECT_NE(line.find("listen 127.0.0.1:"), std::string::npos) << line;
  EXPECT_NE(line.find("http-listen 127.0.0.1:"), std::string::npos) << line;
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(AuthDefaultsTest, ABadIdentitiesEntryIsRefusedAtStartNamingTheField) {
  ConfigFile file(json{{"identities", json::array({{{"name", "x"}, {"token-sha256", "abc"}}})}});
  RunResult r = run_witmqd({"--config", file.path(), "--check-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("identities (from " + file.path() +
                       "): identities[0] ('x').token-sha256: is 3 characters long"),
            std::string::npos)
      << r.err;
}

TEST(AuthDefaultsTest, HashTokenAndGenerateTokenPrintTheConfigValues) {
  RunResult g = run_witmqd({"--generate-token"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const auto token_at = g.out.find("token:        ");
  const auto hash_at = g.out.find("token-sha256: ");
  ASSERT_NE(token_at, std::string::npos) << g.out;
  ASSERT_NE(hash_at, std::string::npos) << g.out;
  const std::string token = g.out.substr(token_at + 14, g.out.find('\n', token_at) - token_at - 14);
  const std::string hash = g.out.substr(hash_at + 14, 64);
  EXPECT_EQ(hash, digest(token));
}

}  // namespace
}  // namespace witmq::daemon::testing
