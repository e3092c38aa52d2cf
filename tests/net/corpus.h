// Test support for the wire protocol: a valid sample of every frame type, and a corpus of
// malformed input with what the codec and the server must do with each. The codec tests decode
// them; the server tests replay them over TCP against a real daemon.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/message.h"
#include "common/result.h"
#include "net/codec.h"
#include "net/frames.h"

namespace witmq::net::testing {

// Builds frame bytes by hand, so tests can write what the encoder never would.
class Bytes {
 public:
  Bytes& u8(uint8_t v) {
    b_.push_back(v);
    return *this;
  }
  Bytes& u16(uint16_t v) { return u8(static_cast<uint8_t>(v >> 8)).u8(static_cast<uint8_t>(v)); }
  Bytes& u32(uint32_t v) {
    return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v));
  }
  Bytes& u64(uint64_t v) {
    return u32(static_cast<uint32_t>(v >> 32)).u32(static_cast<uint32_t>(v));
  }
  Bytes& raw(std::string_view s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& raw(const std::vector<uint8_t>& v) {
    b_.insert(b_.end(), v.begin(), v.end());
    return *this;
  }
  // u32 length + bytes.
  Bytes& str(std::string_view s) { return u32(static_cast<uint32_t>(s.size())).raw(s); }

  const std::vector<uint8_t>& bytes() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  std::vector<uint8_t> b_;
};

// A frame around `body`, with a length field that tells the truth.
inline std::vector<uint8_t> raw_frame(uint8_t type, uint32_t request_id, const Bytes& body,
                                      uint8_t flags = 0) {
  Bytes f;
  f.u32(static_cast<uint32_t>(kMinFrameLength + body.size())).u8(type).u8(flags).u32(request_id);
  f.raw(body.bytes());
  return f.bytes();
}

inline std::vector<uint8_t> encoded(const Frame& frame) {
  Buffer out;
  encode(out, frame);
  return out;
}

inline Message sample_message(std::string data, Format format,
                              std::optional<Metadata> metadata = std::nullopt) {
  return Message{std::vector<uint8_t>(data.begin(), data.end()), format, std::move(metadata)};
}

// A valid connect, as a malformed case sent after it needs one first.
inline std::vector<uint8_t> hello_frame(uint32_t request_id = 1) {
  return encoded(Frame{request_id, Connect{{kProtocolVersion}, "corpus", std::nullopt}});
}

