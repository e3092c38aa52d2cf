#include "cluster/peer_frames.h"

#include <fmt/format.h>

namespace witmq::cluster {
namespace {

constexpr size_t kMaxString = UINT16_MAX;

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) {
    u8(static_cast<uint8_t>(v >> 8));
    u8(static_cast<uint8_t>(v));
  }
  void u32(uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) u8(static_cast<uint8_t>(v >> shift));
  }
  void u64(uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) u8(static_cast<uint8_t>(v >> shift));
  }
  // Longer strings are cut at 65535 bytes: every string field is far shorter by construction
  // (ids, names, tokens, error texts).
  void str(std::string_view s) {
    const size_t n = std::min(s.size(), kMaxString);
    u16(static_cast<uint16_t>(n));
    out_.append(s.data(), n);
  }
  void bytes(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void reserve(size_t n) { out_.reserve(n); }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(std::span<const uint8_t> in, const char* frame) : in_(in), frame_(frame) {}

  Result<uint64_t> uint(size_t bytes, const char* field) {
    if (in_.size() - pos_ < bytes) return short_field(field, bytes);
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v = (v << 8) | in_[pos_ + i];
    pos_ += bytes;
    return v;
  }
  Result<std::string> str(const char* field) {
    auto n = uint(2, field);
    if (!n) return n.error();
    if (in_.size() - pos_ < *n) return short_field(field, static_cast<size_t>(*n));
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), static_cast<size_t>(*n));
    pos_ += static_cast<size_t>(*n);
    return s;
  }
  Result<std::string> bytes(const char* field) {
    auto n = uint(4, field);
    if (!n) return n.error();
    if (in_.size() - pos_ < *n) return short_field(field, static_cast<size_t>(*n));
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), static_cast<size_t>(*n));
    pos_ += static_cast<size_t>(*n);
    return s;
  }
  Status end() const {
    if (pos_ == in_.size()) return ok_status();
    return invalid_argument(fmt::format("peer frame {}: {} bytes left over after its last field",
                                        frame_, in_.size() - pos_));
  }

 private:
  Error short_field(const char* field, size_t wanted) const {
    return invalid_argument(fmt::format("peer frame {}: field {} needs {} bytes, {} left", frame_,
                                        field, wanted, in_.size() - pos_));
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  const char* frame_;
};

