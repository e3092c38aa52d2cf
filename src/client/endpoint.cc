#include <fmt/format.h>

#include <charconv>
#include <vector>

#include "client/types.h"

namespace witmq::client {

Result<Endpoint> parse_endpoint(std::string_view text) {
  Endpoint ep;
  std::string_view host = text;
  std::string_view port;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return invalid_argument(fmt::format(
          "server address '{}': '[' without a closing ']'; expected [IPv6]:PORT", text));
    }
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') {
        return invalid_argument(
            fmt::format("server address '{}': expected ':PORT' after ']', got '{}'", text, rest));
      }
      port = rest.substr(1);
      if (port.empty()) {
        return invalid_argument(fmt::format("server address '{}': empty port after ':'", text));
      }
    }
  } else if (size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    if (text.find(':') != colon) {
      return invalid_argument(fmt::format(
          "server address '{}': more than one ':'; write an IPv6 address as [ADDRESS]:PORT", text));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) {
      return invalid_argument(fmt::format("server address '{}': empty port after ':'", text));
    }
  }
  if (!host.empty()) ep.host = std::string(host);
  if (!port.empty()) {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || p != port.data() + port.size() || value == 0 || value > 65535) {
      return invalid_argument(fmt::format(
          "server address '{}': port '{}' is not a number from 1 to 65535", text, port));
    }
    ep.port = static_cast<uint16_t>(value);
  }
  if (text.empty()) return invalid_argument("server address is empty; expected HOST:PORT");
  return ep;
}

Result<std::vector<Endpoint>> parse_endpoints(std::string_view text) {
  if (text.find(',') == std::string_view::npos) {
    // One address: as parse_endpoint reads it, with its errors.
    auto one = parse_endpoint(text);
    if (!one) return std::move(one).error();
    return std::vector<Endpoint>{std::move(*one)};
  }
  const std::string_view all = text;
  std::vector<Endpoint> out;
  size_t index = 0;
  for (;;) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    if (item.empty()) {
      return invalid_argument(fmt::format(
          "server list '{}': entry {} is empty; expected HOST:PORT[,HOST:PORT...]", all, index));
    }
    auto ep = parse_endpoint(item);
    if (!ep) {
      return invalid_argument(fmt::format("server list entry {}: {}", index, ep.error().message));
    }
    out.push_back(std::move(*ep));
    if (comma == std::string_view::npos) break;
    text = text.substr(comma + 1);
    ++index;
  }
  return out;
}

}  // namespace witmq::client
