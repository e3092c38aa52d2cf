// UTF-8 validation for the wire codec: every string on the wire must be well-formed UTF-8.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace witmq::net {

// Returns true when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates
// U+D800..U+DFFF, nothing above U+10FFFF, no truncated sequence). Otherwise returns false and
// sets *bad_offset to the offset of the first byte of the first ill-formed sequence.
bool is_valid_utf8(std::string_view s, size_t* bad_offset);

// `s` with every ill-formed sequence (as is_valid_utf8 finds them, a sequence cut short at the
// end included) replaced by U+FFFD, one replacement per byte that starts no valid sequence.
std::string to_valid_utf8(std::string_view s);

}  // namespace witmq::net
