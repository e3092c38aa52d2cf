// The daemon's lifecycle under load: a graceful stop (SIGTERM) loses no confirmed send and tells
// waiting clients why; a crash (SIGKILL) in sync durability loses no confirmed send either, and
// after a restart every message is delivered exactly once on a point-to-point channel.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

// Sends batches of unique payloads with up to kWindow requests in flight, and records the
// payloads whose send was confirmed, until the connection ends (or 30 s have passed).
class Producer {
 public:
  static constexpr size_t kWindow = 32;
  static constexpr int kBatch = 10;

  Producer(uint16_t port, std::string channel, int id)
      : port_(port), channel_(std::move(channel)), id_(id) {}

  void run() {
    Conn c(port_);
    c.hello();
    std::map<uint32_t, std::vector<std::string>> pending;
    int seq = 0;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      while (pending.size() < kWindow && std::chrono::steady_clock::now() < deadline) {
        std::vector<Message> batch;
        std::vector<std::string> payloads;
        for (int i = 0; i < kBatch; ++i) {
          payloads.push_back("p" + std::to_string(id_) + "-" + std::to_string(seq++));
          batch.push_back(text_message(payloads.back()));
        }
        const uint32_t rid = c.next_id();
        if (!c.send(Frame{rid, net::Send{channel_, std::move(batch)}})) break;
        pending.emplace(rid, std::move(payloads));
      }
      if (pending.empty()) break;
      Conn::Read r = c.read(20s);
      if (r.status != Conn::Status::kFrame) break;
      if (r.frame.type() == net::FrameType::kGoaway) {
        goaway = error_of(r.frame)->code;
        break;  // the last frame: everything still pending failed
      }
      auto it = pending.find(r.frame.request_id);
      if (it == pending.end()) {
        ADD_FAILURE() << "a reply to an unknown request " << r.frame.request_id;
        break;
      }
      if (r.frame.type() == net::FrameType::kSendOk) {
        confirmed.insert(confirmed.end(), it->second.begin(), it->second.end());
      } else {
        ++refused;
      }
      pending.erase(it);
    }
  }

  std::vector<std::string> confirmed;
  std::optional<ErrorCode> goaway;
  int refused = 0;

 private:
  uint16_t port_;
  std::string channel_;
  int id_;
};

// Runs `n` producers, calls `trigger` after `warmup`, and returns once every producer's
// connection has ended.
std::vector<std::unique_ptr<Producer>> produce_until(uint16_t port, const std::string& channel,
                                                     int n, std::chrono::milliseconds warmup,
                                                     const std::function<void()>& trigger) {
  std::vector<std::unique_ptr<Producer>> producers;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    producers.push_back(std::make_unique<Producer>(port, channel, i));
    threads.emplace_back([p = producers.back().get()] { p->run(); });
  }
  std::this_thread::sleep_for(warmup);
  trigger();
  for (auto& t : threads) t.join();
  return producers;
}

// Receives everything on `channel` (completing each), returning the payloads in order.
std::vector<std::string> drain_and_complete(uint16_t port, const std::string& channel) {
  Conn c(port);
  c.hello();
  EXPECT_FRAME(c.call(net::UpdateGuestConfiguration{
                   GuestConfiguration{{channel}, Metadata{{"batch-size", "1000"}}}}),
               kUpdateGuestConfigurationOk);
  std::vector<std::string> got;
  for (;;) {
    Frame f = c.call(net::SubscribeTryReceive{channel, 500});
    auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
    EXPECT_NE(ok, nullptr) << describe(f);
    if (!ok || !ok->messages) break;
    std::vector<uint32_t> ids;
    for (const auto& m : *ok->messages) {
      got.push_back(text(m));
      ids.push_back(c.send(net::CompleteMessage{receipt_of(m)}));
    }
    for (uint32_t id : ids) EXPECT_FRAME(c.reply(id), kCompleteMessageOk);
  }
  return got;
}

