// witmqd: the witmq daemon. Loads the configuration (daemon/config.h), opens the broker on the
// data directory, starts the configured guests, serves the protocol on a fixed pool of I/O
// threads, and stops gracefully on SIGTERM or SIGINT: stop accepting, finish in-flight requests
// (every confirmed send is durable), close connections with goaway, stop the guests, shut the
// broker down, exit 0. SIGHUP reloads the configuration (daemon/reload.h). Under systemd it
// reports readiness, reloads and the stop on NOTIFY_SOCKET (daemon/sd_notify.h).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "auth/authenticator.h"
#include "auth/token.h"
#include "broker/broker.h"
#include "cluster/node.h"
#include "cluster/peer_links.h"
#include "cluster/peer_server.h"
#include "cluster/replication.h"
#include "common/log.h"
#include "common/memory.h"
#include "daemon/access_warning.h"
#include "daemon/command_line.h"
#include "daemon/config.h"
#include "daemon/guest_set.h"
#include "daemon/memory_release.h"
#include "daemon/reload.h"
#include "daemon/sd_notify.h"
#include "forward/forwarder.h"
#include "guest/tool_process.h"
#include "net/http_server.h"
#include "net/server.h"

namespace {

namespace asio = boost::asio;
using namespace witmq;

constexpr int kExitFailure = 1;
constexpr int kExitBadConfig = 2;

std::string endpoint_text(const asio::ip::tcp::endpoint& ep) {
  const auto address = ep.address();
  return address.is_v6() ? fmt::format("[{}]:{}", address.to_string(), ep.port())
                         : fmt::format("{}:{}", address.to_string(), ep.port());
}

// What the HTTP side reports about the guests (net/ does not know guest/).
net::HttpSources http_sources(const daemon::GuestSet& guests) {
  net::HttpSources sources;
  sources.version = WITMQ_VERSION;
  sources.guest_figures = [&guests] {
    std::vector<net::GuestFigures> out;
    for (const guest::GuestStats& s : guests.stats()) {
      out.push_back({s.name, s.instances_running, s.batches, s.messages_handled, s.handler_errors,
                     s.traps, s.budget_exhaustions, s.memory_limit_hits, s.handler_time_ns,
                     s.output_lines, s.output_lines_dropped, s.output_bytes_dropped});
    }
    return out;
  };
  sources.guests_json = [&guests] { return guests.stats_json(); };
  sources.guests_refused = [&guests] { return guests.refused_count(); };
  sources.guests_refused_json = [&guests] { return guests.refused_json(); };
  return sources;
}

// Registers this node in the cluster (docs/CLUSTERING.md); null, with the reason logged, when
// it cannot. The advertised client address defaults to the one the protocol listener bound.
std::unique_ptr<cluster::Node> join_cluster(const daemon::Config& config, const net::Server& server,
                                            broker::Broker& broker, cluster::PeerLinks* links,
                                            std::shared_ptr<cluster::Replication> replication,
                                            bool fresh_store) {
  cluster::ClusterOptions options = config.cluster;
  options.version = WITMQ_VERSION;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::error_code ec;
  const auto dir = std::filesystem::absolute(config.broker.data_dir, ec).lexically_normal();
  options.instance = fmt::format("{}:{}", host, ec ? config.broker.data_dir : dir.string());
  if (options.advertise_client.empty()) {
    options.advertise_client = config.listen_enabled ? endpoint_text(server.local_endpoint())
                                                     : endpoint_text(server.tls_endpoint());
  }
  cluster::NodeSources sources;
  sources.local_channels = [&broker] {
    std::vector<cluster::LocalChannel> out;
    for (const broker::ChannelStats& c : broker.list_channels()) {
      out.push_back({c.name, c.settings.replicas});
    }
    return out;
  };
  // The broker serves what this node leads: a channel it gains is taken up from its own store
  // before anyone is told it leads it; one it loses is released at once.
  // A channel this node held in memory without leading it (recovered at start, or used while
  // another node led it) is stale: replication writes the followed channel's state under it. So a
  // gain that does not continue this node's own leadership reads the channel afresh from the store.
  auto leading = std::make_shared<std::pair<std::mutex, std::set<std::string>>>();
  sources.gained = [&broker, leading](const std::string& channel, uint64_t epoch) {
    bool continues = false;
    {
      std::lock_guard lock(leading->first);
      continues = !leading->second.insert(channel).second;
    }
    if (!continues) broker.release_channel(channel);
    if (auto st = broker.adopt_channel(channel); !st) {
      log::error(
          "channel {}: this node leads it in epoch {} but cannot take it up from its "
          "store: {}",
          channel, epoch, st.error().to_string());
    }
  };
  sources.lost = [&broker, leading](const std::string& channel, uint64_t) {
    {
      std::lock_guard lock(leading->first);
      leading->second.erase(channel);
    }
    broker.release_channel(channel);
  };
  if (replication) {
    sources.catching_up = [replication] { return replication->catching_up(); };
    // A node given an empty data directory holds nothing of what it may still be counted in
    // sync for until a leader sends it the channel.
    sources.holds = [replication, fresh_store](const std::string& channel) {
      return !fresh_store || replication->holds(channel);
    };
    sources.caught_up = [replication](const std::string& channel, uint64_t epoch,
                                      const std::string& follower) {
      return replication->follower_caught_up(channel, epoch, follower);
    };
  }
  if (links != nullptr) {
    sources.peers_seen = [links](const std::vector<cluster::PeerAddress>& peers) {
      links->refresh(peers);
    };
  }
  auto node = cluster::Node::start(std::move(options), std::move(sources));
  if (!node) {
    log::error("cannot join cluster '{}' as node '{}': {}", config.cluster.name,
               config.cluster.node_id, node.error().message);
    return nullptr;
  }
  return std::move(*node);
}

// The peer link's listener (docs/CLUSTERING.md); null, with the reason logged, when it cannot
// listen. An advertised peer address left to its default names the port actually bound.
std::unique_ptr<cluster::PeerServer> start_peer_listener(
    asio::io_context& io, cluster::ClusterOptions& options,
    const std::shared_ptr<cluster::Replication>& replication) {
  cluster::PeerServerOptions peer;
  peer.on_replicate = [replication](const std::string& from, cluster::PeerReplicate frame,
                                    cluster::PeerServerOptions::ReplyFn reply) {
    replication->on_replicate(from, std::move(frame), std::move(reply));
  };
  peer.on_snapshot = [replication](const std::string& from, cluster::PeerSnapshot frame,
                                   cluster::PeerServerOptions::ReplyFn reply) {
    replication->on_snapshot(from, std::move(frame), std::move(reply));
  };
  peer.listen = options.peer_listen;
  peer.cluster = options.name;
  peer.node_id = options.node_id;
  peer.token = options.peer_token;
  peer.max_frame_bytes = options.peer_max_frame_bytes;
  auto server = std::make_unique<cluster::PeerServer>(io, std::move(peer));
  if (auto st = server->listen(); !st) {
    log::error("cannot listen: {}", st.error().message);
    return nullptr;
  }
  const std::string bound = endpoint_text(server->local_endpoint());
  if (options.advertise_peer == options.peer_listen && options.peer_listen.ends_with(":0")) {
    options.advertise_peer = bound;
  }
  log::info("peer link listening on {}", bound);
  return server;
}

int serve(const daemon::CommandLine& command_line, const daemon::Config& config) {
  log::set_level(config.log_level);
  asio::io_context io(static_cast<int>(config.io_threads));
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < config.io_threads; ++i) threads.emplace_back([&io] { io.run(); });
  auto stop_threads = [&] {
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  };

