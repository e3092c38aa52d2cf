#include "forward/forwarder.h"

#include <fmt/format.h>

#include <deque>
#include <mutex>
#include <optional>

#include "client/async_client.h"
#include "common/log.h"

namespace witmq::forward {

namespace {

// One client connection's connection to one leader. Requests made before it is open queue, in
// order, and go out once connect-ok arrives.
class Link : public net::ForwardLink, public std::enable_shared_from_this<Link> {
 public:
  Link(Forwarder& owner, boost::asio::any_io_executor executor, net::ForwardTarget target,
       std::string client_name, client::Options options)
      : owner_(owner),
        executor_(std::move(executor)),
        target_(std::move(target)),
        client_name_(std::move(client_name)),
        options_(std::move(options)) {}

  void request(net::Frame request, UniqueFunction<void(Result<net::Frame>)> done) override {
    const net::FrameType op = request.type();
    auto counted = [this, keep = shared_from_this(), op,
                    done = std::move(done)](Result<net::Frame> r) mutable {
      if (r) {
        owner_.count(op);
      } else {
        owner_.count_error();
      }
      done(std::move(r));
    };
    client::AsyncClient::Pointer open;
    bool start = false;
    Error failed;
    {
      std::lock_guard lock(mu_);
      if (failed_) {
        failed = *failed_;
      } else if (client_) {
        open = client_;
      } else {
        queue_.emplace_back(std::move(request), std::move(counted));
        start = !connecting_;
        connecting_ = true;
      }
    }
    if (open) return open->request(std::move(request), std::move(counted));
    if (start) return connect();
    if (!failed.message.empty()) counted(std::move(failed));
  }

  bool usable() const override {
    std::lock_guard lock(mu_);
    return !failed_ && (!client_ || client_->is_open());
  }

  void close() override {
    client::AsyncClient::Pointer open;
    {
      std::lock_guard lock(mu_);
      if (!failed_) failed_ = Error(ErrorCode::kUnavailable, "the client's connection closed");
      open = std::move(client_);
    }
    if (open) open->close();
  }

 private:
  void connect() {
    auto endpoint = client::parse_endpoint(target_.address);
    if (!endpoint) return fail(std::move(endpoint).error());
    client::AsyncClient::connect(
        executor_, *endpoint, client_name_, options_,
        [self = shared_from_this()](Result<client::AsyncClient::Pointer> r) {
          if (!r) return self->fail(std::move(r).error());
          std::deque<Queued> queued;
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
          for (auto& [frame, done] : queued) (*r)->request(std::move(frame), std::move(done));
        });
  }

  void fail(Error error) {
    std::deque<Queued> queued;
    {
      std::lock_guard lock(mu_);
      if (!failed_) {
        failed_ = Error(ErrorCode::kUnavailable,
                        fmt::format("cannot forward to node {} at {}: {}", target_.node,
                                    target_.address, error.message));
      }
      error = *failed_;
      queued.swap(queue_);
    }
    log::info("forwarding: {}", error.message);
    for (auto& [frame, done] : queued) done(error);
  }

  using Queued = std::pair<net::Frame, UniqueFunction<void(Result<net::Frame>)>>;
  Forwarder& owner_;
  boost::asio::any_io_executor executor_;
  const net::ForwardTarget target_;
  const std::string client_name_;
  const client::Options options_;
  mutable std::mutex mu_;  // guards the members below
  client::AsyncClient::Pointer client_;
  bool connecting_ = false;
  std::deque<Queued> queue_;
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

std::shared_ptr<net::ForwardLink> Forwarder::link(const net::ForwardTarget& target,
                                                  const std::string& client_name,
                                                  const std::string& identity) {
  client::Options options;
  options.token = net::forward_token(identity, options_.peer_token);
  options.connect_timeout = options_.timeout;
  return std::make_shared<Link>(*this, executor_, target, client_name, std::move(options));
}

}  // namespace witmq::forward
