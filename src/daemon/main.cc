// witmqd: the witmq daemon. Loads the configuration (daemon/config.h), opens the broker on the
// data directory, starts the configured guests, serves the protocol on a fixed pool of I/O
// threads, and stops gracefully on SIGTERM or SIGINT: stop accepting, finish in-flight requests
// (every confirmed send is durable), close connections with goaway, stop the guests, shut the
// broker down, exit 0.
#include <fmt/format.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "broker/broker.h"
#include "common/log.h"
#include "daemon/command_line.h"
#include "daemon/config.h"
#include "daemon/guest_set.h"
#include "net/http_server.h"
#include "net/server.h"

namespace {

namespace asio = boost::asio;
using namespace witmq;

constexpr int kExitFailure = 1;
constexpr int kExitBadConfig = 2;

std::string endpoint_text(const asio::ip::tcp::endpoint& ep) {
  const auto address = ep.address();
  return address.is_v6() ? fmt::format("[{}]:{}", address.to_string(), ep.port())
                         : fmt::format("{}:{}", address.to_string(), ep.port());
}

// What the HTTP side reports about the guests (net/ does not know guest/).
net::HttpSources http_sources(const daemon::GuestSet& guests) {
  net::HttpSources sources;
  sources.version = WITMQ_VERSION;
  sources.guest_figures = [&guests] {
    std::vector<net::GuestFigures> out;
    for (const guest::GuestStats& s : guests.stats()) {
      out.push_back({s.name, s.instances_running, s.batches, s.messages_handled, s.handler_errors,
                     s.traps, s.budget_exhaustions, s.memory_limit_hits, s.handler_time_ns});
    }
    return out;
  };
  sources.guests_json = [&guests] { return guests.stats_json(); };
  sources.guests_refused = [&guests] { return guests.refused_count(); };
  return sources;
}

int serve(const daemon::Config& config) {
  log::set_level(config.log_level);
  asio::io_context io(static_cast<int>(config.io_threads));
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < config.io_threads; ++i) threads.emplace_back([&io] { io.run(); });
  auto stop_threads = [&] {
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  };

  auto broker = broker::Broker::open(config.broker, io.get_executor());
  if (!broker) {
    log::error("cannot open the broker: {}", broker.error().to_string());
    stop_threads();
    return kExitFailure;
  }
  // Guests subscribe before clients arrive; each runs on its own worker threads. A guest that
  // cannot start is refused alone: the daemon and its other guests carry on.
  daemon::GuestSet guests(**broker);
  auto stop_guests = [&] { guests.stop_all(); };
  guests.apply(config.guests);

  net::ServerOptions server_options = config.server;
  server_options.host = config.listen_host;
  server_options.port = config.listen_port;
  server_options.server_name = "witmqd/" WITMQ_VERSION;
  server_options.extra_stats = [&guests] {
    return nlohmann::json{{"guests", guests.stats_json()}};
  };
  net::Server server(io, **broker, server_options);
  if (auto st = server.listen(); !st) {
    log::error("cannot listen: {}", st.error().to_string());
    stop_guests();
    (*broker)->shutdown();
    stop_threads();
    return kExitFailure;
  }
  // The HTTP side: health, metrics, the admin API and publishing (docs/HTTP.md).
  std::optional<net::HttpServer> http;
  if (config.http.enabled) {
    http.emplace(io, **broker, server, config.http, http_sources(guests));
    if (auto st = http->listen(); !st) {
      log::error("cannot listen: {}", st.error().to_string());
      http.reset();
      stop_guests();
      (*broker)->shutdown();
      stop_threads();
      return kExitFailure;
    }
    log::info("http listening on {}", endpoint_text(http->local_endpoint()));
  }
  const std::string address = endpoint_text(server.local_endpoint());
  log::info("witmqd {} listening on {} (data in {}, {} I/O threads)", WITMQ_VERSION, address,
            config.broker.data_dir, config.io_threads);
  std::fprintf(stdout, "listening on %s\n", address.c_str());
  if (http) {
    std::fprintf(stdout, "http listening on %s\n", endpoint_text(http->local_endpoint()).c_str());
  }
  std::fflush(stdout);

  std::promise<void> stopped, http_stopped;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signal) {
    if (ec) return;
    log::info("received {}; stopping: no new connections, finishing in-flight requests",
              signal == SIGTERM ? "SIGTERM" : "SIGINT");
    if (http) http->stop([&http_stopped] { http_stopped.set_value(); });
    server.stop([&stopped] { stopped.set_value(); });
    // A second signal does not wait any longer.
    signals.async_wait([](boost::system::error_code ec, int) {
      if (ec) return;
      log::warn("second signal: exiting without waiting for connections to close");
      std::_Exit(kExitFailure);
    });
  });
  stopped.get_future().wait();
  if (http) http_stopped.get_future().wait();
  signals.cancel();

  stop_guests();
  (*broker)->shutdown();
  stop_threads();
  http.reset();
  broker->reset();
  log::info("witmqd stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto command_line = daemon::parse_command_line(
      std::span<const char* const>(argv + 1, static_cast<size_t>(argc > 0 ? argc - 1 : 0)));
  if (!command_line) {
    std::fprintf(stderr, "witmqd: %s\n", command_line.error().message.c_str());
    return kExitBadConfig;
  }
  using Action = daemon::CommandLine::Action;
  switch (command_line->action) {
    case Action::kHelp:
      std::fputs(daemon::usage_text().c_str(), stdout);
      return 0;
    case Action::kVersion:
      std::fprintf(stdout, "witmqd %s (protocol version 1)\n", WITMQ_VERSION);
      return 0;
    case Action::kPrintDefaultConfig:
      std::fputs(daemon::default_config_text().c_str(), stdout);
      return 0;
    case Action::kPrintConfigReference:
      std::fputs(daemon::config_reference_markdown(daemon::flags_help()).c_str(), stdout);
      return 0;
    case Action::kCheckConfig:
    case Action::kRun:
      break;
  }
  auto config = daemon::load_config(*command_line);
  if (!config) {
    std::fprintf(stderr, "witmqd: bad configuration: %s\n", config.error().message.c_str());
    return kExitBadConfig;
  }
  if (command_line->action == Action::kCheckConfig) {
    std::fputs("configuration ok\n", stdout);
    return 0;
  }
  return serve(*config);
}
