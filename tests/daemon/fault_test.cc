// Hostile clients, crashes and a full disk against the real witmqd: connections that never send
// connect, clients that close in the middle of a frame, floods of pipelined requests, consumers
// that hold deliveries unsettled, SIGKILL while group commits are in flight, and a data directory
// whose disk fills up. Each test checks that the daemon stays up, serves everyone else, keeps its
// memory bounded and loses nothing it confirmed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

json admin(Conn& c, net::AdminOp op, const json& body) {
  Frame f = c.call(net::AdminRequest{op, body.dump()});
  auto* reply = std::get_if<net::AdminReply>(&f.body);
  if (!reply) {
    ADD_FAILURE() << "admin call failed: " << describe(f);
    return json::object();
  }
  return json::parse(reply->json);
}

// Every message of `channel` in storage, read with browse (which acquires nothing).
std::vector<Message> browse_all(Conn& c, const std::string& channel) {
  std::vector<Message> all;
  uint64_t from = 0;
  for (;;) {
    Frame f = c.call(net::AdminRequest{
        net::AdminOp::kBrowse, json{{"channel", channel}, {"from", from}, {"max", 1000}}.dump()});
    auto* page = std::get_if<net::BrowseOk>(&f.body);
    if (!page) {
      ADD_FAILURE() << "browse failed: " << describe(f);
      return all;
    }
    if (page->messages.empty()) return all;
    from = std::stoull(meta_value(page->messages.back(), meta::kSequence)) + 1;
    for (auto& m : page->messages) all.push_back(std::move(m));
  }
}

