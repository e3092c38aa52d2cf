#include "storage/store.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pthread.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/log.h"
#include "storage/codec.h"
#include "storage/replica_catalog.h"
#include "storage/small_files.h"

namespace witmq::storage {

namespace {

rocksdb::Slice slice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view view(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

// Maps a RocksDB status to our error vocabulary, keeping RocksDB's text.
Error from_rocksdb(const rocksdb::Status& s, std::string_view what) {
  ErrorCode code = ErrorCode::kIoError;
  if (s.IsCorruption()) code = ErrorCode::kCorruption;
  if (s.IsInvalidArgument()) code = ErrorCode::kInvalidArgument;
  if (s.IsNoSpace()) code = ErrorCode::kResourceExhausted;
  return Error(code, fmt::format("{}: {}", what, s.ToString()));
}

// ENOSPC, whichever way RocksDB reports it (a WAL append, a flush, or the background error that
// stops writes after either).
bool is_no_space(const rocksdb::Status& s) {
  return s.IsNoSpace() || s.ToString().find("No space left on device") != std::string::npos;
}

// How often the commit thread asks RocksDB to resume writing while the disk is full.
constexpr auto kResumeInterval = std::chrono::seconds(1);

// A WriteSet is kept in the form of a serialized RocksDB WriteBatch (the format of RocksDB's
// db/write_batch.cc, stable across its releases since WriteBatch(std::string rep) is public):
// a 12-byte header (sequence number and record count, little-endian u64 and u32, which the
// commit thread and RocksDB fill in), then one record per write: its type, the column family's
// id (varint32), the key and, for a put or a range delete, the value or the range's end, each
// preceded by its length (varint32).
constexpr size_t kBatchHeader = 12;
constexpr size_t kBatchCountOffset = 8;
constexpr char kRecordDelete = 0x4;       // kTypeColumnFamilyDeletion
constexpr char kRecordPut = 0x5;          // kTypeColumnFamilyValue
constexpr char kRecordDeleteRange = 0xE;  // kTypeColumnFamilyRangeDeletion

// The id RocksDB gives a column family when open() creates it: the default column family is 0,
// the others follow in ColumnFamily order. open() checks that the database's ids are these, and
// copies write by write (add_to_batch) if they are not.
uint32_t batch_cf_id(uint8_t cf) { return static_cast<uint32_t>(cf) + 1; }

void put_varint32(std::string& out, uint32_t v) {
  char buf[5];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

// The compression for cold data: LZ4 is cheap enough to run on every flush and compaction
// without competing much with the commit thread; fall back to none if this RocksDB lacks it.
rocksdb::CompressionType cold_compression() {
  auto supported = rocksdb::GetSupportedCompressions();
  bool has_lz4 =
      std::find(supported.begin(), supported.end(), rocksdb::kLZ4Compression) != supported.end();
  return has_lz4 ? rocksdb::kLZ4Compression : rocksdb::kNoCompression;
}

// An iterator over one channel's records in the messages column family, bounded by the channel's
// keys rather than by a sequence: a run holding messages below a bound may be stored under a
// sequence at or past it.
class ChannelMessages {
 public:
  ChannelMessages(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf, ChannelId ch)
      : end_(log_key_end(ch)), upper_(end_) {
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_;
    it_.reset(db.NewIterator(ro, cf));
  }
  ChannelMessages(const ChannelMessages&) = delete;
  ChannelMessages& operator=(const ChannelMessages&) = delete;
  rocksdb::Iterator* operator->() { return it_.get(); }
  rocksdb::Iterator& operator*() { return *it_; }

 private:
  std::string end_;
  rocksdb::Slice upper_;  // points into end_
  std::unique_ptr<rocksdb::Iterator> it_;
};

rocksdb::DBOptions make_db_options(const StoreOptions& options) {
  rocksdb::DBOptions o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  // Every append also rewrites its channel's head in the meta column family, whose memtable fills
  // slowly; a WAL file can only go once every column family has flushed what it holds, so without
  // a cap meta would pin gigabytes of WAL (RocksDB's default cap is 4x all memtables, 3 GiB here).
  // Past the cap RocksDB flushes the column families holding the oldest WAL, which bounds both the
  // disk used by the WAL and the replay time at the next open.
  o.max_total_wal_size = 4 * static_cast<uint64_t>(options.write_buffer_size);
  // One flush and one compaction at a time: this is sized for small machines where the commit
  // thread and the network threads need the other cores.
  o.max_background_jobs = 2;
  // Let SST files reach the disk in 1 MiB steps while they are written instead of all at once at
  // their final fsync, which would stall a concurrent WAL fsync behind a large writeback.
  o.bytes_per_sync = 1 << 20;
  // The promise behind Durability: after a crash, replay the WAL up to the first torn record (the
  // tail of an unsynced write) and nothing after it. Explicit because it is a contract, not a
  // tuning choice.
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // RocksDB's own diagnostic LOG stays small and bounded in the data directory.
  o.max_log_file_size = 16 << 20;
  o.keep_log_file_num = 4;
  return o;
}

// Column family options for a log workload: appends at the tail in key order, reads near the tail
// (range scans), range deletes from the head as messages are settled or expire.
rocksdb::ColumnFamilyOptions make_cf_options(ColumnFamily cf, const StoreOptions& options,
                                             const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions o;
  o.write_buffer_size = options.write_buffer_size;
  // Up to three memtables can wait for flush before writes stall, so a burst is absorbed while
  // the single flush job catches up.
  o.max_write_buffer_number = 4;
  // Sizes levels from the bottom up: with retention deleting old data the database grows and
  // shrinks, and this keeps write amplification near the minimum for whatever size it has.
  o.level_compaction_dynamic_level_bytes = true;
  // L0 and the base level (where L0 compacts to; with dynamic level bytes entry 1 names it, not
  // L1) hold recent data, much of which is settled and range-deleted before it goes deeper;
  // compressing it would spend CPU on bytes that are about to disappear.
  auto cold = cold_compression();
  o.compression_per_level = {
      rocksdb::kNoCompression, rocksdb::kNoCompression, cold, cold, cold, cold, cold};

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  if (cf == ColumnFamily::kMessages) {
    // Reads are sequential scans; larger blocks mean fewer index entries and fewer cache lookups
    // per message. No bloom filter: scans cannot use it.
    table.block_size = 16 << 10;
  }
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // memtable_insert_with_hint_prefix_extractor is deliberately not set: in RocksDB 7.8 the hints
  // are shared between a memtable's point and range-tombstone skiplists, and a DeleteRange after
  // puts of the same prefix corrupts the memtable (fixed upstream in 8.x). The skiplist's own
  // sequential-insert splice already makes in-order appends of one channel cheap.
  return o;
}

}  // namespace

// ---- WriteSet --------------------------------------------------------------------------------

void WriteSet::begin_record(OpKind kind, uint8_t cf, size_t key_size) {
  if (buf_.empty()) buf_.assign(kBatchHeader, '\0');
  static constexpr char kTypes[] = {kRecordPut, kRecordDelete, kRecordDeleteRange};
  buf_.push_back(kTypes[static_cast<size_t>(kind)]);
  put_varint32(buf_, batch_cf_id(cf));
  put_varint32(buf_, static_cast<uint32_t>(key_size));
}

void WriteSet::add(OpKind kind, uint8_t cf, std::string_view a, std::string_view b) {
  begin_record(kind, cf, a.size());
  Op op{kind, cf, static_cast<uint32_t>(buf_.size()), static_cast<uint32_t>(a.size()), 0, 0};
  buf_.append(a);
  if (kind != OpKind::kDelete) put_varint32(buf_, static_cast<uint32_t>(b.size()));
  op.b_off = static_cast<uint32_t>(buf_.size());
  op.b_len = static_cast<uint32_t>(b.size());
  buf_.append(b);
  ops_.push_back(op);
}

WriteSet::Op WriteSet::begin_message_record(ChannelId ch, Seq key_seq, size_t value_size) {
  // Encoded in place: key, then value, straight into buf_, with no temporary strings.
  begin_record(OpKind::kPut, static_cast<uint8_t>(ColumnFamily::kMessages), kLogKeySize);
  Op op{OpKind::kPut,
        static_cast<uint8_t>(ColumnFamily::kMessages),
        static_cast<uint32_t>(buf_.size()),
        kLogKeySize,
        0,
        0};
  append_log_key(buf_, ch, key_seq);
  put_varint32(buf_, static_cast<uint32_t>(value_size));
  op.b_off = static_cast<uint32_t>(buf_.size());
  return op;
}

void WriteSet::end_record(Op op) {
  op.b_len = static_cast<uint32_t>(buf_.size() - op.b_off);
  ops_.push_back(op);
}

void WriteSet::put_message(ChannelId ch, Seq seq, int64_t publish_time_ms, const Message& m) {
  Op op = begin_message_record(ch, seq, message_value_size(m));
  append_message(buf_, publish_time_ms, m);
  end_record(op);
}

void WriteSet::put_messages(ChannelId ch, Seq first, int64_t publish_time_ms,
                            std::span<const Message> ms) {
  while (!ms.empty()) {
    // The longest prefix whose run stays within kMaxRunBytes, but at least one message.
    size_t n = 0, size = 1 + 4;
    while (n < ms.size()) {
      const size_t grown = size + 4 + message_value_size(ms[n]);
      if (n > 0 && grown > kMaxRunBytes) break;
      size = grown;
      ++n;
    }
    const Seq last = first + n - 1;
    if (n == 1) {
      put_message(ch, last, publish_time_ms, ms[0]);
    } else {
      Op op = begin_message_record(ch, last, size);
      append_message_run(buf_, publish_time_ms, ms.first(n));
      end_record(op);
    }
    first += n;
    ms = ms.subspan(n);
  }
}

void WriteSet::put_delivery(SubscriptionId sub, Seq seq, const DeliveryRecord& r) {
  add(OpKind::kPut, static_cast<uint8_t>(ColumnFamily::kDelivery), delivery_key(sub, seq),
      encode_delivery(r));
}

void WriteSet::delete_delivery(SubscriptionId sub, Seq seq) {
  add(OpKind::kDelete, static_cast<uint8_t>(ColumnFamily::kDelivery), delivery_key(sub, seq), {});
}

void WriteSet::delete_deliveries(SubscriptionId sub, Seq from, Seq to) {
  // An empty range deletes nothing; RocksDB would refuse a range whose end precedes its begin.
  if (from >= to) return;
  add(OpKind::kDeleteRange, static_cast<uint8_t>(ColumnFamily::kDelivery), delivery_key(sub, from),
      delivery_key(sub, to));
}

void WriteSet::put_cursor(SubscriptionId sub, const CursorRecord& c) {
  add(OpKind::kPut, static_cast<uint8_t>(ColumnFamily::kMeta), meta_key(kCursorTag, sub),
      encode_cursor(c));
}

void WriteSet::put_head(ChannelId ch, const HeadRecord& h) {
  add(OpKind::kPut, static_cast<uint8_t>(ColumnFamily::kMeta), meta_key(kHeadTag, ch),
      encode_head(h));
}

void WriteSet::put_channel(const ChannelRecord& c) {
  add(OpKind::kPut, static_cast<uint8_t>(ColumnFamily::kMeta), meta_key(kChannelTag, c.id),
      encode_channel(c));
}

void WriteSet::delete_channel(ChannelId ch) {
  constexpr auto meta = static_cast<uint8_t>(ColumnFamily::kMeta);
  add(OpKind::kDelete, meta, meta_key(kChannelTag, ch), {});
  add(OpKind::kDelete, meta, meta_key(kHeadTag, ch), {});
  add(OpKind::kDeleteRange, static_cast<uint8_t>(ColumnFamily::kMessages), message_key(ch, 0),
      log_key_end(ch));
}

void WriteSet::put_subscription(const SubscriptionRecord& s) {
  add(OpKind::kPut, static_cast<uint8_t>(ColumnFamily::kMeta), meta_key(kSubscriptionTag, s.id),
      encode_subscription(s));
}

void WriteSet::delete_subscription(SubscriptionId sub) {
  constexpr auto meta = static_cast<uint8_t>(ColumnFamily::kMeta);
  add(OpKind::kDelete, meta, meta_key(kSubscriptionTag, sub), {});
  add(OpKind::kDelete, meta, meta_key(kCursorTag, sub), {});
  add(OpKind::kDeleteRange, static_cast<uint8_t>(ColumnFamily::kDelivery), delivery_key(sub, 0),
      log_key_end(sub));
}

void WriteSet::delete_messages(ChannelId ch, Seq from, Seq to) {
  if (from >= to) return;  // as in delete_deliveries
  add(OpKind::kDeleteRange, static_cast<uint8_t>(ColumnFamily::kMessages), message_key(ch, from),
      message_key(ch, to));
}

// ---- Store::Impl -----------------------------------------------------------------------------
//
// The commit path. commit() appends a request to `queue`; the commit thread takes a merge group
// (take_group), copies the group's ops into one WriteBatch, writes it with one DB::Write, and runs
// the callbacks in queue order. Durability per write:
//   - a kSync request is a group of its own, written with sync = true: its fsync is its own;
//   - a group with any kGroup member is written with sync = true: one fsync for all of them;
//   - a group of only kNone requests is written with sync = false. RocksDB still write(2)s the WAL
//     record before Write returns (manual_wal_flush is off), so the data is in the kernel's page
//     cache: it survives the daemon crashing or being killed, but not a power loss or a kernel
//     crash.
//   - a group of unlogged kNone requests (WriteSet::set_unlogged, single node only) is written
//     with disableWAL: memtables only, durable once flushed (close() flushes). A group is either
//     all unlogged or all logged (take_group stops where that changes), so a logged write never
//     goes without its WAL record.
// Requests queued while a write (and its fsync) is in progress form the next group, which is what
// makes group commit merge more the slower the disk is.

struct Store::Impl {
  struct Request {
    WriteSet writes;
    Durability durability;
    CommitCallback done;
    std::function<void(WriteSet&)> fill;  // see Store::commit_filled
    bool unlogged = false;                // written without the WAL (see the comment above)
  };

  StoreOptions options;
  std::unique_ptr<rocksdb::DB> db;
  // Ids in use and, in cluster mode, the names and replication positions of channels.
  ReplicaCatalog catalog;
  // Channel snapshots being read (cluster mode): released before the database closes.
  std::shared_ptr<SnapshotRegistry> snapshots = make_snapshot_registry();
  // Indexed by ColumnFamily. The default column family is opened (RocksDB requires it) but unused.
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* default_cf = nullptr;
  // The column families have the ids WriteSet's records name (batch_cf_id): a WriteSet's buffer
  // is a WriteBatch as it is. Otherwise add_to_batch copies it write by write.
  bool batch_ids_match = false;

  // Guards queue and accepting. The commit thread sleeps on queue_cv while the queue is empty.
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<Request> queue;
  bool accepting = true;
  std::thread commit_thread;
  // Merges the small files that flushes of key-ordered column families leave (small_files.h).
  std::shared_ptr<SmallFileMerger> merger;
  // Set once in open(); kept apart from commit_thread, whose id join() resets.
  std::thread::id commit_thread_id;

  // close() runs once; later calls wait for the first to finish.
  std::mutex close_mu;
  bool closed = false;

  mutable std::mutex stats_mu;
  StoreStats stats;

  // Commit thread only: whether the last write failed for lack of space, and when to ask
  // RocksDB to resume next.
  bool disk_full = false;
  std::chrono::steady_clock::time_point next_resume{};
  // Asks RocksDB to resume writing; true (and disk_full cleared) if writes are accepted again.
  bool try_resume(std::chrono::steady_clock::time_point now);
  void space_again();

  rocksdb::ColumnFamilyHandle* cf(ColumnFamily c) const { return handles[static_cast<size_t>(c)]; }

  ~Impl() {
    if (merger) merger->stop();
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    if (default_cf) db->DestroyColumnFamilyHandle(default_cf);
    db->Close();
  }

  void commit_loop();
  // Moves the next merge group from the queue into `group`: a lone kSync request, or a run of
  // kGroup / kNone requests, all logged or all unlogged, up to max_commit_bytes (always at least
  // one request).
  void take_group(std::vector<Request>& group);
  void write_group(std::vector<Request>& group, rocksdb::WriteBatch& batch);
  // Adds `writes` to `batch`; on a single node it may take their buffer (and leave them empty).
  rocksdb::Status add_to_batch(WriteSet& writes, rocksdb::WriteBatch& batch);
  void hold_for_replicas(std::vector<Request>& group,
                         std::vector<ReplicaCatalog::Pending>& shipped);
  void close();
};

void Store::Impl::commit_loop() {
  // Named so that top -H, perf and debuggers show which thread is the commit path.
  pthread_setname_np(pthread_self(), "witmq-commit");
  // RocksDB counts every key comparison and memtable step of this thread in thread-local
  // counters by default (kEnableCount); nothing reads them, and in the memtable insert loop the
  // thread-local lookups cost as much as the comparisons they count.
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  std::vector<Request> group;
  // Reused across writes: Clear() keeps its buffer, so steady state allocates nothing here.
  rocksdb::WriteBatch batch;
  for (;;) {
    {
      std::unique_lock lock(queue_mu);
      auto ready = [&] { return !queue.empty() || !accepting; };
      if (!disk_full) {
        queue_cv.wait(lock, ready);
      } else if (!queue_cv.wait_until(lock, next_resume, ready)) {
        // No write has come to find out whether space is back: find out without one, so that
        // readiness does not wait for a producer that readiness keeps away.
        lock.unlock();
        try_resume(std::chrono::steady_clock::now());
        continue;
      }
      // Closing exits only once everything queued before it has been written.
      if (queue.empty()) return;
      take_group(group);
    }
    write_group(group, batch);
    group.clear();
  }
}

bool Store::Impl::try_resume(std::chrono::steady_clock::time_point now) {
  next_resume = now + kResumeInterval;
  // RocksDB refuses every write after it failed one for lack of space. Its own recovery (the
  // SstFileManager) retries every few seconds once there is room for a memtable; Resume() asks
  // now, and reports busy while that recovery runs. An empty write then tells whether writes
  // are accepted again.
  auto resumed = db->Resume();
  if (!resumed.ok()) {
    log::debug("storage: data directory '{}': resuming writes: {}", options.path,
               resumed.ToString());
  }
  rocksdb::WriteBatch empty;
  if (!db->Write(rocksdb::WriteOptions(), &empty).ok()) return false;
  space_again();
  return true;
}

void Store::Impl::space_again() {
  log::info("storage: data directory '{}' has space again; writes resume", options.path);
  disk_full = false;
  std::lock_guard lock(stats_mu);
  stats.disk_full = false;
}

void Store::Impl::take_group(std::vector<Request>& group) {
  // A request still being gathered is complete once it is taken.
  auto filled = [](Request& r) -> Request& {
    if (r.fill) std::exchange(r.fill, nullptr)(r.writes);
    return r;
  };
  size_t bytes = filled(queue.front()).writes.bytes();
  bool alone = queue.front().durability == Durability::kSync;
  const bool unlogged = queue.front().unlogged;
  group.push_back(std::move(queue.front()));
  queue.pop_front();
  if (alone) return;
  // Stops at a kSync request rather than skipping it: requests are applied in submission order.
  while (!queue.empty() && queue.front().durability != Durability::kSync &&
         queue.front().unlogged == unlogged &&
         bytes + filled(queue.front()).writes.bytes() <= options.max_commit_bytes) {
    bytes += queue.front().writes.bytes();
    group.push_back(std::move(queue.front()));
    queue.pop_front();
  }
}

rocksdb::Status Store::Impl::add_to_batch(WriteSet& writes, rocksdb::WriteBatch& batch) {
  if (writes.ops_.empty()) return rocksdb::Status::OK();
  if (batch_ids_match) {
    // The batch's serialized form, grown by the records of `writes`: a lone request's buffer
    // becomes the batch as it is (in cluster mode it is copied, as the replication of the group
    // may still read it); a group's are appended to the first one's.
    const uint32_t count = batch.Count() + static_cast<uint32_t>(writes.ops_.size());
    std::string rep;
    if (batch.Count() == 0) {
      rep = options.replicator ? writes.buf_ : std::move(writes.buf_);
    } else {
      // WriteBatch has no public way to append serialized records: take its buffer (Data() is
      // a reference to it), append, and make the batch again from the result.
      rep = std::move(const_cast<std::string&>(batch.Data()));
      rep.append(writes.buf_, kBatchHeader, std::string::npos);
    }
    for (size_t i = 0; i < 4; ++i) {
      rep[kBatchCountOffset + i] = static_cast<char>((count >> (8 * i)) & 0xff);
    }
    batch = rocksdb::WriteBatch(std::move(rep));
    return rocksdb::Status::OK();
  }
  rocksdb::Status s;
  const std::string& buf = writes.buf_;
  for (const auto& op : writes.ops_) {
    auto* handle = handles[op.cf];
    rocksdb::Slice a(buf.data() + op.a_off, op.a_len);
    rocksdb::Slice b(buf.data() + op.b_off, op.b_len);
    switch (op.kind) {
      case WriteSet::OpKind::kPut:
        s = batch.Put(handle, a, b);
        break;
      case WriteSet::OpKind::kDelete:
        s = batch.Delete(handle, a);
        break;
      case WriteSet::OpKind::kDeleteRange:
        s = batch.DeleteRange(handle, a, b);
        break;
    }
    if (!s.ok()) break;
  }
  return s;
}

void Store::Impl::write_group(std::vector<Request>& group, rocksdb::WriteBatch& batch) {
  batch.Clear();
  bool sync = false;
  uint64_t bytes = 0;
  rocksdb::Status s;
  // Cluster mode: the group's writes of channels this node leads get their positions here, and
  // their position records join the batch (replica_catalog.h).
  std::vector<ReplicaCatalog::Pending> shipped;
  if (options.replicator) {
    ReplicaCatalog::Group writes;
    for (size_t i = 0; i < group.size(); ++i) {
      const Request& req = group[i];
      catalog.observe(req.writes, i, req.durability, !req.writes.replicated_in_,
                      *options.replicator, writes);
    }
    if (!writes.empty()) {
      WriteSet positions;
      shipped = catalog.assign(writes, positions);
      s = add_to_batch(positions, batch);
    }
  }
  for (auto& req : group) {
    if (!s.ok()) break;
    // A merged write is as durable as its most demanding member.
    sync = sync || req.durability != Durability::kNone;
    bytes += req.writes.bytes();
    s = add_to_batch(req.writes, batch);
  }

  auto started = std::chrono::steady_clock::now();
  if (s.ok() && disk_full && started >= next_resume) try_resume(started);
  Status injected;
  if (s.ok() && options.test_hooks.before_write) injected = options.test_hooks.before_write();
  if (!injected.ok()) {
    s = rocksdb::Status::IOError(injected.error().message);
  } else if (s.ok()) {
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    wo.disableWAL = group.front().unlogged;
    s = db->Write(wo, &batch);
  }
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count();

  if (s.ok()) {
    std::lock_guard lock(stats_mu);
    stats.commits += group.size();
    stats.writes += 1;
    stats.bytes_written += bytes;
    if (sync) {
      stats.syncs += 1;
      stats.sync_micros_total += static_cast<uint64_t>(micros);
    }
    stats.max_requests_per_write = std::max<uint64_t>(stats.max_requests_per_write, group.size());
  }

  Status result;
  if (!s.ok() && is_no_space(s)) {
    if (!disk_full) {
      log::error(
          "storage: the disk of data directory '{}' is full; writes are refused until space is "
          "freed: {}",
          options.path, s.ToString());
      disk_full = true;
      next_resume = started + kResumeInterval;
    }
    std::lock_guard lock(stats_mu);
    stats.disk_full = true;
    stats.disk_full_errors += group.size();
    result = Error(ErrorCode::kResourceExhausted,
                   fmt::format("storage: the disk of data directory '{}' is full (no space left "
                               "on device); the write was not stored; free space there and retry",
                               options.path));
  } else if (!s.ok()) {
    result =
        Error(ErrorCode::kIoError, fmt::format("storage: write failed ({} requests, {} bytes): {}",
                                               group.size(), bytes, s.ToString()));
  } else if (disk_full) {
    space_again();
  }
  if (!shipped.empty()) {
    if (!result.ok()) {
      catalog.rollback(shipped);
    } else {
      catalog.stored(shipped);
      hold_for_replicas(group, shipped);
    }
  }
  for (auto& req : group) {
    if (req.done) req.done(result);
  }
}

// A request that wrote replicated channels is answered once every one of their shipments is held
// by a majority (or with the first error): its callback moves into a hold, and the request's own
// callback slot is left empty.
void Store::Impl::hold_for_replicas(std::vector<Request>& group,
                                    std::vector<ReplicaCatalog::Pending>& shipped) {
  struct Hold {
    std::mutex mu;
    size_t left = 0;
    Status result;
    CommitCallback done;
  };
  std::vector<std::shared_ptr<Hold>> holds(group.size());
  for (const auto& p : shipped) {
    for (size_t i : p.requests) {
      if (!holds[i]) {
        holds[i] = std::make_shared<Hold>();
        holds[i]->done = std::exchange(group[i].done, nullptr);
      }
      ++holds[i]->left;
    }
  }
  auto arrive = [](const std::shared_ptr<Hold>& h, const Status& st) {
    CommitCallback done;
    Status result;
    {
      std::lock_guard lock(h->mu);
      if (!st.ok() && h->result.ok()) h->result = st;
      if (--h->left > 0) return;
      done = std::move(h->done);
      result = h->result;
    }
    if (done) done(result);
  };
  for (auto& p : shipped) {
    std::vector<std::shared_ptr<Hold>> mine;
    for (size_t i : p.requests) mine.push_back(holds[i]);
    if (p.refused) {
      for (auto& h : mine) arrive(h, Error(ErrorCode::kUnavailable, *p.refused));
      continue;
    }
    options.replicator->ship(std::move(p.shipment), [mine = std::move(mine), arrive](Status st) {
      for (const auto& h : mine) arrive(h, st);
    });
  }
}

// Must not run on the commit thread (from a callback): it waits for that thread to finish.
void Store::Impl::close() {
  std::lock_guard close_lock(close_mu);
  if (closed) return;
  {
    std::lock_guard lock(queue_mu);
    accepting = false;
  }
  queue_cv.notify_one();
  commit_thread.join();
  merger->stop();
  close_snapshot_registry(*snapshots);
  // Flushing here makes unlogged writes durable, and means the next open replays no WAL.
  rocksdb::FlushOptions fo;
  fo.wait = true;
  if (auto s = db->Flush(fo, handles); !s.ok()) {
    log::error(
        "storage: data directory '{}': flushing at close failed; writes made without the "
        "write-ahead log (durability none) since the last flush are lost: {}",
        options.path, s.ToString());
  }
  closed = true;
}

// ---- Store -----------------------------------------------------------------------------------

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() { close(); }

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options) {
  if (options.path.empty()) return invalid_argument("storage: path is empty");
  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  // Unused, but RocksDB sizes the free space it waits for before resuming after a full disk by
  // the largest memtable of any column family: keep this one as small as the others.
  rocksdb::ColumnFamilyOptions default_options;
  default_options.write_buffer_size = options.write_buffer_size;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, default_options);
  for (size_t i = 0; i < kColumnFamilyCount; ++i) {
    descriptors.emplace_back(std::string(kColumnFamilyNames[i]),
                             make_cf_options(static_cast<ColumnFamily>(i), options, cache));
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto merger = std::make_shared<SmallFileMerger>();
  rocksdb::DBOptions db_options = make_db_options(options);
  db_options.listeners.push_back(merger);
  auto s = rocksdb::DB::Open(db_options, options.path, descriptors, &handles, &raw);
  if (!s.ok()) return from_rocksdb(s, fmt::format("storage: opening '{}'", options.path));

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->db.reset(raw);
  impl->default_cf = handles[0];
  impl->handles.assign(handles.begin() + 1, handles.end());
  impl->batch_ids_match = true;
  for (size_t i = 0; i < impl->handles.size(); ++i) {
    if (impl->handles[i]->GetID() != batch_cf_id(static_cast<uint8_t>(i))) {
      impl->batch_ids_match = false;
    }
  }
  merger->start(raw, impl->handles);
  impl->merger = std::move(merger);
  impl->commit_thread = std::thread([p = impl.get()] { p->commit_loop(); });
  impl->commit_thread_id = impl->commit_thread.get_id();
  std::unique_ptr<Store> store(new Store(std::move(impl)));
  if (options.replicator) options.replicator->attach(store.get());
  return store;
}

void Store::commit(WriteSet writes, Durability durability, CommitCallback done) {
  commit_request(std::move(writes), {}, durability, std::move(done));
}

void Store::commit_filled(std::function<void(WriteSet&)> fill, Durability durability,
                          CommitCallback done) {
  commit_request({}, std::move(fill), durability, std::move(done));
}

void Store::commit_request(WriteSet writes, std::function<void(WriteSet&)> fill,
                           Durability durability, CommitCallback done) {
  if (impl_->options.test_hooks.before_commit) impl_->options.test_hooks.before_commit();
  {
    std::lock_guard lock(impl_->queue_mu);
    if (impl_->accepting) {
      const bool unlogged =
          writes.unlogged_ && durability == Durability::kNone && !impl_->options.replicator;
      impl_->queue.push_back(
          {std::move(writes), durability, std::move(done), std::move(fill), unlogged});
      // Notified under the lock: cheap here, and it cannot race with close() joining the thread.
      impl_->queue_cv.notify_one();
      return;
    }
  }
  // Refused on the caller's thread, outside the lock, so the callback may call back into us.
  if (done) done(Error(ErrorCode::kUnavailable, "storage: the store is closing"));
}

Status Store::commit_and_wait(WriteSet writes, Durability durability) {
  // From a commit callback this would wait for the very thread that is waiting.
  if (std::this_thread::get_id() == impl_->commit_thread_id) {
    return Error(ErrorCode::kFailedPrecondition,
                 "storage: commit_and_wait called from a commit callback would deadlock; use "
                 "commit() with a callback");
  }
  std::promise<Status> promise;
  auto future = promise.get_future();
  commit(std::move(writes), durability, [&promise](Status s) { promise.set_value(std::move(s)); });
  return future.get();
}

Result<std::vector<StoredMessage>> Store::read(ChannelId ch, Seq from, Seq to, size_t max_count,
                                               size_t max_bytes) {
  std::vector<StoredMessage> out;
  if (from >= to || max_count == 0) return out;
  // The run holding to - 1 is stored under its last seq, which may be `to` or beyond: the scan is
  // bounded by the channel's keys (so it never walks through the range tombstones of a
  // neighbouring channel looking for the next key) and stops at the first message at or past `to`.
  std::string begin = message_key(ch, from);
  ChannelMessages it(*impl_->db, impl_->cf(ColumnFamily::kMessages), ch);
  size_t bytes = 0;
  bool full = false;
  // Seek lands on the run holding `from` (the first whose last seq is >= from), or a later one.
  for (it->Seek(slice(begin)); it->Valid(); it->Next()) {
    auto run = MessageRun::open(view(it->key()), view(it->value()));
    if (!run) return std::move(run).error();
    if (run->first() >= to) break;
    run->skip_to(from);
    while (!run->done() && run->position() < to) {
      auto m = run->next();
      if (!m) return std::move(m).error();
      // The longest prefix within max_bytes, but never an empty batch while messages exist.
      if (!out.empty() && bytes + m->message.data.size() > max_bytes) {
        full = true;
        break;
      }
      bytes += m->message.data.size();
      out.push_back(std::move(m).value());
      if (out.size() == max_count) {
        full = true;
        break;
      }
    }
    if (full || run->position() >= to) break;
  }
  if (!it->status().ok()) {
    return from_rocksdb(it->status(), fmt::format("storage: reading channel {}", ch));
  }
  return out;
}

namespace {

// The first stored message of `ch` at or after `seq`, or nullopt if there is none: the first
// message at or after `seq` of the run that seeking message_key(ch, seq) lands on. `it` must be
// bounded to the channel's keys (log_key_end).
Result<std::optional<StoredMessage>> message_at_or_after(rocksdb::Iterator& it, ChannelId ch,
                                                         Seq seq) {
  it.Seek(slice(message_key(ch, seq)));
  if (!it.Valid()) {
    if (!it.status().ok()) {
      return from_rocksdb(it.status(),
                          fmt::format("storage: reading channel {} at seq {}", ch, seq));
    }
    return std::optional<StoredMessage>();
  }
  auto run = MessageRun::open(view(it.key()), view(it.value()));
  if (!run) return std::move(run).error();
  run->skip_to(seq);
  auto m = run->next();  // the run's last seq is >= seq, so a message is left
  if (!m) return std::move(m).error();
  return std::optional<StoredMessage>(std::move(m).value());
}

}  // namespace

Result<std::optional<StoredMessage>> Store::get(ChannelId ch, Seq seq) {
  ChannelMessages it(*impl_->db, impl_->cf(ColumnFamily::kMessages), ch);
  // A Seek, not a Get: the message may be inside a run stored under a later seq.
  auto m = message_at_or_after(*it, ch, seq);
  if (!m) return std::move(m).error();
  if (m->has_value() && (*m)->seq != seq) return std::optional<StoredMessage>();
  return m;
}

// Binary search over sequence numbers. It assumes publish times are non-decreasing in seq order,
// which holds up to clock adjustments because seqs are assigned in publish order; where the clock
// stepped back the answer may be off by the messages published during the step. Each probe seeks
// to the first stored message at or after the midpoint, so gaps (deleted ranges) are skipped
// rather than mistaken for the end.
Result<Seq> Store::find_seq_by_time(ChannelId ch, Seq from, Seq to, int64_t time_ms) {
  if (from >= to) return to;
  // Bounded by the channel's keys, not `to`: a run holding messages below `to` may be stored
  // under a seq at or past it.
  ChannelMessages it(*impl_->db, impl_->cf(ColumnFamily::kMessages), ch);

  // Reads the first stored message at or after `seq` (below `to`): its seq and publish time, or
  // nullopt if there is none.
  auto probe = [&](Seq seq) -> Result<std::optional<std::pair<Seq, int64_t>>> {
    auto m = message_at_or_after(*it, ch, seq);
    if (!m) return std::move(m).error();
    if (!m->has_value() || (*m)->seq >= to) return std::optional<std::pair<Seq, int64_t>>();
    return std::optional<std::pair<Seq, int64_t>>({(*m)->seq, (*m)->publish_time_ms});
  };

  // Invariant: the answer is the first stored message at or after `lo`, and every stored message
  // below `lo` (within [from, to)) was published before time_ms.
  Seq lo = from, hi = to;
  while (lo < hi) {
    Seq mid = lo + (hi - lo) / 2;
    auto p = probe(mid);
    if (!p) return std::move(p).error();
    if (!*p || (*p)->second >= time_ms) {
      hi = mid;
    } else {
      lo = (*p)->first + 1;
    }
  }
  if (lo >= to) return to;
  auto p = probe(lo);
  if (!p) return std::move(p).error();
  return *p ? (*p)->first : to;
}

uint64_t Store::approximate_bytes(ChannelId ch, Seq from, Seq to) {
  if (from >= to) return 0;
  std::string begin = message_key(ch, from), end = message_key(ch, to);
  // A run holding `from` and messages below it (one a head trim cut) counts only its messages
  // from `from` on, exactly: the estimate of its record would count it whole, so retention by
  // bytes, which measures [first, committed) again after each cut, would cut on through it.
  uint64_t straddling = 0;
  {
    ChannelMessages it(*impl_->db, impl_->cf(ColumnFamily::kMessages), ch);
    it->Seek(slice(begin));
    if (it->Valid()) {
      auto run = MessageRun::open(view(it->key()), view(it->value()));
      if (run && run->first() < from && run->last() < to) {
        run->skip_to(from);
        straddling = run->remaining_bytes();
        begin = message_key(ch, run->last() + 1);
      }
    }
  }
  rocksdb::Range range(slice(begin), slice(end));
  rocksdb::SizeApproximationOptions o;
  o.include_memtables = true;
  o.include_files = true;
  uint64_t size = 0;
  // An estimate for metrics and retention; on failure (none is expected) report nothing stored.
  auto s = impl_->db->GetApproximateSizes(o, impl_->cf(ColumnFamily::kMessages), &range, 1, &size);
  return (s.ok() ? size : 0) + straddling;
}

Result<RecoveredState> Store::recover(const std::string* only_channel) {
  std::map<ChannelId, ChannelRecord> channels;
  std::map<ChannelId, std::pair<std::string, HeadRecord>> heads;  // key kept for errors
  std::map<SubscriptionId, RecoveredState::Subscription> subs;
  std::map<SubscriptionId, std::pair<std::string, CursorRecord>> cursors;
  std::map<ChannelId, ReplicaPosition> positions;

  {
    std::unique_ptr<rocksdb::Iterator> it(
        impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(ColumnFamily::kMeta)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view key = view(it->key()), value = view(it->value());
      auto parsed = parse_meta_key(key);
      char tag = parsed ? parsed->first : '\0';
      switch (tag) {
        case kChannelTag: {
          auto r = decode_channel(key, value);
          if (!r) return std::move(r).error();
          channels.emplace(r->id, std::move(r).value());
          break;
        }
        case kHeadTag: {
          auto r = decode_head(key, value);
          if (!r) return std::move(r).error();
          heads.emplace(parsed->second, std::pair(std::string(key), *r));
          break;
        }
        case kSubscriptionTag: {
          auto r = decode_subscription(key, value);
          if (!r) return std::move(r).error();
          subs[r->id].def = std::move(r).value();
          break;
        }
        case kCursorTag: {
          auto r = decode_cursor(key, value);
          if (!r) return std::move(r).error();
          cursors.emplace(parsed->second, std::pair(std::string(key), *r));
          break;
        }
        case kReplicaPositionTag: {
          auto r = decode_replica_position(key, value);
          if (!r) return std::move(r).error();
          positions.emplace(parsed->second, std::move(r).value());
          break;
        }
        default:
          return Error(
              ErrorCode::kCorruption,
              fmt::format("{}: not a meta key (expected a tag C, S, K, H or P and a 4-byte "
                          "id; {} bytes)",
                          describe_key("meta", key), key.size()));
      }
    }
    if (!it->status().ok()) return from_rocksdb(it->status(), "storage: reading meta");
  }
  if (only_channel == nullptr) {
    for (const auto& [id, p] : positions) impl_->catalog.load_position(id, p);
  }
  if (only_channel != nullptr) {
    // One channel, read while others are written: the records of the others are not read, and
    // nothing is taken for an orphan (a record of a channel being created is not one).
    std::erase_if(channels, [&](const auto& c) { return c.second.name != *only_channel; });
    std::erase_if(heads, [&](const auto& h) { return !channels.contains(h.first); });
    std::erase_if(subs,
                  [&](const auto& sub) { return !channels.contains(sub.second.def.channel); });
    std::erase_if(cursors, [&](const auto& c) { return !subs.contains(c.first); });
  }

  // Records whose owner is gone: a write that named a channel or subscription landed after its
  // deletion (a crash between the two, or a race). Nothing can reach them; they are removed.
  RecoveryOrphans orphans;
  WriteSet cleanup;
  std::vector<std::string> examples;      // the first few keys, for the warning
  std::set<SubscriptionId> removed_subs;  // their records go with them, uncounted
  auto orphan = [&](std::string_view column_family, std::string_view key) {
    if (examples.size() < 3) examples.push_back(describe_key(column_family, key));
  };
  for (auto it = subs.begin(); it != subs.end();) {
    if (channels.contains(it->second.def.channel)) {
      ++it;
      continue;
    }
    ++orphans.subscriptions;
    orphan("meta", meta_key(kSubscriptionTag, it->first));
    cleanup.delete_subscription(it->first);  // with its cursor and delivery records
    cursors.erase(it->first);
    removed_subs.insert(it->first);
    it = subs.erase(it);
  }
  for (const auto& [id, entry] : heads) {
    if (!channels.contains(id)) {
      ++orphans.heads;
      orphan("meta", entry.first);
      cleanup.delete_channel(id);  // with its messages
    }
  }
  for (const auto& [id, entry] : cursors) {
    auto sub = subs.find(id);
    if (sub == subs.end()) {
      ++orphans.cursors;
      orphan("meta", entry.first);
      cleanup.delete_subscription(id);  // with its delivery records
      continue;
    }
    sub->second.cursor = entry.second;
  }

  RecoveredState state;
  state.channels.reserve(channels.size());
  {
    std::unique_ptr<rocksdb::Iterator> it(
        impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(ColumnFamily::kMessages)));
    for (auto& [id, def] : channels) {
      RecoveredState::Channel c;
      c.def = std::move(def);
      auto head = heads.find(id);
      bool have_head = head != heads.end();
      if (have_head) c.head = head->second.second;

      // The last stored message bounds head.next from below: a head record written in an earlier
      // batch than the newest messages (or never written) must not reuse their sequences. The
      // message is decoded, not just located, so a torn tail shows up now rather than on read.
      std::string end = log_key_end(id);
      it->SeekForPrev(slice(end));
      if (it->Valid() && view(it->key()).starts_with(std::string_view(end).substr(0, 4))) {
        // decode_messages also rejects a key of the wrong size. The whole last run is decoded.
        auto last = decode_messages(view(it->key()), view(it->value()));
        if (!last) return std::move(last).error();
        c.head.next = std::max(c.head.next, last->back().seq + 1);
        if (!have_head) {
          it->Seek(slice(message_key(id, 0)));
          if (it->Valid()) {  // else the status check below reports why
            // The first run's first message (open() rejects a key that is not a message key).
            auto first = MessageRun::open(view(it->key()), view(it->value()));
            if (!first) return std::move(first).error();
            c.head.first = first->first();
          }
        }
      }
      if (!it->status().ok()) {
        return from_rocksdb(it->status(), fmt::format("storage: reading channel {}", id));
      }
      state.channels.push_back(std::move(c));
    }
    // Messages of channels that have no record (the head is usually gone with them). One seek
    // per channel id found.
    if (only_channel == nullptr) it->SeekToFirst();
    for (; only_channel == nullptr && it->Valid();) {
      auto key = parse_log_key(view(it->key()));
      if (!key) {
        return Error(ErrorCode::kCorruption,
                     fmt::format("{}: not a message key (expected a 4-byte channel id and an "
                                 "8-byte sequence)",
                                 describe_key("messages", view(it->key()))));
      }
      const ChannelId id = key->first;
      if (!channels.contains(id) && !heads.contains(id)) {
        ++orphans.message_channels;
        orphan("messages", view(it->key()));
        cleanup.delete_channel(id);
      }
      if (id == UINT32_MAX) break;
      it->Seek(slice(message_key(id + 1, 0)));
    }
    if (!it->status().ok()) return from_rocksdb(it->status(), "storage: reading messages");
  }

