// A guest's configuration: every key with its type, default, bounds and doc string, defined once.
// The daemon's config loader, docs/GUESTS.md and the tests all go through this file.
#pragma once

#include <chrono>
#include <optional>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/grants.h"
#include "common/result.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest {

// One guest as the configuration describes it. Keys in brackets are the config file's names
// (docs/GUESTS.md).
struct GuestOptions {
  // ["name"] Names the guest in logs, metrics and errors, and names its durable subscription
  // (the broker client it receives with is connect()ed under this name). Required.
  std::string name;
  // ["module"] Path of the core wasm module. Required.
  std::string module_path;
  // ["instances"] Instances running side by side, each on its own thread. 1..256.
  uint32_t instances = 1;
  // ["instruction-budget"] Interpreter steps one call (configure, handler) may take. 1..2^62.
  uint64_t instruction_budget = 100'000'000;
  // ["memory-pages"] Linear memory limit in 64 KiB pages. 1..65536.
  uint32_t memory_pages = 256;
  // ["call-timeout-ms"] Wall time one call into the guest (configure, handler) may take, waits
  // in host calls (receives) included. Past it the call fails, its batch is abandoned and the
  // instance replaced. 1..3600000.
  std::chrono::milliseconds call_timeout{60'000};
  // ["channels"] When non-empty, replaces the channels `configure` (and
  // update-guest-configuration) ask for. Required for worlds without configure (worlds.h).
  std::vector<std::string> channels;
  // ["group"] When non-empty, sets the "group" extension (the shared subscription name),
  // replacing what the guest asks for.
  std::string group;
  // ["batch-size"] Most messages per handler call; 0 = the guest's "batch-size" extension or
  // the broker's default.
  uint32_t batch_size = 0;
  // ["batch-wait-ms"] How long one receive waits for a first message before asking again.
  std::chrono::milliseconds batch_wait{1000};
  // ["restart-backoff-ms"] Wait before instantiating again after instantiation or configure
  // failed (doubles up to 64x while it keeps failing).
  std::chrono::milliseconds restart_backoff{200};
  // ["permissions"] The channels the guest may send to and receive from. The daemon always sets
  // it (from the config, else the anonymous grants, else none); unset means unrestricted.
  std::optional<auth::Grants> permissions;
  // ["env"] The guest's WASI environment (environ_get / getenv), as NAME -> value. Empty by
  // default: a guest sees nothing of the daemon's environment. At most kMaxGuestEnvVars
  // variables; names 1..kMaxGuestEnvNameBytes bytes without '=' or NUL, values at most
  // kMaxGuestEnvValueBytes bytes without NUL.
  std::vector<std::pair<std::string, std::string>> env;
  // ["engine"] "interp" (wabt's interpreter: starts at once) or "aot" (the ahead-of-time tier:
  // the module is compiled to native code at load, once per content, then runs several times
  // faster). Same limits, isolation and metrics in both (docs/GUESTS.md "Two tiers").
  Engine engine = Engine::kInterp;
  // ["compile-timeout-ms"] "aot": wall time compiling the module may take (wasm2c and the C
  // compiler together); past it the guest is refused. 1..3600000.
  std::chrono::milliseconds compile_timeout{300'000};
  // Where "aot" keeps compiled modules: not a guest setting; the daemon sets it to
  // "<data-dir>/guest-cache". Empty: each load compiles into a temporary directory.
  std::string compile_cache_dir;

  bool operator==(const GuestOptions&) const = default;
};

inline constexpr size_t kMaxGuestEnvVars = 256;
inline constexpr size_t kMaxGuestEnvNameBytes = 256;
inline constexpr size_t kMaxGuestEnvValueBytes = 4096;

// Checks ranges and required fields; errors name the guest and the key.
Status validate_guest_options(const GuestOptions& options);

// Reads a guest from a JSON object ({"name": ..., "module": ..., ...}). Unknown keys, wrong types
// and values out of range are errors naming `where` and the key; the result is validated.
Result<GuestOptions> guest_options_from_json(const nlohmann::json& j, std::string_view where);

// Every key with its type, default and doc string, for docs/GUESTS.md.
struct GuestOptionDoc {
  std::string_view key, type, default_value, doc;
};
const std::vector<GuestOptionDoc>& guest_option_docs();

}  // namespace witmq::guest
