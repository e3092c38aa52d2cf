#include "guest/wasi_p2.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <string_view>

#include "guest/component.h"

namespace witmq::guest {
namespace {

constexpr const char* kError = "wasi:io/error@0.2";
constexpr const char* kPoll = "wasi:io/poll@0.2";
constexpr const char* kStreams = "wasi:io/streams@0.2";
constexpr const char* kFilesystem = "wasi:filesystem/types@0.2";

// Most pollables one poll may pass, and most bytes one get-random-bytes may ask for.
constexpr uint32_t kMaxPollables = 4096;
constexpr uint64_t kMaxRandomBytes = 1 << 20;
constexpr uint64_t kBytesPerStep = 8;

// Function: host module, name, core signature ('i' = i32, 'I' = i64; params, results).
struct Entry {
  const char* module;
  const char* name;
  const char* params;
  const char* results;
};
constexpr Entry kFunctions[] = {
    {kError, "[resource-drop]error", "i", ""},
    {kError, "[method]error.to-debug-string", "ii", ""},
    {kPoll, "[resource-drop]pollable", "i", ""},
    {kPoll, "[method]pollable.ready", "i", "i"},
    {kPoll, "[method]pollable.block", "i", ""},
    {kPoll, "poll", "iii", ""},
    {kStreams, "[resource-drop]input-stream", "i", ""},
    {kStreams, "[resource-drop]output-stream", "i", ""},
    {kStreams, "[method]input-stream.read", "iIi", ""},
    {kStreams, "[method]input-stream.blocking-read", "iIi", ""},
    {kStreams, "[method]input-stream.subscribe", "i", "i"},
    {kStreams, "[method]output-stream.check-write", "ii", ""},
    {kStreams, "[method]output-stream.write", "iiii", ""},
    {kStreams, "[method]output-stream.blocking-write-and-flush", "iiii", ""},
    {kStreams, "[method]output-stream.flush", "ii", ""},
    {kStreams, "[method]output-stream.blocking-flush", "ii", ""},
    {kStreams, "[method]output-stream.subscribe", "i", "i"},
    {"wasi:cli/stdin@0.2", "get-stdin", "", "i"},
    {"wasi:cli/stdout@0.2", "get-stdout", "", "i"},
    {"wasi:cli/stderr@0.2", "get-stderr", "", "i"},
    {"wasi:cli/terminal-input@0.2", "[resource-drop]terminal-input", "i", ""},
    {"wasi:cli/terminal-output@0.2", "[resource-drop]terminal-output", "i", ""},
    {"wasi:cli/terminal-stdin@0.2", "get-terminal-stdin", "i", ""},
    {"wasi:cli/terminal-stdout@0.2", "get-terminal-stdout", "i", ""},
    {"wasi:cli/terminal-stderr@0.2", "get-terminal-stderr", "i", ""},
    {"wasi:cli/environment@0.2", "get-environment", "i", ""},
    {"wasi:cli/environment@0.2", "get-arguments", "i", ""},
    {"wasi:cli/environment@0.2", "initial-cwd", "i", ""},
    {"wasi:cli/exit@0.2", "exit", "i", ""},
    {"wasi:clocks/monotonic-clock@0.2", "now", "", "I"},
    {"wasi:clocks/monotonic-clock@0.2", "resolution", "", "I"},
    {"wasi:clocks/monotonic-clock@0.2", "subscribe-instant", "I", "i"},
    {"wasi:clocks/monotonic-clock@0.2", "subscribe-duration", "I", "i"},
    {"wasi:clocks/wall-clock@0.2", "now", "i", ""},
    {"wasi:clocks/wall-clock@0.2", "resolution", "i", ""},
    {"wasi:random/random@0.2", "get-random-bytes", "Ii", ""},
    {"wasi:random/random@0.2", "get-random-u64", "", "I"},
    {"wasi:random/insecure@0.2", "get-insecure-random-bytes", "Ii", ""},
    {"wasi:random/insecure@0.2", "get-insecure-random-u64", "", "I"},
    {"wasi:random/insecure-seed@0.2", "insecure-seed", "i", ""},
    {"wasi:filesystem/preopens@0.2", "get-directories", "i", ""},
    {kFilesystem, "filesystem-error-code", "ii", ""},
    {kFilesystem, "[resource-drop]descriptor", "i", ""},
    {kFilesystem, "[resource-drop]directory-entry-stream", "i", ""},
    {kFilesystem, "[method]descriptor.get-flags", "ii", ""},
    {kFilesystem, "[method]descriptor.get-type", "ii", ""},
    {kFilesystem, "[method]descriptor.stat", "ii", ""},
    {kFilesystem, "[method]descriptor.append-via-stream", "ii", ""},
    {kFilesystem, "[method]descriptor.read-via-stream", "iIi", ""},
    {kFilesystem, "[method]descriptor.write-via-stream", "iIi", ""},
};

std::vector<ValType> types(const char* s) {
  std::vector<ValType> out;
  for (; *s; ++s) out.push_back(*s == 'I' ? ValType::kI64 : ValType::kI32);
  return out;
}

uint32_t u32(RawValue v) { return static_cast<uint32_t>(v); }

// Guest memory of the instance in the host call in progress; outside it traps.
class Mem {
 public:
  explicit Mem(WasmInstance& w) : w_(w), data_(w.memory_data()), size_(w.memory_size()) {}
  uint8_t* at(uint32_t ptr, uint64_t len, const char* use) const {
    if (!data_ || uint64_t{ptr} + len > size_) {
      throw GuestTrap(fmt::format("{}: {} bytes at {} are outside the guest's memory ({} bytes)",
                                  use, len, ptr, size_));
    }
    return data_ + ptr;
  }
  void u8(uint32_t ptr, uint8_t v, const char* use) const { *at(ptr, 1, use) = v; }
  void u32(uint32_t ptr, uint32_t v, const char* use) const { std::memcpy(at(ptr, 4, use), &v, 4); }
  void u64(uint32_t ptr, uint64_t v, const char* use) const { std::memcpy(at(ptr, 8, use), &v, 8); }
  void charge(uint64_t steps) const {
    if (!w_.charge(steps)) {
      throw GuestTrap("instruction budget exhausted by the host serving a WASI 0.2 call");
    }
  }

