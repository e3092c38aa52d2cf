#include "daemon/sd_notify.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

#include "common/log.h"

namespace witmq::daemon {

namespace {

std::optional<uint64_t> parse_unsigned(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

}  // namespace

SystemdNotifier SystemdNotifier::from_environment() {
  SystemdNotifier n;
  const char* socket_env = std::getenv("NOTIFY_SOCKET");
  if (!socket_env || !*socket_env) return n;
  std::string address = socket_env;
  if (address.front() == '@') {
    address.front() = '\0';
  } else if (address.front() != '/') {
    log::warn("NOTIFY_SOCKET '{}': not a socket path or @abstract name; not notifying systemd",
              socket_env);
    return n;
  }
  if (address.size() > sizeof(sockaddr_un::sun_path)) {
    log::warn("NOTIFY_SOCKET '{}': longer than a unix socket address; not notifying systemd",
              socket_env);
    return n;
  }
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log::warn("NOTIFY_SOCKET: cannot create a unix datagram socket: {}", std::strerror(errno));
    return n;
  }
  n.fd_ = fd;
  n.address_ = std::move(address);

  const char* usec_env = std::getenv("WATCHDOG_USEC");
  const char* pid_env = std::getenv("WATCHDOG_PID");
  if (usec_env && *usec_env) {
    const auto usec = parse_unsigned(usec_env);
    const auto pid = pid_env && *pid_env ? parse_unsigned(pid_env) : std::optional<uint64_t>();
    if (!usec || *usec == 0) {
      log::warn("WATCHDOG_USEC '{}': not a positive number of microseconds; no watchdog", usec_env);
    } else if (!pid_env || !*pid_env || (pid && *pid == static_cast<uint64_t>(::getpid()))) {
      n.watchdog_ = std::chrono::microseconds(*usec);
    }
  }
  return n;
}

SystemdNotifier::~SystemdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

SystemdNotifier::SystemdNotifier(SystemdNotifier&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      address_(std::move(other.address_)),
      watchdog_(other.watchdog_),
      warned_(other.warned_) {}

SystemdNotifier& SystemdNotifier::operator=(SystemdNotifier&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    address_ = std::move(other.address_);
    watchdog_ = other.watchdog_;
    warned_ = other.warned_;
  }
  return *this;
}

bool SystemdNotifier::notify(std::string_view state) {
  if (fd_ < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address_.data(), address_.size());
  // An abstract name's length is exactly its bytes; a path's includes the terminating NUL.
  const socklen_t length = static_cast<socklen_t>(
      offsetof(sockaddr_un, sun_path) + address_.size() + (address_.front() == '\0' ? 0 : 1));
  ssize_t n;
  do {
    n = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&addr), length);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (!warned_) {
      warned_ = true;
      log::warn("cannot notify systemd on NOTIFY_SOCKET: {}", std::strerror(errno));
    }
    return false;
  }
  return true;
}

void SystemdNotifier::ready(std::string_view status) {
  notify(fmt::format("READY=1\nSTATUS={}\nMAINPID={}", status, ::getpid()));
}

void SystemdNotifier::reloading() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const uint64_t usec =
      static_cast<uint64_t>(now.tv_sec) * 1'000'000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
  notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", usec));
}

void SystemdNotifier::stopping() { notify("STOPPING=1"); }

// Every use of the timer and of `notifier` happens under `mu`, so stop() (any thread) and the
// timer's handler (an I/O thread) never race; after stop() the handler does nothing.
struct SystemdWatchdog::State : std::enable_shared_from_this<State> {
  State(boost::asio::any_io_executor executor, SystemdNotifier& n)
      : timer(executor), notifier(&n) {}
  std::mutex mu;
  boost::asio::steady_timer timer;
  SystemdNotifier* notifier;
  std::chrono::microseconds period{0};

  void arm() {
    timer.expires_after(period);
    timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return;
      std::lock_guard lock(self->mu);
      if (!self->notifier) return;
      self->notifier->notify("WATCHDOG=1");
      self->arm();
    });
  }
};

SystemdWatchdog::SystemdWatchdog(boost::asio::any_io_executor executor, SystemdNotifier& notifier) {
  const auto interval = notifier.watchdog_interval();
  if (!notifier.enabled() || !interval) return;
  state_ = std::make_shared<State>(std::move(executor), notifier);
  state_->period = std::max(std::chrono::microseconds(1), *interval / 2);
  std::lock_guard lock(state_->mu);
  state_->notifier->notify("WATCHDOG=1");
  state_->arm();
  log::info("systemd watchdog: WATCHDOG=1 every {} ms", state_->period.count() / 1000);
}

void SystemdWatchdog::stop() {
  if (!state_) return;
  std::lock_guard lock(state_->mu);
  state_->notifier = nullptr;
  state_->timer.cancel();
}

}  // namespace witmq::daemon
