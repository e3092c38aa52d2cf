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

  // Fresh ids for this store; never below an id it has held.
  ChannelId allocate_channel_id() { return next_channel_.fetch_add(1); }
  SubscriptionId allocate_subscription_id() { return next_subscription_.fetch_add(1); }

  // -- the leader's commit path (commit thread) --
  struct Pending {
    ChannelId id = 0;
    Shipment shipment;
    ReplicaPosition before;              // restored if the write fails
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

  // The channel's definition and its subscriptions' as records (empty if unknown).
  std::string definitions(const std::string& channel);
  ReplicaPosition position(const std::string& channel);

 private:
  struct ChannelEntry {
    std::string name;
    std::string config;
    uint64_t epoch = 0;
    uint64_t position = 0;  // last assigned or accepted
    uint64_t stored = 0;    // last stored
  };
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

// Encodes a meta 'P' value and decodes one (kCorruption naming the key on bad bytes).
std::string encode_replica_position(const ReplicaPosition& p);
Result<ReplicaPosition> decode_replica_position(std::string_view key, std::string_view value);

}  // namespace witmq::storage
