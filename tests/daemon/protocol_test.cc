// Every operation of docs/PROTOCOL.md end to end against the real witmqd over loopback: the WIT
// operations, pipelining with out-of-order replies, keepalive and the admin extensions.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

class ProtocolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon_ = new Daemon(); }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    delete daemon_;
  }
  static uint16_t port() { return daemon_->port(); }

  // A connected client.
  static std::unique_ptr<Conn> client(std::string name = "") {
    auto c = std::make_unique<Conn>(port());
    c->hello(std::move(name));
    return c;
  }

  static Frame send(Conn& c, std::string channel, std::vector<Message> messages) {
    return c.call(net::Send{std::move(channel), std::move(messages)});
  }

  // subscribe-try-receive; an empty vector for none.
  static std::vector<Message> try_receive(Conn& c, std::string channel, uint32_t timeout_ms) {
    Frame f = c.call(net::SubscribeTryReceive{std::move(channel), timeout_ms},
                     std::chrono::milliseconds(timeout_ms) + 10s);
    auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
    EXPECT_NE(ok, nullptr) << describe(f);
    if (!ok || !ok->messages) return {};
    EXPECT_FALSE(ok->messages->empty()) << "some with an empty list";
    return std::move(*ok->messages);
  }

  static json admin(Conn& c, net::AdminOp op, const json& body) {
    Frame f = c.call(net::AdminRequest{op, body.dump()});
    auto* ok = std::get_if<net::AdminReply>(&f.body);
    EXPECT_NE(ok, nullptr) << describe(f);
    return ok ? json::parse(ok->json) : json();
  }

  static Daemon* daemon_;
};
Daemon* ProtocolTest::daemon_ = nullptr;

TEST_F(ProtocolTest, ConnectAnnouncesVersionAndLimits) {
  Conn c(port());
  const net::ConnectOk ok = c.hello("announce");
  EXPECT_EQ(ok.version, 1);
  EXPECT_EQ(ok.server, "witmqd/0.1.0");
  EXPECT_EQ(ok.limits.max_frame_bytes, 16u << 20);
  EXPECT_EQ(ok.limits.max_send_messages, 10000u);
  EXPECT_EQ(ok.limits.max_receive_messages, 10000u);
  EXPECT_EQ(ok.limits.max_message_bytes, 1u << 20);
  EXPECT_EQ(ok.limits.max_metadata_entries, 64u);
  EXPECT_EQ(ok.limits.max_metadata_bytes, 16384u);
  EXPECT_EQ(ok.limits.max_config_channels, 1024u);
  EXPECT_EQ(ok.limits.max_in_flight, 1024u);
  EXPECT_EQ(ok.limits.max_credit, 10000u);
  EXPECT_EQ(ok.limits.idle_timeout_ms, 0u);
}

TEST_F(ProtocolTest, ConnectPicksVersionOneFromSeveral) {
  Conn c(port());
  Frame f = c.call(net::Connect{{7, 1, 3}, "multi", std::string("token-ignored")});
  ASSERT_FRAME(f, kConnectOk);
  EXPECT_EQ(std::get<net::ConnectOk>(f.body).version, 1);
}

TEST_F(ProtocolTest, SecondConnectIsRefusedAndTheConnectionStays) {
  auto c = client("once");
  Frame f = c->call(net::Connect{{1}, "twice", std::nullopt});
  ASSERT_FRAME(f, kError);
  EXPECT_EQ(error_of(f)->code, ErrorCode::kFailedPrecondition);
  EXPECT_FRAME(c->call(net::Ping{7}), kPong);
}

