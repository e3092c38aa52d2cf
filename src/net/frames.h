// The frames of the witmq wire protocol (docs/PROTOCOL.md) as C++ values: one struct per frame
// body, the frame types and the limits a decoder enforces. The byte layout lives in codec.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/message.h"
#include "common/result.h"

namespace witmq::net {

// The protocol versions this build speaks, lowest first. docs/PROTOCOL.md describes version 1.
inline constexpr uint16_t kProtocolVersion = 1;

// Every frame starts with this header: u32 length (bytes after the length field), u8 type,
// u8 flags, u32 request id. All integers are big-endian.
inline constexpr size_t kLengthFieldBytes = 4;
inline constexpr size_t kHeaderBytes = 10;
// The smallest legal value of the length field: type + flags + request id.
inline constexpr uint32_t kMinFrameLength = kHeaderBytes - kLengthFieldBytes;

// Frame type codes. A success reply's code is its request's code | 0x80; 0xC0.. are pushed by the
// server; 0x20..0x27 (and their replies 0xA0..0xA7) are witmq admin extensions beyond the WIT;
// 0x30..0x31 (replies 0xB0..0xB1) the request-reply extensions.
enum class FrameType : uint8_t {
  // Requests (client -> server).
  kConnect = 0x01,
  kSend = 0x02,
  kSubscribeTryReceive = 0x03,
  kSubscribeReceive = 0x04,
  kUpdateGuestConfiguration = 0x05,
  kCompleteMessage = 0x06,
  kAbandonMessage = 0x07,
  kStreamStart = 0x08,
  kCredit = 0x09,
  kStreamStop = 0x0A,
  kPing = 0x0B,
  kChannelList = 0x20,
  kChannelDeclare = 0x21,
  kChannelDelete = 0x22,
  kChannelStats = 0x23,
  kBrowse = 0x24,
  kReplayDeadLetters = 0x25,
  kPurge = 0x26,
  kServerStats = 0x27,
  kRequest = 0x30,
  kReply = 0x31,
  // Success replies (server -> client), request | 0x80.
  kConnectOk = 0x81,
  kSendOk = 0x82,
  kSubscribeTryReceiveOk = 0x83,
  kSubscribeReceiveOk = 0x84,
  kUpdateGuestConfigurationOk = 0x85,
  kCompleteMessageOk = 0x86,
  kAbandonMessageOk = 0x87,
  kStreamStartOk = 0x88,
  kCreditOk = 0x89,
  kStreamStopOk = 0x8A,
  kPong = 0x8B,
  kChannelListOk = 0xA0,
  kChannelDeclareOk = 0xA1,
  kChannelDeleteOk = 0xA2,
  kChannelStatsOk = 0xA3,
  kBrowseOk = 0xA4,
  kReplayDeadLettersOk = 0xA5,
  kPurgeOk = 0xA6,
  kServerStatsOk = 0xA7,
  kRequestOk = 0xB0,
  kReplyOk = 0xB1,
  // Pushed by the server on a stream (request id = the stream-start request's id).
  kDeliver = 0xC0,
  kStreamEnd = 0xC1,
  // The server is closing the connection; sent last.
  kGoaway = 0xFE,
  // A request failed; the connection stays open.
  kError = 0xFF,
};

// "connect", "send-ok", ...; "unknown" for a code that is not a frame type.
std::string_view frame_type_name(FrameType type);
// True for the codes above.
bool is_known_frame_type(uint8_t code);
// True for frames a client sends (requests); false for what a server sends.
bool is_request_type(FrameType type);

// The limits a decoder enforces. The server decodes requests with its configured limits and
// announces them in connect-ok; a client decodes replies with the announced ones (or these
// defaults before connect-ok arrives).
struct Limits {
  // Largest value of a frame's length field (bytes after it). A larger one closes the connection.
  uint32_t max_frame_bytes = 16 << 20;
  // Messages in one list<message>: a send on the server side; a reply, deliver or browse on the
  // client side.
  uint32_t max_batch_messages = 10'000;
  // Data bytes of one message.
  uint32_t max_message_bytes = 1 << 20;
  // Metadata entries of one message, and extension entries of a guest-configuration, not counting
  // reserved "witmq-" keys (those have their own fixed allowance, below).
  uint32_t max_metadata_entries = 64;
  // Key + value bytes of those entries.
  uint32_t max_metadata_bytes = 16 << 10;
  // Channels in one guest-configuration.
  uint32_t max_config_channels = 1024;
};

// Fixed allowance for reserved "witmq-" metadata entries on top of Limits, so that a message
// delivered with the broker's entries can be sent back in complete/abandon as it is.
inline constexpr uint32_t kMaxReservedEntries = 32;
inline constexpr uint32_t kMaxReservedBytes = 4096;
// A reply's reply-to and correlation-id, each at most this long (the server makes them shorter).
inline constexpr uint32_t kMaxReplyFieldBytes = 128;
// Versions a connect may list.
inline constexpr uint32_t kMaxConnectVersions = 16;
// A connect's name is a client name, which follows the channel-name rules (at most 200 bytes),
// and its token at most kMaxTokenBytes: both are checked before they are copied.
inline constexpr uint32_t kMaxClientNameBytes = 200;
inline constexpr uint32_t kMaxTokenBytes = 4096;
// Largest length field a server accepts before connect has succeeded: the largest connect
// (16 versions, a 200-byte name, a 4096-byte token) fits. A connection that has not connected
// can make the server hold no more than this for its input.
inline constexpr uint32_t kMaxConnectFrameBytes = 8192;

// What the server announces in connect-ok besides the version. 0 means "no limit" where noted.
struct ServerLimits {
  uint32_t max_frame_bytes = 0;
  uint32_t max_send_messages = 0;     // messages in one send
  uint32_t max_receive_messages = 0;  // messages the server puts in one reply or deliver frame
  uint32_t max_message_bytes = 0;
  uint32_t max_metadata_entries = 0;
  uint32_t max_metadata_bytes = 0;
  uint32_t max_config_channels = 0;
  uint32_t max_in_flight = 0;    // requests read but not yet answered; 0 = no limit
  uint32_t max_credit = 0;       // outstanding stream credit; 0 = no limit
  uint32_t idle_timeout_ms = 0;  // silence after which the server closes; 0 = never

