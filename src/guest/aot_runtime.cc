#include "guest/aot_runtime.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <string_view>

#include "auth/token.h"
#include "common/log.h"
#include "guest/file_bytes.h"
#include "guest/tool_process.h"

// The paths of the tools and of wabt's wasm2c runtime, fixed at build time (src/guest/CMakeLists).
#ifndef WITMQ_WASM2C
#define WITMQ_WASM2C "/usr/bin/wasm2c"
#endif
#ifndef WITMQ_AOT_CC
#define WITMQ_AOT_CC "/usr/bin/cc"
#endif
#ifndef WITMQ_WASM_RT_DIR
#define WITMQ_WASM_RT_DIR "/usr/share/wabt/wasm2c"
#endif
#ifndef WITMQ_WASM_RT_INCLUDE
#define WITMQ_WASM_RT_INCLUDE "/usr/include"
#endif

namespace witmq::guest {
namespace fs = std::filesystem;

namespace {

// Bumped whenever the generated glue or the compile flags change meaning: part of the cache key.
constexpr const char* kGlueVersion = "witmq-aot-glue 2";
// The trap code the glue raises when the host cannot allocate a memory or table (beside
// wasm_rt_trap_t's own codes).
constexpr int kTrapNoMemory = 64;  // WITMQ_TRAP_NO_MEMORY in glue_source()
constexpr uint32_t kAbiVersion = 1;
// Slice of the instruction budget handed to the fuel global at a time: the wall-time limit is
// checked each time a slice runs out.
constexpr uint64_t kFuelSlice = 1u << 22;
// Largest cache entry files read back: the metadata is three short lines; the shared object of
// the largest module the tier takes is far below the bound.
constexpr uint64_t kMaxMetaBytes = 4096;
constexpr uint64_t kMaxSharedObjectBytes = uint64_t{1} << 30;

// The layout of wasm_rt_memory_t (wasm-rt.h of wabt 1.0.32), which the generated code shares.
struct RtMemory {
  uint8_t* data;
  uint32_t pages;
  uint32_t max_pages;
  uint64_t size;
};

// The import block the generated code passes to every import (struct Z_witmq_instance_t).
using DispatchFn = int (*)(void* ctx, uint32_t index, const uint64_t* args, uint64_t* results);
struct HostBlock {
  void* ctx;
  DispatchFn call;
};
constexpr uint32_t kRefuelIndex = 0xffffffffu;
constexpr uint32_t kStartSlot = 0xffffffffu;

Error refuse(const std::string& module, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "module '" + module + "': " + what);
}

const char* c_type(ValType t) {
  switch (t) {
    case ValType::kI32:
      return "u32";
    case ValType::kI64:
      return "u64";
    case ValType::kF32:
      return "f32";
    case ValType::kF64:
      return "f64";
  }
  return "u32";
}

// C expression turning the value `v` of type `t` into raw bits (uint64_t).
std::string to_bits(ValType t, const std::string& v) {
  switch (t) {
    case ValType::kI32:
    case ValType::kI64:
      return "(uint64_t)" + v;
    case ValType::kF32:
      return "witmq_f32_bits(" + v + ")";
    case ValType::kF64:
      return "witmq_f64_bits(" + v + ")";
  }
  return v;
}

// C expression turning raw bits `b` into a value of type `t`.
std::string from_bits(ValType t, const std::string& b) {
  switch (t) {
    case ValType::kI32:
      return "(u32)" + b;
    case ValType::kI64:
      return "(u64)" + b;
    case ValType::kF32:
      return "witmq_bits_f32(" + b + ")";
    case ValType::kF64:
      return "witmq_bits_f64(" + b + ")";
  }
  return b;
}

// The C file compiled with the wasm2c output: it makes the runtime's trap state thread-local
// (wasm-rt-impl.c keeps it in globals), includes the runtime and the module in one translation
// unit, binds the imports to the host's dispatcher and offers the entry points AotLibrary looks
// up. Every other symbol is hidden.
std::string glue_source(const AotPlan& plan) {
  std::ostringstream c;
  c << "/* " << kGlueVersion << " */\n"
    << R"(#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* The runtime allocates memories and tables with calloc and uses the result unchecked: a failed
   allocation traps (ending the instantiation) instead, with a code of its own. */
#define WITMQ_TRAP_NO_MEMORY 64 /* kTrapNoMemory */
static void* witmq_calloc(size_t n, size_t size);
#define calloc(n, size) witmq_calloc(n, size)
#define WASM_RT_MEMCHECK_SIGNAL_HANDLER 0
#define WASM_RT_USE_STACK_DEPTH_COUNT 1
static uint32_t witmq_max_depth = 1;
#define WASM_RT_MAX_CALL_STACK_DEPTH witmq_max_depth
static _Thread_local uint32_t witmq_depth_tls;
static _Thread_local uint32_t witmq_saved_depth_tls;
static _Thread_local jmp_buf* witmq_target_tls;
static inline uint32_t* witmq_depth(void) { return &witmq_depth_tls; }
static inline uint32_t* witmq_saved_depth(void) { return &witmq_saved_depth_tls; }
static inline jmp_buf* witmq_target(void) { return witmq_target_tls; }
#define wasm_rt_call_stack_depth (*witmq_depth())
#define wasm_rt_saved_call_stack_depth (*witmq_saved_depth())
#define wasm_rt_jmp_buf (*witmq_target())
#include "wasm-rt-impl.c"
#include "module.c"
#undef calloc
static void* witmq_calloc(size_t n, size_t size) {
  void* p = calloc(n, size);
  if (!p && n != 0 && size != 0) wasm_rt_trap((wasm_rt_trap_t)WITMQ_TRAP_NO_MEMORY);
  return p;
}
#define WITMQ_API __attribute__((visibility("default")))
struct Z_witmq_instance_t {
  void* ctx;
  int (*call)(void* ctx, uint32_t index, const uint64_t* args, uint64_t* results);
};
static inline uint64_t witmq_f32_bits(f32 v) { uint32_t b; memcpy(&b, &v, 4); return b; }
static inline uint64_t witmq_f64_bits(f64 v) { uint64_t b; memcpy(&b, &v, 8); return b; }
static inline f32 witmq_bits_f32(uint64_t b) {
  uint32_t x = (uint32_t)b; f32 v; memcpy(&v, &x, 4); return v;
}
static inline f64 witmq_bits_f64(uint64_t b) { f64 v; memcpy(&v, &b, 8); return v; }
void Z_witmqZ_refuel(struct Z_witmq_instance_t* h) {
  if (h->call(h->ctx, 0xffffffffu, 0, 0)) wasm_rt_trap(WASM_RT_TRAP_UNREACHABLE);
}
)";
  for (size_t i = 0; i < plan.imports.size(); ++i) {
    const FuncSig& sig = plan.imports[i].sig;
    const bool has_result = !sig.results.empty();
    c << (has_result ? c_type(sig.results[0]) : "void") << " Z_witmqZ_i" << i
      << "(struct Z_witmq_instance_t* h";
    for (size_t p = 0; p < sig.params.size(); ++p) c << ", " << c_type(sig.params[p]) << " p" << p;
    c << ") {\n  uint64_t a[" << std::max<size_t>(sig.params.size(), 1) << "] = {0};\n"
      << "  uint64_t r[1] = {0};\n";
    for (size_t p = 0; p < sig.params.size(); ++p) {
      c << "  a[" << p << "] = " << to_bits(sig.params[p], "p" + std::to_string(p)) << ";\n";
    }
    c << "  if (h->call(h->ctx, " << i << "u, a, r)) wasm_rt_trap(WASM_RT_TRAP_UNREACHABLE);\n";
    if (has_result)
      c << "  return " << from_bits(sig.results[0], "r[0]") << ";\n";
    else
      c << "  (void)r;\n";
    c << "}\n";
  }
  c << R"(
#define WITMQ_TRY(body)                                              \
  jmp_buf buf;                                                       \
  jmp_buf* prev = witmq_target_tls;                                  \
  uint32_t prev_saved = witmq_saved_depth_tls;                       \
  witmq_saved_depth_tls = witmq_depth_tls;                           \
  witmq_target_tls = &buf;                                           \
  int code = setjmp(buf);                                            \
  if (code == 0) { body; }                                           \
  witmq_target_tls = prev;                                           \
  witmq_saved_depth_tls = prev_saved;                                \
  return code;
WITMQ_API uint32_t witmq_aot_abi(void) { return 1; }
WITMQ_API size_t witmq_aot_instance_size(void) { return sizeof(Z_m_instance_t); }
WITMQ_API void witmq_aot_init(uint32_t max_depth) {
  witmq_max_depth = max_depth;
  Z_m_init_module();
}
WITMQ_API int witmq_aot_instantiate(void* inst, struct Z_witmq_instance_t* host) {
  WITMQ_TRY(Z_m_instantiate((Z_m_instance_t*)inst, host))
}
WITMQ_API void witmq_aot_free(void* inst) { Z_m_free((Z_m_instance_t*)inst); }
WITMQ_API uint64_t* witmq_aot_fuel(void* inst) { return Z_mZ_witmq_fuel((Z_m_instance_t*)inst); }
)";
  c << "WITMQ_API void* witmq_aot_memory(void* inst) { return "
    << (plan.has_memory ? "Z_mZ_witmq_memory((Z_m_instance_t*)inst)" : "0") << "; }\n";
  c << "WITMQ_API uint32_t* witmq_aot_refused(void* inst) { return "
    << (plan.has_refused ? "Z_mZ_witmq_refused((Z_m_instance_t*)inst)" : "0") << "; }\n";
  c << "WITMQ_API int witmq_aot_call(void* inst, uint32_t slot, const uint64_t* a, uint64_t* r) "
       "{\n  Z_m_instance_t* self = (Z_m_instance_t*)inst;\n  (void)a; (void)r;\n"
       "  WITMQ_TRY(switch (slot) {\n";
  if (plan.has_start) c << "    case 0xffffffffu: Z_mZ_witmq_start(self); break;\n";
  for (const AotExport& e : plan.exports) {
    c << "    case " << e.export_index << "u: ";
    std::string call = "Z_mZ_witmq_e" + std::to_string(e.export_index) + "(self";
    for (size_t p = 0; p < e.sig.params.size(); ++p) {
      call += ", " + from_bits(e.sig.params[p], "a[" + std::to_string(p) + "]");
    }
    call += ")";
    if (e.sig.results.empty())
      c << call << ";";
    else
      c << "r[0] = " << to_bits(e.sig.results[0], call) << ";";
    c << " break;\n";
  }
  c << "    default: wasm_rt_trap(WASM_RT_TRAP_UNREACHABLE);\n  })\n}\n";
  return c.str();
}

