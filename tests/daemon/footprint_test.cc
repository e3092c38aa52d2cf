// What connections cost the real witmqd and what they leave behind: an idle connection holds no
// buffer, a burst's buffers are given back when it is over, and clients that leave empty the
// broker's client, waiter and ephemeral subscription tables again, as server-stats and /metrics
// show. tools/footprint.py measures the resident memory (docs/PERFORMANCE.md, "Memory per
// connection"); its short runs are in the suite too (tests/daemon/CMakeLists.txt).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

json server_stats(Conn& c) {
  Frame f = c.call(net::AdminRequest{net::AdminOp::kServerStats, "{}"});
  auto* reply = std::get_if<net::AdminReply>(&f.body);
  if (!reply) {
    ADD_FAILURE() << "server-stats failed: " << describe(f);
    return json::object();
  }
  return json::parse(reply->json);
}

// Asks server-stats until `ok` holds for it (at most 10 s); returns the last answer.
template <typename Pred>
json stats_until(Conn& probe, Pred ok) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  json s = server_stats(probe);
  while (!ok(s) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    s = server_stats(probe);
  }
  return s;
}

// The value of the sample `series` (name and labels, as in the exposition text) in `metrics`.
double metric(const std::string& metrics, const std::string& series) {
  const auto at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) {
    ADD_FAILURE() << "no sample " << series << " in /metrics";
    return -1;
  }
  return std::stod(metrics.substr(at + series.size() + 2));
}

// 200 connections that connected and pinged once, then went idle, hold no input or output buffer:
// the buffered bytes of all of them together are at most what the probe asking holds. Before, each
// kept a 64 KiB input buffer: 12.5 MiB for the 200.
TEST(FootprintTest, IdleConnectionsHoldNoBuffers) {
  Daemon d;
  Conn probe(d.port());
  probe.hello();
  std::vector<std::unique_ptr<Conn>> idle;
  for (int i = 0; i < 200; ++i) {
    idle.push_back(std::make_unique<Conn>(d.port()));
    idle.back()->hello();
    ASSERT_FRAME(idle.back()->call(net::Ping{static_cast<uint64_t>(i)}), kPong);
  }
  const json s = stats_until(
      probe, [](const json& s) { return s.value("buffered-bytes", uint64_t{1} << 40) <= 16384; });
  EXPECT_LE(s.value("buffered-bytes", uint64_t{1} << 40), 16384u) << s.dump();
  EXPECT_LE(s.value("buffered-bytes-max", uint64_t{1} << 40), 16384u) << s.dump();
  EXPECT_EQ(s["connections-by-state"]["connected"], 201) << s.dump();
  EXPECT_EQ(d.stop(), 0);
}

// A burst grows the buffers (a 512 KiB message sent in, received back out) and gives them back
// once it is over. Before, a connection kept buffers up to 1 MiB each after its largest burst.
TEST(FootprintTest, ABurstsBuffersAreGivenBackWhenItIsOver) {
  Daemon d;
  Conn probe(d.port());
  probe.hello();
  Conn c(d.port());
  c.hello();
  const std::string big(512 << 10, 'b');
  ASSERT_FRAME(c.call(net::Send{"burst", {text_message(big)}}), kSendOk);
  Frame r = c.call(net::SubscribeTryReceive{"burst", 1000});
  ASSERT_FRAME(r, kSubscribeTryReceiveOk);
  const json s = stats_until(probe, [](const json& s) {
    return s.value("buffered-bytes-max", uint64_t{1} << 40) <= 16384;
  });
  EXPECT_LE(s.value("buffered-bytes-max", uint64_t{1} << 40), 16384u) << s.dump();
  EXPECT_EQ(d.stop(), 0);
}

