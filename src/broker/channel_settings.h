// A channel's settings: every key with its type, default and bounds, defined once. The config
// loader, the admin API and docs/CONFIGURATION.md all go through this file.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "storage/records.h"

namespace witmq::broker {

enum class ChannelKind : uint8_t {
  kPointToPoint = 0,      // a queue: one shared subscription, consumers compete
  kPublishSubscribe = 1,  // a topic: every subscription sees every message
};
std::string_view kind_name(ChannelKind k);  // "point-to-point" / "publish-subscribe"
Result<ChannelKind> parse_kind(std::string_view s);

// What an abandoned (rejected) message becomes.
enum class AbandonPolicy : uint8_t {
  kRequeue = 0,     // available again after an exponential backoff
  kDeadLetter = 1,  // moved to the dead-letter channel at once
  kDrop = 2,        // settled and forgotten
};
std::string_view policy_name(AbandonPolicy p);
Result<AbandonPolicy> parse_policy(std::string_view s);

struct ChannelSettings {
  // "kind": "point-to-point" | "publish-subscribe". Fixed once the channel exists.
  ChannelKind kind = ChannelKind::kPointToPoint;
  // "durability": "sync" | "group" | "none" (see storage::Durability).
  storage::Durability durability = storage::Durability::kGroup;
  // "max-deliveries": deliveries after which a message that is still not completed is
  // dead-lettered, whatever the abandon policy says. 0 = unlimited. Range 0..1000000.
  uint32_t max_deliveries = 10;
  // "lease-ms": how long an acquired message stays acquired without a complete/abandon.
  // Range 100..43200000 (12 h).
  std::chrono::milliseconds lease{30'000};
  // "abandon-policy": "requeue" | "dead-letter" | "drop".
  AbandonPolicy abandon = AbandonPolicy::kRequeue;
  // "backoff-initial-ms" / "backoff-max-ms": requeue delay after failed attempt n is
  // min(initial * 2^(n-1), max). Ranges 0..3600000, with initial <= max.
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{30'000};
  // "dead-letter-channel": where dead letters go. Empty = "<name>.dlq".
  std::string dead_letter_channel;
  // "retention-ms" / "retention-bytes": publish-subscribe only; messages older or beyond the
  // size are removed even when a subscription has not read them. 0 = unlimited.
  std::chrono::milliseconds retention_age{7LL * 24 * 3600 * 1000};
  uint64_t retention_bytes = 0;
  // "replicas": in cluster mode, how many nodes hold the channel (docs/CLUSTERING.md); capped
  // at the number of live nodes when the channel is placed. Ignored by a single node.
  // Range 1..255.
  uint32_t replicas = 3;

  bool operator==(const ChannelSettings&) const = default;
};

// Applies the keys present in `j` (an object) on top of `base`. Unknown keys, wrong types and
// values out of range are errors naming `where` + the key.
Result<ChannelSettings> settings_from_json(const nlohmann::json& j, const ChannelSettings& base,
                                           std::string_view where);
nlohmann::json settings_to_json(const ChannelSettings& s);

// Every key with its type, default and doc string, for docs/CONFIGURATION.md.
struct SettingDoc {
  std::string_view key, type, default_value, doc;
};
const std::vector<SettingDoc>& channel_setting_docs();

}  // namespace witmq::broker
