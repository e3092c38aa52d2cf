#include "daemon/config.h"

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <thread>

#include "auth/authenticator.h"
#include "broker/channel_settings.h"
#include "broker/extensions.h"
#include "common/json_depth.h"
#include "net/frames.h"

namespace witmq::daemon {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

constexpr int64_t kKiB = 1024;
constexpr int64_t kMiB = 1024 * kKiB;
constexpr int64_t kGiB = 1024 * kMiB;
constexpr int64_t kU32Max = std::numeric_limits<uint32_t>::max();

using Apply = std::function<Status(const json&, Config&)>;

ConfigKey string_key(std::string_view name, std::string_view fallback, std::string_view doc,
                     std::function<Status(const std::string&, Config&)> apply) {
  return {
      name, KeyType::kString, ordered_json(fallback), 0, 0, doc, [apply](const json& v, Config& c) {
        return apply(v.get<std::string>(), c);
      }};
}

ConfigKey integer_key(std::string_view name, int64_t fallback, int64_t min, int64_t max,
                      std::string_view doc, std::function<void(int64_t, Config&)> apply) {
  return {name,
          KeyType::kInteger,
          ordered_json(fallback),
          min,
          max,
          doc,
          [apply](const json& v, Config& c) {
            apply(v.get<int64_t>(), c);
            return ok_status();
          }};
}

// "HOST:PORT" or "[IPV6]:PORT" into `host` and `port`.
Status split_host_port(const std::string& s, std::string& host_out, uint16_t& port_out) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
    return invalid_argument(fmt::format("'{}' is not HOST:PORT (e.g. 127.0.0.1:7400)", s));
  }
  std::string host = s.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) {
      return invalid_argument(fmt::format("'{}': an IPv6 host goes in brackets, [::1]:7400", s));
    }
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = s.substr(colon + 1);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return invalid_argument(
        fmt::format("'{}': port '{}' is not a number in 0..65535 (0 picks a free port)", s, port));
  }
  host_out = std::move(host);
  port_out = static_cast<uint16_t>(value);
  return ok_status();
}

// "" turns the plain protocol listener off (tls-listen must then be on).
Status parse_listen(const std::string& s, Config& c) {
  c.listen_enabled = !s.empty();
  if (s.empty()) return ok_status();
  return split_host_port(s, c.listen_host, c.listen_port);
}

// As listen; "" (the default) leaves the TLS listener off.
Status parse_tls_listen(const std::string& s, Config& c) {
  c.tls_listen_enabled = !s.empty();
  if (s.empty()) return ok_status();
  return split_host_port(s, c.server.tls_host, c.server.tls_port);
}

Status parse_https_listen(const std::string& s, Config& c) {
  c.https_listen_enabled = !s.empty();
  if (s.empty()) return ok_status();
  return split_host_port(s, c.http.tls_host, c.http.tls_port);
}

// As listen; "" turns the HTTP side off.
Status parse_http_listen(const std::string& s, Config& c) {
  c.http.enabled = !s.empty();
  if (s.empty()) return ok_status();
  return split_host_port(s, c.http.host, c.http.port);
}

// The channel settings object in the order of broker::channel_setting_docs().
ordered_json ordered_settings(const broker::ChannelSettings& s) {
  const json all = broker::settings_to_json(s);
  ordered_json out = ordered_json::object();
  for (const auto& d : broker::channel_setting_docs()) {
    const std::string key(d.key);
    out[key] = ordered_json::parse(all.at(key).dump());
  }
  return out;
}

// A node id or cluster name: 1..64 of A-Z a-z 0-9 . _ - (they become parts of etcd keys).
Status check_cluster_name(const std::string& s) {
  if (s.empty() || s.size() > 64 ||
      s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
          std::string::npos) {
    return invalid_argument(fmt::format("'{}' is not 1..64 characters of A-Z a-z 0-9 . _ -", s));
  }
  return ok_status();
}

// "" or HOST:PORT, checked as listen is.
Status check_optional_address(const std::string& s) {
  if (s.empty()) return ok_status();
  std::string host;
  uint16_t port = 0;
  return split_host_port(s, host, port);
}

// The peer link's shared secret: the first line of `path`, trailing white space removed.
Result<std::string> read_peer_token(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return invalid_argument(fmt::format("'{}': cannot open it: {}", path, std::strerror(errno)));
  }
  // Reads no more than a secret may hold (and its line end): a file without a line end, such as
  // a device that never ends, cannot make the read endless.
  std::string line(1026, '\0');
  in.read(line.data(), static_cast<std::streamsize>(line.size()));
  line.resize(static_cast<size_t>(in.gcount()));
  if (const auto end = line.find('\n'); end != std::string::npos) line.resize(end);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  if (line.size() < 16 || line.size() > 1024) {
    return invalid_argument(fmt::format(
        "'{}': its first line holds a secret of {} bytes, expected 16..1024", path, line.size()));
  }
  return line;
}

