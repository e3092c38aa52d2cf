#include "common/message.h"

#include <fmt/format.h>

namespace witmq {

namespace {
constexpr std::string_view kFormatNames[kFormatCount] = {"cloudevents", "http", "amqp",
                                                         "mqtt",        "kafka", "raw"};
}  // namespace

std::string_view format_name(Format f) {
  auto i = static_cast<uint8_t>(f);
  return i < kFormatCount ? kFormatNames[i] : std::string_view("invalid");
}

Result<Format> parse_format(std::string_view name) {
  for (uint8_t i = 0; i < kFormatCount; ++i) {
    if (kFormatNames[i] == name) return static_cast<Format>(i);
  }
  return invalid_argument(fmt::format(
      "format: '{}' is not one of cloudevents, http, amqp, mqtt, kafka, raw", name));
}

const std::string* find_metadata(const Metadata& md, std::string_view key) {
  for (const auto& [k, v] : md) {
    if (k == key) return &v;
  }
  return nullptr;
}

const std::string* find_metadata(const std::optional<Metadata>& md, std::string_view key) {
  return md ? find_metadata(*md, key) : nullptr;
}

const std::string* find_metadata(const Message& m, std::string_view key) {
  return find_metadata(m.metadata, key);
}

Status validate_channel_name(std::string_view name) {
  if (name.empty()) return invalid_argument("channel: the name is empty");
  if (name.size() > kMaxChannelNameBytes) {
    return invalid_argument(fmt::format("channel: the name is {} bytes long, the limit is {}",
                                        name.size(), kMaxChannelNameBytes));
  }
  if (name.front() == '.') {
    return invalid_argument(fmt::format("channel '{}': a name may not start with '.'", name));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (!is_channel_name_char(name[i])) {
      return invalid_argument(fmt::format(
          "channel: byte {} (0x{:02x}) of the name is not one of A-Z a-z 0-9 . _ - : /", i, c));
    }
  }
  return ok_status();
}

}  // namespace witmq