// Clients that send most of a large frame and stop: each connection's input buffer follows the
// bytes that arrived, but before, nothing bounded them together (40 connections each holding
// 16 MiB less one byte took witmqd from 21 MB to 686 MB resident; max-connections of them,
// 160 GiB). The input buffers are bounded as a whole by max-input-buffer-bytes: a connection whose
// frame would pass it gets goaway, resource-exhausted; the others' frames complete, and once they
// are read the room is there for the next.
TEST(FootprintTest, HalfSentFramesAreBoundedAllTogether) {
  Daemon d({"--set", "max-frame-bytes=4194304", "--set", "max-input-buffer-bytes=8388608"});
  Conn probe(d.port());
  probe.hello();
  const std::string data(1'000'000, 'h');
  net::Buffer frame;
  net::encode(
      frame,
      Frame{7, net::Send{"half", {text_message(data), text_message(data), text_message(data)}}});
  ASSERT_LT(frame.size(), 4u << 20);
  const std::vector<uint8_t> head(frame.begin(), frame.end() - 10);
  const std::vector<uint8_t> tail(frame.end() - 10, frame.end());
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(std::make_unique<Conn>(d.port()));
    held.back()->hello();
    ASSERT_TRUE(held.back()->write(head));
  }
  // Both half-sent frames are held (about 2.9 MB each beyond their first 64 KiB).
  json s = stats_until(probe, [&](const json& s) {
    return s.value("buffered-bytes", uint64_t{0}) >= 2 * (frame.size() - 10);
  });
  ASSERT_GE(s.value("buffered-bytes", uint64_t{0}), 2 * (frame.size() - 10)) << s.dump();
  // A third would pass the bound: goaway, naming the key.
  Conn third(d.port());
  third.hello();
  third.write(head);
  Conn::Read r = third.read(10s);
  ASSERT_EQ(r.status, Conn::Status::kFrame);
  ASSERT_FRAME(r.frame, kGoaway);
  EXPECT_EQ(error_of(r.frame)->code, ErrorCode::kResourceExhausted);
  EXPECT_NE(error_of(r.frame)->message.find("max-input-buffer-bytes"), std::string::npos)
      << describe(r.frame);
  // The held frames complete and are served, and the room they leave serves the next.
  for (auto& c : held) {
    ASSERT_TRUE(c->write(tail));
    ASSERT_FRAME(c->reply(7), kSendOk);
  }
  Conn next(d.port());
  next.hello();
  ASSERT_TRUE(next.write(head));
  ASSERT_TRUE(next.write(tail));
  ASSERT_FRAME(next.reply(7), kSendOk);
  // Nothing beyond a connection's first 64 KiB is held once the frames are read.
  s = stats_until(probe, [](const json& s) {
    return s.value("buffered-bytes-max", uint64_t{1} << 40) <= (64u << 10);
  });
  EXPECT_LE(s.value("buffered-bytes-max", uint64_t{1} << 40), 64u << 10) << s.dump();
  EXPECT_EQ(http_get(d.http_port(), "/v1/channels/half").json["depth"], 9);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// The HTTP side's request bodies are bounded all together by max-input-buffer-bytes too: clients
