// Real etcd and real witmqd processes on 127.0.0.1 (ephemeral ports, temporary directories):
// membership, placement, leadership with fencing epochs, and what nodes do when a leader is
// killed or stopped, or when etcd goes away. Times are bounded with generous margins: the lease
// TTL here is 2 s.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"
#include "cluster/etcd_process.h"
#include "daemon/daemon_process.h"
#include "daemon/http_client.h"

namespace witmq::cluster {
namespace {

using daemon::testing::Daemon;
using daemon::testing::http_get;
using daemon::testing::http_request;
using daemon::testing::run_witmqd;
using nlohmann::json;
using testing::Etcd;
using Clock = std::chrono::steady_clock;

constexpr auto kTtl = std::chrono::seconds(2);
// How long anything that waits on a lease may take: the TTL, etcd's expiry scan, the nodes'
// control-loop period, and room for a loaded machine.
constexpr auto kFailoverBound = kTtl + std::chrono::seconds(13);

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WITMQ_REQUIRE_ETCD();
    etcd_ = std::make_unique<Etcd>();
  }

  std::vector<std::string> node_args(const std::string& id,
                                     const std::vector<std::string>& endpoints = {}) {
    json eps = json::array();
    if (endpoints.empty()) {
      eps.push_back(etcd_->endpoint());
    } else {
      for (const auto& e : endpoints) eps.push_back(e);
    }
    return {"--set", "cluster-node-id=" + id,
            "--set", "cluster-name=test",
            "--set", "cluster-etcd-endpoints=" + eps.dump(),
            "--set", "cluster-lease-ttl-seconds=2",
            "--set", "cluster-etcd-timeout-ms=500",
            "--set", "cluster-peer-token=cluster-test-secret-0123456789"};
  }

  void start_nodes(int n) {
    for (int i = 1; i <= n; ++i) {
      const std::string id = "n" + std::to_string(i);
      nodes_[id] = std::make_unique<Daemon>(node_args(id));
      ASSERT_NE(nodes_[id]->port(), 0) << id << " did not start";
    }
  }

  static json view(Daemon& d) {
    auto r = http_get(d.http_port(), "/v1/cluster");
    EXPECT_EQ(r.status, 200u) << r;
    return r.json;
  }

  static std::map<std::string, json> channels_of(const json& v) {
    std::map<std::string, json> out;
    if (!v.contains("channels")) return out;
    for (const auto& c : v["channels"]) out[c["name"].get<std::string>()] = c;
    return out;
  }

  // Declares `names` through node n1's HTTP admin API.
  void declare(const std::vector<std::string>& names) {
    for (const auto& name : names) {
      auto r = http_request(nodes_["n1"]->http_port(), "PUT", "/v1/channels/" + name, "{}");
      ASSERT_EQ(r.status, 201u) << r;
    }
  }

  // Waits until node `from` sees every one of `names` with a leader; returns their views.
  std::map<std::string, json> wait_for_leaders(const std::string& from,
                                               const std::vector<std::string>& names,
                                               std::chrono::milliseconds timeout) {
    std::map<std::string, json> seen;
    const bool ok = wait_until(
        [&] {
          seen = channels_of(view(*nodes_[from]));
          for (const auto& n : names) {
            if (!seen.contains(n) || seen[n]["leader"].is_null()) return false;
          }
          return true;
        },
        timeout);
    EXPECT_TRUE(ok) << "node " << from
                    << " did not see leaders for every channel: " << view(*nodes_[from]).dump();
    return seen;
  }

  // Six channels over three nodes: two led by each, all in epoch 1.
  std::map<std::string, json> spread_six() {
    declare(names_);
    auto seen = wait_for_leaders("n1", names_, std::chrono::seconds(15));
    std::map<std::string, int> led;
    for (const auto& n : names_) {
      EXPECT_EQ(seen[n]["epoch"], 1) << seen[n].dump();
      EXPECT_EQ(seen[n]["replicas"].size(), 3u) << seen[n].dump();
      ++led[seen[n]["leader"].get<std::string>()];
    }
    EXPECT_EQ(led, (std::map<std::string, int>{{"n1", 2}, {"n2", 2}, {"n3", 2}}));
    return seen;
  }

