// The CloudEvents HTTP binding to a message (net/cloudevents.h), and base64 under it.
#include "net/cloudevents.h"

#include <gtest/gtest.h>

#include "common/base64.h"

namespace witmq::net {
namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

std::string meta(const Message& m, std::string_view key) {
  const std::string* v = find_metadata(m, key);
  return v ? *v : "<absent>";
}

std::string text(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

const Headers kRequired = {
    {"ce-specversion", "1.0"}, {"ce-id", "1"}, {"ce-source", "/s"}, {"ce-type", "t"}};

TEST(CloudEventsTest, BinaryModeMapsHeadersToAttributes) {
  Headers h = kRequired;
  h.emplace_back("ce-subject", "a%20b%2");
  h.emplace_back("content-type", "text/plain");
  h.emplace_back("x-other", "ignored");
  auto r = message_from_http(h, "body");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->mode, PublishMode::kBinary);
  EXPECT_EQ(r->message.format, Format::kCloudevents);
  EXPECT_EQ(text(r->message), "body");
  EXPECT_EQ(meta(r->message, "id"), "1");
  EXPECT_EQ(meta(r->message, "subject"), "a b%2");  // a broken escape is kept as it is
  EXPECT_EQ(meta(r->message, "datacontenttype"), "text/plain");
  EXPECT_EQ(meta(r->message, "x-other"), "<absent>");
}

TEST(CloudEventsTest, BinaryModeChecksTheRequiredAttributes) {
  for (const char* missing : {"ce-id", "ce-source", "ce-specversion", "ce-type"}) {
    Headers h;
    for (const auto& kv : kRequired) {
      if (kv.first != missing) h.push_back(kv);
    }
    auto r = message_from_http(h, "");
    ASSERT_FALSE(r) << missing;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(missing), std::string::npos) << r.error().message;
  }
  Headers old = kRequired;
  old[0].second = "0.3";
  auto r = message_from_http(old, "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("0.3"), std::string::npos);
  Headers bad = kRequired;
  bad.emplace_back("ce-Bad_Name", "x");
  EXPECT_FALSE(message_from_http(bad, ""));
}

// Metadata is UTF-8 on the wire: a header value that is not, as sent or once percent-decoded,
// is refused rather than stored in a message no TCP consumer could decode (found by
// fuzz/cloudevents_fuzzer; fuzz/corpus/cloudevents/regression-*).
TEST(CloudEventsTest, HeaderValuesThatAreNotUtf8AreRefused) {
  Headers h = kRequired;
  h.emplace_back("ce-subject", "caf\xc3\xa9 %E2%9C%93");
  auto r = message_from_http(h, "");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(meta(r->message, "subject"), "caf\xc3\xa9 \xe2\x9c\x93");

  for (const char* value : {"\xb7t", "%C3%28", "a%FF", "%ED%A0%80"}) {
    Headers bad = kRequired;
    bad.emplace_back("ce-subject", value);
    auto e = message_from_http(bad, "");
    ASSERT_FALSE(e) << value;
    EXPECT_EQ(e.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(e.error().message.find("header ce-subject"), std::string::npos) << e.error().message;
    EXPECT_NE(e.error().message.find("not valid UTF-8"), std::string::npos) << e.error().message;
  }
  for (bool binary : {false, true}) {
    Headers bad = binary ? kRequired : Headers{};
    bad.emplace_back("content-type", "text/plain; name=\xff");
    auto e = message_from_http(bad, "body");
    ASSERT_FALSE(e) << binary;
    EXPECT_NE(e.error().message.find("header content-type"), std::string::npos)
        << e.error().message;
  }
}

TEST(CloudEventsTest, StructuredMode) {
  const Headers h = {{"content-type", "application/cloudevents+json"}};
  auto r = message_from_http(
      h, R"({"specversion":"1.0","id":"e","source":"/s","type":"t","n":3,"flag":true,
             "gone":null,"data":{"k":"v"}})");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->mode, PublishMode::kStructured);
  EXPECT_EQ(r->message.format, Format::kCloudevents);
  EXPECT_EQ(text(r->message), R"({"k":"v"})");
  EXPECT_EQ(meta(r->message, "n"), "3");
  EXPECT_EQ(meta(r->message, "flag"), "true");
  EXPECT_EQ(meta(r->message, "gone"), "<absent>");

  r = message_from_http(
      h, R"({"specversion":"1.0","id":"e","source":"/s","type":"t","data_base64":"aGk="})");
  ASSERT_TRUE(r);
  EXPECT_EQ(text(r->message), "hi");
  r = message_from_http(h, R"({"specversion":"1.0","id":"e","source":"/s","type":"t",
                               "datacontenttype":"text/plain","data":"words"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(text(r->message), "words");

  for (const char* body :
       {"{", "[]", R"({"specversion":"1.0","source":"/s","type":"t"})",
        R"({"specversion":"1.0","id":"e","source":"/s","type":"t","data":1,"data_base64":"AA=="})",
        R"({"specversion":"1.0","id":"e","source":"/s","type":"t","data_base64":"%%"})",
        R"({"specversion":"1.0","id":"e","source":"/s","type":"t","obj":{}})"}) {
    auto bad = message_from_http(h, body);
    EXPECT_FALSE(bad) << body;
    if (!bad) {
      EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument) << body;
    }
  }
}

// Issue 19 items 3 and 10: what a structured event may not be.
TEST(CloudEventsTest, StructuredModeRefusesDuplicatesApproximationsAndDeepNesting) {
  const Headers h = {{"content-type", "application/cloudevents+json"}};
  auto dup =
      message_from_http(h, R"({"specversion":"1.0","id":"a","source":"/s","type":"t","id":"b"})");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("'id' is given twice"), std::string::npos)
      << dup.error().message;
  // Keys repeated inside data are data, not attributes.
  EXPECT_TRUE(message_from_http(
      h, R"({"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"k":1,"k":2}})"));
  auto numeric_id = message_from_http(
      h, R"({"specversion":"1.0","id":12345678901234567890123,"source":"/s","type":"t"})");
  ASSERT_FALSE(numeric_id);
  EXPECT_NE(numeric_id.error().message.find("'id' is a JSON number, expected a string"),
            std::string::npos)
      << numeric_id.error().message;
  auto fraction =
      message_from_http(h, R"({"specversion":"1.0","id":"a","source":"/s","type":"t","n":1.5})");
  ASSERT_FALSE(fraction);
  EXPECT_NE(fraction.error().message.find("'n'"), std::string::npos) << fraction.error().message;
  auto big = message_from_http(
      h, R"({"specversion":"1.0","id":"a","source":"/s","type":"t","n":18446744073709551615})");
  ASSERT_TRUE(big) << big.error().message;
  EXPECT_EQ(meta(big->message, "n"), "18446744073709551615");
  // 200 KB of nested arrays as data: refused while parsing, before anything recurses.
  const std::string deep = R"({"specversion":"1.0","id":"a","source":"/s","type":"t","data":)" +
                           std::string(100'000, '[') + std::string(100'000, ']') + "}";
  auto nested = message_from_http(h, deep);
  ASSERT_FALSE(nested);
  EXPECT_NE(nested.error().message.find("deeper than the limit"), std::string::npos)
      << nested.error().message;
}

