#include "cli/command_line.h"

#include <fmt/format.h>

#include <array>

#include "cli/args.h"

namespace witmq::cli {
namespace {

struct CommandInfo {
  CommandKind kind;
  std::string_view name;
  std::string_view synopsis;
  std::string_view help;  // options and notes, after the synopsis
  std::vector<OptionSpec> options;
};

constexpr OptionSpec kGlobalOptions[] = {
    {"server", true},    {"name", true},    {"token", true},     {"connect-timeout", true},
    {"tls", false},      {"ca-file", true}, {"cert-file", true}, {"key-file", true},
    {"insecure", false}, {"json", false},   {"help", false},
};

constexpr std::string_view kGlobalHelp =
    R"(Global options (before or after the command):
  --server HOST:PORT[,HOST:PORT...]
                          the daemon, or a cluster's nodes tried in order, moving to the next
                          when a connection is lost (default $WITMQ_SERVER, else 127.0.0.1:7400)
  --name NAME             client name sent in connect; a name makes publish-subscribe
                          subscriptions durable under it (default: anonymous)
  --token TOKEN           authentication token (default $WITMQ_TOKEN)
  --connect-timeout MS    give up connecting after MS milliseconds (default 5000)
  --tls                   connect with TLS (the daemon's tls-listen port); the server's
                          certificate must chain to a trusted CA and name the --server host
  --ca-file PATH          PEM CAs to verify the server with (default: the system's)
  --cert-file PATH        PEM client certificate, for a daemon that asks for one
  --key-file PATH         PEM private key of --cert-file
  --insecure              do not verify the server's certificate (prints a warning)
  --json                  machine-readable output (JSON)
  --help, -h              this text

Exit codes: 0 ok, 1 the server refused the request, 2 usage error, 3 cannot connect or the
connection was lost, 4 receive: nothing arrived within the timeout; request: no reply came
within the timeout.
)";

const std::vector<CommandInfo>& commands() {
  static const std::vector<CommandInfo> kCommands = {
      {CommandKind::kSend,
       "send",
       "send CHANNEL [DATA | -] [options]",
       R"(Sends a message to CHANNEL. DATA is the message's data; '-' or no DATA reads it from stdin.
  --format FORMAT   cloudevents, http, amqp, mqtt, kafka or raw (default raw)
  --meta KEY=VALUE  a metadata entry; repeat for more (keys starting 'witmq-' are dropped by
                    the server)
  --count N         send the message N times (default 1)
  --lines           each line of stdin is one message (needs '-' or no DATA)
  --batch N         messages per send request (default 1000)
Prints "sent N message(s) to CHANNEL" once the server confirmed them durable; with --json
{"channel":CHANNEL,"sent":N}.
)",
       {{"format", true}, {"meta", true}, {"count", true}, {"lines", false}, {"batch", true}}},
      {CommandKind::kReceive,
       "receive",
       "receive CHANNEL [options]",
       R"(Receives messages from CHANNEL and prints them.
  --timeout MS      stop after MS milliseconds in all, counted from the start of the receive,
                    not per message (default 5000); 0 takes what is available at once
  --wait            no time limit: wait until --max messages have arrived
  --max N           stop after N messages (default 1)
  --complete        complete each message after printing it (settled)
  --abandon         abandon each message after printing it (redelivered or dead-lettered
                    as the channel's policy says)
  --data-only       print only each message's data, each followed by a newline
  --ext KEY=VALUE   a guest-configuration extension (start, group, lease-ms, ...); repeatable
Without --complete or --abandon the messages stay acquired until the connection closes, which
counts as a failed delivery attempt. Exit code 4 when nothing arrived in time.
)",
       {{"timeout", true},
        {"wait", false},
        {"max", true},
        {"complete", false},
        {"abandon", false},
        {"data-only", false},
        {"ext", true}}},
      {CommandKind::kChannels,
       "channels",
       "channels",
       "Lists the channels with their kind, durability, depth and messages in flight.\n",
       {}},
      {CommandKind::kDeclare,
       "declare",
       "declare CHANNEL --kind point-to-point|publish-subscribe [options]",
       R"(Creates CHANNEL, or updates the settings of an existing one (its kind cannot change).
  --kind KIND         point-to-point (alias queue) or publish-subscribe (alias topic)
  --durability D      sync, group or none
  --set KEY=VALUE     any channel setting (max-deliveries, lease-ms, abandon-policy,
                      backoff-initial-ms, backoff-max-ms, dead-letter-channel, retention-ms,
                      retention-bytes); a numeric VALUE is sent as a number; repeatable
Prints "declared CHANNEL"; with --json {"declared":CHANNEL}.
)",
       {{"kind", true}, {"durability", true}, {"set", true}}},
      {CommandKind::kDelete,
       "delete",
       "delete CHANNEL",
       "Deletes CHANNEL and its messages. Prints \"deleted CHANNEL\"; with --json "
       "{\"deleted\":CHANNEL}.\n",
       {}},
      {CommandKind::kStats,
       "stats",
       "stats CHANNEL",
       "Prints CHANNEL's settings, depth, in-flight count, counters and subscriptions.\n",
       {}},
      {CommandKind::kDeadLetters,
       "dead-letters",
       "dead-letters CHANNEL [options]",
       R"(Browses the dead-letter channel of CHANNEL (its dead-letter-channel setting, by default
CHANNEL.dlq) without acquiring anything. A CHANNEL ending in '.dlq' is browsed itself. A
dead-letter channel not yet created (no dead letter so far) prints nothing.
  --from SEQ      first sequence to show (default 0)
  --max N         at most N messages (default 100)
  --data-only     print only each message's data
)",
       {{"from", true}, {"max", true}, {"data-only", false}}},
      {CommandKind::kReplay,
       "replay",
       "replay CHANNEL [--max N]",
       R"(Moves the dead letters of CHANNEL (from its dead-letter channel) back to their source
channels, each move one atomic write. Prints how many moved (0 when the dead-letter channel
was not created yet).
  --max N         move at most N (default all)
)",
       {{"max", true}}},
      {CommandKind::kPurge,
       "purge",
       "purge CHANNEL",
       "Settles every available message of CHANNEL; prints how many were removed.\n",
       {}},
      {CommandKind::kServerStats,
       "server-stats",
       "server-stats",
       "Prints the server's counters (JSON).\n",
       {}},
      {CommandKind::kCluster,
       "cluster",
       "cluster",
       R"(Prints the cluster as the server sees it: this node and its state (member or
lost-etcd), the live nodes, and each channel's replicas, leader and leader epoch
(docs/CLUSTERING.md). Exit code 1 when the server is not in cluster mode.
)",
       {}},
      {CommandKind::kPing,
       "ping",
       "ping",
       "Connects and exchanges a ping; exit code 0 when the server answers.\n",
       {}},
      {CommandKind::kRequest,
       "request",
       "request CHANNEL [DATA | -] [options]",
       R"(Sends DATA to CHANNEL as a request and prints the replies. '-' or no DATA reads stdin.
  --timeout MS      wait at most MS milliseconds for replies (default 5000)
  --replies N       wait for N replies (default 1): a publish-subscribe channel's
                    subscribers each answer (scatter-gather); at the timeout, those that came
  --format FORMAT   cloudevents, http, amqp, mqtt, kafka or raw (default raw)
  --meta KEY=VALUE  a metadata entry; repeatable
  --data-only       print only each reply's data, each followed by a newline
Exit code 4 when no reply came within the timeout.
)",
       {{"timeout", true},
        {"replies", true},
        {"format", true},
        {"meta", true},
        {"data-only", false}}},
      {CommandKind::kRespond,
       "respond",
       "respond CHANNEL (--exec CMD | --echo) [options]",
       R"(Answers the requests that arrive on CHANNEL, one at a time, until stopped.
  --exec CMD        run CMD with 'sh -c' for each request: the request's data on its stdin,
                    its stdout the reply; a CMD that exits non-zero abandons the request
                    (another responder may get it) and the reason goes to stderr
  --echo            reply with the request's data
  --max N           stop after answering N requests (default: never)
  --ext KEY=VALUE   a guest-configuration extension (group, lease-ms, ...); repeatable
Each request is completed once answered. A message that is not a request (no witmq-reply-to)
is completed unanswered, noted on stderr.
)",
       {{"exec", true}, {"echo", false}, {"max", true}, {"ext", true}}},
  };
  return kCommands;
}

