// The endpoints of the HTTP side (docs/HTTP.md): a request, already read and bounded by the
// server, to a response (or to the work that makes one). Health, readiness and metrics answer from
// memory; the admin API goes through the same functions as the protocol's admin frames
// (net/admin.h); publishing maps the CloudEvents HTTP binding to a broker send (net/cloudevents.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/authenticator.h"
#include "broker/broker.h"
#include "common/result.h"
#include "net/admin.h"
#include "net/cloudevents.h"
#include "net/forward.h"
#include "net/metrics.h"

namespace witmq::net {

class Server;
struct HttpCounters;

// One request as the router sees it.
struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent: "/v1/channels/orders?x=1"
  // Header names in lower case, in the order they came.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // HTTPS: the CN of the client's verified certificate, which may name an identity.
  std::optional<std::string> certificate_cn;
  // Came over the HTTPS listener (an Origin of this server then starts with https://).
  bool secure = false;
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type
};

// {"error": {"code": "<error code name>", "message": "..."}} with `status`.
HttpResponse error_response(unsigned status, ErrorCode code, std::string message);
// The HTTP status for a broker or admin error: invalid-argument 400, not-found 404,
// already-exists 409, resource-exhausted 413, unavailable 503, ...
unsigned http_status(ErrorCode code);

// What the daemon knows and the network layer does not (its guests), passed in as callbacks so
// that net/ never depends on guest/. Any of them may be empty.
struct HttpSources {
  // /metrics: one entry per running guest.
  std::function<std::vector<GuestFigures>()> guest_figures;
  // GET /v1/guests: the guests' figures as JSON (an array).
  std::function<nlohmann::json()> guests_json;
  // /readyz: guests of the configuration that are not running because they were refused.
  std::function<size_t()> guests_refused;
  // GET /v1/guests: those guests with the reason each was refused (an array).
  std::function<nlohmann::json()> guests_refused_json;
  // Cluster mode (docs/CLUSTERING.md); all three empty on a single node. GET /v1/cluster's
  // body; /readyz: nullopt when the node is a member, else why not; /metrics' cluster figures.
  std::function<nlohmann::json()> cluster_json;
  std::function<std::optional<std::string>()> cluster_not_ready;
  std::function<ClusterFigures()> cluster_figures;
  // witmq_build_info's version label.
  std::string version;
  // Bearer tokens and grants (docs/SECURITY.md); nullptr = no checks. Outlives the server.
  auth::Authenticator* authenticator = nullptr;
  // Channels with series of their own in /metrics (HttpServerOptions::metrics_max_channels, set
  // by the server).
  size_t metrics_max_channels = 1'000;
  // Names a browser may reach this server by besides IP addresses and localhost
  // (HttpServerOptions::allowed_hosts, set by the server); "*" allows any.
  std::vector<std::string> allowed_hosts;
  // witmq_memory_releases_total: times freed memory was given back to the kernel.
  std::function<uint64_t()> memory_releases;
};

// A publish the router has checked, for the server to send and await (it completes once the
// message is durable).
struct Publish {
  std::string channel;
  Message message;
  PublishMode mode = PublishMode::kRaw;
  Format format = Format::kRaw;
  size_t bytes = 0;
  std::string id;  // the CloudEvent's id, "" for raw
};

// What serving a request takes: an answer now, a blocking call for the admin pool (admin calls
// may wait on disk), a broker send, or work for the admin pool that yields one of the others
// (parsing a large structured CloudEvent). Exactly one is set. None of the functions throws.
// Routing is plain functions; only the connection's coroutine awaits (GCC 12 miscompiles
// temporaries and braced lists inside coroutine bodies, so coroutines here stay small).
struct Routed {
  std::optional<HttpResponse> response;
  std::function<HttpResponse()> blocking;
  std::optional<Publish> publish;
  std::function<Routed()> prepare;

  static Routed now(HttpResponse r) {
    Routed out;
    out.response = std::move(r);
    return out;
  }
};

class Router {
 public:
  // `counters` are the HTTP server's own.
  Router(broker::Broker& broker, const Server& protocol, const HttpCounters& counters,
         HttpSources sources);

