// Server lists and reconnection (client.h) against real single-node witmqd processes: the client
// skips servers that do not answer, moves to the next one when its connection is lost, restores
// its consumer's configuration and stream there, and a consumer whose node was killed sees its
// unsettled messages again once that node is back.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "client/client.h"
#include "daemon_process.h"

namespace witmq::client {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;

Message text_message(std::string_view text) {
  Message m;
  m.data.assign(text.begin(), text.end());
  return m;
}

std::string text_of(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

// A port nothing listens on now (bound, then released).
uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

Endpoint local(uint16_t port) { return Endpoint{"127.0.0.1", port}; }

class ServerList : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ = testing::find_witmqd();
    if (binary_.empty())
      GTEST_SKIP() << "witmqd is not built (set WITMQ_WITMQD or WITMQ_BUILD_DIR)";
  }

  static Options reconnecting() {
    Options o;
    o.connect_timeout = 2s;
    o.request_timeout = 20s;
    o.reconnect_timeout = 20s;
    return o;
  }

  std::string binary_;
};

TEST(ServerListParse, CommaSeparatedAddresses) {
  auto three = parse_endpoints("a:7400,b:7401,[::1]:7402");
  ASSERT_TRUE(three.ok()) << three.error().message;
  ASSERT_EQ(three->size(), 3u);
  EXPECT_EQ((*three)[0], (Endpoint{"a", 7400}));
  EXPECT_EQ((*three)[1], (Endpoint{"b", 7401}));
  EXPECT_EQ((*three)[2], (Endpoint{"::1", 7402}));
  auto one = parse_endpoints("h:1");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  // One address reads as parse_endpoint reads it, errors included.
  auto empty = parse_endpoints("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().message, parse_endpoint("").error().message);
  for (std::string bad : {"a:1,", ",a:1", "a:1,,b:2", "a:1,b:0"}) {
    auto r = parse_endpoints(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("entry"), std::string::npos) << r.error().message;
  }
}

TEST_F(ServerList, ConnectSkipsAServerThatDoesNotAnswer) {
  DaemonProcess d;
  ASSERT_EQ(d.start(binary_), "");
  Options o;
  o.connect_timeout = 2s;
  auto c = Client::connect({local(free_port()), local(d.port())}, "", o);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ((*c)->server(), local(d.port()));
  EXPECT_TRUE((*c)->ping(7).ok());
  // Without an answering server the error names every one.
  const uint16_t a = free_port(), b = free_port();
  auto none = Client::connect({local(a), local(b)}, "", o);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(none.error().message.find(fmt::format("127.0.0.1:{}", a)), std::string::npos);
  EXPECT_NE(none.error().message.find(fmt::format("127.0.0.1:{}", b)), std::string::npos);
}

TEST_F(ServerList, CallsMoveToTheNextServerWhenTheConnectionIsLost) {
  DaemonProcess d1, d2;
  ASSERT_EQ(d1.start(binary_), "");
  ASSERT_EQ(d2.start(binary_), "");
  auto c = Client::connect({local(d1.port()), local(d2.port())}, "", reconnecting());
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ((*c)->server(), local(d1.port()));
  ASSERT_TRUE((*c)->send("q", std::vector<Message>{text_message("before")}).ok());
  d1.stop();  // goaway (unavailable), then the connection closes
  // A receive is made again on the next server.
  auto r = (*c)->subscribe_try_receive("q", 100);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*c)->server(), local(d2.port()));
  EXPECT_EQ((*c)->reconnects(), 1u);
  ASSERT_TRUE((*c)->send("q", std::vector<Message>{text_message("after")}).ok());
  auto got = (*c)->subscribe_try_receive("q", 5'000);
  ASSERT_TRUE(got.ok() && *got) << (got.ok() ? "none" : got.error().message);
  EXPECT_EQ(text_of((**got)[0]), "after");
}

