// The HTTP side of witmqd (docs/HTTP.md): health and readiness, Prometheus metrics, the admin API
// under /v1/ and publishing (CloudEvents HTTP binding). HTTP/1.1 with keep-alive, on Boost.Beast.
//
// Threading: like the protocol server (net/server.h), the acceptor and every connection each
// live on their own strand of the io_context the caller runs; a connection is one coroutine
// (read a request, route it, write the response, repeat). Admin calls that may wait on disk, and
// metrics scrapes, run on a small pool of their own, never on the I/O threads.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/broker.h"
#include "common/result.h"
#include "net/http_routes.h"
#include "net/server.h"

namespace witmq::net {

// Everything the HTTP server enforces; the daemon's configuration sets every field.
struct HttpServerOptions {
  // The plain HTTP listener: off when false (http-listen ""). The daemon starts the HTTP server
  // when this or the HTTPS listener is on.
  bool enabled = true;
  // Address to listen on; port 0 picks a free port (see HttpServer::local_endpoint).
  std::string host = "127.0.0.1";
  uint16_t port = 7401;
  // The HTTPS listener (https-listen), on when tls_context is set: the same routes inside TLS
  // (net/tls.h), beside the plain listener.
  std::shared_ptr<boost::asio::ssl::context> tls_context;
  std::string tls_host = "127.0.0.1";
  uint16_t tls_port = 0;
  // An HTTPS connection that has not finished its handshake this long after it was accepted is
  // closed (tls-handshake-timeout-ms).
  std::chrono::milliseconds tls_handshake_timeout{10'000};
  // Connections served at once, both listeners together; one more is answered 503 and closed.
  uint32_t max_connections = 256;
  // Largest request body; a larger one is answered 413 before it is read.
  uint64_t max_body_bytes = 16 << 20;
  // Request bodies all connections together may hold while they are read and served
  // (max-input-buffer-bytes): a request whose body would take more is answered 503 before its
  // body is read. A body of unknown length (chunked) counts as max_body_bytes.
  uint64_t max_buffered_body_bytes = uint64_t{1} << 30;
  // Largest request line plus headers; a larger one is answered 431 (CloudEvents attributes
  // travel in headers, so this must hold max-metadata-bytes).
  uint32_t max_header_bytes = 32 << 10;
  // A connection that sends no complete request for this long is closed. Also bounds how long
  // one request may take to arrive.
  std::chrono::milliseconds idle_timeout{60'000};
  // Once a request's first byte has arrived, how long its request line and headers may take
  // (bounded by idle_timeout too): a client trickling its headers frees its connection soon.
  std::chrono::milliseconds header_timeout{10'000};
  // Channels with series of their own in /metrics (metrics-max-channels).
  uint32_t metrics_max_channels = 1'000;
  // Names a browser may reach the HTTP side by, besides IP addresses, localhost and *.localhost
  // (http-allowed-hosts); "*" allows any. Guards against DNS rebinding.
  std::vector<std::string> allowed_hosts;
  // On stop(), how long requests in progress get before their connections are closed.
  std::chrono::milliseconds shutdown_timeout{10'000};
};

// Monotonic except `connections`.
struct HttpCounters {
  std::atomic<uint64_t> connections{0};  // open now
  std::atomic<uint64_t> connections_total{0};
  std::atomic<uint64_t> connections_refused{0};  // over max-connections
  std::atomic<uint64_t> requests_total{0};
  std::atomic<uint64_t> bad_requests_total{0};  // answered with a 4xx status
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  // Bytes set aside now for request bodies being read or served (max_buffered_body_bytes).
  std::atomic<uint64_t> body_bytes{0};
  std::atomic<uint64_t> bodies_refused{0};  // requests answered 503 for want of that room
};

class HttpSession;

class HttpServer {
 public:
  // `protocol` is the TCP server whose counters /metrics reports and whose admin options (the
  // channel defaults, server-stats) the admin API shares. Nothing happens until listen().
  HttpServer(boost::asio::io_context& io, broker::Broker& broker, const Server& protocol,
             HttpServerOptions options, HttpSources sources);
  // Closes whatever is still open without waiting; call stop() first for a graceful stop.
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listeners that are on and starts accepting. Errors name the setting, the address
  // and the reason.
  Status listen();
  // The plain listener's bound address (after listen()), with the real port when options.port
  // was 0; unspecified when it is off.
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  // The HTTPS listener's bound address, likewise.
  boost::asio::ip::tcp::endpoint tls_endpoint() const;

  // Graceful stop: stops accepting; /readyz answers 503 from now on; every connection finishes
  // the request it is serving (a publish answered 201 is durable) and closes. `done` runs on an
  // I/O thread once every connection is closed, or after options.shutdown_timeout. Call once.
  void stop(std::function<void()> done);

  const HttpCounters& counters() const { return counters_; }

 private:
  // Accepts on `acceptor` until it closes; `tls` says whether its connections speak TLS.
  void accept_loop(boost::asio::ip::tcp::acceptor& acceptor, bool tls);
  // A connection over max_connections: answered (a health probe 200, anything else 503) and
  // closed, or closed at once when too many are being answered already.
  void refused(boost::asio::ip::tcp::socket socket, bool tls);
  struct Refusals;
  boost::asio::awaitable<void> refuse(boost::asio::ip::tcp::socket socket, bool tls,
                                      std::shared_ptr<Refusals> refusals, uint64_t id);
  template <typename Stream>
  boost::asio::awaitable<void> answer_refused(Stream& stream);
  void session_closed(uint64_t id);
  void force_close_all();
  std::vector<std::shared_ptr<HttpSession>> open_sessions();

  boost::asio::io_context& io_;
  const HttpServerOptions options_;
  // Whose replace listener closes connections of revoked identities; may be null.
  auth::Authenticator* const authenticator_;
  uint64_t revoke_listener_ = 0;
  HttpCounters counters_;
  // Two threads, so that a scrape does not wait behind a checkpoint.
  boost::asio::thread_pool admin_pool_{2};
  std::unique_ptr<Router> router_;
  // Both acceptors live on one strand, with the stop timer.
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::acceptor tls_acceptor_;
  boost::asio::ip::tcp::endpoint endpoint_;
  boost::asio::ip::tcp::endpoint tls_endpoint_;
  boost::asio::steady_timer stop_timer_;
  // Connections over the limit being answered now, oldest first.
  struct Refusals {
    std::mutex mu;                // guards the members below
    std::map<uint64_t, int> fds;  // id -> descriptor
    uint64_t next = 1;
  };
  std::shared_ptr<Refusals> refusing_ = std::make_shared<Refusals>();
  // On the acceptors' strand: the rate limit of the refusal log line.
  std::chrono::steady_clock::time_point last_refusal_log_{};
  uint64_t refusals_unlogged_ = 0;

  std::mutex mu_;  // guards the members below
  std::unordered_map<uint64_t, std::weak_ptr<HttpSession>> sessions_;
  uint64_t next_session_ = 1;
  bool stopping_ = false;
  std::function<void()> stop_done_;
};

}  // namespace witmq::net
