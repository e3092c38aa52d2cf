// A large replay-dead-letters against the real daemon: it moves everything back, and other
// connections' sends and pings go on being answered promptly while it runs (the torture test saw
// sends unanswered for seconds during replays of a few hundred dead letters, docs/TORTURE.md).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

json admin(Conn& c, net::AdminOp op, const json& body) {
  Frame f = c.call(net::AdminRequest{op, body.dump()}, 120s);
  auto* reply = std::get_if<net::AdminReply>(&f.body);
  if (!reply) {
    ADD_FAILURE() << describe(f);
    return json::object();
  }
  return json::parse(reply->json);
}

// Generous for a machine shared with builds. Before replays went in steps, a send waited behind
// every move of the replay's batch of 1000, one fsync each: 5.1 s here, and the replay of 50000
// took 140 s (3.8 s now).
constexpr auto kAnswerBound = 2s;

TEST(ReplayTest, ALargeReplayLetsOtherConnectionsSendAndPing) {
  constexpr uint64_t kDeadLetters = 50'000;
  Daemon d;
  ASSERT_NE(d.port(), 0) << d.log();
  Conn c(d.port());
  c.hello();
  // Dead letters made cheaply: `none` while they are made, delivered once (max-deliveries 1) to a
  // connection that closes without settling them.
  json settings = {{"durability", "none"}, {"max-deliveries", 1}};
  admin(c, net::AdminOp::kChannelDeclare, {{"name", "src"}, {"settings", settings}});
  for (uint64_t sent = 0; sent < kDeadLetters;) {
    std::vector<Message> batch;
    for (int i = 0; i < 1000; ++i, ++sent)
      batch.push_back(text_message("m" + std::to_string(sent)));
    EXPECT_FRAME(c.call(net::Send{"src", std::move(batch)}), kSendOk);
  }
  {
    Conn holder(d.port());
    holder.hello();
    GuestConfiguration gc{{"src"}, Metadata{{"batch-size", "10000"}}};
    EXPECT_FRAME(holder.call(net::UpdateGuestConfiguration{gc}), kUpdateGuestConfigurationOk);
    for (uint64_t held = 0; held < kDeadLetters;) {
      Frame f = holder.call(net::SubscribeTryReceive{"src", 0}, 60s);
      auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
      ASSERT_TRUE(ok && ok->messages && !ok->messages->empty()) << describe(f);
      held += ok->messages->size();
    }
  }
  uint64_t depth = 0;
  for (int i = 0; i < 600 && depth < kDeadLetters; ++i) {
    std::this_thread::sleep_for(100ms);
    depth =
        admin(c, net::AdminOp::kChannelStats, {{"name", "src.dlq"}}).value("depth", uint64_t{0});
  }
  ASSERT_EQ(depth, kDeadLetters);
  // Every move back is now a sync write.
  settings["durability"] = "sync";
  admin(c, net::AdminOp::kChannelDeclare, {{"name", "src"}, {"settings", settings}});

  Conn other(d.port());
  other.hello();
  const uint32_t replay = c.send(
      net::AdminRequest{net::AdminOp::kReplayDeadLetters, json{{"channel", "src.dlq"}}.dump()});
  auto slowest = Clock::duration::zero();
  int answered = 0;
  std::optional<Frame> done;
  const auto give_up = Clock::now() + 300s;
  while (!done && Clock::now() < give_up) {
    const auto t0 = Clock::now();
    EXPECT_FRAME(other.call(net::Send{"probe", {text_message("p" + std::to_string(answered))}}),
                 kSendOk);
    const auto t1 = Clock::now();
    EXPECT_FRAME(other.call(net::Ping{static_cast<uint32_t>(answered)}), kPong);
    const auto t2 = Clock::now();
    slowest = std::max({slowest, t1 - t0, t2 - t1});
    ++answered;
    if (Conn::Read r = c.read(20ms); r.status == Conn::Status::kFrame) {
      ASSERT_EQ(r.frame.request_id, replay) << describe(r.frame);
      done = std::move(r.frame);
    }
  }
  ASSERT_TRUE(done) << "replay-dead-letters of " << kDeadLetters << " unanswered after 300 s";
  auto* reply = std::get_if<net::AdminReply>(&done->body);
  ASSERT_TRUE(reply) << describe(*done);
  EXPECT_EQ(json::parse(reply->json)["moved"], kDeadLetters);
  EXPECT_LT(slowest, kAnswerBound)
      << "slowest send or ping during the replay: "
      << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count() << " ms ("
      << answered << " rounds)";
  EXPECT_GT(answered, 1);
  EXPECT_EQ(admin(c, net::AdminOp::kChannelStats, {{"name", "src"}}).value("depth", uint64_t{0}),
            kDeadLetters);
  std::cout << "replay of " << kDeadLetters << " dead letters: " << answered
            << " send+ping rounds meanwhile, slowest answer "
            << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count() << " ms\n";
}

}  // namespace
}  // namespace witmq::daemon::testing
