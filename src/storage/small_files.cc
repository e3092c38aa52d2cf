#include "storage/small_files.h"

#include <pthread.h>

#include "common/log.h"

namespace witmq::storage {

SmallFileMerger::~SmallFileMerger() { stop(); }

void SmallFileMerger::start(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles) {
  std::lock_guard lock(mu_);
  db_ = db;
  handles_ = std::move(handles);
  thread_ = std::thread([this] { run(); });
}

void SmallFileMerger::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void SmallFileMerger::OnFlushCompleted(rocksdb::DB*, const rocksdb::FlushJobInfo&) {
  {
    std::lock_guard lock(mu_);
    due_ = true;
  }
  cv_.notify_one();
}

uint64_t SmallFileMerger::merges() const {
  std::lock_guard lock(mu_);
  return merges_;
}

void SmallFileMerger::run() {
  pthread_setname_np(pthread_self(), "witmq-merge");
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return due_ || stopping_; });
    if (stopping_) return;
    due_ = false;
    const auto handles = handles_;
    lock.unlock();
    for (auto* handle : handles) {
      rocksdb::ColumnFamilyMetaData meta;
      db_->GetColumnFamilyMetaData(handle, &meta);
      if (meta.file_count <= kMaxFiles || meta.size >= kMaxBytes) continue;
      rocksdb::CompactRangeOptions options;
      // Into one file in the last level, even when the files are already there.
      options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
      options.exclusive_manual_compaction = false;
      auto s = db_->CompactRange(options, handle, nullptr, nullptr);
      if (!s.ok()) {
        log::warn("storage: merging the {} small files of column family {}: {}", meta.file_count,
                  meta.name, s.ToString());
      } else {
        log::debug("storage: merged the {} small files ({} bytes) of column family {}",
                   meta.file_count, meta.size, meta.name);
      }
      std::lock_guard count(mu_);
      ++merges_;
    }
    lock.lock();
  }
}

}  // namespace witmq::storage
