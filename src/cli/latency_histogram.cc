#include "cli/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace witmq::cli {

size_t LatencyHistogram::bucket_of(uint64_t value) {
  if (value < kExact) return static_cast<size_t>(value);
  const int msb = 63 - std::countl_zero(value);  // >= kExactBits
  const int shift = msb - (kExactBits - 1);      // keeps the top kExactBits bits
  const uint64_t top = value >> shift;           // in [kSubBuckets, kExact)
  return kExact + static_cast<size_t>(shift - 1) * kSubBuckets +
         static_cast<size_t>(top - kSubBuckets);
}

uint64_t LatencyHistogram::bucket_low(size_t index) {
  if (index < kExact) return index;
  const size_t rel = index - kExact;
  const int shift = static_cast<int>(rel / kSubBuckets) + 1;
  const uint64_t top = kSubBuckets + rel % kSubBuckets;
  return top << shift;
}

uint64_t LatencyHistogram::bucket_high(size_t index) {
  if (index < kExact) return index;
  const size_t rel = index - kExact;
  const int shift = static_cast<int>(rel / kSubBuckets) + 1;
  const uint64_t top = kSubBuckets + rel % kSubBuckets;
  // The last bucket ends at UINT64_MAX; (top + 1) << shift would overflow there.
  return ((top << shift) - 1) + (uint64_t{1} << shift);
}

void LatencyHistogram::record(uint64_t value, uint64_t times) {
  if (times == 0) return;
  counts_[bucket_of(value)] += times;
  count_ += times;
  sum_ += value * times;
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

uint64_t LatencyHistogram::percentile(double percent) const {
  if (count_ == 0) return 0;
  percent = std::clamp(percent, 0.0, 100.0);
  uint64_t rank = static_cast<uint64_t>(std::ceil(percent / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const uint64_t low = bucket_low(i);
      const uint64_t mid = low + (bucket_high(i) - low) / 2;
      return std::clamp(mid, min(), max_);
    }
  }
  return max_;
}

}  // namespace witmq::cli
