#include "net/codec.h"

#include <fmt/format.h>

#include <cassert>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

#include "net/utf8.h"

namespace witmq::net {

namespace {

// ---- encoding --------------------------------------------------------------------------------
// A frame is encoded in two passes: its exact size is computed first, the buffer grown once, and
// the fields written through a raw pointer. No per-field reallocation.

size_t string_size(std::string_view s) { return 4 + s.size(); }

size_t pairs_size(const Metadata& md) {
  size_t n = 4;
  for (const auto& [k, v] : md) n += 8 + k.size() + v.size();
  return n;
}

size_t optional_pairs_size(const std::optional<Metadata>& md) {
  return 1 + (md ? pairs_size(*md) : 0);
}

size_t messages_size(std::span<const Message> ms) {
  size_t n = 4;
  for (const Message& m : ms) n += message_wire_size(m);
  return n;
}

// Writes big-endian fields into memory the caller has sized exactly.
class Writer {
 public:
  explicit Writer(uint8_t* p) : p_(p) {}

  uint8_t* pos() const { return p_; }

  void u8(uint8_t v) { *p_++ = v; }
  void u16(uint16_t v) {
    p_[0] = static_cast<uint8_t>(v >> 8);
    p_[1] = static_cast<uint8_t>(v);
    p_ += 2;
  }
  void u32(uint32_t v) {
    p_[0] = static_cast<uint8_t>(v >> 24);
    p_[1] = static_cast<uint8_t>(v >> 16);
    p_[2] = static_cast<uint8_t>(v >> 8);
    p_[3] = static_cast<uint8_t>(v);
    p_ += 4;
  }
  void u64(uint64_t v) {
    u32(static_cast<uint32_t>(v >> 32));
    u32(static_cast<uint32_t>(v));
  }
  void raw(const void* data, size_t n) {
    if (n != 0) std::memcpy(p_, data, n);
    p_ += n;
  }
  // Lengths fit in u32: write_frame refused any frame whose total does not.
  void string(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    raw(s.data(), s.size());
  }
  void bytes(std::span<const uint8_t> b) {
    u32(static_cast<uint32_t>(b.size()));
    raw(b.data(), b.size());
  }
  void optional_pairs(const std::optional<Metadata>& md) {
    if (!md) {
      u8(0);
      return;
    }
    u8(1);
    u32(static_cast<uint32_t>(md->size()));
    for (const auto& [k, v] : *md) {
      string(k);
      string(v);
    }
  }
  void message(const Message& m) {
    bytes(m.data);
    u8(static_cast<uint8_t>(m.format));
    optional_pairs(m.metadata);
  }
  void message(const MessageParts& m) {
    bytes(m.message->data);
    u8(static_cast<uint8_t>(m.message->format));
    const Metadata* own = m.message->metadata ? &*m.message->metadata : nullptr;
    if (!own && m.extra.empty()) {
      u8(0);
      return;
    }
    u8(1);
    u32(static_cast<uint32_t>((own ? own->size() : 0) + m.extra.size()));
    if (own) {
      for (const auto& [k, v] : *own) {
        string(k);
        string(v);
      }
    }
    for (const auto& [k, v] : m.extra) {
      string(k);
      string(v);
    }
  }
  void messages(std::span<const Message> ms) {
    u32(static_cast<uint32_t>(ms.size()));
    for (const Message& m : ms) message(m);
  }

