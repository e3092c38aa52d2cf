// The open-loop schedule of witmq-bench --rate (pure, unit-tested): when each message is meant
// to be sent. Producers stamp every message with its intended send time, not with the time they
// got round to sending it, so a producer that falls behind (the server pushed back, the window of
// unconfirmed sends was full, the bench was descheduled) adds its lag to the latency of the late
// messages instead of hiding it (no coordinated omission).
#pragma once

#include <cstdint>

namespace witmq::cli {

class ArrivalSchedule {
 public:
  // Message k (from 0) is due at start_ns + floor(k * 1e9 / rate_per_s). `rate_per_s` > 0.
  ArrivalSchedule(uint64_t start_ns, double rate_per_s);

  // The intended send time of message k.
  uint64_t intended_ns(uint64_t k) const;
  // How many messages are due by `now_ns`: the number of k with intended_ns(k) <= now_ns.
  uint64_t due_by(uint64_t now_ns) const;

  // The schedule of producer `index` of `producers` sharing a total rate: each gets
  // rate / producers, and their first messages are spread over one period of the total rate
  // (producer i starts at start_ns + i * 1e9 / rate), so that together they send evenly.
  static ArrivalSchedule for_producer(uint64_t start_ns, double total_rate_per_s,
                                      uint32_t producers, uint32_t index);

 private:
  uint64_t start_ns_;
  long double period_ns_;
};

// How many messages an open-loop producer sends at `now_ns` after having issued `issued` of its
// `quota`: those already due, at most `batch` of them in one send. 0 means wait until
// schedule.intended_ns(issued).
uint64_t due_now(const ArrivalSchedule& schedule, uint64_t issued, uint64_t quota, uint64_t now_ns,
                 uint32_t batch);

// The latency of a message intended at `intended_ns` and received at `received_ns` (0 if the
// clock readings are out of order).
inline uint64_t latency_from(uint64_t intended_ns, uint64_t received_ns) {
  return received_ns > intended_ns ? received_ns - intended_ns : 0;
}

}  // namespace witmq::cli
