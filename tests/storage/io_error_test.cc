// A write RocksDB cannot complete must reach every callback of its group as kIoError carrying
// RocksDB's reason. The failure is made real: RLIMIT_FSIZE stops the WAL from growing (the write
// fails with EFBIG), for this test only.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include "storage/store.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::StoreTest;

// Lowers the process's file size limit for its lifetime, ignoring SIGXFSZ so that exceeding the
// limit is an EFBIG error instead of a signal that kills the process.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lowered);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  sighandler_t old_handler_;
};

TEST_F(StoreTest, FailedWriteGivesEveryCallbackIoError) {
  WriteSet first;
  first.put_message(1, 0, 0, make_message(0, 100));
  ASSERT_TRUE(store_->commit_and_wait(std::move(first), Durability::kGroup).ok());

  std::vector<Status> results;
  {
    FileSizeLimit limit(1 << 20);
    testing::Countdown done(3);
    for (Seq s = 1; s <= 3; ++s) {
      WriteSet big;
      big.put_message(1, s, 0, make_message(s, 2 << 20));  // larger than the limit by itself
      store_->commit(std::move(big), Durability::kGroup, [&](Status st) {
        results.push_back(std::move(st));
        done.done();
      });
    }
    ASSERT_TRUE(done.wait());
  }
  ASSERT_EQ(results.size(), 3u);
  for (const auto& st : results) {
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kIoError) << st.error().to_string();
    EXPECT_NE(st.error().message.find("IO error"), std::string::npos) << st.error().message;
  }
  EXPECT_EQ(store_->stats().commits, 1u) << "failed requests are not counted as committed";
  auto got = store_->get(1, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
}

}  // namespace
}  // namespace witmq::storage
