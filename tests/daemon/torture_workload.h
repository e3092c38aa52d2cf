// The workload of the torture test (docs/TORTURE.md): its options, its channels, the random
// choices every part of it shares, and the state its threads share.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "torture.h"
#include "torture_stats.h"

namespace witmq::daemon::torture {

using namespace std::chrono_literals;
using net::Frame;
using net::FrameType;
using nlohmann::json;
using Rng = std::mt19937_64;
using ms = std::chrono::milliseconds;

struct Options {
  uint64_t seed = 0;
  std::chrono::seconds duration{45};
  int clients = 6;
  ms margin{10000};
  ms ping_bound{2000};
};

// The run's phase: clients check failures only while the daemon is meant to be running.
enum class Phase { kRunning, kStopping };

// The channels: four point-to-point queues whose sends the crash check follows, their dead-letter
// channels (the default "<name>.dlq" and "<name>.dead", which declares switch to), a topic, the
// channel the guests consume and the one the forwarding guest sends to.
inline const std::vector<std::string> kQueues = {"t0", "t1", "t2", "t3"};
inline const std::string kTopic = "t.topic";
inline const std::string kGuestIn = "t.guest";
inline const std::string kGuestOut = "guest.out";

inline std::vector<std::string> dead_letter_channels() {
  std::vector<std::string> out;
  for (const auto& q : kQueues) {
    out.push_back(q + ".dlq");
    out.push_back(q + ".dead");
  }
  return out;
}

template <typename T>
const T& pick(Rng& rng, const std::vector<T>& from) {
  return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
}
inline int64_t uniform(Rng& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
inline bool chance(Rng& rng, double p) { return std::bernoulli_distribution(p)(rng); }

// Random channel settings: the policies and limits a declare (or the config) changes.
inline json random_settings(Rng& rng, const std::string& channel) {
  json s;
  if (channel == kTopic) s["kind"] = "publish-subscribe";
  // Not `none`: its appends skip the write-ahead log and a SIGKILL may lose them (README,
  // "Durability"), while the crash check expects every confirmed send back
  // (NoneDurabilityTest covers `none` across a clean stop and a SIGKILL).
  s["durability"] = pick(rng, std::vector<std::string>{"sync", "group"});
  s["abandon-policy"] = pick(rng, std::vector<std::string>{"requeue", "dead-letter", "drop"});
  s["max-deliveries"] = uniform(rng, 0, 4);
  s["lease-ms"] = uniform(rng, 200, 4000);
  s["backoff-initial-ms"] = uniform(rng, 0, 100);
  s["backoff-max-ms"] = uniform(rng, 100, 1000);
  if (channel != kTopic && !Model::is_dead_letter_name(channel)) {
    s["dead-letter-channel"] = chance(rng, 0.5) ? "" : channel + ".dead";
  }
  return s;
}

inline std::string error_text(const Error& e) {
  return std::string(error_code_name(e.code)) + " " + e.message;
}

struct Shared {
  Options options;
  Findings findings;
  Model model;
  StatsChecker stats{findings, model};
  // Channels no client deletes or purges this round, so that the crash check has messages to
  // follow; set between rounds.
  std::set<std::string> protected_channels;
  std::atomic<Phase> phase{Phase::kRunning};
  std::atomic<bool> stop{false};

  bool running() const { return phase.load() == Phase::kRunning && !stop.load(); }
};

}  // namespace witmq::daemon::torture
