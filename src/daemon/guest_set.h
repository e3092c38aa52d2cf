// The daemon's running guests, by name: started from the configuration, changed by a reload,
// reported in server-stats. A guest that cannot be loaded or started is refused on its own
// (logged with its name and the reason); the daemon and its other guests carry on.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "broker/broker.h"
#include "guest/guest_host.h"
#include "guest/guest_options.h"

namespace witmq::daemon {

// Thread-safe: apply(), stats_json() and stop_all() may be called from any thread.
class GuestSet {
 public:
  explicit GuestSet(broker::Broker& broker) : broker_(broker) {}
  ~GuestSet() { stop_all(); }
  GuestSet(const GuestSet&) = delete;
  GuestSet& operator=(const GuestSet&) = delete;

  struct Outcome {
    size_t started = 0, stopped = 0, replaced = 0, unchanged = 0;
    std::vector<std::string> refused;  // "name: reason", one per guest that could not start
  };
  // Makes the running guests those of `wanted`: starts the new ones, stops the ones no longer
  // listed, replaces the ones whose options changed or whose module file changed since it was
  // loaded (size or modification time: a module rebuilt in place), and leaves the rest running. A
  // replacement starts before the guest it replaces stops, so its subscription always has a
  // consumer; if the replacement cannot start, the old guest keeps running. Then the
  // compiled-module cache keeps only the compiled modules of the guests that run
  // (guest::prune_aot_cache).
  Outcome apply(const std::vector<guest::GuestOptions>& wanted);
  void stop_all();

  // [{"name": ..., "module": ..., "instances-running": ..., "messages-handled": ..., ...}, ...]
  nlohmann::json stats_json() const;
  // The running guests' figures, by guest.
  std::vector<guest::GuestStats> stats() const;
  // Guests of the last apply() that are not running because they were refused.
  size_t refused_count() const;
  // Those guests: [{"name": ..., "module": ..., "reason": ...}, ...].
  nlohmann::json refused_json() const;

 private:
  broker::Broker& broker_;
  std::mutex apply_mu_;    // one apply() at a time; held while guests start
  mutable std::mutex mu_;  // the fields below; never held while a guest starts
  std::vector<std::unique_ptr<guest::GuestHost>> running_;
  // Each running guest's module file as it was when the guest was loaded, by guest name.
  struct ModuleStamp {
    std::filesystem::file_time_type modified{};
    uintmax_t size = 0;
    bool operator==(const ModuleStamp&) const = default;
  };
  static ModuleStamp stamp_of(const std::string& path);
  std::map<std::string, ModuleStamp> stamps_;
  struct Refused {
    std::string name, module, reason;
  };
  std::vector<Refused> refused_;
  std::set<std::string> cache_dirs_;  // compile caches guests of apply() named (apply_mu_)
};

}  // namespace witmq::daemon
