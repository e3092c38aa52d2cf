// The input layout of frame_fuzzer, shared with the seed generator that writes its corpus.
//
//   byte 0       mode: bit 0 set = decode as a client (replies, pushes), clear = as a server
//                (requests); bit 1 set = kSmallLimits, clear = the default Limits
//   bytes 1..2   split seed: where the stream is cut into chunks for the streaming check
//   bytes 3..    the byte stream a connection would receive
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "net/codec.h"
#include "net/frames.h"

namespace witmq::fuzz {

inline constexpr size_t kFrameInputHeaderBytes = 3;

// Limits small enough that a mutated input reaches every limit check within a few bytes.
inline constexpr net::Limits kSmallLimits{
    .max_frame_bytes = 256,
    .max_batch_messages = 3,
    .max_message_bytes = 16,
    .max_metadata_entries = 2,
    .max_metadata_bytes = 24,
    .max_config_channels = 2,
};

struct FrameInput {
  net::Side side = net::Side::kServer;
  bool small_limits = false;
  uint16_t split_seed = 0;
  std::span<const uint8_t> stream;

  const net::Limits& limits() const {
    static const net::Limits kDefault{};
    return small_limits ? kSmallLimits : kDefault;
  }
};

// False when the input is too short to hold the header.
inline bool parse_frame_input(std::span<const uint8_t> in, FrameInput& out) {
  if (in.size() < kFrameInputHeaderBytes) return false;
  out.side = (in[0] & 1) ? net::Side::kClient : net::Side::kServer;
  out.small_limits = (in[0] & 2) != 0;
  out.split_seed = static_cast<uint16_t>((in[1] << 8) | in[2]);
  out.stream = in.subspan(kFrameInputHeaderBytes);
  return true;
}

inline std::vector<uint8_t> make_frame_input(net::Side side, bool small_limits, uint16_t split_seed,
                                             std::span<const uint8_t> stream) {
  std::vector<uint8_t> out;
  out.push_back(
      static_cast<uint8_t>((side == net::Side::kClient ? 1 : 0) | (small_limits ? 2 : 0)));
  out.push_back(static_cast<uint8_t>(split_seed >> 8));
  out.push_back(static_cast<uint8_t>(split_seed));
  out.insert(out.end(), stream.begin(), stream.end());
  return out;
}

// The chunk sizes a stream of `total` bytes arrives in: drawn from a small linear congruential
// generator seeded by `seed`, 1..16 bytes when the seed's low bit is set (cuts inside every
// field), up to 1024 otherwise. Reads from a socket return any such split.
inline std::vector<size_t> chunk_sizes(uint16_t seed, size_t total) {
  std::vector<size_t> sizes;
  uint32_t state = seed * 2654435761u + 1;
  const uint32_t max_chunk = (seed & 1) ? 16 : 1024;
  for (size_t done = 0; done < total;) {
    state = state * 1664525u + 1013904223u;
    size_t n = 1 + (state >> 8) % max_chunk;
    if (n > total - done) n = total - done;
    sizes.push_back(n);
    done += n;
  }
  return sizes;
}

}  // namespace witmq::fuzz
