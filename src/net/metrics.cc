#include "net/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

namespace witmq::net {

namespace {

// Integers print as integers; other values with enough digits to round-trip.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

// Writes one family at a time: HELP, TYPE, then its samples.
class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = name;
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(double value) { out_ += fmt::format("{} {}\n", name_, number(value)); }
  void sample(std::string_view label, std::string_view label_value, double value) {
    out_ += fmt::format("{}{{{}=\"{}\"}} {}\n", name_, label, escape_label_value(label_value),
                        number(value));
  }
  void sample(std::string_view l1, std::string_view v1, std::string_view l2, std::string_view v2,
              double value) {
    out_ += fmt::format("{}{{{}=\"{}\",{}=\"{}\"}} {}\n", name_, l1, escape_label_value(v1), l2,
                        escape_label_value(v2), number(value));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string name_;
  std::string out_;
};

template <typename T>
using Field = std::function<double(const T&)>;

struct ChannelMetric {
  std::string_view name, type, help;
  Field<broker::ChannelStats> value;
};

struct GuestMetric {
  std::string_view name, type, help;
  Field<GuestFigures> value;
};

struct ListenerMetric {
  std::string_view name, type, help;
  Field<ListenerFigures> value;
};

double d(uint64_t v) { return static_cast<double>(v); }

const std::vector<ChannelMetric>& channel_metrics() {
  using S = broker::ChannelStats;
  static const std::vector<ChannelMetric> m = {
      {"witmq_channel_depth", "gauge",
       "Messages not yet settled in the channel's busiest subscription.",
       [](const S& s) { return d(s.depth); }},
      {"witmq_channel_in_flight", "gauge",
       "Messages acquired under a lease now, all subscriptions.",
       [](const S& s) { return d(s.in_flight); }},
      {"witmq_channel_oldest_message_age_seconds", "gauge",
       "Age of the oldest unsettled message; 0 when there is none.",
       [](const S& s) { return static_cast<double>(s.oldest_age_ms) / 1000.0; }},
      {"witmq_channel_sends_total", "counter", "Messages appended to the channel.",
       [](const S& s) { return d(s.sends_total); }},
      {"witmq_channel_deliveries_total", "counter",
       "Messages handed to consumers, redeliveries included.",
       [](const S& s) { return d(s.deliveries_total); }},
      {"witmq_channel_completes_total", "counter", "Messages completed (accepted).",
       [](const S& s) { return d(s.completes_total); }},
      {"witmq_channel_abandons_total", "counter", "Messages abandoned (rejected).",
       [](const S& s) { return d(s.abandons_total); }},
      {"witmq_channel_redeliveries_total", "counter",
       "Deliveries of a message that had been delivered before.",
       [](const S& s) { return d(s.redeliveries_total); }},
      {"witmq_channel_lease_expiries_total", "counter",
       "Leases that ran out before the message was settled.",
       [](const S& s) { return d(s.lease_expiries_total); }},
      {"witmq_channel_dead_letters_total", "counter",
       "Messages moved from the channel to its dead-letter channel.",
       [](const S& s) { return d(s.dead_letters_total); }},
  };
  return m;
}

const std::vector<GuestMetric>& guest_metrics() {
  using G = GuestFigures;
  static const std::vector<GuestMetric> m = {
      {"witmq_guest_instances", "gauge", "Instances of the guest alive now.",
       [](const G& g) { return d(g.instances_running); }},
      {"witmq_guest_invocations_total", "counter", "Calls of the guest's handler (batches).",
       [](const G& g) { return d(g.batches); }},
      {"witmq_guest_messages_handled_total", "counter", "Messages passed to the guest's handler.",
       [](const G& g) { return d(g.messages_handled); }},
      {"witmq_guest_errors_total", "counter", "Handler calls that returned an error.",
       [](const G& g) { return d(g.handler_errors); }},
      {"witmq_guest_traps_total", "counter", "Traps in configure or handler.",
       [](const G& g) { return d(g.traps); }},
      {"witmq_guest_budget_exhaustions_total", "counter",
       "Calls stopped because they ran out of their instruction budget.",
       [](const G& g) { return d(g.budget_exhaustions); }},
      {"witmq_guest_memory_limit_hits_total", "counter",
       "memory.grow requests refused by the guest's memory limit.",
       [](const G& g) { return d(g.memory_limit_hits); }},
      {"witmq_guest_handler_seconds_total", "counter", "Wall time spent inside the handler.",
       [](const G& g) { return static_cast<double>(g.handler_time_ns) / 1e9; }},
      {"witmq_guest_output_lines_total", "counter",
       "Lines the guest wrote to stdout or stderr (WASI) that were logged.",
       [](const G& g) { return d(g.output_lines); }},
      {"witmq_guest_output_lines_dropped_total", "counter",
       "Lines of the guest's stdout and stderr dropped by its output rate limit.",
       [](const G& g) { return d(g.output_lines_dropped); }},
      {"witmq_guest_output_bytes_dropped_total", "counter",
       "Bytes of the guest's stdout and stderr dropped or cut by its output limits.",
       [](const G& g) { return d(g.output_bytes_dropped); }},
  };
  return m;
}

const std::vector<ListenerMetric>& listener_metrics() {
  using L = ListenerFigures;
  static const std::vector<ListenerMetric> m = {
      {"witmq_connections_open", "gauge", "Client connections open now.",
       [](const L& l) { return d(l.connections_open); }},
      {"witmq_connections_total", "counter", "Client connections accepted.",
       [](const L& l) { return d(l.connections_total); }},
      {"witmq_connections_refused_total", "counter",
       "Connections refused because the listener was at its connection limit.",
       [](const L& l) { return d(l.connections_refused); }},
      {"witmq_requests_total", "counter", "Requests read (protocol frames, HTTP requests).",
       [](const L& l) { return d(l.requests); }},
      {"witmq_bad_requests_total", "counter",
       "Requests refused as the caller's mistake: malformed frames (tcp), 4xx answers (http).",
       [](const L& l) { return d(l.bad_requests); }},
      {"witmq_received_bytes_total", "counter", "Bytes read from clients.",
       [](const L& l) { return d(l.bytes_in); }},
      {"witmq_sent_bytes_total", "counter", "Bytes written to clients.",
       [](const L& l) { return d(l.bytes_out); }},
  };
  return m;
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string render_metrics(const MetricsSnapshot& s) {
  Writer w;
  w.family("witmq_build_info", "gauge", "Always 1; the version label names the witmqd build.");
  w.sample("version", s.version, 1);
  w.family("witmq_uptime_seconds", "gauge", "Time since witmqd started serving.");
  w.sample(s.uptime_seconds);

  std::vector<const broker::ChannelStats*> channels;
  for (const auto& c : s.channels) channels.push_back(&c);
  std::sort(channels.begin(), channels.end(),
            [](const auto* a, const auto* b) { return a->name < b->name; });
  w.family("witmq_channels", "gauge", "Channels that exist, dead-letter channels included.");
  w.sample(static_cast<double>(channels.size()));
  const size_t omitted = channels.size() - std::min(channels.size(), s.max_channel_series);
  channels.resize(channels.size() - omitted);
  w.family("witmq_metrics_channels_omitted", "gauge",
           "Channels without series of their own here: those after the first "
           "metrics-max-channels by name.");
  w.sample(static_cast<double>(omitted));
  for (const auto& m : channel_metrics()) {
    w.family(m.name, m.type, m.help);
    for (const auto* c : channels) w.sample("channel", c->name, m.value(*c));
  }
  w.family("witmq_subscription_lag", "gauge",
           "Messages of the channel not yet settled in the subscription (\"\" is a "
           "point-to-point channel's shared subscription).");
  for (const auto* c : channels) {
    for (const auto& sub : c->subscriptions) {
      w.sample("channel", c->name, "subscription", sub.name, d(sub.lag));
    }
  }
  w.family("witmq_subscription_in_flight", "gauge",
           "Messages of the subscription acquired under a lease now.");
  for (const auto* c : channels) {
    for (const auto& sub : c->subscriptions) {
      w.sample("channel", c->name, "subscription", sub.name, d(sub.in_flight));
    }
  }

  std::vector<const GuestFigures*> guests;
  for (const auto& g : s.guests) guests.push_back(&g);
  std::sort(guests.begin(), guests.end(),
            [](const auto* a, const auto* b) { return a->name < b->name; });
  w.family("witmq_guests_refused", "gauge",
           "Configured guests that are not running because they could not be loaded or started.");
  w.sample(d(s.guests_refused));
  for (const auto& m : guest_metrics()) {
    w.family(m.name, m.type, m.help);
    for (const auto* g : guests) w.sample("guest", g->name, m.value(*g));
  }

  w.family("witmq_identity_connections", "gauge",
           "Protocol connections open now per authenticated identity (anonymous included).");
  for (const auto& [identity, n] : s.identity_connections) w.sample("identity", identity, d(n));
  w.family("witmq_auth_refused_total", "counter",
           "Connects and HTTP requests refused for a missing or wrong credential, or at an "
           "identity's max-connections.");
  w.sample(d(s.auth_refused));
  w.family("witmq_auth_denied_total", "counter",
           "Requests of authenticated clients that their grants did not allow.");
  w.sample(d(s.auth_denied));

  if (s.cluster) {
    const ClusterFigures& c = *s.cluster;
    w.family("witmq_cluster_member", "gauge",
             "1 while this node is a cluster member with a live etcd lease, else 0 (lost-etcd).");
    w.sample(c.member ? 1 : 0);
    w.family("witmq_cluster_nodes_alive", "gauge",
             "Nodes registered in etcd under a live lease, as this node last read them.");
    w.sample(d(c.nodes_alive));
    w.family("witmq_cluster_leases_held", "gauge", "etcd leases this node holds now (0 or 1).");
    w.sample(d(c.leases_held));
    w.family("witmq_cluster_channels_led", "gauge", "Channels this node leads now.");
    w.sample(d(c.channels_led));
    w.family(
        "witmq_cluster_leader_changes_total", "counter",
        "Changes of a channel's leader epoch this node observed (its own elections included).");
    w.sample(d(c.leader_changes));
    w.family("witmq_cluster_leaderships_lost_total", "counter",
             "Channel leaderships this node held and gave up (lease lost, or etcd showed another "
             "leader).");
    w.sample(d(c.leaderships_lost));
    w.family("witmq_cluster_lease_losses_total", "counter",
             "Times this node lost its etcd lease (it could not keep it alive in time).");
    w.sample(d(c.lease_losses));
    w.family("witmq_cluster_etcd_request_errors_total", "counter",
             "etcd requests that failed on an endpoint (each endpoint tried counts).");
    w.sample(d(c.etcd_errors));
    w.family("witmq_cluster_peer_links_up", "gauge",
             "Peer links this node dialed to other live nodes that are up now (welcomed, pings "
             "answered).");
    w.sample(d(c.peer_links_up));
    w.family("witmq_cluster_peer_connections", "gauge",
             "Connections open on this node's peer listener now.");
    w.sample(d(c.peer_connections));
    w.family("witmq_cluster_peers_refused_total", "counter",
             "Connections the peer listener refused: a wrong secret or cluster, a malformed or "
             "oversized frame, no hello in time, too many connections.");
    w.sample(d(c.peers_refused));
    w.family("witmq_cluster_leader_handovers_total", "counter",
             "Channel leaderships this node handed back to the channel's preferred leader when "
             "it returned.");
    w.sample(d(c.handovers));
    w.family("witmq_cluster_forwarded_total", "counter",
             "Client operations this node relayed to the channel's leader, by operation.");
    for (const auto& [op, n] : c.forwarded) w.sample("op", op, d(n));
    w.family("witmq_cluster_forward_errors_total", "counter",
             "Operations this node could not relay: no leader within cluster-forward-timeout-ms, "
             "the leader unreachable, or the connection to it lost.");
    w.sample(d(c.forward_errors));
    w.family("witmq_cluster_snapshots_sent_total", "counter",
             "Channel snapshots this node, as leader, sent whole to a follower that diverged or "
             "was behind its retained log.");
    w.sample(d(c.snapshots_sent));
    w.family("witmq_cluster_snapshots_received_total", "counter",
             "Channel snapshots this node, as follower, received and stored whole.");
    w.sample(d(c.snapshots_received));
    w.family("witmq_cluster_in_sync_replicas", "gauge",
             "Per replicated channel this node leads: the replicas in its in-sync set (this node "
             "included), which every acknowledged write is held by.");
    for (const auto& [channel, n] : c.in_sync_replicas) w.sample("channel", channel, d(n));
  }

  for (const auto& m : listener_metrics()) {
    w.family(m.name, m.type, m.help);
    for (const auto& l : s.listeners) w.sample("listener", l.listener, m.value(l));
  }
  w.family("witmq_messages_received_total", "counter",
           "Messages received in protocol send requests.");
  w.sample(d(s.messages_in));
  w.family("witmq_messages_delivered_total", "counter",
           "Messages the protocol server sent in receive replies and stream deliveries.");
  w.sample(d(s.messages_out));
  w.family("witmq_connections_by_state", "gauge",
           "Protocol connections open now by state: handshaking (TLS), connecting (no connect "
           "yet), connected, closing (goaway written or the server stopping).");
  for (size_t i = 0; i < kConnectionStates; ++i) {
    w.sample("state", connection_state_name(static_cast<ConnectionState>(i)),
             d(s.connections.by_state[i]));
  }
  w.family("witmq_connection_buffered_bytes", "gauge",
           "Bytes the protocol connections' input and output buffers hold, all together (an idle "
           "connection holds none).");
  w.sample(d(s.connections.buffered_bytes));
  w.family("witmq_connection_buffered_bytes_max", "gauge",
           "Bytes the input and output buffers of the protocol connection holding the most hold.");
  w.sample(d(s.connections.buffered_bytes_max));
  w.family("witmq_http_request_body_bytes", "gauge",
           "Bytes set aside for HTTP request bodies being read or served, all connections together "
           "(bounded by max-input-buffer-bytes).");
  w.sample(d(s.http_body_bytes));
  w.family("witmq_http_request_bodies_refused_total", "counter",
           "HTTP requests answered 503 because their bodies would pass max-input-buffer-bytes.");
  w.sample(d(s.http_bodies_refused));
  w.family("witmq_broker_clients", "gauge",
           "Clients the broker knows: protocol connections that connected, and guest instances.");
  w.sample(d(s.broker_tables.clients));
  w.family("witmq_broker_waiters", "gauge",
           "Receives waiting in the broker, counted once per channel each waits on.");
  w.sample(d(s.broker_tables.waiters));
  w.family("witmq_broker_subscriptions", "gauge",
           "Subscriptions by kind: durable (stored) and ephemeral (gone with their client).");
  w.sample("kind", "durable", d(s.broker_tables.durable_subscriptions));
  w.sample("kind", "ephemeral", d(s.broker_tables.ephemeral_subscriptions));
  w.family("witmq_broker_timers", "gauge",
           "Timer callbacks scheduled in the broker (leases, waits, backoffs, housekeeping); "
           "cancelled ones count until they are due.");
  w.sample(d(s.broker_tables.timers));
  w.family("witmq_broker_request_inboxes", "gauge",
           "Request-reply inboxes: clients that made a request and are still connected.");
  w.sample(d(s.broker_tables.inboxes));
  w.family("witmq_broker_pending_requests", "gauge", "Requests waiting for replies.");
  w.sample(d(s.broker_tables.pending_requests));
  w.family("witmq_broker_replies_dropped_total", "counter",
           "Replies that found no waiting request (its requester gone, or the request answered "
           "or timed out) and were dropped.");
  w.sample(d(s.broker_tables.replies_dropped_total));
  w.family("witmq_broker_requests_timed_out_total", "counter",
           "Requests that ended at their timeout with no reply.");
  w.sample(d(s.broker_tables.requests_timed_out_total));
  w.family("witmq_memory_resident_bytes", "gauge", "Resident memory of witmqd (VmRSS).");
  w.sample(d(s.memory.resident_bytes));
  w.family("witmq_memory_heap_in_use_bytes", "gauge",
           "Bytes allocated and not freed, as the allocator counts them.");
  w.sample("allocator", s.memory.allocator, d(s.memory.heap_in_use_bytes));
  w.family("witmq_memory_heap_free_bytes", "gauge",
           "Bytes freed and kept resident by the allocator for reuse (retained), until "
           "memory-release-threshold-bytes makes witmqd give them back.");
  w.sample("allocator", s.memory.allocator, d(s.memory.heap_free_bytes));
  w.family("witmq_memory_heap_mapped_bytes", "gauge",
           "Bytes the allocator obtained from the kernel for the heap.");
  w.sample("allocator", s.memory.allocator, d(s.memory.heap_mapped_bytes));
  w.family("witmq_memory_releases_total", "counter",
           "Times witmqd gave the allocator's free memory back to the kernel "
           "(memory-release-interval-ms, memory-release-threshold-bytes).");
  w.sample(d(s.memory_releases));

  const storage::StoreStats& st = s.store;
  w.family("witmq_store_commit_requests_total", "counter",
           "Write requests committed by the group-commit path (sends, settlements, cursor "
           "writes). Divided by witmq_store_writes_total: the mean group size.");
  w.sample(d(st.commits));
  w.family("witmq_store_writes_total", "counter",
           "Merged RocksDB writes, each carrying one or more commit requests.");
  w.sample(d(st.writes));
  w.family("witmq_store_syncs_total", "counter", "Write-ahead-log fsyncs.");
  w.sample(d(st.syncs));
  w.family("witmq_store_sync_seconds_total", "counter",
           "Time spent in write-ahead-log fsyncs. Divided by witmq_store_syncs_total: the mean "
           "sync latency.");
  w.sample(static_cast<double>(st.sync_micros_total) / 1e6);
  w.family("witmq_store_written_bytes_total", "counter", "Bytes of write sets committed.");
  w.sample(d(st.bytes_written));
  w.family("witmq_store_max_requests_per_write", "gauge",
           "The most commit requests one merged write has carried since start.");
  w.sample(d(st.max_requests_per_write));
  w.family("witmq_store_disk_full", "gauge",
           "1 while the data directory's disk is full and writes (sends) are refused, else 0.");
  w.sample(st.disk_full ? 1.0 : 0.0);
  w.family("witmq_store_disk_full_errors_total", "counter",
           "Write requests refused because the data directory's disk was full.");
  w.sample(d(st.disk_full_errors));
  w.family("witmq_store_recovery_orphans_removed", "gauge",
           "Records the recovery at this start found without the record they belong to (left by "
           "a crash or a race with a channel's deletion) and removed, by kind of record.");
  const storage::RecoveryOrphans& o = st.recovered_orphans;
  w.sample("record", "cursor", d(o.cursors));
  w.sample("record", "delivery", d(o.delivery_records));
  w.sample("record", "head", d(o.heads));
  w.sample("record", "messages", d(o.message_channels));
  w.sample("record", "subscription", d(o.subscriptions));
  return w.take();
}

}  // namespace witmq::net