  {
    std::unique_ptr<rocksdb::Iterator> it(
        impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(ColumnFamily::kDelivery)));
    std::optional<SubscriptionId> last_orphan_sub;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view key = view(it->key());
      auto r = decode_delivery(key, view(it->value()));
      if (!r) return std::move(r).error();
      auto [sub_id, seq] = *parse_log_key(key);  // decode_delivery checked the key's size
      auto sub = subs.find(sub_id);
      if (sub == subs.end()) {
        if (removed_subs.contains(sub_id) || only_channel != nullptr) continue;
        ++orphans.delivery_records;
        orphan("delivery", key);
        // Removed as one range per subscription (records of one subscription are adjacent).
        if (last_orphan_sub != sub_id) cleanup.delete_subscription(sub_id);
        last_orphan_sub = sub_id;
        continue;
      }
      sub->second.deliveries.emplace_back(seq, *r);
    }
    if (!it->status().ok()) return from_rocksdb(it->status(), "storage: reading delivery");
  }

  if (orphans.total() > 0) {
    log::warn(
        "storage: recovery removed records left by an interrupted or raced deletion: {} "
        "subscriptions without a channel, {} cursors and {} delivery records without a "
        "subscription, {} heads and the messages of {} channels without a channel record "
        "(first: {})",
        orphans.subscriptions, orphans.cursors, orphans.delivery_records, orphans.heads,
        orphans.message_channels, fmt::join(examples, ", "));
    auto st = commit_and_wait(std::move(cleanup), Durability::kSync);
    if (!st) {
      return Error(st.error().code, fmt::format("storage: removing records without an owner: {}",
                                                st.error().message));
    }
  }
  if (only_channel == nullptr) {
    std::lock_guard lock(impl_->stats_mu);
    impl_->stats.recovered_orphans = orphans;
  }
  state.orphans = orphans;
  if (only_channel == nullptr) {
    for (const auto& c : state.channels)
      impl_->catalog.load_channel(c.def.id, c.def.name, c.def.config);
  } else {
    // A running store: its catalog follows every write as it is committed, ahead of the
    // position records on disk (a group's record is written with it), so the records read here
    // may be behind. Loading them would move positions back, and the next write of a channel
    // another thread is writing would be shipped under a position already shipped: followers
    // holding that (epoch, position) would count it as held without storing it.
    for (const auto& c : state.channels) {
      auto p = positions.find(c.def.id);
      impl_->catalog.take_up_channel(
          c.def.id, c.def.name, c.def.config,
          p == positions.end() ? std::nullopt : std::optional<ReplicaPosition>(p->second));
    }
  }
  for (const auto& [id, sub] : subs) impl_->catalog.load_subscription(sub.def);
  state.subscriptions.reserve(subs.size());
  for (auto& [id, sub] : subs) state.subscriptions.push_back(std::move(sub));
  return state;
}

