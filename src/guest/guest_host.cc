#include "guest/guest_host.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <future>
#include <thread>
#include <utility>

#include "guest/lease_keeper.h"

namespace witmq::guest {
namespace {

constexpr std::chrono::milliseconds kDefaultLease{30'000};
constexpr std::chrono::milliseconds kMinKeepAliveInterval{10};

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

const std::string* find_extension(const GuestConfiguration& gc, std::string_view key) {
  return find_metadata(gc.extensions, key);
}

void set_extension(GuestConfiguration& gc, std::string_view key, const std::string& value) {
  if (!gc.extensions) gc.extensions.emplace();
  for (auto& [k, v] : *gc.extensions) {
    if (k == key) {
      v = value;
      return;
    }
  }
  gc.extensions->emplace_back(std::string(key), value);
}

}  // namespace

struct GuestHost::Worker {
  uint32_t index = 0;
  broker::ClientPtr subscriber;
  GuestConfiguration config;  // as applied to `subscriber` (overrides included)
  std::mutex instance_mu;     // guards `instance` and `starting` against stop()'s interrupt
  std::unique_ptr<GuestInstance> instance;
  // The newest instance from creation to destruction (starting, then the same as `instance`).
  GuestInstance* starting = nullptr;
  std::thread thread;
};

GuestHost::GuestHost(broker::Broker& broker, GuestOptions options, LogSink log,
                     std::shared_ptr<const WasmModule> module)
    : broker_(broker),
      options_(std::move(options)),
      log_(std::move(log)),
      module_(std::move(module)) {
  output_ = std::make_shared<GuestOutput>(
      options_.name, [this](bool is_stderr, std::string_view line) {
        this->log(is_stderr ? LogLevel::kWarn : LogLevel::kInfo, std::string(line));
      });
}

GuestHost::~GuestHost() { stop(); }

Result<std::unique_ptr<GuestHost>> GuestHost::load(broker::Broker& broker, GuestOptions options,
                                                   LogSink log) {
  WITMQ_RETURN_IF_ERROR(validate_guest_options(options));
  WasmLimits limits;
  limits.instruction_budget = options.instruction_budget;
  limits.memory_pages = options.memory_pages;
  limits.call_time_limit = options.call_timeout;
  EngineOptions engine;
  engine.engine = options.engine;
  engine.cache_dir = options.compile_cache_dir;
  engine.compile_timeout = options.compile_timeout;
  auto module = load_guest_module(options.module_path, limits, engine);
  if (!module.ok()) {
    Error e = std::move(module).error();
    return Error(e.code, fmt::format("guest '{}': {}", options.name, e.message));
  }
  if (module_world(**module) != World::kMessaging && options.channels.empty()) {
    return Error(
        ErrorCode::kInvalidArgument,
        fmt::format("guest '{}': module '{}' implements the world {}, which has no "
                    "configure: set \"channels\" in the guest's entry to the channels "
                    "it handles",
                    options.name, options.module_path, world_name(module_world(**module))));
  }
  if (!log) {
    log = [](LogLevel level, std::string_view line) {
      fmt::print(stderr, "{} {}\n", level_name(level), line);
    };
  }
  return std::unique_ptr<GuestHost>(
      new GuestHost(broker, std::move(options), std::move(log), std::move(module).value()));
}

void GuestHost::log(LogLevel level, std::string line) const { log_(level, line); }

Status GuestHost::start() {
  if (started_) {
    return Error(ErrorCode::kFailedPrecondition,
                 fmt::format("guest '{}': already started", options_.name));
  }
  started_ = true;
  leases_ = std::make_unique<LeaseKeeper>(broker_);
  for (uint32_t i = 0; i < options_.instances; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    auto client = broker_.connect(options_.name);
    if (!client.ok()) {
      stop();
      Error e = std::move(client).error();
      return Error(e.code, fmt::format("guest '{}': connect: {}", options_.name, e.message));
    }
    w->subscriber = std::move(client).value();
    Status st = instantiate(*w);
    workers_.push_back(std::move(w));
    if (!st.ok()) {
      stop();
      return st;
    }
  }
  for (auto& w : workers_) {
    Worker* raw = w.get();
    w->thread = std::thread([this, raw] { run(*raw); });
  }
  log(LogLevel::kInfo, fmt::format("guest '{}': started {} instance(s) of '{}' on {}",
                                   options_.name, options_.instances, module_->name(),
                                   fmt::join(workers_.front()->config.channels, ", ")));
  return ok_status();
}

void GuestHost::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_) {
    if (w->subscriber) broker_.cancel_receives(w->subscriber);
    std::lock_guard lock(w->instance_mu);
    if (w->instance) w->instance->interrupt();
    if (w->starting && w->starting != w->instance.get()) w->starting->interrupt();
  }
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  for (auto& w : workers_) {
    std::unique_ptr<GuestInstance> instance;
    {
      std::lock_guard lock(w->instance_mu);
      instance = std::move(w->instance);
    }
    if (instance) counters_.instances_running--;
    instance.reset();
    if (w->subscriber) broker_.disconnect(w->subscriber);
  }
  leases_.reset();
}

