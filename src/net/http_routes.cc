#include "net/http_routes.h"

#include <fmt/format.h>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <future>
#include <optional>

#include "common/base64.h"
#include "common/json_depth.h"
#include "common/log.h"
#include "common/memory.h"
#include "net/cloudevents.h"
#include "net/console.h"
#include "net/http_server.h"
#include "net/server.h"
#include "net/utf8.h"

namespace witmq::net {

using nlohmann::json;

namespace {

const auto kStarted = std::chrono::steady_clock::now();
// A publish body larger than this is parsed on the admin pool rather than an I/O thread.
constexpr size_t kParseOnIoThreadBytes = 64 << 10;

// Error texts repeat request bytes (paths, query keys, header values) that need not be UTF-8:
// invalid sequences are written as U+FFFD rather than thrown out of the handler.
HttpResponse json_response(unsigned status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  r.body += '\n';
  return r;
}

HttpResponse error_of(const Error& e) {
  return error_response(http_status(e.code), e.code, e.message);
}

HttpResponse method_not_allowed(const std::string& method, std::string_view path,
                                std::string_view allowed) {
  HttpResponse r = error_response(
      405, ErrorCode::kUnsupported,
      fmt::format("method {} is not allowed on {}; allowed: {}", method, path, allowed));
  r.headers.emplace_back("Allow", std::string(allowed));
  return r;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes one path segment or query component; nullopt for a broken escape.
std::optional<std::string> url_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

// The body as a JSON object; an empty body is {}. Errors name what was wrong.
Result<json> body_object(const std::string& body) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  if (auto st = check_json_depth(body); !st) {
    return invalid_argument("the body: " + st.error().message);
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument("the body is not valid JSON, expected an object");
  if (!j.is_object()) {
    return invalid_argument(
        fmt::format("the body is a JSON {}, expected an object", j.type_name()));
  }
  return j;
}

// The query's parameters, each of `known`, as unsigned integers.
Result<std::vector<std::pair<std::string, uint64_t>>> query_counts(
    std::string_view query, std::initializer_list<std::string_view> known) {
  std::vector<std::pair<std::string, uint64_t>> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    auto name = url_decode(item.substr(0, eq), true);
    auto value = url_decode(eq == std::string_view::npos ? "" : item.substr(eq + 1), true);
    if (!name || !value) return invalid_argument("the query has a broken percent escape");
    if (std::find(known.begin(), known.end(), *name) == known.end()) {
      std::string list;
      for (auto k : known) list += fmt::format("{}{}", list.empty() ? "" : ", ", k);
      return invalid_argument(
          fmt::format("query parameter '{}' is unknown, expected {}", *name, list));
    }
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), n);
    if (value->empty() || ec != std::errc() || end != value->data() + value->size()) {
      return invalid_argument(fmt::format(
          "query parameter '{}' is '{}', expected a non-negative integer", *name, *value));
    }
    out.emplace_back(*name, n);
  }
  return out;
}

// The length of `text` as a JSON string's contents: control characters cost 6 bytes (\u0001)
// or 2 (\n), quote and backslash 2, every other byte 1.
size_t json_escaped_length(std::string_view text) {
  size_t n = 0;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') {
      n += 2;
    } else if (c < 0x20) {
      n += 6;
    } else {
      n += 1;
    }
  }
  return n;
}

// A browsed message as JSON: data as text when it is UTF-8 and escaping it at most doubles it
// (quotes and backslashes, as in JSON data, cost 2 bytes each), else base64; so a page's JSON
// is at most about twice its data (data of control characters would grow six-fold as text).
json message_json(const Message& m) {
  json metadata = json::object();
  if (m.metadata) {
    for (const auto& [k, v] : *m.metadata) metadata[k] = v;
  }
  json out = {{"format", format_name(m.format)}};
  if (const std::string* seq = find_metadata(m, meta::kSequence)) {
    out["sequence"] = std::stoull(*seq);
  }
  if (const std::string* id = find_metadata(m, meta::kId)) out["id"] = *id;
  out["metadata"] = std::move(metadata);
  const std::string_view text(reinterpret_cast<const char*>(m.data.data()), m.data.size());
  size_t bad = 0;
  if (is_valid_utf8(text, &bad) && json_escaped_length(text) <= 2 * text.size()) {
    out["data"] = std::string(text);
  } else {
    out["data_base64"] = base64_encode(m.data);
  }
  return out;
}

HttpResponse browse_page(const std::string& channel, const Result<AdminResult>& result,
                         uint64_t from) {
  json messages = json::array();
  uint64_t next = from;
  if (result) {
    for (const auto& msg : result->messages) {
      json j = message_json(msg);
      if (j.contains("sequence")) next = j["sequence"].get<uint64_t>() + 1;
      messages.push_back(std::move(j));
    }
  }
  return json_response(200,
                       {{"channel", channel}, {"messages", std::move(messages)}, {"next", next}});
}

