// The front doors beyond plain protocol operations, through a node that does not lead the channel
// (docs/CLUSTERING.md, "Forwarding"): real etcd and three real witmqd on 127.0.0.1.
//
// Request-reply (docs/PROTOCOL.md, section 16): a request made through a node that does not lead
// its channel is served by the leader, where the requester's inbox then lives; the inbox's address
// names that node, so a reply given to any node is taken there. Replies to inboxes no node holds
// are dropped and counted; a request nobody answers times out (code 13); nothing hangs when the
// responder's node dies.
//
// HTTP (docs/HTTP.md, "In a cluster"): publishing and the admin API about one channel are relayed
// to its leader, with the caller's grants checked at the node it reached and again on the leader.
//
// Lease TTL 2 s; every wait bounded.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <functional>
#include <iostream>
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
#include "cluster/etcd_process.h"
#include "daemon/daemon_process.h"
#include "daemon/http_client.h"

namespace witmq::cluster {
namespace {

using daemon::testing::Daemon;
using nlohmann::json;
using testing::Etcd;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::string_view kSecret = "request-reply-test-cluster-secret-0123";

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

class RequestReplyClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WITMQ_REQUIRE_ETCD();
    etcd_ = std::make_unique<Etcd>();
  }

  void start_nodes() {
    for (const char* id : {"n1", "n2", "n3"}) {
      std::vector<std::string> args = {
          "--set", std::string("cluster-node-id=") + id,
          "--set", "cluster-name=rr",
          "--set", "cluster-etcd-endpoints=[\"" + etcd_->endpoint() + "\"]",
          "--set", "cluster-lease-ttl-seconds=2",
          "--set", "cluster-etcd-timeout-ms=500",
          "--set", "cluster-forward-timeout-ms=1000",
          "--set", "cluster-peer-token=" + std::string(kSecret)};
      args.insert(args.end(), extra_.begin(), extra_.end());
      nodes_[id] = std::make_unique<Daemon>(args);
      ASSERT_NE(nodes_[id]->port(), 0) << id << " did not start";
    }
    ASSERT_TRUE(wait_until([&] { return view("n1")["nodes"].size() == 3; }, 15s))
        << nodes_["n1"]->log();
  }

  json view(const std::string& node) {
    auto r = http(node, "GET", "/v1/cluster");
    return r.status == 200 ? r.json : json::object();
  }

  std::string leader(const std::string& from, const std::string& channel) {
    const json v = view(from);
    for (const auto& c : v["channels"]) {
      if (c["name"] == channel && !c["leader"].is_null()) return c["leader"].get<std::string>();
    }
    return "";
  }

  // The leader of `channel` as `from` sees it when it is the channel's preferred leader (the
  // first of its replicas), "" otherwise: another leader hands the channel back to the preferred
  // one once that node has been registered for a lease TTL, so its leadership does not last.
  std::string settled_leader(const std::string& from, const std::string& channel) {
    const json v = view(from);
    for (const auto& c : v["channels"]) {
      if (c["name"] != channel || !c["leader"].is_string()) continue;
      const json& replicas = c["replicas"];
      const bool preferred =
          !replicas.is_array() || replicas.empty() || replicas.front() == c["leader"];
      return preferred ? c["leader"].get<std::string>() : "";
    }
    return "";
  }

  // Declares `channel` through n1 and waits until every node agrees on its leader, and that
  // leader is the preferred one (so it stays, unless a node fails): {leader, the two others}.
  std::vector<std::string> declare(const std::string& channel) {
    auto admin = connect("n1");
    EXPECT_TRUE(admin->declare_channel(channel, {}).ok()) << admin->error_trace();
    std::string agreed;
    wait_until(
        [&] {
          std::set<std::string> seen;
          for (auto& [id, d] : nodes_) {
            if (d) seen.insert(settled_leader(id, channel));
          }
          agreed = seen.size() == 1 ? *seen.begin() : "";
          return !agreed.empty();
        },
        15s);
    if (agreed.empty()) {
      for (auto& [id, d] : nodes_) {
        if (d)
          ADD_FAILURE() << "no leader of " << channel << " agreed; " << id << " sees "
                        << leader(id, channel) << ": " << http(id, "GET", "/v1/cluster");
      }
    }
    std::vector<std::string> out{agreed};
    for (auto& [id, d] : nodes_) {
      if (id != agreed) out.push_back(id);
    }
    return out;
  }

