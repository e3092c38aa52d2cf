// A real witmqd for end-to-end tests: started on 127.0.0.1 with an ephemeral port and a fresh data
// directory, its port read from the "listening on 127.0.0.1:PORT" line it prints, and
// stopped with SIGTERM (SIGKILL if it does not exit in time).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace witmq::client::testing {

// The witmqd binary: $WITMQ_WITMQD, else $WITMQ_BUILD_DIR/src/daemon/witmqd; "" when missing.
inline std::string find_witmqd() {
  if (const char* p = std::getenv("WITMQ_WITMQD"); p && std::filesystem::exists(p)) return p;
  if (const char* b = std::getenv("WITMQ_BUILD_DIR")) {
    for (const char* rel : {"src/daemon/witmqd", "witmqd", "bin/witmqd"}) {
      auto p = std::filesystem::path(b) / rel;
      if (std::filesystem::exists(p)) return p.string();
    }
  }
  return "";
}

inline std::string make_temp_dir(const std::string& tag) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             ("witmq-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

class DaemonProcess {
 public:
  DaemonProcess() = default;
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess() {
    stop();
    if (!data_dir_.empty() && owns_dir_) {
      std::error_code ec;
      std::filesystem::remove_all(data_dir_, ec);
    }
  }

  // Starts `binary` with --listen 127.0.0.1:0 --data-dir `data_dir` (a fresh temporary one when
  // empty) and `extra` flags; waits up to `timeout` for the listening line. Returns an error text,
  // or "" on success.
  std::string start(const std::string& binary, std::string data_dir = "",
                    std::vector<std::string> extra = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (data_dir.empty()) {
      data_dir = make_temp_dir("e2e");
      owns_dir_ = true;
    }
    data_dir_ = data_dir;
    port_ = 0;
    eof_ = false;
    output_.clear();
    std::vector<std::string> args{binary,        "--listen",   "127.0.0.1:0", "--http-listen",
                                  "127.0.0.1:0", "--data-dir", data_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    // Everything the child needs is prepared before fork: it only calls async-signal-safe
    // functions. Its stdout and stderr both go to the pipe (the listening line is on either).
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return "pipe2 failed";
    pid_ = ::fork();
    if (pid_ < 0) return "fork failed";
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] { read_stderr(fd); });
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return port_ != 0 || eof_; });
    if (port_ == 0) {
      std::string out = output_;
      lock.unlock();
      kill_now();
      return "witmqd did not print 'listening on 127.0.0.1:PORT'; its output:\n" + out;
    }
    return "";
  }

  uint16_t port() const { return port_; }
  const std::string& data_dir() const { return data_dir_; }
  pid_t pid() const { return pid_; }
  std::string output() {
    std::lock_guard lock(mu_);
    return output_;
  }

  // SIGTERM, then waits up to `timeout` for the exit (SIGKILL after). Returns the exit status as
  // waitpid reports it, or -1 when there was no process.
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    return reap(timeout);
  }

  // SIGKILL now.
  int kill_now() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGKILL);
    return reap(std::chrono::seconds(20));
  }

 private:
  int reap(std::chrono::milliseconds timeout) {
    int status = -1;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    if (reader_.joinable()) reader_.join();
    return status;
  }

  void read_stderr(int fd) {
    // At the start of a line: not the HTTP listener's `http listening on`, nor the log line.
    static const std::regex kListening(R"((?:^|\n)listening on 127\.0\.0\.1:(\d+))");
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      std::lock_guard lock(mu_);
      output_.append(buf, static_cast<size_t>(n));
      std::smatch m;
      if (port_ == 0 && std::regex_search(output_, m, kListening)) {
        port_ = static_cast<uint16_t>(std::stoi(m[1].str()));
        cv_.notify_all();
      }
    }
    ::close(fd);
    std::lock_guard lock(mu_);
    eof_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  std::string data_dir_;
  bool owns_dir_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  uint16_t port_ = 0;
  bool eof_ = false;
};

}  // namespace witmq::client::testing
