// TLS on the real witmqd (tls-listen, https-listen and the tls- keys): the protocol through the
// client library over TLS, side by side with the plain listener on one channel; client
// certificates required and optional; HTTPS health and metrics; certificate and key files refused
// at start; a client that never handshakes, and a plaintext client on the TLS port, closed without
// harm to the others; max-connections over both listeners; SIGTERM with TLS connections open; a
// reload that changes a TLS key. The certificates are made at run time (tls_certs.h).
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "auth/token.h"
#include "client/client.h"
#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"
#include "tls_certs.h"

namespace witmq::daemon::testing {
namespace {

using client::Client;

// One set of certificates for every test of this binary: openssl takes a while.
const TestCertificates& certs() {
  static const TestCertificates c;
  return c;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(certs().ok()) << certs().log(); }

  static client::Options tls_options(std::string cert = "") {
    client::Options o;
    o.tls.enabled = true;
    o.tls.ca_file = certs().pem("ca");
    if (!cert.empty()) {
      o.tls.cert_file = certs().pem(cert);
      o.tls.key_file = certs().key(cert);
    }
    o.connect_timeout = 5s;
    o.request_timeout = 10s;
    return o;
  }

  static std::vector<std::string> flags(std::vector<std::string> extra = {}) {
    auto f = certs().server_flags();
    f.insert(f.end(), extra.begin(), extra.end());
    return f;
  }
};

// A connected TCP socket to 127.0.0.1:port that the test writes raw bytes to.
class RawSocket {
 public:
  explicit RawSocket(uint16_t port) : socket_(io_) {
    boost::system::error_code ec;
    socket_.connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec);
    EXPECT_FALSE(ec) << ec.message();
  }
  void write(const std::vector<uint8_t>& bytes) {
    boost::system::error_code ec;
    boost::asio::write(socket_, boost::asio::buffer(bytes), ec);
  }
  // True when the server closes the connection within `timeout` (what it sends is dropped).
  bool closed_within(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const int fd = socket_.native_handle();
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
};

// Sends one message to `channel` and receives it back (completed) with `sender` and `receiver`.
void round_trip(Client& sender, Client& receiver, const std::string& channel,
                const std::string& data) {
  const std::vector<Message> batch{text_message(data)};
  ASSERT_TRUE(sender.send(channel, batch).ok()) << sender.error_trace();
  auto got = receiver.subscribe_try_receive(channel, 5000);
  ASSERT_TRUE(got.ok()) << got.error().to_string();
  ASSERT_TRUE(got->has_value());
  ASSERT_EQ((*got)->size(), 1u);
  EXPECT_EQ(text((**got)[0]), data);
  EXPECT_TRUE(receiver.complete_message((**got)[0]).ok()) << receiver.error_trace();
}

struct HttpsReply {
  unsigned status = 0;
  std::string body;
  std::string error;  // the handshake or the request failed
};

// One GET over TLS, verifying the server against the test CA and the name 127.0.0.1.
HttpsReply https_get(uint16_t port, const std::string& target) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  HttpsReply out;
  asio::io_context io;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(certs().pem("ca"));
  ctx.set_verify_mode(asio::ssl::verify_peer);
  beast::ssl_stream<asio::ip::tcp::socket> stream(io, ctx);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(stream.native_handle()), "127.0.0.1");
  boost::system::error_code ec;
  stream.next_layer().connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (!ec) stream.handshake(asio::ssl::stream_base::client, ec);
  if (ec) {
    out.error = "handshake: " + ec.message();
    return out;
  }
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.keep_alive(false);
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buffer, res, ec);
  if (ec) {
    out.error = "request: " + ec.message();
    return out;
  }
  out.status = res.result_int();
  out.body = res.body();
  return out;
}

