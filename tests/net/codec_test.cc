#include "net/codec.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "net/corpus.h"
#include "net/frames.h"
#include "net/utf8.h"

namespace witmq::net {
namespace {

using testing::Bytes;
using testing::CodecExpect;
using testing::encoded;
using testing::raw_frame;

Side side_for(const Frame& f) { return is_request_type(f.type()) ? Side::kServer : Side::kClient; }

std::string hex(std::span<const uint8_t> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i) s += ' ';
    s += kDigits[b[i] >> 4];
    s += kDigits[b[i] & 15];
  }
  return s;
}

std::vector<uint8_t> unhex(std::string_view s) {
  std::vector<uint8_t> out;
  int hi = -1;
  for (char c : s) {
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else {
      continue;
    }
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<uint8_t>(hi << 4 | v));
      hi = -1;
    }
  }
  return out;
}

// Both return copies: callers often pass a temporary DecodeResult.
DecodeError expect_error(const DecodeResult& r) {
  if (!std::holds_alternative<DecodeError>(r)) {
    ADD_FAILURE() << "expected a DecodeError, got variant index " << r.index();
    return {};
  }
  return std::get<DecodeError>(r);
}

Frame expect_frame(const DecodeResult& r) {
  if (const auto* e = std::get_if<DecodeError>(&r)) {
    ADD_FAILURE() << "expected a frame, got error: " << e->error.to_string();
    return {};
  }
  if (!std::holds_alternative<Decoded>(r)) {
    ADD_FAILURE() << "expected a frame, got NeedMore " << std::get<NeedMore>(r).bytes;
    return {};
  }
  return std::get<Decoded>(r).frame;
}

DecodeResult decode_server(std::span<const uint8_t> b, const Limits& limits = {}) {
  return decode_frame(b, Side::kServer, limits);
}

// ---- round trips -------------------------------------------------------------------------------

TEST(CodecTest, EveryFrameTypeRoundTrips) {
  std::set<FrameType> seen;
  for (const Frame& f : testing::sample_frames()) {
    SCOPED_TRACE(std::string(frame_type_name(f.type())));
    Buffer buf;
    const size_t n = encode(buf, f);
    ASSERT_EQ(n, buf.size());
    ASSERT_GE(n, kHeaderBytes);
    EXPECT_EQ(buf[4], static_cast<uint8_t>(f.type()));
    DecodeResult r = decode_frame(buf, side_for(f), Limits{});
    ASSERT_TRUE(std::holds_alternative<Decoded>(r)) << hex(buf);
    EXPECT_EQ(std::get<Decoded>(r).frame_bytes, n);
    EXPECT_EQ(std::get<Decoded>(r).frame, f);
    seen.insert(f.type());
  }
  // Every frame type of the protocol is covered by the samples.
  for (int code = 0; code < 256; ++code) {
    if (is_known_frame_type(static_cast<uint8_t>(code))) {
      EXPECT_TRUE(seen.count(static_cast<FrameType>(code)))
          << "no sample of " << frame_type_name(static_cast<FrameType>(code));
    }
  }
}

TEST(CodecTest, FramesInOneBufferDecodeOneAfterAnother) {
  std::vector<Frame> requests;
  Buffer buf;
  for (const Frame& f : testing::sample_frames()) {
    if (side_for(f) != Side::kServer) continue;
    requests.push_back(f);
    encode(buf, f);
  }
  std::span<const uint8_t> rest(buf);
  for (const Frame& want : requests) {
    DecodeResult r = decode_server(rest);
    ASSERT_TRUE(std::holds_alternative<Decoded>(r));
    EXPECT_EQ(std::get<Decoded>(r).frame, want);
    rest = rest.subspan(std::get<Decoded>(r).frame_bytes);
  }
  EXPECT_TRUE(rest.empty());
}

TEST(CodecTest, EncodeAppendsToWhatIsInTheBuffer) {
  Buffer buf = {0xAA, 0xBB};
  const size_t n = encode(buf, 9, StreamStop{});
  EXPECT_EQ(n, kHeaderBytes);
  EXPECT_EQ(hex(buf), "aa bb 00 00 00 06 0a 00 00 00 00 09");
}

TEST(CodecTest, SpanEncodersMatchTheStructEncoders) {
  std::vector<Message> ms = {testing::sample_message("a", Format::kHttp, Metadata{{"k", "v"}}),
                             testing::sample_message("", Format::kRaw)};
  Buffer a, b;
  encode_deliver(a, 5, "orders", ms);
  encode(b, 5, Deliver{"orders", ms});
  EXPECT_EQ(a, b);
  a.clear(), b.clear();
  encode_receive_ok(a, 6, ms);
  encode(b, 6, SubscribeReceiveOk{ms});
  EXPECT_EQ(a, b);
  a.clear(), b.clear();
  encode_try_receive_ok(a, 7, nullptr);
  encode(b, 7, SubscribeTryReceiveOk{std::nullopt});
  EXPECT_EQ(a, b);
  a.clear(), b.clear();
  encode_send(a, 8, "orders", ms);
  encode(b, 8, Send{"orders", ms});
  EXPECT_EQ(a, b);

  size_t predicted = message_frame_overhead("orders");
  for (const Message& m : ms) predicted += message_wire_size(m);
  a.clear();
  EXPECT_EQ(encode_deliver(a, 5, "orders", ms), predicted);
}

