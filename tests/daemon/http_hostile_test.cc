// The HTTP side of the real witmqd against hostile clients (issue 19): invalid UTF-8 in every
// place a request carries bytes, bodies and headers that never end, deeply nested JSON, bodies
// sent without a valid token, connections that trickle their headers or flood the listener, and
// every route with every kind of bad input. After each, the daemon is alive, answers /healthz and
// stops cleanly.
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "auth/token.h"
#include "common/json_depth.h"
#include "daemon/config.h"
#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"
#include "tls_certs.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

// A raw TCP connection to the HTTP port: the bytes of a request exactly as given.
class Raw {
 public:
  explicit Raw(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ADD_FAILURE() << "connect to 127.0.0.1:" << port << ": " << std::strerror(errno);
    }
  }
  ~Raw() {
    if (fd_ >= 0) ::close(fd_);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  // False once the server closed or reset the connection.
  bool send(std::string_view bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // What the server sends until it closes the connection, or until `timeout` passes.
  std::string read_until_closed(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string out;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return out;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        return out;
      }
      out.append(buf, static_cast<size_t>(n));
    }
  }

  // What has arrived within `timeout` (at least one read), without waiting for a close.
  std::string read_some(std::chrono::milliseconds timeout = 10s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return {};
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      closed_ = true;
      return {};
    }
    return std::string(buf, static_cast<size_t>(n));
  }

  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  bool closed_ = false;
};

// The status of the first response in `reply`, 0 when there is none.
unsigned status_of(const std::string& reply) {
  if (!reply.starts_with("HTTP/1.1 ") || reply.size() < 12) return 0;
  return static_cast<unsigned>(std::stoi(reply.substr(9, 3)));
}

std::string body_of(const std::string& reply) {
  const auto at = reply.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : reply.substr(at + 4);
}

// One whole request on a connection of its own; the server's answer.
std::string round_trip(uint16_t port, const std::string& request) {
  Raw r(port);
  r.send(request);
  return r.read_until_closed();
}

std::string request(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& extra_headers = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The witmqd process of `d`: the one whose command line names its data directory.
pid_t pid_of(const Daemon& d) {
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(d.data_dir()) != std::string::npos &&
        cmdline.find("witmqd") != std::string::npos) {
      return static_cast<pid_t>(std::stol(name));
    }
  }
  ADD_FAILURE() << "no witmqd process with data directory " << d.data_dir();
  return 0;
}

// Resident memory of a process, in KiB.
long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  }
  ADD_FAILURE() << "no VmRSS for pid " << pid;
  return 0;
}

size_t open_descriptors(pid_t pid) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    ++n;
  }
  return n;
}

std::string nested_arrays(size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

void expect_alive(Daemon& d) {
  EXPECT_FALSE(d.wait(0ms).has_value()) << "witmqd exited:\n" << d.log();
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200u) << d.log();
}

std::string digest(const std::string& token) { return auth::to_hex(auth::sha256(token)); }

const std::string kAdminToken = "witmq_hostile-admin-token-0123456789abcdefghijkl";
const std::string kNoGrantToken = "witmq_hostile-nogrant-token-0123456789abcdefghi";

