// A small blocking protocol client for the daemon tests, built on the codec alone (net/codec.h):
// raw frames over a real loopback socket, every read bounded by a timeout.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/message.h"
#include "net/codec.h"
#include "net/frames.h"

namespace witmq::daemon::testing {

using namespace std::chrono_literals;
using net::Frame;

inline Message text_message(std::string_view text, Metadata metadata = {}) {
  Message m;
  m.data.assign(text.begin(), text.end());
  m.format = Format::kRaw;
  if (!metadata.empty()) m.metadata = std::move(metadata);
  return m;
}

inline std::string text(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

inline std::string meta_value(const Message& m, std::string_view key) {
  const std::string* v = find_metadata(m, key);
  return v ? *v : std::string();
}

// What complete/abandon need: just the receipt (docs/PROTOCOL.md 6.5).
inline Message receipt_of(const Message& m) {
  Message r;
  r.metadata = Metadata{{std::string(meta::kReceipt), meta_value(m, meta::kReceipt)}};
  return r;
}

// One connection to the daemon.
class Conn {
 public:
  enum class Status { kFrame, kTimeout, kClosed, kMalformed };
  struct Read {
    Status status = Status::kTimeout;
    Frame frame;
  };

  // receive_buffer > 0 fixes the socket's receive buffer (SO_RCVBUF, set before connecting, so
  // the kernel does not grow it): a client that stops reading then holds little in the kernel.
  explicit Conn(uint16_t port, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (receive_buffer > 0) {
      setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ADD_FAILURE() << "connect to 127.0.0.1:" << port << ": " << strerror(errno);
      ::close(fd_);
      fd_ = -1;
      closed_ = true;
      return;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    limits_.max_frame_bytes = 1u << 30;
    limits_.max_batch_messages = 1u << 30;
    limits_.max_message_bytes = 1u << 30;
    limits_.max_metadata_entries = 1u << 20;
    limits_.max_metadata_bytes = 1u << 30;
    limits_.max_config_channels = 1u << 20;
  }
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  uint32_t next_id() { return next_id_++; }

  // Writes bytes as they are; false when the connection is gone.
  bool write(const std::vector<uint8_t>& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  bool send(const Frame& f) {
    net::Buffer out;
    net::encode(out, f);
    return write(out);
  }
  // Sends `body` with a fresh request id and returns the id.
  uint32_t send(net::Body body) {
    const uint32_t id = next_id();
    send(Frame{id, std::move(body)});
    return id;
  }

  // The next frame from the server, waiting at most `timeout`.
  Read read(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto r = net::decode_frame(std::span<const uint8_t>(in_).subspan(pos_), net::Side::kClient,
                                 limits_);
      if (auto* d = std::get_if<net::Decoded>(&r)) {
        Read out{Status::kFrame, std::move(d->frame)};
        pos_ += d->frame_bytes;
        if (pos_ == in_.size()) {
          in_.clear();
          pos_ = 0;
        }
        return out;
      }
      if (auto* e = std::get_if<net::DecodeError>(&r)) {
        ADD_FAILURE() << "the server sent a malformed frame: " << e->error.to_string();
        return {Status::kMalformed, {}};
      }
      if (closed_) return {Status::kClosed, {}};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {Status::kTimeout, {}};
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      uint8_t buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        continue;
      }
      if (pos_ > 0) {
        in_.erase(in_.begin(), in_.begin() + static_cast<ptrdiff_t>(pos_));
        pos_ = 0;
      }
      in_.insert(in_.end(), buf, buf + n);
    }
  }

  // The reply to request `id`; frames for other ids (deliver, other replies) are kept in
  // `others`. Fails the test on timeout or close.
  Frame reply(uint32_t id, std::chrono::milliseconds timeout = 10s) {
    for (auto it = others.begin(); it != others.end(); ++it) {
      if (it->request_id == id && !is_push(*it)) {
        Frame f = std::move(*it);
        others.erase(it);
        return f;
      }
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      Read r = read(std::max(left, 0ms));
      if (r.status != Status::kFrame) {
        ADD_FAILURE() << "no reply to request " << id << " (status " << static_cast<int>(r.status)
                      << ")";
        return Frame{id, net::ErrorReply{Error(ErrorCode::kInternal, "no reply")}};
      }
      if (r.frame.request_id == id && !is_push(r.frame)) return std::move(r.frame);
      others.push_back(std::move(r.frame));
    }
  }

  Frame call(net::Body body, std::chrono::milliseconds timeout = 10s) {
    return reply(send(std::move(body)), timeout);
  }

  // Connects as `name`; fails the test unless connect-ok comes back.
  net::ConnectOk hello(std::string name = "") {
    Frame f = call(net::Connect{{net::kProtocolVersion}, std::move(name), std::nullopt});
    auto* ok = std::get_if<net::ConnectOk>(&f.body);
    if (!ok) {
      ADD_FAILURE() << "connect failed: frame type " << static_cast<int>(f.type());
      return {};
    }
    return *ok;
  }

  // The next pushed frame (deliver, stream-end), from `others` first.
  std::optional<Frame> next_push(std::chrono::milliseconds timeout) {
    for (auto it = others.begin(); it != others.end(); ++it) {
      if (is_push(*it)) {
        Frame f = std::move(*it);
        others.erase(it);
        return f;
      }
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      Read r = read(left);
      if (r.status != Status::kFrame) return std::nullopt;
      if (is_push(r.frame)) return std::move(r.frame);
      others.push_back(std::move(r.frame));
    }
  }

  // Closes the write side (the server sees EOF).
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    closed_ = true;
  }

  static bool is_push(const Frame& f) {
    return f.type() == net::FrameType::kDeliver || f.type() == net::FrameType::kStreamEnd;
  }

  std::deque<Frame> others;

 private:
  int fd_ = -1;
  bool closed_ = false;
  uint32_t next_id_ = 1;
  std::vector<uint8_t> in_;
  size_t pos_ = 0;  // in_[pos_..] is not decoded yet
  net::Limits limits_;
};

// The error of a reply, or nullopt when it is not an error frame.
inline std::optional<Error> error_of(const Frame& f) {
  if (auto* e = std::get_if<net::ErrorReply>(&f.body)) return e->error;
  if (auto* g = std::get_if<net::Goaway>(&f.body)) return g->error;
  return std::nullopt;
}

inline std::string describe(const Frame& f) {
  std::string s(net::frame_type_name(f.type()));
  if (auto e = error_of(f)) s += ": " + e->to_string();
  return s;
}

#define EXPECT_FRAME(frame, type_) \
  EXPECT_EQ((frame).type(), net::FrameType::type_) << describe(frame)
#define ASSERT_FRAME(frame, type_) \
  ASSERT_EQ((frame).type(), net::FrameType::type_) << describe(frame)

}  // namespace witmq::daemon::testing
