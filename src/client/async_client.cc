#include "client/async_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "client/admin_json.h"
#include "client/tls_context.h"

namespace witmq::client {

namespace asio = boost::asio;
using asio::use_awaitable;

namespace {

// The frame limit before connect-ok says otherwise: the protocol's default.
constexpr uint32_t kDefaultMaxFrameBytes = 16u << 20;
// The read buffer starts this large and is compacted when less than kMinReadRoom is left at its
// end, so a read is never tiny.
constexpr size_t kInitialReadBuffer = 256 << 10;
constexpr size_t kMinReadRoom = 64 << 10;

Error unexpected_reply(std::string_view what, const net::Frame& frame) {
  return Error(ErrorCode::kInternal,
               fmt::format("{}: the server answered with an unexpected '{}' frame", what,
                           net::frame_type_name(frame.type())));
}

// Turns a reply frame into the call's result: `Ok` -> extract(ok), error -> its Error, anything
// else -> kInternal naming the frame.
template <typename Ok, typename T, typename Extract>
UniqueFunction<void(Result<net::Frame>)> expect(std::string_view what, Callback<T> done,
                                                Extract extract) {
  return [what, done = std::move(done), extract](Result<net::Frame> r) mutable {
    if (!r.ok()) {
      done(std::move(r).error());
      return;
    }
    if (auto* ok = std::get_if<Ok>(&r->body)) {
      done(extract(std::move(*ok)));
    } else if (auto* e = std::get_if<net::ErrorReply>(&r->body)) {
      done(std::move(e->error));
    } else {
      done(unexpected_reply(what, *r));
    }
  };
}

template <typename Ok>
UniqueFunction<void(Result<net::Frame>)> expect_empty(std::string_view what, StatusCallback done) {
  return expect<Ok, void>(what, std::move(done), [](Ok&&) { return ok_status(); });
}

}  // namespace

AsyncClient::AsyncClient(PrivateTag, asio::any_io_executor executor, Options options)
    : strand_(asio::make_strand(std::move(executor))),
      socket_(strand_),
      connect_timer_(strand_),
      keepalive_timer_(strand_),
      options_(std::move(options)) {
  info_.limits.max_frame_bytes = kDefaultMaxFrameBytes;
}

AsyncClient::~AsyncClient() = default;

void AsyncClient::connect(asio::any_io_executor executor, Endpoint endpoint, std::string name,
                          Options options, Callback<Pointer> done) {
  auto self = std::make_shared<AsyncClient>(PrivateTag{}, std::move(executor), std::move(options));
  asio::co_spawn(self->strand_,
                 self->run_connect(self, std::move(endpoint), std::move(name), std::move(done)),
                 asio::detached);
}

asio::awaitable<void> AsyncClient::run_connect(Pointer self, Endpoint endpoint, std::string name,
                                               Callback<Pointer> done) {
  std::string where = fmt::format("{}:{}", endpoint.host, endpoint.port);
  if (options_.connect_timeout.count() > 0) {
    connect_timer_.expires_after(options_.connect_timeout);
    connect_timer_.async_wait(
        [self, where, ms = options_.connect_timeout.count()](boost::system::error_code ec) {
          if (ec) return;  // cancelled: connected in time, or failed already
          self->fail(Error(ErrorCode::kUnavailable,
                           fmt::format("connect to {}: not connected within {} ms", where, ms)));
        });
  }

  boost::system::error_code ec;
  asio::ip::tcp::resolver resolver(strand_);
  auto endpoints = co_await resolver.async_resolve(endpoint.host, std::to_string(endpoint.port),
                                                   asio::redirect_error(use_awaitable, ec));
  if (!ec && is_open()) {
    co_await asio::async_connect(socket_, endpoints, asio::redirect_error(use_awaitable, ec));
  }
  if (ec || !is_open()) {
    Error e = close_reason().value_or(
        Error(ErrorCode::kUnavailable, fmt::format("connect to {}: {}", where, ec.message())));
    fail(e);
    done(std::move(e));
    co_return;
  }
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  if (options_.tls.enabled) {
    Status st = ok_status();
    auto context = make_client_tls_context(options_.tls);
    if (!context) {
      st = std::move(context).error();
    } else {
      tls_context_ = std::move(*context);
      tls_.emplace(socket_, *tls_context_);
      st = prepare_client_tls(tls_->native_handle(), endpoint.host, options_.tls);
    }
    if (st.ok()) {
      co_await tls_->async_handshake(asio::ssl::stream_base::client,
                                     asio::redirect_error(use_awaitable, ec));
      if (ec || !is_open()) {
        st = close_reason().value_or(
            Error(ErrorCode::kUnavailable,
                  fmt::format("connect to {}: TLS handshake failed: {}", where,
                              client_handshake_failure(tls_->native_handle(), ec))));
      }
    }
    if (!st.ok()) {
      Error e = std::move(st).error();
      fail(e);
      done(std::move(e));
      co_return;
    }
  }

  net::Connect request{{net::kProtocolVersion}, std::move(name), options_.token};
  submit(
      "connect",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, request);
        return ok_status();
      },
      [self, done = std::move(done)](Result<net::Frame> r) mutable {
        self->connect_timer_.cancel();
        if (!r.ok()) {
          done(std::move(r).error());
          return;
        }
        auto* ok = std::get_if<net::ConnectOk>(&r->body);
        if (!ok) {
          Error e = unexpected_reply("connect", *r);
          if (auto* err = std::get_if<net::ErrorReply>(&r->body)) e = err->error;
          self->fail(e);
          done(std::move(e));
          return;
        }
        if (ok->version != net::kProtocolVersion) {
          Error e(ErrorCode::kUnsupported,
                  fmt::format("connect: the server picked protocol version {}, this client "
                              "speaks only {}",
                              ok->version, net::kProtocolVersion));
          self->fail(e);
          done(std::move(e));
          return;
        }
        self->info_ = ServerInfo{ok->version, std::move(ok->server), ok->limits};
        if (self->info_.limits.max_frame_bytes == 0) {
          self->info_.limits.max_frame_bytes = std::numeric_limits<uint32_t>::max();
        }
        self->limits_ = net::client_limits(ok->limits);
        if (ok->limits.idle_timeout_ms > 0) {
          asio::co_spawn(self->strand_, self->keepalive_loop(self), asio::detached);
        }
        done(self);
      });
  co_await read_loop(self);
}

