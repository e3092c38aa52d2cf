// GuestHost: runs one configured guest as an in-process subscriber (DESIGN.md "Guests").
//
// Lifecycle: load and check the module (refused with a message naming the module and the item);
// start N instances, each with its own broker client named after the guest (instances share the
// guest's durable subscription and compete for its messages); call `configure`, apply the
// configured overrides and subscribe (update-guest-configuration); then each instance loops on
// its own worker thread: receive a batch, call `handler`, settle. Settlement: a message the guest
// completed or abandoned itself stays so; every other message of the batch is completed when
// `handler` returns ok, abandoned (a failed attempt) when it returns err, traps, runs out of
// instruction budget or hits the memory limit. After a failure of the last three kinds the
// instance is discarded (its clients disconnected) and a new one is instantiated and configured.
// Leases of a batch stay alive while its handler runs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "broker/broker.h"
#include "common/message.h"
#include "common/result.h"
#include "guest/guest_instance.h"
#include "guest/guest_options.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest {

// Per-guest figures (all instances), monotonically increasing except instances_running.
struct GuestStats {
  std::string name;
  uint64_t messages_handled = 0;    // messages passed to `handler`
  uint64_t batches = 0;             // `handler` calls
  uint64_t handler_errors = 0;      // `handler` returned err
  uint64_t traps = 0;               // traps in configure / handler (incl. host-raised traps)
  uint64_t budget_exhaustions = 0;  // calls stopped by the instruction budget
  uint64_t memory_limit_hits = 0;   // memory.grow past the memory limit
  uint64_t time_limit_hits = 0;     // calls stopped by call-timeout-ms
  uint64_t instantiations = 0;      // successful instantiations (first ones included)
  uint64_t completed = 0;           // messages the host completed after `handler`
  uint64_t abandoned = 0;           // messages the host abandoned after `handler`
  uint64_t settle_failures = 0;     // host settlements the broker refused (e.g. stale receipt)
  uint64_t handler_time_ns = 0;     // wall time inside `handler`, lowering and lifting included
  uint32_t instances_running = 0;   // instances alive now
  uint64_t output_lines = 0;          // WASI stdout / stderr lines logged
  uint64_t output_lines_dropped = 0;  // lines dropped by the rate limit
  uint64_t output_bytes_dropped = 0;  // bytes of dropped lines and of lines cut to the size limit
};

// Severity of a log line.
enum class LogLevel : uint8_t { kDebug, kInfo, kWarn, kError };
// Where log lines go; default: stderr, one line per event.
using LogSink = std::function<void(LogLevel, std::string_view line)>;

// Runs one guest. Thread-safe: stats() and stop() may be called from any thread.
class GuestHost {
 public:
  // Checks the options, loads and checks the module. Starts nothing.
  static Result<std::unique_ptr<GuestHost>> load(broker::Broker& broker, GuestOptions options,
                                                 LogSink log = {});
  ~GuestHost();  // stop()
  GuestHost(const GuestHost&) = delete;
  GuestHost& operator=(const GuestHost&) = delete;

  // Instantiates and configures every instance and subscribes it, then starts the workers. A
  // failure (instantiation, configure trap or err, a configuration the broker refuses) stops
  // what was started and is returned, naming the guest.
  Status start();
  // Stops the workers: pending receives end (an instance still in `configure` included), a
  // running handler finishes (bounded by its budget and call-timeout-ms) and its batch is
  // settled, the guest's clients are disconnected. Idempotent.
  void stop();

  GuestStats stats() const;
  const GuestOptions& options() const { return options_; }
  const WasmModule& module() const { return *module_; }

 private:
  struct Worker;
  GuestHost(broker::Broker& broker, GuestOptions options, LogSink log,
            std::shared_ptr<const WasmModule> module);
  Status instantiate(Worker& w);
  Status subscribe(Worker& w, GuestConfiguration gc);
  void run(Worker& w);
  void run_loop(Worker& w);
  void process(Worker& w, const std::vector<Message>& batch);
  std::chrono::milliseconds lease_for(const Worker& w, const std::vector<Message>& batch);
  void count_failure(CallStatus status);
  bool wait_backoff(std::chrono::milliseconds delay);
  void log(LogLevel level, std::string line) const;

  broker::Broker& broker_;
  const GuestOptions options_;
  LogSink log_;
  std::shared_ptr<const WasmModule> module_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<class LeaseKeeper> leases_;
  std::shared_ptr<GuestOutput> output_;  // the guest's stdout and stderr, for all its instances

  std::mutex mu_;  // guards stopping_ (with cv_) and lease_cache_
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  std::vector<std::pair<std::string, std::chrono::milliseconds>> lease_cache_;

  struct Counters {
    std::atomic<uint64_t> messages_handled{0}, batches{0}, handler_errors{0}, traps{0},
        budget_exhaustions{0}, memory_limit_hits{0}, time_limit_hits{0}, instantiations{0},
        completed{0}, abandoned{0}, settle_failures{0}, handler_time_ns{0};
    std::atomic<uint32_t> instances_running{0};
  } counters_;
};

}  // namespace witmq::guest
