#include "cluster/peer_server.h"

#include <fmt/format.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "cluster/peer_auth.h"
#include "cluster/peer_frames.h"
#include "common/log.h"

namespace witmq::cluster {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

struct Connection : std::enable_shared_from_this<Connection> {
  explicit Connection(tcp::socket s) : socket(std::move(s)), room(socket.get_executor()) {}
  tcp::socket socket;
  std::string remote;
  bool welcomed = false;  // the hello was accepted (on the connection's strand only)
  // After the welcome, every answer goes through this queue (strand only), so that answers
  // written later, from other threads (replication's acks), never interleave with a pong.
  std::deque<std::string> outbox;
  size_t outbox_bytes = 0;
  bool writing = false;
  bool closed = false;
  // A refusal is queued: it is the last frame, nothing is queued after it (strand only).
  bool refusing = false;
  // Frames handed to replication and not answered yet, and their bytes (strand only).
  size_t in_flight = 0, in_flight_bytes = 0;
  // The reader waits on it while the answers owed are over their bounds (strand only).
  asio::steady_timer room;

  // Strand only. Whether the reader must wait before it takes another frame: a peer that does
  // not read its answers, or sends frames faster than they are stored, is not read from until
  // the node has caught up (its own sends then wait in TCP), so that it holds no more than these
  // bounds here, whatever it sends.
  bool backlogged(size_t max_in_flight_bytes) const {
    return outbox_bytes > kPeerMaxAnswerBytes || in_flight >= kPeerMaxFramesInFlight ||
           in_flight_bytes >= max_in_flight_bytes;
  }
  void wake() { room.cancel(); }

  // Strand only.
  void enqueue(std::string frame) {
    if (closed || refusing) return;
    outbox_bytes += frame.size();
    outbox.push_back(std::move(frame));
    if (!writing) write_next();
  }
  void write_next() {
    if (outbox.empty() || closed) {
      writing = false;
      return;
    }
    writing = true;
    asio::async_write(socket, asio::buffer(outbox.front()),
                      [self = shared_from_this()](boost::system::error_code ec, size_t) {
                        self->outbox_bytes -= self->outbox.front().size();
                        self->outbox.pop_front();
                        self->wake();
                        if (ec) {
                          self->closed = true;
                          self->outbox.clear();
                          self->outbox_bytes = 0;
                          self->writing = false;
                          self->socket.close(ec);
                          return;
                        }
                        self->write_next();
                      });
  }
};

// Held by a frame's reply function: when the last copy goes (answered, or dropped unanswered),
// the frame no longer counts against its connection's bounds.
struct Owed {
  Owed(std::weak_ptr<Connection> c, size_t b) : conn(std::move(c)), bytes(b) {}
  Owed(const Owed&) = delete;
  Owed& operator=(const Owed&) = delete;
  ~Owed() {
    auto c = conn.lock();
    if (!c) return;
    auto executor = c->socket.get_executor();
    asio::post(executor, [c = std::move(c), b = bytes] {
      --c->in_flight;
      c->in_flight_bytes -= b;
      c->wake();
    });
  }
  std::weak_ptr<Connection> conn;
  size_t bytes;
};

std::string endpoint_text(const tcp::endpoint& e) {
  if (e.address().is_v6()) return fmt::format("[{}]:{}", e.address().to_string(), e.port());
  return fmt::format("{}:{}", e.address().to_string(), e.port());
}

}  // namespace

struct PeerServer::State : std::enable_shared_from_this<PeerServer::State> {
  State(asio::io_context& io, PeerServerOptions o)
      : io(io), options(std::move(o)), acceptor(asio::make_strand(io)) {}

  asio::io_context& io;
  const PeerServerOptions options;
  tcp::acceptor acceptor;
  tcp::endpoint bound;

  std::atomic<uint64_t> open{0}, authenticated{0}, refused{0}, frames{0};

  std::mutex mu;  // guards the members below
  bool stopped = false;
  uint64_t next_id = 0;
  std::map<uint64_t, std::weak_ptr<Connection>> connections;
  std::set<uint64_t> unauthenticated;  // connections in the handshake, oldest first

  asio::awaitable<void> accept_loop();
  asio::awaitable<void> serve(std::shared_ptr<Connection> conn, uint64_t id);
  asio::awaitable<void> refuse(Connection& conn, ErrorCode code, const std::string& text);
  void forget(uint64_t id);
};