asio::awaitable<void> AsyncClient::read_loop(Pointer /*self*/) {
  in_.resize(kInitialReadBuffer);
  size_t begin = 0;
  size_t end = 0;
  for (;;) {
    size_t need = 0;
    for (;;) {
      auto r = net::decode_frame(std::span<const uint8_t>(in_.data() + begin, end - begin),
                                 net::Side::kClient, limits_);
      if (auto* d = std::get_if<net::Decoded>(&r)) {
        begin += d->frame_bytes;
        dispatch(std::move(d->frame));
        if (!is_open()) co_return;
      } else if (auto* m = std::get_if<net::NeedMore>(&r)) {
        need = end - begin + m->bytes;
        break;
      } else {
        const auto& e = std::get<net::DecodeError>(r);
        fail(Error(ErrorCode::kInternal,
                   fmt::format("the server sent a malformed frame: {}", e.error.to_string())));
        co_return;
      }
    }
    if (begin == end) {
      begin = end = 0;
    } else if (begin > 0 && (in_.size() - end < kMinReadRoom || need > in_.size() - begin)) {
      std::memmove(in_.data(), in_.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    if (need > in_.size() - begin) in_.resize(begin + need);

    boost::system::error_code ec;
    const auto into = asio::buffer(in_.data() + end, in_.size() - end);
    size_t n = 0;
    if (tls_) {
      n = co_await tls_->async_read_some(into, asio::redirect_error(use_awaitable, ec));
    } else {
      n = co_await socket_.async_read_some(into, asio::redirect_error(use_awaitable, ec));
    }
    if (ec) {
      // A TLS server that closes without close_notify ends the stream "truncated": the
      // protocol's own frames (goaway) say whether anything was lost.
      fail(Error(ErrorCode::kUnavailable,
                 ec == asio::error::eof || ec == asio::ssl::error::stream_truncated
                     ? std::string("connection lost: the server closed the connection")
                     : fmt::format("connection lost: {}", ec.message())));
      co_return;
    }
    end += n;
  }
}

asio::awaitable<void> AsyncClient::keepalive_loop(Pointer /*self*/) {
  auto period = std::chrono::milliseconds(std::max<uint32_t>(info_.limits.idle_timeout_ms / 3, 1));
  while (is_open()) {
    keepalive_timer_.expires_after(period);
    boost::system::error_code ec;
    co_await keepalive_timer_.async_wait(asio::redirect_error(use_awaitable, ec));
    if (ec || !is_open()) co_return;
    ping(0, [](Result<uint64_t>) {});
  }
}

bool AsyncClient::is_open() const {
  std::lock_guard lock(mu_);
  return !closed_.has_value();
}

std::optional<Error> AsyncClient::close_reason() const {
  std::lock_guard lock(mu_);
  return closed_;
}

size_t AsyncClient::pending_requests() const {
  std::lock_guard lock(mu_);
  return pending_.size();
}

bool AsyncClient::stream_active() const {
  std::lock_guard lock(mu_);
  return stream_.id != 0;
}

uint32_t AsyncClient::next_id_locked() {
  // Bounded: at most pending_.size() + 2 ids are skipped.
  for (;;) {
    uint32_t id = next_id_++;
    if (id != 0 && id != stream_.id && !pending_.contains(id)) return id;
  }
}

template <typename Encode>
void AsyncClient::submit(std::string_view what, Encode&& encode, FrameCallback done,
                         uint32_t* id_out) {
  Error failure;
  bool failed = false;
  bool kick = false;
  {
    std::lock_guard lock(mu_);
    if (closed_) {
      failure = *closed_;
      failed = true;
    } else {
      uint32_t id = next_id_locked();
      size_t before = out_.size();
      Status st = encode(out_, id);
      size_t bytes = out_.size() - before;
      uint64_t limit = uint64_t{info_.limits.max_frame_bytes} + net::kLengthFieldBytes;
      if (st.ok() && (bytes == 0 || bytes > limit)) {
        st = Error(ErrorCode::kResourceExhausted,
                   fmt::format("{}: the frame would take {} bytes, over the server's "
                               "max-frame-bytes {} (+4)",
                               what, bytes, info_.limits.max_frame_bytes));
      }
      if (!st.ok()) {
        out_.resize(before);
        failure = std::move(st).error();
        failed = true;
      } else {
        pending_.emplace(id, std::move(done));
        if (id_out) *id_out = id;
        kick = !writing_;
        writing_ = true;
      }
    }
  }
  if (failed) {
    done(std::move(failure));
    return;
  }
  if (kick) asio::post(strand_, [self = shared_from_this()] { self->start_write(); });
}

void AsyncClient::start_write() {
  {
    std::lock_guard lock(mu_);
    if (out_.empty() || closed_) {
      writing_ = false;
      return;
    }
    write_buf_.clear();
    std::swap(out_, write_buf_);
  }
  auto written = [self = shared_from_this()](boost::system::error_code ec, size_t) {
    if (ec) {
      self->fail(Error(ErrorCode::kUnavailable,
                       fmt::format("connection lost while writing: {}", ec.message())));
      return;
    }
    self->start_write();
  };
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(write_buf_), std::move(written));
  } else {
    asio::async_write(socket_, asio::buffer(write_buf_), std::move(written));
  }
}

