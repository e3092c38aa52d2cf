#include "cli/reply_command.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace witmq::cli {
namespace {

// Closes what it holds on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace

Result<std::vector<uint8_t>> run_for_reply(const std::string& command,
                                           const std::vector<uint8_t>& input, size_t max_output) {
  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) {
    return Error(ErrorCode::kIoError, fmt::format("--exec: pipe: {}", std::strerror(errno)));
  }
  Fd child_in{in_pipe[0]}, to_child{in_pipe[1]};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return Error(ErrorCode::kIoError, fmt::format("--exec: pipe: {}", std::strerror(errno)));
  }
  Fd from_child{out_pipe[0]}, child_out{out_pipe[1]};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_in.fd, 0);
  posix_spawn_file_actions_adddup2(&actions, child_out.fd, 1);
  std::string shell = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {shell.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/bin/sh", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return Error(ErrorCode::kIoError,
                 fmt::format("--exec '{}': cannot start /bin/sh: {}", command, std::strerror(rc)));
  }
  child_in.reset();
  child_out.reset();
  ::fcntl(to_child.fd, F_SETFL, O_NONBLOCK);
  // A command that exits without reading its input must not kill us with SIGPIPE.
  struct sigaction ignore {};
  struct sigaction previous {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &previous);

  std::vector<uint8_t> output;
  size_t written = 0;
  bool too_much = false;
  if (input.empty()) to_child.reset();
  while (from_child.fd >= 0) {
    pollfd fds[2];
    nfds_t n = 0;
    fds[n++] = {from_child.fd, POLLIN, 0};
    if (to_child.fd >= 0) fds[n++] = {to_child.fd, POLLOUT, 0};
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n == 2 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t w = ::write(to_child.fd, input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN && errno != EINTR) to_child.reset();  // it stopped reading
      if (written == input.size()) to_child.reset();
    }
    if (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) {
      uint8_t buf[65536];
      ssize_t r = ::read(from_child.fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      output.insert(output.end(), buf, buf + r);
      if (output.size() > max_output) {
        too_much = true;
        ::kill(pid, SIGKILL);
        break;
      }
    }
  }
  to_child.reset();
  from_child.reset();
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::sigaction(SIGPIPE, &previous, nullptr);
  if (too_much) {
    return Error(ErrorCode::kResourceExhausted,
                 fmt::format("--exec '{}': its output passed {} bytes, the server's "
                             "max-message-bytes",
                             command, max_output));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return output;
  if (WIFSIGNALED(status)) {
    return Error(ErrorCode::kFailedPrecondition,
                 fmt::format("--exec '{}': killed by signal {}", command, WTERMSIG(status)));
  }
  return Error(ErrorCode::kFailedPrecondition,
               fmt::format("--exec '{}': exited with status {}", command, WEXITSTATUS(status)));
}

}  // namespace witmq::cli
