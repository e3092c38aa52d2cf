// Restart and crash recovery: channels, subscriptions, cursors, delivery states, attempt counts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

class RecoveryTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override { o.default_channel.backoff_initial = 0ms; }
};

TEST_F(RecoveryTest, RestartKeepsChannelsSubscriptionsAndPositions) {
  ChannelSettings topic;
  topic.kind = ChannelKind::kPublishSubscribe;
  topic.max_deliveries = 4;
  ASSERT_TRUE(broker_->declare_channel("t", topic).ok());
  auto sub = connect("reader");
  ASSERT_TRUE(broker_->update_guest_configuration(sub, {{"t"}, {}}).ok());
  auto p = connect();
  std::vector<Message> b;
  for (int i = 0; i < 6; ++i) b.push_back(msg("m" + std::to_string(i)));
  send_ok(p, "t", b);
  auto got = receive_ok(sub, "t", 2);
  ASSERT_EQ(got.size(), 2u);
  ASSERT_TRUE(broker_->complete_message(got[0]).ok());
  ASSERT_TRUE(broker_->complete_message(got[1]).ok());
  send_ok(p, "q", {msg("queued")});

  reopen();

  auto st = stats("t");
  EXPECT_EQ(st.settings.kind, ChannelKind::kPublishSubscribe);
  EXPECT_EQ(st.settings.max_deliveries, 4u);
  EXPECT_EQ(st.head_seq, 6u);
  auto again = connect("reader");
  auto rest = receive_ok(again, "t", 100);
  ASSERT_EQ(rest.size(), 4u);
  EXPECT_EQ(text(rest[0]), "m2");
  auto q = receive_ok(connect(), "q");
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(text(q[0]), "queued");
  // New sends continue the sequence instead of reusing numbers.
  send_ok(p = connect(), "t", {msg("m6")});
  auto next = receive_ok(again, "t");
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(md(next[0], "witmq-sequence"), "6");
}

TEST_F(RecoveryTest, HeldMessagesComeBackWithAttemptCounted) {
  auto c = connect();
  send_ok(c, "q", {msg("a"), msg("b"), msg("c")});
  auto got = receive_ok(c, "q", 2);
  ASSERT_EQ(got.size(), 2u);
  ASSERT_TRUE(broker_->complete_message(got[1]).ok());  // out of order: b done, a still held

  reopen();

  auto c2 = connect();
  auto after = receive_ok(c2, "q", 10);
  ASSERT_EQ(after.size(), 2u);
  // "a" was held at the stop: redelivered first, as attempt 2. "b" is settled. "c" is new.
  EXPECT_EQ(text(after[0]), "a");
  EXPECT_EQ(md(after[0], "witmq-attempt"), "2");
  EXPECT_EQ(text(after[1]), "c");
  EXPECT_EQ(md(after[1], "witmq-attempt"), "1");
}

TEST_F(RecoveryTest, CleanStopWritesLaggingCursors) {
  auto c = connect();
  send_ok(c, "q", {msg("a"), msg("b")});
  auto got = receive_ok(c, "q", 2);
  ASSERT_EQ(got.size(), 2u);
  // The floor moves past "a" while "b" is still held: the cursor write is deferred.
  ASSERT_TRUE(broker_->complete_message(got[0]).ok());
  reopen();
  auto after = receive_ok(connect(), "q", 10);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(text(after[0]), "b");
}

TEST_F(RecoveryTest, RequeuedAttemptsSurviveRestartAndReachDeadLetter) {
  ChannelSettings s;
  s.max_deliveries = 3;
  s.backoff_initial = 0ms;
  ASSERT_TRUE(broker_->declare_channel("jobs", s).ok());
  auto c = connect();
  send_ok(c, "jobs", {msg("poison")});
  auto got = receive_ok(c, "jobs");
  ASSERT_TRUE(broker_->abandon_message(got[0]).ok());
  reopen();
  c = connect();
  got = receive_ok(c, "jobs");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(md(got[0], "witmq-attempt"), "2");
  reopen();  // held at the stop: attempt 2 counted, the third delivery is the last
  c = connect();
  got = receive_ok(c, "jobs");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(md(got[0], "witmq-attempt"), "3");
  ASSERT_TRUE(broker_->abandon_message(got[0]).ok());
  auto dead = receive_ok(c, "jobs.dlq", 0, 2000ms);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(md(dead[0], "witmq-dlq-attempts"), "3");
}

// ---- crash: a child process is killed with SIGKILL while holding messages -------------------

