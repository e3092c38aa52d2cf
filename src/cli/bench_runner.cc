#include "cli/bench_runner.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cli/bench_schedule.h"
#include "client/async_client.h"
#include "client/client.h"

namespace witmq::cli {

namespace asio = boost::asio;
using client::AsyncClient;

namespace {

constexpr std::string_view kStampKey = "bench-stamp";
constexpr size_t kMaxErrors = 10;

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

void atomic_max(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t cur = a.load(std::memory_order_relaxed);
  while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// What every producer and consumer of a run shares. Counters are atomics; errors and the wake-up
// of the main thread go through `mu`.
struct Run {
  const BenchOptions& options;
  std::vector<std::string> channels;  // --channels of them
  uint64_t run_id = 0;
  uint64_t start_ns = 0;
  uint64_t stop_ns = UINT64_MAX;  // --duration: producers issue no send after this

  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> produced{0};
  std::atomic<uint64_t> consumed{0};
  std::atomic<uint64_t> completed{0};
  std::atomic<uint64_t> foreign{0};
  std::atomic<uint64_t> last_produce_ns{0};
  std::atomic<uint64_t> last_consume_ns{0};
  std::atomic<uint32_t> producers_running{0};
  std::atomic<uint64_t> max_lag_ns{0};  // --rate: the furthest a send fell behind its schedule

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> errors;  // guarded by mu

  Run(const BenchOptions& o, std::vector<std::string> ch) : options(o), channels(std::move(ch)) {}

  void error(std::string text) {
    if (stopping.load()) return;
    std::lock_guard lock(mu);
    if (errors.size() < kMaxErrors) errors.push_back(std::move(text));
    cv.notify_all();
  }
  void wake() {
    std::lock_guard lock(mu);
    cv.notify_all();
  }
};

// Sends batches with up to --pipeline of them in flight: as soon as there is room (closed loop),
// or, with --rate, the messages its schedule says are due (open loop; it waits for the next one
// on a timer). Its state is touched only on its connection's strand.
class Producer : public std::enable_shared_from_this<Producer> {
 public:
  Producer(Run& run, AsyncClient::Pointer c, uint64_t quota, uint32_t index)
      : run_(run),
        client_(std::move(c)),
        quota_(quota),
        index_(index),
        channel_(index % run.channels.size()),
        timer_(client_->executor()) {
    const auto& o = run_.options;
    batch_.resize(o.batch);
    for (auto& m : batch_) {
      m.data.assign(o.size, static_cast<uint8_t>('x'));
      m.format = Format::kRaw;
    }
  }

  // Called before the run's clock starts; `schedule` for --rate.
  void set_schedule(ArrivalSchedule schedule) { schedule_ = schedule; }

  void start() {
    asio::post(client_->executor(), [self = shared_from_this()] { self->pump(); });
  }

  // Cancels a wait for the schedule, so that the I/O threads can end.
  void stop() {
    asio::post(client_->executor(), [self = shared_from_this()] { self->timer_.cancel(); });
  }

  // Send hand-off (or intended send time) to send-ok; read after the I/O threads stopped.
  const LatencyHistogram& confirm_histogram() const { return confirm_; }

 private:
  bool issuing_over() const {
    return issued_ >= quota_ || failed_ || run_.stopping.load(std::memory_order_relaxed) ||
           (run_.stop_ns != UINT64_MAX && now_ns() >= run_.stop_ns);
  }

  void pump() {
    const auto& o = run_.options;
    while (outstanding_ < o.pipeline && !issuing_over()) {
      const uint64_t t = now_ns();
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(o.batch, quota_ - issued_));
      if (schedule_) {
        n = static_cast<uint32_t>(due_now(*schedule_, issued_, quota_, t, o.batch));
        if (n == 0) {
          wait_for_schedule();
          break;
        }
        atomic_max(run_.max_lag_ns, latency_from(schedule_->intended_ns(issued_), t));
      }
      // Each message's stamp: its intended send time with --rate, else the hand-off time.
      const uint64_t first = issued_;
      for (uint32_t i = 0; i < n; ++i) {
        stamp(batch_[i], schedule_ ? schedule_->intended_ns(first + i) : t);
      }
      issued_ += n;
      ++outstanding_;
      const std::string& channel = run_.channels[channel_];
      channel_ = (channel_ + 1) % run_.channels.size();
      client_->send(channel, std::span<const Message>(batch_.data(), n),
                    [self = shared_from_this(), n, first, t](Status s) {
                      self->on_ack(n, first, t, std::move(s));
                    });
    }
    if (outstanding_ == 0 && issuing_over() && !finished_) {
      finished_ = true;
      run_.producers_running.fetch_sub(1);
      run_.wake();
    }
  }

  // Arms the timer for the next message's intended time (or the --duration end, if sooner).
  void wait_for_schedule() {
    if (waiting_) return;
    waiting_ = true;
    const uint64_t at = std::min(schedule_->intended_ns(issued_), run_.stop_ns);
    timer_.expires_at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(at)));
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      self->waiting_ = false;
      if (ec) return;  // stop()
      self->pump();
    });
  }

  void stamp(Message& m, uint64_t t) {
    if (m.data.size() >= kStampBytes) {
      write_stamp(m.data, run_.run_id, t);
    } else {
      m.metadata = Metadata{{std::string(kStampKey), fmt::format("{}:{}", run_.run_id, t)}};
    }
  }

  void on_ack(uint32_t n, uint64_t first, uint64_t handed_ns, Status s) {
    --outstanding_;
    if (s.ok()) {
      const uint64_t t = now_ns();
      if (schedule_) {
        for (uint32_t i = 0; i < n; ++i) {
          confirm_.record(latency_from(schedule_->intended_ns(first + i), t));
        }
      } else {
        confirm_.record(latency_from(handed_ns, t), n);
      }
      run_.produced.fetch_add(n, std::memory_order_relaxed);
      atomic_max(run_.last_produce_ns, t);
    } else {
      failed_ = true;
      run_.error(fmt::format("producer {}: send: {}", index_, s.error().to_string()));
    }
    pump();
  }

  Run& run_;
  AsyncClient::Pointer client_;
  uint64_t quota_;
  uint32_t index_;
  size_t channel_;  // index in run_.channels of the next send
  asio::steady_timer timer_;
  std::optional<ArrivalSchedule> schedule_;
  bool waiting_ = false;
  LatencyHistogram confirm_;
  std::vector<Message> batch_;
  uint64_t issued_ = 0;
  uint32_t outstanding_ = 0;
  bool failed_ = false;
  bool finished_ = false;
};

