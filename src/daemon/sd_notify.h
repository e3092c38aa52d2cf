// The systemd notification protocol (sd_notify(3)) without libsystemd: when systemd starts witmqd
// as a Type=notify service it sets NOTIFY_SOCKET to a unix datagram socket (a path, or an abstract
// name written with a leading '@'), and witmqd sends it one datagram of "KEY=VALUE" lines per
// state change: READY=1 once it serves, RELOADING=1 during a SIGHUP reload, STOPPING=1 when a
// graceful stop begins, and WATCHDOG=1 keep-alives when WatchdogSec= is set. Without NOTIFY_SOCKET
// every call does nothing, so witmqd behaves the same outside systemd.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace witmq::daemon {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET, and WATCHDOG_USEC / WATCHDOG_PID (the watchdog applies only when
  // WATCHDOG_PID is unset or names this process). A malformed variable disables that part with a
  // warning in the log.
  static SystemdNotifier from_environment();
  SystemdNotifier() = default;
  ~SystemdNotifier();
  SystemdNotifier(SystemdNotifier&& other) noexcept;
  SystemdNotifier& operator=(SystemdNotifier&& other) noexcept;

  bool enabled() const { return fd_ >= 0; }

  // READY=1 with STATUS=<status> and MAINPID=<this process>.
  void ready(std::string_view status);
  // RELOADING=1 with MONOTONIC_USEC=<CLOCK_MONOTONIC now>, as systemd 253 and later require.
  void reloading();
  void stopping();
  // Any other state lines, e.g. "STATUS=...". Returns false when the datagram could not be sent
  // (a failure is logged once; the daemon carries on).
  bool notify(std::string_view state);

  // WatchdogSec= of the unit, when systemd expects keep-alives from this process.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }

 private:
  int fd_ = -1;
  std::string address_;  // sockaddr_un.sun_path bytes (a leading NUL for an abstract name)
  std::optional<std::chrono::microseconds> watchdog_;
  bool warned_ = false;
};

// Sends WATCHDOG=1 at half the watchdog interval from a timer on `executor`, so the keep-alives
// stop when the I/O threads stop running handlers. Does nothing when the notifier has no
// watchdog. Stops when destroyed (or stop() is called).
class SystemdWatchdog {
 public:
  SystemdWatchdog(boost::asio::any_io_executor executor, SystemdNotifier& notifier);
  ~SystemdWatchdog() { stop(); }
  SystemdWatchdog(const SystemdWatchdog&) = delete;
  SystemdWatchdog& operator=(const SystemdWatchdog&) = delete;
  void stop();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace witmq::daemon
