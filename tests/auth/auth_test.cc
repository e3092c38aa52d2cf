// The auth layer on its own: channel patterns, token digests, the identities config and the
// Authenticator's decisions, connection counting and reloads.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "auth/authenticator.h"
#include "auth/grants.h"
#include "auth/token.h"

namespace witmq::auth {
namespace {

using nlohmann::json;

ChannelPattern pattern(std::string_view text) {
  auto p = ChannelPattern::parse(text);
  EXPECT_TRUE(p.ok()) << text;
  return *p;
}

TEST(ChannelPatternTest, StarMatchesAnyRunOfCharacters) {
  EXPECT_TRUE(pattern("orders").matches("orders"));
  EXPECT_FALSE(pattern("orders").matches("orders.eu"));
  EXPECT_FALSE(pattern("orders").matches("order"));
  EXPECT_TRUE(pattern("orders.*").matches("orders.eu"));
  EXPECT_TRUE(pattern("orders.*").matches("orders.eu.dlq"));
  EXPECT_TRUE(pattern("orders.*").matches("orders."));
  EXPECT_FALSE(pattern("orders.*").matches("orders"));
  EXPECT_FALSE(pattern("orders.*").matches("billing.orders.eu"));
  EXPECT_TRUE(pattern("*.dlq").matches("orders.dlq"));
  EXPECT_FALSE(pattern("*.dlq").matches("orders.dlq.x"));
  EXPECT_TRUE(pattern("a*b*c").matches("aXXbYYc"));
  EXPECT_TRUE(pattern("a*b*c").matches("abc"));
  EXPECT_FALSE(pattern("a*b*c").matches("aXXcYYb"));
  EXPECT_TRUE(pattern("tenant/*/in").matches("tenant/42/in"));
  EXPECT_TRUE(pattern("*").matches("anything:at/all"));
  EXPECT_TRUE(pattern("*").matches_everything());
  EXPECT_FALSE(pattern("a*").matches_everything());
}

TEST(ChannelPatternTest, RefusesWhatNoChannelNameCouldMatch) {
  EXPECT_FALSE(ChannelPattern::parse("").ok());
  auto bad = ChannelPattern::parse("orders.#");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("'#' at position 7"), std::string::npos)
      << bad.error().message;
  EXPECT_FALSE(ChannelPattern::parse(std::string(201, 'a')).ok());
  EXPECT_FALSE(ChannelPattern::parse("a b").ok());
}

TEST(TokenTest, DigestIsSha256AndRoundTripsThroughHex) {
  // FIPS 180-2's test vector for "abc".
  EXPECT_EQ(to_hex(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto back = digest_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD");
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(digests_equal(*back, sha256("abc")));
  EXPECT_FALSE(digests_equal(*back, sha256("abd")));
  EXPECT_FALSE(digest_from_hex("abc").ok());
  auto bad = digest_from_hex(std::string(63, '0') + "g");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("position 63"), std::string::npos) << bad.error().message;
}

TEST(TokenTest, GeneratedTokensAreDistinctAndUrlSafe) {
  const std::string a = generate_token(), b = generate_token();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 6u + 43u);
  EXPECT_EQ(a.rfind("witmq_", 0), 0u);
  for (char c : a.substr(6)) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << a;
  }
}

const json kAnonymousOff = {{"enabled", false}};

json identity(const std::string& name, const std::string& token, json grants = json::object()) {
  json j = {{"name", name}, {"token-sha256", to_hex(sha256(token))}};
  for (auto& [k, v] : grants.items()) j[k] = v;
  return j;
}

AuthConfig config(const json& anonymous, const json& identities) {
  auto c = auth_config_from_json(anonymous, identities);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return c.ok() ? *c : AuthConfig{};
}

std::string config_error(const json& anonymous, const json& identities) {
  auto c = auth_config_from_json(anonymous, identities);
  return c.ok() ? std::string("(accepted)") : c.error().message;
}

