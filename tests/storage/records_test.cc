#include "storage/records.h"

#include <gtest/gtest.h>

#include <string>

#include "storage/codec.h"

namespace witmq::storage {
namespace {

const std::string kKey = message_key(3, 17);

// Asserts that `r` failed with kCorruption, naming the key and saying `what`.
template <typename T>
void expect_corruption(const Result<T>& r, std::string_view key_name, std::string_view what) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCorruption) << r.error().to_string();
  EXPECT_NE(r.error().message.find(key_name), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(what), std::string::npos) << r.error().message;
}

Message sample(Format f, std::vector<uint8_t> data, std::optional<Metadata> md) {
  Message m;
  m.format = f;
  m.data = std::move(data);
  m.metadata = std::move(md);
  return m;
}

TEST(MessageCodec, RoundTripsEveryFormatWithAndWithoutMetadata) {
  for (uint8_t f = 0; f < kFormatCount; ++f) {
    for (bool with_md : {false, true}) {
      std::optional<Metadata> md;
      if (with_md)
        md = Metadata{{"k", "v"}, {"", ""}, {"dup", "1"}, {"dup", std::string(300, 'x')}};
      Message m = sample(static_cast<Format>(f), {1, 2, 3, 0, 255}, md);
      auto decoded = decode_message(kKey, encode_message(-42, m));
      ASSERT_TRUE(decoded.ok()) << decoded.error().to_string();
      EXPECT_EQ(decoded->seq, 17u);
      EXPECT_EQ(decoded->publish_time_ms, -42);
      EXPECT_EQ(decoded->message, m) << "format " << int(f) << " metadata " << with_md;
    }
  }
}

TEST(MessageCodec, RoundTripsEmptyDataAndEmptyMetadata) {
  Message empty = sample(Format::kRaw, {}, std::nullopt);
  auto d1 = decode_message(kKey, encode_message(1'700'000'000'000, empty));
  ASSERT_TRUE(d1.ok());
  EXPECT_EQ(d1->message, empty);
  EXPECT_EQ(d1->publish_time_ms, 1'700'000'000'000);

  // An empty metadata list is not the same as no metadata, and the codec keeps the difference.
  Message empty_md = sample(Format::kKafka, {}, Metadata{});
  auto d2 = decode_message(kKey, encode_message(0, empty_md));
  ASSERT_TRUE(d2.ok());
  ASSERT_TRUE(d2->message.metadata.has_value());
  EXPECT_TRUE(d2->message.metadata->empty());
}

TEST(MessageCodec, AppendMatchesEncode) {
  Message m = sample(Format::kHttp, {9, 8, 7}, Metadata{{"a", "b"}});
  std::string out = "prefix";
  append_message(out, 5, m);
  EXPECT_EQ(out, "prefix" + encode_message(5, m));
}

TEST(MessageCodec, EveryTruncationIsCorruption) {
  std::string v = encode_message(7, sample(Format::kMqtt, {1, 2, 3, 4}, Metadata{{"key", "val"}}));
  for (size_t n = 0; n < v.size(); ++n) {
    auto r = decode_message(kKey, std::string_view(v).substr(0, n));
    SCOPED_TRACE(n);
    expect_corruption(r, "messages/ch=3/seq=17", n == 0 ? "truncated" : "");
  }
}

TEST(MessageCodec, TrailingBytesAreCorruption) {
  std::string v = encode_message(7, sample(Format::kRaw, {1}, std::nullopt)) + "x";
  expect_corruption(decode_message(kKey, v), "messages/ch=3/seq=17", "unexpected bytes");
}

TEST(MessageCodec, BadVersionIsCorruption) {
  std::string v = encode_message(7, sample(Format::kRaw, {1}, std::nullopt));
  v[0] = 2;
  expect_corruption(decode_message(kKey, v), "messages/ch=3/seq=17", "version is 2");
}

TEST(MessageCodec, BadFormatIsCorruption) {
  std::string v = encode_message(7, sample(Format::kRaw, {1}, std::nullopt));
  v[9] = static_cast<char>(kFormatCount);  // after version (1) and publish time (8)
  expect_corruption(decode_message(kKey, v), "messages/ch=3/seq=17", "format is 6");
}

