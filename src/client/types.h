// Values the client library hands to and gets from its callers: connection options, what the
// server announced, stream deliveries and the admin extensions' results (docs/PROTOCOL.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/message.h"
#include "common/result.h"
#include "common/unique_function.h"
#include "net/frames.h"

namespace witmq::client {

// The default daemon address (docs/CLI.md).
inline constexpr std::string_view kDefaultHost = "127.0.0.1";
inline constexpr uint16_t kDefaultPort = 7400;

// A TCP address: a host name or IP literal and a port.
struct Endpoint {
  std::string host = std::string(kDefaultHost);
  uint16_t port = kDefaultPort;
  bool operator==(const Endpoint&) const = default;
};

// Parses "HOST:PORT", "[IPv6]:PORT", "HOST" (port 7400) or ":PORT" (host 127.0.0.1). Errors name
// the text and what was expected.
Result<Endpoint> parse_endpoint(std::string_view text);
// Parses a comma-separated list of addresses, "a:7400,b:7400,c:7400" (the servers of a cluster),
// each as parse_endpoint does; at least one, no empty entry. Errors name the entry.
Result<std::vector<Endpoint>> parse_endpoints(std::string_view text);

// TLS towards a witmqd TLS listener (tls-listen). The server's certificate is verified against
// ca_file (the system's trusted CAs when it is empty) and must name the host connected to
// (server_name, else the endpoint's host: a DNS name or an IP address in its subject alternative
// names).
struct TlsClientOptions {
  bool enabled = false;
  std::string ca_file;      // PEM CAs the server's certificate must chain to; "" = system store
  std::string cert_file;    // PEM client certificate chain, for tls-client-cert; "" = none
  std::string key_file;     // PEM private key of cert_file
  std::string server_name;  // the name to verify and send as SNI; "" = the endpoint's host
  // Skips verifying the server's certificate and name: the connection is encrypted but the
  // server unauthenticated (anyone on the path can pose as it). For tests only.
  bool insecure = false;
};

// How a client connects and how long its blocking calls wait.
struct Options {
  // TLS; off by default (the plain listener).
  TlsClientOptions tls;
  // Authentication token sent in connect; none when the server needs none.
  std::optional<std::string> token;
  // TCP connect, the TLS handshake, and the connect/connect-ok handshake. Default 5 s.
  std::chrono::milliseconds connect_timeout{5000};
  // How long a blocking call (client.h) waits for its reply before it fails with kUnavailable;
  // 0 = as long as it takes. subscribe-try-receive adds its own timeout on top;
  // subscribe-receive always waits. Default 0.
  std::chrono::milliseconds request_timeout{0};
  // Reconnection (client.h): once the connection is lost (the server closed it or said goaway
  // with unavailable, or the network failed), the next call connects again, to the next server
  // of the list, round after round, waiting between rounds from reconnect_backoff_min doubling up
  // to reconnect_backoff_max, for at most reconnect_timeout; then it fails with unavailable
  // naming every server. 0 (the default) = a lost connection stays lost, as with one server of
  // old. The CLI and witmq-bench set it when given more than one server.
  std::chrono::milliseconds reconnect_timeout{0};
  std::chrono::milliseconds reconnect_backoff_min{50};
  std::chrono::milliseconds reconnect_backoff_max{1'000};
};

// What the server announced in connect-ok.
struct ServerInfo {
  uint16_t version = 0;
  std::string server;  // e.g. "witmqd/0.1.0"
  net::ServerLimits limits;
};

// One deliver frame of a stream: messages of one channel, acquired like a receive's.
struct Delivery {
  std::string channel;
  std::vector<Message> messages;
};

// Called on the connection's I/O thread with each delivery of a stream, then once with an error
// if the stream ends without stop_stream (stream-end from the server, or the connection is lost).
// It must not block: hand the work to another thread or issue asynchronous calls.
using StreamHandler = UniqueFunction<void(Result<Delivery>)>;

// A subscription of a channel, from channel-stats.
struct SubscriptionStats {
  std::string name;  // "" for a point-to-point channel's shared subscription
  bool durable = true;
  uint64_t floor = 0;  // every sequence below is settled
  uint64_t next = 0;   // next sequence never delivered
  uint64_t lag = 0;
  uint64_t in_flight = 0;
  uint64_t available = 0;
};

// A channel-stats object (docs/PROTOCOL.md, section 13). Fields the reply lacks keep their
// defaults; `json` holds the whole object as the server sent it, fields this build does not know
// included.
struct ChannelStats {
  std::string name;
  std::string kind;                 // "point-to-point" / "publish-subscribe"
  std::string durability;           // "sync" / "group" / "none"
  std::string dead_letter_channel;  // as configured; "" = "<name>.dlq"
  bool is_dead_letter = false;
  uint64_t first_seq = 0;
  uint64_t head_seq = 0;
  uint64_t depth = 0;
  uint64_t in_flight = 0;
  int64_t oldest_age_ms = 0;
  uint64_t sends_total = 0;
  uint64_t deliveries_total = 0;
  uint64_t redeliveries_total = 0;
  uint64_t completes_total = 0;
  uint64_t abandons_total = 0;
  uint64_t lease_expiries_total = 0;
  uint64_t dead_letters_total = 0;
  std::vector<SubscriptionStats> subscriptions;
  std::string json;

  // The channel its dead letters go to: dead_letter_channel, or "<name>.dlq" when that is empty.
  std::string dead_letter_target() const;
};

// Channel settings for channel-declare, as key/value text: a value of decimal digits (with an
// optional leading '-') is sent as a JSON number, anything else as a string. The keys are those of
// docs/CONFIGURATION.md (kind, durability, max-deliveries, ...).
using ChannelSettings = std::vector<std::pair<std::string, std::string>>;

}  // namespace witmq::client