Result<std::vector<std::pair<std::string, uint64_t>>> browse_params(std::string_view query) {
  return query_counts(query, {"from", "max"});
}

json named(std::string_view field, const std::string& value) {
  json j = json::object();
  j[std::string(field)] = value;
  return j;
}

HttpResponse replay_reply(const json& admin_reply, const std::string& dlq) {
  json j = admin_reply.is_object() ? admin_reply : json{{"moved", 0}};
  j["dead-letter-channel"] = dlq;
  return json_response(200, j);
}

HttpResponse checkpoint_reply(const std::string& dir) { return json_response(201, {{"dir", dir}}); }

HttpResponse publish_reply(const std::string& channel, PublishMode mode, Format format,
                           size_t bytes, const std::string& id) {
  json body = {{"channel", channel},
               {"mode", publish_mode_name(mode)},
               {"format", format_name(format)},
               {"bytes", bytes}};
  if (mode != PublishMode::kRaw) body["id"] = id;
  return json_response(201, body);
}

struct Target {
  std::string_view path, query;
  std::vector<std::string> segments;  // percent-decoded
};

// Splits a request target into its path segments and its query.
Result<Target> parse_target(std::string_view target) {
  Target t;
  const auto qmark = target.find('?');
  t.path = target.substr(0, qmark);
  t.query = qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1);
  if (!t.path.starts_with("/")) {
    return invalid_argument(fmt::format("request target '{}' is not a path", target));
  }
  for (size_t at = 1; at <= t.path.size();) {
    const size_t slash = std::min(t.path.find('/', at), t.path.size());
    auto decoded = url_decode(t.path.substr(at, slash - at), false);
    if (!decoded) return invalid_argument(fmt::format("path {}: a broken percent escape", t.path));
    t.segments.push_back(std::move(*decoded));
    at = slash + 1;
  }
  return t;
}

bool is_get(const std::string& m) { return m == "GET" || m == "HEAD"; }

bool is_publish(const std::vector<std::string>& seg, const std::string& method) {
  return seg.size() == 4 && seg[0] == "v1" && seg[1] == "channels" && seg[3] == "messages" &&
         method == "POST";
}

HttpResponse unauthorized(const Error& e) {
  HttpResponse denied = error_response(401, e.code, e.message);
  denied.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"witmq\"");
  return denied;
}

// What a request that failed in an unexpected way (a bug) is answered; the log says why. Only that
// request fails: the connection and the server carry on.
HttpResponse internal_error(std::string_view doing, std::string_view what) {
  log::error("http: {} failed unexpectedly: {}", doing, what);
  return error_response(500, ErrorCode::kInternal,
                        fmt::format("{} failed inside the server; its log says why", doing));
}

// `f` with every exception turned into internal_error: work handed to the admin pool can only
// fail its own request.
template <typename F>
auto guarded(std::string_view doing, F f) {
  using R = decltype(f());
  auto fail = [doing](std::string_view what) {
    if constexpr (std::is_same_v<R, Routed>) {
      return Routed::now(internal_error(doing, what));
    } else {
      return internal_error(doing, what);
    }
  };
  return [fail, f = std::move(f)]() -> R {
    try {
      return f();
    } catch (const std::exception& e) {
      return fail(e.what());
    } catch (...) {
      return fail("an exception that is not a std::exception");
    }
  };
}

const std::string* find_header(const HttpRequest& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

std::string lower_case(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

size_t count_header(const HttpRequest& r, std::string_view name) {
  return static_cast<size_t>(
      std::count_if(r.headers.begin(), r.headers.end(), [&](const auto& h) { return h.first == name; }));
}

// The host part of a Host header or of an origin's authority: "[::1]:7401" -> "::1",
// "Example.com:80" -> "example.com".
std::string host_name(std::string_view authority) {
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    return lower_case(authority.substr(1, close == std::string_view::npos ? std::string_view::npos
                                                                          : close - 1));
  }
  const auto colon = authority.rfind(':');
  return lower_case(colon == std::string_view::npos ? authority : authority.substr(0, colon));
}

// Names that no DNS answer can point at another machine's page: IP literals, localhost and
// *.localhost (which browsers resolve to loopback themselves).
bool rebinding_proof(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  if (!ec) return true;
  return host == "localhost" || host.ends_with(".localhost");
}

bool is_browser_request(const HttpRequest& r) {
  for (const auto& [k, v] : r.headers) {
    if (k == "origin" || k.starts_with("sec-fetch-")) return true;
  }
  return false;
}

}  // namespace

