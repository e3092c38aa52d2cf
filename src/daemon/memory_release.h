// Gives the memory the allocator keeps freed back to the kernel when there is much of it: after
// a burst of connections or of traffic has ended, the freed buffers, sessions and messages stay
// resident in the allocator's arenas for reuse, and an idle daemon would keep them for good.
// Every memory-release-interval-ms the figures of common/memory.h are read (one walk of the
// arenas); above memory-release-threshold-bytes the free memory is released. The check runs on
// a timer of the I/O context: it takes at most milliseconds.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>

namespace witmq::daemon {

class MemoryReleaser {
 public:
  // Nothing happens until start(); an interval of 0 never checks.
  MemoryReleaser(boost::asio::any_io_executor executor, std::chrono::milliseconds interval,
                 uint64_t threshold_bytes);

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

  boost::asio::steady_timer timer_;
  const std::chrono::milliseconds interval_;
  const uint64_t threshold_;
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> releases_{0};
};

}  // namespace witmq::daemon
