#include "guest/tool_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>

namespace witmq::guest {
namespace {

Error tool_error(const std::string& tool, const std::string& what) {
  return Error(ErrorCode::kInternal, tool + ": " + what + ": " + std::strerror(errno));
}

// The tools running now (their pids, each its own process group), for cancel_tool_runs().
struct Running {
  std::mutex mu;
  bool cancelled = false;
  std::set<pid_t> pids;
};
Running& running() {
  static Running* r = new Running();  // never destroyed: a tool may outlive static teardown
  return *r;
}

}  // namespace

void cancel_tool_runs() {
  Running& r = running();
  std::lock_guard lock(r.mu);
  r.cancelled = true;
  for (pid_t pid : r.pids) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
}

std::string ToolRun::describe(const ToolLimits& limits) const {
  if (cancelled) return "stopped: witmqd is stopping";
  if (timed_out) return "timed out after " + std::to_string(limits.timeout.count()) + " ms";
  if (signal != 0) return "killed by signal " + std::to_string(signal);
  return "exited with status " + std::to_string(exit_code);
}

Result<ToolRun> run_tool(const std::vector<std::string>& argv, const std::string& cwd,
                         const ToolLimits& limits) {
  const std::string& tool = argv.at(0);
  // Everything the child needs is built before fork(): after it, the child of a multi-threaded
  // process may only make async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char env_path[] = "PATH=/usr/bin:/bin";
  char env_lc[] = "LC_ALL=C";
  char* envp[] = {env_path, env_lc, nullptr};
  const rlimit fsize{limits.max_file_bytes, limits.max_file_bytes};
  const rlimit as{limits.max_address_space, limits.max_address_space};

  // Held from the fork until the pid is registered, so that cancel_tool_runs() cannot miss it.
  std::unique_lock running_lock(running().mu);
  if (running().cancelled) {
    return Error(ErrorCode::kUnavailable, tool + ": not started: witmqd is stopping");
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return tool_error(tool, "cannot create a pipe");
  const pid_t pid = fork();
  if (pid < 0) {
    close(out[0]);
    close(out[1]);
    return tool_error(tool, "cannot start it (fork)");
  }
  if (pid == 0) {
    // Own process group, so that a timeout kills what the tool started too.
    setpgid(0, 0);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0) {
      _exit(126);
    }
    syscall(SYS_close_range, 3u, ~0u, 0u);
    setrlimit(RLIMIT_FSIZE, &fsize);
    setrlimit(RLIMIT_AS, &as);
    signal(SIGPIPE, SIG_DFL);
    if (chdir(cwd.c_str()) != 0) _exit(126);
    execve(args[0], args.data(), envp);
    _exit(127);
  }
  close(out[1]);
  running().pids.insert(pid);
  running_lock.unlock();
  // The child's end is known by a pidfd (Linux 5.3+); without one, by the end of its output.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));

  ToolRun run;
  const auto deadline = std::chrono::steady_clock::now() + limits.timeout;
  bool output_open = true;
  bool exited = false;
  char buf[4096];
  while (output_open || (pidfd >= 0 && !exited)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      run.timed_out = true;
      break;
    }
    pollfd fds[2];
    nfds_t n = 0;
    if (output_open) fds[n++] = {out[0], POLLIN, 0};
    if (pidfd >= 0 && !exited) fds[n++] = {pidfd, POLLIN, 0};
    const int r = poll(fds, n, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (r < 0 && errno != EINTR) break;
    for (nfds_t i = 0; i < n && r > 0; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == pidfd) {
        exited = true;
        continue;
      }
      const ssize_t got = read(out[0], buf, sizeof buf);
      if (got <= 0) {
        if (got < 0 && errno == EINTR) continue;
        output_open = false;
        continue;
      }
      const size_t keep =
          std::min(static_cast<size_t>(got),
                   limits.max_output - std::min(limits.max_output, run.output.size()));
      run.output.append(buf, keep);
    }
  }
  if (run.timed_out) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
  bool cancelling = false;
  {
    // Before waitpid: until it reaps the child, its pid cannot name another process.
    std::lock_guard lock(running().mu);
    running().pids.erase(pid);
    cancelling = running().cancelled;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  run.cancelled = cancelling && !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (run.timed_out) {
    // Whatever the tool started and left behind goes with it.
    kill(-pid, SIGKILL);
  }
  close(out[0]);
  if (pidfd >= 0) close(pidfd);
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) run.signal = WTERMSIG(status);
  return run;
}

}  // namespace witmq::guest