// A configuration file with an admin identity and one without any grant.
class SecuredConfig {
 public:
  explicit SecuredConfig(json extra = json::object())
      : dir_(make_temp_dir("hostile")), path_(dir_ + "/c.json") {
    json c = {{"anonymous", {{"enabled", false}}},
              {"identities",
               json::array({{{"name", "admin"},
                             {"token-sha256", digest(kAdminToken)},
                             {"manage", {"*"}},
                             {"send", {"*"}},
                             {"receive", {"*"}},
                             {"monitor", true}},
                            {{"name", "nogrant"}, {"token-sha256", digest(kNoGrantToken)}}})}};
    c.update(extra);
    std::ofstream(path_) << c.dump(2);
  }
  ~SecuredConfig() { std::filesystem::remove_all(dir_); }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

// Issue 19 item 1: every text that repeats request bytes is valid JSON, and a request can only
// fail itself: connection slots are released, so the limit is never reached by such requests.
TEST(HttpHostileTest, InvalidUtf8AnywhereIsAnsweredAndReleasesTheConnection) {
  Daemon d({"--set", "http-max-connections=4"});
  ASSERT_NE(d.http_port(), 0);
  const std::vector<std::string> targets = {
      "/v1/channels/x/messages?%ff=1",
      "/v1/channels/x/messages?max=%ff",
      "/v1/channels/.%ff",
      "/v1/channels/.%ff/messages",
      "/v1/nowhere%ff",
      "/v1/channels/x/%ff",
      "/%ff",
      "x\xff",
      "/\xff",
      "/v1/channels/x/dead-letters?%c3%28=1",
      "/v1/channels/%ed%a0%80",
      "/v1/channels/x/dead-letters/replay?%ff",
  };
  for (const std::string method : {"GET", "PUT", "POST", "DELETE"}) {
    for (const auto& target : targets) {
      const std::string reply = round_trip(d.http_port(), request(method, target));
      const unsigned status = status_of(reply);
      EXPECT_GE(status, 200u) << method << " " << target << ": " << reply;
      EXPECT_LT(status, 500u) << method << " " << target << ": " << reply;
      EXPECT_FALSE(json::parse(body_of(reply), nullptr, false).is_discarded())
          << method << " " << target << ": " << reply;
    }
  }
  // Header values: a binary CloudEvent attribute and a Content-Type that are not UTF-8.
  const std::string ce =
      round_trip(d.http_port(),
                 request("POST", "/v1/channels/x/messages", "x",
                         "ce-id: \xff\r\nce-source: /s\r\nce-specversion: 1.0\r\nce-type: t\r\n"));
  EXPECT_EQ(status_of(ce), 400u) << ce;
  // Many more such requests than connection slots: each released its slot.
  for (int i = 0; i < 40; ++i) round_trip(d.http_port(), request("GET", "x\xff"));
  HttpReply metrics = http_get(d.http_port(), "/metrics");
  EXPECT_EQ(metrics.status, 200u) << metrics;
  expect_alive(d);
  EXPECT_EQ(d.stop(SIGTERM, 20s), 0) << d.log();
}

std::string own_host(Daemon& d) { return "127.0.0.1:" + std::to_string(d.http_port()); }

// DNS rebinding: a page at evil.example whose name now points at this machine is same-origin
// with witmqd in the browser's eyes, so the Origin check alone lets it through. A browser's
// request is served only when its Host names this server (an IP literal, localhost, *.localhost
// or a name in http-allowed-hosts); other clients are not browsers and pass. Host, Origin and
// Sec-Fetch-Site may each come once, and an Origin must have this listener's scheme.
TEST(HttpHostileTest, BrowsersReachTheServerOnlyByItsOwnNames) {
  Daemon d({"--set", R"(http-allowed-hosts=["Broker.Internal"])"});
  ASSERT_NE(d.http_port(), 0);
  const std::string port = std::to_string(d.http_port());
  auto raw = [&](const std::string& method, const std::string& target, const std::string& host,
                 const std::string& headers, const std::string& body = "") {
    return round_trip(d.http_port(),
                      method + " " + target + " HTTP/1.1\r\nHost: " + host +
                          "\r\nConnection: close\r\n" + headers +
                          "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  };
  ASSERT_EQ(http_request(d.http_port(), "PUT", "/v1/channels/rebind", "{}").status, 201u);
  auto sends = [&] {
    return http_get(d.http_port(), "/v1/channels/rebind").json["sends-total"].get<int>();
  };
  const std::string evil = "evil.example:" + port;
  // The rebound page: it reads nothing and sends nothing, however same-origin it looks.
  for (const std::string& headers :
       {"Origin: http://" + evil + "\r\n", std::string("Sec-Fetch-Site: same-origin\r\n"),
        std::string("Sec-Fetch-Mode: cors\r\n")}) {
    const std::string read = raw("GET", "/v1/channels", evil, headers);
    EXPECT_EQ(status_of(read), 403u) << headers << read;
    EXPECT_NE(body_of(read).find("http-allowed-hosts"), std::string::npos) << read;
    const std::string wrote = raw("POST", "/v1/channels/rebind/messages", evil, headers, "x");
    EXPECT_EQ(status_of(wrote), 403u) << headers << wrote;
  }
  EXPECT_EQ(sends(), 0);
  // The server's own names pass: IP literals, localhost, *.localhost and the configured name
  // (whatever its case), each as its own origin.
  for (const std::string& name : {std::string("127.0.0.1"), std::string("[::1]"),
                                  std::string("localhost"), std::string("console.localhost"),
                                  std::string("broker.internal")}) {
    const std::string host = name + ":" + port;
    const std::string wrote =
        raw("POST", "/v1/channels/rebind/messages", host,
            "Origin: http://" + host + "\r\nSec-Fetch-Site: same-origin\r\n", "x");
    EXPECT_EQ(status_of(wrote), 201u) << host << ": " << wrote;
  }
  EXPECT_EQ(sends(), 5);
  // Without Origin or Sec-Fetch-* a request may still be a browser's (a plain-HTTP page's
  // same-origin GET carries neither): without a token it is asked for a name as well.
  EXPECT_EQ(status_of(raw("POST", "/v1/channels/rebind/messages", evil, "", "x")), 403u);
  EXPECT_EQ(status_of(raw("POST", "/v1/channels/rebind/messages", own_host(d), "", "x")), 201u);
  // Without identities a token names nothing and is ignored: a made-up one is still anonymous.
  EXPECT_EQ(status_of(raw("GET", "/v1/channels", evil, "Authorization: Bearer made-up\r\n")), 403u);
  EXPECT_EQ(sends(), 6);
  // The Origin's scheme must be this listener's: an https page is another origin.
  const std::string own = "127.0.0.1:" + port;
  EXPECT_EQ(status_of(raw("POST", "/v1/channels/rebind/messages", own,
                          "Origin: https://" + own + "\r\n", "x")),
            403u);
  // Two of a header the checks read: which one a check would read is not guessed.
  for (const std::string& twice :
       {"Origin: http://" + own + "\r\nOrigin: http://evil.example\r\n",
        std::string("Sec-Fetch-Site: same-origin\r\nSec-Fetch-Site: cross-site\r\n"),
        std::string("Host: evil.example\r\n")}) {
    const std::string reply = raw("POST", "/v1/channels/rebind/messages", own, twice, "x");
    EXPECT_EQ(status_of(reply), 400u) << twice << reply;
  }
  EXPECT_EQ(sends(), 6);
  expect_alive(d);
  EXPECT_EQ(d.stop(SIGTERM, 20s), 0) << d.log();
}

// DNS rebinding, the request a browser really sends: a page served over plain HTTP at
// evil.example:PORT (a name then pointed at 127.0.0.1) that calls fetch('/v1/...') sends a
// same-origin GET with neither Origin nor any Sec-Fetch-* header (Chromium sends those only to
// secure origins), so it does not look like a browser's. It has no token: whatever the anonymous
// identity may read, it must not read by a name that is not this server's.
TEST(HttpHostileTest, ARequestWithoutATokenIsServedOnlyByTheServersOwnNames) {
  SecuredConfig config(json{{"anonymous",
                             {{"enabled", true},
                              {"send", {"*"}},
                              {"receive", {"*"}},
                              {"manage", {"*"}},
                              {"monitor", true}}}});
  Daemon d({"--config", config.path(), "--set", R"(http-allowed-hosts=["broker.internal"])"});
  ASSERT_NE(d.http_port(), 0);
  const std::string port = std::to_string(d.http_port());
  ASSERT_EQ(http_request(d.http_port(), "PUT", "/v1/channels/secret", "{}").status, 201u);
  ASSERT_EQ(
      http_request(d.http_port(), "POST", "/v1/channels/secret/messages", "top secret").status,
      201u);
  auto chromium = [&](const std::string& method, const std::string& target, const std::string& host,
                      const std::string& extra = "") {
    return round_trip(d.http_port(),
                      method + " " + target + " HTTP/1.1\r\nHost: " + host +
                          "\r\nConnection: close\r\nUser-Agent: Mozilla/5.0 (X11; Linux "
                          "x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 "
                          "Safari/537.36\r\nAccept: */*\r\nReferer: http://" +
                          host + "/\r\nAccept-Encoding: gzip, deflate\r\n" + extra + "\r\n");
  };
  const std::string evil = "evil.example:" + port;
  for (const std::string method : {"GET", "HEAD"}) {
    for (const std::string& target :
         {std::string("/v1/channels/secret/messages"), std::string("/v1/channels"),
          std::string("/v1/server"), std::string("/metrics"), std::string("/v1/identity")}) {
      const std::string reply = chromium(method, target, evil);
      EXPECT_EQ(status_of(reply), 403u) << method << " " << target << ": " << reply;
      EXPECT_EQ(reply.find("top secret"), std::string::npos) << reply;
      if (method == "GET") {
        EXPECT_NE(reply.find("http-allowed-hosts"), std::string::npos) << reply;
      }
    }
  }
  // Nor does it change anything (a form POST without Origin, as an old browser would send).
  EXPECT_EQ(status_of(chromium("POST", "/v1/channels/secret/purge", evil, "Content-Length: 0\r\n")),
            403u);
  EXPECT_EQ(status_of(chromium("DELETE", "/v1/channels/secret", "evil.example.", "")), 403u);
  // The server's own names serve the anonymous identity, as does a request without Host (it
  // names nothing a page could have rebound), and the probes and console files, which hold no
  // data, answer by any name.
  for (const std::string& host :
       {own_host(d), "[::1]:" + port, "LocalHost:" + port, std::string("console.localhost"),
        std::string("Broker.Internal:") + port}) {
    const std::string reply = chromium("GET", "/v1/channels/secret/messages", host);
    EXPECT_EQ(status_of(reply), 200u) << host << ": " << reply;
    EXPECT_NE(reply.find("top secret"), std::string::npos) << host << ": " << reply;
  }
  EXPECT_TRUE(round_trip(d.http_port(), "GET /v1/channels/secret HTTP/1.0\r\n\r\n")
                  .starts_with("HTTP/1.0 200 "));
  EXPECT_EQ(status_of(chromium("GET", "/healthz", evil)), 200u);
  EXPECT_EQ(status_of(chromium("GET", "/console/", evil)), 200u);
  // A token is what a rebound page cannot have: with one, any name is served.
  const std::string with_token = chromium("GET", "/v1/channels/secret/messages", evil,
                                          "Authorization: Bearer " + kAdminToken + "\r\n");
  EXPECT_EQ(status_of(with_token), 200u) << with_token;
  EXPECT_EQ(http_get(d.http_port(), "/v1/channels/secret").json["depth"], 1) << d.log();
  expect_alive(d);
  EXPECT_EQ(d.stop(SIGTERM, 20s), 0) << d.log();
}

// Issue 19 item 2: a chunk header or trailers that never end are refused once the read buffer's
// limit is reached, and memory does not grow with them.
TEST(HttpHostileTest, ChunkExtensionsAndTrailersCannotGrowMemory) {
  Daemon d;
  ASSERT_NE(d.http_port(), 0);
  const std::string head =
      "POST /v1/channels/x/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
      "\r\n";
  {
    // Within what the server drains after refusing: the answer arrives whole.
    Raw r(d.http_port());
    r.send(head + "1;" + std::string(200'000, 'e'));
    const std::string reply = r.read_until_closed();
    EXPECT_EQ(status_of(reply), 431u) << reply;
    EXPECT_NE(reply.find("chunk header or a trailer"), std::string::npos) << reply;
  }
  const long before = rss_kib(pid_of(d));
  const std::string filler(64 << 10, 'e');
  std::string trailer_line = "x-t: " + std::string(1000, 'v') + "\r\n";
  std::string trailers;
  while (trailers.size() < filler.size()) trailers += trailer_line;
  for (const bool extension : {true, false}) {
    Raw r(d.http_port());
    bool open = r.send(head + (extension ? "1;" : "1\r\na\r\n0\r\n"));
    size_t sent = 0;
    // 64 MiB, unless the server closes first (it does, after refusing and draining 1 MiB).
    while (open && sent < (64u << 20)) {
      open = r.send(extension ? filler : trailers);
      sent += filler.size();
    }
    EXPECT_FALSE(open) << "the server read " << sent << " bytes of "
                       << (extension ? "one chunk header" : "trailers");
  }
  const long after = rss_kib(pid_of(d));
  EXPECT_LT(after - before, 32 * 1024) << "RSS grew from " << before << " to " << after << " KiB";
  expect_alive(d);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// A Transfer-Encoding other than "chunked" alone leaves the body's length unknown (RFC 9112
// 6.1): taken as a request without a body, what follows it was served as another request, one
// that a proxy in front counted as body (request smuggling). Such a request is refused and the
// connection closed; nothing after its headers is served.
TEST(HttpHostileTest, TransferEncodingOtherThanChunkedIsRefusedAndNothingIsSmuggled) {
  Daemon d;
  ASSERT_NE(d.http_port(), 0);
  const std::string smuggled =
      "POST /v1/channels/smuggled/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
      "1\r\n\r\nX";
  struct Case {
    std::string coding;
    unsigned status;
  };
  for (const Case& c :
       {Case{"identity", 400}, Case{"chunked, identity", 400}, Case{"gzip", 400},
        Case{"chunked\r\nTransfer-Encoding: gzip", 400}, Case{"gzip, chunked", 501}}) {
    SCOPED_TRACE(c.coding);
    const std::string reply =
        round_trip(d.http_port(),
                   "POST /v1/channels/front/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Transfer-Encoding: " +
                       c.coding + "\r\n\r\n" + smuggled);
    EXPECT_EQ(status_of(reply), c.status) << reply;
    EXPECT_NE(reply.find("Transfer-Encoding"), std::string::npos) << reply;
    EXPECT_EQ(reply.find("smuggled"), std::string::npos) << reply;
    EXPECT_TRUE(json::accept(body_of(reply))) << reply;
  }
  // Neither the front request nor the one behind it was served.
  EXPECT_EQ(http_get(d.http_port(), "/v1/channels/smuggled").status, 404u);
  EXPECT_EQ(http_get(d.http_port(), "/v1/channels/front").status, 404u);
  // Chunked alone still works, in any case.
  const std::string ok = round_trip(
      d.http_port(),
      "POST /v1/channels/front/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
      "Transfer-Encoding: Chunked\r\n\r\n1\r\nY\r\n0\r\n\r\n");
  EXPECT_EQ(status_of(ok), 201u) << ok;
  expect_alive(d);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// Issue 19 item 3: nesting deeper than the limit is refused while parsing, on every path that
// parses JSON: admin bodies, structured CloudEvents, the protocol's admin frames, the
// configuration.
TEST(HttpHostileTest, DeeplyNestedJsonIsRefusedOnEveryPath) {
  Daemon d;
  ASSERT_NE(d.http_port(), 0);
  const uint16_t http = d.http_port();
  auto expect_refused = [](const HttpReply& r, const std::string& what) {
    EXPECT_EQ(r.status, 400u) << what << ": " << r;
    EXPECT_NE(r.error_message().find("deeper than the limit"), std::string::npos)
        << what << ": " << r;
  };
  expect_refused(http_request(http, "PUT", "/v1/channels/deep", nested_arrays(1 << 20)),
                 "declare, 2 MB of nested arrays");
  expect_refused(http_request(http, "PUT", "/v1/channels/deep",
                              R"({"max-deliveries": )" + nested_arrays(kMaxJsonDepth) + "}"),
                 "declare, a nested setting");
  expect_refused(http_request(http, "POST", "/v1/channels/deep/purge", nested_arrays(100'000)),
                 "purge");
  expect_refused(http_request(http, "POST", "/v1/checkpoint", nested_arrays(100'000)),
                 "checkpoint");
  ASSERT_EQ(http_request(http, "PUT", "/v1/channels/deep.src", "{}").status, 201u);
  expect_refused(http_request(http, "POST", "/v1/channels/deep.src/dead-letters/replay",
                              nested_arrays(100'000)),
                 "replay");
  const std::string event = R"({"specversion":"1.0","id":"a","source":"/s","type":"t","data":)" +
                            nested_arrays(100'000) + "}";
  expect_refused(http_request(http, "POST", "/v1/channels/deep/messages", event,
                              {{"Content-Type", "application/cloudevents+json"}}),
                 "a 200 KB structured CloudEvent");
  // The same depth on the protocol's admin frame.
  Conn c(d.port());
  c.hello();
  Frame f =
      c.call(net::AdminRequest{net::AdminOp::kChannelDeclare,
                               R"({"name": "deep", "settings": )" + nested_arrays(500'000) + "}"});
  auto e = error_of(f);
  ASSERT_TRUE(e.has_value()) << describe(f);
  EXPECT_EQ(e->code, ErrorCode::kInvalidArgument);
  EXPECT_NE(e->message.find("deeper than the limit"), std::string::npos) << e->message;
  EXPECT_FRAME(c.call(net::Ping{1}), kPong);
  // Nothing was declared by the refused requests.
  EXPECT_EQ(http_get(http, "/v1/channels/deep").status, 404u);
  expect_alive(d);
  EXPECT_EQ(d.stop(), 0) << d.log();

  // The configuration file and --set values.
  auto config = parse_config_text(R"({"channels": )" + nested_arrays(100'000) + "}", "deep.json");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message.find("deeper than the limit"), std::string::npos)
      << config.error().message;
}

// Issue 19 item 4: a request is authenticated on its headers; a client without a valid token, or
// without the grant, is answered before it may send its body, and cannot make the server hold it.
TEST(HttpHostileTest, BodiesAreReadOnlyAfterAuthentication) {
  SecuredConfig config;
  Daemon d({"--config", config.path()});
  ASSERT_NE(d.http_port(), 0);
  auto head = [](const std::string& token) {
    return "POST /v1/channels/orders.x/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
           "Bearer " +
           token + "\r\nContent-Length: 16000000\r\nExpect: 100-continue\r\n\r\n";
  };
  {
    Raw r(d.http_port());
    r.send(head("wrong"));
    const std::string reply = r.read_some();
    EXPECT_EQ(status_of(reply), 401u) << "no 100 Continue before authentication: " << reply;
  }
  {
    Raw r(d.http_port());
    r.send(head(kNoGrantToken));
    const std::string reply = r.read_some();
    EXPECT_EQ(status_of(reply), 403u) << reply;
    EXPECT_NE(reply.find("may not send to channel 'orders.x'"), std::string::npos) << reply;
  }
  {
    Raw r(d.http_port());
    r.send(head(kAdminToken));
    EXPECT_EQ(status_of(r.read_some()), 100u);
  }
  // 32 connections with a wrong token sending 2 MiB each: none is kept.
  const long before = rss_kib(pid_of(d));
  std::vector<std::unique_ptr<Raw>> conns;
  const std::string chunk(256 << 10, 'b');
  for (int i = 0; i < 32; ++i) {
    conns.push_back(std::make_unique<Raw>(d.http_port()));
    conns.back()->send(head("wrong").substr(0, head("wrong").find("Expect")) + "\r\n");
  }
  for (int round = 0; round < 8; ++round) {
    for (auto& c : conns) c->send(chunk);
  }
  const long after = rss_kib(pid_of(d));
  EXPECT_LT(after - before, 32 * 1024) << "RSS grew from " << before << " to " << after << " KiB";
  conns.clear();
  expect_alive(d);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// Issue 19 item 5: headers have a deadline, connections over the limit are refused cheaply and
// with few log lines, and health probes are answered whatever the other connections do.
TEST(HttpHostileTest, SlowHeadersAndFloodsCannotStarveHealthProbes) {
  Daemon d({"--set", "http-max-connections=4", "--set", "http-header-timeout-ms=300"});
  ASSERT_NE(d.http_port(), 0);
  std::vector<std::unique_ptr<Raw>> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(std::make_unique<Raw>(d.http_port()));
    slow.back()->send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  }
  std::this_thread::sleep_for(50ms);
  // Every slot is held by a client trickling its headers: the probes are still answered.
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200u);
  EXPECT_EQ(http_get(d.http_port(), "/readyz").status, 200u);
  // The trickling connections are closed at the header deadline, not the 60 s idle timeout.
  for (auto& s : slow) {
    s->send("X-Slow: 1\r\n");
    s->read_until_closed(5s);
    EXPECT_TRUE(s->closed());
  }
  slow.clear();
  expect_alive(d);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// Issue 19 item 5: connections over the limit, HTTPS ones included, are refused cheaply: few at
// a time get an answer (after a bounded handshake), the others are closed at once, and the log
// gets a line now and then rather than one per connection.
TEST(HttpHostileTest, AFloodOverTheLimitHoldsFewDescriptorsAndLogLines) {
  TestCertificates certs;
  ASSERT_TRUE(certs.ok()) << certs.log();
  Daemon d({"--set", "http-max-connections=4", "--https-listen", "127.0.0.1:0", "--set",
            "tls-cert-file=" + certs.pem("server"), "--set",
            "tls-key-file=" + certs.key("server")});
  ASSERT_NE(d.https_port(), 0);
  const size_t idle_fds = open_descriptors(pid_of(d));
  // Every slot held by a request that has started (the header deadline is 10 s).
  std::vector<std::unique_ptr<Raw>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<Raw>(d.http_port()));
    held.back()->send("G");
  }
  std::vector<std::unique_ptr<Raw>> flood;
  for (int i = 0; i < 300; ++i) flood.push_back(std::make_unique<Raw>(d.https_port()));
  std::this_thread::sleep_for(300ms);
  const size_t fds = open_descriptors(pid_of(d));
  EXPECT_LT(fds, idle_fds + 4 + 64 + 16)
      << "descriptors of witmqd with 300 silent HTTPS connections over the limit (" << idle_fds
      << " before)";
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200u);
  flood.clear();
  held.clear();
  const std::string log = d.log();
  size_t lines = 0;
  for (size_t at = log.find("HTTP connections since the last such line"); at != std::string::npos;
       at = log.find("HTTP connections since the last such line", at + 1)) {
    ++lines;
  }
  EXPECT_LE(lines, 2u) << log;
  expect_alive(d);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// The class of bug, not just its instances: every route with hostile input in each place, with
// no token, a token without grants and the admin token. Nothing may fail inside the server (500),
// every answer is JSON, and witmqd is alive and healthy afterwards.
TEST(HttpHostileTest, EveryRouteWithHostileInputLeavesTheDaemonHealthy) {
  SecuredConfig config;
  Daemon d({"--config", config.path(), "--set", "max-message-bytes=65536"});
  ASSERT_NE(d.http_port(), 0);
  const uint16_t http = d.http_port();
  ASSERT_EQ(http_request(http, "PUT", "/v1/channels/h.c", "{}",
                         {{"Authorization", "Bearer " + kAdminToken}})
                .status,
            201u);
  struct Route {
    std::string method, path;  // {c}: a channel name
  };
  const std::vector<Route> routes = {
      {"GET", "/healthz"},
      {"GET", "/readyz"},
      {"GET", "/metrics"},
      {"GET", "/v1/channels"},
      {"GET", "/v1/channels/{c}"},
      {"PUT", "/v1/channels/{c}"},
      {"POST", "/v1/channels/{c}"},
      {"DELETE", "/v1/channels/{c}"},
      {"GET", "/v1/channels/{c}/messages"},
      {"POST", "/v1/channels/{c}/messages"},
      {"GET", "/v1/channels/{c}/dead-letters"},
      {"POST", "/v1/channels/{c}/dead-letters/replay"},
      {"POST", "/v1/channels/{c}/purge"},
      {"GET", "/v1/server"},
      {"GET", "/v1/guests"},
      {"POST", "/v1/checkpoint"},
  };
  const std::vector<std::string> channels = {
      "h.c", "%ff", ".%ff", "a%00b", "%2e%2e", "h.%c3%28", std::string(300, 'n'), "h.c%2fx"};
  const std::vector<std::string> queries = {
      "", "?%ff=1", "?max=%ff", "?from=1e999", "?max=99999999999999999999999", "?%", "?&&=&"};
  const std::vector<std::string> bodies = {
      "",
      "\xff\xfe",
      nested_arrays(10'000),
      std::string(kMaxJsonDepth + 1, '[') + "1" + std::string(kMaxJsonDepth + 1, ']'),
      R"({"a": "\udc00"})",
      "{\"dead-letter-channel\": \"\xff\"}",
      R"({"dead-letter-channel": "h.c"})",
      R"({"max": -1, "dir": 7, "max-deliveries": 1e999})",
      R"({"specversion":"1.0","id":1e400,"source":"/s","type":"t","id":"x"})",
      "[" + std::string(100'000, '1') + "]",
  };
  const std::vector<std::string> extra_headers = {
      "",
      "Content-Type: application/cloudevents+json\r\n",
      "Content-Type: \xff\r\nce-id: %ff\r\nce-source: \xc3\x28\r\nce-specversion: 1.0\r\n"
      "ce-type: t\r\n",
      "Content-Type: application/cloudevents-batch+json\r\n",
  };
  const std::vector<std::string> tokens = {"", "Authorization: Bearer " + kNoGrantToken + "\r\n",
                                           "Authorization: Bearer " + kAdminToken + "\r\n",
                                           "Authorization: Bearer \xff\r\n"};
  size_t requests = 0;
  auto check = [&](const std::string& method, const std::string& target, const std::string& body,
                   const std::string& headers) {
    ++requests;
    const std::string reply = round_trip(http, request(method, target, body, headers));
    const unsigned status = status_of(reply);
    const std::string what = method + " " + target + " (" + std::to_string(body.size()) +
                             " bytes of body, headers " + headers + ")";
    EXPECT_NE(status, 0u) << what << ": no answer";
    EXPECT_NE(status, 500u) << what << ": " << reply;
    if (status != 0 && reply.find("text/plain") == std::string::npos) {
      EXPECT_FALSE(json::parse(body_of(reply), nullptr, false).is_discarded())
          << what << ": " << reply;
    }
  };
  for (const auto& route : routes) {
    for (const auto& token : tokens) {
      auto at = [&](const std::string& channel, const std::string& query) {
        std::string path = route.path;
        if (auto c = path.find("{c}"); c != std::string::npos) path.replace(c, 3, channel);
        return path + query;
      };
      for (const auto& channel : channels) check(route.method, at(channel, ""), "", token);
      for (const auto& query : queries) check(route.method, at("h.c", query), "", token);
      for (const auto& body : bodies) {
        for (const auto& headers : extra_headers) {
          check(route.method, at("h.c", ""), body, token + headers);
        }
      }
      for (const std::string method : {"PATCH", "TRACE", "OPTIONS", "BREW"}) {
        check(method, at("h.c", ""), "", token);
      }
    }
  }
  EXPECT_GT(requests, 1000u);
  expect_alive(d);
  HttpReply metrics =
      http_request(http, "GET", "/metrics", "", {{"Authorization", "Bearer " + kAdminToken}});
  EXPECT_EQ(metrics.status, 200u) << metrics;
  EXPECT_EQ(d.stop(SIGTERM, 20s), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