std::string read_file(const fs::path& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  *ok = static_cast<bool>(in);
  if (!in) return {};
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  *ok = !in.bad();
  return s;
}

bool write_file(const fs::path& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  return static_cast<bool>(out);
}

// First line of `tool --version`, once per process (part of the cache key).
std::string tool_version(const char* tool) {
  static std::mutex mu;
  static std::map<std::string, std::string> versions;
  std::lock_guard lock(mu);
  auto it = versions.find(tool);
  if (it != versions.end()) return it->second;
  ToolLimits limits;
  limits.timeout = std::chrono::seconds(30);
  limits.max_output = 256;
  auto run = run_tool({tool, "--version"}, "/", limits);
  std::string v = run.ok() && run->ok() ? run->output.substr(0, run->output.find('\n'))
                                        : std::string("unknown");
  versions[tool] = v;
  return v;
}

std::string cc_flags() {
  return std::string(
             "-std=gnu11 -O2 -fPIC -shared -fvisibility=hidden -fstack-usage "
             "-Werror=implicit-function-declaration -I") +
         WITMQ_WASM_RT_DIR + " -I" + WITMQ_WASM_RT_INCLUDE;
}

std::string excerpt(const std::string& output) {
  std::string s = output;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? std::string("(no output)") : s;
}

