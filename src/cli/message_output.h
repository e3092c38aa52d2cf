// How witmq prints messages, channel statistics and the cluster: a human form, JSON, and data
// only.
#pragma once

#include <nlohmann/json.hpp>
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

// The "cluster" object of server-stats (docs/CLUSTERING.md) as text: this node and its state,
// the live nodes, then one line per channel with its leader, epoch and replicas.
std::string format_cluster(const nlohmann::json& cluster);

// Standard base64 with padding (RFC 4648).
std::string base64_encode(const std::vector<uint8_t>& data);

}  // namespace witmq::cli
