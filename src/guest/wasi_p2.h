// The WASI 0.2 interfaces a component guest may import (what the preview1 adapter of the
// standard tools imports), served like the preview1 surface of wasi.h (docs/GUESTS.md, "WASI
// 0.2"): stdout and stderr streams become the guest's log lines, clocks, random and sleeping
// (poll on clock pollables) work, environment is the guest's `env`, and there are no preopens,
// so no descriptor can ever exist: a descriptor method traps as any unknown handle does.
// Resources (streams, pollables, terminals) live in one per-instance handle table with a cap.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "guest/handle_table.h"
#include "guest/wasi.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest {

// The WASI 0.2 functions offered to components, under the host module names of
// component_host_module() ("wasi:io/streams@0.2").
const std::vector<ImportSpec>& wasi_p2_imports();

// Most WASI 0.2 resources (streams, pollables) one instance may hold at once.
inline constexpr size_t kMaxWasiResourcesPerInstance = 256;

// The WASI 0.2 state of one instance. Not thread-safe except interrupt().
class WasiP2Host {
 public:
  // `preview1` takes the output (line splitting, limits) and the context (env).
  explicit WasiP2Host(WasiHost& preview1) : preview1_(preview1) {}
  WasiP2Host(const WasiP2Host&) = delete;
  WasiP2Host& operator=(const WasiP2Host&) = delete;

  std::vector<HostFunction> functions(std::function<WasmInstance*()> wasm);
  // Ends a wait in poll now (the call traps) and makes later waits trap at once.
  void interrupt();

 private:
  struct Resource {
    enum Kind { kInputStream, kOutputStream, kPollable, kTerminalInput, kTerminalOutput } kind;
    int fd = 0;  // streams: 0, 1, 2
    // pollables: ready at this time (time_point::min(): always ready)
    std::chrono::steady_clock::time_point ready_at = std::chrono::steady_clock::time_point::min();
  };
  Resource& get(uint32_t handle, Resource::Kind kind, const char* use);
  void drop(uint32_t handle, Resource::Kind kind, const char* use);
  uint32_t poll(WasmInstance& w, uint32_t list, uint32_t len, uint32_t retptr);
  void wait_until(WasmInstance& w, std::chrono::steady_clock::time_point until, const char* use);

  WasiHost& preview1_;
  HandleTable<Resource> resources_{"WASI resource", kMaxWasiResourcesPerInstance};
  std::mutex mu_;
  std::condition_variable cv_;
  bool interrupted_ = false;  // guarded by mu_
};

}  // namespace witmq::guest
