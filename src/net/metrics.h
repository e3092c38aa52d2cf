// The Prometheus text exposition format 0.0.4 for GET /metrics: a snapshot of the broker's,
// the listeners' and the guests' figures, rendered as metric families with HELP and TYPE lines.
// A pure function of the snapshot, so it is tested without a server. docs/HTTP.md lists every
// metric.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/broker.h"
#include "common/memory.h"
#include "net/server.h"
#include "storage/store.h"

namespace witmq::net {

// One running guest's figures, handed to the network layer by the daemon (net/ does not know
// guest/).
struct GuestFigures {
  std::string name;
  uint32_t instances_running = 0;
  uint64_t batches = 0;           // handler invocations
  uint64_t messages_handled = 0;  // messages passed to the handler
  uint64_t handler_errors = 0;    // handler returned err
  uint64_t traps = 0;
  uint64_t budget_exhaustions = 0;
  uint64_t memory_limit_hits = 0;
  uint64_t handler_time_ns = 0;       // wall time inside the handler
  uint64_t output_lines = 0;          // stdout / stderr lines logged
  uint64_t output_lines_dropped = 0;  // lines over the rate limit
  uint64_t output_bytes_dropped = 0;  // bytes dropped or cut
};

// One listener's connection and traffic counters ("tcp" for the protocol, "http").
struct ListenerFigures {
  std::string listener;
  uint64_t connections_open = 0;
  uint64_t connections_total = 0;
  uint64_t connections_refused = 0;
  uint64_t requests = 0;
  uint64_t bad_requests = 0;  // malformed frames (tcp), 4xx answers (http)
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

// A cluster node's figures (docs/CLUSTERING.md), from the daemon.
struct ClusterFigures {
  bool member = false;            // registered with a live etcd lease now
  uint64_t nodes_alive = 0;       // nodes registered in etcd, this one included
  uint64_t leases_held = 0;       // etcd leases this node holds (0 or 1)
  uint64_t channels_led = 0;      // channels this node leads now
  uint64_t leader_changes = 0;    // changes of a channel's leader this node observed
  uint64_t leaderships_lost = 0;  // leaderships this node held and lost
  uint64_t lease_losses = 0;      // times this node lost its etcd lease
  uint64_t etcd_errors = 0;       // etcd requests that failed on an endpoint
  uint64_t peer_links_up = 0;     // links this node dialed to other nodes that are up now
  uint64_t peer_connections = 0;  // connections open on this node's peer listener now
  uint64_t peers_refused = 0;     // connections the peer listener refused
  uint64_t handovers = 0;         // leaderships handed back to a returning preferred leader
  // Operations relayed to the channel's leader, by operation (frame name), and those that could
  // not be (no leader in time, the leader unreachable, the link lost).
  std::vector<std::pair<std::string, uint64_t>> forwarded;
  uint64_t forward_errors = 0;
  uint64_t snapshots_sent = 0;      // channel snapshots a follower stored whole (as leader)
  uint64_t snapshots_received = 0;  // channel snapshots this node stored whole (as follower)
  // Per replicated channel this node leads: replicas in its in-sync set (this node included).
  std::vector<std::pair<std::string, uint64_t>> in_sync_replicas;
};

struct MetricsSnapshot {
  std::string version;
  double uptime_seconds = 0;
  std::vector<broker::ChannelStats> channels;
  storage::StoreStats store;
  std::vector<ListenerFigures> listeners;
  uint64_t messages_in = 0;   // messages received in protocol sends
  uint64_t messages_out = 0;  // messages the protocol server delivered
  // The protocol connections by state and their buffers.
  ConnectionFootprint connections;
  // The HTTP side's request bodies: bytes set aside now, requests refused for want of room.
  uint64_t http_body_bytes = 0;
  uint64_t http_bodies_refused = 0;
  broker::BrokerTables broker_tables;
  MemoryFigures memory;
  uint64_t memory_releases = 0;
  std::vector<GuestFigures> guests;
  uint64_t guests_refused = 0;
  // Authentication (docs/SECURITY.md): protocol connections open per identity, and the
  // authenticator's refusal counters.
  std::vector<std::pair<std::string, uint32_t>> identity_connections;
  uint64_t auth_refused = 0;
  uint64_t auth_denied = 0;
  // Cluster mode only: no witmq_cluster_ series without it.
  std::optional<ClusterFigures> cluster;
  // Channels that get per-channel and per-subscription series (the first by name); the rest are
  // counted in witmq_metrics_channels_omitted.
  size_t max_channel_series = SIZE_MAX;
};

// The exposition text: families in a fixed order, samples of a family sorted by their labels.
std::string render_metrics(const MetricsSnapshot& snapshot);

// A label value escaped for the exposition format: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);

}  // namespace witmq::net
