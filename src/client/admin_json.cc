#include "client/admin_json.h"

#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>

namespace witmq::client {

using json = nlohmann::json;

std::string ChannelStats::dead_letter_target() const {
  return dead_letter_channel.empty() ? name + ".dlq" : dead_letter_channel;
}

namespace admin_json {
namespace {

// A settings value as JSON: an integer when the text is one, else the text.
json setting_value(const std::string& text) {
  int64_t n = 0;
  const char* end = text.data() + text.size();
  if (!text.empty() && text != "-") {
    auto [p, ec] = std::from_chars(text.data(), end, n);
    if (ec == std::errc() && p == end) return n;
  }
  return text;
}

Result<json> parse_object(std::string_view text, std::string_view what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Error(ErrorCode::kInternal,
                 fmt::format("{} reply: not valid JSON: '{}'", what, text.substr(0, 200)));
  }
  if (!j.is_object()) {
    return Error(ErrorCode::kInternal, fmt::format("{} reply: expected a JSON object, got '{}'",
                                                   what, text.substr(0, 200)));
  }
  return j;
}

// Reads field `key` of `j` into `out` when present; a present field of the wrong type is an error.
template <typename T>
Status read_field(const json& j, std::string_view what, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ok_status();
  bool type_ok = false;
  if constexpr (std::is_same_v<T, std::string>) {
    type_ok = it->is_string();
  } else if constexpr (std::is_same_v<T, bool>) {
    type_ok = it->is_boolean();
  } else if constexpr (std::is_unsigned_v<T>) {
    type_ok = it->is_number_unsigned();
  } else {
    type_ok = it->is_number_integer();
  }
  if (!type_ok) {
    return Error(ErrorCode::kInternal, fmt::format("{} reply: field \"{}\" has the wrong type: {}",
                                                   what, key, it->dump()));
  }
  out = it->get<T>();
  return ok_status();
}

Result<ChannelStats> stats_from(const json& j, std::string_view what) {
  if (!j.is_object()) {
    return Error(
        ErrorCode::kInternal,
        fmt::format("{} reply: a channel-stats entry is not an object: {}", what, j.dump()));
  }
  ChannelStats s;
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "name", s.name));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "is-dead-letter", s.is_dead_letter));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "first-seq", s.first_seq));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "head-seq", s.head_seq));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "depth", s.depth));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "in-flight", s.in_flight));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "oldest-age-ms", s.oldest_age_ms));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "sends-total", s.sends_total));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "deliveries-total", s.deliveries_total));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "redeliveries-total", s.redeliveries_total));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "completes-total", s.completes_total));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "abandons-total", s.abandons_total));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "lease-expiries-total", s.lease_expiries_total));
  WITMQ_RETURN_IF_ERROR(read_field(j, what, "dead-letters-total", s.dead_letters_total));
  if (auto it = j.find("settings"); it != j.end() && it->is_object()) {
    WITMQ_RETURN_IF_ERROR(read_field(*it, what, "kind", s.kind));
    WITMQ_RETURN_IF_ERROR(read_field(*it, what, "durability", s.durability));
    WITMQ_RETURN_IF_ERROR(read_field(*it, what, "dead-letter-channel", s.dead_letter_channel));
  }
  if (auto it = j.find("subscriptions"); it != j.end() && it->is_array()) {
    for (const auto& sj : *it) {
      if (!sj.is_object()) continue;
      SubscriptionStats sub;
      WITMQ_RETURN_IF_ERROR(read_field(sj, what, "name", sub.name));
      WITMQ_RETURN_IF_ERROR(read_field(sj, what, "durable", sub.durable));
      WITMQ_RETURN_IF_ERROR(read_field(sj, what, "floor", sub.floor));
      WITMQ_RETURN_IF_ERROR(read_field(sj, what, "next", sub.next));
      WITMQ_RETURN_IF_ERROR(read_field(sj, what, "lag", sub.lag));
      WITMQ_RETURN_IF_ERROR(read_field(sj, what, "in-flight", sub.in_flight));
      WITMQ_RETURN_IF_ERROR(read_field(sj, what, "available", sub.available));
      s.subscriptions.push_back(std::move(sub));
    }
  }
  s.json = j.dump();
  return s;
}

}  // namespace

std::string declare_request(std::string_view name, const ChannelSettings& settings) {
  json j = json::object();
  j["name"] = std::string(name);
  if (!settings.empty()) {
    json s = json::object();
    for (const auto& [k, v] : settings) s[k] = setting_value(v);
    j["settings"] = std::move(s);
  }
  return j.dump();
}

std::string name_request(std::string_view name) {
  json j = json::object();
  j["name"] = std::string(name);
  return j.dump();
}

std::string browse_request(std::string_view channel, uint64_t from, uint32_t max) {
  json j = json::object();
  j["channel"] = std::string(channel);
  j["from"] = from;
  j["max"] = max;
  return j.dump();
}

std::string channel_request(std::string_view channel, std::optional<uint64_t> max) {
  json j = json::object();
  j["channel"] = std::string(channel);
  if (max) j["max"] = *max;
  return j.dump();
}

Result<ChannelStats> parse_channel_stats(std::string_view text) {
  auto j = parse_object(text, "channel-stats");
  if (!j) return std::move(j).error();
  return stats_from(*j, "channel-stats");
}

Result<std::vector<ChannelStats>> parse_channel_list(std::string_view text) {
  auto j = parse_object(text, "channel-list");
  if (!j) return std::move(j).error();
  auto it = j->find("channels");
  if (it == j->end() || !it->is_array()) {
    return Error(ErrorCode::kInternal,
                 fmt::format("channel-list reply: expected a \"channels\" array, got '{}'",
                             text.substr(0, 200)));
  }
  std::vector<ChannelStats> out;
  out.reserve(it->size());
  for (const auto& c : *it) {
    auto s = stats_from(c, "channel-list");
    if (!s) return std::move(s).error();
    out.push_back(std::move(*s));
  }
  return out;
}

Result<uint64_t> parse_count(std::string_view text, std::string_view field) {
  auto j = parse_object(text, field);
  if (!j) return std::move(j).error();
  auto it = j->find(field);
  if (it == j->end() || !it->is_number_unsigned()) {
    return Error(ErrorCode::kInternal,
                 fmt::format("reply: expected an unsigned integer field \"{}\", got '{}'", field,
                             text.substr(0, 200)));
  }
  return it->get<uint64_t>();
}

}  // namespace admin_json
}  // namespace witmq::client