// ---- truncation --------------------------------------------------------------------------------

// A stream's deliver frames are encoded from the stored message and the reserved entries
// (MessageParts): the bytes must be those of the combined messages.
TEST(CodecTest, DeliverFromPartsMatchesTheCombinedMessages) {
  using Entry = std::pair<std::string_view, std::string_view>;
  const std::vector<Entry> reserved = {{"witmq-id", "orders/7"}, {"witmq-sequence", "7"}};
  Message plain;
  plain.data = {1, 2, 3};
  Message with_md = plain;
  with_md.format = Format::kCloudevents;
  with_md.metadata = Metadata{{"k", "v"}};
  Message empty_md = plain;
  empty_md.metadata = Metadata{};
  const std::vector<MessageParts> parts = {
      {&plain, reserved}, {&with_md, reserved}, {&plain, {}}, {&empty_md, {}}, {&with_md, {}}};
  std::vector<Message> combined;
  for (const auto& p : parts) {
    Message m = *p.message;
    if (!p.extra.empty()) {
      if (!m.metadata) m.metadata = Metadata{};
      for (const auto& [k, v] : p.extra) m.metadata->emplace_back(k, v);
    }
    combined.push_back(std::move(m));
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    EXPECT_EQ(message_wire_size(parts[i]), message_wire_size(combined[i])) << i;
  }
  Buffer a, b;
  const size_t n = encode_deliver_parts(a, 5, "orders", parts);
  EXPECT_EQ(n, encode_deliver(b, 5, "orders", combined));
  EXPECT_EQ(a, b);
}

TEST(CodecTest, DeliveredMetadataDecodesAsSent) {
  // Keys and values of every short length, ASCII and not, empty ones and a value holding a NUL,
  // the reserved entries after the user's: each pair must come back as it was, in order.
  Message m;
  m.data = {9, 8, 7};
  m.format = Format::kRaw;
  Metadata md;
  for (size_t len = 0; len < 20; ++len) {
    md.emplace_back(fmt::format("k{}", std::string(len, 'x')), std::string(len, 'v'));
  }
  md.emplace_back("ünïcödé", "€ and 𝄞 and é");
  md.emplace_back("", "");
  md.emplace_back("nul", std::string("a\0b", 3));
  md.emplace_back("witmq-id", "orders/123456789");
  md.emplace_back("witmq-published-at", "1765000000000");
  m.metadata = md;
  Message none = m;
  none.metadata.reset();
  Message empty = m;
  empty.metadata = Metadata{};
  const std::vector<Message> sent = {m, none, empty};
  Buffer b;
  encode_deliver(b, 3, "orders", sent);
  Limits limits;
  limits.max_metadata_entries = 64;
  DecodeResult r = decode_frame(b, Side::kClient, limits);
  auto* d = std::get_if<Decoded>(&r);
  ASSERT_NE(d, nullptr);
  const auto& got = std::get<Deliver>(d->frame.body);
  EXPECT_EQ(got.channel, "orders");
  ASSERT_EQ(got.messages.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(got.messages[i].data, sent[i].data) << i;
    EXPECT_EQ(got.messages[i].format, sent[i].format) << i;
    EXPECT_EQ(got.messages[i].metadata, sent[i].metadata) << i;
  }
}

TEST(CodecTest, EveryPrefixOfAValidFrameNeedsMore) {
  for (const Frame& f : testing::sample_frames()) {
    SCOPED_TRACE(std::string(frame_type_name(f.type())));
    const std::vector<uint8_t> bytes = encoded(f);
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      DecodeResult r = decode_frame(std::span(bytes).first(cut), side_for(f), Limits{});
      ASSERT_TRUE(std::holds_alternative<NeedMore>(r)) << "cut at " << cut;
      const size_t want = cut < kLengthFieldBytes ? kLengthFieldBytes - cut : bytes.size() - cut;
      EXPECT_EQ(std::get<NeedMore>(r).bytes, want) << "cut at " << cut;
    }
  }
}

// ---- the malformed corpus ----------------------------------------------------------------------

