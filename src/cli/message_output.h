// How witmq prints messages and channel statistics: a human form, JSON, and data only.
#pragma once

#include <string>
#include <vector>

#include "cli/command_line.h"
#include "client/types.h"
#include "common/message.h"

namespace witmq::cli {

// One message in `mode`, ending with a newline:
// - kText: "--- CHANNEL/SEQ attempt N, FORMAT, B bytes" (the parts known from the reserved
//   metadata), then "KEY: VALUE" per metadata entry except witmq-receipt, then the data.
// - kJson: one line {"id", "channel", "sequence", "attempt", "format", "data" (UTF-8 text) or
//   "data-base64", "metadata": {KEY: VALUE, ...}}; a repeated key keeps its last value.
// - kDataOnly: the data as it is.
std::string format_message(const Message& m, OutputMode mode);

// The channel list as a table (kText) or the JSON array (kJson).
std::string format_channel_list(const std::vector<client::ChannelStats>& channels, OutputMode mode);
// One channel's statistics: "key: value" lines (kText) or the server's JSON object (kJson).
std::string format_channel_stats(const client::ChannelStats& stats, OutputMode mode);

// Standard base64 with padding (RFC 4648).
std::string base64_encode(const std::vector<uint8_t>& data);

}  // namespace witmq::cli
