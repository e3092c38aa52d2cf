// What one client can make the real witmqd hold, and the cost of being refused: the input buffer
// follows the bytes that arrived (never a length field's word, and before connect a frame is
// small), queued output stays under max-output-bytes plus one reply whatever the client leaves
// unread (browse pages, stream rounds), connections over max-connections cost few descriptors and
// log lines, one connection's admin calls do not queue ahead of another's, and every close the
// server makes without goaway is logged and counted. The figures in docs/SECURITY.md ("Limits a
// client cannot exceed") come from these tests.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

// Open file descriptors of process `pid`, from /proc/PID/fd.
size_t fd_count(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

json admin(Conn& c, net::AdminOp op, const json& body) {
  Frame f = c.call(net::AdminRequest{op, body.dump()});
  auto* reply = std::get_if<net::AdminReply>(&f.body);
  if (!reply) {
    ADD_FAILURE() << "admin call failed: " << describe(f);
    return json::object();
  }
  return json::parse(reply->json);
}

// A frame header (length field, type, flags, request id) announcing `length` bytes after the
// length field, with none of the body.
std::vector<uint8_t> header_only(uint32_t length, net::FrameType type) {
  net::Buffer b(net::kHeaderBytes);
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(length >> (24 - 8 * i));
  b[4] = static_cast<uint8_t>(type);
  b[9] = 1;  // request id 1
  return b;
}

// Sends `count` messages of `bytes` random bytes each to `channel`, in batches of 8.
void store(Conn& producer, const std::string& channel, int count, size_t bytes) {
  std::mt19937 rng(11);
  std::string payload(bytes, '\0');
  for (int done = 0; done < count;) {
    std::vector<Message> batch;
    for (; done < count && batch.size() < 8; ++done) {
      for (auto& ch : payload) ch = static_cast<char>(rng());
      batch.push_back(text_message(payload));
    }
    ASSERT_FRAME(producer.call(net::Send{channel, std::move(batch)}, 30s), kSendOk);
  }
}

// Before connect a frame is at most kMaxConnectFrameBytes: a larger length field is refused as
// soon as it arrives, whatever max-frame-bytes allows after connect.
TEST(BoundsTest, AFrameBeforeConnectIsSmall) {
  Daemon d;
  Conn c(d.port());
  ASSERT_TRUE(c.write(header_only(net::kMaxConnectFrameBytes + 1, net::FrameType::kConnect)));
  Conn::Read r = c.read(5s);
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kResourceExhausted);
  EXPECT_NE(error_of(r.frame)->message.find("before connect"), std::string::npos)
      << error_of(r.frame)->message;
  // A connect of the largest size allowed is served.
  Conn big(d.port());
  Frame ok = big.call(net::Connect{std::vector<uint16_t>(net::kMaxConnectVersions, 1),
                                   std::string(net::kMaxClientNameBytes, 'n'),
                                   std::string(net::kMaxTokenBytes, 't')});
  EXPECT_FRAME(ok, kConnectOk);
  EXPECT_EQ(d.stop(), 0);
}

// 20 connected clients each announce a frame of max-frame-bytes (16 MiB) and send nothing more:
// the server holds no more than what arrived. Before, each resized its input buffer to the whole
// frame at once (about 330 MB for the 20).
TEST(BoundsTest, ALengthFieldCommitsNoMemoryBeforeItsBytesArrive) {
  Daemon d;
  const pid_t pid = daemon_pid(d);
  ASSERT_GT(pid, 0);
  Conn probe(d.port());
  probe.hello();
  const uint64_t before = rss_bytes(pid);
  std::vector<std::unique_ptr<Conn>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<Conn>(d.port()));
    clients.back()->hello();
    ASSERT_TRUE(clients.back()->write(header_only(16 << 20, net::FrameType::kSend)));
  }
  // Every header is read once the probe's ping, sent after them, is answered... by another
  // connection, so give the server a moment too.
  EXPECT_FRAME(probe.call(net::Ping{1}), kPong);
  std::this_thread::sleep_for(500ms);
  const uint64_t after = rss_bytes(pid);
  std::cout << "RSS before " << before / 1024 << " KiB, with 20 announced 16 MiB frames "
            << after / 1024 << " KiB\n";
  EXPECT_LT(after, before + (16 << 20)) << "RSS grew from " << before << " to " << after;
  EXPECT_FRAME(probe.call(net::Ping{2}), kPong);
  EXPECT_EQ(d.stop(), 0);
}