  // Records which node each view says led each (channel, epoch); fails when two nodes are ever
  // seen leading one channel in one epoch.
  void record_epochs(const json& v) {
    for (const auto& [name, c] : channels_of(v)) {
      if (c["leader"].is_null()) continue;
      const auto key = std::make_pair(name, c["epoch"].get<uint64_t>());
      const std::string leader = c["leader"];
      auto [it, inserted] = epochs_.emplace(key, leader);
      EXPECT_EQ(it->second, leader)
          << "channel " << name << " epoch " << key.second << " was seen led by two nodes";
    }
  }

  std::unique_ptr<Etcd> etcd_;
  std::map<std::string, std::unique_ptr<Daemon>> nodes_;
  const std::vector<std::string> names_ = {"c1", "c2", "c3", "c4", "c5", "c6"};
  std::map<std::pair<std::string, uint64_t>, std::string> epochs_;
};

TEST_F(ClusterTest, ThreeNodesJoinAndSeeEachOther) {
  start_nodes(3);
  for (auto& [id, d] : nodes_) {
    json v;
    ASSERT_TRUE(
        wait_until([&] { return (v = view(*d))["nodes"].size() == 3; }, std::chrono::seconds(10)))
        << id << ": " << v.dump();
    EXPECT_EQ(v["node"]["id"], id);
    EXPECT_EQ(v["node"]["state"], "member");
    EXPECT_EQ(v["node"]["client-address"], "127.0.0.1:" + std::to_string(d->port()));
    std::set<std::string> ids;
    for (const auto& n : v["nodes"]) ids.insert(n["id"].get<std::string>());
    EXPECT_EQ(ids, (std::set<std::string>{"n1", "n2", "n3"}));
    auto ready = http_get(d->http_port(), "/readyz");
    EXPECT_EQ(ready.status, 200u) << ready;
    EXPECT_EQ(ready.json["checks"]["cluster"], "ok") << ready;
    auto metrics = http_get(d->http_port(), "/metrics");
    EXPECT_NE(metrics.body.find("\nwitmq_cluster_nodes_alive 3\n"), std::string::npos);
    EXPECT_NE(metrics.body.find("\nwitmq_cluster_member 1\n"), std::string::npos);
    EXPECT_NE(metrics.body.find("\nwitmq_cluster_leases_held 1\n"), std::string::npos);
  }
}

TEST_F(ClusterTest, LeadersSpreadOverTheNodesInEpochOne) {
  start_nodes(3);
  auto seen = spread_six();
  // Every node agrees, and each says it leads exactly the channels the others see it lead.
  for (auto& [id, d] : nodes_) {
    json v;
    ASSERT_TRUE(wait_until(
        [&] {
          v = view(*d);
          auto mine = channels_of(v);
          for (const auto& n : names_) {
            if (!mine.contains(n) || mine[n]["leader"] != seen[n]["leader"]) return false;
            if (mine[n]["this-node-leads"] != (seen[n]["leader"] == id)) return false;
          }
          return true;
        },
        std::chrono::seconds(10)))
        << id << ": " << v.dump();
    EXPECT_EQ(v["node"]["leads"].size(), 2u) << v.dump();
    record_epochs(v);
    auto metrics = http_get(d->http_port(), "/metrics");
    EXPECT_NE(metrics.body.find("\nwitmq_cluster_channels_led 2\n"), std::string::npos);
  }
}

