// A cluster for the scenarios and the chaos run: one real etcd and N real witmqd, each node
// reached through fault proxies (fault_proxy.h) for all its links: node -> etcd, clients -> node
// (the node advertises its proxy as its client address, so the workload goes through it), and
// peers -> node (cluster-advertise-peer). Faults: SIGKILL, SIGSTOP/SIGCONT, SIGTERM, restart on
// the same or an empty data directory, etcd stopped and started, links dropped, blackholed and
// healed. A LeaderObserver watches every node's /v1/cluster for routing and epochs.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_process.h"
#include "cluster/fault_proxy.h"
#include "cluster/workload.h"
#include "daemon/daemon_process.h"
#include "daemon/http_client.h"

namespace witmq::cluster::testing {

class ClusterUnderTest {
 public:
  // Lease TTL 2 s, as in cluster_test.cc: failovers in a few seconds.
  static constexpr int kTtlSeconds = 2;

  explicit ClusterUnderTest(int nodes)
      : secret_dir_(daemon::testing::make_temp_dir("peer-secret")),
        etcd_(std::make_unique<Etcd>()) {
    // The peer listener needs the cluster's shared secret (cluster-peer-token-file).
    std::ofstream(secret_dir_ + "/peer-token") << "test-cluster-secret-0123456789abcdef\n";
    for (int i = 1; i <= nodes; ++i) {
      const std::string id = "n" + std::to_string(i);
      Links& l = links_[id];
      l.etcd = std::make_unique<FaultProxy>(etcd_->client_port());
      l.client = std::make_unique<FaultProxy>(0);
      l.peer_port = free_port();
      l.peer = std::make_unique<FaultProxy>(l.peer_port);
      nodes_[id] = std::make_unique<daemon::testing::Daemon>(args(id));
      if (nodes_[id]->port() == 0) return;
      l.client->set_target(nodes_[id]->port());
      observer_.set_node(id, nodes_[id]->http_port());
    }
  }
  ~ClusterUnderTest() {
    for (auto& [id, d] : nodes_) {
      if (stopped_[id]) d->signal(SIGCONT);
    }
    for (auto& [id, d] : nodes_) keep_log(id);
    nodes_.clear();
    std::filesystem::remove_all(secret_dir_);
  }

  std::vector<std::string> ids() const {
    std::vector<std::string> out;
    for (const auto& [id, d] : nodes_) out.push_back(id);
    return out;
  }
  daemon::testing::Daemon& node(const std::string& id) { return *nodes_.at(id); }
  Etcd& etcd() { return *etcd_; }
  LeaderObserver& observer() { return observer_; }
  FaultProxy& etcd_link(const std::string& id) { return *links_.at(id).etcd; }
  FaultProxy& client_link(const std::string& id) { return *links_.at(id).client; }
  FaultProxy& peer_link(const std::string& id) { return *links_.at(id).peer; }

  // Declares channels on every node (each holds the channel with the same settings, whichever
  // leads it), by default with no max-deliveries: a message the faults made fail many deliveries
  // must not move to the dead-letter channel, where the drain would not find it.
  void declare(const std::vector<std::string>& names,
               const std::string& settings = R"({"max-deliveries": 0})") {
    for (const auto& [id, d] : nodes_) {
      for (const auto& name : names) {
        auto r =
            daemon::testing::http_request(d->http_port(), "PUT", "/v1/channels/" + name, settings);
        ASSERT_TRUE(r.status == 201u || r.status == 200u) << id << ": " << r;
      }
    }
  }

  // Waits until some node claims to lead each channel; false after `timeout`.
  bool wait_for_leaders(const std::vector<std::string>& names,
                        std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    return wait(
        [&] {
          for (const auto& n : names) {
            bool led = false;
            for (const auto& id : ids()) led = led || observer_.epoch_of(id, n) != 0;
            if (!led) return false;
          }
          return true;
        },
        timeout);
  }

