// A scripted protocol peer for client tests that need no daemon: it listens on 127.0.0.1 (an
// ephemeral port), accepts one connection and lets the test read the client's frames and write
// the server's, byte-exact through the codec of net/codec.h.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "net/codec.h"
#include "net/frames.h"

namespace witmq::client::testing {

class FakeServer {
 public:
  FakeServer()
      : acceptor_(io_,
                  boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)) {}

  uint16_t port() const { return acceptor_.local_endpoint().port(); }

  // Blocks until the client connects.
  void accept() {
    socket_.emplace(io_);
    acceptor_.accept(*socket_);
  }

  // The next frame the client sent (decoded as a server decodes requests), or nullopt when the
  // connection closed first.
  std::optional<net::Frame> read_frame() {
    for (int guard = 0; guard < 1'000'000; ++guard) {
      auto r = net::decode_frame(std::span<const uint8_t>(in_.data(), in_.size()),
                                 net::Side::kServer, net::Limits{});
      if (auto* d = std::get_if<net::Decoded>(&r)) {
        net::Frame f = std::move(d->frame);
        in_.erase(in_.begin(), in_.begin() + static_cast<ptrdiff_t>(d->frame_bytes));
        return f;
      }
      if (auto* e = std::get_if<net::DecodeError>(&r)) {
        ADD_FAILURE() << "the client sent a malformed frame: " << e->error.to_string();
        return std::nullopt;
      }
      uint8_t buf[64 * 1024];
      boost::system::error_code ec;
      size_t n = socket_->read_some(boost::asio::buffer(buf), ec);
      if (ec) return std::nullopt;
      in_.insert(in_.end(), buf, buf + n);
    }
    return std::nullopt;
  }

  // Reads the client's connect and answers connect-ok with `limits`. Returns the connect.
  net::Connect handshake(net::ServerLimits limits = default_limits()) {
    accept();
    auto f = read_frame();
    EXPECT_TRUE(f.has_value());
    if (!f) return {};
    auto* c = std::get_if<net::Connect>(&f->body);
    EXPECT_NE(c, nullptr) << "first frame is not connect";
    if (!c) return {};
    write(f->request_id, net::ConnectOk{1, "fake/0", limits});
    return *c;
  }

  static net::ServerLimits default_limits() {
    net::ServerLimits l;
    l.max_frame_bytes = 16 << 20;
    l.max_send_messages = 10'000;
    l.max_receive_messages = 10'000;
    l.max_message_bytes = 1 << 20;
    l.max_metadata_entries = 64;
    l.max_metadata_bytes = 16 << 10;
    l.max_config_channels = 1024;
    l.max_in_flight = 1024;
    l.max_credit = 10'000;
    return l;
  }

  template <typename Body>
  void write(uint32_t request_id, const Body& body) {
    net::Buffer b;
    net::encode(b, request_id, body);
    boost::asio::write(*socket_, boost::asio::buffer(b));
  }
  void write_error(uint32_t request_id, net::FrameType type, Error e) {
    net::Buffer b;
    net::encode_error(b, request_id, type, e);
    boost::asio::write(*socket_, boost::asio::buffer(b));
  }
  void write_empty(uint32_t request_id, net::FrameType type) {
    net::Buffer b;
    net::encode_empty(b, request_id, type);
    boost::asio::write(*socket_, boost::asio::buffer(b));
  }

  void close() {
    boost::system::error_code ec;
    if (socket_) socket_->close(ec);
  }

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::optional<boost::asio::ip::tcp::socket> socket_;
  std::vector<uint8_t> in_;
};

}  // namespace witmq::client::testing