#define WITMQ_TAKE(var, expr)           \
  auto var##_r = (expr);                \
  if (!var##_r) return var##_r.error(); \
  auto var = std::move(*var##_r)

Result<PeerFrame> decode_hello(Reader& r) {
  WITMQ_TAKE(version, r.uint(2, "version"));
  WITMQ_TAKE(cluster, r.str("cluster"));
  WITMQ_TAKE(node, r.str("node-id"));
  WITMQ_TAKE(nonce, r.str("nonce"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(PeerHello{static_cast<uint16_t>(version), std::move(cluster), std::move(node),
                             std::move(nonce)});
}

Result<PeerFrame> decode_welcome(Reader& r) {
  WITMQ_TAKE(version, r.uint(2, "version"));
  WITMQ_TAKE(node, r.str("node-id"));
  WITMQ_TAKE(proof, r.str("proof"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(PeerWelcome{static_cast<uint16_t>(version), std::move(node), std::move(proof)});
}

Result<PeerFrame> decode_challenge(Reader& r) {
  WITMQ_TAKE(nonce, r.str("nonce"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(PeerChallenge{std::move(nonce)});
}

Result<PeerFrame> decode_proof(Reader& r) {
  WITMQ_TAKE(proof, r.str("proof"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(PeerProof{std::move(proof)});
}

Result<PeerFrame> decode_refused(Reader& r) {
  WITMQ_TAKE(code, r.uint(2, "code"));
  WITMQ_TAKE(text, r.str("text"));
  WITMQ_RETURN_IF_ERROR(r.end());
  if (code < static_cast<uint64_t>(ErrorCode::kInvalidArgument) ||
      code > static_cast<uint64_t>(ErrorCode::kInternal)) {
    return invalid_argument(fmt::format("peer frame refused: error code {} is not 1..{}", code,
                                        static_cast<int>(ErrorCode::kInternal)));
  }
  return PeerFrame(PeerRefused{static_cast<ErrorCode>(code), std::move(text)});
}

template <typename T>
Result<PeerFrame> decode_nonce(Reader& r) {
  WITMQ_TAKE(nonce, r.uint(8, "nonce"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(T{nonce});
}

Result<PeerFrame> decode_replicate(Reader& r) {
  WITMQ_TAKE(channel, r.str("channel"));
  WITMQ_TAKE(epoch, r.uint(8, "epoch"));
  WITMQ_TAKE(position, r.uint(8, "position"));
  WITMQ_TAKE(prev_epoch, r.uint(8, "previous-epoch"));
  WITMQ_TAKE(prev_position, r.uint(8, "previous-position"));
  WITMQ_TAKE(durability, r.uint(1, "durability"));
  WITMQ_TAKE(definitions, r.bytes("definitions"));
  WITMQ_TAKE(records, r.bytes("records"));
  WITMQ_RETURN_IF_ERROR(r.end());
  if (durability > 2) {
    return invalid_argument(fmt::format(
        "peer frame replicate: durability {} is not 0 (sync), 1 (group) or 2 (none)", durability));
  }
  if (position == 0)
    return invalid_argument("peer frame replicate: position 0 (positions start at 1)");
  if (prev_position + 1 != position || prev_epoch > epoch ||
      (prev_position == 0 && prev_epoch != 0)) {
    return invalid_argument(fmt::format(
        "peer frame replicate: previous entry (epoch {}, position {}) cannot precede (epoch {}, "
        "position {}): expected position {} and an epoch at most {} (0 with position 0)",
        prev_epoch, prev_position, epoch, position, position - 1, epoch));
  }
  return PeerFrame(PeerReplicate{std::move(channel), epoch, position, prev_epoch, prev_position,
                                 static_cast<uint8_t>(durability), std::move(definitions),
                                 std::move(records)});
}

Result<PeerFrame> decode_diverged(Reader& r) {
  WITMQ_TAKE(channel, r.str("channel"));
  WITMQ_TAKE(epoch, r.uint(8, "epoch"));
  WITMQ_TAKE(last_epoch, r.uint(8, "last-epoch"));
  WITMQ_TAKE(last_position, r.uint(8, "last-position"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(PeerDiverged{std::move(channel), epoch, last_epoch, last_position});
}

Result<PeerFrame> decode_snapshot(Reader& r) {
  WITMQ_TAKE(channel, r.str("channel"));
  WITMQ_TAKE(epoch, r.uint(8, "epoch"));
  WITMQ_TAKE(position, r.uint(8, "position"));
  WITMQ_TAKE(index, r.uint(4, "index"));
  WITMQ_TAKE(last, r.uint(1, "last"));
  WITMQ_TAKE(count, r.uint(2, "starts"));
  if (last > 1) {
    return invalid_argument(fmt::format("peer frame snapshot: last is {}, expected 0 or 1", last));
  }
  std::vector<PeerEpochStart> starts;
  for (uint64_t i = 0; i < count; ++i) {
    WITMQ_TAKE(start_epoch, r.uint(8, "start-epoch"));
    WITMQ_TAKE(first, r.uint(8, "start-position"));
    starts.push_back({start_epoch, first});
  }
  WITMQ_TAKE(records, r.bytes("records"));
  WITMQ_RETURN_IF_ERROR(r.end());
  if (!starts.empty() && last == 0) {
    return invalid_argument("peer frame snapshot: epoch starts in a chunk that is not the last");
  }
  return PeerFrame(PeerSnapshot{std::move(channel), epoch, position, static_cast<uint32_t>(index),
                                last == 1, std::move(starts), std::move(records)});
}

Result<PeerFrame> decode_snapshot_ack(Reader& r) {
  WITMQ_TAKE(channel, r.str("channel"));
  WITMQ_TAKE(epoch, r.uint(8, "epoch"));
  WITMQ_TAKE(position, r.uint(8, "position"));
  WITMQ_TAKE(index, r.uint(4, "index"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(
      PeerSnapshotAck{std::move(channel), epoch, position, static_cast<uint32_t>(index)});
}

Result<PeerFrame> decode_replicated(Reader& r) {
  WITMQ_TAKE(channel, r.str("channel"));
  WITMQ_TAKE(epoch, r.uint(8, "epoch"));
  WITMQ_TAKE(position, r.uint(8, "position"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(PeerReplicated{std::move(channel), epoch, position});
}

Result<PeerFrame> decode_resend(Reader& r) {
  WITMQ_TAKE(channel, r.str("channel"));
  WITMQ_TAKE(from, r.uint(8, "from"));
  WITMQ_RETURN_IF_ERROR(r.end());
  return PeerFrame(PeerResend{std::move(channel), from});
}

Result<PeerFrame> decode_replica_refused(Reader& r) {
  WITMQ_TAKE(channel, r.str("channel"));
  WITMQ_TAKE(epoch, r.uint(8, "epoch"));
  WITMQ_TAKE(code, r.uint(2, "code"));
  WITMQ_TAKE(text, r.str("text"));
  WITMQ_RETURN_IF_ERROR(r.end());
  if (code < static_cast<uint64_t>(ErrorCode::kInvalidArgument) ||
      code > static_cast<uint64_t>(ErrorCode::kInternal)) {
    return invalid_argument(fmt::format("peer frame replica-refused: error code {} is not 1..{}",
                                        code, static_cast<int>(ErrorCode::kInternal)));
  }
  return PeerFrame(
      PeerReplicaRefused{std::move(channel), epoch, static_cast<ErrorCode>(code), std::move(text)});
}

#undef WITMQ_TAKE

}  // namespace

std::string encode_peer_frame(const PeerFrame& frame) {
  Writer body;
  std::visit(
      [&body](const auto& f) {
        using T = std::decay_t<decltype(f)>;
        if constexpr (std::is_same_v<T, PeerHello>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kHello));
          body.u16(f.version);
          body.str(f.cluster);
          body.str(f.node_id);
          body.str(f.nonce);
        } else if constexpr (std::is_same_v<T, PeerWelcome>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kWelcome));
          body.u16(f.version);
          body.str(f.node_id);
          body.str(f.proof);
        } else if constexpr (std::is_same_v<T, PeerChallenge>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kChallenge));
          body.str(f.nonce);
        } else if constexpr (std::is_same_v<T, PeerProof>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kProof));
          body.str(f.proof);
        } else if constexpr (std::is_same_v<T, PeerRefused>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kRefused));
          body.u16(static_cast<uint16_t>(f.code));
          body.str(f.text);
        } else if constexpr (std::is_same_v<T, PeerPing>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kPing));
          body.u64(f.nonce);
        } else if constexpr (std::is_same_v<T, PeerPong>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kPong));
          body.u64(f.nonce);
        } else if constexpr (std::is_same_v<T, PeerReplicate>) {
          body.reserve(48 + f.channel.size() + f.definitions.size() + f.records.size());
          body.u8(static_cast<uint8_t>(PeerFrameType::kReplicate));
          body.str(f.channel);
          body.u64(f.epoch);
          body.u64(f.position);
          body.u64(f.prev_epoch);
          body.u64(f.prev_position);
          body.u8(f.durability);
          body.bytes(f.definitions);
          body.bytes(f.records);
        } else if constexpr (std::is_same_v<T, PeerReplicated>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kReplicated));
          body.str(f.channel);
          body.u64(f.epoch);
          body.u64(f.position);
        } else if constexpr (std::is_same_v<T, PeerResend>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kResend));
          body.str(f.channel);
          body.u64(f.from);
        } else if constexpr (std::is_same_v<T, PeerDiverged>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kDiverged));
          body.str(f.channel);
          body.u64(f.epoch);
          body.u64(f.last_epoch);
          body.u64(f.last_position);
        } else if constexpr (std::is_same_v<T, PeerSnapshot>) {
          body.reserve(48 + f.channel.size() + 16 * f.starts.size() + f.records.size());
          body.u8(static_cast<uint8_t>(PeerFrameType::kSnapshot));
          body.str(f.channel);
          body.u64(f.epoch);
          body.u64(f.position);
          body.u32(f.index);
          body.u8(f.last ? 1 : 0);
          // A list longer than a u16 counts is cut to its newest entries, as a store keeps them.
          const size_t n = std::min<size_t>(f.starts.size(), UINT16_MAX);
          body.u16(static_cast<uint16_t>(n));
          for (size_t i = f.starts.size() - n; i < f.starts.size(); ++i) {
            body.u64(f.starts[i].epoch);
            body.u64(f.starts[i].first);
          }
          body.bytes(f.records);
        } else if constexpr (std::is_same_v<T, PeerSnapshotAck>) {
          body.u8(static_cast<uint8_t>(PeerFrameType::kSnapshotAck));
          body.str(f.channel);
          body.u64(f.epoch);
          body.u64(f.position);
          body.u32(f.index);
        } else {
          static_assert(std::is_same_v<T, PeerReplicaRefused>);
          body.u8(static_cast<uint8_t>(PeerFrameType::kReplicaRefused));
          body.str(f.channel);
          body.u64(f.epoch);
          body.u16(static_cast<uint16_t>(f.code));
          body.str(f.text);
        }
      },
      frame);
  std::string framed = body.take();
  const auto n = static_cast<uint32_t>(framed.size());
  const char length[kPeerHeaderBytes] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                                         static_cast<char>(n >> 8), static_cast<char>(n)};
  framed.insert(0, length, kPeerHeaderBytes);
  return framed;
}

