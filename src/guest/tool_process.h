// Runs a build tool (wasm2c, the C compiler) for the compiled guest tier as a child process,
// bounded in wall time, output and resources, without signal handlers in the daemon.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace witmq::guest {

struct ToolLimits {
  // Wall time: past it the tool and everything it started (its process group) are killed.
  std::chrono::milliseconds timeout{300'000};
  // RLIMIT_FSIZE: the largest file the tool may write.
  uint64_t max_file_bytes = 1ull << 30;
  // RLIMIT_AS: the address space of the tool and of each process it starts.
  uint64_t max_address_space = 4ull << 30;
  // Output (stdout and stderr together) kept for the report; the rest is read and dropped.
  size_t max_output = 2048;
};

struct ToolRun {
  bool timed_out = false;
  bool cancelled = false;  // ended by cancel_tool_runs()
  int exit_code = -1;  // when the tool exited
  int signal = 0;      // when a signal ended it
  std::string output;  // the first ToolLimits::max_output bytes of stdout + stderr
  bool ok() const { return !timed_out && signal == 0 && exit_code == 0; }
  // "exited with status 1", "killed by signal 9", "timed out after 300000 ms", "stopped: witmqd
  // is stopping".
  std::string describe(const ToolLimits& limits) const;
};

// Runs argv[0] (an absolute path) with `argv` in `cwd`, stdin from /dev/null, the environment
// PATH=/usr/bin:/bin and LC_ALL=C only, and no file descriptor of the daemon but its own
// stdout/stderr pipe. Blocks the calling thread until the tool ends or is killed. An error only
// when the tool cannot be started.
Result<ToolRun> run_tool(const std::vector<std::string>& argv, const std::string& cwd,
                         const ToolLimits& limits);

// For a process that is stopping: kills every tool run_tool() is running (and what each
// started), so that those calls return at once (ToolRun::cancelled), and makes every later
// run_tool() fail without starting anything (kUnavailable). Thread-safe; may be called from any
// thread, more than once.
void cancel_tool_runs();

}  // namespace witmq::guest
