// Receipts: the opaque token in a delivered message's "witmq-receipt" metadata that names the
// subscription, the sequence and the lease it was acquired under. Settling resolves it; it is
// never matched by content.
//
// Two forms (docs/PROTOCOL.md, section 6):
//   r2.<channel id>.<subscription>.<sequence>.<lease hex>.<channel name>   issued today
//   r1.<channel id>.<subscription>.<sequence>.<lease hex>                   issued before; still
//                                                                           settles on the node
//                                                                           that issued it
// The numeric ids are the issuing node's own. The channel name makes a receipt routable in a
// cluster: any node reads which channel it belongs to and hands the settle to that channel's
// leader (docs/CLUSTERING.md); the leader checks that the id it issued still names that channel.
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
  // The channel's name; "" for an r1 receipt.
  std::string channel_name;

  bool operator==(const Receipt&) const = default;
};

// "r2.<channel>.<subscription>.<seq>.<lease hex>.<channel name>" ("r1...." without a name).
std::string format_receipt(const Receipt& r);
Result<Receipt> parse_receipt(std::string_view text);

}  // namespace witmq::broker
