// Any node serves any client (docs/CLUSTERING.md, "Forwarding"): real etcd and three real
// witmqd on 127.0.0.1, clients of the client library. An operation made through a node that does
// not lead the channel is relayed to the leader; receipts settle through any node; grants are
// checked at the entry node and only a node proving the cluster secret may act for another
// identity; a client with a server list keeps working when the leader is killed; leadership
// returns to a channel's preferred node when it comes back. Lease TTL 2 s; every wait bounded.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "auth/token.h"
#include "client/client.h"
#include "cluster/etcd_client.h"
#include "cluster/etcd_process.h"
#include "daemon/daemon_process.h"
#include "daemon/http_client.h"

namespace witmq::cluster {
namespace {

using daemon::testing::Daemon;
using daemon::testing::http_get;
using nlohmann::json;
using testing::Etcd;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::string_view kSecret = "forward-test-cluster-secret-0123456789";

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

Message text_message(std::string_view text) {
  Message m;
  m.data.assign(text.begin(), text.end());
  return m;
}

std::string text_of(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

class ForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WITMQ_REQUIRE_ETCD();
    etcd_ = std::make_unique<Etcd>();
  }

  std::vector<std::string> node_args(const std::string& id) {
    std::vector<std::string> args = {
        "--set", "cluster-node-id=" + id,
        "--set", "cluster-name=fwd",
        "--set", "cluster-etcd-endpoints=[\"" + etcd_->endpoint() + "\"]",
        "--set", "cluster-lease-ttl-seconds=2",
        "--set", "cluster-etcd-timeout-ms=500",
        "--set", "cluster-peer-token=" + std::string(kSecret)};
    args.insert(args.end(), extra_.begin(), extra_.end());
    return args;
  }

  void start_nodes() {
    for (const char* id : {"n1", "n2", "n3"}) {
      nodes_[id] = std::make_unique<Daemon>(node_args(id));
      ASSERT_NE(nodes_[id]->port(), 0) << id << " did not start";
    }
    ASSERT_TRUE(wait_until([&] { return view("n1")["nodes"].size() == 3; }, 15s))
        << daemon::testing::http_request(nodes_["n1"]->http_port(), "GET", "/v1/cluster", "",
                                         http_headers_)
        << "\n"
        << nodes_["n1"]->log();
  }

  json view(const std::string& node) {
    auto r = daemon::testing::http_request(nodes_[node]->http_port(), "GET", "/v1/cluster", "",
                                           http_headers_);
    return r.status == 200 ? r.json : json::object();
  }

  // Every node's view, for failure messages.
  std::string views() {
    std::string out;
    for (auto& [id, d] : nodes_) {
      if (d) out += id + ": " + view(id).dump() + "\n";
    }
    return out;
  }

  // The channel's leader and epoch as `from` sees them; "" when none.
  std::pair<std::string, uint64_t> leader(const std::string& from, const std::string& channel) {
    json v = view(from);
    for (const auto& c : v["channels"]) {
      if (c["name"] == channel && !c["leader"].is_null()) {
        return {c["leader"].get<std::string>(), c["epoch"].get<uint64_t>()};
      }
    }
    return {"", 0};
  }

  // Waits until every live node agrees on the channel's leader; returns it.
  std::string agreed_leader(const std::string& channel, std::chrono::milliseconds timeout = 15s) {
    std::string agreed;
    wait_until(
        [&] {
          std::set<std::string> seen;
          for (auto& [id, d] : nodes_) {
            if (d) seen.insert(leader(id, channel).first);
          }
          agreed = seen.size() == 1 ? *seen.begin() : "";
          return !agreed.empty();
        },
        timeout);
    return agreed;
  }

  std::unique_ptr<client::Client> connect(const std::string& node, std::string name = "",
                                          std::optional<std::string> token = std::nullopt) {
    client::Options o;
    o.request_timeout = 20s;
    o.token = std::move(token);
    auto c = client::Client::connect("127.0.0.1", nodes_[node]->port(), std::move(name), o);
    EXPECT_TRUE(c.ok()) << node << ": " << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(*c) : nullptr;
  }