asio::awaitable<void> PeerServer::State::accept_loop() {
  auto self = shared_from_this();
  for (;;) {
    boost::system::error_code ec;
    tcp::socket socket(asio::make_strand(io));
    co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      // Out of descriptors and the like: keep accepting, the peer retries.
      log::warn("peer listener: accept failed: {}", ec.message());
      continue;
    }
    auto conn = std::make_shared<Connection>(std::move(socket));
    boost::system::error_code rec;
    // Answers are small frames written one after another: not held back waiting for the
    // acknowledgement of the one before (Nagle), or each commit group's acknowledgement could wait
    // on the leader's delayed ACK.
    conn->socket.set_option(tcp::no_delay(true), rec);
    const tcp::endpoint remote = conn->socket.remote_endpoint(rec);
    conn->remote = rec ? std::string("?") : endpoint_text(remote);
    uint64_t id = 0;
    {
      std::lock_guard lock(mu);
      if (stopped) co_return;
      if (connections.size() >= options.max_connections) {
        ++refused;
        log::warn(
            "peer listener: connection from {} closed: {} peer connections are open, the "
            "most it takes",
            conn->remote, connections.size());
        conn->socket.close(rec);
        continue;
      }
      if (!unauthenticated.empty() && unauthenticated.size() >= options.max_unauthenticated) {
        // The oldest connection still in its handshake makes room: a peer completes the
        // handshake in a few round trips, so strangers that connect and wait are what goes.
        const uint64_t oldest = *unauthenticated.begin();
        unauthenticated.erase(unauthenticated.begin());
        ++refused;
        auto it = connections.find(oldest);
        if (auto old = it == connections.end() ? nullptr : it->second.lock()) {
          log::warn(
              "peer listener: {} closed: {} connections are in the handshake, the most it "
              "takes; the oldest makes room for {}",
              old->remote, options.max_unauthenticated, conn->remote);
          asio::post(old->socket.get_executor(), [old] {
            boost::system::error_code ignored;
            old->socket.close(ignored);
          });
        }
      }
      id = ++next_id;
      unauthenticated.insert(id);
      connections.emplace(id, conn);
    }
    ++open;
    asio::co_spawn(conn->socket.get_executor(), serve(conn, id), asio::detached);
  }
}

void PeerServer::State::forget(uint64_t id) {
  std::lock_guard lock(mu);
  connections.erase(id);
  --open;
}

