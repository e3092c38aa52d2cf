// A blocking HTTP/1.1 client for the daemon tests, on Boost.Beast: one request per connection,
// the reply's status, headers and body, the body parsed as JSON when it is JSON.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace witmq::daemon::testing {

struct HttpReply {
  unsigned status = 0;  // 0: no reply (the connection failed or closed first)
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  nlohmann::json json;  // discarded when the body is not JSON

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  // error.code of a JSON error body, "" otherwise.
  std::string error_code() const {
    return json.is_object() && json.contains("error") ? json["error"].value("code", "") : "";
  }
  std::string error_message() const {
    return json.is_object() && json.contains("error") ? json["error"].value("message", "") : "";
  }
};

inline std::ostream& operator<<(std::ostream& os, const HttpReply& r) {
  return os << "HTTP " << r.status << " " << r.body;
}

inline HttpReply http_request(
    uint16_t port, const std::string& method, const std::string& target,
    const std::string& body = "",
    const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  namespace asio = boost::asio;
  namespace http = boost::beast::http;
  HttpReply out;
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) {
    ADD_FAILURE() << "connect to the HTTP port " << port << ": " << ec.message();
    return out;
  }
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req, ec);
  // A server that refuses a request early may close before the whole body is written; its
  // answer is still there to read.
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  if (method == "HEAD") parser.skip(true);
  http::read(socket, buffer, parser, ec);
  if (ec) return out;
  const auto& res = parser.get();
  out.status = res.result_int();
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[name] = std::string(f.value());
  }
  out.body = res.body();
  out.json = nlohmann::json::parse(out.body, nullptr, /*allow_exceptions=*/false);
  return out;
}

inline HttpReply http_get(uint16_t port, const std::string& target) {
  return http_request(port, "GET", target);
}

}  // namespace witmq::daemon::testing