// A connection that writes without ever reading: the pipelining flooder.
class RawSocket {
 public:
  explicit RawSocket(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawSocket() { ::close(fd_); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool connected() const { return connected_; }
  // Writes `bytes` unless `deadline` passes first (the server may stop reading: backpressure).
  bool write(std::span<const uint8_t> bytes, std::chrono::steady_clock::time_point deadline) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        bytes = bytes.subspan(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
    return true;
  }
  // Waits until the server closes the connection; false if `timeout` passes first.
  bool wait_closed(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    uint8_t buf[4096];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

net::Buffer encoded(uint32_t id, net::Body body) {
  net::Buffer out;
  net::encode(out, Frame{id, std::move(body)});
  return out;
}

// ---- 1. clients that connect and send nothing ------------------------------------------------

TEST(FaultTest, SilentConnectionsAreClosedAfterTheConnectTimeoutAndOthersAreServed) {
  Daemon d({"--set", "connect-timeout-ms=1000"});
  const auto opened = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<Conn>> silent;
  for (int i = 0; i < 50; ++i) silent.push_back(std::make_unique<Conn>(d.port()));
  // A slow opener: half a connect frame, then nothing.
  Conn slow(d.port());
  const net::Buffer connect = encoded(1, net::Connect{{net::kProtocolVersion}, "", std::nullopt});
  ASSERT_TRUE(slow.write(std::vector<uint8_t>(connect.begin(), connect.begin() + 7)));

  // A real client connects and works while they sit there.
  Conn real(d.port());
  real.hello("fault.real");
  EXPECT_FRAME(real.call(net::Send{"fault.silent", {text_message("hello")}}), kSendOk);
  Frame got = real.call(net::SubscribeTryReceive{"fault.silent", 1000});
  ASSERT_FRAME(got, kSubscribeTryReceiveOk);
  ASSERT_TRUE(std::get<net::SubscribeTryReceiveOk>(got.body).messages.has_value());

  // Every silent connection gets goaway (unavailable) naming the timeout, then is closed.
  std::vector<Conn*> all;
  for (auto& c : silent) all.push_back(c.get());
  all.push_back(&slow);
  for (Conn* c : all) {
    Conn::Read r = c->read(10s);
    ASSERT_EQ(r.status, Conn::Status::kFrame);
    ASSERT_FRAME(r.frame, kGoaway);
    EXPECT_EQ(r.frame.request_id, 0u);
    EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kUnavailable);
    EXPECT_NE(error_of(r.frame)->message.find("connect-timeout-ms"), std::string::npos)
        << error_of(r.frame)->message;
    EXPECT_EQ(c->read(5s).status, Conn::Status::kClosed);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - opened, 1000ms);
  silent.clear();
  slow.close();
  // The real client, connected, is not subject to the connect timeout, and the server lets go
  // of the others once they have closed too.
  EXPECT_FRAME(real.call(net::Ping{7}), kPong);
  json stats;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  do {
    stats = admin(real, net::AdminOp::kServerStats, json::object());
  } while (stats["connections"] != 1 && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(stats["connections"], 1) << stats.dump();
  EXPECT_EQ(d.stop(), 0);
}

TEST(FaultTest, SilentConnectionsDoNotLockOthersOutForever) {
  Daemon d({"--set", "max-connections=5", "--set", "connect-timeout-ms=500"});
  std::vector<std::unique_ptr<Conn>> silent;
  for (int i = 0; i < 5; ++i) silent.push_back(std::make_unique<Conn>(d.port()));
  // Each accepted connection is counted once the server has taken it: a stats call would need a
  // slot, so wait for the refusal of a sixth instead.
  bool refused = false;
  bool served = false;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (!served && std::chrono::steady_clock::now() < deadline) {
    Conn c(d.port());
    c.send(Frame{1, net::Connect{{net::kProtocolVersion}, "", std::nullopt}});
    Conn::Read r = c.read(5s);
    if (r.status != Conn::Status::kFrame) continue;
    if (r.frame.type() == net::FrameType::kGoaway) {
      EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kResourceExhausted);
      refused = true;
      // Refused clients retry, as clients do after resource-exhausted.
      std::this_thread::sleep_for(50ms);
      continue;
    }
    ASSERT_FRAME(r.frame, kConnectOk);
    EXPECT_FRAME(c.call(net::Ping{1}), kPong);
    served = true;
  }
  EXPECT_TRUE(refused) << "the five silent connections should have filled max-connections";
  EXPECT_TRUE(served) << "no slot came free after the silent connections timed out";
  for (auto& c : silent) {
    Conn::Read r = c->read(10s);
    ASSERT_EQ(r.status, Conn::Status::kFrame);
    EXPECT_FRAME(r.frame, kGoaway);
  }
  EXPECT_EQ(d.stop(), 0);
}

// ---- 2. a streaming consumer that stops reading -----------------------------------------------

TEST(FaultTest, MemoryForAStreamingConsumerThatDoesNotReadIsBounded) {
  // A cap of 1 MiB and a stall timeout longer than the test: the consumer stays connected, the
  // server just stops pushing to it.
  Daemon d({"--set", "max-output-bytes=1048576", "--set", "output-stall-timeout-ms=600000", "--set",
            "max-credit=0", "--set", "storage-block-cache-bytes=1048576", "--set",
            "tail-cache-bytes=1048576"});
  const pid_t pid = daemon_pid(d);
  ASSERT_GT(pid, 0);
  Conn producer(d.port());
  producer.hello();
  // 100 MB stored before the consumer starts, from random bytes so that nothing compresses.
  std::mt19937 rng(7);
  std::string payload(2048, '\0');
  for (int batch = 0; batch < 50; ++batch) {
    for (auto& ch : payload) ch = static_cast<char>(rng());
    std::vector<Message> messages(1000, text_message(payload));
    ASSERT_FRAME(producer.call(net::Send{"fault.rss", std::move(messages)}, 30s), kSendOk);
  }
  const uint64_t before = rss_bytes(pid);
  ASSERT_GT(before, 0u);

  Conn slow(d.port(), 64 * 1024);
  slow.hello();
  EXPECT_FRAME(slow.call(net::UpdateGuestConfiguration{GuestConfiguration{{"fault.rss"}, {}}}),
               kUpdateGuestConfigurationOk);
  EXPECT_FRAME(slow.call(net::StreamStart{1'000'000}), kStreamStartOk);
  // The server pushes until the output cap, then stops: the messages in flight stop growing.
  uint64_t in_flight = 0;
  for (int stable = 0, i = 0; stable < 5 && i < 200; ++i) {
    std::this_thread::sleep_for(100ms);
    const json st = admin(producer, net::AdminOp::kChannelStats, {{"name", "fault.rss"}});
    const uint64_t now = st.value("in-flight", uint64_t{0});
    stable = now == in_flight && now > 0 ? stable + 1 : 0;
    in_flight = now;
  }
  const uint64_t after = rss_bytes(pid);
  RecordProperty("rss_before_bytes", std::to_string(before));
  RecordProperty("rss_after_bytes", std::to_string(after));
  RecordProperty("in_flight", std::to_string(in_flight));
  std::cout << "RSS before the stream " << before / 1024 << " KiB, while stalled " << after / 1024
            << " KiB; " << in_flight << " of 50000 messages pushed\n";
  EXPECT_GT(in_flight, 0u);
  // Pushed: the cap, one batch past it and what the socket buffers hold; far from everything.
  EXPECT_LT(in_flight, 10'000u);
  EXPECT_LT(after, before + (48 << 20)) << "RSS grew from " << before << " to " << after;
  EXPECT_FRAME(producer.call(net::Ping{1}), kPong);
  EXPECT_EQ(d.stop(), 0);
}

// ---- 3. disconnect in the middle of a frame ---------------------------------------------------

TEST(FaultTest, ClientsThatCloseMidFrameLoseOnlyThatFrame) {
  Daemon d;
  Conn producer(d.port());
  producer.hello();
  Conn bystander(d.port());
  bystander.hello();
  std::vector<Message> many;
  for (int i = 0; i < 1000; ++i) many.push_back(text_message("half-" + std::to_string(i)));
  const net::Buffer big = encoded(2, net::Send{"fault.half", many});
  const net::Buffer small = encoded(2, net::Send{"fault.half", {text_message("half")}});
  const net::Buffer hello = encoded(1, net::Connect{{net::kProtocolVersion}, "", std::nullopt});
  for (int round = 0; round < 30; ++round) {
    ASSERT_FRAME(
        producer.call(net::Send{"fault.half", {text_message("ok-" + std::to_string(round))}}),
        kSendOk);
    Conn cut(d.port());
    ASSERT_TRUE(cut.write(hello));
    std::vector<uint8_t> part;
    switch (round % 3) {
      case 0:  // the header only
        part.assign(small.begin(), small.begin() + net::kHeaderBytes);
        break;
      case 1:  // half the body
        part.assign(small.begin(), small.begin() + small.size() / 2);
        break;
      case 2:  // half of a send of 1000 messages
        part.assign(big.begin(), big.begin() + big.size() / 2);
        break;
    }
    ASSERT_TRUE(cut.write(part));
    cut.close();
    EXPECT_FRAME(bystander.call(net::Ping{static_cast<uint64_t>(round)}), kPong);
  }
  const auto stored = browse_all(producer, "fault.half");
  ASSERT_EQ(stored.size(), 30u);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(text(stored[i]), "ok-" + std::to_string(i));
  EXPECT_EQ(d.stop(), 0);
}

// ---- 4. floods of pipelined requests ----------------------------------------------------------

TEST(FaultTest, PipelinedFloodsDoNotStarveOtherClients) {
  Daemon d;
  const pid_t pid = daemon_pid(d);
  ASSERT_GT(pid, 0);
  Conn probe(d.port());
  probe.hello();
  const uint64_t before = rss_bytes(pid);
  constexpr int kFlooders = 4;
  constexpr int kFrames = 50'000;  // per flooder: pings, every tenth a small send
  std::atomic<uint64_t> written{0};
  std::atomic<bool> stop{false};
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  std::vector<std::thread> flooders;
  for (int f = 0; f < kFlooders; ++f) {
    flooders.emplace_back([&, f] {
      RawSocket s(d.port());
      if (!s.connected()) return;
      net::Buffer out = encoded(1, net::Connect{{net::kProtocolVersion}, "", std::nullopt});
      for (int i = 0; i < kFrames && !stop.load(); ++i) {
        const uint32_t id = static_cast<uint32_t>(i + 2);
        if (i % 10 == 0) {
          net::encode(out,
                      Frame{id, net::Send{"fault.flood", {text_message("f" + std::to_string(f))}}});
        } else {
          net::encode(out, Frame{id, net::Ping{static_cast<uint64_t>(i)}});
        }
        if (out.size() >= 64 * 1024 || i + 1 == kFrames) {
          if (!s.write(out, deadline)) return;
          written.fetch_add(out.size());
          out.clear();
        }
      }
    });
  }
  // While they flood, a ping on another connection is answered within 2 s, every time.
  std::chrono::milliseconds worst{0};
  int probes = 0;
  while (std::chrono::steady_clock::now() < deadline && probes < 40) {
    const auto sent = std::chrono::steady_clock::now();
    Frame pong = probe.call(net::Ping{static_cast<uint64_t>(probes)}, 2s);
    EXPECT_FRAME(pong, kPong);
    worst = std::max(worst, std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - sent));
    ++probes;
    std::this_thread::sleep_for(100ms);  // pacing of the probe, not synchronization
  }
  const uint64_t during = rss_bytes(pid);
  stop = true;
  for (auto& t : flooders) t.join();
  std::cout << "flood: " << written.load() / 1024 << " KiB written by " << kFlooders
            << " flooders; worst probe ping " << worst.count() << " ms over " << probes
            << " probes; RSS " << before / 1024 << " KiB before, " << during / 1024
            << " KiB during\n";
  EXPECT_LT(worst, 2000ms);
  EXPECT_LT(during, before + (256 << 20)) << "RSS grew from " << before << " to " << during;
  EXPECT_FRAME(probe.call(net::Ping{1}), kPong);
  EXPECT_EQ(d.stop(), 0);
}

// ---- 5. unsettled deliveries per connection ---------------------------------------------------

std::vector<Message> try_receive(Conn& c, const std::string& channel, Frame* reply = nullptr) {
  Frame f = c.call(net::SubscribeTryReceive{channel, 0});
  if (reply) *reply = f;
  auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
  if (!ok || !ok->messages) return {};
  return *ok->messages;
}

TEST(FaultTest, MaxUnackedPerConnectionCapsReceivesUntilSettlementsFreeRoom) {
  Daemon d({"--set", "max-unacked-per-connection=10"});
  const std::string ch = "fault.unacked";
  Conn producer(d.port());
  producer.hello();
  std::vector<Message> batch;
  for (int i = 0; i < 60; ++i) batch.push_back(text_message(std::to_string(i)));
  ASSERT_FRAME(producer.call(net::Send{ch, batch}), kSendOk);

  Conn c(d.port());
  c.hello();
  const GuestConfiguration config{{ch}, Metadata{{"batch-size", "100"}}};
  ASSERT_FRAME(c.call(net::UpdateGuestConfiguration{config}), kUpdateGuestConfigurationOk);
  auto held = try_receive(c, ch);
  ASSERT_EQ(held.size(), 10u) << "a batch of 100 is cut to the room left";
  Frame refused;
  EXPECT_TRUE(try_receive(c, ch, &refused).empty());
  ASSERT_FRAME(refused, kError);
  EXPECT_EQ(error_of(refused)->code, ErrorCode::kResourceExhausted);
  EXPECT_NE(error_of(refused)->message.find("max-unacked-per-connection"), std::string::npos);
  Frame blocking = c.call(net::SubscribeReceive{ch});
  EXPECT_EQ(error_of(blocking)->code, ErrorCode::kResourceExhausted) << describe(blocking);

  // Complete frees room...
  for (int i = 0; i < 3; ++i) {
    ASSERT_FRAME(c.call(net::CompleteMessage{receipt_of(held[i])}), kCompleteMessageOk);
  }
  EXPECT_EQ(try_receive(c, ch).size(), 3u);
  // ... and so does abandon.
  ASSERT_FRAME(c.call(net::AbandonMessage{receipt_of(held[3])}), kAbandonMessageOk);
  EXPECT_EQ(try_receive(c, ch).size(), 1u);

  // Another connection has its own room; a disconnect gives the held messages back.
  Conn other(d.port());
  other.hello();
  ASSERT_FRAME(other.call(net::UpdateGuestConfiguration{config}), kUpdateGuestConfigurationOk);
  EXPECT_EQ(try_receive(other, ch).size(), 10u);
  EXPECT_TRUE(try_receive(other, ch, &refused).empty());
  EXPECT_FRAME(refused, kError);
  EXPECT_EQ(d.stop(), 0);
}

TEST(FaultTest, AStreamAtMaxUnackedPausesUntilRoomIsFreed) {
  Daemon d({"--set", "max-unacked-per-connection=10"});
  const std::string ch = "fault.unacked.stream";
  Conn producer(d.port());
  producer.hello();
  std::vector<Message> batch;
  for (int i = 0; i < 40; ++i) batch.push_back(text_message(std::to_string(i)));
  ASSERT_FRAME(producer.call(net::Send{ch, batch}), kSendOk);

  Conn c(d.port());
  c.hello();
  // Short leases, so that expiry frees room too.
  const GuestConfiguration config{{ch}, Metadata{{"lease-ms", "3000"}}};
  ASSERT_FRAME(c.call(net::UpdateGuestConfiguration{config}), kUpdateGuestConfigurationOk);
  ASSERT_FRAME(c.call(net::StreamStart{1000}), kStreamStartOk);
  auto pushed = [&](std::chrono::milliseconds wait) {
    std::vector<Message> got;
    while (auto f = c.next_push(wait)) {
      auto* dl = std::get_if<net::Deliver>(&f->body);
      if (!dl) {
        ADD_FAILURE() << "unexpected push: " << describe(*f);
        break;
      }
      for (auto& m : dl->messages) got.push_back(std::move(m));
      wait = 300ms;
    }
    return got;
  };
  auto first = pushed(5s);
  ASSERT_EQ(first.size(), 10u) << "the stream stops at the limit, whatever its credit";
  // Settling three lets three more through.
  for (int i = 0; i < 3; ++i) {
    ASSERT_FRAME(c.call(net::CompleteMessage{receipt_of(first[i])}), kCompleteMessageOk);
  }
  auto second = pushed(5s);
  EXPECT_EQ(second.size(), 3u);
  // Leases that expire free room as well: the stream flows again, never past the limit.
  auto third = pushed(8s);
  EXPECT_FALSE(third.empty());
  EXPECT_LE(third.size(), 10u);
  const json st = admin(producer, net::AdminOp::kChannelStats, {{"name", ch}});
  EXPECT_LE(st.value("in-flight", uint64_t{0}), 10u) << st.dump();
  EXPECT_EQ(d.stop(), 0);
}

// ---- 6. SIGKILL during group commit -----------------------------------------------------------

TEST(FaultTest, SigkillDuringGroupCommitLosesNoConfirmedSend) {
  Daemon d({"--set", "default-channel={\"durability\": \"group\"}"});
  const std::string ch = "fault.kill";
  constexpr int kProducers = 4;
  constexpr int kRounds = 3;
  constexpr uint32_t kWindow = 32;  // sends outstanding per producer
  // confirmed[round][producer]: the highest n confirmed (+1), all below it confirmed.
  std::vector<std::vector<uint64_t>> confirmed(kRounds, std::vector<uint64_t>(kProducers, 0));
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> ready{0};
    std::atomic<bool> killed{false};
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        Conn c(d.port());
        c.hello();
        const std::string who = "r" + std::to_string(round) + "p" + std::to_string(p) + "-";
        std::map<uint32_t, uint64_t> outstanding;  // request id -> n
        uint64_t next = 0;
        bool counted = false;
        while (next < 100'000) {
          while (outstanding.size() < kWindow && !killed.load()) {
            const uint32_t id = c.send(net::Send{ch, {text_message(who + std::to_string(next))}});
            outstanding[id] = next++;
          }
          Conn::Read r = c.read(5s);
          if (r.status != Conn::Status::kFrame) break;  // the daemon is gone
          auto it = outstanding.find(r.frame.request_id);
          if (it == outstanding.end() || r.frame.type() != net::FrameType::kSendOk) break;
          // Replies to one connection's sends come in order: everything below is confirmed.
          EXPECT_TRUE(it == outstanding.begin());
          confirmed[round][p] = it->second + 1;
          outstanding.erase(it);
          if (!counted && confirmed[round][p] >= 200) {
            counted = true;
            ready.fetch_add(1);
          }
        }
      });
    }
    // Kill once every producer has 200 confirmed and many more in flight.
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (ready.load() < kProducers && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    EXPECT_EQ(ready.load(), kProducers);
    EXPECT_EQ(d.stop(SIGKILL), 128 + SIGKILL);
    killed = true;
    for (auto& t : producers) t.join();
    d.start();

    // Every confirmed send of every round so far is there exactly once, in order per producer,
    // and what came back of the unconfirmed ones is a prefix too (the log is never torn).
    Conn check(d.port());
    check.hello();
    const auto stored = browse_all(check, ch);
    std::map<std::string, uint64_t> seen;  // "rXpY-" -> next n expected
    for (const auto& m : stored) {
      const std::string t = text(m);
      const auto dash = t.find('-');
      ASSERT_NE(dash, std::string::npos) << t;
      const std::string who = t.substr(0, dash + 1);
      const uint64_t n = std::stoull(t.substr(dash + 1));
      ASSERT_EQ(n, seen[who]) << "producer " << who << ": expected " << seen[who] << ", got " << n;
      seen[who] = n + 1;
    }
    for (int r = 0; r <= round; ++r) {
      for (int p = 0; p < kProducers; ++p) {
        const std::string who = "r" + std::to_string(r) + "p" + std::to_string(p) + "-";
        EXPECT_GE(seen[who], confirmed[r][p]) << who << " lost confirmed sends";
      }
    }
  }
  EXPECT_EQ(d.stop(), 0);
}

