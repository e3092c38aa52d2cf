#include "net/server.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "net/codec.h"
#include "net/listener.h"
#include "net/session.h"

namespace witmq::net {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// A refused connection gets this long to read its goaway before it is closed.
constexpr auto kRefuseLinger = std::chrono::seconds(2);
// Refusals whose goaway is being written at once; past it, refused connections are closed at
// once, so that a flood of connections over max-connections holds at most this many descriptors
// (and TLS handshakes) beyond it.
constexpr uint32_t kMaxRefusing = 64;
// The refusal warning is written at most once per interval, with the count since the last one.
constexpr auto kRefusalLogInterval = std::chrono::seconds(10);
// File descriptors kept out of the protocol server's reach: the storage engine's files, the HTTP
// side's connections, the log and the guests' modules.
constexpr uint64_t kReservedDescriptors = 1024;

// Raises the soft RLIMIT_NOFILE to the hard one, and returns how many connections the protocol
// server may hold so that, with kMaxRefusing refusals under way and kReservedDescriptors kept
// for the rest, the process never runs out of descriptors: max_connections, or less.
uint32_t connection_budget(uint32_t max_connections) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return max_connections;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      log::info("raised the file descriptor limit (RLIMIT_NOFILE) from {} to its hard limit {}",
                static_cast<uint64_t>(rl.rlim_cur), static_cast<uint64_t>(raised.rlim_cur));
      rl = raised;
    }
  }
  if (rl.rlim_cur == RLIM_INFINITY) return max_connections;
  const uint64_t available = rl.rlim_cur > kReservedDescriptors + kMaxRefusing + 1
                                 ? rl.rlim_cur - kReservedDescriptors - kMaxRefusing
                                 : 1;
  if (max_connections <= available) return max_connections;
  log::warn(
      "max-connections {} does not fit in the {} file descriptors this process may open "
      "(RLIMIT_NOFILE, with {} kept for storage, HTTP and refusals): at most {} connections are "
      "served; raise the limit (ulimit -n, LimitNOFILE= in the systemd unit) to serve more",
      max_connections, static_cast<uint64_t>(rl.rlim_cur), kReservedDescriptors + kMaxRefusing,
      available);
  return static_cast<uint32_t>(available);
}