 private:
  uint8_t* p_;
};

// Appends header + body; `write_body` must write exactly `body_size` bytes.
template <typename WriteBody>
size_t write_frame(Buffer& out, FrameType type, uint32_t request_id, size_t body_size,
                   WriteBody&& write_body) {
  if (body_size > std::numeric_limits<uint32_t>::max() - kMinFrameLength) return 0;
  const auto length = static_cast<uint32_t>(kMinFrameLength + body_size);
  const size_t total = kLengthFieldBytes + length;
  const size_t start = out.size();
  out.resize(start + total);
  Writer w(out.data() + start);
  w.u32(length);
  w.u8(static_cast<uint8_t>(type));
  w.u8(0);  // flags: none are defined in version 1
  w.u32(request_id);
  write_body(w);
  assert(w.pos() == out.data() + start + total);
  return total;
}

size_t encode_channel_messages(Buffer& out, FrameType type, uint32_t request_id,
                               std::string_view channel, std::span<const Message> messages) {
  return write_frame(out, type, request_id, string_size(channel) + messages_size(messages),
                     [&](Writer& w) {
                       w.string(channel);
                       w.messages(messages);
                     });
}

size_t encode_message_body(Buffer& out, FrameType type, uint32_t request_id, const Message& m) {
  return write_frame(out, type, request_id, message_wire_size(m), [&](Writer& w) { w.message(m); });
}

size_t encode_u32_body(Buffer& out, FrameType type, uint32_t request_id, uint32_t v) {
  return write_frame(out, type, request_id, 4, [&](Writer& w) { w.u32(v); });
}

size_t encode_u64_body(Buffer& out, FrameType type, uint32_t request_id, uint64_t v) {
  return write_frame(out, type, request_id, 8, [&](Writer& w) { w.u64(v); });
}

size_t encode_string_body(Buffer& out, FrameType type, uint32_t request_id, std::string_view s) {
  return write_frame(out, type, request_id, string_size(s), [&](Writer& w) { w.string(s); });
}

// ---- decoding --------------------------------------------------------------------------------

uint32_t load_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads big-endian fields from one frame body. Every read checks the bytes left first; a failed
// read records an Error naming the field and returns false, and the callers unwind, prefixing the
// path of the enclosing fields ("messages[2]." ...). Messages are built only on failure.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}

  size_t left() const { return static_cast<size_t>(end_ - p_); }
  Error& error() { return error_; }

  bool fail(ErrorCode code, std::string message) {
    error_ = Error(code, std::move(message));
    return false;
  }
  // Prepends the path of an enclosing field to the recorded error's message.
  bool prefix(std::string_view path) {
    error_.message.insert(0, path);
    return false;
  }

  bool need(size_t n, std::string_view field) {
    if (left() >= n) return true;
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: needs {} bytes, {} are left in the frame", field, n, left()));
  }

  bool u8(uint8_t& v, std::string_view field) {
    if (!need(1, field)) return false;
    v = *p_++;
    return true;
  }
  bool u16(uint16_t& v, std::string_view field) {
    if (!need(2, field)) return false;
    v = static_cast<uint16_t>((p_[0] << 8) | p_[1]);
    p_ += 2;
    return true;
  }
  bool u32(uint32_t& v, std::string_view field) {
    if (!need(4, field)) return false;
    v = load_u32(p_);
    p_ += 4;
    return true;
  }
  bool u64(uint64_t& v, std::string_view field) {
    if (!need(8, field)) return false;
    v = (uint64_t{load_u32(p_)} << 32) | load_u32(p_ + 4);
    p_ += 8;
    return true;
  }

  // A u32 length and that many bytes, which must fit in the frame.
  bool length(uint32_t& n, std::string_view field) {
    if (!u32(n, field)) return false;
    if (n <= left()) return true;
    return fail(
        ErrorCode::kInvalidArgument,
        fmt::format("{}: length {} exceeds the {} bytes left in the frame", field, n, left()));
  }

  // A string of at most `max` bytes, validated and left in the frame: `out` views the frame's
  // bytes. The length is checked before anything is read.
  bool view(std::string_view& out, std::string_view field,
            uint32_t max = std::numeric_limits<uint32_t>::max()) {
    uint32_t n = 0;
    if (!length(n, field)) return false;
    if (n > max) {
      return fail(ErrorCode::kResourceExhausted,
                  fmt::format("{}: {} bytes, the limit is {}", field, n, max));
    }
    std::string_view s(reinterpret_cast<const char*>(p_), n);
    size_t bad = 0;
    if (!is_valid_utf8(s, &bad)) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: not valid UTF-8 (byte 0x{:02x} at offset {} of {})", field,
                              static_cast<uint8_t>(s[bad]), bad, n));
    }
    out = s;
    p_ += n;
    return true;
  }

  // view, copied into `out`.
  bool string(std::string& out, std::string_view field,
              uint32_t max = std::numeric_limits<uint32_t>::max()) {
    std::string_view s;
    if (!view(s, field, max)) return false;
    out.assign(s);
    return true;
  }

  bool data(std::vector<uint8_t>& out, std::string_view field, uint32_t max) {
    uint32_t n = 0;
    if (!length(n, field)) return false;
    if (n > max) {
      return fail(ErrorCode::kResourceExhausted,
                  fmt::format("{}: {} bytes, the limit is {}", field, n, max));
    }
    out.assign(p_, p_ + n);
    p_ += n;
    return true;
  }

  bool option(bool& present, std::string_view field) {
    uint8_t tag = 0;
    if (!u8(tag, field)) return false;
    if (tag > 1) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: option tag {}, expected 0 (none) or 1 (some)", field, tag));
    }
    present = tag == 1;
    return true;
  }

  // A u32 element count. Each element takes at least `min_each` bytes, so a count the frame cannot
  // hold is refused before anything is allocated for it.
  bool count(uint32_t& n, std::string_view field, size_t min_each) {
    if (!u32(n, field)) return false;
    if (uint64_t{n} * min_each <= left()) return true;
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: count {} needs at least {} bytes, {} are left in the frame", field,
                            n, uint64_t{n} * min_each, left()));
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  Error error_;
};

