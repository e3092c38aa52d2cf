#include "broker/receipt.h"

#include <fmt/format.h>

#include <charconv>

namespace witmq::broker {

std::string format_receipt(const Receipt& r) {
  return fmt::format("r1.{}.{}.{}.{:016x}", r.channel, r.subscription, r.seq, r.lease);
}

Result<Receipt> parse_receipt(std::string_view text) {
  auto bad = [&] {
    return invalid_argument(
        fmt::format("metadata witmq-receipt: '{}' is not a receipt issued by this broker "
                    "(expected r1.<channel>.<subscription>.<sequence>.<lease>)",
                    text.substr(0, 100)));
  };
  if (!text.starts_with("r1.")) return bad();
  std::string_view rest = text.substr(3);
  uint64_t parts[4];
  for (int i = 0; i < 4; ++i) {
    auto dot = rest.find('.');
    std::string_view field = i < 3 ? rest.substr(0, dot) : rest;
    if (field.empty() || (i < 3 && dot == std::string_view::npos)) return bad();
    int base = i == 3 ? 16 : 10;
    auto [p, ec] = std::from_chars(field.data(), field.data() + field.size(), parts[i], base);
    if (ec != std::errc() || p != field.data() + field.size()) return bad();
    if (i < 3) rest = rest.substr(dot + 1);
  }
  if (parts[0] > UINT32_MAX || parts[1] > UINT32_MAX) return bad();
  return Receipt{static_cast<uint32_t>(parts[0]), static_cast<uint32_t>(parts[1]), parts[2],
                 parts[3]};
}

}  // namespace witmq::broker
