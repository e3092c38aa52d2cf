// Keeps the leases of batches that guest handlers are working on alive (DESIGN.md: "While a
// handler runs, the broker keeps its leases alive itself").
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "broker/broker.h"
#include "common/message.h"

namespace witmq::guest {

// One thread that, for every registered batch, calls Broker::extend_lease on each message every
// `interval`, by `extension`. Batches are borrowed: the caller keeps the vector alive and
// unchanged between add() and remove().
class LeaseKeeper {
 public:
  explicit LeaseKeeper(broker::Broker& broker);
  ~LeaseKeeper();  // stops the thread
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // Starts keeping `batch` alive: the first extension happens `interval` from now. Returns a
  // token for remove().
  uint64_t add(const std::vector<Message>* batch, std::chrono::milliseconds extension,
               std::chrono::milliseconds interval);
  // Stops keeping the batch alive. When it returns, no extension of it is in progress.
  void remove(uint64_t token);

 private:
  struct Entry {
    const std::vector<Message>* batch;
    std::chrono::milliseconds extension;
    std::chrono::milliseconds interval;
    std::chrono::steady_clock::time_point due;
  };
  void run();

  broker::Broker& broker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> entries_;
  uint64_t next_token_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace witmq::guest