  bool operator==(const ServerLimits&) const = default;
};

// The limits a client decodes the server's frames with, from what connect-ok announced: the
// batch limit is max_receive_messages, and a 0 (no limit) becomes the largest value.
Limits client_limits(const ServerLimits& announced);

// A body with no fields. One distinct type per frame type, so a variant can tell them apart.
template <FrameType T>
struct Empty {
  static constexpr FrameType kType = T;
  bool operator==(const Empty&) const = default;
};

// ---- requests --------------------------------------------------------------------------------

// connect: the first frame of every connection.
struct Connect {
  static constexpr FrameType kType = FrameType::kConnect;
  std::vector<uint16_t> versions;    // protocol versions the client speaks
  std::string name;                  // WIT client.connect(name); "" = ephemeral
  std::optional<std::string> token;  // authentication token
  bool operator==(const Connect&) const = default;
};

// send: producer.send(channel, messages).
struct Send {
  static constexpr FrameType kType = FrameType::kSend;
  std::string channel;
  std::vector<Message> messages;
  bool operator==(const Send&) const = default;
};

// subscribe-try-receive: consumer.subscribe-try-receive(channel, timeout).
struct SubscribeTryReceive {
  static constexpr FrameType kType = FrameType::kSubscribeTryReceive;
  std::string channel;
  uint32_t timeout_ms = 0;
  bool operator==(const SubscribeTryReceive&) const = default;
};

// subscribe-receive: consumer.subscribe-receive(channel).
struct SubscribeReceive {
  static constexpr FrameType kType = FrameType::kSubscribeReceive;
  std::string channel;
  bool operator==(const SubscribeReceive&) const = default;
};

// update-guest-configuration: consumer.update-guest-configuration(config).
struct UpdateGuestConfiguration {
  static constexpr FrameType kType = FrameType::kUpdateGuestConfiguration;
  GuestConfiguration config;
  bool operator==(const UpdateGuestConfiguration&) const = default;
};

// complete-message: consumer.complete-message(message), the message as delivered.
struct CompleteMessage {
  static constexpr FrameType kType = FrameType::kCompleteMessage;
  Message message;
  bool operator==(const CompleteMessage&) const = default;
};

// abandon-message: consumer.abandon-message(message), the message as delivered.
struct AbandonMessage {
  static constexpr FrameType kType = FrameType::kAbandonMessage;
  Message message;
  bool operator==(const AbandonMessage&) const = default;
};

// stream-start: push deliver frames for the configured channels, up to `credit` messages.
struct StreamStart {
  static constexpr FrameType kType = FrameType::kStreamStart;
  uint32_t credit = 0;
  bool operator==(const StreamStart&) const = default;
};

// credit: the stream may deliver `additional` more messages.
struct Credit {
  static constexpr FrameType kType = FrameType::kCredit;
  uint32_t additional = 0;
  bool operator==(const Credit&) const = default;
};

using StreamStop = Empty<FrameType::kStreamStop>;

// ping: keepalive; answered by pong with the same payload.
struct Ping {
  static constexpr FrameType kType = FrameType::kPing;
  uint64_t payload = 0;
  bool operator==(const Ping&) const = default;
};

// request: send `message` to `channel` as a request and wait for up to `expected_replies`
// replies for `timeout_ms` (docs/PROTOCOL.md, section 16).
struct Request {
  static constexpr FrameType kType = FrameType::kRequest;
  std::string channel;
  uint32_t timeout_ms = 0;
  uint32_t expected_replies = 1;
  Message message;
  bool operator==(const Request&) const = default;
};

// reply: answer the request whose witmq-reply-to and witmq-correlation-id these are.
struct Reply {
  static constexpr FrameType kType = FrameType::kReply;
  std::string reply_to;
  std::string correlation_id;
  Message message;
  bool operator==(const Reply&) const = default;
};

// The admin extensions, in frame-type order: request type = 0x20 + op, reply type = 0xA0 + op.
enum class AdminOp : uint8_t {
  kChannelList = 0,
  kChannelDeclare = 1,
  kChannelDelete = 2,
  kChannelStats = 3,
  kBrowse = 4,
  kReplayDeadLetters = 5,
  kPurge = 6,
  kServerStats = 7,
};
inline constexpr uint8_t kAdminOpCount = 8;
inline constexpr uint8_t kAdminRequestBase = 0x20;
inline constexpr uint8_t kAdminReplyBase = 0xA0;

// An admin request: a JSON object whose fields docs/PROTOCOL.md lists per op.
struct AdminRequest {
  AdminOp op = AdminOp::kChannelList;
  std::string json;
  bool operator==(const AdminRequest&) const = default;
};

// ---- replies ---------------------------------------------------------------------------------

struct ConnectOk {
  static constexpr FrameType kType = FrameType::kConnectOk;
  uint16_t version = kProtocolVersion;  // the version the server picked
  std::string server;                   // "witmqd/<version>"
  ServerLimits limits;
  bool operator==(const ConnectOk&) const = default;
};

using SendOk = Empty<FrameType::kSendOk>;

// none: nothing arrived within the timeout.
struct SubscribeTryReceiveOk {
  static constexpr FrameType kType = FrameType::kSubscribeTryReceiveOk;
  std::optional<std::vector<Message>> messages;
  bool operator==(const SubscribeTryReceiveOk&) const = default;
};

struct SubscribeReceiveOk {
  static constexpr FrameType kType = FrameType::kSubscribeReceiveOk;
  std::vector<Message> messages;
  bool operator==(const SubscribeReceiveOk&) const = default;
};

using UpdateGuestConfigurationOk = Empty<FrameType::kUpdateGuestConfigurationOk>;
using CompleteMessageOk = Empty<FrameType::kCompleteMessageOk>;
using AbandonMessageOk = Empty<FrameType::kAbandonMessageOk>;
using StreamStartOk = Empty<FrameType::kStreamStartOk>;
using CreditOk = Empty<FrameType::kCreditOk>;
using StreamStopOk = Empty<FrameType::kStreamStopOk>;

struct Pong {
  static constexpr FrameType kType = FrameType::kPong;
  uint64_t payload = 0;
  bool operator==(const Pong&) const = default;
};

// The reply to an admin request other than browse: a JSON object.
struct AdminReply {
  AdminOp op = AdminOp::kChannelList;
  std::string json;
  bool operator==(const AdminReply&) const = default;
};

// The reply to browse: the messages, binary like a receive's.
struct BrowseOk {
  static constexpr FrameType kType = FrameType::kBrowseOk;
  std::vector<Message> messages;
  bool operator==(const BrowseOk&) const = default;
};

// The replies a request gathered, in arrival order.
struct RequestOk {
  static constexpr FrameType kType = FrameType::kRequestOk;
  std::vector<Message> replies;
  bool operator==(const RequestOk&) const = default;
};

using ReplyOk = Empty<FrameType::kReplyOk>;

// ---- pushed by the server --------------------------------------------------------------------

// deliver: messages of one channel on a stream.
struct Deliver {
  static constexpr FrameType kType = FrameType::kDeliver;
  std::string channel;
  std::vector<Message> messages;
  bool operator==(const Deliver&) const = default;
};

// Bodies that carry an Error: the stream ended, a request failed, the connection is closing.
// The code is kept as sent, so it may be a value newer than this build's ErrorCode list.
template <FrameType T>
struct ErrorBody {
  static constexpr FrameType kType = T;
  Error error;
  bool operator==(const ErrorBody& o) const {
    return error.code == o.error.code && error.message == o.error.message;
  }
};
using StreamEnd = ErrorBody<FrameType::kStreamEnd>;
using ErrorReply = ErrorBody<FrameType::kError>;
using Goaway = ErrorBody<FrameType::kGoaway>;

// Any frame body. Alternatives are in frame-type order within each group.
using Body = std::variant<
    // requests
    Connect, Send, SubscribeTryReceive, SubscribeReceive, UpdateGuestConfiguration, CompleteMessage,
    AbandonMessage, StreamStart, Credit, StreamStop, Ping, AdminRequest, Request, Reply,
    // replies
    ConnectOk, SendOk, SubscribeTryReceiveOk, SubscribeReceiveOk, UpdateGuestConfigurationOk,
    CompleteMessageOk, AbandonMessageOk, StreamStartOk, CreditOk, StreamStopOk, Pong, AdminReply,
    BrowseOk, RequestOk, ReplyOk,
    // pushed / errors
    Deliver, StreamEnd, ErrorReply, Goaway>;

// One frame: the request id it answers (or carries) and its body. The type follows from the body.
struct Frame {
  uint32_t request_id = 0;
  Body body;

  FrameType type() const;
  bool operator==(const Frame&) const = default;
};

}  // namespace witmq::net