TEST_F(ProtocolTest, SendTryReceiveComplete) {
  auto producer = client();
  auto consumer = client();
  EXPECT_FRAME(send(*producer, "e2e.basic",
                    {text_message("a", {{"k", "v"}, {"witmq-id", "forged"}}), text_message("b"),
                     text_message("c")}),
               kSendOk);
  auto got = try_receive(*consumer, "e2e.basic", 0);
  ASSERT_EQ(got.size(), 3u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(text(got[i]), std::string(1, static_cast<char>('a' + i)));
    EXPECT_EQ(meta_value(got[i], meta::kChannel), "e2e.basic");
    EXPECT_EQ(meta_value(got[i], meta::kSequence), std::to_string(i));
    EXPECT_EQ(meta_value(got[i], meta::kId), "e2e.basic/" + std::to_string(i));
    EXPECT_EQ(meta_value(got[i], meta::kAttempt), "1");
    EXPECT_FALSE(meta_value(got[i], meta::kReceipt).empty());
  }
  EXPECT_EQ(meta_value(got[0], "k"), "v");  // the producer's metadata; its witmq- key dropped
  // Settle the first as delivered, the others with just the receipt.
  EXPECT_FRAME(consumer->call(net::CompleteMessage{got[0]}), kCompleteMessageOk);
  EXPECT_FRAME(consumer->call(net::CompleteMessage{receipt_of(got[1])}), kCompleteMessageOk);
  EXPECT_FRAME(consumer->call(net::CompleteMessage{receipt_of(got[2])}), kCompleteMessageOk);
  EXPECT_TRUE(try_receive(*consumer, "e2e.basic", 0).empty());
  // Settling twice: the receipt is stale now.
  Frame again = consumer->call(net::CompleteMessage{receipt_of(got[0])});
  ASSERT_FRAME(again, kError);
  EXPECT_EQ(error_of(again)->code, ErrorCode::kStaleReceipt);
  // No receipt at all.
  Frame none = consumer->call(net::CompleteMessage{text_message("x")});
  ASSERT_FRAME(none, kError);
  EXPECT_EQ(error_of(none)->code, ErrorCode::kInvalidArgument);
}

TEST_F(ProtocolTest, EmptySendIsValid) {
  auto c = client();
  EXPECT_FRAME(send(*c, "e2e.empty", {}), kSendOk);
}

TEST_F(ProtocolTest, TryReceiveWaitsForItsTimeout) {
  auto c = client();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(try_receive(*c, "e2e.quiet", 300).empty());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 290ms);
}