// Requests a browser sends for a page. Two attacks go through a browser:
//  - Cross-site request forgery: a page elsewhere makes the browser send a form POST here (no
//    preflight; the anonymous identity needs no token). A request that changes something (any
//    method but GET and HEAD) whose Origin is not this server's own (same scheme, same host and
//    port as its Host header), or whose Sec-Fetch-Site says cross-site, is refused.
//  - DNS rebinding: a page at evil.example whose name is then pointed at this machine is, to the
//    browser, same-origin with this server, so it may send anything and read the answers. Its
//    requests carry Host: evil.example. A browser's request (one carrying Origin or a Sec-Fetch-*
//    header) is served only when its Host names this server: an IP literal, localhost, or a name
//    in http-allowed-hosts. A browser does not always say it is one: a same-origin GET from a
//    page served over plain HTTP carries neither Origin nor Sec-Fetch-* (those go only to secure
//    origins). Such a page cannot know a token, so what it could reach is the anonymous identity:
//    anonymous_refusal() asks every request served as anonymous for a name of this server too.
// Requests without these headers (curl, the clients) with a token are not browsers' and pass.
// Each of Host, Origin and Sec-Fetch-Site may come at most once.
std::optional<HttpResponse> Router::browser_refusal(const HttpRequest& r) const {
  for (const std::string_view name : {"host", "origin", "sec-fetch-site"}) {
    if (count_header(r, name) > 1) {
      return error_response(400, ErrorCode::kInvalidArgument,
                            fmt::format("the request carries the {} header more than once", name));
    }
  }
  if (!is_browser_request(r)) return std::nullopt;
  if (auto refused = host_refusal(r, true)) return refused;
  const std::string* host = find_header(r, "host");
  if (is_get(r.method)) return std::nullopt;
  if (const std::string* site = find_header(r, "sec-fetch-site");
      site && lower_case(*site) == "cross-site") {
    return error_response(403, ErrorCode::kPermissionDenied,
                          "a cross-site request (Sec-Fetch-Site: cross-site) may not change "
                          "anything: call the API from the console or a client");
  }
  const std::string* origin = find_header(r, "origin");
  if (!origin) return std::nullopt;
  const std::string_view scheme = r.secure ? "https://" : "http://";
  const std::string o = lower_case(*origin);
  if (o.starts_with(scheme) && o.substr(scheme.size()) == lower_case(*host)) return std::nullopt;
  return error_response(
      403, ErrorCode::kPermissionDenied,
      fmt::format("a request from the page of another origin ('{}', this server is '{}{}') may "
                  "not change anything",
                  *origin, scheme, *host));
}

std::optional<HttpResponse> Router::host_refusal(const HttpRequest& r, bool require_host) const {
  const std::string* host = find_header(r, "host");
  if (!host || host->empty()) {
    if (!require_host) return std::nullopt;
    return error_response(400, ErrorCode::kInvalidArgument,
                          "a browser's request without a Host header");
  }
  const std::string name = host_name(*host);
  const bool allowed =
      rebinding_proof(name) ||
      std::any_of(sources_.allowed_hosts.begin(), sources_.allowed_hosts.end(),
                  [&](const std::string& a) { return a == "*" || lower_case(a) == name; });
  if (allowed) return std::nullopt;
  return error_response(
      403, ErrorCode::kPermissionDenied,
      fmt::format("Host '{}' is not a name of this server: a browser, or a request without a "
                  "token, may reach it by an IP address, localhost, or a name listed in "
                  "http-allowed-hosts (a page whose name was pointed at this machine must not "
                  "talk to it)",
                  *host));
}

// A request without a token that names this server by a DNS name may be a browser's, sent for
// a rebound page (see browser_refusal): the anonymous identity is served only by this server's
// own names. A request without Host (HTTP/1.0) names nothing a page could have rebound.
std::optional<HttpResponse> Router::anonymous_refusal(const HttpRequest& r,
                                                      const auth::Access* access) const {
  if (access && !access->anonymous()) return std::nullopt;
  return host_refusal(r, false);
}

HttpResponse error_response(unsigned status, ErrorCode code, std::string message) {
  return json_response(
      status, {{"error", {{"code", error_code_name(code)}, {"message", std::move(message)}}}});
}

unsigned http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kStaleReceipt:
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kResourceExhausted:
      return 413;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kTimeout:
      return 504;
    case ErrorCode::kUnsupported:
      return 415;
    case ErrorCode::kCorruption:
    case ErrorCode::kIoError:
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

Router::Router(broker::Broker& broker, const Server& protocol, const HttpCounters& counters,
               HttpSources sources)
    : broker_(broker), protocol_(protocol), counters_(counters), sources_(std::move(sources)) {
  // One broker client for every HTTP publish: it only sends, so it holds no subscription.
  if (auto c = broker_.connect("")) client_ = std::move(*c);
  if (protocol_.forwarder()) relay_ = std::make_unique<Relay>(protocol_.forwarder());
}