// that announce large bodies and send them slowly cannot make the server hold
// http-max-connections times max-frame-bytes. One more is answered 503 before its body is read;
// the held ones are served, and their room serves the next.
TEST(FootprintTest, HttpRequestBodiesAreBoundedAllTogether) {
  namespace asio = boost::asio;
  namespace http = boost::beast::http;
  Daemon d({"--set", "max-frame-bytes=4194304", "--set", "max-input-buffer-bytes=8388608", "--set",
            "max-message-bytes=3500000"});
  ASSERT_NE(d.http_port(), 0);
  constexpr size_t kBody = 3'000'000;
  asio::io_context io;
  auto start = [&](size_t sent) {
    auto s = std::make_unique<asio::ip::tcp::socket>(io);
    s->connect({asio::ip::make_address("127.0.0.1"), d.http_port()});
    const std::string head = fmt::format(
        "POST /v1/channels/bodies/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        kBody);
    asio::write(*s, asio::buffer(head + std::string(sent, 'b')));
    return s;
  };
  auto answer = [](asio::ip::tcp::socket& s) {
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    boost::system::error_code ec;
    http::read(s, buffer, res, ec);
    return std::make_pair(res.result_int(), res.body());
  };
  // Two bodies of 3 MB, each half sent: 6 MB of the 8 MiB are set aside.
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> held;
  for (int i = 0; i < 2; ++i) held.push_back(start(kBody / 2));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  std::string metrics;
  while (std::chrono::steady_clock::now() < deadline) {
    metrics = http_get(d.http_port(), "/metrics").body;
    if (metrics.find("witmq_http_request_body_bytes 6000000\n") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_NE(metrics.find("witmq_http_request_body_bytes 6000000\n"), std::string::npos) << metrics;
  // A third would pass the bound: 503 naming the key, before its body is read.
  auto third = start(0);
  const auto [status, body] = answer(*third);
  EXPECT_EQ(status, 503u) << body;
  EXPECT_NE(body.find("max-input-buffer-bytes"), std::string::npos) << body;
  // The held requests are served once their bodies arrive, and their room serves the next.
  for (auto& s : held) {
    asio::write(*s, asio::buffer(std::string(kBody - kBody / 2, 'b')));
    EXPECT_EQ(answer(*s).first, 201u);
  }
  auto next = start(kBody);
  EXPECT_EQ(answer(*next).first, 201u);
  metrics = http_get(d.http_port(), "/metrics").body;
  EXPECT_NE(metrics.find("witmq_http_request_bodies_refused_total 1\n"), std::string::npos)
      << metrics;
  EXPECT_EQ(http_get(d.http_port(), "/v1/channels/bodies").json["depth"], 3);
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// Clients with receives waiting, ephemeral topic subscriptions and unsettled messages disconnect:
// the broker's tables hold nothing of them afterwards, in server-stats and in /metrics.
TEST(FootprintTest, ClientsThatLeaveLeaveTheTablesEmpty) {
  Daemon d;
  Conn probe(d.port());
  probe.hello("probe");
  Frame declared = probe.call(net::AdminRequest{
      net::AdminOp::kChannelDeclare,
      json{{"name", "fp.topic"}, {"settings", {{"kind", "publish-subscribe"}}}}.dump()});
  ASSERT_FRAME(declared, kChannelDeclareOk);
  ASSERT_FRAME(probe.call(net::Send{"fp.queue", {text_message("a"), text_message("b")}}), kSendOk);
  const json empty = server_stats(probe);
  std::vector<std::unique_ptr<Conn>> clients;
  for (int i = 0; i < 30; ++i) {
    clients.push_back(std::make_unique<Conn>(d.port()));
    Conn& c = *clients.back();
    c.hello();
    switch (i % 3) {
      case 0:  // a receive waiting on an empty channel
        c.send(net::SubscribeReceive{"fp.empty"});
        break;
      case 1:  // an ephemeral subscription of the topic, with a receive waiting on it
        c.send(net::SubscribeReceive{"fp.topic"});
        break;
      default:  // a message acquired and not settled (while there are some)
        ASSERT_FRAME(c.call(net::SubscribeTryReceive{"fp.queue", 0}), kSubscribeTryReceiveOk);
    }
  }
  // The HTTP side holds a client of its own, and the probe is one.
  const int clients_before = empty["broker"].value("clients", 0);
  const json busy = stats_until(probe, [&](const json& s) {
    return s["broker"].value("waiters", 0) >= 20 &&
           s["broker"].value("clients", 0) == clients_before + 30;
  });
  EXPECT_EQ(busy["broker"]["clients"], clients_before + 30) << busy.dump();
  EXPECT_GE(busy["broker"]["waiters"], 20) << busy.dump();
  EXPECT_EQ(busy["broker"]["ephemeral-subscriptions"],
            empty["broker"].value("ephemeral-subscriptions", 0) + 10)
      << busy.dump();
  for (auto& c : clients) c->close();
  const json after = stats_until(probe, [&](const json& s) {
    return s["connections"] == 1 && s["broker"]["clients"] == clients_before &&
           s["broker"]["waiters"] == 0 &&
           s["broker"]["ephemeral-subscriptions"] == empty["broker"]["ephemeral-subscriptions"];
  });
  EXPECT_EQ(after["connections"], 1) << after.dump();
  EXPECT_EQ(after["broker"]["clients"], clients_before) << after.dump();
  EXPECT_EQ(after["broker"]["waiters"], 0) << after.dump();
  EXPECT_EQ(after["broker"]["ephemeral-subscriptions"], empty["broker"]["ephemeral-subscriptions"])
      << after.dump();
  EXPECT_EQ(after["connections-by-state"]["connected"], 1) << after.dump();
  const HttpReply m = http_get(d.http_port(), "/metrics");
  ASSERT_EQ(m.status, 200u);
  EXPECT_EQ(metric(m.body, "witmq_broker_clients"), clients_before);
  EXPECT_EQ(metric(m.body, "witmq_broker_waiters"), 0);
  EXPECT_EQ(metric(m.body, "witmq_connections_by_state{state=\"connected\"}"), 1);
  EXPECT_GT(metric(m.body, "witmq_memory_resident_bytes"), 0);
  // The messages the leavers held are available again: both are received.
  Frame r = probe.call(net::SubscribeTryReceive{"fp.queue", 2000});
  ASSERT_FRAME(r, kSubscribeTryReceiveOk);
  EXPECT_EQ(d.stop(), 0);
}

// A connection that has not sent connect counts as connecting, one that has as connected.
TEST(FootprintTest, ConnectionsAreCountedByState) {
  Daemon d;
  Conn probe(d.port());
  probe.hello();
  Conn silent(d.port());
  const json s = stats_until(
      probe, [](const json& s) { return s["connections-by-state"].value("connecting", 0) == 1; });
  EXPECT_EQ(s["connections-by-state"]["connecting"], 1) << s.dump();
  EXPECT_EQ(s["connections-by-state"]["connected"], 1) << s.dump();
  EXPECT_EQ(s["connections-by-state"]["handshaking"], 0) << s.dump();
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace witmq::daemon::testing
