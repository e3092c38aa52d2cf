// The nesting bound on JSON read from outside: request bodies, admin frames, CloudEvents and the
// configuration file. nlohmann's parser is iterative, but serializing, comparing and copying a
// document recurse once per level, so a deeply nested document parsed without a bound overflows
// the stack later, far from where it came in. Every parse of outside JSON checks this first.
#pragma once

#include <cstddef>
#include <string_view>

#include "common/result.h"

namespace witmq {

// The deepest nesting of arrays and objects accepted: `[[1]]` is 2 deep. No configuration or
// admin body comes near it; a CloudEvent's data may use all of it.
inline constexpr size_t kMaxJsonDepth = 64;

// ok when no array or object in `text` is nested deeper than `max_depth`; kInvalidArgument naming
// the depth and the offset where it was exceeded otherwise. Brackets inside strings do not count.
// Linear in `text`, reads it once, allocates nothing; `text` need not be valid JSON (the parser
// judges that).
Status check_json_depth(std::string_view text, size_t max_depth = kMaxJsonDepth);

}  // namespace witmq