std::optional<HttpResponse> Router::probe(const HttpRequest& head) const {
  try {
    auto target = parse_target(head.target);
    if (!target) return std::nullopt;
    const auto& seg = target->segments;
    // Health and readiness answer anyone: load balancers and orchestrators carry no token.
    if (seg.size() != 1 || (seg[0] != "healthz" && seg[0] != "readyz")) return std::nullopt;
    if (!is_get(head.method)) return method_not_allowed(head.method, target->path, "GET, HEAD");
    return seg[0] == "healthz" ? healthz() : readyz();
  } catch (const std::exception& e) {
    return internal_error("a health probe", e.what());
  }
}

std::optional<HttpResponse> Router::admit(const HttpRequest& head,
                                          std::shared_ptr<auth::Access>* who) {
  try {
    auto target = parse_target(head.target);
    if (!target) return error_of(target.error());
    if (probe(head) || is_console_path(target->path)) return std::nullopt;
    if (auto refused = browser_refusal(head)) return refused;
    auto access = authenticate(head);
    if (!access) return unauthorized(access.error());
    if (auto refused = anonymous_refusal(head, access->get())) return refused;
    if (who) *who = *access;
    const auto& seg = target->segments;
    if (*access && is_publish(seg, head.method) && validate_channel_name(seg[2]).ok()) {
      if (auto st = (*access)->check(auth::Action::kSend, seg[2]); !st) return error_of(st.error());
    }
    return std::nullopt;
  } catch (const std::exception& e) {
    return internal_error("admitting a request", e.what());
  }
}

Routed Router::route(HttpRequest request) {
  try {
    return route_request(std::move(request));
  } catch (const std::exception& e) {
    return Routed::now(internal_error("routing a request", e.what()));
  }
}

Routed Router::route_request(HttpRequest r) {
  auto target = parse_target(r.target);
  if (!target) return Routed::now(error_of(target.error()));
  if (auto answer = probe(r)) return Routed::now(std::move(*answer));
  if (is_console_path(target->path)) return Routed::now(console_response(r, target->path));
  if (auto refused = browser_refusal(r)) return Routed::now(std::move(*refused));
  const std::vector<std::string> seg = target->segments;
  const std::string path(target->path);
  const std::string& m = r.method;
  auto access = authenticate(r);
  if (!access) return Routed::now(unauthorized(access.error()));
  std::shared_ptr<auth::Access> who = std::move(*access);
  if (auto refused = anonymous_refusal(r, who.get())) return Routed::now(std::move(*refused));
  if (seg.size() == 1 && seg[0] == "metrics") {
    if (!is_get(m)) return Routed::now(method_not_allowed(m, path, "GET, HEAD"));
    if (who) {
      if (auto st = who->check_monitor("/metrics"); !st) return Routed::now(error_of(st.error()));
    }
    // A scrape walks every channel: off the I/O threads.
    Routed out;
    out.blocking = guarded("a metrics scrape", [this] { return metrics(); });
    return out;
  }
  if (is_publish(seg, m)) return publish(std::move(r), seg[2], who);
  if (!seg.empty() && seg[0] == "v1") {
    // Admin calls may wait on disk: the whole request is served on the pool.
    Routed out;
    out.blocking = guarded("an admin request",
                           [this, r = std::move(r), who] { return admin_routes(r, who.get()); });
    return out;
  }
  return Routed::now(error_response(
      404, ErrorCode::kNotFound, fmt::format("no endpoint at {}; docs/HTTP.md lists them", path)));
}

Result<std::shared_ptr<auth::Access>> Router::authenticate(const HttpRequest& r) const {
  if (!sources_.authenticator) return std::shared_ptr<auth::Access>();
  std::optional<std::string> token;
  for (const auto& [name, value] : r.headers) {
    if (name != "authorization") continue;
    constexpr std::string_view kBearer = "bearer ";
    std::string_view v = value;
    if (v.size() <= kBearer.size() || !std::equal(kBearer.begin(), kBearer.end(), v.begin(),
                                                  [](char a, char b) {
                                                    return a == std::tolower(
                                                                    static_cast<unsigned char>(b));
                                                  })) {
      return Error(ErrorCode::kPermissionDenied,
                   "Authorization: expected \"Bearer <token>\", the only scheme accepted");
    }
    v.remove_prefix(kBearer.size());
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    token = std::string(v);
  }
  auto access = sources_.authenticator->authenticate(token, r.certificate_cn, false);
  if (!access) return std::move(access).error();
  return std::shared_ptr<auth::Access>(std::move(*access));
}

