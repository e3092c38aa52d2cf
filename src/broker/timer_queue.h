// TimerQueue: one thread that runs callbacks at their deadlines (leases, backoff, wait timeouts,
// retention). A waiting thread sleeps on a condition variable until the earliest deadline or a new
// earlier one — nothing polls.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "common/unique_function.h"

namespace witmq::broker {

using SteadyTime = std::chrono::steady_clock::time_point;

class TimerQueue {
 public:
  // Cancels the timer it was returned for; the callback then never runs. Destroying the handle
  // does not cancel.
  class Handle {
   public:
    Handle() = default;
    void cancel() {
      if (flag_) flag_->store(true, std::memory_order_relaxed);
    }

   private:
    friend class TimerQueue;
    std::shared_ptr<std::atomic<bool>> flag_;
  };

  TimerQueue();
  ~TimerQueue();  // stop()

  // Runs `fn` on the timer thread at `when` (or soon after). Callbacks must be short.
  Handle schedule(SteadyTime when, UniqueFunction<void()> fn);
  // Stops the thread; callbacks not yet run are dropped. Idempotent.
  void stop();
  // Callbacks scheduled and not yet run, cancelled ones included (they leave when due, or when
  // the queue has doubled since it last dropped them: cancelled timers never outnumber the
  // live ones by much, however far away their deadlines).
  size_t size();

 private:
  struct Entry {
    SteadyTime when;
    uint64_t order;  // FIFO among equal deadlines
    std::shared_ptr<std::atomic<bool>> cancelled;
    mutable UniqueFunction<void()> fn;
    bool operator>(const Entry& o) const {
      return when != o.when ? when > o.when : order > o.order;
    }
  };
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  struct Heap : std::priority_queue<Entry, std::vector<Entry>, std::greater<>> {
    // Removes the cancelled entries.
    void drop_cancelled();
  };
  Heap heap_;
  // heap_'s size at which schedule() next drops the cancelled entries.
  size_t compact_at_ = kMinCompactSize;
  static constexpr size_t kMinCompactSize = 1024;
  uint64_t order_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace witmq::broker
