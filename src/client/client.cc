#include "client/client.h"

#include <fmt/format.h>

#include <boost/asio/executor_work_guard.hpp>

#include "client/admin_json.h"

namespace witmq::client {

namespace asio = boost::asio;

// The client's own I/O thread: runs the io_context until the client is destroyed.
struct Client::IoThread {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread{[this] { io.run(); }};

  // Lets run() return once the work in flight is done, and waits for it.
  void join() {
    work.reset();
    if (thread.joinable()) thread.join();
  }
  ~IoThread() { join(); }
};

namespace {

// A one-shot rendezvous between a completion on the I/O thread and the waiting caller.
template <typename T>
struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<T>> result;

  void set(Result<T> r) {
    std::lock_guard lock(mu);
    result.emplace(std::move(r));
    cv.notify_all();
  }
};

}  // namespace

Client::Client(std::unique_ptr<IoThread> io, AsyncClient::Pointer async, Options options)
    : io_(std::move(io)), async_(std::move(async)), options_(std::move(options)) {}

Client::~Client() {
  async_->close();
  // The connection winds down on the I/O thread; once it is joined nothing refers to the client
  // but async_, which must go before the io_context its socket and timers belong to.
  io_->join();
  async_.reset();
  io_.reset();
}

Result<std::unique_ptr<Client>> Client::connect(const Endpoint& endpoint, std::string name,
                                                Options options) {
  auto io = std::make_unique<IoThread>();
  auto waiter = std::make_shared<Waiter<AsyncClient::Pointer>>();
  AsyncClient::connect(io->io.get_executor(), endpoint, std::move(name), options,
                       [waiter](Result<AsyncClient::Pointer> r) { waiter->set(std::move(r)); });
  std::unique_lock lock(waiter->mu);
  // The connect timeout is enforced by AsyncClient; wait without a limit for its verdict.
  waiter->cv.wait(lock, [&] { return waiter->result.has_value(); });
  Result<AsyncClient::Pointer> r = std::move(*waiter->result);
  lock.unlock();
  if (!r.ok()) return std::move(r).error();
  return std::unique_ptr<Client>(new Client(std::move(io), std::move(*r), std::move(options)));
}

std::string Client::error_trace() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

template <typename T>
Result<T> Client::remember(Result<T> r) {
  if (!r.ok()) {
    std::lock_guard lock(mu_);
    last_error_ = r.error().message;
  }
  return r;
}

template <typename T, typename Start>
Result<T> Client::call(Start&& start, std::chrono::milliseconds wait) {
  auto waiter = std::make_shared<Waiter<T>>();
  start([waiter](Result<T> r) { waiter->set(std::move(r)); });
  std::unique_lock lock(waiter->mu);
  auto ready = [&] { return waiter->result.has_value(); };
  if (wait.count() > 0) {
    if (!waiter->cv.wait_for(lock, wait, ready)) {
      return remember(Result<T>(
          Error(ErrorCode::kUnavailable, fmt::format("no reply from the server within {} ms (the "
                                                     "client's request timeout)",
                                                     wait.count()))));
    }
  } else {
    waiter->cv.wait(lock, ready);
  }
  Result<T> r = std::move(*waiter->result);
  return remember(std::move(r));
}

Status Client::send(std::string_view channel, std::span<const Message> messages) {
  return call<void>([&](StatusCallback cb) { async_->send(channel, messages, std::move(cb)); },
                    options_.request_timeout);
}

Result<std::optional<std::vector<Message>>> Client::subscribe_try_receive(std::string_view channel,
                                                                          uint32_t timeout_ms) {
  auto wait = options_.request_timeout.count() > 0
                  ? options_.request_timeout + std::chrono::milliseconds(timeout_ms)
                  : std::chrono::milliseconds(0);
  return call<std::optional<std::vector<Message>>>(
      [&](Callback<std::optional<std::vector<Message>>> cb) {
        async_->subscribe_try_receive(channel, timeout_ms, std::move(cb));
      },
      wait);
}

Result<std::vector<Message>> Client::subscribe_receive(std::string_view channel) {
  return call<std::vector<Message>>(
      [&](Callback<std::vector<Message>> cb) { async_->subscribe_receive(channel, std::move(cb)); },
      std::chrono::milliseconds(0));
}

Status Client::update_guest_configuration(const GuestConfiguration& config) {
  return call<void>(
      [&](StatusCallback cb) { async_->update_guest_configuration(config, std::move(cb)); },
      options_.request_timeout);
}

