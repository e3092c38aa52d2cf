#include "net/listener.h"

#include <fmt/format.h>

namespace witmq::net {

namespace asio = boost::asio;
using asio::ip::tcp;

Result<tcp::endpoint> open_listener(asio::io_context& io, tcp::acceptor& acceptor,
                                    const std::string& host, uint16_t port,
                                    std::string_view setting) {
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, port);
  } else {
    tcp::resolver resolver(io);
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec || results.empty()) {
      return invalid_argument(
          fmt::format("{}: host '{}' is not an IP address and does not resolve: {}", setting, host,
                      ec ? ec.message() : "no address"));
    }
    endpoint = results.begin()->endpoint();
  }
  const std::string where = fmt::format("{} {}:{}", setting, host, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(tcp::acceptor::max_listen_connections, ec);
  if (ec) return Error(ErrorCode::kIoError, fmt::format("{}: {}", where, ec.message()));
  auto bound = acceptor.local_endpoint(ec);
  if (ec) return Error(ErrorCode::kIoError, fmt::format("{}: {}", where, ec.message()));
  return bound;
}

}  // namespace witmq::net