HttpResponse Router::admin_routes(const HttpRequest& r, auth::Access* access) {
  auto target = parse_target(r.target);
  if (!target) return error_of(target.error());
  const auto& seg = target->segments;
  const std::string& m = r.method;
  if (seg.size() >= 2 && seg[1] == "channels") {
    return channel_routes(r, seg, target->query, access);
  }
  if (seg.size() == 2 && seg[1] == "guests") {
    if (!is_get(m)) return method_not_allowed(m, target->path, "GET, HEAD");
    if (access) {
      if (auto st = access->check_monitor("/v1/guests"); !st) return error_of(st.error());
    }
    return guests();
  }
  if (seg.size() == 2 && seg[1] == "cluster") {
    if (!is_get(m)) return method_not_allowed(m, target->path, "GET, HEAD");
    if (access) {
      if (auto st = access->check_monitor("/v1/cluster"); !st) return error_of(st.error());
    }
    return cluster();
  }
  if (seg.size() == 2 && seg[1] == "server") {
    if (!is_get(m)) return method_not_allowed(m, target->path, "GET, HEAD");
    return admin(AdminOp::kServerStats, json::object(), access);
  }
  if (seg.size() == 2 && seg[1] == "identity") {
    if (!is_get(m)) return method_not_allowed(m, target->path, "GET, HEAD");
    return identity(target->query, access);
  }
  if (seg.size() == 2 && seg[1] == "checkpoint") {
    if (m != "POST") return method_not_allowed(m, target->path, "POST");
    return checkpoint(r, access);
  }
  return error_response(404, ErrorCode::kNotFound,
                        fmt::format("no endpoint at {}; docs/HTTP.md lists them", target->path));
}

HttpResponse Router::channel_routes(const HttpRequest& r, const std::vector<std::string>& seg,
                                    std::string_view query, auth::Access* access) {
  const std::string& m = r.method;
  const bool get = is_get(m);
  if (seg.size() == 2) {
    if (!get) return method_not_allowed(m, "/v1/channels", "GET, HEAD");
    return admin(AdminOp::kChannelList, json::object(), access);
  }
  const std::string& name = seg[2];
  if (auto st = validate_channel_name(name); !st) {
    return error_response(400, ErrorCode::kInvalidArgument,
                          fmt::format("channel name in the path: {}", st.error().message));
  }
  const std::string where = fmt::format("/v1/channels/{}", name);
  if (seg.size() == 3) {
    if (get) return admin(AdminOp::kChannelStats, {{"name", name}}, access);
    if (m == "DELETE") return admin(AdminOp::kChannelDelete, {{"name", name}}, access);
    if (m == "PUT" || m == "POST") {
      auto settings = body_object(r.body);
      if (!settings) return error_of(settings.error());
      const bool existed = call_admin(AdminOp::kChannelStats, {{"name", name}}, access).ok();
      HttpResponse declared =
          admin(AdminOp::kChannelDeclare, {{"name", name}, {"settings", std::move(*settings)}}, access);
      if (declared.status != 200) return declared;
      HttpResponse stats = admin(AdminOp::kChannelStats, {{"name", name}}, access);
      if (stats.status == 200 && !existed) stats.status = 201;
      return stats;
    }
    return method_not_allowed(m, where, "GET, HEAD, PUT, POST, DELETE");
  }
  const std::string& what = seg[3];
  if (seg.size() == 4 && what == "messages") {
    if (get) return browse(name, query, false, access);
    return method_not_allowed(m, where + "/messages", "POST, GET, HEAD");
  }
  if (seg.size() == 4 && what == "dead-letters") {
    if (!get) return method_not_allowed(m, where + "/dead-letters", "GET, HEAD");
    return dead_letters(r, name, query, false, access);
  }
  if (seg.size() == 5 && what == "dead-letters" && seg[4] == "replay") {
    if (m != "POST") return method_not_allowed(m, where + "/dead-letters/replay", "POST");
    return dead_letters(r, name, query, true, access);
  }
  if (seg.size() == 4 && what == "purge") {
    if (m != "POST") return method_not_allowed(m, where + "/purge", "POST");
    auto body = body_object(r.body);
    if (!body) return error_of(body.error());
    if (!body->empty()) {
      return error_response(400, ErrorCode::kInvalidArgument,
                            "purge takes no body fields: the channel is in the path");
    }
    return admin(AdminOp::kPurge, {{"channel", name}}, access);
  }
  return error_response(404, ErrorCode::kNotFound,
                        fmt::format("no endpoint at {}/{}; docs/HTTP.md lists them", where,
                                    fmt::join(seg.begin() + 3, seg.end(), "/")));
}

HttpResponse Router::healthz() const { return json_response(200, {{"status", "alive"}}); }

