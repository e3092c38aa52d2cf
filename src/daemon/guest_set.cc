#include "daemon/guest_set.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/log.h"
#include "guest/aot_runtime.h"

namespace witmq::daemon {

namespace {

Result<std::unique_ptr<guest::GuestHost>> start_guest(broker::Broker& broker,
                                                      const guest::GuestOptions& options) {
  auto host = guest::GuestHost::load(broker, options);
  if (!host) return std::move(host).error();
  if (auto st = (*host)->start(); !st) return std::move(st).error();
  log::info("guest '{}': {} instance(s) of {} running", options.name, options.instances,
            options.module_path);
  return std::move(*host);
}

}  // namespace

GuestSet::ModuleStamp GuestSet::stamp_of(const std::string& path) {
  // A file that cannot be read gets the empty stamp: it differs from any loaded one, so the
  // guest is tried again (and refused while the file stays unreadable).
  std::error_code ec;
  ModuleStamp stamp;
  stamp.modified = std::filesystem::last_write_time(path, ec);
  if (ec) return {};
  stamp.size = std::filesystem::file_size(path, ec);
  if (ec) return {};
  return stamp;
}

GuestSet::Outcome GuestSet::apply(const std::vector<guest::GuestOptions>& wanted) {
  // One apply at a time. mu_ is held only to read and then swap the lists, never while a guest
  // starts: a start can take a guest's call timeout several times over, and stats_json() (the
  // admin server-stats reply, GET /metrics) runs on the I/O threads, which must not wait for it.
  std::lock_guard apply_lock(apply_mu_);
  struct Plan {
    const guest::GuestOptions* options = nullptr;
    ModuleStamp stamp;  // taken before loading: a file replaced while it loads counts as changed
    bool keep = false;  // running with these options and this module file: left as it is
    bool running = false;
    std::unique_ptr<guest::GuestHost> fresh;  // started by this apply
    std::string refused;                      // why it could not start
  };
  std::vector<Plan> plans;
  for (const auto& options : wanted) {
    Plan& p = plans.emplace_back();
    p.options = &options;
    p.stamp = stamp_of(options.module_path);
  }
  {
    std::lock_guard lock(mu_);
    for (Plan& p : plans) {
      auto it = std::find_if(running_.begin(), running_.end(),
                             [&](const auto& g) { return g->options().name == p.options->name; });
      p.running = it != running_.end();
      p.keep = p.running && (*it)->options() == *p.options && stamps_[p.options->name] == p.stamp;
    }
  }
  for (Plan& p : plans) {
    if (p.keep) continue;
    auto fresh = start_guest(broker_, *p.options);
    if (fresh) {
      p.fresh = std::move(*fresh);
      continue;
    }
    p.refused = fresh.error().to_string();
    log::error("guest '{}': refused: {}{}", p.options->name, p.refused,
               p.running ? "; the running version carries on" : "");
  }

  Outcome out;
  std::vector<std::unique_ptr<guest::GuestHost>> next;
  std::vector<std::unique_ptr<guest::GuestHost>> retired;
  {
    std::lock_guard lock(mu_);
    auto take_running = [&](const std::string& name) -> std::unique_ptr<guest::GuestHost> {
      auto it = std::find_if(running_.begin(), running_.end(),
                             [&](const auto& g) { return g->options().name == name; });
      if (it == running_.end()) return nullptr;
      auto g = std::move(*it);
      running_.erase(it);
      return g;
    };
    std::vector<Refused> refused;
    for (Plan& p : plans) {
      const std::string& name = p.options->name;
      auto old = take_running(name);
      if (p.keep) {
        ++out.unchanged;
        if (old) next.push_back(std::move(old));
        continue;
      }
      if (!p.fresh) {
        out.refused.push_back(fmt::format("{}: {}", name, p.refused));
        refused.push_back({name, p.options->module_path, p.refused});
        if (old) next.push_back(std::move(old));
        continue;
      }
      if (old) {
        ++out.replaced;
        retired.push_back(std::move(old));
      } else {
        ++out.started;
      }
      stamps_[name] = p.stamp;
      next.push_back(std::move(p.fresh));
    }
    // What is left in running_ is no longer configured.
    out.stopped = running_.size();
    for (auto& g : running_) {
      stamps_.erase(g->options().name);
      retired.push_back(std::move(g));
    }
    running_ = std::move(next);
    refused_ = std::move(refused);
  }
  for (auto& g : retired) {
    log::info("guest '{}': stopping", g->options().name);
    g->stop();
  }
  retired.clear();  // their compiled modules are unloaded now
  for (const auto& options : wanted) {
    if (!options.compile_cache_dir.empty()) cache_dirs_.insert(options.compile_cache_dir);
  }
  for (const std::string& dir : cache_dirs_) {
    const guest::AotPruneResult pruned = guest::prune_aot_cache(dir);
    if (pruned.removed > 0) {
      log::info("compiled-module cache {}: {} file(s) of modules no guest runs removed, {} kept",
                dir, pruned.removed, pruned.kept);
    }
  }
  return out;
}

void GuestSet::stop_all() {
  std::vector<std::unique_ptr<guest::GuestHost>> all;
  {
    std::lock_guard lock(mu_);
    all = std::move(running_);
    running_.clear();
    stamps_.clear();
  }
  for (auto& g : all) g->stop();
}

nlohmann::json GuestSet::stats_json() const {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& g : running_) {
    const guest::GuestStats s = g->stats();
    out.push_back({{"name", s.name},
                   {"module", g->options().module_path},
                   {"instances-running", s.instances_running},
                   {"messages-handled", s.messages_handled},
                   {"batches", s.batches},
                   {"handler-errors", s.handler_errors},
                   {"traps", s.traps},
                   {"budget-exhaustions", s.budget_exhaustions},
                   {"memory-limit-hits", s.memory_limit_hits},
                   {"time-limit-hits", s.time_limit_hits},
                   {"instantiations", s.instantiations},
                   {"completed", s.completed},
                   {"abandoned", s.abandoned},
                   {"settle-failures", s.settle_failures},
                   {"handler-time-ns", s.handler_time_ns},
                   {"output-lines", s.output_lines},
                   {"output-lines-dropped", s.output_lines_dropped},
                   {"output-bytes-dropped", s.output_bytes_dropped}});
  }
  return out;
}

std::vector<guest::GuestStats> GuestSet::stats() const {
  std::lock_guard lock(mu_);
  std::vector<guest::GuestStats> out;
  for (const auto& g : running_) out.push_back(g->stats());
  return out;
}

size_t GuestSet::refused_count() const {
  std::lock_guard lock(mu_);
  return refused_.size();
}

nlohmann::json GuestSet::refused_json() const {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::array();
  for (const Refused& r : refused_) {
    out.push_back({{"name", r.name}, {"module", r.module}, {"reason", r.reason}});
  }
  return out;
}

}  // namespace witmq::daemon
