// The settings of cluster mode (docs/CLUSTERING.md), set by the daemon's cluster- keys
// (daemon/config.cc). Cluster mode is off when node_id is empty: witmqd is then a single node
// and never talks to etcd.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace witmq::cluster {

struct ClusterOptions {
  // This node's name in the cluster (cluster-node-id); "" = cluster mode off.
  std::string node_id;
  // The cluster's name (cluster-name): every key witmq writes in etcd starts with
  // /witmq/<name>/, so that clusters can share one etcd.
  std::string name = "witmq";
  // etcd's client endpoints, HOST:PORT (cluster-etcd-endpoints).
  std::vector<std::string> etcd_endpoints = {"127.0.0.1:2379"};
  // One etcd request's bound on one endpoint (cluster-etcd-timeout-ms).
  std::chrono::milliseconds etcd_timeout{1'000};
  // The TTL of the node's etcd lease (cluster-lease-ttl-seconds): how long a node that stopped
  // answering keeps its registration and its leaderships.
  int64_t lease_ttl_seconds = 5;
  // Where peers will reach this node for replication (cluster-peer-listen,
  // cluster-advertise-peer); recorded in the registration.
  std::string peer_listen;
  std::string advertise_peer;
  // The file holding the cluster's shared secret (cluster-peer-token-file), read at start into
  // peer_token; a peer whose hello does not carry it is refused.
  std::string peer_token_file;
  // Largest frame body the peer listener accepts (cluster-peer-max-frame-bytes).
  uint32_t peer_max_frame_bytes = 16 * 1024 * 1024;
  // The protocol address clients are sent to (cluster-advertise-client); "" = the address the
  // protocol listener bound, filled in by the daemon.
  std::string advertise_client;
  // The cluster's shared secret (cluster-peer-token, or read from cluster-peer-token-file): what
  // a node proves on its peer links and when it forwards a client's requests to another node.
  std::string peer_token;
  // How long a forwarded operation waits for a leader and for the connection to it
  // (cluster-forward-timeout-ms).
  std::chrono::milliseconds forward_timeout{5'000};
  // How long a write of a replicated channel waits for a majority of its replicas
  // (cluster-replication-timeout-ms).
  std::chrono::milliseconds replication_timeout{5'000};
  // Bytes of shipped frames a leader keeps per channel to resend (cluster-replication-retained-
  // bytes); a follower further behind is sent a snapshot.
  uint64_t replication_retained_bytes = 32 << 20;
  // How long a follower in a channel's in-sync set may leave a shipped write unacknowledged
  // before the leader takes it out of the set (cluster-in-sync-timeout-ms; 0: half of
  // replication_timeout).
  std::chrono::milliseconds in_sync_timeout{0};
  // witmqd's version, recorded in the registration.
  std::string version;
  // "<host name>:<absolute data directory>", recorded in the registration: a registration with
  // the same instance belongs to an earlier run of this very node (two live processes cannot
  // share a data directory), whose lease may be revoked at start instead of refusing to start.
  std::string instance;

  bool enabled() const { return !node_id.empty(); }
  // "/witmq/<name>/"
  std::string key_prefix() const { return "/witmq/" + name + "/"; }
};

}  // namespace witmq::cluster
