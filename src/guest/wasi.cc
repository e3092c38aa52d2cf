#include "guest/wasi.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <thread>

namespace witmq::guest {
namespace {

using namespace wasi_errno;  // NOLINT: the errno names are the point of this file

// Core signatures in short form: params then results, 'i' = i32, 'I' = i64.
struct WasiEntry {
  const char* name;
  const char* params;
  const char* results;
};
constexpr WasiEntry kWasi[] = {
    {"args_get", "ii", "i"},
    {"args_sizes_get", "ii", "i"},
    {"environ_get", "ii", "i"},
    {"environ_sizes_get", "ii", "i"},
    {"clock_res_get", "ii", "i"},
    {"clock_time_get", "iIi", "i"},
    {"fd_advise", "iIIi", "i"},
    {"fd_allocate", "iII", "i"},
    {"fd_close", "i", "i"},
    {"fd_datasync", "i", "i"},
    {"fd_fdstat_get", "ii", "i"},
    {"fd_fdstat_set_flags", "ii", "i"},
    {"fd_fdstat_set_rights", "iII", "i"},
    {"fd_filestat_get", "ii", "i"},
    {"fd_filestat_set_size", "iI", "i"},
    {"fd_filestat_set_times", "iIIi", "i"},
    {"fd_pread", "iiiIi", "i"},
    {"fd_prestat_get", "ii", "i"},
    {"fd_prestat_dir_name", "iii", "i"},
    {"fd_pwrite", "iiiIi", "i"},
    {"fd_read", "iiii", "i"},
    {"fd_readdir", "iiiIi", "i"},
    {"fd_renumber", "ii", "i"},
    {"fd_seek", "iIii", "i"},
    {"fd_sync", "i", "i"},
    {"fd_tell", "ii", "i"},
    {"fd_write", "iiii", "i"},
    {"path_create_directory", "iii", "i"},
    {"path_filestat_get", "iiiii", "i"},
    {"path_filestat_set_times", "iiiiIIi", "i"},
    {"path_link", "iiiiiii", "i"},
    {"path_open", "iiiiiIIii", "i"},
    {"path_readlink", "iiiiii", "i"},
    {"path_remove_directory", "iii", "i"},
    {"path_rename", "iiiiii", "i"},
    {"path_symlink", "iiiii", "i"},
    {"path_unlink_file", "iii", "i"},
    {"poll_oneoff", "iiii", "i"},
    {"proc_exit", "i", ""},
    {"proc_raise", "i", "i"},
    {"sched_yield", "", "i"},
    {"random_get", "ii", "i"},
    {"sock_accept", "iii", "i"},
    {"sock_recv", "iiiiii", "i"},
    {"sock_send", "iiiii", "i"},
    {"sock_shutdown", "ii", "i"},
};

std::vector<ValType> types(const char* s) {
  std::vector<ValType> out;
  for (; *s; ++s) out.push_back(*s == 'I' ? ValType::kI64 : ValType::kI32);
  return out;
}

uint32_t u32(RawValue v) { return static_cast<uint32_t>(v); }

// A pointer or length outside the guest's memory: the function answers EFAULT.
struct Fault {};

// WASI filetype and rights of the three standard descriptors (a pipe: no terminal, no seeking).
constexpr uint8_t kFiletypeUnknown = 0;
constexpr uint64_t kRightFdRead = uint64_t{1} << 1;
constexpr uint64_t kRightFdWrite = uint64_t{1} << 6;
constexpr uint64_t kRightPollFdReadwrite = uint64_t{1} << 27;

constexpr uint32_t kClockRealtime = 0;
constexpr uint32_t kClockMonotonic = 1;

// Most subscriptions one poll_oneoff may pass.
constexpr uint32_t kMaxPollSubscriptions = 4096;

// Host work charged to the call's budget: one step per 8 bytes copied, one per item visited.
constexpr uint64_t kBytesPerStep = 8;

// Guest memory of the instance in the host call in progress.
class Mem {
 public:
  explicit Mem(WasmInstance& w) : w_(w), data_(w.memory_data()), size_(w.memory_size()) {}