TEST(CodecTest, MalformedCorpus) {
  for (const testing::MalformedCase& c : testing::malformed_corpus()) {
    SCOPED_TRACE(c.name);
    DecodeResult r = decode_server(c.bytes);
    switch (c.codec) {
      case CodecExpect::kNeedMore:
        EXPECT_TRUE(std::holds_alternative<NeedMore>(r));
        break;
      case CodecExpect::kDecodes:
        expect_frame(r);
        break;
      case CodecExpect::kError: {
        const DecodeError e = expect_error(r);
        EXPECT_FALSE(e.close_connection);
        EXPECT_EQ(e.error.code, c.code) << e.error.message;
        EXPECT_EQ(e.request_id, c.request_id);
        EXPECT_EQ(e.frame_bytes, c.bytes.size());
        EXPECT_EQ(e.type, c.bytes[4]);
        EXPECT_FALSE(e.error.message.empty());
        break;
      }
      case CodecExpect::kFatal: {
        const DecodeError e = expect_error(r);
        EXPECT_TRUE(e.close_connection);
        EXPECT_EQ(e.error.code, c.code) << e.error.message;
        EXPECT_EQ(e.request_id, 0u);
        break;
      }
    }
  }
}

TEST(CodecTest, CorpusFollowsTheLimitsItIsBuiltFor) {
  Limits small;
  small.max_frame_bytes = 4096;
  small.max_batch_messages = 3;
  small.max_message_bytes = 10;
  small.max_metadata_entries = 2;
  small.max_metadata_bytes = 20;
  small.max_config_channels = 2;
  for (const testing::MalformedCase& c : testing::malformed_corpus(small)) {
    SCOPED_TRACE(c.name);
    DecodeResult r = decode_server(c.bytes, small);
    if (c.codec == CodecExpect::kError || c.codec == CodecExpect::kFatal) {
      EXPECT_EQ(expect_error(r).error.code, c.code);
    }
  }
}

// ---- error messages name the frame, the field, the value ---------------------------------------

std::string error_message(const std::vector<uint8_t>& bytes, const Limits& limits = {}) {
  return expect_error(decode_server(bytes, limits)).error.message;
}

TEST(CodecTest, ErrorsNameTheFieldAndTheValue) {
  Bytes one_message;
  one_message.str("orders").u32(1).str("d").u8(6).u8(0);
  EXPECT_EQ(error_message(raw_frame(0x02, 1, one_message)),
            "send: messages[0].format: 6 is not a format-spec case (0 cloudevents, 1 http, "
            "2 amqp, 3 mqtt, 4 kafka, 5 raw)");

  Bytes bad_key;
  bad_key.str("orders").u32(2).str("").u8(5).u8(0).str("").u8(5).u8(1).u32(2).str("a").str("b");
  bad_key.str("k\xff").str("v");
  EXPECT_EQ(error_message(raw_frame(0x02, 1, bad_key)),
            "send: messages[1].metadata[1].key: not valid UTF-8 (byte 0xff at offset 1 of 2)");

  EXPECT_EQ(error_message(raw_frame(0x04, 1, Bytes().str("a\xc3"))),
            "subscribe-receive: channel: not valid UTF-8 (byte 0xc3 at offset 1 of 2)");
  EXPECT_EQ(error_message(raw_frame(0x04, 1, Bytes().str("a b"))),
            "subscribe-receive: channel: byte 1 (0x20) of the name is not one of A-Z a-z 0-9 . _ "
            "- : /");
  EXPECT_EQ(error_message(raw_frame(0x05, 1, Bytes().u32(2).str("ok").str("").u8(0))),
            "update-guest-configuration: channels[1]: channel: the name is empty");
  EXPECT_EQ(error_message(raw_frame(0x02, 1, Bytes().str("q").u32(1000).u32(0).u8(5).u8(0))),
            "send: messages: count 1000 needs at least 6000 bytes, 6 are left in the frame");
  EXPECT_EQ(error_message(raw_frame(0x06, 1, Bytes().u32(9).raw("abc"))),
            "complete-message: message.data: length 9 exceeds the 3 bytes left in the frame");
  EXPECT_EQ(error_message(raw_frame(0x06, 1, Bytes().str("").u8(0).u8(3))),
            "complete-message: message.metadata: option tag 3, expected 0 (none) or 1 (some)");
  EXPECT_EQ(error_message(raw_frame(0x03, 1, Bytes().str("q").u16(0))),
            "subscribe-try-receive: timeout-ms: needs 4 bytes, 2 are left in the frame");
  EXPECT_EQ(error_message(raw_frame(0x0A, 1, Bytes().u8(0).u8(0))),
            "stream-stop: 2 bytes after the last field, expected none");
  EXPECT_EQ(error_message(raw_frame(0x02, 1, one_message, 0x80)),
            "send: flags 0x80, expected 0x00 (version 1 defines none)");
  EXPECT_EQ(error_message(raw_frame(0x55, 1, Bytes())), "frame type 0x55 is unknown");
  EXPECT_EQ(error_message(raw_frame(0xFF, 1, Bytes())),
            "frame type 0xff (error) is not one a server accepts");
  EXPECT_EQ(error_message(Bytes().u32(20'000'000).bytes()),
            "frame length 20000000 exceeds the limit of 16777216 bytes");
  EXPECT_EQ(error_message(Bytes().u32(2).bytes()),
            "frame length 2 is less than the 6 bytes of type, flags and request id");

  Limits small;
  small.max_batch_messages = 1;
  small.max_metadata_entries = 1;
  small.max_metadata_bytes = 3;
  small.max_message_bytes = 2;
  EXPECT_EQ(
      error_message(
          raw_frame(0x02, 1, Bytes().str("q").u32(2).u32(0).u8(5).u8(0).u32(0).u8(5).u8(0)), small),
      "send: messages: 2 messages, the limit is 1");
  EXPECT_EQ(
      error_message(raw_frame(0x02, 1, Bytes().str("q").u32(1).str("abc").u8(5).u8(0)), small),
      "send: messages[0].data: 3 bytes, the limit is 2");
  EXPECT_EQ(
      error_message(
          raw_frame(
              0x02, 1,
              Bytes().str("q").u32(1).str("").u8(5).u8(1).u32(2).str("a").str("").str("b").str("")),
          small),
      "send: messages[0].metadata: 2 entries, the limit is 1");
  EXPECT_EQ(error_message(
                raw_frame(0x02, 1,
                          Bytes().str("q").u32(1).str("").u8(5).u8(1).u32(1).str("ab").str("cd")),
                small),
            "send: messages[0].metadata: 4 bytes of keys and values, the limit is 3");
}