TEST_F(ServerList, WithoutReconnectionALostConnectionStaysLost) {
  DaemonProcess d1, d2;
  ASSERT_EQ(d1.start(binary_), "");
  ASSERT_EQ(d2.start(binary_), "");
  Options o;
  o.request_timeout = 20s;
  auto c = Client::connect({local(d1.port()), local(d2.port())}, "", o);
  ASSERT_TRUE(c.ok());
  d1.stop();
  auto r = (*c)->ping(1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ((*c)->reconnects(), 0u);
}

TEST_F(ServerList, AStreamingConsumerResubscribesOnTheNextServer) {
  DaemonProcess d1, d2;
  ASSERT_EQ(d1.start(binary_), "");
  ASSERT_EQ(d2.start(binary_), "");
  auto c = Client::connect({local(d1.port()), local(d2.port())}, "reader", reconnecting());
  ASSERT_TRUE(c.ok());
  GuestConfiguration config;
  config.channels = {"events"};
  config.extensions = Metadata{{"settlement", "auto"}};
  ASSERT_TRUE((*c)->update_guest_configuration(config).ok());
  ASSERT_TRUE((*c)->start_stream(100).ok());
  d1.stop();
  auto producer = Client::connect(local(d2.port()), "");
  ASSERT_TRUE(producer.ok());
  // The stream's end on d1 is seen, the client moves to d2 with the same configuration and
  // stream, and what is sent there arrives.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  bool sent = false;
  std::optional<Delivery> got;
  while (!got && std::chrono::steady_clock::now() < deadline) {
    auto d = (*c)->next_delivery(200ms);
    ASSERT_TRUE(d.ok()) << d.error().message;
    if (*d) got = std::move(**d);
    if (!sent && (*c)->server() == local(d2.port())) {
      ASSERT_TRUE((*producer)->send("events", std::vector<Message>{text_message("e1")}).ok());
      sent = true;
    }
  }
  ASSERT_TRUE(got) << "no delivery after the reconnection";
  EXPECT_EQ(got->channel, "events");
  EXPECT_EQ(text_of(got->messages.at(0)), "e1");
}

TEST_F(ServerList, UnsettledMessagesComeBackAfterTheNodeIsKilled) {
  // A fixed port, so that the restarted node is at the address the client knows.
  const uint16_t port = free_port();
  const std::string listen = fmt::format("127.0.0.1:{}", port);
  DaemonProcess d;
  ASSERT_EQ(d.start(binary_, "", {"--listen", listen}), "");
  ASSERT_EQ(d.port(), port);
  auto c = Client::connect({local(port)}, "worker", reconnecting());
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE((*c)->send("jobs", std::vector<Message>{text_message("job-1")}).ok());
  auto first = (*c)->subscribe_try_receive("jobs", 5'000);
  ASSERT_TRUE(first.ok() && *first);
  const Message held = (**first)[0];
  ASSERT_NE(find_metadata(held, "witmq-receipt"), nullptr);
  // The acquisition is stored behind the delivery, not before it; a send acknowledged after it
  // shares or follows its group commit, so the lease is on disk when the node dies.
  ASSERT_TRUE((*c)->send("jobs-barrier", std::vector<Message>{text_message("x")}).ok());
  // The node dies with the message leased to this consumer; it comes back on its data.
  const std::string dir = d.data_dir();
  d.kill_now();
  DaemonProcess again;
  ASSERT_EQ(again.start(binary_, dir, {"--listen", listen}), "");
  // The consumer reconnects and sees the message again (its lease ended with the node), on a
  // later attempt; the old receipt settles nothing.
  auto second = (*c)->subscribe_try_receive("jobs", 10'000);
  ASSERT_TRUE(second.ok()) << second.error().message;
  ASSERT_TRUE(*second) << "the unsettled message did not come back";
  EXPECT_EQ(text_of((**second)[0]), "job-1");
  EXPECT_EQ(*find_metadata((**second)[0], "witmq-attempt"), "2");
  EXPECT_GE((*c)->reconnects(), 1u);
  auto stale = (*c)->complete_message(held);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kStaleReceipt) << stale.error().message;
  EXPECT_TRUE((*c)->complete_message((**second)[0]).ok());
}

}  // namespace
}  // namespace witmq::client