HttpResponse Router::readyz() const {
  json checks = json::object();
  bool ready = true;
  auto check = [&](const char* name, bool ok, std::string detail) {
    checks[name] = ok ? std::string("ok") : std::move(detail);
    ready = ready && ok;
  };
  // The storage was opened before either listener started and closes after both stop.
  check("storage", !stopping_.load(), "closing");
  // A full disk refuses sends but not receives: not ready, so that producers go elsewhere.
  check("disk", !broker_.store_stats().disk_full, "full: sends are refused until space is freed");
  check("listeners", !stopping_.load() && protocol_.local_endpoint().port() != 0, "stopping");
  const size_t refused = sources_.guests_refused ? sources_.guests_refused() : 0;
  check("guests", refused == 0, fmt::format("{} refused", refused));
  if (sources_.cluster_not_ready) {
    const std::optional<std::string> why = sources_.cluster_not_ready();
    check("cluster", !why, why.value_or(""));
  }
  return json_response(ready ? 200 : 503,
                       {{"status", ready ? "ready" : "not-ready"}, {"checks", std::move(checks)}});
}

HttpResponse Router::metrics() {
  MetricsSnapshot s;
  s.version = sources_.version;
  s.uptime_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - kStarted).count();
  s.channels = broker_.list_channels();
  s.max_channel_series = sources_.metrics_max_channels;
  s.store = broker_.store_stats();
  const ServerCounters& t = protocol_.counters();
  s.listeners.push_back({"tcp", t.connections.load(), t.connections_total.load(),
                         t.connections_refused.load(), t.requests_total.load(),
                         t.malformed_total.load(), t.bytes_in.load(), t.bytes_out.load()});
  const HttpCounters& h = counters_;
  s.listeners.push_back({"http", h.connections.load(), h.connections_total.load(),
                         h.connections_refused.load(), h.requests_total.load(),
                         h.bad_requests_total.load(), h.bytes_in.load(), h.bytes_out.load()});
  s.messages_in = t.messages_in.load();
  s.messages_out = t.messages_out.load();
  s.connections = protocol_.footprint();
  s.http_body_bytes = h.body_bytes.load();
  s.http_bodies_refused = h.bodies_refused.load();
  s.broker_tables = broker_.tables();
  s.memory = memory_figures();
  if (sources_.memory_releases) s.memory_releases = sources_.memory_releases();
  if (sources_.guest_figures) s.guests = sources_.guest_figures();
  if (sources_.guests_refused) s.guests_refused = sources_.guests_refused();
  if (sources_.cluster_figures) s.cluster = sources_.cluster_figures();
  if (sources_.authenticator) {
    s.identity_connections = sources_.authenticator->connections();
    s.auth_refused = sources_.authenticator->refused_total();
    s.auth_denied = sources_.authenticator->denied_total();
  }
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = render_metrics(s);
  return r;
}

HttpResponse Router::cluster() const {
  if (!sources_.cluster_json) {
    return error_response(404, ErrorCode::kNotFound,
                          "cluster mode is off on this node (no cluster-node-id; "
                          "docs/CLUSTERING.md)");
  }
  return json_response(200, sources_.cluster_json());
}

HttpResponse Router::guests() const {
  return json_response(
      200, {{"guests", sources_.guests_json ? sources_.guests_json() : json::array()},
            {"refused", sources_.guests_refused ? sources_.guests_refused() : 0},
            {"refused-guests",
             sources_.guests_refused_json ? sources_.guests_refused_json() : json::array()}});
}

HttpResponse Router::identity(std::string_view query, auth::Access* access) {
  std::optional<std::string> channel;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    auto name = url_decode(item.substr(0, eq), true);
    auto value = url_decode(eq == std::string_view::npos ? "" : item.substr(eq + 1), true);
    if (!name || !value) {
      return error_response(400, ErrorCode::kInvalidArgument,
                            "the query has a broken percent escape");
    }
    if (*name != "channel" || channel) {
      return error_response(400, ErrorCode::kInvalidArgument,
                            fmt::format("query parameter '{}' is unknown or repeated, expected "
                                        "channel once",
                                        *name));
    }
    if (auto st = validate_channel_name(*value); !st) {
      return error_response(400, ErrorCode::kInvalidArgument,
                            fmt::format("query parameter channel: {}", st.error().message));
    }
    channel = std::move(*value);
  }
  // Without an authenticator every request may do everything.
  json out = {{"identity", access ? access->name() : std::string()},
              {"anonymous", access ? access->anonymous() : true},
              {"monitor", access ? access->monitor() : true}};
  if (channel) {
    auto allows = [&](auth::Action a) { return !access || access->allows(a, *channel); };
    out["channel"] = *channel;
    out["send"] = allows(auth::Action::kSend);
    out["receive"] = allows(auth::Action::kReceive);
    out["manage"] = allows(auth::Action::kManage);
  }
  return json_response(200, out);
}