// Smallest encodings, for Reader::count.
constexpr size_t kMinStringBytes = 4;
constexpr size_t kMinPairBytes = 8;
constexpr size_t kMinMessageBytes = 6;  // u32 data length, u8 format, u8 option tag

// A string that must also be a valid channel name. validate_channel_name's messages already name
// the field ("channel: ...").
bool read_channel(Reader& r, std::string& out) {
  // The length is checked before the name is copied: a frame-sized "name" costs nothing.
  uint32_t n = 0;
  Reader peek = r;
  if (peek.u32(n, "channel") && n > kMaxChannelNameBytes) {
    return r.fail(ErrorCode::kInvalidArgument,
                  fmt::format("channel: the name is {} bytes long, the limit is {}", n,
                              kMaxChannelNameBytes));
  }
  if (!r.string(out, "channel")) return false;
  Status s = validate_channel_name(out);
  if (s.ok()) return true;
  return r.fail(s.error().code, s.error().message);
}

// option<list<tuple<string, string>>> under Limits' metadata limits, reserved "witmq-" entries
// counted against their own allowance.
bool read_pairs(Reader& r, std::optional<Metadata>& out, std::string_view field,
                const Limits& limits) {
  bool present = false;
  if (!r.option(present, field)) return false;
  if (!present) {
    out.reset();
    return true;
  }
  uint32_t n = 0;
  if (!r.count(n, field, kMinPairBytes)) return false;
  if (uint64_t{n} > uint64_t{limits.max_metadata_entries} + kMaxReservedEntries) {
    return r.fail(ErrorCode::kResourceExhausted,
                  fmt::format("{}: {} entries, the limit is {} (plus {} witmq- entries)", field, n,
                              limits.max_metadata_entries, kMaxReservedEntries));
  }
  Metadata& md = out.emplace();
  md.reserve(n);
  uint32_t user_entries = 0, reserved_entries = 0;
  uint64_t user_bytes = 0, reserved_bytes = 0;
  // Nothing is copied beyond what the byte limits allow: each length is checked against what is
  // left of the allowance before its bytes are. Key and value are read as views and each pair is
  // built once from them, its strings constructed at their size.
  for (uint32_t i = 0; i < n; ++i) {
    std::string_view key, value;
    uint32_t length = 0;
    Reader peek = r;
    if (peek.u32(length, "key") &&
        length > uint64_t{limits.max_metadata_bytes} + kMaxReservedBytes) {
      return r.fail(ErrorCode::kResourceExhausted,
                    fmt::format("{}[{}].key: {} bytes, the limit is {} (plus {} for witmq- keys)",
                                field, i, length, limits.max_metadata_bytes, kMaxReservedBytes));
    }
    if (!r.view(key, "key")) return r.prefix(fmt::format("{}[{}].", field, i));
    const bool reserved = is_reserved_key(key);
    uint64_t& bytes = reserved ? reserved_bytes : user_bytes;
    const uint64_t allowance = reserved ? kMaxReservedBytes : limits.max_metadata_bytes;
    peek = r;
    if (peek.u32(length, "value") && bytes + key.size() + length > allowance) {
      return r.fail(ErrorCode::kResourceExhausted,
                    fmt::format("{}: {} bytes of {}keys and values, the limit is {}", field,
                                bytes + key.size() + length, reserved ? "witmq- " : "", allowance));
    }
    if (!r.view(value, "value")) return r.prefix(fmt::format("{}[{}].", field, i));
    md.emplace_back(std::piecewise_construct, std::forward_as_tuple(key),
                    std::forward_as_tuple(value));
    bytes += key.size() + value.size();
    ++(reserved ? reserved_entries : user_entries);
  }
  if (user_entries > limits.max_metadata_entries) {
    return r.fail(ErrorCode::kResourceExhausted,
                  fmt::format("{}: {} entries, the limit is {}", field, user_entries,
                              limits.max_metadata_entries));
  }
  if (reserved_entries > kMaxReservedEntries) {
    return r.fail(ErrorCode::kResourceExhausted,
                  fmt::format("{}: {} witmq- entries, the limit is {}", field, reserved_entries,
                              kMaxReservedEntries));
  }
  return true;
}

