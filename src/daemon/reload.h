// SIGHUP: witmqd reads its configuration again (the --config file with the same flags over it)
// and applies what can change while it runs: log-level, guests (started, stopped and replaced by
// name, GuestSet::apply) and channel declarations (new or changed entries of `channels` are
// declared, as at start). Every other key keeps its running value until a restart; a reload that
// changes one logs "needs a restart: KEY, ...". A configuration that does not load is refused as
// a whole with the key and the reason, and nothing changes.
#pragma once

#include <string>
#include <vector>

#include "auth/authenticator.h"
#include "broker/broker.h"
#include "daemon/command_line.h"
#include "daemon/config.h"
#include "daemon/guest_set.h"

namespace witmq::daemon {

// The keys a reload applies live; every other key takes effect at start only.
bool reloadable_key(std::string_view key);

// The keys, in table order, whose value differs between `running` and `next` and that only a
// restart applies.
std::vector<std::string> keys_needing_restart(const Config& running, const Config& next);

// What one reload did.
struct ReloadOutcome {
  bool config_ok = false;
  std::string error;  // !config_ok: the loader's message, naming the key and the reason
  bool log_level_changed = false;
  bool auth_changed = false;  // anonymous or identities
  GuestSet::Outcome guests;
  std::vector<std::string> channels_declared;
  std::vector<std::string> channels_refused;  // "name: reason"
  std::vector<std::string> needs_restart;
  // The one log line that sums the reload up.
  std::string summary() const;
};

// Holds the configuration the daemon runs with and applies reloads to it. One reload at a time:
// reload() is called from one thread (witmqd's main thread).
class Reloader {
 public:
  Reloader(CommandLine command_line, Config running, broker::Broker& broker, GuestSet& guests,
           auth::Authenticator& authenticator)
      : command_line_(std::move(command_line)),
        running_(std::move(running)),
        broker_(broker),
        guests_(guests),
        authenticator_(authenticator) {}

  // Loads the configuration again and applies it; logs each change and the summary.
  ReloadOutcome reload();

  const Config& running() const { return running_; }

 private:
  CommandLine command_line_;
  // The configuration in effect: the start-time values, with the reloadable keys as last applied.
  Config running_;
  broker::Broker& broker_;
  GuestSet& guests_;
  auth::Authenticator& authenticator_;
};

}  // namespace witmq::daemon
