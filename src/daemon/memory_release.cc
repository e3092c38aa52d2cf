#include "daemon/memory_release.h"

#include <boost/asio/post.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "common/log.h"
#include "common/memory.h"

namespace witmq::daemon {

MemoryReleaser::MemoryReleaser(boost::asio::io_context& io, unsigned io_threads,
                               std::chrono::milliseconds interval, uint64_t threshold_bytes)
    : io_(io),
      io_threads_(io_threads == 0 ? 1 : io_threads),
      strand_(boost::asio::make_strand(io)),
      timer_(strand_),
      interval_(interval),
      threshold_(threshold_bytes) {}

void MemoryReleaser::start() {
  if (interval_.count() > 0) arm();
}

void MemoryReleaser::stop() {
  stopped_ = true;
  // The timer is touched on its own executor only.
  boost::asio::post(strand_, [this] { timer_.cancel(); });
}

void MemoryReleaser::arm() {
  timer_.expires_after(interval_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    check();
    arm();
  });
}

void MemoryReleaser::check() {
  // A release still under way (its tasks wait for a busy thread) is not started twice.
  if (releasing_.load()) return;
  if (memory_figures().heap_free_bytes <= threshold_) return;
  releasing_ = true;
  struct Round {
    std::mutex mutex;
    std::condition_variable all_ran;
    unsigned ran = 0;
  };
  auto round = std::make_shared<Round>();
  for (unsigned i = 0; i < io_threads_; ++i) {
    boost::asio::post(io_, [this, round] {
      flush_thread_cache();
      std::unique_lock lock(round->mutex);
      if (++round->ran == io_threads_) {
        lock.unlock();
        round->all_ran.notify_all();
        release();
        return;
      }
      // Holding this thread until the others have run makes each task land on its own thread.
      round->all_ran.wait_for(lock, kCacheFlushWait, [&] { return round->ran >= io_threads_; });
    });
  }
}

void MemoryReleaser::release() {
  const MemoryFigures before = memory_figures();
  release_free_memory();
  releases_.fetch_add(1, std::memory_order_relaxed);
  releasing_ = false;
  const MemoryFigures after = memory_figures();
  log::debug("memory: gave back freed memory ({}): {} bytes were free, resident {} -> {} bytes",
             before.allocator, before.heap_free_bytes, before.resident_bytes, after.resident_bytes);
}

}  // namespace witmq::daemon