// The largest frame, in bytes, in the -fstack-usage reports in `dir` ("file:line:col:name
// BYTES qualifiers" per function). A dynamic frame (alloca) counts double its static part.
uint64_t largest_frame(const fs::path& dir) {
  uint64_t largest = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".su") continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      const size_t tab = line.find('\t');
      if (tab == std::string::npos) continue;
      uint64_t bytes = std::strtoull(line.c_str() + tab + 1, nullptr, 10);
      if (line.find("dynamic", tab) != std::string::npos &&
          line.find("bounded", tab) == std::string::npos) {
        bytes *= 2;
      }
      largest = std::max(largest, bytes);
    }
  }
  return largest;
}

// What a trap code of the wasm2c runtime (wasm_rt_trap_t) means, worded as the interpreter words
// it, so that a trap reads the same in both tiers.
std::string trap_text(int code) {
  switch (code) {
    case 1:
      return "out of bounds memory or table access";
    case 2:
      return "integer overflow";
    case 3:
      return "integer divide by zero";
    case 4:
      return "invalid conversion to integer";
    case 5:
      return "unreachable executed";
    case 6:
      return "indirect call to a null or mismatched function";
    case 7:
      return "uncaught wasm exception";
    case 8:
      return "call stack exhausted";
    case kTrapNoMemory:
      return kCannotAllocateMemory;
    default:
      return "trap code " + std::to_string(code);
  }
}

}  // namespace

// ---- AotLibrary -----------------------------------------------------------------------------

class AotLibrary {
 public:
  ~AotLibrary() {
    if (handle) dlclose(handle);
    if (memfd >= 0) close(memfd);
  }
  void* handle = nullptr;
  int memfd = -1;  // the sealed memory file it was loaded from, open while it is loaded
  std::string key;
  AotPlan plan;  // bytes dropped once built
  uint32_t call_depth = 1;

  uint32_t (*abi)() = nullptr;
  size_t (*instance_size)() = nullptr;
  void (*init)(uint32_t) = nullptr;
  int (*instantiate)(void*, HostBlock*) = nullptr;
  void (*free_instance)(void*) = nullptr;
  uint64_t* (*fuel)(void*) = nullptr;
  void* (*memory)(void*) = nullptr;
  uint32_t* (*refused)(void*) = nullptr;
  int (*call)(void*, uint32_t, const uint64_t*, uint64_t*) = nullptr;
};

namespace {

// One library per cache key per process: instances of a module share it, concurrent loads of
// the same module wait for one build.
struct Registry {
  std::mutex mu;
  std::map<std::string, std::weak_ptr<const AotLibrary>> loaded;
  std::map<std::string, std::shared_ptr<std::mutex>> building;
  std::map<std::string, int> active;  // keys being loaded now (count of loads): prune keeps them
};
Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: libraries may outlive static teardown
  return *r;
}

template <typename F>
bool bind(void* handle, const char* symbol, F* out) {
  void* p = dlsym(handle, symbol);
  *out = reinterpret_cast<F>(p);
  return p != nullptr;
}

// Loads the shared object `bytes` (already checked against its hash) from a sealed memory file,
// so that what is loaded is exactly what was checked.
Result<void*> dlopen_bytes(const std::string& name, const std::string& bytes, int* memfd) {
  int fd = memfd_create("witmq-aot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    return Error(ErrorCode::kInternal,
                 "module '" + name + "': dlopen: memfd_create: " + std::strerror(errno));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return Error(
          ErrorCode::kInternal,
          "module '" + name + "': dlopen: writing the memory file: " + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
  // The loader knows a library by its path, and returns the library already loaded under the
  // same path: the memory file stays open while its library is loaded (AotLibrary::memfd), and
  // a number whose path still names a loaded library is skipped.
  for (int attempt = 0; attempt < 64; ++attempt) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (void* stale = dlopen(path.c_str(), RTLD_NOLOAD | RTLD_LAZY)) {
      dlclose(stale);
      const int moved = fcntl(fd, F_DUPFD_CLOEXEC, fd + 1);
      close(fd);
      if (moved < 0) break;
      fd = moved;
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* why = dlerror();
      close(fd);
      return Error(ErrorCode::kInternal,
                   "module '" + name + "': dlopen: " + std::string(why ? why : "unknown error"));
    }
    *memfd = fd;
    return handle;
  }
  close(fd);
  return Error(ErrorCode::kInternal,
               "module '" + name + "': dlopen: no free path for the compiled module");
}

