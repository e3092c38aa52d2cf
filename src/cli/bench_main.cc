// witmq-bench: producers and consumers against a running witmqd; throughput and latency.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli/bench_options.h"
#include "cli/bench_plot.h"
#include "cli/bench_request_reply.h"
#include "cli/bench_runner.h"
#include "cli/exit_codes.h"

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::optional<std::string>(v) : std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace witmq::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto options = parse_bench_options(args, env("WITMQ_SERVER"), env("WITMQ_TOKEN"));
  if (!options.ok()) {
    std::cerr << options.error().message << "\n";
    return kExitUsage;
  }
  if (options->help) {
    std::cout << bench_usage();
    return kExitOk;
  }
  if (options->tls.insecure) {
    std::cerr << "witmq-bench: warning: --insecure: the server's certificate is not verified\n";
  }
  if (options->bench_mode == BenchMode::kRequestReply) {
    auto rr = run_request_reply_bench(*options);
    if (!rr.ok()) {
      std::cerr << "witmq-bench: " << rr.error().to_string() << "\n";
      return rr.error().code == witmq::ErrorCode::kUnavailable ? kExitUnavailable
                                                               : kExitServerError;
    }
    std::cout << format_request_reply_report(*rr, options->json);
    return rr->ok() ? kExitOk : kExitServerError;
  }
  auto report = run_bench(*options);
  if (!report.ok()) {
    std::cerr << "witmq-bench: " << report.error().to_string() << "\n";
    return report.error().code == witmq::ErrorCode::kUnavailable ? kExitUnavailable
                                                                 : kExitServerError;
  }
  std::cout << format_report(*report, options->json);
  if (!options->plot.empty()) {
    if (auto st = write_bench_plot(*report, options->plot); !st.ok()) {
      std::cerr << "witmq-bench: " << st.error().message << "\n";
      return kExitServerError;
    }
  }
  return report->ok() ? kExitOk : kExitServerError;
}