bool read_message(Reader& r, Message& m, const Limits& limits) {
  if (!r.data(m.data, "data", limits.max_message_bytes)) return false;
  uint8_t format = 0;
  if (!r.u8(format, "format")) return false;
  if (format >= kFormatCount) {
    return r.fail(ErrorCode::kInvalidArgument,
                  fmt::format("format: {} is not a format-spec case (0 cloudevents, 1 http, "
                              "2 amqp, 3 mqtt, 4 kafka, 5 raw)",
                              format));
  }
  m.format = static_cast<Format>(format);
  return read_pairs(r, m.metadata, "metadata", limits);
}

bool read_messages(Reader& r, std::vector<Message>& out, const Limits& limits) {
  uint32_t n = 0;
  if (!r.count(n, "messages", kMinMessageBytes)) return false;
  if (n > limits.max_batch_messages) {
    return r.fail(
        ErrorCode::kResourceExhausted,
        fmt::format("messages: {} messages, the limit is {}", n, limits.max_batch_messages));
  }
  out.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (!read_message(r, out[i], limits)) return r.prefix(fmt::format("messages[{}].", i));
  }
  return true;
}

bool read_error(Reader& r, Error& e) {
  uint16_t code = 0;
  if (!r.u16(code, "code")) return false;
  e.code = static_cast<ErrorCode>(code);
  return r.string(e.message, "message");
}

bool read_connect(Reader& r, Connect& b) {
  uint32_t n = 0;
  if (!r.count(n, "versions", 2)) return false;
  if (n > kMaxConnectVersions) {
    return r.fail(ErrorCode::kInvalidArgument,
                  fmt::format("versions: {} listed, at most {}", n, kMaxConnectVersions));
  }
  b.versions.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (!r.u16(b.versions[i], "versions")) return false;
  }
  if (!r.string(b.name, "name", kMaxClientNameBytes)) return false;
  bool has_token = false;
  if (!r.option(has_token, "token")) return false;
  if (has_token && !r.string(b.token.emplace(), "token", kMaxTokenBytes)) return false;
  return true;
}

bool read_connect_ok(Reader& r, ConnectOk& b) {
  ServerLimits& l = b.limits;
  return r.u16(b.version, "version") && r.string(b.server, "server") &&
         r.u32(l.max_frame_bytes, "max-frame-bytes") &&
         r.u32(l.max_send_messages, "max-send-messages") &&
         r.u32(l.max_receive_messages, "max-receive-messages") &&
         r.u32(l.max_message_bytes, "max-message-bytes") &&
         r.u32(l.max_metadata_entries, "max-metadata-entries") &&
         r.u32(l.max_metadata_bytes, "max-metadata-bytes") &&
         r.u32(l.max_config_channels, "max-config-channels") &&
         r.u32(l.max_in_flight, "max-in-flight") && r.u32(l.max_credit, "max-credit") &&
         r.u32(l.idle_timeout_ms, "idle-timeout-ms");
}

bool read_guest_configuration(Reader& r, GuestConfiguration& gc, const Limits& limits) {
  uint32_t n = 0;
  if (!r.count(n, "channels", kMinStringBytes)) return false;
  if (n > limits.max_config_channels) {
    return r.fail(
        ErrorCode::kResourceExhausted,
        fmt::format("channels: {} channels, the limit is {}", n, limits.max_config_channels));
  }
  gc.channels.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (!read_channel(r, gc.channels[i])) return r.prefix(fmt::format("channels[{}]: ", i));
  }
  return read_pairs(r, gc.extensions, "extensions", limits);
}