void AsyncClient::dispatch(net::Frame&& frame) {
  uint32_t id = frame.request_id;
  if (auto* d = std::get_if<net::Deliver>(&frame.body)) {
    handle_deliver(id, std::move(*d));
    return;
  }
  if (auto* e = std::get_if<net::StreamEnd>(&frame.body)) {
    handle_stream_end(id, std::move(e->error));
    return;
  }
  if (auto* g = std::get_if<net::Goaway>(&frame.body)) {
    fail(std::move(g->error));
    return;
  }
  FrameCallback done;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    // A reply to no request of ours: the server broke the protocol; nothing to complete.
    if (it == pending_.end()) return;
    done = std::move(it->second);
    pending_.erase(it);
  }
  done(std::move(frame));
}

void AsyncClient::handle_deliver(uint32_t id, net::Deliver&& deliver) {
  std::shared_ptr<StreamHandler> handler;
  {
    std::lock_guard lock(mu_);
    if (stream_.id != id || !stream_.handler) return;
    handler = stream_.handler;
  }
  (*handler)(Delivery{std::move(deliver.channel), std::move(deliver.messages)});
}

void AsyncClient::handle_stream_end(uint32_t id, Error&& error) {
  std::shared_ptr<StreamHandler> handler;
  {
    std::lock_guard lock(mu_);
    if (stream_.id != id) return;
    handler = std::move(stream_.handler);
    stream_ = Stream{};
  }
  if (handler) (*handler)(std::move(error));
}

