// The WebAssembly runtime under the guest host: a thin layer over the wabt 1.0.32 interpreter that
// loads and checks a core module, instantiates it with host functions, runs exported functions
// under an instruction budget and a memory limit, and exposes linear memory to the canonical ABI.
//
// This header is C++17 on purpose: wabt's headers do not compile as C++20 under GCC 12 (a
// `~FreeList<T>()` destructor template-id), so wasm_runtime.cc and wasm_rewrite.cc are compiled
// as C++17 and nothing wabt-specific leaks out of them. docs/GUESTS.md ("Runtime: the wabt
// interpreter") records the API facts this layer relies on.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/result.h"

namespace witmq::guest {

// A core WebAssembly value type (the subset the guest host uses in signatures).
enum class ValType : uint8_t { kI32, kI64, kF32, kF64 };

// A core function signature, e.g. (func (param i32 i32) (result i32)).
struct FuncSig {
  std::vector<ValType> params;
  std::vector<ValType> results;

  bool operator==(const FuncSig& other) const {
    return params == other.params && results == other.results;
  }
  bool operator!=(const FuncSig& other) const { return !(*this == other); }
  // WAT form: "(func (param i32 i32) (result i32))".
  std::string to_string() const;
};

// A core value as raw bits: i32/f32 in the low 32 bits, i64/f64 in all 64.
using RawValue = uint64_t;

// Thrown by host functions and by canonical-ABI code running inside one to trap the calling guest
// (bad pointer, bad handle, invalid UTF-8, ...). The runtime catches it at the host-function
// boundary and turns it into a wasm trap: it never leaves the guest layer.
class GuestTrap : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A function import the host offers: module name, field name and core signature.
struct ImportSpec {
  std::string module;
  std::string name;
  FuncSig sig;
};

// A host function bound to one instance. `fn` reads params.size() arguments and writes
// sig.results.size() results; it may throw GuestTrap.
struct HostFunction {
  ImportSpec spec;
  std::function<void(const RawValue* args, RawValue* results)> fn;
};

// A function export the host calls, checked at load.
struct ExportSpec {
  std::string name;
  FuncSig sig;
  bool required = true;  // false: checked only if present (e.g. cabi_post_*)
};

// What a module must look like to be accepted.
struct ModuleRequirements {
  std::vector<ImportSpec> offered_imports;  // every import must be one of these, exactly
  std::vector<ExportSpec> exports;          // function exports checked by name and signature
  std::string memory_export = "memory";     // required memory export ("" = none required)
};

// Limits applied to every instance of a module.
struct WasmLimits {
  // Interpreter steps one top-level call may take (wabt's instructions, about one per wasm
  // instruction), shared by every call nested in it (cabi_realloc called from a host function).
  // A call that reaches it is stopped: CallStatus::kBudgetExhausted. memory.fill and memory.copy
  // are charged by their length (about one step per 8 bytes).
  uint64_t instruction_budget = 100'000'000;
  // Wall time one top-level call may take, host calls it waits on included; 0 = unbounded. A
  // call past it is stopped: CallStatus::kTimeLimit. Host functions read the deadline
  // (WasmInstance::deadline()) to bound what they wait for.
  std::chrono::milliseconds call_time_limit{0};
  // Linear memory cap in 64 KiB pages. A module whose memory starts above it is refused; a
  // memory.grow past it traps the guest: CallStatus::kMemoryLimit.
  uint32_t memory_pages = 256;
  // Cap on table elements (table.grow past it fails, as wasm's table.grow does).
  uint32_t table_elements = 1u << 16;
  // Cap on the number of tables a module defines (each may hold table_elements references).
  uint32_t max_tables = 8;
  // Cap on params + locals of one function.
  uint32_t locals_per_function = 10'000;
  // Cap on the interpreter's value stack (wabt's own has no limit), in bytes of 16-byte values.
  // The call depth of an instance is this divided by the largest frame one of its functions can
  // need (params + locals + the most operands its code can push); a module in which fewer than
  // kMinCallDepth such frames fit is refused.
  uint64_t value_stack_bytes = 16u << 20;
};

// Core modules linked into one instance, as a component's core instances are (component.h
// builds this from the component binary). They share one store, one interpreter thread and, per
// top-level call, one instruction budget and one wall-time limit.
struct CoreLink {
  // Where one import of a core instance comes from.
  struct Source {
    int instance = -1;  // an earlier core instance whose export `name` it is; -1: a host function
    std::string name;   // that export's name (instance >= 0)
    std::string host_module, host_name;  // the host function (instance < 0)
  };
  struct Instance {
    size_t module = 0;            // index in `modules`
    std::vector<Source> imports;  // one per import of the module, in its order
  };
  std::vector<std::vector<uint8_t>> modules;  // core module binaries
  std::vector<Instance> instances;            // in instantiation order
  // What the host calls by name (find_export) and the memory export (by `memory_export` of the
  // requirements), each an export of one core instance.
  std::vector<std::pair<std::string, Source>> exports;
};

// Why an instantiation failed when the host could not allocate the instance's linear memory or
// tables (both tiers word it the same).
inline constexpr const char* kCannotAllocateMemory =
    "the host cannot allocate the module's memory or tables (out of memory)";

// Fewest nested calls a module must be able to make within WasmLimits::value_stack_bytes.
inline constexpr uint32_t kMinCallDepth = 32;
// Most nested calls any instance may make (wabt's own default call stack).
inline constexpr uint32_t kMaxCallDepth = 1024;

// Which tier runs a module's instances (docs/GUESTS.md "Two tiers"): wabt's interpreter, or
// the ahead-of-time tier (aot_runtime.h), which compiles the module to native code through
// wasm2c and the system C compiler. Both enforce the same WasmLimits.
enum class Engine : uint8_t { kInterp, kAot };
const char* engine_name(Engine e);

// How a module is run.
struct EngineOptions {
  Engine engine = Engine::kInterp;
  // kAot: where compiled modules are kept, by content hash, so that loading the same module
  // again does not compile it again. Empty: each load compiles into a temporary directory.
  std::string cache_dir;
  // kAot: wall time wasm2c and the C compiler may take together for one module.
  std::chrono::milliseconds compile_timeout{300'000};
};

// A validated, checked module, ready to instantiate any number of times (thread-safe to share).
class WasmModule {
 public:
  // Reads, validates and checks `bytes` against `requirements` and `limits`. Errors name the
  // module and the item: "module 'x.wasm': missing export 'cabi_realloc' (expected (func (param
  // i32 i32 i32 i32) (result i32)))".
  static Result<std::shared_ptr<const WasmModule>> compile(std::string name,
                                                           const std::vector<uint8_t>& bytes,
                                                           const ModuleRequirements& requirements,
                                                           const WasmLimits& limits,
                                                           const EngineOptions& engine = {});
  // As compile() for core modules linked as `link` says: every module is checked against the
  // limits, every host import against `requirements.offered_imports`, every import from another
  // instance against that instance's export, and `requirements.exports` against link.exports.
  // At most one of the modules may define a memory (the memory limit holds for the whole).
  static Result<std::shared_ptr<const WasmModule>> compile_linked(
      std::string name, const CoreLink& link, const ModuleRequirements& requirements,
      const WasmLimits& limits);
  // As compile(), reading the file at `path` (the module's name is the path).
  static Result<std::shared_ptr<const WasmModule>> compile_file(
      const std::string& path, const ModuleRequirements& requirements, const WasmLimits& limits,
      const EngineOptions& engine = {});

