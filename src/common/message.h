// The WIT vocabulary (wasi:messaging/messaging-types@0.2.0-draft) as C++ values, shared by every
// layer: the broker, the wire codec, the client library and the wasm host.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace witmq {

// WIT `format-spec`. The numeric values are the canonical ABI case indices and the wire encoding.
enum class Format : uint8_t { kCloudevents = 0, kHttp = 1, kAmqp = 2, kMqtt = 3, kKafka = 4, kRaw = 5 };
inline constexpr uint8_t kFormatCount = 6;

std::string_view format_name(Format f);
// Parses "cloudevents", "http", "amqp", "mqtt", "kafka", "raw".
Result<Format> parse_format(std::string_view name);

using KeyValue = std::pair<std::string, std::string>;
using Metadata = std::vector<KeyValue>;

// WIT `message`: data, format and optional metadata.
struct Message {
  std::vector<uint8_t> data;
  Format format = Format::kRaw;
  std::optional<Metadata> metadata;

  bool operator==(const Message&) const = default;
};

// WIT `guest-configuration`.
struct GuestConfiguration {
  std::vector<std::string> channels;
  std::optional<Metadata> extensions;

  bool operator==(const GuestConfiguration&) const = default;
};

// Metadata keys starting with this prefix are reserved for the broker. Producers cannot set
// them: the broker drops them on send.
inline constexpr std::string_view kReservedPrefix = "witmq-";

// Reserved keys the broker adds to a delivered message.
namespace meta {
inline constexpr std::string_view kId = "witmq-id";                // "<channel>/<sequence>"
inline constexpr std::string_view kChannel = "witmq-channel";      // channel it was read from
inline constexpr std::string_view kSequence = "witmq-sequence";    // decimal sequence number
inline constexpr std::string_view kAttempt = "witmq-attempt";      // 1 on first delivery
inline constexpr std::string_view kPublishedAt = "witmq-published-at";  // ms since Unix epoch
inline constexpr std::string_view kReceipt = "witmq-receipt";      // opaque settle token
// Added when a message is moved to a dead-letter channel.
inline constexpr std::string_view kDlqReason = "witmq-dlq-reason";
inline constexpr std::string_view kDlqSource = "witmq-dlq-source";
inline constexpr std::string_view kDlqSourceSequence = "witmq-dlq-source-sequence";
inline constexpr std::string_view kDlqSubscription = "witmq-dlq-subscription";
inline constexpr std::string_view kDlqAttempts = "witmq-dlq-attempts";
inline constexpr std::string_view kDlqTime = "witmq-dlq-time";
// Set by request (Broker::request): where replies go (the requester's inbox, an opaque random
// token) and which request they answer (random per request). Both are read by reply; a
// correlation id is also on every reply a requester gets. Producers cannot set them (send drops
// every reserved key), so a message carries them only when the broker made it a request.
inline constexpr std::string_view kReplyTo = "witmq-reply-to";
inline constexpr std::string_view kCorrelationId = "witmq-correlation-id";
}  // namespace meta

inline bool is_reserved_key(std::string_view key) { return key.starts_with(kReservedPrefix); }

// The first value for `key`, or nullptr. The pointer points into the argument, so no temporary
// may be passed: a Metadata handed to the optional overload would be copied into one (and the
// pointer dangle), hence the Metadata overload and the deleted rvalue ones.
const std::string* find_metadata(const Message& m, std::string_view key);
const std::string* find_metadata(const Metadata& md, std::string_view key);
const std::string* find_metadata(const std::optional<Metadata>& md, std::string_view key);
const std::string* find_metadata(Message&& m, std::string_view key) = delete;
const std::string* find_metadata(Metadata&& md, std::string_view key) = delete;
const std::string* find_metadata(std::optional<Metadata>&& md, std::string_view key) = delete;

// Channel names: 1..kMaxChannelNameBytes bytes of [A-Za-z0-9._-:/], not starting with '.'.
inline constexpr size_t kMaxChannelNameBytes = 200;
// One of the characters a channel name may hold.
constexpr bool is_channel_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == ':' || c == '/';
}
Status validate_channel_name(std::string_view name);

}  // namespace witmq