// A client sends 100 browses of an 8 MB page and reads nothing: the server answers while the
// output is under max-output-bytes (1 MiB here), then waits; whatever it answers fits the cap plus
// one reply. Before, every page was queued: about 958 MiB. Once the client reads, every browse is
// answered (a page cut short, or resource-exhausted).
TEST(BoundsTest, UnreadBrowsesStayUnderTheOutputCap) {
  Daemon d({"--set", "max-output-bytes=1048576", "--set", "output-stall-timeout-ms=600000", "--set",
            "storage-block-cache-bytes=1048576", "--set", "tail-cache-bytes=1048576"});
  const pid_t pid = daemon_pid(d);
  ASSERT_GT(pid, 0);
  Conn producer(d.port());
  producer.hello();
  store(producer, "bounds.browse", 8, 1'000'000);
  const uint64_t before = rss_bytes(pid);

  Conn slow(d.port(), 64 * 1024);
  slow.hello();
  std::vector<uint32_t> ids;
  const std::string page = json{{"channel", "bounds.browse"}, {"from", 0}, {"max", 8}}.dump();
  for (int i = 0; i < 100; ++i)
    ids.push_back(slow.send(net::AdminRequest{net::AdminOp::kBrowse, page}));
  EXPECT_FRAME(producer.call(net::Ping{1}), kPong);
  std::this_thread::sleep_for(2s);
  const uint64_t after = rss_bytes(pid);
  std::cout << "RSS before " << before / 1024 << " KiB, with 100 unread 8 MB browses "
            << after / 1024 << " KiB\n";
  EXPECT_LT(after, before + (64 << 20)) << "RSS grew from " << before << " to " << after;

  size_t pages = 0, refused = 0;
  for (uint32_t id : ids) {
    Frame f = slow.reply(id, 60s);
    if (f.type() == net::FrameType::kBrowseOk) {
      EXPECT_FALSE(std::get<net::BrowseOk>(f.body).messages.empty());
      ++pages;
    } else {
      ASSERT_FRAME(f, kError);
      EXPECT_EQ(error_of(f)->code, ErrorCode::kResourceExhausted) << describe(f);
      ++refused;
    }
  }
  EXPECT_EQ(pages + refused, 100u);
  EXPECT_GT(pages, 0u);
  EXPECT_EQ(d.stop(), 0);
}

