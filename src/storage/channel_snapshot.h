// A consistent read of one replicated channel's whole state, for a follower that cannot be
// brought up to date by resending (docs/CLUSTERING.md, "Snapshots"): the channel's definition
// and head, its subscriptions' definitions and cursors, its messages and their delivery state,
// all as they were at one replication position, read in bounded chunks of records
// (replica_catalog.h) so that neither side holds the whole channel in memory.
//
// It holds a RocksDB snapshot (older versions of the channel's keys stay on disk meanwhile);
// the store releases it when it closes, after which next() fails.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "storage/replication.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace witmq::storage {

// The snapshots a store has open, released when it closes (Store::close).
class SnapshotRegistry;

class ChannelSnapshot {
 public:
  // Opens the snapshot of channel `id` (named `name`). kNotFound when the channel has no record,
  // kFailedPrecondition when this store's own copy is an incomplete snapshot.
  static Result<std::unique_ptr<ChannelSnapshot>> open(
      rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& handles,
      std::shared_ptr<SnapshotRegistry> registry, uint32_t id, std::string name);
  ~ChannelSnapshot();
  ChannelSnapshot(const ChannelSnapshot&) = delete;
  ChannelSnapshot& operator=(const ChannelSnapshot&) = delete;

  const std::string& channel() const;
  // The channel's replication position the snapshot holds (0: never replicated), the highest
  // epoch its store had seen, and where each epoch began up to the position.
  const ReplicaPosition& position() const;

  // The next records, about `max_bytes` of them (at least one record while any is left); `done`
  // is set once nothing is left (the chunk returned is then the last).
  Result<std::string> next(size_t max_bytes, bool& done);

 private:
  struct Impl;
  friend class SnapshotRegistry;
  explicit ChannelSnapshot(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Store-internal: created by the store, told when it closes.
std::shared_ptr<SnapshotRegistry> make_snapshot_registry();
void close_snapshot_registry(SnapshotRegistry& registry);

}  // namespace witmq::storage
