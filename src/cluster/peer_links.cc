#include "cluster/peer_links.h"

#include <fmt/format.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

#include "cluster/peer_auth.h"
#include "cluster/peer_frames.h"
#include "common/log.h"

namespace witmq::cluster {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kFirstRetry = std::chrono::milliseconds(100);
constexpr auto kLastRetry = std::chrono::milliseconds(5'000);
// A listener's answers are a challenge, a welcome, a pong or a refused with its text: far below
// this.
constexpr uint32_t kMaxAnswerBytes = 70'000;

}  // namespace

const char* peer_link_state_name(PeerLinkState s) {
  switch (s) {
    case PeerLinkState::kConnecting:
      return "connecting";
    case PeerLinkState::kUp:
      return "up";
    case PeerLinkState::kDown:
      return "down";
    case PeerLinkState::kRefused:
      return "refused";
  }
  return "?";
}

// One peer's link. Everything but `status` lives on `strand`.
struct Link : std::enable_shared_from_this<Link> {
  Link(asio::io_context& io, std::string node, std::string address)
      : strand(asio::make_strand(io)),
        socket(strand),
        resolver(strand),
        wait(strand),
        guard(strand),
        node(std::move(node)),
        address(std::move(address)) {}

  asio::strand<asio::io_context::executor_type> strand;
  tcp::socket socket;
  tcp::resolver resolver;
  asio::steady_timer wait;   // between pings and before a retry
  asio::steady_timer guard;  // bounds one exchange: closes the socket when it fires
  uint64_t guard_generation = 0;
  bool closed = false;
  const std::string node;
  const std::string address;

  mutable std::mutex mu;  // guards `status`
  PeerLinkStatus status;

  // After the welcome (strand only): frames to write, and the timer the writer sleeps on.
  std::deque<std::shared_ptr<const std::string>> outbox;
  size_t queued_bytes = 0;
  bool up = false;
  bool reader_done = true;
  std::optional<asio::steady_timer> wake;

  void set(PeerLinkState state, std::string error = {}) {
    std::lock_guard lock(mu);
    status.state = state;
    status.error = std::move(error);
  }

