// The command line of `witmq`, parsed into a value: what to run and against which server.
// Parsing is pure (no I/O) so every rule is unit-tested; docs/CLI.md is the user's reference.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "client/types.h"
#include "common/message.h"
#include "common/result.h"

namespace witmq::cli {

enum class CommandKind {
  kHelp,         // witmq help [COMMAND], witmq --help
  kSend,         // send CHANNEL [DATA | -]
  kReceive,      // receive CHANNEL
  kChannels,     // channels
  kDeclare,      // declare CHANNEL --kind ...
  kDelete,       // delete CHANNEL
  kStats,        // stats CHANNEL
  kDeadLetters,  // dead-letters CHANNEL
  kReplay,       // replay CHANNEL
  kPurge,        // purge CHANNEL
  kServerStats,  // server-stats
  kCluster,      // cluster
  kPing,         // ping
  kRequest,      // request CHANNEL [DATA | -]
  kRespond,      // respond CHANNEL --exec CMD | --echo
};

// What receive does with each message it prints.
enum class Settle { kNone, kComplete, kAbandon };

// How messages are printed.
enum class OutputMode {
  kText,      // a header line per message, its metadata, then its data
  kJson,      // one JSON object per line
  kDataOnly,  // just each message's data, followed by a newline
};

struct CliCommand {
  CommandKind kind = CommandKind::kHelp;
  // kHelp: the command whose usage to print; nullopt = the overview.
  std::optional<CommandKind> help_topic;

  // Global options.
  // --server, else $WITMQ_SERVER, else 127.0.0.1:7400: one address or a comma-separated list
  // (a cluster's nodes), tried in order; `server` is the first.
  client::Endpoint server;
  std::vector<client::Endpoint> servers;
  std::string name;                    // --name: the client name ("" = anonymous)
  std::optional<std::string> token;    // --token, else $WITMQ_TOKEN
  uint32_t connect_timeout_ms = 5000;  // --connect-timeout
  // --tls, --ca-file, --cert-file, --key-file, --insecure (each of the last four needs --tls).
  client::TlsClientOptions tls;
  OutputMode output = OutputMode::kText;  // --json / --data-only

  std::string channel;

  // send
  std::optional<std::string> data;  // DATA; nullopt = read stdin ("-" or no DATA)
  bool lines = false;               // --lines: each line of stdin is one message
  Format format = Format::kRaw;     // --format
  Metadata metadata;                // --meta KEY=VALUE ...
  uint64_t count = 1;               // --count: send the message(s) this many times
  uint32_t batch = 1000;            // --batch: messages per send frame

  // receive
  uint32_t timeout_ms = 5000;  // --timeout: one deadline for the whole receive, not per message
  bool wait = false;           // --wait: wait as long as it takes
  uint32_t max = 1;            // --max: stop after this many messages (receive, dead-letters)
  Settle settle = Settle::kNone;
  Metadata extensions;  // --ext KEY=VALUE: guest-configuration extensions

  // request: --timeout is timeout_ms (default 5000, 1 and up), --replies N
  uint32_t replies = 1;
  // respond: --exec CMD (run with sh -c, the request's data on stdin, its stdout the reply) or
  // --echo (exec empty); --max N stops after N requests (0 = never)
  std::string exec;
  uint64_t respond_max = 0;

  // declare: kind and durability are stored as settings entries, in order.
  client::ChannelSettings settings;

  // dead-letters
  uint64_t from = 0;  // --from: first sequence to browse

  // replay
  std::optional<uint64_t> replay_max;  // --max for replay: nullopt = all
};

// The environment the parser reads (kept apart so tests need no real environment).
struct CliEnvironment {
  std::optional<std::string> server;  // WITMQ_SERVER
  std::optional<std::string> token;   // WITMQ_TOKEN
};

// Parses the arguments after the program name. Errors (exit code 2) name the command, the option
// and what was expected.
Result<CliCommand> parse_command_line(std::span<const std::string> args, const CliEnvironment& env);

// The usage text: the overview, or one command's.
std::string usage(std::optional<CommandKind> command);

// The command's name as typed ("send", "dead-letters", ...).
std::string_view command_name(CommandKind kind);

}  // namespace witmq::cli