  daemon::testing::HttpReply http(const std::string& node, const std::string& method,
                                  const std::string& target, const std::string& body = "",
                                  std::optional<std::string> token = std::nullopt) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (const auto& t = token ? token : http_token_)
      headers.emplace_back("Authorization", "Bearer " + *t);
    return daemon::testing::http_request(nodes_[node]->http_port(), method, target, body, headers);
  }

  std::unique_ptr<client::Client> connect(const std::string& node, std::string name = "",
                                          std::optional<std::string> token = std::nullopt) {
    client::Options o;
    o.request_timeout = 20s;
    o.token = token ? token : http_token_;
    auto c = client::Client::connect("127.0.0.1", nodes_[node]->port(), std::move(name), o);
    EXPECT_TRUE(c.ok()) << node << ": " << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(*c) : nullptr;
  }

  uint64_t metric(const std::string& node, const std::string& key) {
    auto m = http(node, "GET", "/metrics").body;
    // A sample's line, not the HELP or TYPE line that names the family.
    auto at = m.find("\n" + key + " ");
    return at == std::string::npos ? 0 : std::stoull(m.substr(at + key.size() + 2));
  }
  uint64_t forwarded(const std::string& node, std::string_view op) {
    return metric(node, fmt::format("witmq_cluster_forwarded_total{{op=\"{}\"}}", op));
  }
  uint64_t dropped(const std::string& node) {
    return metric(node, "witmq_broker_replies_dropped_total");
  }

  // The next request on `channel` through `responder` (waiting up to 10 s).
  Message next_request(client::Client& responder, const std::string& channel) {
    auto r = responder.subscribe_try_receive(channel, 10'000);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    if (!r.ok() || !*r || (*r)->empty()) {
      ADD_FAILURE() << "no request arrived";
      return Message{};
    }
    return (**r)[0];
  }

  // A node stopped with SIGSTOP until the value returned goes (SIGCONT then).
  struct Stopped {
    Daemon* d;
    ~Stopped() { d->signal(SIGCONT); }
  };
  [[nodiscard]] Stopped stop(const std::string& node) {
    nodes_[node]->signal(SIGSTOP);
    return Stopped{nodes_[node].get()};
  }

  std::unique_ptr<Etcd> etcd_;
  std::map<std::string, std::unique_ptr<Daemon>> nodes_;
  std::vector<std::string> extra_;
  // The token HTTP requests and connections carry when none is given (anonymous access off).
  std::optional<std::string> http_token_;
};

TEST_F(RequestReplyClusterTest, RequesterResponderAndLeaderOnThreeNodes) {
  start_nodes();
  const auto nodes = declare("svc");
  ASSERT_EQ(nodes.size(), 3u);
  const std::string b = nodes[0], a = nodes[1], c = nodes[2];

  auto responder = connect(c, "responder");
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::thread serve([&] {
    const auto until = Clock::now() + 60s;
    while (!stop && Clock::now() < until) {
      auto r = responder->subscribe_try_receive("svc", 200);
      if (!r.ok() || !*r) continue;
      for (const Message& request : **r) {
        const std::string* to = find_metadata(request, "witmq-reply-to");
        // The inbox names the node that holds it: the channel's leader.
        if (!to || !to->starts_with(b + "/")) ADD_FAILURE() << "reply-to " << (to ? *to : "none");
        if (responder->reply(request, text_message("re:" + text_of(request))).ok()) ++answered;
        (void)responder->complete_message(request);
      }
    }
  });
  auto requester = connect(a, "requester");
  for (int i = 0; i < 5; ++i) {
    auto replies = requester->request("svc", text_message(fmt::format("q{}", i)), 10s);
    ASSERT_TRUE(replies.ok()) << replies.error().message;
    ASSERT_EQ(replies->size(), 1u);
    EXPECT_EQ(text_of((*replies)[0]), fmt::format("re:q{}", i));
  }
  stop = true;
  serve.join();
  EXPECT_EQ(answered.load(), 5);
  EXPECT_GE(forwarded(a, "request"), 5u);
  EXPECT_GE(forwarded(c, "reply"), 5u);
  EXPECT_EQ(forwarded(b, "request"), 0u) << "the leader forwarded";
  EXPECT_EQ(dropped(b), 0u);
}