bool read_body(Reader& r, FrameType type, const Limits& limits, Body& body) {
  switch (type) {
    case FrameType::kConnect:
      return read_connect(r, body.emplace<Connect>());
    case FrameType::kSend: {
      auto& b = body.emplace<Send>();
      return read_channel(r, b.channel) && read_messages(r, b.messages, limits);
    }
    case FrameType::kSubscribeTryReceive: {
      auto& b = body.emplace<SubscribeTryReceive>();
      return read_channel(r, b.channel) && r.u32(b.timeout_ms, "timeout-ms");
    }
    case FrameType::kSubscribeReceive:
      return read_channel(r, body.emplace<SubscribeReceive>().channel);
    case FrameType::kUpdateGuestConfiguration:
      return read_guest_configuration(r, body.emplace<UpdateGuestConfiguration>().config, limits);
    case FrameType::kCompleteMessage:
      return read_message(r, body.emplace<CompleteMessage>().message, limits) ||
             r.prefix("message.");
    case FrameType::kAbandonMessage:
      return read_message(r, body.emplace<AbandonMessage>().message, limits) ||
             r.prefix("message.");
    case FrameType::kStreamStart:
      return r.u32(body.emplace<StreamStart>().credit, "credit");
    case FrameType::kCredit:
      return r.u32(body.emplace<Credit>().additional, "additional");
    case FrameType::kStreamStop:
      body.emplace<StreamStop>();
      return true;
    case FrameType::kPing:
      return r.u64(body.emplace<Ping>().payload, "payload");
    case FrameType::kChannelList:
    case FrameType::kChannelDeclare:
    case FrameType::kChannelDelete:
    case FrameType::kChannelStats:
    case FrameType::kBrowse:
    case FrameType::kReplayDeadLetters:
    case FrameType::kPurge:
    case FrameType::kServerStats: {
      auto& b = body.emplace<AdminRequest>();
      b.op = static_cast<AdminOp>(static_cast<uint8_t>(type) - kAdminRequestBase);
      return r.string(b.json, "json");
    }
    case FrameType::kRequest: {
      auto& b = body.emplace<Request>();
      return read_channel(r, b.channel) && r.u32(b.timeout_ms, "timeout-ms") &&
             r.u32(b.expected_replies, "expected-replies") &&
             (read_message(r, b.message, limits) || r.prefix("message."));
    }
    case FrameType::kReply: {
      auto& b = body.emplace<Reply>();
      return r.string(b.reply_to, "reply-to", kMaxReplyFieldBytes) &&
             r.string(b.correlation_id, "correlation-id", kMaxReplyFieldBytes) &&
             (read_message(r, b.message, limits) || r.prefix("message."));
    }
    case FrameType::kRequestOk:
      return read_messages(r, body.emplace<RequestOk>().replies, limits);
    case FrameType::kReplyOk:
      body.emplace<ReplyOk>();
      return true;
    case FrameType::kConnectOk:
      return read_connect_ok(r, body.emplace<ConnectOk>());
    case FrameType::kSendOk:
      body.emplace<SendOk>();
      return true;
    case FrameType::kSubscribeTryReceiveOk: {
      auto& b = body.emplace<SubscribeTryReceiveOk>();
      bool present = false;
      if (!r.option(present, "messages")) return false;
      return !present || read_messages(r, b.messages.emplace(), limits);
    }
    case FrameType::kSubscribeReceiveOk:
      return read_messages(r, body.emplace<SubscribeReceiveOk>().messages, limits);
    case FrameType::kUpdateGuestConfigurationOk:
      body.emplace<UpdateGuestConfigurationOk>();
      return true;
    case FrameType::kCompleteMessageOk:
      body.emplace<CompleteMessageOk>();
      return true;
    case FrameType::kAbandonMessageOk:
      body.emplace<AbandonMessageOk>();
      return true;
    case FrameType::kStreamStartOk:
      body.emplace<StreamStartOk>();
      return true;
    case FrameType::kCreditOk:
      body.emplace<CreditOk>();
      return true;
    case FrameType::kStreamStopOk:
      body.emplace<StreamStopOk>();
      return true;
    case FrameType::kPong:
      return r.u64(body.emplace<Pong>().payload, "payload");
    case FrameType::kBrowseOk:
      return read_messages(r, body.emplace<BrowseOk>().messages, limits);
    case FrameType::kChannelListOk:
    case FrameType::kChannelDeclareOk:
    case FrameType::kChannelDeleteOk:
    case FrameType::kChannelStatsOk:
    case FrameType::kReplayDeadLettersOk:
    case FrameType::kPurgeOk:
    case FrameType::kServerStatsOk: {
      auto& b = body.emplace<AdminReply>();
      b.op = static_cast<AdminOp>(static_cast<uint8_t>(type) - kAdminReplyBase);
      return r.string(b.json, "json");
    }
    case FrameType::kDeliver: {
      auto& b = body.emplace<Deliver>();
      return read_channel(r, b.channel) && read_messages(r, b.messages, limits);
    }
    case FrameType::kStreamEnd:
      return read_error(r, body.emplace<StreamEnd>().error);
    case FrameType::kError:
      return read_error(r, body.emplace<ErrorReply>().error);
    case FrameType::kGoaway:
      return read_error(r, body.emplace<Goaway>().error);
  }
  // decode_frame checked the type byte before calling.
  return r.fail(ErrorCode::kInternal, "unreachable frame type");
}

}  // namespace

