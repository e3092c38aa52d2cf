#include "cli/bench_schedule.h"

#include <algorithm>
#include <cmath>

namespace witmq::cli {

ArrivalSchedule::ArrivalSchedule(uint64_t start_ns, double rate_per_s)
    : start_ns_(start_ns), period_ns_(1e9L / static_cast<long double>(rate_per_s)) {}

uint64_t ArrivalSchedule::intended_ns(uint64_t k) const {
  return start_ns_ + static_cast<uint64_t>(std::floor(static_cast<long double>(k) * period_ns_));
}

uint64_t ArrivalSchedule::due_by(uint64_t now_ns) const {
  if (now_ns < start_ns_) return 0;
  // The estimate can be off by one either way where floating point rounds; intended_ns decides.
  uint64_t n =
      static_cast<uint64_t>(std::floor(static_cast<long double>(now_ns - start_ns_) / period_ns_)) +
      1;
  while (n > 0 && intended_ns(n - 1) > now_ns) --n;
  while (intended_ns(n) <= now_ns) ++n;
  return n;
}

ArrivalSchedule ArrivalSchedule::for_producer(uint64_t start_ns, double total_rate_per_s,
                                              uint32_t producers, uint32_t index) {
  const auto offset =
      static_cast<uint64_t>(std::floor(index * 1e9L / static_cast<long double>(total_rate_per_s)));
  return ArrivalSchedule(start_ns + offset, total_rate_per_s / producers);
}

uint64_t due_now(const ArrivalSchedule& schedule, uint64_t issued, uint64_t quota, uint64_t now_ns,
                 uint32_t batch) {
  const uint64_t due = std::min(schedule.due_by(now_ns), quota);
  if (due <= issued) return 0;
  return std::min<uint64_t>(due - issued, batch);
}

}  // namespace witmq::cli
