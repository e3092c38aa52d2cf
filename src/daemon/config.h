// The configuration of witmqd: one JSON object whose keys are defined once, in config_keys(),
// with their type, default, bounds and doc string. The embedded default configuration
// (config/witmqd.json), the checks at start and docs/CONFIGURATION.md all come from that table.
//
// Layers, each overriding the one before: the defaults, the config file (--config), then the
// flags (--listen, --http-listen, --data-dir, --log-level, --set KEY=VALUE), in command-line
// order.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "auth/authenticator.h"
#include "broker/broker.h"
#include "cluster/options.h"
#include "common/log.h"
#include "common/result.h"
#include "guest/guest_options.h"
#include "net/http_server.h"
#include "net/server.h"
#include "net/tls.h"

namespace witmq::daemon {

// The daemon's configuration once every layer is applied and checked. With a TLS listener on,
// checking includes loading the certificate, the key and the client CA bundle.
struct Config {
  // Where the protocol server listens (listen); off when listen is "".
  bool listen_enabled = true;
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 7400;
  // The TLS listeners (tls-listen, https-listen): their addresses are server.tls_host/tls_port
  // and http.tls_host/tls_port, their context (built from `tls` once the keys are checked)
  // server.tls_context and http.tls_context.
  bool tls_listen_enabled = false;
  bool https_listen_enabled = false;
  net::TlsOptions tls;
  log::Level log_level = log::Level::kInfo;
  // Threads running network I/O and broker timers (io-threads; 0 resolved to the core count).
  uint32_t io_threads = 1;
  // How often the allocator's free memory is checked (memory-release-interval-ms; 0 = never),
  // and how much of it may stay before it is given back to the kernel
  // (memory-release-threshold-bytes). daemon/memory_release.h.
  std::chrono::milliseconds memory_release_interval{10'000};
  uint64_t memory_release_threshold = 8 << 20;
  broker::BrokerOptions broker;
  net::ServerOptions server;
  // The HTTP side (http-listen and the http- keys); off when http-listen is "".
  net::HttpServerOptions http;
  // The "guests" key, each entry read by the guest layer (guest/guest_options.h).
  std::vector<guest::GuestOptions> guests;
  // The "anonymous" and "identities" keys.
  auth::AuthConfig auth;
  // The cluster- keys; cluster.enabled() is false without cluster-node-id.
  cluster::ClusterOptions cluster;
  // Every key's value once the layers are merged, {"listen": "127.0.0.1:7400", ...}: what a
  // reload compares to tell which keys changed.
  nlohmann::json values;
};

// The JSON type a key takes.
enum class KeyType { kString, kInteger, kBoolean, kObject, kArray };
std::string_view key_type_name(KeyType type);

// One configuration key.
struct ConfigKey {
  std::string_view name;
  KeyType type;
  nlohmann::ordered_json default_value;
  // kInteger only: the accepted range, inclusive.
  int64_t min = 0;
  int64_t max = 0;
  // One paragraph for --help and docs/CONFIGURATION.md.
  std::string_view doc;
  // Stores a value of the right type (integers already within [min, max]) into the config;
  // returns an error for a value it cannot accept (say, an unknown log level), whose message
  // starts with what was wrong (the caller adds the key and where it came from).
  std::function<Status(const nlohmann::json& value, Config& config)> apply;
};

// Every key, in the order of the default configuration and the reference.
const std::vector<ConfigKey>& config_keys();
// nullptr for a name that is not a key.
const ConfigKey* find_key(std::string_view name);

// The embedded default configuration: every key with its default, in table order, as JSON text
// (two-space indent, trailing newline). config/witmqd.json is a copy of it.
std::string default_config_text();

// One layer of settings: a JSON object of keys, and where it came from ("--set", a file path).
struct ConfigLayer {
  std::string source;
  nlohmann::json values;  // an object
};

// Reads a config file into a layer. Errors name the file and, for bad JSON, the position.
Result<ConfigLayer> read_config_file(const std::string& path);
// The text of a config file into a layer whose source is `path`, as read_config_file does once
// it has read the file; never throws.
Result<ConfigLayer> parse_config_text(std::string_view text, const std::string& path);

// Applies `layers` on top of the defaults and checks every key, then the constraints between
// keys. Errors name the key, where its value came from, the value and what was expected, e.g.
// "max-in-flight (from --set): -1 is out of range 0..1000000".
Result<Config> build_config(const std::vector<ConfigLayer>& layers);

// docs/CONFIGURATION.md: the flags, every key of the table, the channel settings, the consumer
// extensions and the guest keys, as Markdown.
std::string config_reference_markdown(std::string_view flags_help);

}  // namespace witmq::daemon
