#include "net/admin.h"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <optional>

#include "common/json_depth.h"

namespace witmq::net {

namespace {

using nlohmann::json;

std::string_view op_name(AdminOp op) {
  return frame_type_name(static_cast<FrameType>(kAdminRequestBase + static_cast<uint8_t>(op)));
}

// The fields of one admin request body, checked against the op's documented field list.
class Fields {
 public:
  static Result<Fields> parse(AdminOp op, std::string_view text,
                              std::initializer_list<std::string_view> known) {
    if (auto st = check_json_depth(text); !st) {
      return invalid_argument(fmt::format("{}: {}", op_name(op), st.error().message));
    }
    json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) {
      return invalid_argument(
          fmt::format("{}: the body is not valid JSON, expected an object", op_name(op)));
    }
    if (!body.is_object()) {
      return invalid_argument(
          fmt::format("{}: the body is {}, expected a JSON object", op_name(op), body.type_name()));
    }
    for (const auto& [key, value] : body.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        std::string list;
        for (auto k : known) list += fmt::format("{}{}", list.empty() ? "" : ", ", k);
        return invalid_argument(fmt::format("{}: unknown field '{}', expected {}", op_name(op), key,
                                            list.empty() ? "none" : list));
      }
    }
    return Fields(op, std::move(body));
  }

  // A required channel-name field.
  Result<std::string> channel(std::string_view key) const {
    auto it = body_.find(key);
    if (it == body_.end()) {
      return invalid_argument(fmt::format("{}: field '{}' is missing", op_name(op_), key));
    }
    if (!it->is_string()) {
      return invalid_argument(fmt::format("{}: field '{}' is {}, expected a string", op_name(op_),
                                          key, it->type_name()));
    }
    auto name = it->get<std::string>();
    if (auto st = validate_channel_name(name); !st) {
      return invalid_argument(
          fmt::format("{}: field '{}': {}", op_name(op_), key, st.error().message));
    }
    return name;
  }

  // An optional non-negative integer field.
  Result<uint64_t> count(std::string_view key, uint64_t fallback) const {
    auto it = body_.find(key);
    if (it == body_.end()) return fallback;
    if (!it->is_number_unsigned()) {
      return invalid_argument(fmt::format("{}: field '{}' is {}, expected a non-negative integer",
                                          op_name(op_), key, it->dump()));
    }
    return it->get<uint64_t>();
  }

  // An optional object field; nullptr when absent.
  Result<const json*> object(std::string_view key) const {
    auto it = body_.find(key);
    if (it == body_.end()) return static_cast<const json*>(nullptr);
    if (!it->is_object()) {
      return invalid_argument(fmt::format("{}: field '{}' is {}, expected an object", op_name(op_),
                                          key, it->type_name()));
    }
    return &*it;
  }

 private:
  Fields(AdminOp op, json body) : op_(op), body_(std::move(body)) {}
  AdminOp op_;
  json body_;
};

// Never throws: a string that is not UTF-8 is written with U+FFFD in its place.
Result<AdminResult> json_result(const json& j) {
  return AdminResult{j.dump(-1, ' ', false, json::error_handler_t::replace), {}};
}

// Naming a dead-letter channel makes the broker write there (and create and mark it), so an
// identity may name only a channel it may write to: send or manage on it; manage when it exists
// and is not a dead-letter channel yet (it becomes one). With auto-create-channels off it must
// exist, as for a send.
Status may_dead_letter_into(broker::Broker& b, const std::string& channel, const std::string& dlq,
                            auth::Access& access) {
  auto denied = [&](const Error& e) {
    return Error(e.code, fmt::format("channel-declare: channel '{}': dead-letter-channel '{}': {}",
                                     channel, dlq, e.message));
  };
  const bool manages = access.allows(auth::Action::kManage, dlq);
  if (!manages) {
    if (auto st = access.check(auth::Action::kSend, dlq); !st) return denied(st.error());
  }
  auto existing = b.channel_stats(dlq);
  if (!existing) {
    if (!b.creates_channels_on_use()) {
      return Error(ErrorCode::kFailedPrecondition,
                   fmt::format("channel-declare: channel '{}': dead-letter-channel '{}' does not "
                               "exist and auto-create-channels is off; declare it first",
                               channel, dlq));
    }
    return ok_status();
  }
  if (!existing->is_dead_letter && !manages) {
    return denied(access.check(auth::Action::kManage, dlq).error());
  }
  return ok_status();
}

Result<AdminResult> declare(broker::Broker& b, const Fields& f, const AdminOptions& options,
                            auth::Access* access) {
  auto name = f.channel("name");
  if (!name) return std::move(name).error();
  auto settings = f.object("settings");
  if (!settings) return std::move(settings).error();
  // Keys left out keep the channel's current value, or the server default for a new channel.
  broker::ChannelSettings base = options.default_channel;
  if (auto existing = b.channel_stats(*name)) base = existing->settings;
  broker::ChannelSettings merged = base;
  if (*settings) {
    auto parsed = broker::settings_from_json(**settings, base, "channel-declare: settings");
    if (!parsed) return std::move(parsed).error();
    merged = *parsed;
  }
  if (access && !merged.dead_letter_channel.empty() &&
      merged.dead_letter_channel != base.dead_letter_channel) {
    WITMQ_RETURN_IF_ERROR(may_dead_letter_into(b, *name, merged.dead_letter_channel, *access));
  }
  WITMQ_RETURN_IF_ERROR(b.declare_channel(*name, merged));
  return json_result(json::object());
}

