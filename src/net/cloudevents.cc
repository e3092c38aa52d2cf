#include "net/cloudevents.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "common/base64.h"
#include "common/json_depth.h"
#include "net/utf8.h"

namespace witmq::net {

namespace {

using nlohmann::json;

constexpr std::string_view kStructuredType = "application/cloudevents+json";
constexpr std::string_view kBatchType = "application/cloudevents-batch+json";
constexpr std::string_view kHeaderPrefix = "ce-";
constexpr std::string_view kRequired[] = {"id", "source", "specversion", "type"};
// The context attributes whose CloudEvents type is String, URI, URI-reference or Timestamp: in
// the JSON format they are JSON strings (a number would not survive as the text it was sent as).
constexpr std::string_view kStringAttributes[] = {
    "id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The media type of a Content-Type value, lower case, without parameters or spaces.
std::string media_type(std::string_view content_type) {
  const auto semi = content_type.find(';');
  std::string_view t = content_type.substr(0, semi);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  return lower(t);
}

bool is_json_type(std::string_view media) {
  return media == "application/json" || media == "text/json" || media.ends_with("+json");
}

// CloudEvents attribute names: lower-case ASCII letters and digits.
bool valid_attribute_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Binary-mode header values are percent-encoded where they hold what a header cannot; a '%'
// that does not start an escape is kept as it is.
std::string percent_decode(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size()) {
      const int hi = hex_value(v[i + 1]), lo = hex_value(v[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += v[i];
  }
  return out;
}

// Metadata travels on the wire as UTF-8 strings (docs/PROTOCOL.md), so a header value that is
// not (HTTP allows any byte from 0x80 up, and a percent escape any byte at all) cannot become
// one: a consumer's decoder would refuse every frame carrying the message.
Status check_utf8(std::string_view header, std::string_view value, bool percent_decoded) {
  size_t bad = 0;
  if (is_valid_utf8(value, &bad)) return ok_status();
  return invalid_argument(fmt::format(
      "header {}: the value{} is not valid UTF-8 (byte 0x{:02x} at offset {})", header,
      percent_decoded ? ", percent-decoded," : "", static_cast<uint8_t>(value[bad]), bad));
}

// The required attributes are present and non-empty, and specversion is 1.0.
Status check_required(const Metadata& md, PublishMode mode) {
  for (auto name : kRequired) {
    const std::string* v = find_metadata(md, name);
    const std::string where = mode == PublishMode::kBinary ? fmt::format("header ce-{}", name)
                                                           : fmt::format("attribute '{}'", name);
    if (!v) {
      return invalid_argument(
          fmt::format("{} is missing: a CloudEvent needs id, source, specversion and type", where));
    }
    if (v->empty()) return invalid_argument(fmt::format("{} is empty", where));
    if (name == "specversion" && *v != "1.0") {
      return invalid_argument(
          fmt::format("{} is '{}', expected 1.0 (the version witmq accepts)", where, *v));
    }
  }
  return ok_status();
}

Result<PublishRequest> structured(std::string_view body) {
  if (auto st = check_json_depth(body); !st) {
    return invalid_argument(fmt::format("the CloudEvent: {}", st.error().message));
  }
  // The parser keeps the last of duplicate keys; an event with two ids is refused instead, as a
  // repeated ce- header is in binary mode.
  std::optional<std::string> duplicate;
  std::vector<std::string> keys;
  json::parser_callback_t seen = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && !duplicate) {
      std::string key = parsed.get<std::string>();
      if (std::find(keys.begin(), keys.end(), key) != keys.end()) {
        duplicate = std::move(key);
      } else {
        keys.push_back(std::move(key));
      }
    }
    return true;
  };
  json event = json::parse(body, seen, /*allow_exceptions=*/false);
  if (event.is_discarded()) {
    return invalid_argument(
        "the body is not valid JSON, expected a CloudEvent object (Content-Type "
        "application/cloudevents+json)");
  }
  if (!event.is_object()) {
    return invalid_argument(
        fmt::format("the body is a JSON {}, expected a CloudEvent object", event.type_name()));
  }
  if (duplicate) {
    return invalid_argument(fmt::format("attribute '{}' is given twice", *duplicate));
  }
  PublishRequest out;
  out.mode = PublishMode::kStructured;
  out.message.format = Format::kCloudevents;
  Metadata md;
  const json* data = nullptr;
  const json* data_base64 = nullptr;
  for (const auto& [name, value] : event.items()) {
    if (name == "data") {
      data = &value;
      continue;
    }
    if (name == "data_base64") {
      data_base64 = &value;
      continue;
    }
    // Reserved witmq- keys pass here and are dropped by the broker, as on TCP.
    if (!valid_attribute_name(name) && !is_reserved_key(name)) {
      return invalid_argument(fmt::format(
          "attribute '{}': a CloudEvents attribute name is lower-case letters and digits", name));
    }
    if (value.is_null()) continue;  // a null attribute is an absent one
    const bool string_typed = std::find(std::begin(kStringAttributes), std::end(kStringAttributes),
                                        name) != std::end(kStringAttributes);
    if (value.is_string()) {
      md.emplace_back(name, value.get<std::string>());
    } else if (string_typed) {
      return invalid_argument(
          fmt::format("attribute '{}' is a JSON {}, expected a string", name, value.type_name()));
    } else if (value.is_number_float()) {
      // A JSON number that is not an integer, or one beyond 64 bits, was read as a double and
      // would be kept as an approximation of what was sent.
      return invalid_argument(fmt::format(
          "attribute '{}' is the number {}, expected an integer (CloudEvents Integer) or a "
          "string",
          name, value.dump()));
    } else if (value.is_number() || value.is_boolean()) {
      md.emplace_back(name, value.dump());
    } else {
      return invalid_argument(
          fmt::format("attribute '{}' is a JSON {}, expected a string, number or boolean", name,
                      value.type_name()));
    }
  }
  WITMQ_RETURN_IF_ERROR(check_required(md, out.mode));
  if (data && data_base64) {
    return invalid_argument("the event has both 'data' and 'data_base64'; it may have one");
  }
  if (data_base64) {
    if (!data_base64->is_string()) {
      return invalid_argument(fmt::format("attribute 'data_base64' is a JSON {}, expected a string",
                                          data_base64->type_name()));
    }
    auto bytes = base64_decode(data_base64->get<std::string>());
    if (!bytes) return invalid_argument("attribute 'data_base64' is not valid base64");
    out.message.data = std::move(*bytes);
  } else if (data && !data->is_null()) {
    // A string is the data itself when the content type says it is not JSON; anything else is
    // JSON, kept as its serialization.
    const std::string* type = find_metadata(md, "datacontenttype");
    std::string text;
    if (data->is_string() && type && !is_json_type(media_type(*type))) {
      text = data->get<std::string>();
    } else {
      text = data->dump();
    }
    out.message.data.assign(text.begin(), text.end());
  }
  out.message.metadata = std::move(md);
  return out;
}

}  // namespace

std::string_view publish_mode_name(PublishMode mode) {
  switch (mode) {
    case PublishMode::kStructured:
      return "structured";
    case PublishMode::kBinary:
      return "binary";
    case PublishMode::kRaw:
      return "raw";
  }
  return "raw";
}

Result<PublishRequest> message_from_http(
    std::span<const std::pair<std::string, std::string>> headers, std::string_view body) {
  const std::string* content_type = nullptr;
  bool any_ce = false;
  for (const auto& [name, value] : headers) {
    if (name == "content-type" && !content_type) content_type = &value;
    if (name.starts_with(kHeaderPrefix)) any_ce = true;
  }
  const std::string media = content_type ? media_type(*content_type) : std::string();
  if (media == kBatchType) {
    return Error(ErrorCode::kUnsupported,
                 "Content-Type application/cloudevents-batch+json: batched mode is not supported; "
                 "publish one event per request");
  }
  if (media == kStructuredType) return structured(body);

  if (content_type) WITMQ_RETURN_IF_ERROR(check_utf8("content-type", *content_type, false));
  PublishRequest out;
  out.message.data.assign(body.begin(), body.end());
  Metadata md;
  if (!any_ce) {
    out.mode = PublishMode::kRaw;
    out.message.format = Format::kRaw;
    if (content_type) md.emplace_back("content-type", *content_type);
    if (!md.empty()) out.message.metadata = std::move(md);
    return out;
  }
  out.mode = PublishMode::kBinary;
  out.message.format = Format::kCloudevents;
  for (const auto& [name, value] : headers) {
    if (!name.starts_with(kHeaderPrefix)) continue;
    const std::string attribute = name.substr(kHeaderPrefix.size());
    if (!valid_attribute_name(attribute) && !is_reserved_key(attribute)) {
      return invalid_argument(fmt::format(
          "header {}: a CloudEvents attribute name is lower-case letters and digits", name));
    }
    if (attribute == "datacontenttype") {
      return invalid_argument(
          "header ce-datacontenttype: in binary mode the content type is the Content-Type "
          "header");
    }
    if (find_metadata(md, attribute)) {
      return invalid_argument(fmt::format("header {} is given twice", name));
    }
    std::string decoded = percent_decode(value);
    WITMQ_RETURN_IF_ERROR(check_utf8(name, decoded, true));
    md.emplace_back(attribute, std::move(decoded));
  }
  if (content_type) md.emplace_back("datacontenttype", *content_type);
  WITMQ_RETURN_IF_ERROR(check_required(md, out.mode));
  out.message.metadata = std::move(md);
  return out;
}

}  // namespace witmq::net
