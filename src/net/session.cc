#include "net/session.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <type_traits>
#include <utility>

#include "broker/extensions.h"
#include "common/log.h"
#include "net/tls.h"

namespace witmq::net {

namespace asio = boost::asio;
using asio::ip::tcp;
using std::chrono::milliseconds;

namespace {

// The input buffer starts at this size and is given back down to it once a frame larger than
// kKeepBufferBytes has been handled; output buffers above kKeepBufferBytes are released too.
constexpr size_t kInitialInputBytes = 64 << 10;
constexpr size_t kKeepBufferBytes = 1 << 20;
// Free space below which the input buffer is compacted before the next read.
constexpr size_t kMinReadBytes = 4 << 10;
// After goaway has been written, how long the client gets to read it and close before the
// server closes (closing with unread input would reset the connection and could lose goaway).
constexpr auto kLinger = std::chrono::seconds(2);

Error shutting_down() { return Error(ErrorCode::kUnavailable, "the server is shutting down"); }

}  // namespace

Session::Session(uint64_t id, tcp::socket socket, ServerContext& context, asio::ssl::context* tls)
    : id_(id),
      socket_(std::move(socket)),
      ctx_(context),
      opts_(context.options),
      broker_(context.broker),
      in_(kInitialInputBytes),
      reader_wake_(socket_.get_executor()),
      writer_wake_(socket_.get_executor()),
      watchdog_timer_(socket_.get_executor()),
      handshake_timer_(socket_.get_executor()) {
  if (tls) tls_.emplace(std::move(socket_), *tls);
  handshake_done_ = !tls_;
}

Session::~Session() = default;

template <typename F>
void Session::post(F&& f) {
  asio::post(socket_.get_executor(), std::forward<F>(f));
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
    log::debug(
        "connection {}: no TLS handshake within {} ms (tls-handshake-timeout-ms); closing it",
        self->id_, self->opts_.tls_handshake_timeout.count());
    self->close();
  });
  boost::system::error_code ec;
  co_await tls_->async_handshake(asio::ssl::stream_base::server,
                                 asio::redirect_error(asio::use_awaitable, ec));
  handshake_timer_.cancel();
  if (closed_) co_return;
  if (ec) {
    log::debug("connection {}: TLS handshake failed: {}", id_,
               handshake_failure(tls_->native_handle(), ec));
    close();
    co_return;
  }
  handshake_done_ = true;
  peer_certificate_cn_ = verified_peer_cn(tls_->native_handle());
  if (peer_certificate_cn_) {
    log::debug("connection {}: client certificate CN={}", id_, *peer_certificate_cn_);
  }
  start_loops();
}

void Session::start_loops() {
  last_read_ = Clock::now();
  auto self = shared_from_this();
  asio::co_spawn(
      socket_.get_executor(), [self] { return self->read_loop(); }, asio::detached);
  asio::co_spawn(
      socket_.get_executor(), [self] { return self->write_loop(); }, asio::detached);
  asio::co_spawn(
      socket_.get_executor(), [self] { return self->watchdog(); }, asio::detached);
}

void Session::shutdown() {
  post([self = shared_from_this()] { self->begin_drain(); });
}

void Session::abort() {
  post([self = shared_from_this()] {
    if (!self->closed_) {
      log::warn("connection {}: still busy at the end of the shutdown timeout; closing it",
                self->id_);
    }
    self->close();
  });
}

// ---- reading -----------------------------------------------------------------------------------

bool Session::reading_paused() const {
  return over_cap_ || (opts_.max_in_flight != 0 && in_flight_ >= opts_.max_in_flight);
}

void Session::wake_reader() {
  if (reader_waiting_) reader_wake_.cancel();
}

