// The web console's files as witmqd serves them (docs/CONSOLE.md): embedded, with their types,
// a strict Content-Security-Policy and revalidation caching; nothing outside the table is
// reachable; /v1/identity tells the page what the caller may do; requests of pages of another
// origin change nothing; /v1/guests says why a guest was refused. The page itself is driven by a
// real browser in tests/console/.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "auth/token.h"
#include "daemon_process.h"
#include "http_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

const std::string kManageToken = "witmq_console-manage-token-0123456789abcdefghij";
const std::string kMonitorToken = "witmq_console-monitor-token-0123456789abcdefghi";

std::string digest(const std::string& token) { return auth::to_hex(auth::sha256(token)); }
std::string bearer(const std::string& token) { return "Bearer " + token; }

std::string read_source(const std::string& relative) {
  std::ifstream in(std::string(WITMQ_SOURCE_DIR) + "/" + relative, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A daemon whose only identities are one that manages everything and one that only monitors and
// receives, and no anonymous access.
class ConsoleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(make_temp_dir("console"));
    const std::string config = *dir_ + "/c.json";
    std::ofstream(config) << json{
        {"anonymous", {{"enabled", false}}},
        {"identities",
         {{{"name", "ops"},
           {"token-sha256", digest(kManageToken)},
           {"manage", {"*"}},
           {"send", {"*"}},
           {"receive", {"*"}},
           {"monitor", true}},
          {{"name", "viewer"},
           {"token-sha256", digest(kMonitorToken)},
           {"receive", {"orders.*"}},
           {"monitor", true}}}}}.dump();
    daemon_ = new Daemon({"--config", config});
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    delete daemon_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static uint16_t http() { return daemon_->http_port(); }
  static HttpReply as(const std::string& token, const std::string& method,
                      const std::string& target, const std::string& body = "",
                      std::vector<std::pair<std::string, std::string>> headers = {}) {
    headers.emplace_back("Authorization", bearer(token));
    return http_request(http(), method, target, body, headers);
  }

  static Daemon* daemon_;
  static std::string* dir_;
};
Daemon* ConsoleTest::daemon_ = nullptr;
std::string* ConsoleTest::dir_ = nullptr;

TEST_F(ConsoleTest, FilesAreTheSourcesWithTheirTypesAndAStrictPolicy) {
  struct Expected {
    std::string target, file, type;
  };
  for (const Expected& e : std::vector<Expected>{
           {"/console/", "console/index.html", "text/html; charset=utf-8"},
           {"/console/index.html", "console/index.html", "text/html; charset=utf-8"},
           {"/console/console.js", "console/console.js", "text/javascript; charset=utf-8"},
           {"/console/console.css", "console/console.css", "text/css; charset=utf-8"}}) {
    // No token: the files hold no data, and the page must load to ask for one.
    HttpReply r = http_get(http(), e.target);
    ASSERT_EQ(r.status, 200u) << e.target << " " << r;
    EXPECT_EQ(r.body, read_source(e.file)) << e.target;
    EXPECT_EQ(r.header("content-type"), e.type) << e.target;
    const std::string policy = r.header("content-security-policy");
    EXPECT_NE(policy.find("default-src 'none'"), std::string::npos) << policy;
    EXPECT_NE(policy.find("script-src 'self';"), std::string::npos) << policy;
    EXPECT_EQ(policy.find("unsafe-inline"), std::string::npos) << policy;
    EXPECT_EQ(policy.find("unsafe-eval"), std::string::npos) << policy;
    EXPECT_NE(policy.find("frame-ancestors 'none'"), std::string::npos) << policy;
    EXPECT_EQ(r.header("x-content-type-options"), "nosniff");
    EXPECT_EQ(r.header("x-frame-options"), "DENY");
    EXPECT_EQ(r.header("cache-control"), "no-cache");
    ASSERT_FALSE(r.header("etag").empty());

    // Revalidation: the same ETag is a 304 without a body; another one gets the file.
    HttpReply again =
        http_request(http(), "GET", e.target, "", {{"If-None-Match", r.header("etag")}});
    EXPECT_EQ(again.status, 304u) << again;
    EXPECT_TRUE(again.body.empty());
    HttpReply other = http_request(http(), "GET", e.target, "", {{"If-None-Match", "\"0\""}});
    EXPECT_EQ(other.status, 200u) << other;
  }
  HttpReply head = http_request(http(), "HEAD", "/console/console.js");
  EXPECT_EQ(head.status, 200u) << head;
  EXPECT_EQ(head.header("content-length"),
            std::to_string(read_source("console/console.js").size()));

  HttpReply bare = http_get(http(), "/console");
  EXPECT_EQ(bare.status, 301u) << bare;
  EXPECT_EQ(bare.header("location"), "/console/");
}

TEST_F(ConsoleTest, NothingOutsideTheEmbeddedFilesIsReachable) {
  for (const std::string target :
       {"/console/../v1/channels", "/console/%2e%2e/v1/channels", "/console/..%2fv1%2fchannels",
        "/console/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/console/../../etc/passwd",
        "/console/console.js/", "/console//console.js", "/console/./index.html",
        "/console/CONSOLE.JS", "/console/console.js%00.html", "/console/%00",
        "/console/..\\..\\etc\\passwd", "/console/x/../index.html", "/console/%ff%fe"}) {
    HttpReply r = http_get(http(), target);
    EXPECT_EQ(r.status, 404u) << target << " " << r;
    EXPECT_EQ(r.error_code(), "not-found") << target;
    EXPECT_EQ(r.body.find("/etc"), std::string::npos) << target << " " << r;
    EXPECT_NE(r.header("content-security-policy"), "") << target;
  }
  // The channel list stays behind its token whatever the path says.
  EXPECT_EQ(http_get(http(), "/v1/channels").status, 401u);
  HttpReply post = http_request(http(), "POST", "/console/", "x");
  EXPECT_EQ(post.status, 405u) << post;
  EXPECT_EQ(post.header("allow"), "GET, HEAD");
  // A token that matches nobody does not stop the files either.
  EXPECT_EQ(
      http_request(http(), "GET", "/console/", "", {{"Authorization", "Bearer nobody"}}).status,
      200u);
}

TEST_F(ConsoleTest, IdentitySaysWhatTheCallerMayDo) {
  HttpReply ops = as(kManageToken, "GET", "/v1/identity?channel=orders.eu");
  ASSERT_EQ(ops.status, 200u) << ops;
  EXPECT_EQ(ops.json, (json{{"identity", "ops"},
                            {"anonymous", false},
                            {"monitor", true},
                            {"channel", "orders.eu"},
                            {"send", true},
                            {"receive", true},
                            {"manage", true}}));
  HttpReply viewer = as(kMonitorToken, "GET", "/v1/identity?channel=orders.eu");
  ASSERT_EQ(viewer.status, 200u) << viewer;
  EXPECT_EQ(viewer.json["identity"], "viewer");
  EXPECT_EQ(viewer.json["manage"], false);
  EXPECT_EQ(viewer.json["receive"], true);
  EXPECT_EQ(viewer.json["send"], false);
  EXPECT_EQ(as(kMonitorToken, "GET", "/v1/identity?channel=billing").json["receive"], false);
  HttpReply plain = as(kMonitorToken, "GET", "/v1/identity");
  EXPECT_EQ(plain.json, (json{{"identity", "viewer"}, {"anonymous", false}, {"monitor", true}}));

  EXPECT_EQ(http_get(http(), "/v1/identity").status, 401u);
  HttpReply unknown = as(kMonitorToken, "GET", "/v1/identity?token=x");
  EXPECT_EQ(unknown.status, 400u) << unknown;
  EXPECT_NE(unknown.error_message().find("'token'"), std::string::npos) << unknown;
  EXPECT_EQ(as(kMonitorToken, "GET", "/v1/identity?channel=a&channel=b").status, 400u);
  EXPECT_EQ(as(kMonitorToken, "GET", "/v1/identity?channel=").status, 400u);
  EXPECT_EQ(as(kMonitorToken, "POST", "/v1/identity").status, 405u);

  // What the page hides, the API refuses.
  ASSERT_EQ(as(kManageToken, "PUT", "/v1/channels/orders.eu", "{}").status, 201u);
  EXPECT_EQ(as(kMonitorToken, "POST", "/v1/channels/orders.eu/purge").status, 403u);
  EXPECT_EQ(as(kMonitorToken, "POST", "/v1/channels/orders.eu/dead-letters/replay").status, 403u);
  EXPECT_EQ(as(kMonitorToken, "DELETE", "/v1/channels/orders.eu").status, 403u);
}

TEST_F(ConsoleTest, PagesOfAnotherOriginChangeNothing) {
  ASSERT_EQ(as(kManageToken, "PUT", "/v1/channels/csrf", "{}").status, 201u);
  const std::string host = "127.0.0.1:" + std::to_string(http());
  // A form on another site posting through the operator's browser: refused before the body.
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"Origin", "http://evil.example"},
                                                        {"Origin", "null"},
                                                        {"Origin", "http://127.0.0.1:1"},
                                                        {"Sec-Fetch-Site", "cross-site"}}) {
    for (const std::string& target :
         {std::string("/v1/channels/csrf/purge"), std::string("/v1/channels/csrf/messages")}) {
      HttpReply r = as(kManageToken, "POST", target, "x", {{name, value}});
      EXPECT_EQ(r.status, 403u) << name << ": " << value << " " << target << " " << r;
      EXPECT_EQ(r.error_code(), "permission-denied");
    }
    EXPECT_EQ(as(kManageToken, "DELETE", "/v1/channels/csrf", "", {{name, value}}).status, 403u);
  }
  EXPECT_EQ(as(kManageToken, "GET", "/v1/channels/csrf").json["sends-total"], 0);
  // The console's own requests (same origin) and clients that send no Origin go through.
  HttpReply same =
      as(kManageToken, "POST", "/v1/channels/csrf/messages", "x",
         {{"Host", host}, {"Origin", "http://" + host}, {"Sec-Fetch-Site", "same-origin"}});
  EXPECT_EQ(same.status, 201u) << same;
  EXPECT_EQ(as(kManageToken, "POST", "/v1/channels/csrf/purge").status, 200u);
  // Reading is not changing: a cross-origin GET is answered (the browser keeps the answer from
  // the page, which gets no CORS header).
  HttpReply get =
      as(kManageToken, "GET", "/v1/channels/csrf", "", {{"Origin", "http://evil.example"}});
  EXPECT_EQ(get.status, 200u) << get;
  EXPECT_EQ(get.header("access-control-allow-origin"), "");
}

