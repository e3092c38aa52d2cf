// Store: witmq's RocksDB log. Channels' messages, sparse per-subscription delivery state, cursors
// and definitions, written through one group-commit path.
//
// Column families:
//   messages  : u32 channel | u64 last seq    -> encode_message_run(...): messages first..last
//                                                (one message: encode_message(...), key its seq)
//   delivery  : u32 subscription | u64 seq    -> encode_delivery(...)
//   meta      : 'C' u32 channel               -> ChannelRecord
//               'S' u32 subscription          -> SubscriptionRecord
//               'K' u32 subscription          -> CursorRecord
//               'H' u32 channel               -> HeadRecord
//
// Thread safety: every method may be called from any thread. Writes are queued to one commit
// thread, which merges what is queued into one WriteBatch and one WAL write (and one fsync when a
// request needs it; none for a run of unlogged requests, WriteSet::set_unlogged), then runs the
// requests' callbacks in submission order. Reads go straight to
// RocksDB and see every write whose callback has run.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "storage/channel_snapshot.h"
#include "storage/records.h"
#include "storage/replication.h"

namespace witmq::storage {

struct StoreOptions {
  // Directory of the RocksDB database; created if missing.
  std::string path;
  // Largest merged WriteBatch the commit thread builds before writing (bytes). Larger batches
  // amortize fsync better but delay the first request in them. Default 4 MiB.
  size_t max_commit_bytes = 4 << 20;
  // RocksDB memtable size per column family (bytes). Default 64 MiB.
  size_t write_buffer_size = 64 << 20;
  // RocksDB block cache (bytes). Default 64 MiB.
  size_t block_cache_bytes = 64 << 20;

  // Cluster mode: the cluster layer that ships replicated channels' writes (replication.h).
  // Unset on a single node, where the commit path is exactly what it is without replication.
  std::shared_ptr<Replicator> replicator;

  // Seams for tests that need to order or fail writes; production leaves both unset.
  struct TestHooks {
    // Runs on the committing thread at the start of every commit(), before the request is queued.
    std::function<void()> before_commit;
    // Runs on the commit thread before each merged write; an error fails that write, as if
    // RocksDB had refused it (every request of the write gets the error).
    std::function<Status()> before_write;
  };
  TestHooks test_hooks;
};

// A set of writes applied atomically. Build it on any thread, then hand it to Store::commit.
// Encoding happens here, on the caller's thread, into the form RocksDB writes: the commit thread
// passes a lone request's writes on as they are and copies a group's into one buffer.
class WriteSet {
 public:
  void put_message(ChannelId ch, Seq seq, int64_t publish_time_ms, const Message& m);
  // Messages first, first + 1, ... of `ch`, as few records as possible: runs (records.h
  // encode_message_run) of at most about 64 KiB each, a larger message alone. One record per
  // run instead of per message is what keeps the commit path cheap for batched sends.
  void put_messages(ChannelId ch, Seq first, int64_t publish_time_ms, std::span<const Message> ms);
  void put_delivery(SubscriptionId sub, Seq seq, const DeliveryRecord& r);
  void delete_delivery(SubscriptionId sub, Seq seq);
  // Removes delivery records [from, to) of `sub`.
  void delete_deliveries(SubscriptionId sub, Seq from, Seq to);
  void put_cursor(SubscriptionId sub, const CursorRecord& c);
  void put_head(ChannelId ch, const HeadRecord& h);
  void put_channel(const ChannelRecord& c);
  void delete_channel(ChannelId ch);  // definition, head and every message of the channel
  void put_subscription(const SubscriptionRecord& s);
  void delete_subscription(SubscriptionId sub);  // definition, cursor and delivery records
  // Removes messages [from, to) of channel `ch` (a range delete of the records stored under
  // those seqs). A run that holds messages on both sides of `to` is stored under a seq >= to
  // and is kept whole: its messages below `to` stay readable until a later delete covers its
  // last seq, so a caller must not read below the channel's first retained seq (HeadRecord).
  void delete_messages(ChannelId ch, Seq from, Seq to);

  // Lets these writes skip the write-ahead log when they are committed with Durability::kNone on a
  // single node (no replicator): they go to RocksDB's memtables only, and become durable when the
  // memtables are flushed (when full, and at close()). A process that dies before then loses
  // them, and may keep any other write, logged or flushed, made after them. Ignored for kGroup,
  // kSync and in cluster mode, where the write is logged as usual.
  void set_unlogged() { unlogged_ = true; }
  bool unlogged() const { return unlogged_; }