TEST_F(ClusterTest, KilledLeaderIsReplacedWithAHigherEpoch) {
  start_nodes(3);
  auto before = spread_six();
  std::vector<std::string> victims;
  for (const auto& n : names_) {
    if (before[n]["leader"] == "n2") victims.push_back(n);
  }
  ASSERT_EQ(victims.size(), 2u);
  const auto killed = Clock::now();
  nodes_["n2"]->stop(SIGKILL);
  std::map<std::string, json> after;
  ASSERT_TRUE(wait_until(
      [&] {
        after = channels_of(view(*nodes_["n1"]));
        for (const auto& n : victims) {
          if (after[n]["leader"].is_null() || after[n]["leader"] == "n2") return false;
        }
        return true;
      },
      kFailoverBound))
      << view(*nodes_["n1"]).dump();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed);
  std::printf("new leaders %lld ms after SIGKILL (lease TTL 2 s)\n",
              static_cast<long long>(took.count()));
  for (const auto& n : victims) {
    EXPECT_GT(after[n]["epoch"].get<uint64_t>(), before[n]["epoch"].get<uint64_t>())
        << after[n].dump();
  }
  // The others kept their leaders and epochs.
  for (const auto& n : names_) {
    if (before[n]["leader"] == "n2") continue;
    EXPECT_EQ(after[n]["leader"], before[n]["leader"]);
    EXPECT_EQ(after[n]["epoch"], before[n]["epoch"]);
  }
  EXPECT_EQ(view(*nodes_["n1"])["nodes"].size(), 2u);
}

