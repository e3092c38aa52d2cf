// Internal to the runtime (wasm_runtime.cc, wasm_rewrite.cc): the wabt types behind WasmModule.
// C++17 only; never include from C++20 code (see wasm_runtime.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "guest/aot_runtime.h"
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
  // Nested calls an instance may make: WasmLimits::value_stack_bytes over the largest frame.
  uint32_t call_depth = kMaxCallDepth;
  // Linked modules (compile_linked): one part per core module; `desc` above is unused then.
  struct Part {
    wabt::interp::ModuleDesc desc;
    std::vector<wabt::interp::StartDesc> starts;
    int grow_refused_global = -1;
  };
  std::vector<Part> parts;
  CoreLink link;  // its module bytes dropped
  // The compiled form when the module runs in the ahead-of-time tier, else nullptr.
  std::shared_ptr<const AotLibrary> aot;
};

// The load-time rewrite of a module (with wabt's IR), for what the interpreter cannot limit:
//
// - memory.grow guard: every `memory.grow` becomes a call to an appended function that grows the
//   memory and, when the grow fails (the limit is the memory's maximum), stores the requested
//   delta in an appended global and executes `unreachable`. The host reads that global after a
//   trap to tell a memory-limit failure from any other trap.
// - bulk charge: every `memory.fill` / `memory.copy` / `memory.init` / `table.fill` /
//   `table.copy` / `table.init` (one interpreter step whatever the length) becomes a call to an
//   appended function, one per distinct instruction and immediates, that first counts down a
//   loop of one iteration per 64 bytes or 8 references of its length (about 7 interpreter steps
//   each, so the instruction budget pays for the length), then does the operation itself, with
//   its own bounds checks and trap.
// - locals charge: a function with 64 or more locals (the interpreter zeroes them all in the one
//   step that enters it) first calls an appended function with its number of locals, which
//   counts down a loop of one iteration per 8 locals.
//
// Nothing else changes: appended items take the last indices, so no existing index moves. It also
// measures the largest value-stack frame a function can need (params + locals + the operands its
// code can push: at most one instruction's worth of the widest type per instruction), which sets
// the call depth. `bytes` must already have been validated.
struct ModuleRewrite {
  bool rewritten = false;         // false: the module has none of the instructions above
  std::vector<uint8_t> bytes;     // the rewritten module when `rewritten`
  int refused_global = -1;        // index of the memory.grow guard's global, or -1
  uint64_t max_frame_values = 0;  // the largest frame, in values
};
Result<ModuleRewrite> rewrite_module(const std::string& name, const std::vector<uint8_t>& bytes);

}  // namespace witmq::guest
