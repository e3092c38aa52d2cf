#include "net/http_server.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cctype>
#include <optional>
#include <string>
#include <vector>

#include "broker/async.h"
#include "common/log.h"
#include "net/listener.h"
#include "net/tls.h"

namespace witmq::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

// After an error answer that closes the connection (the client may still be sending a body the
// server will not read), how long the client gets to read it before the socket closes: closing
// with unread input resets the connection and can lose the answer.
constexpr auto kLinger = std::chrono::seconds(2);
// Most bytes of a refused request read and dropped while lingering.
constexpr size_t kMaxLingerBytes = 1 << 20;
// The most a connection's read buffer holds beyond the header limit: one read's worth. The
// parser takes body bytes out of the buffer as they come, so only a line it cannot finish (a
// chunk header with endless extensions, trailers that never end) fills it, and that is refused.
constexpr size_t kReadChunk = 64 << 10;
// Connections over the connection limit being answered at once. Each gets kLinger to send a
// health probe (answered) or anything else (503); one more pushes the oldest out, so that a
// probe arriving in a flood still gets read.
constexpr size_t kMaxRefusing = 64;
// The largest request line and headers a connection over the limit may send.
constexpr size_t kRefusalHeaderBytes = 8 << 10;
// At most one log line about refused connections this often.
constexpr auto kRefusalLogInterval = std::chrono::seconds(10);

size_t read_buffer_limit(const HttpServerOptions& o) { return o.max_header_bytes + kReadChunk; }

HttpSources with_options(HttpSources sources, const HttpServerOptions& o) {
  sources.metrics_max_channels = o.metrics_max_channels;
  sources.allowed_hosts = o.allowed_hosts;
  return sources;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

http::response<http::string_body> to_beast(HttpResponse r, unsigned version, bool keep_alive,
                                           bool head) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "witmqd");
  res.set(http::field::content_type, r.content_type);
  for (auto& [k, v] : r.headers) res.set(k, v);
  res.keep_alive(keep_alive);
  res.body() = std::move(r.body);
  res.prepare_payload();
  // A HEAD answer announces the length of the body it leaves out.
  if (head) res.body().clear();
  return res;
}

// Room set aside in a shared count of bytes (HttpCounters::body_bytes) for as long as it lives.
class BodyRoom {
 public:
  explicit BodyRoom(std::atomic<uint64_t>& total) : total_(total) {}
  ~BodyRoom() { total_.fetch_sub(held_, std::memory_order_relaxed); }
  BodyRoom(const BodyRoom&) = delete;
  BodyRoom& operator=(const BodyRoom&) = delete;

  // Takes `bytes` unless the total would pass `limit`.
  bool take(uint64_t bytes, uint64_t limit) {
    if (total_.fetch_add(bytes, std::memory_order_relaxed) + bytes > limit) {
      total_.fetch_sub(bytes, std::memory_order_relaxed);
      return false;
    }
    held_ += bytes;
    return true;
  }

 private:
  std::atomic<uint64_t>& total_;
  uint64_t held_ = 0;
};

// The answer to a request the parser refused, and whether reading may go on.
HttpResponse refusal(const boost::system::error_code& ec, const HttpServerOptions& o) {
  if (ec == http::error::body_limit) {
    return error_response(
        413, ErrorCode::kResourceExhausted,
        fmt::format("the request body is larger than the limit of {} bytes", o.max_body_bytes));
  }
  if (ec == http::error::buffer_overflow) {
    return error_response(
        431, ErrorCode::kResourceExhausted,
        fmt::format("a line of the request (a chunk header or a trailer) is longer than the "
                    "limit of {} bytes",
                    read_buffer_limit(o)));
  }
  if (ec == http::error::header_limit) {
    return error_response(
        431, ErrorCode::kResourceExhausted,
        fmt::format("the request line and headers are larger than the limit of {} bytes",
                    o.max_header_bytes));
  }
  return error_response(400, ErrorCode::kInvalidArgument,
                        fmt::format("the request is not valid HTTP/1.1: {}", ec.message()));
}

