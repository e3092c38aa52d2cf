#include "storage/replica_catalog.h"

#include <fmt/format.h>

#include <algorithm>

#include "storage/codec.h"

namespace witmq::storage {

namespace {

constexpr uint8_t kDeliveryCf = static_cast<uint8_t>(ColumnFamily::kDelivery);
constexpr uint8_t kMetaCf = static_cast<uint8_t>(ColumnFamily::kMeta);

void put_le(std::string& out, uint64_t v, int bytes) {
  char b[8];
  for (int i = 0; i < bytes; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out.append(b, bytes);
}
void put_be32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out.append(b, 4);
}
uint32_t get_be32(std::string_view s, size_t pos) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(s[pos + i]);
  return v;
}
uint64_t get_le(std::string_view s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[pos + i]);
  return v;
}

// kSync is the most demanding, kNone the least (see Durability).
int demand(Durability d) {
  switch (d) {
    case Durability::kSync:
      return 2;
    case Durability::kGroup:
      return 1;
    case Durability::kNone:
      return 0;
  }
  return 2;
}

bool sub_keyed(uint8_t cf, char tag) {
  return cf == kDeliveryCf || (cf == kMetaCf && (tag == kSubscriptionTag || tag == kCursorTag));
}

// Reads records front to back; every read checks the bytes left.
class RecordReader {
 public:
  explicit RecordReader(std::string_view s) : s_(s) {}
  bool done() const { return pos_ == s_.size(); }
  bool u8(uint8_t& v) {
    if (s_.size() - pos_ < 1) return false;
    v = static_cast<uint8_t>(s_[pos_++]);
    return true;
  }
  bool bytes(std::string_view& v, int length_bytes) {
    if (s_.size() - pos_ < static_cast<size_t>(length_bytes)) return false;
    const uint64_t n = get_le(s_, pos_, length_bytes);
    pos_ += length_bytes;
    if (s_.size() - pos_ < n) return false;
    v = s_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  size_t offset() const { return pos_; }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

// Whether `records` (already checked by translate_locked) delete the channel's definition.
bool deletes_channel(std::string_view records) {
  RecordReader r(records);
  while (!r.done()) {
    uint8_t kind = 0, cf = 0, tag = 0;
    std::string_view skip;
    if (!r.u8(kind) || !r.u8(cf) || !r.u8(tag)) return false;
    if (sub_keyed(cf, static_cast<char>(tag)) && !r.bytes(skip, 2)) return false;
    if (!r.bytes(skip, 4)) return false;
    if (kind == 2 && !r.bytes(skip, 4)) return false;
    if (kind == 0 && !r.bytes(skip, 4)) return false;
    if (kind == 1 && cf == kMetaCf && static_cast<char>(tag) == kChannelTag) return true;
  }
  return false;
}

}  // namespace

std::string encode_replica_position(const ReplicaPosition& p) {
  std::string out;
  out.push_back(static_cast<char>(kRecordVersion));
  put_le(out, p.epoch, 8);
  put_le(out, p.position, 8);
  out.push_back(static_cast<char>(p.incomplete ? 1 : 0));
  put_le(out, p.starts.size(), 2);
  for (const EpochStart& s : p.starts) {
    put_le(out, s.epoch, 8);
    put_le(out, s.first, 8);
  }
  return out;
}

Result<ReplicaPosition> decode_replica_position(std::string_view key, std::string_view value) {
  auto bad = [&](std::string_view what) {
    return Error(ErrorCode::kCorruption,
                 fmt::format("{}: a replication position (version {}, 17 bytes, then a flag, a "
                             "u16 count and 16 bytes per epoch start): {}",
                             describe_key("meta", key), kRecordVersion, what));
  };
  if (value.size() < 17 || static_cast<uint8_t>(value[0]) != kRecordVersion)
    return bad(fmt::format("got {} bytes", value.size()));
  ReplicaPosition p;
  p.epoch = get_le(value, 1, 8);
  p.position = get_le(value, 9, 8);
  if (value.size() == 17) return p;  // written before epoch starts were kept
  if (value.size() < 20) return bad(fmt::format("got {} bytes", value.size()));
  const auto flags = static_cast<uint8_t>(value[17]);
  if (flags > 1) return bad(fmt::format("flags {} (expected 0 or 1)", flags));
  p.incomplete = flags == 1;
  const uint64_t count = get_le(value, 18, 2);
  if (value.size() != 20 + 16 * count)
    return bad(
        fmt::format("{} epoch starts need {} bytes, got {}", count, 20 + 16 * count, value.size()));
  for (uint64_t i = 0; i < count; ++i) {
    EpochStart s{get_le(value, 20 + 16 * i, 8), get_le(value, 28 + 16 * i, 8)};
    if (!p.starts.empty() && (s.epoch <= p.starts.back().epoch || s.first <= p.starts.back().first))
      return bad(fmt::format("epoch start {} (epoch {} at {}) does not follow the one before", i,
                             s.epoch, s.first));
    p.starts.push_back(s);
  }
  return p;
}

void append_replica_record(std::string& out, uint8_t kind, uint8_t cf, char tag,
                           const std::string* sub, std::string_view key_rest,
                           std::string_view value) {
  out.push_back(static_cast<char>(kind));
  out.push_back(static_cast<char>(cf));
  out.push_back(tag);
  if (sub != nullptr) {
    put_le(out, sub->size(), 2);
    out.append(*sub);
  }
  put_le(out, key_rest.size(), 4);
  out.append(key_rest);
  if (kind == 0 || kind == 2) {
    put_le(out, value.size(), 4);
    out.append(value);
  }
}

std::optional<uint64_t> ReplicaCatalog::epoch_of(const ChannelEntry& e, uint64_t p) {
  if (p == 0) return 0;
  for (auto it = e.starts.rbegin(); it != e.starts.rend(); ++it) {
    if (it->first <= p) return it->epoch;
  }
  return std::nullopt;
}

void ReplicaCatalog::add_start(ChannelEntry& e, EpochStart s) {
  e.starts.push_back(s);
  if (e.starts.size() > kMaxEpochStarts) e.starts.erase(e.starts.begin());
}

ReplicaPosition ReplicaCatalog::record_locked(const ChannelEntry& e) const {
  return {e.epoch, e.position, e.incomplete, e.starts};
}

void ReplicaCatalog::floor_ids(ChannelId ch, SubscriptionId sub) {
  ChannelId c = next_channel_.load();
  while (ch >= c && !next_channel_.compare_exchange_weak(c, ch + 1)) {
  }
  SubscriptionId s = next_subscription_.load();
  while (sub >= s && !next_subscription_.compare_exchange_weak(s, sub + 1)) {
  }
}

void ReplicaCatalog::load_channel(ChannelId id, const std::string& name,
                                  const std::string& config) {
  std::lock_guard lock(mu_);
  auto& e = channels_[id];
  e.name = name;
  e.config = config;
  if (auto p = loaded_positions_.find(id); p != loaded_positions_.end()) {
    e.epoch = p->second.epoch;
    e.position = e.stored = p->second.position;
    e.starts = p->second.starts;
    e.incomplete = p->second.incomplete;
    // A crash interrupted the snapshot: the next one starts over, from its first chunk.
    e.snapshot_next = UINT32_MAX;
  }
  by_name_[name] = id;
  floor_ids(id, 0);
}

void ReplicaCatalog::take_up_channel(ChannelId id, const std::string& name,
                                     const std::string& config,
                                     std::optional<ReplicaPosition> on_disk) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = channels_.try_emplace(id);
  ChannelEntry& e = it->second;
  e.name = name;
  e.config = config;
  if (inserted && on_disk) {
    e.epoch = on_disk->epoch;
    e.position = e.stored = on_disk->position;
    e.starts = on_disk->starts;
    e.incomplete = on_disk->incomplete;
    e.snapshot_next = UINT32_MAX;
  }
  by_name_[name] = id;
  floor_ids(id, 0);
}

