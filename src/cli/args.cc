#include "cli/args.h"

#include <fmt/format.h>

#include <charconv>

namespace witmq::cli {

const std::string* ParsedArgs::last(std::string_view name) const {
  auto it = options.find(name);
  return it == options.end() || it->second.empty() ? nullptr : &it->second.back();
}

std::vector<std::string> ParsedArgs::all(std::string_view name) const {
  auto it = options.find(name);
  return it == options.end() ? std::vector<std::string>{} : it->second;
}

Result<ParsedArgs> scan_args(std::span<const std::string> args, std::span<const OptionSpec> specs,
                             std::string_view context, bool stop_at_positional) {
  ParsedArgs out;
  bool options_ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool is_option = !options_ended && a.size() > 1 && a[0] == '-';
    if (!is_option) {
      if (stop_at_positional) {
        out.positional.assign(args.begin() + static_cast<ptrdiff_t>(i), args.end());
        return out;
      }
      out.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options_ended = true;
      continue;
    }
    if (!a.starts_with("--")) {
      if (a == "-h") {
        out.options["help"].emplace_back();
        continue;
      }
      return invalid_argument(fmt::format(
          "{}: unknown option '{}'; options are spelled --name (see --help)", context, a));
    }
    std::string_view body = std::string_view(a).substr(2);
    std::optional<std::string> inline_value;
    if (size_t eq = body.find('='); eq != std::string_view::npos) {
      inline_value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    const OptionSpec* spec = nullptr;
    for (const auto& s : specs) {
      if (s.name == body) spec = &s;
    }
    if (spec == nullptr) {
      return invalid_argument(
          fmt::format("{}: unknown option '--{}' (see {} --help)", context, body, context));
    }
    if (!spec->takes_value) {
      if (inline_value) {
        return invalid_argument(fmt::format("{}: option '--{}' takes no value, got '{}'", context,
                                            body, *inline_value));
      }
      out.options[std::string(body)].emplace_back();
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        return invalid_argument(fmt::format("{}: option '--{}' needs a value", context, body));
      }
      inline_value = args[++i];
    }
    out.options[std::string(body)].push_back(std::move(*inline_value));
  }
  return out;
}

Result<uint64_t> parse_uint(std::string_view option, std::string_view text, uint64_t min,
                            uint64_t max) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || v < min || v > max) {
    return invalid_argument(
        fmt::format("--{}: '{}' is not a whole number from {} to {}", option, text, min, max));
  }
  return v;
}

Result<std::pair<std::string, std::string>> parse_key_value(std::string_view option,
                                                            std::string_view text) {
  size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return invalid_argument(
        fmt::format("--{}: '{}' is not KEY=VALUE with a non-empty KEY", option, text));
  }
  return std::pair<std::string, std::string>(std::string(text.substr(0, eq)),
                                             std::string(text.substr(eq + 1)));
}

std::string name_field(std::string_view field, std::string_view subject, std::string_view message) {
  if (message.starts_with(subject) && message.size() > subject.size() &&
      (message[subject.size()] == ':' || message[subject.size()] == ' ')) {
    return fmt::format("{}{}", field, message.substr(subject.size()));
  }
  return fmt::format("{}: {}", field, message);
}

}  // namespace witmq::cli