Status bind_library(const std::string& name, AotLibrary& lib) {
  const bool ok = bind(lib.handle, "witmq_aot_abi", &lib.abi) &&
                  bind(lib.handle, "witmq_aot_instance_size", &lib.instance_size) &&
                  bind(lib.handle, "witmq_aot_init", &lib.init) &&
                  bind(lib.handle, "witmq_aot_instantiate", &lib.instantiate) &&
                  bind(lib.handle, "witmq_aot_free", &lib.free_instance) &&
                  bind(lib.handle, "witmq_aot_fuel", &lib.fuel) &&
                  bind(lib.handle, "witmq_aot_memory", &lib.memory) &&
                  bind(lib.handle, "witmq_aot_refused", &lib.refused) &&
                  bind(lib.handle, "witmq_aot_call", &lib.call);
  if (!ok || lib.abi() != kAbiVersion) {
    return Error(ErrorCode::kInternal,
                 "module '" + name +
                     "': dlopen: the compiled module lacks the entry points of "
                     "this version of witmqd");
  }
  return ok_status();
}

// The cache directory, created private (0700); refused when someone else could write to it.
Status prepare_cache_dir(const std::string& name, const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return Error(ErrorCode::kIoError, "module '" + name + "': compiled-module cache '" +
                                          dir.string() + "': cannot create it: " + ec.message());
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    return Error(ErrorCode::kIoError, "module '" + name + "': compiled-module cache '" +
                                          dir.string() + "': " + std::strerror(errno));
  }
  if (st.st_uid != geteuid()) {
    return Error(ErrorCode::kPermissionDenied,
                 "module '" + name + "': compiled-module cache '" + dir.string() +
                     "' is owned by uid " + std::to_string(st.st_uid) + ", not witmqd's uid " +
                     std::to_string(geteuid()) + ": compiled code from it will not be loaded");
  }
  if ((st.st_mode & 077) != 0) chmod(dir.c_str(), 0700);
  return ok_status();
}

struct Built {
  std::string so;      // the shared object
  uint64_t frame = 0;  // largest native frame
};

// wasm2c, then cc, in a fresh directory under `work_root`.
Result<Built> build(const std::string& name, const AotPlan& plan, const fs::path& work_root,
                    const std::string& key, const EngineOptions& options) {
  std::string work = (work_root / ("build-" + key + "-XXXXXX")).string();
  if (!mkdtemp(work.data())) {
    return Error(ErrorCode::kIoError, "module '" + name + "': compiled tier: cannot create a " +
                                          "build directory under '" + work_root.string() +
                                          "': " + std::strerror(errno));
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{work};
  const fs::path dir(work);
  if (!write_file(dir / "module.wasm", plan.bytes.data(), plan.bytes.size()) ||
      !write_file(dir / "glue.c", glue_source(plan).data(), glue_source(plan).size())) {
    return Error(ErrorCode::kIoError,
                 "module '" + name + "': compiled tier: cannot write to '" + work + "'");
  }
  // One deadline for both tools.
  const auto deadline = std::chrono::steady_clock::now() + options.compile_timeout;
  ToolLimits limits;
  limits.timeout = options.compile_timeout;
  auto step = [&](const char* step_name, std::vector<std::string> argv) -> Status {
    limits.timeout = std::max(std::chrono::milliseconds(1),
                              std::chrono::duration_cast<std::chrono::milliseconds>(
                                  deadline - std::chrono::steady_clock::now()));
    auto run = run_tool(argv, work, limits);
    if (!run.ok()) {
      return Error(ErrorCode::kInvalidArgument, "module '" + name + "': compiled tier: " +
                                                    step_name + ": " + run.error().message);
    }
    if (!run->ok()) {
      return Error(ErrorCode::kInvalidArgument,
                   "module '" + name + "': compiled tier: " + step_name + " " +
                       run->describe(limits) + ": " + excerpt(run->output));
    }
    return ok_status();
  };
  WITMQ_RETURN_IF_ERROR(step(
      "wasm2c", {WITMQ_WASM2C, "module.wasm", "-n", "m", "--no-debug-names", "-o", "module.c"}));
  std::vector<std::string> cc = {WITMQ_AOT_CC};
  std::istringstream flags(cc_flags());
  for (std::string f; flags >> f;) cc.push_back(f);
  for (const char* a : {"-o", "module.so", "glue.c", "-lm"}) cc.emplace_back(a);
  WITMQ_RETURN_IF_ERROR(step("cc", cc));
  Built out;
  bool ok = false;
  out.so = read_file(dir / "module.so", &ok);
  if (!ok) {
    return Error(ErrorCode::kIoError,
                 "module '" + name + "': compiled tier: cc: its output cannot be read");
  }
  out.frame = largest_frame(dir);
  return out;
}

std::string meta_text(const std::string& so_hash, uint64_t frame) {
  return std::string(kGlueVersion) + "\nsha256 " + so_hash + "\nframe " + std::to_string(frame) +
         "\n";
}

// Reads a cache entry: the shared object when its hash matches the one its metadata records.
bool read_cache(const fs::path& so_path, const fs::path& meta_path, Built* out, std::string* note) {
  // The entry is read as a regular file of bounded size, not through a symbolic link: whatever
  // else stands at its path (a FIFO, a device, a directory) is a damaged entry, not a wait.
  auto meta_bytes = read_regular_file(meta_path.string(), kMaxMetaBytes, Symlinks::kRefuse);
  if (!meta_bytes.ok()) {
    if (meta_bytes.error().code != ErrorCode::kNotFound) *note = meta_bytes.error().message;
    return false;  // kNotFound: no entry
  }
  const std::string meta(meta_bytes->begin(), meta_bytes->end());
  std::istringstream in(meta);
  std::string version, word, hash;
  std::getline(in, version);
  uint64_t frame = 0;
  in >> word >> hash;
  std::string frame_word;
  in >> frame_word >> frame;
  if (version != kGlueVersion || word != "sha256" || frame_word != "frame" || hash.size() != 64) {
    *note = "its metadata is not of this version";
    return false;
  }
  auto so_bytes = read_regular_file(so_path.string(), kMaxSharedObjectBytes, Symlinks::kRefuse);
  if (!so_bytes.ok()) {
    *note = so_bytes.error().code == ErrorCode::kNotFound ? "the shared object is missing"
                                                          : so_bytes.error().message;
    return false;
  }
  std::string so(so_bytes->begin(), so_bytes->end());
  so_bytes->clear();
  so_bytes->shrink_to_fit();
  if (auth::to_hex(auth::sha256(so)) != hash) {
    *note = "the shared object does not match the hash recorded for it";
    return false;
  }
  out->so = std::move(so);
  out->frame = frame;
  return true;
}

}  // namespace

