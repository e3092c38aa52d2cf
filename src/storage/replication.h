// What the store offers replication (docs/CLUSTERING.md, "Replication"): the seam through which
// a leader's commit path hands each commit group's writes of a replicated channel to the cluster
// layer, and the way a follower applies what it receives. Nothing here knows sockets or etcd.
//
// Channel and subscription ids are node-local, so what travels is a *logical* form of the
// store's writes: each write names its channel by name and its subscription by (channel,
// subscription name); the follower maps both to ids of its own store. A channel's writes are
// numbered by a per-channel log position (one position per commit group that touched the
// channel), stamped with the leader's epoch, and every store records, in the same atomic write as
// the data, the highest epoch and the last position it holds for each channel (meta 'P').
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "storage/records.h"

namespace witmq::storage {

class Store;

// One replicated channel's writes of one commit group, in logical form.
struct Shipment {
  std::string channel;  // the channel's name
  uint64_t epoch = 0;   // the leader's epoch for the channel
  uint64_t position = 0;
  // The entry before it in the leader's log (log matching): its position (position - 1) and the
  // epoch under which it was written (0 with position 0: the log was empty).
  uint64_t prev_epoch = 0;
  uint64_t prev_position = 0;
  // As durably as the most demanding request of the group that wrote the channel.
  Durability durability = Durability::kGroup;
  std::string records;  // encoded records (see encode in replica_catalog.h)
};

// Implemented by the cluster layer and set in StoreOptions::replicator. Absent (single node),
// the store does none of this and writes exactly as it always did.
class Replicator {
 public:
  virtual ~Replicator() = default;
  // Called once by Store::open, before any commit: the store it serves.
  virtual void attach(Store* store) = 0;
  // Commit thread. The epoch under which this node leads `channel` and must ship its writes to
  // followers now; nullopt when it does not (not the leader, no follower, cluster mode starting):
  // the write is then stored locally only, as on a single node.
  virtual std::optional<uint64_t> shipping_epoch(const std::string& channel) = 0;
  // Commit thread, once `s` is stored locally. `held` runs exactly once, on any thread: with ok
  // once a majority of the channel's replicas (this node included) holds it, or with an error
  // (kUnavailable) when that did not happen within the bound. It must not block.
  virtual void ship(Shipment s, std::function<void(Status)> held) = 0;
};

// A batch a follower received, to apply with Store::apply_replicated.
struct ReplicatedBatch {
  std::string channel;
  uint64_t epoch = 0;
  uint64_t position = 0;
  uint64_t prev_epoch = 0;  // the leader's entry before it (Shipment::prev_epoch)
  uint64_t prev_position = 0;
  Durability durability = Durability::kGroup;
  std::string definitions;  // records applied first: the channel's and its subscriptions'
                            // definitions, so that a follower can create what it never saw
  std::string records;
};

// What became of a ReplicatedBatch.
struct ApplyOutcome {
  enum class Kind {
    kApplied,    // stored as durably as asked; `position` is now the follower's last
    kDuplicate,  // this exact (epoch, position) is held: `position` is stored (at most the
                 // batch's own position: what follows it may not be the leader's)
    kGap,        // positions are missing before it: resend from `position`
    kStale,      // its epoch is below the highest the follower has seen (`text` says)
    kFailed,     // refused or not stored (`text` says why)
    kDiverged,   // the follower's log differs from the leader's (or a snapshot is incomplete):
                 // its last entry is (`last_epoch`, `position`); it needs a snapshot
  };
  Kind kind = Kind::kApplied;
  uint64_t epoch = 0;  // the highest epoch the follower has seen for the channel
  uint64_t position = 0;
  uint64_t last_epoch = 0;  // kDiverged: the epoch of the follower's last entry
  std::string text;
};

// Where each leader epoch began in a channel's log: the epoch and its first position, ascending
// in both. The epoch of position p is that of the last start at or before p. Every store keeps
// the list with the channel's position (meta 'P'), so that a follower can tell whether it holds
// exactly the leader's entry (epoch, position) (log matching, as in Raft or Kafka's leader
// epochs).
struct EpochStart {
  uint64_t epoch = 0;
  uint64_t first = 0;
  bool operator==(const EpochStart&) const = default;
};

// One chunk of a channel's whole state at a position, sent by its leader to a follower that
// cannot be brought up to date by resending (behind the retained log, diverged, empty). Chunks
// are applied in order; the first discards the follower's copy of the channel and marks the
// channel incomplete (durably), the last stores the position and clears the mark. A snapshot of
// one chunk with no records at all (a real one holds at least the channel's definition) says the
// channel is gone from the leader's store: the follower drops its copy and keeps nothing of it.
struct SnapshotChunk {
  std::string channel;
  uint64_t epoch = 0;     // the leader's epoch
  uint64_t position = 0;  // the position the snapshot holds the channel at
  uint32_t index = 0;     // 0, 1, ...
  bool last = false;
  std::vector<EpochStart> starts;  // last chunk: the leader's epoch starts up to `position`
  std::string records;             // records (replica_catalog.h)
};

// A channel's replication position as a store holds it.
struct ReplicaPosition {
  uint64_t epoch = 0;
  uint64_t position = 0;  // the last position stored (0: none)
  // A snapshot of the channel was begun and not finished: its records are partial and count
  // for nothing until a snapshot is applied whole.
  bool incomplete = false;
  std::vector<EpochStart> starts;  // empty in records written before epoch starts were kept
};

}  // namespace witmq::storage
