#include "cli/bench_options.h"

#include <fmt/format.h>

#include <charconv>

#include "cli/args.h"

namespace witmq::cli {
namespace {

constexpr OptionSpec kBenchOptions[] = {
    {"server", true},     {"token", true},         {"tls", false},
    {"ca-file", true},    {"cert-file", true},     {"key-file", true},
    {"insecure", false},  {"channel", true},       {"kind", true},
    {"durability", true}, {"producers", true},     {"consumers", true},
    {"messages", true},   {"duration", true},      {"size", true},
    {"batch", true},      {"pipeline", true},      {"consume-mode", true},
    {"credit", true},     {"receive-batch", true}, {"receive-pipeline", true},
    {"complete", false},  {"threads", true},       {"drain-timeout", true},
    {"json", false},      {"help", false},         {"rate", true},
    {"channels", true},   {"plot", true},          {"mode", true},
};

Error bench_error(const Error& e) { return invalid_argument("witmq-bench: " + e.message); }

}  // namespace

std::string bench_usage() {
  return R"(Usage: witmq-bench [options]

Runs producers and consumers against a running witmqd and reports throughput and end-to-end
latency. It stops by itself: after --messages (or --duration) are produced and consumed, or when
consumers make no progress for --drain-timeout.

  --server HOST:PORT[,HOST:PORT...]
                            the daemon, or a cluster's nodes: connections are spread over them
                            and skip one that cannot be reached (default $WITMQ_SERVER, else
                            127.0.0.1:7400)
  --token TOKEN             authentication token (default $WITMQ_TOKEN)
  --tls                     connect with TLS (the daemon's tls-listen port), verifying the
                            server's certificate and its name
  --ca-file PATH            PEM CAs to verify the server with (default: the system's)
  --cert-file PATH          PEM client certificate; --key-file PATH its private key
  --insecure                do not verify the server's certificate (prints a warning)
  --channel NAME            channel to use (default: a fresh witmq-bench-<pid>-<4 hex digits>,
                            deleted after)
  --kind KIND               point-to-point (default) or publish-subscribe
  --durability D            sync, group or none: declared on the channel (default: server's)
  --producers N             producer connections (default 1)
  --consumers N             consumer connections (default 1); on publish-subscribe each one
                            receives every message; 0 measures producing only
  --messages N              messages to produce in total (default 100000)
  --duration S              produce for S seconds instead (fractions allowed)
  --rate N                  open loop: send N messages per second in total, on a fixed
                            schedule, and measure latency from each message's intended send
                            time, so a producer that falls behind counts its lag (default:
                            closed loop, send whenever the pipeline has room)
  --channels N              use N channels (default 1): producers send batch after batch to
                            the next one, consumer i reads channel i mod N (--consumers must
                            be 0 or a multiple of N)
  --size BYTES              data bytes per message (default 128)
  --batch N                 messages per send (default 100)
  --pipeline N              sends in flight per producer (default 8)
  --consume-mode MODE       receive (subscribe-receive calls, default) or stream (streaming
                            with credit)
  --credit N                stream credit per consumer (default 2000)
  --receive-batch N         messages per receive reply or delivery: the batch-size extension
                            (default 1000)
  --receive-pipeline N      receive calls in flight per consumer (default 2)
  --complete                complete each message (explicit settlement); without it consumers
                            use settlement=auto (the broker settles on delivery)
  --threads N               I/O threads of the bench (default 1)
  --drain-timeout MS        stop when consumers stall this long after producing ended
                            (default 10000)
  --mode MODE               produce-consume (default) or request-reply: producers become
                            requesters, each with --pipeline requests waiting (default 8; 1
                            is one round trip at a time), consumers become responders that
                            stream the requests (--credit) and reply with the request's data;
                            the report gives round trips per second and their latency
                            percentiles (request sent to reply received)
  --json                    print the report as JSON
  --plot FILE.svg           also draw the latency percentile curve and the throughput over
                            the run into FILE.svg (an SVG image)
  --help                    this text

Latency is measured from the moment a producer hands a batch to the client library (with
--rate: from each message's intended send time) to the moment a consumer has the message, and
to the moment its send is confirmed: producers stamp a run id and a send time in the first 16
bytes of the data (in a "bench-stamp" metadata entry when --size is below 16).
Exit codes: 0 every message arrived, 1 errors or missing messages, 2 usage error, 3 cannot
connect.
)";
}

Result<BenchOptions> parse_bench_options(std::span<const std::string> args,
                                         const std::optional<std::string>& env_server,
                                         const std::optional<std::string>& env_token) {
  BenchOptions o;
  if (env_server) {
    auto eps = client::parse_endpoints(*env_server);
    if (!eps) {
      return invalid_argument("witmq-bench: " +
                              name_field("WITMQ_SERVER", "server address", eps.error().message));
    }
    o.servers = *eps;
    o.server = o.servers.front();
  }
  o.token = env_token;
  auto a = scan_args(args, kBenchOptions, "witmq-bench");
  if (!a) return std::move(a).error();
  if (a->has("help")) {
    o.help = true;
    return o;
  }
  if (!a->positional.empty()) {
    return invalid_argument(
        fmt::format("witmq-bench: unexpected argument '{}'", a->positional.front()));
  }
  if (const auto* s = a->last("server")) {
    auto eps = client::parse_endpoints(*s);
    if (!eps) {
      return invalid_argument("witmq-bench: " +
                              name_field("--server", "server address", eps.error().message));
    }
    o.servers = *eps;
    o.server = o.servers.front();
  }
  if (const auto* t = a->last("token")) o.token = *t;
  o.tls.enabled = a->has("tls");
  if (const auto* f = a->last("ca-file")) o.tls.ca_file = *f;
  if (const auto* f = a->last("cert-file")) o.tls.cert_file = *f;
  if (const auto* f = a->last("key-file")) o.tls.key_file = *f;
  o.tls.insecure = a->has("insecure");
  for (const char* option : {"ca-file", "cert-file", "key-file", "insecure"}) {
    if (a->has(option) && !o.tls.enabled) {
      return invalid_argument(fmt::format("witmq-bench: --{} needs --tls", option));
    }
  }
  if (o.tls.cert_file.empty() != o.tls.key_file.empty()) {
    return invalid_argument("witmq-bench: --cert-file and --key-file go together");
  }
  if (const auto* c = a->last("channel")) {
    auto st = validate_channel_name(*c);
    if (!st) {
      return invalid_argument("witmq-bench: " +
                              name_field("--channel", "channel", st.error().message));
    }
    o.channel = *c;
  }
  if (const auto* k = a->last("kind")) {
    if (*k != "point-to-point" && *k != "publish-subscribe") {
      return invalid_argument(
          fmt::format("witmq-bench: --kind: '{}' is not point-to-point or publish-subscribe", *k));
    }
    o.kind = *k;
  }
  if (const auto* d = a->last("durability")) {
    if (*d != "sync" && *d != "group" && *d != "none") {
      return invalid_argument(
          fmt::format("witmq-bench: --durability: '{}' is not sync, group or none", *d));
    }
    o.durability = *d;
  }
  struct U32Field {
    const char* name;
    uint32_t* out;
    uint64_t min, max;
  };
  const U32Field fields[] = {
      {"producers", &o.producers, 1, 1000},
      {"consumers", &o.consumers, 0, 1000},
      {"size", &o.size, 0, 1 << 20},
      {"batch", &o.batch, 1, 10'000},
      {"pipeline", &o.pipeline, 1, 10'000},
      {"credit", &o.credit, 1, 1'000'000},
      {"receive-batch", &o.receive_batch, 1, 10'000},
      {"receive-pipeline", &o.receive_pipeline, 1, 64},
      {"threads", &o.threads, 1, 64},
      {"drain-timeout", &o.drain_timeout_ms, 1, 3'600'000},
      {"channels", &o.channels, 1, 10'000},
  };
  for (const auto& f : fields) {
    if (const auto* v = a->last(f.name)) {
      auto n = parse_uint(f.name, *v, f.min, f.max);
      if (!n) return bench_error(n.error());
      *f.out = static_cast<uint32_t>(*n);
    }
  }
  if (const auto* m = a->last("messages")) {
    auto n = parse_uint("messages", *m, 1, 1'000'000'000'000);
    if (!n) return bench_error(n.error());
    o.messages = *n;
  }
  if (const auto* r = a->last("rate")) {
    auto n = parse_uint("rate", *r, 1, 100'000'000);
    if (!n) return bench_error(n.error());
    o.rate = *n;
  }
  if (o.consumers % o.channels != 0) {
    return invalid_argument(fmt::format(
        "witmq-bench: --consumers {} is not 0 or a multiple of --channels {}: every channel needs "
        "the same number of consumers",
        o.consumers, o.channels));
  }
  if (const auto* d = a->last("duration")) {
    if (a->has("messages")) {
      return invalid_argument("witmq-bench: --messages and --duration exclude each other");
    }
    double s = 0;
    auto [p, ec] = std::from_chars(d->data(), d->data() + d->size(), s);
    if (d->empty() || ec != std::errc() || p != d->data() + d->size() || !(s > 0) || s > 86400) {
      return invalid_argument(fmt::format(
          "witmq-bench: --duration: '{}' is not a number of seconds above 0 and at most 86400",
          *d));
    }
    o.duration_s = s;
  }
  if (const auto* m = a->last("consume-mode")) {
    if (*m == "receive") {
      o.mode = ConsumeMode::kReceive;
    } else if (*m == "stream") {
      o.mode = ConsumeMode::kStream;
    } else {
      return invalid_argument(
          fmt::format("witmq-bench: --consume-mode: '{}' is not receive or stream", *m));
    }
  }
  if (const auto* m = a->last("mode")) {
    if (*m == "produce-consume") {
      o.bench_mode = BenchMode::kProduceConsume;
    } else if (*m == "request-reply") {
      o.bench_mode = BenchMode::kRequestReply;
    } else {
      return invalid_argument(
          fmt::format("witmq-bench: --mode: '{}' is not produce-consume or request-reply", *m));
    }
  }
  if (o.bench_mode == BenchMode::kRequestReply) {
    if (o.consumers == 0) {
      return invalid_argument(
          "witmq-bench: --mode request-reply needs --consumers 1 or more "
          "(the responders)");
    }
    for (const char* unsupported : {"rate", "channels", "plot", "consume-mode", "batch"}) {
      if (a->has(unsupported)) {
        return invalid_argument(
            fmt::format("witmq-bench: --{} does not apply to --mode request-reply", unsupported));
      }
    }
  }
  o.complete = a->has("complete");
  o.json = a->has("json");
  if (const auto* f = a->last("plot")) {
    if (f->empty()) return invalid_argument("witmq-bench: --plot: the file name is empty");
    o.plot = *f;
  }
  return o;
}

}  // namespace witmq::cli