Result<AdminResult> browse(broker::Broker& b, const Fields& f, const AdminOptions& options) {
  auto channel = f.channel("channel");
  if (!channel) return std::move(channel).error();
  auto from = f.count("from", 0);
  if (!from) return std::move(from).error();
  auto max = f.count("max", 100);
  if (!max) return std::move(max).error();
  if (*max > options.max_browse_messages) {
    return Error(ErrorCode::kResourceExhausted,
                 fmt::format("browse: field 'max' is {}, the limit is max-receive-messages {}",
                             *max, options.max_browse_messages));
  }
  // Read in small steps, so that a page of large messages stops near max_browse_bytes instead of
  // reading `max` of them into memory first; one message is always returned when there is one.
  constexpr uint32_t kStep = 16;
  std::vector<Message> out;
  size_t bytes = 0;
  uint64_t next = *from;
  while (out.size() < *max) {
    const auto want = static_cast<uint32_t>(std::min<uint64_t>(kStep, *max - out.size()));
    auto messages = b.browse(*channel, next, want);
    if (!messages) return std::move(messages).error();
    if (messages->empty()) break;
    for (Message& m : *messages) {
      if (!out.empty() && bytes + m.data.size() > options.max_browse_bytes) {
        return AdminResult{{}, std::move(out)};
      }
      bytes += m.data.size();
      const std::string* seq = find_metadata(m, meta::kSequence);
      next = seq ? std::stoull(*seq) + 1 : next + 1;
      out.push_back(std::move(m));
    }
  }
  return AdminResult{{}, std::move(out)};
}

Result<AdminResult> server_stats(broker::Broker& b, const AdminOptions& options) {
  json j = options.server_counters ? options.server_counters() : json::object();
  const storage::StoreStats s = b.store_stats();
  j["store"] = {{"commits", s.commits},
                {"writes", s.writes},
                {"syncs", s.syncs},
                {"bytes-written", s.bytes_written},
                {"sync-micros-total", s.sync_micros_total},
                {"max-requests-per-write", s.max_requests_per_write},
                {"recovery-orphans-removed",
                 {{"subscriptions", s.recovered_orphans.subscriptions},
                  {"cursors", s.recovered_orphans.cursors},
                  {"delivery-records", s.recovered_orphans.delivery_records},
                  {"heads", s.recovered_orphans.heads},
                  {"message-channels", s.recovered_orphans.message_channels}}}};
  const auto channels = b.list_channels();
  uint64_t depth = 0, in_flight = 0;
  for (const auto& c : channels) {
    depth += c.depth;
    in_flight += c.in_flight;
  }
  j["channels"] = channels.size();
  j["depth"] = depth;
  j["in-flight"] = in_flight;
  return json_result(j);
}

}  // namespace

std::optional<std::string> admin_channel(AdminOp op, std::string_view text) {
  const char* key = nullptr;
  switch (op) {
    case AdminOp::kChannelDeclare:
    case AdminOp::kChannelDelete:
    case AdminOp::kChannelStats:
      key = "name";
      break;
    case AdminOp::kBrowse:
    case AdminOp::kReplayDeadLetters:
    case AdminOp::kPurge:
      key = "channel";
      break;
    case AdminOp::kChannelList:
    case AdminOp::kServerStats:
      return std::nullopt;
  }
  if (!key || !check_json_depth(text).ok()) return std::nullopt;
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) return std::nullopt;
  auto it = body.find(key);
  if (it == body.end() || !it->is_string()) return std::nullopt;
  std::string name = it->get<std::string>();
  if (!validate_channel_name(name).ok()) return std::nullopt;
  return name;
}

Status authorize_admin(AdminOp op, const std::string& channel, auth::Access& access) {
  auto may = [&](auth::Action action) -> Status {
    auto st = access.check(action, channel);
    if (!st) return Error(st.error().code, fmt::format("{}: {}", op_name(op), st.error().message));
    return ok_status();
  };
  switch (op) {
    case AdminOp::kChannelDeclare:
    case AdminOp::kChannelDelete:
    case AdminOp::kReplayDeadLetters:
    case AdminOp::kPurge:
      return may(auth::Action::kManage);
    case AdminOp::kChannelStats:
      if (!access.monitor() && !access.allows_any(channel)) {
        return Error(ErrorCode::kPermissionDenied,
                     fmt::format("channel-stats: identity '{}' has no grant on channel '{}' and "
                                 "not the monitor grant",
                                 access.name(), channel));
      }
      return ok_status();
    case AdminOp::kBrowse:
      // Browsing shows message contents: receive (or manage) on the channel.
      if (access.allows(auth::Action::kManage, channel)) return ok_status();
      return may(auth::Action::kReceive);
    case AdminOp::kChannelList:
    case AdminOp::kServerStats:
      break;
  }
  return ok_status();
}

