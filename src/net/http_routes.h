// The endpoints of the HTTP side (docs/HTTP.md): a request, already read and bounded by the
// server, to a response. Health, readiness and metrics answer from memory; the admin API goes
// through the same functions as the protocol's admin frames (net/admin.h); publishing maps the
// CloudEvents HTTP binding to a broker send (net/cloudevents.h).
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/broker.h"
#include "common/result.h"
#include "net/admin.h"
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

  // The first value of header `name` (lower case), or nullptr.
  const std::string* header(std::string_view name) const;
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
  // witmq_build_info's version label.
  std::string version;
};

class Router {
 public:
  // `pool` runs admin calls that may wait on disk; `counters` are the HTTP server's own.
  Router(broker::Broker& broker, const Server& protocol, const HttpCounters& counters,
         HttpSources sources, boost::asio::thread_pool& pool);

  // Serves one request. Runs on the connection's strand; waits (publish until durable, admin
  // calls on the pool) without blocking it. Never throws: every failure is a response.
  boost::asio::awaitable<HttpResponse> handle(HttpRequest request);

  // From now on /readyz answers 503 and publishing is refused with 503 (the server is stopping).
  void set_stopping() { stopping_.store(true); }

 private:
  HttpResponse healthz() const;
  HttpResponse readyz() const;
  HttpResponse metrics();
  // One admin op through net/admin.h, on the pool; its JSON reply with 200, or the error.
  boost::asio::awaitable<HttpResponse> admin(AdminOp op, nlohmann::json body);
  boost::asio::awaitable<HttpResponse> dead_letters(const HttpRequest& r, std::string channel,
                                                    std::string_view query, bool replay);
  boost::asio::awaitable<HttpResponse> browse(std::string channel, std::string_view query,
                                              bool missing_is_empty);
  boost::asio::awaitable<HttpResponse> checkpoint(const HttpRequest& r);
  boost::asio::awaitable<HttpResponse> publish(const HttpRequest& r, std::string channel);
  boost::asio::awaitable<HttpResponse> channel_routes(const HttpRequest& r,
                                                      const std::vector<std::string>& segments,
                                                      std::string_view query);
  HttpResponse guests() const;

  broker::Broker& broker_;
  const Server& protocol_;
  const HttpCounters& counters_;
  const HttpSources sources_;
  boost::asio::thread_pool& pool_;
  broker::ClientPtr client_;
  std::atomic<bool> stopping_{false};
};

}  // namespace witmq::net