TEST_F(RequestReplyClusterTest, ARequestNobodyAnswersTimesOutWithCode13) {
  start_nodes();
  const auto nodes = declare("quiet");
  auto requester = connect(nodes[1]);
  const auto start = Clock::now();
  auto replies = requester->request("quiet", text_message("anyone?"), 700ms);
  const auto took = Clock::now() - start;
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.error().code, ErrorCode::kTimeout) << replies.error().message;
  EXPECT_EQ(static_cast<int>(replies.error().code), 13);
  EXPECT_NE(replies.error().message.find("quiet"), std::string::npos) << replies.error().message;
  EXPECT_LT(took, 5s);
}

TEST_F(RequestReplyClusterTest, TheRespondersNodeKilledMidRequestEndsInATimeout) {
  start_nodes();
  const auto nodes = declare("fragile");
  const std::string b = nodes[0], a = nodes[1], c = nodes[2];
  auto responder = connect(c, "responder");
  auto requester = connect(a, "requester");
  std::optional<Result<std::vector<Message>>> result;
  Clock::duration took{};
  std::thread ask([&] {
    const auto start = Clock::now();
    result = requester->request("fragile", text_message("hold on"), 3s);
    took = Clock::now() - start;
  });
  // The responder holds the request; its node dies before it answers.
  const Message request = next_request(*responder, "fragile");
  EXPECT_EQ(text_of(request), "hold on");
  nodes_[c]->stop(SIGKILL);
  nodes_[c].reset();
  ask.join();
  ASSERT_TRUE(result.has_value());
  ASSERT_FALSE(result->ok()) << "a reply came from a dead node";
  EXPECT_EQ(result->error().code, ErrorCode::kTimeout) << result->error().message;
  EXPECT_LT(took, 8s);
  // The requester goes on: another responder, on the leader this time, answers the next one.
  auto other = connect(b, "other");
  std::thread serve([&] {
    // The dead node's connection gave its delivery back: "hold on" may come again first.
    const auto until = Clock::now() + 15s;
    bool done = false;
    while (!done && Clock::now() < until) {
      auto r = other->subscribe_try_receive("fragile", 500);
      if (!r.ok() || !*r) continue;
      for (const Message& m : **r) {
        if (text_of(m) == "again") done = other->reply(m, text_message("here")).ok();
      }
    }
  });
  auto replies = requester->request("fragile", text_message("again"), 10s);
  serve.join();
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  ASSERT_EQ(replies->size(), 1u);
  EXPECT_EQ(text_of((*replies)[0]), "here");
}

TEST_F(RequestReplyClusterTest, ForgedAndLateRepliesAreDroppedAndCountedWhereverTheyArrive) {
  start_nodes();
  const auto nodes = declare("rpc");
  const std::string b = nodes[0], a = nodes[1], c = nodes[2];
  auto responder = connect(c, "responder");
  auto forger = connect(a, "forger");
  auto forge = [&](const std::string& to, const std::string& correlation) {
    Message request;
    request.metadata.emplace();
    request.metadata->emplace_back("witmq-reply-to", to);
    request.metadata->emplace_back("witmq-correlation-id", correlation);
    return forger->reply(request, text_message("forged"));
  };
  // Addresses naming a node that does not exist, another live node, this node, and none at all:
  // every one is answered reply-ok and dropped where it ends, never refused (a reply tells the
  // replier nothing about others).
  const uint64_t dropped_a = dropped(a), dropped_b = dropped(b);
  EXPECT_TRUE(forge("nobody/0123456789abcdef0123456789abcdef", "0123456789abcdef").ok());
  EXPECT_TRUE(forge(b + "/0123456789abcdef0123456789abcdef", "0123456789abcdef").ok());
  EXPECT_TRUE(forge(a + "/0123456789abcdef0123456789abcdef", "0123456789abcdef").ok());
  EXPECT_TRUE(forge("0123456789abcdef0123456789abcdef", "0123456789abcdef").ok());
  EXPECT_TRUE(forge("/", "x").ok());
  EXPECT_EQ(dropped(a), dropped_a + 4) << "a reply to no known node is dropped where it arrived";
  EXPECT_EQ(dropped(b), dropped_b + 1) << "a reply naming node " << b << " was not taken there";
  EXPECT_GE(forwarded(a, "reply"), 1u);

  // A forged correlation id next to a real inbox answers nothing; the real reply still does.
  auto requester = connect(a, "requester");
  std::optional<Result<std::vector<Message>>> result;
  std::thread ask([&] { result = requester->request("rpc", text_message("real"), 10s); });
  const Message request = next_request(*responder, "rpc");
  const std::string to = *find_metadata(request, "witmq-reply-to");
  EXPECT_TRUE(to.starts_with(b + "/")) << to;
  EXPECT_TRUE(forge(to, "ffffffffffffffff").ok());
  // A reply as big as a message may be crosses the link whole.
  const std::string big(1 << 20, 'r');
  ASSERT_TRUE(responder->reply(request, text_message(big)).ok()) << responder->error_trace();
  ask.join();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->error().message;
  ASSERT_EQ((*result)->size(), 1u);
  EXPECT_EQ((**result)[0].data.size(), big.size());

  // A reply to a requester that left: dropped on the inbox's node, reply-ok to the responder.
  std::thread ask2([&] { (void)requester->request("rpc", text_message("leaving"), 10s); });
  const Message late = next_request(*responder, "rpc");
  requester->close();
  ask2.join();
  requester.reset();
  const uint64_t before = dropped(b);
  // The inbox goes with the requester's connection on its node, and then on the leader.
  ASSERT_TRUE(wait_until(
      [&] {
        const uint64_t was = dropped(b);
        EXPECT_TRUE(responder->reply(late, text_message("too late")).ok());
        return dropped(b) > was;
      },
      10s));
  EXPECT_GT(dropped(b), before);
}