TEST_F(ClusterTest, StoppedLeaderGivesUpAndItsEpochIsNeverReused) {
  start_nodes(3);
  auto before = spread_six();
  for (auto& [id, d] : nodes_) record_epochs(view(*d));
  std::vector<std::string> victims;
  for (const auto& n : names_) {
    if (before[n]["leader"] == "n2") victims.push_back(n);
  }
  ASSERT_EQ(victims.size(), 2u);
  nodes_["n2"]->signal(SIGSTOP);
  // Past its lease: the others elect new leaders with higher epochs.
  std::map<std::string, json> after;
  const bool replaced = wait_until(
      [&] {
        after = channels_of(view(*nodes_["n1"]));
        for (const auto& n : victims) {
          if (after[n]["leader"].is_null() || after[n]["leader"] == "n2") return false;
        }
        return true;
      },
      kFailoverBound);
  nodes_["n2"]->signal(SIGCONT);
  ASSERT_TRUE(replaced) << view(*nodes_["n1"]).dump();
  record_epochs(view(*nodes_["n1"]));
  record_epochs(view(*nodes_["n3"]));

  // At once after SIGCONT, before its control loop has run: it claims none of them.
  json v = view(*nodes_["n2"]);
  for (const auto& n : victims) {
    EXPECT_FALSE(channels_of(v)[n]["this-node-leads"].get<bool>()) << v.dump();
  }
  EXPECT_TRUE(v["node"]["leads"].empty()) << v.dump();
  // Then it notices, rejoins as a member and sees the new leaders.
  ASSERT_TRUE(wait_until(
      [&] {
        v = view(*nodes_["n2"]);
        auto mine = channels_of(v);
        for (const auto& n : victims) {
          if (mine[n]["leader"] != after[n]["leader"]) return false;
        }
        return v["node"]["state"] == "member";
      },
      kFailoverBound))
      << v.dump();
  record_epochs(v);
  for (const auto& n : victims) {
    EXPECT_FALSE(channels_of(v)[n]["this-node-leads"].get<bool>()) << v.dump();
    EXPECT_GT(channels_of(v)[n]["epoch"].get<uint64_t>(), 1u);
    EXPECT_NE(v["node"]["events"].dump().find("no longer leads channel " + n + " (epoch 1)"),
              std::string::npos)
        << v.dump();
  }
  auto metrics = http_get(nodes_["n2"]->http_port(), "/metrics");
  EXPECT_NE(metrics.body.find("\nwitmq_cluster_leaderships_lost_total 2\n"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("\nwitmq_cluster_lease_losses_total 1\n"), std::string::npos);
}

TEST_F(ClusterTest, NodesReportLostEtcdAndRejoinWhenItReturns) {
  start_nodes(3);
  spread_six();
  etcd_->kill(SIGTERM);
  for (auto& [id, d] : nodes_) {
    json v;
    ASSERT_TRUE(
        wait_until([&] { return (v = view(*d))["node"]["state"] == "lost-etcd"; }, kFailoverBound))
        << id << ": " << v.dump();
    EXPECT_TRUE(v["node"]["leads"].empty()) << v.dump();
    EXPECT_FALSE(v["node"]["reason"].get<std::string>().empty());
    auto ready = http_get(d->http_port(), "/readyz");
    EXPECT_EQ(ready.status, 503u) << ready;
    EXPECT_NE(ready.json["checks"]["cluster"].get<std::string>().find("lost-etcd"),
              std::string::npos)
        << ready;
    auto metrics = http_get(d->http_port(), "/metrics");
    EXPECT_NE(metrics.body.find("\nwitmq_cluster_member 0\n"), std::string::npos);
  }
  etcd_->start();
  for (auto& [id, d] : nodes_) {
    json v;
    ASSERT_TRUE(wait_until(
        [&] {
          v = view(*d);
          if (v["node"]["state"] != "member") return false;
          auto seen = channels_of(v);
          for (const auto& n : names_) {
            if (seen[n]["leader"].is_null() || seen[n]["epoch"].get<uint64_t>() < 2) return false;
          }
          return true;
        },
        std::chrono::seconds(30)))
        << id << ": " << v.dump();
    EXPECT_EQ(http_get(d->http_port(), "/readyz").status, 200u);
  }
}

// Anyone with access to etcd can write under the cluster's prefix: values of the wrong shape are
// ignored, never a crash, and the node goes on leading its channels.
TEST_F(ClusterTest, HostileKeysInEtcdDoNotBreakANode) {
  start_nodes(1);
  declare({"c1"});
  wait_for_leaders("n1", {"c1"}, std::chrono::seconds(10));
  EtcdClient etcd(EtcdOptions{{etcd_->endpoint()}, std::chrono::milliseconds(1000)});
  const std::vector<std::pair<std::string, std::string>> hostile = {
      {"/witmq/test/nodes/zz", "[1,2]"},
      {"/witmq/test/nodes/n9", R"({"id":"n9","client-address":7,"started-unix-ms":"x"})"},
      {"/witmq/test/nodes/n8", R"({"id":"someone-else"})"},
      {"/witmq/test/leader/x", R"({"node":5,"epoch":"one"})"},
      {"/witmq/test/leader/c2", R"({"node":"n1","epoch":-3})"},
      {"/witmq/test/placement/bad name", "{}"},
      {"/witmq/test/placement/c3", R"({"replicas":"n1"})"},
      {"/witmq/test/placement/c4", R"({"replicas":[1,null,"n1"]})"},
      {"/witmq/test/placement/c5", R"({"replicas":["n1"]})"},
      {"/witmq/test/epoch/c5", "abc"},
      {"/witmq/test/placement-version", "\xff"},
      {std::string("/witmq/test/leader/\xff\xfe", 21), "{}"},
  };
  for (const auto& [key, value] : hostile) ASSERT_TRUE(etcd.put(key, value).ok()) << key;
  // c4's placement names n1 after the junk: n1 leads it in epoch 1.
  auto seen = wait_for_leaders("n1", {"c1", "c4"}, std::chrono::seconds(10));
  EXPECT_EQ(seen["c4"]["leader"], "n1");
  EXPECT_EQ(seen["c4"]["epoch"], 1);
  // c5's epoch key is not a number: an epoch could be granted twice, so nobody is elected, and
  // the node says why.
  json v;
  ASSERT_TRUE(wait_until(
      [&] {
        v = view(*nodes_["n1"]);
        return v["etcd"]["last-error"].get<std::string>().find("epoch/c5 is not a number") !=
               std::string::npos;
      },
      std::chrono::seconds(10)))
      << v.dump();
  EXPECT_TRUE(channels_of(v)["c5"]["leader"].is_null()) << v.dump();
  EXPECT_EQ(v["node"]["state"], "member");
  EXPECT_TRUE(channels_of(v)["c1"]["this-node-leads"].get<bool>()) << v.dump();
  EXPECT_FALSE(channels_of(v).contains("bad name"));
  std::set<std::string> ids;
  for (const auto& n : v["nodes"]) ids.insert(n["id"].get<std::string>());
  EXPECT_EQ(ids, (std::set<std::string>{"n1", "n9"})) << v.dump();
  EXPECT_EQ(http_get(nodes_["n1"]->http_port(), "/readyz").status, 200u);
}

// A node killed and started again at once on its data directory is the same node: it takes its
// id back without waiting for its old lease to expire, and its channels get new epochs.
TEST_F(ClusterTest, KilledNodeRestartedOnItsDataDirectoryRejoinsAtOnce) {
  // A TTL long enough that the old lease is surely alive when the new run starts.
  auto args = node_args("n1");
  args.insert(args.end(), {"--set", "cluster-lease-ttl-seconds=60"});
  nodes_["n1"] = std::make_unique<Daemon>(args);
  declare({"c1"});
  nodes_["n1"]->keep_data();
  const std::string dir = nodes_["n1"]->data_dir();
  wait_for_leaders("n1", {"c1"}, std::chrono::seconds(10));
  nodes_["n1"]->stop(SIGKILL);
  nodes_["n1"]->start();
  ASSERT_NE(nodes_["n1"]->port(), 0) << nodes_["n1"]->log();
  EXPECT_NE(nodes_["n1"]->log().find("its previous run (same host and data directory) is still "
                                     "registered"),
            std::string::npos)
      << nodes_["n1"]->log();
  json v;
  ASSERT_TRUE(wait_until(
      [&] {
        v = view(*nodes_["n1"]);
        auto c = channels_of(v);
        return v["node"]["state"] == "member" && c["c1"]["leader"] == "n1" &&
               c["c1"]["epoch"].get<uint64_t>() >= 2;
      },
      std::chrono::seconds(10)))
      << v.dump();
  nodes_["n1"].reset();
  std::filesystem::remove_all(dir);
}

TEST_F(ClusterTest, DuplicateNodeIdIsRefused) {
  start_nodes(1);
  const std::string dir = daemon::testing::make_temp_dir("dup");
  auto args = node_args("n1");
  args.insert(args.begin(),
              {"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", dir});
  auto r = run_witmqd(args);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cluster-node-id 'n1': another live node of cluster 'test' is registered "
                       "with this id"),
            std::string::npos)
      << r.err;
  // The first one is untouched.
  EXPECT_EQ(view(*nodes_["n1"])["node"]["state"], "member");
}

