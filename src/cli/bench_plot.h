// witmq-bench --plot: the run drawn as an SVG image, written directly (no plotting dependency).
// Two charts: the latency percentile curve in the HdrHistogram style (x = percentile on a log
// "nines" scale, 0% .. 99.99..%, y = latency) for the received and the confirmed latencies, and
// the throughput over the run (messages per second produced and consumed, per sampling interval).
//
// The marked points carry their exact figures as attributes, so that a program can read the
// image back: each <circle class="mark"> has data-series ("received" or "confirmed"),
// data-percentile (50, 90, 99, 99.9, ... and 100 for the maximum) and data-latency-us (the
// histogram's value there, as the --json report gives it); each throughput <polyline> has
// data-series ("produced" or "consumed") and data-messages (the messages its intervals add up to).
#pragma once

#include <string>

#include "cli/bench_runner.h"
#include "common/result.h"

namespace witmq::cli {

// The SVG document for `report` (UTF-8 text).
std::string bench_plot_svg(const BenchReport& report);

// Writes bench_plot_svg(report) to `path`; the error names the file and why it failed.
Status write_bench_plot(const BenchReport& report, const std::string& path);

}  // namespace witmq::cli