void ReplicaCatalog::load_subscription(const SubscriptionRecord& s) {
  std::lock_guard lock(mu_);
  subs_[s.id] = {s.channel, s.name, s.config};
  sub_by_name_[{s.channel, s.name}] = s.id;
  floor_ids(0, s.id);
}

void ReplicaCatalog::load_position(ChannelId id, ReplicaPosition p) {
  std::lock_guard lock(mu_);
  loaded_positions_[id] = p;
  if (auto e = channels_.find(id); e != channels_.end()) {
    e->second.epoch = p.epoch;
    e->second.position = e->second.stored = p.position;
    e->second.starts = p.starts;
    e->second.incomplete = p.incomplete;
    e->second.snapshot_next = UINT32_MAX;
  }
  // A deleted channel's id is not given again: its position record may still be there.
  floor_ids(id, 0);
}

void ReplicaCatalog::observe(const WriteSet& ws, size_t request, Durability d, bool ship,
                             Replicator& r, Group& group) {
  std::lock_guard lock(mu_);
  const std::string& buf = ws.buf_;
  for (const auto& op : ws.ops_) {
    std::string_view a(buf.data() + op.a_off, op.a_len);
    std::string_view b(buf.data() + op.b_off, op.b_len);
    char tag = 0;
    std::string_view a_rest, b_rest;
    uint32_t id = 0;
    if (op.cf == kMetaCf) {
      if (a.size() != kMetaKeySize) continue;
      tag = a[0];
      id = get_be32(a, 1);
      a_rest = a.substr(kMetaKeySize);
    } else {
      if (a.size() < 4) continue;
      id = get_be32(a, 0);
      a_rest = a.substr(4);
      if (op.kind == WriteSet::OpKind::kDeleteRange) b_rest = b.size() >= 4 ? b.substr(4) : b;
    }
    // Definitions first: a channel or subscription is known from its own put on.
    if (op.cf == kMetaCf && tag == kChannelTag) {
      if (op.kind == WriteSet::OpKind::kPut) {
        auto rec = decode_channel(a, b);
        if (!rec) continue;
        auto& e = channels_[id];
        e.name = rec->name;
        e.config = rec->config;
        by_name_[rec->name] = id;
      } else {
        group.deleted_channels_.push_back(id);
      }
    } else if (op.cf == kMetaCf && tag == kSubscriptionTag) {
      if (op.kind == WriteSet::OpKind::kPut) {
        auto rec = decode_subscription(a, b);
        if (!rec) continue;
        subs_[id] = {rec->channel, rec->name, rec->config};
        sub_by_name_[{rec->channel, rec->name}] = id;
      } else {
        group.deleted_subscriptions_.push_back(id);
      }
    }
    if (!ship || (op.cf == kMetaCf && tag == kReplicaPositionTag)) continue;
    ChannelId channel = id;
    const SubEntry* sub = nullptr;
    if (sub_keyed(op.cf, tag)) {
      auto s = subs_.find(id);
      if (s == subs_.end()) continue;  // an ephemeral subscription's, or unknown: local only
      sub = &s->second;
      channel = sub->channel;
    }
    auto ch = channels_.find(channel);
    if (ch == channels_.end()) continue;
    auto [part, inserted] = group.channels_.try_emplace(channel);
    if (inserted) {
      part->second.name = ch->second.name;
      part->second.epoch = r.shipping_epoch(ch->second.name);
    }
    Group::Part& p = part->second;
    if (!p.epoch) continue;
    if (p.requests.empty() || p.requests.back() != request) {
      p.requests.push_back(request);
      if (demand(d) > demand(p.durability)) p.durability = d;
    }
    append_replica_record(p.records, static_cast<uint8_t>(op.kind), op.cf, tag,
                          sub != nullptr ? &sub->name : nullptr, a_rest,
                          op.kind == WriteSet::OpKind::kDeleteRange ? b_rest : b);
  }
}

