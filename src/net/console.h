// The web console (docs/CONSOLE.md): static files under /console/, embedded in witmqd at build
// time (cmake/embed_console.cmake turns console/ into console_files()). The files hold no data:
// the page asks for a bearer token and reads everything through the admin API with it, so they
// are served to anyone, like the health probes. Nothing is read from the file system at run time,
// so no request path can reach a file that is not in the table.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "net/http_routes.h"

namespace witmq::net {

struct ConsoleFile {
  std::string_view name;          // "index.html": a plain file name, no directories
  std::string_view content_type;  // "text/html; charset=utf-8"
  std::string_view etag;          // quoted, from the file's SHA-256
  std::string_view body;
};

// Every file of the console (the generated source defines it).
std::span<const ConsoleFile> console_files();

// True when `path` (the request target without its query) is the console's: "/console" or
// under "/console/".
bool is_console_path(std::string_view path);

// The answer to a request for `path` (is_console_path): the file with its Content-Type, a strict
// Content-Security-Policy, nosniff, no framing and revalidation caching (304 for a matching
// If-None-Match); "/console" redirects to "/console/"; a name not in the table is 404, a method
// other than GET or HEAD 405. Never throws.
HttpResponse console_response(const HttpRequest& request, std::string_view path);

}  // namespace witmq::net
