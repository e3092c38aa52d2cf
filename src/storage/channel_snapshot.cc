#include "storage/channel_snapshot.h"

#include <fmt/format.h>
#include <rocksdb/db.h>

#include <mutex>
#include <set>

#include "storage/codec.h"
#include "storage/replica_catalog.h"

namespace witmq::storage {

namespace {

constexpr uint8_t kMessagesCf = static_cast<uint8_t>(ColumnFamily::kMessages);
constexpr uint8_t kDeliveryCf = static_cast<uint8_t>(ColumnFamily::kDelivery);
constexpr uint8_t kMetaCf = static_cast<uint8_t>(ColumnFamily::kMeta);

std::string_view view(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

}  // namespace

class SnapshotRegistry {
 public:
  SnapshotRegistry() = default;
  // Registers a snapshot; false once the store is closing.
  bool add(ChannelSnapshot::Impl* s);
  void remove(ChannelSnapshot::Impl* s);
  void close();
  bool closed_locked() const { return closed_; }
  std::mutex mu;  // held while a snapshot reads, so that close() waits for the read

 private:
  bool closed_ = false;
  std::set<ChannelSnapshot::Impl*> open_;
};

struct ChannelSnapshot::Impl {
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::shared_ptr<SnapshotRegistry> registry;
  const rocksdb::Snapshot* snapshot = nullptr;  // null once released
  uint32_t id = 0;
  std::string name;
  ReplicaPosition position;
  struct Sub {
    uint32_t id;
    std::string name;
  };
  std::vector<Sub> subs;
  // Where next() goes on: 0 definitions, 1 messages, 2 + i the deliveries of subs[i].
  size_t phase = 0;
  std::unique_ptr<rocksdb::Iterator> it;
  std::string upper;
  rocksdb::Slice upper_slice;

