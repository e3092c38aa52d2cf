// The process's memory figures (common/memory.h). The test binary uses glibc's malloc (only
// witmqd links jemalloc), so this is the glibc path; the daemon tests read the jemalloc one
// through server-stats.
#include "common/memory.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

namespace witmq {
namespace {

TEST(MemoryTest, FiguresFollowAllocationsAndFreedMemoryIsGivenBack) {
  const MemoryFigures before = memory_figures();
  EXPECT_EQ(before.allocator, "glibc");
  EXPECT_GT(before.resident_bytes, 0u);
  // 4,000 blocks of 8 KiB (in the heap, below the mmap threshold), touched.
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 4000; ++i) {
    blocks.emplace_back(new char[8192]);
    std::memset(blocks.back().get(), 1, 8192);
  }
  // Above the blocks, so that freeing them leaves free memory inside the heap rather than at its
  // top (which free() itself may give back).
  auto pin = std::make_unique<char[]>(64);
  const MemoryFigures held = memory_figures();
  EXPECT_GE(held.heap_in_use_bytes, before.heap_in_use_bytes + 4000 * 8192);
  EXPECT_GE(held.resident_bytes, before.resident_bytes + 16 * 8192 * 100);
  blocks.clear();
  const MemoryFigures freed = memory_figures();
  EXPECT_GE(freed.heap_free_bytes, 4000u * 8192 / 2) << "the allocator keeps what was freed";
  release_free_memory();
  const MemoryFigures released = memory_figures();
  EXPECT_LT(released.resident_bytes, held.resident_bytes - 4000 * 8192 / 2)
      << "resident " << held.resident_bytes << " -> " << released.resident_bytes;
}

}  // namespace
}  // namespace witmq
