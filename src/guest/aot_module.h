// The ahead-of-time tier's view of a module (docs/GUESTS.md "Two tiers"): what the tier adds to
// the module before wasm2c sees it, and what the generated C exposes. C++17-clean and free of
// wabt types, like wasm_runtime.h, because wasm_runtime.cc includes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest {

// A function import of the original module, in import order. In the compiled module it is
// renamed "witmq"."i<N>" (N its position), so the generated C names are fixed whatever the
// original names are; the host binds it by its original module and name.
struct AotImport {
  std::string module;
  std::string name;
  FuncSig sig;
};

// A function export the host can call (every parameter and result i32, i64, f32 or f64, at most
// one result): position in the module's export list (WasmInstance's export index), name, type.
// In the compiled module it is exported as "witmq_e<export_index>".
struct AotExport {
  uint32_t export_index = 0;
  std::string name;
  FuncSig sig;
};

// The module as the compiled tier builds it, from the bytes of the load-time rewrite
// (wasm_internal.h), with:
//
// - fuel: an appended mutable i64 global (exported "witmq_fuel"). Every function first
//   subtracts the number of instructions outside its loops, every loop iteration the number of
//   instructions directly in the loop (nested loops pay for themselves): an upper bound on the
//   instructions that run, paid before they run. When the fuel drops below zero the code calls
//   the appended import "witmq"."refuel", where the host hands out the next slice of the call's
//   instruction budget or, when the budget or the call's wall time is spent, traps the call.
// - imports renamed as above, exports replaced by the aliases above plus "witmq_memory" (the
//   memory export), "witmq_refused" (the memory.grow guard's global, if any) and "witmq_start"
//   (the start function, taken out of the start section so that it runs under the limits from
//   WasmInstance::initialize(), as in the interpreter).
// - memory and table maxima lowered to the limits, so that wasm2c's runtime refuses a grow past
//   them.
struct AotPlan {
  std::vector<uint8_t> bytes;      // the module given to wasm2c
  std::vector<AotImport> imports;  // the original imports, "witmq"."refuel" not included
  std::vector<AotExport> exports;  // callable function exports
  bool has_memory = false;         // "witmq_memory" exists
  bool has_refused = false;        // "witmq_refused" exists
  bool has_start = false;          // "witmq_start" exists
};

// Builds the plan from `bytes` (validated, rewritten) whose memory.grow guard global is
// `refused_global` (-1: none).
Result<AotPlan> plan_aot_module(const std::string& name, const std::vector<uint8_t>& bytes,
                                int refused_global, const WasmLimits& limits);

}  // namespace witmq::guest
