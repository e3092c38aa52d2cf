#include "net/session.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <type_traits>
#include <utility>

#include "broker/extensions.h"
#include "broker/receipt.h"
#include "common/log.h"
#include "net/tls.h"

namespace witmq::net {

namespace asio = boost::asio;
using asio::ip::tcp;
using std::chrono::milliseconds;

namespace {

// The input buffer is allocated when bytes arrive, at kInitialInputBytes; each read that fills it
// (the client has more queued) doubles the next allocation up to kInputBytes, so a busy
// connection reads in large chunks. Beyond that it grows only by doubling as bytes of one frame
// arrive, never to a size a length field announces. It is given back when the connection goes
// idle, and down to its floor once a frame larger than kKeepBufferBytes has been handled; output
// buffers are given back when everything is written, and above kKeepBufferBytes after each write.
constexpr size_t kInitialInputBytes = 4 << 10;
constexpr size_t kInputBytes = 64 << 10;
constexpr size_t kKeepBufferBytes = 1 << 20;
// Free space below which the input buffer is compacted before the next read.
constexpr size_t kMinReadBytes = 4 << 10;
// After goaway has been written, how long the client gets to read it and close before the
// server closes (closing with unread input would reset the connection and could lose goaway).
constexpr auto kLinger = std::chrono::seconds(2);

Error shutting_down() { return Error(ErrorCode::kUnavailable, "the server is shutting down"); }

// What a settle gets when its receipt names a channel that does not exist, and also when it names
// one the caller may not receive from: word for word what the broker answers for an unknown
// channel, so that receipts tell no one which channels exist.
Error unknown_receipt_channel(const std::string& receipt) {
  return Error(ErrorCode::kStaleReceipt,
               fmt::format("receipt {}: its channel no longer exists", receipt));
}

// What a decoded send holds in memory until it is answered: each message, its data and its
// metadata strings (a metadata pair is 8 bytes on the wire and 64 or more in memory).
size_t decoded_bytes(const Send& s) {
  auto heap = [](const std::string& x) { return x.capacity() > 15 ? x.capacity() + 1 : 0; };
  size_t n = sizeof(Send) + heap(s.channel) + s.messages.capacity() * sizeof(Message);
  for (const Message& m : s.messages) {
    n += m.data.capacity();
    if (!m.metadata) continue;
    n += m.metadata->capacity() * sizeof(Metadata::value_type);
    for (const auto& [k, v] : *m.metadata) n += heap(k) + heap(v);
  }
  return n;
}

}  // namespace

Session::Session(uint64_t id, tcp::socket socket, ServerContext& context, asio::ssl::context* tls)
    : id_(id),
      socket_(std::move(socket)),
      ctx_(context),
      opts_(context.options),
      broker_(context.broker),
      read_size_(kInitialInputBytes),
      connect_limits_(context.options.limits),
      reader_wake_(socket_.get_executor()),
      writer_wake_(socket_.get_executor()),
      watchdog_timer_(socket_.get_executor()),
      handshake_timer_(socket_.get_executor()) {
  if (tls) tls_.emplace(std::move(socket_), *tls);
  handshake_done_ = !tls_;
  state_ = handshake_done_ ? ConnectionState::kConnecting : ConnectionState::kHandshaking;
  ctx_.counters.by_state[static_cast<size_t>(state_)].fetch_add(1, std::memory_order_relaxed);
  connect_limits_.max_frame_bytes =
      std::min(connect_limits_.max_frame_bytes, kMaxConnectFrameBytes);
  // data, format, option tag, count, and every metadata entry the limits allow (with the
  // reserved ones the broker adds).
  const Limits& l = opts_.limits;
  max_message_wire_bytes_ = 4 + size_t{l.max_message_bytes} + 1 + 1 + 4 +
                            8 * (size_t{l.max_metadata_entries} + kMaxReservedEntries) +
                            l.max_metadata_bytes + kMaxReservedBytes;
}

Session::~Session() {
  charge_input(0);
  ctx_.counters.buffered_bytes.fetch_sub(buffered_bytes_.load(std::memory_order_relaxed),
                                         std::memory_order_relaxed);
}

void Session::set_state(ConnectionState state) {
  if (state == state_ || closed_) return;
  ctx_.counters.by_state[static_cast<size_t>(state_)].fetch_sub(1, std::memory_order_relaxed);
  ctx_.counters.by_state[static_cast<size_t>(state)].fetch_add(1, std::memory_order_relaxed);
  state_ = state;
}

void Session::account_buffers() {
  const size_t now = in_.capacity() + out_pending_.capacity() + out_writing_.capacity();
  const size_t before = buffered_bytes_.exchange(now, std::memory_order_relaxed);
  if (now >= before) {
    ctx_.counters.buffered_bytes.fetch_add(now - before, std::memory_order_relaxed);
  } else {
    ctx_.counters.buffered_bytes.fetch_sub(before - now, std::memory_order_relaxed);
  }
}

void Session::release_input() {
  in_begin_ = in_end_ = 0;
  read_size_ = kInitialInputBytes;
  if (in_.capacity() == 0) return;
  std::vector<uint8_t>().swap(in_);
  charge_input(0);
  account_buffers();
}

bool Session::charge_input(size_t size) {
  const size_t charge = size > kInputBytes ? size - kInputBytes : 0;
  auto& total = ctx_.counters.input_buffer_bytes;
  if (charge <= input_charge_) {
    total.fetch_sub(input_charge_ - charge, std::memory_order_relaxed);
    input_charge_ = charge;
    return true;
  }
  const size_t more = charge - input_charge_;
  if (total.fetch_add(more, std::memory_order_relaxed) + more > opts_.max_input_buffer_bytes) {
    total.fetch_sub(more, std::memory_order_relaxed);
    return false;
  }
  input_charge_ = charge;
  return true;
}

void Session::release_output() {
  if (out_pending_.capacity() == 0 && out_writing_.capacity() == 0) return;
  Buffer().swap(out_pending_);
  Buffer().swap(out_writing_);
  account_buffers();
}

template <typename F>
void Session::post(F&& f) {
  // Broker callbacks come back through here: one that throws ends this connection, explained,
  // and never the I/O thread that runs it.
  asio::post(socket_.get_executor(), [self = shared_from_this(), f = std::forward<F>(f)]() mutable {
    try {
      f();
    } catch (...) {
      self->on_loop_failure("request handling", std::current_exception());
    }
  });
}

void Session::start() {
  // connect-timeout-ms counts from here, the TLS handshake included.
  accepted_at_ = Clock::now();
  if (!handshake_done_) {
    asio::co_spawn(
        socket_.get_executor(), [self = shared_from_this()] { return self->handshake(); },
        asio::detached);
    return;
  }
  start_loops();
}

asio::awaitable<void> Session::handshake() {
  // The timer closes the connection, which ends the handshake with an error; other connections
  // are never held up, each handshake runs on its own strand.
  handshake_timer_.expires_after(opts_.tls_handshake_timeout);
  handshake_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->handshake_done_ || self->closed_) return;
    self->close_without_goaway(
        fmt::format("no TLS handshake within {} ms (tls-handshake-timeout-ms); closing it",
                    self->opts_.tls_handshake_timeout.count()));
  });
  boost::system::error_code ec;
  co_await tls_->async_handshake(asio::ssl::stream_base::server,
                                 asio::redirect_error(asio::use_awaitable, ec));
  handshake_timer_.cancel();
  if (closed_) co_return;
  if (ec) {
    close_without_goaway(
        fmt::format("TLS handshake failed: {}", handshake_failure(tls_->native_handle(), ec)));
    co_return;
  }
  handshake_done_ = true;
  set_state(ConnectionState::kConnecting);
  peer_certificate_cn_ = verified_peer_cn(tls_->native_handle());
  if (peer_certificate_cn_) {
    log::debug("connection {}: client certificate CN={}", id_, *peer_certificate_cn_);
  }
  start_loops();
}

