// Runs a real etcd (Debian's etcd-server, installed by tools/bootstrap.sh) for the cluster tests:
// one member on 127.0.0.1, free ports, a temporary data directory kept across restart(), its log
// in that directory. Tests skip with a clear message when etcd is not installed.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/daemon_process.h"

namespace witmq::cluster::testing {

// The etcd binary on PATH, or "" when there is none.
inline std::string etcd_path() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const auto candidate = std::filesystem::path(dir) / "etcd";
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

// A port nobody listens on now (the kernel's choice of a free one, released at once).
inline uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::abort();
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

class Etcd {
 public:
  Etcd()
      : dir_(daemon::testing::make_temp_dir("etcd")),
        client_port_(free_port()),
        peer_port_(free_port()) {
    start();
  }
  ~Etcd() {
    kill(SIGKILL);
    std::filesystem::remove_all(dir_);
  }
  Etcd(const Etcd&) = delete;
  Etcd& operator=(const Etcd&) = delete;

  // Starts etcd on the same ports and data directory; waits (bounded) until it answers.
  void start() {
    const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> args = {etcd_path(),    "--name",
                                     "test",         "--data-dir",
                                     dir_ + "/data", "--listen-client-urls",
                                     client,         "--advertise-client-urls",
                                     client,         "--listen-peer-urls",
                                     peer,           "--initial-advertise-peer-urls",
                                     peer,           "--initial-cluster",
                                     "test=" + peer};
    const std::string log_path = dir_ + "/etcd.log";
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      execv(argv[0], argv.data());
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!answers()) {
      if (std::chrono::steady_clock::now() > deadline || exited()) {
        ADD_FAILURE() << "etcd did not answer within 30 s; its log: " << log();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Sends `signal`; SIGTERM and SIGKILL wait (bounded) for the process to end, SIGSTOP for it to
  // be stopped (the signal is delivered asynchronously: a request sent at once could otherwise
  // still be answered).
  void kill(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    if (signal == SIGSTOP) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (!stopped() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return;
    }
    if (signal != SIGTERM && signal != SIGKILL) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!exited()) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // "127.0.0.1:PORT", for cluster-etcd-endpoints.
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }
  uint16_t client_port() const { return client_port_; }

  std::string log() const {
    std::ifstream in(dir_ + "/etcd.log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  // Whether the process is in the stopped state ('T' in /proc/PID/stat, after the command's
  // parenthesised name).
  bool stopped() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'T';
  }
  bool exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }

  // Whether etcd's v3 gateway answers a read.
  bool answers() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(client_port_);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const std::string body = R"({"key":"AA=="})";
      const std::string request = "POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                  std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                                  body;
      timeval tv{2, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
        char buf[64] = {};
        const ssize_t n = ::read(fd, buf, sizeof buf - 1);
        ok = n > 12 && std::string(buf).rfind("HTTP/1.1 200", 0) == 0;
      }
    }
    ::close(fd);
    return ok;
  }

  std::string dir_;
  uint16_t client_port_;
  uint16_t peer_port_;
  pid_t pid_ = -1;
};

// Skips the test when etcd is not installed.
#define WITMQ_REQUIRE_ETCD()                                                                    \
  do {                                                                                          \
    if (::witmq::cluster::testing::etcd_path().empty()) {                                       \
      GTEST_SKIP() << "etcd is not installed (Debian etcd-server; tools/bootstrap.sh installs " \
                      "it): the cluster tests need a real etcd";                                \
    }                                                                                           \
  } while (0)

}  // namespace witmq::cluster::testing