// ---- encoding: public ------------------------------------------------------------------------

size_t message_wire_size(const Message& m) {
  return 4 + m.data.size() + 1 + optional_pairs_size(m.metadata);
}

size_t message_wire_size(const MessageParts& m) {
  const Message& msg = *m.message;
  if (!msg.metadata && m.extra.empty()) return 4 + msg.data.size() + 1 + 1;
  size_t n = 4 + msg.data.size() + 1 + 1 + 4;
  if (msg.metadata) {
    for (const auto& [k, v] : *msg.metadata) n += 8 + k.size() + v.size();
  }
  for (const auto& [k, v] : m.extra) n += 8 + k.size() + v.size();
  return n;
}

size_t message_frame_overhead(std::string_view channel) {
  return kHeaderBytes + string_size(channel) + 4;
}

size_t encode(Buffer& out, uint32_t request_id, const Connect& b) {
  const size_t size =
      4 + 2 * b.versions.size() + string_size(b.name) + 1 + (b.token ? string_size(*b.token) : 0);
  return write_frame(out, FrameType::kConnect, request_id, size, [&](Writer& w) {
    w.u32(static_cast<uint32_t>(b.versions.size()));
    for (uint16_t v : b.versions) w.u16(v);
    w.string(b.name);
    if (b.token) {
      w.u8(1);
      w.string(*b.token);
    } else {
      w.u8(0);
    }
  });
}

size_t encode(Buffer& out, uint32_t request_id, const Send& b) {
  return encode_send(out, request_id, b.channel, b.messages);
}

size_t encode(Buffer& out, uint32_t request_id, const SubscribeTryReceive& b) {
  return write_frame(out, FrameType::kSubscribeTryReceive, request_id, string_size(b.channel) + 4,
                     [&](Writer& w) {
                       w.string(b.channel);
                       w.u32(b.timeout_ms);
                     });
}

size_t encode(Buffer& out, uint32_t request_id, const SubscribeReceive& b) {
  return encode_string_body(out, FrameType::kSubscribeReceive, request_id, b.channel);
}

size_t encode(Buffer& out, uint32_t request_id, const UpdateGuestConfiguration& b) {
  const GuestConfiguration& gc = b.config;
  size_t size = 4 + optional_pairs_size(gc.extensions);
  for (const auto& c : gc.channels) size += string_size(c);
  return write_frame(out, FrameType::kUpdateGuestConfiguration, request_id, size, [&](Writer& w) {
    w.u32(static_cast<uint32_t>(gc.channels.size()));
    for (const auto& c : gc.channels) w.string(c);
    w.optional_pairs(gc.extensions);
  });
}

size_t encode(Buffer& out, uint32_t request_id, const CompleteMessage& b) {
  return encode_message_body(out, FrameType::kCompleteMessage, request_id, b.message);
}

size_t encode(Buffer& out, uint32_t request_id, const AbandonMessage& b) {
  return encode_message_body(out, FrameType::kAbandonMessage, request_id, b.message);
}

size_t encode(Buffer& out, uint32_t request_id, const StreamStart& b) {
  return encode_u32_body(out, FrameType::kStreamStart, request_id, b.credit);
}

size_t encode(Buffer& out, uint32_t request_id, const Credit& b) {
  return encode_u32_body(out, FrameType::kCredit, request_id, b.additional);
}

