// The records witmq keeps in RocksDB and their binary encodings. Every decoder checks lengths and
// versions and reports a kCorruption error naming the key; nothing is trusted.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/message.h"
#include "common/result.h"

namespace witmq::storage {

using ChannelId = uint32_t;
using SubscriptionId = uint32_t;
using Seq = uint64_t;

// How long an append waits before it is confirmed.
enum class Durability : uint8_t {
  kSync = 0,   // confirmed after its own WAL write is fsynced; never shares a sync
  kGroup = 1,  // confirmed after an fsync shared with every write queued at that moment (default)
  kNone = 2,   // confirmed once written to the WAL without fsync: survives a daemon crash,
               // not a power loss or kernel crash; with WriteSet::set_unlogged (a `none`
               // channel's appends) not even written to the WAL: durable once flushed
};
std::string_view durability_name(Durability d);
Result<Durability> parse_durability(std::string_view name);

// A message as stored in a channel's log.
struct StoredMessage {
  Seq seq = 0;
  int64_t publish_time_ms = 0;  // wall clock, ms since the Unix epoch
  Message message;
};

// Delivery state of one message in one subscription. Sparse: the broker writes a record only
// where it cannot be derived from the subscription cursor (see CursorRecord).
enum class DeliveryStatus : uint8_t {
  kAcquired = 1,  // handed out under a lease (attempts counts this delivery)
  kReady = 2,     // available again after a failed attempt, not before `not_before_ms`
  kAccepted = 3,  // settled, above the cursor floor
};

struct DeliveryRecord {
  DeliveryStatus status = DeliveryStatus::kAcquired;
  uint32_t attempts = 0;      // deliveries so far
  int64_t not_before_ms = 0;  // kReady: earliest redelivery time (backoff)
};

// A subscription's position: every seq < floor is settled; every seq >= next was never
// delivered. A seq in [floor, next) with no DeliveryRecord was delivered once and not settled.
struct CursorRecord {
  Seq floor = 0;
  Seq next = 0;
};

// A channel's definition. `config` is owned by the broker (its own JSON); storage keeps it opaque.
struct ChannelRecord {
  ChannelId id = 0;
  std::string name;
  std::string config;
};

// A durable subscription's definition. `config` is owned by the broker.
struct SubscriptionRecord {
  SubscriptionId id = 0;
  ChannelId channel = 0;
  std::string name;
  std::string config;
};

// The head of a channel's log: the next sequence to assign, and the first one retained.
struct HeadRecord {
  Seq first = 0;
  Seq next = 0;
};

// Encodings (little-endian integers, length-prefixed byte strings, a leading version byte).
std::string encode_message(int64_t publish_time_ms, const Message& m);
Result<StoredMessage> decode_message(std::string_view key, std::string_view value);
// A run: messages first..last of one channel as one value, stored under message_key(ch, last)
// (first = last - count + 1), each message in encode_message()'s form with the same publish
// time. One message encodes as encode_message() does: a single message is a run of one.
std::string encode_message_run(int64_t publish_time_ms, std::span<const Message> ms);
// Every message of a value of the messages column family (a run or a single message), ascending.
Result<std::vector<StoredMessage>> decode_messages(std::string_view key, std::string_view value);
std::string encode_delivery(const DeliveryRecord& r);
Result<DeliveryRecord> decode_delivery(std::string_view key, std::string_view value);

// Keys. Multi-byte integers in keys are big-endian so RocksDB's bytewise order is numeric order.
std::string message_key(ChannelId ch, Seq seq);
std::string delivery_key(SubscriptionId sub, Seq seq);

// Renders a key for error messages, e.g. "messages/ch=3/seq=17".
std::string describe_key(std::string_view column_family, std::string_view key);

}  // namespace witmq::storage
