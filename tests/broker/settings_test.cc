// Settings, extensions and receipts: parsing with errors that name the key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker/channel_settings.h"
#include "broker/extensions.h"
#include "broker/receipt.h"

namespace witmq::broker {
namespace {

TEST(ChannelSettingsTest, JsonRoundTripAndDefaults) {
  ChannelSettings s;
  s.kind = ChannelKind::kPublishSubscribe;
  s.max_deliveries = 5;
  s.abandon = AbandonPolicy::kDrop;
  s.dead_letter_channel = "elsewhere";
  auto back = settings_from_json(settings_to_json(s), ChannelSettings{}, "x");
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(*back, s);
  auto partial = settings_from_json(nlohmann::json{{"lease-ms", 1000}}, s, "x");
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial->lease.count(), 1000);
  EXPECT_EQ(partial->max_deliveries, 5u);  // untouched keys keep the base
}

TEST(ChannelSettingsTest, ErrorsNameTheKey) {
  struct Case {
    nlohmann::json j;
    std::string expect;
  } cases[] = {
      {{{"kind", "ring"}}, "kind"},
      {{{"lease-ms", 5}}, "channels.q.lease-ms"},
      {{{"lease-ms", "long"}}, "lease-ms: expected an integer"},
      {{{"max-deliveries", -1}}, "max-deliveries"},
      {{{"durability", "maybe"}}, "durability"},
      {{{"dead-letter-channel", "bad name"}}, "dead-letter-channel"},
      {{{"backoff-initial-ms", 10}, {"backoff-max-ms", 5}}, "backoff-initial-ms"},
      {{{"colour", 1}}, "unknown channel setting"},
  };
  for (auto& c : cases) {
    auto r = settings_from_json(c.j, ChannelSettings{}, "channels.q");
    ASSERT_FALSE(r.ok()) << c.j.dump();
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos)
        << c.j.dump() << " -> " << r.error().message;
  }
}

TEST(ExtensionsTest, ParsesEveryKey) {
  auto o = parse_extensions(Metadata{{"start", "earliest"},
                                     {"group", "billing"},
                                     {"batch-size", "25"},
                                     {"lease-ms", "2000"},
                                     {"settlement", "auto"}},
                            1000);
  ASSERT_TRUE(o.ok()) << o.error().to_string();
  EXPECT_EQ(o->start.kind, StartPosition::Kind::kEarliest);
  EXPECT_EQ(o->group, "billing");
  EXPECT_EQ(o->batch_size, 25u);
  EXPECT_EQ(o->lease->count(), 2000);
  EXPECT_TRUE(o->auto_settle);
  auto t = parse_extensions(Metadata{{"start", "time:2026-01-02T03:04:05Z"}}, 10);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->start.kind, StartPosition::Kind::kTime);
  EXPECT_EQ(t->start.value, 1767323045000u);
  auto seq = parse_extensions(Metadata{{"start", "42"}}, 10);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(seq->start.kind, StartPosition::Kind::kSequence);
  EXPECT_EQ(seq->start.value, 42u);
}

TEST(ExtensionsTest, BadValuesAreRefused) {
  for (auto& kv : std::vector<KeyValue>{{"start", "tomorrow"},
                                        {"start", "time:yesterday"},
                                        {"group", ""},
                                        {"batch-size", "11"},
                                        {"batch-size", "-1"},
                                        {"lease-ms", "99"},
                                        {"settlement", "sometimes"},
                                        {"partition", "3"}}) {
    auto o = parse_extensions(Metadata{kv}, 10);
    ASSERT_FALSE(o.ok()) << kv.first << "=" << kv.second;
    EXPECT_NE(o.error().message.find(kv.first), std::string::npos) << o.error().message;
  }
}

TEST(ReceiptTest, RoundTripAndRejectsGarbage) {
  Receipt r{7, 3, 123456789, 0xdeadbeefcafef00dULL, {}};
  auto text = format_receipt(r);
  auto back = parse_receipt(text);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, r);
  Receipt named{7, 3, 42, 0xabcULL, "orders.eu.dlq"};
  EXPECT_EQ(format_receipt(named), "r2.7.3.42.0000000000000abc.orders.eu.dlq");
  auto named_back = parse_receipt(format_receipt(named));
  ASSERT_TRUE(named_back.ok()) << named_back.error().message;
  EXPECT_EQ(*named_back, named);
  for (std::string bad : {"", "r1.", "r1.1.2.3", "r2.1.2.3.4", "r1.a.2.3.4", "r1.1.2.3.zz",
                          "r1.99999999999.2.3.4", "r1.1.2.3.4.5", "r2.1.2.3.4.", "r2.1.2.3.zz.c",
                          "r2.1.2.3.4..c", "r3.1.2.3.4.c"}) {
    EXPECT_FALSE(parse_receipt(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace witmq::broker
