// The command line of witmq-bench, parsed into a value (pure, unit-tested).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "client/types.h"
#include "common/result.h"

namespace witmq::cli {

enum class ConsumeMode {
  kReceive,  // subscribe-receive calls, --receive-pipeline of them outstanding per consumer
  kStream,   // stream-start with --credit, credit granted back as messages are handled
};

enum class BenchMode {
  kProduceConsume,  // producers send, consumers receive (the default)
  kRequestReply,    // producers are requesters, consumers responders (cli/bench_request_reply.h)
};

struct BenchOptions {
  BenchMode bench_mode = BenchMode::kProduceConsume;  // --mode produce-consume|request-reply
  // --server (default $WITMQ_SERVER, else 127.0.0.1:7400): one address or a comma-separated list
  // (a cluster's nodes); `server` is the first. Connection i goes to servers[i % n] first and
  // to the next ones when that one cannot be reached.
  client::Endpoint server;
  std::vector<client::Endpoint> servers;
  std::optional<std::string> token;  // --token (default $WITMQ_TOKEN)
  // --tls, --ca-file, --cert-file, --key-file, --insecure, as for witmq.
  client::TlsClientOptions tls;
  std::string channel;  // --channel; "" = a fresh "witmq-bench-<pid>-<4 hex>", deleted after
  std::string kind = "point-to-point";    // --kind
  std::optional<std::string> durability;  // --durability sync|group|none; the server default if not
  uint32_t producers = 1;                 // --producers
  uint32_t consumers = 1;                 // --consumers; 0 = produce only
  uint64_t messages = 100'000;            // --messages: total over all producers
  std::optional<double> duration_s;       // --duration: produce for this long instead of --messages
  // --rate: open loop, messages per second over all producers, each message's latency counted
  // from its intended send time (cli/bench_schedule.h); unset = closed loop (send when the
  // window has room).
  std::optional<uint64_t> rate;
  uint32_t channels = 1;                     // --channels: channels, consumer i reads channel i % N
  uint32_t size = 128;                       // --size: data bytes per message
  uint32_t batch = 100;                      // --batch: messages per send
  uint32_t pipeline = 8;                     // --pipeline: outstanding sends per producer
  ConsumeMode mode = ConsumeMode::kReceive;  // --consume-mode
  uint32_t credit = 2000;                    // --credit: stream credit per consumer
  uint32_t receive_batch = 1000;             // --receive-batch: the batch-size extension
  uint32_t receive_pipeline = 2;       // --receive-pipeline: outstanding receives per consumer
  bool complete = false;               // --complete: complete-message for each message
  uint32_t threads = 1;                // --threads: I/O threads of the bench
  uint32_t drain_timeout_ms = 10'000;  // --drain-timeout: give up when consumers stall this long
  bool json = false;                   // --json
  std::string plot;                    // --plot FILE.svg: "" = no plot (cli/bench_plot.h)
  bool help = false;                   // --help
};

// Parses the arguments after the program name. `env_server` / `env_token` are $WITMQ_SERVER and
// $WITMQ_TOKEN.
Result<BenchOptions> parse_bench_options(std::span<const std::string> args,
                                         const std::optional<std::string>& env_server,
                                         const std::optional<std::string>& env_token);

std::string bench_usage();

}  // namespace witmq::cli
