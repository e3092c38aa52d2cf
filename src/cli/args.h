// A small command-line scanner shared by witmq and witmq-bench: options declared up front, then
// "--name value", "--name=value", boolean "--flag", "--" (end of options) and positionals.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace witmq::cli {

// One option a command accepts.
struct OptionSpec {
  std::string_view name;  // without the leading "--"
  bool takes_value = false;
};

// The arguments after scanning: option values in the order given, and the positionals.
struct ParsedArgs {
  std::map<std::string, std::vector<std::string>, std::less<>> options;
  std::vector<std::string> positional;

  bool has(std::string_view name) const { return options.find(name) != options.end(); }
  // The last value given for `name`, or nullptr.
  const std::string* last(std::string_view name) const;
  // Every value given for `name`, in order.
  std::vector<std::string> all(std::string_view name) const;
};

// Scans `args` against `specs`. With `stop_at_positional`, scanning stops at the first positional
// argument: it and everything after it are left in `positional` unread (for "witmq [global
// options] COMMAND ..."). `context` names the command in error messages ("witmq send").
Result<ParsedArgs> scan_args(std::span<const std::string> args, std::span<const OptionSpec> specs,
                             std::string_view context, bool stop_at_positional = false);

// Unsigned integers with bounds; errors name the option, the text and the range.
Result<uint64_t> parse_uint(std::string_view option, std::string_view text, uint64_t min,
                            uint64_t max);
// "KEY=VALUE" with a non-empty KEY; errors name the option.
Result<std::pair<std::string, std::string>> parse_key_value(std::string_view option,
                                                            std::string_view text);

// `message` with its leading `subject` replaced by `field`, so that an error names the field
// once: ("CHANNEL", "channel", "channel: byte 3 ...") gives "CHANNEL: byte 3 ...", and ("--server",
// "server address", "server address 'h:0': port ...") gives "--server 'h:0': port ...". A message
// that does not start with `subject` is returned as "FIELD: MESSAGE".
std::string name_field(std::string_view field, std::string_view subject, std::string_view message);

}  // namespace witmq::cli