TEST(MessageCodec, BadMetadataFlagIsCorruption) {
  std::string v = encode_message(7, sample(Format::kRaw, {1}, std::nullopt));
  v[10] = 2;
  expect_corruption(decode_message(kKey, v), "messages/ch=3/seq=17", "metadata flag is 2");
}

TEST(MessageCodec, LengthsThatLieAreCorruption) {
  // Layout: version 1 | time 8 | format 1 | flag 1 | count 4 | klen 4 "key" | vlen 4 "val" |
  // dlen 4 data.
  const std::string v =
      encode_message(7, sample(Format::kRaw, {1, 2, 3, 4}, Metadata{{"key", "val"}}));
  auto with_u32 = [&](size_t at, uint32_t x) {
    std::string c = v;
    for (int i = 0; i < 4; ++i) c[at + i] = static_cast<char>(x >> (8 * i));
    return c;
  };
  // A count far larger than the value could hold: must fail, not allocate or read past the end.
  expect_corruption(decode_message(kKey, with_u32(11, 0xffffffff)), "messages/ch=3/seq=17",
                    "metadata value 1 length");
  expect_corruption(decode_message(kKey, with_u32(15, 1000)), "messages/ch=3/seq=17",
                    "metadata key 0 claims 1000 bytes");
  expect_corruption(decode_message(kKey, with_u32(22, 0xfffffff0)), "messages/ch=3/seq=17",
                    "metadata value 0 claims");
  expect_corruption(decode_message(kKey, with_u32(29, 5)), "messages/ch=3/seq=17",
                    "data claims 5 bytes");
  // Shorter than the truth leaves bytes over.
  expect_corruption(decode_message(kKey, with_u32(29, 3)), "messages/ch=3/seq=17",
                    "unexpected bytes");
}

TEST(MessageCodec, MalformedKeyIsCorruption) {
  std::string v = encode_message(7, sample(Format::kRaw, {1}, std::nullopt));
  expect_corruption(decode_message("abc", v), "messages/0x616263", "key is 3 bytes");
}

TEST(DeliveryCodec, RoundTripsEveryStatus) {
  for (auto st : {DeliveryStatus::kAcquired, DeliveryStatus::kReady, DeliveryStatus::kAccepted}) {
    DeliveryRecord rec{st, 4'000'000'000u, -5};
    auto d = decode_delivery(delivery_key(9, 1), encode_delivery(rec));
    ASSERT_TRUE(d.ok()) << d.error().to_string();
    EXPECT_EQ(d->status, st);
    EXPECT_EQ(d->attempts, 4'000'000'000u);
    EXPECT_EQ(d->not_before_ms, -5);
  }
}

TEST(DeliveryCodec, CorruptionCases) {
  const std::string key = delivery_key(9, 1);
  const std::string v = encode_delivery({DeliveryStatus::kReady, 2, 100});
  for (size_t n = 0; n < v.size(); ++n) {
    SCOPED_TRACE(n);
    expect_corruption(decode_delivery(key, std::string_view(v).substr(0, n)),
                      "delivery/sub=9/seq=1", "truncated");
  }
  expect_corruption(decode_delivery(key, v + "z"), "delivery/sub=9/seq=1", "unexpected bytes");
  std::string bad = v;
  bad[0] = 0;
  expect_corruption(decode_delivery(key, bad), "delivery/sub=9/seq=1", "version is 0");
  for (char status : {0, 4, -1}) {
    bad = v;
    bad[1] = status;
    expect_corruption(decode_delivery(key, bad), "delivery/sub=9/seq=1", "delivery status is");
  }
}

TEST(MetaCodec, RoundTrips) {
  ChannelRecord ch{7, "orders", R"({"kind":"queue"})"};
  auto c = decode_channel(meta_key(kChannelTag, 7), encode_channel(ch));
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->id, 7u);
  EXPECT_EQ(c->name, "orders");
  EXPECT_EQ(c->config, ch.config);

  SubscriptionRecord sub{8, 7, "", ""};
  auto s = decode_subscription(meta_key(kSubscriptionTag, 8), encode_subscription(sub));
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->id, 8u);
  EXPECT_EQ(s->channel, 7u);
  EXPECT_EQ(s->name, "");

  auto k = decode_cursor(meta_key(kCursorTag, 8), encode_cursor({3, UINT64_MAX}));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->floor, 3u);
  EXPECT_EQ(k->next, UINT64_MAX);

  auto h = decode_head(meta_key(kHeadTag, 7), encode_head({10, 20}));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->first, 10u);
  EXPECT_EQ(h->next, 20u);
}