// Runs `f` on `pool` and completes with its result on the awaiting coroutine's executor. An
// initiation (like broker/async.h's), not a coroutine.
template <typename F>
auto on_pool(asio::thread_pool& pool, F f) {
  using T = decltype(f());
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(T)>(
      [&pool](auto handler, F f) {
        asio::post(pool, [f = std::move(f), handler = std::move(handler)]() mutable {
          auto ex = asio::get_associated_executor(handler);
          asio::post(ex, [handler = std::move(handler), result = f()]() mutable {
            handler(std::move(result));
          });
        });
      },
      asio::use_awaitable, std::move(f));
}

// A request whose Transfer-Encoding is anything but "chunked" alone: its body length cannot be
// determined the way a proxy in front may have determined it (RFC 9112 6.1, 6.3). Read as if it
// had no body, the rest would be taken for another request, one the proxy never saw: refused, and
// the connection closed, instead.
std::optional<HttpResponse> framing_refusal(const http::request_header<>& head) {
  std::vector<std::string> codings;
  for (const auto& field : head) {
    if (field.name() != http::field::transfer_encoding) continue;
    for (const auto& coding : http::token_list(field.value())) {
      codings.push_back(lower(std::string_view(coding.data(), coding.size())));
    }
  }
  if (codings.empty() || (codings.size() == 1 && codings[0] == "chunked")) return std::nullopt;
  std::string list;
  for (const auto& c : codings) list += fmt::format("{}{}", list.empty() ? "" : ", ", c);
  if (codings.back() != "chunked") {
    return error_response(
        400, ErrorCode::kInvalidArgument,
        fmt::format("Transfer-Encoding is '{}': chunked must be its last coding, or the body's "
                    "length is unknown",
                    list));
  }
  return error_response(501, ErrorCode::kUnsupported,
                        fmt::format("Transfer-Encoding is '{}': the only transfer coding "
                                    "accepted is chunked",
                                    list));
}

bool is_disconnect(const boost::system::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::operation_aborted || ec == beast::error::timeout ||
         ec == asio::error::connection_reset || ec == http::error::partial_message ||
         ec == asio::ssl::error::stream_truncated;
}

}  // namespace