// Receives (or is streamed) messages, measures their latency and completes them when asked.
// Its state is touched only on its connection's strand (and by the main thread after the I/O
// threads have stopped).
class Consumer : public std::enable_shared_from_this<Consumer> {
 public:
  Consumer(Run& run, AsyncClient::Pointer c, uint32_t index)
      : run_(run),
        client_(std::move(c)),
        index_(index),
        channel_(run.channels[index % run.channels.size()]) {}

  // Receive mode: keeps --receive-pipeline subscribe-receive calls outstanding.
  void start_receiving() {
    asio::post(client_->executor(), [self = shared_from_this()] {
      for (uint32_t i = 0; i < self->run_.options.receive_pipeline; ++i) self->receive();
    });
  }

  // Stream mode: the handler for start_stream.
  client::StreamHandler stream_handler() {
    return [self = shared_from_this()](Result<client::Delivery> d) {
      if (!d.ok()) {
        self->run_.error(
            fmt::format("consumer {}: stream ended: {}", self->index_, d.error().to_string()));
        return;
      }
      const auto n = static_cast<uint32_t>(d->messages.size());
      self->handle(d->messages);
      // Grant credit back in chunks of half the window, not one frame per delivery.
      self->to_grant_ += n;
      if (self->to_grant_ >= std::max<uint32_t>(self->run_.options.credit / 2, 1)) {
        self->client_->grant_credit(self->to_grant_, [self](Status s) {
          if (!s.ok()) {
            self->run_.error(
                fmt::format("consumer {}: credit: {}", self->index_, s.error().to_string()));
          }
        });
        self->to_grant_ = 0;
      }
    };
  }

  const LatencyHistogram& histogram() const { return histogram_; }
  uint64_t received() const { return received_; }

 private:
  void receive() {
    client_->subscribe_receive(
        channel_, [self = shared_from_this()](Result<std::vector<Message>> r) {
          if (!r.ok()) {
            self->run_.error(
                fmt::format("consumer {}: receive: {}", self->index_, r.error().to_string()));
            return;
          }
          self->handle(*r);
          if (!self->run_.stopping.load(std::memory_order_relaxed)) self->receive();
        });
  }