void Session::start_loops() {
  last_read_ = Clock::now();
  spawn(&Session::read_loop, "reader");
  spawn(&Session::write_loop, "writer");
  spawn(&Session::watchdog, "watchdog");
}

void Session::spawn(asio::awaitable<void> (Session::*loop)(), const char* name) {
  auto self = shared_from_this();
  asio::co_spawn(
      socket_.get_executor(), [self, loop] { return ((*self).*loop)(); },
      [self, name](std::exception_ptr e) {
        if (e) self->on_loop_failure(name, e);
      });
}

void Session::on_loop_failure(const char* name, std::exception_ptr e) {
  std::string what = "unknown exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    what = x.what();
  } catch (...) {
  }
  log::error("connection {}: internal error in the connection's {}: {}; closing it", id_, name,
             what);
  const Error error(
      ErrorCode::kInternal,
      fmt::format("internal error in the server ({}); the connection is closed", what));
  // The reader or a request failed: the writer can still send goaway and the watchdog closes
  // after it. Without the writer or the watchdog the connection cannot be closed in order: close
  // it now.
  const std::string_view loop = name;
  if (loop != "writer" && loop != "watchdog" && can_write()) return goaway(0, error);
  close_without_goaway(fmt::format("internal error in the connection's {}: {}", name, what));
}

void Session::shutdown() {
  post([self = shared_from_this()] { self->begin_drain(); });
}

void Session::revalidate() {
  post([self = shared_from_this()] {
    if (self->closed_ || !self->access_ || !self->access_->revoked()) return;
    log::info("connection {}: identity '{}' was revoked by a configuration reload; closing it",
              self->id_, self->access_->name());
    // goaway first, so that it carries the reason: from then on nothing else is written, and the
    // drain ends the waiting receives and the stream without waiting again.
    self->goaway(0, Error(ErrorCode::kPermissionDenied,
                          fmt::format("identity '{}' is no longer valid after a configuration "
                                      "reload; reconnect with valid credentials",
                                      self->access_->name())));
    self->begin_drain();
  });
}

void Session::abort() {
  post([self = shared_from_this()] {
    if (!self->closed_) {
      self->close_without_goaway("still busy at the end of the shutdown timeout; closing it");
    }
  });
}

// ---- reading -----------------------------------------------------------------------------------

bool Session::reading_paused() const {
  return over_cap_ || (opts_.max_in_flight != 0 && in_flight_ >= opts_.max_in_flight) ||
         in_flight_bytes_ >= opts_.max_in_flight_bytes;
}

void Session::wake_reader() {
  if (reader_waiting_) reader_wake_.cancel();
}