Result<AdminResult> Router::call_admin(AdminOp op, const json& body, auth::Access* access) {
  const std::string text = body.dump();
  std::optional<std::string> channel;
  if (relay_) channel = admin_channel(op, text);
  if (channel) {
    if (access) WITMQ_RETURN_IF_ERROR(authorize_admin(op, *channel, *access));
    // A channel the cluster has not placed is served here: none of these places one, and a
    // declare of a new channel creates it here, from where it is placed with its own replicas.
    auto relayed = relay_->call(*channel, Locate::kPlaced, Frame{0, AdminRequest{op, text}},
                                access ? access->name() : std::string());
    if (!relayed) return std::move(relayed).error();
    if (*relayed) {
      if (auto* reply = std::get_if<AdminReply>(&(*relayed)->body)) {
        return AdminResult{std::move(reply->json), {}};
      }
      if (auto* page = std::get_if<BrowseOk>(&(*relayed)->body)) {
        return AdminResult{"", std::move(page->messages)};
      }
      return Error(ErrorCode::kInternal,
                   fmt::format("admin request on channel '{}': its leader answered with a {} frame",
                               *channel, frame_type_name((*relayed)->type())));
    }
  }
  return handle_admin(broker_, op, text, protocol_.admin_options(), access);
}

HttpResponse Router::admin(AdminOp op, const json& body, auth::Access* access) {
  auto result = call_admin(op, body, access);
  if (!result) return error_of(result.error());
  HttpResponse r;
  r.body = std::move(result->json);
  r.body += '\n';
  return r;
}

HttpResponse Router::browse(const std::string& channel, std::string_view query,
                            bool missing_is_empty, auth::Access* access) {
  auto params = browse_params(query);
  if (!params) return error_of(params.error());
  json request = named("channel", channel);
  uint64_t from = 0;
  for (const auto& [k, v] : *params) {
    request[k] = v;
    if (k == "from") from = v;
  }
  auto result = call_admin(AdminOp::kBrowse, request, access);
  if (!result && !(missing_is_empty && result.error().code == ErrorCode::kNotFound)) {
    // A page larger than the limit is the caller's mistake in the query, not a large body.
    const Error& e = result.error();
    return error_response(e.code == ErrorCode::kResourceExhausted ? 400 : http_status(e.code),
                          e.code, e.message);
  }
  return browse_page(channel, result, from);
}

HttpResponse Router::dead_letters(const HttpRequest& r, const std::string& channel,
                                  std::string_view query, bool replay, auth::Access* access) {
  // Grants first, on the channel in the path: whether it exists and where its dead letters go is
  // told only to an identity that may see them (browsing: receive or manage; replay: manage).
  if (access && (replay || !access->allows(auth::Action::kReceive, channel))) {
    if (auto st = access->check(auth::Action::kManage, channel); !st) {
      return error_of(Error(st.error().code, fmt::format("dead letters of channel '{}': {}",
                                                         channel, st.error().message)));
    }
  }
  // The dead letters of a channel are those of its dead-letter channel; those of a dead-letter
  // channel are its own messages.
  // (Through call_admin: in a cluster the channel's leader knows it; the grants above suffice.)
  auto stats = call_admin(AdminOp::kChannelStats, {{"name", channel}}, access);
  if (!stats) return error_of(stats.error());
  const json parsed = json::parse(stats->json, nullptr, false);
  std::string dlq = channel;
  if (!parsed.value("is-dead-letter", false)) {
    dlq = parsed.contains("settings") ? parsed["settings"].value("dead-letter-channel", "") : "";
    if (dlq.empty()) dlq = channel + ".dlq";
  }
  if (!replay) return browse(dlq, query, true, access);
  if (access) {
    if (auto st = access->check(auth::Action::kManage, dlq); !st) return error_of(st.error());
  }

  if (!query.empty()) {
    return error_response(400, ErrorCode::kInvalidArgument,
                          "replay takes no query parameters; send {\"max\": n} in the body");
  }
  auto body = body_object(r.body);
  if (!body) return error_of(body.error());
  if (body->contains("channel")) {
    return error_response(400, ErrorCode::kInvalidArgument,
                          "field 'channel' is not accepted: the channel is in the path");
  }
  json request = std::move(*body);
  request["channel"] = dlq;
  if (!call_admin(AdminOp::kChannelStats, {{"name", dlq}}, access)) {
    // Nothing was ever dead-lettered: nothing to move. The body is still checked.
    if (request.size() > 2 || (request.size() == 2 && !request.contains("max"))) {
      return error_response(400, ErrorCode::kInvalidArgument,
                            "replay: unknown field in the body, expected max");
    }
    return replay_reply(json(), dlq);
  }
  HttpResponse out = admin(AdminOp::kReplayDeadLetters, request, access);
  if (out.status == 200) out = replay_reply(json::parse(out.body, nullptr, false), dlq);
  return out;
}

