// The pieces of the randomized concurrency test (torture_test.cc, docs/OPERATIONS.md "Torture
// test"): a non-blocking protocol connection that tells a goaway from a bare close, the record of
// failures by kind, and the model of what the daemon must still hold after a crash.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/codec.h"
#include "net/frames.h"

namespace witmq::daemon::torture {

using Clock = std::chrono::steady_clock;

// One protocol connection on 127.0.0.1, read without blocking longer than asked. Unlike the
// suite's test client it reports, rather than fails on, a refused connect and a close, so that the
// harness can tell an expected close (the daemon was killed) from an unexplained one.
class Wire {
 public:
  enum class Got { kFrame, kNothing, kClosed, kMalformed };

  Wire() {
    limits_.max_frame_bytes = 1u << 30;
    limits_.max_batch_messages = 1u << 30;
    limits_.max_message_bytes = 1u << 30;
    limits_.max_metadata_entries = 1u << 20;
    limits_.max_metadata_bytes = 1u << 30;
    limits_.max_config_channels = 1u << 20;
  }
  ~Wire() { close(); }
  Wire(const Wire&) = delete;
  Wire& operator=(const Wire&) = delete;

  // Connects; false (and errno's text in *why) when the daemon does not accept.
  bool open(uint16_t port, std::string* why) {
    close();
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      *why = strerror(errno);
      close();
      return false;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    closed_ = false;
    in_.clear();
    pos_ = 0;
    return true;
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    closed_ = true;
  }

  bool is_open() const { return fd_ >= 0; }

  // Encodes and writes a frame; false when the connection is gone.
  bool send(const net::Frame& frame) {
    if (fd_ < 0) return false;
    net::Buffer out;
    net::encode(out, frame);
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::send(fd_, out.data() + done, out.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // The next frame, waiting at most `timeout` for bytes. kClosed once the server closed (or reset)
  // the connection and every frame before the close was returned.
  Got read(net::Frame* frame, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      auto r = net::decode_frame(std::span<const uint8_t>(in_).subspan(pos_), net::Side::kClient,
                                 limits_);
      if (auto* d = std::get_if<net::Decoded>(&r)) {
        *frame = std::move(d->frame);
        pos_ += d->frame_bytes;
        return Got::kFrame;
      }
      if (std::get_if<net::DecodeError>(&r)) return Got::kMalformed;
      if (closed_) return Got::kClosed;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))) <= 0) {
        return Got::kNothing;
      }
      uint8_t buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fd_);
        fd_ = -1;
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

 private:
  int fd_ = -1;
  bool closed_ = true;
  std::vector<uint8_t> in_;
  size_t pos_ = 0;  // in_[pos_..] is not decoded yet
  net::Limits limits_;
};

// What the run saw: operations and replies by kind, and the failures (broken invariants) by kind
// with the first few details of each. Shared by every thread of the run.
class Findings {
 public:
  void count(const std::string& what, uint64_t n = 1) {
    std::lock_guard lock(mu_);
    counts_[what] += n;
  }
  void fail(const std::string& kind, const std::string& detail) {
    const double at = std::chrono::duration<double>(Clock::now() - start_).count();
    std::lock_guard lock(mu_);
    auto& f = failures_[kind];
    if (f.details.size() < kDetailsPerKind) {
      char when[32];
      snprintf(when, sizeof when, "[%.3f s] ", at);
      f.details.push_back(when + detail);
    }
    ++f.count;
  }
  void max(const std::string& what, uint64_t value) {
    std::lock_guard lock(mu_);
    counts_[what] = std::max(counts_[what], value);
  }
  uint64_t failure_count() {
    std::lock_guard lock(mu_);
    uint64_t n = 0;
    for (auto& [kind, f] : failures_) n += f.count;
    return n;
  }

  struct Failure {
    uint64_t count = 0;
    std::vector<std::string> details;
  };
  std::map<std::string, Failure> failures() {
    std::lock_guard lock(mu_);
    return failures_;
  }
  std::map<std::string, uint64_t> counts() {
    std::lock_guard lock(mu_);
    return counts_;
  }

 private:
  static constexpr size_t kDetailsPerKind = 5;
  const Clock::time_point start_ = Clock::now();
  std::mutex mu_;
  std::map<std::string, uint64_t> counts_;
  std::map<std::string, Failure> failures_;
};

