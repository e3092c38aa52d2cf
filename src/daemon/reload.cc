#include "daemon/reload.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "common/log.h"
#include "daemon/access_warning.h"

namespace witmq::daemon {

namespace {

using Channels = std::vector<std::pair<std::string, broker::ChannelSettings>>;

const broker::ChannelSettings* find_channel(const Channels& channels, const std::string& name) {
  auto it = std::find_if(channels.begin(), channels.end(),
                         [&](const auto& c) { return c.first == name; });
  return it == channels.end() ? nullptr : &it->second;
}

std::string_view level_name(log::Level level) {
  switch (level) {
    case log::Level::kDebug:
      return "debug";
    case log::Level::kInfo:
      return "info";
    case log::Level::kWarn:
      return "warn";
    case log::Level::kError:
      return "error";
  }
  return "info";
}

}  // namespace

bool reloadable_key(std::string_view key) {
  return key == "log-level" || key == "guests" || key == "channels" || key == "anonymous" ||
         key == "identities";
}

std::vector<std::string> keys_needing_restart(const Config& running, const Config& next) {
  std::vector<std::string> keys;
  for (const auto& k : config_keys()) {
    const std::string name(k.name);
    if (reloadable_key(name)) continue;
    const auto a = running.values.find(name);
    const auto b = next.values.find(name);
    const bool differ = (a == running.values.end()) != (b == next.values.end()) ||
                        (a != running.values.end() && *a != *b);
    if (differ) keys.push_back(name);
  }
  return keys;
}

std::string ReloadOutcome::summary() const {
  if (!config_ok) return fmt::format("reload refused, nothing changed: {}", error);
  return fmt::format(
      "reload done: log-level {}; identities {}; guests {} started, {} replaced, {} stopped, {} "
      "unchanged, {} refused; channels {} declared, {} refused; {}",
      log_level_changed ? "changed" : "unchanged", auth_changed ? "replaced" : "unchanged",
      guests.started, guests.replaced, guests.stopped,
      guests.unchanged, guests.refused.size(), channels_declared.size(), channels_refused.size(),
      needs_restart.empty() ? std::string("nothing needs a restart")
                            : fmt::format("needs a restart: {}", fmt::join(needs_restart, ", ")));
}

ReloadOutcome Reloader::reload() {
  ReloadOutcome out;
  auto next = load_config(command_line_);
  if (!next) {
    out.error = next.error().message;
    log::error("{}", out.summary());
    return out;
  }
  out.config_ok = true;

  if (next->log_level != running_.log_level) {
    log::info("reload: log-level {} -> {}", level_name(running_.log_level),
              level_name(next->log_level));
    log::set_level(next->log_level);
    running_.log_level = next->log_level;
    out.log_level_changed = true;
  }
  running_.values["log-level"] = next->values["log-level"];

  // Channels before guests: a new guest may consume from a channel declared in the same reload.
  // A declared channel that left the configuration is kept with its messages.
  Channels applied;
  for (const auto& [name, settings] : next->broker.channels) {
    const broker::ChannelSettings* before = find_channel(running_.broker.channels, name);
    if (before && *before == settings) {
      applied.emplace_back(name, settings);
      continue;
    }
    if (auto st = broker_.declare_channel(name, settings); !st) {
      log::error("reload: channel '{}': not declared: {}", name, st.error().to_string());
      out.channels_refused.push_back(fmt::format("{}: {}", name, st.error().to_string()));
      // Keep what runs, so that the next reload tries again.
      if (before) applied.emplace_back(name, *before);
      continue;
    }
    log::info("reload: channel '{}' {}", name, before ? "updated" : "declared");
    out.channels_declared.push_back(name);
    applied.emplace_back(name, settings);
  }
  for (const auto& [name, settings] : running_.broker.channels) {
    if (!find_channel(next->broker.channels, name)) {
      log::info(
          "reload: channel '{}' is no longer in the configuration; it is kept with its messages "
          "(channel-delete removes it)",
          name);
    }
  }
  running_.broker.channels = std::move(applied);
  running_.values["channels"] = next->values["channels"];

  // Identities before guests: a guest without permissions takes the anonymous grants.
  if (!(next->auth == running_.auth)) {
    authenticator_.replace(next->auth);
    running_.auth = next->auth;
    out.auth_changed = true;
    log::info("reload: identities replaced ({} configured, anonymous access {}); connections "
              "whose identity is gone or whose credential changed are refused from their next "
              "request",
              next->auth.identities.size(), next->auth.anonymous ? "on" : "off");
    warn_about_anonymous(running_);
  }
  running_.values["anonymous"] = next->values["anonymous"];
  running_.values["identities"] = next->values["identities"];

  out.guests = guests_.apply(next->guests);
  running_.guests = next->guests;
  running_.values["guests"] = next->values["guests"];

  out.needs_restart = keys_needing_restart(running_, *next);
  if (!out.needs_restart.empty()) {
    log::warn("reload: needs a restart: {} (the running values stay in effect until then)",
              fmt::join(out.needs_restart, ", "));
  }
  log::info("{}", out.summary());
  return out;
}

}  // namespace witmq::daemon