std::vector<ReplicaCatalog::Pending> ReplicaCatalog::assign(Group& group, WriteSet& extra) {
  std::vector<Pending> out;
  std::lock_guard lock(mu_);
  for (auto& [id, part] : group.channels_) {
    if (!part.epoch || part.records.empty()) continue;
    auto ch = channels_.find(id);
    if (ch == channels_.end()) continue;
    ChannelEntry& e = ch->second;
    Pending p;
    p.id = id;
    p.before.epoch = e.epoch;
    p.before.position = e.position;
    p.requests = std::move(part.requests);
    if (e.incomplete) {
      p.refused = fmt::format(
          "replication: channel '{}': this node's copy of it is an incomplete snapshot; the "
          "write is not acknowledged",
          part.name);
      out.push_back(std::move(p));
      continue;
    }
    if (*part.epoch < e.epoch) {
      // This store has seen a newer leader's writes for the channel: whatever this node believes,
      // it leads no more (fencing), and nothing it writes for the channel may be acknowledged.
      p.refused = fmt::format(
          "replication: channel '{}': this node's leader epoch {} is older than epoch {} its "
          "store has already seen; the write is not acknowledged",
          part.name, *part.epoch, e.epoch);
      out.push_back(std::move(p));
      continue;
    }
    const uint64_t prev_position = e.position;
    // An unknown epoch (a record of an earlier build) is sent as 0, which no follower's entry
    // matches: such a follower takes a snapshot rather than be assumed to match.
    const uint64_t prev_epoch = epoch_of(e, prev_position).value_or(0);
    e.epoch = *part.epoch;
    e.position += 1;
    if (e.starts.empty() || e.starts.back().epoch != e.epoch) {
      add_start(e, {e.epoch, e.position});
      p.started_epoch = true;
    }
    extra.add(WriteSet::OpKind::kPut, kMetaCf, meta_key(kReplicaPositionTag, id),
              encode_replica_position(record_locked(e)));
    p.shipment = Shipment{part.name,
                          e.epoch,
                          e.position,
                          prev_epoch,
                          prev_position,
                          part.durability,
                          std::move(part.records)};
    out.push_back(std::move(p));
  }
  // Deletions take effect once the whole group is seen: later ops of the group name them.
  for (ChannelId id : group.deleted_channels_) {
    auto ch = channels_.find(id);
    if (ch == channels_.end()) continue;
    auto n = by_name_.find(ch->second.name);
    if (n != by_name_.end() && n->second == id) by_name_.erase(n);
    channels_.erase(ch);
  }
  for (SubscriptionId id : group.deleted_subscriptions_) {
    auto s = subs_.find(id);
    if (s == subs_.end()) continue;
    auto n = sub_by_name_.find({s->second.channel, s->second.name});
    if (n != sub_by_name_.end() && n->second == id) sub_by_name_.erase(n);
    subs_.erase(s);
  }
  return out;
}

