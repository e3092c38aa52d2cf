// Gives the memory the allocator keeps freed back to the kernel when there is much of it: after
// a burst of connections or of traffic has ended, the freed buffers, sessions and messages stay
// resident in the allocator's arenas for reuse, and an idle daemon would keep them for good.
// Every memory-release-interval-ms the figures of common/memory.h are read (one walk of the
// arenas); above memory-release-threshold-bytes the free memory is released. The check runs on
// a timer of the I/O context: it takes at most milliseconds.
//
// Before the release, every I/O thread empties its allocator cache (jemalloc's tcache: objects a
// thread freed and keeps for its next allocations, which only that thread can return): one task
// per I/O thread is posted, each empties its own thread's cache and waits, at most
// kCacheFlushWait, until all have run, so that the tasks land on distinct threads; the last one
// to run releases.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <cstdint>

namespace witmq::daemon {

class MemoryReleaser {
 public:
  // How long an I/O thread that emptied its cache waits for the others before it goes on.
  static constexpr std::chrono::milliseconds kCacheFlushWait{100};

  // Nothing happens until start(); an interval of 0 never checks. `io_threads` is the number of
  // threads that run `io`.
  MemoryReleaser(boost::asio::io_context& io, unsigned io_threads,
                 std::chrono::milliseconds interval, uint64_t threshold_bytes);

  MemoryReleaser(const MemoryReleaser&) = delete;
  MemoryReleaser& operator=(const MemoryReleaser&) = delete;

  void start();
  // No check starts after this returns. Call before the I/O context stops.
  void stop();

  // Times the free memory was given back (witmq_memory_releases_total).
  uint64_t releases() const { return releases_.load(std::memory_order_relaxed); }

 private:
  void arm();
  void check();
  void release();

  boost::asio::io_context& io_;
  const unsigned io_threads_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer timer_;
  const std::chrono::milliseconds interval_;
  const uint64_t threshold_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> releasing_{false};
  std::atomic<uint64_t> releases_{0};
};

}  // namespace witmq::daemon