void AsyncClient::fail(Error error) {
  std::unordered_map<uint32_t, FrameCallback> pending;
  std::shared_ptr<StreamHandler> handler;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = error;
    pending.swap(pending_);
    handler = std::move(stream_.handler);
    stream_ = Stream{};
    out_.clear();
  }
  boost::system::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  connect_timer_.cancel();
  keepalive_timer_.cancel();
  for (auto& [id, done] : pending) done(error);
  if (handler) (*handler)(error);
}

void AsyncClient::close() {
  asio::post(strand_, [self = shared_from_this()] {
    self->fail(Error(ErrorCode::kUnavailable, "client closed"));
  });
}

// ---- WIT operations ----------------------------------------------------------------------------

void AsyncClient::send(std::string_view channel, std::span<const Message> messages,
                       StatusCallback done) {
  const auto& limits = info_.limits;
  if (limits.max_send_messages != 0 && messages.size() > limits.max_send_messages) {
    done(Error(ErrorCode::kResourceExhausted,
               fmt::format("send to '{}': {} messages exceed the server's max-send-messages {}",
                           channel, messages.size(), limits.max_send_messages)));
    return;
  }
  if (limits.max_message_bytes != 0) {
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].data.size() > limits.max_message_bytes) {
        done(Error(ErrorCode::kResourceExhausted,
                   fmt::format("send to '{}': messages[{}] has {} data bytes, over the server's "
                               "max-message-bytes {}",
                               channel, i, messages[i].data.size(), limits.max_message_bytes)));
        return;
      }
    }
  }
  submit(
      "send",
      [&](net::Buffer& b, uint32_t id) {
        net::encode_send(b, id, channel, messages);
        return ok_status();
      },
      expect_empty<net::SendOk>("send", std::move(done)));
}

void AsyncClient::subscribe_try_receive(std::string_view channel, uint32_t timeout_ms,
                                        Callback<std::optional<std::vector<Message>>> done) {
  net::SubscribeTryReceive request{std::string(channel), timeout_ms};
  submit(
      "subscribe-try-receive",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, request);
        return ok_status();
      },
      expect<net::SubscribeTryReceiveOk, std::optional<std::vector<Message>>>(
          "subscribe-try-receive", std::move(done),
          [](net::SubscribeTryReceiveOk&& ok) -> Result<std::optional<std::vector<Message>>> {
            // The protocol says `some` is never empty; treat one like `none`.
            if (ok.messages && ok.messages->empty()) ok.messages.reset();
            return std::move(ok.messages);
          }));
}

void AsyncClient::subscribe_receive(std::string_view channel, Callback<std::vector<Message>> done) {
  net::SubscribeReceive request{std::string(channel)};
  submit(
      "subscribe-receive",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, request);
        return ok_status();
      },
      expect<net::SubscribeReceiveOk, std::vector<Message>>(
          "subscribe-receive", std::move(done),
          [](net::SubscribeReceiveOk&& ok) -> Result<std::vector<Message>> {
            return std::move(ok.messages);
          }));
}