  void check(uint32_t ptr, uint64_t len) const {
    if (!data_ || uint64_t{ptr} + len > size_) throw Fault{};
  }
  uint8_t* at(uint32_t ptr, uint64_t len) const {
    check(ptr, len);
    return data_ + ptr;
  }
  uint32_t load_u32(uint32_t ptr) const {
    uint32_t v;
    std::memcpy(&v, at(ptr, 4), 4);  // wasm is little-endian, as is every host witmqd runs on
    return v;
  }
  uint64_t load_u64(uint32_t ptr) const {
    uint64_t v;
    std::memcpy(&v, at(ptr, 8), 8);
    return v;
  }
  uint16_t load_u16(uint32_t ptr) const {
    uint16_t v;
    std::memcpy(&v, at(ptr, 2), 2);
    return v;
  }
  void store_u32(uint32_t ptr, uint32_t v) const { std::memcpy(at(ptr, 4), &v, 4); }
  void store_u64(uint32_t ptr, uint64_t v) const { std::memcpy(at(ptr, 8), &v, 8); }
  void store(uint32_t ptr, std::string_view bytes) const {
    charge(bytes.size() / kBytesPerStep + 1);
    std::memcpy(at(ptr, bytes.size()), bytes.data(), bytes.size());
  }
  // Takes `steps` from the call's budget; past it the call ends as budget-exhausted.
  void charge(uint64_t steps) const {
    if (!w_.charge(steps)) {
      throw GuestTrap("instruction budget exhausted by the host serving a WASI call");
    }
  }
  uint64_t size() const { return size_; }

 private:
  WasmInstance& w_;
  uint8_t* data_;
  uint64_t size_;
};

bool stdio(uint32_t fd) { return fd <= 2; }

// A log line must not carry control characters (a guest could forge or hide lines): they are
// written as \xNN.
std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b == 0x7f) {
      out += fmt::format("\\x{:02x}", b);
    } else {
      out += c;
    }
  }
  return out;
}

uint64_t now_ns(uint32_t clock) {
  timespec ts{};
  clock_gettime(clock == kClockRealtime ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

const std::vector<ImportSpec>& wasi_imports() {
  static const std::vector<ImportSpec> specs = [] {
    std::vector<ImportSpec> out;
    for (const WasiEntry& e : kWasi) {
      out.push_back(ImportSpec{kWasiModule, e.name, FuncSig{types(e.params), types(e.results)}});
    }
    return out;
  }();
  return specs;
}

// ---- GuestOutput ----------------------------------------------------------------------------

GuestOutput::GuestOutput(std::string guest_name, Emit emit, GuestOutputLimits limits)
    : name_(std::move(guest_name)),
      emit_(std::move(emit)),
      limits_(limits),
      tokens_(limits.burst_lines),
      refilled_(std::chrono::steady_clock::now()) {}

void GuestOutput::line(bool is_stderr, std::string_view text, uint64_t cut) {
  if (text.size() > limits_.max_line_bytes) {
    cut += text.size() - limits_.max_line_bytes;
    text = text.substr(0, limits_.max_line_bytes);
  }
  uint64_t report_lines = 0, report_bytes = 0;
  {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - refilled_).count();
    refilled_ = now;
    tokens_ = std::min<double>(limits_.burst_lines, tokens_ + elapsed * limits_.lines_per_second);
    if (tokens_ < 1) {
      unreported_lines_++;
      unreported_bytes_ += text.size() + cut;
      lines_dropped_++;
      bytes_dropped_ += text.size() + cut;
      return;
    }
    tokens_ -= 1;
    std::swap(report_lines, unreported_lines_);
    std::swap(report_bytes, unreported_bytes_);
  }
  if (report_lines > 0) {
    emit_(true, fmt::format("guest '{}': {} line(s) ({} bytes) of its output dropped: over {} "
                            "lines per second",
                            name_, report_lines, report_bytes, limits_.lines_per_second));
  }
  if (cut > 0) bytes_dropped_ += cut;
  lines_written_++;
  emit_(is_stderr,
        fmt::format("guest '{}' {}: {}{}", name_, is_stderr ? "stderr" : "stdout", printable(text),
                    cut > 0 ? fmt::format(" [{} bytes cut]", cut) : ""));
}

// ---- WasiHost -------------------------------------------------------------------------------

WasiHost::WasiHost(WasiContext context) : ctx_(std::move(context)) {}

WasiHost::~WasiHost() {
  flush_partial(1);
  flush_partial(2);
}

void WasiHost::interrupt() {
  {
    std::lock_guard lock(sleep_mu_);
    interrupted_ = true;
  }
  sleep_cv_.notify_all();
}

void WasiHost::flush_partial(int fd) {
  if (partial_[fd].empty() && partial_cut_[fd] == 0) return;
  if (ctx_.output) {
    ctx_.output->line(fd == 2, partial_[fd], partial_cut_[fd]);
  }
  partial_[fd].clear();
  partial_cut_[fd] = 0;
}

void WasiHost::write_output(int fd, std::string_view bytes) {
  if (fd != 1 && fd != 2) return;
  const size_t keep = ctx_.output ? ctx_.output->limits().max_line_bytes : 0;
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, nl);
    const size_t room = keep > partial_[fd].size() ? keep - partial_[fd].size() : 0;
    partial_[fd].append(piece.substr(0, std::min(room, piece.size())));
    partial_cut_[fd] += piece.size() - std::min(room, piece.size());
    if (nl == std::string_view::npos) break;
    flush_partial(fd);
    bytes.remove_prefix(nl + 1);
  }
}