// A browse page (what the console's channel page reads) is bounded in bytes as well as in
// messages: half of max-frame-bytes of data, at least one message.
TEST(ConsoleBrowseTest, APageOfLargeMessagesIsBoundedInBytes) {
  Daemon d({"--set", "max-frame-bytes=2097152"});
  const std::string big(300'000, 'x');
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(http_request(d.http_port(), "POST", "/v1/channels/big/messages", big).status, 201u);
  }
  HttpReply page = http_get(d.http_port(), "/v1/channels/big/messages?max=100");
  ASSERT_EQ(page.status, 200u) << page.status;
  // 3 x 300,000 bytes fit in 1 MiB, a fourth would not.
  ASSERT_EQ(page.json["messages"].size(), 3u);
  EXPECT_EQ(page.json["next"], 3);
  uint64_t from = 3, seen = 3;
  for (int pages = 0; pages < 10 && from < 10; ++pages) {
    HttpReply next = http_get(
        d.http_port(), "/v1/channels/big/messages?from=" + std::to_string(from) + "&max=100");
    ASSERT_EQ(next.status, 200u);
    ASSERT_FALSE(next.json["messages"].empty());
    seen += next.json["messages"].size();
    from = next.json["next"].get<uint64_t>();
  }
  EXPECT_EQ(seen, 10u);
  // One message larger than the budget still comes alone: a page never stalls.
  const std::string bigger(1'000'000, 'y');
  ASSERT_EQ(http_request(d.http_port(), "POST", "/v1/channels/bigger/messages", bigger).status,
            201u);
  ASSERT_EQ(http_request(d.http_port(), "POST", "/v1/channels/bigger/messages", bigger).status,
            201u);
  HttpReply alone = http_get(d.http_port(), "/v1/channels/bigger/messages");
  ASSERT_EQ(alone.status, 200u);
  EXPECT_EQ(alone.json["messages"].size(), 1u);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// Data of control characters is valid UTF-8 but would grow six-fold as JSON text (\u0001): it
// comes as base64, so a page's answer stays near its data's size. JSON data stays text.
TEST(ConsoleBrowseTest, ControlCharacterDataComesAsBase64AndThePageStaysBounded) {
  Daemon d({"--set", "max-frame-bytes=2097152"});
  const std::string controls(300'000, '\x01');
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(http_request(d.http_port(), "POST", "/v1/channels/ctl/messages", controls).status,
              201u);
  }
  const std::string doc = R"({"k":"v","list":["a","b"]})";
  ASSERT_EQ(http_request(d.http_port(), "POST", "/v1/channels/doc/messages", doc).status, 201u);
  HttpReply page = http_get(d.http_port(), "/v1/channels/ctl/messages?max=100");
  ASSERT_EQ(page.status, 200u) << page.status;
  ASSERT_EQ(page.json["messages"].size(), 3u);
  EXPECT_FALSE(page.json["messages"][0].contains("data"));
  EXPECT_EQ(page.json["messages"][0]["data_base64"].get<std::string>().size(), 400'000u);
  EXPECT_LT(page.body.size(), 1'300'000u);  // as text it would be about 5.4 MB
  HttpReply docs = http_get(d.http_port(), "/v1/channels/doc/messages");
  ASSERT_EQ(docs.status, 200u);
  EXPECT_EQ(docs.json["messages"][0]["data"], doc);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(ConsoleGuestsTest, RefusedGuestsSayWhy) {
  const std::string dir = make_temp_dir("console-guests");
  const std::string config = dir + "/c.json";
  std::ofstream(config) << json{{"guests",
                                 {{{"name", "broken"},
                                   {"module", std::string(WITMQ_GUEST_WASM_DIR) +
                                                  "/missing_export_guest.wasm"}}}}}
                               .dump();
  Daemon d({"--config", config});
  HttpReply guests = http_get(d.http_port(), "/v1/guests");
  ASSERT_EQ(guests.status, 200u) << guests;
  EXPECT_EQ(guests.json["refused"], 1);
  ASSERT_EQ(guests.json["refused-guests"].size(), 1u) << guests;
  const json& refused = guests.json["refused-guests"][0];
  EXPECT_EQ(refused["name"], "broken");
  EXPECT_EQ(refused["module"], std::string(WITMQ_GUEST_WASM_DIR) + "/missing_export_guest.wasm");
  EXPECT_FALSE(refused["reason"].get<std::string>().empty()) << guests;
  EXPECT_EQ(d.stop(), 0) << d.log();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace witmq::daemon::testing
