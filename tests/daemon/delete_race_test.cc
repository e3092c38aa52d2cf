// Issue 20 item 1, against the real witmqd: a subscribe-try-receive on a channel that another
// connection deletes and sends to (creating it again) in a loop is always answered, within its
// timeout plus a margin; and after a SIGKILL the daemon starts again without finding records of
// the deleted channels (issue 20 item 2).
#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using namespace std::chrono_literals;

class DeleteRaceTest : public ::testing::Test {};

TEST_F(DeleteRaceTest, TryReceiveOnAChannelDeletedAndCreatedAgainIsAlwaysAnswered) {
  constexpr int kIterations = 400;
  Daemon d;
  Conn consumer(d.port());
  consumer.hello("h-reader");
  ASSERT_FRAME(consumer.call(net::UpdateGuestConfiguration{{{"h.x"}, {}}}),
               kUpdateGuestConfigurationOk);

  std::atomic<bool> stop{false};
  std::atomic<int> churns{0};
  std::thread churn([&] {
    Conn admin(d.port());
    admin.hello();
    // Bounded: the consumer's loop ends it, or its own cap does.
    for (int i = 0; !stop.load() && i < 20'000; ++i) {
      admin.call(net::AdminRequest{net::AdminOp::kChannelDelete, R"({"name":"h.x"})"});
      admin.call(net::Send{"h.x", {text_message("x" + std::to_string(i))}});
      ++churns;
    }
  });

  int with_messages = 0, empty = 0, deleted = 0;
  auto receive_loop = [&] {
    for (int i = 0; i < kIterations; ++i) {
      const auto started = std::chrono::steady_clock::now();
      // A 20 ms timeout; 5 s is the margin for a loaded machine, not a figure under test.
      Frame f = consumer.call(net::SubscribeTryReceive{"h.x", 20}, 5s);
      ASSERT_LT(std::chrono::steady_clock::now() - started, 5s) << "iteration " << i;
      if (auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body)) {
        if (ok->messages) {
          ++with_messages;
          for (const auto& m : *ok->messages) {
            // The channel may be gone again: a stale receipt is a fine answer too.
            consumer.call(net::CompleteMessage{receipt_of(m)});
          }
        } else {
          ++empty;
        }
        continue;
      }
      auto error = error_of(f);
      ASSERT_TRUE(error) << describe(f);
      ASSERT_EQ(error->code, ErrorCode::kNotFound) << error->to_string();
      EXPECT_EQ(error->message, "channel 'h.x' was deleted");
      ++deleted;
    }
  };
  receive_loop();  // its assertions return from it, not from the test: the thread is joined
  stop = true;
  churn.join();
  if (HasFatalFailure()) return;
  EXPECT_EQ(with_messages + empty + deleted, kIterations);
  EXPECT_GT(churns.load(), 0);

  d.stop(SIGKILL, 10s);
  d.start();
  ASSERT_NE(d.port(), 0) << d.log();
  const std::string metrics = http_get(d.http_port(), "/metrics").body;
  for (const char* record : {"cursor", "delivery", "head", "messages", "subscription"}) {
    EXPECT_NE(metrics.find(std::string("witmq_store_recovery_orphans_removed{record=\"") + record +
                           "\"} 0\n"),
              std::string::npos)
        << record << "\n"
        << d.log();
  }
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// A stream waiting on a channel that is deleted ends with stream-end (PROTOCOL.md section 7), and
// a new stream on the channel created again delivers.
TEST_F(DeleteRaceTest, StreamWaitingOnADeletedChannelEnds) {
  Daemon d;
  Conn consumer(d.port());
  consumer.hello("s-reader");
  ASSERT_FRAME(consumer.call(net::UpdateGuestConfiguration{{{"s.x"}, {}}}),
               kUpdateGuestConfigurationOk);
  const uint32_t stream = consumer.send(net::StreamStart{10});
  ASSERT_FRAME(consumer.reply(stream), kStreamStartOk);
  Conn admin(d.port());
  admin.hello();
  ASSERT_FRAME(admin.call(net::AdminRequest{net::AdminOp::kChannelDelete, R"({"name":"s.x"})"}),
               kChannelDeleteOk);
  auto end = consumer.next_push(5s);
  ASSERT_TRUE(end) << "no stream-end after the channel was deleted";
  ASSERT_FRAME(*end, kStreamEnd);
  EXPECT_EQ(end->request_id, stream);
  EXPECT_EQ(std::get<net::StreamEnd>(end->body).error.code, ErrorCode::kNotFound);
  EXPECT_EQ(std::get<net::StreamEnd>(end->body).error.message, "channel 's.x' was deleted");

  const uint32_t again = consumer.send(net::StreamStart{10});
  ASSERT_FRAME(consumer.reply(again), kStreamStartOk);
  ASSERT_FRAME(admin.call(net::Send{"s.x", {text_message("back")}}), kSendOk);
  auto f = consumer.next_push(5s);
  ASSERT_TRUE(f) << "nothing delivered on the channel created again";
  ASSERT_FRAME(*f, kDeliver);
  EXPECT_EQ(text(std::get<net::Deliver>(f->body).messages.at(0)), "back");
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
