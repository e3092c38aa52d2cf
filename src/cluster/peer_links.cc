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
#include <map>
#include <mutex>

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
  for (uint64_t nonce = 1; !link->closed; ++nonce) {
    link->wait.expires_after(options.ping_interval);
    co_await link->wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (link->closed) break;
    const auto sent = Clock::now();
    link->arm(options.timeout);
    const std::string ping = encode_peer_frame(PeerPing{nonce});
    co_await asio::async_write(link->socket, asio::buffer(ping),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      link->disarm();
      co_return Error(ErrorCode::kUnavailable, fmt::format("ping not sent: {}", ec.message()));
    }
    auto pong = co_await read_frame(link->socket);
    link->disarm();
    if (!pong) {
      co_return Error(pong.error().code,
                      fmt::format("no answer to a ping within {} ms: {}", options.timeout.count(),
                                  pong.error().message));
    }
    if (const auto* r = std::get_if<PeerRefused>(&*pong)) {
      co_return Error(ErrorCode::kUnavailable, "closed by the peer: " + peer_text(r->text));
    }
    const auto* p = std::get_if<PeerPong>(&*pong);
    if (p == nullptr || p->nonce != nonce) {
      std::string got = peer_frame_name(*pong);
      if (p != nullptr) got = fmt::format("pong {}", p->nonce);
      co_return invalid_argument(fmt::format("answered ping {} with {}", nonce, got));
    }
    std::lock_guard lock(link->mu);
    link->status.rtt_micros =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent).count();
  }
  co_return ok_status();
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