HttpResponse Router::checkpoint(const HttpRequest& r, auth::Access* access) {
  if (access && !access->manages_everything()) {
    return error_response(403, ErrorCode::kPermissionDenied,
                          fmt::format("checkpoint: identity '{}' needs manage on \"*\": a "
                                      "checkpoint copies every channel",
                                      access->name()));
  }
  auto body = body_object(r.body);
  if (!body) return error_of(body.error());
  for (const auto& [key, value] : body->items()) {
    if (key != "dir") {
      return error_response(400, ErrorCode::kInvalidArgument,
                            fmt::format("checkpoint: unknown field '{}', expected dir", key));
    }
  }
  auto it = body->find("dir");
  if (it == body->end() || !it->is_string() || it->get<std::string>().empty()) {
    return error_response(
        400, ErrorCode::kInvalidArgument,
        "checkpoint: field 'dir' must be a non-empty string, the directory to create");
  }
  const std::string dir = it->get<std::string>();
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    return error_response(
        409, ErrorCode::kAlreadyExists,
        fmt::format("checkpoint: '{}' exists; a checkpoint goes into a new directory", dir));
  }
  auto st = broker_.checkpoint(dir);
  if (!st) return error_of(st.error());
  return checkpoint_reply(dir);
}

Routed Router::publish(HttpRequest r, const std::string& channel,
                       const std::shared_ptr<auth::Access>& access) {
  if (auto st = validate_channel_name(channel); !st) {
    return Routed::now(
        error_response(400, ErrorCode::kInvalidArgument,
                       fmt::format("channel name in the path: {}", st.error().message)));
  }
  if (access) {
    if (auto st = access->check(auth::Action::kSend, channel); !st) {
      return Routed::now(error_of(st.error()));
    }
  }
  if (stopping_.load()) {
    return Routed::now(error_response(503, ErrorCode::kUnavailable, "the server is shutting down"));
  }
  if (!client_) {
    return Routed::now(error_response(503, ErrorCode::kUnavailable, "the broker refused a client"));
  }
  // Cluster mode: a channel this node does not lead now is published on its leader.
  std::optional<std::string> relay_as;
  if (relay_ && !relay_->served_here(channel)) relay_as = access ? access->name() : std::string();
  if (r.body.size() > kParseOnIoThreadBytes) {
    // Parsing a large structured event takes a while: not on an I/O thread.
    Routed out;
    out.prepare = guarded("parsing a CloudEvent", [this, r = std::move(r), channel, relay_as] {
      return publish_message(r, channel, relay_as);
    });
    return out;
  }
  return publish_message(r, channel, std::move(relay_as));
}

Routed Router::publish_message(const HttpRequest& r, const std::string& channel,
                               std::optional<std::string> relay_as) {
  auto request = message_from_http(r.headers, r.body);
  if (!request) return Routed::now(error_of(request.error()));
  Routed out;
  out.publish.emplace();
  Publish& p = *out.publish;
  p.channel = channel;
  p.mode = request->mode;
  p.format = request->message.format;
  p.bytes = request->message.data.size();
  if (const std::string* v = find_metadata(request->message, "id")) p.id = *v;
  p.message = std::move(request->message);
  if (relay_as) {
    Routed relayed;
    relayed.blocking = guarded("a relayed publish",
                               [this, p = std::move(*out.publish), who = std::move(*relay_as)] {
                                 return relay_publish(p, who);
                               });
    return relayed;
  }
  return out;
}

HttpResponse Router::relay_publish(Publish p, const std::string& identity) {
  std::vector<Message> batch;
  batch.push_back(std::move(p.message));
  auto relayed =
      relay_->call(p.channel, Locate::kPlace, Frame{0, Send{p.channel, batch}}, identity);
  Status st = ok_status();
  if (!relayed) {
    st = std::move(relayed).error();
  } else if (!*relayed) {
    // This node leads the channel after all (it was elected meanwhile).
    std::promise<Status> sent;
    auto done = sent.get_future();
    broker_.send(client_, p.channel, std::move(batch),
                 [&sent](Status result) { sent.set_value(std::move(result)); });
    st = done.get();
  } else if (!std::holds_alternative<SendOk>((*relayed)->body)) {
    st = Error(ErrorCode::kInternal,
               fmt::format("publish to channel '{}': its leader answered with a {} frame",
                           p.channel, frame_type_name((*relayed)->type())));
  }
  return published(p, st);
}

HttpResponse Router::published(const Publish& p, const Status& st) const {
  if (!st) return error_of(st.error());
  return publish_reply(p.channel, p.mode, p.format, p.bytes, p.id);
}

}  // namespace witmq::net
