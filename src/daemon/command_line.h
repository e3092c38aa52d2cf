// witmqd's command line: the flags, their help text, and the configuration layers they make.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/config.h"

namespace witmq::daemon {

// What the command line asks witmqd to do.
struct CommandLine {
  enum class Action {
    kRun,                   // serve
    kCheckConfig,           // --check-config: load and check the configuration, then exit
    kHelp,                  // --help
    kVersion,               // --version
    kPrintDefaultConfig,    // --print-default-config
    kPrintConfigReference,  // --print-config-reference
    kHashToken,             // --hash-token: the SHA-256 of the token read from stdin
    kGenerateToken,         // --generate-token: a new token and its SHA-256
  };
  Action action = Action::kRun;
  // --config FILE.
  std::optional<std::string> config_file;
  // The overriding flags (--listen, --data-dir, --log-level, --set) in command-line order, one
  // layer each, so that a later flag wins.
  std::vector<ConfigLayer> overrides;
};

// Parses argv (without argv[0]). Flags take their value as the next argument or after '='
// (--listen=127.0.0.1:0). Errors name the flag and what was expected.
Result<CommandLine> parse_command_line(std::span<const char* const> args);

// The flags section of --help and docs/CONFIGURATION.md.
std::string flags_help();
// The whole --help text: usage, flags and every configuration key with its default.
std::string usage_text();

// The defaults, then the config file, then the flags.
Result<Config> load_config(const CommandLine& command_line);

}  // namespace witmq::daemon
