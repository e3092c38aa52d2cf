#include "broker/timer_queue.h"

#include <algorithm>

namespace witmq::broker {

TimerQueue::TimerQueue() : thread_([this] { run(); }) {}

TimerQueue::~TimerQueue() { stop(); }

void TimerQueue::Heap::drop_cancelled() {
  std::erase_if(c, [](const Entry& e) { return e.cancelled->load(std::memory_order_relaxed); });
  std::make_heap(c.begin(), c.end(), comp);
}

TimerQueue::Handle TimerQueue::schedule(SteadyTime when, UniqueFunction<void()> fn) {
  Handle h;
  h.flag_ = std::make_shared<std::atomic<bool>>(false);
  std::lock_guard lock(mu_);
  if (stopping_) return h;
  if (heap_.size() >= compact_at_) {
    // Timers cancelled long before their deadline (a request answered at once, a receive that
    // got its messages) would otherwise stay until then. Amortized: the next pass is due only
    // once the queue has doubled again.
    heap_.drop_cancelled();
    compact_at_ = std::max(kMinCompactSize, 2 * heap_.size());
  }
  bool earliest = heap_.empty() || when < heap_.top().when;
  heap_.push(Entry{when, order_++, h.flag_, std::move(fn)});
  if (earliest) cv_.notify_one();
  return h;
}

void TimerQueue::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  std::lock_guard lock(mu_);
  while (!heap_.empty()) heap_.pop();
}

size_t TimerQueue::size() {
  std::lock_guard lock(mu_);
  return heap_.size();
}

void TimerQueue::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (heap_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto when = heap_.top().when;
    if (std::chrono::steady_clock::now() < when) {
      cv_.wait_until(lock, when);
      continue;
    }
    // priority_queue::top() is const; the entry is popped right after, so moving out is safe.
    auto fn = std::move(heap_.top().fn);
    auto cancelled = heap_.top().cancelled;
    heap_.pop();
    if (cancelled->load(std::memory_order_relaxed)) continue;
    lock.unlock();
    fn();
    lock.lock();
  }
}

}  // namespace witmq::broker
