// How witmq prints messages and channel statistics (cli/message_output.h) and the admin JSON of
// the client library (client/admin_json.h).
#include "cli/message_output.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "client/admin_json.h"

namespace witmq::cli {
namespace {

Message delivered(std::vector<uint8_t> data) {
  Message m;
  m.data = std::move(data);
  m.metadata = Metadata{{"k", "v"},
                        {"witmq-id", "orders/5"},
                        {"witmq-channel", "orders"},
                        {"witmq-sequence", "5"},
                        {"witmq-attempt", "2"},
                        {"witmq-receipt", "opaque"}};
  return m;
}

TEST(MessageOutput, Text) {
  std::string s = format_message(delivered({'h', 'i'}), OutputMode::kText);
  EXPECT_EQ(s,
            "--- orders/5 attempt 2, raw, 2 bytes\n"
            "k: v\n"
            "witmq-channel: orders\n"
            "witmq-sequence: 5\n"
            "hi\n");
}

TEST(MessageOutput, DataOnly) {
  EXPECT_EQ(format_message(delivered({'h', 'i'}), OutputMode::kDataOnly), "hi\n");
}

TEST(MessageOutput, JsonTextAndBinary) {
  auto j = nlohmann::json::parse(format_message(delivered({'h', 'i'}), OutputMode::kJson));
  EXPECT_EQ(j["id"], "orders/5");
  EXPECT_EQ(j["channel"], "orders");
  EXPECT_EQ(j["sequence"], 5);
  EXPECT_EQ(j["attempt"], 2);
  EXPECT_EQ(j["format"], "raw");
  EXPECT_EQ(j["data"], "hi");
  EXPECT_EQ(j["metadata"]["k"], "v");
  EXPECT_EQ(j["metadata"]["witmq-receipt"], "opaque");

  auto b = nlohmann::json::parse(format_message(delivered({0xff, 0x00, 0x01}), OutputMode::kJson));
  EXPECT_FALSE(b.contains("data"));
  EXPECT_EQ(b["data-base64"], "/wAB");
}

TEST(MessageOutput, Base64) {
  auto enc = [](std::string_view s) {
    return base64_encode(std::vector<uint8_t>(s.begin(), s.end()));
  };
  EXPECT_EQ(enc(""), "");
  EXPECT_EQ(enc("f"), "Zg==");
  EXPECT_EQ(enc("fo"), "Zm8=");
  EXPECT_EQ(enc("foo"), "Zm9v");
  EXPECT_EQ(enc("foobar"), "Zm9vYmFy");
}

TEST(AdminJson, RequestsAndReplies) {
  using namespace client::admin_json;
  EXPECT_EQ(declare_request("q", {{"kind", "point-to-point"},
                                  {"lease-ms", "500"},
                                  {"backoff-initial-ms", "-"},
                                  {"dead-letter-channel", "x-1"}}),
            R"({"name":"q","settings":{"backoff-initial-ms":"-","dead-letter-channel":"x-1",)"
            R"("kind":"point-to-point","lease-ms":500}})");
  EXPECT_EQ(declare_request("q", {}), R"({"name":"q"})");
  EXPECT_EQ(channel_request("q\"x"), R"({"channel":"q\"x"})");
  EXPECT_EQ(channel_request("q", 3), R"({"channel":"q","max":3})");

  auto s = parse_channel_stats(
      R"({"name":"q","settings":{"kind":"point-to-point","durability":"sync",)"
      R"("dead-letter-channel":""},"is-dead-letter":false,"depth":4,"in-flight":2,)"
      R"("oldest-age-ms":10,"subscriptions":[{"name":"","durable":true,"lag":4}],"new-field":1})");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->name, "q");
  EXPECT_EQ(s->durability, "sync");
  EXPECT_EQ(s->depth, 4u);
  EXPECT_EQ(s->in_flight, 2u);
  ASSERT_EQ(s->subscriptions.size(), 1u);
  EXPECT_EQ(s->subscriptions[0].lag, 4u);
  EXPECT_EQ(s->dead_letter_target(), "q.dlq");
  s->dead_letter_channel = "elsewhere";
  EXPECT_EQ(s->dead_letter_target(), "elsewhere");

  auto wrong = parse_channel_stats(R"({"name":"q","depth":"many"})");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message.find("\"depth\""), std::string::npos);
  EXPECT_FALSE(parse_channel_stats("not json").ok());
  EXPECT_FALSE(parse_channel_list(R"({"channel":[]})").ok());
  EXPECT_EQ(*parse_count(R"({"moved":3})", "moved"), 3u);
  EXPECT_FALSE(parse_count(R"({"moved":-3})", "moved").ok());
}

TEST(ChannelOutput, TableAndStats) {
  client::ChannelStats a;
  a.name = "orders";
  a.kind = "point-to-point";
  a.durability = "group";
  a.depth = 12;
  a.in_flight = 3;
  a.json = R"({"name":"orders","settings":{"kind":"point-to-point"}})";
  std::string table = format_channel_list({a}, OutputMode::kText);
  EXPECT_NE(table.find("NAME"), std::string::npos);
  EXPECT_NE(table.find("IN-FLIGHT"), std::string::npos);
  EXPECT_NE(table.find("orders"), std::string::npos);
  EXPECT_NE(table.find("12"), std::string::npos);
  auto j = nlohmann::json::parse(format_channel_list({a}, OutputMode::kJson));
  EXPECT_EQ(j[0]["name"], "orders");
  std::string stats = format_channel_stats(a, OutputMode::kText);
  EXPECT_NE(stats.find("depth: 12"), std::string::npos);
  EXPECT_NE(stats.find("kind: point-to-point"), std::string::npos);
  EXPECT_NE(stats.find("dead-letter channel: orders.dlq"), std::string::npos);
}

// `witmq cluster` on the node that leads a channel prints its followers' lag; a channel with no
// leader (no "leader" key) prints "(none)".
TEST(ClusterOutput, LeaderWithFollowersLagAndAChannelWithoutLeader) {
  const auto c = nlohmann::json::parse(R"({
    "cluster": "witmq",
    "node": {"id": "n1", "state": "member"},
    "nodes": [{"id": "n1", "state": "member", "client-address": "127.0.0.1:7410",
               "peer-address": "127.0.0.1:7412", "version": "0.1.0"}],
    "channels": [
      {"name": "orders", "leader": "n1", "epoch": 3, "replicas": ["n1", "n2", "n3"],
       "in-sync": ["n1", "n2"], "this-node-leads": true},
      {"name": "idle", "epoch": 0, "replicas": ["n2"], "in-sync": []}
    ],
    "replication-state": {"channels-led": {"orders": {"followers-lag": {"n2": 0, "n3": 17}}}}
  })");
  const std::string out = format_cluster(c);
  EXPECT_NE(out.find("cluster witmq: node n1 is member"), std::string::npos) << out;
  EXPECT_NE(out.find("in-sync n1,n2  lag n2=0,n3=17"), std::string::npos) << out;
  EXPECT_NE(out.find("idle"), std::string::npos) << out;
  EXPECT_NE(out.find("leader (none)"), std::string::npos) << out;
}

}  // namespace
}  // namespace witmq::cli