// One HTTP connection: a coroutine on the connection's strand reading a request, routing it and
// writing the response, until the client closes, the connection idles out or the server stops. On
// the HTTPS listener the same loop runs over TLS once the handshake is done.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  // With `tls` (the HTTPS listener's context, which outlives the session) the connection speaks
  // TLS.
  HttpSession(uint64_t id, tcp::socket socket, asio::ssl::context* tls,
              const HttpServerOptions& options, Router& router, asio::thread_pool& pool,
              HttpCounters& counters, std::function<void(uint64_t)> on_closed)
      : id_(id),
        options_(options),
        router_(router),
        pool_(pool),
        counters_(counters),
        on_closed_(std::move(on_closed)) {
    if (tls) {
      tls_.emplace(beast::tcp_stream(std::move(socket)), *tls);
    } else {
      plain_.emplace(std::move(socket));
    }
  }

  void start() {
    asio::co_spawn(
        tcp().get_executor(), [self = shared_from_this()] { return self->run(); }, asio::detached);
  }

  // Graceful: a request being served is answered (with Connection: close); an idle connection
  // closes now.
  void shutdown() {
    asio::post(tcp().get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      if (!self->busy_) self->tcp().cancel();
    });
  }

  // After a reload: a connection whose last request came from an identity the reload revoked
  // closes (once the request it serves, if any, is answered).
  void revalidate() {
    asio::post(tcp().get_executor(), [self = shared_from_this()] {
      if (!self->access_ || !self->access_->revoked()) return;
      log::info(
          "http connection {}: identity '{}' was revoked by a configuration reload; "
          "closing it",
          self->id_, self->access_->name());
      self->stopping_ = true;
      if (!self->busy_) self->tcp().cancel();
    });
  }

  void abort() {
    asio::post(tcp().get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      boost::system::error_code ec;
      self->tcp().socket().close(ec);
    });
  }

 private:
  // The TCP stream: plain_, or the layer under tls_.
  beast::tcp_stream& tcp() { return tls_ ? tls_->next_layer() : *plain_; }

  // Whatever happens to the connection, it ends with on_closed_: its slot is released.
  asio::awaitable<void> run() {
    try {
      auto serving = handshake_and_serve();
      co_await std::move(serving);
    } catch (const std::exception& e) {
      log::error("http connection {}: closed after an unexpected failure: {}", id_, e.what());
    } catch (...) {
      log::error("http connection {}: closed after an unexpected failure", id_);
    }
    boost::system::error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
    tcp().socket().close(ignored);
    on_closed_(id_);
  }

  asio::awaitable<void> handshake_and_serve() {
    boost::system::error_code ec;
    if (tls_) {
      tcp().expires_after(options_.tls_handshake_timeout);
      co_await tls_->async_handshake(asio::ssl::stream_base::server,
                                     asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        log::debug("http connection {}: TLS handshake failed: {}", id_,
                   handshake_failure(tls_->native_handle(), ec));
      } else {
        certificate_cn_ = verified_peer_cn(tls_->native_handle());
        auto serving = serve(*tls_);
        co_await std::move(serving);
        // close_notify, bounded: a client that does not answer it is closed regardless.
        tcp().expires_after(kLinger);
        co_await tls_->async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
      }
    } else {
      auto serving = serve(*plain_);
      co_await std::move(serving);
    }
  }

  template <typename Stream>
  asio::awaitable<void> serve(Stream& stream) {
    beast::flat_buffer buffer(read_buffer_limit(options_));
    boost::system::error_code ec;
    while (!stopping_) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(options_.max_body_bytes);
      parser.header_limit(options_.max_header_bytes);
      size_t n = 0;
      if (buffer.size() == 0) {
        // Between requests the connection may idle; once a request starts, its headers have
        // header_timeout to arrive.
        tcp().expires_after(options_.idle_timeout);
        const auto space = buffer.prepare(kReadChunk);
        n = co_await stream.async_read_some(space, asio::redirect_error(asio::use_awaitable, ec));
        buffer.commit(n);
        counters_.bytes_in.fetch_add(n, std::memory_order_relaxed);
        if (ec) break;  // closed by the client, idled out or stopping
      }
      tcp().expires_after(std::min(options_.header_timeout, options_.idle_timeout));
      n = co_await http::async_read_header(stream, buffer, parser,
                                           asio::redirect_error(asio::use_awaitable, ec));
      counters_.bytes_in.fetch_add(n, std::memory_order_relaxed);
      HttpRequest r;
      if (!ec) {
        r = request_head(parser.get());
        std::optional<HttpResponse> refused = framing_refusal(parser.get());
        // The parser takes such a request as done: what follows its headers is unread.
        const bool unread = refused.has_value();
        // Authenticated on its headers: a client without the right token sends no body.
        if (!refused) refused = router_.admit(r, &access_);
        if (refused) {
          counters_.requests_total.fetch_add(1, std::memory_order_relaxed);
          counters_.bad_requests_total.fetch_add(1, std::memory_order_relaxed);
          const unsigned version = parser.get().version();
          const bool head = parser.get().method() == http::verb::head;
          auto writing = write(stream, std::move(*refused), version, false, head);
          co_await std::move(writing);
          if (unread || !parser.is_done()) {
            auto lingering = linger(stream);
            co_await std::move(lingering);
          }
          break;
        }
      }
      // The room the body may take among all connections' bodies, held until the answer is
      // written.
      BodyRoom room(counters_.body_bytes);
      if (!ec && !parser.is_done()) {
        const uint64_t wanted = parser.content_length().value_or(options_.max_body_bytes);
        if (!room.take(wanted, options_.max_buffered_body_bytes)) {
          counters_.requests_total.fetch_add(1, std::memory_order_relaxed);
          counters_.bodies_refused.fetch_add(1, std::memory_order_relaxed);
          const unsigned version = parser.get().version();
          const bool head = parser.get().method() == http::verb::head;
          HttpResponse busy = error_response(
              503, ErrorCode::kResourceExhausted,
              fmt::format("the server is reading request bodies of {} bytes together and this "
                          "one ({} bytes) would pass max-input-buffer-bytes {}: try again later",
                          counters_.body_bytes.load(std::memory_order_relaxed), wanted,
                          options_.max_buffered_body_bytes));
          busy.headers.emplace_back("retry-after", "1");
          auto writing = write(stream, std::move(busy), version, false, head);
          co_await std::move(writing);
          auto lingering = linger(stream);
          co_await std::move(lingering);
          break;
        }
        // curl and others wait for 100 Continue before sending a large body.
        const auto expect = parser.get()[http::field::expect];
        if (beast::iequals(expect, "100-continue")) {
          http::response<http::empty_body> cont{http::status::continue_, parser.get().version()};
          n = co_await http::async_write(stream, cont,
                                         asio::redirect_error(asio::use_awaitable, ec));
          counters_.bytes_out.fetch_add(n, std::memory_order_relaxed);
        }
        if (!ec) {
          tcp().expires_after(options_.idle_timeout);
          n = co_await http::async_read(stream, buffer, parser,
                                        asio::redirect_error(asio::use_awaitable, ec));
          counters_.bytes_in.fetch_add(n, std::memory_order_relaxed);
        }
      }
      if (ec) {
        if (is_disconnect(ec)) break;
        counters_.requests_total.fetch_add(1, std::memory_order_relaxed);
        counters_.bad_requests_total.fetch_add(1, std::memory_order_relaxed);
        log::debug("http connection {}: refused request: {}", id_, ec.message());
        auto writing = write(stream, refusal(ec, options_), 11, false, false);
        co_await std::move(writing);
        auto lingering = linger(stream);
        co_await std::move(lingering);
        break;
      }
      counters_.requests_total.fetch_add(1, std::memory_order_relaxed);
      busy_ = true;
      auto req = parser.release();
      const bool keep_alive = req.keep_alive();
      const unsigned version = req.version();
      const bool head = req.method() == http::verb::head;
      r.body = std::move(req.body());
      // Awaited operations are made in statements of their own and awaited as named values:
      // GCC 12 mishandles temporaries inside co_await expressions.
      Routed routed = router_.route(std::move(r));
      if (routed.prepare) {
        auto preparing = on_pool(pool_, std::move(routed.prepare));
        routed = co_await std::move(preparing);
      }
      HttpResponse response;
      if (routed.response) {
        response = std::move(*routed.response);
      } else if (routed.blocking) {
        auto job = on_pool(pool_, std::move(routed.blocking));
        response = co_await std::move(job);
      } else {
        Publish& p = *routed.publish;
        std::vector<Message> batch;
        batch.push_back(std::move(p.message));
        // Answered once the send is durable per the channel's durability.
        auto sending = broker::async_send(router_.broker(), router_.client(), p.channel,
                                          std::move(batch), asio::use_awaitable);
        const Status st = co_await std::move(sending);
        response = router_.published(p, st);
      }
      if (response.status >= 400 && response.status < 500) {
        counters_.bad_requests_total.fetch_add(1, std::memory_order_relaxed);
      }
      auto writing = write(stream, std::move(response), version, keep_alive && !stopping_, head);
      const bool ok = co_await std::move(writing);
      busy_ = false;
      if (!ok || !keep_alive) break;
    }
  }

  // The request as the router sees it, without its body (not read yet).
  HttpRequest request_head(const http::request<http::string_body>& req) const {
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& field : req) {
      const auto name = field.name_string();
      r.headers.emplace_back(lower(std::string_view(name.data(), name.size())),
                             std::string(field.value()));
    }
    r.certificate_cn = certificate_cn_;
    r.secure = tls_.has_value();
    return r;
  }

  template <typename Stream>
  asio::awaitable<bool> write(Stream& stream, HttpResponse response, unsigned version,
                              bool keep_alive, bool head) {
    auto res = to_beast(std::move(response), version, keep_alive, head);
    boost::system::error_code ec;
    tcp().expires_after(options_.idle_timeout);
    const size_t n =
        co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    counters_.bytes_out.fetch_add(n, std::memory_order_relaxed);
    co_return !ec;
  }

  // Stops sending, then reads and drops what the client still sends until it closes (bounded in
  // time and bytes), so that it can read the answer before the socket closes.
  template <typename Stream>
  asio::awaitable<void> linger(Stream& stream) {
    boost::system::error_code ec;
    tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    tcp().expires_after(kLinger);
    std::array<char, 8192> scratch;
    size_t total = 0;
    while (!ec && total < kMaxLingerBytes) {
      total += co_await stream.async_read_some(asio::buffer(scratch),
                                               asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  const uint64_t id_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  // The CN of the verified client certificate (HTTPS with tls-client-cert on).
  std::optional<std::string> certificate_cn_;
  // The identity of the last request (null without an authenticator or before one).
  std::shared_ptr<auth::Access> access_;
  const HttpServerOptions& options_;
  Router& router_;
  asio::thread_pool& pool_;
  HttpCounters& counters_;
  std::function<void(uint64_t)> on_closed_;
  bool busy_ = false;
  bool stopping_ = false;
};

HttpServer::HttpServer(asio::io_context& io, broker::Broker& broker, const Server& protocol,
                       HttpServerOptions options, HttpSources sources)
    : io_(io),
      options_(std::move(options)),
      authenticator_(sources.authenticator),
      router_(std::make_unique<Router>(broker, protocol, counters_,
                                       with_options(std::move(sources), options_))),
      acceptor_(asio::make_strand(io)),
      tls_acceptor_(acceptor_.get_executor()),
      stop_timer_(acceptor_.get_executor()) {
  if (authenticator_) {
    revoke_listener_ = authenticator_->add_replace_listener([this] {
      for (auto& s : open_sessions()) s->revalidate();
    });
  }
}

HttpServer::~HttpServer() {
  if (authenticator_) authenticator_->remove_replace_listener(revoke_listener_);
  force_close_all();
  admin_pool_.join();
}

Status HttpServer::listen() {
  if (options_.enabled) {
    auto endpoint = open_listener(io_, acceptor_, options_.host, options_.port, "http-listen");
    if (!endpoint) return std::move(endpoint).error();
    endpoint_ = *endpoint;
  }
  if (options_.tls_context) {
    auto endpoint =
        open_listener(io_, tls_acceptor_, options_.tls_host, options_.tls_port, "https-listen");
    if (!endpoint) {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      return std::move(endpoint).error();
    }
    tls_endpoint_ = *endpoint;
  }
  if (options_.enabled) accept_loop(acceptor_, false);
  if (options_.tls_context) accept_loop(tls_acceptor_, true);
  return ok_status();
}

tcp::endpoint HttpServer::local_endpoint() const { return endpoint_; }

tcp::endpoint HttpServer::tls_endpoint() const { return tls_endpoint_; }

void HttpServer::accept_loop(tcp::acceptor& acceptor, bool tls) {
  asio::co_spawn(
      acceptor.get_executor(),
      [this, &acceptor, tls]() -> asio::awaitable<void> {
        for (;;) {
          boost::system::error_code ec;
          tcp::socket socket(asio::make_strand(io_));
          co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
          if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
          if (ec) {
            log::warn("{} accept: {}", tls ? "https" : "http", ec.message());
            asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            continue;
          }
          socket.set_option(tcp::no_delay(true), ec);
          std::shared_ptr<HttpSession> session;
          {
            std::lock_guard lock(mu_);
            if (stopping_) continue;
            if (sessions_.size() < options_.max_connections) {
              const uint64_t id = next_session_++;
              session = std::make_shared<HttpSession>(
                  id, std::move(socket), tls ? options_.tls_context.get() : nullptr, options_,
                  *router_, admin_pool_, counters_, [this](uint64_t id) { session_closed(id); });
              sessions_.emplace(id, session);
            }
          }
          if (!session) {
            refused(std::move(socket), tls);
            continue;
          }
          counters_.connections.fetch_add(1, std::memory_order_relaxed);
          counters_.connections_total.fetch_add(1, std::memory_order_relaxed);
          session->start();
        }
      },
      asio::detached);
}

void HttpServer::refused(tcp::socket socket, bool tls) {
  counters_.connections_refused.fetch_add(1, std::memory_order_relaxed);
  ++refusals_unlogged_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_refusal_log_ >= kRefusalLogInterval) {
    log::warn(
        "refused {} HTTP connections since the last such line: the limit of {} connections "
        "is reached (http-max-connections)",
        refusals_unlogged_, options_.max_connections);
    refusals_unlogged_ = 0;
    last_refusal_log_ = now;
  }
  // Answering costs a descriptor for up to two kLinger periods (and a TLS handshake): only so
  // many at once. One more ends the oldest: shutdown() makes its pending operation fail, and its
  // coroutine closes it.
  uint64_t id = 0;
  {
    std::lock_guard lock(refusing_->mu);
    if (refusing_->fds.size() >= kMaxRefusing) {
      ::shutdown(refusing_->fds.begin()->second, SHUT_RDWR);
      refusing_->fds.erase(refusing_->fds.begin());
    }
    id = refusing_->next++;
    refusing_->fds.emplace(id, socket.native_handle());
  }
  auto ex = socket.get_executor();
  asio::co_spawn(ex, refuse(std::move(socket), tls, refusing_, id), asio::detached);
}

asio::awaitable<void> HttpServer::refuse(tcp::socket socket, bool tls,
                                         std::shared_ptr<Refusals> refusals, uint64_t id) {
  boost::system::error_code ec;
  // Declared after the stream, so destroyed before it: the descriptor leaves the registry before
  // it is closed (and its number can be reused). The registry is shared: this frame may be
  // destroyed with the io_context, after the server.
  struct Forget {
    std::shared_ptr<Refusals> refusals;
    uint64_t id;
    ~Forget() {
      std::lock_guard lock(refusals->mu);
      refusals->fds.erase(id);
    }
  };
  try {
    if (tls) {
      beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)),
                                                  *options_.tls_context);
      Forget forget{refusals, id};
      beast::get_lowest_layer(stream).expires_after(
          std::min<std::chrono::milliseconds>(kLinger, options_.tls_handshake_timeout));
      co_await stream.async_handshake(asio::ssl::stream_base::server,
                                      asio::redirect_error(asio::use_awaitable, ec));
      if (!ec) {
        beast::get_lowest_layer(stream).expires_after(kLinger);
        auto answering = answer_refused(stream);
        co_await std::move(answering);
      }
      beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
    } else {
      beast::tcp_stream stream(std::move(socket));
      Forget forget{refusals, id};
      stream.expires_after(kLinger);
      auto answering = answer_refused(stream);
      co_await std::move(answering);
      stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  } catch (const std::exception& e) {
    log::error("http: refusing a connection failed: {}", e.what());
  } catch (...) {
    log::error("http: refusing a connection failed");
  }
}

