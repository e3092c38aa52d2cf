// The peer link (docs/CLUSTERING.md, "The peer link"): its frames, its listener in process
// (handshake, secret, bounds, hostile bytes), and witmqd's listener on cluster-peer-listen with
// real etcd.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"
#include "cluster/etcd_process.h"
#include "cluster/peer_auth.h"
#include "cluster/peer_frames.h"
#include "cluster/peer_links.h"
#include "cluster/peer_server.h"
#include "daemon/daemon_process.h"
#include "daemon/http_client.h"
#include "storage/store.h"

namespace witmq::cluster {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using daemon::testing::Daemon;
using daemon::testing::http_get;
using daemon::testing::make_temp_dir;
using daemon::testing::run_witmqd;
using testing::Etcd;

constexpr const char* kSecret = "correct-horse-battery-staple";

std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A frame's body: the encoded frame without its length prefix.
std::string body_of(const PeerFrame& f) { return encode_peer_frame(f).substr(kPeerHeaderBytes); }

TEST(PeerFramesTest, EveryFrameRoundTrips) {
  const std::vector<PeerFrame> frames = {
      PeerHello{kPeerProtocolVersion, "c", "n1", peer_nonce()},
      PeerChallenge{peer_nonce()},
      PeerProof{std::string(32, '\x01')},
      PeerWelcome{kPeerProtocolVersion, "n2", "p"},
      PeerRefused{ErrorCode::kPermissionDenied, "no"},
      PeerPing{0x0102030405060708},
      PeerPong{UINT64_MAX},
      PeerReplicate{"orders", 3, 17, 2, 16, 1, "defs", "records"},
      PeerReplicated{"orders", 3, 17},
      PeerResend{"orders", 5},
      PeerReplicaRefused{"orders", 4, ErrorCode::kFailedPrecondition, "stale epoch"},
      PeerDiverged{"orders", 5, 3, 17},
      PeerSnapshot{"orders", 5, 17, 0, false, {}, "records"},
      PeerSnapshot{"orders", 5, 17, 3, true, {{2, 1}, {5, 12}}, ""},
      PeerSnapshotAck{"orders", 5, 17, 3}};
  for (const PeerFrame& f : frames) {
    const std::string wire = encode_peer_frame(f);
    std::array<uint8_t, kPeerHeaderBytes> header{};
    std::copy_n(wire.begin(), kPeerHeaderBytes, header.begin());
    EXPECT_EQ(peer_body_length(header), wire.size() - kPeerHeaderBytes);
    auto back = decode_peer_body(bytes_of(wire).subspan(kPeerHeaderBytes));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->index(), f.index());
    EXPECT_EQ(encode_peer_frame(*back), wire) << peer_frame_name(f);
  }
}

TEST(PeerFramesTest, MalformedBodiesAreRefusedNamingTheField) {
  EXPECT_NE(decode_peer_body({}).error().message.find("empty body"), std::string::npos);
  const std::string unknown("\x0d", 1);
  EXPECT_NE(decode_peer_body(bytes_of(unknown)).error().message.find("unknown type 13"),
            std::string::npos);
  // A replicate frame's previous entry must be just before it, of no later epoch.
  for (const PeerReplicate& f :
       {PeerReplicate{"x", 3, 17, 3, 15, 1, "", ""}, PeerReplicate{"x", 3, 17, 4, 16, 1, "", ""},
        PeerReplicate{"x", 3, 1, 2, 0, 1, "", ""}}) {
    auto r = decode_peer_body(bytes_of(body_of(f)));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("cannot precede"), std::string::npos) << r.error().message;
  }
  std::string snapshot = body_of(PeerSnapshot{"x", 5, 17, 0, true, {}, ""});
  snapshot[1 + 2 + 1 + 8 + 8 + 4] = 2;  // last
  auto bad_last = decode_peer_body(bytes_of(snapshot));
  ASSERT_FALSE(bad_last);
  EXPECT_NE(bad_last.error().message.find("last is 2"), std::string::npos);
  auto early_starts =
      decode_peer_body(bytes_of(body_of(PeerSnapshot{"x", 5, 17, 0, false, {{5, 1}}, ""})));
  ASSERT_FALSE(early_starts);
  EXPECT_NE(early_starts.error().message.find("not the last"), std::string::npos);
  std::string hello = body_of(PeerHello{2, "c", "n1", peer_nonce()});
  auto cut = decode_peer_body(bytes_of(hello.substr(0, hello.size() - 3)));
  ASSERT_FALSE(cut);
  EXPECT_NE(cut.error().message.find("peer frame hello: field nonce needs"), std::string::npos)
      << cut.error().message;
  auto extra = decode_peer_body(bytes_of(hello + "x"));
  ASSERT_FALSE(extra);
  EXPECT_NE(extra.error().message.find("1 bytes left over"), std::string::npos);
  std::string refused = body_of(PeerRefused{ErrorCode::kInternal, "t"});
  refused[1] = 0x7f;  // error code 0x7f0c
  auto bad_code = decode_peer_body(bytes_of(refused));
  ASSERT_FALSE(bad_code);
  EXPECT_NE(bad_code.error().message.find("error code 32524 is not 1..12"), std::string::npos)
      << bad_code.error().message;
}

bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// A blocking client with every read bounded (SO_RCVTIMEO), so that a listener that never
// answers fails the test instead of hanging it.
class PeerDialer {
 public:
  // receive_buffer > 0 fixes the socket's receive buffer (SO_RCVBUF, before connecting).
  explicit PeerDialer(uint16_t port, int receive_buffer = 0) : socket_(io_) {
    if (receive_buffer > 0) {
      socket_.open(tcp::v4());
      ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVBUF, &receive_buffer,
                   sizeof receive_buffer);
    }
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    timeval tv{10, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  // Writes `bytes` unless the listener stops taking them: false once a write has made no
  // progress for `stall` (the listener no longer reads this connection) or failed.
  bool send_unless_stalled(const std::string& bytes, std::chrono::seconds stall) {
    timeval tv{static_cast<time_t>(stall.count()), 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n =
          ::send(socket_.native_handle(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  void send_raw(const std::string& bytes) {
    boost::system::error_code ec;
    asio::write(socket_, asio::buffer(bytes), ec);
  }
  void send(const PeerFrame& f) { send_raw(encode_peer_frame(f)); }
  // The next frame, or nullopt when the listener closed the connection (or sent garbage).
  std::optional<PeerFrame> receive() {
    std::array<uint8_t, kPeerHeaderBytes> header{};
    boost::system::error_code ec;
    asio::read(socket_, asio::buffer(header), ec);
    if (ec) return std::nullopt;
    std::vector<uint8_t> body(peer_body_length(header));
    asio::read(socket_, asio::buffer(body), ec);
    if (ec) return std::nullopt;
    auto f = decode_peer_body(body);
    if (!f) return std::nullopt;
    return *f;
  }
  // The whole handshake as node `id` of `cluster` holding `secret`: the listener's last answer
  // (a welcome, or a refused), or nullopt when it closed the connection.
  std::optional<PeerFrame> handshake(const std::string& id, const std::string& secret,
                                     const std::string& cluster = "test") {
    const std::string nonce = peer_nonce();
    send(PeerHello{kPeerProtocolVersion, cluster, id, nonce});
    auto challenge = receive();
    if (!challenge || !std::holds_alternative<PeerChallenge>(*challenge)) return challenge;
    listener_nonce_ = std::get<PeerChallenge>(*challenge).nonce;
    last_proof_ = dialer_proof(secret, cluster, id, nonce, listener_nonce_);
    send(PeerProof{last_proof_});
    auto answer = receive();
    if (answer && std::holds_alternative<PeerWelcome>(*answer)) {
      const auto& w = std::get<PeerWelcome>(*answer);
      listener_proved_ = proofs_match(
          w.proof, listener_proof(secret, cluster, id, w.node_id, nonce, listener_nonce_));
    }
    return answer;
  }
  const std::string& last_proof() const { return last_proof_; }
  // Whether the last welcome carried a proof of `secret` by the node it names.
  bool listener_proved() const { return listener_proved_; }

  // Whether the listener closed the connection (end of stream before any byte).
  bool closed() {
    std::array<uint8_t, 1> b{};
    boost::system::error_code ec;
    socket_.read_some(asio::buffer(b), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  std::string listener_nonce_, last_proof_;
  bool listener_proved_ = false;
};

std::string refused_text(const std::optional<PeerFrame>& f) {
  if (!f) return "<closed without a frame>";
  if (const auto* r = std::get_if<PeerRefused>(&*f)) return r->text;
  return "<a " + peer_frame_name(*f) + " frame>";
}

class PeerServerTest : public ::testing::Test {
 protected:
  void start(PeerServerOptions o = {}) {
    o.listen = "127.0.0.1:0";
    if (o.cluster.empty()) o.cluster = "test";
    if (o.node_id.empty()) o.node_id = "n1";
    o.token = kSecret;
    server_ = std::make_unique<PeerServer>(io_, std::move(o));
    ASSERT_TRUE(server_->listen());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (server_) server_->stop();
    work_.reset();
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return server_->local_endpoint().port(); }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<PeerServer> server_;
  std::thread thread_;
};

TEST_F(PeerServerTest, PeerWithTheSecretIsWelcomedAndAnswersPings) {
  start();
  PeerDialer d(port());
  auto w = d.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  EXPECT_EQ(std::get<PeerWelcome>(*w).node_id, "n1");
  EXPECT_TRUE(d.listener_proved());
  d.send(PeerPing{42});
  auto p = d.receive();
  ASSERT_TRUE(p && std::holds_alternative<PeerPong>(*p));
  EXPECT_EQ(std::get<PeerPong>(*p).nonce, 42u);
  EXPECT_EQ(server_->figures().peers_authenticated, 1u);
}

TEST_F(PeerServerTest, WrongSecretClusterVersionOrFirstFrameIsRefused) {
  start();
  struct Case {
    std::string id, secret, cluster;
    std::string expected;
  };
  // A wrong secret and a wrong cluster name get the same answer, which names neither.
  const std::string refusal =
      "its proof does not check: it does not hold this cluster's secret "
      "(cluster-peer-token-file) or is in another cluster (cluster-name)";
  const std::vector<Case> cases = {
      {"n2", "correct-horse-battery-stapl3", "test", "hello of node 'n2': " + refusal},
      {"n2", "", "test", refusal},
      {"n2", kSecret, "other", "hello of node 'n2': " + refusal},
      // What a stranger says is escaped before it reaches a log line or an error.
      {"n2\nINFO forged line\x1b[2J", "x", "test",
       "hello of node 'n2\\x0aINFO forged line\\x1b[2J': its proof does not check"},
  };
  for (const Case& c : cases) {
    PeerDialer d(port());
    const auto reply = d.handshake(c.id, c.secret, c.cluster);
    EXPECT_NE(refused_text(reply).find(c.expected), std::string::npos) << refused_text(reply);
    // A refused peer gets nothing more: not even a pong.
    d.send(PeerPing{2});
    EXPECT_TRUE(d.closed()) << c.expected;
  }
  struct FirstFrame {
    PeerFrame first;
    std::string expected;
  };
  const std::vector<FirstFrame> firsts = {
      {PeerHello{7, "test", "n2", peer_nonce()}, "peer protocol version 7, this node speaks 3"},
      // A version 1 hello carried the secret itself: refused by its version alone.
      {PeerHello{1, "test", "n2", kSecret}, "peer protocol version 1, this node speaks 3"},
      // Version 2 had no log matching: its replicate frames would be misread.
      {PeerHello{2, "test", "n2", peer_nonce()}, "peer protocol version 2, this node speaks 3"},
      {PeerHello{kPeerProtocolVersion, "test", "n2", "short"}, "a nonce of 5 bytes, expected 32"},
      {PeerPing{1}, "expected a hello as the first frame, got ping"},
      {PeerWelcome{2, "n2", ""}, "expected a hello as the first frame, got welcome"},
      {PeerProof{std::string(32, 'x')}, "expected a hello as the first frame, got proof"},
  };
  for (const FirstFrame& c : firsts) {
    PeerDialer d(port());
    d.send(c.first);
    const auto reply = d.receive();
    EXPECT_NE(refused_text(reply).find(c.expected), std::string::npos) << refused_text(reply);
    EXPECT_TRUE(d.closed()) << c.expected;
  }
  {
    // After the challenge, only a proof.
    PeerDialer d(port());
    d.send(PeerHello{kPeerProtocolVersion, "test", "n2", peer_nonce()});
    ASSERT_TRUE(d.receive());
    d.send(PeerPing{3});
    EXPECT_NE(refused_text(d.receive()).find("expected a proof after the challenge, got ping"),
              std::string::npos);
  }
  EXPECT_EQ(server_->figures().peers_authenticated, 0u);
  EXPECT_EQ(server_->figures().peers_refused, cases.size() + firsts.size() + 1);
}

// Before the dialer has proved that it holds the secret the listener says nothing that names it
// or its cluster; the secret itself never crosses the wire; a proof is good for one connection.
TEST_F(PeerServerTest, TheHandshakeProvesTheSecretWithoutSendingItOrNamingTheNode) {
  PeerServerOptions o;
  o.cluster = "zebra-cluster";
  o.node_id = "node-alpha";
  start(o);
  {
    PeerDialer d(port());
    d.send(PeerHello{kPeerProtocolVersion, "zebra-cluster", "n2", peer_nonce()});
    const std::string challenge = encode_peer_frame(*d.receive());
    EXPECT_EQ(challenge.size(), kPeerHeaderBytes + 1 + 2 + kPeerNonceBytes);
    d.send(PeerProof{std::string(32, 'x')});
    const std::string refused = encode_peer_frame(*d.receive());
    for (const std::string& said : {challenge, refused}) {
      EXPECT_EQ(said.find("zebra"), std::string::npos) << said;
      EXPECT_EQ(said.find("alpha"), std::string::npos) << said;
    }
  }
  PeerDialer first(port());
  auto w = first.handshake("n2", kSecret, "zebra-cluster");
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  EXPECT_TRUE(first.listener_proved());
  const std::string welcome = encode_peer_frame(*w);
  EXPECT_EQ(welcome.find(kSecret), std::string::npos);
  EXPECT_EQ(first.last_proof().find(kSecret), std::string::npos);
  // Replaying the first connection's proof on a second connection fails: its nonces differ.
  PeerDialer replay(port());
  replay.send(PeerHello{kPeerProtocolVersion, "zebra-cluster", "n2", peer_nonce()});
  ASSERT_TRUE(replay.receive());
  replay.send(PeerProof{first.last_proof()});
  EXPECT_NE(refused_text(replay.receive()).find("its proof does not check"), std::string::npos);
  EXPECT_EQ(server_->figures().peers_authenticated, 1u);
}

// After the welcome every answer is written from one queue, one write at a time: a refusal (here
// of a frame a listener never takes) goes after the answers queued before it, never into the
// middle of one, and the connection closes once they are written. The peer reads whole frames,
// every answer it is owed, then the refusal.
TEST_F(PeerServerTest, ARefusalIsWrittenAfterTheAnswersQueuedBeforeIt) {
  const std::string big(60'000, 'a');
  PeerServerOptions o;
  o.on_replicate = [big](const std::string&, PeerReplicate f, PeerServerOptions::ReplyFn reply) {
    reply(
        encode_peer_frame(PeerReplicaRefused{f.channel, f.position, ErrorCode::kUnavailable, big}));
  };
  start(o);
  // A small receive buffer, and nothing read until everything is sent: the answers (12 MB) wait
  // in the listener's queue and socket when the frame it refuses is read.
  PeerDialer d(port(), 4096);
  auto w = d.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  constexpr uint64_t kFrames = 200;
  std::string burst;
  for (uint64_t i = 1; i <= kFrames; ++i)
    burst += encode_peer_frame(PeerReplicate{"c", 1, i, i == 1 ? 0u : 1u, i - 1, 1, "", ""});
  burst += encode_peer_frame(PeerPong{1});
  d.send_raw(burst);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (uint64_t i = 1; i <= kFrames; ++i) {
    auto a = d.receive();
    ASSERT_TRUE(a && std::holds_alternative<PeerReplicaRefused>(*a))
        << "answer " << i << ": " << refused_text(a);
    const auto& r = std::get<PeerReplicaRefused>(*a);
    ASSERT_EQ(r.epoch, i);
    ASSERT_EQ(r.text, big) << "answer " << i;
  }
  EXPECT_NE(refused_text(d.receive()).find("a pong frame, which a listener never takes"),
            std::string::npos);
  EXPECT_TRUE(d.closed());
}

TEST_F(PeerServerTest, FramesOverTheBoundsAreRefusedBeforeTheirBodyIsRead) {
  PeerServerOptions o;
  o.max_frame_bytes = 64 * 1024;
  start(o);
  {
    // Before the hello: 4096 bytes at most, whatever the configured bound.
    PeerDialer d(port());
    d.send_raw(std::string("\x00\x00\x10\x01", 4));
    EXPECT_NE(refused_text(d.receive())
                  .find("handshake frame of 4097 bytes exceeds the 4096 bytes a handshake frame "
                        "may have"),
              std::string::npos);
    EXPECT_TRUE(d.closed());
  }
  {
    PeerDialer d(port());
    auto w = d.handshake("n2", kSecret);
    ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
    d.send_raw(std::string("\xff\xff\xff\xff", 4));
    EXPECT_NE(refused_text(d.receive())
                  .find("frame of 4294967295 bytes exceeds cluster-peer-max-frame-bytes (65536)"),
              std::string::npos);
    EXPECT_TRUE(d.closed());
  }
  {
    // An authenticated peer's malformed frame closes its own link, and names the problem.
    PeerDialer d(port());
    auto w = d.handshake("n2", kSecret);
    ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
    d.send_raw(std::string("\x00\x00\x00\x02\x04\x00", 6));
    EXPECT_NE(refused_text(d.receive()).find("peer frame ping: field nonce needs 8 bytes, 1 left"),
              std::string::npos);
    EXPECT_TRUE(d.closed());
  }
}

TEST_F(PeerServerTest, SilentConnectionIsClosedAfterTheHandshakeBound) {
  PeerServerOptions o;
  o.handshake_timeout = std::chrono::milliseconds(300);
  start(o);
  PeerDialer d(port());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(d.closed());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
}

TEST_F(PeerServerTest, ConnectionsOverTheLimitAreClosed) {
  PeerServerOptions o;
  o.max_connections = 2;
  start(o);
  PeerDialer a(port()), b(port());
  a.send(PeerPing{1});  // refused: not a hello; its slot frees once it is closed
  EXPECT_FALSE(refused_text(a.receive()).empty());
  ASSERT_TRUE(
      wait_for([&] { return server_->figures().connections_open == 1; }, std::chrono::seconds(10)));
  PeerDialer c(port()), d(port());
  // b and c hold the two slots (a's closed); d is over the limit.
  EXPECT_TRUE(d.closed());
  auto w = c.handshake("n3", kSecret);
  EXPECT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
}

std::optional<PeerLinkStatus> link_to(const PeerLinks& links, const std::string& node) {
  for (const PeerLinkStatus& s : links.status()) {
    if (s.node == node) return s;
  }
  return std::nullopt;
}

// Strangers that connect and wait hold only the few handshake slots, and each new connection
// makes the oldest of them go: a peer that proves the secret gets in however many strangers
// wait, and once in, it stays.
TEST_F(PeerServerTest, StrangersWaitingInTheHandshakeNeverShutOutAPeer) {
  PeerServerOptions o;
  o.max_connections = 8;
  o.max_unauthenticated = 2;
  o.handshake_timeout = std::chrono::seconds(30);
  start(o);
  std::vector<std::unique_ptr<PeerDialer>> strangers;
  for (int i = 0; i < 2; ++i) strangers.push_back(std::make_unique<PeerDialer>(port()));
  ASSERT_TRUE(
      wait_for([&] { return server_->figures().connections_open == 2; }, std::chrono::seconds(10)));
  PeerDialer peer(port());
  auto w = peer.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  EXPECT_TRUE(strangers[0]->closed()) << "the oldest stranger was not closed";
  // More strangers than all the slots: the authenticated peer keeps its link.
  for (int i = 0; i < 20; ++i) strangers.push_back(std::make_unique<PeerDialer>(port()));
  ASSERT_TRUE(
      wait_for([&] { return server_->figures().connections_open <= 3; }, std::chrono::seconds(10)))
      << server_->to_json().dump();
  peer.send(PeerPing{9});
  auto p = peer.receive();
  ASSERT_TRUE(p && std::holds_alternative<PeerPong>(*p)) << refused_text(p);
  PeerDialer second(port());
  auto w2 = second.handshake("n3", kSecret);
  EXPECT_TRUE(w2 && std::holds_alternative<PeerWelcome>(*w2)) << refused_text(w2);
}

// A listener that does not hold the secret cannot pass for a node: the dialer checks the
// welcome's proof and refuses the link.
TEST_F(PeerServerTest, DialerRefusesAListenerThatCannotProveTheSecret) {
  asio::io_context fake_io;
  tcp::acceptor acceptor(fake_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const uint16_t fake_port = acceptor.local_endpoint().port();
  std::thread fake([&] {
    // Answers every dial with a challenge and then a welcome naming n1 with a made-up proof.
    for (int i = 0; i < 2; ++i) {
      tcp::socket s(fake_io);
      boost::system::error_code ec;
      acceptor.accept(s, ec);
      if (ec) return;
      std::array<uint8_t, kPeerHeaderBytes> header{};
      std::vector<uint8_t> body;
      auto read_one = [&] {
        asio::read(s, asio::buffer(header), ec);
        if (ec) return;
        body.resize(peer_body_length(header));
        asio::read(s, asio::buffer(body), ec);
      };
      read_one();
      asio::write(s, asio::buffer(encode_peer_frame(PeerChallenge{peer_nonce()})), ec);
      read_one();
      asio::write(s,
                  asio::buffer(encode_peer_frame(
                      PeerWelcome{kPeerProtocolVersion, "n1", std::string(32, '\0')})),
                  ec);
      std::array<uint8_t, 64> rest{};
      s.read_some(asio::buffer(rest), ec);  // until the dialer closes
    }
  });
  start();
  PeerLinksOptions lo;
  lo.cluster = "test";
  lo.node_id = "n2";
  lo.token = kSecret;
  PeerLinks links(io_, lo);
  links.refresh({{"n1", "127.0.0.1:" + std::to_string(fake_port)}});
  EXPECT_TRUE(wait_for(
      [&] {
        auto st = link_to(links, "n1");
        return st && st->state == PeerLinkState::kRefused &&
               st->error.find("did not prove that it holds this cluster's secret") !=
                   std::string::npos;
      },
      std::chrono::seconds(10)))
      << links.to_json().dump();
  links.stop();
  {
    // The fake may wait for a second dial that no longer comes: one it accepts and ends.
    asio::io_context poke_io;
    tcp::socket poke(poke_io);
    boost::system::error_code ignored;
    poke.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), fake_port), ignored);
    poke.close(ignored);
  }
  fake.join();
}

// Hostile bytes, seeded so that a failure repeats: random streams and mutated hellos, each on a
// connection of its own. None may crash the listener or get a peer welcomed without the secret;
// afterwards a real peer is still welcomed.
TEST_F(PeerServerTest, HostileBytesNeverCrashTheListenerNorGetIn) {
  PeerServerOptions o;
  o.handshake_timeout = std::chrono::milliseconds(200);
  start(o);
  std::mt19937 rng(20261207);
  const std::string hello =
      encode_peer_frame(PeerHello{kPeerProtocolVersion, "test", "n9", peer_nonce()});
  for (int i = 0; i < 300; ++i) {
    std::string bytes;
    if (i % 2 == 0) {
      bytes.resize(std::uniform_int_distribution<size_t>(1, 64)(rng));
      for (char& ch : bytes) ch = static_cast<char>(rng());
    } else {
      bytes = hello;
      const int flips = std::uniform_int_distribution<int>(1, 4)(rng);
      for (int f = 0; f < flips; ++f) {
        bytes[std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng)] =
            static_cast<char>(rng());
      }
    }
    PeerDialer d(port());
    d.send_raw(bytes);
    const auto reply = d.receive();
    EXPECT_FALSE(reply && std::holds_alternative<PeerWelcome>(*reply)) << "case " << i;
  }
  EXPECT_EQ(server_->figures().peers_authenticated, 0u);
  PeerDialer good(port());
  auto w = good.handshake("n2", kSecret);
  EXPECT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
}

TEST_F(PeerServerTest, DialerBringsTheLinkUpOrSaysWhyNot) {
  start();
  const std::string address = "127.0.0.1:" + std::to_string(port());
  PeerLinksOptions o;
  o.cluster = "test";
  o.node_id = "n2";
  o.token = kSecret;
  o.ping_interval = std::chrono::milliseconds(50);
  PeerLinks good(io_, o);
  o.token = "correct-horse-battery-stapl3";
  PeerLinks wrong_secret(io_, o);
  o.token = kSecret;
  PeerLinks wrong_node(io_, o);
  good.refresh({{"n1", address}});
  wrong_secret.refresh({{"n1", address}});
  wrong_node.refresh({{"n7", address}});
  EXPECT_TRUE(wait_for(
      [&] {
        auto s = link_to(good, "n1");
        return s && s->state == PeerLinkState::kUp && s->rtt_micros >= 0;
      },
      std::chrono::seconds(10)))
      << good.to_json().dump();
  EXPECT_TRUE(wait_for(
      [&] {
        auto s = link_to(wrong_secret, "n1");
        return s && s->state == PeerLinkState::kRefused &&
               s->error.find("does not hold this cluster's secret") != std::string::npos;
      },
      std::chrono::seconds(10)))
      << wrong_secret.to_json().dump();
  EXPECT_TRUE(wait_for(
      [&] {
        auto s = link_to(wrong_node, "n7");
        return s && s->state != PeerLinkState::kUp &&
               s->error.find("is 'n1', not 'n7'") != std::string::npos;
      },
      std::chrono::seconds(10)))
      << wrong_node.to_json().dump();
  // The listener goes away: the link goes down, saying so; a peer no longer listed is dropped.
  server_->stop();
  EXPECT_TRUE(wait_for(
      [&] {
        auto s = link_to(good, "n1");
        return s && s->state != PeerLinkState::kUp && !s->error.empty();
      },
      std::chrono::seconds(10)))
      << good.to_json().dump();
  good.refresh({});
  EXPECT_TRUE(good.status().empty());
  good.stop();
  wrong_secret.stop();
  wrong_node.stop();
}

// witmqd itself, in cluster mode on real etcd.
class PeerLinkDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("peer");
    token_file_ = dir_ + "/peer-token";
    std::ofstream(token_file_) << kSecret << "\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The arguments of node n1 in cluster mode on `etcd`, with a peer listener on an ephemeral port.
  std::vector<std::string> node_args(const Etcd& etcd, int ttl_seconds = 2) const {
    return {"--set", "cluster-node-id=n1",
            "--set", "cluster-name=test",
            "--set", "cluster-etcd-endpoints=[\"" + etcd.endpoint() + "\"]",
            "--set", "cluster-lease-ttl-seconds=" + std::to_string(ttl_seconds),
            "--set", "cluster-peer-listen=127.0.0.1:0",
            "--set", "cluster-peer-token-file=" + token_file_};
  }

  // The port `d`'s peer listener bound, as /v1/cluster says (0 when it says none).
  static uint16_t peer_port(const Daemon& d) {
    auto v = http_get(d.http_port(), "/v1/cluster");
    if (v.status != 200u || !v.json["peer-link"]["listen"].is_string()) return 0;
    const std::string listen = v.json["peer-link"]["listen"];
    return static_cast<uint16_t>(std::stoi(listen.substr(listen.rfind(':') + 1)));
  }

  // Places `channel` on `replicas` in etcd (cluster "test"), with in-sync set `in_sync`. With
  // {"n2", "n1"} and {"n2"}, node n1 is a replica of the channel that never leads it (n2, never
  // started, is its only in-sync member): the node under test is a follower of the channel.
  static void place(const Etcd& etcd, const std::string& channel,
                    const std::vector<std::string>& replicas = {"n2", "n1"},
                    const std::vector<std::string>& in_sync = {"n2"}) {
    EtcdClient client(EtcdOptions{{etcd.endpoint()}, std::chrono::milliseconds(2'000)});
    const std::string prefix = "/witmq/test/";
    auto placed =
        client.put(prefix + "placement/" + channel, nlohmann::json{{"replicas", replicas}}.dump());
    ASSERT_TRUE(placed) << placed.error().message;
    auto isr = client.put(prefix + "isr/" + channel,
                          nlohmann::json{{"epoch", 0}, {"members", in_sync}}.dump());
    ASSERT_TRUE(isr) << isr.error().message;
  }

  std::string dir_, token_file_;
};

TEST_F(PeerLinkDaemonTest, WitmqdServesThePeerLinkAndRefusesStrangers) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  Daemon d(node_args(etcd));
  ASSERT_NE(d.port(), 0);
  auto v = http_get(d.http_port(), "/v1/cluster");
  ASSERT_EQ(v.status, 200u) << v;
  const std::string listen = v.json["peer-link"]["listen"];
  const uint16_t port = static_cast<uint16_t>(std::stoi(listen.substr(listen.rfind(':') + 1)));
  ASSERT_NE(port, 0);
  // The registration advertises the port actually bound.
  bool advertised = false;
  for (const auto& n : v.json["nodes"]) {
    if (n["id"] == "n1") advertised = n["peer-address"] == listen;
  }
  EXPECT_TRUE(advertised) << v.json.dump();
  {
    PeerDialer stranger(port);
    EXPECT_NE(refused_text(stranger.handshake("evil", "not-the-cluster-secret"))
                  .find("does not hold this cluster's secret"),
              std::string::npos);
    EXPECT_TRUE(stranger.closed());
  }
  {
    PeerDialer flood(port);
    flood.send_raw(std::string(8192, '\xff'));
    EXPECT_NE(refused_text(flood.receive()).find("exceeds the 4096 bytes a handshake frame"),
              std::string::npos);
  }
  PeerDialer peer(port);
  auto w = peer.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  EXPECT_EQ(std::get<PeerWelcome>(*w).node_id, "n1");
  auto after = http_get(d.http_port(), "/v1/cluster");
  EXPECT_EQ(after.json["peer-link"]["peers-refused"], 2) << after.json.dump();
  EXPECT_EQ(after.json["peer-link"]["peers-authenticated"], 1) << after.json.dump();
  EXPECT_EQ(http_get(d.http_port(), "/readyz").status, 200u);
  // Strangers by the dozen, connecting and waiting: the peer keeps its link, and another peer
  // still gets in while they wait.
  std::vector<std::unique_ptr<PeerDialer>> strangers;
  for (int i = 0; i < 100; ++i) strangers.push_back(std::make_unique<PeerDialer>(port));
  peer.send(PeerPing{7});
  auto pong = peer.receive();
  ASSERT_TRUE(pong && std::holds_alternative<PeerPong>(*pong)) << refused_text(pong);
  PeerDialer late(port);
  auto w2 = late.handshake("n3", kSecret);
  EXPECT_TRUE(w2 && std::holds_alternative<PeerWelcome>(*w2)) << refused_text(w2);
  nlohmann::json flooded;
  EXPECT_TRUE(wait_for(
      [&] {
        flooded = http_get(d.http_port(), "/v1/cluster").json;
        return flooded["peer-link"]["connections-open"].get<int>() <= 2 + 8;
      },
      std::chrono::seconds(10)))
      << flooded.dump();
}

// A node applies replicate frames from an authenticated peer in position order, and answers
// each: a gap with resend, a stale epoch and bad records with replica-refused; none of them
// harms the link or the node.
TEST_F(PeerLinkDaemonTest, WitmqdAppliesReplicateFramesAndRefusesStaleOrBadOnes) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  ASSERT_NO_FATAL_FAILURE(place(etcd, "x"));
  Daemon d(node_args(etcd));
  ASSERT_NE(d.port(), 0);
  const uint16_t port = peer_port(d);
  ASSERT_NE(port, 0);
  PeerDialer peer(port);
  auto w = peer.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);

  auto answer = [&peer](const PeerReplicate& f) {
    peer.send(f);
    return peer.receive();
  };
  auto gap = answer(PeerReplicate{"x", 5, 2, 5, 1, 1, "", ""});
  ASSERT_TRUE(gap && std::holds_alternative<PeerResend>(*gap)) << refused_text(gap);
  EXPECT_EQ(std::get<PeerResend>(*gap).from, 1u);
  auto bad = answer(PeerReplicate{"x", 5, 1, 0, 0, 1, "", std::string("\x07\x00\x00", 3)});
  ASSERT_TRUE(bad && std::holds_alternative<PeerReplicaRefused>(*bad)) << refused_text(bad);
  EXPECT_EQ(std::get<PeerReplicaRefused>(*bad).code, ErrorCode::kInvalidArgument);
  EXPECT_NE(std::get<PeerReplicaRefused>(*bad).text.find("record at byte 0"), std::string::npos)
      << std::get<PeerReplicaRefused>(*bad).text;
  auto ok = answer(PeerReplicate{"x", 5, 1, 0, 0, 1, "", ""});
  ASSERT_TRUE(ok && std::holds_alternative<PeerReplicated>(*ok)) << refused_text(ok);
  EXPECT_EQ(std::get<PeerReplicated>(*ok).position, 1u);
  EXPECT_EQ(std::get<PeerReplicated>(*ok).epoch, 5u);
  auto stale = answer(PeerReplicate{"x", 4, 2, 4, 1, 1, "", ""});
  ASSERT_TRUE(stale && std::holds_alternative<PeerReplicaRefused>(*stale)) << refused_text(stale);
  EXPECT_EQ(std::get<PeerReplicaRefused>(*stale).code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(std::get<PeerReplicaRefused>(*stale).epoch, 5u);
  EXPECT_NE(std::get<PeerReplicaRefused>(*stale).text.find("epoch 4 is stale"), std::string::npos)
      << std::get<PeerReplicaRefused>(*stale).text;
  // The link still works, and so does the node.
  peer.send(PeerPing{7});
  auto pong = peer.receive();
  ASSERT_TRUE(pong && std::holds_alternative<PeerPong>(*pong)) << refused_text(pong);
  EXPECT_EQ(http_get(d.http_port(), "/readyz").status, 200u);
  auto after = http_get(d.http_port(), "/v1/cluster");
  EXPECT_EQ(after.json["replication-state"]["batches-applied"], 1) << after.json.dump();
  EXPECT_EQ(after.json["replication-state"]["stale-refused"], 1) << after.json.dump();
}

// Log matching and snapshots over a real link: a frame that does not chain on the node's last
// entry is answered `diverged` (never `replicated`), a snapshot's chunks are acknowledged one by
// one, out-of-order chunks are refused, and after the snapshot the node chains on again.
TEST_F(PeerLinkDaemonTest, WitmqdReportsDivergenceAndTakesASnapshot) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  ASSERT_NO_FATAL_FAILURE(place(etcd, "y"));
  Daemon d(node_args(etcd));
  ASSERT_NE(d.port(), 0);
  const uint16_t port = peer_port(d);
  ASSERT_NE(port, 0);
  PeerDialer peer(port);
  auto w = peer.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  auto answer = [&peer](const PeerFrame& f) {
    peer.send(f);
    return peer.receive();
  };
  for (uint64_t p = 1; p <= 3; ++p) {
    auto ok = answer(PeerReplicate{"y", 5, p, p == 1 ? 0u : 5u, p - 1, 1, "", ""});
    ASSERT_TRUE(ok && std::holds_alternative<PeerReplicated>(*ok)) << refused_text(ok);
  }
  // A new leader (epoch 6) that holds positions 1..2 only writes its own position 3.
  auto div = answer(PeerReplicate{"y", 6, 3, 5, 2, 1, "", ""});
  ASSERT_TRUE(div && std::holds_alternative<PeerDiverged>(*div)) << refused_text(div);
  EXPECT_EQ(std::get<PeerDiverged>(*div).last_epoch, 5u);
  EXPECT_EQ(std::get<PeerDiverged>(*div).last_position, 3u);
  EXPECT_EQ(std::get<PeerDiverged>(*div).epoch, 6u);
  // Its snapshot at position 3, in two chunks.
  auto out_of_order = answer(PeerSnapshot{"y", 6, 3, 1, false, {}, ""});
  ASSERT_TRUE(out_of_order && std::holds_alternative<PeerReplicaRefused>(*out_of_order))
      << refused_text(out_of_order);
  auto first = answer(PeerSnapshot{"y", 6, 3, 0, false, {}, ""});
  ASSERT_TRUE(first && std::holds_alternative<PeerSnapshotAck>(*first)) << refused_text(first);
  EXPECT_EQ(std::get<PeerSnapshotAck>(*first).index, 0u);
  auto midway = http_get(d.http_port(), "/v1/cluster");
  EXPECT_EQ(midway.json["replication-state"]["catching-up"], nlohmann::json::array({"y"}))
      << midway.json.dump();
  // Meanwhile nothing chains on the partial copy.
  auto partial = answer(PeerReplicate{"y", 6, 4, 6, 3, 1, "", ""});
  ASSERT_TRUE(partial && std::holds_alternative<PeerDiverged>(*partial)) << refused_text(partial);
  EXPECT_EQ(std::get<PeerDiverged>(*partial).last_position, 0u);
  auto last = answer(PeerSnapshot{"y", 6, 3, 1, true, {{5, 1}, {6, 3}}, ""});
  ASSERT_TRUE(last && std::holds_alternative<PeerSnapshotAck>(*last)) << refused_text(last);
  EXPECT_EQ(std::get<PeerSnapshotAck>(*last).position, 3u);
  auto dup = answer(PeerReplicate{"y", 6, 3, 5, 2, 1, "", ""});
  ASSERT_TRUE(dup && std::holds_alternative<PeerReplicated>(*dup)) << refused_text(dup);
  EXPECT_EQ(std::get<PeerReplicated>(*dup).position, 3u);
  auto next = answer(PeerReplicate{"y", 6, 4, 6, 3, 1, "", ""});
  ASSERT_TRUE(next && std::holds_alternative<PeerReplicated>(*next)) << refused_text(next);
  EXPECT_EQ(std::get<PeerReplicated>(*next).position, 4u);
  auto after = http_get(d.http_port(), "/v1/cluster");
  EXPECT_EQ(after.json["replication-state"]["snapshots-received"], 1) << after.json.dump();
  EXPECT_EQ(after.json["replication-state"]["catching-up"], nlohmann::json::array())
      << after.json.dump();
}

// A channel this node leads is written by this node alone: a peer's replicate or snapshot frame
// for it in the node's leader epoch or an older one (a forged one, or one from a leader that lost
// the channel and has not noticed yet) is refused as stale, and touches neither the node's copy
// nor an acknowledged message, which is still there after a restart.
TEST_F(PeerLinkDaemonTest, FramesForAChannelThisNodeLeadsAreRefusedUpToItsEpoch) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  const std::string data = make_temp_dir("leads");
  Daemon d(node_args(etcd), data);
  ASSERT_NE(d.port(), 0);
  auto sent = daemon::testing::http_request(d.http_port(), "POST", "/v1/channels/z/messages",
                                            "kept", {{"content-type", "text/plain"}});
  ASSERT_EQ(sent.status, 201u) << sent;
  uint64_t epoch = 0;
  nlohmann::json view;
  ASSERT_TRUE(wait_for(
      [&] {
        view = http_get(d.http_port(), "/v1/cluster").json;
        for (const auto& c : view["channels"]) {
          if (c["name"] == "z" && c["this-node-leads"] == true) epoch = c["epoch"].get<uint64_t>();
        }
        return epoch > 0;
      },
      std::chrono::seconds(10)))
      << view.dump();
  const uint16_t port = peer_port(d);
  ASSERT_NE(port, 0);
  PeerDialer peer(port);
  auto w = peer.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  auto answer = [&peer](const PeerFrame& f) {
    peer.send(f);
    return peer.receive();
  };
  auto expect_stale = [&](const std::optional<PeerFrame>& a, const char* what) {
    ASSERT_TRUE(a && std::holds_alternative<PeerReplicaRefused>(*a)) << what << refused_text(a);
    const auto& r = std::get<PeerReplicaRefused>(*a);
    EXPECT_EQ(r.code, ErrorCode::kFailedPrecondition) << what << r.text;
    EXPECT_EQ(r.epoch, epoch) << what;
    EXPECT_NE(r.text.find("this node leads it in epoch " + std::to_string(epoch)),
              std::string::npos)
        << what << r.text;
  };
  for (const uint64_t e : {epoch, epoch - 1}) {
    // A whole, empty snapshot would replace the channel's copy; its first chunk alone would
    // discard it.
    expect_stale(answer(PeerSnapshot{"z", e, 1, 0, true, {{e, 1}}, ""}), "snapshot: ");
    expect_stale(answer(PeerSnapshot{"z", e, 1, 0, false, {}, ""}), "first chunk: ");
    expect_stale(answer(PeerReplicate{"z", e, 1, 0, 0, 1, "", ""}), "replicate: ");
  }
  auto v = http_get(d.http_port(), "/v1/cluster");
  EXPECT_EQ(v.json["replication-state"]["catching-up"], nlohmann::json::array()) << v.json.dump();
  EXPECT_EQ(v.json["replication-state"]["batches-applied"], 0) << v.json.dump();
  EXPECT_EQ(v.json["replication-state"]["stale-refused"], 6) << v.json.dump();
  // Still the node's own: the acknowledged message is there after a restart.
  ASSERT_EQ(d.stop(), 0);
  d.start();
  ASSERT_NE(d.port(), 0);
  nlohmann::json page;
  EXPECT_TRUE(wait_for(
      [&] {
        auto r = http_get(d.http_port(), "/v1/channels/z/messages?from=0&max=10");
        page = r.json;
        return r.status == 200u && page.contains("messages") && !page["messages"].empty();
      },
      std::chrono::seconds(15)))
      << page.dump();
  ASSERT_EQ(page["messages"].size(), 1u) << page.dump();
  EXPECT_EQ(page["messages"][0]["data"], "kept") << page.dump();
  d.stop();
  std::filesystem::remove_all(data);
}

// Only a channel's replicas hold a copy of it: a peer holding the token that sends a snapshot
// chunk or a replicate frame for a channel with no placement, or one placed on other nodes, is
// refused with the reason, and no copy is begun (one never completed would keep the node
// unready for good). An incomplete copy of a channel not placed on the node (left by an earlier
// build) does not keep it from being ready either.
TEST_F(PeerLinkDaemonTest, FramesForAChannelNotPlacedOnTheNodeAreRefused) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  ASSERT_NO_FATAL_FAILURE(place(etcd, "elsewhere", {"n2", "n3"}, {"n2", "n3"}));
  // A copy of channel "stray" left incomplete (a crash in the middle of a snapshot), and the
  // channel placed on other nodes (as if placed again elsewhere): nothing will complete that copy.
  const std::string data = make_temp_dir("unplaced");
  Daemon d(node_args(etcd), data);
  ASSERT_NE(d.port(), 0);
  auto sent = daemon::testing::http_request(d.http_port(), "POST", "/v1/channels/stray/messages",
                                            "kept", {{"content-type", "text/plain"}});
  ASSERT_EQ(sent.status, 201u) << sent;
  ASSERT_EQ(d.stop(), 0);
  {
    storage::StoreOptions o;
    o.path = data;
    auto store = storage::Store::open(o);
    ASSERT_TRUE(store) << store.error().message;
    ASSERT_TRUE((*store)->recover());
    auto snap = (*store)->snapshot_channel("stray");
    ASSERT_TRUE(snap) << snap.error().message;
    bool done = false;
    auto records = (*snap)->next(1, done);
    ASSERT_TRUE(records) << records.error().message;
    snap->reset();
    std::promise<storage::ApplyOutcome> applied;
    (*store)->apply_snapshot({"stray", 5, 3, 0, false, {}, std::move(*records)},
                             [&applied](storage::ApplyOutcome o) { applied.set_value(o); });
    ASSERT_EQ(applied.get_future().get().kind, storage::ApplyOutcome::Kind::kApplied);
    ASSERT_EQ((*store)->replica_catching_up(), std::vector<std::string>{"stray"});
  }
  ASSERT_NO_FATAL_FAILURE(place(etcd, "stray", {"n2", "n3"}, {"n2", "n3"}));
  d.start();
  ASSERT_NE(d.port(), 0);
  const uint16_t port = peer_port(d);
  ASSERT_NE(port, 0);
  PeerDialer peer(port);
  auto w = peer.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  auto expect_refused = [&peer](const PeerFrame& f, const std::string& why) {
    peer.send(f);
    auto a = peer.receive();
    ASSERT_TRUE(a && std::holds_alternative<PeerReplicaRefused>(*a)) << why << refused_text(a);
    const auto& r = std::get<PeerReplicaRefused>(*a);
    EXPECT_EQ(r.code, ErrorCode::kFailedPrecondition) << r.text;
    EXPECT_NE(r.text.find(why), std::string::npos) << r.text;
  };
  expect_refused(PeerSnapshot{"nowhere", 5, 3, 0, false, {}, ""},
                 "channel 'nowhere': a snapshot chunk of epoch 5 from node 'n2' is refused: the "
                 "channel has no placement in etcd");
  expect_refused(PeerReplicate{"nowhere", 5, 1, 0, 0, 1, "", ""},
                 "channel 'nowhere': a batch of epoch 5 from node 'n2' is refused");
  expect_refused(PeerSnapshot{"elsewhere", 5, 3, 0, true, {{5, 1}}, ""},
                 "the channel is placed on n2, n3, not on this node ('n1')");
  expect_refused(PeerReplicate{"elsewhere", 5, 1, 0, 0, 1, "", ""},
                 "the channel is placed on n2, n3, not on this node ('n1')");
  // The link still works, and the node is ready: no copy was begun, and the stray one is not
  // waited for.
  peer.send(PeerPing{7});
  auto pong = peer.receive();
  ASSERT_TRUE(pong && std::holds_alternative<PeerPong>(*pong)) << refused_text(pong);
  auto v = http_get(d.http_port(), "/v1/cluster");
  EXPECT_EQ(v.json["replication-state"]["catching-up"], nlohmann::json::array({"stray"}))
      << v.json.dump();
  EXPECT_EQ(v.json["replication-state"]["unplaced-refused"], 4) << v.json.dump();
  EXPECT_EQ(v.json["replication-state"]["batches-applied"], 0) << v.json.dump();
  auto ready = http_get(d.http_port(), "/readyz");
  EXPECT_EQ(ready.status, 200u) << ready;
  d.stop();
  std::filesystem::remove_all(data);
}

// An authenticated peer that never reads its answers (pings, here), or sends replicate frames
// faster than they are stored, is no longer read from once the answers it owes are over their
// bounds (kPeerMaxAnswerBytes, kPeerMaxFramesInFlight): the node holds a bounded amount for it,
// its further frames wait in TCP, and other peers and clients are served meanwhile.
TEST_F(PeerLinkDaemonTest, APeerThatNeverReadsOrOutpacesTheStoreHoldsBoundedMemory) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  const std::string channel = "f" + std::string(999, 'x');
  ASSERT_NO_FATAL_FAILURE(place(etcd, channel));
  Daemon d(node_args(etcd, 5));
  ASSERT_NE(d.port(), 0);
  const pid_t pid = daemon::testing::daemon_pid(d);
  ASSERT_GT(pid, 0);
  const uint16_t port = peer_port(d);
  ASSERT_NE(port, 0);
  const uint64_t before = daemon::testing::rss_bytes(pid);

  // 4,000,000 pings (52 MB), their pongs never read: unbounded, the pongs alone held 128 MB.
  PeerDialer deaf(port, 4096);
  auto w = deaf.handshake("n2", kSecret);
  ASSERT_TRUE(w && std::holds_alternative<PeerWelcome>(*w)) << refused_text(w);
  std::string pings;
  for (uint64_t i = 0; i < 10'000; ++i) pings += encode_peer_frame(PeerPing{i});
  size_t ping_batches = 0;
  while (ping_batches < 400 && deaf.send_unless_stalled(pings, std::chrono::seconds(3))) {
    ++ping_batches;
  }
  EXPECT_LT(ping_batches, 400u) << "the node kept reading pings whose pongs nobody read";

  // 100,000 replicate frames of 1 KB each (a channel name of 1000 bytes), applied in order and
  // stored as synchronously as asked, their answers never read: unbounded, they queued in the
  // store faster than it wrote them (some 250 MB).
  PeerDialer fast(port, 4096);
  auto w2 = fast.handshake("n3", kSecret);
  ASSERT_TRUE(w2 && std::holds_alternative<PeerWelcome>(*w2)) << refused_text(w2);
  size_t sent = 0;
  for (bool going = true; going && sent < 100'000;) {
    std::string batch;
    for (int i = 0; i < 1000; ++i, ++sent) {
      batch += encode_peer_frame(PeerReplicate{channel, 7, sent + 1, sent == 0 ? 0u : 7u, sent,
                                               /*durability sync*/ 0, "", ""});
    }
    going = fast.send_unless_stalled(batch, std::chrono::seconds(3));
  }
  EXPECT_LT(sent, 100'000u) << "the node kept reading frames faster than it stored them";
  const uint64_t after = daemon::testing::rss_bytes(pid);
  EXPECT_LT(after, before + (48u << 20)) << "RSS went from " << before << " to " << after;
  std::printf(
      "[ figures ] RSS %llu -> %llu bytes; %zu of 400 ping batches, %zu of 100000 "
      "replicate frames taken before the node stopped reading\n",
      static_cast<unsigned long long>(before), static_cast<unsigned long long>(after), ping_batches,
      sent);

  // Meanwhile other peers and clients are served.
  PeerDialer other(port);
  auto w3 = other.handshake("n4", kSecret);
  ASSERT_TRUE(w3 && std::holds_alternative<PeerWelcome>(*w3)) << refused_text(w3);
  other.send(PeerPing{9});
  auto pong = other.receive();
  ASSERT_TRUE(pong && std::holds_alternative<PeerPong>(*pong)) << refused_text(pong);
  EXPECT_EQ(http_get(d.http_port(), "/readyz").status, 200u);
}

TEST_F(PeerLinkDaemonTest, ThreeNodesLinkToEachOtherAndAStrangerIsRefused) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  auto args = [&](const std::string& id, const std::string& token_file) {
    return std::vector<std::string>{"--set", "cluster-node-id=" + id,
                                    "--set", "cluster-name=test",
                                    "--set", "cluster-etcd-endpoints=[\"" + etcd.endpoint() + "\"]",
                                    "--set", "cluster-lease-ttl-seconds=2",
                                    "--set", "cluster-peer-listen=127.0.0.1:0",
                                    "--set", "cluster-peer-token-file=" + token_file};
  };
  std::vector<std::unique_ptr<Daemon>> nodes;
  for (const char* id : {"n1", "n2", "n3"}) {
    nodes.push_back(std::make_unique<Daemon>(args(id, token_file_)));
    ASSERT_NE(nodes.back()->port(), 0) << id;
  }
  auto links_of = [](Daemon& d) {
    std::map<std::string, nlohmann::json> out;
    auto v = http_get(d.http_port(), "/v1/cluster");
    if (v.status != 200 || !v.json.contains("peer-link")) return out;
    for (const auto& l : v.json["peer-link"]["links"]) out[l["node"].get<std::string>()] = l;
    return out;
  };
  auto all_up = [&](Daemon& d, size_t n) {
    auto links = links_of(d);
    if (links.size() != n) return false;
    for (const auto& [id, l] : links) {
      if (l["state"] != "up") return false;
    }
    return true;
  };
  for (auto& d : nodes) {
    EXPECT_TRUE(wait_for([&] { return all_up(*d, 2); }, std::chrono::seconds(20)))
        << http_get(d->http_port(), "/v1/cluster").json.dump();
  }
  // A fourth node with another secret: it is registered (etcd knows nothing of the secret), but
  // every link to or from it is refused, and the others' links stay up.
  const std::string other = dir_ + "/other-token";
  std::ofstream(other) << "another-secret-of-some-length\n";
  Daemon stranger(args("n4", other));
  ASSERT_NE(stranger.port(), 0);
  EXPECT_TRUE(wait_for(
      [&] {
        auto links = links_of(stranger);
        if (links.size() != 3) return false;
        for (const auto& [id, l] : links) {
          if (l["state"] != "refused") return false;
        }
        return true;
      },
      std::chrono::seconds(20)))
      << http_get(stranger.http_port(), "/v1/cluster").json.dump();
  auto from_n1 = links_of(*nodes[0]);
  EXPECT_TRUE(wait_for(
      [&] {
        from_n1 = links_of(*nodes[0]);
        return from_n1.contains("n4") && from_n1["n4"]["state"] == "refused";
      },
      std::chrono::seconds(20)))
      << nlohmann::json(from_n1).dump();
  EXPECT_EQ(from_n1["n2"]["state"], "up");
  EXPECT_EQ(from_n1["n3"]["state"], "up");
  // A node that goes away is dropped from the others' links once its lease expires.
  nodes[2]->stop(SIGKILL);
  EXPECT_TRUE(
      wait_for([&] { return !links_of(*nodes[0]).contains("n3"); }, std::chrono::seconds(20)))
      << nlohmann::json(links_of(*nodes[0])).dump();
  // A graceful stop with links open in both directions ends cleanly.
  EXPECT_EQ(nodes[1]->stop(SIGTERM), 0);
  EXPECT_EQ(nodes[0]->stop(SIGTERM), 0);
}

TEST_F(PeerLinkDaemonTest, PeerListenWithoutAGoodSecretIsRefusedAtStart) {
  const std::vector<std::string> base = {"--check-config", "--set", "cluster-node-id=n1", "--set",
                                         "cluster-peer-listen=127.0.0.1:0"};
  auto none = run_witmqd(base);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("cluster-peer-token-file (from "), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("both empty, but cluster-node-id (from --set) turns cluster mode on"),
            std::string::npos)
      << none.err;
  // The secret is given one way only: in the config or in a file.
  std::ofstream(dir_ + "/good") << "0123456789abcdef0123\n";
  auto both = base;
  both.insert(both.end(), {"--set", "cluster-peer-token-file=" + dir_ + "/good", "--set",
                           "cluster-peer-token=0123456789abcdef0123"});
  auto twice = run_witmqd(both);
  EXPECT_EQ(twice.exit_code, 2);
  EXPECT_NE(twice.err.find("cluster-peer-token (from --set) and cluster-peer-token-file (from "
                           "--set) are both set"),
            std::string::npos)
      << twice.err;
  auto inline_only = base;
  inline_only.insert(inline_only.end(), {"--set", "cluster-peer-token=0123456789abcdef0123"});
  EXPECT_EQ(run_witmqd(inline_only).exit_code, 0);
  auto args = base;
  args.insert(args.end(), {"--set", "cluster-peer-token-file=" + dir_ + "/missing"});
  auto missing = run_witmqd(args);
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("missing': cannot open it"), std::string::npos) << missing.err;
  std::ofstream(dir_ + "/short") << "tiny\n";
  args.back() = "cluster-peer-token-file=" + dir_ + "/short";
  auto short_secret = run_witmqd(args);
  EXPECT_EQ(short_secret.exit_code, 2);
  EXPECT_NE(short_secret.err.find("holds a secret of 4 bytes, expected 16..1024"),
            std::string::npos)
      << short_secret.err;
  args.back() = "cluster-peer-token-file=" + token_file_;
  auto ok = run_witmqd(args);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
}  // namespace witmq::cluster