  // Cluster mode: the store ships replicated channels' writes through this (docs/CLUSTERING.md,
  // "Replication"); it ships nothing until the node has joined.
  std::shared_ptr<cluster::Replication> replication;
  // Set once the node has joined (below), after the listener started.
  std::atomic<cluster::Node*> cluster_node{nullptr};
  broker::BrokerOptions broker_options = config.broker;
  if (config.cluster.enabled()) {
    cluster::ReplicationOptions replication_options{config.cluster.node_id,
                                                    config.cluster.replication_timeout};
    replication_options.in_sync_timeout = config.cluster.in_sync_timeout;
    replication_options.retained_bytes = config.cluster.replication_retained_bytes;
    // A chunk and its header fit well within the frame limit a peer's listener applies.
    replication_options.snapshot_chunk_bytes = std::min<size_t>(
        replication_options.snapshot_chunk_bytes, config.cluster.peer_max_frame_bytes / 2);
    replication = std::make_shared<cluster::Replication>(io, std::move(replication_options));
    broker_options.store.replicator = replication;
    // A leader whose lease's deadline passed acknowledges nothing more, from that instant
    // (docs/CLUSTERING.md, "Leadership changes").
    broker_options.may_serve = [&cluster_node](std::string_view channel) {
      const cluster::Node* n = cluster_node.load();
      return n == nullptr || n->may_serve(std::string(channel));
    };
    // Inboxes name this node, so that a reply given to any node is taken to this one
    // (docs/CLUSTERING.md, "Forwarding").
    broker_options.inbox_prefix = config.cluster.node_id + "/";
  }
  // An empty data directory (RocksDB has not created it yet): this node holds nothing of any
  // channel, whatever etcd still counts it in.
  const bool fresh_store =
      !std::filesystem::exists(std::filesystem::path(config.broker.data_dir) / "CURRENT");
  auto broker = broker::Broker::open(std::move(broker_options), io.get_executor());
  if (!broker) {
    log::error("cannot open the broker: {}", broker.error().to_string());
    stop_threads();
    return kExitFailure;
  }
  // Who may connect and what each identity may do; a reload replaces it (docs/SECURITY.md).
  auth::Authenticator authenticator(config.auth);
  daemon::warn_about_anonymous(config);
  // Guests subscribe before clients arrive; each runs on its own worker threads. A guest that
  // cannot start is refused alone: the daemon and its other guests carry on. Guests of the
  // ahead-of-time tier may have to be compiled first (seconds to minutes): they start once the
  // listeners are up (below), so that a compile never holds up "listening".
  daemon::GuestSet guests(**broker);
  auto stop_guests = [&] { guests.stop_all(); };
  std::vector<guest::GuestOptions> interpreted;
  for (const auto& g : config.guests) {
    if (g.engine == guest::Engine::kInterp) interpreted.push_back(g);
  }
  guests.apply(interpreted);