template <typename Stream>
asio::awaitable<void> HttpServer::answer_refused(Stream& stream) {
  boost::system::error_code ec;
  beast::flat_buffer buffer(kRefusalHeaderBytes + kReadChunk);
  http::request_parser<http::empty_body> parser;
  parser.header_limit(kRefusalHeaderBytes);
  co_await http::async_read_header(stream, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
  std::optional<HttpResponse> answer;
  unsigned version = 11;
  bool head = false;
  if (!ec) {
    version = parser.get().version();
    head = parser.get().method() == http::verb::head;
    HttpRequest r;
    r.method = std::string(parser.get().method_string());
    r.target = std::string(parser.get().target());
    // Health probes are answered even at the limit: a flood of other connections must not make
    // a healthy server look dead.
    answer = router_->probe(r);
  }
  if (!answer) {
    answer = error_response(
        503, ErrorCode::kResourceExhausted,
        fmt::format("the HTTP server has {} connections open, the limit; try again later",
                    options_.max_connections));
  }
  auto res = to_beast(std::move(*answer), version, false, head);
  co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
}

void HttpServer::session_closed(uint64_t id) {
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

void HttpServer::stop(std::function<void()> done) {
  router_->set_stopping();
  std::vector<std::shared_ptr<HttpSession>> open;
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
  log::info("http: stopping; {} connections to close", open.size());
  asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
    tls_acceptor_.close(ec);
    stop_timer_.expires_after(options_.shutdown_timeout);
    stop_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      force_close_all();
      std::function<void()> done;
      {
        std::lock_guard lock(mu_);
        done = std::exchange(stop_done_, nullptr);
      }
      if (done) done();
    });
  });
  for (auto& s : open) s->shutdown();
}

std::vector<std::shared_ptr<HttpSession>> HttpServer::open_sessions() {
  std::vector<std::shared_ptr<HttpSession>> open;
  std::lock_guard lock(mu_);
  for (auto& [id, weak] : sessions_) {
    if (auto s = weak.lock()) open.push_back(std::move(s));
  }
  return open;
}

void HttpServer::force_close_all() {
  for (auto& s : open_sessions()) s->abort();
}

}  // namespace witmq::net
