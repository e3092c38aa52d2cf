// Fuzzes the HTTP side end to end (issue 19): whole requests, as bytes on a connection, through
// Beast's request parser with the server's limits, the router's admission on the headers, then
// the real routes and handlers on a real broker (RocksDB in a temporary directory): admin calls,
// metrics and dead letters run here as the admin pool would run them, publishes go through the
// broker and are answered, as in witmqd, on an io_context that a thread of its own runs (the
// broker posts a send's answer there once its write is stored). Input: one byte choosing the
// configuration (even: the daemon's defaults, anonymous access with every grant; odd: a hardened
// one with identities, grants and auto-create off, whose tokens are in the seeds), then the
// connection's bytes, which may hold several pipelined requests.
//
// Checked beyond "no crash, no sanitizer report": every answer is a status from 100 to 599; a JSON
// answer is valid JSON (hence valid UTF-8); no handler failed unexpectedly (the router's 500
// "failed inside the server"); /healthz stays 200 after every input.
//
// Not run: POST /v1/checkpoint (it creates a directory named by the body, anywhere).
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "auth/authenticator.h"
#include "broker/async.h"
#include "broker/broker.h"
#include "common/log.h"
#include "daemon/config.h"
#include "fuzz_check.h"
#include "net/http_routes.h"
#include "net/http_server.h"
#include "net/server.h"

namespace witmq::fuzz {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// The hardened configuration of docs/SECURITY.md without its TLS listeners (the fuzzer does not
// speak TLS), plus orders-admin, who manages orders.* only (issue 19's grant requests are its).
// The seeds carry the tokens of ops ("witmq_fuzz-ops-token", every grant), prometheus
// ("witmq_fuzz-prometheus-token", monitor only) and orders-admin ("witmq_fuzz-orders-token"); the
// other two identities' digests are of tokens nobody has.
constexpr std::string_view kHardened = R"({
  "anonymous": {"enabled": false},
  "identities": [
    {"name": "orders-service",
     "token-sha256": "1f1a50f4cbb7e4ab3ab5b8bc4f1e8cf8f1db57bdbb86df6a0ec2c56e2e6eb402",
     "send": ["orders.*"], "receive": ["orders.replies"], "max-connections": 32},
    {"name": "billing-worker",
     "token-sha256": "0d7f9b4d09b6e5d4b7bd0e0c7bb0a3e98a6f3e2d35d2c1d3c4b9b8d7f1e4a3c2",
     "receive": ["orders.*"], "max-connections": 64},
    {"name": "ops",
     "token-sha256": "OPS_DIGEST",
     "manage": ["*"], "monitor": true, "max-connections": 4},
    {"name": "prometheus",
     "token-sha256": "PROMETHEUS_DIGEST", "monitor": true},
    {"name": "orders-admin",
     "token-sha256": "ORDERS_DIGEST",
     "send": ["orders.*"], "receive": ["orders.*"], "manage": ["orders.*"]}
  ],
  "auto-create-channels": false,
  "channels": {"orders.eu": {}, "orders.us": {}, "orders.replies": {}}
})";

// The I/O threads of witmqd (daemon/main.cc), one here: an io_context that a work guard keeps
// running whether or not anything is queued, so that what the broker posts to its executor (a
// send's answer, once the store's commit thread has written it) runs as soon as it is posted.
// Constructed before the stacks (make_stack asks for it first), so destroyed after them.
struct Io {
  asio::io_context context;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(context);
  std::thread thread{[this] { context.run(); }};

  ~Io() {
    work.reset();
    context.stop();
    thread.join();
  }
};

asio::io_context& io() {
  static Io io;
  return io.context;
}