  // Called once a request's line and headers are read, before its body: the answer to give at
  // once, without reading the body (a bad target, a client that is not authenticated, or one
  // that may not publish where it asks to), or nullopt to read the body and route(). Never
  // throws.
  // `who`, when given, is set to the identity the request was admitted as (null without an
  // authenticator).
  std::optional<HttpResponse> admit(const HttpRequest& head,
                                    std::shared_ptr<auth::Access>* who = nullptr);
  // The answer to a health or readiness probe (which needs no token and no body), nullopt for
  // any other request. Never throws.
  std::optional<HttpResponse> probe(const HttpRequest& head) const;
  // Routes one request. Never throws: every failure is a response (an unexpected one 500).
  Routed route(HttpRequest request);
  // The answer to a publish once the broker confirmed (or refused) it.
  HttpResponse published(const Publish& publish, const Status& status) const;

  // From now on /readyz answers 503 and publishing is refused with 503 (the server is stopping).
  void set_stopping() { stopping_.store(true); }
  broker::Broker& broker() { return broker_; }
  const broker::ClientPtr& client() const { return client_; }

 private:
  // Who sent `r`: its bearer token's identity, or anonymous. A 401 response when neither is
  // allowed.
  Result<std::shared_ptr<auth::Access>> authenticate(const HttpRequest& r) const;
  // A refusal for a browser's request that may be forged (another site's page, or DNS
  // rebinding; see http_routes.cc), nullopt for any other request.
  std::optional<HttpResponse> browser_refusal(const HttpRequest& r) const;
  // A refusal for a request whose Host is not a name of this server (an IP literal, localhost,
  // *.localhost or one of http-allowed-hosts); nullopt when it is, or when `r` has no Host and
  // `require_host` is false.
  std::optional<HttpResponse> host_refusal(const HttpRequest& r, bool require_host) const;
  // A refusal for a request served as the anonymous identity (or without an authenticator)
  // whose Host is not a name of this server: see http_routes.cc.
  std::optional<HttpResponse> anonymous_refusal(const HttpRequest& r,
                                                const auth::Access* access) const;

  Routed route_request(HttpRequest r);
  HttpResponse healthz() const;
  HttpResponse readyz() const;
  HttpResponse metrics();
  HttpResponse guests() const;
  HttpResponse cluster() const;
  // GET /v1/identity[?channel=NAME]: who the caller is, and what it may do on the channel.
  HttpResponse identity(std::string_view query, auth::Access* access);
  // Everything under /v1/ but publishing; runs on the admin pool. `access` is null without an
  // authenticator.
  HttpResponse admin_routes(const HttpRequest& r, auth::Access* access);
  HttpResponse channel_routes(const HttpRequest& r, const std::vector<std::string>& segments,
                              std::string_view query, auth::Access* access);
  // One admin op through net/admin.h: its JSON reply with 200, or the error.
  HttpResponse admin(AdminOp op, const nlohmann::json& body, auth::Access* access);
  // One admin op, on this node or, in cluster mode, on the leader of the channel it names
  // (docs/HTTP.md, "In a cluster"): `access`'s grants are checked here first, and again by the
  // leader, which acts for the same identity. Blocks while it is relayed (on the admin pool).
  Result<AdminResult> call_admin(AdminOp op, const nlohmann::json& body, auth::Access* access);
  HttpResponse browse(const std::string& channel, std::string_view query, bool missing_is_empty,
                      auth::Access* access);
  HttpResponse dead_letters(const HttpRequest& r, const std::string& channel,
                            std::string_view query, bool replay, auth::Access* access);
  HttpResponse checkpoint(const HttpRequest& r, auth::Access* access);
  Routed publish(HttpRequest r, const std::string& channel,
                 const std::shared_ptr<auth::Access>& access);
  // The checked publish of `r`'s message (parsing its body). With `relay_as` (cluster mode, the
  // channel led elsewhere or no leader known), relayed to the leader for that identity.
  Routed publish_message(const HttpRequest& r, const std::string& channel,
                         std::optional<std::string> relay_as = std::nullopt);
  // The publish of `p` relayed to its channel's leader (on the admin pool).
  HttpResponse relay_publish(Publish p, const std::string& identity);

  broker::Broker& broker_;
  const Server& protocol_;
  const HttpCounters& counters_;
  const HttpSources sources_;
  broker::ClientPtr client_;
  // Cluster mode: relays requests about channels other nodes lead (null on a single node).
  std::unique_ptr<Relay> relay_;
  std::atomic<bool> stopping_{false};
};

}  // namespace witmq::net
