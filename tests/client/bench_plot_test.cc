// witmq-bench --plot (cli/bench_plot.h): the SVG of a report whose figures are known. The end to
// end check, a real run read back with an XML parser, is in tests/cli/bench_test.sh.
#include "cli/bench_plot.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

namespace witmq::cli {
namespace {

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

BenchReport sample_report() {
  BenchReport r;
  r.options.kind = "point-to-point";
  // 10,000 received latencies of 1..10,000 us; 10,000 confirmations of 2 ms.
  for (uint64_t i = 1; i <= 10'000; ++i) r.latency.record(i * 1000);
  r.confirm_latency.record(2'000'000, 10'000);
  r.produced = {10'000, 1'280'000, 2.0};
  r.consumed = {10'000, 1'280'000, 2.5};
  r.timeline = {{0, 0, 0}, {1, 6'000, 4'000}, {2, 10'000, 8'000}, {2.5, 10'000, 10'000}};
  return r;
}

TEST(BenchPlotTest, MarksHoldTheHistogramsPercentiles) {
  const BenchReport r = sample_report();
  const std::string svg = bench_plot_svg(r);
  ASSERT_TRUE(svg.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ")) << svg;
  EXPECT_TRUE(svg.ends_with("</svg>\n"));
  EXPECT_EQ(occurrences(svg, "<g id=\"latency\">"), 1u);
  EXPECT_EQ(occurrences(svg, "<g id=\"throughput\">"), 1u);
  // 10,000 values resolve four nines: p50, 90, 99, 99.9, 99.99 and the maximum, per series.
  for (const auto& [series, h] :
       {std::pair{"received", &r.latency}, std::pair{"confirmed", &r.confirm_latency}}) {
    for (const char* p : {"50", "90", "99", "99.9", "99.99"}) {
      const std::string mark =
          fmt::format("data-series=\"{}\" data-percentile=\"{}\" data-latency-us=\"{}\"", series, p,
                      static_cast<double>(h->percentile(std::stod(p))) / 1000.0);
      EXPECT_EQ(occurrences(svg, mark), 1u) << mark;
    }
    EXPECT_EQ(occurrences(svg, fmt::format("data-series=\"{}\" data-percentile=\"100\" "
                                           "data-latency-us=\"{}\"",
                                           series, static_cast<double>(h->max()) / 1000.0)),
              1u);
  }
  EXPECT_EQ(occurrences(svg, "data-percentile=\"99.999\""), 0u);
  for (const char* tick : {">0%</text>", ">90%</text>", ">99%</text>", ">99.9%</text>",
                           ">99.99%</text>"}) {
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  }
  EXPECT_EQ(svg.find(">99.999%</text>"), std::string::npos);
  EXPECT_NE(svg.find("latency (ms)"), std::string::npos);
}

TEST(BenchPlotTest, ThroughputIsTheRatePerInterval) {
  const std::string svg = bench_plot_svg(sample_report());
  EXPECT_NE(svg.find("data-series=\"produced\" data-messages=\"10000\""), std::string::npos);
  EXPECT_NE(svg.find("data-series=\"consumed\" data-messages=\"10000\""), std::string::npos);
  // Produced: 6,000/s over the first second, 4,000/s over the next, 0 over the last half.
  // The y axis tops at 6,000/s, 230 px high from y=410 (the second chart starts at 360).
  const double top = 30 + 330 + 50, height = 330 - 50 - 50;
  auto y = [&](double rate) { return fmt::format("{:.2f}", top + height - height * rate / 6000); };
  EXPECT_NE(svg.find(y(6000)), std::string::npos) << svg;
  EXPECT_NE(svg.find(y(4000)), std::string::npos);
}

TEST(BenchPlotTest, AnEmptyRunStillDrawsBothCharts) {
  BenchReport r;
  const std::string svg = bench_plot_svg(r);
  EXPECT_NE(svg.find("<g id=\"latency\">"), std::string::npos);
  EXPECT_NE(svg.find("no latencies recorded"), std::string::npos);
  EXPECT_NE(svg.find("<g id=\"throughput\">"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("inf"), std::string::npos) << svg;
}

TEST(BenchPlotTest, AFileThatCannotBeWrittenIsAnError) {
  auto st = write_bench_plot(sample_report(), "/nonexistent-dir/plot.svg");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("--plot: cannot write '/nonexistent-dir/plot.svg'"),
            std::string::npos)
      << st.error().message;
}

}  // namespace
}  // namespace witmq::cli
