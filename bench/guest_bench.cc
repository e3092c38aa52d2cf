// A trivial guest draining a channel through the real GuestHost and the real broker on RocksDB
// (durability none, so the figures are the guest path's, not fsync's). No network.
//
//   build/bench/witmq_guest_bench
//
// BM_GuestDrain/batch:N: each iteration sends kMessages messages of kMessageBytes bytes to
// `bench.in` (not timed), then starts the guest (bench/guests/complete_all.wat, whose handler
// returns ok) with batch-size N and times it from start() until the host has completed every
// message: instantiation and configure, then receive, lowering, the handler call and
// settlement per batch. items_per_second is messages handled per second of wall time; `cpu` is
// the process's CPU time over that wall time (the guest's worker thread plus the broker's
// threads), so msgs_per_cpu_s is the rate per busy core.
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
  GuestOptions options;
  options.name = "bench";
  options.module_path = WITMQ_BENCH_GUEST;
  options.batch_size = static_cast<uint32_t>(state.range(0));
  auto log = [](LogLevel level, std::string_view line) {
    if (level >= LogLevel::kWarn) std::fprintf(stderr, "%.*s\n", int(line.size()), line.data());
  };

  uint64_t handled = 0;
  double wall = 0, cpu = 0;
  for (auto _ : state) {
    if (!f.fill("bench.in", kMessages)) {
      state.SkipWithError("pre-filling bench.in failed");
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
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(10)
    ->Arg(100)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace witmq::guest

BENCHMARK_MAIN();
