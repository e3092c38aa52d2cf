// The workload the cluster scenarios and tools/chaos.sh run: producers and completing consumers,
// each op recorded in a history (history.h). Where each op goes is the router's choice: today
// the node that claims to lead the channel (LeaderObserver, reading every node's /v1/cluster);
// once nodes forward, any node of a server list.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/history.h"

namespace witmq::cluster::testing {

// Where to send an op on a channel: a node, its protocol address, and the leader epoch that node
// claimed for the channel (0: unknown).
struct Target {
  std::string node;
  uint16_t port = 0;  // on 127.0.0.1
  uint64_t epoch = 0;
};

// Polls every node's GET /v1/cluster (bounded: a stopped node does not stall it) every
// `period`, and routes each channel to the node that claims to lead it in the highest epoch.
// When no node claims a channel (etcd down), it routes to the last node that did, with epoch 0:
// load goes on, outside the epoch rule.
class LeaderObserver {
 public:
  explicit LeaderObserver(std::chrono::milliseconds period = std::chrono::milliseconds(100));
  ~LeaderObserver();
  LeaderObserver(const LeaderObserver&) = delete;
  LeaderObserver& operator=(const LeaderObserver&) = delete;

  // Adds a node or changes its HTTP port (after a restart); forget() stops polling it.
  void set_node(const std::string& id, uint16_t http_port);
  void forget(const std::string& id);

  std::optional<Target> route(const std::string& channel) const;
  // The epoch `node` claimed for `channel` in its last answer (0: none).
  uint64_t epoch_of(const std::string& node, const std::string& channel) const;
  // The same, only from an answer received within `max_age` (0: none, or too old: a stopped
  // node's last answer ages).
  uint64_t fresh_epoch_of(const std::string& node, const std::string& channel,
                          std::chrono::milliseconds max_age) const;
  // The protocol port `node` advertised in its last answer (0: none yet).
  uint16_t port_of(const std::string& node) const;
  // A node's last /v1/cluster answer (null before the first).
  nlohmann::json view(const std::string& node) const;
  // Polls every node once, now (a test that changed something and wants to see it).
  void poll_now();

 private:
  struct NodeState {
    uint16_t http_port = 0;
    uint16_t client_port = 0;
    std::map<std::string, uint64_t> leads;  // channel -> epoch
    nlohmann::json view;
    std::chrono::steady_clock::time_point seen{};  // when that answer came
  };
  void poll_once();

  const std::chrono::milliseconds period_;
  mutable std::mutex mu_;
  std::map<std::string, NodeState> nodes_;
  mutable std::map<std::string, Target> last_route_;
  std::mutex poll_mu_;  // one poll at a time
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// GET `target` from 127.0.0.1:port with a bound on the whole exchange; the body, or nullopt.
std::optional<std::string> bounded_http_get(uint16_t port, const std::string& target,
                                            std::chrono::milliseconds bound);

struct WorkloadOptions {
  std::vector<std::string> channels;
  int producers = 3;
  int consumers = 3;
  int max_batch = 4;  // messages per send: 1..max_batch
  // The lease the consumers ask for (extension lease-ms): a delivery not completed comes back
  // after it.
  uint32_t lease_ms = 2000;
  // Deliveries a consumer leaves unsettled on purpose, in percent (they come back after the
  // lease: redeliveries are part of every run).
  int skip_complete_percent = 3;
  // A reply that does not come in this long is an unknown outcome (the connection is dropped).
  std::chrono::milliseconds request_timeout{3000};
  std::chrono::milliseconds pause_between_ops{2};
  uint32_t seed = 1;
  std::function<std::optional<Target>(const std::string& channel)> route;
  // The epoch `node` claims for `channel` now (0: unknown), for settles.
  std::function<uint64_t(const std::string& node, const std::string& channel)> epoch_of;
};

class Workload {
 public:
  Workload(WorkloadOptions options, history::Recorder& recorder);
  ~Workload();
  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  void start();
  // Stops producers and consumers; their connections close (held messages come back).
  void stop();
  // Reads every channel empty through the router (the channels at once), completing what it
  // gets, until each channel has given nothing for lease_ms + 1 s; false when nothing was
  // received or settled for `limit`, or after five times `limit` in all.
  bool drain(std::chrono::milliseconds limit);

  uint64_t sends_ok() const { return sends_ok_.load(); }
  uint64_t completes_ok() const { return completes_ok_.load(); }

 private:
  class Session;
  void produce(int index);
  void consume(int index);
  bool drain_channel(const std::string& channel, std::atomic<int64_t>& progress_ns,
                     const std::function<bool()>& stalled);

  const WorkloadOptions options_;
  history::Recorder& recorder_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> sends_ok_{0}, completes_ok_{0};
  std::vector<std::thread> threads_;
};

}  // namespace witmq::cluster::testing