TEST_F(TlsTest, TheProtocolRunsOverTlsWithTheClientLibrary) {
  Daemon d(flags());
  ASSERT_NE(d.tls_port(), 0) << d.log();
  ASSERT_NE(d.port(), 0);
  EXPECT_NE(d.tls_port(), d.port());
  // By address and by name: the server certificate carries both.
  auto a = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  auto b = Client::connect("localhost", d.tls_port(), "", tls_options());
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  EXPECT_EQ((*a)->server_info().version, 1);
  round_trip(**a, **b, "tls.q", "over tls");
  // A large message crosses many TLS records.
  const std::string big(300'000, 'x');
  round_trip(**b, **a, "tls.q", big);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(TlsTest, PlainAndTlsListenersShareOneChannel) {
  Daemon d(flags());
  auto secure = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_TRUE(secure.ok()) << secure.error().to_string();
  auto plain = Client::connect("127.0.0.1", d.port(), "");
  ASSERT_TRUE(plain.ok()) << plain.error().to_string();
  round_trip(**plain, **secure, "shared", "plain to tls");
  round_trip(**secure, **plain, "shared", "tls to plain");
  // The codec-level test client on the plain port sees the same channel.
  Conn c(d.port());
  c.hello();
  const std::vector<Message> batch{text_message("raw")};
  ASSERT_TRUE((*secure)->send("shared", batch).ok());
  Frame f = c.call(net::SubscribeTryReceive{"shared", 5000});
  auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
  ASSERT_NE(ok, nullptr) << describe(f);
  ASSERT_TRUE(ok->messages.has_value());
  ASSERT_EQ(ok->messages->size(), 1u);
  EXPECT_EQ(text((*ok->messages)[0]), "raw");
}

TEST_F(TlsTest, TheClientVerifiesTheServer) {
  Daemon d(flags());
  // Another CA does not vouch for the server.
  auto o = tls_options();
  o.tls.ca_file = certs().pem("other-ca");
  auto r = Client::connect("127.0.0.1", d.tls_port(), "", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find("certificate did not verify"), std::string::npos)
      << r.error().message;
  // The right CA, but a name the certificate does not carry.
  o = tls_options();
  o.tls.server_name = "witmq.example";
  r = Client::connect("127.0.0.1", d.tls_port(), "", o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("certificate did not verify"), std::string::npos)
      << r.error().message;
  // Insecure skips both checks.
  o = tls_options();
  o.tls.ca_file.clear();
  o.tls.insecure = true;
  o.tls.server_name = "witmq.example";
  r = Client::connect("127.0.0.1", d.tls_port(), "", o);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  // A TLS client on the plain port fails its handshake; the daemon carries on.
  r = Client::connect("127.0.0.1", d.port(), "", tls_options());
  EXPECT_FALSE(r.ok());
  auto again = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  EXPECT_TRUE(again.ok()) << again.error().to_string();
}

// Connects with `cert` ("" = none) and, when the connect succeeds, makes a round trip.
Status connect_and_use(uint16_t port, client::Options options) {
  auto c = Client::connect("127.0.0.1", port, "", options);
  if (!c.ok()) return std::move(c).error();
  auto pong = (*c)->ping(7);
  if (!pong.ok()) return std::move(pong).error();
  return ok_status();
}

TEST_F(TlsTest, ARequiredClientCertificateMustChainToTheClientCa) {
  Daemon d(flags({"--log-level", "debug", "--set", "tls-client-cert=required", "--set",
                  "tls-client-ca-file=" + certs().pem("ca")}));
  // No certificate: refused (with TLS 1.3 the client learns it on its first read).
  EXPECT_FALSE(connect_and_use(d.tls_port(), tls_options()).ok());
  // A certificate of another CA: refused.
  EXPECT_FALSE(connect_and_use(d.tls_port(), tls_options("intruder")).ok());
  EXPECT_TRUE(d.wait_for_log("TLS handshake failed")) << d.log();
  // The right one: served, and the connection knows the certificate's subject.
  auto st = connect_and_use(d.tls_port(), tls_options("client"));
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_TRUE(d.wait_for_log("client certificate CN=witmq-test-client")) << d.log();
  EXPECT_EQ(d.log().find("client certificate CN=intruder"), std::string::npos) << d.log();
  // The plain listener asks for nothing.
  auto plain = Client::connect("127.0.0.1", d.port(), "");
  EXPECT_TRUE(plain.ok()) << plain.error().to_string();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(TlsTest, AnOptionalClientCertificateIsVerifiedWhenGiven) {
  Daemon d(flags({"--log-level", "debug", "--set", "tls-client-cert=optional", "--set",
                  "tls-client-ca-file=" + certs().pem("ca")}));
  auto st = connect_and_use(d.tls_port(), tls_options());
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  st = connect_and_use(d.tls_port(), tls_options("client"));
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_TRUE(d.wait_for_log("client certificate CN=witmq-test-client")) << d.log();
  EXPECT_FALSE(connect_and_use(d.tls_port(), tls_options("intruder")).ok());
}

TEST_F(TlsTest, HttpsServesHealthAndMetrics) {
  Daemon d(flags());
  ASSERT_NE(d.https_port(), 0) << d.log();
  HttpsReply r = https_get(d.https_port(), "/healthz");
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200u) << r.body;
  r = https_get(d.https_port(), "/metrics");
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200u);
  EXPECT_NE(r.body.find("witmq_"), std::string::npos) << r.body;
  // The plain HTTP listener runs beside it.
  HttpReply plain = http_get(d.http_port(), "/healthz");
  EXPECT_EQ(plain.status, 200u);
  // Plain HTTP on the HTTPS port is closed; HTTPS goes on.
  RawSocket raw(d.https_port());
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  raw.write(std::vector<uint8_t>(get.begin(), get.end()));
  EXPECT_TRUE(raw.closed_within(5s));
  r = https_get(d.https_port(), "/healthz");
  EXPECT_EQ(r.status, 200u) << r.error;
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(TlsTest, OnlyTheTlsListenerWhenListenIsEmpty) {
  Daemon d(flags({"--listen", "", "--http-listen", "", "--set", "https-listen="}));
  EXPECT_EQ(d.port(), 0);
  EXPECT_EQ(d.http_port(), 0);
  ASSERT_NE(d.tls_port(), 0) << d.log();
  auto st = connect_and_use(d.tls_port(), tls_options());
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

TEST_F(TlsTest, BadCertificatesAndKeysAreRefusedAtStartWithTheKey) {
  const std::string dir = certs().dir();
  auto start = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--listen", "127.0.0.1:0", "--http-listen", "", "--data-dir",
                               dir + "/never-used"});
    return run_witmqd(args);
  };
  auto expect_refused = [&](const RunResult& r, const std::vector<std::string>& parts) {
    EXPECT_EQ(r.exit_code, 2) << r.err;
    for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << p << "\n" << r.err;
  };
  const std::string cert = "tls-cert-file=" + certs().pem("server");
  const std::string key = "tls-key-file=" + certs().key("server");
  expect_refused(start({"--tls-listen", "127.0.0.1:0", "--set", "tls-cert-file=" + dir + "/none",
                        "--set", key}),
                 {"tls-cert-file (from --set)", dir + "/none", "No such file or directory"});
  expect_refused(start({"--tls-listen", "127.0.0.1:0", "--set", cert, "--set",
                        "tls-key-file=" + dir + "/none"}),
                 {"tls-key-file (from --set)", "No such file or directory"});
  const std::string garbage = write_file(dir + "/garbage.pem", "not a certificate\n");
  expect_refused(
      start({"--tls-listen", "127.0.0.1:0", "--set", "tls-cert-file=" + garbage, "--set", key}),
      {"tls-cert-file (from --set)", "garbage.pem", "no start line"});
  // The client's key does not belong to the server's certificate.
  expect_refused(start({"--tls-listen", "127.0.0.1:0", "--set", cert, "--set",
                        "tls-key-file=" + certs().key("client")}),
                 {"tls-key-file (from --set)", "does not match", "key values mismatch"});
  expect_refused(start({"--https-listen", "127.0.0.1:0", "--set", cert, "--set", key, "--set",
                        "tls-client-cert=required", "--set", "tls-client-ca-file=" + garbage}),
                 {"tls-client-ca-file (from --set)", "garbage.pem"});
  // Constraints between the keys.
  expect_refused(start({"--tls-listen", "127.0.0.1:0"}), {"tls-cert-file", "tls-listen"});
  expect_refused(start({"--https-listen", "127.0.0.1:0", "--set", cert}),
                 {"tls-key-file", "https-listen"});
  expect_refused(start({"--tls-listen", "127.0.0.1:0", "--set", cert, "--set", key, "--set",
                        "tls-client-cert=required"}),
                 {"tls-client-cert", "tls-client-ca-file"});
  expect_refused(start({"--listen", ""}), {"listen (from --listen)", "tls-listen", "at least one"});
  expect_refused(start({"--set", "tls-min-version=1.1"}), {"tls-min-version", "1.1"});
  expect_refused(start({"--set", "tls-client-cert=sometimes"}), {"tls-client-cert", "sometimes"});
  // --check-config loads the files too.
  RunResult r = run_witmqd({"--check-config", "--tls-listen", "127.0.0.1:0", "--set", cert, "--set",
                            "tls-key-file=" + certs().key("client")});
  expect_refused(r, {"tls-key-file"});
  r = run_witmqd({"--check-config", "--tls-listen", "127.0.0.1:0", "--set", cert, "--set", key,
                  "--set", "tls-min-version=1.3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(TlsTest, ASilentClientIsClosedAfterTheHandshakeTimeoutWhileOthersCarryOn) {
  Daemon d(flags({"--set", "tls-handshake-timeout-ms=600"}));
  const auto began = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<RawSocket>> silent;
  for (int i = 0; i < 5; ++i) silent.push_back(std::make_unique<RawSocket>(d.tls_port()));
  // Meanwhile TLS clients connect and work.
  auto a = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  auto b = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  round_trip(**a, **b, "busy", "while others stall");
  for (auto& s : silent) EXPECT_TRUE(s->closed_within(10s));
  const auto took = std::chrono::steady_clock::now() - began;
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 8s);
  // The working clients were not affected.
  round_trip(**b, **a, "busy", "after the timeout");
  EXPECT_TRUE((*a)->is_open());
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(TlsTest, APlaintextClientOnTheTlsPortIsClosedWithoutHarm) {
  Daemon d(flags());
  auto secure = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_TRUE(secure.ok()) << secure.error().to_string();
  for (int i = 0; i < 3; ++i) {
    RawSocket raw(d.tls_port());
    const net::Connect hello{{net::kProtocolVersion}, "", std::nullopt};
    net::Buffer connect;
    net::encode(connect, 1, hello);
    raw.write(std::vector<uint8_t>(connect.begin(), connect.end()));
    EXPECT_TRUE(raw.closed_within(5s));
  }
  // Garbage that looks like a TLS record header with a huge length.
  RawSocket junk(d.tls_port());
  junk.write({0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0x00});
  EXPECT_TRUE(junk.closed_within(15s));
  auto st = (*secure)->ping(1);
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  auto fresh = connect_and_use(d.tls_port(), tls_options());
  EXPECT_TRUE(fresh.ok()) << fresh.error().to_string();
  Conn plain(d.port());
  plain.hello();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(TlsTest, MaxConnectionsCountsBothListeners) {
  Daemon d(flags({"--set", "max-connections=2"}));
  auto a = Client::connect("127.0.0.1", d.port(), "");
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  auto b = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  // The third, on the TLS port, gets goaway inside TLS.
  auto c = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kResourceExhausted) << c.error().to_string();
  auto p = Client::connect("127.0.0.1", d.port(), "");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, ErrorCode::kResourceExhausted) << p.error().to_string();
}

TEST_F(TlsTest, SigtermDrainsBothListeners) {
  Daemon d(flags());
  auto secure = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  ASSERT_TRUE(secure.ok()) << secure.error().to_string();
  auto plain = Client::connect("127.0.0.1", d.port(), "");
  ASSERT_TRUE(plain.ok()) << plain.error().to_string();
  // One connection in the middle of nothing: no handshake at all.
  RawSocket silent(d.tls_port());
  const auto began = std::chrono::steady_clock::now();
  EXPECT_EQ(d.stop(SIGTERM, 30s), 0) << d.log();
  EXPECT_LT(std::chrono::steady_clock::now() - began, 8s);
  // Both clients were told the server is going away.
  for (auto* c : {secure->get(), plain->get()}) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (c->is_open() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_FALSE(c->is_open());
    auto reason = c->async()->close_reason();
    ASSERT_TRUE(reason.has_value());
    EXPECT_NE(reason->message.find("shutting down"), std::string::npos) << reason->message;
  }
}

TEST_F(TlsTest, AReloadThatChangesATlsKeyNeedsARestart) {
  const std::string dir = make_temp_dir("tls-reload");
  const std::string config = dir + "/witmqd.json";
  nlohmann::json values = {{"tls-listen", "127.0.0.1:0"},
                           {"tls-cert-file", certs().pem("server")},
                           {"tls-key-file", certs().key("server")}};
  std::ofstream(config) << values.dump();
  Daemon d({"--config", config});
  ASSERT_NE(d.tls_port(), 0) << d.log();
  values["tls-min-version"] = "1.3";
  values["tls-handshake-timeout-ms"] = 2000;
  std::ofstream(config + ".tmp") << values.dump();
  std::filesystem::rename(config + ".tmp", config);
  d.signal(SIGHUP);
  EXPECT_TRUE(d.wait_for_log("needs a restart: tls-min-version, tls-handshake-timeout-ms"))
      << d.log();
  // The running listener is unchanged and serves on.
  auto st = connect_and_use(d.tls_port(), tls_options());
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(d.stop(), 0) << d.log();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace witmq::daemon::testing

namespace witmq::daemon::testing {
namespace {

std::string digest_of(const std::string& token) { return auth::to_hex(auth::sha256(token)); }

// A verified client certificate's CN names the identity, on the protocol and on HTTPS, when the
// client sends no token; a token still wins; another CN with anonymous off is refused.
TEST_F(TlsTest, AClientCertificateAuthenticatesItsIdentity) {
  const nlohmann::json identities = nlohmann::json::array(
      {{{"name", "device"}, {"certificate-cn", "witmq-test-client"}, {"send", {"cert.*"}},
        {"monitor", true}},
       {{"name", "tokened"}, {"token-sha256", digest_of("tok")}, {"send", {"token.*"}}}});
  Daemon d(flags({"--log-level", "debug", "--set", "tls-client-cert=optional", "--set",
                  "tls-client-ca-file=" + certs().pem("ca"), "--set",
                  R"(anonymous={"enabled": false})", "--set",
                  "identities=" + identities.dump()}));
  auto device = Client::connect("127.0.0.1", d.tls_port(), "", tls_options("client"));
  ASSERT_TRUE(device.ok()) << device.error().to_string();
  const std::vector<Message> one = {text_message("m")};
  EXPECT_TRUE((*device)->send("cert.a", one).ok());
  auto denied = (*device)->send("token.a", one);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.error().message.find("identity 'device' may not send to channel 'token.a'"),
            std::string::npos)
      << denied.error().message;

  client::Options with_token = tls_options("client");
  with_token.token = "tok";
  auto tokened = Client::connect("127.0.0.1", d.tls_port(), "", with_token);
  ASSERT_TRUE(tokened.ok()) << tokened.error().to_string();
  EXPECT_TRUE((*tokened)->send("token.a", one).ok()) << "the token wins over the certificate";

  // No certificate, no token, anonymous off.
  auto nobody = Client::connect("127.0.0.1", d.tls_port(), "", tls_options());
  EXPECT_FALSE(nobody.ok());
  EXPECT_TRUE(d.wait_for_log("a token is required")) << d.log();
}

// The hardened configuration of docs/SECURITY.md loads, with its placeholders filled in.
TEST_F(TlsTest, TheHardenedConfigurationOfSecurityMdLoads) {
  std::ifstream in(std::string(WITMQ_SOURCE_DIR) + "/docs/SECURITY.md");
  ASSERT_TRUE(in);
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const auto section = doc.find("## Hardened configuration");
  ASSERT_NE(section, std::string::npos);
  const auto begin = doc.find("```json\n", section);
  const auto end = doc.find("```\n", begin + 8);
  ASSERT_TRUE(begin != std::string::npos && end != std::string::npos);
  std::string example = doc.substr(begin + 8, end - begin - 8);
  int n = 0;
  for (auto at = example.find("<witmqd --generate-token>"); at != std::string::npos;
       at = example.find("<witmqd --generate-token>")) {
    example.replace(at, 25, digest_of("token-" + std::to_string(n++)));
  }
  EXPECT_GE(n, 3);
  auto config = nlohmann::json::parse(example);
  EXPECT_FALSE(config["anonymous"]["enabled"].get<bool>());
  config["tls-cert-file"] = certs().pem("server");
  config["tls-key-file"] = certs().key("server");
  const std::string dir = make_temp_dir("hardened");
  config["data-dir"] = dir + "/data";
  const std::string path = dir + "/witmqd.json";
  std::ofstream(path) << config.dump(2);
  RunResult r = run_witmqd({"--config", path, "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace witmq::daemon::testing
