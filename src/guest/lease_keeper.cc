#include "guest/lease_keeper.h"

#include <algorithm>

namespace witmq::guest {

LeaseKeeper::LeaseKeeper(broker::Broker& broker) : broker_(broker), thread_([this] { run(); }) {}

LeaseKeeper::~LeaseKeeper() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t LeaseKeeper::add(const std::vector<Message>* batch, std::chrono::milliseconds extension,
                          std::chrono::milliseconds interval) {
  std::lock_guard lock(mu_);
  const uint64_t token = next_token_++;
  entries_[token] = Entry{batch, extension, interval, std::chrono::steady_clock::now() + interval};
  cv_.notify_all();
  return token;
}

void LeaseKeeper::remove(uint64_t token) {
  // run() extends while holding mu_, so once we hold it no extension of this batch is running.
  std::lock_guard lock(mu_);
  entries_.erase(token);
}

void LeaseKeeper::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    auto next = std::chrono::steady_clock::time_point::max();
    for (const auto& [token, e] : entries_) next = std::min(next, e.due);
    if (next == std::chrono::steady_clock::time_point::max()) {
      cv_.wait(lock);
      continue;
    }
    if (cv_.wait_until(lock, next) != std::cv_status::timeout) continue;
    const auto now = std::chrono::steady_clock::now();
    for (auto& [token, e] : entries_) {
      if (e.due > now) continue;
      // Held across the broker calls so that remove() can promise no extension is in progress;
      // only guest workers ever wait for this mutex, never the broker or the network path.
      for (const Message& m : *e.batch) (void)broker_.extend_lease(m, e.extension);
      e.due = now + e.interval;
    }
  }
}

}  // namespace witmq::guest
