// Fuzzes the wire decoder (net/codec.h) as a server and as a client, with the default and with
// small limits (input layout: fuzz/frame_input.h). Beyond "no crash, no sanitizer report":
//   - every result is consistent with the frame's length field: NeedMore asks for exactly the
//     missing bytes, a recoverable DecodeError or a Decoded frame spans the whole frame and never
//     more than the input;
//   - a decoded frame re-encodes to exactly the bytes it was decoded from (the encoding is
//     canonical), and those decode to the same frame again;
//   - feeding the stream in chunks, as a session reads a socket (net/session.cc decode_buffered),
//     decodes the same frames and errors as feeding it whole;
//   - the extensions of an update-guest-configuration go through broker::parse_extensions.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "broker/extensions.h"
#include "frame_input.h"
#include "fuzz_check.h"
#include "net/codec.h"

namespace witmq::fuzz {
namespace {

using net::Decoded;
using net::DecodeError;
using net::DecodeResult;
using net::NeedMore;

uint32_t length_field(std::span<const uint8_t> in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | in[3];
}

void check_round_trip(std::span<const uint8_t> in, const Decoded& d, const FrameInput& input) {
  net::Buffer out;
  const size_t n = net::encode(out, d.frame);
  WITMQ_FUZZ_CHECK(n == out.size(), "encode returned %zu, appended %zu", n, out.size());
  WITMQ_FUZZ_CHECK(out.size() == d.frame_bytes && std::equal(out.begin(), out.end(), in.begin()),
                   "frame type 0x%02x: re-encoded to %zu bytes that differ from the %zu decoded",
                   static_cast<unsigned>(d.frame.type()), out.size(), d.frame_bytes);
  const DecodeResult again = net::decode_frame(out, input.side, input.limits());
  const auto* d2 = std::get_if<Decoded>(&again);
  WITMQ_FUZZ_CHECK(d2 != nullptr, "frame type 0x%02x: its own encoding does not decode",
                   static_cast<unsigned>(d.frame.type()));
  WITMQ_FUZZ_CHECK(d2->frame == d.frame && d2->frame_bytes == out.size(),
                   "frame type 0x%02x: decode(encode(frame)) differs from the frame",
                   static_cast<unsigned>(d.frame.type()));
}

void check_extensions(const Decoded& d, const FrameInput& input) {
  const auto* ugc = std::get_if<net::UpdateGuestConfiguration>(&d.frame.body);
  if (ugc == nullptr) return;
  const uint32_t max_batch = input.limits().max_batch_messages;
  auto options = broker::parse_extensions(ugc->config.extensions, max_batch);
  if (options) {
    WITMQ_FUZZ_CHECK(options->batch_size <= max_batch, "batch-size %u over the maximum %u",
                     options->batch_size, max_batch);
  } else {
    WITMQ_FUZZ_CHECK(!options.error().message.empty(), "an extension error without a message");
  }
}

// Checks one result of decode_frame(in) against the frame's length field.
void check_result(std::span<const uint8_t> in, const DecodeResult& r, const FrameInput& input) {
  if (const auto* more = std::get_if<NeedMore>(&r)) {
    WITMQ_FUZZ_CHECK(more->bytes > 0, "NeedMore{0}");
    if (in.size() < net::kLengthFieldBytes) {
      WITMQ_FUZZ_CHECK(more->bytes == net::kLengthFieldBytes - in.size(),
                       "%zu bytes in, NeedMore{%zu}", in.size(), more->bytes);
    } else {
      WITMQ_FUZZ_CHECK(in.size() + more->bytes == net::kLengthFieldBytes + length_field(in),
                       "%zu bytes in, length field %u, NeedMore{%zu}", in.size(), length_field(in),
                       more->bytes);
    }
    return;
  }
  WITMQ_FUZZ_CHECK(in.size() >= net::kLengthFieldBytes,
                   "a result other than NeedMore from %zu bytes", in.size());
  const size_t whole = net::kLengthFieldBytes + size_t{length_field(in)};
  if (const auto* bad = std::get_if<DecodeError>(&r)) {
    WITMQ_FUZZ_CHECK(!bad->error.message.empty(), "a DecodeError without a message");
    if (bad->close_connection) {
      WITMQ_FUZZ_CHECK(bad->frame_bytes == 0, "a fatal DecodeError with frame_bytes %zu",
                       bad->frame_bytes);
    } else {
      WITMQ_FUZZ_CHECK(bad->frame_bytes == whole && whole <= in.size() &&
                           whole >= net::kHeaderBytes && bad->type == in[4],
                       "DecodeError frame_bytes %zu type 0x%02x; frame %zu bytes, input %zu",
                       bad->frame_bytes, bad->type, whole, in.size());
    }
    return;
  }
  const auto& d = std::get<Decoded>(r);
  WITMQ_FUZZ_CHECK(d.frame_bytes == whole && whole <= in.size() && whole >= net::kHeaderBytes,
                   "Decoded frame_bytes %zu; frame %zu bytes, input %zu", d.frame_bytes, whole,
                   in.size());
  WITMQ_FUZZ_CHECK(length_field(in) <= input.limits().max_frame_bytes,
                   "decoded a frame of length %u over the limit %u", length_field(in),
                   input.limits().max_frame_bytes);
  check_round_trip(in.first(d.frame_bytes), d, input);
  check_extensions(d, input);
}

// What a connection makes of its input: the frames and errors in order, up to the first error
// that closes it.
struct Event {
  size_t offset = 0;
  DecodeResult result;
};

bool same(const Event& a, const Event& b) {
  if (a.offset != b.offset || a.result.index() != b.result.index()) return false;
  if (const auto* da = std::get_if<Decoded>(&a.result)) {
    const auto& db = std::get<Decoded>(b.result);
    return da->frame == db.frame && da->frame_bytes == db.frame_bytes;
  }
  const auto& ea = std::get<DecodeError>(a.result);
  const auto& eb = std::get<DecodeError>(b.result);
  return ea.error.code == eb.error.code && ea.error.message == eb.error.message &&
         ea.close_connection == eb.close_connection && ea.request_id == eb.request_id &&
         ea.type == eb.type && ea.frame_bytes == eb.frame_bytes;
}

// Decodes `stream` arriving in chunks of `sizes`, the way Session::decode_buffered does: after
// each read, decode frames from the unconsumed bytes until NeedMore or a fatal error.
std::vector<Event> decode_stream(std::span<const uint8_t> stream, const std::vector<size_t>& sizes,
                                 const FrameInput& input, bool check) {
  std::vector<Event> events;
  std::vector<uint8_t> buffer;
  size_t begin = 0, consumed = 0, offset = 0;
  for (size_t n : sizes) {
    buffer.insert(buffer.end(), stream.begin() + offset, stream.begin() + offset + n);
    offset += n;
    for (;;) {
      const std::span<const uint8_t> in(buffer.data() + begin, buffer.size() - begin);
      DecodeResult r = net::decode_frame(in, input.side, input.limits());
      if (check) check_result(in, r, input);
      if (std::holds_alternative<NeedMore>(r)) break;
      size_t frame_bytes = 0;
      bool fatal = false;
      if (const auto* bad = std::get_if<DecodeError>(&r)) {
        frame_bytes = bad->frame_bytes;
        fatal = bad->close_connection;
      } else {
        frame_bytes = std::get<Decoded>(r).frame_bytes;
      }
      events.push_back({consumed, std::move(r)});
      if (fatal) return events;
      begin += frame_bytes;
      consumed += frame_bytes;
    }
    // Like the session, move what is left to the front once most of the buffer is consumed.
    if (begin > buffer.size() / 2) {
      buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(begin));
      begin = 0;
    }
  }
  return events;
}

}  // namespace
}  // namespace witmq::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace witmq::fuzz;
  FrameInput input;
  if (!parse_frame_input({data, size}, input)) return 0;
  const std::vector<Event> whole =
      decode_stream(input.stream, {input.stream.size()}, input, /*check=*/true);
  const std::vector<Event> chunked =
      decode_stream(input.stream, chunk_sizes(input.split_seed, input.stream.size()), input,
                    /*check=*/true);
  WITMQ_FUZZ_CHECK(whole.size() == chunked.size(),
                   "whole: %zu frames and errors, in chunks (seed %u): %zu", whole.size(),
                   input.split_seed, chunked.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    WITMQ_FUZZ_CHECK(same(whole[i], chunked[i]),
                     "event %zu at offset %zu differs between whole and chunked (seed %u)", i,
                     whole[i].offset, input.split_seed);
  }
  return 0;
}
