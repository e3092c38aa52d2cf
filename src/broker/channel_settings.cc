#include "broker/channel_settings.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace witmq::broker {

using nlohmann::json;

std::string_view kind_name(ChannelKind k) {
  return k == ChannelKind::kPointToPoint ? "point-to-point" : "publish-subscribe";
}

Result<ChannelKind> parse_kind(std::string_view s) {
  if (s == "point-to-point" || s == "queue") return ChannelKind::kPointToPoint;
  if (s == "publish-subscribe" || s == "topic") return ChannelKind::kPublishSubscribe;
  return invalid_argument(
      fmt::format("kind: '{}' is not one of point-to-point (queue), publish-subscribe (topic)", s));
}

std::string_view policy_name(AbandonPolicy p) {
  switch (p) {
    case AbandonPolicy::kRequeue:
      return "requeue";
    case AbandonPolicy::kDeadLetter:
      return "dead-letter";
    case AbandonPolicy::kDrop:
      return "drop";
  }
  return "invalid";
}

Result<AbandonPolicy> parse_policy(std::string_view s) {
  if (s == "requeue") return AbandonPolicy::kRequeue;
  if (s == "dead-letter") return AbandonPolicy::kDeadLetter;
  if (s == "drop") return AbandonPolicy::kDrop;
  return invalid_argument(
      fmt::format("abandon-policy: '{}' is not one of requeue, dead-letter, drop", s));
}

const std::vector<SettingDoc>& channel_setting_docs() {
  static const std::vector<SettingDoc> docs = {
      {"kind", "string", "point-to-point",
       "point-to-point (alias queue): one shared subscription, consumers compete. "
       "publish-subscribe (alias topic): every subscription sees every message. Fixed once the "
       "channel exists."},
      {"durability", "string", "group",
       "sync: a send is confirmed after its own fsync. group: confirmed after an fsync shared with "
       "every write queued at that moment. none: confirmed once in memory, without the "
       "write-ahead log; on disk at the next memtable flush and at a clean stop (SIGTERM), so a "
       "crash of witmqd or of the machine loses the messages not flushed yet (at most "
       "storage-write-buffer-bytes); settlements are still written to the write-ahead log."},
      {"max-deliveries", "integer 0..1000000", "10",
       "Deliveries after which a message still not completed goes to the dead-letter channel, "
       "whatever abandon-policy says. 0 = unlimited."},
      {"lease-ms", "integer 100..43200000", "30000",
       "How long a delivered message stays acquired without complete or abandon; then it is "
       "available again and the delivery counts as a failed attempt."},
      {"abandon-policy", "string", "requeue",
       "What abandon does: requeue (available again after a backoff), dead-letter (moved to the "
       "dead-letter channel at once) or drop (settled and forgotten)."},
      {"backoff-initial-ms", "integer 0..3600000", "100",
       "Requeue delay after the first failed attempt; doubles with each further attempt."},
      {"backoff-max-ms", "integer 0..3600000", "30000", "Upper bound of the requeue delay."},
      {"dead-letter-channel", "string", "\"\" (= <name>.dlq)",
       "The point-to-point channel dead letters are moved to."},
      {"retention-ms", "integer >= 0", "604800000 (7 days)",
       "publish-subscribe only: messages older than this are removed even if a subscription has "
       "not settled them. 0 = unlimited."},
      {"retention-bytes", "integer >= 0", "0",
       "publish-subscribe only: when the channel's log is larger than this (approximately), the "
       "oldest messages are removed. 0 = unlimited."},
      {"replicas", "integer 1..255", "3",
       "Cluster mode only (docs/CLUSTERING.md): the number of nodes the channel is placed on, "
       "capped at the live nodes when it is placed; one of them leads it, and its writes are "
       "acknowledged once a majority of them holds them. A single node ignores it."},
  };
  return docs;
}

namespace {

Result<int64_t> get_int(const json& v, std::string_view where, std::string_view key, int64_t lo,
                        int64_t hi) {
  if (!v.is_number_integer()) {
    return invalid_argument(
        fmt::format("{}.{}: expected an integer, got {}", where, key, v.dump()));
  }
  auto n = v.get<int64_t>();
  if (n < lo || n > hi) {
    return invalid_argument(fmt::format("{}.{}: {} is out of range {}..{}", where, key, n, lo, hi));
  }
  return n;
}

Result<std::string> get_string(const json& v, std::string_view where, std::string_view key) {
  if (!v.is_string()) {
    return invalid_argument(fmt::format("{}.{}: expected a string, got {}", where, key, v.dump()));
  }
  return v.get<std::string>();
}

Status prefix(Status s, std::string_view where) {
  if (s.ok()) return s;
  return Error(s.error().code, fmt::format("{}.{}", where, s.error().message));
}

}  // namespace

