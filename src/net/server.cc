#include "net/server.h"

#include <fmt/format.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
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
// connection, and the client could lose the goaway).
asio::awaitable<void> send_goaway_and_close(tcp::socket s, Error error) {
  auto socket = std::make_shared<tcp::socket>(std::move(s));
  boost::system::error_code ec;
  Buffer out;
  encode_error(out, 0, FrameType::kGoaway, error);
  co_await asio::async_write(*socket, asio::buffer(out),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) {
    socket->shutdown(tcp::socket::shutdown_send, ec);
    asio::steady_timer timer(socket->get_executor(), kRefuseLinger);
    timer.async_wait([socket](boost::system::error_code) {
      boost::system::error_code ignored;
      socket->close(ignored);
    });
    std::array<uint8_t, 4096> scratch;
    while (!ec) {
      co_await socket->async_read_some(asio::buffer(scratch),
                                       asio::redirect_error(asio::use_awaitable, ec));
    }
    timer.cancel();
  }
  socket->close(ec);
}

}  // namespace

Server::Server(asio::io_context& io, broker::Broker& broker, ServerOptions options)
    : io_(io),
      broker_(broker),
      options_(std::move(options)),
      acceptor_(asio::make_strand(io)),
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
}

Server::~Server() {
  force_close_all();
  admin_pool_.join();
}

Status Server::listen() {
  auto endpoint = open_listener(io_, acceptor_, options_.host, options_.port, "listen");
  if (!endpoint) return std::move(endpoint).error();
  endpoint_ = *endpoint;
  accept_loop();
  return ok_status();
}

tcp::endpoint Server::local_endpoint() const { return endpoint_; }

void Server::accept_loop() {
  asio::co_spawn(
      acceptor_.get_executor(),
      [this]() -> asio::awaitable<void> {
        for (;;) {
          boost::system::error_code ec;
          tcp::socket socket(asio::make_strand(io_));
          co_await acceptor_.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
          if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
          if (ec) {
            // Out of file descriptors and the like: wait a little rather than spin.
            log::warn("accept on {}: {}", endpoint_.address().to_string(), ec.message());
            asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(100));
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
              session = std::make_shared<Session>(id, std::move(socket), *context_);
              sessions_.emplace(id, session);
            }
          }
          if (!session) {
            refuse(std::move(socket));
            continue;
          }
          counters_.connections.fetch_add(1, std::memory_order_relaxed);
          counters_.connections_total.fetch_add(1, std::memory_order_relaxed);
          session->start();
        }
      },
      asio::detached);
}

void Server::refuse(tcp::socket socket) {
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
                                              options_.max_connections))),
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
    stop_timer_.expires_after(options_.shutdown_timeout);
    stop_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) force_close_all();
    });
  });
  for (auto& s : open) s->shutdown();
}

void Server::force_close_all() {
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) s->abort();
}

}  // namespace witmq::net
