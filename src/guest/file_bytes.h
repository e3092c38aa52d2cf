// Reading a whole file witmqd did not write in this run (a guest's module, an entry of the
// compiled-module cache) without trusting what stands at its path: only a regular file is read,
// at most a given size, and opening it never blocks. A FIFO, a device (/dev/zero), a directory
// or an oversized file in its place is refused with an error naming the path, never waited on or
// read without end.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace witmq::guest {

enum class Symlinks : uint8_t { kFollow, kRefuse };

// The bytes of the regular file at `path`, at most `max_bytes` of them. kNotFound when nothing is
// there; kInvalidArgument when it is not a regular file (or, with Symlinks::kRefuse, is a
// symbolic link) or is larger than `max_bytes`; kIoError when reading fails.
Result<std::vector<uint8_t>> read_regular_file(const std::string& path, uint64_t max_bytes,
                                               Symlinks symlinks = Symlinks::kFollow);

}  // namespace witmq::guest
