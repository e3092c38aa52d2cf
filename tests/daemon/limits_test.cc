// The server's per-connection limits against the real witmqd: max-connections, max-in-flight
// (backpressure, never an error), idle-timeout-ms, and the output cap that cuts off a client
// that stopped reading, while every other client carries on.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

TEST(LimitsTest, ConnectionsBeyondMaxConnectionsGetGoaway) {
  Daemon d({"--set", "max-connections=2"});
  auto a = std::make_unique<Conn>(d.port());
  a->hello();
  Conn b(d.port());
  b.hello();
  Conn refused(d.port());
  Conn::Read r = refused.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(r.frame.request_id, 0u);
  EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kResourceExhausted);
  EXPECT_NE(error_of(r.frame)->message.find("max-connections"), std::string::npos);
  EXPECT_EQ(refused.read().status, Conn::Status::kClosed);
  // A slot frees up when a client leaves.
  a.reset();
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    Conn again(d.port());
    again.send(Frame{1, net::Connect{{1}, "", std::nullopt}});
    Conn::Read first = again.read();
    served =
        first.status == Conn::Status::kFrame && first.frame.type() == net::FrameType::kConnectOk;
    if (!served) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served);
  EXPECT_EQ(d.stop(), 0);
}

TEST(LimitsTest, MaxInFlightStopsReadingUntilAReplyGoesOut) {
  Daemon d({"--set", "max-in-flight=4"});
  Conn c(d.port());
  EXPECT_EQ(c.hello().limits.max_in_flight, 4u);
  for (int i = 0; i < 4; ++i) c.send(net::SubscribeReceive{"lim.inflight"});
  const uint32_t ping = c.send(net::Ping{5});
  // Four requests wait: the server reads nothing more, so the ping is not answered.
  EXPECT_EQ(c.read(300ms).status, Conn::Status::kTimeout);
  Conn producer(d.port());
  producer.hello();
  EXPECT_FRAME(producer.call(net::Send{"lim.inflight", {text_message("one")}}), kSendOk);
  // One receive is answered, which frees a slot: the ping is read and answered.
  Frame pong = c.reply(ping, 5s);
  ASSERT_FRAME(pong, kPong);
  ASSERT_EQ(c.others.size(), 1u);
  EXPECT_FRAME(c.others.front(), kSubscribeReceiveOk);
  EXPECT_EQ(d.stop(), 0);
}

TEST(LimitsTest, IdleConnectionsAreClosedAndPingKeepsThemOpen) {
  Daemon d({"--set", "idle-timeout-ms=300"});
  Conn idle(d.port());
  EXPECT_EQ(idle.hello().limits.idle_timeout_ms, 300u);
  Conn busy(d.port());
  busy.hello();
  const auto start = std::chrono::steady_clock::now();
  // A receive waiting does not count as activity.
  idle.send(net::SubscribeReceive{"lim.idle"});
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(100ms);
    EXPECT_FRAME(busy.call(net::Ping{static_cast<uint64_t>(i)}), kPong);
  }
  Conn::Read r = idle.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(r.frame.request_id, 0u);
  EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kUnavailable);
  EXPECT_EQ(idle.read().status, Conn::Status::kClosed);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  EXPECT_FRAME(busy.call(net::Ping{99}), kPong);
  EXPECT_EQ(d.stop(), 0);
}

TEST(LimitsTest, AClientThatStopsReadingIsCutOffAndOthersCarryOn) {
  Daemon d({"--set", "max-output-bytes=65536", "--set", "output-stall-timeout-ms=500"});
  // A small receive buffer: the kernel may otherwise autotune it to tens of MB (tcp_rmem) and
  // absorb the whole stream.
  Conn slow(d.port(), 64 * 1024);
  slow.hello();
  EXPECT_FRAME(slow.call(net::UpdateGuestConfiguration{GuestConfiguration{{"lim.slow"}, {}}}),
               kUpdateGuestConfigurationOk);
  EXPECT_FRAME(slow.call(net::StreamStart{10'000}), kStreamStartOk);
  // 20 MB pushed at a client that reads nothing: far more than the socket buffers hold.
  Conn producer(d.port());
  producer.hello();
  const std::string payload(2048, 'x');
  for (int batch = 0; batch < 10; ++batch) {
    std::vector<Message> messages(1000, text_message(payload));
    EXPECT_FRAME(producer.call(net::Send{"lim.slow", std::move(messages)}, 30s), kSendOk);
  }
  // The server gives up on the slow client once its queue has stayed over the cap for the stall
  // timeout; what is left in the socket can still be read, then the connection ends.
  EXPECT_TRUE(d.wait_for_log("the client does not read")) << d.log();
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  Conn::Status status = Conn::Status::kFrame;
  while (status == Conn::Status::kFrame && std::chrono::steady_clock::now() < deadline) {
    status = slow.read(5s).status;
  }
  EXPECT_EQ(status, Conn::Status::kClosed);
  // The producer was never held up by it, and is still served.
  EXPECT_FRAME(producer.call(net::Ping{1}), kPong);
  Frame stats = producer.call(net::AdminRequest{net::AdminOp::kServerStats, "{}"});
  ASSERT_FRAME(stats, kServerStatsOk);
  EXPECT_EQ(nlohmann::json::parse(std::get<net::AdminReply>(stats.body).json)["connections"], 1);
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace witmq::daemon::testing
