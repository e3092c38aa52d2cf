// Storage-internal encodings: column family names, key layouts and parsing, the meta records'
// values, and in-place message encoding for WriteSet. Implemented in records.cc beside the public
// codecs of records.h; the broker needs only records.h and store.h.
//
// Every value starts with kRecordVersion (a message run's with kRunVersion). Integers in values are
// little-endian; integers in keys are big-endian so that RocksDB's bytewise order is numeric order.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/message.h"
#include "common/result.h"
#include "storage/records.h"

namespace witmq::storage {

// The only value layout so far. A decoder refuses any other version rather than guess.
inline constexpr uint8_t kRecordVersion = 1;
// The first byte of a message run's value (MessageRun); a single message's starts with
// kRecordVersion, so the two never mix up.
inline constexpr uint8_t kRunVersion = 2;
// WriteSet::put_messages closes a run once its value would pass this size, so that reading one
// message never decodes much more; a message larger than this is a run of its own.
inline constexpr size_t kMaxRunBytes = 64 << 10;

// Column families, in the order Store opens them (index into kColumnFamilyNames).
enum class ColumnFamily : uint8_t { kMessages = 0, kDelivery = 1, kMeta = 2 };
inline constexpr size_t kColumnFamilyCount = 3;
inline constexpr std::string_view kColumnFamilyNames[kColumnFamilyCount] = {"messages", "delivery",
                                                                            "meta"};

// Tags: the first byte of every meta key, followed by a big-endian u32 id.
inline constexpr char kChannelTag = 'C';
inline constexpr char kSubscriptionTag = 'S';
inline constexpr char kCursorTag = 'K';
inline constexpr char kHeadTag = 'H';
// A channel's replication position (replication.h), written only in cluster mode.
inline constexpr char kReplicaPositionTag = 'P';
inline constexpr size_t kMetaKeySize = 5;
// messages and delivery keys: big-endian u32 id, big-endian u64 seq.
inline constexpr size_t kLogKeySize = 12;

// Appends message_key(ch, seq) to `out` (delivery keys have the same layout).
void append_log_key(std::string& out, uint32_t id, Seq seq);
// A key just past every key of `id` in a messages or delivery column family: 4-byte id, eight
// 0xff and one 0x00. It sorts after (id, UINT64_MAX) and before anything of id + 1, so it needs no
// overflow case for the largest id.
std::string log_key_end(uint32_t id);
// Splits a messages or delivery key; nullopt if it is not exactly kLogKeySize bytes.
std::optional<std::pair<uint32_t, Seq>> parse_log_key(std::string_view key);

std::string meta_key(char tag, uint32_t id);
// Splits a meta key into tag and id; nullopt if it is not exactly kMetaKeySize bytes.
std::optional<std::pair<char, uint32_t>> parse_meta_key(std::string_view key);

// encode_message(), appended to `out` so WriteSet builds values without a temporary string.
void append_message(std::string& out, int64_t publish_time_ms, const Message& m);
// The size of what append_message() appends for `m`.
size_t message_value_size(const Message& m);
// A run's value (encode_message_run with two or more messages), appended to `out`.
void append_message_run(std::string& out, int64_t publish_time_ms, std::span<const Message> ms);
// The size of what append_message_run() appends for `ms`.
size_t message_run_value_size(std::span<const Message> ms);

// The messages of one value of the messages column family, in seq order: a run, or a single
// message (a run of one). open() checks the key, the header and every message's length, so
// skip_to() and next() never read past the value; next() decodes (and checks) one message.
// Borrows `key` and `value`: they must outlive it.
class MessageRun {
 public:
  static Result<MessageRun> open(std::string_view key, std::string_view value);

  Seq first() const { return first_; }
  Seq last() const { return last_; }
  // The seq next() decodes.
  Seq position() const { return next_seq_; }
  bool done() const { return pos_ >= value_.size(); }
  // The bytes of the value from position() on (what the messages not yet passed take).
  size_t remaining_bytes() const { return value_.size() - pos_; }
  // Moves past the messages below `seq` without decoding them.
  void skip_to(Seq seq);
  // Decodes the message at position() and moves past it. Call only when !done().
  Result<StoredMessage> next();

 private:
  MessageRun() = default;
  std::string_view take_encoding();

  std::string_view key_, value_;
  Seq first_ = 0, last_ = 0, next_seq_ = 0;
  size_t pos_ = 0;  // offset of the next message's length (its encoding for a single message)
  bool single_ = false;
};

// Meta record values. The id of a channel or subscription is its key's, so it is not repeated in
// the value; decoders take it from `key` and report kCorruption naming the key on any mismatch.
std::string encode_channel(const ChannelRecord& r);
Result<ChannelRecord> decode_channel(std::string_view key, std::string_view value);
std::string encode_subscription(const SubscriptionRecord& r);
Result<SubscriptionRecord> decode_subscription(std::string_view key, std::string_view value);
std::string encode_cursor(const CursorRecord& r);
Result<CursorRecord> decode_cursor(std::string_view key, std::string_view value);
std::string encode_head(const HeadRecord& r);
Result<HeadRecord> decode_head(std::string_view key, std::string_view value);

}  // namespace witmq::storage