Result<std::shared_ptr<const AotLibrary>> load_aot_library(const std::string& name,
                                                           const AotPlan& plan, uint32_t call_depth,
                                                           const EngineOptions& options,
                                                           AotLoadInfo* info) {
  AotLoadInfo local_info;
  if (!info) info = &local_info;
  // The key: the module as compiled, the glue compiled with it, the tools' versions, the flags.
  std::string key_text = glue_source(plan) + "\n" + tool_version(WITMQ_WASM2C) + "\n" +
                         tool_version(WITMQ_AOT_CC) + "\n" + cc_flags() + "\n";
  key_text.append(reinterpret_cast<const char*>(plan.bytes.data()), plan.bytes.size());
  const std::string key = auth::to_hex(auth::sha256(key_text));

  Registry& reg = registry();
  std::shared_ptr<std::mutex> key_mu;
  {
    std::lock_guard lock(reg.mu);
    if (auto lib = reg.loaded[key].lock()) {
      info->from_cache = true;
      return lib;
    }
    auto& m = reg.building[key];
    if (!m) m = std::make_shared<std::mutex>();
    key_mu = m;
    ++reg.active[key];
  }
  struct Active {
    Registry& reg;
    const std::string& key;
    ~Active() {
      std::lock_guard lock(reg.mu);
      if (--reg.active[key] == 0) reg.active.erase(key);
    }
  } active{reg, key};
  std::lock_guard build_lock(*key_mu);
  {
    std::lock_guard lock(reg.mu);
    if (auto lib = reg.loaded[key].lock()) {
      info->from_cache = true;
      return lib;
    }
  }

  // A private directory when there is no cache: the build leaves nothing behind.
  fs::path cache_dir = options.cache_dir;
  std::string temp_root;
  if (cache_dir.empty()) {
    std::error_code ec;
    temp_root = (fs::temp_directory_path(ec) / "witmq-aot-XXXXXX").string();
    if (ec || !mkdtemp(temp_root.data())) {
      return Error(ErrorCode::kIoError,
                   "module '" + name + "': compiled tier: cannot create a temporary directory");
    }
    cache_dir = temp_root;
  } else {
    WITMQ_RETURN_IF_ERROR(prepare_cache_dir(name, cache_dir));
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      if (!dir.empty()) fs::remove_all(dir, ec);
    }
  } cleanup{temp_root};

  const fs::path so_path = cache_dir / (key + ".so");
  const fs::path meta_path = cache_dir / (key + ".meta");
  Built built;
  std::string note;
  info->from_cache = temp_root.empty() && read_cache(so_path, meta_path, &built, &note);
  if (!note.empty()) {
    info->note = "cache entry " + key + " not used: " + note;
    log::warn("module '{}': compiled-module {}; compiling again", name, info->note);
  }
  if (info->from_cache) {
    log::info("module '{}': compiled module loaded from the cache ({})", name, so_path.string());
  } else {
    const auto t0 = std::chrono::steady_clock::now();
    auto fresh = build(name, plan, cache_dir, key, options);
    if (!fresh.ok()) return std::move(fresh).error();
    built = std::move(fresh).value();
    log::info("module '{}': compiled in {} ms (wasm2c and cc){}", name,
              std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - t0)
                  .count(),
              temp_root.empty() ? ", kept in " + so_path.string() : std::string());
    if (temp_root.empty()) {
      // The shared object first, then the metadata naming its hash: an entry is complete once
      // its metadata exists, and each file appears whole (rename), so a crash or a concurrent
      // build leaves no half entry.
      const std::string hash = auth::to_hex(auth::sha256(built.so));
      const std::string meta = meta_text(hash, built.frame);
      std::error_code ec;
      const fs::path so_tmp = cache_dir / (key + ".so.tmp");
      const fs::path meta_tmp = cache_dir / (key + ".meta.tmp");
      // What stands at the temporary paths (left by a crash, or planted) is replaced, never
      // written through.
      fs::remove(so_tmp, ec);
      fs::remove(meta_tmp, ec);
      if (write_file(so_tmp, built.so.data(), built.so.size()) &&
          write_file(meta_tmp, meta.data(), meta.size())) {
        fs::rename(so_tmp, so_path, ec);
        if (!ec) fs::rename(meta_tmp, meta_path, ec);
      } else {
        ec = std::make_error_code(std::errc::io_error);
      }
      if (ec) {
        // Not fatal: the module runs, it is compiled again next time.
        log::warn("module '{}': cannot store the compiled module in '{}': {}", name,
                  cache_dir.string(), ec.message());
        fs::remove(so_tmp, ec);
        fs::remove(meta_tmp, ec);
      }
    }
  }

  auto lib = std::make_shared<AotLibrary>();
  auto handle = dlopen_bytes(name, built.so, &lib->memfd);
  if (!handle.ok()) return std::move(handle).error();
  lib->handle = *handle;
  WITMQ_RETURN_IF_ERROR(bind_library(name, *lib));
  lib->key = key;
  lib->plan = plan;
  lib->plan.bytes.clear();
  lib->plan.bytes.shrink_to_fit();
  const uint64_t frame = std::max<uint64_t>(built.frame, 1) + 64;
  lib->call_depth = static_cast<uint32_t>(
      std::max<uint64_t>(1, std::min<uint64_t>(call_depth, kAotStackBytes / frame)));
  lib->init(lib->call_depth);
  std::shared_ptr<const AotLibrary> shared = lib;
  std::lock_guard lock(reg.mu);
  reg.loaded[key] = shared;
  return shared;
}