  bool empty() const { return ops_.empty(); }
  size_t bytes() const { return buf_.size(); }
  size_t op_count() const { return ops_.size(); }

 private:
  friend class Store;
  friend class ReplicaCatalog;
  enum class OpKind : uint8_t { kPut, kDelete, kDeleteRange };
  struct Op {
    OpKind kind;
    uint8_t cf;             // 0 messages, 1 delivery, 2 meta
    uint32_t a_off, a_len;  // key (or range begin)
    uint32_t b_off, b_len;  // value (or range end)
  };
  void add(OpKind kind, uint8_t cf, std::string_view a, std::string_view b);
  void begin_record(OpKind kind, uint8_t cf, size_t key_size);
  // A messages-column-family put keyed by (ch, key_seq) whose value of `value_size` bytes the
  // caller appends to buf_ next; end_record() then records it.
  Op begin_message_record(ChannelId ch, Seq key_seq, size_t value_size);
  void end_record(Op op);
  // The writes as a serialized RocksDB WriteBatch (store.cc), so that the commit thread hands
  // them to RocksDB whole instead of copying them write by write; ops_ points at their keys and
  // values in it. Empty until the first write.
  std::string buf_;
  std::vector<Op> ops_;
  // Applied from a leader's shipment: never shipped on (see Store::apply_replicated).
  bool replicated_in_ = false;
  bool unlogged_ = false;
};

// Records Store::recover() found without the record they belong to, and removed. A crash or a
// race between a channel's deletion and a write naming it can leave them behind; they carry no
// state anyone can reach, so recovery removes them (with a warning) instead of refusing to start.
struct RecoveryOrphans {
  uint64_t subscriptions = 0;     // subscription records whose channel has no record
  uint64_t cursors = 0;           // cursors whose subscription has no record
  uint64_t delivery_records = 0;  // delivery records whose subscription has no record
  uint64_t heads = 0;             // head records whose channel has no record
  uint64_t message_channels = 0;  // channels with stored messages but no channel record
  uint64_t total() const {
    return subscriptions + cursors + delivery_records + heads + message_channels;
  }
};

// Everything Store::recover() finds, for the broker to rebuild its state from.
struct RecoveredState {
  struct Channel {
    ChannelRecord def;
    HeadRecord head;  // head.next is never below (last stored seq + 1)
  };
  struct Subscription {
    SubscriptionRecord def;
    CursorRecord cursor;
    std::vector<std::pair<Seq, DeliveryRecord>> deliveries;  // ascending seq
  };
  std::vector<Channel> channels;            // ascending id
  std::vector<Subscription> subscriptions;  // ascending id; each names one of `channels`
  RecoveryOrphans orphans;                  // already removed from storage
};

// Commit-path counters, for metrics.
struct StoreStats {
  uint64_t commits = 0;        // requests committed
  uint64_t writes = 0;         // merged RocksDB writes
  uint64_t syncs = 0;          // WAL fsyncs
  uint64_t bytes_written = 0;  // WriteSet bytes committed
  uint64_t sync_micros_total = 0;
  uint64_t max_requests_per_write = 0;
  // The last write failed because the disk is full; writes are refused (kResourceExhausted)
  // until a later one succeeds.
  bool disk_full = false;
  uint64_t disk_full_errors = 0;  // writes refused for a full disk
  RecoveryOrphans recovered_orphans;  // removed by recover() at this start
};

class Store {
 public:
  // Called on the commit thread once the write set is applied (or failed). Keep it short: post
  // any real work elsewhere.
  using CommitCallback = std::function<void(Status)>;

