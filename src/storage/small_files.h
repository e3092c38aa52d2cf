// Keeps column families from collecting small table files for good. Delivery records arrive in
// key order and are deleted from the front, so each flush of that column family writes a small
// file whose keys overlap no other's: RocksDB moves such files down whole (trivial moves) and
// never merges files in the last level, so every flush left one more file, with its descriptor and
// table reader, for the life of the data directory (one every few seconds under load). A
// SmallFileMerger is told of every flush (as a RocksDB event listener) and, on a thread of its
// own, compacts a column family into one file once it holds more than kMaxFiles files that
// together are smaller than kMaxBytes: a compaction of a few megabytes at most, which also drops
// the records its range deletes cover.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/listener.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace witmq::storage {

class SmallFileMerger : public rocksdb::EventListener {
 public:
  static constexpr size_t kMaxFiles = 16;
  static constexpr uint64_t kMaxBytes = 64 << 20;

  SmallFileMerger() = default;
  ~SmallFileMerger() override;  // stop()

  // Starts watching `handles` of `db` (which must outlive stop()).
  void start(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles);
  // Waits for a compaction under way and stops the thread. Idempotent.
  void stop();

  void OnFlushCompleted(rocksdb::DB* db, const rocksdb::FlushJobInfo& info) override;

  // Compactions this merger ran (for tests).
  uint64_t merges() const;

 private:
  void run();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool due_ = false;
  bool stopping_ = false;
  uint64_t merges_ = 0;
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::thread thread_;
};

}  // namespace witmq::storage
