#include "cli/message_output.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "net/utf8.h"

namespace witmq::cli {
namespace {

using json = nlohmann::json;

std::optional<uint64_t> metadata_number(const Message& m, std::string_view key) {
  const std::string* v = find_metadata(m, key);
  if (!v) return std::nullopt;
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || p != v->data() + v->size()) return std::nullopt;
  return n;
}

std::string_view as_text(const std::vector<uint8_t>& data) {
  return {reinterpret_cast<const char*>(data.data()), data.size()};
}

}  // namespace

std::string base64_encode(const std::vector<uint8_t>& data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (size_t left = data.size() - i; left > 0) {
    uint32_t v = uint32_t{data[i]} << 16;
    if (left == 2) v |= uint32_t{data[i + 1]} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += left == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string format_message(const Message& m, OutputMode mode) {
  switch (mode) {
    case OutputMode::kDataOnly: {
      std::string out(as_text(m.data));
      out += '\n';
      return out;
    }
    case OutputMode::kJson: {
      json j = json::object();
      if (const auto* id = find_metadata(m, meta::kId)) j["id"] = *id;
      if (const auto* ch = find_metadata(m, meta::kChannel)) j["channel"] = *ch;
      if (auto seq = metadata_number(m, meta::kSequence)) j["sequence"] = *seq;
      if (auto attempt = metadata_number(m, meta::kAttempt)) j["attempt"] = *attempt;
      j["format"] = std::string(format_name(m.format));
      size_t bad = 0;
      if (net::is_valid_utf8(as_text(m.data), &bad)) {
        j["data"] = std::string(as_text(m.data));
      } else {
        j["data-base64"] = base64_encode(m.data);
      }
      json md = json::object();
      if (m.metadata) {
        for (const auto& [k, v] : *m.metadata) {
          size_t bad_key = 0;
          size_t bad_value = 0;
          // Strings on the wire are UTF-8 already; guard anyway so dump() cannot throw.
          if (net::is_valid_utf8(k, &bad_key) && net::is_valid_utf8(v, &bad_value)) md[k] = v;
        }
      }
      j["metadata"] = std::move(md);
      return j.dump() + "\n";
    }
    case OutputMode::kText:
      break;
  }
  std::string out = "---";
  if (const auto* id = find_metadata(m, meta::kId)) out += fmt::format(" {}", *id);
  if (const auto* attempt = find_metadata(m, meta::kAttempt)) {
    out += fmt::format(" attempt {},", *attempt);
  }
  out += fmt::format(" {}, {} bytes\n", format_name(m.format), m.data.size());
  if (m.metadata) {
    for (const auto& [k, v] : *m.metadata) {
      if (k == meta::kReceipt || k == meta::kId || k == meta::kAttempt) continue;
      out += fmt::format("{}: {}\n", k, v);
    }
  }
  out += as_text(m.data);
  out += '\n';
  return out;
}

std::string format_channel_list(const std::vector<client::ChannelStats>& channels,
                                OutputMode mode) {
  if (mode == OutputMode::kJson) {
    json arr = json::array();
    for (const auto& c : channels) {
      json j = json::parse(c.json, nullptr, false);
      arr.push_back(j.is_discarded() ? json(c.name) : std::move(j));
    }
    return arr.dump() + "\n";
  }
  size_t width = 4;
  for (const auto& c : channels) width = std::max(width, c.name.size());
  std::string out = fmt::format("{:<{}}  {:<17}  {:<10}  {:>10}  {:>9}\n", "NAME", width, "KIND",
                                "DURABILITY", "DEPTH", "IN-FLIGHT");
  for (const auto& c : channels) {
    out += fmt::format("{:<{}}  {:<17}  {:<10}  {:>10}  {:>9}\n", c.name, width, c.kind,
                       c.durability, c.depth, c.in_flight);
  }
  return out;
}

std::string format_channel_stats(const client::ChannelStats& s, OutputMode mode) {
  if (mode == OutputMode::kJson) return s.json + "\n";
  std::string out;
  out += fmt::format("name: {}\n", s.name);
  json j = json::parse(s.json, nullptr, false);
  if (!j.is_discarded() && j.contains("settings") && j["settings"].is_object()) {
    for (const auto& [k, v] : j["settings"].items()) {
      out += fmt::format("  {}: {}\n", k, v.is_string() ? v.get<std::string>() : v.dump());
    }
  }
  out += fmt::format("dead-letter channel: {}{}\n", s.dead_letter_target(),
                     s.is_dead_letter ? " (this is a dead-letter channel)" : "");
  out += fmt::format("first-seq: {}\nhead-seq: {}\ndepth: {}\nin-flight: {}\noldest-age-ms: {}\n",
                     s.first_seq, s.head_seq, s.depth, s.in_flight, s.oldest_age_ms);
  out += fmt::format(
      "sends: {}\ndeliveries: {}\nredeliveries: {}\ncompletes: {}\nabandons: {}\n"
      "lease-expiries: {}\ndead-letters: {}\n",
      s.sends_total, s.deliveries_total, s.redeliveries_total, s.completes_total, s.abandons_total,
      s.lease_expiries_total, s.dead_letters_total);
  for (const auto& sub : s.subscriptions) {
    out += fmt::format(
        "subscription '{}': {}, floor {}, next {}, lag {}, in-flight {}, available {}\n", sub.name,
        sub.durable ? "durable" : "ephemeral", sub.floor, sub.next, sub.lag, sub.in_flight,
        sub.available);
  }
  return out;
}

std::string format_cluster(const nlohmann::json& c) {
  auto text = [](const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string("-");
  };
  const nlohmann::json& self = c.value("node", nlohmann::json::object());
  std::string out = fmt::format("cluster {}: node {} is {}", text(c, "cluster"), text(self, "id"),
                                text(self, "state"));
  if (self.contains("reason")) out += fmt::format(" ({})", text(self, "reason"));
  out += "\n";
  if (c.contains("replication")) out += fmt::format("replication: {}\n", text(c, "replication"));
  out += "nodes:\n";
  for (const auto& n : c.value("nodes", nlohmann::json::array())) {
    out += fmt::format("  {:<16} {:<10} client {}  peer {}  version {}\n", text(n, "id"),
                       text(n, "state"), text(n, "client-address"), text(n, "peer-address"),
                       text(n, "version"));
  }
  out += "channels:\n";
  for (const auto& ch : c.value("channels", nlohmann::json::array())) {
    std::vector<std::string> replicas;
    for (const auto& r : ch.value("replicas", nlohmann::json::array())) {
      if (r.is_string()) replicas.push_back(r.get<std::string>());
    }
    std::vector<std::string> in_sync;
    for (const auto& r : ch.value("in-sync", nlohmann::json::array())) {
      if (r.is_string()) in_sync.push_back(r.get<std::string>());
    }
    out += fmt::format(
        "  {:<24} leader {:<16} epoch {:<6} replicas {}  in-sync {}", text(ch, "name"),
        ch.contains("leader") && ch["leader"].is_string() ? ch["leader"].get<std::string>()
                                                          : "(none)",
        ch.value("epoch", uint64_t{0}), fmt::join(replicas, ","), fmt::join(in_sync, ","));
    // The followers' lag (positions not yet acknowledged), known where this node leads.
    const std::string name = text(ch, "name");
    const nlohmann::json led = c.value("replication-state", nlohmann::json::object())
                                   .value("channels-led", nlohmann::json::object());
    if (ch.value("this-node-leads", false) && led.contains(name) && led[name].is_object()) {
      std::vector<std::string> lag;
      // Held here: a range-for over value(...).items() would iterate a destroyed temporary.
      const nlohmann::json followers = led[name].value("followers-lag", nlohmann::json::object());
      for (const auto& [id, n] : followers.items()) {
        if (n.is_number_unsigned()) lag.push_back(fmt::format("{}={}", id, n.get<uint64_t>()));
      }
      if (!lag.empty()) out += fmt::format("  lag {}", fmt::join(lag, ","));
    }
    out += "\n";
  }
  return out;
}

}  // namespace witmq::cli