// Writes goaway to a connection the server will not serve, then closes it once the client has
// closed its side or kRefuseLinger has passed (closing with unread input would reset the
// connection, and the client could lose the goaway). A TLS connection is given its handshake
// first (bounded by `handshake_timeout`), so that the goaway reaches it inside TLS.
asio::awaitable<void> send_goaway_and_close(tcp::socket s, Error error,
                                            std::shared_ptr<asio::ssl::context> tls,
                                            std::chrono::milliseconds handshake_timeout) {
  using TlsStream = asio::ssl::stream<tcp::socket>;
  auto socket = std::make_shared<tcp::socket>(std::move(s));
  std::shared_ptr<TlsStream> stream;
  if (tls) stream = std::make_shared<TlsStream>(std::move(*socket), *tls);
  tcp::socket& lowest = stream ? stream->next_layer() : *socket;
  boost::system::error_code ec;
  asio::steady_timer timer(lowest.get_executor());
  auto arm = [&](std::chrono::steady_clock::duration after) {
    timer.expires_after(after);
    timer.async_wait([socket, stream](boost::system::error_code ec) {
      if (ec) return;
      boost::system::error_code ignored;
      (stream ? stream->next_layer() : *socket).close(ignored);
    });
  };
  if (stream) {
    arm(handshake_timeout);
    co_await stream->async_handshake(asio::ssl::stream_base::server,
                                     asio::redirect_error(asio::use_awaitable, ec));
    timer.cancel();
  }
  Buffer out;
  encode_error(out, 0, FrameType::kGoaway, error);
  if (!ec) {
    arm(kRefuseLinger);
    if (stream) {
      co_await asio::async_write(*stream, asio::buffer(out),
                                 asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await asio::async_write(*socket, asio::buffer(out),
                                 asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  if (!ec) {
    lowest.shutdown(tcp::socket::shutdown_send, ec);
    std::array<uint8_t, 4096> scratch;
    while (!ec) {
      co_await lowest.async_read_some(asio::buffer(scratch),
                                      asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  timer.cancel();
  lowest.close(ec);
}

}  // namespace

std::string_view connection_state_name(ConnectionState state) {
  switch (state) {
    case ConnectionState::kHandshaking:
      return "handshaking";
    case ConnectionState::kConnecting:
      return "connecting";
    case ConnectionState::kConnected:
      return "connected";
    case ConnectionState::kClosing:
      return "closing";
  }
  return "unknown";
}

Server::Server(asio::io_context& io, broker::Broker& broker, ServerOptions options)
    : io_(io),
      broker_(broker),
      options_(std::move(options)),
      acceptor_(asio::make_strand(io)),
      tls_acceptor_(acceptor_.get_executor()),
      stop_timer_(acceptor_.get_executor()) {
  admin_options_.default_channel = options_.default_channel;
  admin_options_.max_browse_messages = options_.max_receive_messages;
  admin_options_.max_browse_bytes = options_.limits.max_frame_bytes / 2;
  const auto started = std::chrono::steady_clock::now();
  admin_options_.server_counters = [this, started] {
    const auto uptime = std::chrono::steady_clock::now() - started;
    nlohmann::json j{
        {"server", options_.server_name},
        {"uptime-ms", std::chrono::duration_cast<std::chrono::milliseconds>(uptime).count()},
        {"connections", counters_.connections.load()},
        {"connections-total", counters_.connections_total.load()},
        {"connections-refused", counters_.connections_refused.load()},
        {"connections-refused-at-once", counters_.connections_refused_at_once.load()},
        {"closed-without-goaway", counters_.closed_without_goaway.load()},
        {"requests-total", counters_.requests_total.load()},
        {"malformed-total", counters_.malformed_total.load()},
        {"messages-in", counters_.messages_in.load()},
        {"messages-out", counters_.messages_out.load()},
        {"bytes-in", counters_.bytes_in.load()},
        {"bytes-out", counters_.bytes_out.load()},
    };
    const ConnectionFootprint f = footprint();
    nlohmann::json by_state = nlohmann::json::object();
    for (size_t i = 0; i < kConnectionStates; ++i) {
      by_state[std::string(connection_state_name(static_cast<ConnectionState>(i)))] = f.by_state[i];
    }
    j["connections-by-state"] = std::move(by_state);
    j["buffered-bytes"] = f.buffered_bytes;
    j["buffered-bytes-max"] = f.buffered_bytes_max;
    const broker::BrokerTables t = broker_.tables();
    j["broker"] = {{"clients", t.clients},
                   {"waiters", t.waiters},
                   {"durable-subscriptions", t.durable_subscriptions},
                   {"ephemeral-subscriptions", t.ephemeral_subscriptions},
                   {"timers", t.timers},
                   {"request-inboxes", t.inboxes},
                   {"pending-requests", t.pending_requests},
                   {"replies-dropped-total", t.replies_dropped_total},
                   {"requests-timed-out-total", t.requests_timed_out_total}};
    if (options_.extra_stats) j.update(options_.extra_stats());
    return j;
  };
  context_ = std::make_unique<ServerContext>(
      ServerContext{broker_, options_, counters_, admin_pool_, admin_options_,
                    [this](uint64_t id) { session_closed(id); }});
  if (options_.authenticator) {
    // A reload that revokes an identity ends its connections now, not at their next request.
    revoke_listener_ = options_.authenticator->add_replace_listener(
        [this] { for_each_session(&Session::revalidate); });
  }
}

Server::~Server() {
  if (options_.authenticator) options_.authenticator->remove_replace_listener(revoke_listener_);
  // Sessions refer to this server (its context, options and counters) from handlers that run on
  // the io_context: the server may go only once none can run any more, after stop() has closed
  // every connection, or with the io_context stopped (its handlers are then destroyed unrun).
  size_t open = 0;
  {
    std::lock_guard lock(mu_);
    open = sessions_.size();
  }
  if (open != 0 && !io_.stopped()) {
    log::error(
        "server: destroyed with {} connections open while its io_context runs; call stop() and "
        "wait for it, or stop the io_context, first",
        open);
    std::abort();
  }
  admin_pool_.join();
}

Status Server::listen() {
  max_connections_ = connection_budget(options_.max_connections);
  if (options_.plain_enabled) {
    auto endpoint = open_listener(io_, acceptor_, options_.host, options_.port, "listen");
    if (!endpoint) return std::move(endpoint).error();
    endpoint_ = *endpoint;
  }
  if (options_.tls_context) {
    auto endpoint =
        open_listener(io_, tls_acceptor_, options_.tls_host, options_.tls_port, "tls-listen");
    if (!endpoint) {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      return std::move(endpoint).error();
    }
    tls_endpoint_ = *endpoint;
  }
  if (options_.plain_enabled) accept_loop(acceptor_, false);
  if (options_.tls_context) accept_loop(tls_acceptor_, true);
  return ok_status();
}

tcp::endpoint Server::local_endpoint() const { return endpoint_; }

tcp::endpoint Server::tls_endpoint() const { return tls_endpoint_; }

void Server::accept_loop(tcp::acceptor& acceptor, bool tls) {
  asio::co_spawn(
      acceptor.get_executor(),
      [this, &acceptor, tls]() -> asio::awaitable<void> {
        const tcp::endpoint where = tls ? tls_endpoint_ : endpoint_;
        for (;;) {
          boost::system::error_code ec;
          tcp::socket socket(asio::make_strand(io_));
          co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
          if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
          if (ec) {
            // Out of file descriptors and the like: wait a little rather than spin.
            log::warn("accept on {}:{}: {}", where.address().to_string(), where.port(),
                      ec.message());
            asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            continue;
          }
          socket.set_option(tcp::no_delay(true), ec);
          std::shared_ptr<Session> session;
          {
            std::lock_guard lock(mu_);
            if (stopping_) continue;  // the socket closes as it goes out of scope
            if (sessions_.size() < max_connections_) {
              const uint64_t id = next_session_++;
              session = std::make_shared<Session>(id, std::move(socket), *context_,
                                                  tls ? options_.tls_context.get() : nullptr);
              sessions_.emplace(id, session);
            }
          }
          if (!session) {
            refuse(std::move(socket), tls);
            continue;
          }
          counters_.connections.fetch_add(1, std::memory_order_relaxed);
          counters_.connections_total.fetch_add(1, std::memory_order_relaxed);
          session->start();
        }
      },
      asio::detached);
}

void Server::refuse(tcp::socket socket, bool tls) {
  counters_.connections_refused.fetch_add(1, std::memory_order_relaxed);
  ++refusals_since_log_;
  const auto now = std::chrono::steady_clock::now();
  if (last_refusal_log_ == std::chrono::steady_clock::time_point{} ||
      now - last_refusal_log_ >= kRefusalLogInterval) {
    log::warn(
        "refused {} connection(s) since the last such line: {} connections are open, the limit "
        "is max-connections {}",
        refusals_since_log_, max_connections_, max_connections_);
    last_refusal_log_ = now;
    refusals_since_log_ = 0;
  }
  if (refusing_->load(std::memory_order_relaxed) >= kMaxRefusing) {
    // Enough goaways are being written: this one is closed at once (the client sees the
    // connection closed, and connections_refused_at_once counts it).
    counters_.connections_refused_at_once.fetch_add(1, std::memory_order_relaxed);
    boost::system::error_code ignored;
    socket.close(ignored);
    return;
  }
  refusing_->fetch_add(1, std::memory_order_relaxed);
  auto ex = socket.get_executor();
  asio::co_spawn(
      ex,
      send_goaway_and_close(std::move(socket),
                            Error(ErrorCode::kResourceExhausted,
                                  fmt::format("the server has {} connections open, the limit of "
                                              "max-connections; try again later",
                                              max_connections_)),
                            tls ? options_.tls_context : nullptr, options_.tls_handshake_timeout),
      [refusing = refusing_](std::exception_ptr) {
        refusing->fetch_sub(1, std::memory_order_relaxed);
      });
}

void Server::session_closed(uint64_t id) {
  std::function<void()> done;
  {
    std::lock_guard lock(mu_);
    if (sessions_.erase(id) == 0) return;
    counters_.connections.fetch_sub(1, std::memory_order_relaxed);
    if (stopping_ && sessions_.empty()) done = std::exchange(stop_done_, nullptr);
  }
  if (done) {
    asio::post(stop_timer_.get_executor(), [this] { stop_timer_.cancel(); });
    asio::post(io_, std::move(done));
  }
}

void Server::stop(std::function<void()> done) {
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
    if (sessions_.empty()) {
      asio::post(io_, std::move(done));
    } else {
      stop_done_ = std::move(done);
    }
  }
  log::info("server: stopping; {} connections to close", open.size());
  asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
    tls_acceptor_.close(ec);
    stop_timer_.expires_after(options_.shutdown_timeout);
    stop_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) force_close_all();
    });
  });
  for (auto& s : open) s->shutdown();
}

ConnectionFootprint Server::footprint() const {
  ConnectionFootprint f;
  for (size_t i = 0; i < kConnectionStates; ++i) {
    f.by_state[i] = counters_.by_state[i].load(std::memory_order_relaxed);
  }
  f.buffered_bytes = counters_.buffered_bytes.load(std::memory_order_relaxed);
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(mu_);
    open.reserve(sessions_.size());
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (const auto& s : open) {
    f.buffered_bytes_max = std::max<uint64_t>(f.buffered_bytes_max, s->buffered_bytes());
  }
  return f;
}

void Server::force_close_all() { for_each_session(&Session::abort); }

void Server::for_each_session(void (Session::*f)()) {
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) (s.get()->*f)();
}

}  // namespace witmq::net
