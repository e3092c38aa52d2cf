// Append throughput of the storage layer alone: producers build WriteSets the way the broker will
// (a batch of messages plus the channel's head record) and keep a window of commits in flight so
// group commit has something to merge. Reports messages/s (items) and data bytes/s.
//
//   witmq_storage_bench --benchmark_min_time=0.5
//   witmq_storage_bench --benchmark_filter='Append/durability:2/bytes:128/batch:100'
//
// Arguments: durability (0 sync, 1 group, 2 none), message data bytes, messages per WriteSet; the
// suffix threads:N is the number of producer threads, each appending to its own channel.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "storage/store.h"

namespace witmq::storage {
namespace {

// Commits a producer may have outstanding: what a broker connection pipelining sends would have.
constexpr int kWindow = 16;

// One store per benchmark run, in a fresh temporary directory, shared by the run's producer
// threads. Google Benchmark's Setup/Teardown hooks take plain functions, hence the file-level
// pointer.
struct BenchStore {
  std::string dir;
  std::unique_ptr<Store> store;

  BenchStore() {
    const char* base = getenv("TMPDIR");
    dir = std::string(base && *base ? base : "/tmp") + "/witmq-storage-bench-XXXXXX";
    if (mkdtemp(dir.data()) == nullptr) {
      perror("mkdtemp");
      abort();
    }
    StoreOptions options;
    options.path = dir + "/db";
    auto opened = Store::open(options);
    if (!opened.ok()) {
      fprintf(stderr, "%s\n", opened.error().to_string().c_str());
      abort();
    }
    store = std::move(opened).value();
  }
  ~BenchStore() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
};
std::unique_ptr<BenchStore> bench_store;

void open_store(const benchmark::State&) { bench_store = std::make_unique<BenchStore>(); }
void close_store(const benchmark::State&) { bench_store.reset(); }

// Bounds the commits a producer has in flight; callbacks (on the commit thread) release slots.
class Window {
 public:
  void acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ < kWindow; });
    ++in_flight_;
  }
  void release() {
    std::lock_guard lock(mu_);
    --in_flight_;
    cv_.notify_one();
  }
  void drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
};

void BM_Append(benchmark::State& state) {
  const auto durability = static_cast<Durability>(state.range(0));
  const auto size = static_cast<size_t>(state.range(1));
  const auto batch = static_cast<size_t>(state.range(2));
  const auto ch = static_cast<ChannelId>(state.thread_index() + 1);
  Store& store = *bench_store->store;

  Message m;
  m.data.assign(size, 0x5a);
  // A send's messages, appended as the broker does (WriteSet::put_messages).
  const std::vector<Message> send(batch, m);
  Window window;
  std::atomic<uint64_t> failures{0};
  Seq next = 0;
  for (auto _ : state) {
    int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    WriteSet ws;
    ws.put_messages(ch, next, now, send);
    next += batch;
    ws.put_head(ch, {0, next});
    // As the broker appends to a `none` channel: without the write-ahead log.
    if (durability == Durability::kNone) ws.set_unlogged();
    window.acquire();
    store.commit(std::move(ws), durability, [&](Status s) {
      if (!s.ok()) failures++;
      window.release();
    });
  }
  // The last window's commits finish outside the timed loop: at most kWindow of the thousands of
  // commits a run makes.
  window.drain();
  if (failures.load() > 0) state.SkipWithError("a commit failed");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * batch * size));
}

void append_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"durability", "bytes", "batch"});
  for (int64_t durability : {2, 1, 0}) {
    for (int64_t bytes : {128, 1024}) {
      for (int64_t batch : {1, 10, 100}) b->Args({durability, bytes, batch});
    }
  }
}

BENCHMARK(BM_Append)
    ->Apply(append_args)
    ->Threads(1)
    ->Threads(4)
    ->UseRealTime()
    ->Setup(open_store)
    ->Teardown(close_store);

}  // namespace
}  // namespace witmq::storage

BENCHMARK_MAIN();
