// What the broker stores, and when: writes reach the store in the order the state changed,
// settlements are stored before they are answered, and a write that fails (a full disk) loses
// neither a message nor, once writes succeed again, a cursor or a trim.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "broker_fixture.h"
#include "storage/store.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

// A broker whose store can hold one thread's commit back and fail writes on demand.
class DurabilityTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    o.default_channel.backoff_initial = 0ms;
    o.default_channel.max_deliveries = 0;
    o.store.test_hooks.before_commit = [this] { before_commit(); };
    o.store.test_hooks.before_write = [this]() -> Status {
      std::unique_lock lock(mu_);
      ++writes_;
      cv_.notify_all();
      if (failing_) {
        ++failed_writes_;
        cv_.notify_all();
        return Error(ErrorCode::kIoError, "injected write failure");
      }
      // A write held by hold_writes() waits here until release_writes().
      cv_.wait(lock, [this] { return !writes_held_; });
      return ok_status();
    };
  }

  // The next commit() made by the calling thread waits, before its request is queued, until
  // release_commit() or `bound` passes (a fixed broker holds a channel lock there, and whoever
  // would release it waits on that lock).
  void hold_my_next_commit(std::chrono::milliseconds bound) {
    std::lock_guard lock(mu_);
    held_thread_ = std::this_thread::get_id();
    hold_bound_ = bound;
  }
  // Waits until a held commit has started to wait.
  bool wait_until_held() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [this] { return holding_; });
  }
  void release_commit() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

  void fail_writes(bool on) {
    std::lock_guard lock(mu_);
    failing_ = on;
  }
  int failed_writes() {
    std::lock_guard lock(mu_);
    return failed_writes_;
  }
  bool wait_for_failed_writes(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return failed_writes_ >= n; });
  }
  int writes() {
    std::lock_guard lock(mu_);
    return writes_;
  }
  // Waits until the store has begun `n` writes since the broker opened.
  bool wait_for_writes(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return writes_ >= n; });
  }
  void hold_writes(bool on) {
    std::lock_guard lock(mu_);
    writes_held_ = on;
    cv_.notify_all();
  }

  // Ends the broker as a crash would: nothing it writes while stopping reaches the store.
  void crash_and_reopen() {
    fail_writes(true);
    broker_.reset();
    fail_writes(false);
    open();
  }

 private:
  void before_commit() {
    std::unique_lock lock(mu_);
    if (held_thread_ != std::this_thread::get_id()) return;
    held_thread_ = {};
    holding_ = true;
    cv_.notify_all();
    cv_.wait_for(lock, hold_bound_, [this] { return released_; });
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread::id held_thread_;
  std::chrono::milliseconds hold_bound_{0};
  bool holding_ = false;
  bool released_ = false;
  bool failing_ = false;
  bool writes_held_ = false;
  int writes_ = 0;
  int failed_writes_ = 0;
};

// Issue 17 item 2. A message fails (abandon, or its consumer disconnects) and another consumer
// acquires it at once, as attempt 2. The first change's write set is held just before it is
// queued; the second consumer's receive then runs. Storage must end with attempt 2 acquired, not
// with the older "ready, attempt 1" written over it: after a restart the message comes back as
// attempt 3.
enum class FailBy { kAbandon, kDisconnect };

class WriteOrderTest : public DurabilityTest, public ::testing::WithParamInterface<FailBy> {};

TEST_P(WriteOrderTest, AFailedAttemptIsStoredBeforeTheNextAcquisition) {
  auto first = connect();
  auto second = connect();
  send_ok(first, "order", {msg("m")});
  auto got = receive_ok(first, "order");
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(md(got[0], "witmq-attempt"), "1");

  std::thread failing([&] {
    hold_my_next_commit(1s);
    if (GetParam() == FailBy::kAbandon) {
      EXPECT_TRUE(broker_->abandon_message(got[0]).ok());
    } else {
      broker_->disconnect(first);
    }
  });
  ASSERT_TRUE(wait_until_held());
  // With the fix the failing thread holds the channel while its write is queued, so this receive
  // waits for it; without, it takes the message and stores attempt 2 first.
  auto again = receive_ok(second, "order");
  release_commit();
  failing.join();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(md(again[0], "witmq-attempt"), "2");

  reopen();
  auto after = receive_ok(connect(), "order");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(md(after[0], "witmq-attempt"), "3")
      << "the older write set (attempt 1, ready) landed after the newer one (attempt 2, acquired)";
}

