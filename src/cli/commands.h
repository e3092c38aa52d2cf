// Runs a parsed witmq command against the server and prints its result.
#pragma once

#include <istream>
#include <ostream>

#include "cli/command_line.h"

namespace witmq::cli {

// Runs `cmd`, reading message data from `in` when the command asks for stdin, printing results on
// `out` and errors on `err` ("witmq COMMAND: what went wrong"). Returns the exit code
// (exit_codes.h).
int run_command(const CliCommand& cmd, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace witmq::cli