uint32_t WasiHost::fd_write(WasmInstance& w, uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                            uint32_t nwritten) {
  Mem m(w);
  m.check(nwritten, 4);
  if (fd > 2 || fd == 0 || closed_[fd]) return kBadf;
  // The iovec array must lie in memory (this bounds iovs_len by the memory size / 8), and each
  // iovec visited is charged.
  m.check(iovs, uint64_t{iovs_len} * 8);
  m.charge(iovs_len);
  uint64_t total = 0;
  for (uint32_t i = 0; i < iovs_len; ++i) {
    const uint32_t buf = m.load_u32(iovs + 8 * i);
    const uint32_t len = m.load_u32(iovs + 8 * i + 4);
    const uint8_t* p = m.at(buf, len);
    // Everything examined is charged, whether kept or not.
    m.charge(len / kBytesPerStep);
    total += len;
    write_output(static_cast<int>(fd), std::string_view(reinterpret_cast<const char*>(p), len));
  }
  // A pipe takes everything: the guest is told all of it was written (so it does not retry).
  m.store_u32(nwritten, static_cast<uint32_t>(std::min<uint64_t>(total, UINT32_MAX)));
  return kSuccess;
}

uint32_t WasiHost::poll_oneoff(WasmInstance& w, uint32_t in, uint32_t out, uint32_t nsubs,
                               uint32_t nevents) {
  Mem m(w);
  m.check(nevents, 4);
  if (nsubs == 0) return kInval;
  // The events are gathered before they are written (the two arrays may overlap): a cap keeps
  // that host memory small whatever the guest's memory size.
  if (nsubs > kMaxPollSubscriptions) return kInval;
  // subscription: 48 bytes; event: 32 bytes.
  m.check(in, uint64_t{nsubs} * 48);
  m.check(out, uint64_t{nsubs} * 32);
  m.charge(nsubs);
  constexpr uint8_t kEventClock = 0, kEventFdRead = 1, kEventFdWrite = 2;

  struct Pending {
    uint64_t userdata;
    uint8_t type;
    uint16_t error;
    uint64_t deadline_ns;  // monotonic, for clocks
    uint16_t flags;        // fd_read on stdin: hangup (EOF)
  };
  std::vector<Pending> ready;
  uint64_t earliest = UINT64_MAX;
  const uint64_t now_mono = now_ns(kClockMonotonic);
  for (uint32_t i = 0; i < nsubs; ++i) {
    const uint32_t s = in + 48 * i;
    const uint64_t userdata = m.load_u64(s);
    const uint8_t tag = *m.at(s + 8, 1);
    if (tag == kEventClock) {
      const uint32_t id = m.load_u32(s + 16);
      const uint64_t timeout = m.load_u64(s + 24);
      const uint16_t flags = m.load_u16(s + 40);
      const bool absolute = flags & 1;
      if (id != kClockRealtime && id != kClockMonotonic) {
        ready.push_back({userdata, tag, static_cast<uint16_t>(kInval), 0, 0});
        continue;
      }
      uint64_t at = now_mono;
      if (absolute) {
        const uint64_t now_clock = id == kClockRealtime ? now_ns(kClockRealtime) : now_mono;
        at = timeout > now_clock ? now_mono + (timeout - now_clock) : now_mono;
      } else {
        at = timeout > UINT64_MAX - now_mono ? UINT64_MAX : now_mono + timeout;
      }
      earliest = std::min(earliest, at);
      // Clock subscriptions are resolved after the wait, below.
    } else if (tag == kEventFdRead || tag == kEventFdWrite) {
      const uint32_t fd = m.load_u32(s + 16);
      const bool usable = stdio(fd) && !closed_[fd] && ((tag == kEventFdRead) == (fd == 0));
      // stdin is at its end (readable, hung up); stdout and stderr always take writes.
      ready.push_back({userdata, tag, static_cast<uint16_t>(usable ? kSuccess : kBadf), 0,
                       static_cast<uint16_t>(usable && fd == 0 ? 1 : 0)});
    } else {
      ready.push_back({userdata, tag, static_cast<uint16_t>(kInval), 0, 0});
    }
  }

  if (ready.empty() && earliest != UINT64_MAX) {
    // Sleep until the earliest clock, never past the call's deadline (which then fails the call
    // as a time-limit failure) and never past stop().
    const auto call_deadline = w.deadline();
    const auto wake = std::chrono::steady_clock::now() +
                      std::chrono::nanoseconds(static_cast<int64_t>(std::min<uint64_t>(
                          earliest - std::min(earliest, now_mono), uint64_t{1} << 62)));
    const bool past_deadline =
        call_deadline != std::chrono::steady_clock::time_point::max() && wake > call_deadline;
    std::unique_lock lock(sleep_mu_);
    sleep_cv_.wait_until(lock, past_deadline ? call_deadline : wake,
                         [this] { return interrupted_; });
    if (interrupted_) throw GuestTrap("poll_oneoff: the guest is stopping");
    if (past_deadline) throw GuestTrap("poll_oneoff: the call's wall time limit is reached");
  }
  const uint64_t after = now_ns(kClockMonotonic);
  for (uint32_t i = 0; i < nsubs; ++i) {
    const uint32_t s = in + 48 * i;
    if (*m.at(s + 8, 1) != kEventClock) continue;
    const uint32_t id = m.load_u32(s + 16);
    if (id != kClockRealtime && id != kClockMonotonic) continue;
    const uint64_t timeout = m.load_u64(s + 24);
    const bool absolute = m.load_u16(s + 40) & 1;
    uint64_t at;
    if (absolute) {
      const uint64_t now_clock = id == kClockRealtime ? now_ns(kClockRealtime) : now_mono;
      at = timeout > now_clock ? now_mono + (timeout - now_clock) : now_mono;
    } else {
      at = timeout > UINT64_MAX - now_mono ? UINT64_MAX : now_mono + timeout;
    }
    if (at <= after) ready.push_back({m.load_u64(s), kEventClock, 0, 0, 0});
  }
  // The events, in subscription order of the kinds above (at most nsubs).
  for (size_t i = 0; i < ready.size(); ++i) {
    const uint32_t e = out + 32 * static_cast<uint32_t>(i);
    std::memset(m.at(e, 32), 0, 32);
    m.store_u64(e, ready[i].userdata);
    const uint16_t error = ready[i].error;
    std::memcpy(m.at(e + 8, 2), &error, 2);
    *m.at(e + 10, 1) = ready[i].type;
    std::memcpy(m.at(e + 24, 2), &ready[i].flags, 2);
  }
  m.store_u32(nevents, static_cast<uint32_t>(ready.size()));
  return kSuccess;
}

