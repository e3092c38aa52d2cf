// The JSON bodies of the admin extensions (docs/PROTOCOL.md, section 13): building requests and
// reading replies. Pure functions, so they are tested without a server.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/types.h"
#include "common/result.h"

namespace witmq::client::admin_json {

// {"name": name, "settings": {...}}; settings are converted as ChannelSettings says. An empty
// `settings` leaves the "settings" field out.
std::string declare_request(std::string_view name, const ChannelSettings& settings);
// {"name": name}
std::string name_request(std::string_view name);
// {"channel": channel, "from": from, "max": max}
std::string browse_request(std::string_view channel, uint64_t from, uint32_t max);
// {"channel": channel} plus "max" when given.
std::string channel_request(std::string_view channel, std::optional<uint64_t> max = std::nullopt);

// A channel-stats object. Errors name the reply and the field that is not what was expected.
Result<ChannelStats> parse_channel_stats(std::string_view json);
// {"channels": [channel-stats, ...]}
Result<std::vector<ChannelStats>> parse_channel_list(std::string_view json);
// A reply object's unsigned integer field `field` ("moved", "purged").
Result<uint64_t> parse_count(std::string_view json, std::string_view field);

}  // namespace witmq::client::admin_json
