#include "storage/records.h"

#include <fmt/format.h>

#include <algorithm>

#include "storage/codec.h"

namespace witmq::storage {

namespace {

void put_u8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }

void put_le(std::string& out, uint64_t v, int bytes) {
  char b[8];
  for (int i = 0; i < bytes; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out.append(b, bytes);
}

void put_be(std::string& out, uint64_t v, int bytes) {
  char b[8];
  for (int i = 0; i < bytes; ++i) b[i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
  out.append(b, bytes);
}

uint64_t get_be(std::string_view s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(s[pos + i]);
  return v;
}

void put_bytes(std::string& out, std::string_view s) {
  put_le(out, s.size(), 4);
  out.append(s);
}

std::string_view column_family_of(char tag) {
  switch (tag) {
    case kChannelTag:
      return "channel";
    case kSubscriptionTag:
      return "subscription";
    case kCursorTag:
      return "cursor";
    case kHeadTag:
      return "head";
    case kReplicaPositionTag:
      return "replica-position";
  }
  return {};
}

// Reads a value front to back. Every read checks the bytes left; the first failure is kept as a
// kCorruption error naming the key, the field and the offset, and every later read fails too.
class Reader {
 public:
  Reader(std::string_view column_family, std::string_view key, std::string_view value)
      : cf_(column_family), key_(key), value_(value) {}
  // Reads the encoding of message `seq` inside the run `value` is part of (errors say so).
  Reader(std::string_view key, std::string_view value, Seq run_message)
      : cf_("messages"), key_(key), value_(value), run_message_(run_message) {}

  // Checks the leading version byte.
  bool version() {
    uint8_t v = 0;
    if (!u8(v, "version")) return false;
    if (v != kRecordVersion) {
      return fail(fmt::format("value version is {}, expected {}", v, kRecordVersion));
    }
    return true;
  }

  bool u8(uint8_t& v, std::string_view field) {
    if (!need(1, field)) return false;
    v = static_cast<uint8_t>(value_[pos_++]);
    return true;
  }
  bool u32(uint32_t& v, std::string_view field) {
    uint64_t w = 0;
    if (!le(w, 4, field)) return false;
    v = static_cast<uint32_t>(w);
    return true;
  }
  bool u64(uint64_t& v, std::string_view field) { return le(v, 8, field); }
  bool i64(int64_t& v, std::string_view field) {
    uint64_t w = 0;
    if (!le(w, 8, field)) return false;
    v = static_cast<int64_t>(w);
    return true;
  }
  // A u32 length, then that many bytes.
  bool bytes(std::string_view& out, std::string_view field) {
    if (failed_) return false;
    if (4 > value_.size() - pos_) {
      // Formatted only on failure: this runs for every message decoded.
      return fail(fmt::format("truncated reading {} length: needs 4 bytes at offset {}, {} remain",
                              field, pos_, value_.size() - pos_));
    }
    uint64_t wide = 0;
    le(wide, 4, field);
    const auto len = static_cast<uint32_t>(wide);
    if (len > value_.size() - pos_) {
      return fail(fmt::format("{} claims {} bytes at offset {} but only {} remain", field, len,
                              pos_, value_.size() - pos_));
    }
    out = value_.substr(pos_, len);
    pos_ += len;
    return true;
  }
  bool string(std::string& out, std::string_view field) {
    std::string_view s;
    if (!bytes(s, field)) return false;
    out.assign(s);
    return true;
  }
  // Checks that the whole value was consumed: trailing bytes mean the layout is not what we wrote.
  bool end() {
    if (pos_ != value_.size()) {
      return fail(fmt::format("{} unexpected bytes after offset {}", value_.size() - pos_, pos_));
    }
    return true;
  }

  size_t remaining() const { return value_.size() - pos_; }

  bool fail(std::string what) {
    if (!failed_) {
      failed_ = true;
      error_ = Error(ErrorCode::kCorruption,
                     run_message_
                         ? fmt::format("{}: run message seq={}: {} ({}-byte encoding)",
                                       describe_key(cf_, key_), *run_message_, what, value_.size())
                         : fmt::format("{}: {} ({}-byte value)", describe_key(cf_, key_), what,
                                       value_.size()));
    }
    return false;
  }
  Error error() const { return error_; }

 private:
  bool need(size_t n, std::string_view field) {
    if (failed_) return false;
    if (n > value_.size() - pos_) {
      return fail(fmt::format("truncated reading {}: needs {} bytes at offset {}, {} remain", field,
                              n, pos_, value_.size() - pos_));
    }
    return true;
  }
  bool le(uint64_t& v, int n, std::string_view field) {
    if (!need(n, field)) return false;
    v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(value_[pos_ + i]);
    pos_ += n;
    return true;
  }

  std::string_view cf_, key_, value_;
  std::optional<Seq> run_message_;  // set when value_ is one message of a run
  size_t pos_ = 0;
  bool failed_ = false;
  Error error_;
};

// The id a meta value belongs to, from its key; kCorruption if the key is not `tag` + u32.
Result<uint32_t> meta_id(std::string_view key, char tag) {
  auto parsed = parse_meta_key(key);
  if (!parsed || parsed->first != tag) {
    return Error(ErrorCode::kCorruption,
                 fmt::format("{}: not a {} key (expected '{}' and a 4-byte id)",
                             describe_key("meta", key), column_family_of(tag), tag));
  }
  return parsed->second;
}

}  // namespace

std::string_view durability_name(Durability d) {
  switch (d) {
    case Durability::kSync:
      return "sync";
    case Durability::kGroup:
      return "group";
    case Durability::kNone:
      return "none";
  }
  return "invalid";
}

Result<Durability> parse_durability(std::string_view name) {
  for (auto d : {Durability::kSync, Durability::kGroup, Durability::kNone}) {
    if (durability_name(d) == name) return d;
  }
  return invalid_argument(fmt::format("durability: '{}' is not one of sync, group, none", name));
}

// Message value, version 1:
//   u8 version | i64 publish_time_ms | u8 format | u8 has_metadata
//   [u32 count, count x (u32 len, key bytes, u32 len, value bytes)]  if has_metadata
//   u32 data length | data bytes
size_t message_value_size(const Message& m) {
  size_t need = 1 + 8 + 1 + 1 + 4 + m.data.size();
  if (m.metadata) {
    need += 4;
    for (const auto& [k, v] : *m.metadata) need += 8 + k.size() + v.size();
  }
  return need;
}

void append_message(std::string& out, int64_t publish_time_ms, const Message& m) {
  out.reserve(out.size() + message_value_size(m));
  put_u8(out, kRecordVersion);
  put_le(out, static_cast<uint64_t>(publish_time_ms), 8);
  put_u8(out, static_cast<uint8_t>(m.format));
  put_u8(out, m.metadata ? 1 : 0);
  if (m.metadata) {
    put_le(out, m.metadata->size(), 4);
    for (const auto& [k, v] : *m.metadata) {
      put_bytes(out, k);
      put_bytes(out, v);
    }
  }
  put_bytes(out, std::string_view(reinterpret_cast<const char*>(m.data.data()), m.data.size()));
}

std::string encode_message(int64_t publish_time_ms, const Message& m) {
  std::string out;
  append_message(out, publish_time_ms, m);
  return out;
}

namespace {

// Decodes one message's encoding (append_message) that `r` reads, as message `seq`.
Result<StoredMessage> decode_message_with(Reader& r, Seq seq) {
  StoredMessage out;
  out.seq = seq;
  uint8_t format = 0, has_metadata = 0;
  if (!r.version() || !r.i64(out.publish_time_ms, "publish time") || !r.u8(format, "format") ||
      !r.u8(has_metadata, "metadata flag")) {
    return r.error();
  }
  if (format >= kFormatCount) {
    r.fail(fmt::format("format is {}, expected 0..{}", format, kFormatCount - 1));
    return r.error();
  }
  out.message.format = static_cast<Format>(format);
  if (has_metadata > 1) {
    r.fail(fmt::format("metadata flag is {}, expected 0 or 1", has_metadata));
    return r.error();
  }
  if (has_metadata) {
    uint32_t count = 0;
    if (!r.u32(count, "metadata count")) return r.error();
    Metadata md;
    // Each entry takes at least 8 bytes, so a count that lies cannot make us reserve much.
    md.reserve(std::min<size_t>(count, r.remaining() / 8));
    for (uint32_t i = 0; i < count; ++i) {
      std::string k, v;
      if (!r.string(k, fmt::format("metadata key {}", i)) ||
          !r.string(v, fmt::format("metadata value {}", i))) {
        return r.error();
      }
      md.emplace_back(std::move(k), std::move(v));
    }
    out.message.metadata = std::move(md);
  }
  std::string_view data;
  if (!r.bytes(data, "data") || !r.end()) return r.error();
  out.message.data.assign(data.begin(), data.end());
  return out;
}

}  // namespace

Result<StoredMessage> decode_message(std::string_view key, std::string_view value) {
  Reader r("messages", key, value);
  auto parsed = parse_log_key(key);
  if (!parsed) {
    r.fail(fmt::format("key is {} bytes, expected {}", key.size(), kLogKeySize));
    return r.error();
  }
  return decode_message_with(r, parsed->second);
}

// Run value: u8 kRunVersion | u32 count | count x (u32 length | append_message() encoding).
// Its key is message_key(channel, last seq); the first is last - count + 1.
size_t message_run_value_size(std::span<const Message> ms) {
  size_t need = 1 + 4;
  for (const auto& m : ms) need += 4 + message_value_size(m);
  return need;
}

void append_message_run(std::string& out, int64_t publish_time_ms, std::span<const Message> ms) {
  out.reserve(out.size() + message_run_value_size(ms));
  put_u8(out, kRunVersion);
  put_le(out, ms.size(), 4);
  for (const auto& m : ms) {
    put_le(out, message_value_size(m), 4);
    append_message(out, publish_time_ms, m);
  }
}

std::string encode_message_run(int64_t publish_time_ms, std::span<const Message> ms) {
  if (ms.size() == 1) return encode_message(publish_time_ms, ms[0]);
  std::string out;
  append_message_run(out, publish_time_ms, ms);
  return out;
}

Result<MessageRun> MessageRun::open(std::string_view key, std::string_view value) {
  Reader r("messages", key, value);
  auto parsed = parse_log_key(key);
  if (!parsed) {
    r.fail(fmt::format("key is {} bytes, expected {}", key.size(), kLogKeySize));
    return r.error();
  }
  MessageRun run;
  run.key_ = key;
  run.value_ = value;
  run.last_ = parsed->second;
  if (!value.empty() && static_cast<uint8_t>(value[0]) == kRecordVersion) {
    // A single message (the form put_message writes): a run of one, checked when decoded.
    run.first_ = run.last_;
    run.pos_ = 0;
    run.next_seq_ = run.first_;
    run.single_ = true;
    return run;
  }
  uint8_t version = 0;
  uint32_t count = 0;
  if (!r.u8(version, "version")) return r.error();
  if (version != kRunVersion) {
    r.fail(fmt::format("value version is {}, expected {} (a message) or {} (a run)", version,
                       kRecordVersion, kRunVersion));
    return r.error();
  }
  if (!r.u32(count, "run count")) return r.error();
  if (count == 0 || count - 1 > run.last_) {
    r.fail(fmt::format("run count is {}, expected 1 to the key's seq + 1 ({} ends the run)", count,
                       run.last_));
    return r.error();
  }
  // Every message's length is checked now, so that skipping and decoding cannot over-read.
  const size_t body = value.size() - r.remaining();
  for (uint32_t i = 0; i < count; ++i) {
    std::string_view m;
    if (!r.bytes(m, "run message")) {
      return Error(ErrorCode::kCorruption,
                   fmt::format("{} (message {} of {})", r.error().message, i, count));
    }
  }
  if (!r.end()) return r.error();
  run.first_ = run.last_ - (count - 1);
  run.pos_ = body;
  run.next_seq_ = run.first_;
  return run;
}

std::string_view MessageRun::take_encoding() {
  if (single_) {
    pos_ = value_.size();
    ++next_seq_;
    return value_;
  }
  uint32_t len = 0;
  for (int i = 3; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>(value_[pos_ + i]);
  std::string_view m = value_.substr(pos_ + 4, len);
  pos_ += 4 + len;
  ++next_seq_;
  return m;
}

void MessageRun::skip_to(Seq seq) {
  while (!done() && next_seq_ < seq) take_encoding();
}

Result<StoredMessage> MessageRun::next() {
  const Seq seq = next_seq_;
  std::string_view encoding = take_encoding();
  if (single_) {
    Reader r("messages", key_, encoding);
    return decode_message_with(r, seq);
  }
  Reader r(key_, encoding, seq);
  return decode_message_with(r, seq);
}

Result<std::vector<StoredMessage>> decode_messages(std::string_view key, std::string_view value) {
  auto run = MessageRun::open(key, value);
  if (!run) return std::move(run).error();
  std::vector<StoredMessage> out;
  out.reserve(run->last() - run->first() + 1);
  while (!run->done()) {
    auto m = run->next();
    if (!m) return std::move(m).error();
    out.push_back(std::move(m).value());
  }
  return out;
}

// Delivery value, version 1: u8 version | u8 status | u32 attempts | i64 not_before_ms
std::string encode_delivery(const DeliveryRecord& rec) {
  std::string out;
  out.reserve(14);
  put_u8(out, kRecordVersion);
  put_u8(out, static_cast<uint8_t>(rec.status));
  put_le(out, rec.attempts, 4);
  put_le(out, static_cast<uint64_t>(rec.not_before_ms), 8);
  return out;
}

Result<DeliveryRecord> decode_delivery(std::string_view key, std::string_view value) {
  Reader r("delivery", key, value);
  if (key.size() != kLogKeySize) {
    r.fail(fmt::format("key is {} bytes, expected {}", key.size(), kLogKeySize));
    return r.error();
  }
  DeliveryRecord out;
  uint8_t status = 0;
  if (!r.version() || !r.u8(status, "status") || !r.u32(out.attempts, "attempts") ||
      !r.i64(out.not_before_ms, "not-before time") || !r.end()) {
    return r.error();
  }
  if (status < static_cast<uint8_t>(DeliveryStatus::kAcquired) ||
      status > static_cast<uint8_t>(DeliveryStatus::kAccepted)) {
    r.fail(fmt::format("delivery status is {}, expected 1..3", status));
    return r.error();
  }
  out.status = static_cast<DeliveryStatus>(status);
  return out;
}

// Channel value, version 1: u8 version | u32+bytes name | u32+bytes config
std::string encode_channel(const ChannelRecord& rec) {
  std::string out;
  put_u8(out, kRecordVersion);
  put_bytes(out, rec.name);
  put_bytes(out, rec.config);
  return out;
}

Result<ChannelRecord> decode_channel(std::string_view key, std::string_view value) {
  auto id = meta_id(key, kChannelTag);
  if (!id) return std::move(id).error();
  ChannelRecord out;
  out.id = *id;
  Reader r("meta", key, value);
  if (!r.version() || !r.string(out.name, "name") || !r.string(out.config, "config") || !r.end()) {
    return r.error();
  }
  return out;
}

// Subscription value, version 1: u8 version | u32 channel | u32+bytes name | u32+bytes config
std::string encode_subscription(const SubscriptionRecord& rec) {
  std::string out;
  put_u8(out, kRecordVersion);
  put_le(out, rec.channel, 4);
  put_bytes(out, rec.name);
  put_bytes(out, rec.config);
  return out;
}

Result<SubscriptionRecord> decode_subscription(std::string_view key, std::string_view value) {
  auto id = meta_id(key, kSubscriptionTag);
  if (!id) return std::move(id).error();
  SubscriptionRecord out;
  out.id = *id;
  Reader r("meta", key, value);
  if (!r.version() || !r.u32(out.channel, "channel") || !r.string(out.name, "name") ||
      !r.string(out.config, "config") || !r.end()) {
    return r.error();
  }
  return out;
}

// Cursor value, version 1: u8 version | u64 floor | u64 next
std::string encode_cursor(const CursorRecord& rec) {
  std::string out;
  put_u8(out, kRecordVersion);
  put_le(out, rec.floor, 8);
  put_le(out, rec.next, 8);
  return out;
}

Result<CursorRecord> decode_cursor(std::string_view key, std::string_view value) {
  auto id = meta_id(key, kCursorTag);
  if (!id) return std::move(id).error();
  CursorRecord out;
  Reader r("meta", key, value);
  if (!r.version() || !r.u64(out.floor, "floor") || !r.u64(out.next, "next") || !r.end()) {
    return r.error();
  }
  return out;
}

// Head value, version 1: u8 version | u64 first | u64 next
std::string encode_head(const HeadRecord& rec) {
  std::string out;
  put_u8(out, kRecordVersion);
  put_le(out, rec.first, 8);
  put_le(out, rec.next, 8);
  return out;
}

Result<HeadRecord> decode_head(std::string_view key, std::string_view value) {
  auto id = meta_id(key, kHeadTag);
  if (!id) return std::move(id).error();
  HeadRecord out;
  Reader r("meta", key, value);
  if (!r.version() || !r.u64(out.first, "first") || !r.u64(out.next, "next") || !r.end()) {
    return r.error();
  }
  return out;
}

void append_log_key(std::string& out, uint32_t id, Seq seq) {
  put_be(out, id, 4);
  put_be(out, seq, 8);
}

std::string message_key(ChannelId ch, Seq seq) {
  std::string out;
  out.reserve(kLogKeySize);
  append_log_key(out, ch, seq);
  return out;
}

std::string delivery_key(SubscriptionId sub, Seq seq) { return message_key(sub, seq); }

std::string log_key_end(uint32_t id) {
  std::string out;
  out.reserve(kLogKeySize + 1);
  append_log_key(out, id, UINT64_MAX);
  out.push_back('\0');
  return out;
}

std::optional<std::pair<uint32_t, Seq>> parse_log_key(std::string_view key) {
  if (key.size() != kLogKeySize) return std::nullopt;
  return std::pair<uint32_t, Seq>(static_cast<uint32_t>(get_be(key, 0, 4)), get_be(key, 4, 8));
}

std::string meta_key(char tag, uint32_t id) {
  std::string out;
  out.reserve(kMetaKeySize);
  out.push_back(tag);
  put_be(out, id, 4);
  return out;
}

std::optional<std::pair<char, uint32_t>> parse_meta_key(std::string_view key) {
  if (key.size() != kMetaKeySize) return std::nullopt;
  return std::pair<char, uint32_t>(key[0], static_cast<uint32_t>(get_be(key, 1, 4)));
}

std::string describe_key(std::string_view column_family, std::string_view key) {
  if (column_family == "messages" || column_family == "delivery") {
    if (auto k = parse_log_key(key)) {
      return fmt::format("{}/{}={}/seq={}", column_family,
                         column_family == "messages" ? "ch" : "sub", k->first, k->second);
    }
  } else if (column_family == "meta") {
    if (auto k = parse_meta_key(key); k && !column_family_of(k->first).empty()) {
      return fmt::format("meta/{}={}", column_family_of(k->first), k->second);
    }
  }
  // Not a key we write: show its bytes (at most 32) so the record can still be found.
  std::string hex;
  for (size_t i = 0; i < key.size() && i < 32; ++i) {
    hex += fmt::format("{:02x}", static_cast<uint8_t>(key[i]));
  }
  return fmt::format("{}/0x{}{}", column_family, hex, key.size() > 32 ? "..." : "");
}

}  // namespace witmq::storage
