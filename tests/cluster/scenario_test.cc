// The scenarios of issue 12, each under load from several producers and completing consumers,
// judged by the history checker (history.h) after a drain. Real etcd and real witmqd, every link
// through a fault proxy (cluster_under_test.h). Those not proven yet are written in full and
// disabled; each says why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "client/client.h"
#include "cluster/cluster_under_test.h"
#include "cluster/history.h"
#include "cluster/workload.h"

namespace witmq::cluster::testing {
namespace {

using history::Outcome;
using history::Recorder;
using history::Report;
using history::Rules;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kFailoverBound = seconds(ClusterUnderTest::kTtlSeconds + 13);
constexpr auto kDrainBound = seconds(90);

void run_for(std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }

// The time from `from` to the first send invoked after it that was acknowledged by a node other
// than `not_node` ("" = any), on `channel` ("" = any): how long the channel was not writable.
std::optional<milliseconds> writable_after(const std::vector<history::Op>& ops, int64_t from,
                                           const std::string& not_node = "",
                                           const std::string& channel = "") {
  std::optional<int64_t> first;
  for (const auto& op : ops) {
    if (op.type != history::OpType::kSend || op.outcome != Outcome::kOk || op.invoke_ns < from) {
      continue;
    }
    if (!not_node.empty() && op.node == not_node) continue;
    if (!channel.empty() && op.channel != channel) continue;
    if (!first || op.complete_ns < *first) first = op.complete_ns;
  }
  if (!first) return std::nullopt;
  return std::chrono::duration_cast<milliseconds>(std::chrono::nanoseconds(*first - from));
}

class ScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override { WITMQ_REQUIRE_ETCD(); }

  // With WITMQ_SCENARIO_LOG_DIR set, a failed scenario leaves there each node's log (since its
  // last start) and the history, for witmq-history-check and for reading who acked what.
  void TearDown() override {
    const char* dir = std::getenv("WITMQ_SCENARIO_LOG_DIR");
    if (dir == nullptr || !HasFailure() || !cluster_) return;
    if (workload_) workload_->stop();
    const std::string base =
        std::string(dir) + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(base);
    for (const auto& id : cluster_->ids()) {
      std::ofstream(base + "/" + id + ".log") << cluster_->node(id).log();
      std::ofstream(base + "/" + id + ".cluster.json") << cluster_->observer().view(id).dump(2);
    }
    std::ofstream h(base + "/history.jsonl");
    h << "{\"witmq-history\": 1}\n";
    for (const auto& op : recorder_.ops()) h << history::to_json_line(op) << "\n";
    std::printf("logs and history of the failed scenario: %s\n", base.c_str());
  }

  // Starts `nodes` nodes, declares `channels` and waits for their leaders.
  void start(int nodes, const std::vector<std::string>& channels) {
    channels_ = channels;
    cluster_ = std::make_unique<ClusterUnderTest>(nodes);
    for (const auto& id : cluster_->ids()) ASSERT_NE(cluster_->node(id).port(), 0) << id;
    cluster_->declare(channels_);
    ASSERT_TRUE(cluster_->wait_for_leaders(channels_)) << cluster_->observer().view("n1").dump();
  }

  void start_load(std::function<std::optional<Target>(const std::string&)> route = {}) {
    auto o = cluster_->workload_options(channels_);
    if (route) o.route = std::move(route);
    workload_ = std::make_unique<Workload>(o, recorder_);
    workload_->start();
  }

  // Stops the load, drains every channel and checks the history with `rules`.
  Report finish(const Rules& rules = {}) {
    workload_->stop();
    EXPECT_TRUE(workload_->drain(kDrainBound)) << "the drain made no progress for 90 s";
    const Report r = history::check(recorder_.ops(), rules);
    std::printf("%s", r.summary(5).c_str());
    EXPECT_GT(r.sends_ok, 0u) << "the workload made no progress";
    EXPECT_GT(r.completes_ok, 0u) << "the workload made no progress";
    return r;
  }

  int64_t now() const { return Recorder::now_ns(); }