  net::ServerOptions server_options = config.server;
  server_options.plain_enabled = config.listen_enabled;
  server_options.host = config.listen_host;
  server_options.port = config.listen_port;
  server_options.server_name = "witmqd/" WITMQ_VERSION;
  // Freed memory goes back to the kernel once there is much of it (after bursts and
  // disconnects).
  daemon::MemoryReleaser releaser(io, config.io_threads, config.memory_release_interval,
                                  config.memory_release_threshold);
  std::atomic<cluster::PeerServer*> cluster_peer_server{nullptr};
  std::atomic<cluster::PeerLinks*> cluster_peer_links{nullptr};
  auto cluster_json = [&cluster_node, &cluster_peer_server, &cluster_peer_links, &replication] {
    nlohmann::json j = cluster_node.load()->to_json();
    if (replication) j["replication-state"] = replication->to_json();
    if (cluster::PeerServer* p = cluster_peer_server.load()) {
      j["peer-link"] = p->to_json();
      if (cluster::PeerLinks* l = cluster_peer_links.load()) j["peer-link"]["links"] = l->to_json();
    }
    return j;
  };
  server_options.extra_stats = [&guests, &releaser, &cluster_node, cluster_json] {
    const MemoryFigures m = memory_figures();
    nlohmann::json extra{{"guests", guests.stats_json()},
                         {"memory",
                          {{"allocator", m.allocator},
                           {"resident-bytes", m.resident_bytes},
                           {"heap-in-use-bytes", m.heap_in_use_bytes},
                           {"heap-free-bytes", m.heap_free_bytes},
                           {"heap-mapped-bytes", m.heap_mapped_bytes},
                           {"releases", releaser.releases()}}}};
    if (cluster_node.load() != nullptr) extra["cluster"] = cluster_json();
    return extra;
  };
  server_options.authenticator = &authenticator;
  // Cluster mode: operations on channels another node leads go there (docs/CLUSTERING.md).
  std::shared_ptr<forward::Forwarder> forwarder;
  if (config.cluster.enabled()) {
    forwarder = std::make_shared<forward::Forwarder>(
        io.get_executor(),
        forward::ForwarderOptions{config.cluster.peer_token, config.cluster.forward_timeout,
                                  config.broker.default_channel.replicas});
    server_options.forwarder = forwarder;
    server_options.cluster_peer_token = config.cluster.peer_token;
  }
  net::Server server(io, **broker, server_options);
  if (auto st = server.listen(); !st) {
    log::error("cannot listen: {}", st.error().to_string());
    stop_guests();
    (*broker)->shutdown();
    stop_threads();
    return kExitFailure;
  }
  // Cluster mode: join before anyone is told the daemon is ready; a node that cannot join (no
  // etcd answers, or its id is taken) does not start.
  std::unique_ptr<cluster::Node> node;
  std::unique_ptr<cluster::PeerServer> peer_server;
  std::unique_ptr<cluster::PeerLinks> peer_links;
  if (config.cluster.enabled()) {
    daemon::Config joined = config;
    if (!config.cluster.peer_listen.empty()) {
      peer_server = start_peer_listener(io, joined.cluster, replication);
      if (!peer_server) {
        stop_guests();
        (*broker)->shutdown();
        stop_threads();
        return kExitFailure;
      }
      cluster_peer_server.store(peer_server.get());
      cluster::PeerLinksOptions dial;
      dial.cluster = joined.cluster.name;
      dial.node_id = joined.cluster.node_id;
      dial.token = joined.cluster.peer_token;
      dial.on_frame = [replication](const std::string& from, cluster::PeerFrame frame) {
        replication->on_frame(from, std::move(frame));
      };
      dial.on_up = [replication](const std::string& to) { replication->on_up(to); };
      peer_links = std::make_unique<cluster::PeerLinks>(io, std::move(dial));
      cluster_peer_links.store(peer_links.get());
    }
    node = join_cluster(joined, server, **broker, peer_links.get(), replication, fresh_store);
    cluster_node.store(node.get());
    if (node) forwarder->attach(node.get());
    if (node) replication->connect(node.get(), peer_links.get());
    if (!node) {
      if (peer_links) peer_links->stop();
      if (peer_server) peer_server->stop();
      stop_guests();
      (*broker)->shutdown();
      stop_threads();
      return kExitFailure;
    }
  }
  // The HTTP side: health, metrics, the admin API and publishing (docs/HTTP.md).
  std::optional<net::HttpServer> http;
  if (config.http.enabled || config.http.tls_context) {
    net::HttpSources sources = http_sources(guests);
    sources.authenticator = &authenticator;
    sources.memory_releases = [&releaser] { return releaser.releases(); };
    if (node) {
      cluster::Node* n = node.get();
      sources.cluster_json = cluster_json;
      sources.cluster_not_ready = [n]() -> std::optional<std::string> {
        std::string why;
        if (n->ready(&why)) return std::nullopt;
        return why;
      };
      sources.cluster_figures = [n, f = forwarder.get(), &cluster_peer_server, &cluster_peer_links,
                                 replication] {
        const cluster::NodeFigures nf = n->figures();
        net::ClusterFigures out;
        out.member = nf.member;
        out.nodes_alive = nf.nodes_alive;
        out.leases_held = nf.leases_held;
        out.channels_led = nf.channels_led;
        out.leader_changes = nf.leader_changes;
        out.leaderships_lost = nf.leaderships_lost;
        out.lease_losses = nf.lease_losses;
        out.etcd_errors = nf.etcd_errors;
        out.handovers = nf.handovers;
        out.forwarded = f->forwarded();
        out.forward_errors = f->errors();
        if (replication) {
          const cluster::ReplicationFigures rf = replication->figures();
          out.snapshots_sent = rf.snapshots_sent;
          out.snapshots_received = rf.snapshots_received;
          for (const auto& [channel, count] : replication->in_sync_counts()) {
            out.in_sync_replicas.emplace_back(channel, count);
          }
        }
        if (cluster::PeerServer* p = cluster_peer_server.load()) {
          const cluster::PeerServerFigures pf = p->figures();
          out.peer_connections = pf.connections_open;
          out.peers_refused = pf.peers_refused;
        }
        if (cluster::PeerLinks* l = cluster_peer_links.load()) {
          for (const cluster::PeerLinkStatus& s : l->status()) {
            if (s.state == cluster::PeerLinkState::kUp) ++out.peer_links_up;
          }
        }
        return out;
      };
    }
    http.emplace(io, **broker, server, config.http, std::move(sources));
    if (auto st = http->listen(); !st) {
      log::error("cannot listen: {}", st.error().to_string());
      http.reset();
      if (node) node->stop();
      if (peer_links) peer_links->stop();
      if (peer_server) peer_server->stop();
      stop_guests();
      (*broker)->shutdown();
      stop_threads();
      return kExitFailure;
    }
    if (config.http.enabled) {
      log::info("http listening on {}", endpoint_text(http->local_endpoint()));
    }
    if (config.http.tls_context) {
      log::info("https listening on {}", endpoint_text(http->tls_endpoint()));
    }
  }
  // The lines of stdout that say where witmqd listens, the plain protocol listener's first:
  // scripts and tests wait for them.
  std::string ready_lines;
  std::vector<std::string> addresses;
  if (config.listen_enabled) {
    addresses.push_back(endpoint_text(server.local_endpoint()));
    ready_lines += fmt::format("listening on {}\n", addresses.back());
  }
  if (server_options.tls_context) {
    addresses.push_back(fmt::format("{} (TLS)", endpoint_text(server.tls_endpoint())));
    ready_lines += fmt::format("tls listening on {}\n", endpoint_text(server.tls_endpoint()));
  }
  if (http && config.http.enabled) {
    ready_lines += fmt::format("http listening on {}\n", endpoint_text(http->local_endpoint()));
  }
  if (http && config.http.tls_context) {
    ready_lines += fmt::format("https listening on {}\n", endpoint_text(http->tls_endpoint()));
  }
  const std::string address = fmt::format("{}", fmt::join(addresses, ", "));
  log::info("witmqd {} listening on {} (data in {}, {} I/O threads)", WITMQ_VERSION, address,
            config.broker.data_dir, config.io_threads);
  auto notifier = daemon::SystemdNotifier::from_environment();