// One valid frame of every body alternative (and of every admin op), with varied content: empty
// and non-empty lists, options present and absent, every format, non-ASCII text, binary data.
inline std::vector<Frame> sample_frames() {
  const Message plain = sample_message("hello", Format::kRaw);
  const Message rich = sample_message(
      std::string("\x00\x01\xff\x80", 4), Format::kCloudevents,
      Metadata{{"content-type", "application/json"}, {"ключ", "значение ✓"}, {"empty", ""}});
  const Message delivered =
      sample_message("payload", Format::kKafka,
                     Metadata{{"k", "v"},
                              {std::string(meta::kId), "orders/42"},
                              {std::string(meta::kAttempt), "1"},
                              {std::string(meta::kReceipt), "r1.orders.42.7"}});
  std::vector<Message> all_formats;
  for (uint8_t f = 0; f < kFormatCount; ++f) {
    all_formats.push_back(
        sample_message(std::string(f, 'x'), static_cast<Format>(f),
                       f % 2 ? std::optional<Metadata>(Metadata{}) : std::nullopt));
  }

  std::vector<Frame> frames = {
      {1, Connect{{1}, "", std::nullopt}},
      {2, Connect{{1, 2, 7}, "billing-worker", std::string("s3cr3t")}},
      {3, Send{"orders", {plain}}},
      {4, Send{"a.b_c-d:e/f", {rich, delivered}}},
      {5, Send{"formats", all_formats}},
      {6, Send{"empty-batch", {}}},
      {7, SubscribeTryReceive{"orders", 0}},
      {8, SubscribeTryReceive{"orders", 0xFFFFFFFFu}},
      {9, SubscribeReceive{"orders"}},
      {10, UpdateGuestConfiguration{GuestConfiguration{{}, std::nullopt}}},
      {11, UpdateGuestConfiguration{GuestConfiguration{
               {"orders", "events/eu"}, Metadata{{"start", "earliest"}, {"batch-size", "50"}}}}},
      {12, CompleteMessage{delivered}},
      {13, AbandonMessage{delivered}},
      {14, StreamStart{0}},
      {15, StreamStart{1000}},
      {16, Credit{1}},
      {17, Credit{0xFFFFFFFFu}},
      {18, StreamStop{}},
      {19, Ping{0x0123456789ABCDEFull}},
      {0xFFFFFFFFu, Ping{0}},
      {20, ConnectOk{1, "witmqd/0.1.0",
                     ServerLimits{16 << 20, 10000, 10000, 1 << 20, 64, 16384, 1024, 1024, 10000,
                                  60000}}},
      {21, SendOk{}},
      {22, SubscribeTryReceiveOk{std::nullopt}},
      {23, SubscribeTryReceiveOk{std::vector<Message>{}}},
      {24, SubscribeTryReceiveOk{std::vector<Message>{delivered, plain}}},
      {25, SubscribeReceiveOk{{delivered}}},
      {26, UpdateGuestConfigurationOk{}},
      {27, CompleteMessageOk{}},
      {28, AbandonMessageOk{}},
      {29, StreamStartOk{}},
      {30, CreditOk{}},
      {31, StreamStopOk{}},
      {32, Pong{0x0123456789ABCDEFull}},
      {33, BrowseOk{{delivered, rich}}},
      {15, Deliver{"orders", {delivered}}},
      {15, StreamEnd{Error(ErrorCode::kUnavailable, "the broker is shutting down")}},
      {34, ErrorReply{Error(ErrorCode::kNotFound, "channel 'nope' does not exist")}},
      // A code newer than this build's list travels unchanged.
      {35, ErrorReply{Error(static_cast<ErrorCode>(999), "from a newer server")}},
      {0, Goaway{Error(ErrorCode::kResourceExhausted, "frame length 99999999 exceeds the limit")}},
      {36, Request{"svc", 1000, 1, plain}},
      {37, Request{"svc.topic", 0xFFFFFFFFu, 0xFFFFFFFFu, rich}},
      {38, Reply{"0123456789abcdef0123456789abcdef", "0123456789abcdef", plain}},
      {39, Reply{std::string(kMaxReplyFieldBytes, 'r'), "", rich}},
      {36, RequestOk{{plain, rich}}},
      {38, ReplyOk{}},
  };
  for (uint8_t op = 0; op < kAdminOpCount; ++op) {
    frames.push_back(
        {100u + op, AdminRequest{static_cast<AdminOp>(op), R"({"channel":"orders"})"}});
    if (static_cast<AdminOp>(op) != AdminOp::kBrowse) {
      frames.push_back({100u + op, AdminReply{static_cast<AdminOp>(op), R"({"ok":true})"}});
    }
  }
  return frames;
}

// What the codec makes of a malformed input.
enum class CodecExpect {
  kNeedMore,  // NeedMore: the input is a valid frame's prefix
  kDecodes,   // a well-formed frame: only connection state makes it wrong (the server's job)
  kError,     // DecodeError, connection kept: the server answers with an error frame
  kFatal,     // DecodeError with close_connection: the server sends goaway and closes
};

// What the server does with it, over TCP.
enum class ServerExpect {
  kWait,        // nothing: it waits for the rest of the frame
  kErrorReply,  // an error frame with `code` on `request_id`; the connection stays open
  kClose,       // a goaway frame with `code` on `request_id`, then it closes
};

struct MalformedCase {
  std::string name;
  std::vector<uint8_t> bytes;
  // Sent as the first bytes of a connection; otherwise after a successful connect (hello_frame).
  bool first_frame = false;
  CodecExpect codec = CodecExpect::kError;
  ServerExpect server = ServerExpect::kErrorReply;
  ErrorCode code = ErrorCode::kInvalidArgument;
  uint32_t request_id = 0;
};