  std::vector<std::string> channels_;
  std::unique_ptr<ClusterUnderTest> cluster_;
  // With $WITMQ_SCENARIO_HISTORY naming a file, the history is written there as it is made
  // (witmq-history-check reads it).
  Recorder recorder_{std::getenv("WITMQ_SCENARIO_HISTORY") != nullptr
                         ? std::string(std::getenv("WITMQ_SCENARIO_HISTORY"))
                         : std::string()};
  std::atomic<uint64_t> turn_{0};  // for routes that alternate
  std::unique_ptr<Workload> workload_;
};

// Scenario 2 on one node: SIGKILL under load (twice), restart on the same data directory; nothing
// acknowledged is lost, nothing settled comes back, first deliveries keep channel order.
TEST_F(ScenarioTest, SingleNodeKilledUnderLoadLosesNothing) {
  start(1, {"c1", "c2"});
  start_load();
  for (int round = 0; round < 2; ++round) {
    run_for(seconds(3));
    cluster_->kill("n1");
    const int64_t killed = now();
    run_for(milliseconds(500));
    cluster_->restart("n1");
    ASSERT_TRUE(cluster_->wait_for_leaders(channels_, kFailoverBound));
    run_for(seconds(2));
    auto took = writable_after(recorder_.ops(), killed);
    ASSERT_TRUE(took) << "no send was acknowledged after the restart";
    std::printf("round %d: writable again %lld ms after SIGKILL (500 ms down)\n", round + 1,
                static_cast<long long>(took->count()));
  }
  const Report r = finish();
  EXPECT_TRUE(r.ok()) << r.summary(20);
  EXPECT_GT(r.sends_unknown + r.receives_unknown + r.completes_unknown, 0u)
      << "the kills should have cut some operations short";
}

// Scenario 3, the part today's cluster promises: a leader stopped past its lease is replaced
// with a higher epoch, no two nodes acknowledge writes in one epoch, none acknowledges a write
// in an epoch after a higher one did, and the stopped node rejoins as a follower. (The full
// scenario, with every rule, is StoppedLeaderFullScenario below.)
TEST_F(ScenarioTest, StoppedLeaderIsFencedAndRejoinsAsAFollower) {
  start(3, {"c1", "c2", "c3"});
  const std::string victim = cluster_->leader_of("c1");
  ASSERT_FALSE(victim.empty());
  // Half the ops go to the victim whenever a fresh answer (under 300 ms old) of its own says it
  // leads the channel: were it to claim a leadership it lost, it would be asked, and its
  // acknowledgements in the old epoch after the new leader's would show.
  start_load([this, victim](const std::string& c) -> std::optional<Target> {
    auto& obs = cluster_->observer();
    if (turn_++ % 2 == 0) {
      if (const uint64_t e = obs.fresh_epoch_of(victim, c, milliseconds(300)); e != 0) {
        return Target{victim, obs.port_of(victim), e};
      }
    }
    return obs.route(c);
  });
  run_for(seconds(2));
  cluster_->pause(victim);
  const int64_t stopped = now();
  ASSERT_TRUE(ClusterUnderTest::wait(
      [&] {
        const auto l = cluster_->leader_of("c1");
        return !l.empty() && l != victim;
      },
      kFailoverBound));
  run_for(seconds(1));
  cluster_->resume(victim);
  ASSERT_TRUE(ClusterUnderTest::wait(
      [&] {
        auto v = cluster_->observer().view(victim);
        return v.is_object() && v["node"]["state"] == "member" && v["node"]["leads"].empty();
      },
      kFailoverBound))
      << cluster_->observer().view(victim).dump();
  run_for(seconds(2));
  auto took = writable_after(recorder_.ops(), stopped, victim, "c1");
  ASSERT_TRUE(took);
  std::printf("c1 writable on a new leader %lld ms after SIGSTOP of %s (lease TTL %d s)\n",
              static_cast<long long>(took->count()), victim.c_str(), ClusterUnderTest::kTtlSeconds);
  workload_->stop();
  const Report r = history::check(recorder_.ops(), Rules{false, false, false, false, true});
  std::printf("%s", r.summary(5).c_str());
  EXPECT_TRUE(r.ok()) << r.summary(20);
  EXPECT_GE(r.epochs, 4u) << "c1 should have acknowledged writes in two epochs";
}

// Scenario 6: etcd stopped past the lease TTL and started again, under load. Meanwhile nodes
// lead nothing (they cannot know they still would): they release their channels and refuse
// operations on them with unavailable. When etcd returns, each node takes its channels up again
// from its store as leader in a higher epoch, and the history is whole. A node that joins again
// leaves a channel to its preferred node for one TTL, so leaderships do not move to whichever
// node rejoined first (without replication, that would strand what the preferred node stored).
// It failed in most runs while a leader's retained log had a hole (positions stored while etcd
// was down, never shipped): its followers asked for the same resend for ever and acknowledged
// none of its new epoch's writes (docs/CLUSTERING.md, scenario 6).
TEST_F(ScenarioTest, EtcdStoppedAndRestartedUnderLoad) {
  start(3, {"c1", "c2", "c3"});
  std::map<std::string, std::string> before;
  for (const auto& c : channels_) before[c] = cluster_->leader_of(c);
  start_load();
  run_for(seconds(2));
  cluster_->etcd().kill(SIGTERM);
  const int64_t down = now();
  ASSERT_TRUE(ClusterUnderTest::wait(
      [&] {
        for (const auto& c : channels_) {
          if (!cluster_->leader_of(c).empty()) return false;
        }
        return true;
      },
      kFailoverBound));
  run_for(seconds(2));
  const int64_t leaderless = now();
  cluster_->etcd().start();
  ASSERT_TRUE(cluster_->wait_for_leaders(channels_, seconds(30)));
  run_for(seconds(2));
  const Report r = finish();
  EXPECT_TRUE(r.ok()) << r.summary(20);
  uint64_t served_without_leader = 0;
  for (const auto& op : recorder_.ops()) {
    if (op.type == history::OpType::kSend && op.outcome == Outcome::kOk && op.invoke_ns > down &&
        op.complete_ns < leaderless && op.epoch == 0) {
      ++served_without_leader;
    }
  }
  std::printf("sends acknowledged while no node led: %llu\n",
              static_cast<unsigned long long>(served_without_leader));
  for (const auto& c : channels_) {
    EXPECT_EQ(cluster_->leader_of(c), before[c]) << c << ": the preferred leader leads again";
    EXPECT_GE(cluster_->observer().epoch_of(before[c], c), 2u) << c;
  }
}

// ---- Scenarios that need replication or forwarding --------------------------------------------

// Scenario 1: send through node A, receive through node C, leaders spread over all three.
TEST_F(ScenarioTest, SendThroughOneNodeReceiveThroughAnother) {
  start(3, {"c1", "c2", "c3"});
  std::set<std::string> leaders;
  for (const auto& c : channels_) leaders.insert(cluster_->leader_of(c));
  EXPECT_EQ(leaders.size(), 3u);
  // Producers always through n1, consumers (and the drain) always through n3.
  auto through = [this](const std::string& node) {
    return std::optional<Target>(Target{node, cluster_->observer().port_of(node), 0});
  };
  auto po = cluster_->workload_options(channels_);
  po.route = [&](const std::string&) { return through("n1"); };
  po.consumers = 0;
  Workload sending(po, recorder_);
  auto co = cluster_->workload_options(channels_);
  co.route = [&](const std::string&) { return through("n3"); };
  co.producers = 0;
  Workload receiving(co, recorder_);
  sending.start();
  receiving.start();
  run_for(seconds(5));
  sending.stop();
  receiving.stop();
  EXPECT_TRUE(receiving.drain(kDrainBound));
  const Report r = history::check(recorder_.ops());
  std::printf("%s", r.summary(5).c_str());
  EXPECT_GT(r.sends_ok, 0u);
  EXPECT_TRUE(r.ok()) << r.summary(20);
}

// Scenario 2: SIGKILL the leader of a channel under load; a replica takes over with every
// acknowledged write; the failover time is measured.
TEST_F(ScenarioTest, KilledLeaderFailsOverWithNothingLost) {
  start(3, {"c1", "c2", "c3"});
  const std::string victim = cluster_->leader_of("c1");
  start_load();
  run_for(seconds(3));
  cluster_->kill(victim);
  const int64_t killed = now();
  ASSERT_TRUE(ClusterUnderTest::wait(
      [&] {
        const auto l = cluster_->leader_of("c1");
        return !l.empty() && l != victim;
      },
      kFailoverBound));
  run_for(seconds(3));
  auto took = writable_after(recorder_.ops(), killed, victim, "c1");
  ASSERT_TRUE(took);
  std::printf("c1 writable again %lld ms after SIGKILL of its leader\n",
              static_cast<long long>(took->count()));
  EXPECT_LT(*took, seconds(10));
  cluster_->restart(victim);
  run_for(seconds(3));
  const Report r = finish();
  EXPECT_TRUE(r.ok()) << r.summary(20);
}

// Scenario 3 in full: a leader SIGSTOPped past its lease, then SIGCONT. Half the ops keep going
// to it for as long as it claimed to lead (its last /v1/cluster answer, which is stale while it
// is stopped): every rule judges them, so anything it acknowledged and the new leader lacks shows
// as lost. The `epoch` rule judges only those routed by a fresh claim (under 300 ms old): the
// ones queued while it was stopped are, once it resumes, forwarded to the new leader (or
// refused), and the reply does not say which node acknowledged them in which epoch, so they are
// recorded with epoch 0. (StoppedLeaderIsFencedAndRejoinsAsAFollower judges the epoch rule.)
TEST_F(ScenarioTest, StoppedLeaderFullScenario) {
  start(3, {"c1", "c2", "c3"});
  const std::string victim = cluster_->leader_of("c1");
  ASSERT_FALSE(victim.empty());
  start_load([this, victim](const std::string& c) -> std::optional<Target> {
    auto& obs = cluster_->observer();
    if (turn_++ % 2 == 0) {
      if (const uint64_t e = obs.epoch_of(victim, c); e != 0) {
        const uint64_t fresh = obs.fresh_epoch_of(victim, c, milliseconds(300));
        return Target{victim, obs.port_of(victim), fresh == e ? e : 0};
      }
    }
    return obs.route(c);
  });
  run_for(seconds(2));
  cluster_->pause(victim);
  ASSERT_TRUE(ClusterUnderTest::wait(
      [&] {
        const auto l = cluster_->leader_of("c1");
        return !l.empty() && l != victim;
      },
      kFailoverBound));
  run_for(seconds(1));
  cluster_->resume(victim);
  run_for(seconds(3));
  const Report r = finish();
  EXPECT_TRUE(r.ok()) << r.summary(20);
}

// Scenario 4: one node partitioned away (etcd, clients and inbound peers blackholed): its side
// refuses writes with `unavailable`, the majority goes on; healed, it catches up.
TEST_F(ScenarioTest, PartitionedNodeRefusesWritesAndCatchesUp) {
  start(3, {"c1", "c2", "c3"});
  const std::string victim = cluster_->leader_of("c1");
  start_load();
  run_for(seconds(2));
  cluster_->partition(victim);
  ASSERT_TRUE(ClusterUnderTest::wait(
      [&] {
        const auto l = cluster_->leader_of("c1");
        return !l.empty() && l != victim;
      },
      kFailoverBound));
  // On the minority side, directly (not through its blackholed client link): refused.
  {
    client::Options o;
    o.request_timeout = seconds(5);
    auto c = client::Client::connect("127.0.0.1", cluster_->node(victim).port(), "probe", o);
    ASSERT_TRUE(c.ok()) << c.error().message;
    Message m;
    m.data = {'x'};
    const Status st = (*c)->send("c1", std::span<const Message>(&m, 1));
    ASSERT_FALSE(st.ok()) << "a partitioned node acknowledged a write";
    EXPECT_EQ(st.error().code, ErrorCode::kUnavailable) << st.error().message;
  }
  run_for(seconds(3));
  cluster_->heal(victim);
  run_for(seconds(5));
  const Report r = finish();
  EXPECT_TRUE(r.ok()) << r.summary(20);
}

// Scenario 5: a follower restarted far behind, and a node back with an empty data directory,
// are brought up to date before they count as in sync (and then lead without loss).
TEST_F(ScenarioTest, FollowerFarBehindAndEmptyNodeCatchUp) {
  start(3, {"c1", "c2", "c3"});
  const std::string leader = cluster_->leader_of("c1");
  std::string follower;
  for (const auto& id : cluster_->ids()) {
    if (id != leader) follower = id;
  }
  start_load();
  cluster_->kill(follower);
  run_for(seconds(5));
  cluster_->restart(follower);
  run_for(seconds(3));
  cluster_->kill(follower);
  cluster_->restart(follower, /*empty=*/true);
  run_for(seconds(5));
  // The caught-up nodes must now hold everything: kill the leader, the others take over.
  cluster_->kill(leader);
  ASSERT_TRUE(ClusterUnderTest::wait(
      [&] {
        const auto l = cluster_->leader_of("c1");
        return !l.empty() && l != leader;
      },
      kFailoverBound));
  run_for(seconds(3));
  cluster_->restart(leader);
  const Report r = finish();
  EXPECT_TRUE(r.ok()) << r.summary(20);
}

// Scenario 7: a rolling restart of all three nodes (SIGTERM, restart on the same data) under load
// loses nothing.
TEST_F(ScenarioTest, RollingRestartLosesNothing) {
  start(3, {"c1", "c2", "c3"});
  start_load();
  run_for(seconds(2));
  for (const auto& id : cluster_->ids()) {
    cluster_->terminate(id);
    run_for(seconds(1));
    cluster_->restart(id);
    ASSERT_TRUE(cluster_->wait_for_leaders(channels_, kFailoverBound));
    run_for(seconds(3));
  }
  const Report r = finish();
  EXPECT_TRUE(r.ok()) << r.summary(20);
}

}  // namespace
}  // namespace witmq::cluster::testing