std::vector<HostFunction> WasiHost::functions(std::function<WasmInstance*()> wasm) {
  using Body = std::function<uint32_t(WasmInstance&, const RawValue*)>;
  std::map<std::string, Body> bodies;
  auto strings_sizes = [](WasmInstance& w, const std::vector<std::string>& list, uint32_t count,
                          uint32_t size) {
    Mem m(w);
    uint64_t total = 0;
    for (const auto& s : list) total += s.size() + 1;
    m.store_u32(count, static_cast<uint32_t>(list.size()));
    m.store_u32(size, static_cast<uint32_t>(total));
    return kSuccess;
  };
  auto strings_get = [](WasmInstance& w, const std::vector<std::string>& list, uint32_t ptrs,
                        uint32_t buf) {
    Mem m(w);
    m.check(ptrs, uint64_t{4} * list.size());
    uint64_t at = buf;
    for (size_t i = 0; i < list.size(); ++i) {
      if (at > UINT32_MAX) throw Fault{};
      m.store_u32(ptrs + 4 * static_cast<uint32_t>(i), static_cast<uint32_t>(at));
      m.store(static_cast<uint32_t>(at), std::string_view(list[i].c_str(), list[i].size() + 1));
      at += list[i].size() + 1;
    }
    return kSuccess;
  };
  std::vector<std::string> args = {ctx_.program_name};
  std::vector<std::string> environ;
  for (const auto& [k, v] : ctx_.env) environ.push_back(k + "=" + v);

  bodies["args_sizes_get"] = [args, strings_sizes](WasmInstance& w, const RawValue* a) {
    return strings_sizes(w, args, u32(a[0]), u32(a[1]));
  };
  bodies["args_get"] = [args, strings_get](WasmInstance& w, const RawValue* a) {
    return strings_get(w, args, u32(a[0]), u32(a[1]));
  };
  bodies["environ_sizes_get"] = [environ, strings_sizes](WasmInstance& w, const RawValue* a) {
    return strings_sizes(w, environ, u32(a[0]), u32(a[1]));
  };
  bodies["environ_get"] = [environ, strings_get](WasmInstance& w, const RawValue* a) {
    return strings_get(w, environ, u32(a[0]), u32(a[1]));
  };
  bodies["clock_res_get"] = [](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    m.check(u32(a[1]), 8);
    if (u32(a[0]) != kClockRealtime && u32(a[0]) != kClockMonotonic) return kInval;
    timespec ts{};
    clock_getres(u32(a[0]) == kClockRealtime ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ts);
    m.store_u64(u32(a[1]), static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u +
                               static_cast<uint64_t>(ts.tv_nsec));
    return kSuccess;
  };
  bodies["clock_time_get"] = [](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    m.check(u32(a[2]), 8);
    if (u32(a[0]) != kClockRealtime && u32(a[0]) != kClockMonotonic) return kInval;
    m.store_u64(u32(a[2]), now_ns(u32(a[0])));
    return kSuccess;
  };
  bodies["random_get"] = [](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    const uint32_t buf = u32(a[0]), len = u32(a[1]);
    m.check(buf, len);
    m.charge(len / kBytesPerStep);
    uint8_t* p = m.at(buf, len);
    size_t done = 0;
    while (done < len) {
      const ssize_t n = getrandom(p + done, std::min<size_t>(len - done, 1 << 16), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw GuestTrap(fmt::format("random_get: getrandom failed: {}", std::strerror(errno)));
      }
      done += static_cast<size_t>(n);
    }
    return kSuccess;
  };
  bodies["sched_yield"] = [](WasmInstance&, const RawValue*) {
    std::this_thread::yield();
    return kSuccess;
  };
  bodies["proc_exit"] = [](WasmInstance&, const RawValue* a) -> uint32_t {
    throw GuestTrap(fmt::format("proc_exit({}): the guest exited", u32(a[0])));
  };
  bodies["proc_raise"] = [](WasmInstance&, const RawValue*) { return kNosys; };

  // The standard descriptors.
  bodies["fd_write"] = [this](WasmInstance& w, const RawValue* a) {
    return fd_write(w, u32(a[0]), u32(a[1]), u32(a[2]), u32(a[3]));
  };
  bodies["fd_read"] = [this](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    m.check(u32(a[3]), 4);
    const uint32_t fd = u32(a[0]);
    if (fd != 0 || closed_[0]) return kBadf;
    m.check(u32(a[1]), uint64_t{u32(a[2])} * 8);
    m.store_u32(u32(a[3]), 0);  // stdin is empty: end of file
    return kSuccess;
  };
  bodies["fd_close"] = [this](WasmInstance&, const RawValue* a) {
    const uint32_t fd = u32(a[0]);
    if (!stdio(fd) || closed_[fd]) return kBadf;
    if (fd != 0) flush_partial(static_cast<int>(fd));
    closed_[fd] = true;
    return kSuccess;
  };
  auto open_stdio = [this](uint32_t fd) { return stdio(fd) && !closed_[fd]; };
  bodies["fd_fdstat_get"] = [open_stdio](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    const uint32_t fd = u32(a[0]), buf = u32(a[1]);
    m.check(buf, 24);
    if (!open_stdio(fd)) return kBadf;
    std::memset(m.at(buf, 24), 0, 24);
    *m.at(buf, 1) = kFiletypeUnknown;
    m.store_u64(buf + 8, (fd == 0 ? kRightFdRead : kRightFdWrite) | kRightPollFdReadwrite);
    return kSuccess;
  };
  bodies["fd_filestat_get"] = [open_stdio](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    const uint32_t fd = u32(a[0]), buf = u32(a[1]);
    m.check(buf, 64);
    if (!open_stdio(fd)) return kBadf;
    std::memset(m.at(buf, 64), 0, 64);
    *m.at(buf + 16, 1) = kFiletypeUnknown;
    return kSuccess;
  };
  bodies["fd_seek"] = [open_stdio](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    m.check(u32(a[3]), 8);
    return open_stdio(u32(a[0])) ? kSpipe : kBadf;
  };
  bodies["fd_tell"] = [open_stdio](WasmInstance& w, const RawValue* a) {
    Mem m(w);
    m.check(u32(a[1]), 8);
    return open_stdio(u32(a[0])) ? kSpipe : kBadf;
  };
  // A pipe cannot be read or written at an offset, advised, allocated, resized or synced.
  auto on_stdio = [open_stdio](uint32_t answer) {
    return [open_stdio, answer](WasmInstance&, const RawValue* a) {
      return open_stdio(u32(a[0])) ? answer : kBadf;
    };
  };
  bodies["fd_pread"] = on_stdio(kSpipe);
  bodies["fd_pwrite"] = on_stdio(kSpipe);
  bodies["fd_advise"] = on_stdio(kSpipe);
  bodies["fd_allocate"] = on_stdio(kSpipe);
  bodies["fd_datasync"] = on_stdio(kInval);
  bodies["fd_sync"] = on_stdio(kInval);
  bodies["fd_filestat_set_size"] = on_stdio(kInval);
  bodies["fd_filestat_set_times"] = on_stdio(kNotsup);
  bodies["fd_fdstat_set_flags"] = on_stdio(kNotsup);
  bodies["fd_fdstat_set_rights"] = on_stdio(kNotcapable);
  bodies["fd_readdir"] = on_stdio(kNotdir);
  bodies["fd_renumber"] = [open_stdio](WasmInstance&, const RawValue* a) {
    return open_stdio(u32(a[0])) && open_stdio(u32(a[1])) ? kNotsup : kBadf;
  };
  // No preopens: wasi-libc finds no directory, and no path can be opened.
  bodies["fd_prestat_get"] = [](WasmInstance&, const RawValue*) { return kBadf; };
  bodies["fd_prestat_dir_name"] = [](WasmInstance&, const RawValue*) { return kBadf; };
  // Paths are resolved against a directory descriptor (the first argument, but the fourth of
  // path_symlink): none exists.
  auto no_dir = [open_stdio](size_t fd_arg) {
    return [open_stdio, fd_arg](WasmInstance&, const RawValue* a) {
      return open_stdio(u32(a[fd_arg])) ? kNotdir : kBadf;
    };
  };
  for (const char* name :
       {"path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link",
        "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_unlink_file"}) {
    bodies[name] = no_dir(0);
  }
  bodies["path_symlink"] = no_dir(2);
  for (const char* name : {"sock_accept", "sock_recv", "sock_send", "sock_shutdown"}) {
    bodies[name] = on_stdio(kNotsock);
  }
  bodies["poll_oneoff"] = [this](WasmInstance& w, const RawValue* a) {
    return poll_oneoff(w, u32(a[0]), u32(a[1]), u32(a[2]), u32(a[3]));
  };

  std::vector<HostFunction> out;
  for (const ImportSpec& spec : wasi_imports()) {
    Body body = bodies.at(spec.name);
    const bool has_result = !spec.sig.results.empty();
    out.push_back(
        HostFunction{spec, [wasm, body, has_result](const RawValue* args, RawValue* results) {
                       WasmInstance* w = wasm();
                       if (!w) throw GuestTrap("WASI call before instantiation");
                       uint32_t e;
                       try {
                         e = body(*w, args);
                       } catch (const Fault&) {
                         e = kFault;
                       }
                       if (has_result) results[0] = e;
                     }});
  }
  return out;
}

}  // namespace witmq::guest