// A stack's data directory, removed once everything that uses it is gone.
struct DataDir {
  std::string path;
  ~DataDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

// One configuration's daemon parts, declared in the order witmqd makes them (daemon/main.cc) and
// so destroyed in the reverse: the router, the protocol server the router reads its counters and
// admin options from (it unregisters from the authenticator as it goes), the authenticator, the
// broker, and last its data directory.
struct Stack {
  DataDir dir;
  daemon::Config config;
  std::unique_ptr<broker::Broker> broker;
  std::unique_ptr<auth::Authenticator> authenticator;
  std::unique_ptr<net::Server> server;
  net::HttpCounters counters;
  std::unique_ptr<net::Router> router;
};

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

std::unique_ptr<Stack> make_stack(bool hardened) {
  auto s = std::make_unique<Stack>();
  s->dir.path = (std::filesystem::temp_directory_path() /
                 ("witmq-http-fuzzer-" + std::to_string(::getpid()) + (hardened ? "-h" : "-d")))
                    .string();
  std::filesystem::remove_all(s->dir.path);
  // The fuzzer's own settings on top: a temporary data directory, no disk waits, and a bound on
  // the channels it may create (its memory), whatever the inputs do over hours.
  std::string text = "{}";
  if (hardened) {
    text = replace_all(std::string(kHardened), "OPS_DIGEST",
                       auth::to_hex(auth::sha256("witmq_fuzz-ops-token")));
    text = replace_all(text, "PROMETHEUS_DIGEST",
                       auth::to_hex(auth::sha256("witmq_fuzz-prometheus-token")));
    text =
        replace_all(text, "ORDERS_DIGEST", auth::to_hex(auth::sha256("witmq_fuzz-orders-token")));
  }
  auto file = daemon::parse_config_text(text, hardened ? "hardened" : "default");
  WITMQ_FUZZ_CHECK(file.ok(), "the fuzzer's configuration: %s", file.error().message.c_str());
  auto own = daemon::parse_config_text(
      R"({"data-dir": ")" + s->dir.path +
          R"(", "default-channel": {"durability": "none"}, "max-channels": 1000,
              "tail-cache-bytes": 65536, "storage-write-buffer-bytes": 4194304,
              "storage-block-cache-bytes": 1048576})",
      "fuzzer");
  auto config = daemon::build_config({*file, *own});
  WITMQ_FUZZ_CHECK(config.ok(), "the fuzzer's configuration: %s", config.error().message.c_str());
  s->config = std::move(*config);
  auto b = broker::Broker::open(s->config.broker, io().get_executor());
  WITMQ_FUZZ_CHECK(b.ok(), "the broker: %s", b.error().message.c_str());
  s->broker = std::move(*b);
  s->authenticator = std::make_unique<auth::Authenticator>(s->config.auth);
  net::ServerOptions options = s->config.server;
  options.authenticator = s->authenticator.get();
  s->server = std::make_unique<net::Server>(io(), *s->broker, options);
  net::HttpSources sources;
  sources.version = "fuzz";
  sources.authenticator = s->authenticator.get();
  sources.metrics_max_channels = s->config.http.metrics_max_channels;
  s->router = std::make_unique<net::Router>(*s->broker, *s->server, s->counters, sources);
  return s;
}

Stack& stack(bool hardened) {
  static std::unique_ptr<Stack> stacks[2] = {make_stack(false), make_stack(true)};
  return *stacks[hardened ? 1 : 0];
}

// The request the router sees: header names lower-cased, in order.
net::HttpRequest head_of(const http::request<http::string_body>& req) {
  net::HttpRequest r;
  r.method = std::string(req.method_string());
  r.target = std::string(req.target());
  for (const auto& field : req) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  return r;
}