void ReplicaCatalog::rollback(const std::vector<Pending>& pending) {
  std::lock_guard lock(mu_);
  for (const Pending& p : pending) {
    if (p.refused) continue;
    auto ch = channels_.find(p.id);
    if (ch == channels_.end() || ch->second.position != p.shipment.position) continue;
    ch->second.epoch = p.before.epoch;
    ch->second.position = p.before.position;
    if (p.started_epoch && !ch->second.starts.empty()) ch->second.starts.pop_back();
  }
}

void ReplicaCatalog::stored(const std::vector<Pending>& pending) {
  std::lock_guard lock(mu_);
  for (const Pending& p : pending) {
    if (p.refused) continue;
    auto ch = channels_.find(p.id);
    if (ch != channels_.end()) ch->second.stored = std::max(ch->second.stored, p.shipment.position);
  }
}

ChannelId ReplicaCatalog::channel_for_name_locked(const std::string& name, bool create) {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second;
  if (!create) return 0;
  const ChannelId id = allocate_channel_id();
  channels_[id].name = name;
  by_name_[name] = id;
  return id;
}

ApplyOutcome ReplicaCatalog::accept(const ReplicatedBatch& b, WriteSet& out) {
  std::lock_guard lock(mu_);
  ApplyOutcome o;
  auto it = by_name_.find(b.channel);
  ChannelEntry none;
  ChannelEntry& known = it == by_name_.end() ? none : channels_[it->second];
  o.epoch = known.epoch;
  if (b.epoch < known.epoch) {
    o.kind = ApplyOutcome::Kind::kStale;
    o.position = known.stored;
    o.text = fmt::format(
        "replication: channel '{}': epoch {} is stale: this node has seen epoch {} (a newer "
        "leader); the batch at position {} is refused",
        b.channel, b.epoch, known.epoch, b.position);
    return o;
  }
  const uint64_t last = known.position;
  auto diverged = [&](std::string why) {
    // The newer epoch is remembered (fencing), not stored: nothing of it is held.
    known.epoch = std::max(known.epoch, b.epoch);
    o.kind = ApplyOutcome::Kind::kDiverged;
    o.epoch = known.epoch;
    o.position = known.incomplete ? 0 : last;
    o.last_epoch = known.incomplete ? 0 : epoch_of(known, last).value_or(0);
    o.text = fmt::format("replication: channel '{}': batch (epoch {}, position {}): {}", b.channel,
                         b.epoch, b.position, why);
    return o;
  };
  if (known.incomplete) return diverged("this node's copy is an incomplete snapshot");
  if (b.position <= last) {
    const auto mine = epoch_of(known, b.position);
    if (mine == b.epoch) {
      // Only this position is known to be the leader's: what follows it here may not be.
      o.kind = ApplyOutcome::Kind::kDuplicate;
      o.position = std::min(b.position, known.stored);
      return o;
    }
    return diverged(fmt::format("this node holds position {} under epoch {}", b.position,
                                mine ? fmt::to_string(*mine) : std::string("unknown")));
  }
  if (b.position != last + 1) {
    o.kind = ApplyOutcome::Kind::kGap;
    o.position = last + 1;
    return o;
  }
  const auto mine = epoch_of(known, last);
  if (b.prev_position != last || mine != b.prev_epoch) {
    return diverged(fmt::format(
        "it follows (epoch {}, position {}) in the leader's log, this node's last entry is "
        "(epoch {}, position {})",
        b.prev_epoch, b.prev_position, mine ? fmt::to_string(*mine) : std::string("unknown"),
        last));
  }
  const ChannelId id = channel_for_name_locked(b.channel, true);
  if (auto st = translate_locked(b.definitions, id, out); !st) {
    o.kind = ApplyOutcome::Kind::kFailed;
    o.text = fmt::format("replication: channel '{}': definitions at position {}: {}", b.channel,
                         b.position, st.error().message);
    return o;
  }
  if (auto st = translate_locked(b.records, id, out); !st) {
    o.kind = ApplyOutcome::Kind::kFailed;
    o.text = fmt::format("replication: channel '{}': records at position {}: {}", b.channel,
                         b.position, st.error().message);
    return o;
  }
  ChannelEntry& e = channels_[id];
  e.epoch = std::max(e.epoch, b.epoch);
  e.position = b.position;
  if (e.starts.empty() || e.starts.back().epoch != b.epoch) add_start(e, {b.epoch, b.position});
  out.add(WriteSet::OpKind::kPut, kMetaCf, meta_key(kReplicaPositionTag, id),
          encode_replica_position(record_locked(e)));
  if (deletes_channel(b.records)) {
    // The channel is gone with this batch: a batch of the channel made again (positions from 1)
    // may come before the commit thread has seen the delete, and must not be taken for an old
    // position of the deleted one.
    by_name_.erase(b.channel);
  }
  out.replicated_in_ = true;
  o.kind = ApplyOutcome::Kind::kApplied;
  o.epoch = e.epoch;
  o.position = b.position;
  return o;
}