Status Store::checkpoint(const std::string& dir) {
  rocksdb::Checkpoint* raw = nullptr;
  auto s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw);
  std::unique_ptr<rocksdb::Checkpoint> cp(raw);
  if (s.ok()) s = cp->CreateCheckpoint(dir);
  if (!s.ok()) return from_rocksdb(s, fmt::format("storage: checkpoint into '{}'", dir));
  return ok_status();
}

void Store::close() { impl_->close(); }

ChannelId Store::allocate_channel_id() { return impl_->catalog.allocate_channel_id(); }

SubscriptionId Store::allocate_subscription_id() {
  return impl_->catalog.allocate_subscription_id();
}

void Store::apply_replicated(const ReplicatedBatch& batch, std::function<void(ApplyOutcome)> done) {
  WriteSet ws;
  ApplyOutcome accepted = impl_->catalog.accept(batch, ws);
  if (accepted.kind != ApplyOutcome::Kind::kApplied) return done(std::move(accepted));
  commit(std::move(ws), batch.durability,
         [this, accepted, channel = batch.channel, done = std::move(done)](Status s) mutable {
           if (s.ok()) {
             impl_->catalog.applied(channel, accepted.position);
             return done(std::move(accepted));
           }
           impl_->catalog.apply_failed(channel, accepted.position);
           accepted.kind = ApplyOutcome::Kind::kFailed;
           accepted.text = fmt::format("replication: channel '{}': position {} not stored: {}",
                                       channel, accepted.position, s.error().message);
           done(std::move(accepted));
         });
}

