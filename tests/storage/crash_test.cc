// Crash safety: a child process appends as fast as it can and reports each acknowledged batch on
// stdout; the parent SIGKILLs it mid-stream, reopens the store and checks that every acknowledged
// message is there, byte for byte. The child is this test binary itself, re-executed through
// /proc/self/exe with a filter selecting CrashChild.AppendUntilKilled, which skips itself unless
// the environment names a store to write.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <sstream>

#include "storage/store.h"
#include "storage/store_fixture.h"

extern char** environ;

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::TempDir;

constexpr const char* kDirEnv = "WITMQ_STORAGE_CRASH_DIR";
constexpr const char* kModeEnv = "WITMQ_STORAGE_CRASH_MODE";
// Set (to anything): the child's appends are unlogged (WriteSet::set_unlogged), as the broker's
// appends to a `none` channel are.
constexpr const char* kUnloggedEnv = "WITMQ_STORAGE_CRASH_UNLOGGED";
constexpr ChannelId kChannel = 7;
constexpr Seq kBatch = 5;
constexpr int64_t kTime0 = 1'700'000'000'000;

// Message `seq` of the crash workload: sizes vary from 1 byte to 2 KiB, every third has metadata.
Message crash_message(Seq seq) { return make_message(seq, 1 + (seq * 37) % 2048, seq % 3 == 0); }

// The child. Never returns while the parent is alive: it is killed. The time limit only stops an
// orphan whose parent died first.
TEST(CrashChild, AppendUntilKilled) {
  const char* dir = getenv(kDirEnv);
  const char* mode = getenv(kModeEnv);
  if (dir == nullptr || mode == nullptr) GTEST_SKIP() << "runs only as a CrashSafety child";
  auto durability = parse_durability(mode);
  ASSERT_TRUE(durability.ok());
  StoreOptions options;
  options.path = dir;
  auto opened = Store::open(options);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto& store = **opened;
  WriteSet def;
  def.put_channel({kChannel, "crash", ""});
  ASSERT_TRUE(store.commit_and_wait(std::move(def), Durability::kSync).ok());

  // Up to kWindow commits in flight, so kGroup has something to merge.
  constexpr int kWindow = 16;
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (Seq first = 0; std::chrono::steady_clock::now() < deadline; first += kBatch) {
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight < kWindow; });
      ++in_flight;
    }
    WriteSet ws;
    for (Seq s = first; s < first + kBatch; ++s) {
      ws.put_message(kChannel, s, kTime0 + static_cast<int64_t>(s), crash_message(s));
    }
    ws.put_head(kChannel, {0, first + kBatch});
    if (getenv(kUnloggedEnv) != nullptr) ws.set_unlogged();
    store.commit(std::move(ws), *durability, [&, first](Status s) {
      if (s.ok()) {
        // One write(2) per line: unbuffered, so the parent sees exactly what was acknowledged.
        char line[64];
        int n =
            snprintf(line, sizeof line, "ack %llu %llu\n", static_cast<unsigned long long>(first),
                     static_cast<unsigned long long>(kBatch));
        if (write(STDOUT_FILENO, line, static_cast<size_t>(n)) != n) _exit(3);
      }
      std::lock_guard lock(mu);
      --in_flight;
      cv.notify_one();
    });
  }
  store.close();  // callbacks refer to the locals above, which go before `opened` does
}

struct ChildRun {
  std::vector<std::pair<Seq, Seq>> acked;  // (first, count) per acknowledged batch
  std::string other_output;                // everything that was not an ack, for diagnostics
  int wait_status = 0;
};