TEST(CodecTest, ReservedMetadataHasItsOwnAllowance) {
  Limits small;
  small.max_metadata_entries = 1;
  small.max_metadata_bytes = 2;
  Message m = testing::sample_message("", Format::kRaw,
                                      Metadata{{"a", "b"},
                                               {std::string(meta::kReceipt), "receipt-token"},
                                               {std::string(meta::kAttempt), "3"}});
  Buffer buf;
  encode(buf, 1, CompleteMessage{m});
  expect_frame(decode_server(buf, small));

  Metadata many;
  for (uint32_t i = 0; i <= kMaxReservedEntries; ++i) {
    std::string key(kReservedPrefix);
    key += std::to_string(i);
    many.emplace_back(std::move(key), "");
  }
  buf.clear();
  encode(buf, 1, CompleteMessage{testing::sample_message("", Format::kRaw, many)});
  EXPECT_EQ(expect_error(decode_server(buf)).error.message,
            "complete-message: message.metadata: 33 witmq- entries, the limit is 32");

  buf.clear();
  encode(buf, 1,
         CompleteMessage{testing::sample_message(
             "", Format::kRaw, Metadata{{"witmq-x", std::string(kMaxReservedBytes, 'r')}})});
  EXPECT_EQ(expect_error(decode_server(buf)).error.code, ErrorCode::kResourceExhausted);
}

// ---- sides and limits --------------------------------------------------------------------------

// Lengths are checked before the bytes they announce are copied or validated: a long field that
// is also ill-formed is refused for its length.
TEST(CodecTest, LengthsAreCheckedBeforeTheBytesAreCopied) {
  const std::string long_bad(300, '\xff');
  EXPECT_EQ(error_message(raw_frame(0x04, 1, Bytes().str(long_bad))),
            "subscribe-receive: channel: the name is 300 bytes long, the limit is 200");
  EXPECT_EQ(error_message(raw_frame(0x01, 1, Bytes().u32(1).u16(1).str(long_bad).u8(0))),
            "connect: name: 300 bytes, the limit is 200");
  const std::string long_token(kMaxTokenBytes + 1, 't');
  EXPECT_EQ(
      error_message(raw_frame(0x01, 1, Bytes().u32(1).u16(1).str("").u8(1).str(long_token))),
      fmt::format("connect: token: {} bytes, the limit is {}", kMaxTokenBytes + 1, kMaxTokenBytes));
  Limits small;
  small.max_metadata_bytes = 3;
  // The second value would pass the allowance: refused before it is read (it is not UTF-8).
  EXPECT_EQ(
      error_message(
          raw_frame(
              0x02, 1,
              Bytes().str("q").u32(1).str("").u8(5).u8(1).u32(2).str("a").str("").str("b").str(
                  "\xff\xff")),
          small),
      "send: messages[0].metadata: 4 bytes of keys and values, the limit is 3");
  const std::string huge_key(size_t{small.max_metadata_bytes} + kMaxReservedBytes + 1, '\xff');
  EXPECT_EQ(error_message(
                raw_frame(0x02, 1,
                          Bytes().str("q").u32(1).str("").u8(5).u8(1).u32(1).str(huge_key).str("")),
                small),
            fmt::format("send: messages[0].metadata[0].key: {} bytes, the limit is 3 (plus {} for "
                        "witmq- keys)",
                        huge_key.size(), kMaxReservedBytes));
}

