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

Client::Client(std::unique_ptr<IoThread> io, AsyncClient::Pointer async, Options options,
               std::vector<Endpoint> servers, size_t server, std::string name)
    : io_(std::move(io)),
      options_(std::move(options)),
      servers_(std::move(servers)),
      name_(std::move(name)),
      async_(std::move(async)),
      server_(server) {}

Client::~Client() {
  close();
  // The connection winds down on the I/O thread; once it is joined nothing refers to the client
  // but async_, which must go before the io_context its socket and timers belong to.
  io_->join();
  async_.reset();
  io_.reset();
}

Result<AsyncClient::Pointer> Client::open(IoThread& io, const Endpoint& server,
                                          const std::string& name, const Options& options) {
  auto waiter = std::make_shared<Waiter<AsyncClient::Pointer>>();
  AsyncClient::connect(io.io.get_executor(), server, name, options,
                       [waiter](Result<AsyncClient::Pointer> r) { waiter->set(std::move(r)); });
  std::unique_lock lock(waiter->mu);
  // The connect timeout is enforced by AsyncClient; wait without a limit for its verdict.
  waiter->cv.wait(lock, [&] { return waiter->result.has_value(); });
  return std::move(*waiter->result);
}

Result<AsyncClient::Pointer> Client::open_any(IoThread& io, const std::vector<Endpoint>& servers,
                                              size_t first, const std::string& name,
                                              const Options& options, size_t* index,
                                              const std::function<bool()>& closed) {
  if (servers.empty()) return invalid_argument("connect: no server given");
  const auto deadline = std::chrono::steady_clock::now() + options.reconnect_timeout;
  auto backoff = std::max(options.reconnect_backoff_min, std::chrono::milliseconds(1));
  std::vector<std::string> failures(servers.size());
  for (;;) {
    for (size_t k = 0; k < servers.size(); ++k) {
      const size_t i = (first + k) % servers.size();
      auto r = open(io, servers[i], name, options);
      if (r) {
        *index = i;
        return r;
      }
      // A refusal that says who the client is or what it sent is final, whichever server.
      const ErrorCode code = r.error().code;
      if (code == ErrorCode::kPermissionDenied || code == ErrorCode::kInvalidArgument ||
          code == ErrorCode::kUnsupported || servers.size() == 1) {
        if (servers.size() == 1 && options.reconnect_timeout.count() > 0 &&
            code == ErrorCode::kUnavailable) {
          failures[i] = r.error().message;
          continue;
        }
        return std::move(r).error();
      }
      failures[i] = r.error().message;
    }
    if (closed && closed()) return Error(ErrorCode::kUnavailable, "client closed");
    const auto now = std::chrono::steady_clock::now();
    if (options.reconnect_timeout.count() == 0 || now + backoff > deadline) break;
    // Bounded backoff between rounds, so that a cluster restarting is not hammered.
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::max(options.reconnect_backoff_max, backoff));
  }
  std::string list;
  for (size_t i = 0; i < servers.size(); ++i) {
    list += fmt::format("{}{}:{}: {}", list.empty() ? "" : "; ", servers[i].host, servers[i].port,
                        failures[i]);
  }
  return Error(ErrorCode::kUnavailable,
               options.reconnect_timeout.count() > 0
                   ? fmt::format("no server answered within {} ms (reconnect timeout): {}",
                                 options.reconnect_timeout.count(), list)
                   : fmt::format("no server answered: {}", list));
}

Result<std::unique_ptr<Client>> Client::connect(std::vector<Endpoint> servers, std::string name,
                                                Options options) {
  auto io = std::make_unique<IoThread>();
  size_t index = 0;
  auto r = open_any(*io, servers, 0, name, options, &index, nullptr);
  if (!r.ok()) return std::move(r).error();
  return std::unique_ptr<Client>(new Client(std::move(io), std::move(*r), std::move(options),
                                            std::move(servers), index, std::move(name)));
}

AsyncClient::Pointer Client::current() const {
  std::lock_guard lock(conn_mu_);
  return async_;
}

Endpoint Client::server() const {
  std::lock_guard lock(conn_mu_);
  return servers_[server_];
}

