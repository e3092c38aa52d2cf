// The cluster's forwarding (docs/CLUSTERING.md, "Forwarding"): net::Forwarder for a witmqd in
// cluster mode. It asks the cluster node who leads a channel and relays a connection's requests
// to that node over the client protocol (client/async_client.h), one connection per client
// connection and leader, opened on first use.
//
// Why one connection per client connection (and not one shared by all clients): the broker keeps
// a client's subscriptions, positions and leases by its connection and its connect name. A
// forwarded connection carries the client's name and identity, so the leader serves it exactly
// as it would serve the client, and when the client leaves, closing it gives back what it held.
//
// Threading: locate() and link() may be called from any thread. A link's replies run on the
// executor's threads (the connection's strand).
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cluster/node.h"
#include "net/forward.h"

namespace witmq::forward {

struct ForwarderOptions {
  // The cluster's secret (cluster-peer-token), proved in every forwarded connect.
  std::string peer_token;
  // The bound on a relayed operation (cluster-forward-timeout-ms): waiting for a channel's leader
  // to be known (a new channel is placed first), connecting to it, and its answer; a waiting
  // receive is kept alive by pings answered within it instead.
  std::chrono::milliseconds timeout{5'000};
  // The replicas of a channel placed because a client used it here first (the server's default
  // channel setting).
  uint32_t default_replicas = 3;
};

class Forwarder : public net::Forwarder {
 public:
  Forwarder(boost::asio::any_io_executor executor, ForwarderOptions options);

  // The node, once it has joined; until then every locate() fails with kUnavailable. The node
  // must outlive the forwarder's use, or be detached (nullptr) first.
  void attach(cluster::Node* node) { node_.store(node); }

  void locate(const std::string& channel, net::Locate mode, Located done) override;
  bool leads(const std::string& channel) override;
  std::optional<net::ForwardTarget> inbox_node(std::string_view reply_to) override;
  std::shared_ptr<net::ForwardLink> link(const net::ForwardTarget& target,
                                         const std::string& client_name,
                                         const std::string& identity) override;
  std::chrono::milliseconds timeout() const override { return options_.timeout; }

  // For /metrics: relayed operations by frame name (those relayed at least once), and errors.
  std::vector<std::pair<std::string, uint64_t>> forwarded() const;
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }

  // Called by links.
  void count(net::FrameType op);
  void count_error() { errors_.fetch_add(1, std::memory_order_relaxed); }

 private:
  boost::asio::any_io_executor executor_;
  const ForwarderOptions options_;
  std::atomic<cluster::Node*> node_{nullptr};
  std::array<std::atomic<uint64_t>, 256> forwarded_{};
  std::atomic<uint64_t> errors_{0};
};

}  // namespace witmq::forward
