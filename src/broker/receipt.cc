#include "broker/receipt.h"

#include <fmt/format.h>

#include <charconv>

#include "common/message.h"

namespace witmq::broker {

std::string format_receipt(const Receipt& r) {
  if (r.channel_name.empty()) {
    return fmt::format("r1.{}.{}.{}.{:016x}", r.channel, r.subscription, r.seq, r.lease);
  }
  return fmt::format("r2.{}.{}.{}.{:016x}.{}", r.channel, r.subscription, r.seq, r.lease,
                     r.channel_name);
}

Result<Receipt> parse_receipt(std::string_view text) {
  auto bad = [&] {
    return invalid_argument(
        fmt::format("metadata witmq-receipt: '{}' is not a receipt issued by witmq (expected "
                    "r2.<channel>.<subscription>.<sequence>.<lease>.<channel name>, or r1. "
                    "without the name)",
                    text.substr(0, 100)));
  };
  const bool named = text.starts_with("r2.");
  if (!named && !text.starts_with("r1.")) return bad();
  std::string_view rest = text.substr(3);
  uint64_t parts[4];
  for (int i = 0; i < 4; ++i) {
    // The lease is the last field of r1; r2 has the channel name after it (which may hold dots).
    const bool last = i == 3 && !named;
    auto dot = rest.find('.');
    std::string_view field = last ? rest : rest.substr(0, dot);
    if (field.empty() || (!last && dot == std::string_view::npos)) return bad();
    int base = i == 3 ? 16 : 10;
    auto [p, ec] = std::from_chars(field.data(), field.data() + field.size(), parts[i], base);
    if (ec != std::errc() || p != field.data() + field.size()) return bad();
    if (!last) rest = rest.substr(dot + 1);
  }
  if (parts[0] > UINT32_MAX || parts[1] > UINT32_MAX) return bad();
  Receipt r{
      static_cast<uint32_t>(parts[0]), static_cast<uint32_t>(parts[1]), parts[2], parts[3], {}};
  if (named) {
    if (!validate_channel_name(rest).ok()) return bad();
    r.channel_name = std::string(rest);
  }
  return r;
}

}  // namespace witmq::broker
