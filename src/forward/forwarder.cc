#include "forward/forwarder.h"

#include <fmt/format.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

#include "client/async_client.h"
#include "common/log.h"

namespace witmq::forward {

namespace {

using Clock = std::chrono::steady_clock;
using Done = UniqueFunction<void(Result<net::Frame>)>;

// One client connection's connection to one leader. Requests made before it is open queue, in
// order, and go out once connect-ok arrives.
//
// Every request is bounded (cluster-forward-timeout-ms from the moment it is made: connecting,
// writing and the answer; a subscribe-try-receive gets its own timeout on top). A
// subscribe-receive may rightly wait for as long as no message comes, so it has no deadline of
// its own; instead, while a receive waits and the leader has said nothing for the timeout, the
// link pings it, and a ping unanswered within the timeout counts as a missed deadline (so a
// stopped leader does not hold a long subscribe-try-receive for its whole timeout either). A missed
// deadline fails the whole link: every request on it gets kUnavailable (its outcome is unknown),
// the connection is closed, which gives back on the leader whatever the link held there, and the
// session opens a new link for its next request. One watchdog timer per link checks the
// deadlines, a quarter of the timeout apart, only while requests are outstanding.
class Link : public net::ForwardLink, public std::enable_shared_from_this<Link> {
 public:
  Link(Forwarder& owner, boost::asio::any_io_executor executor, net::ForwardTarget target,
       std::string client_name, client::Options options, std::chrono::milliseconds timeout)
      : owner_(owner),
        executor_(std::move(executor)),
        watchdog_(boost::asio::make_strand(executor_)),
        target_(std::move(target)),
        client_name_(std::move(client_name)),
        options_(std::move(options)),
        timeout_(timeout) {}

  void request(net::Frame request, Done done) override {
    const net::FrameType op = request.type();
    const auto now = Clock::now();
    auto deadline = now + timeout_;
    bool waits = false;  // a receive the leader holds until a message comes
    if (const auto* t = std::get_if<net::SubscribeTryReceive>(&request.body)) {
      deadline += std::chrono::milliseconds(t->timeout_ms);
      waits = t->timeout_ms > 0;
    } else if (const auto* q = std::get_if<net::Request>(&request.body)) {
      // The leader holds the request until its replies come or its own timeout passes.
      deadline += std::chrono::milliseconds(q->timeout_ms);
      waits = true;
    } else if (op == net::FrameType::kSubscribeReceive) {
      deadline = Clock::time_point::max();
      waits = true;
    }
    client::AsyncClient::Pointer open;
    bool start = false;
    bool arm = false;
    Error failed;
    uint64_t seq = 0;
    {
      std::lock_guard lock(mu_);
      if (failed_) {
        failed = *failed_;
      } else {
        seq = ++next_seq_;
        calls_.emplace(seq, Call{op, deadline, waits, std::move(done)});
        if (calls_.size() == 1) heard_ = now;
        arm = !watching_;
        watching_ = true;
        if (client_) {
          open = client_;
        } else {
          queue_.emplace_back(std::move(request), seq);
          start = !connecting_;
          connecting_ = true;
        }
      }
    }
    if (!failed.message.empty()) {
      owner_.count_error();
      return done(std::move(failed));
    }
    if (arm) watch();
    if (open) return open->request(std::move(request), reply_to(seq));
    if (start) connect();
  }

  bool usable() const override {
    std::lock_guard lock(mu_);
    return !failed_ && (!client_ || client_->is_open());
  }

  void close() override {
    fail(Error(ErrorCode::kUnavailable, "the client's connection closed"), false);
  }

 private:
  struct Call {
    net::FrameType op = net::FrameType::kPing;
    Clock::time_point deadline{};  // max(): a subscribe-receive, kept alive by pings instead
    bool waits = false;            // a receive: pings check the leader while it waits
    Done done;
  };

  UniqueFunction<void(Result<net::Frame>)> reply_to(uint64_t seq) {
    return
        [self = shared_from_this(), seq](Result<net::Frame> r) { self->answer(seq, std::move(r)); };
  }