namespace {

// The key a cache directory entry belongs to: "<key>.so", "<key>.meta", "<key>.*.tmp",
// "build-<key>-XXXXXX"; "" for a name that is none of these (not the cache's: left alone).
std::string key_of_entry(const std::string& file) {
  const std::string_view name =
      file.rfind("build-", 0) == 0 ? std::string_view(file).substr(6) : std::string_view(file);
  if (name.size() < 65 || (name[64] != '.' && name[64] != '-')) return {};
  const std::string_view key = name.substr(0, 64);
  const bool hex = std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  return hex ? std::string(key) : std::string();
}

}  // namespace

AotPruneResult prune_aot_cache(const std::string& cache_dir) {
  AotPruneResult out;
  if (cache_dir.empty()) return out;
  Registry& reg = registry();
  // Under the registry's lock: no load can start (or finish storing an entry) while entries are
  // removed, so an entry is removed only when no instance of its module runs in this process
  // and no load of it is under way.
  std::lock_guard lock(reg.mu);
  std::error_code ec;
  fs::directory_iterator it(cache_dir, ec);
  if (ec) return out;  // no cache yet
  std::vector<fs::path> doomed;
  for (const fs::directory_entry& entry : it) {
    const std::string key = key_of_entry(entry.path().filename().string());
    if (key.empty()) continue;
    auto loaded = reg.loaded.find(key);
    if (loaded != reg.loaded.end() && !loaded->second.expired()) {
      ++out.kept;
      continue;
    }
    if (reg.active.count(key)) {
      ++out.kept;
      continue;
    }
    doomed.push_back(entry.path());
  }
  for (const fs::path& p : doomed) {
    std::error_code remove_ec;
    fs::remove_all(p, remove_ec);
    if (remove_ec) {
      log::warn("compiled-module cache: cannot remove '{}': {}", p.string(), remove_ec.message());
    } else {
      ++out.removed;
    }
  }
  for (auto i = reg.loaded.begin(); i != reg.loaded.end();) {
    i = i->second.expired() ? reg.loaded.erase(i) : std::next(i);
  }
  for (auto i = reg.building.begin(); i != reg.building.end();) {
    i = reg.active.count(i->first) ? std::next(i) : reg.building.erase(i);
  }
  return out;
}

// ---- AotInstance ----------------------------------------------------------------------------

struct AotInstance::Impl {
  std::shared_ptr<const AotLibrary> lib;
  std::string module_name;
  WasmLimits limits;
  std::vector<HostFunction> host;  // by import index
  HostBlock block{};
  void* instance = nullptr;  // the generated instance struct (calloc'ed)
  bool instantiated = false;
  RtMemory* memory = nullptr;
  uint64_t* fuel = nullptr;
  uint32_t* refused = nullptr;

  int depth = 0;
  bool spent = false;
  CallOutcome nested_failure;
  std::string host_trap;   // what a host function's trap said, for the outcome
  uint64_t remaining = 0;  // budget not yet in the fuel global
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();

  ~Impl() {
    if (instance) {
      if (instantiated) lib->free_instance(instance);
      std::free(instance);
    }
  }