ApplyOutcome ReplicaCatalog::accept_snapshot(const SnapshotChunk& c, WriteSet& out) {
  std::lock_guard lock(mu_);
  ApplyOutcome o;
  auto it = by_name_.find(c.channel);
  const uint64_t seen = it == by_name_.end() ? 0 : channels_[it->second].epoch;
  o.epoch = seen;
  auto failed = [&](std::string why) {
    o.kind = ApplyOutcome::Kind::kFailed;
    o.text = fmt::format("replication: channel '{}': snapshot at position {}, chunk {}: {}",
                         c.channel, c.position, c.index, why);
    return o;
  };
  if (c.epoch < seen) {
    o.kind = ApplyOutcome::Kind::kStale;
    o.text = fmt::format(
        "replication: channel '{}': a snapshot of epoch {} is stale: this node has seen epoch {}",
        c.channel, c.epoch, seen);
    return o;
  }
  if (c.last) {
    for (size_t i = 0; i < c.starts.size(); ++i) {
      const EpochStart& s = c.starts[i];
      if (s.first == 0 || s.first > c.position || s.epoch > c.epoch ||
          (i > 0 && (s.epoch <= c.starts[i - 1].epoch || s.first <= c.starts[i - 1].first))) {
        return failed(fmt::format(
            "epoch start {} (epoch {} at position {}) is not ascending, within 1..{} and at "
            "most epoch {}",
            i, s.epoch, s.first, c.position, c.epoch));
      }
    }
  }
  if (c.index == 0) {
    // Discards this node's copy, whatever it holds: the snapshot replaces it whole.
    std::vector<ChannelId> channels;
    std::vector<SubscriptionId> subs;
    if (it != by_name_.end()) {
      const ChannelId old = it->second;
      ChannelEntry& e = channels_[old];
      channels = std::move(e.discard_channels);
      subs = std::move(e.discard_subscriptions);
      channels.push_back(old);
      for (auto s = sub_by_name_.lower_bound({old, ""});
           s != sub_by_name_.end() && s->first.first == old;) {
        subs.push_back(s->second);
        subs_.erase(s->second);
        s = sub_by_name_.erase(s);
      }
      channels_.erase(old);
      by_name_.erase(it);
    }
    for (ChannelId id : channels) {
      out.delete_channel(id);
      out.add(WriteSet::OpKind::kDelete, kMetaCf, meta_key(kReplicaPositionTag, id), {});
    }
    for (SubscriptionId id : subs) out.delete_subscription(id);
    if (c.last && c.records.empty()) {
      // An empty snapshot: the channel is gone from the leader's store (deleted). The copy goes
      // and nothing replaces it; a channel made again under the name starts from position 1.
      out.replicated_in_ = true;
      o.kind = ApplyOutcome::Kind::kApplied;
      o.epoch = std::max(seen, c.epoch);
      o.position = c.position;
      return o;
    }
    const ChannelId id = allocate_channel_id();
    ChannelEntry& e = channels_[id];
    e.name = c.channel;
    e.epoch = std::max(seen, c.epoch);
    e.incomplete = true;
    e.snapshot_epoch = c.epoch;
    e.snapshot_position = c.position;
    e.snapshot_next = 0;
    e.discard_channels = std::move(channels);
    e.discard_subscriptions = std::move(subs);
    by_name_[c.channel] = id;
    out.add(WriteSet::OpKind::kPut, kMetaCf, meta_key(kReplicaPositionTag, id),
            encode_replica_position(record_locked(e)));
    it = by_name_.find(c.channel);
  }
  if (it == by_name_.end()) return failed("no snapshot of it is under way here (expected chunk 0)");
  const ChannelId id = it->second;
  ChannelEntry& e = channels_[id];
  if (!e.incomplete || e.snapshot_epoch != c.epoch || e.snapshot_position != c.position ||
      e.snapshot_next != c.index) {
    return failed(e.incomplete && e.snapshot_next != UINT32_MAX
                      ? fmt::format("expected chunk {} of the snapshot of epoch {} at position {}",
                                    e.snapshot_next, e.snapshot_epoch, e.snapshot_position)
                      : std::string("no snapshot of it is under way here (expected chunk 0)"));
  }
  if (auto st = translate_locked(c.records, id, out); !st) return failed(st.error().message);
  e.snapshot_next = c.index + 1;
  if (c.last) {
    e.incomplete = false;
    e.position = c.position;
    e.epoch = std::max(e.epoch, c.epoch);
    e.starts = c.starts;
    out.add(WriteSet::OpKind::kPut, kMetaCf, meta_key(kReplicaPositionTag, id),
            encode_replica_position(record_locked(e)));
  }
  out.replicated_in_ = true;
  o.kind = ApplyOutcome::Kind::kApplied;
  o.epoch = e.epoch;
  o.position = c.position;
  return o;
}

