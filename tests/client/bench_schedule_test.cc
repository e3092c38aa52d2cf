// witmq-bench --rate: the open-loop schedule and the latency it measures (cli/bench_schedule.h).
#include "cli/bench_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cli/latency_histogram.h"

namespace witmq::cli {
namespace {

TEST(ArrivalSchedule, IntendedTimesAreEvenlySpacedFromTheStart) {
  ArrivalSchedule s(1'000'000, 1000);  // one message per millisecond
  EXPECT_EQ(s.intended_ns(0), 1'000'000u);
  EXPECT_EQ(s.intended_ns(1), 2'000'000u);
  EXPECT_EQ(s.intended_ns(999), 1'000'000u + 999'000'000u);
  // A rate that does not divide a second: times are floor(k * 1e9 / 3), no drift over a day's
  // worth of messages.
  ArrivalSchedule t(0, 3);
  EXPECT_EQ(t.intended_ns(1), 333'333'333u);
  EXPECT_EQ(t.intended_ns(2), 666'666'666u);
  EXPECT_EQ(t.intended_ns(3), 1'000'000'000u);
  EXPECT_EQ(t.intended_ns(3 * 86'400), 86'400'000'000'000u);
}

TEST(ArrivalSchedule, DueByCountsTheMessagesWhoseTimeHasCome) {
  ArrivalSchedule s(5'000, 1000);
  EXPECT_EQ(s.due_by(0), 0u);
  EXPECT_EQ(s.due_by(4'999), 0u);
  EXPECT_EQ(s.due_by(5'000), 1u);  // message 0 is due at the start
  EXPECT_EQ(s.due_by(5'000 + 999'999), 1u);
  EXPECT_EQ(s.due_by(5'000 + 1'000'000), 2u);
  EXPECT_EQ(s.due_by(5'000 + 10'500'000), 11u);
}

TEST(ArrivalSchedule, DueByAgreesWithIntendedTimesEverywhere) {
  // Rates whose periods are not whole nanoseconds, and clock readings right at and around the
  // intended times, where floating point rounding would put the count off by one.
  std::mt19937_64 rng(7);
  for (double rate : {1.0, 3.0, 7.0, 999.0, 33'333.0, 1'000'003.0, 100'000'000.0}) {
    ArrivalSchedule s(123'456'789, rate);
    for (int i = 0; i < 2000; ++i) {
      const uint64_t k = rng() % 5'000'000;
      const uint64_t at = s.intended_ns(k);
      for (uint64_t now : {at - 1, at, at + 1}) {
        const uint64_t n = s.due_by(now);
        if (n > 0) {
          EXPECT_LE(s.intended_ns(n - 1), now) << rate << " " << k;
        }
        EXPECT_GT(s.intended_ns(n), now) << rate << " " << k;
      }
      EXPECT_EQ(s.due_by(at), k + 1) << rate << " " << k;
      if (at > 0 && (k == 0 || s.intended_ns(k - 1) < at)) {
        EXPECT_EQ(s.due_by(at - 1), k) << rate << " " << k;
      }
    }
  }
}

TEST(ArrivalSchedule, ProducersShareTheRateEvenly) {
  // 4 producers at 4000/s in total: each sends every millisecond, and together one message every
  // 250 µs.
  std::vector<uint64_t> times;
  for (uint32_t p = 0; p < 4; ++p) {
    auto s = ArrivalSchedule::for_producer(0, 4000, 4, p);
    for (uint64_t k = 0; k < 3; ++k) times.push_back(s.intended_ns(k));
  }
  std::sort(times.begin(), times.end());
  for (size_t i = 0; i < times.size(); ++i) EXPECT_EQ(times[i], i * 250'000) << i;
}

TEST(DueNow, SendsWhatIsDueInBatchesUpToTheQuota) {
  ArrivalSchedule s(0, 1000);
  // On time: one message due, one sent.
  EXPECT_EQ(due_now(s, 0, 100, 0, 10), 1u);
  EXPECT_EQ(due_now(s, 1, 100, 500'000, 10), 0u);  // next one is due at 1 ms: wait
  // 25 ms behind (the window was full): everything due goes, at most a batch per send.
  EXPECT_EQ(due_now(s, 1, 100, 25'000'000, 10), 10u);
  EXPECT_EQ(due_now(s, 21, 100, 25'000'000, 10), 5u);
  EXPECT_EQ(due_now(s, 26, 100, 25'000'000, 10), 0u);
  // Never past the quota, however late.
  EXPECT_EQ(due_now(s, 95, 100, 1'000'000'000, 10), 5u);
  EXPECT_EQ(due_now(s, 100, 100, 1'000'000'000, 10), 0u);
}

TEST(OpenLoopLatency, ALaggingProducerCountsItsLag) {
  // 1000 messages/s for 100 ms against a server that answers in 100 µs but stalls once for
  // 50 ms (messages 10..59 wait). A closed-loop measurement, from the moment each message was
  // actually handed over, would see 100 µs for 99 of 100 messages: the stall hides in the
  // producer's lag. From the intended send time the stalled messages carry it.
  ArrivalSchedule s(0, 1000);
  LatencyHistogram from_intended;
  LatencyHistogram from_hand_off;
  uint64_t now = 0;
  uint64_t issued = 0;
  while (issued < 100) {
    uint64_t n = due_now(s, issued, 100, now, 1);
    if (n == 0) {
      now = s.intended_ns(issued);
      continue;
    }
    const uint64_t service = issued == 10 ? 50'000'000 : 100'000;
    const uint64_t received = now + service;
    from_intended.record(latency_from(s.intended_ns(issued), received));
    from_hand_off.record(latency_from(now, received));
    now = received;  // the producer's one send in flight blocks it meanwhile
    issued += n;
  }
  // (Percentiles are within 0.8% of the value.)
  EXPECT_LT(from_hand_off.percentile(50), 101'000u);
  EXPECT_LT(from_hand_off.percentile(90), 101'000u);
  // Message 11 goes out 49 ms late, and each next one 0.9 ms less late while the producer
  // catches up (at 100 µs a message), so more than half the latencies exceed a millisecond.
  EXPECT_GT(from_intended.percentile(50), 1'000'000u);
  EXPECT_GE(from_intended.max(), 50'000'000u);
  EXPECT_GT(from_intended.percentile(90), 10'000'000u);
}

TEST(OpenLoopLatency, OutOfOrderClockReadingsAreZeroNotHuge) {
  EXPECT_EQ(latency_from(10, 5), 0u);
  EXPECT_EQ(latency_from(5, 10), 5u);
}

}  // namespace
}  // namespace witmq::cli