 private:
  WasmInstance& w_;
  uint8_t* data_;
  uint64_t size_;
};

// Allocates in the guest with its import realloc (what `canon lower ... (realloc)` names).
uint32_t guest_alloc(WasmInstance& w, uint32_t align, uint64_t size, const char* use) {
  if (size > UINT32_MAX) throw GuestTrap(fmt::format("{}: {} bytes do not fit", use, size));
  const int realloc = w.find_export(kWasiImportRealloc);
  if (realloc < 0) throw GuestTrap(fmt::format("{}: the guest has no import realloc", use));
  const RawValue args[4] = {0, 0, align, size};
  RawValue ptr = 0;
  CallOutcome o = w.call(realloc, args, 4, &ptr, 1);
  if (!o.ok()) throw GuestTrap(o.message);
  Mem(w).at(u32(ptr), size, use);
  return u32(ptr);
}

// Writes a list of strings pairs (environment) or strings (arguments) at `retptr`.
void store_strings(WasmInstance& w, uint32_t retptr, const std::vector<std::string>& strings,
                   size_t per_element, const char* use) {
  const uint32_t n = static_cast<uint32_t>(strings.size() / per_element);
  const uint32_t list = guest_alloc(w, 4, uint64_t{n} * per_element * 8, use);
  for (size_t i = 0; i < strings.size(); ++i) {
    const std::string& s = strings[i];
    const uint32_t ptr = guest_alloc(w, 1, s.size(), use);
    Mem m(w);
    m.charge(s.size() / kBytesPerStep + 1);
    std::memcpy(m.at(ptr, s.size(), use), s.data(), s.size());
    m.u32(list + static_cast<uint32_t>(8 * i), ptr, use);
    m.u32(list + static_cast<uint32_t>(8 * i + 4), static_cast<uint32_t>(s.size()), use);
  }
  Mem m(w);
  m.u32(retptr, list, use);
  m.u32(retptr + 4, n, use);
}

uint64_t monotonic_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

const std::vector<ImportSpec>& wasi_p2_imports() {
  static const std::vector<ImportSpec> specs = [] {
    std::vector<ImportSpec> out;
    for (const Entry& e : kFunctions) {
      out.push_back(ImportSpec{e.module, e.name, FuncSig{types(e.params), types(e.results)}});
    }
    return out;
  }();
  return specs;
}

WasiP2Host::Resource& WasiP2Host::get(uint32_t handle, Resource::Kind kind, const char* use) {
  Resource& r = resources_.get(handle, use);
  if (r.kind != kind)
    throw GuestTrap(fmt::format("{}: handle {} is another resource", use, handle));
  return r;
}

void WasiP2Host::drop(uint32_t handle, Resource::Kind kind, const char* use) {
  get(handle, kind, use);
  resources_.take(handle, use);
}

void WasiP2Host::interrupt() {
  std::lock_guard lock(mu_);
  interrupted_ = true;
  cv_.notify_all();
}

void WasiP2Host::wait_until(WasmInstance& w, std::chrono::steady_clock::time_point until,
                            const char* use) {
  // Never past the call's deadline (like poll_oneoff): a sleep that reaches it fails the call as
  // a time limit; stopping the guest ends it at once.
  const auto deadline = w.deadline();
  if (until <= std::chrono::steady_clock::now()) return;
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, std::min(until, deadline), [&] { return interrupted_; });
  if (interrupted_) throw GuestTrap(fmt::format("{}: the guest is stopping", use));
  if (until > deadline) {
    throw GuestTrap(fmt::format("{}: the call's wall time limit is reached", use));
  }
}

uint32_t WasiP2Host::poll(WasmInstance& w, uint32_t list, uint32_t len, uint32_t retptr) {
  const char* use = "wasi:io/poll.poll";
  if (len == 0) throw GuestTrap("wasi:io/poll.poll: an empty list of pollables");
  if (len > kMaxPollables) {
    throw GuestTrap(fmt::format("{}: {} pollables, at most {}", use, len, kMaxPollables));
  }
  Mem m(w);
  m.charge(len);
  const uint8_t* p = m.at(list, uint64_t{len} * 4, use);
  std::vector<std::chrono::steady_clock::time_point> ready(len);
  auto earliest = std::chrono::steady_clock::time_point::max();
  for (uint32_t i = 0; i < len; ++i) {
    uint32_t h;
    std::memcpy(&h, p + 4 * i, 4);
    ready[i] = get(h, Resource::kPollable, use).ready_at;
    earliest = std::min(earliest, ready[i]);
  }
  wait_until(w, earliest, use);
  const auto now = std::chrono::steady_clock::now();
  std::vector<uint32_t> indices;
  for (uint32_t i = 0; i < len; ++i) {
    if (ready[i] <= now) indices.push_back(i);
  }
  const uint32_t out = guest_alloc(w, 4, uint64_t{indices.size()} * 4, use);
  Mem after(w);
  for (size_t i = 0; i < indices.size(); ++i) after.u32(out + 4 * i, indices[i], use);
  after.u32(retptr, out, use);
  after.u32(retptr + 4, static_cast<uint32_t>(indices.size()), use);
  return 0;
}

std::vector<HostFunction> WasiP2Host::functions(std::function<WasmInstance*()> wasm) {
  using Body = std::function<void(WasmInstance&, const RawValue*, RawValue*)>;
  std::map<std::string, Body> bodies;
  auto key = [](const char* module, const char* name) { return std::string(module) + "#" + name; };
  using R = Resource;

  // Resources.
  bodies[key(kError, "[resource-drop]error")] = [](WasmInstance&, const RawValue* a, RawValue*) {
    // No wasi:io/error is ever created: every handle is unknown.
    throw GuestTrap(fmt::format("[resource-drop]error: handle {} is not live", u32(a[0])));
  };
  bodies[key(kError, "[method]error.to-debug-string")] = [](WasmInstance&, const RawValue* a,
                                                            RawValue*) {
    throw GuestTrap(fmt::format("error.to-debug-string: handle {} is not live", u32(a[0])));
  };
  auto dropper = [this](R::Kind kind, const char* use) {
    return [this, kind, use](WasmInstance&, const RawValue* a, RawValue*) {
      drop(u32(a[0]), kind, use);
    };
  };
  bodies[key(kPoll, "[resource-drop]pollable")] = dropper(R::kPollable, "[resource-drop]pollable");
  bodies[key(kStreams, "[resource-drop]input-stream")] =
      dropper(R::kInputStream, "[resource-drop]input-stream");
  bodies[key(kStreams, "[resource-drop]output-stream")] =
      dropper(R::kOutputStream, "[resource-drop]output-stream");
  bodies[key("wasi:cli/terminal-input@0.2", "[resource-drop]terminal-input")] =
      dropper(R::kTerminalInput, "[resource-drop]terminal-input");
  bodies[key("wasi:cli/terminal-output@0.2", "[resource-drop]terminal-output")] =
      dropper(R::kTerminalOutput, "[resource-drop]terminal-output");

  // Polling.
  bodies[key(kPoll, "[method]pollable.ready")] = [this](WasmInstance&, const RawValue* a,
                                                        RawValue* r) {
    r[0] =
        get(u32(a[0]), R::kPollable, "pollable.ready").ready_at <= std::chrono::steady_clock::now();
  };
  bodies[key(kPoll, "[method]pollable.block")] = [this](WasmInstance& w, const RawValue* a,
                                                        RawValue*) {
    get(u32(a[0]), R::kPollable, "pollable.block");
    wait_until(w, resources_.get(u32(a[0]), "pollable.block").ready_at, "pollable.block");
  };
  bodies[key(kPoll, "poll")] = [this](WasmInstance& w, const RawValue* a, RawValue*) {
    poll(w, u32(a[0]), u32(a[1]), u32(a[2]));
  };

  // Streams: stdin is empty and closed; stdout and stderr are the guest's log lines.
  auto closed = [](WasmInstance& w, uint32_t retptr, uint32_t payload_at, const char* use) {
    Mem m(w);
    m.u8(retptr, 1, use);               // err
    m.u8(retptr + payload_at, 1, use);  // stream-error.closed
  };
  bodies[key(kStreams, "[method]input-stream.read")] =
      [this, closed](WasmInstance& w, const RawValue* a, RawValue*) {
        get(u32(a[0]), R::kInputStream, "input-stream.read");
        closed(w, u32(a[2]), 4, "input-stream.read");
      };
  bodies[key(kStreams, "[method]input-stream.blocking-read")] =
      bodies[key(kStreams, "[method]input-stream.read")];
  auto subscribe = [this](R::Kind kind, const char* use) {
    return [this, kind, use](WasmInstance&, const RawValue* a, RawValue* r) {
      get(u32(a[0]), kind, use);
      r[0] =
          resources_.add(Resource{R::kPollable, 0, std::chrono::steady_clock::time_point::min()});
    };
  };
  bodies[key(kStreams, "[method]input-stream.subscribe")] =
      subscribe(R::kInputStream, "input-stream.subscribe");
  bodies[key(kStreams, "[method]output-stream.subscribe")] =
      subscribe(R::kOutputStream, "output-stream.subscribe");
  bodies[key(kStreams, "[method]output-stream.check-write")] =
      [this](WasmInstance& w, const RawValue* a, RawValue*) {
        const char* use = "output-stream.check-write";
        get(u32(a[0]), R::kOutputStream, use);
        Mem m(w);
        m.u8(u32(a[1]), 0, use);
        m.u64(u32(a[1]) + 8, 4096, use);  // what one write may take (as a pipe would)
      };
  auto write = [this](WasmInstance& w, const RawValue* a, const char* use) {
    const Resource& r = get(u32(a[0]), R::kOutputStream, use);
    Mem m(w);
    const uint32_t ptr = u32(a[1]), len = u32(a[2]);
    const uint8_t* bytes = m.at(ptr, len, use);
    m.charge(len / kBytesPerStep + 1);
    preview1_.write_output(r.fd, std::string_view(reinterpret_cast<const char*>(bytes), len));
    m.u8(u32(a[3]), 0, use);  // ok
  };
  bodies[key(kStreams, "[method]output-stream.write")] = [write](WasmInstance& w, const RawValue* a,
                                                                 RawValue*) {
    write(w, a, "output-stream.write");
  };
  bodies[key(kStreams, "[method]output-stream.blocking-write-and-flush")] =
      [write](WasmInstance& w, const RawValue* a, RawValue*) {
        write(w, a, "output-stream.blocking-write-and-flush");
      };
  auto flush = [this](const char* use) {
    return [this, use](WasmInstance& w, const RawValue* a, RawValue*) {
      get(u32(a[0]), R::kOutputStream, use);
      Mem(w).u8(u32(a[1]), 0, use);
    };
  };
  bodies[key(kStreams, "[method]output-stream.flush")] = flush("output-stream.flush");
  bodies[key(kStreams, "[method]output-stream.blocking-flush")] =
      flush("output-stream.blocking-flush");
  auto std_stream = [this](R::Kind kind, int fd) {
    return [this, kind, fd](WasmInstance&, const RawValue*, RawValue* r) {
      r[0] = resources_.add(Resource{kind, fd, std::chrono::steady_clock::time_point::min()});
    };
  };
  bodies[key("wasi:cli/stdin@0.2", "get-stdin")] = std_stream(R::kInputStream, 0);
  bodies[key("wasi:cli/stdout@0.2", "get-stdout")] = std_stream(R::kOutputStream, 1);
  bodies[key("wasi:cli/stderr@0.2", "get-stderr")] = std_stream(R::kOutputStream, 2);
  // No terminals: option::none.
  auto none = [](WasmInstance& w, const RawValue* a, RawValue*) {
    Mem(w).u8(u32(a[0]), 0, "get-terminal-*");
  };
  bodies[key("wasi:cli/terminal-stdin@0.2", "get-terminal-stdin")] = none;
  bodies[key("wasi:cli/terminal-stdout@0.2", "get-terminal-stdout")] = none;
  bodies[key("wasi:cli/terminal-stderr@0.2", "get-terminal-stderr")] = none;
  bodies[key("wasi:cli/environment@0.2", "initial-cwd")] = none;

  // Environment, arguments, exit.
  bodies[key("wasi:cli/environment@0.2", "get-environment")] =
      [this](WasmInstance& w, const RawValue* a, RawValue*) {
        std::vector<std::string> strings;
        for (const auto& [k, v] : preview1_.context().env) {
          strings.push_back(k);
          strings.push_back(v);
        }
        store_strings(w, u32(a[0]), strings, 2, "get-environment");
      };
  bodies[key("wasi:cli/environment@0.2", "get-arguments")] = [this](WasmInstance& w,
                                                                    const RawValue* a, RawValue*) {
    store_strings(w, u32(a[0]), {preview1_.context().program_name}, 1, "get-arguments");
  };
  bodies[key("wasi:cli/exit@0.2", "exit")] = [](WasmInstance&, const RawValue* a, RawValue*) {
    throw GuestTrap(
        fmt::format("wasi:cli/exit.exit({}): the guest exited", u32(a[0]) == 0 ? "ok" : "err"));
  };

  // Clocks and random.
  const char* mono = "wasi:clocks/monotonic-clock@0.2";
  bodies[key(mono, "now")] = [](WasmInstance&, const RawValue*, RawValue* r) {
    r[0] = monotonic_ns();
  };
  bodies[key(mono, "resolution")] = [](WasmInstance&, const RawValue*, RawValue* r) { r[0] = 1; };
  auto sleep_until = [this](uint64_t ns_from_now) {
    const auto now = std::chrono::steady_clock::now();
    // Capped at a day: far past any call's limit, and no overflow of the time point.
    const auto wait = std::chrono::nanoseconds(std::min<uint64_t>(ns_from_now, 86'400'000'000'000));
    return resources_.add(Resource{R::kPollable, 0, now + wait});
  };
  bodies[key(mono, "subscribe-duration")] =
      [sleep_until](WasmInstance&, const RawValue* a, RawValue* r) { r[0] = sleep_until(a[0]); };
  bodies[key(mono, "subscribe-instant")] = [sleep_until](WasmInstance&, const RawValue* a,
                                                         RawValue* r) {
    const uint64_t now = monotonic_ns();
    r[0] = sleep_until(a[0] > now ? a[0] - now : 0);
  };
  const char* wall = "wasi:clocks/wall-clock@0.2";
  bodies[key(wall, "now")] = [](WasmInstance& w, const RawValue* a, RawValue*) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    Mem m(w);
    m.u64(u32(a[0]), static_cast<uint64_t>(ts.tv_sec), "wall-clock.now");
    m.u32(u32(a[0]) + 8, static_cast<uint32_t>(ts.tv_nsec), "wall-clock.now");
  };
  bodies[key(wall, "resolution")] = [](WasmInstance& w, const RawValue* a, RawValue*) {
    Mem m(w);
    m.u64(u32(a[0]), 0, "wall-clock.resolution");
    m.u32(u32(a[0]) + 8, 1, "wall-clock.resolution");
  };
  const char* random = "wasi:random/random@0.2";
  bodies[key(random, "get-random-bytes")] = [](WasmInstance& w, const RawValue* a, RawValue*) {
    const char* use = "get-random-bytes";
    if (a[0] > kMaxRandomBytes) {
      throw GuestTrap(fmt::format("{}: {} bytes asked, at most {}", use, a[0], kMaxRandomBytes));
    }
    const uint32_t len = static_cast<uint32_t>(a[0]);
    const uint32_t ptr = guest_alloc(w, 1, len, use);
    Mem m(w);
    m.charge(len / kBytesPerStep + 1);
    uint8_t* p = m.at(ptr, len, use);
    for (size_t done = 0; done < len;) {
      const ssize_t n = getrandom(p + done, len - done, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw GuestTrap(fmt::format("{}: getrandom failed: {}", use, std::strerror(errno)));
      }
      done += static_cast<size_t>(n);
    }
    m.u32(u32(a[1]), ptr, use);
    m.u32(u32(a[1]) + 4, len, use);
  };
  bodies[key(random, "get-random-u64")] = [](WasmInstance&, const RawValue*, RawValue* r) {
    uint64_t v = 0;
    while (getrandom(&v, sizeof v, 0) != sizeof v) {
      if (errno != EINTR) throw GuestTrap("get-random-u64: getrandom failed");
    }
    r[0] = v;
  };