// A stream of 100 credit over 100 messages of 1 MB whose client reads nothing: the server pushes
// rounds sized by the bytes left under max-output-bytes, and stops there. Before, one round of
// 100 messages was queued at once (about 161 MiB). Once the client reads, all 100 arrive.
TEST(BoundsTest, AnUnreadStreamRoundStaysUnderTheOutputCap) {
  Daemon d({"--set", "max-output-bytes=1048576", "--set", "output-stall-timeout-ms=600000", "--set",
            "storage-block-cache-bytes=1048576", "--set", "tail-cache-bytes=1048576"});
  const pid_t pid = daemon_pid(d);
  ASSERT_GT(pid, 0);
  Conn producer(d.port());
  producer.hello();
  store(producer, "bounds.stream", 100, 1'000'000);
  const uint64_t before = rss_bytes(pid);

  Conn slow(d.port(), 64 * 1024);
  slow.hello();
  EXPECT_FRAME(slow.call(net::UpdateGuestConfiguration{GuestConfiguration{{"bounds.stream"}, {}}}),
               kUpdateGuestConfigurationOk);
  EXPECT_FRAME(slow.call(net::StreamStart{100}), kStreamStartOk);
  std::this_thread::sleep_for(2s);
  const json st = admin(producer, net::AdminOp::kChannelStats, {{"name", "bounds.stream"}});
  const uint64_t after = rss_bytes(pid);
  std::cout << "RSS before " << before / 1024 << " KiB, with an unread stream of 100 x 1 MB "
            << after / 1024 << " KiB; " << st.value("in-flight", 0) << " messages pushed\n";
  EXPECT_LT(after, before + (32 << 20)) << "RSS grew from " << before << " to " << after;
  EXPECT_LT(st.value("in-flight", 0), 10);

  size_t delivered = 0;
  while (delivered < 100) {
    auto push = slow.next_push(30s);
    ASSERT_TRUE(push.has_value()) << delivered << " of 100 delivered";
    ASSERT_FRAME(*push, kDeliver);
    delivered += std::get<net::Deliver>(push->body).messages.size();
  }
  EXPECT_EQ(delivered, 100u);
  EXPECT_EQ(d.stop(), 0);
}

