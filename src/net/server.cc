#include "net/server.h"

#include <fmt/format.h>

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

Server::Server(asio::io_context& io, broker::Broker& broker, ServerOptions options)
    : io_(io),
      broker_(broker),
      options_(std::move(options)),
      acceptor_(asio::make_strand(io)),
      tls_acceptor_(acceptor_.get_executor()),
      stop_timer_(acceptor_.get_executor()) {
  admin_options_.default_channel = options_.default_channel;
  admin_options_.max_browse_messages = options_.max_receive_messages;
  const auto started = std::chrono::steady_clock::now();
  admin_options_.server_counters = [this, started] {
    const auto uptime = std::chrono::steady_clock::now() - started;
    nlohmann::json j{
        {"server", options_.server_name},
        {"uptime-ms", std::chrono::duration_cast<std::chrono::milliseconds>(uptime).count()},
        {"connections", counters_.connections.load()},
        {"connections-total", counters_.connections_total.load()},
        {"connections-refused", counters_.connections_refused.load()},
        {"requests-total", counters_.requests_total.load()},
        {"malformed-total", counters_.malformed_total.load()},
        {"messages-in", counters_.messages_in.load()},
        {"messages-out", counters_.messages_out.load()},
        {"bytes-in", counters_.bytes_in.load()},
        {"bytes-out", counters_.bytes_out.load()},
    };
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
  force_close_all();
  admin_pool_.join();
}

Status Server::listen() {
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
            if (sessions_.size() < options_.max_connections) {
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
  log::warn("refusing a connection: {} connections are open, the limit is max-connections {}",
            options_.max_connections, options_.max_connections);
  auto ex = socket.get_executor();
  asio::co_spawn(
      ex,
      send_goaway_and_close(std::move(socket),
                            Error(ErrorCode::kResourceExhausted,
                                  fmt::format("the server has {} connections open, the limit of "
                                              "max-connections; try again later",
                                              options_.max_connections)),
                            tls ? options_.tls_context : nullptr, options_.tls_handshake_timeout),
      asio::detached);
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