// Every confirmed payload is in `got`, and nothing in `got` appears twice.
void expect_exactly_once(const std::vector<std::unique_ptr<Producer>>& producers,
                         const std::vector<std::string>& got) {
  std::set<std::string> seen;
  for (const auto& p : got) EXPECT_TRUE(seen.insert(p).second) << p << " delivered twice";
  size_t confirmed = 0;
  for (const auto& p : producers) {
    confirmed += p->confirmed.size();
    for (const auto& payload : p->confirmed) {
      EXPECT_TRUE(seen.count(payload)) << "confirmed send " << payload << " is lost";
    }
  }
  EXPECT_GT(confirmed, 0u);
  ::testing::Test::RecordProperty("confirmed", static_cast<int>(confirmed));
  ::testing::Test::RecordProperty("stored", static_cast<int>(got.size()));
}

TEST(LifecycleTest, SigtermUnderLoadLosesNoConfirmedSend) {
  Daemon d;
  std::optional<int> exit_code;
  auto producers =
      produce_until(d.port(), "life.term", 4, 500ms, [&] { exit_code = d.stop(SIGTERM); });
  ASSERT_EQ(exit_code, 0) << d.log();
  for (const auto& p : producers) {
    // The daemon told every producer it was going: goaway (unavailable) was its last frame.
    EXPECT_EQ(p->goaway, ErrorCode::kUnavailable);
  }
  EXPECT_NE(d.log().find("witmqd stopped"), std::string::npos) << d.log();
  d.start();
  expect_exactly_once(producers, drain_and_complete(d.port(), "life.term"));
}

TEST(LifecycleTest, SigkillInSyncModeLosesNoConfirmedSendAndDeliversEachOnce) {
  Daemon d({"--set", R"(default-channel={"durability":"sync"})"});
  auto producers = produce_until(d.port(), "life.kill", 4, 700ms,
                                 [&] { EXPECT_EQ(d.stop(SIGKILL), 128 + SIGKILL); });
  d.start();
  auto got = drain_and_complete(d.port(), "life.kill");
  expect_exactly_once(producers, got);
  // Once all are completed nothing is left, also after another (graceful) restart.
  ASSERT_EQ(d.stop(SIGTERM), 0) << d.log();
  d.start();
  EXPECT_TRUE(drain_and_complete(d.port(), "life.kill").empty());
}

TEST(LifecycleTest, SigtermAnswersWaitingReceivesAndEndsStreams) {
  Daemon d;
  Conn waiting(d.port());
  waiting.hello();
  const uint32_t receive = waiting.send(net::SubscribeReceive{"life.wait"});
  Conn streaming(d.port());
  streaming.hello();
  EXPECT_FRAME(
      streaming.call(net::UpdateGuestConfiguration{GuestConfiguration{{"life.stream"}, {}}}),
      kUpdateGuestConfigurationOk);
  const uint32_t stream = streaming.send(net::StreamStart{10});
  EXPECT_FRAME(streaming.reply(stream), kStreamStartOk);
  EXPECT_EQ(waiting.read(100ms).status, Conn::Status::kTimeout);

  std::thread stopper([&] { EXPECT_EQ(d.stop(SIGTERM), 0); });
  Conn::Read r = waiting.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kError);
  EXPECT_EQ(r.frame.request_id, receive);
  EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kUnavailable);
  r = waiting.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(r.frame.request_id, 0u);
  EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kUnavailable);
  EXPECT_EQ(waiting.read().status, Conn::Status::kClosed);

  r = streaming.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kStreamEnd);
  EXPECT_EQ(r.frame.request_id, stream);
  r = streaming.read();
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(streaming.read().status, Conn::Status::kClosed);
  stopper.join();
}

TEST(LifecycleTest, SigintStopsGracefullyToo) {
  Daemon d;
  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Send{"life.int", {text_message("kept")}}), kSendOk);
  EXPECT_EQ(d.stop(SIGINT), 0) << d.log();
  d.start();
  EXPECT_EQ(drain_and_complete(d.port(), "life.int"), std::vector<std::string>{"kept"});
}

TEST(LifecycleTest, AnAddressInUseFailsWithExitCode1) {
  Daemon first;
  const std::string dir = make_temp_dir("second");
  RunResult r = run_witmqd(
      {"--listen", "127.0.0.1:" + std::to_string(first.port()), "--http-listen", "127.0.0.1:0",
       "--data-dir", dir});
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(r.exit_code);
  EXPECT_EQ(*r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot listen"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace witmq::daemon::testing