// Runs only inside the child (WITMQ_CRASH_CHILD_DIR set): sends 100 messages in sync mode,
// acquires 10, prints "ready" and waits to be killed.
TEST(RecoveryCrashChild, HoldAndWait) {
  const char* dir = std::getenv("WITMQ_CRASH_CHILD_DIR");
  if (!dir) GTEST_SKIP() << "runs only as the crash test's child process";
  boost::asio::io_context io;
  BrokerOptions o;
  o.data_dir = dir;
  o.default_channel.durability = storage::Durability::kSync;
  auto b = Broker::open(o, io.get_executor());
  ASSERT_TRUE(b.ok());
  auto c = (*b)->connect("");
  std::vector<Message> batch;
  for (int i = 0; i < 100; ++i) batch.push_back(msg("m" + std::to_string(i)));
  std::promise<Status> sent;
  (*b)->send(*c, "q", batch, [&](Status s) { sent.set_value(s); });
  ASSERT_TRUE(sent.get_future().get().ok());
  std::promise<Result<std::vector<Message>>> got;
  (*b)->receive(*c, {"q"}, ReceiveOptions{10, std::chrono::milliseconds(0)},
                [&](Result<std::vector<Message>> r) { got.set_value(std::move(r)); });
  auto r = got.get_future().get();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 10u);
  // Settle two of them. Completes are written without fsync, and a subscription's cursor at the
  // latest one housekeeping interval (1 s) after it moved: wait past that, so both are on disk.
  ASSERT_TRUE((*b)->complete_message((*r)[0]).ok());
  ASSERT_TRUE((*b)->complete_message((*r)[5]).ok());
  std::this_thread::sleep_for(1500ms);
  std::printf("ready\n");
  std::fflush(stdout);
  std::this_thread::sleep_for(60s);
}

TEST(RecoveryCrash, SigkillWhileHoldingMessages) {
  std::string dir = make_temp_dir("crash");
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(pipefd[1], STDOUT_FILENO);
    close(pipefd[0]);
    setenv("WITMQ_CRASH_CHILD_DIR", dir.c_str(), 1);
    execl("/proc/self/exe", "child", "--gtest_filter=RecoveryCrashChild.HoldAndWait", nullptr);
    _exit(127);
  }
  close(pipefd[1]);
  std::string out;
  char buf[256];
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (out.find("ready") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, n);
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  close(pipefd[0]);
  ASSERT_NE(out.find("ready"), std::string::npos) << "child output: " << out;

  boost::asio::io_context io;
  BrokerOptions o;
  o.data_dir = dir;
  auto b = Broker::open(o, io.get_executor());
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  auto c = (*b)->connect("");
  std::promise<Result<std::vector<Message>>> got;
  (*b)->receive(*c, {"q"}, ReceiveOptions{1000, std::chrono::milliseconds(0)},
                [&](Result<std::vector<Message>> r) { got.set_value(std::move(r)); });
  auto r = got.get_future().get();
  ASSERT_TRUE(r.ok());
  // 100 sent, 2 completed before the kill: 98 remain, each exactly once.
  ASSERT_EQ(r->size(), 98u);
  std::set<std::string> seen;
  int redelivered = 0;
  for (auto& m : *r) {
    EXPECT_TRUE(seen.insert(text(m)).second);
    if (md(m, "witmq-attempt") == "2") ++redelivered;
  }
  EXPECT_EQ(seen.count("m0"), 0u);
  EXPECT_EQ(seen.count("m5"), 0u);
  // The 8 held at the crash come back first with their attempt counted.
  EXPECT_EQ(redelivered, 8);
  EXPECT_EQ(md((*r)[0], "witmq-attempt"), "2");
  b->reset();
  std::filesystem::remove_all(dir);
}

// The configuration declares a topic that a client deleted and a send then re-created as a queue:
// the restart keeps the stored queue and its messages instead of refusing to start.
class DeclaredKindConflictTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    if (declare_topic_) {
      ChannelSettings topic;
      topic.kind = ChannelKind::kPublishSubscribe;
      o.channels.emplace_back("events", topic);
    }
  }
  bool declare_topic_ = false;
};

TEST_F(DeclaredKindConflictTest, RestartKeepsTheStoredKindAndItsMessages) {
  auto c = connect();
  ASSERT_TRUE(send(c, "events", {msg("one"), msg("two")}).ok());
  ASSERT_EQ(broker_->channel_stats("events")->settings.kind, ChannelKind::kPointToPoint);

  declare_topic_ = true;
  reopen();
  ASSERT_TRUE(broker_);
  auto stats = broker_->channel_stats("events");
  ASSERT_TRUE(stats.ok()) << stats.error().to_string();
  EXPECT_EQ(stats->settings.kind, ChannelKind::kPointToPoint);
  EXPECT_EQ(stats->head_seq - stats->first_seq, 2u);
}

}  // namespace
}  // namespace witmq::broker::testing
