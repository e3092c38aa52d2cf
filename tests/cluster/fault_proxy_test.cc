// The fault proxy against a small echo server: forwarding, drop (reset, and new connections
// reset), blackhole (silence, then what waited goes through on heal), and a new target.
#include "cluster/fault_proxy.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace witmq::cluster::testing {
namespace {

// Echoes every byte back, one thread per connection, until destroyed.
class EchoServer {
 public:
  EchoServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) continue;
        workers_.emplace_back([this, c] {
          char buf[4096];
          for (;;) {
            pollfd q{c, POLLIN, 0};
            if (stop_) break;
            if (::poll(&q, 1, 50) <= 0) continue;
            const ssize_t n = ::read(c, buf, sizeof buf);
            if (n <= 0 || ::write(c, buf, static_cast<size_t>(n)) != n) break;
          }
          ::close(c);
        });
      }
    });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
    for (auto& w : workers_) w.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

int connect_to(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

// What comes back within `ms`: the bytes, "" on silence, "<closed>" / "<reset>" when it ended.
std::string read_for(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, ms) <= 0) return "";
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  if (n == 0) return "<closed>";
  if (n < 0) return "<reset>";
  return std::string(buf, static_cast<size_t>(n));
}

void say(int fd, const std::string& s) {
  ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
}

TEST(FaultProxyTest, ForwardsDropsBlackholesAndHeals) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  int a = connect_to(proxy.port());
  say(a, "hello");
  EXPECT_EQ(read_for(a, 2000), "hello");

  // Blackhole: silence both ways, for old and new connections; heal lets the waiting bytes by.
  proxy.blackhole();
  say(a, "held");
  EXPECT_EQ(read_for(a, 300), "");
  const int b = connect_to(proxy.port());
  say(b, "queued");
  EXPECT_EQ(read_for(b, 300), "");
  proxy.heal();
  EXPECT_EQ(read_for(a, 2000), "held");
  EXPECT_EQ(read_for(b, 2000), "queued");

  // Drop: existing connections are reset, new ones too, until healed.
  proxy.drop();
  EXPECT_EQ(read_for(a, 2000), "<reset>");
  EXPECT_EQ(read_for(b, 2000), "<reset>");
  ::close(a);
  ::close(b);
  a = connect_to(proxy.port());
  ::send(a, "x", 1, MSG_NOSIGNAL);
  const std::string refused = read_for(a, 2000);
  EXPECT_TRUE(refused == "<reset>" || refused == "<closed>") << refused;
  ::close(a);
  proxy.heal();
  a = connect_to(proxy.port());
  say(a, "again");
  EXPECT_EQ(read_for(a, 2000), "again");
  ::close(a);

  // A new target (a restarted server on another port).
  EchoServer other;
  proxy.set_target(other.port());
  a = connect_to(proxy.port());
  say(a, "moved");
  EXPECT_EQ(read_for(a, 2000), "moved");
  ::close(a);
  EXPECT_GE(proxy.accepted(), 5u);
}

}  // namespace
}  // namespace witmq::cluster::testing
