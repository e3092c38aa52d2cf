// A TCP fault proxy for the cluster tests: it listens on 127.0.0.1 (a free port) and forwards
// every connection to a target port, until told to break the link. Put one between a node and
// etcd, between nodes, or between clients and a node, and a partition needs no privileges and no
// network namespace.
//
//   forward:   bytes flow both ways (the default, and what heal() returns to).
//   drop:      every connection is reset at once, and new ones are accepted and reset: the peer
//              sees "connection reset" (like a crashed host that answers with RST).
//   blackhole: nothing is forwarded and nothing is closed; new connections are accepted and
//              left waiting: the peer sees silence until its own timeout (like a cable pulled).
//              heal() lets what waited through, as TCP would after a short outage.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

namespace witmq::cluster::testing {

class FaultProxy {
 public:
  enum class Mode { kForward, kDrop, kBlackhole };

  // Listens at once; forwards to 127.0.0.1:target_port (settable later, for a restarted target).
  explicit FaultProxy(uint16_t target_port);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  uint16_t port() const { return port_; }
  void set_target(uint16_t target_port);
  void set_mode(Mode mode);
  void drop() { set_mode(Mode::kDrop); }
  void blackhole() { set_mode(Mode::kBlackhole); }
  void heal() { set_mode(Mode::kForward); }
  Mode mode() const { return mode_.load(); }
  // Connections accepted so far.
  uint64_t accepted() const { return accepted_.load(); }

 private:
  struct Loop;
  void wake();

  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};
  std::atomic<uint16_t> target_port_;
  std::atomic<Mode> mode_{Mode::kForward};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace witmq::cluster::testing
