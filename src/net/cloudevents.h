// Publishing over HTTP: a request to the message it sends, per the CloudEvents HTTP protocol
// binding 1.0 (docs/HTTP.md, "Publishing").
//   - structured mode, Content-Type application/cloudevents+json: the JSON object's attributes
//     become metadata, `data` (serialized) or `data_base64` (decoded) the data;
//   - binary mode, any ce-* header: each ce-NAME header becomes metadata NAME (percent-decoded),
//     Content-Type becomes datacontenttype, the body the data;
//   - otherwise the body as it is, format raw, with Content-Type kept as metadata content-type.
// The CloudEvents modes check the required attributes (id, source, specversion 1.0, type) and
// give the message format cloudevents. A pure function: no I/O, no broker.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "common/message.h"
#include "common/result.h"

namespace witmq::net {

enum class PublishMode { kStructured, kBinary, kRaw };
std::string_view publish_mode_name(PublishMode mode);  // "structured", "binary", "raw"

struct PublishRequest {
  PublishMode mode = PublishMode::kRaw;
  Message message;
};

// `headers` have lower-case names. Errors are invalid-argument naming the header or attribute
// and the reason, or unsupported (batched mode).
Result<PublishRequest> message_from_http(
    std::span<const std::pair<std::string, std::string>> headers, std::string_view body);

}  // namespace witmq::net