void AsyncClient::update_guest_configuration(const GuestConfiguration& config,
                                             StatusCallback done) {
  net::UpdateGuestConfiguration request{config};
  submit(
      "update-guest-configuration",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, request);
        return ok_status();
      },
      expect_empty<net::UpdateGuestConfigurationOk>("update-guest-configuration", std::move(done)));
}

void AsyncClient::settle(net::FrameType type, const Message& message, StatusCallback done) {
  const bool complete = type == net::FrameType::kCompleteMessage;
  const char* what = complete ? "complete-message" : "abandon-message";
  const std::string* receipt = find_metadata(message, meta::kReceipt);
  if (receipt == nullptr) {
    done(invalid_argument(fmt::format(
        "{}: the message has no '{}' metadata entry; only a message delivered by a receive or a "
        "stream can be settled",
        what, meta::kReceipt)));
    return;
  }
  // Only the receipt matters to the server (docs/PROTOCOL.md, 6.5): send nothing else.
  Message slim;
  slim.metadata = Metadata{{std::string(meta::kReceipt), *receipt}};
  submit(
      what,
      [&](net::Buffer& b, uint32_t id) {
        if (complete) {
          net::encode(b, id, net::CompleteMessage{std::move(slim)});
        } else {
          net::encode(b, id, net::AbandonMessage{std::move(slim)});
        }
        return ok_status();
      },
      complete ? expect_empty<net::CompleteMessageOk>(what, std::move(done))
               : expect_empty<net::AbandonMessageOk>(what, std::move(done)));
}

void AsyncClient::complete_message(const Message& message, StatusCallback done) {
  settle(net::FrameType::kCompleteMessage, message, std::move(done));
}

void AsyncClient::abandon_message(const Message& message, StatusCallback done) {
  settle(net::FrameType::kAbandonMessage, message, std::move(done));
}

// ---- streaming ---------------------------------------------------------------------------------

void AsyncClient::start_stream(uint32_t credit, StreamHandler handler, StatusCallback done) {
  auto shared_handler = std::make_shared<StreamHandler>(std::move(handler));
  auto self = shared_from_this();
  submit(
      "stream-start",
      [&](net::Buffer& b, uint32_t id) -> Status {
        if (stream_.id != 0) {
          return Error(ErrorCode::kFailedPrecondition,
                       fmt::format("stream-start: a stream (id {}) is already active on this "
                                   "connection; stop it first",
                                   stream_.id));
        }
        stream_ = Stream{id, false, shared_handler};
        net::encode(b, id, net::StreamStart{credit});
        return ok_status();
      },
      [self, done = std::move(done)](Result<net::Frame> r) mutable {
        if (r.ok() && std::holds_alternative<net::StreamStartOk>(r->body)) {
          std::lock_guard lock(self->mu_);
          if (self->stream_.id == r->request_id) self->stream_.started = true;
        } else if (r.ok()) {
          std::lock_guard lock(self->mu_);
          if (self->stream_.id == r->request_id) self->stream_ = Stream{};
        }
        expect_empty<net::StreamStartOk>("stream-start", std::move(done))(std::move(r));
      });
}

void AsyncClient::grant_credit(uint32_t additional, StatusCallback done) {
  submit(
      "credit",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, net::Credit{additional});
        return ok_status();
      },
      expect_empty<net::CreditOk>("credit", std::move(done)));
}

void AsyncClient::stop_stream(StatusCallback done) {
  auto self = shared_from_this();
  submit(
      "stream-stop",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, net::StreamStop{});
        return ok_status();
      },
      [self, done = std::move(done)](Result<net::Frame> r) mutable {
        if (r.ok() && std::holds_alternative<net::StreamStopOk>(r->body)) {
          std::shared_ptr<StreamHandler> handler;
          std::lock_guard lock(self->mu_);
          handler = std::move(self->stream_.handler);
          self->stream_ = Stream{};
        }
        expect_empty<net::StreamStopOk>("stream-stop", std::move(done))(std::move(r));
      });
}

