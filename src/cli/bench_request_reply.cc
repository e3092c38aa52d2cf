#include "cli/bench_request_reply.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "client/async_client.h"
#include "client/client.h"

namespace witmq::cli {
namespace {

namespace asio = boost::asio;
using client::AsyncClient;

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// What every requester and responder shares.
struct Shared {
  Shared(const BenchOptions& options, std::string ch) : o(options), channel(std::move(ch)) {}
  const BenchOptions& o;
  std::string channel;
  uint64_t deadline_ns = 0;  // --duration: no request starts after it
  std::mutex mu;
  std::condition_variable cv;
  uint32_t requesters_done = 0;
  LatencyHistogram latency;  // merged from the requesters as they finish
  uint64_t round_trips = 0, failures = 0;
  uint64_t last_ns = 0;
  std::vector<std::string> errors;

  void error(std::string text) {
    std::lock_guard lock(mu);
    if (errors.size() < 5) errors.push_back(std::move(text));
  }
};

// Keeps --pipeline requests waiting until its quota is sent, then reports to Shared.
class Requester : public std::enable_shared_from_this<Requester> {
 public:
  Requester(Shared& s, AsyncClient::Pointer c, uint64_t quota)
      : s_(s), c_(std::move(c)), quota_(quota) {
    message_.data.assign(s.o.size, 'r');
  }

  void start() {
    for (uint32_t i = 0; i < s_.o.pipeline; ++i) next();
  }

 private:
  // Issues one more request if the quota (or the duration) allows; finishes when none is left
  // in flight. Runs on the connection's strand or before any completion.
  void next() {
    const uint64_t now = now_ns();
    if (sent_ >= quota_ || (s_.deadline_ns != 0 && now >= s_.deadline_ns)) {
      if (in_flight_ == 0 && !finished_) finish();
      return;
    }
    ++sent_;
    ++in_flight_;
    c_->request(s_.channel, message_, 30'000, 1,
                [self = shared_from_this(), start = now](Result<std::vector<Message>> r) {
                  self->answered(start, std::move(r));
                });
  }

  void answered(uint64_t start, Result<std::vector<Message>> r) {
    --in_flight_;
    if (r.ok() && r->size() == 1) {
      const uint64_t end = now_ns();
      latency_.record(end - start);
      ++round_trips_;
      last_ns_ = end;
    } else {
      ++failures_;
      s_.error(r.ok() ? std::string("a request-ok without exactly one reply")
                      : r.error().to_string());
      // A connection that failed ends this requester: no more requests can succeed on it.
      if (!c_->is_open()) sent_ = quota_;
    }
    next();
  }

  void finish() {
    finished_ = true;
    std::lock_guard lock(s_.mu);
    s_.latency.merge(latency_);
    s_.round_trips += round_trips_;
    s_.failures += failures_;
    s_.last_ns = std::max(s_.last_ns, last_ns_);
    ++s_.requesters_done;
    s_.cv.notify_all();
  }

  Shared& s_;
  AsyncClient::Pointer c_;
  const uint64_t quota_;
  Message message_;
  // Strand only (each requester's completions run on its connection's strand; start() runs
  // before any of them can).
  uint64_t sent_ = 0, in_flight_ = 0, round_trips_ = 0, failures_ = 0, last_ns_ = 0;
  bool finished_ = false;
  LatencyHistogram latency_;
};

// Streams requests with credit and answers each with its data.
class Responder : public std::enable_shared_from_this<Responder> {
 public:
  Responder(Shared& s, AsyncClient::Pointer c) : s_(s), c_(std::move(c)) {}

  client::StreamHandler handler() {
    return [self = shared_from_this()](Result<client::Delivery> d) {
      if (!d.ok()) {
        if (!self->stopping.load()) self->s_.error(d.error().to_string());
        return;
      }
      for (const Message& m : d->messages) self->answer(m);
      self->c_->grant_credit(static_cast<uint32_t>(d->messages.size()), [](Status) {});
    };
  }

  std::atomic<bool> stopping{false};

 private:
  void answer(const Message& m) {
    Message reply;
    reply.data = m.data;
    c_->reply(m, reply, [self = shared_from_this()](Status st) {
      if (!st.ok() && !self->stopping.load()) self->s_.error("reply: " + st.error().to_string());
    });
    if (s_.o.complete) {
      c_->complete_message(m, [self = shared_from_this()](Status st) {
        if (!st.ok() && !self->stopping.load()) {
          self->s_.error("complete-message: " + st.error().to_string());
        }
      });
    }
  }