  uint64_t forwarded(const std::string& node, std::string_view op) {
    auto m = daemon::testing::http_request(nodes_[node]->http_port(), "GET", "/metrics", "",
                                           http_headers_)
                 .body;
    const std::string key = fmt::format("witmq_cluster_forwarded_total{{op=\"{}\"}} ", op);
    auto at = m.find(key);
    return at == std::string::npos ? 0 : std::stoull(m.substr(at + key.size()));
  }

  // The two nodes that do not lead `channel`.
  std::vector<std::string> others(const std::string& leader) {
    std::vector<std::string> out;
    for (auto& [id, d] : nodes_) {
      if (id != leader) out.push_back(id);
    }
    return out;
  }

  std::unique_ptr<Etcd> etcd_;
  std::map<std::string, std::unique_ptr<Daemon>> nodes_;
  std::vector<std::string> extra_;
  // Sent with HTTP requests (a bearer token when anonymous access is off).
  std::vector<std::pair<std::string, std::string>> http_headers_;
};

TEST_F(ForwardTest, SendThroughOneNodeReceiveThroughAnotherSettleThroughAThird) {
  start_nodes();
  // Declared through n1: a new channel is placed first, then declared on its leader.
  auto admin = connect("n1");
  ASSERT_TRUE(admin->declare_channel("orders", {{"lease-ms", "30000"}}).ok())
      << admin->error_trace();
  const std::string lead = agreed_leader("orders");
  ASSERT_FALSE(lead.empty()) << views();
  const auto other = others(lead);
  const std::string a = other[0], c = other[1], b = lead;

  auto producer = connect(a);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        producer->send("orders", std::vector<Message>{text_message(fmt::format("m{}", i))}).ok())
        << producer->error_trace();
  }
  auto consumer = connect(c, "worker");
  std::vector<Message> got;
  const auto deadline = Clock::now() + 10s;
  while (got.size() < 5 && Clock::now() < deadline) {
    auto r = consumer->subscribe_try_receive("orders", 500);
    ASSERT_TRUE(r.ok()) << r.error().message;
    if (*r) got.insert(got.end(), (*r)->begin(), (*r)->end());
  }
  ASSERT_EQ(got.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(text_of(got[i]), fmt::format("m{}", i));
  // The receipts name the channel, so that any node can route them.
  const std::string receipt = *find_metadata(got[0], "witmq-receipt");
  EXPECT_TRUE(receipt.starts_with("r2.")) << receipt;
  EXPECT_TRUE(receipt.ends_with(".orders")) << receipt;

  // Settled through the leader, and through the node that sent (forwarded again).
  auto settler_b = connect(b);
  auto settler_a = connect(a);
  for (size_t i = 0; i < got.size(); ++i) {
    auto& settler = i % 2 == 0 ? settler_b : settler_a;
    auto st = settler->complete_message(got[i]);
    EXPECT_TRUE(st.ok()) << i << ": " << st.error().message;
  }
  // A spent receipt is stale wherever it is presented.
  auto again = settler_a->complete_message(got[1]);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kStaleReceipt) << again.error().message;
  auto none = consumer->subscribe_try_receive("orders", 300);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(*none) << "settled messages were delivered again";
  auto stats = settler_a->channel_stats("orders");
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_EQ(stats->completes_total, 5u);
  EXPECT_EQ(stats->depth, 0u);

  EXPECT_GE(forwarded(a, "send"), 5u);
  EXPECT_GE(forwarded(c, "subscribe-try-receive"), 1u);
  EXPECT_GE(forwarded(a, "complete-message"), 2u);
  EXPECT_EQ(forwarded(b, "send"), 0u) << "the leader forwarded";
}