std::string Store::replica_definitions(const std::string& channel) {
  return impl_->catalog.definitions(channel);
}

ReplicaPosition Store::replica_position(const std::string& channel) {
  return impl_->catalog.position(channel);
}

void Store::apply_snapshot(const SnapshotChunk& chunk, std::function<void(ApplyOutcome)> done) {
  WriteSet ws;
  ApplyOutcome accepted = impl_->catalog.accept_snapshot(chunk, ws);
  if (accepted.kind != ApplyOutcome::Kind::kApplied) return done(std::move(accepted));
  // The chunk's records only (not the bulky SnapshotChunk) are kept for the callback.
  SnapshotChunk header{chunk.channel, chunk.epoch, chunk.position, chunk.index, chunk.last, {}, {}};
  commit(std::move(ws), Durability::kSync,
         [this, accepted, header = std::move(header), done = std::move(done)](Status s) mutable {
           if (s.ok()) {
             impl_->catalog.snapshot_applied(header);
             return done(std::move(accepted));
           }
           impl_->catalog.snapshot_failed(header.channel);
           accepted.kind = ApplyOutcome::Kind::kFailed;
           accepted.text =
               fmt::format("replication: channel '{}': snapshot chunk {} not stored: {}",
                           header.channel, header.index, s.error().message);
           done(std::move(accepted));
         });
}

Result<std::unique_ptr<ChannelSnapshot>> Store::snapshot_channel(const std::string& channel) {
  auto id = impl_->catalog.id_of(channel);
  if (!id) {
    return Error(ErrorCode::kNotFound,
                 fmt::format("storage: snapshot of channel '{}': it has no record here", channel));
  }
  return ChannelSnapshot::open(impl_->db.get(), impl_->handles, impl_->snapshots, *id, channel);
}

std::vector<std::string> Store::replica_catching_up() {
  return impl_->catalog.incomplete_channels();
}

StoreStats Store::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats;
}

}  // namespace witmq::storage
