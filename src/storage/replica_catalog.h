// The store's map from its node-local ids to the names replication speaks, and each channel's
// replication position (replication.h). The commit thread keeps it current from the writes it
// commits (when a Replicator is set) and asks it to turn a commit group's writes of replicated
// channels into shipments; a follower's applier asks it to turn received records back into a
// WriteSet with this store's ids.
//
// Records (the logical form of WriteSet ops), one after another:
//   u8 kind (0 put, 1 delete, 2 delete-range), u8 column family (0 messages, 1 delivery, 2 meta),
//   u8 meta tag (0 outside meta),
//   [u16 length + subscription name, for delivery keys and meta 'S' / 'K' keys]
//   u32 length + the key after its id (range: its begin), [range: u32 length + its end after the
//   id] [put: u32 length + the value]
// Integers little-endian. A meta 'S' value names its channel by id: the follower rewrites it.
//
// Log matching: each channel's entry keeps where each leader epoch began (EpochStart). A follower
// applies a batch only when its last entry is exactly the batch's previous one (epoch and
// position), answers a duplicate only when it holds the batch's own (epoch, position), and
// otherwise reports divergence; a diverged follower takes a snapshot (SnapshotChunk), whose
// first chunk discards its copy of the channel.
//
// Thread safety: every method may be called from any thread (one mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "storage/replication.h"
#include "storage/store.h"

namespace witmq::storage {

class ReplicaCatalog {
 public:
  // -- start-up (Store::recover) --
  void load_channel(ChannelId id, const std::string& name, const std::string& config);
  void load_subscription(const SubscriptionRecord& s);
  void load_position(ChannelId id, ReplicaPosition p);
  // A running store takes a channel up again (Store::recover with one channel): its name and
  // configuration are set; its position is taken from `on_disk` only when the catalog does not
  // know the channel yet (the catalog is never behind the records on disk, which may be behind
  // it).
  void take_up_channel(ChannelId id, const std::string& name, const std::string& config,
                       std::optional<ReplicaPosition> on_disk);

  // Fresh ids for this store; never below an id it has held.
  ChannelId allocate_channel_id() { return next_channel_.fetch_add(1); }
  SubscriptionId allocate_subscription_id() { return next_subscription_.fetch_add(1); }

  // -- the leader's commit path (commit thread) --
  struct Pending {
    ChannelId id = 0;
    Shipment shipment;
    ReplicaPosition before;              // restored if the write fails
    bool started_epoch = false;          // an epoch start was added (removed if the write fails)
    std::vector<size_t> requests;        // indexes (within the group) of the requests it carries
    std::optional<std::string> refused;  // stale epoch: the requests fail with this text
  };
  // Everything one commit group wrote to channels, gathered request by request.
  class Group {
   public:
    bool empty() const { return channels_.empty() && deleted_channels_.empty(); }

   private:
    friend class ReplicaCatalog;
    struct Part {
      std::optional<uint64_t> epoch;  // asked once per group
      std::string name;
      std::string records;
      Durability durability = Durability::kNone;
      std::vector<size_t> requests;
    };
    std::map<ChannelId, Part> channels_;
    std::vector<ChannelId> deleted_channels_;
    std::vector<SubscriptionId> deleted_subscriptions_;
  };
  // Keeps the catalog current with `ws` and, when `ship`, adds its writes of channels this node
  // ships (Replicator::shipping_epoch) to `group`.
  void observe(const WriteSet& ws, size_t request, Durability d, bool ship, Replicator& r,
               Group& group);
  // Assigns the group's positions; adds each shipped channel's position record to `extra`.
  std::vector<Pending> assign(Group& group, WriteSet& extra);
  // The group's write failed: positions go back.
  void rollback(const std::vector<Pending>& pending);
  // The group is stored.
  void stored(const std::vector<Pending>& pending);