// Error texts quote what clients sent, cut to a length: what goes on the wire is UTF-8 whatever
// the text holds (section 3), so a client that checks it can read every error.
TEST(CodecTest, ErrorTextsAreSentAsValidUtf8) {
  // "é" is c3 a9: cut after its first byte, then a stray continuation byte and an invalid lead.
  const std::string cut = std::string("client name 'caf\xc3") + "' \x80 \xff end";
  Buffer buf;
  encode_error(buf, 7, FrameType::kError, Error(ErrorCode::kInvalidArgument, cut));
  const Frame f = expect_frame(decode_frame(buf, Side::kClient, Limits{}));
  const auto* e = std::get_if<ErrorReply>(&f.body);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->error.message, "client name 'caf\xef\xbf\xbd' \xef\xbf\xbd \xef\xbf\xbd end");
  // Valid text goes out unchanged.
  buf.clear();
  encode_error(buf, 7, FrameType::kGoaway, Error(ErrorCode::kInvalidArgument, "café"));
  EXPECT_EQ(
      std::get<Goaway>(expect_frame(decode_frame(buf, Side::kClient, Limits{})).body).error.message,
      "café");
  EXPECT_EQ(to_valid_utf8("ab\xe2\x82"), "ab\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(CodecTest, EachSideRefusesTheOthersFrames) {
  Buffer req, rep;
  encode(req, 1, Ping{1});
  encode(rep, 1, Pong{1});
  EXPECT_EQ(expect_error(decode_frame(req, Side::kClient, {})).error.message,
            "frame type 0x0b (ping) is not one a client accepts");
  EXPECT_EQ(expect_error(decode_frame(rep, Side::kServer, {})).error.code, ErrorCode::kUnsupported);
  expect_frame(decode_frame(req, Side::kServer, {}));
  expect_frame(decode_frame(rep, Side::kClient, {}));
}