TEST_F(ForwardTest, GrantsAreCheckedAtTheEntryNodeAndOnlyTheClusterMayActForOthers) {
  const std::string producer_token = "producer-token-0123456789abcdef";
  const std::string admin_token = "admin-token-0123456789abcdef012";
  json identities = json::array({{{"name", "producer"},
                                  {"token-sha256", auth::to_hex(auth::sha256(producer_token))},
                                  {"send", {"orders"}}},
                                 {{"name", "admin"},
                                  {"token-sha256", auth::to_hex(auth::sha256(admin_token))},
                                  {"send", {"*"}},
                                  {"receive", {"*"}},
                                  {"manage", {"*"}},
                                  {"monitor", true}}});
  extra_ = {"--set", R"(anonymous={"enabled": false})", "--set", "identities=" + identities.dump()};
  http_headers_ = {{"Authorization", "Bearer " + admin_token}};
  start_nodes();
  auto admin = connect("n1", "", admin_token);
  ASSERT_TRUE(admin->declare_channel("orders", {}).ok()) << admin->error_trace();
  const std::string lead = agreed_leader("orders");
  ASSERT_FALSE(lead.empty());
  const std::string entry = others(lead)[0];

  auto producer = connect(entry, "", producer_token);
  ASSERT_TRUE(producer->send("orders", std::vector<Message>{text_message("ok")}).ok())
      << producer->error_trace();
  // No receive grant: refused at the entry node, never forwarded.
  const uint64_t before = forwarded(entry, "subscribe-try-receive");
  auto denied = producer->subscribe_try_receive("orders", 100);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.error().message.find("producer"), std::string::npos) << denied.error().message;
  EXPECT_EQ(forwarded(entry, "subscribe-try-receive"), before);
  auto purge = producer->purge("orders");
  ASSERT_FALSE(purge.ok());
  EXPECT_EQ(purge.error().code, ErrorCode::kPermissionDenied);

  // A client that claims to forward for 'admin' without the cluster's secret is refused at
  // connect; so is one that names an identity no node knows, even with the secret.
  client::Options o;
  o.token = std::string("witmq-forward\nadmin\n") + "not-the-cluster-secret-at-all";
  auto forged = client::Client::connect("127.0.0.1", nodes_[lead]->port(), "", o);
  ASSERT_FALSE(forged.ok());
  EXPECT_EQ(forged.error().code, ErrorCode::kPermissionDenied);
  EXPECT_NE(forged.error().message.find("cluster-peer-token"), std::string::npos)
      << forged.error().message;
  o.token = std::string("witmq-forward\nnobody\n") + std::string(kSecret);
  auto unknown = client::Client::connect("127.0.0.1", nodes_[lead]->port(), "", o);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kPermissionDenied);
  // With the secret, a node acts for the identity it names, within that identity's grants.
  o.token = std::string("witmq-forward\nproducer\n") + std::string(kSecret);
  auto node_for_producer = client::Client::connect("127.0.0.1", nodes_[lead]->port(), "", o);
  ASSERT_TRUE(node_for_producer.ok()) << node_for_producer.error().message;
  auto still_denied = (*node_for_producer)->subscribe_try_receive("orders", 100);
  ASSERT_FALSE(still_denied.ok());
  EXPECT_EQ(still_denied.error().code, ErrorCode::kPermissionDenied);

  // The admin receives through the third node what the producer sent.
  auto reader = connect(others(lead)[1], "", admin_token);
  auto got = reader->subscribe_try_receive("orders", 5'000);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_TRUE(*got);
  EXPECT_EQ(text_of((**got)[0]), "ok");
}

