// Fuzzes the peer link's frame decoder (cluster/peer_frames.h): the input is one frame body, as
// the peer listener hands it to decode_peer_body after reading its length prefix. Beyond "no
// crash, no sanitizer report":
//   - a decoded body re-encodes to exactly the bytes it was decoded from (the encoding is
//     canonical), with a length prefix that states its size;
//   - a refused body's error message is not empty.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "cluster/peer_frames.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace witmq::cluster;
  const std::span<const uint8_t> body(data, size);
  auto frame = decode_peer_body(body);
  if (!frame) {
    WITMQ_FUZZ_CHECK(!frame.error().message.empty(), "a refused body of %zu bytes has no message",
                     size);
    return 0;
  }
  const std::string wire = encode_peer_frame(*frame);
  WITMQ_FUZZ_CHECK(wire.size() == size + kPeerHeaderBytes,
                   "a %s body of %zu bytes re-encoded to %zu bytes with its prefix",
                   peer_frame_name(*frame).c_str(), size, wire.size());
  std::span<const uint8_t, kPeerHeaderBytes> header(reinterpret_cast<const uint8_t*>(wire.data()),
                                                    kPeerHeaderBytes);
  WITMQ_FUZZ_CHECK(peer_body_length(header) == size, "the prefix says %u, the body has %zu",
                   peer_body_length(header), size);
  WITMQ_FUZZ_CHECK(std::equal(body.begin(), body.end(),
                              reinterpret_cast<const uint8_t*>(wire.data()) + kPeerHeaderBytes),
                   "a %s body re-encoded to other bytes", peer_frame_name(*frame).c_str());
  return 0;
}
