// A log-linear histogram of latencies (in nanoseconds) for witmq-bench: constant memory whatever
// the count, values below 128 exact, larger ones within 0.8% (each power of two is split into 64
// equal sub-buckets, as in HdrHistogram with two significant digits).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace witmq::cli {

class LatencyHistogram {
 public:
  // Buckets: 128 exact values, then 64 per power of two from 2^7 up to 2^64.
  static constexpr int kExactBits = 7;
  static constexpr uint64_t kExact = uint64_t{1} << kExactBits;
  static constexpr uint64_t kSubBuckets = kExact / 2;
  static constexpr size_t kBuckets = kExact + (64 - kExactBits) * kSubBuckets;

  // Counts `value` `times` times.
  void record(uint64_t value, uint64_t times = 1);
  // Adds every count of `other`.
  void merge(const LatencyHistogram& other);

  uint64_t count() const { return count_; }
  // 0 when empty.
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }
  // The value at or below which `percent` (0..100) of the recorded values lie: the midpoint of
  // the bucket that holds that rank, clamped to [min, max]. 0 when empty.
  uint64_t percentile(double percent) const;

  // The bucket `value` falls in, and the lowest and highest value of bucket `index`.
  static size_t bucket_of(uint64_t value);
  static uint64_t bucket_low(size_t index);
  static uint64_t bucket_high(size_t index);

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  // Wraps after 584 years of nanoseconds summed; the mean is for display only.
  uint64_t sum_ = 0;
};

}  // namespace witmq::cli
