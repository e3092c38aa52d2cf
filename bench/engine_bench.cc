// The engine in process: the broker over a real RocksDB store, no network.
//
//   build/bench/witmq_engine_bench --benchmark_min_time=1
//
// BM_Send: send() throughput by durability, message size and batch size, one producer keeping a
// window of outstanding sends (what a pipelining TCP client or several producers do), so group
// commit can merge them. BM_AcquireComplete: receive() a batch and complete_message() each,
// all of a batch in flight at once.
#include <benchmark/benchmark.h>

#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>

#include "broker/broker.h"
#include "common/log.h"

namespace witmq::broker {
namespace {

struct Fixture {
  explicit Fixture(storage::Durability d) {
    std::random_device rd;
    dir = (std::filesystem::temp_directory_path() / ("witmq-bench-" + std::to_string(rd())))
              .string();
    BrokerOptions o;
    o.data_dir = dir;
    o.default_channel.durability = d;
    o.default_batch_size = 100;
    log::set_level(log::Level::kWarn);
    broker = std::move(*Broker::open(o, io.get_executor()));
    client = *broker->connect("bench");
  }
  ~Fixture() {
    broker.reset();
    std::filesystem::remove_all(dir);
  }
  boost::asio::io_context io;
  std::string dir;
  std::unique_ptr<Broker> broker;
  ClientPtr client;
};

std::vector<Message> make_batch(size_t n, size_t bytes) {
  std::vector<Message> b(n);
  for (auto& m : b) m.data.assign(bytes, 'x');
  return b;
}

// Sends while keeping up to `window` sends outstanding.
class Window {
 public:
  explicit Window(int limit) : limit_(limit) {}
  void acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return outstanding_ < limit_; });
    ++outstanding_;
  }
  void release(bool ok) {
    std::lock_guard lock(mu_);
    --outstanding_;
    if (!ok) ++failures_;
    cv_.notify_all();
  }
  int drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return outstanding_ == 0; });
    return failures_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int limit_, outstanding_ = 0, failures_ = 0;
};

void BM_Send(benchmark::State& state) {
  auto durability = static_cast<storage::Durability>(state.range(0));
  const size_t bytes = state.range(1), batch = state.range(2);
  const int window = static_cast<int>(state.range(3));
  Fixture f(durability);
  const auto proto = make_batch(batch, bytes);
  Window w(window);
  for (auto _ : state) {
    w.acquire();
    f.broker->send(f.client, "bench", proto, [&w](Status s) { w.release(s.ok()); });
  }
  if (w.drain() > 0) state.SkipWithError("a send failed");
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(state.iterations() * batch * bytes);
  state.SetLabel(std::string(storage::durability_name(durability)));
}

void BM_AcquireComplete(benchmark::State& state) {
  const size_t bytes = state.range(0), batch = state.range(1);
  Fixture f(storage::Durability::kNone);
  const auto proto = make_batch(1000, bytes);
  size_t available = 0;
  auto refill = [&] {
    Window w(64);
    for (int i = 0; i < 200; ++i) {
      w.acquire();
      f.broker->send(f.client, "bench", proto, [&w](Status s) { w.release(s.ok()); });
    }
    w.drain();
    available += 200 * 1000;
  };
  size_t done = 0;
  for (auto _ : state) {
    if (available < batch) {
      state.PauseTiming();
      refill();
      state.ResumeTiming();
    }
    std::vector<Message> got;
    f.broker->receive(f.client, {"bench"},
                      ReceiveOptions{static_cast<uint32_t>(batch), std::chrono::milliseconds(0)},
                      [&got](Result<std::vector<Message>> r) {
                        if (r.ok()) got = std::move(*r);
                      });
    // Completed as a client pipelines them: each reply waits for its write (none: the WAL).
    Window w(static_cast<int>(batch));
    for (auto& m : got) {
      w.acquire();
      f.broker->complete_message(m, [&w](Status s) { w.release(s.ok()); });
    }
    if (w.drain() != 0) state.SkipWithError("complete failed");
    available -= got.size();
    done += got.size();
  }
  state.SetItemsProcessed(done);
}

// durability (0 sync, 1 group, 2 none) x message bytes x batch x window
BENCHMARK(BM_Send)
    ->ArgNames({"durability", "bytes", "batch", "window"})
    ->Args({2, 128, 100, 16})
    ->Args({2, 1024, 100, 16})
    ->Args({2, 128, 10, 16})
    ->Args({2, 128, 1, 16})
    ->Args({1, 128, 100, 16})
    ->Args({1, 1024, 100, 16})
    ->Args({1, 128, 10, 16})
    ->Args({1, 128, 1, 64})
    ->Args({0, 128, 100, 16})
    ->Args({0, 128, 1, 16})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_AcquireComplete)
    ->ArgNames({"bytes", "batch"})
    ->Args({128, 100})
    ->Args({1024, 100})
    ->Args({128, 10})
    ->Args({128, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace witmq::broker

BENCHMARK_MAIN();
