// Tokens: what a client presents in connect (or as an HTTP bearer token) and what the
// configuration stores of it, its SHA-256. Tokens are random secrets of 32 bytes, so a plain
// (unsalted) SHA-256 is enough to make the stored form useless to someone who reads the config.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace witmq::auth {

using Digest = std::array<uint8_t, 32>;

// SHA-256 of the token's bytes.
Digest sha256(std::string_view token);
// 64 lower-case hex digits.
std::string to_hex(const Digest& digest);
// Parses 64 hex digits (either case); errors say what was wrong with the text (never echo it
// back in full: a mistaken paste may be the token itself).
Result<Digest> digest_from_hex(std::string_view hex);
// Compares in time independent of where the digests differ.
bool digests_equal(const Digest& a, const Digest& b);

// A new token: "witmq_" followed by 43 base64url characters (32 bytes from the OpenSSL CSPRNG).
std::string generate_token();

}  // namespace witmq::auth
