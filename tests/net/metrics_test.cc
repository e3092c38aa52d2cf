// The Prometheus exposition of a snapshot (net/metrics.h).
#include "net/metrics.h"

#include <gtest/gtest.h>

#include <sstream>

namespace witmq::net {
namespace {

MetricsSnapshot sample() {
  MetricsSnapshot s;
  s.version = "1.2.3";
  broker::ChannelStats b;
  b.name = "b";
  b.depth = 4;
  b.sends_total = 7;
  b.oldest_age_ms = 1500;
  b.subscriptions.push_back({"", true, 0, 0, 4, 1, 3});
  broker::ChannelStats a;
  a.name = "a\"q";
  s.channels = {b, a};
  s.store.commits = 10;
  s.store.sync_micros_total = 2'500'000;
  s.listeners.push_back({"tcp", 1, 2, 0, 5, 0, 100, 200});
  s.guests.push_back({"g", 1, 3, 30, 1, 0, 0, 0, 1'500'000'000});
  return s;
}

// Issue 19 item 9: many channels cannot make a scrape huge.
TEST(MetricsTest, ChannelSeriesAreCappedAndTheRestCounted) {
  MetricsSnapshot s = sample();
  s.max_channel_series = 1;
  const std::string text = render_metrics(s);
  EXPECT_NE(text.find("witmq_channels 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("witmq_metrics_channels_omitted 1\n"), std::string::npos) << text;
  // The first by name keeps its series; the other has none, its subscriptions neither.
  EXPECT_NE(text.find("witmq_channel_depth{channel=\"a\\\"q\"} 0\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("{channel=\"b\""), std::string::npos) << text;
  s.max_channel_series = 0;
  const std::string none = render_metrics(s);
  EXPECT_NE(none.find("witmq_metrics_channels_omitted 2\n"), std::string::npos) << none;
  EXPECT_EQ(none.find("{channel="), std::string::npos) << none;
}

TEST(MetricsTest, FamiliesHaveHelpAndTypeAndSortedSamples) {
  const std::string text = render_metrics(sample());
  EXPECT_NE(text.find("# HELP witmq_channel_depth "), std::string::npos);
  EXPECT_NE(text.find("# TYPE witmq_channel_depth gauge\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE witmq_channel_sends_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_channel_depth{channel=\"b\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_channel_sends_total{channel=\"b\"} 7\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_channel_oldest_message_age_seconds{channel=\"b\"} 1.5\n"),
            std::string::npos);
  EXPECT_NE(text.find("witmq_subscription_lag{channel=\"b\",subscription=\"\"} 4\n"),
            std::string::npos);
  // Escaped label values, and channels sorted by name.
  const auto a = text.find("witmq_channel_depth{channel=\"a\\\"q\"} 0\n");
  ASSERT_NE(a, std::string::npos) << text;
  EXPECT_LT(a, text.find("witmq_channel_depth{channel=\"b\"}"));
  EXPECT_NE(text.find("witmq_store_commit_requests_total 10\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_store_sync_seconds_total 2.5\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_guest_handler_seconds_total{guest=\"g\"} 1.5\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_guest_invocations_total{guest=\"g\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_sent_bytes_total{listener=\"tcp\"} 200\n"), std::string::npos);
  EXPECT_NE(text.find("witmq_build_info{version=\"1.2.3\"} 1\n"), std::string::npos);

  // Every TYPE line is preceded by its HELP line and every counter ends in _total.
  std::istringstream in(text);
  std::string line, last_help;
  while (std::getline(in, line)) {
    if (line.starts_with("# HELP ")) last_help = line.substr(7, line.find(' ', 7) - 7);
    if (line.starts_with("# TYPE ")) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(name, last_help);
      if (line.ends_with(" counter")) {
        EXPECT_TRUE(name.ends_with("_total")) << name;
      }
    }
  }
}

// Issue 16: connections by state, their buffers, the broker's tables and the allocator's
// figures.
TEST(MetricsTest, FootprintFiguresAreExposed) {
  MetricsSnapshot s = sample();
  s.connections.by_state = {1, 2, 30, 4};
  s.connections.buffered_bytes = 4096;
  s.connections.buffered_bytes_max = 1024;
  s.broker_tables = {31, 5, 2, 7, 9};
  s.memory.allocator = "glibc";
  s.memory.resident_bytes = 1000;
  s.memory.heap_in_use_bytes = 600;
  s.memory.heap_free_bytes = 300;
  s.memory.heap_mapped_bytes = 900;
  s.memory_releases = 3;
  const std::string text = render_metrics(s);
  for (const char* sample :
       {"witmq_connections_by_state{state=\"handshaking\"} 1\n",
        "witmq_connections_by_state{state=\"connecting\"} 2\n",
        "witmq_connections_by_state{state=\"connected\"} 30\n",
        "witmq_connections_by_state{state=\"closing\"} 4\n",
        "witmq_connection_buffered_bytes 4096\n", "witmq_connection_buffered_bytes_max 1024\n",
        "witmq_broker_clients 31\n", "witmq_broker_waiters 5\n",
        "witmq_broker_subscriptions{kind=\"durable\"} 2\n",
        "witmq_broker_subscriptions{kind=\"ephemeral\"} 7\n", "witmq_broker_timers 9\n",
        "witmq_memory_resident_bytes 1000\n",
        "witmq_memory_heap_in_use_bytes{allocator=\"glibc\"} 600\n",
        "witmq_memory_heap_free_bytes{allocator=\"glibc\"} 300\n",
        "witmq_memory_heap_mapped_bytes{allocator=\"glibc\"} 900\n",
        "witmq_memory_releases_total 3\n"}) {
    EXPECT_NE(text.find(sample), std::string::npos) << sample;
  }
}

TEST(MetricsTest, EscapesLabelValues) {
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

}  // namespace
}  // namespace witmq::net
