// The randomized concurrency test against the real witmqd (docs/TORTURE.md).
//
// Several connections do random operations over a few channels: send, both receives, complete,
// abandon, declare with changing dead-letter / requeue / drop policies, delete, purge, replay,
// browse, stats, stream start / credit / stop, reconfigure and reconnect; meanwhile the config
// file is rewritten and SIGHUP reloads it (guests started, refused, replaced and stopped), a
// pinger times round trips, and each round ends with a SIGKILL at a random moment and a restart
// (the last one with SIGTERM). It checks as it goes:
//  - every request is answered within its timeout (a try-receive's own, else none) plus a margin;
//    a subscribe-receive once the messages its connection sends to the channel could feed it;
//  - ping round trips stay under a bound;
//  - no connection is closed by the server without a goaway, and none gets a goaway at all while
//    the daemon runs (nothing in this workload is a reason to close one);
//  - no reply is an internal, corruption or io-error error;
//  - channel stats are consistent (no counter wrapped below zero, in-flight and available within
//    the unsettled depth, floor <= next <= head) and never go backwards between two samples
//    that no delete or restart separates;
//  - streams: no deliver before stream-start-ok or after stream-stop-ok, never beyond the credit;
//  - every reload is answered in the log; after a SIGKILL witmqd restarts, and every confirmed
//    send on a channel neither deleted nor purged since is still stored (Model, torture.h).
//
// Seeded: the seed is printed, and WITMQ_TORTURE_SEED=N repeats the same random choices (the
// threads' interleaving still varies). WITMQ_TORTURE_SECONDS sets the length (default 45),
// WITMQ_TORTURE_CLIENTS the connections (default 6), WITMQ_TORTURE_MARGIN_MS the answer margin
// (default 10000), WITMQ_TORTURE_PING_BOUND_MS the ping bound (default 2000).
// tools/torture.sh --minutes N runs it for long.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "daemon_process.h"
#include "torture_client.h"