// ---- 7. a full disk ---------------------------------------------------------------------------

// A small tmpfs mounted for one test, unmounted at the end.
class SmallDisk {
 public:
  explicit SmallDisk(const std::string& size) : dir_(make_temp_dir("disk")) {
    const std::string options = "size=" + size;
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      error_ = strerror(errno);
    } else {
      mounted_ = true;
    }
  }
  ~SmallDisk() {
    if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
    std::filesystem::remove_all(dir_);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

TEST(FaultTest, AFullDiskRefusesSendsClearlyAndRecoversWhenSpaceIsFreed) {
  SmallDisk disk("32m");
  if (!disk.mounted()) {
    GTEST_SKIP() << "cannot mount a tmpfs for the data directory (" << disk.error()
                 << "); the full-disk test needs root or CAP_SYS_ADMIN";
  }
  // Space to give back later, taken before the daemon starts.
  const std::string filler = disk.dir() + "/filler";
  {
    std::ofstream f(filler, std::ios::binary);
    const std::string mib(1 << 20, 'f');
    for (int i = 0; i < 12; ++i) f << mib;
    ASSERT_TRUE(f.good()) << "writing the filler file";
  }
  const std::string data_dir = disk.dir() + "/data";
  // Small memtables: RocksDB flushes often, and resuming after space is freed needs little.
  Daemon d({"--set", "storage-write-buffer-bytes=2097152"}, data_dir);
  const std::string ch = "fault.disk";
  Conn producer(d.port());
  producer.hello();
  std::mt19937 rng(11);
  std::vector<std::string> confirmed;
  auto make_batch = [&](int tag) {
    std::vector<Message> batch;
    for (int i = 0; i < 64; ++i) {
      std::string payload(8192, '\0');
      for (auto& c : payload) c = static_cast<char>(rng());
      const std::string id = std::to_string(tag) + "/" + std::to_string(i);
      batch.push_back(text_message(payload, {{"id", id}}));
    }
    return batch;
  };
  auto ids_of = [](const std::vector<Message>& batch) {
    std::vector<std::string> ids;
    for (const auto& m : batch) ids.push_back(meta_value(m, "id"));
    return ids;
  };
  // Fill the disk: 512 KiB a send, at most 200 sends.
  std::optional<Error> refusal;
  int tag = 0;
  for (; tag < 200 && !refusal; ++tag) {
    auto batch = make_batch(tag);
    auto ids = ids_of(batch);
    Frame f = producer.call(net::Send{ch, std::move(batch)}, 20s);
    if (f.type() == net::FrameType::kSendOk) {
      confirmed.insert(confirmed.end(), ids.begin(), ids.end());
    } else {
      refusal = error_of(f);
      ASSERT_TRUE(refusal) << describe(f);
    }
  }
  ASSERT_TRUE(refusal) << "the disk never filled";
  EXPECT_EQ(refusal->code, ErrorCode::kResourceExhausted) << refusal->to_string();
  EXPECT_NE(refusal->message.find("full"), std::string::npos) << refusal->message;
  EXPECT_NE(refusal->message.find(data_dir), std::string::npos) << refusal->message;
  EXPECT_GT(confirmed.size(), 0u);
  // Later sends are refused the same way, promptly.
  Frame again = producer.call(net::Send{ch, make_batch(1000)}, 10s);
  ASSERT_FRAME(again, kError);
  EXPECT_EQ(error_of(again)->code, ErrorCode::kResourceExhausted);
  EXPECT_TRUE(d.wait_for_log("is full")) << d.log();

  // The daemon is up: alive, not ready, the gauge set, and stored messages can be received.
  EXPECT_FRAME(producer.call(net::Ping{1}), kPong);
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200u);
  HttpReply ready = http_get(d.http_port(), "/readyz");
  EXPECT_EQ(ready.status, 503u) << ready;
  EXPECT_NE(ready.json["checks"]["disk"].get<std::string>().find("full"), std::string::npos);
  EXPECT_NE(http_get(d.http_port(), "/metrics").body.find("witmq_store_disk_full 1"),
            std::string::npos);
  {
    Conn consumer(d.port());
    consumer.hello();
    auto got = try_receive(consumer, ch);
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(meta_value(got.front(), "id"), confirmed.front());
    // Left unsettled: they become available again when this connection closes.
  }

  // Space freed: sends work again without a restart. The store retries at most once a second.
  std::filesystem::remove(filler);
  bool resumed = false;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!resumed && std::chrono::steady_clock::now() < deadline) {
    auto batch = make_batch(2000 + tag++);
    auto ids = ids_of(batch);
    Frame f = producer.call(net::Send{ch, std::move(batch)}, 20s);
    if (f.type() == net::FrameType::kSendOk) {
      confirmed.insert(confirmed.end(), ids.begin(), ids.end());
      resumed = true;
    } else {
      EXPECT_EQ(error_of(f)->code, ErrorCode::kResourceExhausted) << describe(f);
      std::this_thread::sleep_for(200ms);  // the store's own retry pace
    }
  }
  ASSERT_TRUE(resumed) << "sends were still refused 20 s after space was freed:\n" << d.log();
  EXPECT_EQ(http_get(d.http_port(), "/readyz").status, 200u);

  auto check_all = [&](const char* when) {
    Conn c(d.port());
    c.hello();
    std::set<std::string> stored;
    for (const auto& m : browse_all(c, ch)) {
      EXPECT_TRUE(stored.insert(meta_value(m, "id")).second)
          << when << ": " << meta_value(m, "id") << " is stored twice";
    }
    size_t missing = 0;
    for (const auto& id : confirmed) missing += stored.count(id) ? 0 : 1;
    EXPECT_EQ(missing, 0u) << when << ": " << missing << " of " << confirmed.size()
                           << " confirmed messages are missing";
  };
  check_all("after space was freed");
  std::cout << "full disk: " << confirmed.size() << " messages confirmed, " << tag
            << " sends tried\n";

  // And after a restart.
  EXPECT_EQ(d.stop(), 0);
  d.start();
  check_all("after a restart");
  EXPECT_EQ(d.stop(), 0);
}