uint32_t peer_body_length(std::span<const uint8_t, kPeerHeaderBytes> h) {
  return (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | uint32_t{h[3]};
}

Result<PeerFrame> decode_peer_body(std::span<const uint8_t> body) {
  if (body.empty()) return invalid_argument("peer frame: empty body, expected a type byte");
  const uint8_t type = body[0];
  const auto rest = body.subspan(1);
  switch (static_cast<PeerFrameType>(type)) {
    case PeerFrameType::kHello: {
      Reader r(rest, "hello");
      return decode_hello(r);
    }
    case PeerFrameType::kWelcome: {
      Reader r(rest, "welcome");
      return decode_welcome(r);
    }
    case PeerFrameType::kRefused: {
      Reader r(rest, "refused");
      return decode_refused(r);
    }
    case PeerFrameType::kPing: {
      Reader r(rest, "ping");
      return decode_nonce<PeerPing>(r);
    }
    case PeerFrameType::kPong: {
      Reader r(rest, "pong");
      return decode_nonce<PeerPong>(r);
    }
    case PeerFrameType::kChallenge: {
      Reader r(rest, "challenge");
      return decode_challenge(r);
    }
    case PeerFrameType::kProof: {
      Reader r(rest, "proof");
      return decode_proof(r);
    }
    case PeerFrameType::kReplicate: {
      Reader r(rest, "replicate");
      return decode_replicate(r);
    }
    case PeerFrameType::kReplicated: {
      Reader r(rest, "replicated");
      return decode_replicated(r);
    }
    case PeerFrameType::kResend: {
      Reader r(rest, "resend");
      return decode_resend(r);
    }
    case PeerFrameType::kReplicaRefused: {
      Reader r(rest, "replica-refused");
      return decode_replica_refused(r);
    }
    case PeerFrameType::kDiverged: {
      Reader r(rest, "diverged");
      return decode_diverged(r);
    }
    case PeerFrameType::kSnapshot: {
      Reader r(rest, "snapshot");
      return decode_snapshot(r);
    }
    case PeerFrameType::kSnapshotAck: {
      Reader r(rest, "snapshot-ack");
      return decode_snapshot_ack(r);
    }
  }
  return invalid_argument(
      fmt::format("peer frame: unknown type {}, expected 1..12, 16 or 17", type));
}

std::string peer_text(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (s.size() > kMaxShown) out += fmt::format("... ({} bytes)", s.size());
  return out;
}

std::string peer_frame_name(const PeerFrame& frame) {
  static constexpr const char* kNames[] = {
      "hello",           "welcome",  "refused",   "ping",        "pong",
      "challenge",       "proof",    "replicate", "replicated",  "resend",
      "replica-refused", "diverged", "snapshot",  "snapshot-ack"};
  return kNames[frame.index()];
}

}  // namespace witmq::cluster
