// The ahead-of-time tier (docs/GUESTS.md "Two tiers"): a module planned by aot_module.h is
// turned into C by wasm2c, compiled into a shared object with the system C compiler against
// wabt's wasm2c runtime (bounds-checked memory, call depth counted, no signal handler), cached
// in a directory by content hash, loaded, and run by AotInstance behind WasmInstance.
//
// C++17-clean (wasm_runtime.cc includes it).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "guest/aot_module.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest {

// Native stack the frames of one call into a compiled guest may use: the call depth of a
// compiled instance is this over the largest frame the C compiler reports for the module, and
// at most the interpreter's depth for it. Worker threads have the platform's default stack (8
// MiB on Linux), so this leaves room for the host code under and between the guest's frames.
inline constexpr uint64_t kAotStackBytes = 2u << 20;

// A compiled module loaded into the process, shared by all its instances (and by every load of
// the same module: one copy per process).
class AotLibrary;

// How load_aot_library() got its library, for logs and tests.
struct AotLoadInfo {
  bool from_cache = false;  // the cache held a valid build: nothing was compiled
  std::string note;         // why the cache was not used ("" when it was, or had no entry)
};

// Builds (or finds in options.cache_dir) and loads the compiled form of `plan`. `call_depth` is
// the interpreter's depth for the module (an upper bound for the compiled one). Errors name the
// module and the step that failed (wasm2c, cc, dlopen) with an excerpt of the tool's output.
Result<std::shared_ptr<const AotLibrary>> load_aot_library(const std::string& name,
                                                           const AotPlan& plan, uint32_t call_depth,
                                                           const EngineOptions& options,
                                                           AotLoadInfo* info = nullptr);

// What prune_aot_cache() did: files or build directories removed, and kept.
struct AotPruneResult {
  size_t removed = 0;
  size_t kept = 0;
};

// Bounds the compiled-module cache `cache_dir` to the modules in use: removes every entry
// (shared object, metadata) of a module no instance in this process runs and no load is
// building now, and what interrupted builds left (temporary files, build directories). Names
// that are not the cache's own are left alone; a missing directory is no error. witmqd calls it
// after every start and reload of its guests, so the cache holds the compiled modules of the
// configured guests and nothing else.
AotPruneResult prune_aot_cache(const std::string& cache_dir);

// One instance of a compiled module; the compiled counterpart of WasmInstance's interpreter
// state, with the same contract (see WasmInstance).
class AotInstance {
 public:
  static Result<std::unique_ptr<AotInstance>> instantiate(std::shared_ptr<const AotLibrary> lib,
                                                          const std::string& module_name,
                                                          const WasmLimits& limits,
                                                          std::vector<HostFunction> host);
  ~AotInstance();
  AotInstance(const AotInstance&) = delete;
  AotInstance& operator=(const AotInstance&) = delete;

  Status initialize();
  int find_export(const std::string& name) const;
  CallOutcome call(int export_index, const RawValue* args, size_t nargs, RawValue* results,
                   size_t nresults);
  size_t result_count(int export_index) const;
  uint8_t* memory_data();
  uint64_t memory_size() const;
  uint32_t memory_pages() const;
  std::chrono::steady_clock::time_point deadline() const;
  bool charge(uint64_t steps);
  uint32_t call_depth_limit() const;
  bool usable() const;

  struct Impl;

 private:
  explicit AotInstance(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace witmq::guest