  ~WasmModule();
  WasmModule(const WasmModule&) = delete;
  WasmModule& operator=(const WasmModule&) = delete;

  const std::string& name() const;
  const WasmLimits& limits() const;
  Engine engine() const;
  bool has_function_export(const std::string& name) const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  explicit WasmModule(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// How a call ended.
enum class CallStatus : uint8_t {
  kOk,
  kTrap,             // a wasm trap or a trap raised by a host function
  kBudgetExhausted,  // the instruction budget ran out
  kMemoryLimit,      // memory.grow past the memory limit
  kTimeLimit,        // the call ran past its wall-time limit
};
const char* call_status_name(CallStatus s);

// The result of calling into a guest.
struct CallOutcome {
  CallStatus status = CallStatus::kOk;
  std::string message;  // what happened, for logs and errors (empty when kOk)

  bool ok() const { return status == CallStatus::kOk; }
};

// One instance of a module with its own store, memory and interpreter thread. Not thread-safe:
// one thread calls into it at a time. After any call that does not end kOk the instance is
// spent (every later call fails at once) and must be replaced.
class WasmInstance {
 public:
  // Instantiates `module` with `host` (matched to the imports by module and name). Runs no guest
  // code: call initialize() next, once whatever the host functions use (the memory, the
  // instance itself) is in place.
  static Result<std::unique_ptr<WasmInstance>> instantiate(std::shared_ptr<const WasmModule> module,
                                                           std::vector<HostFunction> host);
  // Runs the module's start function and, if exported, `_initialize` (the WASI reactor
  // convention), each as a top-level call under the limits. Host functions may be called from
  // them. Errors name the module and what failed.
  Status initialize();
  ~WasmInstance();
  WasmInstance(const WasmInstance&) = delete;
  WasmInstance& operator=(const WasmInstance&) = delete;

  // Index of a function export for call(), or -1.
  int find_export(const std::string& name) const;
  // Calls a function export. A top-level call gets the full instruction budget and wall time; a
  // call made from inside a host function (cabi_realloc while lowering a result) runs on the same
  // interpreter thread on what is left of them, and its failure fails the outer call too.
  CallOutcome call(int export_index, const std::vector<RawValue>& args,
                   std::vector<RawValue>* results);
  // As above without allocating: `args` holds `nargs` values, `results` has room for
  // `nresults` (the export's result count; fewer are not written).
  CallOutcome call(int export_index, const RawValue* args, size_t nargs, RawValue* results,
                   size_t nresults);

  // Linear memory (the module's memory export). The pointer is invalidated by any call into
  // the guest, which may grow the memory.
  uint8_t* memory_data();
  uint64_t memory_size() const;
  uint32_t memory_pages() const;

  // When the top-level call in progress must end (time_point::max() when it has no wall-time
  // limit or no call is in progress). For host functions that wait.
  std::chrono::steady_clock::time_point deadline() const;
  // Takes `steps` from the budget of the call in progress, for work the host does on its behalf
  // (copying guest data). Returns false, and makes that call fail as budget-exhausted, when they
  // do not fit; true (charging nothing) when no call is in progress.
  bool charge(uint64_t steps);
  // The call depth this instance allows (see WasmLimits::value_stack_bytes).
  uint32_t call_depth_limit() const;

  // False once a call has failed: the instance must be replaced.
  bool usable() const;
  const WasmModule& module() const;

 private:
  struct Impl;
  explicit WasmInstance(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace witmq::guest