TEST(AuthConfigTest, ErrorsNameTheEntryAndTheField) {
  EXPECT_EQ(config_error(json::object(), json::array()),
            "anonymous.enabled: is required, true or false: whether clients without a token are "
            "let in");
  EXPECT_EQ(config_error({{"enabled", true}, {"send", "orders"}}, json::array()),
            "anonymous.send: is string, expected an array of channel patterns");
  EXPECT_EQ(config_error({{"enabled", true}, {"bogus", 1}}, json::array()),
            "anonymous: unknown field 'bogus', expected one of enabled, send, receive, manage, "
            "monitor, max-connections");
  EXPECT_EQ(config_error(kAnonymousOff, json::array({{{"name", "x"}}})),
            "identities[0] ('x'): has neither token-sha256 nor certificate-cn: nothing could "
            "authenticate it");
  EXPECT_EQ(config_error(kAnonymousOff, json::array({{{"name", "x"}, {"token-sha256", "00"}}})),
            "identities[0] ('x').token-sha256: is 2 characters long, expected the 64 hex digits "
            "of a SHA-256 (witmqd --hash-token)");
  EXPECT_EQ(config_error(kAnonymousOff, {identity("a", "t1"), identity("a", "t2")}),
            "identities[1] ('a').name: a second identity has this name");
  EXPECT_EQ(config_error(kAnonymousOff, {identity("a", "t1"), identity("b", "t1")}),
            "identities[1] ('b').token-sha256: is also identity 'a''s: each token names one "
            "identity");
  EXPECT_EQ(config_error(kAnonymousOff,
                         json::array({identity("a", "t", {{"receive", {"ok", "bad name"}}})})),
            "identities[0] ('a').receive[1]: 'bad name' has ' ' at position 3: patterns use the "
            "characters of channel names (A-Z a-z 0-9 . _ - : /) and *");
  EXPECT_EQ(config_error(kAnonymousOff, json::array({identity("anonymous", "t")})),
            "identities[0] ('anonymous').name: 'anonymous' is reserved; the anonymous key "
            "configures it");
  EXPECT_EQ(config_error(kAnonymousOff, json::array({identity("a", "t", {{"max-connections", -1}})})),
            "identities[0] ('a').max-connections: -1 is not an integer in 0..1000000 (0 = only "
            "the server's limit)");
}

TEST(AuthenticatorTest, TokensPickTheIdentityAndNothingElseGetsIn) {
  Authenticator a(config(kAnonymousOff, {identity("orders-app", "secret-1"),
                                         identity("billing", "secret-2")}));
  auto ok = a.authenticate(std::string("secret-2"), std::nullopt, true);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ((*ok)->name(), "billing");
  EXPECT_FALSE((*ok)->anonymous());

  auto wrong = a.authenticate(std::string("secret-3"), std::nullopt, true);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, ErrorCode::kPermissionDenied);
  EXPECT_EQ(wrong.error().message.find("secret-3"), std::string::npos) << "never echo a token";

  auto none = a.authenticate(std::nullopt, std::nullopt, true);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message, "a token is required: anonymous access is off on this server");
}

TEST(AuthenticatorTest, AWrongTokenIsRefusedEvenWhenAnonymousIsOn) {
  Authenticator a(config({{"enabled", true}, {"send", {"*"}}}, json::array({identity("app", "right")})));
  EXPECT_FALSE(a.authenticate(std::string("wrong"), std::nullopt, true).ok());
  auto anon = a.authenticate(std::nullopt, std::nullopt, true);
  ASSERT_TRUE(anon.ok());
  EXPECT_TRUE((*anon)->anonymous());
  EXPECT_TRUE((*anon)->allows(Action::kSend, "x"));
  EXPECT_FALSE((*anon)->allows(Action::kReceive, "x"));
}

TEST(AuthenticatorTest, WithoutIdentitiesATokenIsIgnored) {
  Authenticator a(config({{"enabled", true}, {"send", {"*"}}}, json::array()));
  auto anon = a.authenticate(std::string("whatever"), std::nullopt, true);
  ASSERT_TRUE(anon.ok());
  EXPECT_TRUE((*anon)->anonymous());
}

TEST(AuthenticatorTest, ACertificateCnPicksItsIdentityWhenNoTokenIsGiven) {
  Authenticator a(config(
      kAnonymousOff,
      json::array({{{"name", "sensor"}, {"certificate-cn", "sensor-7"}, {"send", {"t"}}}})));
  auto ok = a.authenticate(std::nullopt, std::string("sensor-7"), true);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)->name(), "sensor");
  auto other = a.authenticate(std::nullopt, std::string("sensor-8"), true);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message.find("'sensor-8' names no identity"), std::string::npos);
}