// A client that pipelines receives and reads nothing: once its output is over the cap its
// waiting receives leave the broker, so messages are not taken and released over and over (each
// release would count a delivery attempt and lead to dead letters); once it reads, every receive
// is answered.
TEST(BoundsTest, ReceivesOfAClientThatDoesNotReadTakeNothingOverTheCap) {
  Daemon d({"--set", "max-output-bytes=65536", "--set", "output-stall-timeout-ms=600000"});
  Conn slow(d.port(), 64 * 1024);
  slow.hello();
  std::vector<uint32_t> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(slow.send(net::SubscribeReceive{"bounds.park"}));
  Conn producer(d.port());
  producer.hello();
  store(producer, "bounds.park", 400, 10'000);
  std::this_thread::sleep_for(1s);
  const json st = admin(producer, net::AdminOp::kChannelStats, {{"name", "bounds.park"}});
  std::cout << "redeliveries while the client does not read: " << st.value("redeliveries-total", 0)
            << ", in flight " << st.value("in-flight", 0) << "\n";
  EXPECT_LE(st.value("redeliveries-total", 0), 20);
  size_t received = 0;
  for (uint32_t id : ids) {
    Frame f = slow.reply(id, 30s);
    if (f.type() == net::FrameType::kSubscribeReceiveOk) {
      received += std::get<net::SubscribeReceiveOk>(f.body).messages.size();
    } else {
      ASSERT_FRAME(f, kError);
      EXPECT_EQ(error_of(f)->code, ErrorCode::kResourceExhausted) << describe(f);
    }
  }
  EXPECT_GT(received, 0u);
  EXPECT_EQ(d.stop(), 0);
}

// 300 connections over max-connections in a burst: a bounded number are given goaway at a time,
// the rest are closed at once, and the warning is one line with a count, not one per connection.
// Before, each held a descriptor for about 2 s and wrote a line.
TEST(BoundsTest, RefusedConnectionsCostFewDescriptorsAndLogLines) {
  Daemon d({"--set", "max-connections=1"});
  const pid_t pid = daemon_pid(d);
  ASSERT_GT(pid, 0);
  Conn served(d.port());
  served.hello();
  const size_t before = fd_count(pid);
  std::vector<std::unique_ptr<Conn>> refused;
  for (int i = 0; i < 300; ++i) refused.push_back(std::make_unique<Conn>(d.port()));
  EXPECT_FRAME(served.call(net::Ping{1}), kPong);
  std::this_thread::sleep_for(300ms);
  const size_t during = fd_count(pid);
  std::cout << "descriptors before " << before << ", with 300 refused connections open " << during
            << "\n";
  // At most 64 goaways in progress, and a few descriptors of the daemon's own.
  EXPECT_LE(during, before + 64 + 8);
  // Every refused connection ends: with goaway, or closed at once.
  size_t goaways = 0;
  for (auto& c : refused) {
    Conn::Read r = c->read(10s);
    if (r.status == Conn::Status::kFrame) {
      EXPECT_FRAME(r.frame, kGoaway);
      ++goaways;
      r = c->read(10s);
    }
    EXPECT_EQ(r.status, Conn::Status::kClosed);
  }
  EXPECT_GT(goaways, 0u);
  const std::string log = d.log();
  size_t lines = 0;
  for (size_t at = log.find("refused "); at != std::string::npos;
       at = log.find("refused ", at + 1)) {
    ++lines;
  }
  EXPECT_LE(lines, 2u) << log;
  Frame stats = served.call(net::AdminRequest{net::AdminOp::kServerStats, "{}"});
  ASSERT_FRAME(stats, kServerStatsOk);
  const json j = json::parse(std::get<net::AdminReply>(stats.body).json);
  EXPECT_EQ(j["connections-refused"], 300);
  EXPECT_EQ(j["connections-refused-at-once"].get<uint64_t>() + goaways, 300u);
  EXPECT_EQ(d.stop(), 0);
}

// One connection queues 300 admin calls; another connection's channel-list, sent after all of
// them were read, is answered after at most a few of them, not after all. Before, one admin
// thread ran every connection's calls in arrival order.
TEST(BoundsTest, AdminCallsOfOneConnectionDoNotQueueAheadOfAnother) {
  Daemon d;
  Conn busy(d.port());
  busy.hello();
  for (int i = 0; i < 300; ++i) {
    busy.send(net::AdminRequest{net::AdminOp::kChannelDeclare,
                                json{{"name", "bounds.fair." + std::to_string(i)}}.dump()});
  }
  // The ping is answered once the server has read every declare before it.
  const uint32_t ping = busy.send(net::Ping{1});
  EXPECT_FRAME(busy.reply(ping, 30s), kPong);
  Conn other(d.port());
  other.hello();
  const json list = admin(other, net::AdminOp::kChannelList, json::object());
  size_t declared = 0;
  for (const auto& ch : list["channels"]) {
    if (ch["name"].get<std::string>().rfind("bounds.fair.", 0) == 0) ++declared;
  }
  std::cout << declared << " of the busy connection's 300 declares ran before the other's list\n";
  EXPECT_LT(declared, 300u);
  // The busy connection's calls all complete (the replies read while waiting for the pong first).
  size_t ok = 0;
  for (const Frame& f : busy.others) {
    EXPECT_FRAME(f, kChannelDeclareOk);
    ++ok;
  }
  while (ok < 300) {
    Conn::Read r = busy.read(30s);
    ASSERT_EQ(r.status, Conn::Status::kFrame);
    ASSERT_FRAME(r.frame, kChannelDeclareOk);
    ++ok;
  }
  EXPECT_EQ(d.stop(), 0);
}

// A client whose every in-flight slot is a waiting receive is not read (max-in-flight), yet its
// close is seen at once: a FIN with nothing more sent, a FIN after more requests arrived, a reset
// (closed with replies unread). Its descriptor is released and its waiting receives leave the
// broker, so the next message goes to a live consumer on its first attempt. Before, the
// connection stayed until a receive ended, which for subscribe-receive is when a message came:
// the dead connection took it, and it was delivered again only after its lease or a failed write.
TEST(BoundsTest, AClientThatClosesWhileNotReadIsLetGo) {
  Daemon d({"--set", "max-in-flight=4"});
  const pid_t pid = daemon_pid(d);
  ASSERT_GT(pid, 0);
  Conn consumer(d.port());
  consumer.hello();
  EXPECT_FRAME(consumer.call(net::UpdateGuestConfiguration{GuestConfiguration{
                   {"bounds.gone.fin", "bounds.gone.finmore", "bounds.gone.reset"}, {}}}),
               kUpdateGuestConfigurationOk);
  const size_t before = fd_count(pid);
  for (const std::string how : {"fin", "finmore", "reset"}) {
    SCOPED_TRACE(how);
    const std::string channel = "bounds.gone." + how;
    auto waiter = std::make_unique<Conn>(d.port());
    waiter->hello();
    EXPECT_FRAME(waiter->call(net::UpdateGuestConfiguration{GuestConfiguration{{channel}, {}}}),
                 kUpdateGuestConfigurationOk);
    // A reply left unread makes the client's close a reset.
    if (how == "reset") waiter->send(net::Send{channel + ".other", {text_message("x")}});
    for (int i = 0; i < 4; ++i) waiter->send(net::SubscribeReceive{channel});
    EXPECT_FRAME(consumer.call(net::Ping{1}), kPong);
    if (how == "finmore") {
      std::this_thread::sleep_for(100ms);  // the server has stopped reading by now
      waiter->send(net::Ping{2});
    }
    std::this_thread::sleep_for(100ms);
    waiter->close();
    size_t now = fd_count(pid);
    for (int i = 0; i < 100 && now > before; ++i) {
      std::this_thread::sleep_for(20ms);
      now = fd_count(pid);
    }
    EXPECT_EQ(now, before);
    ASSERT_FRAME(consumer.call(net::Send{channel, {text_message("precious")}}), kSendOk);
    Frame got = consumer.call(net::SubscribeTryReceive{channel, 2000});
    ASSERT_FRAME(got, kSubscribeTryReceiveOk);
    const auto& messages = std::get<net::SubscribeTryReceiveOk>(got.body).messages;
    ASSERT_TRUE(messages.has_value());
    ASSERT_EQ(messages->size(), 1u);
    EXPECT_EQ(meta_value(messages->front(), meta::kAttempt), "1");
  }
  EXPECT_EQ(d.stop(), 0);
}

// A client that stops reading is cut off without goaway (the server cannot write one): the close
// is logged with its reason and counted in server-stats.
TEST(BoundsTest, ClosesWithoutGoawayAreLoggedAndCounted) {
  Daemon d({"--set", "max-output-bytes=65536", "--set", "output-stall-timeout-ms=300"});
  Conn slow(d.port(), 64 * 1024);
  slow.hello();
  EXPECT_FRAME(slow.call(net::UpdateGuestConfiguration{GuestConfiguration{{"bounds.stall"}, {}}}),
               kUpdateGuestConfigurationOk);
  EXPECT_FRAME(slow.call(net::StreamStart{10'000}), kStreamStartOk);
  Conn producer(d.port());
  producer.hello();
  store(producer, "bounds.stall", 200, 100'000);
  EXPECT_TRUE(d.wait_for_log("closed without goaway: ")) << d.log();
  Frame stats = producer.call(net::AdminRequest{net::AdminOp::kServerStats, "{}"});
  ASSERT_FRAME(stats, kServerStatsOk);
  const json j = json::parse(std::get<net::AdminReply>(stats.body).json);
  EXPECT_EQ(j["closed-without-goaway"], 1) << j.dump();
  EXPECT_EQ(d.stop(), 0);
}

// max-connections that the descriptor limit cannot hold is lowered at start, with a warning that
// says so, so that client connections cannot take the descriptors storage and HTTP need.
TEST(BoundsTest, MaxConnectionsIsKeptWithinTheDescriptorLimit) {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1'000'000) {
    GTEST_SKIP() << "the descriptor limit holds a million connections here";
  }
  Daemon d({"--set", "max-connections=1000000"});
  EXPECT_TRUE(d.wait_for_log("does not fit in the")) << d.log();
  Conn c(d.port());
  c.hello();
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace witmq::daemon::testing