TEST_F(RequestReplyClusterTest, AReplyToAStoppedNodeIsDroppedWithinTheForwardTimeout) {
  start_nodes();
  // The requester's inbox lives on the node that leads the channel when the request is served.
  // declare() waits for the preferred leader, but with a 2 s lease on a loaded machine a leader
  // may still lose its lease before the request, and the channel then moves to the responder's
  // or the requester's node: the reply is delivered, not dropped, and there is no third node to
  // stop. The inbox's node is read from the request itself; the scenario is set up again on a
  // fresh channel (at most 3 times) until the inbox names the node that is neither the
  // responder's nor the requester's.
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string channel = fmt::format("stuck{}", attempt);
    const auto nodes = declare(channel);
    const std::string b = nodes[0], a = nodes[1], c = nodes[2];
    auto responder = connect(c, "responder");
    auto requester = connect(a, "requester");
    std::optional<Result<std::vector<Message>>> result;
    Clock::duration asked{};
    std::thread ask([&] {
      const auto start = Clock::now();
      result = requester->request(channel, text_message("q"), 30s);
      asked = Clock::now() - start;
    });
    const Message request = next_request(*responder, channel);
    const std::string* to = find_metadata(request, "witmq-reply-to");
    if (!to || !to->starts_with(b + "/")) {
      // The channel moved before the request was served: answered and set up again.
      std::cout << "attempt " << attempt << ": the inbox is " << (to ? *to : "none") << ", not on "
                << b << " (its leader moved); again\n";
      if (to) {
        EXPECT_TRUE(responder->reply(request, text_message("a")).ok());
      }
      ask.join();
      if (!to) return;  // next_request() reported the failure
      continue;
    }
    const Stopped stopped = stop(b);
    // The inbox's node never answers: the reply is given up within the forward timeout (1 s
    // here) and counted as dropped; the requester's node gives up on the leader likewise.
    const uint64_t before = dropped(c);
    const auto start = Clock::now();
    auto st = responder->reply(request, text_message("a"));
    const auto took = Clock::now() - start;
    EXPECT_TRUE(st.ok()) << st.error().message;
    EXPECT_LT(took, 5s);
    EXPECT_EQ(dropped(c), before + 1);
    ask.join();
    ASSERT_TRUE(result.has_value());
    if (result->ok()) {
      ADD_FAILURE() << "a reply came from the stopped node " << b;
    } else {
      EXPECT_EQ(result->error().code, ErrorCode::kUnavailable) << result->error().message;
    }
    EXPECT_LT(asked, 10s) << "the requester waited for its 30 s timeout on a stopped leader";
    if (HasFailure()) {
      for (const std::string& id : {a, c})
        std::cout << "--- " << id << "'s log:\n" << nodes_[id]->log();
    }
    return;
  }
  FAIL() << "in 3 attempts the inbox never stayed on the node that led the channel when it was "
            "declared";
}

using HttpForwardTest = RequestReplyClusterTest;