  void handle(const std::vector<Message>& messages) {
    const uint64_t t = now_ns();
    uint64_t own = 0;
    for (const auto& m : messages) {
      uint64_t sent = 0;
      if (read_stamp(m.data, run_.run_id, &sent) || metadata_stamp(m, &sent)) {
        histogram_.record(latency_from(sent, t));
        ++own;
      } else {
        run_.foreign.fetch_add(1, std::memory_order_relaxed);
      }
      if (run_.options.complete) {
        client_->complete_message(m, [self = shared_from_this()](Status s) {
          if (s.ok()) {
            self->run_.completed.fetch_add(1, std::memory_order_relaxed);
          } else {
            self->run_.error(
                fmt::format("consumer {}: complete: {}", self->index_, s.error().to_string()));
          }
        });
      }
    }
    received_ += own;
    run_.consumed.fetch_add(own, std::memory_order_relaxed);
    atomic_max(run_.last_consume_ns, t);
  }

  bool metadata_stamp(const Message& m, uint64_t* sent) const {
    const std::string* v = find_metadata(m, kStampKey);
    if (!v) return false;
    uint64_t id = 0;
    uint64_t ns = 0;
    if (std::sscanf(v->c_str(), "%lu:%lu", &id, &ns) != 2 || id != run_.run_id) return false;
    *sent = ns;
    return true;
  }

  Run& run_;
  AsyncClient::Pointer client_;
  uint32_t index_;
  std::string channel_;
  LatencyHistogram histogram_;
  uint64_t received_ = 0;
  uint32_t to_grant_ = 0;
};

// Waits for an asynchronous call made on the I/O threads.
template <typename T>
class Waiter {
 public:
  client::Callback<T> callback() {
    return [this](Result<T> r) {
      std::lock_guard lock(mu_);
      result_.emplace(std::move(r));
      cv_.notify_all();
    };
  }
  Result<T> get() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return result_.has_value(); });
    return std::move(*result_);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Result<T>> result_;
};

// Connection `index` goes to servers[index % n] first, then to the next ones that answer.
Result<AsyncClient::Pointer> connect_one(asio::io_context& io, const BenchOptions& o,
                                         size_t index) {
  client::Options co;
  co.token = o.token;
  co.tls = o.tls;
  std::vector<client::Endpoint> servers = o.servers;
  if (servers.empty()) servers.push_back(o.server);
  Error last;
  for (size_t k = 0; k < servers.size(); ++k) {
    Waiter<AsyncClient::Pointer> w;
    AsyncClient::connect(io.get_executor(), servers[(index + k) % servers.size()], "", co,
                         w.callback());
    auto r = w.get();
    if (r.ok() || r.error().code != ErrorCode::kUnavailable) return r;
    last = std::move(r).error();
  }
  return last;
}

}  // namespace

void write_stamp(std::span<uint8_t> data, uint64_t run_id, uint64_t send_ns) {
  std::memcpy(data.data(), &run_id, 8);
  std::memcpy(data.data() + 8, &send_ns, 8);
}

bool read_stamp(std::span<const uint8_t> data, uint64_t run_id, uint64_t* send_ns) {
  if (data.size() < kStampBytes) return false;
  uint64_t id = 0;
  std::memcpy(&id, data.data(), 8);
  if (id != run_id) return false;
  std::memcpy(send_ns, data.data() + 8, 8);
  return true;
}

