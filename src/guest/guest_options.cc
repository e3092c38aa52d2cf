#include "guest/guest_options.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "auth/grants.h"
#include "common/message.h"

namespace witmq::guest {
namespace {

using nlohmann::json;

Error bad_key(std::string_view where, std::string_view key, std::string what) {
  return Error(ErrorCode::kInvalidArgument, fmt::format("{}.{}: {}", where, key, what));
}

Result<std::string> get_string(const json& v, std::string_view where, std::string_view key) {
  if (!v.is_string())
    return bad_key(where, key, fmt::format("expected a string, got {}", v.dump()));
  return v.get<std::string>();
}

Result<uint64_t> get_uint(const json& v, std::string_view where, std::string_view key, uint64_t min,
                          uint64_t max) {
  if (!v.is_number_integer() ||
      (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0)) {
    return bad_key(where, key,
                   fmt::format("expected an integer {}..{}, got {}", min, max, v.dump()));
  }
  const uint64_t n = v.get<uint64_t>();
  if (n < min || n > max) {
    return bad_key(where, key, fmt::format("{} is out of range {}..{}", n, min, max));
  }
  return n;
}

}  // namespace

const std::vector<GuestOptionDoc>& guest_option_docs() {
  static const std::vector<GuestOptionDoc> docs = {
      {"name", "string", "(required)",
       "Names the guest in logs, metrics and errors; its broker clients connect under this name, "
       "so its subscriptions are durable and shared by its instances."},
      {"module", "path", "(required)", "The core wasm module (.wasm file)."},
      {"instances", "1..256", "1", "Instances side by side, each on its own worker thread."},
      {"instruction-budget", "1..2^62", "100000000",
       "Interpreter steps one call (configure, handler) may take."},
      {"memory-pages", "1..65536", "256", "Linear memory limit in 64 KiB pages."},
      {"call-timeout-ms", "1..3600000", "60000",
       "Wall time one call (configure, handler) may take, waits in receives included; past it "
       "the call fails, its batch is abandoned and the instance is replaced."},
      {"channels", "list of channel names", "[]",
       "When non-empty, replaces the channels the guest asks for. Required for a guest of a "
       "world without configure (messaging-core, wasmcloud-messaging): its channels come from "
       "here."},
      {"group", "string", "\"\"",
       "When non-empty, replaces the guest's \"group\" extension (shared subscription name)."},
      {"batch-size", "0..1000000", "0",
       "Most messages per handler call; 0 = the guest's batch-size extension or the broker "
       "default."},
      {"batch-wait-ms", "1..3600000", "1000",
       "How long one receive waits for a first message before asking again."},
      {"restart-backoff-ms", "1..3600000", "200",
       "Wait before instantiating again after a failed instantiation or configure (doubles, up "
       "to 64x)."},
      {"permissions", "object", "the anonymous grants, or none",
       "The channels the guest may send to and receive from (channel patterns as in "
       "docs/SECURITY.md: `*` matches any run of characters). Without it the guest has the "
       "send and receive grants of the anonymous key when anonymous access is on, and none "
       "when it is off."},
      {"env", "object of strings", "{}",
       "The guest's WASI environment (`getenv`, `environ`), as `{\"NAME\": \"value\"}`; the "
       "guest sees nothing of the daemon's own. At most 256 variables; names of 1 to 256 bytes "
       "without `=` or NUL, values of at most 4096 bytes without NUL."},
      {"engine", "\"interp\" or \"aot\"", "\"interp\"",
       "Which tier runs the guest: `interp`, wabt's interpreter (starts at once), or `aot`, the "
       "ahead-of-time tier: the module is compiled to native code with wasm2c and the system C "
       "compiler when it loads (once per module content; kept in `<data-dir>/guest-cache`) and "
       "runs several times faster. Same limits, isolation and metrics in both."},
      {"compile-timeout-ms", "1..3600000", "300000",
       "With `\"engine\": \"aot\"`: wall time compiling the module may take (wasm2c and the C "
       "compiler together); past it the guest is refused."},
  };
  return docs;
}

Status validate_guest_options(const GuestOptions& o) {
  auto bad = [&](std::string_view key, std::string what) {
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("guest '{}': \"{}\" {}", o.name, key, what));
  };
  if (o.name.empty()) return bad("name", "is required (a non-empty string)");
  if (o.module_path.empty()) return bad("module", "is required (the path of a .wasm file)");
  if (o.instances < 1 || o.instances > 256) {
    return bad("instances", fmt::format("is {}, expected 1..256", o.instances));
  }
  if (o.instruction_budget < 1 || o.instruction_budget > (uint64_t{1} << 62)) {
    return bad("instruction-budget", fmt::format("is {}, expected 1..2^62", o.instruction_budget));
  }
  if (o.memory_pages < 1 || o.memory_pages > 65536) {
    return bad("memory-pages", fmt::format("is {}, expected 1..65536", o.memory_pages));
  }
  if (o.call_timeout.count() < 1 || o.call_timeout.count() > 3'600'000) {
    return bad("call-timeout-ms",
               fmt::format("is {}, expected 1..3600000", o.call_timeout.count()));
  }
  for (const std::string& c : o.channels) {
    Status st = validate_channel_name(c);
    if (!st.ok()) return bad("channels", fmt::format("has '{}': {}", c, st.error().message));
  }
  if (o.batch_wait.count() < 1 || o.batch_wait.count() > 3'600'000) {
    return bad("batch-wait-ms", fmt::format("is {}, expected 1..3600000", o.batch_wait.count()));
  }
  if (o.restart_backoff.count() < 1 || o.restart_backoff.count() > 3'600'000) {
    return bad("restart-backoff-ms",
               fmt::format("is {}, expected 1..3600000", o.restart_backoff.count()));
  }
  if (o.compile_timeout.count() < 1 || o.compile_timeout.count() > 3'600'000) {
    return bad("compile-timeout-ms",
               fmt::format("is {}, expected 1..3600000", o.compile_timeout.count()));
  }
  if (o.env.size() > kMaxGuestEnvVars) {
    return bad("env", fmt::format("has {} variables, at most {} are allowed", o.env.size(),
                                  kMaxGuestEnvVars));
  }
  for (const auto& [name, value] : o.env) {
    if (name.empty() || name.size() > kMaxGuestEnvNameBytes) {
      return bad("env", fmt::format("has a variable name of {} bytes, expected 1..{}",
                                    name.size(), kMaxGuestEnvNameBytes));
    }
    if (name.find_first_of(std::string_view("=\0", 2)) != std::string::npos) {
      return bad("env", fmt::format("variable name '{}' contains '=' or NUL, which a name "
                                    "cannot hold",
                                    name));
    }
    if (value.size() > kMaxGuestEnvValueBytes) {
      return bad("env", fmt::format("variable '{}' has a value of {} bytes, at most {} are "
                                    "allowed",
                                    name, value.size(), kMaxGuestEnvValueBytes));
    }
    if (value.find('\0') != std::string::npos) {
      return bad("env", fmt::format("variable '{}' has a value containing NUL", name));
    }
  }
  return ok_status();
}