Result<ChannelSettings> settings_from_json(const json& j, const ChannelSettings& base,
                                           std::string_view where) {
  if (!j.is_object()) {
    return invalid_argument(fmt::format("{}: expected an object, got {}", where, j.dump()));
  }
  ChannelSettings s = base;
  for (const auto& [key, v] : j.items()) {
    if (key == "kind") {
      auto str = get_string(v, where, key);
      if (!str) return std::move(str).error();
      auto k = parse_kind(*str);
      if (!k) return prefix(std::move(k).error(), where).error();
      s.kind = *k;
    } else if (key == "durability") {
      auto str = get_string(v, where, key);
      if (!str) return std::move(str).error();
      auto d = storage::parse_durability(*str);
      if (!d) return prefix(std::move(d).error(), where).error();
      s.durability = *d;
    } else if (key == "max-deliveries") {
      auto n = get_int(v, where, key, 0, 1'000'000);
      if (!n) return std::move(n).error();
      s.max_deliveries = static_cast<uint32_t>(*n);
    } else if (key == "lease-ms") {
      auto n = get_int(v, where, key, 100, 43'200'000);
      if (!n) return std::move(n).error();
      s.lease = std::chrono::milliseconds(*n);
    } else if (key == "abandon-policy") {
      auto str = get_string(v, where, key);
      if (!str) return std::move(str).error();
      auto p = parse_policy(*str);
      if (!p) return prefix(std::move(p).error(), where).error();
      s.abandon = *p;
    } else if (key == "backoff-initial-ms") {
      auto n = get_int(v, where, key, 0, 3'600'000);
      if (!n) return std::move(n).error();
      s.backoff_initial = std::chrono::milliseconds(*n);
    } else if (key == "backoff-max-ms") {
      auto n = get_int(v, where, key, 0, 3'600'000);
      if (!n) return std::move(n).error();
      s.backoff_max = std::chrono::milliseconds(*n);
    } else if (key == "dead-letter-channel") {
      auto str = get_string(v, where, key);
      if (!str) return std::move(str).error();
      if (!str->empty()) {
        auto st = validate_channel_name(*str);
        if (!st) return prefix(std::move(st).error(), fmt::format("{}.{}", where, key)).error();
      }
      s.dead_letter_channel = *str;
    } else if (key == "retention-ms") {
      auto n = get_int(v, where, key, 0, INT64_MAX / 2);
      if (!n) return std::move(n).error();
      s.retention_age = std::chrono::milliseconds(*n);
    } else if (key == "retention-bytes") {
      auto n = get_int(v, where, key, 0, INT64_MAX / 2);
      if (!n) return std::move(n).error();
      s.retention_bytes = static_cast<uint64_t>(*n);
    } else if (key == "replicas") {
      auto n = get_int(v, where, key, 1, 255);
      if (!n) return std::move(n).error();
      s.replicas = static_cast<uint32_t>(*n);
    } else {
      return invalid_argument(fmt::format(
          "{}.{}: unknown channel setting (known: kind, durability, max-deliveries, lease-ms, "
          "abandon-policy, backoff-initial-ms, backoff-max-ms, dead-letter-channel, "
          "retention-ms, retention-bytes, replicas)",
          where, key));
    }
  }
  if (s.backoff_initial > s.backoff_max) {
    return invalid_argument(fmt::format("{}.backoff-initial-ms: {} exceeds backoff-max-ms {}",
                                        where, s.backoff_initial.count(), s.backoff_max.count()));
  }
  return s;
}

json settings_to_json(const ChannelSettings& s) {
  return json{
      {"kind", kind_name(s.kind)},
      {"durability", storage::durability_name(s.durability)},
      {"max-deliveries", s.max_deliveries},
      {"lease-ms", s.lease.count()},
      {"abandon-policy", policy_name(s.abandon)},
      {"backoff-initial-ms", s.backoff_initial.count()},
      {"backoff-max-ms", s.backoff_max.count()},
      {"dead-letter-channel", s.dead_letter_channel},
      {"retention-ms", s.retention_age.count()},
      {"retention-bytes", s.retention_bytes},
      {"replicas", s.replicas},
  };
}

}  // namespace witmq::broker
