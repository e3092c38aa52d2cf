// The process's memory as the kernel and the allocator see it, and giving the allocator's free
// memory back to the kernel. The allocator is jemalloc when witmqd is linked with it (the default
// build), glibc's malloc otherwise (sanitizer builds, or WITMQ_JEMALLOC=OFF); both are read
// through the same figures. docs/OPERATIONS.md ("Memory") explains them.
#pragma once

#include <cstdint>
#include <string_view>

namespace witmq {

struct MemoryFigures {
  std::string_view allocator;   // "jemalloc" or "glibc"
  uint64_t resident_bytes = 0;  // VmRSS: pages of the process in memory now
  // The allocator's view:
  uint64_t heap_in_use_bytes = 0;  // allocated and not freed (jemalloc stats.allocated; glibc
                                   // mallinfo2 uordblks + hblkhd)
  // Freed and kept by the allocator for reuse, still resident until given back (retained):
  // jemalloc's dirty and muzzy pages, glibc's free chunks (mallinfo2 fordblks).
  uint64_t heap_free_bytes = 0;
  // Obtained from the kernel for the heap (jemalloc stats.mapped; glibc arena + hblkhd).
  uint64_t heap_mapped_bytes = 0;
};

// The figures now. Walks the allocator's arenas (each locked in turn): for stats, metrics and a
// periodic check, not for a hot path.
MemoryFigures memory_figures();

// Gives the allocator's free memory back to the kernel: jemalloc purges every arena's unused
// pages, glibc's malloc_trim(0) the free pages inside every arena, not only at their tops.
void release_free_memory();

// Returns the objects the calling thread's allocator cache holds (jemalloc's tcache) to their
// arenas, so that release_free_memory() can give their pages back. Only the owning thread can
// flush its cache. Nothing to do with glibc.
void flush_thread_cache();

}  // namespace witmq
