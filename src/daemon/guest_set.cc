#include "daemon/guest_set.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/log.h"

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
  std::lock_guard lock(mu_);
  Outcome out;
  std::vector<std::unique_ptr<guest::GuestHost>> next;
  std::vector<std::unique_ptr<guest::GuestHost>> retired;
  auto take_running = [&](const std::string& name) -> std::unique_ptr<guest::GuestHost> {
    auto it = std::find_if(running_.begin(), running_.end(),
                           [&](const auto& g) { return g->options().name == name; });
    if (it == running_.end()) return nullptr;
    auto g = std::move(*it);
    running_.erase(it);
    return g;
  };
  for (const auto& options : wanted) {
    auto old = take_running(options.name);
    // Taken before loading, so that a file replaced while it loads counts as changed next time.
    const ModuleStamp stamp = stamp_of(options.module_path);
    if (old && old->options() == options && stamps_[options.name] == stamp) {
      ++out.unchanged;
      next.push_back(std::move(old));
      continue;
    }
    auto fresh = start_guest(broker_, options);
    if (!fresh) {
      const std::string why = fresh.error().to_string();
      log::error("guest '{}': refused: {}{}", options.name, why,
                 old ? "; the running version carries on" : "");
      out.refused.push_back(fmt::format("{}: {}", options.name, why));
      if (old) next.push_back(std::move(old));
      continue;
    }
    if (old) {
      ++out.replaced;
      retired.push_back(std::move(old));
    } else {
      ++out.started;
    }
    stamps_[options.name] = stamp;
    next.push_back(std::move(*fresh));
  }
  // What is left in running_ is no longer configured.
  out.stopped = running_.size();
  for (auto& g : running_) {
    stamps_.erase(g->options().name);
    retired.push_back(std::move(g));
  }
  running_ = std::move(next);
  refused_ = out.refused.size();
  for (auto& g : retired) {
    log::info("guest '{}': stopping", g->options().name);
    g->stop();
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
                   {"handler-time-ns", s.handler_time_ns}});
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
  return refused_;
}

}  // namespace witmq::daemon