  // The insecure interfaces get the same source: nothing is gained by a weaker one.
  bodies[key("wasi:random/insecure@0.2", "get-insecure-random-bytes")] =
      bodies[key(random, "get-random-bytes")];
  bodies[key("wasi:random/insecure@0.2", "get-insecure-random-u64")] =
      bodies[key(random, "get-random-u64")];
  bodies[key("wasi:random/insecure-seed@0.2", "insecure-seed")] = [](WasmInstance& w,
                                                                     const RawValue* a, RawValue*) {
    uint64_t seed[2] = {0, 0};
    while (getrandom(seed, sizeof seed, 0) != sizeof seed) {
      if (errno != EINTR) throw GuestTrap("insecure-seed: getrandom failed");
    }
    Mem m(w);
    m.u64(u32(a[0]), seed[0], "insecure-seed");
    m.u64(u32(a[0]) + 8, seed[1], "insecure-seed");
  };

  // Filesystem: no preopens, so no descriptor exists; error codes of unknown errors are none.
  bodies[key("wasi:filesystem/preopens@0.2", "get-directories")] =
      [](WasmInstance& w, const RawValue* a, RawValue*) {
        const uint32_t list = guest_alloc(w, 4, 0, "get-directories");
        Mem m(w);
        m.u32(u32(a[0]), list, "get-directories");
        m.u32(u32(a[0]) + 4, 0, "get-directories");
      };
  bodies[key(kFilesystem, "filesystem-error-code")] = [](WasmInstance&, const RawValue* a,
                                                         RawValue*) {
    throw GuestTrap(fmt::format("filesystem-error-code: error handle {} is not live", u32(a[0])));
  };

  std::vector<HostFunction> out;
  for (const ImportSpec& spec : wasi_p2_imports()) {
    auto it = bodies.find(key(spec.module.c_str(), spec.name.c_str()));
    Body body;
    if (it != bodies.end()) {
      body = it->second;
    } else {
      // Descriptor methods and drops: there are no descriptors, so every handle is unknown.
      const std::string use = spec.name;
      body = [use](WasmInstance&, const RawValue* a, RawValue*) {
        throw GuestTrap(
            fmt::format("{}: descriptor handle {} is not live (witmq gives guests "
                        "no files)",
                        use, u32(a[0])));
      };
    }
    out.push_back(HostFunction{spec, [wasm, body](const RawValue* args, RawValue* results) {
                                 body(*wasm(), args, results);
                               }});
  }
  return out;
}

}  // namespace witmq::guest
