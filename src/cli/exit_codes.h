// The exit codes of the witmq command-line client; docs/CLI.md documents them for scripts.
#pragma once

namespace witmq::cli {

enum ExitCode : int {
  kExitOk = 0,               // the command did what it was asked
  kExitServerError = 1,      // the server refused the request (the error is printed on stderr)
  kExitUsage = 2,            // bad command line: unknown command or option, bad value
  kExitUnavailable = 3,      // cannot connect to the server, or the connection was lost
  kExitNothingReceived = 4,  // receive: no message arrived within --timeout
};

}  // namespace witmq::cli