// The cluster- keys (docs/CLUSTERING.md). Without cluster-node-id none of them has an effect.
void add_cluster_keys(std::vector<ConfigKey>& k) {
  k.push_back(string_key(
      "cluster-node-id", "",
      "This node's id in the cluster, 1..64 of A-Z a-z 0-9 . _ -. \"\" (the default): no "
      "cluster, witmqd is a single node and never talks to etcd. Set: witmqd registers in etcd "
      "at start under a lease it keeps alive and refuses to start when a live node already has "
      "this id (docs/CLUSTERING.md).",
      [](const std::string& s, Config& c) -> Status {
        if (!s.empty()) WITMQ_RETURN_IF_ERROR(check_cluster_name(s));
        c.cluster.node_id = s;
        return ok_status();
      }));
  k.push_back(string_key("cluster-name", "witmq",
                         "The cluster's name, 1..64 of A-Z a-z 0-9 . _ -: every key the nodes "
                         "write in etcd starts with /witmq/<cluster-name>/, so that clusters "
                         "can share one etcd.",
                         [](const std::string& s, Config& c) -> Status {
                           WITMQ_RETURN_IF_ERROR(check_cluster_name(s));
                           c.cluster.name = s;
                           return ok_status();
                         }));
  k.push_back(
      {"cluster-etcd-endpoints", KeyType::kArray, ordered_json::array({"127.0.0.1:2379"}), 0, 0,
       "etcd's client endpoints, [\"HOST:PORT\", ...] (an http:// prefix is allowed; "
       "etcd over TLS is not supported yet). witmqd speaks etcd's v3 API through its "
       "JSON gateway, to one endpoint at a time, and moves to the next when one does "
       "not answer.",
       [](const json& v, Config& c) -> Status {
         c.cluster.etcd_endpoints.clear();
         for (size_t i = 0; i < v.size(); ++i) {
           if (!v[i].is_string()) {
             return invalid_argument(
                 fmt::format("[{}]: {} is not a string HOST:PORT", i, v[i].dump()));
           }
           std::string e = v[i].get<std::string>();
           if (e.starts_with("https://")) {
             return invalid_argument(
                 fmt::format("[{}]: '{}': etcd over TLS is not supported yet; use http://", i, e));
           }
           if (e.starts_with("http://")) e = e.substr(7);
           if (!e.empty() && e.back() == '/') e.pop_back();
           std::string host;
           uint16_t port = 0;
           if (auto st = split_host_port(e, host, port); !st) {
             return invalid_argument(fmt::format("[{}]: {}", i, st.error().message));
           }
           if (port == 0) {
             return invalid_argument(fmt::format("[{}]: '{}': port 0 names no endpoint", i, e));
           }
           c.cluster.etcd_endpoints.push_back(e);
         }
         return ok_status();
       }});
  k.push_back(integer_key(
      "cluster-etcd-timeout-ms", 1'000, 100, 60'000,
      "How long one etcd request may take on one endpoint (connect, send, answer) before witmqd "
      "tries the next endpoint. Keep it well under cluster-lease-ttl-seconds.",
      [](int64_t v, Config& c) { c.cluster.etcd_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "cluster-lease-ttl-seconds", 5, 2, 300,
      "TTL of the node's etcd lease, kept alive every third of it (at most every second). A node "
      "that stops answering "
      "(killed, stopped, cut off) loses its registration and its channels' leaderships this "
      "long after its last keepalive; a node that cannot renew its lease in time stops "
      "believing it leads. Shorter fails over sooner and tolerates shorter pauses.",
      [](int64_t v, Config& c) { c.cluster.lease_ttl_seconds = v; }));
  k.push_back(string_key(
      "cluster-peer-listen", "",
      "Address of the peer link, HOST:PORT: the listener other nodes of the cluster dial for "
      "replication traffic (docs/CLUSTERING.md), authenticated by the cluster's shared secret "
      "(cluster-peer-token-file or cluster-peer-token). Recorded in the node's registration (as the default of "
      "cluster-advertise-peer). \"\" (the default): no peer listener.",
      [](const std::string& s, Config& c) -> Status {
        WITMQ_RETURN_IF_ERROR(check_optional_address(s));
        c.cluster.peer_listen = s;
        return ok_status();
      }));
  k.push_back(string_key(
      "cluster-peer-token-file", "",
      "File holding the cluster's shared secret (its first line, 16..1024 bytes, trailing white "
      "space removed): the way to give the secret that keeps it out of the config file; set "
      "this or cluster-peer-token, not both (one of them is required in cluster mode). Every "
      "node must hold the same secret: a peer whose hello does not carry it is refused, and "
      "only a node that proves it may forward a client's request. Read at start. Keep the "
      "file readable by witmqd alone.",
      [](const std::string& s, Config& c) -> Status {
        c.cluster.peer_token_file = s;
        return ok_status();
      }));
  k.push_back(integer_key(
      "cluster-peer-max-frame-bytes", 16 * 1024 * 1024, 64 * 1024, 256 * 1024 * 1024,
      "Largest frame body the peer listener accepts, in bytes; a longer one is refused and its "
      "connection closed before any of the body is read. Before a peer has authenticated, its "
      "hello may be 4096 bytes at most, whatever this says.",
      [](int64_t v, Config& c) { c.cluster.peer_max_frame_bytes = static_cast<uint32_t>(v); }));
  k.push_back(string_key(
      "cluster-advertise-client", "",
      "The protocol address other nodes and clients are told for this node, HOST:PORT. \"\" = "
      "the address the protocol listener bound.",
      [](const std::string& s, Config& c) -> Status {
        WITMQ_RETURN_IF_ERROR(check_optional_address(s));
        c.cluster.advertise_client = s;
        return ok_status();
      }));
  k.push_back(
      string_key("cluster-advertise-peer", "",
                 "The replication address other nodes are told for this node, HOST:PORT. \"\" = "
                 "cluster-peer-listen.",
                 [](const std::string& s, Config& c) -> Status {
                   WITMQ_RETURN_IF_ERROR(check_optional_address(s));
                   c.cluster.advertise_peer = s;
                   return ok_status();
                 }));
  k.push_back(string_key(
      "cluster-peer-token", "",
      "The cluster's shared secret, the same on every node, 16..1024 bytes; set this or "
      "cluster-peer-token-file (preferred: it keeps the secret out of the config), not both; "
      "one of them is required in cluster mode. A node proves it on its peer links and when it "
      "forwards a client's request to another node (and acts on behalf of the client's "
      "identity); a connect that does not prove it can never act for another identity. Keep "
      "the config file readable by witmqd only.",
      [](const std::string& s, Config& c) -> Status {
        if (!s.empty() && (s.size() < 16 || s.size() > 1024)) {
          return invalid_argument(
              fmt::format("{} bytes; expected 16..1024 bytes (a long random string)", s.size()));
        }
        c.cluster.peer_token = s;
        return ok_status();
      }));
  k.push_back(integer_key(
      "cluster-forward-timeout-ms", 5'000, 100, 60'000,
      "The bound on a client's operation that a node relays to the channel's leader: waiting "
      "for the leader to be known (a new channel is placed first), connecting to it, and its "
      "answer (a subscribe-try-receive adds its own timeout; a waiting receive is kept alive by "
      "pings answered within this bound). Past it the operation fails with unavailable naming "
      "the channel, its outcome unknown, and the connection to that leader is closed.",
      [](int64_t v, Config& c) { c.cluster.forward_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "cluster-replication-timeout-ms", 5'000, 100, 600'000,
      "How long the leader of a replicated channel (replicas above 1) waits for a majority of the "
      "channel's replicas to hold a write before answering it: a send, complete or abandon whose "
      "write no majority holds in time fails with unavailable (it may still be on this node's "
      "disk: its outcome is unknown, never a false ok).",
      [](int64_t v, Config& c) { c.cluster.replication_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "cluster-replication-retained-bytes", 32 * 1024 * 1024, 1024, int64_t{1} << 32,
      "Bytes of recent writes the leader of a replicated channel keeps in memory, per channel, to "
      "resend to a follower that missed them. A follower further behind (down for longer, or "
      "with an empty data directory) or whose log diverged is sent a snapshot of the channel's "
      "whole state instead, which costs more: reading and sending every message of the channel.",
      [](int64_t v, Config& c) {
        c.cluster.replication_retained_bytes = static_cast<uint64_t>(v);
      }));
  k.push_back(integer_key(
      "cluster-in-sync-timeout-ms", 0, 0, 600'000,
      "How long a follower in a replicated channel's in-sync set may leave a write unacknowledged "
      "before the leader takes it out of the set (in etcd; never below a majority of the "
      "replicas), so that writes are acknowledged without it; it is put back once it holds the "
      "leader's last write. A follower being sent a snapshot is out of the set until it holds "
      "the whole snapshot. Writes wait for every member of the set, so this is the longest a "
      "dead or stopped follower holds them up. 0 means half of cluster-replication-timeout-ms; "
      "otherwise it must be below cluster-replication-timeout-ms.",
      [](int64_t v, Config& c) { c.cluster.in_sync_timeout = std::chrono::milliseconds(v); }));
}

std::vector<ConfigKey> make_keys() {
  std::vector<ConfigKey> k;
  k.push_back(string_key(
      "listen", "127.0.0.1:7400",
      "Address of the protocol listener, HOST:PORT ([ADDRESS]:PORT for IPv6). Port 0 picks a free "
      "port; witmqd prints the address it bound on stdout as `listening on HOST:PORT`. \"\" "
      "turns it off, which needs tls-listen on.",
      parse_listen));
  k.push_back(string_key(
      "tls-listen", "",
      "Address of the TLS protocol listener, HOST:PORT as for listen; \"\" (the default) turns "
      "it off. The same protocol inside TLS (no STARTTLS), beside the plain listener: both share "
      "the channels, max-connections and the graceful stop. Needs tls-cert-file and "
      "tls-key-file. witmqd prints the address it bound on stdout as `tls listening on "
      "HOST:PORT`.",
      parse_tls_listen));
  k.push_back(string_key(
      "http-listen", "127.0.0.1:7401",
      "Address of the HTTP listener (health, readiness, Prometheus metrics, the admin API and "
      "CloudEvents publishing: docs/HTTP.md), HOST:PORT as for listen; \"\" turns it off. witmqd "
      "prints the address it bound on stdout as `http listening on HOST:PORT`.",
      parse_http_listen));
  k.push_back(string_key(
      "https-listen", "",
      "Address of the HTTPS listener: the HTTP side's routes inside TLS, beside http-listen, "
      "HOST:PORT as for listen; \"\" (the default) turns it off. Needs tls-cert-file and "
      "tls-key-file; http-max-connections counts both listeners. witmqd prints the address it "
      "bound on stdout as `https listening on HOST:PORT`.",
      parse_https_listen));
  k.push_back(string_key(
      "tls-cert-file", "",
      "PEM file of the TLS listeners' certificate chain, the server's certificate first. Read "
      "at start; a missing, unreadable or invalid file is refused with OpenSSL's reason.",
      [](const std::string& s, Config& c) {
        c.tls.cert_file = s;
        return ok_status();
      }));
  k.push_back(string_key("tls-key-file", "",
                         "PEM file of the private key of tls-cert-file's certificate (not "
                         "encrypted). A key that does not match the certificate is refused.",
                         [](const std::string& s, Config& c) {
                           c.tls.key_file = s;
                           return ok_status();
                         }));
  k.push_back(string_key("tls-client-ca-file", "",
                         "PEM bundle of the CAs that client certificates must chain to; needed "
                         "by tls-client-cert optional and required.",
                         [](const std::string& s, Config& c) {
                           c.tls.client_ca_file = s;
                           return ok_status();
                         }));
  k.push_back(string_key(
      "tls-client-cert", "none",
      "Client certificates on both TLS listeners: none (not asked for), optional (verified "
      "against tls-client-ca-file when the client sends one; a bad one fails the handshake) or "
      "required (a handshake without a certificate that verifies fails).",
      [](const std::string& s, Config& c) -> Status {
        auto mode = net::parse_client_cert_mode(s);
        if (!mode) {
          return invalid_argument(fmt::format("'{}' is not one of none, optional, required", s));
        }
        c.tls.client_cert = *mode;
        return ok_status();
      }));
  k.push_back(string_key("tls-min-version", "1.2",
                         "Oldest TLS version the TLS listeners accept: 1.2 or 1.3.",
                         [](const std::string& s, Config& c) -> Status {
                           if (s != "1.2" && s != "1.3") {
                             return invalid_argument(fmt::format("'{}' is not one of 1.2, 1.3", s));
                           }
                           c.tls.min_tls13 = s == "1.3";
                           return ok_status();
                         }));
  k.push_back(integer_key(
      "tls-handshake-timeout-ms", 10'000, 100, 600'000,
      "A connection to a TLS listener that has not finished its TLS handshake this long after "
      "it was accepted is closed; other connections are not held up meanwhile.",
      [](int64_t v, Config& c) { c.tls.handshake_timeout = std::chrono::milliseconds(v); }));
  k.push_back(
      integer_key("http-max-connections", 256, 1, 100'000,
                  "HTTP connections served at once. One more is answered 503 and closed.",
                  [](int64_t v, Config& c) { c.http.max_connections = static_cast<uint32_t>(v); }));
  k.push_back(integer_key(
      "http-idle-timeout-ms", 60'000, 100, 86'400'000,
      "An HTTP connection that sends no complete request for this long is closed; also bounds "
      "how long writing one response may take. Request bodies are limited to max-frame-bytes "
      "and headers to max-metadata-bytes plus 16 KiB.",
      [](int64_t v, Config& c) { c.http.idle_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "http-header-timeout-ms", 10'000, 100, 600'000,
      "Once the first byte of an HTTP request has arrived, its request line and headers must "
      "arrive within this long (and within http-idle-timeout-ms), or the connection is closed: "
      "clients that trickle their headers cannot hold connections for long.",
      [](int64_t v, Config& c) { c.http.header_timeout = std::chrono::milliseconds(v); }));
  k.push_back(
      {"http-allowed-hosts", KeyType::kArray, ordered_json::array(), 0, 0,
       "Names a browser, or a client without a token, may use to reach the HTTP side "
       "(console, API), [\"NAME\", ...], besides IP addresses, localhost and *.localhost, "
       "which are always allowed; \"*\" allows any name. A browser's request (one with an "
       "Origin or Sec-Fetch-* header), and any request served as the anonymous identity, whose "
       "Host is none of these is refused with 403: a page whose DNS name was pointed at this "
       "machine (DNS rebinding) must not reach it, and a browser's same-origin GET from a "
       "plain-HTTP page carries neither header. Requests with a token, and /healthz, /readyz "
       "and /console/, are not affected.",
       [](const json& v, Config& c) -> Status {
         c.http.allowed_hosts.clear();
         for (size_t i = 0; i < v.size(); ++i) {
           if (!v[i].is_string() || v[i].get<std::string>().empty()) {
             return invalid_argument(
                 fmt::format("[{}]: {} is not a host name (a non-empty string)", i, v[i].dump()));
           }
           const std::string name = v[i].get<std::string>();
           if (name.find_first_of(":/ ") != std::string::npos) {
             return invalid_argument(fmt::format(
                 "[{}]: '{}' is not a host name: give the name alone, without scheme or port", i,
                 name));
           }
           c.http.allowed_hosts.push_back(name);
         }
         return ok_status();
       }});
  k.push_back(string_key("data-dir", "./data",
                         "Directory of the message store (RocksDB); created if missing. Relative "
                         "paths are relative to the working directory.",
                         [](const std::string& s, Config& c) -> Status {
                           if (s.empty()) return invalid_argument("the directory is empty");
                           c.broker.data_dir = s;
                           return ok_status();
                         }));
  k.push_back(string_key(
      "log-level", "info", "Least severe log line written to stderr: debug, info, warn or error.",
      [](const std::string& s, Config& c) -> Status {
        auto level = log::parse_level(s);
        if (!level) {
          return invalid_argument(fmt::format("'{}' is not one of debug, info, warn, error", s));
        }
        c.log_level = *level;
        return ok_status();
      }));
  k.push_back(integer_key("io-threads", 0, 0, 256,
                          "Threads that run network I/O and broker timers. 0 = one per CPU core.",
                          [](int64_t v, Config& c) {
                            const unsigned cores =
                                std::max(1u, std::thread::hardware_concurrency());
                            c.io_threads = v == 0 ? cores : static_cast<uint32_t>(v);
                          }));
  k.push_back(integer_key(
      "memory-release-interval-ms", 10'000, 0, 3'600'000,
      "How often witmqd checks the memory its allocator keeps freed for reuse (resident, but "
      "holding nothing: left by closed connections and finished bursts) and, above "
      "memory-release-threshold-bytes, gives it back to the kernel. 0 = never (the allocator's "
      "own policy alone). Each check walks the allocator's arenas: milliseconds at most.",
      [](int64_t v, Config& c) { c.memory_release_interval = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "memory-release-threshold-bytes", 8 * kMiB, 0, 64 * kGiB,
      "Freed memory the allocator may keep resident for reuse before the check of "
      "memory-release-interval-ms gives it back to the kernel. Lower gives memory back sooner "
      "and costs more page faults when the next burst comes.",
      [](int64_t v, Config& c) { c.memory_release_threshold = static_cast<uint64_t>(v); }));
  k.push_back(integer_key(
      "max-connections", 10'000, 1, 1'000'000,
      "Client connections served at once. One more is answered with goaway "
      "(resource-exhausted) and closed.",
      [](int64_t v, Config& c) { c.server.max_connections = static_cast<uint32_t>(v); }));
  k.push_back(integer_key(
      "max-frame-bytes", 16 * kMiB, 4 * kKiB, kGiB,
      "Largest frame length field the server accepts and sends (announced in connect-ok). A "
      "larger incoming frame closes the connection. Must hold one message of max-message-bytes "
      "with its metadata.",
      [](int64_t v, Config& c) { c.server.limits.max_frame_bytes = static_cast<uint32_t>(v); }));
  k.push_back(integer_key("max-send-messages", 10'000, 1, 1'000'000,
                          "Messages in one send request.", [](int64_t v, Config& c) {
                            c.server.limits.max_batch_messages = static_cast<uint32_t>(v);
                            c.broker.max_send_batch = static_cast<uint32_t>(v);
                          }));
  k.push_back(integer_key("max-message-bytes", 1 * kMiB, 0, kGiB, "Data bytes of one message.",
                          [](int64_t v, Config& c) {
                            c.server.limits.max_message_bytes = static_cast<uint32_t>(v);
                            c.broker.max_message_bytes = static_cast<size_t>(v);
                          }));
  k.push_back(integer_key(
      "max-metadata-entries", 64, 0, 65'535,
      "Metadata entries of one message, not counting the reserved witmq- keys; also the most "
      "extension entries of a guest-configuration.",
      [](int64_t v, Config& c) {
        c.server.limits.max_metadata_entries = static_cast<uint32_t>(v);
        c.broker.max_metadata_entries = static_cast<uint32_t>(v);
      }));
  k.push_back(integer_key("max-metadata-bytes", 16 * kKiB, 0, 16 * kMiB,
                          "Key and value bytes of those metadata entries.",
                          [](int64_t v, Config& c) {
                            c.server.limits.max_metadata_bytes = static_cast<uint32_t>(v);
                            c.broker.max_metadata_bytes = static_cast<size_t>(v);
                          }));
  k.push_back(integer_key(
      "max-channel-name-bytes", kMaxChannelNameBytes, 1, kMaxChannelNameBytes,
      "Longest name of a new channel (created by a send, a receive, a declare or the config). "
      "Channels that already exist keep working; the characters are the protocol's (A-Z a-z 0-9 "
      ". _ - : /, docs/PROTOCOL.md section 11), and grants (identities) restrict which names a "
      "client may use.",
      [](int64_t v, Config& c) { c.broker.max_channel_name_bytes = static_cast<size_t>(v); }));
  k.push_back(integer_key(
      "max-channels", 100'000, 0, 100'000'000,
      "Most channels that may exist. A send, receive or declare that would create one more is "
      "refused with resource-exhausted (HTTP 413); the dead-letter channels the broker makes "
      "are exempt. Each channel costs memory and /metrics series (see metrics-max-channels). "
      "0 = no limit.",
      [](int64_t v, Config& c) { c.broker.max_channels = static_cast<size_t>(v); }));
  k.push_back(integer_key(
      "metrics-max-channels", 1'000, 0, 1'000'000,
      "Channels that get their own series in /metrics (witmq_channel_* and "
      "witmq_subscription_*, the first this many by name); the others are counted in "
      "witmq_metrics_channels_omitted, so that many channels cannot make a scrape huge. "
      "0 = none.",
      [](int64_t v, Config& c) { c.http.metrics_max_channels = static_cast<uint32_t>(v); }));
  k.push_back(integer_key("max-config-channels", 1024, 1, 65'536,
                          "Channels in one guest-configuration.", [](int64_t v, Config& c) {
                            c.server.limits.max_config_channels = static_cast<uint32_t>(v);
                          }));
  k.push_back(integer_key("default-batch-size", 100, 1, 1'000'000,
                          "Messages one receive returns when the client set no batch-size "
                          "extension. At most max-batch-size.",
                          [](int64_t v, Config& c) {
                            c.broker.default_batch_size = static_cast<uint32_t>(v);
                            c.server.default_batch_size = static_cast<uint32_t>(v);
                          }));
  k.push_back(integer_key("max-batch-size", 10'000, 1, 1'000'000,
                          "Most messages in one receive reply, deliver frame or browse reply "
                          "(announced as max-receive-messages), and the largest batch-size "
                          "extension a client may set.",
                          [](int64_t v, Config& c) {
                            c.broker.max_batch_size = static_cast<uint32_t>(v);
                            c.server.max_receive_messages = static_cast<uint32_t>(v);
                          }));
  k.push_back(integer_key(
      "max-in-flight", 1024, 0, 1'000'000,
      "Requests of one connection read but not yet answered; at the limit the server stops "
      "reading that connection until a reply goes out (TCP backpressure, never an error). "
      "0 = no limit.",
      [](int64_t v, Config& c) { c.server.max_in_flight = static_cast<uint32_t>(v); }));
  k.push_back(integer_key(
      "max-in-flight-bytes", 64 * kMiB, 1 * kMiB, 16 * kGiB,
      "Decoded bytes of one connection's requests read but not yet answered (sends until they are "
      "stored, admin calls): at the limit the server stops reading that connection, like "
      "max-in-flight. One request is always read, so a connection holds at most this plus one "
      "decoded frame (up to about 8 times max-frame-bytes for a send of many small messages).",
      [](int64_t v, Config& c) { c.server.max_in_flight_bytes = static_cast<size_t>(v); }));
  k.push_back(integer_key(
      "max-credit", 10'000, 0, kU32Max, "Most credit a stream may hold at once. 0 = no limit.",
      [](int64_t v, Config& c) { c.server.max_credit = static_cast<uint32_t>(v); }));
  k.push_back(integer_key(
      "max-unacked-per-connection", 100'000, 0, 1'000'000'000,
      "Messages delivered to one connection with explicit settlement and not yet completed, "
      "abandoned or expired. Receives are cut to the room left; with none left a "
      "subscribe-receive or subscribe-try-receive fails with resource-exhausted and a stream "
      "pauses until settlements, abandons or lease expiries free room. 0 = no limit.",
      [](int64_t v, Config& c) { c.broker.max_unacked_per_client = static_cast<uint64_t>(v); }));
  k.push_back(integer_key(
      "max-pending-requests-per-connection", 10'000, 1, 1'000'000,
      "Requests (request-reply) one connection or guest may have waiting for replies; one more "
      "is refused with resource-exhausted. Each holds its timer and the replies gathered so far.",
      [](int64_t v, Config& c) {
        c.broker.max_pending_requests_per_client = static_cast<uint32_t>(v);
      }));
  k.push_back(integer_key(
      "max-request-timeout-ms", 300'000, 1, 86'400'000,
      "Longest timeout a request (request-reply) may ask for; a longer one is refused with "
      "invalid-argument.",
      [](int64_t v, Config& c) { c.broker.max_request_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "max-output-bytes", 64 * kMiB, 64 * kKiB, 16 * kGiB,
      "Replies and deliveries queued for one connection that the client has not read yet. Above "
      "it the server stops reading that connection's requests, pushing its stream and running "
      "its admin calls, and its waiting receives wait outside the broker; a stream round is "
      "sized to the room left; a reply completing above it is refused with resource-exhausted "
      "(a receive's messages are released). Queued output stays under it plus one reply.",
      [](int64_t v, Config& c) { c.server.max_output_bytes = static_cast<size_t>(v); }));
  k.push_back(integer_key(
      "max-input-buffer-bytes", kGiB, kMiB, 1024 * kGiB,
      "Bytes the protocol connections' input buffers may hold all together beyond 64 KiB each: "
      "frames larger than that whose bytes are still arriving. A connection whose frame would "
      "take more is sent goaway (resource-exhausted), so that clients that send most of a "
      "large frame and stop cannot make the server hold max-connections times "
      "max-frame-bytes. The HTTP side's request bodies being read or served have a bound of "
      "the same size of their own (a body of unknown length counts as max-frame-bytes); a "
      "request whose body would pass it is answered 503. Keep it at least max-frame-bytes.",
      [](int64_t v, Config& c) { c.server.max_input_buffer_bytes = static_cast<size_t>(v); }));
  k.push_back(integer_key(
      "output-stall-timeout-ms", 30'000, 100, 3'600'000,
      "A connection whose queued output stays above max-output-bytes this "
      "long (a client that stopped reading) is closed, without goaway.",
      [](int64_t v, Config& c) { c.server.output_stall_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "idle-timeout-ms", 0, 0, 86'400'000,
      "A connection the server has read nothing from for this long is closed "
      "(goaway unavailable); clients ping at half of it. 0 = never.",
      [](int64_t v, Config& c) { c.server.idle_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "connect-timeout-ms", 10'000, 100, 3'600'000,
      "A connection that has not completed connect this long after it was accepted is closed "
      "(goaway unavailable), so that clients that open connections and send nothing, or send "
      "their connect slowly, cannot hold connection slots. It cannot be turned off.",
      [](int64_t v, Config& c) { c.server.connect_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "shutdown-timeout-ms", 10'000, 0, 600'000,
      "On SIGTERM or SIGINT, how long connections get to finish their in-flight requests "
      "before they are closed regardless.",
      [](int64_t v, Config& c) { c.server.shutdown_timeout = std::chrono::milliseconds(v); }));
  k.push_back(integer_key(
      "tail-cache-bytes", 8 * kMiB, 0, 64 * kGiB,
      "Recent messages of each channel kept in memory, so that consumers "
      "that keep up never read the disk.",
      [](int64_t v, Config& c) { c.broker.tail_cache_bytes = static_cast<size_t>(v); }));
  k.push_back(integer_key("storage-write-buffer-bytes", 64 * kMiB, 1 * kMiB, 16 * kGiB,
                          "RocksDB memtable size per column family.", [](int64_t v, Config& c) {
                            c.broker.store.write_buffer_size = static_cast<size_t>(v);
                          }));
  k.push_back(integer_key(
      "storage-block-cache-bytes", 64 * kMiB, 0, 64 * kGiB,
      "RocksDB block cache for reads that miss the tail cache.",
      [](int64_t v, Config& c) { c.broker.store.block_cache_bytes = static_cast<size_t>(v); }));
  k.push_back(integer_key(
      "storage-max-commit-bytes", 4 * kMiB, 64 * kKiB, kGiB,
      "Largest merged write the group-commit path builds: larger batches share one fsync among "
      "more sends but delay the first of them.",
      [](int64_t v, Config& c) { c.broker.store.max_commit_bytes = static_cast<size_t>(v); }));
  k.push_back({"auto-create-channels", KeyType::kBoolean, ordered_json(true), 0, 0,
               "Create a channel with the default-channel settings the first time a client "
               "sends to or receives from it. When false, only declared channels exist and "
               "others are not-found.",
               [](const json& v, Config& c) {
                 c.broker.auto_create_channels = v.get<bool>();
                 return ok_status();
               }});
  k.push_back(
      {"default-channel", KeyType::kObject, ordered_settings(broker::ChannelSettings{}), 0, 0,
       "Channel settings (below) of channels created on first use or declared without "
       "them. Keys left out keep their defaults.",
       [](const json& v, Config& c) -> Status {
         auto s = broker::settings_from_json(v, broker::ChannelSettings{}, "default-channel");
         if (!s) return std::move(s).error();
         c.broker.default_channel = *s;
         c.server.default_channel = *s;
         return ok_status();
       }});
  k.push_back({"channels", KeyType::kObject, ordered_json::object(), 0, 0,
               "Channels declared at start: {\"NAME\": {channel settings}}. Keys left out take "
               "the default-channel value. An existing channel's settings are updated; its kind "
               "cannot change.",
               // Applied after default-channel: see build_config.
               [](const json&, Config&) { return ok_status(); }});
  k.push_back({"anonymous", KeyType::kObject,
               ordered_json({{"enabled", true},
                             {"send", {"*"}},
                             {"receive", {"*"}},
                             {"manage", {"*"}},
                             {"monitor", true},
                             {"max-connections", 0}}),
               0, 0,
               "Whether clients without credentials (no token, no client certificate that names "
               "an identity) get in, and with what grants: {\"enabled\": true|false, "
               "\"send\": [patterns], \"receive\": [patterns], \"manage\": [patterns], "
               "\"monitor\": true|false, \"max-connections\": n}. The default lets anonymous "
               "clients do everything, for a first run on 127.0.0.1, and witmqd says so in a "
               "warning at start; set {\"enabled\": false} anywhere else (docs/SECURITY.md).",
               // Read together with identities: see build_config.
               [](const json&, Config&) { return ok_status(); }});
  k.push_back({"identities", KeyType::kArray, ordered_json::array(), 0, 0,
               "Who may connect with credentials: [{\"name\": ..., \"token-sha256\": the 64 hex "
               "digits `witmqd --hash-token` prints, \"certificate-cn\": the CN of a verified "
               "client certificate, \"send\"/\"receive\"/\"manage\": [patterns], "
               "\"monitor\": true|false, \"max-connections\": n}]. Patterns are channel names "
               "in which `*` matches any run of characters; nothing is allowed that no pattern "
               "grants. The same tokens are HTTP bearer tokens (docs/SECURITY.md).",
               [](const json&, Config&) { return ok_status(); }});
  k.push_back({"guests", KeyType::kArray, ordered_json::array(), 0, 0,
               "WebAssembly guests run as in-process subscribers: an array of objects, one per "
               "guest, with the guest keys below.",
               [](const json& v, Config& c) -> Status {
                 c.guests.clear();
                 for (size_t i = 0; i < v.size(); ++i) {
                   auto g = guest::guest_options_from_json(v[i], fmt::format("guests[{}]", i));
                   if (!g) return std::move(g).error();
                   for (const auto& other : c.guests) {
                     if (other.name == g->name) {
                       return invalid_argument(fmt::format(
                           "guests[{}].name: '{}' names another guest already", i, g->name));
                     }
                   }
                   c.guests.push_back(std::move(*g));
                 }
                 return ok_status();
               }});
  add_cluster_keys(k);
  return k;
}

bool has_type(const json& v, KeyType type) {
  switch (type) {
    case KeyType::kString:
      return v.is_string();
    case KeyType::kInteger:
      return v.is_number_integer();
    case KeyType::kBoolean:
      return v.is_boolean();
    case KeyType::kObject:
      return v.is_object();
    case KeyType::kArray:
      return v.is_array();
  }
  return false;
}

std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// The key's value is checked and applied; errors get the key and the layer it came from.
Status apply_key(const ConfigKey& key, const json& v, const std::string& source, Config& c) {
  auto fail = [&](std::string why) {
    return invalid_argument(fmt::format("{} (from {}): {}", key.name, source, why));
  };
  if (!has_type(v, key.type)) {
    return fail(fmt::format("{} is a JSON {}, expected {}", shown(v), v.type_name(),
                            key.type == KeyType::kInteger
                                ? "an integer"
                                : fmt::format("a JSON {}", key_type_name(key.type))));
  }
  if (key.type == KeyType::kInteger) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(key.max)) {
      return fail(fmt::format("{} is out of range {}..{}", shown(v), key.min, key.max));
    }
    const int64_t n = v.get<int64_t>();
    if (n < key.min || n > key.max) {
      return fail(fmt::format("{} is out of range {}..{}", n, key.min, key.max));
    }
  }
  auto st = key.apply(v, c);
  if (!st) return fail(st.error().message);
  return ok_status();
}

std::string escape_cell(std::string_view s) {
  std::string out;
  for (char ch : s) {
    if (ch == '|') {
      out += "\\|";
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace

std::string_view key_type_name(KeyType type) {
  switch (type) {
    case KeyType::kString:
      return "string";
    case KeyType::kInteger:
      return "integer";
    case KeyType::kBoolean:
      return "boolean";
    case KeyType::kObject:
      return "object";
    case KeyType::kArray:
      return "array";
  }
  return "unknown";
}

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = make_keys();
  return keys;
}

const ConfigKey* find_key(std::string_view name) {
  for (const auto& k : config_keys()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

std::string default_config_text() {
  ordered_json doc = ordered_json::object();
  for (const auto& k : config_keys()) doc[std::string(k.name)] = k.default_value;
  return doc.dump(2) + "\n";
}

Result<ConfigLayer> read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return invalid_argument(
        fmt::format("config file '{}': cannot open it: {}", path, std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_config_text(text.str(), path);
}

Result<ConfigLayer> parse_config_text(std::string_view text, const std::string& path) {
  if (auto st = check_json_depth(text); !st) {
    return invalid_argument(fmt::format("config file '{}': {}", path, st.error().message));
  }
  json values;
  try {
    values = json::parse(text);
  } catch (const json::exception& e) {
    // Not only parse_error: a number too large for a double ("1e999") is out_of_range.
    return invalid_argument(fmt::format("config file '{}': not valid JSON: {}", path, e.what()));
  }
  if (!values.is_object()) {
    return invalid_argument(
        fmt::format("config file '{}': the document is {}, expected an object "
                    "of configuration keys",
                    path, values.type_name()));
  }
  return ConfigLayer{path, std::move(values)};
}

Result<Config> build_config(const std::vector<ConfigLayer>& layers) {
  // Merge the layers over the defaults, remembering where each value came from.
  std::map<std::string, std::pair<json, std::string>> values;
  for (const auto& k : config_keys()) {
    values[std::string(k.name)] = {json::parse(k.default_value.dump()), "the defaults"};
  }
  for (const auto& layer : layers) {
    for (const auto& [name, value] : layer.values.items()) {
      if (!find_key(name)) {
        return invalid_argument(
            fmt::format("{} (from {}): unknown key; `witmqd --help` lists "
                        "the keys",
                        name, layer.source));
      }
      values[name] = {value, layer.source};
    }
  }

  Config c;
  for (const auto& k : config_keys()) {
    const auto& [value, source] = values.at(std::string(k.name));
    WITMQ_RETURN_IF_ERROR(apply_key(k, value, source, c));
    c.values[std::string(k.name)] = value;
  }

  // Not a structured binding: the lambda below captures the source, which clang 14 (the
  // fuzzers' compiler) cannot do with a binding.
  const json& channels = values.at("channels").first;
  const std::string& channels_source = values.at("channels").second;
  for (const auto& [name, settings] : channels.items()) {
    auto fail = [&](const std::string& why) {
      return invalid_argument(fmt::format("channels (from {}): {}", channels_source, why));
    };
    if (auto st = validate_channel_name(name); !st) {
      return fail(fmt::format("'{}': {}", name, st.error().message));
    }
    auto s = broker::settings_from_json(settings, c.broker.default_channel,
                                        fmt::format("channels.{}", name));
    if (!s) return fail(s.error().message);
    c.broker.channels.emplace_back(name, *s);
  }

  // Compiled guests ("engine": "aot") are kept in the data directory, keyed by content.
  for (auto& g : c.guests) {
    g.compile_cache_dir = (std::filesystem::path(c.broker.data_dir) / "guest-cache").string();
  }

  // Constraints between keys.
  auto source_of = [&](const char* key) { return values.at(key).second; };
  {
    const auto& [anonymous, anonymous_source] = values.at("anonymous");
    const auto& [identities, identities_source] = values.at("identities");
    auto auth = auth::auth_config_from_json(anonymous, identities);
    if (!auth) {
      const bool about_anonymous = auth.error().message.rfind("anonymous", 0) == 0;
      return invalid_argument(fmt::format(
          "{} (from {}): {}", about_anonymous ? "anonymous" : "identities",
          about_anonymous ? anonymous_source : identities_source, auth.error().message));
    }
    c.auth = std::move(*auth);
    // A guest without its own permissions is as trusted as an anonymous client, and with
    // anonymous access off it is granted nothing.
    for (auto& g : c.guests) {
      if (g.permissions) continue;
      auth::Grants granted;
      if (c.auth.anonymous) {
        granted.send = c.auth.anonymous->grants.send;
        granted.receive = c.auth.anonymous->grants.receive;
      }
      g.permissions = std::move(granted);
    }
  }
  if (c.broker.default_batch_size > c.broker.max_batch_size) {
    return invalid_argument(fmt::format(
        "default-batch-size (from {}): {} exceeds max-batch-size {}",
        source_of("default-batch-size"), c.broker.default_batch_size, c.broker.max_batch_size));
  }
  // One message with its largest metadata and the reserved entries must fit in a frame, so that
  // every stored message can be delivered.
  const uint64_t largest_message = uint64_t{c.server.limits.max_message_bytes} +
                                   c.server.limits.max_metadata_bytes +
                                   8ull * c.server.limits.max_metadata_entries +
                                   net::kMaxReservedBytes + 8ull * net::kMaxReservedEntries + 10;
  const uint64_t frame_overhead = net::kHeaderBytes + 4 + kMaxChannelNameBytes + 4 + 1;
  if (largest_message + frame_overhead > c.server.limits.max_frame_bytes) {
    return invalid_argument(fmt::format(
        "max-frame-bytes (from {}): {} cannot hold one message of max-message-bytes {} with "
        "max-metadata-entries {} / max-metadata-bytes {} and the reserved entries; it needs at "
        "least {}",
        source_of("max-frame-bytes"), c.server.limits.max_frame_bytes,
        c.server.limits.max_message_bytes, c.server.limits.max_metadata_entries,
        c.server.limits.max_metadata_bytes, largest_message + frame_overhead));
  }
  if (c.server.max_input_buffer_bytes < c.server.limits.max_frame_bytes) {
    return invalid_argument(fmt::format(
        "max-input-buffer-bytes (from {}): {} is less than max-frame-bytes {}: a frame of that "
        "size could never be read",
        source_of("max-input-buffer-bytes"), c.server.max_input_buffer_bytes,
        c.server.limits.max_frame_bytes));
  }
  // The HTTP side's request limits follow the protocol's: a body holds what a frame may, the
  // headers what a message's metadata may (CloudEvents attributes travel in headers).
  if (c.cluster.in_sync_timeout.count() != 0 &&
      c.cluster.in_sync_timeout >= c.cluster.replication_timeout) {
    return invalid_argument(fmt::format(
        "cluster-in-sync-timeout-ms (from {}): {} is not below cluster-replication-timeout-ms "
        "{}: a lagging follower would fail every write before it is taken out of the in-sync set",
        source_of("cluster-in-sync-timeout-ms"), c.cluster.in_sync_timeout.count(),
        c.cluster.replication_timeout.count()));
  }
  if (!c.listen_enabled && !c.tls_listen_enabled) {
    return invalid_argument(fmt::format(
        "listen (from {}) and tls-listen (from {}) are both \"\": at least one protocol "
        "listener must be on",
        source_of("listen"), source_of("tls-listen")));
  }
  if (c.tls.client_cert != net::ClientCertMode::kNone && c.tls.client_ca_file.empty()) {
    return invalid_argument(fmt::format(
        "tls-client-cert (from {}): '{}' needs tls-client-ca-file, the CAs that client "
        "certificates are verified against",
        source_of("tls-client-cert"), values.at("tls-client-cert").first.get<std::string>()));
  }
  if (c.tls_listen_enabled || c.https_listen_enabled) {
    const char* listener = c.tls_listen_enabled ? "tls-listen" : "https-listen";
    for (const char* key : {"tls-cert-file", "tls-key-file"}) {
      if (values.at(key).first.get<std::string>().empty()) {
        return invalid_argument(fmt::format("{} (from {}): the TLS listener {} (from {}) needs it",
                                            key, source_of(key), listener, source_of(listener)));
      }
    }
    auto context = net::make_server_tls_context(c.tls);
    if (!context) {
      // The message starts with the key it is about: add where that key's value came from.
      std::string message = context.error().message;
      for (const char* key : {"tls-cert-file", "tls-key-file", "tls-client-ca-file"}) {
        if (message.starts_with(std::string(key) + " ")) {
          message =
              fmt::format("{} (from {}){}", key, source_of(key), message.substr(std::strlen(key)));
          break;
        }
      }
      return invalid_argument(message);
    }
    if (c.tls_listen_enabled) c.server.tls_context = *context;
    if (c.https_listen_enabled) c.http.tls_context = *context;
  }
  if (c.cluster.enabled() && c.cluster.etcd_endpoints.empty()) {
    return invalid_argument(fmt::format(
        "cluster-etcd-endpoints (from {}): empty, but cluster-node-id (from {}) turns cluster "
        "mode on, which needs at least one etcd endpoint",
        source_of("cluster-etcd-endpoints"), source_of("cluster-node-id")));
  }
  if (c.cluster.enabled() && !c.cluster.peer_token_file.empty()) {
    if (!c.cluster.peer_token.empty()) {
      return invalid_argument(fmt::format(
          "cluster-peer-token (from {}) and cluster-peer-token-file (from {}) are both set: give "
          "the cluster's shared secret one way only",
          source_of("cluster-peer-token"), source_of("cluster-peer-token-file")));
    }
    auto token = read_peer_token(c.cluster.peer_token_file);
    if (!token) {
      return invalid_argument(fmt::format("cluster-peer-token-file (from {}): {}",
                                          source_of("cluster-peer-token-file"),
                                          token.error().message));
    }
    c.cluster.peer_token = std::move(*token);
  }
  if (c.cluster.enabled() && c.cluster.peer_token.empty()) {
    return invalid_argument(fmt::format(
        "cluster-peer-token-file (from {}) and cluster-peer-token (from {}): both empty, but "
        "cluster-node-id (from {}) turns cluster mode on, in which nodes prove membership to "
        "each other with this shared secret (peer links, forwarded requests); set the same "
        "16..1024-byte secret on every node",
        source_of("cluster-peer-token-file"), source_of("cluster-peer-token"),
        source_of("cluster-node-id")));
  }
  if (c.cluster.advertise_peer.empty()) c.cluster.advertise_peer = c.cluster.peer_listen;
  c.server.plain_enabled = c.listen_enabled;
  c.server.tls_handshake_timeout = c.tls.handshake_timeout;
  c.http.tls_handshake_timeout = c.tls.handshake_timeout;
  c.http.max_body_bytes = c.server.limits.max_frame_bytes;
  c.http.max_buffered_body_bytes = c.server.max_input_buffer_bytes;
  c.http.max_header_bytes = c.server.limits.max_metadata_bytes + 16 * kKiB;
  c.http.shutdown_timeout = c.server.shutdown_timeout;
  return c;
}

std::string config_reference_markdown(std::string_view flags_help) {
  std::string md;
  md += "# witmqd configuration\n\n";
  md +=
      "<!-- Generated by `witmqd --print-config-reference` from the key table in "
      "src/daemon/config.cc; a test fails when this file differs from its output. -->\n\n";
  md +=
      "witmqd reads one JSON object. Every key is optional: a key left out takes its default, and "
      "with no file at all witmqd runs on the embedded defaults (printed by `witmqd "
      "--print-default-config`, shipped as `config/witmqd.json`): it listens on 127.0.0.1:7400 and "
      "keeps its data in `./data`, with its HTTP side (docs/HTTP.md) on 127.0.0.1:7401.\n\n"
      "Layers, each overriding the one before: the defaults, the file given with `--config`, then "
      "the flags in command-line order. An unknown key, a value of the wrong type or out of range "
      "stops witmqd at start with exit code 2 and a message naming the key, where the value came "
      "from and what was expected.\n\n"
      "SIGHUP makes witmqd read the file again, with the same flags over it: `log-level`, "
      "`channels`, `guests`, `anonymous` and `identities` apply at once; any other key that "
      "changed is logged as needing a "
      "restart and keeps its running value; a file that does not load changes nothing "
      "(docs/OPERATIONS.md, Signals).\n\n";
  md += "## Flags\n\n```\n";
  md += flags_help;
  md += "```\n\n";
  md += "## Keys\n\n| key | type | default | range | meaning |\n|---|---|---|---|---|\n";
  for (const auto& k : config_keys()) {
    std::string range;
    if (k.type == KeyType::kInteger) range = fmt::format("{}..{}", k.min, k.max);
    const std::string fallback = k.name == "default-channel"
                                     ? std::string("the channel settings' defaults")
                                     : fmt::format("`{}`", k.default_value.dump());
    md += fmt::format("| `{}` | {} | {} | {} | {} |\n", k.name, key_type_name(k.type),
                      escape_cell(fallback), range, escape_cell(k.doc));
  }
  md +=
      "\n## Channel settings\n\n"
      "The object of `default-channel`, of each entry of `channels`, and of the `settings` of the "
      "admin request channel-declare (docs/PROTOCOL.md section 13).\n\n"
      "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& d : broker::channel_setting_docs()) {
    md += fmt::format("| `{}` | {} | {} | {} |\n", d.key, d.type, escape_cell(d.default_value),
                      escape_cell(d.doc));
  }
  md +=
      "\n## Consumer extensions\n\n"
      "Not configuration keys of the daemon: the `extensions` a client passes in "
      "update-guest-configuration (docs/PROTOCOL.md section 6.4), and guests in their "
      "guest-configuration. An unknown key or a bad value is refused with invalid-argument naming "
      "the key.\n\n"
      "| key | values | default | meaning |\n|---|---|---|---|\n";
  for (const auto& d : broker::extension_docs()) {
    md += fmt::format("| `{}` | {} | {} | {} |\n", d.key, escape_cell(d.values),
                      escape_cell(d.default_value), escape_cell(d.doc));
  }
  md +=
      "\n## Guests\n\n"
      "Each object of `guests` describes one WebAssembly guest (docs/GUESTS.md). witmqd loads "
      "every guest at start, after the broker and before it accepts connections; a guest that "
      "fails to load or start is refused alone (logged with its name and the reason) while the "
      "daemon and the other guests carry on. A reload (SIGHUP) starts, stops and replaces guests "
      "by name.\n\n"
      "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& d : guest::guest_option_docs()) {
    md += fmt::format("| `{}` | {} | {} | {} |\n", d.key, escape_cell(d.type),
                      escape_cell(d.default_value), escape_cell(d.doc));
  }
  return md;
}

}  // namespace witmq::daemon
