// Internal to the runtime (wasm_runtime.cc, wasm_rewrite.cc): the wabt types behind WasmModule.
// C++17 only; never include from C++20 code (see wasm_runtime.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "guest/wasm_runtime.h"
#include "wabt/interp/interp.h"

namespace witmq::guest {

struct WasmModule::Impl {
  std::string name;
  WasmLimits limits;
  // The module as the interpreter reads it, with the limits applied (memory and table maxima)
  // and the start function taken out so that it runs under the budget like any other call.
  wabt::interp::ModuleDesc desc;
  std::vector<wabt::interp::StartDesc> starts;
  // Index (in the instance's globals) of the global the memory.grow guard sets to the refused
  // delta before trapping; -1 when the module never grows its memory.
  int grow_refused_global = -1;
};

// The memory.grow guard. Rewrites every `memory.grow` of the module into a call to a function
// appended to the module, which grows the memory and, when the grow fails (the limit is the
// memory's maximum), stores the requested delta in an appended global and executes
// `unreachable`. The host reads that global after a trap to tell a memory-limit failure from
// any other trap. Nothing else changes: appended items take the last indices, so no existing
// index moves. `bytes` must already have been validated.
struct GrowGuard {
  bool rewritten = false;       // false: the module has no memory.grow
  std::vector<uint8_t> bytes;   // the rewritten module when `rewritten`
  uint32_t refused_global = 0;  // index of the appended global when `rewritten`
};
Result<GrowGuard> guard_memory_grow(const std::string& name, const std::vector<uint8_t>& bytes);

}  // namespace witmq::guest
