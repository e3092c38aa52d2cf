// Consumer options carried in guest-configuration extensions (and the same keys over TCP).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/message.h"
#include "common/result.h"

namespace witmq::broker {

// Where a new subscription starts reading.
struct StartPosition {
  enum class Kind { kLatest, kEarliest, kSequence, kTime } kind = Kind::kLatest;
  uint64_t value = 0;  // kSequence: the sequence; kTime: ms since the Unix epoch

  bool operator==(const StartPosition&) const = default;
};

struct ConsumerOptions {
  StartPosition start;                             // "start"
  std::string group;                               // "group": shared subscription name
  uint32_t batch_size = 0;                         // "batch-size": 0 = server default
  std::optional<std::chrono::milliseconds> lease;  // "lease-ms": overrides the channel's
  bool auto_settle = false;                        // "settlement": "auto" completes on delivery

  bool operator==(const ConsumerOptions&) const = default;
};

// Parses the extension keys: start, group, batch-size, lease-ms, settlement. Unknown keys and
// bad values are kInvalidArgument naming the key and the value.
Result<ConsumerOptions> parse_extensions(const std::optional<Metadata>& extensions,
                                         uint32_t max_batch_size);

struct ExtensionDoc {
  std::string_view key, values, default_value, doc;
};
const std::vector<ExtensionDoc>& extension_docs();

}  // namespace witmq::broker
