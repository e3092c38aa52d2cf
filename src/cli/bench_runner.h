// witmq-bench's load: producers and consumers on AsyncClient connections sharing one io_context,
// and the report they produce.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cli/bench_options.h"
#include "cli/latency_histogram.h"
#include "common/result.h"

namespace witmq::cli {

// Throughput of one side (producers or consumers).
struct SideFigures {
  uint64_t messages = 0;
  uint64_t bytes = 0;  // data bytes
  double seconds = 0;  // from the start to the side's last message
  double msgs_per_s() const { return seconds > 0 ? messages / seconds : 0; }
  double mb_per_s() const { return seconds > 0 ? bytes / seconds / 1e6 : 0; }
};

struct BenchReport {
  BenchOptions options;
  std::string channel;               // the channel used (the first of them with --channels)
  SideFigures produced;              // confirmed by send-ok
  SideFigures consumed;              // received by all consumers together
  uint64_t expected = 0;             // messages the consumers should have received together
  uint64_t completed = 0;            // complete-message calls answered ok
  uint64_t foreign = 0;              // received messages not produced by this run
  LatencyHistogram latency;          // nanoseconds, producer hand-off to consumer receipt
  LatencyHistogram confirm_latency;  // nanoseconds, producer hand-off to send-ok
  uint64_t max_lag_ns = 0;           // --rate: the furthest a send fell behind its intended time
  std::vector<std::string> errors;   // the first errors seen, for the report
  // The counters over the run, sampled every kSampleInterval from the start (the last sample at
  // the end): what the throughput plot draws.
  struct Sample {
    double seconds = 0;  // since the start
    uint64_t produced = 0, consumed = 0;
  };
  static constexpr double kSampleSeconds = 0.1;
  std::vector<Sample> timeline;

  // Every expected message arrived and nothing failed.
  bool ok() const { return errors.empty() && consumed.messages >= expected; }
};

// The payload stamp: run id and send time (steady clock, ns) in the first 16 bytes of the data.
inline constexpr size_t kStampBytes = 16;
// Writes the stamp into `data` (at least kStampBytes long).
void write_stamp(std::span<uint8_t> data, uint64_t run_id, uint64_t send_ns);
// Reads a stamp written by write_stamp; false when `data` is shorter or the run id differs.
bool read_stamp(std::span<const uint8_t> data, uint64_t run_id, uint64_t* send_ns);

// Connects, declares the channel, runs the load and returns the figures. Errors: kUnavailable
// when a connection cannot be made, the server's error when declaring the channel fails.
Result<BenchReport> run_bench(const BenchOptions& options);

// The report as a human table, or as one JSON object.
std::string format_report(const BenchReport& report, bool json);

}  // namespace witmq::cli
