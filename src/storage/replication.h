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

#include "common/result.h"
#include "storage/records.h"

namespace witmq::storage {

class Store;

// One replicated channel's writes of one commit group, in logical form.
struct Shipment {
  std::string channel;  // the channel's name
  uint64_t epoch = 0;   // the leader's epoch for the channel
  uint64_t position = 0;
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
  Durability durability = Durability::kGroup;
  std::string definitions;  // records applied first: the channel's and its subscriptions'
                            // definitions, so that a follower can create what it never saw
  std::string records;
};

// What became of a ReplicatedBatch.
struct ApplyOutcome {
  enum class Kind {
    kApplied,    // stored as durably as asked; `position` is now the follower's last
    kDuplicate,  // already held: `position` is the follower's last stored position
    kGap,        // positions are missing before it: resend from `position`
    kStale,      // its epoch is below the highest the follower has seen (`text` says)
    kFailed,     // refused or not stored (`text` says why)
  };
  Kind kind = Kind::kApplied;
  uint64_t epoch = 0;  // the highest epoch the follower has seen for the channel
  uint64_t position = 0;
  std::string text;
};

// A channel's replication position as a store holds it.
struct ReplicaPosition {
  uint64_t epoch = 0;
  uint64_t position = 0;  // the last position stored (0: none)
};

}  // namespace witmq::storage
