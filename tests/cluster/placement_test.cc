// The placement rules alone: leaders spread over the nodes, replicas capped at the live nodes,
// the leader candidate is the first live replica.
#include "cluster/placement.h"

#include <gtest/gtest.h>

namespace witmq::cluster {
namespace {

TEST(PlacementTest, PreferredLeadersSpreadEvenly) {
  const std::set<std::string> live = {"a", "b", "c"};
  std::map<std::string, std::vector<std::string>> placements;
  for (int i = 0; i < 9; ++i) {
    placements["ch" + std::to_string(i)] = choose_replicas(live, placements, 3);
  }
  std::map<std::string, int> first;
  for (const auto& [name, replicas] : placements) {
    ASSERT_EQ(replicas.size(), 3u) << name;
    EXPECT_EQ(std::set<std::string>(replicas.begin(), replicas.end()).size(), 3u) << name;
    ++first[replicas[0]];
  }
  EXPECT_EQ(first, (std::map<std::string, int>{{"a", 3}, {"b", 3}, {"c", 3}}));
}

TEST(PlacementTest, ReplicasAreCappedAtTheLiveNodesAndAtLeastOne) {
  EXPECT_EQ(choose_replicas({"a", "b"}, {}, 3).size(), 2u);
  EXPECT_EQ(choose_replicas({"a", "b", "c"}, {}, 1).size(), 1u);
  EXPECT_TRUE(choose_replicas({}, {}, 3).empty());
}

TEST(PlacementTest, DeadNodesDoNotCountTowardsLoad) {
  // "x" is gone: the channels it was first replica of do not make "a" look loaded.
  std::map<std::string, std::vector<std::string>> placements = {{"c1", {"x", "a"}},
                                                                {"c2", {"b", "a"}}};
  EXPECT_EQ(choose_replicas({"a", "b"}, placements, 1), (std::vector<std::string>{"a"}));
}

TEST(PlacementTest, LeaderCandidateIsTheFirstLiveReplica) {
  EXPECT_EQ(leader_candidate({"a", "b", "c"}, {"b", "c"}), "b");
  EXPECT_EQ(leader_candidate({"a", "b", "c"}, {"a", "b", "c"}), "a");
  EXPECT_EQ(leader_candidate({"a"}, {"b"}), std::nullopt);
}

}  // namespace
}  // namespace witmq::cluster
