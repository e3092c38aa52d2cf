#include "storage/replica_catalog.h"

#include <fmt/format.h>

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
  return out;
}

Result<ReplicaPosition> decode_replica_position(std::string_view key, std::string_view value) {
  if (value.size() != 17 || static_cast<uint8_t>(value[0]) != kRecordVersion) {
    return Error(ErrorCode::kCorruption,
                 fmt::format("{}: a replication position is 17 bytes of version {}; got {} bytes",
                             describe_key("meta", key), kRecordVersion, value.size()));
  }
  return ReplicaPosition{get_le(value, 1, 8), get_le(value, 9, 8)};
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
    std::string& out = p.records;
    out.push_back(static_cast<char>(op.kind));
    out.push_back(static_cast<char>(op.cf));
    out.push_back(tag);
    if (sub != nullptr) {
      put_le(out, sub->name.size(), 2);
      out.append(sub->name);
    }
    put_le(out, a_rest.size(), 4);
    out.append(a_rest);
    if (op.kind == WriteSet::OpKind::kDeleteRange) {
      put_le(out, b_rest.size(), 4);
      out.append(b_rest);
    } else if (op.kind == WriteSet::OpKind::kPut) {
      put_le(out, b.size(), 4);
      out.append(b);
    }
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
    p.before = {e.epoch, e.position};
    p.requests = std::move(part.requests);
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
    e.epoch = *part.epoch;
    e.position += 1;
    extra.add(WriteSet::OpKind::kPut, kMetaCf, meta_key(kReplicaPositionTag, id),
              encode_replica_position({e.epoch, e.position}));
    p.shipment = Shipment{part.name, e.epoch, e.position, part.durability, std::move(part.records)};
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
  const ChannelEntry& known = it == by_name_.end() ? none : channels_[it->second];
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
  if (b.position <= known.position) {
    o.kind = ApplyOutcome::Kind::kDuplicate;
    o.position = known.stored;
    return o;
  }
  if (b.position != known.position + 1) {
    o.kind = ApplyOutcome::Kind::kGap;
    o.position = known.position + 1;
    return o;
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
  out.add(WriteSet::OpKind::kPut, kMetaCf, meta_key(kReplicaPositionTag, id),
          encode_replica_position({e.epoch, e.position}));
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
}

std::string ReplicaCatalog::definitions(const std::string& channel) {
  std::lock_guard lock(mu_);
  std::string out;
  auto it = by_name_.find(channel);
  if (it == by_name_.end()) return out;
  const ChannelId id = it->second;
  const ChannelEntry& e = channels_[id];
  auto put = [&out](char tag, const std::string* sub, const std::string& value) {
    out.push_back(0);
    out.push_back(static_cast<char>(kMetaCf));
    out.push_back(tag);
    if (sub != nullptr) {
      put_le(out, sub->size(), 2);
      out.append(*sub);
    }
    put_le(out, 0, 4);
    put_le(out, value.size(), 4);
    out.append(value);
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
  return {e.epoch, e.stored};
}

}  // namespace witmq::storage