Result<GuestOptions> guest_options_from_json(const json& j, std::string_view where) {
  if (!j.is_object()) {
    return invalid_argument(fmt::format("{}: expected an object, got {}", where, j.dump()));
  }
  GuestOptions o;
  for (const auto& [key, v] : j.items()) {
    if (key == "name") {
      auto s = get_string(v, where, key);
      if (!s) return std::move(s).error();
      o.name = *s;
    } else if (key == "module") {
      auto s = get_string(v, where, key);
      if (!s) return std::move(s).error();
      o.module_path = *s;
    } else if (key == "instances") {
      auto n = get_uint(v, where, key, 1, 256);
      if (!n) return std::move(n).error();
      o.instances = static_cast<uint32_t>(*n);
    } else if (key == "instruction-budget") {
      auto n = get_uint(v, where, key, 1, uint64_t{1} << 62);
      if (!n) return std::move(n).error();
      o.instruction_budget = *n;
    } else if (key == "memory-pages") {
      auto n = get_uint(v, where, key, 1, 65536);
      if (!n) return std::move(n).error();
      o.memory_pages = static_cast<uint32_t>(*n);
    } else if (key == "call-timeout-ms") {
      auto n = get_uint(v, where, key, 1, 3'600'000);
      if (!n) return std::move(n).error();
      o.call_timeout = std::chrono::milliseconds(*n);
    } else if (key == "channels") {
      if (!v.is_array()) {
        return bad_key(where, key,
                       fmt::format("expected a list of channel names, got {}", v.dump()));
      }
      for (const json& c : v) {
        auto s = get_string(c, where, key);
        if (!s) return std::move(s).error();
        Status st = validate_channel_name(*s);
        if (!st.ok()) return bad_key(where, key, st.error().message);
        o.channels.push_back(*s);
      }
    } else if (key == "group") {
      auto s = get_string(v, where, key);
      if (!s) return std::move(s).error();
      o.group = *s;
    } else if (key == "batch-size") {
      auto n = get_uint(v, where, key, 0, 1'000'000);
      if (!n) return std::move(n).error();
      o.batch_size = static_cast<uint32_t>(*n);
    } else if (key == "batch-wait-ms") {
      auto n = get_uint(v, where, key, 1, 3'600'000);
      if (!n) return std::move(n).error();
      o.batch_wait = std::chrono::milliseconds(*n);
    } else if (key == "restart-backoff-ms") {
      auto n = get_uint(v, where, key, 1, 3'600'000);
      if (!n) return std::move(n).error();
      o.restart_backoff = std::chrono::milliseconds(*n);
    } else if (key == "permissions") {
      if (!v.is_object()) {
        return bad_key(where, key,
                       fmt::format("expected an object {{\"send\": [...], \"receive\": [...]}}, "
                                   "got {}",
                                   v.dump()));
      }
      for (const auto& [member, unused] : v.items()) {
        if (member != "send" && member != "receive") {
          return bad_key(where, key,
                         fmt::format("unknown field '{}': a guest is granted send and receive "
                                     "only",
                                     member));
        }
      }
      auth::Grants grants;
      WITMQ_RETURN_IF_ERROR(
          auth::read_grants(v, fmt::format("{}.permissions", where), false, grants));
      o.permissions = std::move(grants);
    } else if (key == "env") {
      if (!v.is_object()) {
        return bad_key(where, key,
                       fmt::format("expected an object of strings {{\"NAME\": \"value\"}}, got {}",
                                   v.dump()));
      }
      for (const auto& [name, value] : v.items()) {
        if (!value.is_string()) {
          return bad_key(where, key,
                         fmt::format("variable '{}': expected a string, got {}", name,
                                     value.dump()));
        }
        o.env.emplace_back(name, value.get<std::string>());
      }
    } else if (key == "engine") {
      auto s = get_string(v, where, key);
      if (!s) return std::move(s).error();
      if (*s == "interp") {
        o.engine = Engine::kInterp;
      } else if (*s == "aot") {
        o.engine = Engine::kAot;
      } else {
        return bad_key(where, key, fmt::format("expected \"interp\" or \"aot\", got {}", v.dump()));
      }
    } else if (key == "compile-timeout-ms") {
      auto n = get_uint(v, where, key, 1, 3'600'000);
      if (!n) return std::move(n).error();
      o.compile_timeout = std::chrono::milliseconds(*n);
    } else {
      std::string known;
      for (const auto& d : guest_option_docs())
        known += (known.empty() ? "" : ", ") + std::string(d.key);
      return bad_key(where, key, fmt::format("unknown guest setting (known: {})", known));
    }
  }
  WITMQ_RETURN_IF_ERROR(validate_guest_options(o));
  return o;
}

}  // namespace witmq::guest
