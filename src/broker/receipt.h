// Receipts: the opaque token in a delivered message's "witmq-receipt" metadata that names the
// subscription, the sequence and the lease it was acquired under. Settling resolves it; it is
// never matched by content.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace witmq::broker {

struct Receipt {
  uint32_t channel = 0;
  uint32_t subscription = 0;
  uint64_t seq = 0;
  uint64_t lease = 0;  // random per acquisition: a receipt from an older lease never matches

  bool operator==(const Receipt&) const = default;
};

// "r1.<channel>.<subscription>.<seq>.<lease hex>"
std::string format_receipt(const Receipt& r);
Result<Receipt> parse_receipt(std::string_view text);

}  // namespace witmq::broker