// Whether the percent-decoded target names the checkpoint route (which writes anywhere).
bool is_checkpoint(std::string_view target) {
  std::string decoded;
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == '%' && i + 2 < target.size() &&
        std::isxdigit(static_cast<unsigned char>(target[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(target[i + 2]))) {
      decoded += static_cast<char>(std::stoi(std::string(target.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      decoded += static_cast<char>(std::tolower(static_cast<unsigned char>(target[i])));
    }
  }
  for (char& c : decoded) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return decoded.find("checkpoint") != std::string::npos;
}

// WITMQ_FUZZ_HTTP_TRACE=1 prints every request's line and its answer (to read what an input
// does: `WITMQ_FUZZ_HTTP_TRACE=1 build-fuzz/http_fuzzer INPUT`).
bool tracing() {
  static const bool on = std::getenv("WITMQ_FUZZ_HTTP_TRACE") != nullptr;
  return on;
}

void check_response(const net::HttpResponse& r, const net::HttpRequest& req) {
  if (tracing()) {
    std::fprintf(stderr, "%s %s -> %u %.300s\n", req.method.c_str(), req.target.c_str(), r.status,
                 r.body.c_str());
  }
  WITMQ_FUZZ_CHECK(r.status >= 100 && r.status < 600, "status %u for %s %s", r.status,
                   req.method.c_str(), req.target.c_str());
  if (r.content_type == "application/json") {
    const auto j = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    WITMQ_FUZZ_CHECK(!j.is_discarded(), "a JSON answer that is not JSON: %s", r.body.c_str());
    // A handler that failed in an unexpected way answers 500 with the code `internal`; judged by
    // the code, not the message's words, which may quote the request (a Host header, a name).
    const bool internal = j.is_object() && j.contains("error") && j["error"].is_object() &&
                          j["error"].value("code", std::string()) == "internal";
    WITMQ_FUZZ_CHECK(!internal, "a handler failed unexpectedly: %s", r.body.c_str());
  }
}

// Runs what routing asked for, as the connection's coroutine and the admin pool do.
net::HttpResponse serve(Stack& s, net::Routed routed) {
  if (routed.prepare) routed = routed.prepare();
  if (routed.response) return std::move(*routed.response);
  if (routed.blocking) return routed.blocking();
  WITMQ_FUZZ_CHECK(routed.publish.has_value(), "routing asked for nothing");
  net::Publish& p = *routed.publish;
  std::vector<Message> batch;
  batch.push_back(std::move(p.message));
  // The answer comes as the connection's coroutine gets it: posted to the broker's executor (the
  // io_context's thread runs it) once the send is stored per the channel's durability.
  auto answer = std::make_shared<std::promise<Status>>();
  auto sent = answer->get_future();
  broker::async_send(*s.broker, s.router->client(), p.channel, std::move(batch),
                     [answer](Status st) { answer->set_value(std::move(st)); });
  WITMQ_FUZZ_CHECK(sent.wait_for(std::chrono::seconds(10)) == std::future_status::ready,
                   "a publish to '%s' was not answered within 10 s", p.channel.c_str());
  return s.router->published(p, sent.get());
}

// Parses and serves the requests in `bytes` as one connection would, until it ends, a request is
// refused or the client asks to close.
void connection(Stack& s, std::string_view bytes) {
  const net::HttpServerOptions& o = s.config.http;
  const size_t buffer_limit = o.max_header_bytes + (64 << 10);
  while (!bytes.empty()) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(o.max_header_bytes);
    parser.body_limit(o.max_body_bytes);
    parser.eager(true);
    beast::error_code ec;
    std::optional<net::HttpRequest> head;
    bool refused = false;
    while (!ec && !parser.is_done()) {
      const size_t n = parser.put(asio::buffer(bytes.data(), bytes.size()), ec);
      bytes.remove_prefix(n);
      // A put that takes nothing and reports nothing waits for more bytes too: treated as
      // need_more, or the loop would spin on it.
      if (ec == http::error::need_more || (!ec && n == 0)) {
        // The server's read buffer holds at most buffer_limit unparsed bytes.
        if (n == 0 && bytes.size() >= buffer_limit) {
          ec = http::error::buffer_overflow;
          break;
        }
        ec = {};
        if (n == 0) {
          parser.put_eof(ec);
          if (!ec && !parser.is_done()) ec = http::error::partial_message;
          break;
        }
      }
      if (!ec && parser.is_header_done() && !head) {
        head = head_of(parser.get());
        auto answer = s.router->admit(*head);
        if (answer) {
          check_response(*answer, *head);
          refused = true;
          break;
        }
      }
    }
    if (refused || ec || !head) return;
    if (is_checkpoint(head->target)) return;
    net::HttpRequest r = std::move(*head);
    auto req = parser.release();
    const bool keep_alive = req.keep_alive();
    r.body = std::move(req.body());
    const net::HttpRequest copy_for_report{r.method, r.target, {}, {}, {}};
    net::HttpResponse response = serve(s, s.router->route(std::move(r)));
    check_response(response, copy_for_report);
    if (!keep_alive) return;
  }
}

}  // namespace
}  // namespace witmq::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  witmq::log::set_level(witmq::log::Level::kError);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace witmq::fuzz;
  if (size < 1) return 0;
  Stack& s = stack((data[0] & 1) != 0);
  connection(s, std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  witmq::net::HttpRequest health;
  health.method = "GET";
  health.target = "/healthz";
  auto alive = s.router->route(health);
  WITMQ_FUZZ_CHECK(alive.response && alive.response->status == 200, "/healthz is not 200");
  return 0;
}