TEST_F(ForwardTest, AClientWithAServerListKeepsWorkingWhenTheLeaderIsKilled) {
  start_nodes();
  auto admin = connect("n1");
  ASSERT_TRUE(admin->declare_channel("jobs", {}).ok()) << admin->error_trace();
  const std::string lead = agreed_leader("jobs");
  ASSERT_FALSE(lead.empty());
  std::vector<client::Endpoint> servers{{"127.0.0.1", nodes_[lead]->port()}};
  for (const auto& id : others(lead)) servers.push_back({"127.0.0.1", nodes_[id]->port()});
  client::Options o;
  o.request_timeout = 20s;
  o.reconnect_timeout = 30s;
  auto c = client::Client::connect(servers, "app", o);
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE((*c)->send("jobs", std::vector<Message>{text_message("before")}).ok());
  const auto [old_leader, old_epoch] = leader("n1", "jobs");

  nodes_[lead]->stop(SIGKILL);
  nodes_[lead].reset();
  // Sends fail while the connection is lost and no leader exists; the client moves to another
  // node and works again once one leads. (What the killed leader held may be lost until
  // replication: nothing is asserted about "before".)
  const auto deadline = Clock::now() + 30s;
  bool sent = false;
  int attempts = 0;
  while (!sent && Clock::now() < deadline) {
    ++attempts;
    sent = (*c)->send("jobs", std::vector<Message>{text_message("after")}).ok();
    if (!sent) std::this_thread::sleep_for(200ms);
  }
  ASSERT_TRUE(sent) << (*c)->error_trace();
  EXPECT_GE((*c)->reconnects(), 1u);
  EXPECT_NE((*c)->server().port, servers[0].port);
  const auto [new_leader, new_epoch] = leader(others(lead)[0], "jobs");
  EXPECT_NE(new_leader, lead);
  EXPECT_GT(new_epoch, old_epoch);
  std::vector<std::string> texts;
  const auto until = Clock::now() + 10s;
  while (Clock::now() < until) {
    auto r = (*c)->subscribe_try_receive("jobs", 300);
    ASSERT_TRUE(r.ok()) << r.error().message;
    if (!*r) break;
    for (const auto& m : **r) {
      texts.push_back(text_of(m));
      ASSERT_TRUE((*c)->complete_message(m).ok()) << (*c)->error_trace();
    }
  }
  EXPECT_NE(std::find(texts.begin(), texts.end(), "after"), texts.end());
  std::printf("sends after the kill: %d attempts before one succeeded\n", attempts);
}

TEST_F(ForwardTest, LeadershipMovesBackToAReturningNode) {
  start_nodes();
  auto admin = connect("n1");
  ASSERT_TRUE(admin->declare_channel("home", {}).ok()) << admin->error_trace();
  const std::string preferred = agreed_leader("home");
  ASSERT_FALSE(preferred.empty());
  json placement;
  json seen = view("n1");
  for (const auto& ch : seen["channels"]) {
    if (ch["name"] == "home") placement = ch;
  }
  ASSERT_EQ(placement["replicas"][0], preferred) << placement.dump();
  const uint64_t first_epoch = placement["epoch"];

  const std::string watcher = others(preferred)[0];
  nodes_[preferred]->stop(SIGTERM);  // revokes its lease: the next replica leads at once
  std::map<uint64_t, std::string> epochs;
  auto record = [&] {
    const auto [who, epoch] = leader(watcher, "home");
    if (who.empty()) return;
    auto [it, inserted] = epochs.emplace(epoch, who);
    EXPECT_EQ(it->second, who) << "epoch " << epoch << " seen led by two nodes";
  };
  ASSERT_TRUE(wait_until(
      [&] {
        record();
        const auto [who, epoch] = leader(watcher, "home");
        return !who.empty() && who != preferred;
      },
      15s))
      << view(watcher).dump();
  const auto interim = leader(watcher, "home");
  EXPECT_GT(interim.second, first_epoch);

  nodes_[preferred]->start();
  ASSERT_TRUE(wait_until(
      [&] {
        record();
        return leader(watcher, "home").first == preferred;
      },
      20s))
      << view(watcher).dump();
  const auto back = leader(watcher, "home");
  EXPECT_GT(back.second, interim.second);
  // The node that handed it back counts the handover.
  auto metrics = http_get(nodes_[interim.first]->http_port(), "/metrics").body;
  EXPECT_NE(metrics.find("\nwitmq_cluster_leader_handovers_total 1\n"), std::string::npos)
      << metrics.substr(0, 200);
  // And the channel is served through any node again.
  auto c = connect(interim.first);
  EXPECT_TRUE(c->send("home", std::vector<Message>{text_message("x")}).ok()) << c->error_trace();
}