TEST_F(ClusterTest, NoEtcdAnsweringRefusesToStart) {
  const std::string dead = "127.0.0.1:" + std::to_string(testing::free_port());
  const std::string dir = daemon::testing::make_temp_dir("noetcd");
  auto args = node_args("n1", {dead});
  args.insert(args.begin(),
              {"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", dir});
  auto r = run_witmqd(args);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cannot join cluster 'test' as node 'n1'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dead + ": connecting"), std::string::npos) << r.err;
}

// Runs the witmq command line; its stdout and stderr, and "exit N" last.
std::string run_witmq(const std::string& args) {
  const std::string command = std::string(WITMQ_PATH) + " " + args + " 2>&1; echo exit $?";
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

TEST_F(ClusterTest, CliShowsTheCluster) {
  start_nodes(2);
  declare({"c1"});
  // Asked of n2, which did not place c1: it shows what it read from etcd.
  auto seen = wait_for_leaders("n2", {"c1"}, std::chrono::seconds(10));
  const std::string server = "--server 127.0.0.1:" + std::to_string(nodes_["n2"]->port());
  const std::string text = run_witmq(server + " cluster");
  EXPECT_NE(text.find("cluster test: node n2 is member\n"), std::string::npos) << text;
  EXPECT_NE(text.find("replication: shipped"), std::string::npos) << text;
  EXPECT_NE(text.find("  n1 "), std::string::npos) << text;
  EXPECT_NE(text.find("c1"), std::string::npos) << text;
  EXPECT_NE(text.find("leader " + seen["c1"]["leader"].get<std::string>()), std::string::npos)
      << text;
  EXPECT_NE(text.find("epoch 1 "), std::string::npos) << text;
  EXPECT_NE(text.find("exit 0\n"), std::string::npos) << text;
  const std::string j = run_witmq(server + " --json cluster");
  auto parsed = json::parse(j.substr(0, j.find('\n')), nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << j;
  EXPECT_EQ(parsed["node"]["id"], "n2");
  EXPECT_EQ(parsed["nodes"].size(), 2u);
}

// Without cluster keys witmqd is a single node: no etcd, no cluster endpoint or check.
TEST(SingleNodeTest, NoClusterKeysNoCluster) {
  Daemon d;
  auto r = http_get(d.http_port(), "/v1/cluster");
  EXPECT_EQ(r.status, 404u) << r;
  EXPECT_NE(r.error_message().find("cluster mode is off"), std::string::npos) << r;
  auto ready = http_get(d.http_port(), "/readyz");
  EXPECT_EQ(ready.status, 200u);
  EXPECT_FALSE(ready.json["checks"].contains("cluster")) << ready;
  EXPECT_EQ(http_get(d.http_port(), "/metrics").body.find("witmq_cluster_"), std::string::npos);
  const std::string cli = run_witmq("--server 127.0.0.1:" + std::to_string(d.port()) + " cluster");
  EXPECT_NE(cli.find("the server is not in cluster mode"), std::string::npos) << cli;
  EXPECT_NE(cli.find("exit 1\n"), std::string::npos) << cli;
}

TEST(ClusterConfigTest, BadClusterKeysAreRefusedWithTheKey) {
  auto bad_id = run_witmqd({"--check-config", "--set", "cluster-node-id=a b"});
  EXPECT_EQ(bad_id.exit_code, 2);
  EXPECT_NE(bad_id.err.find("cluster-node-id (from --set): 'a b' is not 1..64 characters"),
            std::string::npos)
      << bad_id.err;
  auto tls = run_witmqd(
      {"--check-config", "--set", R"(cluster-etcd-endpoints=["https://127.0.0.1:2379"])"});
  EXPECT_EQ(tls.exit_code, 2);
  EXPECT_NE(tls.err.find("etcd over TLS is not supported yet"), std::string::npos) << tls.err;
  auto none = run_witmqd(
      {"--check-config", "--set", "cluster-node-id=n1", "--set", "cluster-etcd-endpoints=[]"});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("cluster-etcd-endpoints (from --set): empty"), std::string::npos)
      << none.err;
  auto no_secret = run_witmqd({"--check-config", "--set", "cluster-node-id=n1"});
  EXPECT_EQ(no_secret.exit_code, 2);
  EXPECT_NE(no_secret.err.find("cluster-peer-token (from the defaults): both empty, but "
                                "cluster-node-id (from --set) turns cluster mode on"),
            std::string::npos)
      << no_secret.err;
  auto short_secret = run_witmqd({"--check-config", "--set", "cluster-peer-token=short"});
  EXPECT_EQ(short_secret.exit_code, 2);
  EXPECT_NE(short_secret.err.find("cluster-peer-token (from --set): 5 bytes; expected 16..1024"),
            std::string::npos)
      << short_secret.err;
  auto ok = run_witmqd({"--check-config", "--set", "cluster-node-id=n1", "--set",
                        R"(cluster-etcd-endpoints=["http://etcd:2379/"])", "--set",
                        "cluster-peer-token=0123456789abcdef"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
}  // namespace witmq::cluster
