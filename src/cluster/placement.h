// Where a channel's replicas go and which of them leads: pure functions over the cluster's view,
// so that every node decides alike and tests can check the spreading without etcd.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace witmq::cluster {

// The replicas of a new channel, the preferred leader first: min(replicas, live nodes) of
// `live` (at least one). The preferred leader is the live node that is the first replica of the
// fewest channels of `placements` (ties: the smaller id), so that leaders spread over the nodes;
// the other replicas are the live nodes holding the fewest replicas (ties: the smaller id).
// `placements`: every channel's replica list, as stored.
std::vector<std::string> choose_replicas(
    const std::set<std::string>& live,
    const std::map<std::string, std::vector<std::string>>& placements, uint32_t replicas);

// The replica that should lead a channel that has no leader: the first of `replicas` (placement
// order) that is alive; nullopt when none is.
std::optional<std::string> leader_candidate(const std::vector<std::string>& replicas,
                                            const std::set<std::string>& live);

}  // namespace witmq::cluster