size_t encode(Buffer& out, uint32_t request_id, const Ping& b) {
  return encode_u64_body(out, FrameType::kPing, request_id, b.payload);
}

size_t encode(Buffer& out, uint32_t request_id, const AdminRequest& b) {
  const auto type = static_cast<FrameType>(kAdminRequestBase + static_cast<uint8_t>(b.op));
  return encode_string_body(out, type, request_id, b.json);
}

size_t encode(Buffer& out, uint32_t request_id, const Request& b) {
  const size_t size = string_size(b.channel) + 8 + message_wire_size(b.message);
  return write_frame(out, FrameType::kRequest, request_id, size, [&](Writer& w) {
    w.string(b.channel);
    w.u32(b.timeout_ms);
    w.u32(b.expected_replies);
    w.message(b.message);
  });
}

size_t encode(Buffer& out, uint32_t request_id, const Reply& b) {
  const size_t size =
      string_size(b.reply_to) + string_size(b.correlation_id) + message_wire_size(b.message);
  return write_frame(out, FrameType::kReply, request_id, size, [&](Writer& w) {
    w.string(b.reply_to);
    w.string(b.correlation_id);
    w.message(b.message);
  });
}

size_t encode(Buffer& out, uint32_t request_id, const RequestOk& b) {
  return write_frame(out, FrameType::kRequestOk, request_id, messages_size(b.replies),
                     [&](Writer& w) { w.messages(b.replies); });
}

size_t encode(Buffer& out, uint32_t request_id, const ConnectOk& b) {
  const ServerLimits& l = b.limits;
  return write_frame(out, FrameType::kConnectOk, request_id, 2 + string_size(b.server) + 40,
                     [&](Writer& w) {
                       w.u16(b.version);
                       w.string(b.server);
                       w.u32(l.max_frame_bytes);
                       w.u32(l.max_send_messages);
                       w.u32(l.max_receive_messages);
                       w.u32(l.max_message_bytes);
                       w.u32(l.max_metadata_entries);
                       w.u32(l.max_metadata_bytes);
                       w.u32(l.max_config_channels);
                       w.u32(l.max_in_flight);
                       w.u32(l.max_credit);
                       w.u32(l.idle_timeout_ms);
                     });
}

size_t encode(Buffer& out, uint32_t request_id, const SubscribeTryReceiveOk& b) {
  return encode_try_receive_ok(out, request_id, b.messages ? &*b.messages : nullptr);
}

size_t encode(Buffer& out, uint32_t request_id, const SubscribeReceiveOk& b) {
  return encode_receive_ok(out, request_id, b.messages);
}

size_t encode(Buffer& out, uint32_t request_id, const Pong& b) {
  return encode_u64_body(out, FrameType::kPong, request_id, b.payload);
}

size_t encode(Buffer& out, uint32_t request_id, const AdminReply& b) {
  assert(b.op != AdminOp::kBrowse);
  const auto type = static_cast<FrameType>(kAdminReplyBase + static_cast<uint8_t>(b.op));
  return encode_string_body(out, type, request_id, b.json);
}

size_t encode(Buffer& out, uint32_t request_id, const BrowseOk& b) {
  return write_frame(out, FrameType::kBrowseOk, request_id, messages_size(b.messages),
                     [&](Writer& w) { w.messages(b.messages); });
}

size_t encode(Buffer& out, uint32_t request_id, const Deliver& b) {
  return encode_deliver(out, request_id, b.channel, b.messages);
}

size_t encode(Buffer& out, const Frame& frame) {
  return std::visit([&](const auto& b) { return encode(out, frame.request_id, b); }, frame.body);
}

size_t encode_send(Buffer& out, uint32_t request_id, std::string_view channel,
                   std::span<const Message> messages) {
  return encode_channel_messages(out, FrameType::kSend, request_id, channel, messages);
}

size_t encode_deliver(Buffer& out, uint32_t stream_id, std::string_view channel,
                      std::span<const Message> messages) {
  return encode_channel_messages(out, FrameType::kDeliver, stream_id, channel, messages);
}

size_t encode_deliver_parts(Buffer& out, uint32_t stream_id, std::string_view channel,
                            std::span<const MessageParts> messages) {
  size_t size = string_size(channel) + 4;
  for (const MessageParts& m : messages) size += message_wire_size(m);
  return write_frame(out, FrameType::kDeliver, stream_id, size, [&](Writer& w) {
    w.string(channel);
    w.u32(static_cast<uint32_t>(messages.size()));
    for (const MessageParts& m : messages) w.message(m);
  });
}