Status GuestHost::subscribe(Worker& w, GuestConfiguration gc) {
  if (!options_.channels.empty()) gc.channels = options_.channels;
  if (!options_.group.empty()) set_extension(gc, "group", options_.group);
  if (w.subscriber && gc == w.config) return ok_status();
  if (options_.permissions) {
    for (const std::string& channel : gc.channels) {
      WITMQ_RETURN_IF_ERROR(auth::check_grants(*options_.permissions, auth::Action::kReceive,
                                               channel, fmt::format("guest '{}'", options_.name)));
    }
  }
  Status st = broker_.update_guest_configuration(w.subscriber, gc);
  if (!st.ok()) return st;
  w.config = std::move(gc);
  return ok_status();
}

Status GuestHost::instantiate(Worker& w) {
  InstanceContext ctx;
  ctx.broker = &broker_;
  ctx.guest_name = options_.name;
  ctx.client_name = options_.group.empty() ? options_.name : options_.group;
  ctx.update_configuration = [this, &w](const GuestConfiguration& gc) { return subscribe(w, gc); };
  ctx.grants = options_.permissions ? &*options_.permissions : nullptr;
  ctx.env = options_.env;
  ctx.output = output_;
  // Visible to stop() from the moment it exists (its start function, `_initialize` and
  // configure may wait in receives), and interrupted at once if stop() came first.
  ctx.track = [this, &w](GuestInstance* g) {
    std::lock_guard lock(w.instance_mu);
    w.starting = g;
    if (g && stopping_) g->interrupt();
  };
  auto created = GuestInstance::create(module_, std::move(ctx));
  if (!created.ok()) return std::move(created).error();
  std::unique_ptr<GuestInstance> instance = std::move(created).value();
  counters_.instantiations++;

  // Worlds without configure take their channels from the guest's settings (subscribe()).
  GuestConfiguration gc;
  CallReport r;
  if (instance->world() == World::kMessaging) r = instance->configure(&gc);
  if (r.status != CallStatus::kOk) {
    count_failure(r.status);
    return Error(ErrorCode::kFailedPrecondition,
                 fmt::format("guest '{}': configure failed: {}", options_.name, r.message));
  }
  if (r.guest_error) {
    return Error(ErrorCode::kFailedPrecondition,
                 fmt::format("guest '{}': configure returned err: {}", options_.name,
                             r.guest_error->to_string()));
  }
  Status st = subscribe(w, std::move(gc));
  if (!st.ok()) {
    return Error(st.error().code, fmt::format("guest '{}': subscribing as configure asked: {}",
                                              options_.name, st.error().message));
  }
  std::lock_guard lock(w.instance_mu);
  w.instance = std::move(instance);
  counters_.instances_running++;
  if (stopping_) w.instance->interrupt();
  return ok_status();
}

bool GuestHost::wait_backoff(std::chrono::milliseconds delay) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, delay, [this] { return stopping_.load(); });
}

void GuestHost::count_failure(CallStatus status) {
  switch (status) {
    case CallStatus::kTrap:
      counters_.traps++;
      break;
    case CallStatus::kBudgetExhausted:
      counters_.budget_exhaustions++;
      break;
    case CallStatus::kMemoryLimit:
      counters_.memory_limit_hits++;
      break;
    case CallStatus::kTimeLimit:
      counters_.time_limit_hits++;
      break;
    case CallStatus::kOk:
      break;
  }
}

void GuestHost::run(Worker& w) {
  // Nothing may escape a worker thread (std::terminate would end the daemon): a failure of the
  // host itself (e.g. an allocation) is logged, the instance dropped and the loop carries on.
  while (!stopping_) {
    try {
      run_loop(w);
      return;
    } catch (const std::exception& e) {
      log(LogLevel::kError, fmt::format("guest '{}' instance {}: host failure: {}; instantiating "
                                        "it again",
                                        options_.name, w.index, e.what()));
      std::unique_ptr<GuestInstance> spent;
      {
        std::lock_guard lock(w.instance_mu);
        spent = std::move(w.instance);
      }
      if (spent) counters_.instances_running--;
      if (!wait_backoff(options_.restart_backoff)) return;
    }
  }
}

void GuestHost::run_loop(Worker& w) {
  const auto max_backoff = options_.restart_backoff * 64;
  auto backoff = options_.restart_backoff;
  while (!stopping_) {
    if (!w.instance) {
      Status st = instantiate(w);
      if (!st.ok()) {
        log(LogLevel::kWarn,
            fmt::format("guest '{}' instance {}: {}; retrying in {} ms", options_.name, w.index,
                        st.error().message, backoff.count()));
        if (!wait_backoff(backoff)) break;
        backoff = std::min(backoff * 2, max_backoff);
        continue;
      }
      backoff = options_.restart_backoff;
    }
    broker::ReceiveOptions ro;
    ro.max_messages = options_.batch_size;
    ro.timeout = options_.batch_wait;
    std::promise<Result<std::vector<Message>>> promise;
    auto future = promise.get_future();
    broker_.receive(w.subscriber, w.config.channels, ro,
                    [p = std::move(promise)](Result<std::vector<Message>> r) mutable {
                      p.set_value(std::move(r));
                    });
    Result<std::vector<Message>> batch = future.get();
    if (!batch.ok()) {
      if (stopping_) break;
      log(LogLevel::kWarn,
          fmt::format("guest '{}' instance {}: receive on {} failed: {}", options_.name, w.index,
                      fmt::join(w.config.channels, ", "), batch.error().to_string()));
      if (!wait_backoff(backoff)) break;
      continue;
    }
    if (!batch->empty()) process(w, *batch);
  }
}