  // -- a follower's applier --
  // Checks `b` against the channel's position and epoch and, when it is the next one, turns it
  // into `out` (this store's ids, plus the position record) and takes its position. Anything
  // but kApplied is the final outcome; kApplied means: commit `out`, then call applied() or
  // apply_failed().
  ApplyOutcome accept(const ReplicatedBatch& b, WriteSet& out);
  void applied(const std::string& channel, uint64_t position);
  void apply_failed(const std::string& channel, uint64_t position);

  // The same for a snapshot chunk: kApplied (commit `out`, then snapshot_applied() or
  // snapshot_failed()), kStale or kFailed (a chunk out of order or bad records).
  ApplyOutcome accept_snapshot(const SnapshotChunk& c, WriteSet& out);
  void snapshot_applied(const SnapshotChunk& c);
  void snapshot_failed(const std::string& channel);
  // Channels whose snapshot is incomplete (begun, not finished), by name.
  std::vector<std::string> incomplete_channels();
  // The channel's id in this store (nullopt if unknown).
  std::optional<ChannelId> id_of(const std::string& channel);

  // The channel's definition and its subscriptions' as records (empty if unknown).
  std::string definitions(const std::string& channel);
  ReplicaPosition position(const std::string& channel);

 private:
  struct ChannelEntry {
    std::string name;
    std::string config;
    uint64_t epoch = 0;     // the highest epoch seen
    uint64_t position = 0;  // last assigned or accepted
    uint64_t stored = 0;    // last stored
    std::vector<EpochStart> starts;
    // A snapshot is being applied (or a crash interrupted one): the records count for nothing.
    bool incomplete = false;
    uint64_t snapshot_epoch = 0, snapshot_position = 0;
    uint32_t snapshot_next = 0;  // the chunk expected next
    // Ids of an earlier copy the first chunk discards; kept until that chunk is stored, so that
    // a failed write leaves them to the next snapshot rather than behind as a second copy.
    std::vector<ChannelId> discard_channels;
    std::vector<SubscriptionId> discard_subscriptions;
  };
  // The epoch of position `p` in `e`'s log: 0 for position 0, nullopt when unknown (before the
  // first epoch start the entry keeps).
  static std::optional<uint64_t> epoch_of(const ChannelEntry& e, uint64_t p);
  static void add_start(ChannelEntry& e, EpochStart s);
  ReplicaPosition record_locked(const ChannelEntry& e) const;
  struct SubEntry {
    ChannelId channel = 0;
    std::string name;
    std::string config;
  };
  ChannelId channel_for_name_locked(const std::string& name, bool create);
  Status translate_locked(std::string_view records, ChannelId channel, WriteSet& out);
  void floor_ids(ChannelId ch, SubscriptionId sub);

  std::mutex mu_;
  std::unordered_map<ChannelId, ChannelEntry> channels_;
  std::unordered_map<std::string, ChannelId> by_name_;
  std::unordered_map<SubscriptionId, SubEntry> subs_;
  std::map<std::pair<ChannelId, std::string>, SubscriptionId> sub_by_name_;
  std::unordered_map<ChannelId, ReplicaPosition> loaded_positions_;
  std::atomic<ChannelId> next_channel_{1};
  std::atomic<SubscriptionId> next_subscription_{1};
};

// Appends one record (the layout above). `sub` names the subscription of a delivery, 'S' or
// 'K' record (nullptr otherwise); `key_rest` is the key after its id.
void append_replica_record(std::string& out, uint8_t kind, uint8_t cf, char tag,
                           const std::string* sub, std::string_view key_rest,
                           std::string_view value);

// The most epoch starts a channel's position record keeps (the oldest go first: a position
// before the oldest kept start has an unknown epoch, which never matches, so a follower that
// old takes a snapshot).
inline constexpr size_t kMaxEpochStarts = 256;

// Encodes a meta 'P' value and decodes one (kCorruption naming the key on bad bytes):
// u8 version 1, u64 epoch, u64 position, then (absent in records of earlier builds) u8 flags
// (1: snapshot incomplete), u16 count and count times u64 epoch, u64 first position.
std::string encode_replica_position(const ReplicaPosition& p);
Result<ReplicaPosition> decode_replica_position(std::string_view key, std::string_view value);

}  // namespace witmq::storage
