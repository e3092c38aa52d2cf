// Random faults under load, then a drain and the history checker: the short run in ctest (60 s,
// one node in cluster mode) and the long one of tools/chaos.sh. Environment:
//   WITMQ_CHAOS_SECONDS  how long faults are injected (default 60)
//   WITMQ_CHAOS_NODES    nodes (default 1)
//   WITMQ_CHAOS_SEED     the random seed (default 1), printed so that a run can be repeated
//   WITMQ_CHAOS_HISTORY  where the history is written (default: a temporary file, removed when
//                        the run passed); check it again with witmq-history-check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "cluster/cluster_under_test.h"
#include "cluster/history.h"
#include "cluster/workload.h"

namespace witmq::cluster::testing {
namespace {

using history::Recorder;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

TEST(ChaosTest, RandomFaultsUnderLoad) {
  WITMQ_REQUIRE_ETCD();
  const int duration_s = env_int("WITMQ_CHAOS_SECONDS", 60);
  const int nodes = env_int("WITMQ_CHAOS_NODES", 1);
  const auto seed = static_cast<uint32_t>(env_int("WITMQ_CHAOS_SEED", 1));
  const char* history_env = std::getenv("WITMQ_CHAOS_HISTORY");
  const std::string dir = daemon::testing::make_temp_dir("chaos");
  const std::string history_path =
      history_env && *history_env ? history_env : dir + "/history.jsonl";
  std::printf("chaos: %d s, %d node(s), seed %u, history %s\n", duration_s, nodes, seed,
              history_path.c_str());

  const std::vector<std::string> channels = {"c1", "c2", "c3"};
  ClusterUnderTest cluster(nodes);
  for (const auto& id : cluster.ids()) ASSERT_NE(cluster.node(id).port(), 0) << id;
  cluster.declare(channels);
  ASSERT_TRUE(cluster.wait_for_leaders(channels));
  Recorder recorder(history_path);
  auto options = cluster.workload_options(channels);
  options.seed = seed;
  Workload workload(options, recorder);
  workload.start();

  std::mt19937 rng(seed);
  auto pick = [&](const std::vector<std::string>& from) { return from[rng() % from.size()]; };
  auto hold = [&](int min_ms, int max_ms) {
    std::this_thread::sleep_for(milliseconds(min_ms + static_cast<int>(rng() % (max_ms - min_ms))));
  };
  const auto ttl_ms = ClusterUnderTest::kTtlSeconds * 1000;
  std::vector<std::string> kinds = {"kill",          "stop",        "terminate",
                                    "etcd-stop",     "client-drop", "client-blackhole",
                                    "etcd-partition"};
  if (nodes >= 3) kinds.insert(kinds.end(), {"kill-empty", "partition"});
  std::map<std::string, int> injected;
  struct Fault {
    std::string kind;
    int64_t at;
    std::set<std::string> channels;  // those the fault hit: the victim's, or all
  };
  std::vector<Fault> faults;
  const auto end = Clock::now() + seconds(duration_s);
  hold(1000, 2000);
  while (Clock::now() < end) {
    const std::string kind = pick(kinds);
    const std::string victim = pick(cluster.ids());
    ++injected[kind];
    std::set<std::string> hit;
    for (const auto& c : channels) {
      if (kind == "etcd-stop" || cluster.observer().epoch_of(victim, c) != 0) hit.insert(c);
    }
    faults.push_back({kind, Recorder::now_ns(), hit});
    std::printf("chaos: %s %s\n", kind.c_str(), kind == "etcd-stop" ? "" : victim.c_str());
    if (kind == "kill" || kind == "kill-empty" || kind == "terminate") {
      kind == "terminate" ? cluster.terminate(victim) : cluster.kill(victim);
      hold(200, 2000);
      cluster.restart(victim, kind == "kill-empty");
    } else if (kind == "stop") {
      cluster.pause(victim);
      hold(ttl_ms + 500, ttl_ms + 3000);
      cluster.resume(victim);
    } else if (kind == "etcd-stop") {
      cluster.etcd().kill(SIGKILL);
      hold(500, ttl_ms + 3000);
      cluster.etcd().start();
    } else if (kind == "client-drop") {
      cluster.client_link(victim).drop();
      hold(100, 1000);
      cluster.client_link(victim).heal();
    } else if (kind == "client-blackhole") {
      cluster.client_link(victim).blackhole();
      hold(500, 4000);
      cluster.client_link(victim).heal();
    } else if (kind == "etcd-partition") {
      cluster.etcd_link(victim).blackhole();
      hold(ttl_ms + 500, ttl_ms + 3000);
      cluster.etcd_link(victim).heal();
    } else if (kind == "partition") {
      cluster.partition(victim);
      hold(ttl_ms + 500, ttl_ms + 3000);
      cluster.heal(victim);
    }
    ASSERT_TRUE(cluster.wait_for_leaders(channels, seconds(30)))
        << "no leaders 30 s after " << kind << " of " << victim;
    hold(1000, 3000);
  }
  workload.stop();
  // On a failed drain the report still runs: what it lists as lost may be only undrained.
  EXPECT_TRUE(workload.drain(seconds(120))) << "the drain made no progress for 120 s";
  const auto ops = recorder.ops();
  const history::Report report = history::check(ops);

  // Failover time: from each fault to the first acknowledged send invoked after it on a channel
  // the fault hit (a fault on a node that led nothing is not counted).
  std::map<std::string, std::vector<int64_t>> recovery;
  for (const Fault& f : faults) {
    std::optional<int64_t> first;
    for (const auto& op : ops) {
      if (op.type == history::OpType::kSend && op.outcome == history::Outcome::kOk &&
          op.invoke_ns >= f.at && f.channels.contains(op.channel) &&
          (!first || op.complete_ns < *first)) {
        first = op.complete_ns;
      }
    }
    if (first) recovery[f.kind].push_back((*first - f.at) / 1000000);
  }
  std::printf("chaos: faults injected %zu:", faults.size());
  for (const auto& [kind, n] : injected) std::printf(" %s %d", kind.c_str(), n);
  std::printf(
      "\nchaos: writable again after each fault, on the channels it hit (ms, min/median/max, "
      "including the time the fault was held):\n");
  for (auto& [kind, ms] : recovery) {
    std::sort(ms.begin(), ms.end());
    std::printf("  %-17s %lld / %lld / %lld\n", kind.c_str(), static_cast<long long>(ms.front()),
                static_cast<long long>(ms[ms.size() / 2]), static_cast<long long>(ms.back()));
  }
  std::printf("chaos: %s", report.summary(10).c_str());
  EXPECT_GT(report.sends_ok, 0u);
  EXPECT_GT(report.completes_ok, 0u);
  EXPECT_TRUE(report.ok()) << "history kept in " << history_path;
  // The temporary directory holds the history only when WITMQ_CHAOS_HISTORY did not name a
  // file; it is kept then only for a failed run.
  if (report.ok() || (history_env && *history_env)) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace witmq::cluster::testing