  int64_t fuel_left() const { return static_cast<int64_t>(*fuel); }
  CallOutcome time_limit(const std::string& what) const {
    return {CallStatus::kTimeLimit, "wall time limit of " +
                                        std::to_string(limits.call_time_limit.count()) +
                                        " ms exceeded in " + what};
  }
  CallOutcome exhausted(const std::string& what) const {
    return {CallStatus::kBudgetExhausted, "instruction budget of " +
                                              std::to_string(limits.instruction_budget) +
                                              " exhausted in " + what};
  }
  // The guest's fuel ran out: the next slice of the budget, or false (and the call fails).
  bool refuel();
  int dispatch(uint32_t index, const uint64_t* args, uint64_t* results);
  CallOutcome run(uint32_t slot, const std::string& what, const RawValue* args, size_t nargs,
                  RawValue* results, size_t nresults, size_t nparams);
};

namespace {

int dispatch_thunk(void* ctx, uint32_t index, const uint64_t* args, uint64_t* results) {
  return static_cast<AotInstance::Impl*>(ctx)->dispatch(index, args, results);
}

}  // namespace

bool AotInstance::Impl::refuel() {
  if (nested_failure.status != CallStatus::kOk) return false;
  if (std::chrono::steady_clock::now() >= deadline) {
    nested_failure = time_limit("the call in progress");
    return false;
  }
  const int64_t f = fuel_left();
  const uint64_t overdraft = f < 0 ? static_cast<uint64_t>(-f) : 0;
  if (overdraft >= remaining) {
    remaining = 0;
    *fuel = 0;
    nested_failure = exhausted("the call in progress");
    return false;
  }
  remaining -= overdraft;
  const uint64_t slice = std::min(remaining, kFuelSlice);
  remaining -= slice;
  *fuel = slice;
  return true;
}

// Runs on the guest's thread from the generated code, which must not see a C++ exception: every
// failure becomes a nonzero return, which traps the guest.
int AotInstance::Impl::dispatch(uint32_t index, const uint64_t* args, uint64_t* results) {
  if (index == kRefuelIndex) return refuel() ? 0 : 1;
  const HostFunction& hf = host[index];
  try {
    RawValue outs[4] = {};
    hf.fn(args, outs);
    if (!hf.spec.sig.results.empty()) {
      results[0] =
          hf.spec.sig.results[0] == ValType::kI32 ? static_cast<uint32_t>(outs[0]) : outs[0];
    }
    return 0;
  } catch (const GuestTrap& e) {
    host_trap = e.what();
  } catch (const std::exception& e) {
    host_trap =
        "host function \"" + hf.spec.module + "\".\"" + hf.spec.name + "\" failed: " + e.what();
  } catch (...) {
    host_trap = "host function \"" + hf.spec.module + "\".\"" + hf.spec.name + "\" failed";
  }
  return 1;
}

CallOutcome AotInstance::Impl::run(uint32_t slot, const std::string& what, const RawValue* args,
                                   size_t nargs, RawValue* results, size_t nresults,
                                   size_t nparams) {
  if (spent) {
    return {CallStatus::kTrap, "call to " + what + " refused: the instance failed earlier"};
  }
  if (nargs != nparams) {
    return {CallStatus::kTrap, "call to " + what + " with " + std::to_string(nargs) +
                                   " arguments, expected " + std::to_string(nparams)};
  }
  const bool top = depth == 0;
  if (top) {
    const auto limit = limits.call_time_limit;
    deadline = limit.count() > 0 ? std::chrono::steady_clock::now() + limit
                                 : std::chrono::steady_clock::time_point::max();
    const uint64_t slice = std::min<uint64_t>(limits.instruction_budget, kFuelSlice);
    *fuel = slice;
    remaining = limits.instruction_budget - slice;
    host_trap.clear();
  }
  uint64_t a[16] = {};
  uint64_t r[1] = {};
  std::copy(args, args + std::min<size_t>(nargs, 16), a);
  ++depth;
  const int code = lib->call(instance, slot, a, r);
  --depth;
  if (code == 0) {
    if (nresults > 0) results[0] = r[0];
    return {};
  }
  spent = true;
  CallOutcome outcome;
  if (nested_failure.status != CallStatus::kOk) {
    outcome = nested_failure;
    // The failure was recorded where it happened; name the export it failed in.
    const std::string generic = "the call in progress";
    const size_t at = outcome.message.rfind(generic);
    if (at != std::string::npos) outcome.message.replace(at, generic.size(), what);
  } else if (!host_trap.empty()) {
    outcome = {CallStatus::kTrap, "trap in " + what + ": " + host_trap};
  } else if (refused && *refused != 0) {
    outcome = {CallStatus::kMemoryLimit,
               "memory.grow by " + std::to_string(*refused) + " pages in " + what +
                   " exceeds the memory limit of " + std::to_string(limits.memory_pages) +
                   " pages (memory is at " + std::to_string(memory ? memory->pages : 0) +
                   " pages)"};
  } else if (std::chrono::steady_clock::now() >= deadline) {
    outcome = time_limit(what);
  } else {
    outcome = {CallStatus::kTrap, "trap in " + what + ": " + trap_text(code)};
  }
  if (depth > 0 && nested_failure.status == CallStatus::kOk) nested_failure = outcome;
  return outcome;
}