TEST(MetaCodec, CorruptionCases) {
  const std::string ckey = meta_key(kChannelTag, 7);
  const std::string cv = encode_channel({7, "orders", "{}"});
  for (size_t n = 0; n < cv.size(); ++n) {
    SCOPED_TRACE(n);
    expect_corruption(decode_channel(ckey, std::string_view(cv).substr(0, n)), "meta/channel=7",
                      "");
  }
  std::string lie = cv;
  lie[1] = 100;  // name length
  expect_corruption(decode_channel(ckey, lie), "meta/channel=7", "name claims 100 bytes");
  expect_corruption(decode_channel(meta_key(kHeadTag, 7), cv), "meta/head=7", "not a channel key");

  const std::string skey = meta_key(kSubscriptionTag, 8);
  std::string sv = encode_subscription({8, 7, "s", "{}"});
  sv[0] = 9;
  expect_corruption(decode_subscription(skey, sv), "meta/subscription=8", "version is 9");

  const std::string kkey = meta_key(kCursorTag, 8);
  expect_corruption(decode_cursor(kkey, encode_cursor({1, 2}).substr(0, 12)), "meta/cursor=8",
                    "truncated reading next");
  expect_corruption(decode_head(meta_key(kHeadTag, 7), encode_head({1, 2}) + "!"), "meta/head=7",
                    "unexpected bytes");
}

TEST(Keys, BigEndianSoBytewiseOrderIsNumericOrder) {
  EXPECT_LT(message_key(1, 255), message_key(1, 256));
  EXPECT_LT(message_key(1, UINT64_MAX), message_key(2, 0));
  EXPECT_LT(message_key(1, UINT64_MAX), log_key_end(1));
  EXPECT_LT(log_key_end(1), message_key(2, 0));
  EXPECT_LT(message_key(UINT32_MAX, UINT64_MAX), log_key_end(UINT32_MAX));
  EXPECT_EQ(message_key(0x01020304, 0x05), std::string("\x01\x02\x03\x04\0\0\0\0\0\0\0\x05", 12));
  auto parsed = parse_log_key(delivery_key(77, 1234));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->first, 77u);
  EXPECT_EQ(parsed->second, 1234u);
  EXPECT_FALSE(parse_log_key("short"));
}

TEST(Keys, DescribeKey) {
  EXPECT_EQ(describe_key("messages", message_key(3, 17)), "messages/ch=3/seq=17");
  EXPECT_EQ(describe_key("delivery", delivery_key(4, 18)), "delivery/sub=4/seq=18");
  EXPECT_EQ(describe_key("meta", meta_key(kChannelTag, 5)), "meta/channel=5");
  EXPECT_EQ(describe_key("meta", meta_key(kSubscriptionTag, 6)), "meta/subscription=6");
  EXPECT_EQ(describe_key("meta", meta_key(kCursorTag, 6)), "meta/cursor=6");
  EXPECT_EQ(describe_key("meta", meta_key(kHeadTag, 5)), "meta/head=5");
  EXPECT_EQ(describe_key("meta", "Zabcd"), "meta/0x5a61626364");
  EXPECT_EQ(describe_key("messages", std::string(40, '\x01')).size(),
            std::string("messages/0x").size() + 64 + 3);
}

TEST(Durability, NamesRoundTrip) {
  for (auto d : {Durability::kSync, Durability::kGroup, Durability::kNone}) {
    auto parsed = parse_durability(durability_name(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  auto bad = parse_durability("fsync");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().message.find("'fsync'"), std::string::npos);
}

}  // namespace
}  // namespace witmq::storage
