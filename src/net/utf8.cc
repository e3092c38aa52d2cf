#include "net/utf8.h"

#include <cstdint>
#include <cstring>

namespace witmq::net {

namespace {

constexpr uint64_t kHighBits = 0x8080808080808080ULL;

// The offset of the first 8-byte block of `p` that holds a byte >= 0x80 (every byte before it is
// ASCII), or `n` when all of `p` is ASCII. The bytes of a tail under 8 are or-ed together and
// tested once, so a short ASCII key or value costs one test rather than a branch per byte.
size_t ascii_prefix(const unsigned char* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    if (word & kHighBits) return i;
  }
  unsigned char tail = 0;
  for (size_t k = i; k < n; ++k) tail |= p[k];
  return (tail & 0x80) ? i : n;
}

}  // namespace

bool is_valid_utf8(std::string_view s, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  // Most keys, names, values and JSON are ASCII throughout: one pass of word tests settles them.
  size_t i = ascii_prefix(p, n);
  while (i < n) {
    // ASCII runs between multi-byte sequences, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, p + i, 8);
      if (word & kHighBits) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Table 3-7 of the Unicode standard: the valid ranges of the second byte depend on the first.
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // no overlong 4-byte forms
      if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      *bad_offset = i;  // 0x80..0xC1 (continuation or overlong lead) or 0xF5..0xFF
      return false;
    }
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) {
      *bad_offset = i;
      return false;
    }
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) {
        *bad_offset = i;
        return false;
      }
    }
    i += len;
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  size_t bad = 0;
  while (!is_valid_utf8(s, &bad)) {
    out.append(s.substr(0, bad));
    out.append("\xEF\xBF\xBD");
    s.remove_prefix(bad + 1);
  }
  out.append(s);
  return out;
}

}  // namespace witmq::net