  // The leader's reply to call `seq` (or the error that ended the connection), unless the call
  // was answered already (its deadline passed and the link failed).
  void answer(uint64_t seq, Result<net::Frame> r) {
    Call call;
    {
      std::lock_guard lock(mu_);
      auto it = calls_.find(seq);
      if (it == calls_.end()) return;
      call = std::move(it->second);
      calls_.erase(it);
      if (r) heard_ = Clock::now();
    }
    if (r) {
      owner_.count(call.op);
    } else {
      owner_.count_error();
    }
    call.done(std::move(r));
  }

  void connect() {
    auto endpoint = client::parse_endpoint(target_.address);
    if (!endpoint) return fail(std::move(endpoint).error(), true);
    client::AsyncClient::connect(
        executor_, *endpoint, client_name_, options_,
        [self = shared_from_this()](Result<client::AsyncClient::Pointer> r) {
          if (!r) return self->fail(std::move(r).error(), true);
          std::deque<std::pair<net::Frame, uint64_t>> queued;
          bool closed = false;
          {
            std::lock_guard lock(self->mu_);
            closed = self->failed_.has_value();
            if (!closed) {
              self->client_ = *r;
              queued.swap(self->queue_);
            }
          }
          if (closed) return (*r)->close();
          for (auto& [frame, seq] : queued) (*r)->request(std::move(frame), self->reply_to(seq));
        });
  }

  // Ends the link: every outstanding request gets kUnavailable, and the connection closes.
  void fail(Error error, bool cannot_forward) {
    std::map<uint64_t, Call> calls;
    client::AsyncClient::Pointer open;
    {
      std::lock_guard lock(mu_);
      if (!failed_) {
        failed_ = cannot_forward ? Error(ErrorCode::kUnavailable,
                                         fmt::format("cannot forward to node {} at {}: {}",
                                                     target_.node, target_.address, error.message))
                                 : std::move(error);
      }
      error = *failed_;
      calls.swap(calls_);
      queue_.clear();
      open = std::move(client_);
    }
    if (cannot_forward) log::info("forwarding: {}", error.message);
    if (open) open->close();
    for (auto& [seq, call] : calls) {
      owner_.count_error();
      call.done(error);
    }
  }

  void watch() {
    const auto period =
        std::max<std::chrono::milliseconds>(timeout_ / 4, std::chrono::milliseconds(1));
    watchdog_.expires_after(period);
    watchdog_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->check();
    });
  }

  // The watchdog's tick (on its strand): fails the link when a request's deadline passed or a
  // ping went unanswered; pings when a subscribe-receive waits and the leader has been silent.
  void check() {
    const auto now = Clock::now();
    bool expired = false, waiting = false, ping = false;
    client::AsyncClient::Pointer open;
    {
      std::lock_guard lock(mu_);
      if (failed_ || calls_.empty()) {
        watching_ = false;
        return;
      }
      for (const auto& [seq, call] : calls_) {
        if (call.deadline <= now) expired = true;
        if (call.waits) waiting = true;
      }
      if (!expired && waiting && now - heard_ >= timeout_) {
        if (pinging_) {
          expired = now - ping_sent_ >= timeout_;
        } else if (client_) {
          ping = pinging_ = true;
          ping_sent_ = now;
          open = client_;
        } else {
          expired = true;  // still connecting after the timeout
        }
      }
    }
    if (expired) {
      return fail(Error(ErrorCode::kUnavailable,
                        fmt::format("no answer from node {} at {} within {} ms "
                                    "(cluster-forward-timeout-ms): the outcome is unknown (the "
                                    "operation may or may not have taken effect); the connection "
                                    "to it is closed",
                                    target_.node, target_.address, timeout_.count())),
                  false);
    }
    if (ping) {
      open->ping(0, [self = shared_from_this()](Result<uint64_t> r) {
        if (!r) return;
        std::lock_guard lock(self->mu_);
        self->pinging_ = false;
        self->heard_ = Clock::now();
      });
    }
    watch();
  }