Status Client::complete_message(const Message& message) {
  return call<void>([&](StatusCallback cb) { async_->complete_message(message, std::move(cb)); },
                    options_.request_timeout);
}

Status Client::abandon_message(const Message& message) {
  return call<void>([&](StatusCallback cb) { async_->abandon_message(message, std::move(cb)); },
                    options_.request_timeout);
}

Status Client::start_stream(uint32_t credit, StreamHandler handler) {
  if (!handler) {
    {
      std::lock_guard lock(stream_mu_);
      stream_end_.reset();
    }
    handler = [this](Result<Delivery> d) {
      std::lock_guard lock(stream_mu_);
      if (d.ok()) {
        deliveries_.push_back(std::move(*d));
      } else {
        stream_end_ = std::move(d).error();
      }
      stream_cv_.notify_all();
    };
  }
  return call<void>(
      [&](StatusCallback cb) { async_->start_stream(credit, std::move(handler), std::move(cb)); },
      options_.request_timeout);
}

Status Client::grant_credit(uint32_t additional) {
  return call<void>([&](StatusCallback cb) { async_->grant_credit(additional, std::move(cb)); },
                    options_.request_timeout);
}

Result<std::optional<Delivery>> Client::next_delivery(std::chrono::milliseconds timeout) {
  std::unique_lock lock(stream_mu_);
  stream_cv_.wait_for(lock, timeout, [&] { return !deliveries_.empty() || stream_end_; });
  if (!deliveries_.empty()) {
    Delivery d = std::move(deliveries_.front());
    deliveries_.pop_front();
    return std::optional<Delivery>(std::move(d));
  }
  if (stream_end_) {
    lock.unlock();
    return remember(Result<std::optional<Delivery>>(*stream_end_));
  }
  return std::optional<Delivery>();
}

Status Client::stop_stream() {
  return call<void>([&](StatusCallback cb) { async_->stop_stream(std::move(cb)); },
                    options_.request_timeout);
}

Result<std::vector<ChannelStats>> Client::list_channels() {
  auto r = call<std::string>(
      [&](Callback<std::string> cb) {
        async_->admin(net::AdminOp::kChannelList, "{}", std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_channel_list(*r));
}

Status Client::declare_channel(std::string_view name, const ChannelSettings& settings) {
  auto r = call<std::string>(
      [&](Callback<std::string> cb) {
        async_->admin(net::AdminOp::kChannelDeclare, admin_json::declare_request(name, settings),
                      std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return ok_status();
}

Status Client::delete_channel(std::string_view name) {
  auto r = call<std::string>(
      [&](Callback<std::string> cb) {
        async_->admin(net::AdminOp::kChannelDelete, admin_json::name_request(name), std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return ok_status();
}

Result<ChannelStats> Client::channel_stats(std::string_view name) {
  auto r = call<std::string>(
      [&](Callback<std::string> cb) {
        async_->admin(net::AdminOp::kChannelStats, admin_json::name_request(name), std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_channel_stats(*r));
}

Result<std::vector<Message>> Client::browse(std::string_view channel, uint64_t from, uint32_t max) {
  return call<std::vector<Message>>(
      [&](Callback<std::vector<Message>> cb) { async_->browse(channel, from, max, std::move(cb)); },
      options_.request_timeout);
}

Result<uint64_t> Client::replay_dead_letters(std::string_view dlq, std::optional<uint64_t> max) {
  auto r = call<std::string>(
      [&](Callback<std::string> cb) {
        async_->admin(net::AdminOp::kReplayDeadLetters, admin_json::channel_request(dlq, max),
                      std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_count(*r, "moved"));
}

Result<uint64_t> Client::purge(std::string_view channel) {
  auto r = call<std::string>(
      [&](Callback<std::string> cb) {
        async_->admin(net::AdminOp::kPurge, admin_json::channel_request(channel), std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_count(*r, "purged"));
}

Result<std::string> Client::server_stats() {
  return call<std::string>(
      [&](Callback<std::string> cb) {
        async_->admin(net::AdminOp::kServerStats, "{}", std::move(cb));
      },
      options_.request_timeout);
}

Result<uint64_t> Client::ping(uint64_t payload) {
  return call<uint64_t>([&](Callback<uint64_t> cb) { async_->ping(payload, std::move(cb)); },
                        options_.request_timeout);
}

void Client::close() { async_->close(); }

}  // namespace witmq::client