AotInstance::AotInstance(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AotInstance::~AotInstance() = default;

Result<std::unique_ptr<AotInstance>> AotInstance::instantiate(std::shared_ptr<const AotLibrary> lib,
                                                              const std::string& module_name,
                                                              const WasmLimits& limits,
                                                              std::vector<HostFunction> host) {
  auto impl = std::make_unique<Impl>();
  impl->lib = std::move(lib);
  impl->module_name = module_name;
  impl->limits = limits;
  const AotLibrary& l = *impl->lib;
  for (const AotImport& import : l.plan.imports) {
    auto it = std::find_if(host.begin(), host.end(), [&](const HostFunction& h) {
      return h.spec.module == import.module && h.spec.name == import.name;
    });
    if (it == host.end()) {
      return refuse(module_name, "import \"" + import.module + "\".\"" + import.name +
                                     "\" has no host function bound to it");
    }
    impl->host.push_back(*it);
  }
  impl->instance = std::calloc(1, l.instance_size());
  if (!impl->instance) {
    return Error(ErrorCode::kResourceExhausted,
                 "module '" + module_name + "': cannot allocate an instance");
  }
  impl->block = {impl.get(), &dispatch_thunk};
  impl->fuel = l.fuel(impl->instance);
  // Instantiation runs no guest code (the start function waits for initialize()), but data and
  // element segments out of bounds trap.
  impl->remaining = 0;
  *impl->fuel = 0;
  impl->instantiated = true;
  const int code = l.instantiate(impl->instance, &impl->block);
  if (code != 0) {
    return Error(
        code == kTrapNoMemory ? ErrorCode::kResourceExhausted : ErrorCode::kFailedPrecondition,
        "module '" + module_name + "': instantiation failed: " + trap_text(code));
  }
  impl->memory = static_cast<RtMemory*>(l.memory(impl->instance));
  impl->refused = l.refused(impl->instance);
  return std::unique_ptr<AotInstance>(new AotInstance(std::move(impl)));
}

Status AotInstance::initialize() {
  if (impl_->lib->plan.has_start) {
    CallOutcome o = impl_->run(kStartSlot, "the start function", nullptr, 0, nullptr, 0, 0);
    if (!o.ok()) {
      return Error(ErrorCode::kFailedPrecondition,
                   "module '" + impl_->module_name + "': " + o.message);
    }
  }
  const int init = find_export("_initialize");
  if (init >= 0) {
    const auto& exports = impl_->lib->plan.exports;
    auto it = std::find_if(exports.begin(), exports.end(), [&](const AotExport& e) {
      return e.export_index == static_cast<uint32_t>(init);
    });
    if (!it->sig.params.empty() || !it->sig.results.empty()) {
      return refuse(impl_->module_name,
                    "export '_initialize' has type " + it->sig.to_string() + ", expected (func)");
    }
    CallOutcome o = call(init, nullptr, 0, nullptr, 0);
    if (!o.ok()) {
      return Error(ErrorCode::kFailedPrecondition,
                   "module '" + impl_->module_name + "': " + o.message);
    }
  }
  return ok_status();
}

int AotInstance::find_export(const std::string& name) const {
  for (const AotExport& e : impl_->lib->plan.exports) {
    if (e.name == name) return static_cast<int>(e.export_index);
  }
  return -1;
}

size_t AotInstance::result_count(int export_index) const {
  for (const AotExport& e : impl_->lib->plan.exports) {
    if (e.export_index == static_cast<uint32_t>(export_index)) return e.sig.results.size();
  }
  return 0;
}

CallOutcome AotInstance::call(int export_index, const RawValue* args, size_t nargs,
                              RawValue* results, size_t nresults) {
  for (const AotExport& e : impl_->lib->plan.exports) {
    if (e.export_index != static_cast<uint32_t>(export_index)) continue;
    return impl_->run(e.export_index, "'" + e.name + "'", args, nargs, results, nresults,
                      e.sig.params.size());
  }
  return {CallStatus::kTrap, "call to export #" + std::to_string(export_index) +
                                 ", which is not a function the module defines"};
}

uint8_t* AotInstance::memory_data() { return impl_->memory ? impl_->memory->data : nullptr; }
uint64_t AotInstance::memory_size() const { return impl_->memory ? impl_->memory->size : 0; }
uint32_t AotInstance::memory_pages() const { return impl_->memory ? impl_->memory->pages : 0; }
std::chrono::steady_clock::time_point AotInstance::deadline() const {
  return impl_->depth > 0 ? impl_->deadline : std::chrono::steady_clock::time_point::max();
}

bool AotInstance::charge(uint64_t steps) {
  Impl& s = *impl_;
  if (s.depth == 0) return true;
  const int64_t f = s.fuel_left();
  const uint64_t in_fuel = f > 0 ? static_cast<uint64_t>(f) : 0;
  if (steps <= in_fuel) {
    *s.fuel = static_cast<uint64_t>(f - static_cast<int64_t>(steps));
    return true;
  }
  const uint64_t rest = steps - in_fuel;
  if (rest <= s.remaining) {
    s.remaining -= rest;
    *s.fuel = 0;
    return true;
  }
  s.remaining = 0;
  *s.fuel = 0;
  if (s.nested_failure.status == CallStatus::kOk) {
    s.nested_failure = {CallStatus::kBudgetExhausted,
                        "instruction budget of " + std::to_string(s.limits.instruction_budget) +
                            " exhausted by the host copying guest data in a host call"};
  }
  return false;
}

uint32_t AotInstance::call_depth_limit() const { return impl_->lib->call_depth; }
bool AotInstance::usable() const { return !impl_->spent; }

}  // namespace witmq::guest