void AsyncClient::ping(uint64_t payload, Callback<uint64_t> done) {
  submit(
      "ping",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, net::Ping{payload});
        return ok_status();
      },
      expect<net::Pong, uint64_t>("ping", std::move(done),
                                  [](net::Pong&& p) -> Result<uint64_t> { return p.payload; }));
}

void AsyncClient::request(std::string_view channel, const Message& message, uint32_t timeout_ms,
                          uint32_t expected_replies, Callback<std::vector<Message>> done) {
  const auto& limits = info_.limits;
  if (limits.max_message_bytes != 0 && message.data.size() > limits.max_message_bytes) {
    done(Error(ErrorCode::kResourceExhausted,
               fmt::format("request to '{}': {} data bytes, over the server's max-message-bytes {}",
                           channel, message.data.size(), limits.max_message_bytes)));
    return;
  }
  submit(
      "request",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id,
                    net::Request{std::string(channel), timeout_ms, expected_replies, message});
        return ok_status();
      },
      expect<net::RequestOk, std::vector<Message>>(
          "request", std::move(done), [](net::RequestOk&& ok) -> Result<std::vector<Message>> {
            return std::move(ok.replies);
          }));
}

void AsyncClient::reply(const Message& request, const Message& reply, StatusCallback done) {
  const std::string* to = find_metadata(request, meta::kReplyTo);
  const std::string* correlation = find_metadata(request, meta::kCorrelationId);
  if (to == nullptr || correlation == nullptr) {
    done(invalid_argument(fmt::format(
        "reply: the message has no '{}' metadata entry; only a message sent by a request can be "
        "replied to",
        to == nullptr ? meta::kReplyTo : meta::kCorrelationId)));
    return;
  }
  submit(
      "reply",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, net::Reply{*to, *correlation, reply});
        return ok_status();
      },
      expect_empty<net::ReplyOk>("reply", std::move(done)));
}

void AsyncClient::request(net::Frame request, Callback<net::Frame> done) {
  const std::string_view what = net::frame_type_name(request.type());
  submit(
      what,
      [&](net::Buffer& b, uint32_t id) {
        request.request_id = id;
        net::encode(b, request);
        return ok_status();
      },
      [done = std::move(done)](Result<net::Frame> r) mutable { done(std::move(r)); });
}

// ---- admin -------------------------------------------------------------------------------------

void AsyncClient::admin(net::AdminOp op, std::string json, Callback<std::string> done) {
  static constexpr const char* kNames[net::kAdminOpCount] = {
      "channel-list", "channel-declare",     "channel-delete", "channel-stats",
      "browse",       "replay-dead-letters", "purge",          "server-stats"};
  const char* what = kNames[static_cast<uint8_t>(op) % net::kAdminOpCount];
  net::AdminRequest request{op, std::move(json)};
  submit(
      what,
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, request);
        return ok_status();
      },
      [what, op, done = std::move(done)](Result<net::Frame> r) mutable {
        if (!r.ok()) {
          done(std::move(r).error());
        } else if (auto* ok = std::get_if<net::AdminReply>(&r->body); ok && ok->op == op) {
          done(std::move(ok->json));
        } else if (auto* e = std::get_if<net::ErrorReply>(&r->body)) {
          done(std::move(e->error));
        } else {
          done(unexpected_reply(what, *r));
        }
      });
}

void AsyncClient::browse(std::string_view channel, uint64_t from, uint32_t max,
                         Callback<std::vector<Message>> done) {
  net::AdminRequest request{net::AdminOp::kBrowse, admin_json::browse_request(channel, from, max)};
  submit(
      "browse",
      [&](net::Buffer& b, uint32_t id) {
        net::encode(b, id, request);
        return ok_status();
      },
      expect<net::BrowseOk, std::vector<Message>>(
          "browse", std::move(done), [](net::BrowseOk&& ok) -> Result<std::vector<Message>> {
            return std::move(ok.messages);
          }));
}

}  // namespace witmq::client
