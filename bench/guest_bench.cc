// A trivial guest draining a channel through the real GuestHost and the real broker on RocksDB
// (durability none, so the figures are the guest path's, not fsync's). No network.
//
//   build/bench/witmq_guest_bench
//
// BM_GuestDrain/batch:N/aot:A/echo:E: each iteration sends kMessages messages of kMessageBytes
// bytes to the guest's channel (not timed), then starts the guest with batch-size N in the tier A
// picks (0: "interp", 1: "aot"; the module is compiled, or found in the cache, before the timed
// part) and times it from start() until the host has completed every message: instantiation and
// configure, then receive, lowering, the handler call and settlement per batch. The guest is
// bench/guests/complete_all.wat (handler returns ok) with E = 0, and the echo example
// (examples/guests/echo.c: every batch sent on to orders.audit) with E = 1, when a wasm32-wasi
// clang built it. items_per_second is messages handled per second of wall time; `cpu` is the
// process's CPU time over that wall time (the guest's worker thread plus the broker's threads),
// so msgs_per_cpu_s is the rate per busy core.
//
// BM_GuestHandle/batch:N/aot:A: the guest alone, no broker: one instance of complete_all in tier
// A, handed the same batch of N messages again and again (lowering, the handler call, the result
// lifted). items_per_second is messages per second of the one thread that runs it: the guest
// path's rate per core.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "broker/broker.h"
#include "common/log.h"
#include "guest/guest_host.h"
#include "guest/guest_instance.h"

namespace witmq::guest {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMessages = 20'000;  // drained per iteration
constexpr size_t kMessageBytes = 128;
constexpr size_t kSendBatch = 1'000;
constexpr auto kStallTimeout = 10s;  // no progress for this long fails the benchmark

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// A broker on RocksDB in a temporary directory with its io_context on a thread of its own.
struct Fixture {
  Fixture() {
    std::random_device rd;
    dir = (std::filesystem::temp_directory_path() / ("witmq-guest-bench-" + std::to_string(rd())))
              .string();
    broker::BrokerOptions o;
    o.data_dir = dir;
    o.default_channel.durability = storage::Durability::kNone;
    log::set_level(log::Level::kWarn);
    auto b = broker::Broker::open(o, io.get_executor());
    if (b.ok()) broker = std::move(b).value();
    if (broker) producer = *broker->connect("bench-producer");
    io_thread = std::thread([this] { io.run(); });
  }
  ~Fixture() {
    producer.reset();
    broker.reset();
    work.reset();
    io.stop();
    io_thread.join();
    std::filesystem::remove_all(dir);
  }

  // Sends `n` messages to `channel` (kSendBatch per send, all sends outstanding at once) and
  // waits until the broker has stored them.
  bool fill(const std::string& channel, uint64_t n) {
    std::vector<Message> batch(kSendBatch);
    for (Message& m : batch) m.data.assign(kMessageBytes, 'x');
    std::vector<std::future<Status>> sent;
    for (uint64_t i = 0; i < n; i += kSendBatch) {
      auto p = std::make_shared<std::promise<Status>>();
      sent.push_back(p->get_future());
      broker->send(producer, channel, batch, [p](Status s) { p->set_value(std::move(s)); });
    }
    bool ok = true;
    for (auto& f : sent) ok = f.get().ok() && ok;
    return ok;
  }

  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
      io.get_executor()};
  std::thread io_thread;
  std::string dir;
  std::unique_ptr<broker::Broker> broker;
  broker::ClientPtr producer;
};

void BM_GuestDrain(benchmark::State& state) {
  Fixture f;
  if (!f.broker) {
    state.SkipWithError("the broker did not open");
    return;
  }
  const bool echo = state.range(2) != 0;
  GuestOptions options;
  options.name = "bench";
#ifdef WITMQ_BENCH_ECHO_GUEST
  options.module_path = echo ? WITMQ_BENCH_ECHO_GUEST : WITMQ_BENCH_GUEST;
#else
  if (echo) {
    state.SkipWithError("the echo example was not built (no wasm32-wasi clang)");
    return;
  }
  options.module_path = WITMQ_BENCH_GUEST;
#endif
  const std::string channel = echo ? "orders" : "bench.in";
  options.batch_size = static_cast<uint32_t>(state.range(0));
  options.engine = state.range(1) != 0 ? Engine::kAot : Engine::kInterp;
  options.compile_cache_dir = f.dir + "/guest-cache";
  auto log = [](LogLevel level, std::string_view line) {
    if (level >= LogLevel::kWarn) std::fprintf(stderr, "%.*s\n", int(line.size()), line.data());
  };

  uint64_t handled = 0;
  double wall = 0, cpu = 0;
  for (auto _ : state) {
    if (!f.fill(channel, kMessages)) {
      state.SkipWithError("pre-filling the guest's channel failed");
      break;
    }
    auto host = GuestHost::load(*f.broker, options, log);
    if (!host.ok()) {
      state.SkipWithError(host.error().message.c_str());
      break;
    }
    const auto t0 = Clock::now();
    const double cpu0 = process_cpu_seconds();
    if (!(*host)->start().ok()) {
      state.SkipWithError("the guest did not start");
      break;
    }
    uint64_t completed = 0;
    auto last_progress = t0;
    while (completed < kMessages) {
      std::this_thread::sleep_for(100us);
      const uint64_t now_completed = (*host)->stats().completed;
      if (now_completed != completed) last_progress = Clock::now();
      completed = now_completed;
      if (Clock::now() - last_progress > kStallTimeout) break;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    cpu += process_cpu_seconds() - cpu0;
    wall += seconds;
    state.SetIterationTime(seconds);
    handled += completed;
    (*host)->stop();
    if (completed < kMessages) {
      state.SkipWithError("the guest stopped completing messages");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(handled));
  if (wall > 0 && cpu > 0) {
    state.counters["cpu"] = cpu / wall;
    state.counters["msgs_per_cpu_s"] = static_cast<double>(handled) / cpu;
  }
}

BENCHMARK(BM_GuestDrain)
    ->ArgNames({"batch", "aot", "echo"})
    ->Args({1, 0, 0})
    ->Args({10, 0, 0})
    ->Args({100, 0, 0})
    ->Args({1, 1, 0})
    ->Args({10, 1, 0})
    ->Args({100, 1, 0})
    ->Args({100, 0, 1})
    ->Args({100, 1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

void BM_GuestHandle(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  EngineOptions engine;
  engine.engine = state.range(1) != 0 ? Engine::kAot : Engine::kInterp;
  WasmLimits limits;
  auto module = load_guest_module(WITMQ_BENCH_GUEST, limits, engine);
  if (!module.ok()) {
    state.SkipWithError(module.error().message.c_str());
    return;
  }
  InstanceContext ctx;
  ctx.guest_name = "bench";
  auto g = GuestInstance::create(*module, ctx);
  if (!g.ok()) {
    state.SkipWithError(g.error().message.c_str());
    return;
  }
  std::vector<Message> batch(n);
  for (Message& m : batch) m.data.assign(kMessageBytes, 'x');
  for (auto _ : state) {
    CallReport r = (*g)->handle(batch);
    if (!r.returned_ok()) {
      state.SkipWithError(r.message.c_str());
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}

BENCHMARK(BM_GuestHandle)
    ->ArgNames({"batch", "aot"})
    ->Args({100, 0})
    ->Args({100, 1})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace witmq::guest

BENCHMARK_MAIN();