// Every malformed case, built for a server that runs with `limits`.
inline std::vector<MalformedCase> malformed_corpus(const Limits& limits = {}) {
  using E = ErrorCode;
  const auto send = static_cast<uint8_t>(FrameType::kSend);
  const auto complete = static_cast<uint8_t>(FrameType::kCompleteMessage);
  const auto ugc = static_cast<uint8_t>(FrameType::kUpdateGuestConfiguration);
  std::vector<MalformedCase> c;

  // A send of one message to `channel` with metadata {key: value}, fields as raw bytes.
  auto send_body = [](std::string_view channel, std::string_view key, std::string_view value,
                      uint8_t format = 5) {
    Bytes b;
    b.str(channel).u32(1).str("data").u8(format).u8(1).u32(1).str(key).str(value);
    return b;
  };
  // An error-reply case for a frame whose body is `body`.
  auto reply = [&](std::string name, uint8_t type, uint32_t rid, const Bytes& body,
                   ErrorCode code = E::kInvalidArgument) {
    c.push_back({std::move(name), raw_frame(type, rid, body), false, CodecExpect::kError,
                 ServerExpect::kErrorReply, code, rid});
  };

  // ---- framing: the connection cannot continue ----
  const std::vector<uint8_t> valid_send = raw_frame(send, 0x101, send_body("orders", "k", "v"));
  c.push_back({"truncated in the length field",
               std::vector<uint8_t>(valid_send.begin(), valid_send.begin() + 3), false,
               CodecExpect::kNeedMore, ServerExpect::kWait, E::kInvalidArgument, 0});
  c.push_back({"truncated in the body",
               std::vector<uint8_t>(valid_send.begin(), valid_send.end() - 1), false,
               CodecExpect::kNeedMore, ServerExpect::kWait, E::kInvalidArgument, 0});
  c.push_back({"frame length over the limit",
               Bytes().u32(limits.max_frame_bytes + 1).u8(send).u8(0).u32(0x102).bytes(), false,
               CodecExpect::kFatal, ServerExpect::kClose, E::kResourceExhausted, 0});
  c.push_back({"frame length 0xffffffff", Bytes().u32(0xFFFFFFFFu).bytes(), false,
               CodecExpect::kFatal, ServerExpect::kClose, E::kResourceExhausted, 0});
  c.push_back({"frame length shorter than the header", Bytes().u32(5).u8(send).u32(0).bytes(),
               false, CodecExpect::kFatal, ServerExpect::kClose, E::kInvalidArgument, 0});
  c.push_back({"frame length zero", Bytes().u32(0).bytes(), false, CodecExpect::kFatal,
               ServerExpect::kClose, E::kInvalidArgument, 0});
  c.push_back({"HTTP request instead of frames",
               Bytes().raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n").bytes(), true, CodecExpect::kFatal,
               ServerExpect::kClose, E::kResourceExhausted, 0});

  // ---- connection state (the codec decodes these; the server refuses them) ----
  c.push_back({"first frame is not connect", encoded(Frame{0x103, SubscribeReceive{"orders"}}),
               true, CodecExpect::kDecodes, ServerExpect::kClose, E::kFailedPrecondition, 0x103});
  c.push_back({"first frame is ping", encoded(Frame{0x104, Ping{1}}), true, CodecExpect::kDecodes,
               ServerExpect::kClose, E::kFailedPrecondition, 0x104});
  c.push_back({"connect with no common version", encoded(Frame{0x105, Connect{{99, 100}, "x", {}}}),
               true, CodecExpect::kDecodes, ServerExpect::kClose, E::kUnsupported, 0x105});
  c.push_back({"connect listing no version", encoded(Frame{0x106, Connect{{}, "x", {}}}), true,
               CodecExpect::kDecodes, ServerExpect::kClose, E::kUnsupported, 0x106});
  c.push_back({"connect with a name that is not UTF-8",
               raw_frame(0x01, 0x107, Bytes().u32(1).u16(1).str("\xc3\x28").u8(0)), true,
               CodecExpect::kError, ServerExpect::kClose, E::kInvalidArgument, 0x107});
  c.push_back({"connect with a truncated version list",
               raw_frame(0x01, 0x108, Bytes().u32(3).u16(1)), true, CodecExpect::kError,
               ServerExpect::kClose, E::kInvalidArgument, 0x108});
  c.push_back({"second connect", encoded(Frame{0x109, Connect{{1}, "again", {}}}), false,
               CodecExpect::kDecodes, ServerExpect::kErrorReply, E::kFailedPrecondition, 0x109});
  c.push_back({"credit with no stream", encoded(Frame{0x10A, Credit{10}}), false,
               CodecExpect::kDecodes, ServerExpect::kErrorReply, E::kFailedPrecondition, 0x10A});
  c.push_back({"stream-start with no configured channel", encoded(Frame{0x10B, StreamStart{10}}),
               false, CodecExpect::kDecodes, ServerExpect::kErrorReply, E::kFailedPrecondition,
               0x10B});
  c.push_back({"request with timeout-ms 0",
               encoded(Frame{0x10D, Request{"svc", 0, 1, sample_message("q", Format::kRaw)}}),
               false, CodecExpect::kDecodes, ServerExpect::kErrorReply, E::kInvalidArgument,
               0x10D});
  c.push_back(
      {"request with expected-replies 0xffffffff",
       encoded(Frame{0x10E, Request{"svc", 10, 0xFFFFFFFFu, sample_message("q", Format::kRaw)}}),
       false, CodecExpect::kDecodes, ServerExpect::kErrorReply, E::kInvalidArgument, 0x10E});
  c.push_back({"reply with an empty reply-to",
               encoded(Frame{0x10F, Reply{"", "c", sample_message("a", Format::kRaw)}}), false,
               CodecExpect::kDecodes, ServerExpect::kErrorReply, E::kInvalidArgument, 0x10F});
  c.push_back({"admin request that is not a JSON object",
               encoded(Frame{0x10C, AdminRequest{AdminOp::kChannelStats, "[1,2"}}), false,
               CodecExpect::kDecodes, ServerExpect::kErrorReply, E::kInvalidArgument, 0x10C});

  // ---- well framed, malformed inside: an error reply, the connection stays ----
  reply("unknown frame type 0x55", 0x55, 0x110, Bytes().u32(7), E::kUnsupported);
  reply("reply frame type sent to the server (send-ok)", 0x82, 0x111, Bytes(), E::kUnsupported);
  reply("push frame type sent to the server (deliver)", 0xC0, 0x112, send_body("orders", "k", "v"),
        E::kUnsupported);
  c.push_back({"non-zero flags", raw_frame(send, 0x113, send_body("orders", "k", "v"), 0x01), false,
               CodecExpect::kError, ServerExpect::kErrorReply, E::kInvalidArgument, 0x113});
  reply("channel is not UTF-8", send, 0x114,
        send_body("ord\xff"
                  "ers",
                  "k", "v"));
  reply("channel with a space", send, 0x115, send_body("my orders", "k", "v"));
  reply("channel empty", send, 0x116, send_body("", "k", "v"));
  reply("channel starting with a dot", send, 0x117, send_body(".hidden", "k", "v"));
  reply("channel longer than 200 bytes", send, 0x118,
        send_body(std::string(kMaxChannelNameBytes + 1, 'a'), "k", "v"));
  reply("metadata key is not UTF-8", send, 0x119, send_body("orders", "k\x80", "v"));
  reply("metadata value is not UTF-8 (overlong)", send, 0x11A,
        send_body("orders", "k", "\xc0\xaf"));
  reply("metadata value is a UTF-16 surrogate", send, 0x11B,
        send_body("orders", "k", "\xed\xa0\x80"));
  reply("metadata key above U+10FFFF", send, 0x11C, send_body("orders", "\xf4\x90\x80\x80", "v"));
  reply("metadata key with a truncated sequence", send, 0x11D,
        send_body("orders", "\xe2\x82", "v"));
  reply("format 6", send, 0x11E, send_body("orders", "k", "v", 6));
  reply("format 255", send, 0x11F, send_body("orders", "k", "v", 255));
  reply("metadata option tag 2", send, 0x120,
        Bytes().str("orders").u32(1).str("d").u8(5).u8(2).u32(0));
  reply("extensions option tag 7", ugc, 0x121, Bytes().u32(1).str("orders").u8(7));
  reply("message count larger than the bytes left", send, 0x122,
        Bytes().str("orders").u32(1000).str("d").u8(5).u8(0));
  reply("channel length larger than the bytes left", send, 0x123,
        Bytes().u32(1000).raw("orders").u32(0));
  reply("data length larger than the bytes left", send, 0x124,
        Bytes().str("orders").u32(1).u32(0x7FFFFFFF).raw("d").u8(5).u8(0));
  reply("metadata count larger than the bytes left", send, 0x125,
        Bytes().str("orders").u32(1).str("d").u8(5).u8(1).u32(0xFFFFFFFFu));
  reply("channel count larger than the bytes left", ugc, 0x126,
        Bytes().u32(0x10000000).str("orders").u8(0));
  reply("body ends inside a field (timeout missing)", 0x03, 0x127, Bytes().str("orders").u16(0));
  reply("trailing bytes after the last field", send, 0x128,
        Bytes().str("orders").u32(0).raw("junk"));
  reply("trailing bytes after stream-stop", 0x0A, 0x129, Bytes().u8(0));
  reply("ping with a short payload", 0x0B, 0x12A, Bytes().u32(1));
  reply("complete-message with a bad format", complete, 0x12B, Bytes().str("").u8(9).u8(0));
  reply("update-guest-configuration with a bad channel", ugc, 0x12C,
        Bytes().u32(2).str("ok").str("not ok").u8(0));
  reply("admin JSON is not UTF-8", 0x23, 0x12D, Bytes().str("{\"name\":\"\xfe\"}"));
  const auto request = static_cast<uint8_t>(FrameType::kRequest);
  const auto reply_type = static_cast<uint8_t>(FrameType::kReply);
  reply("request with a channel that is not a name", request, 0x12E,
        Bytes().str("no such/../name ").u32(10).u32(1).str("d").u8(5).u8(0));
  reply("request ends inside a field (expected-replies missing)", request, 0x12F,
        Bytes().str("svc").u32(10));
  reply("reply with a reply-to that is not UTF-8", reply_type, 0x135,
        Bytes().str("\xff\xfe").str("c").str("d").u8(5).u8(0));
  reply("reply with a reply-to longer than 128 bytes", reply_type, 0x136,
        Bytes().str(std::string(kMaxReplyFieldBytes + 1, 'a')).str("c").str("d").u8(5).u8(0),
        E::kResourceExhausted);
  reply("reply with a correlation-id length past the frame", reply_type, 0x137,
        Bytes().str("a").u32(0x7FFFFFFF).raw("c"));
  reply("reply with trailing bytes", reply_type, 0x138,
        Bytes().str("a").str("c").str("d").u8(5).u8(0).raw("x"));

  // ---- limits: an error reply ----
  {
    Bytes b;
    b.str("orders").u32(limits.max_batch_messages + 1);
    for (uint32_t i = 0; i <= limits.max_batch_messages; ++i) b.u32(0).u8(5).u8(0);
    reply("one message more than max-send-messages", send, 0x130, b, E::kResourceExhausted);
  }
  reply(
      "data one byte over max-message-bytes", send, 0x131,
      Bytes().str("orders").u32(1).str(std::string(limits.max_message_bytes + 1, 'x')).u8(5).u8(0),
      E::kResourceExhausted);
  {
    Bytes b;
    b.str("orders").u32(1).str("d").u8(5).u8(1).u32(limits.max_metadata_entries + 1);
    for (uint32_t i = 0; i <= limits.max_metadata_entries; ++i) b.str(std::to_string(i)).str("");
    reply("one metadata entry more than max-metadata-entries", send, 0x132, b,
          E::kResourceExhausted);
  }
  reply("metadata one byte over max-metadata-bytes", send, 0x133,
        send_body("orders", "k", std::string(limits.max_metadata_bytes, 'v')),
        E::kResourceExhausted);
  {
    Bytes b;
    b.u32(limits.max_config_channels + 1);
    for (uint32_t i = 0; i <= limits.max_config_channels; ++i) b.str(std::to_string(i));
    b.u8(0);
    reply("one channel more than max-config-channels", ugc, 0x134, b, E::kResourceExhausted);
  }
  reply("request data one byte over max-message-bytes", request, 0x139,
        Bytes()
            .str("svc")
            .u32(10)
            .u32(1)
            .str(std::string(limits.max_message_bytes + 1, 'x'))
            .u8(5)
            .u8(0),
        E::kResourceExhausted);
  return c;
}

}  // namespace witmq::net::testing