// Issue 17 item 3: messages whose leases expire at max-deliveries 1 while the disk is full cannot
// be moved to the dead-letter channel. They must stay in their channel and be delivered once space
// is back, not be settled there while their copies in the dead-letter channel were never stored.
TEST(FaultTest, ADeadLetterMoveOnAFullDiskLosesNothing) {
  SmallDisk disk("32m");
  if (!disk.mounted()) {
    GTEST_SKIP() << "cannot mount a tmpfs for the data directory (" << disk.error()
                 << "); the full-disk test needs root or CAP_SYS_ADMIN";
  }
  const std::string filler = disk.dir() + "/filler";
  {
    std::ofstream f(filler, std::ios::binary);
    const std::string mib(1 << 20, 'f');
    for (int i = 0; i < 12; ++i) f << mib;
    ASSERT_TRUE(f.good()) << "writing the filler file";
  }
  Daemon d({"--set", "storage-write-buffer-bytes=2097152", "--set",
            R"(default-channel={"max-deliveries": 1})"},
           disk.dir() + "/data");
  const std::string ch = "fault.poison";
  Conn producer(d.port());
  producer.hello();
  std::set<std::string> ids;
  std::vector<Message> poison;
  for (int i = 0; i < 5; ++i) {
    ids.insert("p" + std::to_string(i));
    poison.push_back(text_message("poison", {{"id", "p" + std::to_string(i)}}));
  }
  ASSERT_FRAME(producer.call(net::Send{ch, poison}), kSendOk);

  // Fill the disk with another channel: 512 KiB a send, at most 200 sends.
  std::mt19937 rng(17);
  bool full = false;
  for (int tag = 0; tag < 200 && !full; ++tag) {
    std::vector<Message> batch;
    for (int i = 0; i < 64; ++i) {
      std::string payload(8192, '\0');
      for (auto& c : payload) c = static_cast<char>(rng());
      batch.push_back(text_message(payload));
    }
    Frame f = producer.call(net::Send{"fault.fill", std::move(batch)}, 20s);
    if (f.type() != net::FrameType::kSendOk) {
      ASSERT_EQ(error_of(f)->code, ErrorCode::kResourceExhausted) << describe(f);
      full = true;
    }
  }
  ASSERT_TRUE(full) << "the disk never filled";

  // Delivered under a short lease that then expires: the first attempt was the last.
  {
    Conn consumer(d.port());
    consumer.hello();
    const GuestConfiguration config{{ch}, Metadata{{"lease-ms", "500"}}};
    ASSERT_FRAME(consumer.call(net::UpdateGuestConfiguration{config}), kUpdateGuestConfigurationOk);
    ASSERT_EQ(try_receive(consumer, ch).size(), ids.size());
    EXPECT_TRUE(d.wait_for_log("could not be dead-lettered")) << d.log();
  }

  // Space back: every message is in its channel or in the dead-letter channel.
  std::filesystem::remove(filler);
  Conn consumer(d.port());
  consumer.hello();
  std::set<std::string> found;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (found.size() < ids.size() && std::chrono::steady_clock::now() < deadline) {
    bool any = false;
    for (const std::string& from : {ch, ch + ".dlq"}) {
      for (const Message& m : try_receive(consumer, from)) {
        any = true;
        found.insert(meta_value(m, "id"));
        // Refused while the store still waits to resume: the message comes back, not lost.
        consumer.call(net::CompleteMessage{receipt_of(m)});
      }
    }
    if (!any) std::this_thread::sleep_for(100ms);  // backoff and the store's resume pace
  }
  std::vector<std::string> lost;
  for (const auto& id : ids) {
    if (!found.count(id)) lost.push_back(id);
  }
  EXPECT_TRUE(lost.empty()) << lost.size() << " messages are in neither channel, the first "
                            << (lost.empty() ? "" : lost.front()) << "\n"
                            << d.log();
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace witmq::daemon::testing