TEST_F(ProtocolTest, TryReceiveReturnsWhenAMessageArrives) {
  auto consumer = client();
  auto producer = client();
  const uint32_t id = consumer->send(net::SubscribeTryReceive{"e2e.arrives", 10'000});
  std::this_thread::sleep_for(100ms);
  EXPECT_FRAME(send(*producer, "e2e.arrives", {text_message("late")}), kSendOk);
  Frame f = consumer->reply(id, 5s);
  ASSERT_FRAME(f, kSubscribeTryReceiveOk);
  ASSERT_TRUE(std::get<net::SubscribeTryReceiveOk>(f.body).messages);
  EXPECT_EQ(text(std::get<net::SubscribeTryReceiveOk>(f.body).messages->at(0)), "late");
}

TEST_F(ProtocolTest, BlockingReceiveDoesNotHoldUpLaterRequests) {
  auto c = client();
  // subscribe-receive waits; the send and ping behind it are answered first.
  const uint32_t receive_id = c->send(net::SubscribeReceive{"e2e.ooo"});
  const uint32_t send_id = c->send(net::Send{"e2e.ooo.other", {text_message("x")}});
  const uint32_t ping_id = c->send(net::Ping{42});
  Conn::Read r = c->read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  EXPECT_NE(r.frame.request_id, receive_id) << describe(r.frame);
  c->others.push_back(std::move(r.frame));
  EXPECT_FRAME(c->reply(send_id), kSendOk);
  Frame pong = c->reply(ping_id);
  ASSERT_FRAME(pong, kPong);
  EXPECT_EQ(std::get<net::Pong>(pong.body).payload, 42u);
  EXPECT_EQ(c->read(200ms).status, Conn::Status::kTimeout);
  // A send on the same connection wakes its own receive.
  const uint32_t wake_id = c->send(net::Send{"e2e.ooo", {text_message("wake")}});
  Frame got = c->reply(receive_id);
  ASSERT_FRAME(got, kSubscribeReceiveOk);
  ASSERT_EQ(std::get<net::SubscribeReceiveOk>(got.body).messages.size(), 1u);
  EXPECT_EQ(text(std::get<net::SubscribeReceiveOk>(got.body).messages[0]), "wake");
  EXPECT_FRAME(c->reply(wake_id), kSendOk);
}

TEST_F(ProtocolTest, PipelinedSendsAreAnsweredAndAppendedInOrder) {
  auto c = client();
  constexpr int kSends = 2000;
  net::Buffer burst;
  std::set<uint32_t> ids;
  for (int i = 0; i < kSends; ++i) {
    const uint32_t id = c->next_id();
    ids.insert(id);
    net::encode(burst, Frame{id, net::Send{"e2e.pipeline", {text_message(std::to_string(i))}}});
  }
  ASSERT_TRUE(c->write(burst));  // one write: the server reads many frames per read
  for (int i = 0; i < kSends; ++i) {
    Conn::Read r = c->read();
    ASSERT_EQ(r.status, Conn::Status::kFrame);
    ASSERT_FRAME(r.frame, kSendOk);
    EXPECT_EQ(ids.erase(r.frame.request_id), 1u);
  }
  EXPECT_TRUE(ids.empty());
  int next = 0;
  while (next < kSends) {
    auto got = try_receive(*c, "e2e.pipeline", 1000);
    ASSERT_FALSE(got.empty()) << "after " << next;
    for (const auto& m : got) {
      EXPECT_EQ(text(m), std::to_string(next++));
      EXPECT_FRAME(c->call(net::CompleteMessage{receipt_of(m)}), kCompleteMessageOk);
    }
  }
}

TEST_F(ProtocolTest, AbandonRedeliversWithTheNextAttempt) {
  auto c = client();
  EXPECT_FRAME(send(*c, "e2e.abandon", {text_message("again")}), kSendOk);
  auto first = try_receive(*c, "e2e.abandon", 0);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_FRAME(c->call(net::AbandonMessage{receipt_of(first[0])}), kAbandonMessageOk);
  auto second = try_receive(*c, "e2e.abandon", 5000);  // after the requeue backoff
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(text(second[0]), "again");
  EXPECT_EQ(meta_value(second[0], meta::kAttempt), "2");
  EXPECT_FRAME(c->call(net::CompleteMessage{receipt_of(second[0])}), kCompleteMessageOk);
}

TEST_F(ProtocolTest, DisconnectMakesHeldMessagesAvailable) {
  auto producer = client();
  EXPECT_FRAME(send(*producer, "e2e.held", {text_message("held")}), kSendOk);
  {
    auto holder = client();
    ASSERT_EQ(try_receive(*holder, "e2e.held", 0).size(), 1u);
  }  // closes without settling
  auto other = client();
  auto got = try_receive(*other, "e2e.held", 5000);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(text(got[0]), "held");
  EXPECT_EQ(meta_value(got[0], meta::kAttempt), "2");
}

TEST_F(ProtocolTest, UpdateGuestConfigurationSetsBatchSizeAndRefusesUnknownKeys) {
  auto c = client();
  Frame bad = c->call(net::UpdateGuestConfiguration{
      GuestConfiguration{{"e2e.config"}, Metadata{{"colour", "blue"}}}});
  ASSERT_FRAME(bad, kError);
  EXPECT_EQ(error_of(bad)->code, ErrorCode::kInvalidArgument);
  EXPECT_NE(error_of(bad)->message.find("colour"), std::string::npos) << error_of(bad)->message;
  EXPECT_FRAME(c->call(net::UpdateGuestConfiguration{
                   GuestConfiguration{{"e2e.config"}, Metadata{{"batch-size", "2"}}}}),
               kUpdateGuestConfigurationOk);
  EXPECT_FRAME(send(*c, "e2e.config", {text_message("1"), text_message("2"), text_message("3")}),
               kSendOk);
  EXPECT_EQ(try_receive(*c, "e2e.config", 0).size(), 2u);
  EXPECT_EQ(try_receive(*c, "e2e.config", 0).size(), 1u);
}

TEST_F(ProtocolTest, PublishSubscribeDeliversToEverySubscription) {
  auto admin_conn = client();
  admin(*admin_conn, net::AdminOp::kChannelDeclare,
        {{"name", "e2e.topic"}, {"settings", {{"kind", "publish-subscribe"}}}});
  auto a = client("sub-a");
  auto b = client("sub-b");
  for (auto* c : {a.get(), b.get()}) {
    EXPECT_FRAME(c->call(net::UpdateGuestConfiguration{GuestConfiguration{{"e2e.topic"}, {}}}),
                 kUpdateGuestConfigurationOk);
  }
  EXPECT_FRAME(send(*admin_conn, "e2e.topic", {text_message("news")}), kSendOk);
  for (auto* c : {a.get(), b.get()}) {
    auto got = try_receive(*c, "e2e.topic", 2000);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(text(got[0]), "news");
  }
}

TEST_F(ProtocolTest, PingIsAnsweredWithItsPayload) {
  auto c = client();
  Frame f = c->call(net::Ping{0xFEEDFACECAFEBEEFull});
  ASSERT_FRAME(f, kPong);
  EXPECT_EQ(std::get<net::Pong>(f.body).payload, 0xFEEDFACECAFEBEEFull);
}

TEST_F(ProtocolTest, AdminDeclareStatsListBrowsePurgeDelete) {
  auto c = client();
  EXPECT_EQ(admin(*c, net::AdminOp::kChannelDeclare,
                  {{"name", "e2e.admin"}, {"settings", {{"durability", "sync"}}}}),
            json::object());
  EXPECT_FRAME(send(*c, "e2e.admin", {text_message("1"), text_message("2"), text_message("3")}),
               kSendOk);
  json stats = admin(*c, net::AdminOp::kChannelStats, {{"name", "e2e.admin"}});
  EXPECT_EQ(stats["name"], "e2e.admin");
  EXPECT_EQ(stats["settings"]["durability"], "sync");
  EXPECT_EQ(stats["settings"]["kind"], "point-to-point");
  EXPECT_EQ(stats["head-seq"], 3);
  EXPECT_EQ(stats["depth"], 3);
  EXPECT_TRUE(stats["subscriptions"].is_array());

  // Changing the kind of an existing channel is already-exists.
  Frame kind = c->call(net::AdminRequest{
      net::AdminOp::kChannelDeclare,
      json{{"name", "e2e.admin"}, {"settings", {{"kind", "publish-subscribe"}}}}.dump()});
  ASSERT_FRAME(kind, kError);
  EXPECT_EQ(error_of(kind)->code, ErrorCode::kAlreadyExists);

  json list = admin(*c, net::AdminOp::kChannelList, json::object());
  bool listed = false;
  for (const auto& ch : list["channels"]) listed |= ch["name"] == "e2e.admin";
  EXPECT_TRUE(listed);

  Frame browse = c->call(net::AdminRequest{
      net::AdminOp::kBrowse, json{{"channel", "e2e.admin"}, {"from", 1}, {"max", 10}}.dump()});
  ASSERT_FRAME(browse, kBrowseOk);
  const auto& page = std::get<net::BrowseOk>(browse.body).messages;
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(text(page[0]), "2");
  EXPECT_EQ(meta_value(page[0], meta::kSequence), "1");
  EXPECT_EQ(find_metadata(page[0], meta::kReceipt), nullptr);

  EXPECT_EQ(admin(*c, net::AdminOp::kPurge, {{"channel", "e2e.admin"}})["purged"], 3);
  EXPECT_TRUE(try_receive(*c, "e2e.admin", 0).empty());

  EXPECT_EQ(admin(*c, net::AdminOp::kChannelDelete, {{"name", "e2e.admin"}}), json::object());
  Frame gone = c->call(net::AdminRequest{net::AdminOp::kChannelStats,
                                         json{{"name", "e2e.admin"}}.dump()});
  ASSERT_FRAME(gone, kError);
  EXPECT_EQ(error_of(gone)->code, ErrorCode::kNotFound);
}

TEST_F(ProtocolTest, AdminDeadLettersBrowseAndReplay) {
  auto c = client();
  admin(*c, net::AdminOp::kChannelDeclare,
        {{"name", "e2e.dl"}, {"settings", {{"abandon-policy", "dead-letter"}}}});
  EXPECT_FRAME(send(*c, "e2e.dl", {text_message("poison")}), kSendOk);
  auto got = try_receive(*c, "e2e.dl", 0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FRAME(c->call(net::AbandonMessage{receipt_of(got[0])}), kAbandonMessageOk);

  // The move to the dead-letter channel is asynchronous: wait for it.
  std::vector<Message> page;
  for (int i = 0; i < 100 && page.empty(); ++i) {
    Frame browse = c->call(
        net::AdminRequest{net::AdminOp::kBrowse, json{{"channel", "e2e.dl.dlq"}}.dump()});
    if (auto* ok = std::get_if<net::BrowseOk>(&browse.body)) page = ok->messages;
    if (page.empty()) std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(text(page[0]), "poison");
  EXPECT_EQ(meta_value(page[0], meta::kDlqReason), "abandoned");
  EXPECT_EQ(meta_value(page[0], meta::kDlqSource), "e2e.dl");

  json stats = admin(*c, net::AdminOp::kChannelStats, {{"name", "e2e.dl.dlq"}});
  EXPECT_EQ(stats["is-dead-letter"], true);
  EXPECT_EQ(admin(*c, net::AdminOp::kReplayDeadLetters, {{"channel", "e2e.dl.dlq"}})["moved"], 1);
  auto back = try_receive(*c, "e2e.dl", 2000);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(text(back[0]), "poison");
}

TEST_F(ProtocolTest, AdminServerStats) {
  auto c = client();
  json stats = admin(*c, net::AdminOp::kServerStats, json::object());
  EXPECT_EQ(stats["server"], "witmqd/0.1.0");
  EXPECT_GE(stats["connections"].get<int>(), 1);
  EXPECT_TRUE(stats["store"].is_object());
  EXPECT_TRUE(stats.contains("requests-total"));
}

TEST_F(ProtocolTest, AdminRefusesUnknownFieldsAndWrongTypes) {
  auto c = client();
  for (const auto& [op, body, field] :
       std::vector<std::tuple<net::AdminOp, std::string, std::string>>{
           {net::AdminOp::kChannelStats, R"({"name":"x","colour":1})", "colour"},
           {net::AdminOp::kChannelStats, R"({"name":7})", "name"},
           {net::AdminOp::kChannelStats, R"({})", "name"},
           {net::AdminOp::kBrowse, R"({"channel":"x","from":-1})", "from"},
           {net::AdminOp::kChannelList, R"({"all":true})", "all"},
           {net::AdminOp::kChannelDeclare, R"({"name":"x","settings":{"kind":"ring"}})", "kind"},
           {net::AdminOp::kPurge, R"("purge")", "object"},
       }) {
    Frame f = c->call(net::AdminRequest{op, body});
    ASSERT_FRAME(f, kError);
    EXPECT_EQ(error_of(f)->code, ErrorCode::kInvalidArgument) << body;
    EXPECT_NE(error_of(f)->message.find(field), std::string::npos) << error_of(f)->message;
  }
  Frame big = c->call(net::AdminRequest{net::AdminOp::kBrowse, R"({"channel":"x","max":20000})"});
  ASSERT_FRAME(big, kError);
  EXPECT_EQ(error_of(big)->code, ErrorCode::kResourceExhausted);
}

}  // namespace
}  // namespace witmq::daemon::testing