INSTANTIATE_TEST_SUITE_P(FailBy, WriteOrderTest,
                         ::testing::Values(FailBy::kAbandon, FailBy::kDisconnect),
                         [](const auto& info) {
                           return info.param == FailBy::kAbandon ? "Abandon" : "Disconnect";
                         });

// Issue 11 section 1. A complete answered ok is stored: a crash right after it does not bring the
// message back, though the floor moved less than the cursor's write stride.
TEST_F(DurabilityTest, ACompleteAnsweredOkSurvivesACrash) {
  auto c = connect();
  send_ok(c, "settled", {msg("a"), msg("b"), msg("c")});
  auto got = receive_ok(c, "settled", 3);
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(broker_->complete_message(got[0]).ok());  // moves the floor
  ASSERT_TRUE(broker_->complete_message(got[2]).ok());  // out of order: its own record
  ASSERT_TRUE(broker_->abandon_message(got[1]).ok());   // requeued, attempt counted

  crash_and_reopen();
  auto after = receive_ok(connect(), "settled", 10);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(text(after[0]), "b");
  EXPECT_EQ(md(after[0], "witmq-attempt"), "2");
}

// The reply waits for the write: while the store holds its writes, no complete is answered.
TEST_F(DurabilityTest, ASettleIsAnsweredOnlyOnceItsWriteIsStored) {
  auto c = connect();
  send_ok(c, "wait", {msg("a")});
  auto got = receive_ok(c, "wait");
  ASSERT_EQ(got.size(), 1u);
  hold_writes(true);
  std::promise<Status> answered;
  auto answer = answered.get_future();
  broker_->complete_message(got[0], [&](Status s) { answered.set_value(std::move(s)); });
  // The settlement took effect at once: a second complete is stale.
  EXPECT_EQ(broker_->complete_message(got[0]).error().code, ErrorCode::kStaleReceipt);
  EXPECT_EQ(answer.wait_for(200ms), std::future_status::timeout);
  hold_writes(false);
  ASSERT_EQ(answer.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(answer.get().ok());
}

// Issue 11 section 1: a pipeline of completes shares one commit. While the store writes the first
// complete, the next 49 (out of order, so delivery records, then the floor jumps) gather into one
// request, not 49; all are answered ok and a crash brings none of them back.
TEST_F(DurabilityTest, PipelinedCompletesShareOneCommitRequest) {
  auto c = connect();
  std::vector<Message> batch;
  for (int i = 0; i < 50; ++i) batch.push_back(msg("m" + std::to_string(i)));
  send_ok(c, "piped", batch);
  auto got = receive_ok(c, "piped", 50);
  ASSERT_EQ(got.size(), 50u);
  // Commits report in order: once this send is stored, what the receive queued is too.
  send_ok(c, "piped-barrier", {msg("x")});
  const auto requests_before = broker_->store_stats().commits;
  const int writes_before = writes();
  hold_writes(true);
  std::mutex mu;
  std::condition_variable cv;
  int answered = 0, failed = 0;
  auto done = [&](Status s) {
    std::lock_guard lock(mu);
    ++answered;
    if (!s.ok()) ++failed;
    cv.notify_all();
  };
  broker_->complete_message(got[0], done);
  // The commit thread has taken the first complete's request and waits to write it.
  ASSERT_TRUE(wait_for_writes(writes_before + 1));
  for (size_t i = 2; i < got.size(); ++i) broker_->complete_message(got[i], done);
  broker_->complete_message(got[1], done);
  hold_writes(false);
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return answered == 50; }));
    EXPECT_EQ(failed, 0);
  }
  // The first complete's request and one for the other 49 (a trim would add one; 50 allow none).
  EXPECT_EQ(broker_->store_stats().commits - requests_before, 2u);

  crash_and_reopen();
  EXPECT_TRUE(receive_ok(connect(), "piped", 100).empty());
}

// A settle whose write fails is answered with the store's error, naming the message.
TEST_F(DurabilityTest, ASettleWhoseWriteFailsIsAnsweredWithTheError) {
  auto c = connect();
  send_ok(c, "fails", {msg("a")});
  auto got = receive_ok(c, "fails");
  ASSERT_EQ(got.size(), 1u);
  fail_writes(true);
  auto st = broker_->complete_message(got[0]);
  fail_writes(false);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kIoError);
  EXPECT_NE(st.error().message.find("fails/0"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("not stored"), std::string::npos) << st.error().message;
}

