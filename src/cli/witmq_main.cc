// witmq: the command-line client of witmqd (docs/CLI.md).
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli/command_line.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::optional<std::string>(v) : std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto cmd = witmq::cli::parse_command_line(args, {env("WITMQ_SERVER"), env("WITMQ_TOKEN")});
  if (!cmd.ok()) {
    std::cerr << cmd.error().message << "\n";
    return witmq::cli::kExitUsage;
  }
  return witmq::cli::run_command(*cmd, std::cin, std::cout, std::cerr);
}
