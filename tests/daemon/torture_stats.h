// Channel-stats checks of the torture test (docs/TORTURE.md): each channel-stats object alone,
// and against the earlier samples it must not fall behind.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "torture.h"

namespace witmq::daemon::torture {

// A channel-stats sample, for the check that counters never go backwards.
struct Sample {
  Clock::time_point sent, received;
  uint64_t deletes_at_send = 0;  // deletes of the channel started when the request went out
  bool delete_in_flight = false;
  uint64_t deletes_at_receive = 0;
  std::map<std::string, uint64_t> counters;
};

// Channel-stats checks shared by every client: each sample is checked alone, and against earlier
// samples that the daemon certainly took before it (answered before it was asked) with no delete
// in between.
class StatsChecker {
 public:
  StatsChecker(Findings& findings, Model& model) : findings_(findings), model_(model) {}

  void check(const nlohmann::json& st, Clock::time_point sent,
             std::pair<uint64_t, uint64_t> deletes_at_send, const std::string& context) {
    const std::string name = st.value("name", "");
    const std::string where = context + " " + name + ": ";
    static const std::vector<std::string> kCounters = {
        "first-seq",          "head-seq",        "sends-total",    "deliveries-total",
        "redeliveries-total", "completes-total", "abandons-total", "lease-expiries-total",
        "dead-letters-total"};
    Sample sample;
    sample.sent = sent;
    sample.received = Clock::now();
    sample.deletes_at_send = deletes_at_send.first;
    sample.delete_in_flight = deletes_at_send.first != deletes_at_send.second;
    sample.deletes_at_receive = model_.deletes(name).first;
    // Any counter that wrapped below zero shows as a number near 2^64.
    auto number = [&](const nlohmann::json& j, const std::string& key) -> uint64_t {
      if (!j.contains(key) || !j[key].is_number_integer() ||
          (j[key].is_number_integer() && !j[key].is_number_unsigned() &&
           j[key].get<int64_t>() < 0)) {
        findings_.fail("stats-malformed", where + key + " is not a non-negative integer: " +
                                              (j.contains(key) ? j[key].dump() : "missing"));
        return 0;
      }
      const uint64_t v = j[key].get<uint64_t>();
      if (v > (uint64_t{1} << 48)) {
        findings_.fail("stats-negative", where + key + " = " + std::to_string(v) +
                                             " (wrapped below zero) in " + st.dump());
      }
      return v;
    };
    for (const auto& c : kCounters) sample.counters[c] = number(st, c);
    const uint64_t depth = number(st, "depth");
    const uint64_t in_flight = number(st, "in-flight");
    const uint64_t head = sample.counters["head-seq"];
    const uint64_t first = sample.counters["first-seq"];
    if (first > head)
      findings_.fail("stats-inconsistent", where + "first-seq > head-seq: " + st.dump());
    if (depth > head)
      findings_.fail("stats-inconsistent", where + "depth > head-seq: " + st.dump());
    uint64_t sub_in_flight = 0;
    for (const nlohmann::json& sub : st.value("subscriptions", nlohmann::json::array())) {
      const uint64_t floor = number(sub, "floor"), next = number(sub, "next");
      const uint64_t lag = number(sub, "lag"), avail = number(sub, "available");
      const uint64_t sin = number(sub, "in-flight");
      sub_in_flight += sin;
      if (floor > next) {
        findings_.fail("stats-inconsistent", where + "floor > next: " + st.dump());
      }
      // A topic subscription that starts while a send commits starts after that send: its next
      // may be ahead of head-seq (the committed end) for that moment.
      if (next > head) {
        if (st["settings"].value("kind", "") == "publish-subscribe") {
          findings_.count("topic subscription next ahead of head-seq (seen)");
        } else {
          findings_.fail("stats-inconsistent", where + "next > head-seq: " + st.dump());
        }
      }
      if (sin + avail > lag || lag > depth) {
        findings_.fail("stats-inconsistent",
                       where + "not in-flight + available <= lag <= depth: " + st.dump());
      }
    }
    if (sub_in_flight != in_flight) {
      findings_.fail("stats-inconsistent",
                     where + "in-flight is not the subscriptions' sum: " + st.dump());
    }

    std::lock_guard lock(mu_);
    auto& history = samples_[name];
    for (const Sample& before : history) {
      if (!(before.received < sample.sent) || before.delete_in_flight ||
          before.deletes_at_send != sample.deletes_at_receive) {
        continue;
      }
      for (const auto& [c, v] : before.counters) {
        if (sample.counters[c] < v) {
          findings_.fail("stats-backwards", where + c + " went from " + std::to_string(v) + " to " +
                                                std::to_string(sample.counters[c]));
        }
      }
    }
    history.push_back(std::move(sample));
    if (history.size() > 8) history.pop_front();
    findings_.count("stats samples checked");
  }

  // After a restart nothing is comparable with what the killed daemon said.
  void restarted() {
    std::lock_guard lock(mu_);
    samples_.clear();
  }

 private:
  Findings& findings_;
  Model& model_;
  std::mutex mu_;
  std::map<std::string, std::deque<Sample>> samples_;
};

}  // namespace witmq::daemon::torture