TEST(AuthenticatorTest, GrantsAreDenyByDefaultAndErrorsSayWhatIsGranted) {
  Authenticator a(config(kAnonymousOff,
                         json::array({identity("app", "t",
                                               {{"send", {"orders.*"}},
                                                {"receive", {"orders.in", "audit"}}})})));
  auto access = std::move(*a.authenticate(std::string("t"), std::nullopt, true));
  EXPECT_TRUE(access->check(Action::kSend, "orders.eu").ok());
  EXPECT_TRUE(access->check(Action::kSend, "orders.eu").ok()) << "the cached answer too";
  EXPECT_TRUE(access->check(Action::kReceive, "audit").ok());
  auto denied = access->check(Action::kSend, "billing");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, ErrorCode::kPermissionDenied);
  EXPECT_EQ(denied.error().message,
            "identity 'app' may not send to channel 'billing' (its send grants: orders.*)");
  EXPECT_EQ(access->check(Action::kManage, "orders.eu").error().message,
            "identity 'app' may not manage channel 'orders.eu' (its manage grants: none)");
  EXPECT_FALSE(access->monitor());
  EXPECT_FALSE(access->check_monitor("/metrics").ok());
  EXPECT_TRUE(access->allows_any("audit"));
  EXPECT_FALSE(access->allows_any("billing"));
  EXPECT_FALSE(access->manages_everything());
}

TEST(AuthenticatorTest, MaxConnectionsCountsPerIdentityAndFreesOnClose) {
  Authenticator a(config(kAnonymousOff, {identity("small", "s", {{"max-connections", 2}}),
                                         identity("other", "o")}));
  auto one = a.authenticate(std::string("s"), std::nullopt, true);
  auto two = a.authenticate(std::string("s"), std::nullopt, true);
  ASSERT_TRUE(one.ok() && two.ok());
  auto three = a.authenticate(std::string("s"), std::nullopt, true);
  ASSERT_FALSE(three.ok());
  EXPECT_EQ(three.error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(three.error().message, "identity 'small' has 2 connections open, its max-connections");
  EXPECT_TRUE(a.authenticate(std::string("o"), std::nullopt, true).ok()) << "others unaffected";
  EXPECT_TRUE(a.authenticate(std::string("s"), std::nullopt, false).ok())
      << "uncounted (HTTP) requests do not take a connection";
  EXPECT_EQ(a.connections(), (std::vector<std::pair<std::string, uint32_t>>{{"small", 2}}));
  one->reset();
  EXPECT_TRUE(a.authenticate(std::string("s"), std::nullopt, true).ok());
}

TEST(AuthenticatorTest, AReloadChangesGrantsAndRevokesRemovedCredentials) {
  Authenticator a(config(kAnonymousOff, {identity("app", "t1", {{"send", {"a"}}}),
                                         identity("gone", "t2", {{"send", {"a"}}})}));
  auto app = std::move(*a.authenticate(std::string("t1"), std::nullopt, true));
  auto gone = std::move(*a.authenticate(std::string("t2"), std::nullopt, true));
  EXPECT_TRUE(app->allows(Action::kSend, "a"));
  EXPECT_FALSE(app->allows(Action::kSend, "b"));

  a.replace(config(kAnonymousOff, json::array({identity("app", "t1", {{"send", {"b"}}})})));
  EXPECT_FALSE(app->allows(Action::kSend, "a")) << "a grant taken away applies at once";
  EXPECT_TRUE(app->allows(Action::kSend, "b"));
  EXPECT_FALSE(app->revoked());
  EXPECT_TRUE(gone->revoked());
  EXPECT_NE(gone->check(Action::kSend, "a").error().message.find("removed or its credential"),
            std::string::npos);

  // Same name, new token: the old token's connection is revoked.
  a.replace(config(kAnonymousOff, json::array({identity("app", "t3", {{"send", {"b"}}})})));
  EXPECT_TRUE(app->revoked());
  EXPECT_TRUE(a.authenticate(std::string("t3"), std::nullopt, true).ok());
  EXPECT_FALSE(a.authenticate(std::string("t1"), std::nullopt, true).ok());
}

}  // namespace
}  // namespace witmq::auth