  static Result<std::unique_ptr<Store>> open(const StoreOptions& options);
  // Drains the commit queue (every queued write is applied and its callback run), then closes.
  ~Store();

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Queues `writes` for the commit thread. `done` runs once its Durability promise holds.
  // Writes are applied in submission order. After close() has begun, `done` gets kUnavailable.
  // When the disk is full `done` gets kResourceExhausted, naming the data directory; RocksDB then
  // stops writing, and the commit thread asks it once a second to resume until writes are
  // accepted again, so freeing space needs no restart.
  void commit(WriteSet writes, Durability durability, CommitCallback done);
  // commit() for writes that are still being gathered: `fill` runs once, on the commit thread, when
  // the request is taken for a write (under the queue's lock: it must only move prepared writes
  // into the WriteSet it is given, taking no lock that is held while calling commit()). The
  // request keeps its place in submission order. If the store refuses the request at once,
  // `fill` never runs.
  void commit_filled(std::function<void(WriteSet&)> fill, Durability durability,
                     CommitCallback done);
  // commit() and wait for it.
  Status commit_and_wait(WriteSet writes, Durability durability);

  // Up to `max_count` messages of channel `ch` with seq >= from and seq < to, ascending, stopping
  // early once `max_bytes` of data is collected (always at least one message if any exists).
  Result<std::vector<StoredMessage>> read(ChannelId ch, Seq from, Seq to, size_t max_count,
                                          size_t max_bytes = SIZE_MAX);
  Result<std::optional<StoredMessage>> get(ChannelId ch, Seq seq);
  // The first seq in [from, to) whose publish time is >= time_ms, or `to` if none.
  Result<Seq> find_seq_by_time(ChannelId ch, Seq from, Seq to, int64_t time_ms);
  // Approximate bytes on disk and in memtables for messages [from, to) of `ch` (the records
  // stored under those seqs: a run reaching past `to` is left out; of one reaching below `from`,
  // the encoded size of its messages from `from` on is counted).
  uint64_t approximate_bytes(ChannelId ch, Seq from, Seq to);

  // Reads every definition, head, cursor and delivery record. Call once, before any commit.
  // Records whose owner has no record (RecoveryOrphans) are removed, durably, before it returns;
  // it fails (kCorruption, naming the key) only on bytes that do not decode.
  // With `only_channel`, reads the records of the channel of that name alone (none when it has
  // no record), removes nothing, and may be called at any time: for a cluster node that takes up
  // a channel again (Broker::adopt_channel). Writes of that channel must not be under way.
  Result<RecoveredState> recover(const std::string* only_channel = nullptr);

  // Writes a consistent RocksDB checkpoint (hard links where possible) into `dir`, which must
  // not exist yet.
  Status checkpoint(const std::string& dir);

  // Stops accepting commits, drains the queue and flushes memtables (which is what makes unlogged
  // writes durable; a failed flush is logged). Idempotent.
  void close();

  StoreStats stats() const;

  // Fresh ids, never below one this store holds or held (recover() raises the floor). The broker
  // and a follower's applier take ids from here, so that neither gives out one the other did.
  ChannelId allocate_channel_id();
  SubscriptionId allocate_subscription_id();

  // Cluster mode, on a follower: applies a batch a channel's leader shipped (replication.h). It
  // is checked against the channel's epoch and position here; the next one is committed with its
  // durability and `done` runs (on the commit thread) once it is stored; any other outcome
  // (duplicate, gap, stale epoch, bad records) runs `done` at once on the caller's thread.
  void apply_replicated(const ReplicatedBatch& batch, std::function<void(ApplyOutcome)> done);
  // The channel's definition and its subscriptions' as records, for a follower that lacks them.
  std::string replica_definitions(const std::string& channel);
  // The channel's stored replication position (zeros if none or not in cluster mode).
  ReplicaPosition replica_position(const std::string& channel);
  // Cluster mode, on a follower: applies one chunk of a snapshot the channel's leader sent
  // (SnapshotChunk), as apply_replicated() does a batch: committed (kSync: a snapshot is
  // written once) and `done` runs once it is stored, or at once with kStale / kFailed.
  void apply_snapshot(const SnapshotChunk& chunk, std::function<void(ApplyOutcome)> done);
  // Cluster mode, on a leader: a consistent read of the channel's whole state at its current
  // replication position (ChannelSnapshot).
  Result<std::unique_ptr<ChannelSnapshot>> snapshot_channel(const std::string& channel);
  // Channels whose copy here is an incomplete snapshot (a follower catching up), by name.
  std::vector<std::string> replica_catching_up();

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  void commit_request(WriteSet writes, std::function<void(WriteSet&)> fill, Durability durability,
                      CommitCallback done);
  std::unique_ptr<Impl> impl_;
};

}  // namespace witmq::storage