Result<BenchReport> run_bench(const BenchOptions& o) {
  std::random_device rd;
  const uint64_t run_id = (uint64_t{rd()} << 32) | rd() | 1;
  const bool own_channel = o.channel.empty();
  std::string channel =
      own_channel ? fmt::format("witmq-bench-{}-{:04x}", ::getpid(), run_id & 0xffff) : o.channel;
  // With --channels N above 1, the channels are CHANNEL-0 .. CHANNEL-(N-1).
  std::vector<std::string> channels;
  for (uint32_t i = 0; i < o.channels; ++i) {
    channels.push_back(o.channels == 1 ? channel : fmt::format("{}-{}", channel, i));
  }

  client::Options admin_options;
  admin_options.token = o.token;
  admin_options.tls = o.tls;
  admin_options.request_timeout = std::chrono::milliseconds(30'000);
  auto admin = client::Client::connect(
      o.servers.empty() ? std::vector<client::Endpoint>{o.server} : o.servers, "", admin_options);
  if (!admin.ok()) return std::move(admin).error();
  client::ChannelSettings settings{{"kind", o.kind}};
  if (o.durability) settings.emplace_back("durability", *o.durability);
  auto delete_channels = [&](size_t count) {
    if (!own_channel) return;
    for (size_t i = 0; i < count; ++i) (void)(*admin)->delete_channel(channels[i]);
  };
  for (size_t i = 0; i < channels.size(); ++i) {
    if (auto st = (*admin)->declare_channel(channels[i], settings); !st.ok()) {
      delete_channels(i);
      return Error(st.error().code,
                   fmt::format("declare channel '{}': {}", channels[i], st.error().message));
    }
  }

  asio::io_context io(static_cast<int>(o.threads));
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < o.threads; ++i) threads.emplace_back([&io] { io.run(); });

  Run run(o, channels);
  run.run_id = run_id;
  std::vector<AsyncClient::Pointer> clients;
  std::vector<std::shared_ptr<Consumer>> consumers;
  std::vector<std::shared_ptr<Producer>> producers;

  auto shutdown = [&] {
    run.stopping = true;
    for (auto& p : producers) p->stop();
    for (auto& c : clients) c->close();
    work.reset();
    for (auto& t : threads) t.join();
    threads.clear();
    delete_channels(channels.size());
  };
  auto fail_setup = [&](std::string_view what, Error e) -> Error {
    shutdown();
    return Error(e.code, fmt::format("{}: {}", what, e.message));
  };

  // Consumers first, so that a publish-subscribe channel has their subscriptions before anything
  // is published.
  for (uint32_t i = 0; i < o.consumers; ++i) {
    auto c = connect_one(io, o, i);
    if (!c.ok()) return fail_setup(fmt::format("consumer {}: connect", i), c.error());
    clients.push_back(*c);
    GuestConfiguration config{{channels[i % channels.size()]},
                              Metadata{{"batch-size", std::to_string(o.receive_batch)}}};
    if (!o.complete) config.extensions->emplace_back("settlement", "auto");
    Waiter<void> configured;
    (*c)->update_guest_configuration(config, configured.callback());
    if (auto st = configured.get(); !st.ok()) {
      return fail_setup(fmt::format("consumer {}: update-guest-configuration", i), st.error());
    }
    auto consumer = std::make_shared<Consumer>(run, *c, i);
    if (o.mode == ConsumeMode::kStream) {
      Waiter<void> started;
      (*c)->start_stream(o.credit, consumer->stream_handler(), started.callback());
      if (auto st = started.get(); !st.ok()) {
        return fail_setup(fmt::format("consumer {}: stream-start", i), st.error());
      }
    }
    consumers.push_back(std::move(consumer));
  }
  for (uint32_t i = 0; i < o.producers; ++i) {
    auto c = connect_one(io, o, o.consumers + i);
    if (!c.ok()) return fail_setup(fmt::format("producer {}: connect", i), c.error());
    clients.push_back(*c);
    uint64_t quota =
        o.duration_s ? UINT64_MAX : o.messages / o.producers + (i < o.messages % o.producers);
    producers.push_back(std::make_shared<Producer>(run, *c, quota, i));
  }

  run.start_ns = now_ns();
  if (o.duration_s) run.stop_ns = run.start_ns + static_cast<uint64_t>(*o.duration_s * 1e9);
  if (o.rate) {
    for (uint32_t i = 0; i < producers.size(); ++i) {
      producers[i]->set_schedule(ArrivalSchedule::for_producer(
          run.start_ns, static_cast<double>(*o.rate), static_cast<uint32_t>(producers.size()), i));
    }
  }
  run.producers_running = static_cast<uint32_t>(producers.size());
  if (o.mode == ConsumeMode::kReceive) {
    for (auto& c : consumers) c->start_receiving();
  }
  for (auto& p : producers) p->start();

  // Wait until producing ended and every expected message arrived, or nothing moved for
  // --drain-timeout. Each wait is bounded; the loop ends by one of those conditions.
  const uint64_t drain_ns = uint64_t{o.drain_timeout_ms} * 1'000'000;
  // Every channel has consumers / channels consumers (parse_bench_options checks it).
  const uint64_t per_message =
      o.kind == "publish-subscribe" ? o.consumers / o.channels : (o.consumers ? 1 : 0);
  uint64_t expected = 0;
  bool stalled = false;
  std::vector<BenchReport::Sample> timeline{{0, 0, 0}};
  const auto sample_ns = static_cast<uint64_t>(BenchReport::kSampleSeconds * 1e9);
  auto take_sample = [&](uint64_t at) {
    timeline.push_back({(at - run.start_ns) / 1e9, run.produced.load(), run.consumed.load()});
  };
  {
    std::unique_lock lock(run.mu);
    uint64_t next_sample = run.start_ns + sample_ns;
    for (;;) {
      run.cv.wait_for(lock, std::chrono::milliseconds(50));
      const uint64_t now = now_ns();
      if (now >= next_sample) {
        take_sample(now);
        next_sample += sample_ns * ((now - next_sample) / sample_ns + 1);
      }
      const uint64_t last =
          std::max({run.start_ns, run.last_produce_ns.load(), run.last_consume_ns.load()});
      const bool producing = run.producers_running.load() > 0;
      expected = run.produced.load() * per_message;
      if (!producing && run.consumed.load() >= expected) break;
      // `last` may be later than `now`: a producer or consumer can record its progress after
      // `now` was read (unsigned, `now - last` would then wrap to a huge "stall").
      if (now > last && now - last > drain_ns) {
        stalled = true;
        break;
      }
    }
  }
  if (stalled) {
    run.error(fmt::format("no progress for {} ms: stopped with {} of {} messages consumed{}",
                          o.drain_timeout_ms, run.consumed.load(), expected,
                          run.producers_running.load() > 0 ? " while producers were sending" : ""));
  }
  // Let complete-message replies that are on their way arrive before the connections close.
  if (o.complete) {
    const uint64_t deadline = now_ns() + 2'000'000'000;
    for (int i = 0; i < 400 && run.completed.load() < run.consumed.load() && now_ns() < deadline;
         ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  BenchReport report;
  {
    std::lock_guard lock(run.mu);
    report.errors = run.errors;
  }
  shutdown();

  report.options = o;
  report.channel = channels.front();
  report.expected = expected;
  const uint64_t produced = run.produced.load();
  report.produced = {produced, produced * o.size,
                     (std::max(run.last_produce_ns.load(), run.start_ns) - run.start_ns) / 1e9};
  const uint64_t consumed = run.consumed.load();
  report.consumed = {consumed, consumed * o.size,
                     (std::max(run.last_consume_ns.load(), run.start_ns) - run.start_ns) / 1e9};
  // The last sample holds the final counts, at the time the last message moved.
  const double last_seconds =
      std::max({timeline.back().seconds, report.produced.seconds, report.consumed.seconds});
  if (last_seconds > timeline.back().seconds) {
    timeline.push_back({last_seconds, produced, consumed});
  } else {
    timeline.back().produced = produced;
    timeline.back().consumed = consumed;
  }
  report.timeline = std::move(timeline);
  report.completed = run.completed.load();
  report.foreign = run.foreign.load();
  for (const auto& c : consumers) report.latency.merge(c->histogram());
  for (const auto& p : producers) report.confirm_latency.merge(p->confirm_histogram());
  report.max_lag_ns = run.max_lag_ns.load();
  return report;
}

std::string format_report(const BenchReport& r, bool json) {
  const auto& o = r.options;
  // The same words in the table and in JSON.
  const std::string durability = o.durability.value_or("server default");
  static constexpr double kPercentiles[] = {50, 90, 99, 99.9};
  auto us = [](uint64_t ns) { return ns / 1000.0; };
  if (json) {
    nlohmann::json j;
    j["config"] = {{"server", fmt::format("{}:{}", o.server.host, o.server.port)},
                   {"channel", r.channel},
                   {"kind", o.kind},
                   {"durability", durability},
                   {"producers", o.producers},
                   {"consumers", o.consumers},
                   {"size", o.size},
                   {"batch", o.batch},
                   {"pipeline", o.pipeline},
                   {"consume-mode", o.mode == ConsumeMode::kStream ? "stream" : "receive"},
                   {"credit", o.credit},
                   {"receive-batch", o.receive_batch},
                   {"complete", o.complete},
                   {"channels", o.channels},
                   {"rate", o.rate ? nlohmann::json(*o.rate) : nlohmann::json(nullptr)}};
    auto side = [](const SideFigures& s) {
      return nlohmann::json{{"messages", s.messages},
                            {"bytes", s.bytes},
                            {"seconds", s.seconds},
                            {"msgs_per_s", s.msgs_per_s()},
                            {"mb_per_s", s.mb_per_s()}};
    };
    j["producers"] = side(r.produced);
    j["consumers"] = side(r.consumed);
    j["expected"] = r.expected;
    j["completed"] = r.completed;
    j["foreign"] = r.foreign;
    auto latency = [&](const LatencyHistogram& h) {
      nlohmann::json lat = {{"count", h.count()},
                            {"min", us(h.min())},
                            {"mean", h.mean() / 1000.0},
                            {"max", us(h.max())}};
      lat["p50"] = us(h.percentile(50));
      lat["p90"] = us(h.percentile(90));
      lat["p99"] = us(h.percentile(99));
      lat["p99.9"] = us(h.percentile(99.9));
      return lat;
    };
    j["latency_us"] = latency(r.latency);
    j["confirm_latency_us"] = latency(r.confirm_latency);
    if (o.rate) j["max_lag_us"] = us(r.max_lag_ns);
    j["errors"] = r.errors;
    j["ok"] = r.ok();
    return j.dump(2) + "\n";
  }
  std::string out = fmt::format(
      "witmq-bench: {} channel '{}'{}, durability {}, {} producer(s) x {} consumer(s), {} B "
      "messages, batch {}, pipeline {}, {} mode{}, {}{}\n\n",
      o.kind, r.channel,
      o.channels > 1 ? fmt::format(" and {} more", o.channels - 1) : std::string(), durability,
      o.producers, o.consumers, o.size, o.batch, o.pipeline,
      o.mode == ConsumeMode::kStream ? fmt::format("stream (credit {})", o.credit)
                                     : std::string("receive"),
      o.mode == ConsumeMode::kReceive ? fmt::format(" (batch {})", o.receive_batch) : "",
      o.complete ? "complete each message" : "settlement=auto",
      o.rate ? fmt::format(", open loop at {} msgs/s", *o.rate) : std::string());
  out += fmt::format("{:<10} {:>12} {:>9} {:>13} {:>9}\n", "", "messages", "seconds", "msgs/s",
                     "MB/s");
  auto row = [&](std::string_view name, const SideFigures& s) {
    out += fmt::format("{:<10} {:>12} {:>9.3f} {:>13.0f} {:>9.1f}\n", name, s.messages, s.seconds,
                       s.msgs_per_s(), s.mb_per_s());
  };
  row("produced", r.produced);
  row("consumed", r.consumed);
  out += o.rate ? "\nlatency (ms, from each message's intended send time):\n"
                : "\nlatency (ms, from the producer's hand-off):\n";
  out += fmt::format("{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "", "p50", "p90", "p99",
                     "p99.9", "max", "count");
  auto latency_row = [&](std::string_view name, const LatencyHistogram& h) {
    std::string line = fmt::format("{:<10} ", name);
    for (double p : kPercentiles) line += fmt::format("{:>9.3f} ", h.percentile(p) / 1e6);
    line += fmt::format("{:>9.3f} {:>9}\n", h.max() / 1e6, h.count());
    out += line;
  };
  latency_row("received", r.latency);
  latency_row("confirmed", r.confirm_latency);
  if (o.rate) {
    out += fmt::format(
        "\nschedule: {} msgs/s asked, produced {:.0f}; sends fell up to {:.3f} ms behind\n",
        *o.rate, r.produced.msgs_per_s(), r.max_lag_ns / 1e6);
  }
  if (o.complete) out += fmt::format("\ncompleted: {}\n", r.completed);
  if (r.foreign > 0) out += fmt::format("messages from other runs ignored: {}\n", r.foreign);
  if (r.consumed.messages < r.expected) {
    out += fmt::format("MISSING: {} of {} expected messages were not consumed\n",
                       r.expected - r.consumed.messages, r.expected);
  }
  for (const auto& e : r.errors) out += fmt::format("error: {}\n", e);
  return out;
}

}  // namespace witmq::cli