// Starts the child on `dir` in `mode`, kills it with SIGKILL once `kill_after` batches are
// acknowledged or `limit` has passed, and returns what it acknowledged before dying.
ChildRun run_child_and_kill(const std::string& dir, Durability mode, size_t kill_after,
                            std::chrono::milliseconds limit, bool unlogged = false) {
  ChildRun run;
  // Everything the child needs is built before fork(): between fork and exec only
  // async-signal-safe calls are allowed (RocksDB's background threads may hold malloc locks).
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (strncmp(*e, "WITMQ_STORAGE_CRASH_", 20) != 0) env_strings.emplace_back(*e);
  }
  env_strings.push_back(std::string(kDirEnv) + "=" + dir);
  env_strings.push_back(std::string(kModeEnv) + "=" + std::string(durability_name(mode)));
  if (unlogged) env_strings.push_back(std::string(kUnloggedEnv) + "=1");
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  std::string filter = "--gtest_filter=CrashChild.AppendUntilKilled";
  char* argv[] = {exe.data(), filter.data(), nullptr};

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << strerror(errno);
    return run;
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);  // dup2 clears O_CLOEXEC on the new descriptor
    execve(exe.c_str(), argv, envp.data());
    _exit(127);
  }
  close(fds[1]);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << strerror(errno);
    close(fds[0]);
    return run;
  }

  std::string pending;
  bool killed = false;
  auto deadline = std::chrono::steady_clock::now() + limit;
  auto consume = [&](const char* data, size_t n) {
    pending.append(data, n);
    size_t eol;
    while ((eol = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      unsigned long long first = 0, count = 0;
      if (sscanf(line.c_str(), "ack %llu %llu", &first, &count) == 2) {
        run.acked.emplace_back(first, count);
      } else {
        run.other_output += line + "\n";
      }
    }
  };
  char buf[4096];
  for (;;) {
    if (!killed &&
        (run.acked.size() >= kill_after || std::chrono::steady_clock::now() >= deadline)) {
      kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    // After the kill, drain until EOF: lines already in the pipe were acknowledged before death.
    int ready = poll(&p, 1, killed ? 5000 : 50);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      if (killed) break;  // EOF never came: reported below through wait_status
      continue;
    }
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child is gone
    consume(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  if (!killed) kill(pid, SIGKILL);
  waitpid(pid, &run.wait_status, 0);
  return run;
}

void crash_and_verify(Durability mode) {
  TempDir dir;
  std::string db = dir.sub("db");
  ChildRun run = run_child_and_kill(db, mode, 300, std::chrono::milliseconds(5000));
  ASSERT_TRUE(WIFSIGNALED(run.wait_status) && WTERMSIG(run.wait_status) == SIGKILL)
      << "the child ended on its own (status " << run.wait_status << "):\n"
      << run.other_output;
  ASSERT_FALSE(run.acked.empty()) << "the child acknowledged nothing:\n" << run.other_output;

  StoreOptions options;
  options.path = db;
  auto opened = Store::open(options);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto& store = **opened;

  Seq expected_first = 0;
  for (const auto& [first, count] : run.acked) {
    ASSERT_EQ(first, expected_first) << "acknowledgements in submission order";
    expected_first = first + count;
  }
  Seq acked_end = expected_first;
  // Everything acknowledged, byte for byte; and what is stored is a prefix of what was written
  // (writes are applied in order, so a crash can only cut the tail).
  auto all = store.read(kChannel, 0, UINT64_MAX, SIZE_MAX);
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  ASSERT_GE(all->size(), acked_end) << "acknowledged messages lost";
  for (Seq s = 0; s < all->size(); ++s) {
    const auto& m = (*all)[s];
    ASSERT_EQ(m.seq, s) << "a hole in the log";
    ASSERT_EQ(m.publish_time_ms, kTime0 + static_cast<int64_t>(s));
    ASSERT_EQ(m.message, crash_message(s)) << "message " << s << " differs";
  }
  auto rec = store.recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  ASSERT_EQ(rec->channels.size(), 1u);
  EXPECT_EQ(rec->channels[0].head.next, all->size());
  std::cerr << durability_name(mode) << ": " << run.acked.size() << " batches acknowledged, "
            << all->size() << " messages recovered (" << acked_end << " acknowledged)\n";
}

TEST(CrashSafety, SyncAcknowledgedWritesSurviveSigkill) { crash_and_verify(Durability::kSync); }
TEST(CrashSafety, GroupAcknowledgedWritesSurviveSigkill) { crash_and_verify(Durability::kGroup); }
// A logged kNone write survives a daemon crash (not a power loss): its WAL write reached the
// kernel. The broker writes its state so; a `none` channel's appends are unlogged (below).
TEST(CrashSafety, NoneAcknowledgedWritesSurviveSigkill) { crash_and_verify(Durability::kNone); }

// Unlogged appends (a `none` channel's, since they skip the WAL) promise nothing after a crash:
// what the child acknowledged was only in its memtable, so a SIGKILL loses it. What survives is
// still a prefix with a consistent head, and a logged write made before them (the channel's
// definition) is kept.
TEST(CrashSafety, UnloggedWritesAreLostBySigkillLoggedOnesKept) {
  TempDir dir;
  std::string db = dir.sub("db");
  ChildRun run = run_child_and_kill(db, Durability::kNone, 300, std::chrono::milliseconds(5000),
                                    /*unlogged=*/true);
  ASSERT_TRUE(WIFSIGNALED(run.wait_status) && WTERMSIG(run.wait_status) == SIGKILL)
      << run.other_output;
  ASSERT_FALSE(run.acked.empty()) << "the child acknowledged nothing:\n" << run.other_output;
  Seq acked_end = run.acked.back().first + run.acked.back().second;

  StoreOptions options;
  options.path = db;
  auto opened = Store::open(options);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto& store = **opened;
  auto all = store.read(kChannel, 0, UINT64_MAX, SIZE_MAX);
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  for (Seq s = 0; s < all->size(); ++s) ASSERT_EQ((*all)[s].seq, s) << "a hole in the log";
  // A few MB, far below a memtable: nothing was flushed, so nothing written without the WAL
  // can have survived.
  EXPECT_LT(all->size(), acked_end) << "unlogged writes survived a SIGKILL: they were logged";
  auto rec = store.recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  ASSERT_EQ(rec->channels.size(), 1u) << "the logged definition was lost";
  EXPECT_GE(rec->channels[0].head.next, all->size());
}

}  // namespace
}  // namespace witmq::storage
