// Opening a listening socket, shared by the protocol server and the HTTP server.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace witmq::net {

// Resolves host:port (an IP address, or a name resolved to its first address), then opens, binds
// and listens `acceptor` with SO_REUSEADDR. Returns the bound endpoint (port 0 picks a free one).
// Errors name `setting` (the configuration key, e.g. "listen") and the address.
Result<boost::asio::ip::tcp::endpoint> open_listener(boost::asio::io_context& io,
                                                     boost::asio::ip::tcp::acceptor& acceptor,
                                                     const std::string& host, uint16_t port,
                                                     std::string_view setting);

}  // namespace witmq::net
