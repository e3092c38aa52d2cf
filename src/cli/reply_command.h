// Runs a responder's --exec command for one request: the request's data on the command's stdin,
// its stdout the reply.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/result.h"

namespace witmq::cli {

// Runs `command` with `sh -c`, writing `input` to its stdin and reading its stdout (stderr is
// the caller's). Returns the output when the command exits 0; kFailedPrecondition naming the
// exit status or signal otherwise; kResourceExhausted when it writes more than `max_output`
// bytes (it is then killed). Reading and writing interleave, so a command that answers before it
// has read all its input does not block.
Result<std::vector<uint8_t>> run_for_reply(const std::string& command,
                                           const std::vector<uint8_t>& input, size_t max_output);

}  // namespace witmq::cli