bool Session::peer_closed() {
  // POLLRDHUP is set once the client's FIN arrived, even with its earlier data still unread.
  pollfd p{lowest_socket().native_handle(), POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

void Session::watch_for_peer_close() {
  if (closed_ || closing_ || watching_peer_ || !lowest_socket().is_open()) return;
  const int fd = lowest_socket().native_handle();
  const auto gone = [this](std::string_view how) {
    close_without_goaway(fmt::format("the client {} while {} requests were in flight and its "
                                     "input was not read",
                                     how, in_flight_),
                         true);
  };
  if (!tls_) {
    // What arrived goes into the input buffer's free space (never growing it), so that a close
    // behind it is seen; it is decoded when reading resumes.
    if (in_begin_ > 0) {
      std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
      in_end_ -= in_begin_;
      in_begin_ = 0;
    }
    while (in_end_ < in_.size()) {
      const ssize_t n = ::recv(fd, in_.data() + in_end_, in_.size() - in_end_, MSG_DONTWAIT);
      if (n == 0) return gone("closed the connection");
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) return gone(fmt::format("connection failed ({})", std::strerror(errno)));
      in_end_ += static_cast<size_t>(n);
      ctx_.counters.bytes_in.fetch_add(static_cast<size_t>(n), std::memory_order_relaxed);
    }
  }
  // With nothing unread, readability means data or the close: wait for it. With data unread (the
  // input buffer is full, or TLS) readability would be immediate, so only a reset or a hangup is
  // waited for.
  int unread = 0;
  const auto what = ::ioctl(fd, FIONREAD, &unread) == 0 && unread == 0 ? tcp::socket::wait_read
                                                                       : tcp::socket::wait_error;
  // Armed before the check, so a close arriving in between wakes the wait.
  watching_peer_ = true;
  lowest_socket().async_wait(what, [self = shared_from_this(), what](boost::system::error_code ec) {
    self->watching_peer_ = false;
    if (ec || self->closed_ || self->closing_ || !self->reader_waiting_) return;
    if (what == tcp::socket::wait_error) {
      // Urgent data wakes this wait as well; it means nothing to the protocol and is dropped.
      char urgent = 0;
      ::recv(self->lowest_socket().native_handle(), &urgent, 1, MSG_OOB | MSG_DONTWAIT);
    }
    self->watch_for_peer_close();
  });
  if (peer_closed()) gone("closed the connection");
}

void Session::ensure_input_space() {
  const size_t floor = read_size_;
  if (in_begin_ == in_end_) {
    in_begin_ = in_end_ = 0;
    if (in_.size() > kKeepBufferBytes && need_ < kKeepBufferBytes) {
      std::vector<uint8_t>(floor).swap(in_);
      charge_input(in_.capacity());
      account_buffers();
    }
  }
  if (in_.size() - in_end_ >= kMinReadBytes && in_.size() >= floor) return;
  if (in_begin_ > 0) {
    std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  // Grow by doubling, up to what completes the frame being read (need_, bounded by the codec's
  // check of the length field): memory follows the bytes that actually arrived, so a length
  // field alone commits nothing.
  size_t size = std::max(in_.size(), floor);
  if (size - in_end_ < kMinReadBytes) {
    size = std::max(in_end_ + kMinReadBytes, std::min(2 * size, in_end_ + need_));
  }
  if (size != in_.size()) {
    if (!charge_input(std::max(size, in_.capacity()))) {
      // Memory follows bytes that arrived, but many connections' half-sent frames together
      // would still be max-connections times max-frame-bytes: the server's input buffers are
      // bounded as a whole, and a frame that does not fit now ends its connection.
      return goaway(0, Error(ErrorCode::kResourceExhausted,
                             fmt::format("the server's input buffers hold max-input-buffer-bytes "
                                         "({}) already: a frame of {} bytes cannot be read now; "
                                         "retry later",
                                         opts_.max_input_buffer_bytes, in_end_ + need_)));
    }
    in_.reserve(size);
    in_.resize(size);
    charge_input(in_.capacity());
    account_buffers();
  }
}

asio::awaitable<void> Session::read_loop() {
  boost::system::error_code ec;
  while (!closed_) {
    if (!closing_) {
      decode_buffered();
      if (closed_) break;
      if (!closing_ && reading_paused()) {
        reader_waiting_ = true;
        reader_wake_.expires_at(Clock::time_point::max());
        watch_for_peer_close();
        if (closed_) break;
        co_await reader_wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        reader_waiting_ = false;
        last_read_ = Clock::now();  // a paused connection is not idle
        continue;
      }
    }
    // With everything decoded and the client's queue drained by the last read, the connection
    // is idle: it waits holding no input buffer (after goaway or during a drain, input is read
    // only to be discarded, into the same few bytes).
    const bool idle = closing_ || (in_begin_ == in_end_ && drained_);
    if (idle) {
      need_ = 0;
      release_input();
    } else {
      ensure_input_space();
      if (closing_) continue;
    }
    const auto into =
        idle ? asio::buffer(idle_read_) : asio::buffer(in_.data() + in_end_, in_.size() - in_end_);
    size_t n = 0;
    if (tls_) {
      n = co_await tls_->async_read_some(into, asio::redirect_error(asio::use_awaitable, ec));
    } else {
      n = co_await socket_.async_read_some(into, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) break;
    last_read_ = Clock::now();
    ctx_.counters.bytes_in.fetch_add(n, std::memory_order_relaxed);
    drained_ = n < into.size();
    if (closing_) continue;
    if (idle) {
      ensure_input_space();
      if (closing_) continue;
      std::memcpy(in_.data() + in_end_, idle_read_.data(), n);
    } else if (!drained_ && read_size_ < kInputBytes) {
      read_size_ *= 2;
    }
    in_end_ += n;
  }
  // A TLS client that closes without close_notify ends with stream_truncated: a plain close.
  if (!closed_ && ec && ec != asio::error::eof && ec != asio::ssl::error::stream_truncated) {
    log::debug("connection {}: read failed: {}", id_, ec.message());
  }
  close();
}

void Session::decode_buffered() {
  need_ = 0;
  while (!closing_ && !reading_paused()) {
    auto result =
        decode_frame(std::span<const uint8_t>(in_.data() + in_begin_, in_end_ - in_begin_),
                     Side::kServer, connected_ ? opts_.limits : connect_limits_);
    if (const auto* more = std::get_if<NeedMore>(&result)) {
      need_ = more->bytes;
      return;
    }
    ctx_.counters.requests_total.fetch_add(1, std::memory_order_relaxed);
    if (const auto* bad = std::get_if<DecodeError>(&result)) {
      if (!bad->close_connection) in_begin_ += bad->frame_bytes;
      handle_decode_error(*bad);
      continue;
    }
    auto& decoded = std::get<Decoded>(result);
    in_begin_ += decoded.frame_bytes;
    if (connected_) {
      handle(decoded.frame);
    } else {
      handle_first_frame(decoded.frame);
    }
  }
}

void Session::handle_decode_error(const DecodeError& e) {
  ctx_.counters.malformed_total.fetch_add(1, std::memory_order_relaxed);
  log::debug("connection {}: malformed frame: {}", id_, e.error.to_string());
  if (e.close_connection) {
    if (!connected_ && e.error.code == ErrorCode::kResourceExhausted) {
      return goaway(e.request_id,
                    Error(e.error.code, fmt::format("{} before connect: the first frame must be a "
                                                    "connect, at most {} bytes",
                                                    e.error.message, kMaxConnectFrameBytes)));
    }
    return goaway(e.request_id, e.error);
  }
  if (!connected_) {
    // Nothing is handled before connect succeeds: a failed first frame closes the connection.
    if (e.type == static_cast<uint8_t>(FrameType::kConnect)) return goaway(e.request_id, e.error);
    return goaway(e.request_id,
                  Error(ErrorCode::kFailedPrecondition,
                        fmt::format("the first frame must be connect (0x01), got frame type "
                                    "0x{:02x}: {}",
                                    e.type, e.error.message)));
  }
  reply_error(e.request_id, e.error);
}

void Session::handle_first_frame(Frame& frame) {
  if (const auto* c = std::get_if<Connect>(&frame.body)) {
    return handle_connect(frame.request_id, *c);
  }
  goaway(frame.request_id,
         Error(ErrorCode::kFailedPrecondition,
               fmt::format("the first frame must be connect (0x01), got {} (0x{:02x})",
                           frame_type_name(frame.type()), static_cast<int>(frame.type()))));
}

void Session::handle_connect(uint32_t id, const Connect& c) {
  if (std::find(c.versions.begin(), c.versions.end(), kProtocolVersion) == c.versions.end()) {
    std::string listed;
    for (uint16_t v : c.versions) listed += fmt::format("{}{}", listed.empty() ? "" : ", ", v);
    return goaway(id, Error(ErrorCode::kUnsupported,
                            fmt::format("connect: versions [{}]: none is supported, this server "
                                        "speaks {}",
                                        listed, kProtocolVersion)));
  }
  if (c.token && c.token->starts_with(kForwardTokenPrefix)) {
    // A cluster node forwarding its client's requests: it proves the cluster secret and names
    // the identity it acts for, whose credential the entry node checked (docs/CLUSTERING.md).
    auto identity = check_forward_token(*c.token, opts_.cluster_peer_token);
    if (identity && opts_.authenticator) {
      auto access = opts_.authenticator->on_behalf_of(*identity);
      if (access) {
        access_ = std::move(*access);
      } else {
        identity = std::move(access).error();
      }
    }
    if (!identity) {
      log::info("connection {}: forwarded connect refused: {}", id_, identity.error().message);
      return goaway(id, identity.error());
    }
    forwarded_ = true;
  } else if (opts_.authenticator) {
    // Over TLS, a verified client certificate's CN may name the identity.
    auto access = opts_.authenticator->authenticate(c.token, peer_certificate_cn_, true);
    if (!access) {
      log::info("connection {}: connect refused: {}", id_, access.error().message);
      return goaway(id,
                    Error(access.error().code, fmt::format("connect: {}", access.error().message)));
    }
    access_ = std::move(*access);
  }
  auto client = broker_.connect(c.name);
  if (!client) {
    return goaway(id,
                  Error(client.error().code, fmt::format("connect: {}", client.error().message)));
  }
  client_ = std::move(*client);
  client_name_ = c.name;
  connected_ = true;
  set_state(ConnectionState::kConnected);
  ConnectOk ok;
  ok.version = kProtocolVersion;
  ok.server = opts_.server_name;
  ok.limits.max_frame_bytes = opts_.limits.max_frame_bytes;
  ok.limits.max_send_messages = opts_.limits.max_batch_messages;
  ok.limits.max_receive_messages = opts_.max_receive_messages;
  ok.limits.max_message_bytes = opts_.limits.max_message_bytes;
  ok.limits.max_metadata_entries = opts_.limits.max_metadata_entries;
  ok.limits.max_metadata_bytes = opts_.limits.max_metadata_bytes;
  ok.limits.max_config_channels = opts_.limits.max_config_channels;
  ok.limits.max_in_flight = opts_.max_in_flight;
  ok.limits.max_credit = opts_.max_credit;
  ok.limits.idle_timeout_ms = static_cast<uint32_t>(opts_.idle_timeout.count());
  encode(out_pending_, id, ok);
  queued();
  log::debug("connection {}: client '{}' connected as {}", id_, c.name,
             access_ ? fmt::format("identity '{}'", access_->name()) : std::string("anyone"));
}

Status Session::authorize(auth::Action action, std::string_view channel) {
  if (!access_) return ok_status();
  return access_->check(action, channel);
}

void Session::handle(Frame& frame) {
  const uint32_t id = frame.request_id;
  if (access_ && access_->revoked()) {
    // A reload removed the identity or changed its credential: the connection ends here.
    return goaway(id, Error(ErrorCode::kPermissionDenied,
                            fmt::format("identity '{}' is no longer valid after a configuration "
                                        "reload; reconnect with valid credentials",
                                        access_->name())));
  }
  if (opts_.forwarder && maybe_forward(frame)) return;
  serve(frame);
}

void Session::serve(Frame& frame) {
  const uint32_t id = frame.request_id;
  std::visit(
      [&](auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, Connect>) {
          reply_error(id, Error(ErrorCode::kFailedPrecondition,
                                "connect: this connection is already connected; a connection "
                                "has one client"));
        } else if constexpr (std::is_same_v<T, Send>) {
          handle_send(id, body);
        } else if constexpr (std::is_same_v<T, SubscribeTryReceive>) {
          if (auto st = authorize(auth::Action::kReceive, body.channel); !st) {
            return reply_error(id, st.error());
          }
          ++in_flight_;
          auto r = std::make_shared<ReceiveRequest>();
          r->request_id = id;
          r->channel = std::move(body.channel);
          r->try_receive = true;
          r->deadline = Clock::now() + milliseconds(body.timeout_ms);
          start_receive(std::move(r));
        } else if constexpr (std::is_same_v<T, SubscribeReceive>) {
          if (auto st = authorize(auth::Action::kReceive, body.channel); !st) {
            return reply_error(id, st.error());
          }
          ++in_flight_;
          auto r = std::make_shared<ReceiveRequest>();
          r->request_id = id;
          r->channel = std::move(body.channel);
          start_receive(std::move(r));
        } else if constexpr (std::is_same_v<T, UpdateGuestConfiguration>) {
          handle_update(id, body);
        } else if constexpr (std::is_same_v<T, CompleteMessage>) {
          handle_settle(id, body.message, true);
        } else if constexpr (std::is_same_v<T, AbandonMessage>) {
          handle_settle(id, body.message, false);
        } else if constexpr (std::is_same_v<T, StreamStart>) {
          handle_stream_start(id, body);
        } else if constexpr (std::is_same_v<T, Credit>) {
          handle_credit(id, body);
        } else if constexpr (std::is_same_v<T, StreamStop>) {
          handle_stream_stop(id);
        } else if constexpr (std::is_same_v<T, Ping>) {
          encode(out_pending_, id, Pong{body.payload});
          queued();
        } else if constexpr (std::is_same_v<T, AdminRequest>) {
          handle_admin_request(id, body);
        } else if constexpr (std::is_same_v<T, Request>) {
          handle_request(id, body);
        } else if constexpr (std::is_same_v<T, Reply>) {
          handle_reply(id, body);
        } else {
          // The codec decodes only request types on the server side.
          reply_error(id,
                      Error(ErrorCode::kUnsupported, fmt::format("frame type {} is not a request",
                                                                 frame_type_name(frame.type()))));
        }
      },
      frame.body);
}

bool Session::maybe_forward(Frame& frame) {
  const uint32_t id = frame.request_id;
  std::string channel;
  Status allowed = ok_status();
  size_t bytes = 0;
  Locate mode = Locate::kPlace;
  std::string receipt_text;  // a settle's receipt
  if (auto* s = std::get_if<Send>(&frame.body)) {
    channel = s->channel;
    allowed = authorize(auth::Action::kSend, channel);
    bytes = decoded_bytes(*s);
  } else if (auto* r = std::get_if<SubscribeTryReceive>(&frame.body)) {
    channel = r->channel;
    allowed = authorize(auth::Action::kReceive, channel);
  } else if (auto* r = std::get_if<SubscribeReceive>(&frame.body)) {
    channel = r->channel;
    allowed = authorize(auth::Action::kReceive, channel);
  } else if (std::holds_alternative<CompleteMessage>(frame.body) ||
             std::holds_alternative<AbandonMessage>(frame.body)) {
    // An r2 receipt names its channel: it goes to that channel's leader, if the cluster has
    // placed the channel (a settle never places one) and the caller may receive from it. An r1
    // receipt (or none) is settled here, which answers what is wrong with it.
    const Message& m = std::holds_alternative<CompleteMessage>(frame.body)
                           ? std::get<CompleteMessage>(frame.body).message
                           : std::get<AbandonMessage>(frame.body).message;
    const std::string* receipt = find_metadata(m, meta::kReceipt);
    if (!receipt) return false;
    auto parsed = broker::parse_receipt(*receipt);
    if (!parsed || parsed->channel_name.empty()) return false;
    if (!authorize(auth::Action::kReceive, parsed->channel_name)) {
      reply_error(id, unknown_receipt_channel(*receipt));
      return true;
    }
    channel = std::move(parsed->channel_name);
    mode = Locate::kPlaced;
    receipt_text = *receipt;
  } else if (auto* q = std::get_if<Request>(&frame.body)) {
    // Served by the channel's leader, where the requester's inbox then lives: its address names
    // that node, so a reply given to any node is taken there (below).
    channel = q->channel;
    allowed = authorize(auth::Action::kSend, channel);
    bytes = sizeof(Request) + message_wire_size(q->message);
  } else if (auto* r = std::get_if<Reply>(&frame.body)) {
    // A reply goes to the node its inbox names, on this client's link there, unless this is a
    // forwarded connection (one hop: it is served here, where a foreign inbox is not found and
    // the reply is dropped and counted) or the address names this node or no live node.
    if (forwarded_) return false;
    auto target = opts_.forwarder->inbox_node(r->reply_to);
    if (!target) return false;
    bytes = sizeof(Reply) + message_wire_size(r->message);
    ++in_flight_;
    in_flight_bytes_ += bytes;
    forward(std::move(frame), std::string(), *target, bytes);
    return true;
  } else if (auto* a = std::get_if<AdminRequest>(&frame.body)) {
    auto named = admin_channel(a->op, a->json);
    if (!named) return false;
    channel = std::move(*named);
    if (access_) allowed = authorize_admin(a->op, channel, *access_);
    bytes = sizeof(AdminCall) + a->json.capacity();
    // Only a declare creates a channel; the others must not place one they name.
    if (a->op != AdminOp::kChannelDeclare) mode = Locate::kPlaced;
  } else {
    return false;
  }
  if (!allowed) {
    reply_error(id, allowed.error());
    return true;
  }
  // The common case, a channel this node leads: served on this connection's own path at once,
  // as locate() would have it served after a hand-off.
  if (opts_.forwarder->leads(channel)) return false;
  ++in_flight_;
  in_flight_bytes_ += bytes;
  // A forwarded connection is served here or refused: never forwarded again, so a request
  // crosses at most one hop, whatever the nodes believe about each other.
  opts_.forwarder->locate(
      channel, forwarded_ ? Locate::kKnownOnly : mode,
      [self = shared_from_this(), frame = std::move(frame), channel, bytes,
       receipt = std::move(receipt_text)](Result<std::optional<ForwardTarget>> where) mutable {
        self->post([self, frame = std::move(frame), channel = std::move(channel), bytes,
                    receipt = std::move(receipt), where = std::move(where)]() mutable {
          if (self->closed_) return;
          if (!where && where.error().code == ErrorCode::kNotFound) {
            // A channel the cluster has not placed. A receipt naming it gets what a bad receipt
            // gets; an admin request is answered here, as a node without the channel answers.
            if (receipt.empty()) {
              self->serve(frame);
            } else {
              self->reply_error(frame.request_id, unknown_receipt_channel(receipt));
            }
            return self->answered(bytes);
          }
          if (!where || (*where && self->forwarded_)) {
            self->reply_error(frame.request_id,
                              where ? Error(ErrorCode::kUnavailable,
                                            fmt::format("channel '{}': this node does not lead "
                                                        "it (node {} does); retry through any node",
                                                        channel, (*where)->node))
                                    : where.error());
            return self->answered(bytes);
          }
          if (!*where) {
            // Served here: the local path, with its own accounting.
            self->serve(frame);
            return self->answered(bytes);
          }
          self->forward(std::move(frame), std::move(channel), **where, bytes);
        });
      });
  return true;
}

void Session::forward(Frame frame, std::string channel, const ForwardTarget& target, size_t bytes) {
  std::shared_ptr<ForwardLink> link;
  for (auto it = links_.begin(); it != links_.end();) {
    if (!it->second->usable()) {
      it = links_.erase(it);
    } else {
      if (it->first == target) link = it->second;
      ++it;
    }
  }
  if (!link) {
    link = opts_.forwarder->link(target, client_name_, access_ ? access_->name() : std::string());
    links_.emplace_back(target, link);
  }
  const uint32_t id = frame.request_id;
  link->request(std::move(frame), [self = shared_from_this(), id, channel = std::move(channel),
                                   target, bytes](Result<Frame> reply) mutable {
    self->post([self, id, channel = std::move(channel), target = std::move(target), bytes,
                reply = std::move(reply)]() mutable {
      self->on_forwarded(id, channel, target, std::move(reply), bytes);
    });
  });
}

void Session::on_forwarded(uint32_t id, const std::string& channel, const ForwardTarget& target,
                           Result<Frame> reply, size_t bytes) {
  if (closed_) return;
  if (!reply && channel.empty()) {
    // A reply (forward() is given no channel for one) that could not be taken to its inbox's
    // node: dropped and counted, and answered like one to a gone inbox (it tells the responder
    // nothing about the requester).
    broker_.count_dropped_reply();
    reply_empty(id, FrameType::kReplyOk);
    return answered(bytes);
  }
  if (!reply) {
    reply_error(id, Error(reply.error().code,
                          fmt::format("channel '{}' (led by node {} at {}): {}", channel,
                                      target.node, target.address, reply.error().message)));
    return answered(bytes);
  }
  if (can_write()) {
    if (const auto* r = std::get_if<SubscribeReceiveOk>(&reply->body)) {
      ctx_.counters.messages_out.fetch_add(r->messages.size(), std::memory_order_relaxed);
    } else if (const auto* t = std::get_if<SubscribeTryReceiveOk>(&reply->body); t && t->messages) {
      ctx_.counters.messages_out.fetch_add(t->messages->size(), std::memory_order_relaxed);
    }
    reply->request_id = id;
    encode(out_pending_, *reply);
    queued();
  }
  answered(bytes);
}

void Session::handle_send(uint32_t id, Send& s) {
  if (auto st = authorize(auth::Action::kSend, s.channel); !st) return reply_error(id, st.error());
  ++in_flight_;
  const size_t bytes = decoded_bytes(s);
  in_flight_bytes_ += bytes;
  ctx_.counters.messages_in.fetch_add(s.messages.size(), std::memory_order_relaxed);
  broker_.send(client_, s.channel, std::move(s.messages),
               [self = shared_from_this(), id, bytes](Status st) mutable {
                 self->post([self, id, bytes, st = std::move(st)] {
                   if (st) {
                     self->reply_empty(id, FrameType::kSendOk);
                   } else {
                     self->reply_error(id, st.error());
                   }
                   self->answered(bytes);
                 });
               });
}

void Session::handle_update(uint32_t id, const UpdateGuestConfiguration& u) {
  for (const std::string& channel : u.config.channels) {
    if (auto allowed = authorize(auth::Action::kReceive, channel); !allowed) {
      return reply_error(
          id, Error(allowed.error().code,
                    fmt::format("update-guest-configuration: {}", allowed.error().message)));
    }
  }
  auto st = broker_.update_guest_configuration(client_, u.config);
  if (!st) return reply_error(id, st.error());
  configured_channels_ = u.config.channels;
  auto options = broker::parse_extensions(u.config.extensions, opts_.max_receive_messages);
  stream_batch_size_ =
      options && options->batch_size ? options->batch_size : opts_.default_batch_size;
  reply_empty(id, FrameType::kUpdateGuestConfigurationOk);
  // A waiting stream receive still waits on the old channels: end it, and the stream draws from
  // the new ones (request receives ended with it simply wait again).
  if (stream_.receive_pending) {
    broker_.cancel_receives(client_);
  } else {
    pump_stream();
  }
}

void Session::handle_settle(uint32_t id, const Message& m, bool complete) {
  if (const std::string* receipt = find_metadata(m, meta::kReceipt); receipt && access_) {
    // Settling takes the receive grant on the receipt's channel (an r2 receipt names it).
    auto parsed = broker::parse_receipt(*receipt);
    if (parsed && !parsed->channel_name.empty() &&
        !authorize(auth::Action::kReceive, parsed->channel_name)) {
      return reply_error(id, unknown_receipt_channel(*receipt));
    }
  }
  // The broker answers once the settlement is stored as the channel's durability says.
  ++in_flight_;
  auto reply = [self = shared_from_this(), id, complete](Status st) mutable {
    self->post([self, id, complete, st = std::move(st)] {
      if (st) {
        self->reply_empty(id,
                          complete ? FrameType::kCompleteMessageOk : FrameType::kAbandonMessageOk);
      } else {
        self->reply_error(id, st.error());
      }
      self->answered();
    });
  };
  if (complete) {
    broker_.complete_message(m, std::move(reply));
  } else {
    broker_.abandon_message(m, std::move(reply));
  }
}

static_assert(kMaxReplyFieldBytes == broker::kMaxReplyAddressBytes);

void Session::handle_request(uint32_t id, Request& r) {
  if (auto st = authorize(auth::Action::kSend, r.channel); !st) return reply_error(id, st.error());
  ++in_flight_;
  const size_t bytes = sizeof(Request) + message_wire_size(r.message);
  in_flight_bytes_ += bytes;
  ctx_.counters.messages_in.fetch_add(1, std::memory_order_relaxed);
  broker_.request(client_, r.channel, std::move(r.message),
                  // Replies gathered past one frame could never be sent: the request is
                  // answered once they fill it.
                  broker::RequestOptions{milliseconds(r.timeout_ms), r.expected_replies,
                                         size_t{opts_.limits.max_frame_bytes} / 2},
                  [self = shared_from_this(), id, bytes](Result<std::vector<Message>> res) mutable {
                    self->post([self, id, bytes, res = std::move(res)]() mutable {
                      self->on_request_done(id, bytes, std::move(res));
                    });
                  });
}

void Session::on_request_done(uint32_t id, size_t bytes, Result<std::vector<Message>> result) {
  if (!result) {
    reply_error(id, result.error());
    return answered(bytes);
  }
  std::vector<Message>& replies = *result;
  size_t keep = reply_fitting(replies, kHeaderBytes + 4);
  if (opts_.max_receive_messages != 0) keep = std::min<size_t>(keep, opts_.max_receive_messages);
  if (keep == 0) {
    reply_error(id, Error(ErrorCode::kResourceExhausted,
                          fmt::format("request: {} bytes of replies are queued for this "
                                      "connection, above max-output-bytes {}; the {} replies "
                                      "that came were dropped",
                                      queued_bytes(), opts_.max_output_bytes, replies.size())));
    return answered(bytes);
  }
  if (keep < replies.size()) {
    log::warn(
        "connection {}: a request-ok holds {} of {} replies: the others do not fit in one "
        "frame",
        id_, keep, replies.size());
    replies.resize(keep);
  }
  if (can_write()) {
    ctx_.counters.messages_out.fetch_add(replies.size(), std::memory_order_relaxed);
    encode(out_pending_, id, RequestOk{std::move(replies)});
    queued();
  }
  answered(bytes);
}

void Session::handle_reply(uint32_t id, Reply& r) {
  // No grant: the reply address is the proof (docs/SECURITY.md).
  auto st = broker_.reply_to(r.reply_to, r.correlation_id, std::move(r.message));
  if (!st) return reply_error(id, st.error());
  ctx_.counters.messages_in.fetch_add(1, std::memory_order_relaxed);
  reply_empty(id, FrameType::kReplyOk);
}

void Session::handle_admin_request(uint32_t id, AdminRequest& a) {
  ++in_flight_;
  const size_t bytes = sizeof(AdminCall) + a.json.capacity();
  in_flight_bytes_ += bytes;
  admin_queue_.push_back(AdminCall{id, a.op, std::move(a.json), bytes});
  run_admin();
}

void Session::run_admin() {
  if (admin_running_ || admin_queue_.empty() || over_cap_ || closed_) return;
  admin_running_ = true;
  AdminCall call = std::move(admin_queue_.front());
  admin_queue_.pop_front();
  asio::post(ctx_.admin_pool, [self = shared_from_this(), call = std::move(call)]() mutable {
    Result<AdminResult> result = Error(ErrorCode::kInternal, "no result");
    try {
      result =
          handle_admin(self->broker_, call.op, call.json, self->ctx_.admin, self->access_.get());
    } catch (const std::exception& e) {
      log::error("connection {}: internal error in admin call {}: {}", self->id_,
                 frame_type_name(
                     static_cast<FrameType>(kAdminRequestBase + static_cast<uint8_t>(call.op))),
                 e.what());
      result = Error(ErrorCode::kInternal, fmt::format("internal error: {}", e.what()));
    }
    self->post([self, id = call.request_id, op = call.op, bytes = call.bytes,
                result = std::move(result)]() mutable {
      self->admin_running_ = false;
      if (!result) {
        self->reply_error(id, result.error());
      } else if (op == AdminOp::kBrowse) {
        auto& messages = result->messages;
        // Browse acquires nothing, so a page cut short by the frame limit loses nothing: the
        // client continues from the last sequence it got.
        const size_t keep = self->reply_fitting(messages, kHeaderBytes + 4);
        if (keep == 0 && !messages.empty()) {
          self->reply_error(id,
                            Error(ErrorCode::kResourceExhausted,
                                  fmt::format("browse: {} bytes of replies are queued for "
                                              "this connection, above max-output-bytes {}; "
                                              "read them and browse again",
                                              self->queued_bytes(), self->opts_.max_output_bytes)));
        } else if (self->can_write()) {
          messages.resize(keep);
          encode(self->out_pending_, id, BrowseOk{std::move(messages)});
          self->queued();
        }
      } else if (result->json.size() + kHeaderBytes + 4 > self->frame_limit()) {
        self->reply_error(
            id, Error(ErrorCode::kResourceExhausted,
                      fmt::format("the reply is {} bytes of JSON, above "
                                  "max-frame-bytes {}",
                                  result->json.size(), self->opts_.limits.max_frame_bytes)));
      } else if (self->can_write()) {
        encode(self->out_pending_, id, AdminReply{op, std::move(result->json)});
        self->queued();
      }
      self->answered(bytes);
      self->run_admin();
    });
  });
}

// ---- receives ----------------------------------------------------------------------------------

void Session::start_receive(std::shared_ptr<ReceiveRequest> r) {
  broker::ReceiveOptions options;
  if (r->try_receive) {
    auto left = std::chrono::ceil<milliseconds>(r->deadline - Clock::now());
    options.timeout = std::max(left, milliseconds(0));
  }
  broker_.receive(client_, {r->channel}, options,
                  [self = shared_from_this(), r](Result<std::vector<Message>> result) mutable {
                    self->post([self, r = std::move(r), result = std::move(result)]() mutable {
                      self->on_receive(std::move(r), std::move(result));
                    });
                  });
}

void Session::on_receive(std::shared_ptr<ReceiveRequest> r, Result<std::vector<Message>> result) {
  if (closed_) return;
  const uint32_t id = r->request_id;
  if (!result) {
    reply_error(id, result.error());
    return answered();
  }
  auto& messages = *result;
  if (!messages.empty() && access_) {
    // A reload may have taken the grant away (or the identity) while the receive waited.
    if (auto st = access_->check(auth::Action::kReceive, r->channel); !st) {
      release(messages, 0, st.error().message);
      reply_error(id, st.error());
      return answered();
    }
  }
  if (messages.empty()) {
    if (draining_) {
      reply_error(id, shutting_down());
      return answered();
    }
    if (!r->try_receive || Clock::now() + milliseconds(1) < r->deadline) {
      if (over_cap_) {
        // Cancelled because the output went over the cap: parked until it drains (a
        // try-receive's deadline is kept by the watchdog).
        parked_.push_back(std::move(r));
        watchdog_timer_.cancel();
        return;
      }
      // Ended early (a stream stop or a configuration change cancels the client's receives):
      // wait on for what is left.
      return start_receive(std::move(r));
    }
    if (can_write()) {
      encode_try_receive_ok(out_pending_, id, nullptr);
      queued();
    }
    return answered();
  }
  const size_t overhead = kHeaderBytes + 4 + (r->try_receive ? 1 : 0);
  const size_t keep = reply_fitting(messages, overhead);
  if (keep == 0) {
    const Error full(ErrorCode::kResourceExhausted,
                     fmt::format("receive: {} bytes of replies are queued for this connection, "
                                 "above max-output-bytes {}; the {} messages received were "
                                 "released (read the replies, then receive again)",
                                 queued_bytes(), opts_.max_output_bytes, messages.size()));
    release(messages, 0, full.message);
    reply_error(id, full);
    return answered();
  }
  release(messages, keep,
          fmt::format("the rest do not fit in max-frame-bytes {}", opts_.limits.max_frame_bytes));
  if (can_write()) {
    ctx_.counters.messages_out.fetch_add(messages.size(), std::memory_order_relaxed);
    if (r->try_receive) {
      encode_try_receive_ok(out_pending_, id, &messages);
    } else {
      encode_receive_ok(out_pending_, id, messages);
    }
    queued();
  }
  answered();
}

size_t Session::fitting(std::span<const Message> messages, size_t overhead, size_t budget) {
  size_t bytes = overhead;
  for (size_t i = 0; i < messages.size(); ++i) {
    bytes += message_wire_size(messages[i]);
    if (bytes > budget) return i;
  }
  return messages.size();
}

size_t Session::reply_fitting(std::span<const Message> messages, size_t overhead) const {
  // Under the cap a reply goes whole (one frame at most): cutting it to the room left would
  // release messages, a delivery attempt each, every time the output brushes the cap. Over it,
  // nothing goes; receives are parked meanwhile, so this is rare.
  if (over_cap_) return 0;
  return std::max<size_t>(std::min<size_t>(messages.size(), 1),
                          fitting(messages, overhead, frame_limit()));
}

void Session::release(std::vector<Message>& messages, size_t keep, std::string_view why) {
  if (keep >= messages.size()) return;
  log::warn(
      "connection {}: a reply holds {} of {} messages: {}; the others are released (their lease "
      "ends now)",
      id_, keep, messages.size(), why);
  for (size_t i = keep; i < messages.size(); ++i) {
    // Auto-settled messages carry no receipt: at-most-once delivery allows losing them.
    if (find_metadata(messages[i], meta::kReceipt)) {
      (void)broker_.extend_lease(messages[i], milliseconds(0));
    }
  }
  messages.resize(keep);
}

// ---- streaming ---------------------------------------------------------------------------------

void Session::handle_stream_start(uint32_t id, const StreamStart& s) {
  if (stream_.active) {
    return reply_error(id, Error(ErrorCode::kFailedPrecondition,
                                 fmt::format("stream-start: stream {} is already active on this "
                                             "connection; one stream per connection",
                                             stream_.id)));
  }
  if (configured_channels_.empty()) {
    return reply_error(id, Error(ErrorCode::kFailedPrecondition,
                                 "stream-start: no channel is configured; send "
                                 "update-guest-configuration with at least one channel first"));
  }
  if (opts_.max_credit != 0 && s.credit > opts_.max_credit) {
    return reply_error(id, Error(ErrorCode::kResourceExhausted,
                                 fmt::format("stream-start: credit {} exceeds max-credit {}",
                                             s.credit, opts_.max_credit)));
  }
  stream_ = Stream{};
  stream_.active = true;
  stream_.id = id;
  stream_.credit = s.credit;
  reply_empty(id, FrameType::kStreamStartOk);
  pump_stream();
}

void Session::handle_credit(uint32_t id, const Credit& c) {
  if (!stream_.active || !stream_.stop_ids.empty()) {
    return reply_error(id, Error(ErrorCode::kFailedPrecondition,
                                 "credit: no stream is active on this connection"));
  }
  const uint64_t next = stream_.credit + c.additional;
  if (opts_.max_credit != 0 && next > opts_.max_credit) {
    return reply_error(id,
                       Error(ErrorCode::kResourceExhausted,
                             fmt::format("credit: {} more would make the stream's credit {}, above "
                                         "max-credit {}; the credit stays {}",
                                         c.additional, next, opts_.max_credit, stream_.credit)));
  }
  stream_.credit = next;
  reply_empty(id, FrameType::kCreditOk);
  pump_stream();
}

void Session::handle_stream_stop(uint32_t id) {
  if (!stream_.active) return reply_empty(id, FrameType::kStreamStopOk);
  ++in_flight_;
  stream_.stop_ids.push_back(id);
  // stream-stop-ok must follow the stream's last deliver: wait for a pending receive to return.
  if (stream_.receive_pending) {
    broker_.cancel_receives(client_);
  } else {
    finish_stream_stop();
  }
}

void Session::pump_stream() {
  if (!stream_.active || stream_.receive_pending || !stream_.stop_ids.empty() || closing_ ||
      over_cap_ || stream_.credit == 0 || configured_channels_.empty()) {
    return;
  }
  if (access_) {
    // A reload may have taken a channel's receive grant away since the configuration was set.
    for (const std::string& channel : configured_channels_) {
      if (auto st = access_->check(auth::Action::kReceive, channel); !st) {
        return end_stream(st.error());
      }
    }
  }
  broker::ReceiveOptions options;
  // At max-unacked-per-connection a stream pauses until settlements free room, as a prefetch
  // limit does; a request receive fails instead (section 11).
  options.wait_for_room = true;
  // Never more than the credit: a client that stops granting holds nothing and stalls no one.
  // Never more than the output cap has room for, at the largest size a message can have: a
  // round's deliver frames stay under max-output-bytes plus one message.
  const uint64_t room = std::max<uint64_t>(1, output_room() / max_message_wire_bytes_);
  options.max_messages = static_cast<uint32_t>(
      std::min<uint64_t>({stream_.credit, stream_batch_size_, opts_.max_receive_messages, room}));
  stream_.receive_pending = true;
  broker_.receive_batch(client_, configured_channels_, options,
                        [self = shared_from_this()](Result<broker::DeliveredBatch> result) mutable {
                          self->post([self, result = std::move(result)]() mutable {
                            self->on_stream_receive(std::move(result));
                          });
                        });
}

void Session::on_stream_receive(Result<broker::DeliveredBatch> result) {
  stream_.receive_pending = false;
  if (closed_) return;
  if (!result) {
    if (stream_.stop_ids.empty() && !draining_) end_stream(result.error());
  } else if (!result->items.empty()) {
    // A reload may have taken a grant away (or the identity) while the round waited.
    Status allowed = ok_status();
    if (access_) allowed = access_->check(auth::Action::kReceive, result->channel);
    if (!allowed) {
      auto messages = result->to_messages();
      release(messages, 0, allowed.error().message);
      if (stream_.stop_ids.empty() && !draining_) end_stream(allowed.error());
    } else {
      deliver(*result);
    }
  }
  if (!stream_.stop_ids.empty()) {
    finish_stream_stop();
  } else if (draining_) {
    maybe_finish_drain();
  } else {
    pump_stream();
  }
}

void Session::deliver(const broker::DeliveredBatch& batch) {
  const auto& items = batch.items;
  stream_.credit -= std::min<uint64_t>(stream_.credit, items.size());
  if (!can_write()) return;
  // Each stored message goes into the frame as it is, its reserved metadata (the order of
  // DeliveredBatch::to_messages) written from numbers formatted into one scratch buffer: no
  // Message is built and no payload copied but into the frame.
  constexpr size_t kDigits = 20;  // a 64-bit integer in decimal, sign included
  const std::string_view name = batch.channel;
  using Entry = std::pair<std::string_view, std::string_view>;
  constexpr size_t kReserved = 6;
  // Per round, not kept: an idle streaming connection holds none of it.
  std::vector<char> scratch(items.size() * (name.size() + 1 + 4 * kDigits));
  std::vector<Entry> entries(items.size() * kReserved);
  std::vector<MessageParts> parts;
  parts.reserve(items.size());
  char* p = scratch.data();
  auto number = [&p](auto v) {
    char* begin = p;
    p = std::to_chars(p, p + kDigits, v).ptr;
    return std::string_view(begin, static_cast<size_t>(p - begin));
  };
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    const storage::StoredMessage& body = *it.body;
    char* id = p;
    std::memcpy(p, name.data(), name.size());
    p += name.size();
    *p++ = '/';
    const std::string_view seq = number(body.seq);
    Entry* e = &entries[i * kReserved];
    size_t n = 0;
    e[n++] = {meta::kId, std::string_view(id, static_cast<size_t>(p - id))};
    e[n++] = {meta::kChannel, name};
    e[n++] = {meta::kSequence, seq};
    e[n++] = {meta::kAttempt, number(it.attempts)};
    e[n++] = {meta::kPublishedAt, number(body.publish_time_ms)};
    if (!it.receipt.empty()) e[n++] = {meta::kReceipt, it.receipt};
    parts.push_back({&body.message, std::span<const Entry>(e, n)});
  }
  const size_t overhead = message_frame_overhead(name);
  const size_t limit = frame_limit();
  // The round was sized to the room under the cap at the largest message size, so it fits; the
  // first message always goes, each frame holds at least one.
  std::span<const MessageParts> rest(parts);
  while (!rest.empty()) {
    size_t bytes = overhead, n = 0;
    while (n < rest.size()) {
      const size_t size = message_wire_size(rest[n]);
      if (n != 0 && bytes + size > limit) break;
      bytes += size;
      ++n;
    }
    encode_deliver_parts(out_pending_, stream_.id, name, rest.first(n));
    rest = rest.subspan(n);
  }
  ctx_.counters.messages_out.fetch_add(items.size(), std::memory_order_relaxed);
  queued();
}

void Session::end_stream(const Error& error) {
  if (can_write()) {
    encode_error(out_pending_, stream_.id, FrameType::kStreamEnd, error);
    queued();
  }
  log::debug("connection {}: stream {} ended: {}", id_, stream_.id, error.to_string());
  auto stops = std::move(stream_.stop_ids);
  stream_ = Stream{};
  stream_.stop_ids = std::move(stops);
  if (!stream_.stop_ids.empty()) finish_stream_stop();
}

void Session::finish_stream_stop() {
  auto stops = std::move(stream_.stop_ids);
  stream_ = Stream{};
  for (uint32_t id : stops) {
    reply_empty(id, FrameType::kStreamStopOk);
    answered();
  }
}

// ---- writing -----------------------------------------------------------------------------------

void Session::reply_empty(uint32_t id, FrameType type) {
  if (!can_write()) return;
  encode_empty(out_pending_, id, type);
  queued();
}

void Session::reply_error(uint32_t id, const Error& error) {
  if (!can_write()) return;
  encode_error(out_pending_, id, FrameType::kError, error);
  queued();
}

void Session::answered(size_t bytes) {
  --in_flight_;
  in_flight_bytes_ -= bytes;
  wake_reader();
  maybe_finish_drain();
}

void Session::queued() {
  account_buffers();
  if (!over_cap_ && queued_bytes() > opts_.max_output_bytes) {
    over_cap_ = true;
    over_cap_since_ = Clock::now();
    watchdog_timer_.cancel();
    // Waiting receives stop waiting in the broker until the output drains (on_receive parks
    // them): messages they took now could not be queued, and releasing them would count a
    // delivery attempt each time.
    if (client_) broker_.cancel_receives(client_);
  }
  if (writer_waiting_) writer_wake_.cancel();
}

void Session::goaway(uint32_t id, const Error& error) {
  if (!can_write()) return;
  encode_error(out_pending_, id, FrameType::kGoaway, error);
  log::debug("connection {}: goaway: {}", id_, error.to_string());
  set_state(ConnectionState::kClosing);
  closing_ = true;
  close_after_flush_ = true;
  // A client that does not read its goaway is closed after the output stall timeout.
  close_deadline_ = Clock::now() + std::max<Clock::duration>(opts_.output_stall_timeout, kLinger);
  queued();
  wake_reader();
  watchdog_timer_.cancel();
}

asio::awaitable<void> Session::write_loop() {
  boost::system::error_code ec;
  while (!closed_) {
    if (out_pending_.empty()) {
      // Everything is written: the output buffers go until the next reply.
      release_output();
      if (close_after_flush_) {
        // goaway is out: half-close and give the client a moment to read it and close. On TLS
        // too this is the TCP half-close: a close_notify would need a read of the peer's, and
        // the reader owns the read side.
        lowest_socket().shutdown(tcp::socket::shutdown_send, ec);
        close_deadline_ = std::min(close_deadline_, Clock::now() + kLinger);
        watchdog_timer_.cancel();
        co_return;
      }
      writer_waiting_ = true;
      writer_wake_.expires_at(Clock::time_point::max());
      co_await writer_wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      writer_waiting_ = false;
      continue;
    }
    std::swap(out_pending_, out_writing_);
    const auto from = asio::buffer(out_writing_);
    size_t n = 0;
    if (tls_) {
      n = co_await asio::async_write(*tls_, from, asio::redirect_error(asio::use_awaitable, ec));
    } else {
      n = co_await asio::async_write(socket_, from, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
      if (!closed_) close_without_goaway(fmt::format("write failed: {}", ec.message()), true);
      break;
    }
    ctx_.counters.bytes_out.fetch_add(n, std::memory_order_relaxed);
    out_writing_.clear();
    if (out_writing_.capacity() > kKeepBufferBytes) {
      Buffer().swap(out_writing_);
      account_buffers();
    }
    if (over_cap_ && queued_bytes() <= opts_.max_output_bytes) {
      over_cap_ = false;
      watchdog_timer_.cancel();
      wake_reader();
      pump_stream();
      run_admin();
      for (auto& r : std::exchange(parked_, {})) start_receive(std::move(r));
    }
  }
  close();
}

asio::awaitable<void> Session::watchdog() {
  boost::system::error_code ec;
  while (!closed_) {
    const auto now = Clock::now();
    auto next = Clock::time_point::max();
    if (close_after_flush_) {
      if (now >= close_deadline_) break;
      next = close_deadline_;
    } else {
      if (!connected_) {
        const auto connect_by = accepted_at_ + opts_.connect_timeout;
        if (now >= connect_by) {
          log::info("connection {}: no connect within {} ms; closing it", id_,
                    opts_.connect_timeout.count());
          goaway(0, Error(ErrorCode::kUnavailable,
                          fmt::format("no connect within {} ms of accepting the connection "
                                      "(connect-timeout-ms)",
                                      opts_.connect_timeout.count())));
          continue;
        }
        next = std::min(next, connect_by);
      }
      if (opts_.idle_timeout.count() > 0 && !reading_paused()) {
        const auto idle_at = last_read_ + opts_.idle_timeout;
        if (now >= idle_at) {
          log::info("connection {}: idle for {} ms; closing it", id_, opts_.idle_timeout.count());
          goaway(0, Error(ErrorCode::kUnavailable,
                          fmt::format("the connection was idle for {} ms (idle-timeout-ms)",
                                      opts_.idle_timeout.count())));
          continue;
        }
        next = std::min(next, idle_at);
      }
      for (size_t i = 0; i < parked_.size();) {
        const auto& r = parked_[i];
        if (!r->try_receive) {
          ++i;
        } else if (now >= r->deadline) {
          // Answered at its deadline, like any try-receive: none.
          if (can_write()) encode_try_receive_ok(out_pending_, r->request_id, nullptr);
          parked_.erase(parked_.begin() + static_cast<ptrdiff_t>(i));
          queued();
          answered();
        } else {
          next = std::min(next, r->deadline);
          ++i;
        }
      }
      if (over_cap_) {
        const auto stall_at = over_cap_since_ + opts_.output_stall_timeout;
        if (now >= stall_at) {
          close_without_goaway(fmt::format(
              "{} bytes of output queued for more than {} ms (the client does not read); closing "
              "it",
              queued_bytes(), opts_.output_stall_timeout.count()));
          break;
        }
        next = std::min(next, stall_at);
      }
    }
    watchdog_timer_.expires_at(next);
    co_await watchdog_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  close();
}

// ---- closing -----------------------------------------------------------------------------------

void Session::begin_drain() {
  if (closed_ || draining_) return;
  draining_ = true;
  set_state(ConnectionState::kClosing);
  // Mid-handshake nothing is in flight and goaway cannot be sent yet.
  if (!handshake_done_) return close_without_goaway("the server stops during the TLS handshake");
  if (!connected_) return goaway(0, shutting_down());
  closing_ = true;
  wake_reader();
  broker_.cancel_receives(client_);
  broker_.cancel_requests(client_);
  for (auto& r : std::exchange(parked_, {})) {
    reply_error(r->request_id, shutting_down());
    answered();
  }
  maybe_finish_drain();
}

void Session::maybe_finish_drain() {
  if (!draining_ || !can_write() || in_flight_ > 0 || stream_.receive_pending) return;
  if (stream_.active) end_stream(shutting_down());
  goaway(0, shutting_down());
}

void Session::close() {
  if (closed_) return;
  ctx_.counters.by_state[static_cast<size_t>(state_)].fetch_sub(1, std::memory_order_relaxed);
  closed_ = true;
  closing_ = true;
  boost::system::error_code ec;
  lowest_socket().shutdown(tcp::socket::shutdown_both, ec);
  lowest_socket().close(ec);
  reader_wake_.cancel();
  writer_wake_.cancel();
  watchdog_timer_.cancel();
  handshake_timer_.cancel();
  // Messages the client holds unsettled become available again; its waiting receives end.
  if (client_) broker_.disconnect(client_);
  // The same for what it holds on other nodes through its forwarded requests.
  for (auto& [target, link] : std::exchange(links_, {})) link->close();
  admin_queue_.clear();
  parked_.clear();
  log::debug("connection {}: closed", id_);
  ctx_.on_closed(id_);
}

void Session::close_without_goaway(std::string_view why, bool peer_gone) {
  if (closed_) return;
  // A TLS handshake that fails is a client's mistake, logged at debug; a write that fails because
  // the client went away at info; the others are the server giving up on a working connection.
  if (!handshake_done_) {
    log::debug("connection {}: closed without goaway: {}", id_, why);
  } else if (peer_gone) {
    log::info("connection {}: closed without goaway: {}", id_, why);
  } else {
    log::warn("connection {}: closed without goaway: {}", id_, why);
  }
  ctx_.counters.closed_without_goaway.fetch_add(1, std::memory_order_relaxed);
  close();
}

}  // namespace witmq::net