size_t encode_receive_ok(Buffer& out, uint32_t request_id, std::span<const Message> messages) {
  return write_frame(out, FrameType::kSubscribeReceiveOk, request_id, messages_size(messages),
                     [&](Writer& w) { w.messages(messages); });
}

size_t encode_try_receive_ok(Buffer& out, uint32_t request_id,
                             const std::vector<Message>* messages) {
  const size_t size = 1 + (messages ? messages_size(*messages) : 0);
  return write_frame(out, FrameType::kSubscribeTryReceiveOk, request_id, size, [&](Writer& w) {
    if (messages) {
      w.u8(1);
      w.messages(*messages);
    } else {
      w.u8(0);
    }
  });
}

size_t encode_empty(Buffer& out, uint32_t request_id, FrameType type) {
  return write_frame(out, type, request_id, 0, [](Writer&) {});
}

size_t encode_error(Buffer& out, uint32_t request_id, FrameType type, const Error& error) {
  // Every string on the wire is UTF-8 (section 3), and error texts quote what clients sent, cut
  // to a length: whatever is not well-formed becomes U+FFFD.
  std::string repaired;
  std::string_view message = error.message;
  if (size_t bad = 0; !is_valid_utf8(message, &bad)) {
    repaired = to_valid_utf8(message);
    message = repaired;
  }
  return write_frame(out, type, request_id, 2 + string_size(message), [&](Writer& w) {
    w.u16(static_cast<uint16_t>(error.code));
    w.string(message);
  });
}

// ---- decoding: public ------------------------------------------------------------------------

DecodeResult decode_frame(std::span<const uint8_t> input, Side side, const Limits& limits) {
  if (input.size() < kLengthFieldBytes) return NeedMore{kLengthFieldBytes - input.size()};
  const uint32_t length = load_u32(input.data());
  if (length > limits.max_frame_bytes) {
    return DecodeError{Error(ErrorCode::kResourceExhausted,
                             fmt::format("frame length {} exceeds the limit of {} bytes", length,
                                         limits.max_frame_bytes)),
                       true};
  }
  if (length < kMinFrameLength) {
    return DecodeError{Error(ErrorCode::kInvalidArgument,
                             fmt::format("frame length {} is less than the {} bytes of type, "
                                         "flags and request id",
                                         length, kMinFrameLength)),
                       true};
  }
  const size_t total = kLengthFieldBytes + size_t{length};
  if (input.size() < total) return NeedMore{total - input.size()};

  // The frame is whole and well delimited: from here on every error spares the connection.
  const uint8_t code = input[4];
  const uint8_t flags = input[5];
  const uint32_t request_id = load_u32(input.data() + 6);
  auto frame_error = [&](ErrorCode c, std::string message) {
    return DecodeError{Error(c, std::move(message)), false, request_id, code, total};
  };

  const auto type = static_cast<FrameType>(code);
  if (!is_known_frame_type(code)) {
    return frame_error(ErrorCode::kUnsupported,
                       fmt::format("frame type 0x{:02x} is unknown", code));
  }
  if (is_request_type(type) != (side == Side::kServer)) {
    return frame_error(
        ErrorCode::kUnsupported,
        fmt::format("frame type 0x{:02x} ({}) is not one a {} accepts", code, frame_type_name(type),
                    side == Side::kServer ? "server" : "client"));
  }
  const std::string_view name = frame_type_name(type);
  if (flags != 0) {
    return frame_error(
        ErrorCode::kInvalidArgument,
        fmt::format("{}: flags 0x{:02x}, expected 0x00 (version 1 defines none)", name, flags));
  }

  Reader r(input.data() + kHeaderBytes, length - kMinFrameLength);
  Decoded decoded{Frame{request_id, {}}, total};
  if (!read_body(r, type, limits, decoded.frame.body)) {
    r.prefix(fmt::format("{}: ", name));
    return frame_error(r.error().code, std::move(r.error().message));
  }
  if (r.left() != 0) {
    return frame_error(
        ErrorCode::kInvalidArgument,
        fmt::format("{}: {} bytes after the last field, expected none", name, r.left()));
  }
  return decoded;
}

}  // namespace witmq::net
