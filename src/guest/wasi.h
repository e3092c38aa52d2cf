// The wasi_snapshot_preview1 import surface for guests built for wasm32-wasi (docs/GUESTS.md,
// "WASI"). A guest is a sandbox: stdout and stderr become log lines of the daemon, tagged with the
// guest's name and bounded in rate and size; clocks, random and sleeping (poll_oneoff on clocks)
// work; args are the guest's name and environ its `env` setting; everything that would reach
// outside (paths, sockets, preopens, other descriptors) answers with a WASI errno, never with
// access. Every pointer and length the guest passes is checked against its memory (EFAULT when
// outside it), and what the host copies is charged to the call's instruction budget.
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
#include <utility>
#include <vector>

#include "guest/wasm_runtime.h"

namespace witmq::guest {

inline constexpr const char* kWasiModule = "wasi_snapshot_preview1";

// Every function of wasi_snapshot_preview1 with its core signature.
const std::vector<ImportSpec>& wasi_imports();

// WASI errno values the host answers with (wasi_snapshot_preview1 `errno`).
namespace wasi_errno {
inline constexpr uint32_t kSuccess = 0;
inline constexpr uint32_t kBadf = 8;
inline constexpr uint32_t kFault = 21;
inline constexpr uint32_t kInval = 28;
inline constexpr uint32_t kNosys = 52;
inline constexpr uint32_t kNotdir = 54;
inline constexpr uint32_t kNotsock = 57;
inline constexpr uint32_t kNotsup = 58;
inline constexpr uint32_t kSpipe = 70;
inline constexpr uint32_t kNotcapable = 76;
}  // namespace wasi_errno

// Bounds on what one guest (all its instances together) may write to stdout and stderr.
struct GuestOutputLimits {
  // Longest log line; the rest of a longer line is cut (and counted as dropped bytes).
  size_t max_line_bytes = 1024;
  // Lines per second the guest may log, with a burst of `burst_lines`; lines beyond are dropped
  // and counted, and one line saying how many were dropped is logged when lines pass again.
  uint32_t lines_per_second = 100;
  uint32_t burst_lines = 200;
};

// One guest's stdout and stderr: turns complete lines into log lines "guest 'NAME' stdout: ...",
// bounded by GuestOutputLimits, and counts them. Shared by the guest's instances; thread-safe.
class GuestOutput {
 public:
  // `emit(is_stderr, line)` writes one log line.
  using Emit = std::function<void(bool is_stderr, std::string_view line)>;
  GuestOutput(std::string guest_name, Emit emit, GuestOutputLimits limits = {});

  // Logs one line the guest wrote to fd 1 or 2 (without its newline), if the rate allows.
  // `cut` bytes of it were already cut by the caller (counted as dropped bytes).
  void line(bool is_stderr, std::string_view text, uint64_t cut = 0);

  uint64_t lines_written() const { return lines_written_; }
  uint64_t lines_dropped() const { return lines_dropped_; }
  uint64_t bytes_dropped() const { return bytes_dropped_; }
  const GuestOutputLimits& limits() const { return limits_; }
  const std::string& guest_name() const { return name_; }

 private:
  const std::string name_;
  const Emit emit_;
  const GuestOutputLimits limits_;
  std::mutex mu_;  // guards the bucket and the drops not yet reported
  double tokens_;
  std::chrono::steady_clock::time_point refilled_;
  uint64_t unreported_lines_ = 0, unreported_bytes_ = 0;
  std::atomic<uint64_t> lines_written_{0}, lines_dropped_{0}, bytes_dropped_{0};
};

// What one instance's WASI functions need from their guest.
struct WasiContext {
  std::string program_name;                              // argv[0]: the guest's name
  std::vector<std::pair<std::string, std::string>> env;  // environ, in order
  std::shared_ptr<GuestOutput> output;                   // stdout / stderr; nullptr: discarded
};

// The WASI state of one instance (which of fds 0-2 are closed, partial output lines, sleeps).
// Not thread-safe except interrupt(): the instance's thread calls its functions.
class WasiHost {
 public:
  explicit WasiHost(WasiContext context);
  ~WasiHost();  // logs what is left of unfinished lines
  WasiHost(const WasiHost&) = delete;
  WasiHost& operator=(const WasiHost&) = delete;

  // The host functions; `wasm()` is the instance they serve (set before they run).
  std::vector<HostFunction> functions(std::function<WasmInstance*()> wasm);
  // Ends a sleep in poll_oneoff now (the call traps) and makes later sleeps trap at once.
  void interrupt();
  // Takes bytes written to stdout (fd 1) or stderr (fd 2) into lines, as fd_write does (WASI
  // 0.2 output streams write here too). The caller has charged them.
  void write_output(int fd, std::string_view bytes);
  const WasiContext& context() const { return ctx_; }

 private:
  class Call;
  uint32_t fd_write(WasmInstance& w, uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                    uint32_t nwritten);
  uint32_t poll_oneoff(WasmInstance& w, uint32_t in, uint32_t out, uint32_t nsubs,
                       uint32_t nevents);
  void flush_partial(int fd);

  WasiContext ctx_;
  bool closed_[3] = {false, false, false};
  std::string partial_[3];               // the unfinished line of fds 1 and 2
  uint64_t partial_cut_[3] = {0, 0, 0};  // bytes of that line cut beyond max_line_bytes
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  bool interrupted_ = false;  // guarded by sleep_mu_
};

}  // namespace witmq::guest
