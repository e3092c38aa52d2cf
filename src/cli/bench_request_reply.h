// witmq-bench --mode request-reply: requesters send requests to a channel and wait for the
// replies, responders answer each with the request's data. Measures round trips per second and
// the round-trip latency (request handed to the client library to reply received).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/bench_options.h"
#include "cli/latency_histogram.h"
#include "common/result.h"

namespace witmq::cli {

struct RequestReplyReport {
  BenchOptions options;
  std::string channel;
  uint64_t round_trips = 0;  // requests answered with their reply
  uint64_t failures = 0;     // requests that ended with an error (a timeout, say)
  double seconds = 0;        // from the first request to the last answer
  LatencyHistogram latency;  // nanoseconds per round trip
  std::vector<std::string> errors;  // the first errors seen

  double round_trips_per_s() const { return seconds > 0 ? round_trips / seconds : 0; }
  bool ok() const { return errors.empty() && failures == 0; }
};

// Connects the responders (--consumers) and requesters (--producers), runs --messages requests
// in all (or --duration seconds) and returns the figures.
Result<RequestReplyReport> run_request_reply_bench(const BenchOptions& options);

std::string format_request_reply_report(const RequestReplyReport& report, bool json);

}  // namespace witmq::cli
