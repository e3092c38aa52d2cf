#include "cluster/placement.h"

#include <algorithm>

namespace witmq::cluster {

std::vector<std::string> choose_replicas(
    const std::set<std::string>& live,
    const std::map<std::string, std::vector<std::string>>& placements, uint32_t replicas) {
  std::map<std::string, size_t> first, held;
  for (const auto& node : live) first[node] = held[node] = 0;
  for (const auto& [channel, nodes] : placements) {
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!live.contains(nodes[i])) continue;
      ++held[nodes[i]];
      if (i == 0) ++first[nodes[i]];
    }
  }
  std::vector<std::string> candidates(live.begin(), live.end());
  std::vector<std::string> out;
  if (candidates.empty()) return out;
  auto leader = std::min_element(candidates.begin(), candidates.end(),
                                 [&](const std::string& a, const std::string& b) {
                                   return first[a] != first[b] ? first[a] < first[b] : a < b;
                                 });
  out.push_back(*leader);
  candidates.erase(leader);
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](const std::string& a, const std::string& b) {
                     return held[a] != held[b] ? held[a] < held[b] : a < b;
                   });
  const size_t want = std::max<size_t>(1, std::min<size_t>(replicas, live.size()));
  for (size_t i = 0; out.size() < want && i < candidates.size(); ++i) out.push_back(candidates[i]);
  return out;
}

std::optional<std::string> leader_candidate(const std::vector<std::string>& replicas,
                                            const std::set<std::string>& live) {
  for (const auto& node : replicas) {
    if (live.contains(node)) return node;
  }
  return std::nullopt;
}

}  // namespace witmq::cluster
