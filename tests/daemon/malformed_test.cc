// The malformed-input corpus of the codec tests (tests/net/corpus.h), replayed over TCP against
// the real witmqd: each case gets the action docs/PROTOCOL.md section 10 prescribes, and a
// bystander connection keeps being served throughout.
#include <gtest/gtest.h>

#include <thread>

#include "daemon_process.h"
#include "net/corpus.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using net::testing::MalformedCase;
using net::testing::ServerExpect;

class MalformedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon_ = new Daemon(); }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    delete daemon_;
  }
  static Daemon* daemon_;
};
Daemon* MalformedTest::daemon_ = nullptr;

// Sends one case on a fresh connection and checks the server's action.
void replay(uint16_t port, const MalformedCase& c) {
  SCOPED_TRACE(c.name);
  Conn conn(port);
  if (!c.first_frame) conn.hello("corpus");
  ASSERT_TRUE(conn.write(c.bytes));
  switch (c.server) {
    case ServerExpect::kWait: {
      // Nothing comes back, and the connection is not closed: the server waits for the rest.
      EXPECT_EQ(conn.read(300ms).status, Conn::Status::kTimeout);
      break;
    }
    case ServerExpect::kErrorReply: {
      Conn::Read r = conn.read();
      ASSERT_EQ(r.status, Conn::Status::kFrame);
      ASSERT_FRAME(r.frame, kError);
      EXPECT_EQ(r.frame.request_id, c.request_id);
      EXPECT_EQ(error_of(r.frame)->code, c.code) << error_of(r.frame)->message;
      EXPECT_FALSE(error_of(r.frame)->message.empty());
      // The connection stays and serves the next request.
      Frame pong = conn.call(net::Ping{c.request_id});
      EXPECT_FRAME(pong, kPong);
      break;
    }
    case ServerExpect::kClose: {
      Conn::Read r = conn.read();
      ASSERT_EQ(r.status, Conn::Status::kFrame);
      ASSERT_FRAME(r.frame, kGoaway);
      EXPECT_EQ(r.frame.request_id, c.request_id);
      EXPECT_EQ(error_of(r.frame)->code, c.code) << error_of(r.frame)->message;
      EXPECT_EQ(conn.read(5s).status, Conn::Status::kClosed);
      break;
    }
  }
}

TEST_F(MalformedTest, EveryCaseGetsItsActionAndOtherClientsCarryOn) {
  Conn bystander(daemon_->port());
  bystander.hello("bystander");
  const auto corpus = net::testing::malformed_corpus();
  ASSERT_GT(corpus.size(), 50u);
  uint64_t n = 0;
  for (const auto& c : corpus) {
    replay(daemon_->port(), c);
    Frame pong = bystander.call(net::Ping{++n});
    ASSERT_FRAME(pong, kPong);
    EXPECT_EQ(std::get<net::Pong>(pong.body).payload, n);
  }
  EXPECT_FRAME(bystander.call(net::Send{"malformed.after", {text_message("still here")}}), kSendOk);
}

TEST_F(MalformedTest, AllCasesAtOnceOnParallelConnections) {
  const auto corpus = net::testing::malformed_corpus();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < corpus.size(); i += 4) replay(daemon_->port(), corpus[i]);
    });
  }
  for (auto& th : threads) th.join();
  Conn after(daemon_->port());
  after.hello();
  EXPECT_FRAME(after.call(net::Ping{1}), kPong);
}

TEST_F(MalformedTest, PipelinedFramesAfterAFailedFirstFrameAreDiscarded) {
  Conn conn(daemon_->port());
  net::Buffer burst;
  net::encode(burst, Frame{5, net::Ping{1}});
  net::encode(burst, Frame{6, net::Send{"malformed.discarded", {text_message("never")}}});
  ASSERT_TRUE(conn.write(burst));
  Conn::Read r = conn.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(r.frame.request_id, 5u);
  EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(conn.read(5s).status, Conn::Status::kClosed);

  Conn check(daemon_->port());
  check.hello();
  Frame f = check.call(net::SubscribeTryReceive{"malformed.discarded", 0});
  ASSERT_FRAME(f, kSubscribeTryReceiveOk);
  EXPECT_FALSE(std::get<net::SubscribeTryReceiveOk>(f.body).messages);
}

TEST_F(MalformedTest, AFrameArrivingByteByByteIsWaitedFor) {
  Conn conn(daemon_->port());
  conn.hello();
  net::Buffer frame;
  net::encode(frame, Frame{9, net::Ping{99}});
  for (uint8_t b : frame) {
    ASSERT_TRUE(conn.write({b}));
    std::this_thread::sleep_for(2ms);
  }
  Conn::Read r = conn.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kPong);
  EXPECT_EQ(std::get<net::Pong>(r.frame.body).payload, 99u);
}

}  // namespace
}  // namespace witmq::daemon::testing