asio::awaitable<void> PeerServer::State::refuse(Connection& conn, ErrorCode code,
                                                const std::string& text) {
  ++refused;
  log::warn("peer listener: refused {}: {}", conn.remote, text);
  std::string frame = encode_peer_frame(PeerRefused{code, text});
  boost::system::error_code ec;
  if (!conn.welcomed) {
    // In the handshake nothing else is written: the refusal goes at once.
    co_await asio::async_write(conn.socket, asio::buffer(frame),
                               asio::redirect_error(asio::use_awaitable, ec));
  } else {
    // After the welcome answers are being written from the queue (one write at a time): a write
    // of its own here could land between two parts of an answer and break the framing the peer
    // reads. The refusal goes last through the same queue, and the connection closes once the
    // queue is written, or after the handshake bound if the peer does not read it.
    conn.enqueue(std::move(frame));
    conn.refusing = true;
    const auto until = std::chrono::steady_clock::now() + options.handshake_timeout;
    while (!conn.closed && !conn.outbox.empty() && std::chrono::steady_clock::now() < until) {
      conn.room.expires_at(until);
      co_await conn.room.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  conn.socket.shutdown(tcp::socket::shutdown_send, ec);
  conn.socket.close(ec);
}

asio::awaitable<void> PeerServer::State::serve(std::shared_ptr<Connection> conn, uint64_t id) {
  auto self = shared_from_this();
  // The handshake bound: the timer closes the socket unless the hello was accepted first.
  asio::steady_timer deadline(conn->socket.get_executor());
  bool& welcomed = conn->welcomed;
  deadline.expires_after(options.handshake_timeout);
  deadline.async_wait([conn, self, this](boost::system::error_code ec) {
    if (ec || conn->welcomed) return;
    ++refused;
    log::warn("peer listener: {} did not complete the handshake within {} ms; closing",
              conn->remote, options.handshake_timeout.count());
    conn->socket.close(ec);
  });

  std::array<uint8_t, kPeerHeaderBytes> header{};
  std::vector<uint8_t> body;
  std::string peer_id;
  // The handshake's state: the id the hello claims and both nonces, once the challenge is out.
  std::string claimed_id, dialer_nonce, listener_nonce;
  // The connection leaves the handshake's slots once welcomed (or when it ends).
  auto authenticated_now = [&] {
    std::lock_guard lock(mu);
    unauthenticated.erase(id);
  };
  ErrorCode refusal_code = ErrorCode::kInvalidArgument;
  std::string refusal;
  for (;;) {
    boost::system::error_code ec;
    while (!conn->closed && conn->backlogged(options.max_frame_bytes)) {
      conn->room.expires_at(asio::steady_timer::time_point::max());
      co_await conn->room.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (conn->closed) break;
    co_await asio::async_read(conn->socket, asio::buffer(header),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    const uint32_t length = peer_body_length(header);
    const uint32_t limit = welcomed ? options.max_frame_bytes : kPeerMaxHelloBytes;
    if (length > limit) {
      refusal_code = ErrorCode::kResourceExhausted;
      if (welcomed) {
        refusal = fmt::format("frame of {} bytes exceeds cluster-peer-max-frame-bytes ({})", length,
                              limit);
      } else {
        refusal = fmt::format(
            "handshake frame of {} bytes exceeds the {} bytes a handshake frame may have", length,
            limit);
      }
      break;
    }
    body.resize(length);
    co_await asio::async_read(conn->socket, asio::buffer(body),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    ++frames;
    auto frame = decode_peer_body(body);
    if (!frame) {
      refusal_code = ErrorCode::kInvalidArgument;
      refusal = frame.error().message;
      break;
    }
    if (!welcomed && dialer_nonce.empty()) {
      // Nothing that names this node or its cluster goes out before the dialer's proof checks.
      const auto* hello = std::get_if<PeerHello>(&*frame);
      if (hello == nullptr) {
        refusal_code = ErrorCode::kPermissionDenied;
        refusal =
            fmt::format("expected a hello as the first frame, got {}", peer_frame_name(*frame));
        break;
      }
      if (hello->version != kPeerProtocolVersion) {
        refusal_code = ErrorCode::kUnsupported;
        refusal = fmt::format("hello of node '{}': peer protocol version {}, this node speaks {}",
                              peer_text(hello->node_id), hello->version, kPeerProtocolVersion);
        break;
      }
      if (hello->nonce.size() != kPeerNonceBytes) {
        refusal_code = ErrorCode::kInvalidArgument;
        refusal = fmt::format("hello of node '{}': a nonce of {} bytes, expected {}",
                              peer_text(hello->node_id), hello->nonce.size(), kPeerNonceBytes);
        break;
      }
      claimed_id = hello->node_id;
      dialer_nonce = hello->nonce;
      listener_nonce = peer_nonce();
      const std::string reply = encode_peer_frame(PeerChallenge{listener_nonce});
      co_await asio::async_write(conn->socket, asio::buffer(reply),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      continue;
    }
    if (!welcomed) {
      const auto* proof = std::get_if<PeerProof>(&*frame);
      if (proof == nullptr) {
        refusal_code = ErrorCode::kPermissionDenied;
        refusal =
            fmt::format("expected a proof after the challenge, got {}", peer_frame_name(*frame));
        break;
      }
      const std::string expected =
          dialer_proof(options.token, options.cluster, claimed_id, dialer_nonce, listener_nonce);
      if (!proofs_match(proof->proof, expected)) {
        // One answer for a wrong secret and a wrong cluster name: it says neither.
        refusal_code = ErrorCode::kPermissionDenied;
        refusal = fmt::format(
            "hello of node '{}': its proof does not check: it does not hold this cluster's "
            "secret (cluster-peer-token-file) or is in another cluster (cluster-name)",
            peer_text(claimed_id));
        break;
      }
      welcomed = true;
      deadline.cancel();
      peer_id = peer_text(claimed_id);
      authenticated_now();
      ++authenticated;
      log::info("peer listener: node '{}' connected from {}", peer_id, conn->remote);
      const std::string reply = encode_peer_frame(
          PeerWelcome{kPeerProtocolVersion, options.node_id,
                      listener_proof(options.token, options.cluster, claimed_id, options.node_id,
                                     dialer_nonce, listener_nonce)});
      co_await asio::async_write(conn->socket, asio::buffer(reply),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      continue;
    }
    if (const auto* ping = std::get_if<PeerPing>(&*frame)) {
      conn->enqueue(encode_peer_frame(PeerPong{ping->nonce}));
      if (conn->closed) break;
      continue;
    }
    auto* replicate = std::get_if<PeerReplicate>(&*frame);
    auto* snapshot = std::get_if<PeerSnapshot>(&*frame);
    if ((replicate && options.on_replicate) || (snapshot && options.on_snapshot)) {
      std::weak_ptr<Connection> weak = conn;
      ++conn->in_flight;
      conn->in_flight_bytes += body.size();
      auto owed = std::make_shared<const Owed>(weak, body.size());
      auto reply = [weak, owed](std::string answer) {
        auto c = weak.lock();
        if (!c) return;
        auto executor = c->socket.get_executor();
        asio::post(executor, [c = std::move(c), answer = std::move(answer)]() mutable {
          c->enqueue(std::move(answer));
        });
      };
      if (replicate) {
        options.on_replicate(peer_id, std::move(*replicate), std::move(reply));
      } else {
        options.on_snapshot(peer_id, std::move(*snapshot), std::move(reply));
      }
      if (conn->closed) break;
      continue;
    }
    if (const auto* r = std::get_if<PeerRefused>(&*frame)) {
      log::warn("peer listener: node '{}' ({}) closed the link: {}", peer_id, conn->remote,
                peer_text(r->text));
      break;
    }
    refusal_code = ErrorCode::kInvalidArgument;
    refusal = fmt::format("node '{}' sent a {} frame, which a listener never takes", peer_id,
                          peer_frame_name(*frame));
    break;
  }
  // Refused once out of the loop, with the text in a local: GCC 12 mishandles temporaries (a
  // conditional's in particular) in a co_await's arguments.
  if (!refusal.empty()) co_await refuse(*conn, refusal_code, refusal);
  authenticated_now();
  welcomed = true;
  conn->closed = true;
  deadline.cancel();
  boost::system::error_code ec;
  conn->socket.close(ec);
  if (!peer_id.empty())
    log::info("peer listener: node '{}' ({}) disconnected", peer_id, conn->remote);
  forget(id);
}

PeerServer::PeerServer(asio::io_context& io, PeerServerOptions options)
    : state_(std::make_shared<State>(io, std::move(options))) {}

PeerServer::~PeerServer() { stop(); }

Status PeerServer::listen() {
  const std::string& s = state_->options.listen;
  const auto colon = s.rfind(':');
  if (colon == std::string::npos) {
    return invalid_argument(fmt::format("cluster-peer-listen: '{}' is not HOST:PORT", s));
  }
  std::string host = s.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = s.substr(colon + 1);
  try {
    tcp::resolver resolver(state_->io);
    const auto results = resolver.resolve(host, port, tcp::resolver::passive);
    if (results.empty()) {
      return Error(ErrorCode::kIoError,
                   fmt::format("cluster-peer-listen: '{}' resolves to no address", s));
    }
    const tcp::endpoint ep = results.begin()->endpoint();
    auto& a = state_->acceptor;
    a.open(ep.protocol());
    a.set_option(asio::socket_base::reuse_address(true));
    a.bind(ep);
    a.listen(asio::socket_base::max_listen_connections);
    state_->bound = a.local_endpoint();
  } catch (const boost::system::system_error& e) {
    return Error(ErrorCode::kIoError,
                 fmt::format("cluster-peer-listen: cannot listen on '{}': {}", s, e.what()));
  }
  asio::co_spawn(state_->acceptor.get_executor(), state_->accept_loop(), asio::detached);
  return ok_status();
}

tcp::endpoint PeerServer::local_endpoint() const { return state_->bound; }

void PeerServer::stop() {
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) return;
    state_->stopped = true;
    for (auto& [id, weak] : state_->connections) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
  }
  // Closing runs on each object's strand, where its operations run.
  asio::post(state_->acceptor.get_executor(), [s = state_] {
    boost::system::error_code ec;
    s->acceptor.close(ec);
  });
  for (auto& c : open) {
    asio::post(c->socket.get_executor(), [c] {
      boost::system::error_code ec;
      c->socket.close(ec);
      // A reader waiting for room stops too.
      c->closed = true;
      c->wake();
    });
  }
}

PeerServerFigures PeerServer::figures() const {
  return {state_->open.load(), state_->authenticated.load(), state_->refused.load(),
          state_->frames.load()};
}

nlohmann::json PeerServer::to_json() const {
  const PeerServerFigures f = figures();
  return {{"listen", endpoint_text(state_->bound)},
          {"connections-open", f.connections_open},
          {"peers-authenticated", f.peers_authenticated},
          {"peers-refused", f.peers_refused},
          {"frames-received", f.frames_received}};
}

}  // namespace witmq::cluster