TEST_F(ForwardTest, NoLeaderInTimeFailsWithUnavailableNamingTheChannel) {
  extra_ = {"--set", "cluster-forward-timeout-ms=500"};
  start_nodes();
  // A channel of one replica, declared on n1 alone (HTTP is served locally) and placed from
  // there; once its replica is dead it has no leader.
  auto r = daemon::testing::http_request(nodes_["n1"]->http_port(), "PUT", "/v1/channels/lonely",
                                         R"({"replicas": 1})");
  ASSERT_EQ(r.status, 201u) << r;
  const std::string lead = agreed_leader("lonely");
  ASSERT_FALSE(lead.empty());
  const std::string entry = others(lead)[0];
  nodes_[lead]->stop(SIGKILL);
  nodes_[lead].reset();
  auto c = connect(entry);
  // Once the dead leader's lease is gone the channel has no live replica.
  ASSERT_TRUE(wait_until([&] { return leader(entry, "lonely").first.empty(); }, 15s));
  const auto start = Clock::now();
  auto st = c->send("lonely", std::vector<Message>{text_message("x")});
  const auto took = Clock::now() - start;
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(st.error().message.find("lonely"), std::string::npos) << st.error().message;
  EXPECT_LT(took, 5s) << "not prompt";
}

// A receipt names any channel its bearer likes. Settling one must never place a channel (keys in
// etcd for any name, past every grant and limit): a receipt for a channel the cluster has not
// placed gets what a bad receipt gets, through every node, and etcd holds no more keys after.
// The same for the admin requests that only read or change an existing channel.
TEST_F(ForwardTest, ForgedReceiptsPlaceNothing) {
  start_nodes();
  auto admin = connect("n1");
  ASSERT_TRUE(admin->declare_channel("real", {}).ok()) << admin->error_trace();
  ASSERT_FALSE(agreed_leader("real").empty()) << views();
  EtcdClient etcd(EtcdOptions{{etcd_->endpoint()}, std::chrono::milliseconds(2000)});
  auto keys = [&] {
    auto r = etcd.range_prefix("/");
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? r->kvs.size() : 0;
  };
  const size_t before = keys();
  std::map<std::string, std::unique_ptr<client::Client>> clients;
  for (const char* id : {"n1", "n2", "n3"}) clients[id] = connect(id);
  for (int i = 0; i < 30; ++i) {
    const std::string node = fmt::format("n{}", 1 + i % 3);
    const std::string receipt = fmt::format("r2.7.1.{}.00000000000000aa.forged-{}", i, i);
    Message m = text_message("x");
    m.metadata = Metadata{{"witmq-receipt", receipt}};
    auto st = i % 2 == 0 ? clients[node]->complete_message(m) : clients[node]->abandon_message(m);
    ASSERT_FALSE(st.ok()) << receipt;
    EXPECT_EQ(st.error().code, ErrorCode::kStaleReceipt) << st.error().message;
    EXPECT_EQ(st.error().message, fmt::format("receipt {}: its channel no longer exists", receipt));
    // Nor do admin requests other than a declare place the channel they name.
    auto stats = clients[node]->channel_stats(fmt::format("ghost-{}", i));
    ASSERT_FALSE(stats.ok());
    EXPECT_EQ(stats.error().code, ErrorCode::kNotFound) << stats.error().message;
  }
  EXPECT_EQ(keys(), before) << "forged receipts wrote keys in etcd";
  for (const char* id : {"n1", "n2", "n3"}) {
    for (const auto& c : view(id)["channels"]) {
      const std::string name = c["name"];
      EXPECT_FALSE(name.starts_with("forged-") || name.starts_with("ghost-"))
          << id << ": " << c.dump();
    }
  }
  // The real channel still settles through any node.
  ASSERT_TRUE(admin->send("real", std::vector<Message>{text_message("y")}).ok());
  auto got = clients["n2"]->subscribe_try_receive("real", 5'000);
  ASSERT_TRUE(got.ok() && *got) << (got.ok() ? "nothing" : got.error().message);
  auto st = clients["n3"]->complete_message((**got)[0]);
  EXPECT_TRUE(st.ok()) << st.error().message;
}

// Settling takes the receive grant on the receipt's channel, and an identity without it learns
// nothing: a receipt for an existing channel it may not read from gets the same answer as one
// for a channel that does not exist.
TEST_F(ForwardTest, ReceiptsRevealNoChannelToAnIdentityWithoutTheGrant) {
  const std::string reader_token = "reader-token-0123456789abcdef01";
  const std::string admin_token = "admin-token-0123456789abcdef012";
  json identities = json::array({{{"name", "reader"},
                                  {"token-sha256", auth::to_hex(auth::sha256(reader_token))},
                                  {"receive", {"public"}}},
                                 {{"name", "admin"},
                                  {"token-sha256", auth::to_hex(auth::sha256(admin_token))},
                                  {"send", {"*"}},
                                  {"receive", {"*"}},
                                  {"manage", {"*"}},
                                  {"monitor", true}}});
  extra_ = {"--set", R"(anonymous={"enabled": false})", "--set", "identities=" + identities.dump()};
  http_headers_ = {{"Authorization", "Bearer " + admin_token}};
  start_nodes();
  auto admin = connect("n1", "", admin_token);
  ASSERT_TRUE(admin->declare_channel("secret", {{"lease-ms", "30000"}}).ok())
      << admin->error_trace();
  const std::string lead = agreed_leader("secret");
  ASSERT_FALSE(lead.empty()) << views();
  ASSERT_TRUE(admin->send("secret", std::vector<Message>{text_message("s")}).ok());
  auto owner = connect(others(lead)[0], "owner", admin_token);
  auto got = owner->subscribe_try_receive("secret", 5'000);
  ASSERT_TRUE(got.ok() && *got) << (got.ok() ? "nothing" : got.error().message);
  const std::string real = *find_metadata((**got)[0], "witmq-receipt");
  const std::string prefix = real.substr(0, real.size() - std::string_view("secret").size());
  // Through a node that leads the channel and through one that does not.
  for (const std::string& node : {lead, others(lead)[1]}) {
    auto reader = connect(node, "", reader_token);
    std::vector<std::string> answers;
    for (const std::string& receipt : {real, prefix + "nothere"}) {
      Message m = text_message("x");
      m.metadata = Metadata{{"witmq-receipt", receipt}};
      auto st = reader->complete_message(m);
      ASSERT_FALSE(st.ok()) << node << " " << receipt;
      EXPECT_EQ(st.error().code, ErrorCode::kStaleReceipt) << st.error().message;
      std::string text = st.error().message;
      const auto at = text.find(receipt);
      ASSERT_NE(at, std::string::npos) << text;
      answers.push_back(text.replace(at, receipt.size(), "<receipt>"));
    }
    EXPECT_EQ(answers[0], answers[1]) << node;
  }
  // The message was not settled by the reader's attempt: its owner still can.
  auto st = owner->complete_message((**got)[0]);
  EXPECT_TRUE(st.ok()) << st.error().message;
}

// A leader that stops answering (SIGSTOP) stalls no client of another node for longer than
// cluster-forward-timeout-ms: a forwarded request (connect, write and answer) fails with
// unavailable saying that its outcome is unknown, a waiting subscribe-receive ends the same way
// (the link pings a silent leader), the link is not reused, and once another node leads the
// channel the same client connection works again.
TEST_F(ForwardTest, AStoppedLeaderStallsForwardedRequestsNoLongerThanTheTimeout) {
  extra_ = {"--set", "cluster-forward-timeout-ms=1000"};
  start_nodes();
  auto admin = connect("n1");
  ASSERT_TRUE(admin->declare_channel("stall", {}).ok()) << admin->error_trace();
  const std::string lead = agreed_leader("stall");
  ASSERT_FALSE(lead.empty()) << views();
  const std::string entry = others(lead)[0];
  auto producer = connect(entry);
  ASSERT_TRUE(producer->send("stall", std::vector<Message>{text_message("warm")}).ok())
      << producer->error_trace();
  auto waiter = connect(entry, "waiter");
  ASSERT_TRUE(waiter->subscribe_try_receive("stall", 0).ok());  // its link is open
  auto patient = connect(entry, "patient");
  ASSERT_TRUE(patient->subscribe_try_receive("stall", 0).ok());

  nodes_[lead]->signal(SIGSTOP);
  struct Resumed {
    Daemon* d;
    ~Resumed() { d->signal(SIGCONT); }
  } resume{nodes_[lead].get()};
  // A waiting receive on an empty channel; the first message went to the first receive above.
  std::optional<Error> receive_error;
  Clock::duration receive_took{};
  std::promise<void> received, tried;
  auto receive_done = received.get_future();
  auto try_done = tried.get_future();
  std::thread receive([&] {
    const auto start = Clock::now();
    auto r = waiter->subscribe_receive("stall");
    receive_took = Clock::now() - start;
    if (!r.ok()) receive_error = r.error();
    received.set_value();
  });
  // A try-receive that may wait a minute is not held for that minute by a stopped leader.
  std::optional<Error> try_error;
  Clock::duration try_took{};
  std::thread try_receive([&] {
    const auto start = Clock::now();
    auto r = patient->subscribe_try_receive("stall", 60'000);
    try_took = Clock::now() - start;
    if (!r.ok()) try_error = r.error();
    tried.set_value();
  });
  const auto start = Clock::now();
  auto st = producer->send("stall", std::vector<Message>{text_message("lost?")});
  const auto took = Clock::now() - start;
  // Without a bound the receive would wait for SIGCONT: give it that after 15 s.
  if (receive_done.wait_for(15s) != std::future_status::ready ||
      try_done.wait_for(1s) != std::future_status::ready) {
    nodes_[lead]->signal(SIGCONT);
  }
  receive.join();
  try_receive.join();
  ASSERT_FALSE(st.ok()) << "a stopped leader acknowledged a send";
  EXPECT_EQ(st.error().code, ErrorCode::kUnavailable) << st.error().message;
  EXPECT_NE(st.error().message.find("outcome is unknown"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("stall"), std::string::npos) << st.error().message;
  EXPECT_LT(took, 4s) << "the forwarded send waited for the stopped leader";
  ASSERT_TRUE(receive_error.has_value()) << "a stopped leader delivered";
  EXPECT_EQ(receive_error->code, ErrorCode::kUnavailable) << receive_error->message;
  EXPECT_LT(receive_took, 6s) << "the forwarded receive waited for the stopped leader";
  ASSERT_TRUE(try_error.has_value()) << "a stopped leader delivered";
  EXPECT_EQ(try_error->code, ErrorCode::kUnavailable) << try_error->message;
  EXPECT_LT(try_took, 6s) << "the forwarded try-receive waited for the stopped leader";

  // Once another node leads (the stopped one's lease expired), the same connections work.
  bool sent = false;
  const auto deadline = Clock::now() + 20s;
  while (!sent && Clock::now() < deadline) {
    sent = producer->send("stall", std::vector<Message>{text_message("after")}).ok();
    if (!sent) std::this_thread::sleep_for(200ms);
  }
  ASSERT_TRUE(sent) << producer->error_trace() << "\n" << views();
  EXPECT_NE(leader(entry, "stall").first, lead);
  auto got = waiter->subscribe_try_receive("stall", 5'000);
  ASSERT_TRUE(got.ok()) << got.error().message;
}

}  // namespace
}  // namespace witmq::cluster