  // Arms the guard for `timeout`: unless disarm() comes first, the socket and the resolver are
  // closed, and the exchange under way fails.
  void arm(std::chrono::milliseconds timeout) {
    const uint64_t generation = ++guard_generation;
    guard.expires_after(timeout);
    guard.async_wait([self = shared_from_this(), generation](boost::system::error_code ec) {
      if (ec || generation != self->guard_generation) return;
      self->resolver.cancel();
      boost::system::error_code ignored;
      self->socket.close(ignored);
    });
  }
  void disarm() {
    ++guard_generation;
    guard.cancel();
  }
  void close() {
    closed = true;
    disarm();
    wait.cancel();
    if (wake) wake->cancel();
    resolver.cancel();
    boost::system::error_code ignored;
    socket.close(ignored);
  }
};

struct PeerLinks::State {
  State(asio::io_context& io, PeerLinksOptions o) : io(io), options(std::move(o)) {}
  asio::io_context& io;
  const PeerLinksOptions options;
  mutable std::mutex mu;  // guards the members below
  bool stopped = false;
  std::map<std::string, std::shared_ptr<Link>> links;
};

namespace {

asio::awaitable<Result<PeerFrame>> read_frame(tcp::socket& socket) {
  std::array<uint8_t, kPeerHeaderBytes> header{};
  boost::system::error_code ec;
  co_await asio::async_read(socket, asio::buffer(header),
                            asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error(ErrorCode::kUnavailable, ec.message());
  const uint32_t length = peer_body_length(header);
  if (length > kMaxAnswerBytes) {
    co_return invalid_argument(fmt::format("answer of {} bytes, more than the {} a listener sends",
                                           length, kMaxAnswerBytes));
  }
  std::vector<uint8_t> body(length);
  co_await asio::async_read(socket, asio::buffer(body),
                            asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error(ErrorCode::kUnavailable, ec.message());
  co_return decode_peer_body(body);
}

asio::awaitable<Status> exchange(std::shared_ptr<Link> link, const PeerLinksOptions& options);

// One connection's life: dial, hello, then pings until something fails. Returns why it ended.
asio::awaitable<Status> hold(std::shared_ptr<Link> link, const PeerLinksOptions& options) {
  boost::system::error_code ec;
  const auto colon = link->address.rfind(':');
  if (colon == std::string::npos) {
    co_return invalid_argument(fmt::format("peer address '{}' is not HOST:PORT", link->address));
  }
  std::string host = link->address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = link->address.substr(colon + 1);
  link->arm(options.timeout);
  // Locals only in a co_await's arguments: GCC 12 mishandles temporaries there.
  const auto endpoints = co_await link->resolver.async_resolve(
      host, port, asio::redirect_error(asio::use_awaitable, ec));
  if (ec || link->closed) {
    link->disarm();
    co_return Error(ErrorCode::kUnavailable, fmt::format("cannot resolve: {}", ec.message()));
  }
  link->socket = tcp::socket(link->strand);
  co_await asio::async_connect(link->socket, endpoints,
                               asio::redirect_error(asio::use_awaitable, ec));
  if (ec || link->closed) {
    link->disarm();
    co_return Error(ErrorCode::kUnavailable, fmt::format("cannot connect: {}", ec.message()));
  }
  link->socket.set_option(tcp::no_delay(true), ec);
  const std::string nonce = peer_nonce();
  const std::string hello =
      encode_peer_frame(PeerHello{kPeerProtocolVersion, options.cluster, options.node_id, nonce});
  co_await asio::async_write(link->socket, asio::buffer(hello),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    link->disarm();
    co_return Error(ErrorCode::kUnavailable, fmt::format("hello not sent: {}", ec.message()));
  }
  auto answer = co_await read_frame(link->socket);
  if (!answer) {
    link->disarm();
    co_return Error(answer.error().code, "no challenge: " + answer.error().message);
  }
  if (const auto* r = std::get_if<PeerRefused>(&*answer)) {
    link->disarm();
    co_return Error(ErrorCode::kPermissionDenied, peer_text(r->text));
  }
  const auto* challenge = std::get_if<PeerChallenge>(&*answer);
  if (challenge == nullptr) {
    link->disarm();
    co_return invalid_argument(
        fmt::format("answered the hello with a {} frame", peer_frame_name(*answer)));
  }
  if (challenge->nonce.size() != kPeerNonceBytes) {
    link->disarm();
    co_return invalid_argument(fmt::format("a challenge nonce of {} bytes, expected {}",
                                           challenge->nonce.size(), kPeerNonceBytes));
  }
  const std::string listener_nonce = challenge->nonce;
  const std::string proof = encode_peer_frame(PeerProof{
      dialer_proof(options.token, options.cluster, options.node_id, nonce, listener_nonce)});
  co_await asio::async_write(link->socket, asio::buffer(proof),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    link->disarm();
    co_return Error(ErrorCode::kUnavailable, fmt::format("proof not sent: {}", ec.message()));
  }
  answer = co_await read_frame(link->socket);
  link->disarm();
  if (!answer) co_return Error(answer.error().code, "no welcome: " + answer.error().message);
  if (const auto* r = std::get_if<PeerRefused>(&*answer)) {
    co_return Error(ErrorCode::kPermissionDenied, peer_text(r->text));
  }
  const auto* welcome = std::get_if<PeerWelcome>(&*answer);
  if (welcome == nullptr) {
    co_return invalid_argument(
        fmt::format("answered the proof with a {} frame", peer_frame_name(*answer)));
  }
  // The listener's proof covers the id it names: a node without the secret cannot pass for one.
  const std::string expected = listener_proof(options.token, options.cluster, options.node_id,
                                              welcome->node_id, nonce, listener_nonce);
  if (!proofs_match(welcome->proof, expected)) {
    co_return Error(ErrorCode::kPermissionDenied,
                    fmt::format("the node at {} did not prove that it holds this cluster's secret "
                                "(cluster-peer-token-file) in this cluster (cluster-name)",
                                link->address));
  }
  if (welcome->node_id != link->node) {
    co_return invalid_argument(fmt::format("the node at {} is '{}', not '{}'", link->address,
                                           peer_text(welcome->node_id), link->node));
  }
  {
    std::lock_guard lock(link->mu);
    link->status.state = PeerLinkState::kUp;
    link->status.error.clear();
    ++link->status.connects;
  }
  log::info("peer link to node '{}' ({}) is up", link->node, link->address);
  co_return co_await exchange(link, options);
}

// Reads what the peer sends on an open link: pongs, and replication's answers.
asio::awaitable<void> read_answers(std::shared_ptr<Link> link, const PeerLinksOptions& options,
                                   Status& ended, uint64_t& pong_nonce, Clock::time_point& sent) {
  for (;;) {
    auto frame = co_await read_frame(link->socket);
    // The first reason wins: once the writer has ended the link (a ping not answered, a write
    // that failed) and closed the socket, this read fails too, with an error that says nothing.
    if (!frame) {
      if (ended.ok()) ended = Error(frame.error().code, "read failed: " + frame.error().message);
      break;
    }
    if (const auto* r = std::get_if<PeerRefused>(&*frame)) {
      if (ended.ok()) {
        ended = Error(ErrorCode::kUnavailable, "closed by the peer: " + peer_text(r->text));
      }
      break;
    }
    if (const auto* p = std::get_if<PeerPong>(&*frame)) {
      if (p->nonce != pong_nonce) {
        if (ended.ok()) {
          ended =
              invalid_argument(fmt::format("answered ping {} with pong {}", pong_nonce, p->nonce));
        }
        break;
      }
      pong_nonce = 0;
      std::lock_guard lock(link->mu);
      link->status.rtt_micros =
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent).count();
      continue;
    }
    // A follower's answers to replication (the variant's order is not the frame types').
    if (std::holds_alternative<PeerReplicated>(*frame) ||
        std::holds_alternative<PeerResend>(*frame) ||
        std::holds_alternative<PeerReplicaRefused>(*frame) ||
        std::holds_alternative<PeerDiverged>(*frame) ||
        std::holds_alternative<PeerSnapshotAck>(*frame)) {
      if (options.on_frame) options.on_frame(link->node, std::move(*frame));
      continue;
    }
    if (ended.ok()) {
      ended =
          invalid_argument(fmt::format("sent a {} frame on an open link", peer_frame_name(*frame)));
    }
    break;
  }
  boost::system::error_code ignored;
  link->socket.close(ignored);
  link->reader_done = true;
  if (link->wake) link->wake->cancel();
}

// The open link: writes queued frames and a ping every ping_interval (each to be answered within
// the timeout) while the reader takes the answers. Returns why it ended.
asio::awaitable<Status> exchange(std::shared_ptr<Link> link, const PeerLinksOptions& options) {
  Status ended;
  uint64_t nonce = 0, outstanding = 0;
  Clock::time_point ping_sent{}, next_ping = Clock::now() + options.ping_interval;
  link->wake.emplace(link->strand);
  link->reader_done = false;
  link->up = true;
  asio::co_spawn(link->strand, read_answers(link, options, ended, outstanding, ping_sent),
                 asio::detached);
  if (options.on_up) options.on_up(link->node);
  std::vector<std::shared_ptr<const std::string>> writing;
  std::vector<asio::const_buffer> buffers;
  boost::system::error_code ec;
  while (!link->closed && !link->reader_done) {
    const auto now = Clock::now();
    if (outstanding != 0 && now - ping_sent > options.timeout) {
      if (ended.ok()) {
        ended = Error(
            ErrorCode::kUnavailable,
            fmt::format(
                "no answer to ping {} within {} ms ({} ms since it was queued)", outstanding,
                options.timeout.count(),
                std::chrono::duration_cast<std::chrono::milliseconds>(now - ping_sent).count()));
      }
      break;
    }
    if (outstanding == 0 && now >= next_ping) {
      outstanding = ++nonce;
      ping_sent = now;
      next_ping = now + options.ping_interval;
      link->outbox.push_back(
          std::make_shared<const std::string>(encode_peer_frame(PeerPing{nonce})));
    }
    if (link->outbox.empty()) {
      link->wake->expires_at(outstanding != 0 ? ping_sent + options.timeout : next_ping);
      co_await link->wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    writing.assign(link->outbox.begin(), link->outbox.end());
    link->outbox.clear();
    link->queued_bytes = 0;
    buffers.clear();
    for (const auto& f : writing) buffers.emplace_back(asio::buffer(*f));
    co_await asio::async_write(link->socket, buffers,
                               asio::redirect_error(asio::use_awaitable, ec));
    writing.clear();
    if (ec) {
      if (ended.ok())
        ended = Error(ErrorCode::kUnavailable, fmt::format("write failed: {}", ec.message()));
      break;
    }
  }
  link->up = false;
  link->outbox.clear();
  link->queued_bytes = 0;
  boost::system::error_code ignored;
  link->socket.close(ignored);
  // The reader holds references to this frame's locals: wait for it to end.
  while (!link->reader_done) {
    link->wake->expires_after(std::chrono::seconds(1));
    co_await link->wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return ended;
}

asio::awaitable<void> keep(std::shared_ptr<Link> link, PeerLinksOptions options) {
  auto retry = kFirstRetry;
  while (!link->closed) {
    {
      // The last failure stays in `error` while the next attempt runs.
      std::lock_guard lock(link->mu);
      link->status.state = PeerLinkState::kConnecting;
    }
    const Status ended = co_await hold(link, options);
    boost::system::error_code ec;
    link->socket.close(ec);
    if (link->closed) break;
    bool was_up = false;
    {
      std::lock_guard lock(link->mu);
      was_up = link->status.state == PeerLinkState::kUp;
    }
    const bool refused = !ended && ended.error().code == ErrorCode::kPermissionDenied;
    std::string why = "closed";
    if (!ended) why = ended.error().message;
    if (was_up) retry = kFirstRetry;
    // One line per change of state, not per retry: a peer that stays away is not logged anew.
    std::string previous;
    {
      std::lock_guard lock(link->mu);
      previous = link->status.error;
    }
    if (was_up || previous != why) {
      log::warn("peer link to node '{}' ({}) {}: {}", link->node, link->address,
                refused ? "refused" : "down", why);
    }
    link->set(refused ? PeerLinkState::kRefused : PeerLinkState::kDown, why);
    link->wait.expires_after(retry);
    co_await link->wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    retry = std::min<std::chrono::milliseconds>(retry * 2, kLastRetry);
  }
}

}  // namespace

PeerLinks::PeerLinks(asio::io_context& io, PeerLinksOptions options)
    : state_(std::make_shared<State>(io, std::move(options))) {}

PeerLinks::~PeerLinks() { stop(); }

void PeerLinks::refresh(const std::vector<PeerAddress>& peers) {
  std::vector<std::shared_ptr<Link>> closing, starting;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) return;
    std::map<std::string, std::string> wanted;
    for (const PeerAddress& p : peers) wanted[p.id] = p.address;
    for (auto it = state_->links.begin(); it != state_->links.end();) {
      const auto w = wanted.find(it->first);
      if (w == wanted.end() || w->second != it->second->address) {
        closing.push_back(it->second);
        it = state_->links.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [id, address] : wanted) {
      if (state_->links.contains(id)) continue;
      auto link = std::make_shared<Link>(state_->io, id, address);
      link->status.node = id;
      link->status.address = address;
      state_->links.emplace(id, link);
      starting.push_back(std::move(link));
    }
  }
  for (auto& link : closing) asio::post(link->strand, [link] { link->close(); });
  for (auto& link : starting) {
    asio::co_spawn(link->strand, keep(link, state_->options), asio::detached);
  }
}

void PeerLinks::stop() {
  std::map<std::string, std::shared_ptr<Link>> links;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) return;
    state_->stopped = true;
    links.swap(state_->links);
  }
  for (auto& [id, link] : links) asio::post(link->strand, [link] { link->close(); });
}

bool PeerLinks::send(const std::string& node, std::shared_ptr<const std::string> frame) {
  std::shared_ptr<Link> link;
  {
    std::lock_guard lock(state_->mu);
    auto it = state_->links.find(node);
    if (it == state_->links.end()) return false;
    link = it->second;
  }
  {
    std::lock_guard lock(link->mu);
    if (link->status.state != PeerLinkState::kUp) return false;
  }
  const size_t limit = state_->options.max_queued_bytes;
  asio::post(link->strand, [link, frame = std::move(frame), limit] {
    if (!link->up || link->queued_bytes + frame->size() > limit) return;
    link->queued_bytes += frame->size();
    link->outbox.push_back(frame);
    if (link->wake) link->wake->cancel();
  });
  return true;
}

std::vector<PeerLinkStatus> PeerLinks::status() const {
  std::vector<PeerLinkStatus> out;
  std::lock_guard lock(state_->mu);
  for (const auto& [id, link] : state_->links) {
    std::lock_guard link_lock(link->mu);
    out.push_back(link->status);
  }
  return out;
}

nlohmann::json PeerLinks::to_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const PeerLinkStatus& s : status()) {
    nlohmann::json j{{"node", s.node},
                     {"address", s.address},
                     {"state", peer_link_state_name(s.state)},
                     {"connects", s.connects}};
    if (!s.error.empty()) j["error"] = s.error;
    if (s.rtt_micros >= 0) j["rtt-micros"] = s.rtt_micros;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace witmq::cluster
