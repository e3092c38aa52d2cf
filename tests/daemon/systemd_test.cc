// witmqd under systemd's notification protocol: a unix datagram socket bound by the test stands in
// for systemd's NOTIFY_SOCKET, and the real daemon must report READY=1 once it serves,
// RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 when SIGTERM starts the graceful stop, and
// WATCHDOG=1 keep-alives when WATCHDOG_USEC asks for them.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

// The receiving end of NOTIFY_SOCKET: a path in a temporary directory, or an abstract name.
class NotifySocket {
 public:
  explicit NotifySocket(bool abstract = false) {
    dir_ = make_temp_dir("notify");
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    socklen_t length;
    if (abstract) {
      // The directory name is unique to this test process: reuse it as the abstract name.
      const std::string name = std::filesystem::path(dir_).filename().string();
      env_value_ = "@" + name;
      std::memcpy(addr.sun_path + 1, name.data(), name.size());
      length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    } else {
      env_value_ = dir_ + "/notify";
      std::memcpy(addr.sun_path, env_value_.data(), env_value_.size());
      length = static_cast<socklen_t>(sizeof addr);
    }
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), length) != 0) {
      ADD_FAILURE() << "bind " << env_value_ << ": " << std::strerror(errno);
    }
  }
  ~NotifySocket() {
    ::close(fd_);
    std::filesystem::remove_all(dir_);
  }

  // "NOTIFY_SOCKET=..." for the daemon's environment.
  std::string env() const { return "NOTIFY_SOCKET=" + env_value_; }

  // The next datagram, or nullopt after `timeout`. WATCHDOG=1 keep-alives are skipped unless
  // `keep_alives` is set.
  std::optional<std::string> next(std::chrono::milliseconds timeout = 20s,
                                  bool keep_alives = false) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0) continue;
      std::string message(buf, static_cast<size_t>(n));
      if (message == "WATCHDOG=1" && !keep_alives) continue;
      return message;
    }
  }

 private:
  std::string dir_;
  std::string env_value_;
  int fd_ = -1;
};

// The value of `key` in a notification ("KEY=VALUE" lines), "" when absent.
std::string field(const std::optional<std::string>& message, const std::string& key) {
  if (!message) return "";
  std::istringstream in(*message);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(key + "=")) return line.substr(key.size() + 1);
  }
  return "";
}

TEST(SystemdTest, ReadyAfterListeningReloadingAroundSighupStoppingOnSigterm) {
  NotifySocket notify;
  Daemon d({}, "", {notify.env()});
  ASSERT_NE(d.port(), 0) << d.log();

  // READY=1 comes once the daemon accepts connections, with its status and pid.
  const auto ready = notify.next();
  ASSERT_TRUE(ready) << d.log();
  EXPECT_EQ(field(ready, "READY"), "1") << *ready;
  EXPECT_EQ(field(ready, "STATUS"), "listening on 127.0.0.1:" + std::to_string(d.port())) << *ready;
  EXPECT_FALSE(field(ready, "MAINPID").empty()) << *ready;
  Conn c(d.port());
  c.hello();

  // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 again when the reload is done.
  d.signal(SIGHUP);
  const auto reloading = notify.next();
  ASSERT_TRUE(reloading) << d.log();
  EXPECT_EQ(field(reloading, "RELOADING"), "1") << *reloading;
  const std::string usec = field(reloading, "MONOTONIC_USEC");
  ASSERT_FALSE(usec.empty()) << *reloading;
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  EXPECT_LE(std::stoull(usec), static_cast<uint64_t>(now.tv_sec) * 1'000'000u + now.tv_nsec / 1000);
  const auto ready_again = notify.next();
  ASSERT_TRUE(ready_again) << d.log();
  EXPECT_EQ(field(ready_again, "READY"), "1") << *ready_again;
  EXPECT_TRUE(d.wait_for_log("reload done")) << d.log();

  // SIGTERM: STOPPING=1 as the graceful stop begins, then exit 0.
  d.signal(SIGTERM);
  const auto stopping = notify.next();
  ASSERT_TRUE(stopping) << d.log();
  EXPECT_EQ(*stopping, "STOPPING=1");
  EXPECT_EQ(d.wait(), 0) << d.log();
}

TEST(SystemdTest, AnAbstractNotifySocketGetsReady) {
  NotifySocket notify(/*abstract=*/true);
  Daemon d({}, "", {notify.env()});
  const auto ready = notify.next();
  ASSERT_TRUE(ready) << d.log();
  EXPECT_EQ(field(ready, "READY"), "1") << *ready;
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(SystemdTest, WatchdogKeepAlivesAtHalfTheInterval) {
  NotifySocket notify;
  Daemon d({}, "", {notify.env(), "WATCHDOG_USEC=400000"});
  ASSERT_EQ(field(notify.next(), "READY"), "1") << d.log();
  // Every 200 ms: a few arrive within two seconds on a loaded machine.
  int keep_alives = 0;
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = notify.next(100ms, /*keep_alives=*/true);
    if (m && *m == "WATCHDOG=1") ++keep_alives;
  }
  EXPECT_GE(keep_alives, 3) << d.log();
  EXPECT_LE(keep_alives, 15) << d.log();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(SystemdTest, AWatchdogMeantForAnotherProcessIsIgnored) {
  NotifySocket notify;
  Daemon d({}, "", {notify.env(), "WATCHDOG_USEC=100000", "WATCHDOG_PID=1"});
  ASSERT_EQ(field(notify.next(), "READY"), "1") << d.log();
  EXPECT_FALSE(notify.next(500ms, /*keep_alives=*/true)) << d.log();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(SystemdTest, WithoutNotifySocketNothingChanges) {
  // The fixture's environment may itself come from systemd: clear it for the daemon.
  Daemon d({}, "", {"NOTIFY_SOCKET="});
  Conn c(d.port());
  c.hello();
  d.signal(SIGHUP);
  EXPECT_TRUE(d.wait_for_log("reload done")) << d.log();
  EXPECT_EQ(d.log().find("NOTIFY_SOCKET"), std::string::npos) << d.log();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
