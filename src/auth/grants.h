// What an identity (or a guest) may do: per action, the channel-name patterns it is granted.
// Nothing is allowed unless a pattern grants it.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace witmq::auth {

// send: send frames and HTTP publishing. receive: the receives, update-guest-configuration's
// channels, streams, browse; settling what was received. manage: channel-declare, -delete,
// replay, purge.
enum class Action : uint8_t { kSend, kReceive, kManage };
std::string_view action_name(Action action);  // "send", "receive", "manage"

// A channel-name pattern: the characters of a channel name (docs/PROTOCOL.md section 11) and `*`,
// which matches any run of characters, "." and "/" included. "orders.*" matches "orders.eu" and
// "orders.eu.dlq" but not "orders"; "*" matches every channel.
class ChannelPattern {
 public:
  // Errors say what is wrong with `text` (the caller names the field).
  static Result<ChannelPattern> parse(std::string_view text);

  bool matches(std::string_view channel) const;
  // "*" (or "**"...): every channel.
  bool matches_everything() const { return everything_; }
  const std::string& text() const { return text_; }
  bool operator==(const ChannelPattern& o) const { return text_ == o.text_; }

 private:
  std::string text_;
  bool everything_ = false;
};

struct Grants {
  std::vector<ChannelPattern> send, receive, manage;
  // Read-only figures with no message content: server-stats, /metrics, the full channel list,
  // channel-stats of any channel, /v1/guests and /v1/server.
  bool monitor = false;

  bool allows(Action action, std::string_view channel) const;
  // Some action on `channel` (what channel-list and channel-stats show without monitor).
  bool allows_any(std::string_view channel) const;
  // manage on "*": server-wide operations that touch every channel (checkpoint).
  bool manages_everything() const;
  bool operator==(const Grants&) const = default;

  // Every action on every channel, and monitor.
  static Grants everything();
};

// kPermissionDenied unless `grants` allow `action` on `channel`: "<who> may not send to channel
// 'orders' (its send grants: billing.*)". `who` is "identity 'billing'", "guest 'audit'", ...
Status check_grants(const Grants& grants, Action action, std::string_view channel,
                    std::string_view who);

// Reads the optional "send", "receive" and, when `with_manage` is set, "manage" and "monitor"
// members of `object` into `out`: arrays of patterns and a boolean. Errors name
// `where`.<key>[i] and what was wrong; other members are left for the caller to check.
Status read_grants(const nlohmann::json& object, std::string_view where, bool with_manage,
                   Grants& out);

// {"send": [...], "receive": [...], "manage": [...], "monitor": b} (manage and monitor only when
// `with_manage`).
nlohmann::json grants_to_json(const Grants& grants, bool with_manage);

}  // namespace witmq::auth
