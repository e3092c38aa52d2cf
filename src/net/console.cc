#include "net/console.h"

#include <fmt/format.h>

#include <algorithm>

namespace witmq::net {

namespace {

constexpr std::string_view kPrefix = "/console/";

// Scripts, styles and API calls from this origin only; no inline script or style, no plugins, no
// framing, no form posts, no <base> rewriting. Data shown by the page is text nodes (never
// markup), and this policy stops a script that slipped in anyway from running.
constexpr std::string_view kPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

void add_security_headers(HttpResponse& r) {
  r.headers.emplace_back("Content-Security-Policy", std::string(kPolicy));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
}

const std::string* header(const HttpRequest& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

// If-None-Match holds `etag` (or "*"): a comma-separated list, weak tags compared weakly.
bool matches_etag(const std::string& list, std::string_view etag) {
  std::string_view rest = list;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item == "*" || item == etag) return true;
  }
  return false;
}

}  // namespace

bool is_console_path(std::string_view path) {
  return path == "/console" || path.starts_with(kPrefix);
}

HttpResponse console_response(const HttpRequest& request, std::string_view path) {
  HttpResponse r;
  if (request.method != "GET" && request.method != "HEAD") {
    r = error_response(
        405, ErrorCode::kUnsupported,
        fmt::format("method {} is not allowed on the console; allowed: GET, HEAD", request.method));
    r.headers.emplace_back("Allow", "GET, HEAD");
    add_security_headers(r);
    return r;
  }
  if (path == "/console") {
    r.status = 301;
    r.headers.emplace_back("Location", std::string(kPrefix));
    r.body = "{}\n";
    add_security_headers(r);
    return r;
  }
  std::string_view name = path.substr(kPrefix.size());
  if (name.empty()) name = "index.html";
  const auto files = console_files();
  const auto it = std::find_if(files.begin(), files.end(),
                               [&](const ConsoleFile& f) { return f.name == name; });
  if (it == files.end()) {
    // The path is not repeated: it may be anything, and an error page is no place for it.
    r = error_response(404, ErrorCode::kNotFound,
                       "the console has no such file; its pages start at /console/");
    add_security_headers(r);
    return r;
  }
  r.headers.emplace_back("ETag", std::string(it->etag));
  // The files change with witmqd's binary: a browser revalidates each time (cheap, a 304).
  r.headers.emplace_back("Cache-Control", "no-cache");
  add_security_headers(r);
  if (const std::string* tags = header(request, "if-none-match");
      tags && matches_etag(*tags, it->etag)) {
    r.status = 304;
    r.content_type = std::string(it->content_type);
    return r;
  }
  r.content_type = std::string(it->content_type);
  r.body = std::string(it->body);
  return r;
}

}  // namespace witmq::net