const CommandInfo* find_command(std::string_view name) {
  for (const auto& c : commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const CommandInfo& info_of(CommandKind kind) {
  for (const auto& c : commands()) {
    if (c.kind == kind) return c;
  }
  return commands().front();
}

Result<uint32_t> parse_u32(std::string_view option, const std::string& text, uint32_t min,
                           uint32_t max) {
  auto v = parse_uint(option, text, min, max);
  if (!v) return std::move(v).error();
  return static_cast<uint32_t>(*v);
}

Error usage_error(std::string_view command, std::string_view what) {
  return invalid_argument(fmt::format("witmq {}: {}", command, what));
}

// Applies the global options in `a`; `context` starts the error text ("witmq" for the options
// before the command, "witmq send" for those after it).
Status apply_global(const ParsedArgs& a, std::string_view context, CliCommand& cmd) {
  if (const auto* s = a.last("server")) {
    auto eps = client::parse_endpoints(*s);
    if (!eps) {
      return invalid_argument(fmt::format(
          "{}: {}", context, name_field("--server", "server address", eps.error().message)));
    }
    cmd.servers = *eps;
    cmd.server = cmd.servers.front();
  }
  if (const auto* n = a.last("name")) cmd.name = *n;
  if (const auto* t = a.last("token")) cmd.token = *t;
  if (const auto* t = a.last("connect-timeout")) {
    auto v = parse_u32("connect-timeout", *t, 1, 3'600'000);
    if (!v) return invalid_argument(fmt::format("{}: {}", context, v.error().message));
    cmd.connect_timeout_ms = *v;
  }
  if (a.has("json")) cmd.output = OutputMode::kJson;
  if (a.has("tls")) cmd.tls.enabled = true;
  if (const auto* f = a.last("ca-file")) cmd.tls.ca_file = *f;
  if (const auto* f = a.last("cert-file")) cmd.tls.cert_file = *f;
  if (const auto* f = a.last("key-file")) cmd.tls.key_file = *f;
  if (a.has("insecure")) cmd.tls.insecure = true;
  return ok_status();
}

// The TLS options once every global option is in: the files and --insecure need --tls, and a
// client certificate needs its key.
Status check_tls(std::string_view context, const client::TlsClientOptions& tls) {
  const std::pair<std::string_view, bool> given[] = {{"--ca-file", !tls.ca_file.empty()},
                                                     {"--cert-file", !tls.cert_file.empty()},
                                                     {"--key-file", !tls.key_file.empty()},
                                                     {"--insecure", tls.insecure}};
  for (const auto& [option, set] : given) {
    if (set && !tls.enabled) {
      return invalid_argument(fmt::format("{}: {} needs --tls", context, option));
    }
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return invalid_argument(
        fmt::format("{}: --cert-file and --key-file go together (a client certificate and its "
                    "private key)",
                    context));
  }
  if (tls.insecure && !tls.ca_file.empty()) {
    return invalid_argument(
        fmt::format("{}: --insecure and --ca-file exclude each other", context));
  }
  return ok_status();
}

}  // namespace

std::string_view command_name(CommandKind kind) {
  if (kind == CommandKind::kHelp) return "help";
  return info_of(kind).name;
}

std::string usage(std::optional<CommandKind> command) {
  if (command && *command != CommandKind::kHelp) {
    const auto& c = info_of(*command);
    return fmt::format("Usage: witmq [global options] {}\n\n{}\n{}", c.synopsis, c.help,
                       kGlobalHelp);
  }
  std::string out = "Usage: witmq [global options] COMMAND [arguments]\n\nCommands:\n";
  for (const auto& c : commands()) out += fmt::format("  {}\n", c.synopsis);
  out += "\n'witmq COMMAND --help' describes one command.\n\n";
  out += kGlobalHelp;
  return out;
}

Result<CliCommand> parse_command_line(std::span<const std::string> args,
                                      const CliEnvironment& env) {
  CliCommand cmd;
  if (env.server) {
    auto eps = client::parse_endpoints(*env.server);
    if (!eps) {
      return invalid_argument("witmq: " +
                              name_field("WITMQ_SERVER", "server address", eps.error().message));
    }
    cmd.servers = *eps;
    cmd.server = cmd.servers.front();
  }
  cmd.token = env.token;

  auto globals = scan_args(args, kGlobalOptions, "witmq", /*stop_at_positional=*/true);
  if (!globals) return std::move(globals).error();
  WITMQ_RETURN_IF_ERROR(apply_global(*globals, "witmq", cmd));
  if (globals->positional.empty()) {
    if (globals->has("help")) return cmd;  // kHelp, overview
    return invalid_argument("witmq: no command given (see witmq --help)");
  }
  const std::string& name = globals->positional.front();
  if (name == "help") {
    if (globals->positional.size() > 1) {
      const CommandInfo* topic = find_command(globals->positional[1]);
      if (!topic) {
        return invalid_argument(
            fmt::format("witmq help: unknown command '{}'", globals->positional[1]));
      }
      cmd.help_topic = topic->kind;
    }
    return cmd;
  }
  const CommandInfo* info = find_command(name);
  if (!info) {
    return invalid_argument(fmt::format("witmq: unknown command '{}' (see witmq --help)", name));
  }

  std::vector<OptionSpec> specs(std::begin(kGlobalOptions), std::end(kGlobalOptions));
  specs.insert(specs.end(), info->options.begin(), info->options.end());
  std::string context = fmt::format("witmq {}", info->name);
  auto rest = std::span<const std::string>(globals->positional).subspan(1);
  auto a = scan_args(rest, specs, context);
  if (!a) return std::move(a).error();
  WITMQ_RETURN_IF_ERROR(apply_global(*a, context, cmd));
  if (a->has("help") || globals->has("help")) {
    cmd.help_topic = info->kind;
    return cmd;
  }
  WITMQ_RETURN_IF_ERROR(check_tls(context, cmd.tls));
  cmd.kind = info->kind;

  // Positionals: CHANNEL for all but channels/server-stats/cluster/ping; send takes an optional
  // DATA.
  const auto& pos = a->positional;
  const bool needs_channel = cmd.kind != CommandKind::kChannels &&
                             cmd.kind != CommandKind::kServerStats &&
                             cmd.kind != CommandKind::kCluster && cmd.kind != CommandKind::kPing;
  const bool takes_data = cmd.kind == CommandKind::kSend || cmd.kind == CommandKind::kRequest;
  const size_t max_positional = takes_data ? 2 : (needs_channel ? 1 : 0);
  if (needs_channel && pos.empty()) return usage_error(info->name, "missing CHANNEL");
  if (pos.size() > max_positional) {
    return usage_error(info->name, fmt::format("unexpected argument '{}'", pos[max_positional]));
  }
  if (needs_channel) {
    cmd.channel = pos[0];
    auto st = validate_channel_name(cmd.channel);
    if (!st) return usage_error(info->name, name_field("CHANNEL", "channel", st.error().message));
  }

  switch (cmd.kind) {
    case CommandKind::kSend: {
      if (pos.size() == 2 && pos[1] != "-") cmd.data = pos[1];
      if (const auto* f = a->last("format")) {
        auto fmt_value = parse_format(*f);
        if (!fmt_value) return usage_error(info->name, "--" + fmt_value.error().message);
        cmd.format = *fmt_value;
      }
      for (const auto& m : a->all("meta")) {
        auto kv = parse_key_value("meta", m);
        if (!kv) return usage_error(info->name, kv.error().message);
        cmd.metadata.push_back(std::move(*kv));
      }
      if (const auto* c = a->last("count")) {
        auto v = parse_uint("count", *c, 1, 1'000'000'000);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.count = *v;
      }
      if (const auto* b = a->last("batch")) {
        auto v = parse_u32("batch", *b, 1, 10'000);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.batch = *v;
      }
      cmd.lines = a->has("lines");
      if (cmd.lines && cmd.data) {
        return usage_error(info->name, "--lines reads stdin; give '-' or no DATA");
      }
      break;
    }
    case CommandKind::kReceive: {
      if (const auto* t = a->last("timeout")) {
        auto v = parse_u32("timeout", *t, 0, 86'400'000);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.timeout_ms = *v;
      }
      cmd.wait = a->has("wait");
      if (cmd.wait && a->has("timeout")) {
        return usage_error(info->name, "--wait and --timeout exclude each other");
      }
      if (const auto* m = a->last("max")) {
        auto v = parse_u32("max", *m, 1, 1'000'000'000);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.max = *v;
      }
      if (a->has("complete") && a->has("abandon")) {
        return usage_error(info->name, "--complete and --abandon exclude each other");
      }
      if (a->has("complete")) cmd.settle = Settle::kComplete;
      if (a->has("abandon")) cmd.settle = Settle::kAbandon;
      for (const auto& e : a->all("ext")) {
        auto kv = parse_key_value("ext", e);
        if (!kv) return usage_error(info->name, kv.error().message);
        cmd.extensions.push_back(std::move(*kv));
      }
      // The server applies extensions in order, so the last settlement counts. With auto the
      // broker settles on delivery and a later complete or abandon could only fail.
      std::string_view settlement;
      for (const auto& [key, value] : cmd.extensions) {
        if (key == "settlement") settlement = value;
      }
      if (settlement == "auto" && cmd.settle != Settle::kNone) {
        return usage_error(
            info->name,
            fmt::format("--ext settlement=auto settles each message on delivery; it excludes --{}",
                        cmd.settle == Settle::kComplete ? "complete" : "abandon"));
      }
      if (a->has("data-only")) {
        if (cmd.output == OutputMode::kJson) {
          return usage_error(info->name, "--json and --data-only exclude each other");
        }
        cmd.output = OutputMode::kDataOnly;
      }
      break;
    }
    case CommandKind::kDeclare: {
      const auto* kind = a->last("kind");
      if (!kind) {
        return usage_error(info->name, "missing --kind point-to-point|publish-subscribe");
      }
      // queue and topic are the server's aliases (docs/CONFIGURATION.md); they are sent as given.
      if (*kind != "point-to-point" && *kind != "publish-subscribe" && *kind != "queue" &&
          *kind != "topic") {
        return usage_error(info->name,
                           fmt::format("--kind: '{}' is not point-to-point (alias queue) or "
                                       "publish-subscribe (alias topic)",
                                       *kind));
      }
      cmd.settings.emplace_back("kind", *kind);
      if (const auto* d = a->last("durability")) {
        if (*d != "sync" && *d != "group" && *d != "none") {
          return usage_error(info->name,
                             fmt::format("--durability: '{}' is not sync, group or none", *d));
        }
        cmd.settings.emplace_back("durability", *d);
      }
      for (const auto& s : a->all("set")) {
        auto kv = parse_key_value("set", s);
        if (!kv) return usage_error(info->name, kv.error().message);
        cmd.settings.push_back(std::move(*kv));
      }
      break;
    }
    case CommandKind::kRequest: {
      if (pos.size() == 2 && pos[1] != "-") cmd.data = pos[1];
      if (const auto* t = a->last("timeout")) {
        auto v = parse_u32("timeout", *t, 1, 86'400'000);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.timeout_ms = *v;
      }
      if (const auto* r = a->last("replies")) {
        auto v = parse_u32("replies", *r, 1, 1000);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.replies = *v;
      }
      if (const auto* f = a->last("format")) {
        auto fmt_value = parse_format(*f);
        if (!fmt_value) return usage_error(info->name, "--" + fmt_value.error().message);
        cmd.format = *fmt_value;
      }
      for (const auto& m : a->all("meta")) {
        auto kv = parse_key_value("meta", m);
        if (!kv) return usage_error(info->name, kv.error().message);
        cmd.metadata.push_back(std::move(*kv));
      }
      if (a->has("data-only")) {
        if (cmd.output == OutputMode::kJson) {
          return usage_error(info->name, "--json and --data-only exclude each other");
        }
        cmd.output = OutputMode::kDataOnly;
      }
      break;
    }
    case CommandKind::kRespond: {
      const auto* exec = a->last("exec");
      if ((exec != nullptr) == a->has("echo")) {
        return usage_error(info->name, "give one of --exec CMD and --echo");
      }
      if (exec) {
        if (exec->empty()) return usage_error(info->name, "--exec: the command is empty");
        cmd.exec = *exec;
      }
      if (const auto* m = a->last("max")) {
        auto v = parse_uint("max", *m, 1, UINT64_MAX);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.respond_max = *v;
      }
      for (const auto& e : a->all("ext")) {
        auto kv = parse_key_value("ext", e);
        if (!kv) return usage_error(info->name, kv.error().message);
        cmd.extensions.push_back(std::move(*kv));
      }
      break;
    }
    case CommandKind::kDeadLetters: {
      cmd.max = 100;
      if (const auto* f = a->last("from")) {
        auto v = parse_uint("from", *f, 0, UINT64_MAX);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.from = *v;
      }
      if (const auto* m = a->last("max")) {
        auto v = parse_u32("max", *m, 1, 10'000);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.max = *v;
      }
      if (a->has("data-only")) {
        if (cmd.output == OutputMode::kJson) {
          return usage_error(info->name, "--json and --data-only exclude each other");
        }
        cmd.output = OutputMode::kDataOnly;
      }
      break;
    }
    case CommandKind::kReplay: {
      if (const auto* m = a->last("max")) {
        auto v = parse_uint("max", *m, 1, UINT64_MAX);
        if (!v) return usage_error(info->name, v.error().message);
        cmd.replay_max = *v;
      }
      break;
    }
    default:
      break;
  }
  return cmd;
}

}  // namespace witmq::cli