uint64_t Client::reconnects() const {
  std::lock_guard lock(conn_mu_);
  return reconnects_;
}

bool Client::should_retry(const AsyncClient::Pointer& used, const Error& error) const {
  if (options_.reconnect_timeout.count() == 0 || error.code != ErrorCode::kUnavailable) {
    return false;
  }
  std::lock_guard lock(conn_mu_);
  return !closed_ && !used->is_open();
}

Result<AsyncClient::Pointer> Client::connection(const AsyncClient::Pointer& stale) {
  // Whether async_ is to be replaced: lost, or the stale one. Holds conn_mu_.
  auto lost = [&] { return !async_->is_open() || (stale && async_ == stale); };
  {
    std::lock_guard lock(conn_mu_);
    if (!lost() || closed_ || options_.reconnect_timeout.count() == 0) return async_;
  }
  std::lock_guard reconnecting(reconnect_mu_);
  size_t first = 0;
  AsyncClient::Pointer old;
  {
    std::lock_guard lock(conn_mu_);
    // Another call reconnected while this one waited.
    if (!lost() || closed_) return async_;
    const auto reason = async_->close_reason();
    // A goaway that is not unavailable (a revoked identity, a protocol error) is final.
    if (reason && reason->code != ErrorCode::kUnavailable) return async_;
    first = (server_ + 1) % servers_.size();
    old = async_;
  }
  old->close();
  size_t index = 0;
  auto r = open_any(*io_, servers_, first, name_, options_, &index, [this] {
    std::lock_guard lock(conn_mu_);
    return closed_;
  });
  if (!r) return std::move(r).error();
  AsyncClient::Pointer next = std::move(*r);
  std::optional<GuestConfiguration> config;
  bool stream = false;
  uint32_t credit = 0;
  std::shared_ptr<StreamHandler> handler;
  {
    std::lock_guard lock(conn_mu_);
    if (closed_) {
      next->close();
      return async_;
    }
    async_ = next;
    server_ = index;
    ++reconnects_;
    config = config_;
    stream = stream_wanted_;
    credit = stream_credit_;
    handler = stream_handler_;
  }
  // The consumer resubscribes: its configuration, then its stream.
  if (config) {
    auto waiter = std::make_shared<Waiter<void>>();
    next->update_guest_configuration(*config, [waiter](Status st) { waiter->set(std::move(st)); });
    std::unique_lock lock(waiter->mu);
    waiter->cv.wait(lock, [&] { return waiter->result.has_value(); });
    if (!waiter->result->ok())
      return remember(Result<AsyncClient::Pointer>(waiter->result->error()));
  }
  if (stream && handler) {
    auto waiter = std::make_shared<Waiter<void>>();
    next->start_stream(
        credit, [handler](Result<Delivery> d) { (*handler)(std::move(d)); },
        [waiter](Status st) { waiter->set(std::move(st)); });
    std::unique_lock lock(waiter->mu);
    waiter->cv.wait(lock, [&] { return waiter->result.has_value(); });
    if (!waiter->result->ok())
      return remember(Result<AsyncClient::Pointer>(waiter->result->error()));
  }
  return next;
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
Result<T> Client::call_once(const AsyncClient::Pointer& a, Start& start,
                            std::chrono::milliseconds wait) {
  auto waiter = std::make_shared<Waiter<T>>();
  start(a, [waiter](Result<T> r) { waiter->set(std::move(r)); });
  std::unique_lock lock(waiter->mu);
  auto ready = [&] { return waiter->result.has_value(); };
  if (wait.count() > 0) {
    if (!waiter->cv.wait_for(lock, wait, ready)) {
      return Error(ErrorCode::kUnavailable,
                   fmt::format("no reply from the server within {} ms (the "
                               "client's request timeout)",
                               wait.count()));
    }
  } else {
    waiter->cv.wait(lock, ready);
  }
  return std::move(*waiter->result);
}

template <typename T, typename Start>
Result<T> Client::call(Start&& start, std::chrono::milliseconds wait, bool retry) {
  auto a = connection();
  if (!a) return remember(Result<T>(std::move(a).error()));
  Result<T> r = call_once<T>(*a, start, wait);
  if (!r && retry && should_retry(*a, r.error())) {
    auto again = connection();
    if (!again) return remember(Result<T>(std::move(again).error()));
    r = call_once<T>(*again, start, wait);
  }
  return remember(std::move(r));
}

Status Client::send(std::string_view channel, std::span<const Message> messages) {
  // Not made again after a reconnection: the batch may have been stored before the connection
  // was lost.
  return call<void>([&](const AsyncClient::Pointer& a,
                        StatusCallback cb) { a->send(channel, messages, std::move(cb)); },
                    options_.request_timeout, /*retry=*/false);
}

Result<std::optional<std::vector<Message>>> Client::subscribe_try_receive(std::string_view channel,
                                                                          uint32_t timeout_ms) {
  auto wait = options_.request_timeout.count() > 0
                  ? options_.request_timeout + std::chrono::milliseconds(timeout_ms)
                  : std::chrono::milliseconds(0);
  return call<std::optional<std::vector<Message>>>(
      [&](const AsyncClient::Pointer& a, Callback<std::optional<std::vector<Message>>> cb) {
        a->subscribe_try_receive(channel, timeout_ms, std::move(cb));
      },
      wait);
}

Result<std::vector<Message>> Client::subscribe_receive(std::string_view channel) {
  return call<std::vector<Message>>(
      [&](const AsyncClient::Pointer& a, Callback<std::vector<Message>> cb) {
        a->subscribe_receive(channel, std::move(cb));
      },
      std::chrono::milliseconds(0));
}

Status Client::update_guest_configuration(const GuestConfiguration& config) {
  Status st =
      call<void>([&](const AsyncClient::Pointer& a,
                     StatusCallback cb) { a->update_guest_configuration(config, std::move(cb)); },
                 options_.request_timeout);
  if (st) {
    std::lock_guard lock(conn_mu_);
    config_ = config;
  }
  return st;
}

Result<std::vector<Message>> Client::request(std::string_view channel, const Message& message,
                                             std::chrono::milliseconds timeout,
                                             uint32_t expected_replies) {
  auto wait = options_.request_timeout.count() > 0 ? options_.request_timeout + timeout
                                                   : std::chrono::milliseconds(0);
  return call<std::vector<Message>>(
      [&](const AsyncClient::Pointer& a, Callback<std::vector<Message>> cb) {
        a->request(channel, message, static_cast<uint32_t>(timeout.count()), expected_replies,
                   std::move(cb));
      },
      wait, /*retry=*/false);
}

Status Client::reply(const Message& request, const Message& reply) {
  return call<void>([&](const AsyncClient::Pointer& a,
                        StatusCallback cb) { a->reply(request, reply, std::move(cb)); },
                    options_.request_timeout);
}

Status Client::complete_message(const Message& message) {
  return call<void>([&](const AsyncClient::Pointer& a,
                        StatusCallback cb) { a->complete_message(message, std::move(cb)); },
                    options_.request_timeout);
}

Status Client::abandon_message(const Message& message) {
  return call<void>([&](const AsyncClient::Pointer& a,
                        StatusCallback cb) { a->abandon_message(message, std::move(cb)); },
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
  // One handler for every connection the stream runs on.
  auto shared = std::make_shared<StreamHandler>(std::move(handler));
  Status st = call<void>(
      [&](const AsyncClient::Pointer& a, StatusCallback cb) {
        a->start_stream(
            credit, [shared](Result<Delivery> d) { (*shared)(std::move(d)); }, std::move(cb));
      },
      options_.request_timeout);
  if (st) {
    std::lock_guard lock(conn_mu_);
    stream_wanted_ = true;
    stream_credit_ = credit;
    stream_handler_ = std::move(shared);
  }
  return st;
}

Status Client::grant_credit(uint32_t additional) {
  return call<void>([&](const AsyncClient::Pointer& a,
                        StatusCallback cb) { a->grant_credit(additional, std::move(cb)); },
                    options_.request_timeout);
}

Result<std::optional<Delivery>> Client::next_delivery(std::chrono::milliseconds timeout) {
  std::unique_lock lock(stream_mu_);
  if (deliveries_.empty() && stream_end_ && stream_end_->code == ErrorCode::kUnavailable) {
    // The stream ended with its connection: with reconnection, a new connection restores it.
    const Error ended = *stream_end_;
    lock.unlock();
    bool restored = false;
    const AsyncClient::Pointer used = current();
    bool retry = false;
    {
      std::lock_guard conn(conn_mu_);
      retry = options_.reconnect_timeout.count() > 0 && !closed_ && stream_wanted_;
    }
    if (retry) {
      // The server ended the stream with unavailable (it is shutting down, or the connection
      // was lost): the stream moves to the next server.
      auto next = connection(used);
      if (!next) return remember(Result<std::optional<Delivery>>(std::move(next).error()));
      restored = true;
    }
    lock.lock();
    if (restored) stream_end_.reset();
  }
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
  {
    std::lock_guard lock(conn_mu_);
    stream_wanted_ = false;
    stream_handler_.reset();
  }
  return call<void>(
      [&](const AsyncClient::Pointer& a, StatusCallback cb) { a->stop_stream(std::move(cb)); },
      options_.request_timeout, /*retry=*/false);
}

Result<std::vector<ChannelStats>> Client::list_channels() {
  auto r = call<std::string>(
      [&](const AsyncClient::Pointer& a, Callback<std::string> cb) {
        a->admin(net::AdminOp::kChannelList, "{}", std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_channel_list(*r));
}

Status Client::declare_channel(std::string_view name, const ChannelSettings& settings) {
  auto r = call<std::string>(
      [&](const AsyncClient::Pointer& a, Callback<std::string> cb) {
        a->admin(net::AdminOp::kChannelDeclare, admin_json::declare_request(name, settings),
                 std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return ok_status();
}

Status Client::delete_channel(std::string_view name) {
  auto r = call<std::string>(
      [&](const AsyncClient::Pointer& a, Callback<std::string> cb) {
        a->admin(net::AdminOp::kChannelDelete, admin_json::name_request(name), std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return ok_status();
}

Result<ChannelStats> Client::channel_stats(std::string_view name) {
  auto r = call<std::string>(
      [&](const AsyncClient::Pointer& a, Callback<std::string> cb) {
        a->admin(net::AdminOp::kChannelStats, admin_json::name_request(name), std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_channel_stats(*r));
}

Result<std::vector<Message>> Client::browse(std::string_view channel, uint64_t from, uint32_t max) {
  return call<std::vector<Message>>(
      [&](const AsyncClient::Pointer& a, Callback<std::vector<Message>> cb) {
        a->browse(channel, from, max, std::move(cb));
      },
      options_.request_timeout);
}

Result<uint64_t> Client::replay_dead_letters(std::string_view dlq, std::optional<uint64_t> max) {
  auto r = call<std::string>(
      [&](const AsyncClient::Pointer& a, Callback<std::string> cb) {
        a->admin(net::AdminOp::kReplayDeadLetters, admin_json::channel_request(dlq, max),
                 std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_count(*r, "moved"));
}

Result<uint64_t> Client::purge(std::string_view channel) {
  auto r = call<std::string>(
      [&](const AsyncClient::Pointer& a, Callback<std::string> cb) {
        a->admin(net::AdminOp::kPurge, admin_json::channel_request(channel), std::move(cb));
      },
      options_.request_timeout);
  if (!r.ok()) return std::move(r).error();
  return remember(admin_json::parse_count(*r, "purged"));
}

Result<std::string> Client::server_stats() {
  return call<std::string>(
      [&](const AsyncClient::Pointer& a, Callback<std::string> cb) {
        a->admin(net::AdminOp::kServerStats, "{}", std::move(cb));
      },
      options_.request_timeout);
}

Result<uint64_t> Client::ping(uint64_t payload) {
  return call<uint64_t>([&](const AsyncClient::Pointer& a,
                            Callback<uint64_t> cb) { a->ping(payload, std::move(cb)); },
                        options_.request_timeout);
}

void Client::close() {
  AsyncClient::Pointer a;
  {
    std::lock_guard lock(conn_mu_);
    closed_ = true;
    a = async_;
  }
  a->close();
}

}  // namespace witmq::client