  // The main thread waits for the graceful stop to finish and, until then, runs the reloads that
  // SIGHUP asks for: off the I/O threads, since starting a guest takes a while. SIGHUPs that
  // arrive during a reload make one more reload after it.
  daemon::Reloader reloader(command_line, config, **broker, guests, authenticator);
  std::mutex control_mu;
  std::condition_variable control_cv;
  bool stopping = false, stopped = false;
  int reloads_asked = 0;
  std::promise<void> http_stopped;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signal) {
    if (ec) return;
    log::info("received {}; stopping: no new connections, finishing in-flight requests",
              signal == SIGTERM ? "SIGTERM" : "SIGINT");
    notifier.stopping();
    {
      std::lock_guard lock(control_mu);
      stopping = true;
    }
    // A guest being compiled now (at start or in a reload) is not waited for: its compile ends
    // at once and the guest is refused.
    guest::cancel_tool_runs();
    if (http) http->stop([&http_stopped] { http_stopped.set_value(); });
    server.stop([&] {
      std::lock_guard lock(control_mu);
      stopped = true;
      control_cv.notify_all();
    });
    // A second signal does not wait any longer.
    signals.async_wait([](boost::system::error_code ec, int) {
      if (ec) return;
      log::warn("second signal: exiting without waiting for connections to close");
      std::_Exit(kExitFailure);
    });
  });
  asio::signal_set hangups(io, SIGHUP);
  std::function<void()> wait_hangup = [&] {
    hangups.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      std::lock_guard lock(control_mu);
      ++reloads_asked;
      control_cv.notify_all();
      wait_hangup();
    });
  };
  wait_hangup();
  // Ready only now that every signal has its handler: a SIGHUP before would end the process.
  // One write, so that a reader sees every line at once.
  std::fputs(ready_lines.c_str(), stdout);
  std::fflush(stdout);
  const std::string ready_status = fmt::format("listening on {}", address);
  notifier.ready(ready_status);
  daemon::SystemdWatchdog watchdog(io.get_executor(), notifier);
  releaser.start();
  // Now the compiled guests, on this thread while the I/O threads serve clients (the interpreted
  // ones are running already and are left as they are). A SIGTERM meanwhile is acted on once
  // they are up or refused (each compile is bounded by its compile-timeout-ms).
  const bool stop_asked = [&] {
    std::lock_guard lock(control_mu);
    return stopping;
  }();
  if (!stop_asked && interpreted.size() != config.guests.size()) guests.apply(config.guests);
  for (;;) {
    std::unique_lock lock(control_mu);
    control_cv.wait(lock, [&] { return stopped || reloads_asked > 0; });
    if (stopped) break;
    reloads_asked = 0;
    if (stopping) {
      log::info("received SIGHUP while stopping; not reloading");
      continue;
    }
    lock.unlock();
    log::info("received SIGHUP; reloading the configuration from {}",
              command_line.config_file ? *command_line.config_file
                                       : std::string("the defaults and the flags (no --config)"));
    notifier.reloading();
    const daemon::ReloadOutcome outcome = reloader.reload();
    notifier.ready(outcome.config_ok
                       ? ready_status
                       : fmt::format("{}; last reload refused: {}", ready_status, outcome.error));
  }
  if (http) http_stopped.get_future().wait();
  signals.cancel();
  hangups.cancel();
  watchdog.stop();
  releaser.stop();

  // The lease goes first: other nodes take this node's channels over at once.
  if (node) node->stop();
  if (replication) replication->stop();
  if (peer_links) peer_links->stop();
  if (peer_server) peer_server->stop();
  stop_guests();
  (*broker)->shutdown();
  stop_threads();
  http.reset();
  broker->reset();
  log::info("witmqd stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGHUP's default action ends the process: until serve() installs the reload handler (after the
  // store is open and the guests are loaded), a SIGHUP is ignored instead.
  std::signal(SIGHUP, SIG_IGN);
  auto command_line = daemon::parse_command_line(
      std::span<const char* const>(argv + 1, static_cast<size_t>(argc > 0 ? argc - 1 : 0)));
  if (!command_line) {
    std::fprintf(stderr, "witmqd: %s\n", command_line.error().message.c_str());
    return kExitBadConfig;
  }
  using Action = daemon::CommandLine::Action;
  switch (command_line->action) {
    case Action::kHelp:
      std::fputs(daemon::usage_text().c_str(), stdout);
      return 0;
    case Action::kVersion:
      std::fprintf(stdout, "witmqd %s (protocol version 1)\n", WITMQ_VERSION);
      return 0;
    case Action::kPrintDefaultConfig:
      std::fputs(daemon::default_config_text().c_str(), stdout);
      return 0;
    case Action::kPrintConfigReference:
      std::fputs(daemon::config_reference_markdown(daemon::flags_help()).c_str(), stdout);
      return 0;
    case Action::kGenerateToken: {
      const std::string token = auth::generate_token();
      std::fprintf(stdout, "token:        %s\ntoken-sha256: %s\n", token.c_str(),
                   auth::to_hex(auth::sha256(token)).c_str());
      return 0;
    }
    case Action::kHashToken: {
      std::string token;
      if (!std::getline(std::cin, token) || token.empty()) {
        std::fputs("witmqd: --hash-token: expected the token on stdin, one line\n", stderr);
        return kExitBadConfig;
      }
      if (!token.empty() && token.back() == '\r') token.pop_back();
      std::fprintf(stdout, "%s\n", auth::to_hex(auth::sha256(token)).c_str());
      return 0;
    }
    case Action::kCheckConfig:
    case Action::kRun:
      break;
  }
  auto config = daemon::load_config(*command_line);
  if (!config) {
    std::fprintf(stderr, "witmqd: bad configuration: %s\n", config.error().message.c_str());
    return kExitBadConfig;
  }
  if (command_line->action == Action::kCheckConfig) {
    std::fputs("configuration ok\n", stdout);
    return 0;
  }
  return serve(*command_line, *config);
}
