// The peer link's wire format (docs/CLUSTERING.md, "The peer link"): the frames nodes exchange on
// cluster-peer-listen. Pure functions over byte spans, no I/O, so that they can be unit-tested
// and fuzzed like the client protocol's codec.
//
// Every frame: u32 big-endian body length, then the body: u8 type, then the type's fields.
// Integers are big-endian; a string is a u16 length and that many bytes. A body longer than the
// receiver's limit (cluster-peer-max-frame-bytes) is refused before any of it is read.
//
//   1 hello      u16 version, str cluster name, str node id, str nonce   (first frame, dialer)
//  16 challenge  str nonce                                (listener's answer to the hello)
//  17 proof      str HMAC                                 (dialer's answer to the challenge)
//   2 welcome    u16 version, str node id, str HMAC       (listener's answer to a good proof)
//   3 refused    u16 error code, str text      (then the sender closes the connection)
//   4 ping       u64 nonce
//   5 pong       u64 nonce                                              (answer to ping)
//
// Replication (docs/CLUSTERING.md, "Replication"), after the welcome:
//   6 replicate     str channel, u64 epoch, u64 position, u64 previous epoch, u64 previous
//                   position (the leader's entry before this one), u8 durability (0 sync,
//                   1 group, 2 none), u32 length + definitions, u32 length + records
//                   (leader to follower)
//   7 replicated    str channel, u64 epoch, u64 position   (follower: it holds every position up
//                   to this one, as the leader wrote them, as durably as asked; epoch is the
//                   highest it has seen)
//   8 resend        str channel, u64 from     (follower: positions before `from` are all it has)
//   9 replica-refused  str channel, u64 epoch, u16 error code, str text   (follower: a stale
//                   epoch, or records it cannot apply; `epoch` is the highest it has seen)
//  10 diverged      str channel, u64 epoch, u64 last epoch, u64 last position   (follower: its
//                   log is not the leader's, or its copy is an incomplete snapshot (last 0, 0);
//                   it needs a snapshot; `epoch` is the highest it has seen)
//  11 snapshot      str channel, u64 epoch, u64 position, u32 chunk index, u8 last (0 or 1),
//                   u16 count + count times (u64 epoch, u64 first position): the leader's epoch
//                   starts (last chunk only), u32 length + records   (leader to follower)
//  12 snapshot-ack  str channel, u64 epoch, u64 position, u32 chunk index   (follower: that
//                   chunk is stored; after the last one it holds every position up to `position`)
//
// The handshake (hello, challenge, proof, welcome) proves that both sides hold the cluster's
// secret without sending it (cluster/peer_auth.h); the listener names itself only in the
// welcome, after the dialer's proof has checked.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"

namespace witmq::cluster {

// The peer protocol version this build speaks; a hello with another one is refused. Version 1
// sent the secret itself in the hello; 2 proves it (challenge and proof); 3 adds log matching
// (the previous entry in replicate, diverged) and snapshots.
inline constexpr uint16_t kPeerProtocolVersion = 3;
// Bytes of the length prefix before each body.
inline constexpr size_t kPeerHeaderBytes = 4;
// The handshake's frames are small: a listener reads at most this many body bytes before the
// peer has proved it holds the secret, whatever cluster-peer-max-frame-bytes says.
inline constexpr uint32_t kPeerMaxHelloBytes = 4096;

enum class PeerFrameType : uint8_t {
  kHello = 1,
  kWelcome = 2,
  kRefused = 3,
  kPing = 4,
  kPong = 5,
  kChallenge = 16,
  kProof = 17,
  kReplicate = 6,
  kReplicated = 7,
  kResend = 8,
  kReplicaRefused = 9,
  kDiverged = 10,
  kSnapshot = 11,
  kSnapshotAck = 12,
};

struct PeerHello {
  uint16_t version = kPeerProtocolVersion;
  std::string cluster;  // the dialer's cluster name; the proofs cover the listener's own
  std::string node_id;
  std::string nonce;  // kPeerNonceBytes random bytes
};
struct PeerChallenge {
  std::string nonce;  // kPeerNonceBytes random bytes
};
struct PeerProof {
  std::string proof;  // dialer_proof()
};
struct PeerWelcome {
  uint16_t version = kPeerProtocolVersion;
  std::string node_id;
  std::string proof;  // listener_proof()
};
struct PeerRefused {
  ErrorCode code = ErrorCode::kPermissionDenied;
  std::string text;
};
struct PeerPing {
  uint64_t nonce = 0;
};
struct PeerPong {
  uint64_t nonce = 0;
};

struct PeerReplicate {
  std::string channel;
  uint64_t epoch = 0;
  uint64_t position = 0;
  uint64_t prev_epoch = 0;  // the leader's entry before this one (0, 0: none)
  uint64_t prev_position = 0;
  uint8_t durability = 1;  // storage::Durability's value
  std::string definitions;
  std::string records;
};
struct PeerReplicated {
  std::string channel;
  uint64_t epoch = 0;
  uint64_t position = 0;
};
struct PeerResend {
  std::string channel;
  uint64_t from = 0;
};
struct PeerReplicaRefused {
  std::string channel;
  uint64_t epoch = 0;
  ErrorCode code = ErrorCode::kFailedPrecondition;
  std::string text;
};

struct PeerDiverged {
  std::string channel;
  uint64_t epoch = 0;
  uint64_t last_epoch = 0;
  uint64_t last_position = 0;
};
struct PeerEpochStart {
  uint64_t epoch = 0;
  uint64_t first = 0;
};
struct PeerSnapshot {
  std::string channel;
  uint64_t epoch = 0;
  uint64_t position = 0;
  uint32_t index = 0;
  bool last = false;
  std::vector<PeerEpochStart> starts;
  std::string records;
};
struct PeerSnapshotAck {
  std::string channel;
  uint64_t epoch = 0;
  uint64_t position = 0;
  uint32_t index = 0;
};

using PeerFrame = std::variant<PeerHello, PeerWelcome, PeerRefused, PeerPing, PeerPong,
                               PeerChallenge, PeerProof, PeerReplicate, PeerReplicated, PeerResend,
                               PeerReplicaRefused, PeerDiverged, PeerSnapshot, PeerSnapshotAck>;

// The whole frame (length prefix included).
std::string encode_peer_frame(const PeerFrame& frame);

// The body length a header announces; `header` holds kPeerHeaderBytes bytes.
uint32_t peer_body_length(std::span<const uint8_t, kPeerHeaderBytes> header);

// Decodes one body (without its length prefix). Errors (kInvalidArgument) name the frame type
// and the field that is short, too long or left over.
Result<PeerFrame> decode_peer_body(std::span<const uint8_t> body);

// The frame type's name, for errors and logs ("hello", ...).
std::string peer_frame_name(const PeerFrame& frame);

// Text a peer sent (an id, a name, a refusal's reason), made safe for a log line or an error
// message: at most 200 bytes, each byte outside printable ASCII shown as \xNN, so that a
// hostile peer cannot forge log lines or write control sequences to a terminal.
std::string peer_text(std::string_view s);

}  // namespace witmq::cluster