void ReplicaCatalog::snapshot_applied(const SnapshotChunk& c) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(c.channel);
  if (it == by_name_.end()) return;
  ChannelEntry& e = channels_[it->second];
  if (c.index == 0) {
    e.discard_channels.clear();
    e.discard_subscriptions.clear();
  }
  if (c.last && !e.incomplete && e.position == c.position) e.stored = c.position;
}

void ReplicaCatalog::snapshot_failed(const std::string& channel) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(channel);
  if (it == by_name_.end()) return;
  ChannelEntry& e = channels_[it->second];
  // What this node holds of the channel is unknown now: only a snapshot from its first chunk
  // brings it back.
  e.incomplete = true;
  e.position = e.stored = 0;
  e.snapshot_next = UINT32_MAX;
}

std::vector<std::string> ReplicaCatalog::incomplete_channels() {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [id, e] : channels_) {
    if (e.incomplete) out.push_back(e.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<ChannelId> ReplicaCatalog::id_of(const std::string& channel) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(channel);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

Status ReplicaCatalog::translate_locked(std::string_view records, ChannelId channel,
                                        WriteSet& out) {
  RecordReader r(records);
  std::string key, end, value;
  while (!r.done()) {
    const size_t at = r.offset();
    auto bad = [&](std::string_view what) {
      return invalid_argument(fmt::format("record at byte {}: {}", at, what));
    };
    uint8_t kind = 0, cf = 0, tag_byte = 0;
    if (!r.u8(kind) || !r.u8(cf) || !r.u8(tag_byte)) return bad("truncated header");
    const char tag = static_cast<char>(tag_byte);
    if (kind > 2) return bad(fmt::format("kind {} (expected 0 put, 1 delete, 2 range)", kind));
    if (cf > kMetaCf) return bad(fmt::format("column family {} (expected 0..2)", cf));
    if (cf == kMetaCf) {
      if (tag != kChannelTag && tag != kHeadTag && tag != kSubscriptionTag && tag != kCursorTag)
        return bad(fmt::format("meta tag {} (expected C, H, S or K)", tag_byte));
      if (kind == 2) return bad("a range delete in meta");
    } else if (tag != 0) {
      return bad("a meta tag outside meta");
    }
    uint32_t id = channel;
    if (sub_keyed(cf, tag)) {
      std::string_view name;
      if (!r.bytes(name, 2)) return bad("truncated subscription name");
      auto s = sub_by_name_.find({channel, std::string(name)});
      if (s != sub_by_name_.end()) {
        id = s->second;
      } else {
        id = allocate_subscription_id();
        subs_[id] = {channel, std::string(name), ""};
        sub_by_name_[{channel, std::string(name)}] = id;
      }
    }
    std::string_view a_rest, b_rest, v;
    if (!r.bytes(a_rest, 4)) return bad("truncated key");
    if (kind == 2 && !r.bytes(b_rest, 4)) return bad("truncated range end");
    if (kind == 0 && !r.bytes(v, 4)) return bad("truncated value");
    key.clear();
    if (cf == kMetaCf) {
      if (!a_rest.empty()) return bad("a meta key longer than tag and id");
      key.push_back(tag);
    } else if (a_rest.size() != kLogKeySize - 4) {
      return bad(fmt::format("a key of {} bytes after the id", a_rest.size()));
    }
    put_be32(key, id);
    key.append(a_rest);
    value.assign(v);
    if (cf == kMetaCf && tag == kSubscriptionTag && kind == 0) {
      // The value names the channel by the leader's id: this store's instead.
      if (value.size() < 5) return bad("a subscription value shorter than 5 bytes");
      for (int i = 0; i < 4; ++i) value[1 + i] = static_cast<char>(channel >> (8 * i));
    }
    if (kind == 2) {
      if (b_rest.size() != kLogKeySize - 4 && b_rest.size() != 9)
        return bad(fmt::format("a range end of {} bytes after the id", b_rest.size()));
      end.clear();
      put_be32(end, id);
      end.append(b_rest);
      if (end < key) return bad("a range whose end precedes its begin");
    }
    out.add(static_cast<WriteSet::OpKind>(kind), cf, key,
            kind == 2 ? std::string_view(end) : value);
  }
  return ok_status();
}

void ReplicaCatalog::applied(const std::string& channel, uint64_t position) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(channel);
  if (it == by_name_.end()) return;
  auto& e = channels_[it->second];
  e.stored = std::max(e.stored, position);
}

void ReplicaCatalog::apply_failed(const std::string& channel, uint64_t position) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(channel);
  if (it == by_name_.end()) return;
  auto& e = channels_[it->second];
  // Positions after it were accepted on its assumption: take them all again from the leader.
  if (e.position >= position) e.position = std::min(e.stored, position - 1);
  while (!e.starts.empty() && e.starts.back().first > e.position) e.starts.pop_back();
}

std::string ReplicaCatalog::definitions(const std::string& channel) {
  std::lock_guard lock(mu_);
  std::string out;
  auto it = by_name_.find(channel);
  if (it == by_name_.end()) return out;
  const ChannelId id = it->second;
  const ChannelEntry& e = channels_[id];
  auto put = [&out](char tag, const std::string* sub, const std::string& value) {
    append_replica_record(out, 0, kMetaCf, tag, sub, {}, value);
  };
  put(kChannelTag, nullptr, encode_channel({id, e.name, e.config}));
  for (auto s = sub_by_name_.lower_bound({id, ""}); s != sub_by_name_.end() && s->first.first == id;
       ++s) {
    const SubEntry& sub = subs_[s->second];
    put(kSubscriptionTag, &sub.name, encode_subscription({s->second, id, sub.name, sub.config}));
  }
  return out;
}

ReplicaPosition ReplicaCatalog::position(const std::string& channel) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(channel);
  if (it == by_name_.end()) return {};
  const ChannelEntry& e = channels_[it->second];
  ReplicaPosition p = record_locked(e);
  p.position = e.stored;
  return p;
}

}  // namespace witmq::storage