  // The node that claims to lead `channel` ("" if none).
  std::string leader_of(const std::string& channel) {
    observer_.poll_now();
    auto t = observer_.route(channel);
    return t && t->epoch != 0 ? t->node : std::string();
  }

  void kill(const std::string& id) {
    nodes_.at(id)->stop(SIGKILL);
    keep_log(id);
  }
  void terminate(const std::string& id) {
    nodes_.at(id)->stop(SIGTERM);
    keep_log(id);
  }
  // With $WITMQ_CLUSTER_LOGS naming a directory, appends the node's log (of the run that just
  // ended, or of the one still running) to <dir>/<id>.log: what a failed scenario is read from.
  void keep_log(const std::string& id) {
    const char* dir = std::getenv("WITMQ_CLUSTER_LOGS");
    if (dir == nullptr || *dir == 0) return;
    std::ofstream(std::string(dir) + "/" + id + ".log", std::ios::app)
        << nodes_.at(id)->log() << "---- end of run\n";
  }
  void pause(const std::string& id) {
    stopped_[id] = true;
    nodes_.at(id)->signal(SIGSTOP);
  }
  void resume(const std::string& id) {
    nodes_.at(id)->signal(SIGCONT);
    stopped_[id] = false;
  }
  // Starts a killed or terminated node again, on its data directory or on an emptied one (the
  // same path: a node that lost its disk and was given a new one).
  void restart(const std::string& id, bool empty = false) {
    auto& d = *nodes_.at(id);
    if (empty) {
      std::filesystem::remove_all(d.data_dir());
      std::filesystem::create_directories(d.data_dir());
    }
    d.start();
    links_.at(id).client->set_target(d.port());
    observer_.set_node(id, d.http_port());
  }

  // Cuts a node off from etcd, its clients and its peers (inbound); heal() undoes it.
  void partition(const std::string& id) {
    etcd_link(id).blackhole();
    client_link(id).blackhole();
    peer_link(id).blackhole();
  }
  void heal(const std::string& id) {
    etcd_link(id).heal();
    client_link(id).heal();
    peer_link(id).heal();
  }

  // A workload routed by the observer, over `channels`.
  WorkloadOptions workload_options(const std::vector<std::string>& channels) {
    WorkloadOptions o;
    o.channels = channels;
    o.route = [this](const std::string& c) { return observer_.route(c); };
    o.epoch_of = [this](const std::string& n, const std::string& c) {
      return observer_.epoch_of(n, c);
    };
    return o;
  }

  static bool wait(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  }

 private:
  struct Links {
    std::unique_ptr<FaultProxy> etcd, client, peer;
    uint16_t peer_port = 0;
  };

  std::vector<std::string> args(const std::string& id) {
    const Links& l = links_.at(id);
    return {
        "--set", "cluster-node-id=" + id,
        "--set", "cluster-name=test",
        "--set", "cluster-etcd-endpoints=[\"127.0.0.1:" + std::to_string(l.etcd->port()) + "\"]",
        "--set", "cluster-lease-ttl-seconds=" + std::to_string(kTtlSeconds),
        "--set", "cluster-etcd-timeout-ms=500",
        "--set", "cluster-advertise-client=127.0.0.1:" + std::to_string(l.client->port()),
        "--set", "cluster-peer-listen=127.0.0.1:" + std::to_string(l.peer_port),
        "--set", "cluster-advertise-peer=127.0.0.1:" + std::to_string(l.peer->port()),
        "--set", "cluster-peer-token-file=" + secret_dir_ + "/peer-token"};
  }

  std::string secret_dir_;
  std::unique_ptr<Etcd> etcd_;
  std::map<std::string, Links> links_;
  std::map<std::string, std::unique_ptr<daemon::testing::Daemon>> nodes_;
  std::map<std::string, bool> stopped_;
  LeaderObserver observer_;
};

}  // namespace witmq::cluster::testing
