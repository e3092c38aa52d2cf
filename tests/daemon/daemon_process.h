// Runs the real witmqd binary for tests: on 127.0.0.1 with ephemeral ports (--listen 127.0.0.1:0
// and --http-listen 127.0.0.1:0, the ports read from its `listening on` and `http listening on`
// lines, and those of `tls listening on` and `https listening on` when the arguments turn the TLS
// listeners on) and a temporary data directory, so that tests run in parallel.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace witmq::daemon::testing {

// The witmqd binary: the path CMake compiled in, else $WITMQ_BUILD_DIR/src/daemon/witmqd.
inline std::string witmqd_path() {
#ifdef WITMQD_PATH
  if (std::filesystem::exists(WITMQD_PATH)) return WITMQD_PATH;
#endif
  const char* dir = std::getenv("WITMQ_BUILD_DIR");
  return std::string(dir ? dir : ".") + "/src/daemon/witmqd";
}

inline std::string make_temp_dir(const std::string& tag) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             ("witmqd-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Reads everything from `fd` into `out` (under `mu`) until EOF.
inline void drain(int fd, std::string* out, std::mutex* mu) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(*mu);
    out->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
}

// A child process with its stdout and stderr collected. `env` ("NAME=VALUE") is added to the
// environment the child inherits.
class Process {
 public:
  explicit Process(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    // Everything the child needs is prepared before fork: it only calls async-signal-safe
    // functions.
    const std::string path = witmqd_path();
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(path.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (char** e = environ; *e; ++e) {
      const std::string_view inherited(*e);
      const bool replaced = std::any_of(env.begin(), env.end(), [&](const std::string& x) {
        return inherited.substr(0, inherited.find('=') + 1) == x.substr(0, x.find('=') + 1);
      });
      if (!replaced) envp.push_back(*e);
    }
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) std::abort();
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(err[1], 2);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_thread_ = std::thread(drain, out[0], &out_, &mu_);
    err_thread_ = std::thread(drain, err[0], &err_, &mu_);
  }

  ~Process() {
    if (pid_ > 0 && !status_) kill(SIGKILL);
    wait(std::chrono::seconds(30));
    if (out_thread_.joinable()) out_thread_.join();
    if (err_thread_.joinable()) err_thread_.join();
  }

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  void kill(int signal) {
    if (pid_ > 0 && !status_) ::kill(pid_, signal);
  }

  // The exit code (128 + signal when killed by one), or nullopt if it still runs after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
      int st = 0;
      const pid_t r = waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (out_thread_.joinable()) out_thread_.join();
    if (err_thread_.joinable()) err_thread_.join();
    return status_;
  }

  std::string out() {
    std::lock_guard lock(mu_);
    return out_;
  }
  std::string err() {
    std::lock_guard lock(mu_);
    return err_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::mutex mu_;
  std::string out_, err_;
  std::thread out_thread_, err_thread_;
};

// Runs witmqd to completion (for flags that print and exit, and refused configurations).
struct RunResult {
  std::optional<int> exit_code;
  std::string out, err;
};
inline RunResult run_witmqd(const std::vector<std::string>& args,
                            std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  Process p(args);
  RunResult r;
  r.exit_code = p.wait(timeout);
  r.out = p.out();
  r.err = p.err();
  return r;
}

// A running daemon. The data directory is created for it unless given, and removed with it
// unless keep_data() was called. `env` ("NAME=VALUE") is added to its environment.
class Daemon {
 public:
  explicit Daemon(std::vector<std::string> extra_args = {}, std::string data_dir = "",
                  std::vector<std::string> env = {})
      : data_dir_(data_dir.empty() ? make_temp_dir("data") : std::move(data_dir)),
        owns_dir_(data_dir.empty()),
        args_(std::move(extra_args)),
        env_(std::move(env)) {
    start();
  }

  ~Daemon() {
    process_.reset();
    if (owns_dir_ && !keep_) std::filesystem::remove_all(data_dir_);
  }

  // Starts the daemon again on the same data directory (after stop() or kill9()).
  void start() {
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                     "--data-dir", data_dir_};
    args.insert(args.end(), args_.begin(), args_.end());
    process_ = std::make_unique<Process>(args, env_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      // Lines of stdout, each after a newline, all printed in one write: the protocol's first,
      // then TLS, HTTP and HTTPS; each is absent when the arguments turn its listener off.
      const std::string out = "\n" + process_->out();
      if (out.find("listening on 127.0.0.1:") != std::string::npos && out.back() == '\n') {
        auto port_of = [&out](const std::string& line) -> uint16_t {
          const std::string prefix = "\n" + line + "127.0.0.1:";
          const auto at = out.find(prefix);
          return at == std::string::npos
                     ? 0
                     : static_cast<uint16_t>(std::stoi(out.substr(at + prefix.size())));
        };
        port_ = port_of("listening on ");
        tls_port_ = port_of("tls listening on ");
        http_port_ = port_of("http listening on ");
        https_port_ = port_of("https listening on ");
        return;
      }
      if (auto code = process_->wait(std::chrono::milliseconds(0))) {
        ADD_FAILURE() << "witmqd exited with " << *code << " before listening:\n"
                      << process_->err();
        return;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "witmqd did not print its address within 30 s:\n" << process_->err();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Sends `signal` and waits for the exit code (nullopt: still running after `timeout`).
  std::optional<int> stop(int signal = SIGTERM,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    process_->kill(signal);
    return process_->wait(timeout);
  }

  // Sends `signal` without waiting (SIGHUP: reload).
  void signal(int signal) { process_->kill(signal); }
  // The exit code once it exits (after signal()); nullopt: still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    return process_->wait(timeout);
  }

  uint16_t port() const { return port_; }
  // The HTTP listener's port; 0 when the HTTP side is off.
  uint16_t http_port() const { return http_port_; }
  // The TLS protocol listener's and the HTTPS listener's ports; 0 when they are off.
  uint16_t tls_port() const { return tls_port_; }
  uint16_t https_port() const { return https_port_; }
  const std::string& data_dir() const { return data_dir_; }
  std::string log() { return process_->err(); }
  // Waits (bounded) until the daemon's log contains `text`.
  bool wait_for_log(std::string_view text,
                    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (process_->err().find(text) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }
  void keep_data() { keep_ = true; }

 private:
  std::string data_dir_;
  bool owns_dir_;
  bool keep_ = false;
  std::vector<std::string> args_;
  std::vector<std::string> env_;
  std::unique_ptr<Process> process_;
  uint16_t port_ = 0;
  uint16_t http_port_ = 0;
  uint16_t tls_port_ = 0;
  uint16_t https_port_ = 0;
};

inline // VmRSS of process `pid` in bytes, from /proc/PID/status (0 if it cannot be read).
uint64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// The daemon's pid: the listening socket's owner is not at hand, so it is read from /proc by the
// data directory on its command line (-1 when no such process runs).
inline pid_t daemon_pid(const Daemon& d) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find("witmqd") != std::string::npos &&
        cmdline.find(std::string("--data-dir") + '\0' + d.data_dir() + '\0') != std::string::npos) {
      return static_cast<pid_t>(std::stoi(name));
    }
  }
  return -1;
}

}  // namespace witmq::daemon::testing