  Forwarder& owner_;
  boost::asio::any_io_executor executor_;
  boost::asio::steady_timer watchdog_;  // on a strand of its own: check() runs one at a time
  const net::ForwardTarget target_;
  const std::string client_name_;
  const client::Options options_;
  const std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;  // guards the members below
  client::AsyncClient::Pointer client_;
  bool connecting_ = false;
  std::deque<std::pair<net::Frame, uint64_t>> queue_;  // requests made before connect-ok
  std::map<uint64_t, Call> calls_;                     // outstanding requests, by sequence
  uint64_t next_seq_ = 0;
  bool watching_ = false;      // the watchdog is armed
  Clock::time_point heard_{};  // the leader's last reply (or the first outstanding request)
  bool pinging_ = false;       // a liveness ping is out
  Clock::time_point ping_sent_{};
  std::optional<Error> failed_;
};

}  // namespace

Forwarder::Forwarder(boost::asio::any_io_executor executor, ForwarderOptions options)
    : executor_(std::move(executor)), options_(std::move(options)) {}

void Forwarder::count(net::FrameType op) {
  forwarded_[static_cast<uint8_t>(op)].fetch_add(1, std::memory_order_relaxed);
}

std::vector<std::pair<std::string, uint64_t>> Forwarder::forwarded() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  for (size_t i = 0; i < forwarded_.size(); ++i) {
    const uint64_t n = forwarded_[i].load(std::memory_order_relaxed);
    if (n != 0) {
      out.emplace_back(std::string(net::frame_type_name(static_cast<net::FrameType>(i))), n);
    }
  }
  return out;
}

void Forwarder::locate(const std::string& channel, net::Locate mode, Located done) {
  cluster::Node* node = node_.load();
  if (!node) {
    count_error();
    return done(Error(
        ErrorCode::kUnavailable,
        fmt::format("channel '{}': this node has not joined the cluster yet; retry", channel)));
  }
  auto answer = [](std::optional<cluster::LeaderInfo> leader) -> std::optional<net::ForwardTarget> {
    if (leader->self) return std::nullopt;
    return net::ForwardTarget{leader->node, leader->client_address};
  };
  if (auto leader = node->leader_of(channel)) return done(answer(std::move(leader)));
  std::string not_member;
  if (mode == net::Locate::kPlaced && node->ready(&not_member) && !node->placed(channel)) {
    return done(Error(ErrorCode::kNotFound,
                      fmt::format("channel '{}': the cluster has not placed it", channel)));
  }
  if (mode == net::Locate::kKnownOnly) {
    count_error();
    return done(
        Error(ErrorCode::kUnavailable,
              fmt::format("channel '{}': no leader is known to this node now; retry", channel)));
  }
  auto shared = std::make_shared<Located>(std::move(done));
  // Only kPlace places a channel; kPlaced waits for the leader of one that is placed.
  node->await_leader(
      channel, mode == net::Locate::kPlace ? options_.default_replicas : 0,
      std::chrono::steady_clock::now() + options_.timeout,
      [this, shared, channel, answer](std::optional<cluster::LeaderInfo> leader) {
        if (leader) return (*shared)(answer(std::move(leader)));
        count_error();
        std::string why;
        (void)node_.load()->ready(&why);
        (*shared)(Error(
            ErrorCode::kUnavailable,
            fmt::format("channel '{}': no leader within {} ms "
                        "(cluster-forward-timeout-ms): no live replica, an election "
                        "under way, or this node is not a member{}; retry",
                        channel, options_.timeout.count(), why.empty() ? "" : " (" + why + ")")));
      });
}

bool Forwarder::leads(const std::string& channel) {
  cluster::Node* node = node_.load();
  if (!node) return false;
  auto leader = node->leader_of(channel);
  return leader && leader->self;
}

std::optional<net::ForwardTarget> Forwarder::inbox_node(std::string_view reply_to) {
  cluster::Node* node = node_.load();
  const size_t slash = reply_to.find('/');
  if (!node || slash == std::string_view::npos || slash == 0) return std::nullopt;
  std::string id(reply_to.substr(0, slash));
  auto address = node->client_address_of(id);
  if (!address) return std::nullopt;
  return net::ForwardTarget{std::move(id), std::move(*address)};
}

std::shared_ptr<net::ForwardLink> Forwarder::link(const net::ForwardTarget& target,
                                                  const std::string& client_name,
                                                  const std::string& identity) {
  client::Options options;
  options.token = net::forward_token(identity, options_.peer_token);
  options.connect_timeout = options_.timeout;
  return std::make_shared<Link>(*this, executor_, target, client_name, std::move(options),
                                options_.timeout);
}

}  // namespace witmq::forward