// Issue 17 item 3 (write_cursor): a cursor whose write failed is written again once writes
// succeed, not taken as stored.
TEST_F(DurabilityTest, ACursorWhoseWriteFailedIsWrittenAgain) {
  auto c = connect();
  send_ok(c, "cursor", {msg("a"), msg("b")});
  auto got = receive_ok(c, "cursor", 2);
  ASSERT_EQ(got.size(), 2u);
  fail_writes(true);
  EXPECT_FALSE(broker_->complete_message(got[0]).ok());
  EXPECT_FALSE(broker_->complete_message(got[1]).ok());
  fail_writes(false);
  // A clean stop writes every cursor not known to be stored.
  reopen();
  EXPECT_TRUE(receive_ok(connect(), "cursor", 10).empty());
}

// Issue 17 item 3: the dead-letter move of a message that reached max-deliveries fails to be
// stored. The message must stay in its channel (delivered again, and moved once writes work),
// not be settled there while missing from the dead-letter channel.
TEST_F(DurabilityTest, AFailedDeadLetterMoveKeepsTheMessage) {
  ChannelSettings s;
  s.max_deliveries = 1;
  s.backoff_initial = 0ms;
  ASSERT_TRUE(broker_->declare_channel("poison", s).ok());
  auto c = connect();
  send_ok(c, "poison", {msg("p")});
  auto got = receive_ok(c, "poison");
  ASSERT_EQ(got.size(), 1u);
  fail_writes(true);
  auto st = broker_->abandon_message(got[0]);
  fail_writes(false);
  ASSERT_FALSE(st.ok()) << "the move was not stored, the abandon must not answer ok";
  EXPECT_NE(st.error().message.find("stays in poison"), std::string::npos) << st.error().message;
  EXPECT_TRUE(receive_ok(c, "poison.dlq").empty());

  // Still in its channel, available again after a moment: abandoned again, it moves.
  auto back = receive_ok(c, "poison", 1, 10s);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(text(back[0]), "p");
  ASSERT_TRUE(broker_->abandon_message(back[0]).ok());
  auto moved = receive_ok(c, "poison.dlq");
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(text(moved[0]), "p");
  ASSERT_TRUE(broker_->complete_message(moved[0]).ok());

  crash_and_reopen();
  EXPECT_TRUE(receive_ok(connect(), "poison").empty());
  EXPECT_TRUE(receive_ok(connect(), "poison.dlq").empty());
}

// Issue 17 item 4: a trim whose range delete failed is deleted later, by itself, once writes
// succeed again; no stored message is left below the channel's first seq.
TEST_F(DurabilityTest, AFailedTrimIsDeletedOnceWritesSucceed) {
  auto c = connect();
  std::vector<Message> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(msg("m" + std::to_string(i)));
  send_ok(c, "trim", batch);
  auto got = receive_ok(c, "trim", 10);
  ASSERT_EQ(got.size(), 10u);
  fail_writes(true);
  for (auto& m : got) EXPECT_FALSE(broker_->complete_message(m).ok());
  // Housekeeping trims a second later (it is the only writer left): wait for its write to fail.
  const int failed = failed_writes();
  for (int i = 0; i < 100 && stats("trim").first_seq != 10u; ++i) {
    std::this_thread::sleep_for(50ms);  // until housekeeping has run, bounded
  }
  ASSERT_EQ(stats("trim").first_seq, 10u);
  ASSERT_TRUE(wait_for_failed_writes(failed + 1));
  fail_writes(false);
  // A later append stores the head with first = 10: from then on nothing reads, nor would ever
  // delete, what a lost range delete left below it.
  send_ok(c, "trim", {msg("later")});

  // Checkpoints show what is stored while the broker runs.
  auto stored_below_first = [&](int attempt) -> Result<size_t> {
    const std::string dir = dir_ + "-checkpoint-" + std::to_string(attempt);
    WITMQ_RETURN_IF_ERROR(broker_->checkpoint(dir));
    storage::StoreOptions so;
    so.path = dir;
    auto store = storage::Store::open(so);
    if (!store) return std::move(store).error();
    auto state = (*store)->recover();
    if (!state) return std::move(state).error();
    size_t below = 0;
    for (const auto& ch : state->channels) {
      if (ch.def.name != "trim") continue;
      auto r = (*store)->read(ch.def.id, 0, ch.head.first, 1000);
      if (!r) return std::move(r).error();
      below = r->size();
    }
    store->reset();
    std::filesystem::remove_all(dir);
    return below;
  };
  size_t below = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto r = stored_below_first(attempt);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    below = *r;
    if (below == 0) break;
    std::this_thread::sleep_for(100ms);  // housekeeping runs a second after a failed write
  }
  EXPECT_EQ(below, 0u) << "the range of the failed trim is still stored below the head's first";
}

}  // namespace
}  // namespace witmq::broker::testing