// What the daemon must hold: every message whose send was confirmed, on a channel that was
// neither deleted nor purged since, is still stored after a crash (in its channel, or in its
// dead-letter channel if deliveries the harness never saw failed often enough, unless that one
// was deleted or purged since), unless the harness saw it delivered (a consumer may have settled
// it). "Since" includes a delete or purge given up unanswered before the send: the daemon may
// carry it out later, until it stops. Events are ordered by one logical clock; a message's send
// starts at a tick, and an event after that tick may have touched it.
class Model {
 public:
  // A send of message `id` to `channel` is about to be written.
  void sending(const std::string& id, const std::string& channel) {
    std::lock_guard lock(mu_);
    msgs_[id] = Msg{channel, ++clock_, false, false};
  }
  void confirmed(const std::string& id) {
    std::lock_guard lock(mu_);
    if (auto it = msgs_.find(id); it != msgs_.end()) it->second.confirmed = true;
  }
  // A consumer of the harness received it: from now on anything may have settled it.
  void seen(const std::string& id) {
    std::lock_guard lock(mu_);
    if (auto it = msgs_.find(id); it != msgs_.end()) it->second.seen = true;
  }
  // A delete or purge of `channel` was sent or answered: messages sent before may be gone.
  void disrupted(const std::string& channel) {
    std::lock_guard lock(mu_);
    disrupted_[channel] = ++clock_;
  }
  // A delete or purge of `channel` was given up unanswered (its connection was closed). The
  // daemon may still carry it out at any moment until it stops: a request it has read runs even
  // when its connection is gone (an admin call waiting for the one admin thread, say). So every
  // message sent to the channel before that stop may be gone, and a given-up delete stays in
  // flight (for the stats comparisons) until then.
  void given_up_removal(const std::string& channel, bool is_delete) {
    std::lock_guard lock(mu_);
    disrupted_[channel] = ++clock_;
    uint64_t& deletes = given_up_[channel];
    if (is_delete) ++deletes;
  }
  // The daemon stopped (killed, or died): what was given up is now done or never will be, and
  // deliveries the harness never read (the kill itself cut some) may dead-letter their messages
  // after the restart.
  void daemon_stopped() {
    std::lock_guard lock(mu_);
    ++clock_;
    for (const auto& [channel, deletes] : given_up_) {
      disrupted_[channel] = clock_;
      deletes_finished_[channel] += deletes;
    }
    given_up_.clear();
    for (const auto& [id, m] : msgs_) unseen_[m.channel] = clock_;
  }
  // Deliveries of `channel` may have been made that the harness never read (a connection closed
  // with a receive or a stream pending, a crash): their failed attempts may dead-letter them.
  void unseen_deliveries(const std::string& channel) {
    std::lock_guard lock(mu_);
    unseen_[channel] = ++clock_;
  }

  // The confirmed messages the daemon must hold, of those not in `found`; forgets the messages
  // it need not check again (exempt ones, found ones stay).
  std::vector<std::pair<std::string, std::string>> missing(const std::set<std::string>& found,
                                                           uint64_t* checked) {
    std::lock_guard lock(mu_);
    std::vector<std::pair<std::string, std::string>> out;
    *checked = 0;
    for (auto it = msgs_.begin(); it != msgs_.end();) {
      const Msg& m = it->second;
      if (!m.confirmed || exempt(m)) {
        it = msgs_.erase(it);
        continue;
      }
      ++*checked;
      if (!found.count(it->first)) out.emplace_back(it->first, m.channel);
      ++it;
    }
    return out;
  }

  // A new data directory: nothing is expected any more.
  void forget_messages() {
    std::lock_guard lock(mu_);
    msgs_.clear();
  }

  static bool is_dead_letter_name(const std::string& channel) {
    return channel.ends_with(".dlq") || channel.ends_with(".dead");
  }

  // Per channel: deletes sent and deletes finished (answered or given up), so that two stats
  // samples are compared only when no delete can lie between them.
  void delete_started(const std::string& channel) {
    std::lock_guard lock(mu_);
    ++deletes_started_[channel];
  }
  void delete_finished(const std::string& channel) {
    std::lock_guard lock(mu_);
    ++deletes_finished_[channel];
  }
  std::pair<uint64_t, uint64_t> deletes(const std::string& channel) {
    std::lock_guard lock(mu_);
    return {deletes_started_[channel], deletes_finished_[channel]};
  }

 private:
  struct Msg {
    std::string channel;
    uint64_t sent_at = 0;
    bool confirmed = false;
    bool seen = false;
  };
  bool exempt(const Msg& m) {
    if (m.seen) return true;
    if (disrupted_[m.channel] > m.sent_at) return true;
    // Its dead-letter channel is "<channel>.dlq" or "<channel>.dead" (the harness declares no
    // other).
    return unseen_[m.channel] > m.sent_at && (disrupted_[m.channel + ".dlq"] > m.sent_at ||
                                              disrupted_[m.channel + ".dead"] > m.sent_at);
  }

  std::mutex mu_;
  uint64_t clock_ = 0;
  std::unordered_map<std::string, Msg> msgs_;
  std::map<std::string, uint64_t> disrupted_, unseen_;
  std::map<std::string, uint64_t> deletes_started_, deletes_finished_;
  // Per channel, since the daemon last stopped: deletes given up unanswered (a channel is here
  // also when only purges were given up).
  std::map<std::string, uint64_t> given_up_;
};

}  // namespace witmq::daemon::torture