json channel_stats_json(const broker::ChannelStats& s) {
  json subs = json::array();
  for (const auto& sub : s.subscriptions) {
    subs.push_back({{"name", sub.name},
                    {"durable", sub.durable},
                    {"floor", sub.floor},
                    {"next", sub.next},
                    {"lag", sub.lag},
                    {"in-flight", sub.in_flight},
                    {"available", sub.available}});
  }
  return {{"name", s.name},
          {"settings", broker::settings_to_json(s.settings)},
          {"is-dead-letter", s.is_dead_letter},
          {"first-seq", s.first_seq},
          {"head-seq", s.head_seq},
          {"depth", s.depth},
          {"in-flight", s.in_flight},
          {"oldest-age-ms", s.oldest_age_ms},
          {"sends-total", s.sends_total},
          {"deliveries-total", s.deliveries_total},
          {"redeliveries-total", s.redeliveries_total},
          {"completes-total", s.completes_total},
          {"abandons-total", s.abandons_total},
          {"lease-expiries-total", s.lease_expiries_total},
          {"dead-letters-total", s.dead_letters_total},
          {"subscriptions", std::move(subs)}};
}

Result<AdminResult> handle_admin(broker::Broker& b, AdminOp op, std::string_view text,
                                 const AdminOptions& options, auth::Access* access) {
  // Each check runs once the request parsed, so a malformed request is invalid-argument whoever
  // sends it, and before the broker is touched.
  auto may = [&](const std::string& channel) -> Status {
    return access ? authorize_admin(op, channel, *access) : ok_status();
  };
  switch (op) {
    case AdminOp::kChannelList: {
      auto f = Fields::parse(op, text, {});
      if (!f) return std::move(f).error();
      // Without monitor, an identity sees the channels it has some grant on.
      const bool all = !access || access->monitor();
      json list = json::array();
      for (const auto& s : b.list_channels()) {
        if (all || access->allows_any(s.name)) list.push_back(channel_stats_json(s));
      }
      return json_result({{"channels", std::move(list)}});
    }
    case AdminOp::kChannelDeclare: {
      auto f = Fields::parse(op, text, {"name", "settings"});
      if (!f) return std::move(f).error();
      auto name = f->channel("name");
      if (!name) return std::move(name).error();
      WITMQ_RETURN_IF_ERROR(may(*name));
      return declare(b, *f, options, access);
    }
    case AdminOp::kChannelDelete: {
      auto f = Fields::parse(op, text, {"name"});
      if (!f) return std::move(f).error();
      auto name = f->channel("name");
      if (!name) return std::move(name).error();
      WITMQ_RETURN_IF_ERROR(may(*name));
      WITMQ_RETURN_IF_ERROR(b.delete_channel(*name));
      return json_result(json::object());
    }
    case AdminOp::kChannelStats: {
      auto f = Fields::parse(op, text, {"name"});
      if (!f) return std::move(f).error();
      auto name = f->channel("name");
      if (!name) return std::move(name).error();
      WITMQ_RETURN_IF_ERROR(may(*name));
      auto stats = b.channel_stats(*name);
      if (!stats) return std::move(stats).error();
      return json_result(channel_stats_json(*stats));
    }
    case AdminOp::kBrowse: {
      auto f = Fields::parse(op, text, {"channel", "from", "max"});
      if (!f) return std::move(f).error();
      auto channel = f->channel("channel");
      if (!channel) return std::move(channel).error();
      WITMQ_RETURN_IF_ERROR(may(*channel));
      return browse(b, *f, options);
    }
    case AdminOp::kReplayDeadLetters: {
      auto f = Fields::parse(op, text, {"channel", "max"});
      if (!f) return std::move(f).error();
      auto channel = f->channel("channel");
      if (!channel) return std::move(channel).error();
      WITMQ_RETURN_IF_ERROR(may(*channel));
      auto max = f->count("max", std::numeric_limits<uint64_t>::max());
      if (!max) return std::move(max).error();
      auto moved = b.replay_dead_letters(*channel, *max);
      if (!moved) return std::move(moved).error();
      return json_result({{"moved", *moved}});
    }
    case AdminOp::kPurge: {
      auto f = Fields::parse(op, text, {"channel"});
      if (!f) return std::move(f).error();
      auto channel = f->channel("channel");
      if (!channel) return std::move(channel).error();
      WITMQ_RETURN_IF_ERROR(may(*channel));
      auto purged = b.purge(*channel);
      if (!purged) return std::move(purged).error();
      return json_result({{"purged", *purged}});
    }
    case AdminOp::kServerStats: {
      auto f = Fields::parse(op, text, {});
      if (!f) return std::move(f).error();
      if (access) WITMQ_RETURN_IF_ERROR(access->check_monitor("server-stats"));
      return server_stats(b, options);
    }
  }
  return Error(ErrorCode::kUnsupported,
               fmt::format("admin op {} is unknown", static_cast<int>(op)));
}

}  // namespace witmq::net
