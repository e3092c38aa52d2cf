#include "broker/extensions.h"

#include <fmt/format.h>
#include <time.h>

#include <charconv>

namespace witmq::broker {

const std::vector<ExtensionDoc>& extension_docs() {
  static const std::vector<ExtensionDoc> docs = {
      {"start",
       "earliest | latest | <sequence> | time:<ms since epoch> | time:<YYYY-MM-DDTHH:MM:SSZ>",
       "latest",
       "Where a new publish-subscribe subscription starts. An existing durable subscription keeps "
       "its position."},
      {"group", "a name (channel-name characters)", "the client's connect name",
       "The durable subscription to read through; clients sharing a group compete for its "
       "messages. On a point-to-point channel it is ignored: there is one shared subscription."},
      {"batch-size", "1..max-batch-size", "server default-batch-size (100)",
       "Most messages one receive returns."},
      {"lease-ms", "100..43200000", "the channel's lease-ms",
       "How long received messages stay acquired before they are available again."},
      {"settlement", "explicit | auto", "explicit",
       "auto completes messages as they are delivered (at-most-once); explicit waits for "
       "complete-message or abandon-message."},
  };
  return docs;
}

namespace {

Result<uint64_t> parse_u64(std::string_view key, std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) {
    return invalid_argument(
        fmt::format("extension {}: '{}' is not a non-negative integer", key, s));
  }
  return v;
}

Result<StartPosition> parse_start(std::string_view v) {
  StartPosition p;
  if (v == "latest") return p;
  if (v == "earliest") {
    p.kind = StartPosition::Kind::kEarliest;
    return p;
  }
  if (v.starts_with("time:")) {
    std::string_view t = v.substr(5);
    p.kind = StartPosition::Kind::kTime;
    if (!t.empty() && t.find_first_not_of("0123456789") == std::string_view::npos) {
      auto n = parse_u64("start", t);
      if (!n) return std::move(n).error();
      p.value = *n;
      return p;
    }
    std::string buf(t);
    struct tm tm {};
    const char* end = strptime(buf.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end == nullptr || *end != '\0') {
      return invalid_argument(fmt::format(
          "extension start: '{}' is not time:<ms since epoch> or time:YYYY-MM-DDTHH:MM:SSZ", v));
    }
    p.value = static_cast<uint64_t>(timegm(&tm)) * 1000;
    return p;
  }
  auto n = parse_u64("start", v);
  if (!n) {
    return invalid_argument(fmt::format(
        "extension start: '{}' is not earliest, latest, a sequence number or time:<...>", v));
  }
  p.kind = StartPosition::Kind::kSequence;
  p.value = *n;
  return p;
}

}  // namespace

Result<ConsumerOptions> parse_extensions(const std::optional<Metadata>& extensions,
                                         uint32_t max_batch_size) {
  ConsumerOptions o;
  if (!extensions) return o;
  for (const auto& [key, value] : *extensions) {
    if (key == "start") {
      auto s = parse_start(value);
      if (!s) return std::move(s).error();
      o.start = *s;
    } else if (key == "group") {
      auto st = validate_channel_name(value);
      if (!st) {
        return invalid_argument(
            fmt::format("extension group: {}", st.error().message.substr(9)));  // drop "channel: "
      }
      o.group = value;
    } else if (key == "batch-size") {
      auto n = parse_u64(key, value);
      if (!n) return std::move(n).error();
      if (*n < 1 || *n > max_batch_size) {
        return invalid_argument(
            fmt::format("extension batch-size: {} is out of range 1..{}", *n, max_batch_size));
      }
      o.batch_size = static_cast<uint32_t>(*n);
    } else if (key == "lease-ms") {
      auto n = parse_u64(key, value);
      if (!n) return std::move(n).error();
      if (*n < 100 || *n > 43'200'000) {
        return invalid_argument(
            fmt::format("extension lease-ms: {} is out of range 100..43200000", *n));
      }
      o.lease = std::chrono::milliseconds(*n);
    } else if (key == "settlement") {
      if (value == "auto") {
        o.auto_settle = true;
      } else if (value == "explicit") {
        o.auto_settle = false;
      } else {
        return invalid_argument(
            fmt::format("extension settlement: '{}' is not one of explicit, auto", value));
      }
    } else {
      return invalid_argument(fmt::format(
          "extension '{}': unknown key (known: start, group, batch-size, lease-ms, settlement)",
          key));
    }
  }
  return o;
}

}  // namespace witmq::broker
