// Base64 (RFC 4648, standard alphabet, with padding), for binary data inside JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace witmq {

std::string base64_encode(std::span<const uint8_t> data);
// nullopt when `text` is not padded standard base64 (whitespace is not accepted).
std::optional<std::vector<uint8_t>> base64_decode(std::string_view text);

}  // namespace witmq
