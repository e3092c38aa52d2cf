#include "daemon/command_line.h"

#include <fmt/format.h>

#include <string_view>

#include "common/json_depth.h"

namespace witmq::daemon {

using nlohmann::json;

namespace {

// A flag that sets one configuration key.
struct KeyFlag {
  std::string_view flag;
  std::string_view key;
};
constexpr KeyFlag kKeyFlags[] = {
    {"--listen", "listen"},         {"--http-listen", "http-listen"},
    {"--tls-listen", "tls-listen"}, {"--https-listen", "https-listen"},
    {"--data-dir", "data-dir"},     {"--log-level", "log-level"},
};

// A --set value: the text as it is for a string key, JSON for any other.
Result<json> parse_value(const ConfigKey& key, std::string_view text, std::string_view flag) {
  if (key.type == KeyType::kString) return json(std::string(text));
  if (auto st = check_json_depth(text); !st) {
    return invalid_argument(fmt::format("{} {}: {}", flag, key.name, st.error().message));
  }
  json v = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) {
    return invalid_argument(fmt::format(
        "{} {}={}: '{}' is not a JSON value; {} takes {}", flag, key.name, text, text, key.name,
        key.type == KeyType::kInteger ? std::string("an integer")
                                      : fmt::format("a JSON {}", key_type_name(key.type))));
  }
  return v;
}

}  // namespace

Result<CommandLine> parse_command_line(std::span<const char* const> args) {
  CommandLine cl;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    std::string_view flag = arg;
    std::optional<std::string_view> inline_value;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      flag = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    auto value = [&]() -> Result<std::string> {
      if (inline_value) return std::string(*inline_value);
      if (i + 1 >= args.size()) {
        return invalid_argument(fmt::format("{}: a value is expected after it", flag));
      }
      return std::string(args[++i]);
    };
    auto no_value = [&](CommandLine::Action action) -> Status {
      if (inline_value) return invalid_argument(fmt::format("{}: takes no value", flag));
      cl.action = action;
      return ok_status();
    };

    if (flag == "--help" || flag == "-h") {
      WITMQ_RETURN_IF_ERROR(no_value(CommandLine::Action::kHelp));
      return cl;
    }
    if (flag == "--version") {
      WITMQ_RETURN_IF_ERROR(no_value(CommandLine::Action::kVersion));
      return cl;
    }
    if (flag == "--print-default-config") {
      WITMQ_RETURN_IF_ERROR(no_value(CommandLine::Action::kPrintDefaultConfig));
    } else if (flag == "--print-config-reference") {
      WITMQ_RETURN_IF_ERROR(no_value(CommandLine::Action::kPrintConfigReference));
    } else if (flag == "--hash-token") {
      WITMQ_RETURN_IF_ERROR(no_value(CommandLine::Action::kHashToken));
    } else if (flag == "--generate-token") {
      WITMQ_RETURN_IF_ERROR(no_value(CommandLine::Action::kGenerateToken));
    } else if (flag == "--check-config") {
      WITMQ_RETURN_IF_ERROR(no_value(CommandLine::Action::kCheckConfig));
    } else if (flag == "--config") {
      auto v = value();
      if (!v) return std::move(v).error();
      if (v->empty()) return invalid_argument("--config: the file name is empty");
      cl.config_file = *v;
    } else if (flag == "--set") {
      auto v = value();
      if (!v) return std::move(v).error();
      const auto eq = v->find('=');
      if (eq == std::string::npos || eq == 0) {
        return invalid_argument(fmt::format("--set {}: expected KEY=VALUE", *v));
      }
      const std::string name = v->substr(0, eq);
      const ConfigKey* key = find_key(name);
      if (!key) {
        return invalid_argument(fmt::format(
            "--set {}: '{}' is not a configuration key; `witmqd --help` lists them", *v, name));
      }
      auto parsed = parse_value(*key, std::string_view(*v).substr(eq + 1), "--set");
      if (!parsed) return std::move(parsed).error();
      cl.overrides.push_back({"--set", json{{name, std::move(*parsed)}}});
    } else {
      const KeyFlag* kf = nullptr;
      for (const auto& k : kKeyFlags) {
        if (k.flag == flag) kf = &k;
      }
      if (!kf) {
        return invalid_argument(
            fmt::format("{}: unknown {}; `witmqd --help` lists the flags", arg,
                        arg.starts_with("-") ? "flag" : "argument (flags start with --)"));
      }
      auto v = value();
      if (!v) return std::move(v).error();
      cl.overrides.push_back({std::string(kf->flag), json{{std::string(kf->key), *v}}});
    }
  }
  return cl;
}

std::string flags_help() {
  return R"(--config FILE            Read the configuration from FILE (JSON). Without it, the
                         embedded defaults apply (--print-default-config shows them).
--listen HOST:PORT       Sets the key listen. Port 0 picks a free port.
--http-listen HOST:PORT  Sets the key http-listen (health, metrics, admin API). Port 0
                         picks a free port; "" turns the HTTP side off.
--tls-listen HOST:PORT   Sets the key tls-listen: the protocol over TLS (needs
                         tls-cert-file and tls-key-file, e.g. with --set).
--https-listen HOST:PORT Sets the key https-listen: the HTTP side over TLS.
--data-dir DIR           Sets the key data-dir.
--log-level LEVEL        Sets the key log-level: debug, info, warn or error.
--set KEY=VALUE          Sets any key. VALUE is taken as it is for string keys and as JSON
                         for the others: --set max-in-flight=64,
                         --set 'default-channel={"durability":"sync"}'. Repeatable.
--check-config           Load and check the configuration, then exit (0 when it is good).
--print-default-config   Print the embedded default configuration (config/witmqd.json).
--print-config-reference Print the configuration reference (docs/CONFIGURATION.md).
--generate-token         Print a new random token and the token-sha256 value that goes
                         with it in an identities entry (docs/SECURITY.md).
--hash-token             Read a token from stdin (one line) and print its token-sha256.
--version                Print the version.
--help                   Print this help.

Flags override the file; later flags override earlier ones. Exit codes: 0 after a graceful
stop (SIGTERM, SIGINT), 1 when the daemon cannot start or fails (store, address in use),
2 for a bad flag or configuration.
)";
}

std::string usage_text() {
  std::string text =
      "Usage: witmqd [--config FILE] [flags]\n\n"
      "The witmq message broker daemon: serves the wasi:messaging protocol over TCP\n"
      "(docs/PROTOCOL.md), logs to stderr and prints `listening on HOST:PORT` on stdout once it\n"
      "accepts connections.\n\n";
  text += flags_help();
  text += "\nConfiguration keys (docs/CONFIGURATION.md):\n";
  for (const auto& k : config_keys()) {
    text += fmt::format("  {:<28} {:<8} default {}\n", k.name, key_type_name(k.type),
                        k.type == KeyType::kObject && !k.default_value.empty()
                            ? std::string("(channel settings)")
                            : k.default_value.dump());
  }
  return text;
}

Result<Config> load_config(const CommandLine& command_line) {
  std::vector<ConfigLayer> layers;
  if (command_line.config_file) {
    auto file = read_config_file(*command_line.config_file);
    if (!file) return std::move(file).error();
    layers.push_back(std::move(*file));
  }
  layers.insert(layers.end(), command_line.overrides.begin(), command_line.overrides.end());
  return build_config(layers);
}

}  // namespace witmq::daemon