void Session::ensure_input_space() {
  if (in_begin_ == in_end_) {
    in_begin_ = in_end_ = 0;
    if (in_.size() > kKeepBufferBytes && need_ < kKeepBufferBytes) {
      std::vector<uint8_t>(kInitialInputBytes).swap(in_);
    }
  }
  const size_t want = std::max(need_, kMinReadBytes);
  if (in_.size() - in_end_ >= want) return;
  if (in_begin_ > 0) {
    std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  // need_ is bounded by max-frame-bytes: the codec checks the length field before asking.
  if (in_.size() - in_end_ < need_) in_.resize(in_end_ + need_);
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
        co_await reader_wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        reader_waiting_ = false;
        last_read_ = Clock::now();  // a paused connection is not idle
        continue;
      }
    }
    if (closing_) {
      // After goaway or during a drain, input is read only to be discarded.
      in_begin_ = in_end_ = need_ = 0;
    }
    ensure_input_space();
    const auto into = asio::buffer(in_.data() + in_end_, in_.size() - in_end_);
    size_t n = 0;
    if (tls_) {
      n = co_await tls_->async_read_some(into, asio::redirect_error(asio::use_awaitable, ec));
    } else {
      n = co_await socket_.async_read_some(into, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) break;
    in_end_ += n;
    last_read_ = Clock::now();
    ctx_.counters.bytes_in.fetch_add(n, std::memory_order_relaxed);
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
                     Side::kServer, opts_.limits);
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
  if (e.close_connection) return goaway(e.request_id, e.error);
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
  if (opts_.authenticator) {
    // Over TLS, a verified client certificate's CN may name the identity.
    auto access = opts_.authenticator->authenticate(c.token, peer_certificate_cn_, true);
    if (!access) {
      log::info("connection {}: connect refused: {}", id_, access.error().message);
      return goaway(id, Error(access.error().code,
                              fmt::format("connect: {}", access.error().message)));
    }
    access_ = std::move(*access);
  }
  auto client = broker_.connect(c.name);
  if (!client) {
    return goaway(id,
                  Error(client.error().code, fmt::format("connect: {}", client.error().message)));
  }
  client_ = std::move(*client);
  connected_ = true;
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
        } else {
          // The codec decodes only request types on the server side.
          reply_error(id,
                      Error(ErrorCode::kUnsupported, fmt::format("frame type {} is not a request",
                                                                 frame_type_name(frame.type()))));
        }
      },
      frame.body);
}

void Session::handle_send(uint32_t id, Send& s) {
  if (auto st = authorize(auth::Action::kSend, s.channel); !st) return reply_error(id, st.error());
  ++in_flight_;
  ctx_.counters.messages_in.fetch_add(s.messages.size(), std::memory_order_relaxed);
  broker_.send(client_, s.channel, std::move(s.messages),
               [self = shared_from_this(), id](Status st) mutable {
                 self->post([self, id, st = std::move(st)] {
                   if (st) {
                     self->reply_empty(id, FrameType::kSendOk);
                   } else {
                     self->reply_error(id, st.error());
                   }
                   self->answered();
                 });
               });
}