TEST_F(HttpForwardTest, PublishAndAdminThroughANodeThatDoesNotLeadActOnTheLeader) {
  start_nodes();
  const auto nodes = declare("orders");
  const std::string b = nodes[0], a = nodes[1], c = nodes[2];
  // Published through a node that does not lead the channel: stored by the leader.
  for (int i = 0; i < 3; ++i) {
    auto r = http(a, "POST", "/v1/channels/orders/messages", fmt::format("m{}", i));
    ASSERT_EQ(r.status, 201u) << r;
  }
  EXPECT_GE(forwarded(a, "send"), 3u);
  auto consumer = connect(b, "worker");
  auto got = consumer->subscribe_try_receive("orders", 5'000);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_TRUE(*got);
  EXPECT_EQ(text_of((**got)[0]), "m0");
  // Stats and browse through the third node are the leader's.
  auto stats = http(c, "GET", "/v1/channels/orders");
  ASSERT_EQ(stats.status, 200u) << stats;
  EXPECT_EQ(stats.json["sends-total"], 3) << stats;
  EXPECT_EQ(stats.json["in-flight"], (**got).size()) << stats;
  auto page = http(c, "GET", "/v1/channels/orders/messages");
  ASSERT_EQ(page.status, 200u) << page;
  EXPECT_NE(page.body.find("m2"), std::string::npos) << page;
  // Purge through a node that does not lead it empties the leader's channel.
  for (const Message& m : **got) ASSERT_TRUE(consumer->complete_message(m).ok());
  const uint64_t left = 3 - (**got).size();
  ASSERT_EQ(http(a, "POST", "/v1/channels/orders/messages", "m3").status, 201u);
  auto purged = http(a, "POST", "/v1/channels/orders/purge", "{}");
  ASSERT_EQ(purged.status, 200u) << purged;
  EXPECT_EQ(purged.json["purged"], left + 1) << purged;
  auto after = consumer->channel_stats("orders");
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after->depth, 0u);
  // A placed channel's settings changed, and the channel deleted, through a node that does not
  // lead it.
  const std::string other = declare("fresh")[1];
  auto changed = http(other, "PUT", "/v1/channels/fresh", R"({"lease-ms": 12345})");
  ASSERT_EQ(changed.status, 200u) << changed << " (it existed on its leader)";
  EXPECT_EQ(changed.json["settings"]["lease-ms"], 12345) << changed;
  const std::string fresh_leader = leader(other, "fresh");
  auto on_leader = http(fresh_leader, "GET", "/v1/channels/fresh");
  ASSERT_EQ(on_leader.status, 200u) << on_leader;
  EXPECT_EQ(on_leader.json["settings"]["lease-ms"], 12345) << on_leader;
  auto deleted = http(other, "DELETE", "/v1/channels/fresh");
  ASSERT_EQ(deleted.status, 200u) << deleted;
  auto gone = connect(fresh_leader)->channel_stats("fresh");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ErrorCode::kNotFound);
  // Stats of a channel nobody placed are answered by the node reached, placing nothing.
  auto unknown = http(a, "GET", "/v1/channels/nobody-made-this");
  EXPECT_EQ(unknown.status, 404u) << unknown;
  EXPECT_EQ(leader(a, "nobody-made-this"), "");
}

TEST_F(HttpForwardTest, GrantsAreCheckedWhereTheRequestArrivedAndOnTheLeader) {
  const std::string admin_token = "admin-token-0123456789abcdef012";
  const std::string reader_token = "reader-token-0123456789abcdef01";
  json identities = json::array({{{"name", "admin"},
                                  {"token-sha256", auth::to_hex(auth::sha256(admin_token))},
                                  {"send", {"*"}},
                                  {"receive", {"*"}},
                                  {"manage", {"*"}},
                                  {"monitor", true}},
                                 {{"name", "reader"},
                                  {"token-sha256", auth::to_hex(auth::sha256(reader_token))},
                                  {"receive", {"orders"}}}});
  extra_ = {"--set", R"(anonymous={"enabled": false})", "--set", "identities=" + identities.dump()};
  http_token_ = admin_token;
  start_nodes();
  const auto nodes = declare("orders");
  const std::string a = nodes[1];
  auto ok = http(a, "POST", "/v1/channels/orders/messages", "by admin");
  ASSERT_EQ(ok.status, 201u) << ok;
  const uint64_t relayed = forwarded(a, "send");
  const uint64_t relayed_admin = forwarded(a, "purge");
  // No send grant: refused at the node reached, never relayed.
  auto denied = http(a, "POST", "/v1/channels/orders/messages", "by reader", reader_token);
  EXPECT_EQ(denied.status, 403u) << denied;
  auto purge = http(a, "POST", "/v1/channels/orders/purge", "{}", reader_token);
  EXPECT_EQ(purge.status, 403u) << purge;
  EXPECT_EQ(forwarded(a, "send"), relayed);
  EXPECT_EQ(forwarded(a, "purge"), relayed_admin);
  // What it may do (browse with receive) is relayed and served on the leader as itself.
  auto page = http(a, "GET", "/v1/channels/orders/messages", "", reader_token);
  ASSERT_EQ(page.status, 200u) << page;
  EXPECT_NE(page.body.find("by admin"), std::string::npos) << page;
  EXPECT_EQ(page.body.find("by reader"), std::string::npos) << page;
}

