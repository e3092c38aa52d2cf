#include "daemon/memory_release.h"

#include <boost/asio/post.hpp>

#include "common/log.h"
#include "common/memory.h"

namespace witmq::daemon {

MemoryReleaser::MemoryReleaser(boost::asio::any_io_executor executor,
                               std::chrono::milliseconds interval, uint64_t threshold_bytes)
    : timer_(std::move(executor)), interval_(interval), threshold_(threshold_bytes) {}

void MemoryReleaser::start() {
  if (interval_.count() > 0) arm();
}

void MemoryReleaser::stop() {
  stopped_ = true;
  // The timer is touched on its own executor only.
  boost::asio::post(timer_.get_executor(), [this] { timer_.cancel(); });
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
  const MemoryFigures before = memory_figures();
  if (before.heap_free_bytes <= threshold_) return;
  release_free_memory();
  releases_.fetch_add(1, std::memory_order_relaxed);
  const MemoryFigures after = memory_figures();
  log::debug("memory: gave back freed memory ({}): {} bytes were free, resident {} -> {} bytes",
             before.allocator, before.heap_free_bytes, before.resident_bytes, after.resident_bytes);
}

}  // namespace witmq::daemon
