// cluster::Node in process against a real etcd, with its clock in the test's hands: the
// interleavings of the control loop that a process test can only hope to hit.
#include "cluster/node.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>

#include "cluster/etcd_client.h"
#include "cluster/etcd_process.h"

namespace witmq::cluster {
namespace {

using nlohmann::json;
using testing::Etcd;
using Clock = std::chrono::steady_clock;

ClusterOptions options_for(const Etcd& etcd) {
  ClusterOptions o;
  o.node_id = "n1";
  o.name = "node-test";
  o.etcd_endpoints = {etcd.endpoint()};
  o.lease_ttl_seconds = 2;
  o.advertise_client = "127.0.0.1:1";
  return o;
}

// Waits (bounded) until `pred` holds, checking every 20 ms.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds bound = std::chrono::seconds(10)) {
  const auto end = Clock::now() + bound;
  while (Clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// A node whose lease deadline passed (the process was stopped past it) loses the lease and joins
// again with a new one before it publishes a new view. In that window a reader must not take the
// new lease's deadline as the old view's: the old view still lists the old leaderships.
TEST(NodeTest, ANewLeaseDoesNotReviveTheLeadershipsOfTheLostOne) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  std::atomic<int64_t> skew_ms{0};
  std::atomic<Node*> node_ptr{nullptr};
  // 0: nothing to do; 1: the next pass jumps the clock; 2: the pass after it records what a
  // reader sees; 3: done.
  std::atomic<int> phase{0};
  std::mutex mu;
  std::condition_variable cv;
  std::optional<json> at_jump, during;  // what a reader saw

  NodeSources sources;
  sources.clock = [&] { return Clock::now() + std::chrono::milliseconds(skew_ms.load()); };
  // Runs on the node's thread inside each pass, after its keepalive (or join) and before it
  // publishes: the passes are sequential, so each phase lands in the pass it names.
  sources.local_channels = [&]() -> std::vector<LocalChannel> {
    Node* n = node_ptr.load();
    if (n != nullptr && phase.load() == 1) {
      // The clock jumps past the lease's deadline, as for a process resumed after SIGSTOP.
      skew_ms.store(10'000);
      json seen = n->to_json();
      std::lock_guard lock(mu);
      at_jump = std::move(seen);
      phase.store(2);
    } else if (n != nullptr && phase.load() == 2) {
      // This pass lost the lease, joined with a new one, and has not published yet.
      json seen = n->to_json();
      std::lock_guard lock(mu);
      during = std::move(seen);
      phase.store(3);
      cv.notify_all();
    }
    return {{"c1", 1}};
  };
  auto started = Node::start(options_for(etcd), std::move(sources));
  ASSERT_TRUE(started.ok()) << started.error().message;
  std::unique_ptr<Node> node = std::move(*started);
  node_ptr.store(node.get());
  ASSERT_TRUE(eventually([&] {
    auto l = node->leader_of("c1");
    return l && l->self;
  }));
  const std::string old_lease = node->to_json()["node"]["lease"].get<std::string>();
  ASSERT_FALSE(old_lease.empty());

  phase.store(1);
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return during.has_value(); }));
  }
  // At once after the jump, no reader sees a leadership.
  EXPECT_TRUE((*at_jump)["node"]["leads"].empty()) << at_jump->dump();
  // After the new join, before the pass published: still none of the old lease's.
  EXPECT_TRUE((*during)["node"]["leads"].empty()) << during->dump();
  EXPECT_NE((*during)["node"]["lease"], old_lease) << during->dump();
  for (const auto& c : (*during)["channels"]) {
    EXPECT_FALSE(c["this-node-leads"].get<bool>()) << during->dump();
  }
  // Then it leads again, in a new epoch, under its new lease.
  ASSERT_TRUE(eventually([&] {
    auto l = node->leader_of("c1");
    return l && l->self && l->epoch == 2;
  }));
  node->stop();
}

// Whether `node`'s last view lists `id` as a live node.
bool sees(const Node& node, const std::string& id) {
  const json v = node.to_json();
  if (!v.contains("nodes")) return false;
  const json& nodes = v["nodes"];
  return std::any_of(nodes.begin(), nodes.end(), [&](const json& n) { return n["id"] == id; });
}

// The sequence behind a failover that took two lease TTLs: the channel's leader dies while the
// first of the remaining in-sync replicas (in placement order) has joined less than a TTL ago.
// That one does not stand for a channel it is not the preferred leader of until it has been a
// member for a TTL; the next replica must not wait for it (a channel leaderless for a TTL) but
// stand at once.
TEST(NodeTest, AReplicaThatJustJoinedDoesNotHoldUpTheFailoverOfAChannel) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  constexpr int64_t kTtl = 8;
  auto options = [&](const std::string& id) {
    ClusterOptions o = options_for(etcd);
    o.node_id = id;
    o.lease_ttl_seconds = kTtl;
    return o;
  };
  // Placed by hand: n2 leads by preference, n1 is the first replica after it, n3 the last.
  {
    EtcdClient client(EtcdOptions{{etcd.endpoint()}, std::chrono::milliseconds(2'000)});
    const std::string prefix = options("n1").key_prefix();
    ASSERT_TRUE(client.put(prefix + "placement/c", R"({"replicas":["n2","n1","n3"]})").ok());
    ASSERT_TRUE(client.put(prefix + "isr/c", R"({"epoch":0,"members":["n2","n1","n3"]})").ok());
  }
  auto n2 = Node::start(options("n2"), {});
  ASSERT_TRUE(n2.ok()) << n2.error().message;
  auto n3 = Node::start(options("n3"), {});
  ASSERT_TRUE(n3.ok()) << n3.error().message;
  ASSERT_TRUE(eventually([&] {
    auto l = (*n3)->leader_of("c");
    return l && l->node == "n2" && l->epoch == 1;
  }));
  // n3 has been a member for a TTL: it stands for any channel.
  std::this_thread::sleep_for(std::chrono::seconds(kTtl) + std::chrono::milliseconds(500));

  // n1 joins (it will not stand for c, which it is not the preferred leader of, for a TTL) and
  // n3 sees it alive before the leader goes.
  auto n1 = Node::start(options("n1"), {});
  ASSERT_TRUE(n1.ok()) << n1.error().message;
  ASSERT_TRUE(eventually([&] { return sees(**n3, "n1"); }));
  const auto gone = Clock::now();
  (*n2)->stop();  // revokes its lease: c has no leader from now on

  // n3 takes c over at once, long before n1 would stand and before c has been leaderless for a
  // TTL (the bound is twice the TTL, so that a failure shows who got it, and when).
  std::optional<LeaderInfo> leader;
  ASSERT_TRUE(eventually(
      [&] {
        leader = (*n3)->leader_of("c");
        return leader && leader->epoch >= 2;
      },
      std::chrono::seconds(2 * kTtl)));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - gone);
  EXPECT_EQ(leader->node, "n3") << "after " << took.count() << " ms";
  EXPECT_EQ(leader->epoch, 2u);
  EXPECT_LT(took, std::chrono::seconds(kTtl)) << "elected " << leader->node;
  (*n1)->stop();
  (*n3)->stop();
}

}  // namespace
}  // namespace witmq::cluster