std::chrono::milliseconds GuestHost::lease_for(const Worker& w, const std::vector<Message>& batch) {
  if (const std::string* ms = find_extension(w.config, "lease-ms")) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(ms->data(), ms->data() + ms->size(), v);
    if (ec == std::errc() && end == ms->data() + ms->size() && v > 0) {
      return std::chrono::milliseconds(v);
    }
  }
  const std::string* channel = find_metadata(batch.front(), meta::kChannel);
  if (!channel) return kDefaultLease;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, lease] : lease_cache_) {
      if (name == *channel) return lease;
    }
  }
  auto stats = broker_.channel_stats(*channel);
  const auto lease = stats.ok() ? stats->settings.lease : kDefaultLease;
  std::lock_guard lock(mu_);
  lease_cache_.emplace_back(*channel, lease);
  return lease;
}

void GuestHost::process(Worker& w, const std::vector<Message>& batch) {
  const auto lease = lease_for(w, batch);
  const uint64_t token = leases_->add(&batch, lease, std::max(lease / 3, kMinKeepAliveInterval));
  const auto t0 = std::chrono::steady_clock::now();
  CallReport r = w.instance->handle(batch);
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  leases_->remove(token);

  counters_.batches++;
  counters_.messages_handled += batch.size();
  counters_.handler_time_ns +=
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());

  const std::string* channel = find_metadata(batch.front(), meta::kChannel);
  const std::string from = channel ? *channel : std::string("?");
  const std::string* settlement = find_extension(w.config, "settlement");
  if (!settlement || *settlement != "auto") {
    const auto& settled = w.instance->explicitly_settled();
    const bool complete = r.returned_ok();
    bool logged = false;
    // All settled before any reply is awaited, so that the batch shares its group commits.
    std::vector<std::future<Status>> replies;
    for (const Message& m : batch) {
      const std::string* receipt = find_metadata(m, meta::kReceipt);
      if (receipt && settled.contains(*receipt)) continue;
      std::promise<Status> promise;
      replies.push_back(promise.get_future());
      auto done = [p = std::move(promise)](Status st) mutable { p.set_value(std::move(st)); };
      if (complete) {
        broker_.complete_message(m, std::move(done));
      } else {
        broker_.abandon_message(m, std::move(done));
      }
    }
    for (auto& reply : replies) {
      Status st = reply.get();
      if (st.ok()) {
        (complete ? counters_.completed : counters_.abandoned)++;
        continue;
      }
      counters_.settle_failures++;
      if (!logged) {
        logged = true;
        log(LogLevel::kWarn, fmt::format("guest '{}' instance {}: {} of a message from '{}' "
                                         "refused: {}",
                                         options_.name, w.index, complete ? "complete" : "abandon",
                                         from, st.error().to_string()));
      }
    }
  }

  if (r.status != CallStatus::kOk) {
    count_failure(r.status);
    log(LogLevel::kWarn,
        fmt::format("guest '{}' instance {}: {} ({}); batch of {} from '{}' abandoned; "
                    "instantiating it again",
                    options_.name, w.index, r.message, call_status_name(r.status), batch.size(),
                    from));
    std::unique_ptr<GuestInstance> spent;
    {
      std::lock_guard lock(w.instance_mu);
      spent = std::move(w.instance);
    }
    counters_.instances_running--;
  } else if (r.guest_error) {
    counters_.handler_errors++;
    log(LogLevel::kInfo,
        fmt::format("guest '{}' instance {}: handler returned err: {}; batch of "
                    "{} from '{}' abandoned",
                    options_.name, w.index, r.guest_error->to_string(), batch.size(), from));
  }
}

GuestStats GuestHost::stats() const {
  GuestStats s;
  s.name = options_.name;
  s.messages_handled = counters_.messages_handled;
  s.batches = counters_.batches;
  s.handler_errors = counters_.handler_errors;
  s.traps = counters_.traps;
  s.budget_exhaustions = counters_.budget_exhaustions;
  s.memory_limit_hits = counters_.memory_limit_hits;
  s.time_limit_hits = counters_.time_limit_hits;
  s.instantiations = counters_.instantiations;
  s.completed = counters_.completed;
  s.abandoned = counters_.abandoned;
  s.settle_failures = counters_.settle_failures;
  s.handler_time_ns = counters_.handler_time_ns;
  s.instances_running = counters_.instances_running;
  s.output_lines = output_->lines_written();
  s.output_lines_dropped = output_->lines_dropped();
  s.output_bytes_dropped = output_->bytes_dropped();
  return s;
}

}  // namespace witmq::guest