  Shared& s_;
  AsyncClient::Pointer c_;
};

template <typename T>
Result<T> wait(std::function<void(client::Callback<T>)> start) {
  std::promise<Result<T>> p;
  auto f = p.get_future();
  start([&p](Result<T> r) { p.set_value(std::move(r)); });
  return f.get();
}

Status wait_status(std::function<void(client::StatusCallback)> start) {
  std::promise<Status> p;
  auto f = p.get_future();
  start([&p](Status s) { p.set_value(std::move(s)); });
  return f.get();
}

}  // namespace

Result<RequestReplyReport> run_request_reply_bench(const BenchOptions& o) {
  std::random_device rd;
  const bool own_channel = o.channel.empty();
  const std::string channel =
      own_channel ? fmt::format("witmq-bench-rr-{}-{:04x}", ::getpid(), rd() & 0xffff) : o.channel;
  client::Options options;
  options.token = o.token;
  options.tls = o.tls;
  options.request_timeout = std::chrono::milliseconds(30'000);
  std::vector<client::Endpoint> servers = o.servers;
  if (servers.empty()) servers.push_back(o.server);
  auto admin = client::Client::connect(servers, "", options);
  if (!admin.ok()) return std::move(admin).error();
  client::ChannelSettings settings{{"kind", o.kind}};
  if (o.durability) settings.emplace_back("durability", *o.durability);
  if (auto st = (*admin)->declare_channel(channel, settings); !st.ok()) {
    return Error(st.error().code,
                 fmt::format("declare channel '{}': {}", channel, st.error().message));
  }

  asio::io_context io(static_cast<int>(o.threads));
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < o.threads; ++i) threads.emplace_back([&io] { io.run(); });
  Shared shared(o, channel);
  std::vector<AsyncClient::Pointer> clients;
  std::vector<std::shared_ptr<Responder>> responders;
  auto shutdown = [&] {
    for (auto& r : responders) r->stopping = true;
    for (auto& c : clients) c->close();
    work.reset();
    for (auto& t : threads) t.join();
    if (own_channel) (void)(*admin)->delete_channel(channel);
  };
  auto connect = [&](size_t index) {
    return wait<AsyncClient::Pointer>([&](client::Callback<AsyncClient::Pointer> cb) {
      AsyncClient::connect(io.get_executor(), servers[index % servers.size()], "", options,
                           std::move(cb));
    });
  };
  auto fail = [&](std::string_view what, const Error& e) {
    shutdown();
    return Error(e.code, fmt::format("{}: {}", what, e.message));
  };

  for (uint32_t i = 0; i < o.consumers; ++i) {
    auto c = connect(i);
    if (!c.ok()) return fail(fmt::format("responder {}: connect", i), c.error());
    clients.push_back(*c);
    GuestConfiguration config{{channel}, Metadata{{"batch-size", std::to_string(o.receive_batch)}}};
    if (!o.complete) config.extensions->emplace_back("settlement", "auto");
    if (auto st = wait_status([&](client::StatusCallback cb) {
          (*c)->update_guest_configuration(config, std::move(cb));
        });
        !st.ok()) {
      return fail(fmt::format("responder {}: update-guest-configuration", i), st.error());
    }
    auto responder = std::make_shared<Responder>(shared, *c);
    if (auto st = wait_status([&](client::StatusCallback cb) {
          (*c)->start_stream(o.credit, responder->handler(), std::move(cb));
        });
        !st.ok()) {
      return fail(fmt::format("responder {}: stream-start", i), st.error());
    }
    responders.push_back(std::move(responder));
  }
  std::vector<std::shared_ptr<Requester>> requesters;
  for (uint32_t i = 0; i < o.producers; ++i) {
    auto c = connect(o.consumers + i);
    if (!c.ok()) return fail(fmt::format("requester {}: connect", i), c.error());
    clients.push_back(*c);
    const uint64_t quota =
        o.duration_s ? UINT64_MAX : o.messages / o.producers + (i < o.messages % o.producers);
    requesters.push_back(std::make_shared<Requester>(shared, *c, quota));
  }

  const uint64_t start = now_ns();
  if (o.duration_s) shared.deadline_ns = start + static_cast<uint64_t>(*o.duration_s * 1e9);
  for (size_t i = 0; i < requesters.size(); ++i) {
    // Started on the connection's strand, where all its completions run.
    asio::post(clients[o.consumers + i]->executor(), [r = requesters[i]] { r->start(); });
  }
  {
    std::unique_lock lock(shared.mu);
    shared.cv.wait(lock, [&] { return shared.requesters_done == o.producers; });
  }
  RequestReplyReport report;
  report.options = o;
  report.channel = channel;
  {
    std::lock_guard lock(shared.mu);
    report.round_trips = shared.round_trips;
    report.failures = shared.failures;
    report.latency = shared.latency;
    report.seconds = shared.last_ns > start ? (shared.last_ns - start) / 1e9 : 0;
  }
  shutdown();
  std::lock_guard lock(shared.mu);
  report.errors = shared.errors;
  return report;
}

std::string format_request_reply_report(const RequestReplyReport& r, bool json) {
  const auto us = [](uint64_t ns) { return ns / 1000.0; };
  const LatencyHistogram& l = r.latency;
  if (json) {
    return nlohmann::json{{"mode", "request-reply"},
                          {"channel", r.channel},
                          {"kind", r.options.kind},
                          {"requesters", r.options.producers},
                          {"responders", r.options.consumers},
                          {"pipeline", r.options.pipeline},
                          {"size", r.options.size},
                          {"round-trips", r.round_trips},
                          {"failures", r.failures},
                          {"seconds", r.seconds},
                          {"round-trips-per-s", r.round_trips_per_s()},
                          {"latency-us",
                           {{"min", us(l.min())},
                            {"p50", us(l.percentile(50))},
                            {"p99", us(l.percentile(99))},
                            {"p99.9", us(l.percentile(99.9))},
                            {"max", us(l.max())},
                            {"mean", l.mean() / 1000.0}}},
                          {"errors", r.errors}}
               .dump() +
           "\n";
  }
  std::string out = fmt::format(
      "request-reply on {} ({}): {} requesters x {} pipeline, {} responders, {} data bytes\n"
      "round trips  {:>10}  in {:.2f} s  = {:.0f} /s   failures {}\n"
      "round trip   p50 {:.1f} us  p99 {:.1f} us  p99.9 {:.1f} us  max {:.1f} us\n",
      r.channel, r.options.kind, r.options.producers, r.options.pipeline, r.options.consumers,
      r.options.size, r.round_trips, r.seconds, r.round_trips_per_s(), r.failures,
      us(l.percentile(50)), us(l.percentile(99)), us(l.percentile(99.9)), us(l.max()));
  for (const auto& e : r.errors) out += "error: " + e + "\n";
  return out;
}

}  // namespace witmq::cli