TEST(CodecTest, ClientAppliesItsLimitsToDeliveries) {
  Limits client;
  client.max_batch_messages = 2;
  std::vector<Message> three(3, testing::sample_message("x", Format::kRaw));
  Buffer buf;
  encode_deliver(buf, 4, "orders", three);
  const DecodeError e = expect_error(decode_frame(buf, Side::kClient, client));
  EXPECT_EQ(e.error.code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(e.request_id, 4u);
}

TEST(CodecTest, ClientLimitsFollowTheAnnouncement) {
  ServerLimits announced;
  announced.max_frame_bytes = 1000;
  announced.max_send_messages = 7;
  announced.max_receive_messages = 5;
  announced.max_message_bytes = 0;
  const Limits l = client_limits(announced);
  EXPECT_EQ(l.max_frame_bytes, 1000u);
  EXPECT_EQ(l.max_batch_messages, 5u);
  EXPECT_EQ(l.max_message_bytes, 0xFFFFFFFFu);
}

TEST(CodecTest, OversizedLengthIsFatalBeforeTheBodyArrives) {
  Limits limits;
  limits.max_frame_bytes = 100;
  // Only the length field is there; the decoder need not wait for 101 bytes to refuse it.
  const DecodeError e = expect_error(decode_server(Bytes().u32(101).bytes(), limits));
  EXPECT_TRUE(e.close_connection);
  EXPECT_EQ(e.error.code, ErrorCode::kResourceExhausted);
  // Exactly the limit is fine.
  Bytes body;
  body.str(std::string(90, 'a'));
  ASSERT_EQ(kMinFrameLength + body.size(), 100u);
  expect_frame(decode_server(raw_frame(0x04, 1, body), limits));
}

TEST(CodecTest, DecodingStopsAtTheFrameBoundary) {
  Buffer buf;
  encode(buf, 1, Credit{5});
  buf.push_back(0xFF);  // the start of a next frame, garbage or not, is not this frame's business
  DecodeResult r = decode_server(buf);
  ASSERT_TRUE(std::holds_alternative<Decoded>(r));
  EXPECT_EQ(std::get<Decoded>(r).frame_bytes, buf.size() - 1);
}

// ---- robustness: mutated frames never crash and decode canonically ----------------------------

TEST(CodecTest, MutatedFramesAreRefusedOrDecodeCanonically) {
  std::mt19937 rng(20240607);
  std::vector<std::vector<uint8_t>> seeds;
  for (const Frame& f : testing::sample_frames()) seeds.push_back(encoded(f));
  for (const auto& c : testing::malformed_corpus()) {
    if (c.bytes.size() < 4096) seeds.push_back(c.bytes);
  }
  Limits limits;
  limits.max_frame_bytes = 1 << 16;
  size_t decoded = 0, errors = 0;
  for (int iter = 0; iter < 40000; ++iter) {
    std::vector<uint8_t> b = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !b.empty(); ++e) {
      const size_t at = rng() % b.size();
      switch (rng() % 5) {
        case 0:
          b[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          b[at] = static_cast<uint8_t>(rng());
          break;
        case 2:
          b.insert(b.begin() + static_cast<long>(at), static_cast<uint8_t>(rng()));
          break;
        case 3:
          b.erase(b.begin() + static_cast<long>(at));
          break;
        // Rewrite the frame length to the bytes present, so the body parser sees the edits.
        case 4:
          if (b.size() >= 4) {
            const uint32_t len = static_cast<uint32_t>(b.size() - 4);
            b[0] = static_cast<uint8_t>(len >> 24), b[1] = static_cast<uint8_t>(len >> 16);
            b[2] = static_cast<uint8_t>(len >> 8), b[3] = static_cast<uint8_t>(len);
          }
          break;
      }
    }
    for (Side side : {Side::kServer, Side::kClient}) {
      DecodeResult r = decode_frame(b, side, limits);
      if (auto* d = std::get_if<Decoded>(&r)) {
        ++decoded;
        ASSERT_LE(d->frame_bytes, b.size());
        // Every frame has exactly one encoding: what decodes re-encodes to the same bytes.
        Buffer again;
        encode(again, d->frame);
        ASSERT_EQ(hex(again), hex(std::span(b).first(d->frame_bytes)));
      } else if (auto* e = std::get_if<DecodeError>(&r)) {
        ++errors;
        ASSERT_FALSE(e->error.message.empty());
        if (!e->close_connection) {
          ASSERT_LE(e->frame_bytes, b.size());
        }
      } else {
        ASSERT_GT(std::get<NeedMore>(r).bytes, 0u);
      }
    }
  }
  EXPECT_GT(decoded, 1000u);
  EXPECT_GT(errors, 1000u);
}

// ---- UTF-8 -------------------------------------------------------------------------------------

TEST(Utf8Test, AcceptsWellFormedText) {
  size_t bad = 99;
  for (std::string_view s : {"", "plain ascii longer than eight bytes", "é", "€", "𝄞", "\x7f",
                             "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", "ascii then ünïcödé then ascii"}) {
    EXPECT_TRUE(is_valid_utf8(s, &bad)) << s;
  }
  EXPECT_TRUE(is_valid_utf8(std::string_view("a\0b", 3), &bad));  // U+0000 is a character
}

TEST(Utf8Test, RefusesIllFormedTextAndSaysWhere) {
  struct Case {
    std::string_view s;
    size_t offset;
  };
  for (const Case& c : std::vector<Case>{
           {"\x80", 0},              // lone continuation byte
           {"abcdefgh\xc0\xaf", 8},  // overlong '/' after the ASCII fast path
           {"\xc1\xbf", 0},          // overlong 2-byte
           {"\xe0\x9f\xbf", 0},      // overlong 3-byte
           {"\xf0\x8f\xbf\xbf", 0},  // overlong 4-byte
           {"x\xed\xa0\x80", 1},     // surrogate U+D800
           {"\xf4\x90\x80\x80", 0},  // above U+10FFFF
           {"\xf5\x80\x80\x80", 0},  // lead byte never used
           {"\xff", 0},              //
           {"ok\xe2\x82", 2},        // truncated at the end
           {"\xe2\x28\xa1", 0},      // bad continuation
           {"\xf0\x9d\x84", 0},      // truncated 4-byte
       }) {
    size_t bad = 99;
    EXPECT_FALSE(is_valid_utf8(c.s, &bad))
        << hex(std::span(reinterpret_cast<const uint8_t*>(c.s.data()), c.s.size()));
    EXPECT_EQ(bad, c.offset);
  }
}

// The validator as the Unicode standard's table 3-7 reads, one byte at a time and with no fast
// path: what the word-at-a-time ASCII paths must agree with.
bool reference_utf8(std::string_view s, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const unsigned c = p[i];
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c == 0xE0) {
      len = 3, lo = 0xA0;
    } else if (c == 0xED) {
      len = 3, hi = 0x9F;
    } else if (c >= 0xE1 && c <= 0xEF) {
      len = 3;
    } else if (c == 0xF0) {
      len = 4, lo = 0x90;
    } else if (c == 0xF4) {
      len = 4, hi = 0x8F;
    } else if (c >= 0xF1 && c <= 0xF3) {
      len = 4;
    }
    bool ok = len != 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const unsigned b = p[i + k];
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (!ok) {
      *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

void expect_agrees_with_reference(std::string_view s) {
  size_t bad = 12345, ref_bad = 54321;
  const bool ok = is_valid_utf8(s, &bad);
  const bool ref_ok = reference_utf8(s, &ref_bad);
  const auto bytes = std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  ASSERT_EQ(ok, ref_ok) << hex(bytes);
  if (!ok) {
    ASSERT_EQ(bad, ref_bad) << hex(bytes);
  }
}

TEST(Utf8Test, FastPathsAgreeWithTheByteByByteRules) {
  // Every sequence below placed after 0..17 ASCII bytes and followed by 0..9 more: each lands on
  // every position of an 8-byte word, straddles the word boundary, and ends in the short tail.
  const std::vector<std::string> sequences = {"\xc3\xa9",
                                              "\xe2\x82\xac",
                                              "\xf0\x9d\x84\x9e",
                                              "\xef\xbf\xbf",
                                              "\xf4\x8f\xbf\xbf",
                                              "\x7f",
                                              "\x80",
                                              "\xbf",
                                              "\xc0\xaf",
                                              "\xc1\xbf",
                                              "\xc2",
                                              "\xc2\x41",
                                              "\xe0\x9f\xbf",
                                              "\xe0\xa0",
                                              "\xed\xa0\x80",
                                              "\xed\x9f\xbf",
                                              "\xe2\x28\xa1",
                                              "\xe2\x82\x41",
                                              "\xf0\x8f\xbf\xbf",
                                              "\xf0\x9d\x84",
                                              "\xf4\x90\x80\x80",
                                              "\xf5\x80\x80\x80",
                                              "\xf8\x88\x80\x80\x80",
                                              "\xff",
                                              "\xfe",
                                              "\xc3\xa9\x80",
                                              "\xe2\x82\xac\xe2\x82"};
  for (const std::string& seq : sequences) {
    for (size_t before = 0; before < 18; ++before) {
      for (size_t after = 0; after < 10; ++after) {
        std::string s(before, 'a');
        s += seq;
        s.append(after, 'z');
        ASSERT_NO_FATAL_FAILURE(expect_agrees_with_reference(s));
      }
    }
  }
  // Random mixes of ASCII, valid multi-byte characters and stray bytes, of every short length.
  std::mt19937 rng(11);
  const std::vector<std::string> pieces = {
      "a",    "0123456",  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9d\x84\x9e",
      "\x80", "\xe2\x82", "\xff",     "\xed"};
  for (int round = 0; round < 20000; ++round) {
    std::string s;
    const size_t parts = rng() % 12;
    for (size_t k = 0; k < parts; ++k) {
      // Mostly valid pieces, so that a bad byte often comes late in the string.
      const size_t pick = rng() % 10 < 8 ? rng() % 5 : 5 + rng() % 4;
      s += pieces[pick];
    }
    ASSERT_NO_FATAL_FAILURE(expect_agrees_with_reference(s));
  }
}

// ---- docs/PROTOCOL.md examples -----------------------------------------------------------------
// The worked examples of the document, byte for byte: the encoder must produce them, and the
// document must show them.

struct DocExample {
  std::string name;
  Buffer bytes;  // as encoded
  std::string hex;
};

std::vector<DocExample> doc_examples() {
  std::vector<DocExample> ex;
  auto add = [&](std::string name, const Frame& f, std::string hex) {
    ex.push_back({std::move(name), encoded(f), std::move(hex)});
  };
  add("connect", {1, Connect{{1}, "demo", std::nullopt}},
      "00 00 00 15 01 00 00 00 00 01 00 00 00 01 00 01 00 00 00 04 64 65 6d 6f 00");
  add("connect-ok",
      {1,
       ConnectOk{1, "witmqd/0.1.0",
                 ServerLimits{16777216, 10000, 10000, 1048576, 64, 16384, 1024, 1024, 10000, 0}}},
      "00 00 00 40 81 00 00 00 00 01 00 01 00 00 00 0c 77 69 74 6d 71 64 2f 30 2e 31 2e 30 01 00 "
      "00 00 00 00 27 10 00 00 27 10 00 10 00 00 00 00 00 40 00 00 40 00 00 00 04 00 00 00 04 00 "
      "00 00 27 10 00 00 00 00");
  add("send",
      {2, Send{"orders", {testing::sample_message("hi", Format::kRaw, Metadata{{"k", "v"}})}}},
      "00 00 00 2a 02 00 00 00 00 02 00 00 00 06 6f 72 64 65 72 73 00 00 00 01 00 00 00 02 68 69 "
      "05 01 00 00 00 01 00 00 00 01 6b 00 00 00 01 76");
  add("send-ok", {2, SendOk{}}, "00 00 00 06 82 00 00 00 00 02");
  add("error", {3, ErrorReply{Error(ErrorCode::kNotFound, "no channel 'x'")}},
      "00 00 00 1a ff 00 00 00 00 03 00 02 00 00 00 0e 6e 6f 20 63 68 61 6e 6e 65 6c 20 27 78 27");
  add("stream-start", {7, StreamStart{2}}, "00 00 00 0a 08 00 00 00 00 07 00 00 00 02");
  add("stream-start-ok", {7, StreamStartOk{}}, "00 00 00 06 88 00 00 00 00 07");
  add("deliver",
      {7, Deliver{"jobs",
                  {testing::sample_message("x", Format::kRaw, Metadata{{"witmq-receipt", "r"}})}}},
      "00 00 00 33 c0 00 00 00 00 07 00 00 00 04 6a 6f 62 73 00 00 00 01 00 00 00 01 78 05 01 00 "
      "00 00 01 00 00 00 0d 77 69 74 6d 71 2d 72 65 63 65 69 70 74 00 00 00 01 72");
  add("credit", {8, Credit{1}}, "00 00 00 0a 09 00 00 00 00 08 00 00 00 01");
  add("request", {9, Request{"svc", 1000, 1, testing::sample_message("hi", Format::kRaw)}},
      "00 00 00 1d 30 00 00 00 00 09 00 00 00 03 73 76 63 00 00 03 e8 00 00 00 01 00 00 00 02 68 "
      "69 05 00");
  add("reply", {4, Reply{"ab", "cd", testing::sample_message("ok", Format::kRaw)}},
      "00 00 00 1a 31 00 00 00 00 04 00 00 00 02 61 62 00 00 00 02 63 64 00 00 00 02 6f 6b 05 00");
  add("reply-ok", {4, ReplyOk{}}, "00 00 00 06 b1 00 00 00 00 04");
  add("request-ok",
      {9, RequestOk{{testing::sample_message("ok", Format::kRaw,
                                             Metadata{{"witmq-correlation-id", "cd"}})}}},
      "00 00 00 34 b0 00 00 00 00 09 00 00 00 01 00 00 00 02 6f 6b 05 01 00 00 00 01 00 00 00 14 "
      "77 69 74 6d 71 2d 63 6f 72 72 65 6c 61 74 69 6f 6e 2d 69 64 00 00 00 02 63 64");
  return ex;
}

TEST(ProtocolDocTest, EncoderProducesTheExamples) {
  for (const DocExample& e : doc_examples()) {
    EXPECT_EQ(hex(e.bytes), e.hex) << e.name;
    const Side side =
        is_request_type(static_cast<FrameType>(e.bytes[4])) ? Side::kServer : Side::kClient;
    expect_frame(decode_frame(unhex(e.hex), side, {}));
  }
}

// Section 14 of docs/PROTOCOL.md as one stream of hex bytes: from each line of its code blocks the
// leading run of two-digit hex tokens (and '|' separators), and every backtick span made only of
// such tokens.
std::string doc_example_hex() {
  const std::filesystem::path doc =
      std::filesystem::path(__FILE__).parent_path() / "../../docs/PROTOCOL.md";
  std::ifstream in(doc);
  if (!in) {
    ADD_FAILURE() << "cannot read " << doc;
    return {};
  }
  auto is_hex_token = [](std::string_view t) {
    return t.size() == 2 && std::isxdigit(static_cast<unsigned char>(t[0])) &&
           std::isxdigit(static_cast<unsigned char>(t[1]));
  };
  // Appends the leading hex tokens of `text`; returns whether every token was hex or '|'.
  auto take = [&](std::string_view text, std::string& out) {
    std::istringstream words{std::string(text)};
    std::string t;
    while (words >> t) {
      if (t == "|") continue;
      if (!is_hex_token(t)) return false;
      out += ' ';
      out += t;
    }
    return true;
  };
  std::string all, line;
  bool in_section = false, in_block = false;
  while (std::getline(in, line)) {
    if (line.starts_with("## ")) in_section = line.starts_with("## 14 ");
    if (!in_section) continue;
    if (line.starts_with("```")) {
      in_block = !in_block;
      continue;
    }
    if (in_block) {
      take(line, all);
      continue;
    }
    for (size_t open = line.find('`'); open != std::string::npos; open = line.find('`', open)) {
      const size_t close = line.find('`', open + 1);
      if (close == std::string::npos) break;
      std::string span;
      if (take(std::string_view(line).substr(open + 1, close - open - 1), span)) all += span;
      open = close + 1;
    }
  }
  return all + ' ';
}

TEST(ProtocolDocTest, DocumentShowsTheExamples) {
  const std::string doc = doc_example_hex();
  for (const DocExample& e : doc_examples()) {
    EXPECT_NE(doc.find(' ' + e.hex + ' '), std::string::npos)
        << "docs/PROTOCOL.md section 14 does not show the " << e.name << " example: " << e.hex;
  }
}

}  // namespace
}  // namespace witmq::net
