// witmq-bench's command line (cli/bench_options.h) and its payload stamp (cli/bench_runner.h).
#include "cli/bench_options.h"

#include <gtest/gtest.h>

#include "cli/bench_runner.h"

namespace witmq::cli {
namespace {

Result<BenchOptions> parse(std::vector<std::string> args) {
  return parse_bench_options(args, std::nullopt, std::nullopt);
}

TEST(BenchOptions, Defaults) {
  auto o = parse({});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->server.port, 7400);
  EXPECT_EQ(o->kind, "point-to-point");
  EXPECT_EQ(o->producers, 1u);
  EXPECT_EQ(o->consumers, 1u);
  EXPECT_EQ(o->messages, 100'000u);
  EXPECT_FALSE(o->duration_s);
  EXPECT_EQ(o->mode, ConsumeMode::kReceive);
  EXPECT_FALSE(o->complete);
  EXPECT_TRUE(o->channel.empty());
  EXPECT_FALSE(o->rate);
  EXPECT_EQ(o->channels, 1u);
}

TEST(BenchOptions, RateAndChannels) {
  auto o = parse({"--rate", "50000", "--channels", "1000", "--consumers", "1000"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->rate, std::optional<uint64_t>(50'000));
  EXPECT_EQ(o->channels, 1000u);
  EXPECT_TRUE(parse({"--channels", "4", "--consumers", "0"}).ok());
  EXPECT_TRUE(parse({"--channels", "4", "--consumers", "8"}).ok());
  auto msg = [](std::vector<std::string> a) {
    auto r = parse(std::move(a));
    return r.ok() ? std::string("(parsed)") : r.error().message;
  };
  EXPECT_EQ(msg({"--rate", "0"}),
            "witmq-bench: --rate: '0' is not a whole number from 1 to 100000000");
  EXPECT_EQ(msg({"--rate", "1.5"}),
            "witmq-bench: --rate: '1.5' is not a whole number from 1 to 100000000");
  EXPECT_EQ(msg({"--channels", "0"}),
            "witmq-bench: --channels: '0' is not a whole number from 1 to 10000");
  // One consumer by default: 4 channels would leave three unread.
  EXPECT_EQ(msg({"--channels", "4"}),
            "witmq-bench: --consumers 1 is not 0 or a multiple of --channels 4: every channel "
            "needs the same number of consumers");
  EXPECT_NE(msg({"--channels", "4", "--consumers", "6"}).find("--consumers 6"), std::string::npos);
}

TEST(BenchOptions, Everything) {
  auto o = parse({"--server",        "127.0.0.1:9",
                  "--channel",       "b",
                  "--kind",          "publish-subscribe",
                  "--durability",    "none",
                  "--producers",     "2",
                  "--consumers",     "3",
                  "--duration",      "1.5",
                  "--size",          "1024",
                  "--batch",         "50",
                  "--pipeline",      "4",
                  "--consume-mode",  "stream",
                  "--credit",        "500",
                  "--complete",      "--json",
                  "--threads",       "2",
                  "--receive-batch", "200",
                  "--drain-timeout", "100"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->server.port, 9);
  EXPECT_EQ(o->channel, "b");
  EXPECT_EQ(o->kind, "publish-subscribe");
  EXPECT_EQ(o->durability, std::optional<std::string>("none"));
  EXPECT_EQ(o->producers, 2u);
  EXPECT_EQ(o->consumers, 3u);
  EXPECT_EQ(o->duration_s, std::optional<double>(1.5));
  EXPECT_EQ(o->size, 1024u);
  EXPECT_EQ(o->batch, 50u);
  EXPECT_EQ(o->pipeline, 4u);
  EXPECT_EQ(o->mode, ConsumeMode::kStream);
  EXPECT_EQ(o->credit, 500u);
  EXPECT_TRUE(o->complete);
  EXPECT_TRUE(o->json);
  EXPECT_EQ(o->threads, 2u);
  EXPECT_EQ(o->receive_batch, 200u);
  EXPECT_EQ(o->drain_timeout_ms, 100u);
}

TEST(BenchOptions, ErrorsNameTheOption) {
  auto msg = [](std::vector<std::string> a) {
    auto o = parse(std::move(a));
    return o.ok() ? std::string("(parsed)") : o.error().message;
  };
  EXPECT_NE(msg({"--kind", "queue"}).find("--kind: 'queue'"), std::string::npos);
  EXPECT_NE(msg({"--durability", "x"}).find("--durability: 'x'"), std::string::npos);
  EXPECT_NE(msg({"--producers", "0"}).find("--producers: '0'"), std::string::npos);
  EXPECT_NE(msg({"--batch", "10001"}).find("--batch"), std::string::npos);
  EXPECT_NE(msg({"--duration", "0"}).find("--duration"), std::string::npos);
  EXPECT_NE(msg({"--duration", "abc"}).find("--duration"), std::string::npos);
  EXPECT_NE(msg({"--messages", "5", "--duration", "1"}).find("exclude each other"),
            std::string::npos);
  EXPECT_NE(msg({"--consume-mode", "push"}).find("'push' is not receive or stream"),
            std::string::npos);
  EXPECT_EQ(msg({"--channel", ".bad"}),
            "witmq-bench: --channel '.bad': a name may not start with '.'");
  EXPECT_EQ(
      msg({"--channel", "a b"}),
      "witmq-bench: --channel: byte 1 (0x20) of the name is not one of A-Z a-z 0-9 . _ - : /");
  EXPECT_EQ(msg({"--server", "a:b:c"}),
            "witmq-bench: --server 'a:b:c': more than one ':'; write an IPv6 address as "
            "[ADDRESS]:PORT");
  EXPECT_NE(msg({"stray"}).find("unexpected argument 'stray'"), std::string::npos);
  EXPECT_NE(msg({"--nope"}).find("unknown option '--nope'"), std::string::npos);
}

TEST(BenchOptions, Tls) {
  auto o = parse({"--tls", "--ca-file", "ca.pem", "--cert-file", "c.pem", "--key-file", "c.key"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_TRUE(o->tls.enabled);
  EXPECT_EQ(o->tls.ca_file, "ca.pem");
  EXPECT_EQ(o->tls.cert_file, "c.pem");
  EXPECT_EQ(o->tls.key_file, "c.key");
  EXPECT_FALSE(parse({}).value().tls.enabled);
  auto bad = parse({"--insecure"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "witmq-bench: --insecure needs --tls");
  bad = parse({"--tls", "--key-file", "c.key"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "witmq-bench: --cert-file and --key-file go together");
}

TEST(BenchOptions, EnvironmentServerAndHelp) {
  auto o = parse_bench_options(std::vector<std::string>{}, std::string("h:1"), std::string("t"));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->server.host, "h");
  EXPECT_EQ(o->token, std::optional<std::string>("t"));
  auto bad = parse_bench_options(std::vector<std::string>{}, std::string("h:x"), std::nullopt);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message,
            "witmq-bench: WITMQ_SERVER 'h:x': port 'x' is not a number from 1 to 65535");
  auto h = parse({"--help"});
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->help);
  EXPECT_NE(bench_usage().find("--consume-mode"), std::string::npos);
  // The default channel name as run_bench makes it, and --consumers 0.
  EXPECT_NE(bench_usage().find("witmq-bench-<pid>-<4 hex digits>"), std::string::npos);
  EXPECT_NE(bench_usage().find("0 measures producing only"), std::string::npos);
}

TEST(BenchStamp, RoundTripAndForeignRuns) {
  std::vector<uint8_t> data(32, 'x');
  write_stamp(data, 0xABCD, 123456789);
  uint64_t ns = 0;
  EXPECT_TRUE(read_stamp(data, 0xABCD, &ns));
  EXPECT_EQ(ns, 123456789u);
  EXPECT_FALSE(read_stamp(data, 0xABCE, &ns));
  std::vector<uint8_t> short_data(15, 0);
  EXPECT_FALSE(read_stamp(short_data, 0, &ns));
}

TEST(BenchReport, FormatsTableAndJson) {
  BenchReport r;
  r.options.kind = "point-to-point";
  r.channel = "c";
  r.produced = {1000, 128000, 0.5};
  r.consumed = {1000, 128000, 0.5};
  r.expected = 1000;
  for (int i = 1; i <= 1000; ++i) r.latency.record(static_cast<uint64_t>(i) * 1000);
  EXPECT_DOUBLE_EQ(r.produced.msgs_per_s(), 2000.0);
  EXPECT_DOUBLE_EQ(r.produced.mb_per_s(), 0.256);
  EXPECT_TRUE(r.ok());
  std::string table = format_report(r, false);
  EXPECT_NE(table.find("produced"), std::string::npos);
  EXPECT_NE(table.find("p99.9"), std::string::npos);
  EXPECT_NE(table.find("2000"), std::string::npos);
  std::string json = format_report(r, true);
  EXPECT_NE(json.find("\"msgs_per_s\": 2000.0"), std::string::npos);
  EXPECT_NE(json.find("\"p50\""), std::string::npos);
  // Durability reads the same in both forms, given or not.
  EXPECT_NE(table.find("durability server default,"), std::string::npos);
  EXPECT_NE(json.find("\"durability\": \"server default\""), std::string::npos);
  r.options.durability = "none";
  EXPECT_NE(format_report(r, false).find("durability none,"), std::string::npos);
  EXPECT_NE(format_report(r, true).find("\"durability\": \"none\""), std::string::npos);
  r.consumed.messages = 10;
  EXPECT_FALSE(r.ok());
  EXPECT_NE(format_report(r, false).find("MISSING: 990 of 1000"), std::string::npos);
}

TEST(BenchReport, OpenLoopAndConfirmLatency) {
  BenchReport r;
  r.channel = "c-0";
  r.options.channels = 3;
  r.options.consumers = 3;
  r.produced = {1000, 128000, 1.0};
  r.consumed = {1000, 128000, 1.0};
  r.expected = 1000;
  r.latency.record(2'000'000);
  r.confirm_latency.record(500'000);
  std::string closed = format_report(r, false);
  EXPECT_NE(closed.find("channel 'c-0' and 2 more,"), std::string::npos) << closed;
  EXPECT_NE(closed.find("from the producer's hand-off"), std::string::npos) << closed;
  EXPECT_NE(closed.find("received       2.000"), std::string::npos) << closed;
  EXPECT_NE(closed.find("confirmed      0.500"), std::string::npos) << closed;
  EXPECT_EQ(closed.find("open loop"), std::string::npos);
  r.options.rate = 1000;
  r.max_lag_ns = 3'500'000;
  std::string open = format_report(r, false);
  EXPECT_NE(open.find(", open loop at 1000 msgs/s"), std::string::npos) << open;
  EXPECT_NE(open.find("from each message's intended send time"), std::string::npos) << open;
  EXPECT_NE(open.find("schedule: 1000 msgs/s asked, produced 1000; sends fell up to 3.500 ms "
                      "behind"),
            std::string::npos)
      << open;
  std::string json = format_report(r, true);
  EXPECT_NE(json.find("\"rate\": 1000"), std::string::npos) << json;
  EXPECT_NE(json.find("\"channels\": 3"), std::string::npos) << json;
  EXPECT_NE(json.find("\"max_lag_us\": 3500.0"), std::string::npos) << json;
  EXPECT_NE(json.find("\"confirm_latency_us\""), std::string::npos) << json;
}

}  // namespace
}  // namespace witmq::cli

namespace witmq::cli {
namespace {

TEST(BenchOptions, RequestReplyMode) {
  EXPECT_EQ(parse_bench_options({}, std::nullopt, std::nullopt)->bench_mode,
            BenchMode::kProduceConsume);
  std::vector<std::string> args{
      "--mode", "request-reply", "--producers", "16", "--consumers", "16", "--pipeline", "1"};
  auto o = parse_bench_options(args, std::nullopt, std::nullopt);
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->bench_mode, BenchMode::kRequestReply);
  EXPECT_EQ(o->producers, 16u);
  EXPECT_EQ(o->pipeline, 1u);
  auto error = [](std::vector<std::string> a) {
    auto r = parse_bench_options(a, std::nullopt, std::nullopt);
    return r.ok() ? std::string("(parsed)") : r.error().message;
  };
  EXPECT_EQ(error({"--mode", "rpc"}),
            "witmq-bench: --mode: 'rpc' is not produce-consume or request-reply");
  EXPECT_NE(error({"--mode", "request-reply", "--consumers", "0"}).find("--consumers 1 or more"),
            std::string::npos);
  EXPECT_EQ(error({"--mode", "request-reply", "--rate", "10"}),
            "witmq-bench: --rate does not apply to --mode request-reply");
}

}  // namespace
}  // namespace witmq::cli