void Session::handle_update(uint32_t id, const UpdateGuestConfiguration& u) {
  for (const std::string& channel : u.config.channels) {
    if (auto allowed = authorize(auth::Action::kReceive, channel); !allowed) {
      return reply_error(id, Error(allowed.error().code,
                                   fmt::format("update-guest-configuration: {}",
                                               allowed.error().message)));
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

void Session::handle_admin_request(uint32_t id, AdminRequest& a) {
  ++in_flight_;
  asio::post(ctx_.admin_pool, [self = shared_from_this(), id, op = a.op,
                               json = std::move(a.json)]() mutable {
    auto result = handle_admin(self->broker_, op, json, self->ctx_.admin, self->access_.get());
    self->post([self, id, op, result = std::move(result)]() mutable {
      if (!result) {
        self->reply_error(id, result.error());
      } else if (op == AdminOp::kBrowse) {
        auto& messages = result->messages;
        // Browse acquires nothing, so a page cut short by the frame limit loses nothing: the
        // client continues from the last sequence it got.
        messages.resize(self->fitting(messages, kHeaderBytes + 4));
        if (self->can_write()) {
          encode(self->out_pending_, id, BrowseOk{std::move(messages)});
          self->queued();
        }
      } else if (result->json.size() + kHeaderBytes + 4 >
                 size_t{self->opts_.limits.max_frame_bytes} + kLengthFieldBytes) {
        self->reply_error(
            id, Error(ErrorCode::kResourceExhausted,
                      fmt::format("the reply is {} bytes of JSON, above "
                                  "max-frame-bytes {}",
                                  result->json.size(), self->opts_.limits.max_frame_bytes)));
      } else if (self->can_write()) {
        encode(self->out_pending_, id, AdminReply{op, std::move(result->json)});
        self->queued();
      }
      self->answered();
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
  if (messages.empty()) {
    if (draining_) {
      reply_error(id, shutting_down());
      return answered();
    }
    if (!r->try_receive || Clock::now() + milliseconds(1) < r->deadline) {
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
  release(messages, fitting(messages, overhead));
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

size_t Session::fitting(std::span<const Message> messages, size_t overhead) const {
  const size_t limit = size_t{opts_.limits.max_frame_bytes} + kLengthFieldBytes;
  size_t bytes = overhead;
  for (size_t i = 0; i < messages.size(); ++i) {
    bytes += message_wire_size(messages[i]);
    if (bytes > limit) return std::max<size_t>(i, 1);
  }
  return messages.size();
}

void Session::release(std::vector<Message>& messages, size_t keep) {
  if (keep >= messages.size()) return;
  log::warn(
      "connection {}: a receive reply holds {} of {} messages: the rest do not fit in "
      "max-frame-bytes {} and are released (their lease ends now)",
      id_, keep, messages.size(), opts_.limits.max_frame_bytes);
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
  options.max_messages = static_cast<uint32_t>(
      std::min<uint64_t>({stream_.credit, stream_batch_size_, opts_.max_receive_messages}));
  stream_.receive_pending = true;
  broker_.receive(client_, configured_channels_, options,
                  [self = shared_from_this()](Result<std::vector<Message>> result) mutable {
                    self->post([self, result = std::move(result)]() mutable {
                      self->on_stream_receive(std::move(result));
                    });
                  });
}

void Session::on_stream_receive(Result<std::vector<Message>> result) {
  stream_.receive_pending = false;
  if (closed_) return;
  if (!result) {
    if (stream_.stop_ids.empty() && !draining_) end_stream(result.error());
  } else if (!result->empty()) {
    deliver(*result);
  }
  if (!stream_.stop_ids.empty()) {
    finish_stream_stop();
  } else if (draining_) {
    maybe_finish_drain();
  } else {
    pump_stream();
  }
}

void Session::deliver(std::vector<Message>& messages) {
  stream_.credit -= std::min<uint64_t>(stream_.credit, messages.size());
  if (!can_write()) return;
  // A receive's batch comes from one channel.
  const std::string* channel = find_metadata(messages.front(), meta::kChannel);
  const std::string_view name = channel ? std::string_view(*channel) : configured_channels_.front();
  const size_t overhead = message_frame_overhead(name);
  std::span<const Message> rest(messages);
  while (!rest.empty()) {
    const size_t n = fitting(rest, overhead);
    encode_deliver(out_pending_, stream_.id, name, rest.first(n));
    rest = rest.subspan(n);
  }
  ctx_.counters.messages_out.fetch_add(messages.size(), std::memory_order_relaxed);
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

void Session::answered() {
  --in_flight_;
  wake_reader();
  maybe_finish_drain();
}

void Session::queued() {
  if (!over_cap_ && queued_bytes() > opts_.max_output_bytes) {
    over_cap_ = true;
    over_cap_since_ = Clock::now();
    watchdog_timer_.cancel();
  }
  if (writer_waiting_) writer_wake_.cancel();
}

void Session::goaway(uint32_t id, const Error& error) {
  if (!can_write()) return;
  encode_error(out_pending_, id, FrameType::kGoaway, error);
  log::debug("connection {}: goaway: {}", id_, error.to_string());
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
      if (!closed_) log::debug("connection {}: write failed: {}", id_, ec.message());
      break;
    }
    ctx_.counters.bytes_out.fetch_add(n, std::memory_order_relaxed);
    out_writing_.clear();
    if (out_writing_.capacity() > kKeepBufferBytes) Buffer().swap(out_writing_);
    if (over_cap_ && queued_bytes() <= opts_.max_output_bytes) {
      over_cap_ = false;
      watchdog_timer_.cancel();
      wake_reader();
      pump_stream();
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
      if (over_cap_) {
        const auto stall_at = over_cap_since_ + opts_.output_stall_timeout;
        if (now >= stall_at) {
          log::warn(
              "connection {}: {} bytes of output queued for more than {} ms (the client does not "
              "read); closing it",
              id_, queued_bytes(), opts_.output_stall_timeout.count());
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
  // Mid-handshake nothing is in flight and goaway cannot be sent yet.
  if (!handshake_done_) return close();
  if (!connected_) return goaway(0, shutting_down());
  closing_ = true;
  wake_reader();
  broker_.cancel_receives(client_);
  maybe_finish_drain();
}

void Session::maybe_finish_drain() {
  if (!draining_ || !can_write() || in_flight_ > 0 || stream_.receive_pending) return;
  if (stream_.active) end_stream(shutting_down());
  goaway(0, shutting_down());
}

void Session::close() {
  if (closed_) return;
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
  log::debug("connection {}: closed", id_);
  ctx_.on_closed(id_);
}

}  // namespace witmq::net
