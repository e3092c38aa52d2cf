// The witmq TCP protocol server: accepts connections and runs one Session per connection
// (net/session.h) that turns the frames of docs/PROTOCOL.md into broker calls and back.
//
// Threading: the server runs on the io_context it is given, which the caller runs on a fixed
// pool of threads. The acceptor and every connection each live on their own strand, so a
// connection's state is touched by one thread at a time and never behind a lock; the only shared
// state is the session registry and the counters below.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>

#include "auth/authenticator.h"
#include "broker/broker.h"
#include "broker/channel_settings.h"
#include "common/result.h"
#include "net/admin.h"
#include "net/forward.h"
#include "net/frames.h"

namespace witmq::net {

// Everything the server enforces. docs/PROTOCOL.md section 11 describes the protocol limits;
// the daemon's configuration (docs/CONFIGURATION.md) sets every field.
struct ServerOptions {
  // The plain listener (listen): off when false (listen ""), and then tls_context must be set.
  bool plain_enabled = true;
  // Address to listen on; port 0 picks a free port (see Server::local_endpoint).
  std::string host = "127.0.0.1";
  uint16_t port = 7400;
  // The TLS listener (tls-listen), on when tls_context is set: the same protocol inside TLS
  // (net/tls.h), beside the plain listener and sharing everything else with it.
  std::shared_ptr<boost::asio::ssl::context> tls_context;
  std::string tls_host = "127.0.0.1";
  uint16_t tls_port = 0;
  // A TLS connection that has not finished its handshake this long after it was accepted is
  // closed (tls-handshake-timeout-ms).
  std::chrono::milliseconds tls_handshake_timeout{10'000};
  // Connections served at once, both listeners together; one more is answered with goaway
  // (resource-exhausted).
  uint32_t max_connections = 10'000;
  // Limits applied while decoding requests: max_batch_messages is max-send-messages.
  Limits limits;
  // Most messages in one receive reply, deliver or browse reply (the broker's max-batch-size).
  uint32_t max_receive_messages = 10'000;
  // Batch size of a stream's deliveries when the client set no "batch-size" extension.
  uint32_t default_batch_size = 100;
  // Requests read but not answered before the server stops reading a connection. 0 = no limit.
  uint32_t max_in_flight = 1024;
  // Decoded bytes of those requests (sends and admin calls: what they hold in memory until they
  // are answered) before the server stops reading a connection. One request is always read, so a
  // connection holds at most this plus one decoded frame.
  size_t max_in_flight_bytes = 64 << 20;
  // Most credit a stream may hold. 0 = no limit.
  uint32_t max_credit = 10'000;
  // Bytes queued for a client that does not read them, beyond which the server stops reading
  // its requests, pushing its stream and running its admin calls, and cuts or refuses replies
  // (net/session.h): queued output stays under it plus one reply.
  size_t max_output_bytes = 64 << 20;
  // Bytes all connections' input buffers together may hold beyond 64 KiB each (frames larger
  // than that, still arriving). A connection whose frame would need more is sent goaway
  // (resource-exhausted): half-sent frames cannot make the server hold max-connections times
  // max-frame-bytes.
  size_t max_input_buffer_bytes = size_t{1} << 30;
  // A connection whose queued output stays above max_output_bytes this long is closed.
  std::chrono::milliseconds output_stall_timeout{30'000};
  // Silence after which a connection is closed (goaway unavailable). 0 = never.
  std::chrono::milliseconds idle_timeout{0};
  // A connection that has not completed connect this long after it was accepted is closed
  // (goaway unavailable), so that silent or slow openers cannot hold connection slots.
  std::chrono::milliseconds connect_timeout{10'000};
  // On stop(), how long connections get to finish their in-flight requests before they are
  // closed regardless.
  std::chrono::milliseconds shutdown_timeout{10'000};
  // What connect-ok announces as the server's software, e.g. "witmqd/0.1.0".
  std::string server_name = "witmqd";
  // The settings a channel declared by channel-declare starts from (the broker's default).
  broker::ChannelSettings default_channel;
  // Figures from outside the server (the daemon's guests), merged into server-stats' object.
  std::function<nlohmann::json()> extra_stats;
  // Who may connect and what each identity may do (docs/SECURITY.md); must outlive the server.
  // nullptr = no checks at all (embedding and tests of this layer).
  auth::Authenticator* authenticator = nullptr;
  // Cluster mode: where operations on channels this node does not lead go (net/forward.h);
  // nullptr = every channel is served here.
  std::shared_ptr<Forwarder> forwarder;
  // The cluster's shared secret (cluster-peer-token): a connect whose token is a forwarding token
  // carrying it acts on behalf of the identity the token names. "" = no forwarded connections.
  std::string cluster_peer_token;
};

// Where a protocol connection is in its life (server-stats' "connections-by-state", the
// witmq_connections_by_state metric).
enum class ConnectionState : uint8_t {
  kHandshaking,  // TLS: the handshake is under way
  kConnecting,   // accepted (and past TLS), no connect yet
  kConnected,    // connect succeeded: serving requests
  kClosing,      // goaway written or the server draining it; closes when done
};
inline constexpr size_t kConnectionStates = 4;
// "handshaking", "connecting", "connected", "closing".
std::string_view connection_state_name(ConnectionState state);

// Counters for server-stats and logs; monotonic except `connections`, `by_state` and
// `buffered_bytes`.
struct ServerCounters {
  std::atomic<uint64_t> connections{0};  // open now
  // Open connections by ConnectionState.
  std::array<std::atomic<uint64_t>, kConnectionStates> by_state{};
  // Bytes the open connections' input and output buffers hold (their capacity), all together.
  std::atomic<uint64_t> buffered_bytes{0};
  // Of the input buffers, the bytes beyond 64 KiB per connection, all together
  // (ServerOptions::max_input_buffer_bytes bounds it).
  std::atomic<uint64_t> input_buffer_bytes{0};
  std::atomic<uint64_t> connections_total{0};
  std::atomic<uint64_t> connections_refused{0};  // over max-connections
  // Of those, closed at once without goaway: more refusals were under way than the server
  // writes goaway for at a time (kMaxRefusing in server.cc).
  std::atomic<uint64_t> connections_refused_at_once{0};
  // Connections the server closed without writing goaway (output stall, a failed write, the
  // shutdown timeout, a failed TLS handshake, an internal error); each is logged with its reason.
  std::atomic<uint64_t> closed_without_goaway{0};
  std::atomic<uint64_t> requests_total{0};
  std::atomic<uint64_t> malformed_total{0};  // frames answered with a decode error
  std::atomic<uint64_t> messages_in{0};      // messages received in sends
  std::atomic<uint64_t> messages_out{0};     // messages sent in replies and deliver frames
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
};

class Session;

// The protocol connections' footprint at one moment (Server::footprint()).
struct ConnectionFootprint {
  std::array<uint64_t, kConnectionStates> by_state{};  // by ConnectionState
  uint64_t buffered_bytes = 0;                         // every connection's buffers together
  uint64_t buffered_bytes_max = 0;                     // the connection holding the most
};

// What sessions share: the broker, the options, the counters and the pool that runs admin
// requests (which may wait on disk) off the I/O threads.
struct ServerContext {
  broker::Broker& broker;
  const ServerOptions& options;
  ServerCounters& counters;
  boost::asio::thread_pool& admin_pool;
  const AdminOptions& admin;
  // Called by a session once, when it has closed.
  std::function<void(uint64_t session_id)> on_closed;
};

class Server {
 public:
  // Nothing happens until listen().
  Server(boost::asio::io_context& io, broker::Broker& broker, ServerOptions options);
  // Closes whatever is still open without waiting; call stop() first for a graceful stop.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listeners that are on and starts accepting. Errors name the setting, the address
  // and the reason.
  Status listen();
  // The plain listener's bound address (after listen()), with the real port when options.port
  // was 0; unspecified when the plain listener is off.
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  // The TLS listener's bound address, likewise; unspecified when it is off.
  boost::asio::ip::tcp::endpoint tls_endpoint() const;

  // Graceful stop: stops accepting; every connection stops reading requests, finishes the ones
  // in flight (a confirmed send is durable), answers waiting receives with unavailable, sends
  // goaway (unavailable) and closes. `done` runs on an I/O thread once every connection is
  // closed, or when options.shutdown_timeout has passed and the rest were closed regardless.
  // Call once.
  void stop(std::function<void()> done);

  const ServerCounters& counters() const { return counters_; }
  // Connections by state and the bytes their buffers hold (the sum, and the most one holds).
  // Visits every connection: for stats and metrics, not for a hot path.
  ConnectionFootprint footprint() const;
  // What admin requests run with (the channel defaults, the browse limit, server-stats' figures),
  // for the HTTP admin API to share.
  const AdminOptions& admin_options() const { return admin_options_; }
  // Cluster mode: the forwarding the HTTP side shares (null on a single node).
  const std::shared_ptr<Forwarder>& forwarder() const { return options_.forwarder; }

 private:
  // Accepts on `acceptor` until it closes; `tls` says whether its connections speak TLS.
  void accept_loop(boost::asio::ip::tcp::acceptor& acceptor, bool tls);
  void refuse(boost::asio::ip::tcp::socket socket, bool tls);
  void session_closed(uint64_t id);
  void force_close_all();
  // Calls `f` (safe from any thread) on every open session.
  void for_each_session(void (Session::*f)());

  boost::asio::io_context& io_;
  broker::Broker& broker_;
  const ServerOptions options_;
  ServerCounters counters_;
  boost::asio::thread_pool admin_pool_{1};
  AdminOptions admin_options_;
  std::unique_ptr<ServerContext> context_;
  // Both acceptors live on one strand, with the stop timer.
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::acceptor tls_acceptor_;
  boost::asio::ip::tcp::endpoint endpoint_;
  boost::asio::ip::tcp::endpoint tls_endpoint_;
  boost::asio::steady_timer stop_timer_;
  // options_.max_connections, lowered by listen() to what the descriptor limit allows.
  uint32_t max_connections_ = 0;
  // Refusals whose goaway is being written; past kMaxRefusing, connections are closed at once.
  std::shared_ptr<std::atomic<uint32_t>> refusing_ = std::make_shared<std::atomic<uint32_t>>(0);
  // On the acceptors' strand: the refusal log line is written at most once per
  // kRefusalLogInterval, with the count since the last one.
  std::chrono::steady_clock::time_point last_refusal_log_{};
  uint64_t refusals_since_log_ = 0;

  mutable std::mutex mu_;  // guards the members below
  std::unordered_map<uint64_t, std::weak_ptr<Session>> sessions_;
  uint64_t next_session_ = 1;
  bool stopping_ = false;
  std::function<void()> stop_done_;
  // The Authenticator's replace listener (when there is one).
  uint64_t revoke_listener_ = 0;
};

}  // namespace witmq::net
