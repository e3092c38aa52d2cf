// The admin extension frames (docs/PROTOCOL.md section 13): a request's JSON body to a broker
// admin call, and its result back to the reply's JSON (or, for browse, to messages).
//
// The calls may wait on disk (declare commits synchronously, browse reads the log), so the server
// runs them off its I/O threads.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/authenticator.h"
#include "broker/broker.h"
#include "broker/channel_settings.h"
#include "common/message.h"
#include "common/result.h"
#include "net/frames.h"

namespace witmq::net {

struct AdminOptions {
  // The settings a newly declared channel starts from; keys the request leaves out keep these.
  broker::ChannelSettings default_channel;
  // Most messages one browse returns.
  uint32_t max_browse_messages = 10'000;
  // Most message data one browse returns (at least one message): a page of 10,000 messages of
  // 1 MiB would otherwise be read into memory whole. The protocol server sets half its
  // max-frame-bytes, so that the reply fits in a frame.
  size_t max_browse_bytes = 8 << 20;
  // Server-side counters merged into server-stats (connections, requests, bytes, ...).
  std::function<nlohmann::json()> server_counters;
};

// The reply to an admin request: `json` for every op but browse, `messages` for browse.
struct AdminResult {
  std::string json;
  std::vector<Message> messages;
};

// Parses `json` as the request of `op`, performs it and returns the reply. A body that is not an
// object of the documented fields is kInvalidArgument naming the op and the field; a failed call
// returns the broker's error. With `access`, the request is refused with kPermissionDenied unless
// its grants allow it (docs/SECURITY.md): manage for declare, delete, replay and purge; receive
// or manage for browse; monitor for server-stats; channel-list shows only the channels with some
// grant unless monitor is granted. nullptr = no checks.
Result<AdminResult> handle_admin(broker::Broker& broker, AdminOp op, std::string_view json,
                                 const AdminOptions& options, auth::Access* access = nullptr);

// The channel an admin request is about (its "name" or "channel" field), to route it in a
// cluster; nullopt for the node-wide ops (channel-list, server-stats) and for a body without a
// valid channel name (handle_admin then says what is wrong).
std::optional<std::string> admin_channel(AdminOp op, std::string_view json);
// The grant handle_admin requires of `access` for `op` on `channel` (docs/SECURITY.md): manage
// for declare, delete, replay and purge; receive or manage for browse; some grant or monitor for
// channel-stats. A declare naming a dead-letter channel is further checked by handle_admin.
Status authorize_admin(AdminOp op, const std::string& channel, auth::Access& access);

// The channel-stats object of docs/PROTOCOL.md section 13.
nlohmann::json channel_stats_json(const broker::ChannelStats& stats);

}  // namespace witmq::net