  rocksdb::ReadOptions read_options() const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    return ro;
  }
  void release() {
    it.reset();
    if (snapshot != nullptr) db->ReleaseSnapshot(snapshot);
    snapshot = nullptr;
  }
  // Positions `it` at the first key of [begin, end) in column family `cf`.
  void scan(uint8_t cf, const std::string& begin, std::string end) {
    upper = std::move(end);
    upper_slice = rocksdb::Slice(upper);
    rocksdb::ReadOptions ro = read_options();
    ro.iterate_upper_bound = &upper_slice;
    it.reset(db->NewIterator(ro, handles[cf]));
    it->Seek(begin);
  }
  Result<std::optional<std::string>> get(char tag, uint32_t key_id) {
    std::string value;
    auto s = db->Get(read_options(), handles[kMetaCf], meta_key(tag, key_id), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) {
      return Error(ErrorCode::kIoError,
                   fmt::format("storage: snapshot of channel '{}': reading {}: {}", name,
                               describe_key("meta", meta_key(tag, key_id)), s.ToString()));
    }
    return std::optional<std::string>(std::move(value));
  }
};

bool SnapshotRegistry::add(ChannelSnapshot::Impl* s) {
  std::lock_guard lock(mu);
  if (closed_) return false;
  open_.insert(s);
  return true;
}

void SnapshotRegistry::remove(ChannelSnapshot::Impl* s) {
  std::lock_guard lock(mu);
  if (open_.erase(s) > 0) s->release();
}

void SnapshotRegistry::close() {
  std::lock_guard lock(mu);
  closed_ = true;
  for (ChannelSnapshot::Impl* s : open_) s->release();
  open_.clear();
}

std::shared_ptr<SnapshotRegistry> make_snapshot_registry() {
  return std::make_shared<SnapshotRegistry>();
}

void close_snapshot_registry(SnapshotRegistry& registry) { registry.close(); }

ChannelSnapshot::ChannelSnapshot(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ChannelSnapshot::~ChannelSnapshot() { impl_->registry->remove(impl_.get()); }

const std::string& ChannelSnapshot::channel() const { return impl_->name; }

const ReplicaPosition& ChannelSnapshot::position() const { return impl_->position; }

Result<std::unique_ptr<ChannelSnapshot>> ChannelSnapshot::open(
    rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& handles,
    std::shared_ptr<SnapshotRegistry> registry, uint32_t id, std::string name) {
  auto impl = std::make_unique<Impl>();
  impl->db = db;
  impl->handles = handles;
  impl->registry = registry;
  impl->id = id;
  impl->name = std::move(name);
  Impl* raw = impl.get();
  std::unique_ptr<ChannelSnapshot> out(new ChannelSnapshot(std::move(impl)));
  if (!registry->add(raw)) return Error(ErrorCode::kUnavailable, "storage: the store is closing");
  std::lock_guard lock(registry->mu);
  if (registry->closed_locked()) {
    return Error(ErrorCode::kUnavailable, "storage: the store is closing");
  }
  raw->snapshot = db->GetSnapshot();

  auto channel = raw->get(kChannelTag, id);
  if (!channel) return channel.error();
  if (!*channel) {
    return Error(
        ErrorCode::kNotFound,
        fmt::format("storage: snapshot of channel '{}': it has no record here", raw->name));
  }
  auto position = raw->get(kReplicaPositionTag, id);
  if (!position) return position.error();
  if (*position) {
    auto p = decode_replica_position(meta_key(kReplicaPositionTag, id), **position);
    if (!p) return p.error();
    if (p->incomplete) {
      return Error(ErrorCode::kFailedPrecondition,
                   fmt::format("storage: snapshot of channel '{}': this node's own copy is an "
                               "incomplete snapshot",
                               raw->name));
    }
    raw->position = std::move(p).value();
  }
  // The channel's subscriptions: meta 'S' keys, whose values name their channel.
  raw->scan(kMetaCf, std::string(1, kSubscriptionTag), std::string(1, kSubscriptionTag + 1));
  for (; raw->it->Valid(); raw->it->Next()) {
    auto sub = decode_subscription(view(raw->it->key()), view(raw->it->value()));
    if (!sub) return sub.error();
    if (sub->channel == id) raw->subs.push_back({sub->id, sub->name});
  }
  if (!raw->it->status().ok()) {
    return Error(ErrorCode::kIoError,
                 fmt::format("storage: snapshot of channel '{}': reading subscriptions: {}",
                             raw->name, raw->it->status().ToString()));
  }
  raw->it.reset();
  return out;
}

Result<std::string> ChannelSnapshot::next(size_t max_bytes, bool& done) {
  Impl& s = *impl_;
  std::lock_guard lock(s.registry->mu);
  std::string out;
  done = false;
  if (s.snapshot == nullptr) return Error(ErrorCode::kUnavailable, "storage: the store is closing");
  if (s.phase == 0) {
    for (char tag : {kChannelTag, kHeadTag}) {
      auto v = s.get(tag, s.id);
      if (!v) return v.error();
      if (*v) append_replica_record(out, 0, kMetaCf, tag, nullptr, {}, **v);
    }
    for (const Impl::Sub& sub : s.subs) {
      for (char tag : {kSubscriptionTag, kCursorTag}) {
        auto v = s.get(tag, sub.id);
        if (!v) return v.error();
        if (*v) append_replica_record(out, 0, kMetaCf, tag, &sub.name, {}, **v);
      }
    }
    s.phase = 1;
    s.scan(kMessagesCf, message_key(s.id, 0), log_key_end(s.id));
  }
  while (s.phase < 2 + s.subs.size()) {
    for (; s.it->Valid() && out.size() < max_bytes; s.it->Next()) {
      const std::string_view key = view(s.it->key());
      if (key.size() != kLogKeySize) {
        return Error(
            ErrorCode::kCorruption,
            fmt::format("storage: snapshot of channel '{}': {} is not {} bytes", s.name,
                        describe_key(s.phase == 1 ? "messages" : "delivery", key), kLogKeySize));
      }
      const Impl::Sub* sub = s.phase == 1 ? nullptr : &s.subs[s.phase - 2];
      append_replica_record(out, 0, s.phase == 1 ? kMessagesCf : kDeliveryCf, 0,
                            sub != nullptr ? &sub->name : nullptr, key.substr(4),
                            view(s.it->value()));
    }
    if (!s.it->status().ok()) {
      return Error(ErrorCode::kIoError, fmt::format("storage: snapshot of channel '{}': {}", s.name,
                                                    s.it->status().ToString()));
    }
    if (s.it->Valid()) return out;  // full: the rest in the next chunk
    ++s.phase;
    if (s.phase < 2 + s.subs.size()) {
      const uint32_t sub = s.subs[s.phase - 2].id;
      s.scan(kDeliveryCf, delivery_key(sub, 0), log_key_end(sub));
    }
  }
  done = true;
  s.release();
  return out;
}

}  // namespace witmq::storage
