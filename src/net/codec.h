// The witmq wire codec: frames (net/frames.h) to bytes and back, as docs/PROTOCOL.md specifies.
//
// Pure functions over bytes, no I/O: the TCP server and the client library both use it, and it can
// be fuzzed. The decoder is safe against any input: every length and count is checked against the
// bytes left in the frame and against Limits before anything is allocated, and it never reads
// outside the span it is given.
//
// What the codec does not check, because it needs connection state, is left to its user (see
// docs/PROTOCOL.md, section 10): that the first frame is connect (and that any error before a
// connect succeeded closes the connection, even one DecodeError marks as recoverable), that a
// connect's version is supported, that a second connect is refused, that a stream exists before
// credit and credit stays under max-credit, that admin JSON bodies hold the documented fields.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "common/message.h"
#include "common/result.h"
#include "net/frames.h"

namespace witmq::net {

// Encoded frames are appended to a byte vector; reuse one per connection to keep its capacity.
using Buffer = std::vector<uint8_t>;

// ---- encoding --------------------------------------------------------------------------------
// Each function appends one whole frame to `out` and returns the number of bytes appended. The
// encoder trusts its input (a Format outside 0..5 is written as it is) and does not apply Limits:
// a caller checks the result against the peer's max_frame_bytes + 4 before writing it. A frame
// whose length field would not fit in 32 bits is not encoded: nothing is appended and 0 returned.

size_t encode(Buffer& out, uint32_t request_id, const Connect& body);
size_t encode(Buffer& out, uint32_t request_id, const Send& body);
size_t encode(Buffer& out, uint32_t request_id, const SubscribeTryReceive& body);
size_t encode(Buffer& out, uint32_t request_id, const SubscribeReceive& body);
size_t encode(Buffer& out, uint32_t request_id, const UpdateGuestConfiguration& body);
size_t encode(Buffer& out, uint32_t request_id, const CompleteMessage& body);
size_t encode(Buffer& out, uint32_t request_id, const AbandonMessage& body);
size_t encode(Buffer& out, uint32_t request_id, const StreamStart& body);
size_t encode(Buffer& out, uint32_t request_id, const Credit& body);
size_t encode(Buffer& out, uint32_t request_id, const Ping& body);
size_t encode(Buffer& out, uint32_t request_id, const AdminRequest& body);
size_t encode(Buffer& out, uint32_t request_id, const Request& body);
size_t encode(Buffer& out, uint32_t request_id, const Reply& body);
size_t encode(Buffer& out, uint32_t request_id, const RequestOk& body);
size_t encode(Buffer& out, uint32_t request_id, const ConnectOk& body);
size_t encode(Buffer& out, uint32_t request_id, const SubscribeTryReceiveOk& body);
size_t encode(Buffer& out, uint32_t request_id, const SubscribeReceiveOk& body);
size_t encode(Buffer& out, uint32_t request_id, const Pong& body);
// `body.op` must not be kBrowse: browse is answered with BrowseOk.
size_t encode(Buffer& out, uint32_t request_id, const AdminReply& body);
size_t encode(Buffer& out, uint32_t request_id, const BrowseOk& body);
size_t encode(Buffer& out, uint32_t request_id, const Deliver& body);

// A frame whose body has no fields (stream-stop, send-ok, ...); `type` must be such a type.
size_t encode_empty(Buffer& out, uint32_t request_id, FrameType type);
// An error, goaway or stream-end frame: u16 code and the message.
size_t encode_error(Buffer& out, uint32_t request_id, FrameType type, const Error& error);

template <FrameType T>
size_t encode(Buffer& out, uint32_t request_id, const Empty<T>&) {
  return encode_empty(out, request_id, T);
}
template <FrameType T>
size_t encode(Buffer& out, uint32_t request_id, const ErrorBody<T>& body) {
  return encode_error(out, request_id, T, body.error);
}

// Any frame.
size_t encode(Buffer& out, const Frame& frame);

// The message-list frames without first moving the messages into a body struct: what the server
// uses to answer a receive or push a deliver from the broker's vectors.
size_t encode_send(Buffer& out, uint32_t request_id, std::string_view channel,
                   std::span<const Message> messages);
size_t encode_deliver(Buffer& out, uint32_t stream_id, std::string_view channel,
                      std::span<const Message> messages);
size_t encode_receive_ok(Buffer& out, uint32_t request_id, std::span<const Message> messages);
// none when `messages` is nullptr.
size_t encode_try_receive_ok(Buffer& out, uint32_t request_id,
                             const std::vector<Message>* messages);

// A message given as its parts: `message`, then `extra` metadata entries after its own (the
// message then has metadata even if it had none). What a deliver frame carries for a stored
// message and the reserved entries of its delivery, without building the combined Message.
struct MessageParts {
  const Message* message = nullptr;
  std::span<const std::pair<std::string_view, std::string_view>> extra;
};
// encode_deliver for messages given as parts: the same bytes as for the combined messages.
size_t encode_deliver_parts(Buffer& out, uint32_t stream_id, std::string_view channel,
                            std::span<const MessageParts> messages);

// Bytes `m` takes inside a frame body: for packing deliver frames under the peer's frame limit.
size_t message_wire_size(const Message& m);
size_t message_wire_size(const MessageParts& m);
// Bytes a send or deliver frame with `channel` and no messages takes, header included; each
// message adds message_wire_size(m).
size_t message_frame_overhead(std::string_view channel);

// ---- decoding --------------------------------------------------------------------------------

// Which frames a decoder accepts: a server decodes requests, a client decodes everything else.
enum class Side : uint8_t { kServer, kClient };

// The input holds no whole frame yet: at least `bytes` more are needed. When fewer than 4 bytes
// are there the frame's size is not known yet, and `bytes` is what completes the length field.
struct NeedMore {
  size_t bytes = 0;
};

// A whole frame was decoded from the first `frame_bytes` bytes of the input.
struct Decoded {
  Frame frame;
  size_t frame_bytes = 0;
};

// The first frame of the input is malformed. `error` names the frame, the field, the value and
// what was expected. When `close_connection` is false the frame was well delimited: skip its
// `frame_bytes` bytes, answer `request_id` with an error frame carrying `error`, and carry on.
// When it is true framing is lost: send goaway (request id `request_id`, 0 if unknown) and close.
struct DecodeError {
  Error error;
  bool close_connection = false;
  uint32_t request_id = 0;
  uint8_t type = 0;        // the frame type byte as received; 0 when not read
  size_t frame_bytes = 0;  // whole frame, header included; 0 when close_connection
};

using DecodeResult = std::variant<NeedMore, Decoded, DecodeError>;

// Decodes the first frame of `input`. Never reads past the frame: further bytes of `input` (the
// next frames) are left alone.
DecodeResult decode_frame(std::span<const uint8_t> input, Side side, const Limits& limits);

}  // namespace witmq::net
