#include "cluster/fault_proxy.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <list>
#include <string>
#include <vector>

namespace witmq::cluster::testing {

namespace {

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Closes with a reset rather than a FIN, so the peer sees the link break.
void reset(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

int connect_loopback(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  set_nonblocking(fd);
  return fd;
}

// One proxied connection: bytes read from one side wait in that direction's buffer until the
// other side takes them; a side is not read while its buffer holds bytes (back-pressure).
struct Link {
  int fd[2] = {-1, -1};    // 0: the accepted client, 1: the target (-1 until connected)
  std::string pending[2];  // bytes read from side i, to write to side 1-i
  bool eof[2] = {false, false};
};

}  // namespace

FaultProxy::FaultProxy(uint16_t target_port) : target_port_(target_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 128) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      ::pipe2(wake_fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::abort();
  }
  port_ = ntohs(addr.sin_port);
  set_nonblocking(listen_fd_);
  thread_ = std::thread([this] {
    std::list<Link> links;
    Mode applied = Mode::kForward;
    char buf[65536];
    while (!stopping_.load()) {
      const Mode mode = mode_.load();
      if (mode == Mode::kDrop && applied != Mode::kDrop) {
        for (Link& l : links) {
          reset(l.fd[0]);
          reset(l.fd[1]);
        }
        links.clear();
      }
      applied = mode;
      // Connect what waited (accepted in a blackhole).
      if (mode == Mode::kForward) {
        for (auto it = links.begin(); it != links.end();) {
          if (it->fd[1] < 0 && (it->fd[1] = connect_loopback(target_port_.load())) < 0) {
            reset(it->fd[0]);
            it = links.erase(it);
          } else {
            ++it;
          }
        }
      }
      std::vector<pollfd> fds = {{wake_fds_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      std::vector<std::pair<Link*, int>> owners;
      if (mode == Mode::kForward) {
        for (Link& l : links) {
          for (int side = 0; side < 2; ++side) {
            short events = 0;
            if (!l.eof[side] && l.pending[side].empty()) events |= POLLIN;
            if (!l.pending[1 - side].empty()) events |= POLLOUT;
            fds.push_back({l.fd[side], events, 0});
            owners.push_back({&l, side});
          }
        }
      }
      if (::poll(fds.data(), fds.size(), 200) < 0 && errno != EINTR) break;
      if (fds[0].revents & POLLIN) {
        while (::read(wake_fds_[0], buf, sizeof buf) > 0) {
        }
      }
      if (fds[1].revents & POLLIN) {
        for (;;) {
          const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (fd < 0) break;
          ++accepted_;
          if (mode_.load() == Mode::kDrop) {
            reset(fd);
            continue;
          }
          const int one = 1;
          ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          Link l;
          l.fd[0] = fd;
          links.push_back(std::move(l));
        }
      }
      if (mode != Mode::kForward || mode_.load() != Mode::kForward) continue;
      std::vector<Link*> broken;
      for (size_t i = 0; i < owners.size(); ++i) {
        const short revents = fds[i + 2].revents;
        if (revents == 0) continue;
        auto [l, side] = owners[i];
        std::string& out = l->pending[1 - side];
        if ((revents & POLLOUT) && !out.empty()) {
          const ssize_t n = ::send(l->fd[side], out.data(), out.size(), MSG_NOSIGNAL);
          if (n > 0) {
            out.erase(0, static_cast<size_t>(n));
          } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            broken.push_back(l);
            continue;
          }
        }
        if (revents & (POLLIN | POLLHUP | POLLERR)) {
          const ssize_t n = ::recv(l->fd[side], buf, sizeof buf, 0);
          if (n > 0) {
            l->pending[side].append(buf, static_cast<size_t>(n));
          } else if (n == 0) {
            l->eof[side] = true;
          } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            broken.push_back(l);
          }
        }
      }
      for (auto it = links.begin(); it != links.end();) {
        const bool is_broken = std::find(broken.begin(), broken.end(), &*it) != broken.end();
        // The protocols proxied here do not half-close: once one side has ended and what it sent
        // is passed on, the link is over.
        const bool done =
            (it->eof[0] && it->pending[0].empty()) || (it->eof[1] && it->pending[1].empty());
        if (is_broken) {
          // One side broke: the other sees a reset, as through a real link to a dead peer.
          reset(it->fd[0]);
          reset(it->fd[1]);
          it = links.erase(it);
        } else if (done) {
          ::close(it->fd[0]);
          ::close(it->fd[1]);
          it = links.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (Link& l : links) {
      reset(l.fd[0]);
      reset(l.fd[1]);
    }
  });
}

FaultProxy::~FaultProxy() {
  stopping_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_fds_[0]);
  ::close(wake_fds_[1]);
}

void FaultProxy::set_target(uint16_t target_port) { target_port_ = target_port; }

void FaultProxy::set_mode(Mode mode) {
  mode_ = mode;
  wake();
}

void FaultProxy::wake() {
  const char c = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fds_[1], &c, 1);
}

}  // namespace witmq::cluster::testing
