#include "common/memory.h"

#include <malloc.h>
#include <unistd.h>

#include <cstddef>
#include <fstream>

// jemalloc's control interface, present when the process is linked with jemalloc (Debian's
// libjemalloc exports it unprefixed); null otherwise.
extern "C" int mallctl(const char* name, void* oldp, size_t* oldlenp, void* newp, size_t newlen)
    __attribute__((weak));

namespace witmq {

namespace {

uint64_t page_size() { return static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)); }

uint64_t resident_bytes() {
  // statm's second field: resident pages.
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * page_size();
}

template <typename T>
T jemalloc_value(const char* name) {
  T value{};
  size_t length = sizeof(value);
  if (mallctl(name, &value, &length, nullptr, 0) != 0) return T{};
  return value;
}

}  // namespace

MemoryFigures memory_figures() {
  MemoryFigures f;
  f.resident_bytes = resident_bytes();
  if (mallctl) {
    f.allocator = "jemalloc";
    // Statistics are a snapshot taken when the epoch advances.
    uint64_t epoch = 1;
    mallctl("epoch", nullptr, nullptr, &epoch, sizeof(epoch));
    f.heap_in_use_bytes = jemalloc_value<size_t>("stats.allocated");
    f.heap_mapped_bytes = jemalloc_value<size_t>("stats.mapped");
    // 4096 is MALLCTL_ARENAS_ALL: every arena merged.
    f.heap_free_bytes = (jemalloc_value<size_t>("stats.arenas.4096.pdirty") +
                         jemalloc_value<size_t>("stats.arenas.4096.pmuzzy")) *
                        page_size();
    return f;
  }
  f.allocator = "glibc";
  const struct mallinfo2 m = ::mallinfo2();
  f.heap_in_use_bytes = m.uordblks + m.hblkhd;
  f.heap_free_bytes = m.fordblks;
  f.heap_mapped_bytes = m.arena + m.hblkhd;
  return f;
}

void release_free_memory() {
  if (mallctl) {
    mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0);
    return;
  }
  ::malloc_trim(0);
}

void flush_thread_cache() {
  if (mallctl) mallctl("thread.tcache.flush", nullptr, nullptr, nullptr, 0);
}

}  // namespace witmq