namespace witmq::daemon::torture {
namespace {

using daemon::testing::Daemon;

uint64_t env_number(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoull(v) : fallback;
}

std::string wasm(const std::string& stem) {
  return std::string(WITMQ_GUEST_WASM_DIR) + "/" + stem + ".wasm";
}

// A random configuration: channel declarations with random policies, and guests that forward,
// trap (failed batches, re-instantiated) or cannot load (refused), the same guest name switching
// between a good and a bad module from one reload to the next.
json random_config(Rng& rng) {
  json config;
  // Not "warn": the reload's own line is at info.
  config["log-level"] = chance(rng, 0.1) ? "debug" : "info";
  json channels = json::object();
  for (const auto& q : kQueues) {
    if (chance(rng, 0.4)) channels[q] = random_settings(rng, q);
  }
  // The topic is declared by clients only: a channel of the file whose kind differs from the
  // existing channel's (the topic deleted, then created again as a queue by a send) stops witmqd
  // at start.
  config["channels"] = channels;
  json guests = json::array();
  const int forwarder = static_cast<int>(uniform(rng, 0, 2));  // none, good, refused
  if (forwarder == 1) {
    guests.push_back({{"name", "forwarder"},
                      {"module", wasm("forward_guest")},
                      {"channels", {kGuestIn}},
                      {"instances", uniform(rng, 1, 2)}});
  } else if (forwarder == 2) {
    guests.push_back({{"name", "forwarder"}, {"module", wasm("missing_export_guest")}});
  }
  if (chance(rng, 0.5)) {
    guests.push_back({{"name", "trapper"},
                      {"module", wasm("trap_guest")},
                      {"channels", {kGuestIn}},
                      {"restart-backoff-ms", uniform(rng, 1, 100)}});
  }
  config["guests"] = guests;
  // Start-time limits: a reload only logs that they need a restart; the next restart (after the
  // SIGKILL) applies them. Small ones make the server stop reading connections (max-in-flight)
  // and cut receives (max-unacked-per-connection).
  config["max-in-flight"] = pick(rng, std::vector<int>{8, 64, 1024});
  config["max-unacked-per-connection"] = pick(rng, std::vector<int>{30, 100000});
  return config;
}

class ConfigFile {
 public:
  explicit ConfigFile(const std::string& dir) : path_(dir + "/witmqd.json") {}
  void write(const std::string& text) {
    const std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

size_t count_lines(const std::string& log, std::string_view text) {
  size_t n = 0;
  for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

std::string tail(const std::string& log, size_t lines) {
  size_t at = log.size();
  for (size_t i = 0; i <= lines && at != std::string::npos && at > 0; ++i) {
    at = log.rfind('\n', at - 1);
  }
  return at == std::string::npos ? log : log.substr(at + 1);
}

// Reloads with a freshly written config and checks the daemon answered it in its log.
void reload(Daemon& d, ConfigFile& config, Rng& rng, Shared& shared) {
  Findings& f = shared.findings;
  auto answered = [&d]() {
    const std::string log = d.log();
    return count_lines(log, "reload done") + count_lines(log, "reload refused");
  };
  auto signal_and_wait = [&](const char* what) {
    const size_t before = answered();
    d.signal(SIGHUP);
    const auto deadline = Clock::now() + 2 * shared.options.margin;
    while (answered() == before && Clock::now() < deadline && !d.wait(0ms)) {
      std::this_thread::sleep_for(10ms);
    }
    if (answered() == before && !d.wait(0ms)) {
      f.fail("reload-unanswered", std::string(what) +
                                      ": no 'reload done' or 'reload refused' within " +
                                      std::to_string(2 * shared.options.margin.count()) + " ms");
    }
    f.count(std::string("reloads ") + what);
  };
  if (chance(rng, 0.1)) {
    // A bad file is refused and changes nothing; the good one follows at once, so that a restart
    // always finds a good file.
    config.write(R"({"max-in-flight": -1})");
    signal_and_wait("(bad file)");
  }
  config.write(random_config(rng).dump(2));
  signal_and_wait("(good file)");
}

// After a restart: every channel browsed to its end; every message the model says must be stored
// is somewhere.
void check_stored(uint16_t port, Shared& shared) {
  Findings& f = shared.findings;
  Wire wire;
  std::string why;
  if (!wire.open(port, &why)) {
    f.fail("connect-refused", "crash check: " + why);
    return;
  }
  uint32_t next = 1;
  auto call = [&](net::Body body) -> std::optional<Frame> {
    const uint32_t id = next++;
    wire.send(Frame{id, std::move(body)});
    const auto deadline = Clock::now() + shared.options.margin * 2;
    Frame frame;
    while (Clock::now() < deadline) {
      const Wire::Got got = wire.read(&frame, 50ms);
      if (got == Wire::Got::kNothing) continue;
      if (got != Wire::Got::kFrame) break;
      if (frame.request_id == id) return frame;
    }
    f.fail("crash-check-unanswered", "crash check: request " + std::to_string(id) + " unanswered");
    return std::nullopt;
  };
  if (!call(net::Connect{{net::kProtocolVersion}, "", std::nullopt})) return;
  auto list = call(net::AdminRequest{net::AdminOp::kChannelList, "{}"});
  if (!list || list->type() != FrameType::kChannelListOk) return;
  std::set<std::string> found;
  const json channels = json::parse(std::get<net::AdminReply>(list->body).json);
  for (const json& st : channels["channels"]) {
    const std::string channel = st["name"];
    uint64_t from = 0;
    for (;;) {
      auto page = call(net::AdminRequest{
          net::AdminOp::kBrowse, json{{"channel", channel}, {"from", from}, {"max", 1000}}.dump()});
      if (!page) return;
      auto* ok = std::get_if<net::BrowseOk>(&page->body);
      if (!ok) {
        f.fail("crash-check-browse", "crash check: browse of " + channel + ": " +
                                         std::string(net::frame_type_name(page->type())));
        break;
      }
      if (ok->messages.empty()) break;
      for (const auto& m : ok->messages) {
        found.emplace(m.data.begin(), m.data.end());
        from = std::stoull(*find_metadata(m, meta::kSequence)) + 1;
      }
    }
  }
  uint64_t checked = 0;
  const auto missing = shared.model.missing(found, &checked);
  f.count("confirmed sends checked after a restart", checked);
  for (const auto& [id, channel] : missing) {
    f.fail("lost-confirmed-send", "message " + id + " on " + channel +
                                      " (confirmed; neither deleted nor purged since; never " +
                                      "delivered to the harness) is not stored after the restart");
  }
}

TEST(TortureTest, RandomOperationsAgainstTheRealDaemon) {
  Shared shared;
  Options& o = shared.options;
  o.seed = env_number("WITMQ_TORTURE_SEED", std::random_device{}());
  o.duration = std::chrono::seconds(env_number("WITMQ_TORTURE_SECONDS", 45));
  o.clients = static_cast<int>(env_number("WITMQ_TORTURE_CLIENTS", 6));
  o.margin = ms(env_number("WITMQ_TORTURE_MARGIN_MS", 10000));
  o.ping_bound = ms(env_number("WITMQ_TORTURE_PING_BOUND_MS", 2000));
  std::cout << "torture: seed " << o.seed << " (repeat with WITMQ_TORTURE_SEED=" << o.seed << "), "
            << o.duration.count() << " s, " << o.clients << " clients" << std::endl;
  Rng rng(o.seed);

  const std::string dir = daemon::testing::make_temp_dir("torture");
  ConfigFile config(dir);
  config.write(random_config(rng).dump(2));
  Daemon d({"--config", config.path()}, dir + "/data");
  ASSERT_NE(d.port(), 0) << d.log();

  std::string earlier_logs;  // of the daemons killed before the running one
  const auto end = Clock::now() + o.duration;
  int round = 0;
  uint64_t actor_seed = o.seed;
  for (bool last = false; !last;) {
    ++round;
    // Each round ends at a random moment; the last with a graceful stop.
    const auto round_end =
        std::min<Clock::time_point>(end, Clock::now() + ms(uniform(rng, 5000, 15000)));
    last = round_end == end || end - round_end < 3s;
    shared.stop = false;
    shared.phase = Phase::kRunning;
    shared.protected_channels.clear();
    for (const auto& q : kQueues) {
      if (!chance(rng, 0.5)) continue;
      shared.protected_channels.insert({q, q + ".dlq", q + ".dead"});
    }
    std::vector<std::unique_ptr<Actor>> actors;
    std::vector<std::thread> threads;
    for (int i = 0; i < o.clients; ++i) {
      actors.push_back(std::make_unique<Actor>(i, ++actor_seed, shared));
      threads.emplace_back([&a = *actors.back(), port = d.port()] { a.run(port); });
    }
    threads.emplace_back([&shared, port = d.port()] { pinger(port, shared); });
    auto next_reload = Clock::now() + ms(uniform(rng, 500, 3000));
    bool died = false;
    while (Clock::now() < (last ? end : round_end)) {
      if (const auto code = d.wait(0ms)) {
        shared.phase = Phase::kStopping;
        shared.findings.fail("daemon-died", "witmqd exited with " + std::to_string(*code) +
                                                " in round " + std::to_string(round) + ":\n" +
                                                tail(d.log(), 12));
        died = true;
        break;
      }
      if (Clock::now() >= next_reload) {
        reload(d, config, rng, shared);
        next_reload = Clock::now() + ms(uniform(rng, 500, 3000));
      }
      std::this_thread::sleep_for(20ms);
    }
    shared.phase = Phase::kStopping;
    if (died) {
      last = last || Clock::now() >= end;
    } else if (last) {
      const auto code = d.stop(SIGTERM);
      if (code != 0) {
        shared.findings.fail("graceful-stop", "SIGTERM: exit " +
                                                  (code ? std::to_string(*code) : "none in 60 s") +
                                                  "\n" + tail(d.log(), 20));
      }
    } else {
      d.stop(SIGKILL);
      shared.findings.count("SIGKILLs");
    }
    shared.stop = true;
    for (auto& t : threads) t.join();
    if (last) break;
    shared.model.daemon_stopped();
    shared.stats.restarted();
    earlier_logs += d.log();
    d.start();
    if (d.wait(0ms)) {
      shared.findings.fail("restart-refused", "witmqd did not start after the end of round " +
                                                  std::to_string(round) + ":\n" +
                                                  tail(d.log(), 20));
      // The refused directory is kept aside; the run goes on with an empty one.
      earlier_logs += d.log();
      std::filesystem::rename(dir + "/data", dir + "/data.refused-" + std::to_string(round));
      shared.model.forget_messages();
      d.start();
      if (d.wait(0ms)) break;
      continue;
    }
    check_stored(d.port(), shared);
  }

  std::cout << "torture: seed " << o.seed << ", " << round << " round(s)\n";
  for (const auto& [what, n] : shared.findings.counts()) {
    std::cout << "  " << what << ": " << n << "\n";
  }
  const auto failures = shared.findings.failures();
  for (const auto& [kind, failure] : failures) {
    std::string details;
    for (const auto& d : failure.details) details += "\n    " + d;
    ADD_FAILURE() << "torture (WITMQ_TORTURE_SEED=" << o.seed << "): " << kind << ": "
                  << failure.count << " time(s)" << details;
  }
  std::cout << std::flush;
  if (failures.empty()) {
    std::filesystem::remove_all(dir);
  } else {
    d.keep_data();
    std::ofstream(dir + "/witmqd.log") << earlier_logs << d.log();
    std::cout << "torture: data directory, config and witmqd.log kept in " << dir << "\n";
  }
}

}  // namespace
}  // namespace witmq::daemon::torture