TEST_F(HttpForwardTest, AStoppedLeaderFailsRelayedRequestsWithin503AndTheTimeout) {
  start_nodes();
  const auto nodes = declare("held");
  const std::string b = nodes[0], a = nodes[1];
  ASSERT_EQ(http(a, "POST", "/v1/channels/held/messages", "warm").status, 201u);
  const Stopped stopped = stop(b);
  // The relayed connection to the stopped leader is open: the publish waits for its answer no
  // longer than cluster-forward-timeout-ms (1 s here), and says the outcome is unknown.
  auto start = Clock::now();
  auto r = http(a, "POST", "/v1/channels/held/messages", "lost?");
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_EQ(r.status, 503u) << r;
  EXPECT_NE(r.body.find("outcome is unknown"), std::string::npos) << r;
  EXPECT_NE(r.body.find("held"), std::string::npos) << r;
  start = Clock::now();
  auto stats = http(a, "GET", "/v1/channels/held");
  EXPECT_LT(Clock::now() - start, 5s);
  // 503 from the stopped leader; or, once its lease ran out and another node leads, 200.
  EXPECT_TRUE(stats.status == 503u || stats.status == 200u) << stats;
  // The node's own endpoints still answer.
  EXPECT_EQ(http(a, "GET", "/v1/cluster").status, 200u);
}

// Relayed requests wait on the node's admin pool (two threads). Behind a stopped leader the
// first ones wait out cluster-forward-timeout-ms (1 s here); those queued behind them must not
// each wait a whole timeout in turn (they did: 8 publishes took up to 4 timeouts, and a metrics
// scrape waited behind them): once a request to the leader failed, the next fail at once,
// unrelayed, for one timeout.
TEST_F(HttpForwardTest, RequestsQueuedBehindAStoppedLeaderFailWithinAboutOneTimeout) {
  // A long lease, so that no other node is elected while the leader is stopped.
  extra_ = {"--set", "cluster-lease-ttl-seconds=30"};
  start_nodes();
  const auto nodes = declare("held");
  const std::string b = nodes[0], a = nodes[1];
  ASSERT_EQ(http(a, "POST", "/v1/channels/held/messages", "warm").status, 201u);
  const Stopped stopped = stop(b);
  constexpr int kRequests = 8;
  std::vector<std::thread> senders;
  std::vector<daemon::testing::HttpReply> replies(kRequests);
  std::vector<Clock::duration> took(kRequests);
  const auto start = Clock::now();
  for (int i = 0; i < kRequests; ++i) {
    senders.emplace_back([&, i] {
      replies[i] = http(a, "POST", "/v1/channels/held/messages", fmt::format("q{}", i));
      took[i] = Clock::now() - start;
    });
  }
  std::this_thread::sleep_for(100ms);
  auto scrape = http(a, "GET", "/metrics");
  const auto scraped = Clock::now() - start;
  for (auto& t : senders) t.join();
  EXPECT_EQ(scrape.status, 200u);
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(replies[i].status, 503u) << replies[i];
    EXPECT_NE(replies[i].body.find("held"), std::string::npos) << replies[i];
    // Two pool threads: the first two wait one timeout, the rest fail once one has. Before, the
    // last two took four timeouts.
    EXPECT_LT(took[i], 3s) << "request " << i << " waited "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(took[i]).count()
                           << " ms";
  }
  EXPECT_LT(scraped, 3s) << "the metrics scrape waited behind the relayed requests";
}

}  // namespace
}  // namespace witmq::cluster