TEST(CloudEventsTest, RawAndBatched) {
  auto r = message_from_http(Headers{{"content-type", "application/octet-stream"}}, "xyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->mode, PublishMode::kRaw);
  EXPECT_EQ(r->message.format, Format::kRaw);
  EXPECT_EQ(meta(r->message, "content-type"), "application/octet-stream");
  r = message_from_http(Headers{}, "");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->message.metadata);
  auto batch =
      message_from_http(Headers{{"content-type", "application/cloudevents-batch+json"}}, "[]");
  ASSERT_FALSE(batch);
  EXPECT_EQ(batch.error().code, ErrorCode::kUnsupported);
}

TEST(Base64Test, RoundTripsAndRefusesBadInput) {
  for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    std::vector<uint8_t> bytes(s.begin(), s.end());
    auto back = base64_decode(base64_encode(bytes));
    ASSERT_TRUE(back) << s;
    EXPECT_EQ(*back, bytes);
  }
  EXPECT_EQ(base64_encode(std::vector<uint8_t>{'f', 'o', 'o', 'b'}), "Zm9vYg==");
  for (const char* bad : {"Zm9", "Zm9v=", "Zg=a", "Z===", "Zm9v\n", "Zm=v"}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
  }
}

}  // namespace
}  // namespace witmq::net
