// The client library against a scripted peer (fake_server.h): the handshake, request-id
// matching of out-of-order replies, errors, goaway, streaming with credit, settlement and local
// limit checks. No daemon needed.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>

#include "client/client.h"
#include "fake_server.h"

namespace witmq::client {
namespace {

using testing::FakeServer;
using namespace std::chrono_literals;

Message text_message(std::string_view text, Metadata md = {}) {
  Message m;
  m.data.assign(text.begin(), text.end());
  if (!md.empty()) m.metadata = std::move(md);
  return m;
}

// Connects a Client to `server` while the server side runs the handshake.
std::unique_ptr<Client> connect_to(FakeServer& server, net::Connect* seen = nullptr,
                                   Options options = {},
                                   net::ServerLimits limits = FakeServer::default_limits()) {
  auto fut = std::async(std::launch::async, [&] {
    return Client::connect("127.0.0.1", server.port(), "tester", options);
  });
  net::Connect c = server.handshake(limits);
  if (seen) *seen = c;
  auto r = fut.get();
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(ClientProtocol, HandshakeSendsVersionNameTokenAndKeepsLimits) {
  FakeServer server;
  Options options;
  options.token = "secret";
  net::ServerLimits limits = FakeServer::default_limits();
  limits.max_send_messages = 77;
  net::Connect seen;
  auto client = connect_to(server, &seen, options, limits);
  ASSERT_TRUE(client);
  EXPECT_EQ(seen.versions, std::vector<uint16_t>{1});
  EXPECT_EQ(seen.name, "tester");
  EXPECT_EQ(seen.token, std::optional<std::string>("secret"));
  EXPECT_EQ(client->server_info().server, "fake/0");
  EXPECT_EQ(client->server_info().limits.max_send_messages, 77u);
  EXPECT_TRUE(client->is_open());
}

TEST(ClientProtocol, RepliesOutOfOrderReachTheirOwnCalls) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  constexpr int kCalls = 50;
  std::vector<std::promise<Status>> done(kCalls);
  std::vector<Message> one{text_message("x")};
  for (int i = 0; i < kCalls; ++i) {
    client->async()->send(fmt::format("ch{}", i), one,
                          [&done, i](Status s) { done[i].set_value(std::move(s)); });
  }
  // Read every send, remember which channel each request id was for, answer in reverse order:
  // even channels ok, odd ones an error naming the channel.
  std::vector<std::pair<uint32_t, std::string>> seen;
  for (int i = 0; i < kCalls; ++i) {
    auto f = server.read_frame();
    ASSERT_TRUE(f);
    auto* s = std::get_if<net::Send>(&f->body);
    ASSERT_NE(s, nullptr);
    seen.emplace_back(f->request_id, s->channel);
  }
  std::reverse(seen.begin(), seen.end());
  for (const auto& [id, channel] : seen) {
    int i = std::stoi(channel.substr(2));
    if (i % 2 == 0) {
      server.write_empty(id, net::FrameType::kSendOk);
    } else {
      server.write_error(id, net::FrameType::kError, not_found("no channel '" + channel + "'"));
    }
  }
  for (int i = 0; i < kCalls; ++i) {
    Status s = done[i].get_future().get();
    if (i % 2 == 0) {
      EXPECT_TRUE(s.ok()) << i;
    } else {
      ASSERT_FALSE(s.ok()) << i;
      EXPECT_EQ(s.error().code, ErrorCode::kNotFound);
      EXPECT_EQ(s.error().message, fmt::format("no channel 'ch{}'", i));
    }
  }
  // Request ids were distinct.
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end(),
                               [](auto& a, auto& b) { return a.first == b.first; }),
            seen.end());
}

TEST(ClientProtocol, ErrorReplyIsReturnedAndBecomesErrorTrace) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->error_trace(), "");
  auto fut = std::async(std::launch::async, [&] { return client->subscribe_receive("orders"); });
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  ASSERT_TRUE(std::holds_alternative<net::SubscribeReceive>(f->body));
  // A code newer than this build's list travels through unchanged.
  server.write_error(f->request_id, net::FrameType::kError,
                     Error(static_cast<ErrorCode>(99), "something new"));
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(static_cast<int>(r.error().code), 99);
  EXPECT_EQ(client->error_trace(), "something new");
  EXPECT_TRUE(client->is_open());
}

TEST(ClientProtocol, TryReceiveNoneAndSome) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  auto fut = std::async(std::launch::async, [&] { return client->subscribe_try_receive("q", 25); });
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  auto* req = std::get_if<net::SubscribeTryReceive>(&f->body);
  ASSERT_NE(req, nullptr);
  EXPECT_EQ(req->channel, "q");
  EXPECT_EQ(req->timeout_ms, 25u);
  server.write(f->request_id, net::SubscribeTryReceiveOk{std::nullopt});
  auto none = fut.get();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  fut = std::async(std::launch::async, [&] { return client->subscribe_try_receive("q", 0); });
  f = server.read_frame();
  ASSERT_TRUE(f);
  server.write(f->request_id, net::SubscribeTryReceiveOk{
                                  std::vector<Message>{text_message("a"), text_message("b")}});
  auto some = fut.get();
  ASSERT_TRUE(some.ok());
  ASSERT_TRUE(some->has_value());
  ASSERT_EQ((*some)->size(), 2u);
  EXPECT_EQ((**some)[1].data, std::vector<uint8_t>{'b'});
}

TEST(ClientProtocol, CompleteSendsOnlyTheReceipt) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  Message delivered =
      text_message("payload", {{"k", "v"}, {"witmq-id", "q/1"}, {"witmq-receipt", "R-1"}});
  auto fut = std::async(std::launch::async, [&] { return client->complete_message(delivered); });
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  auto* c = std::get_if<net::CompleteMessage>(&f->body);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->message.data.empty());
  EXPECT_EQ(c->message.metadata, (Metadata{{"witmq-receipt", "R-1"}}));
  server.write_empty(f->request_id, net::FrameType::kCompleteMessageOk);
  EXPECT_TRUE(fut.get().ok());

  fut = std::async(std::launch::async, [&] { return client->abandon_message(delivered); });
  f = server.read_frame();
  ASSERT_TRUE(f);
  ASSERT_TRUE(std::holds_alternative<net::AbandonMessage>(f->body));
  server.write_error(f->request_id, net::FrameType::kError,
                     Error(ErrorCode::kStaleReceipt, "lease expired"));
  Status st = fut.get();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kStaleReceipt);

  // No receipt: refused locally, nothing is sent.
  Status local = client->complete_message(text_message("no receipt"));
  ASSERT_FALSE(local.ok());
  EXPECT_EQ(local.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(local.error().message.find("witmq-receipt"), std::string::npos);
  EXPECT_EQ(client->async()->pending_requests(), 0u);
}

TEST(ClientProtocol, SendOverAnnouncedLimitsFailsLocally) {
  FakeServer server;
  net::ServerLimits limits = FakeServer::default_limits();
  limits.max_send_messages = 2;
  limits.max_message_bytes = 4;
  auto client = connect_to(server, nullptr, {}, limits);
  ASSERT_TRUE(client);
  std::vector<Message> three(3, text_message("x"));
  Status st = client->send("q", three);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kResourceExhausted);
  EXPECT_NE(st.error().message.find("max-send-messages 2"), std::string::npos);
  std::vector<Message> big{text_message("12345")};
  st = client->send("q", big);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("messages[0] has 5 data bytes"), std::string::npos);
  EXPECT_EQ(client->async()->pending_requests(), 0u);
  EXPECT_TRUE(client->is_open());
}

TEST(ClientProtocol, StreamDeliversUnderCreditAndEnds) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  auto started = std::async(std::launch::async, [&] { return client->start_stream(2); });
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  auto* ss = std::get_if<net::StreamStart>(&f->body);
  ASSERT_NE(ss, nullptr);
  EXPECT_EQ(ss->credit, 2u);
  const uint32_t stream_id = f->request_id;
  server.write_empty(stream_id, net::FrameType::kStreamStartOk);
  ASSERT_TRUE(started.get().ok());
  EXPECT_TRUE(client->async()->stream_active());

  // A second stream on the same connection is refused locally.
  Status second = client->start_stream(1);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kFailedPrecondition);

  server.write(stream_id, net::Deliver{"jobs", {text_message("one"), text_message("two")}});
  auto d = client->next_delivery(5s);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->channel, "jobs");
  EXPECT_EQ((*d)->messages.size(), 2u);

  auto credit = std::async(std::launch::async, [&] { return client->grant_credit(5); });
  f = server.read_frame();
  ASSERT_TRUE(f);
  auto* c = std::get_if<net::Credit>(&f->body);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->additional, 5u);
  server.write_empty(f->request_id, net::FrameType::kCreditOk);
  EXPECT_TRUE(credit.get().ok());

  // Nothing more within the wait.
  auto empty = client->next_delivery(20ms);
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->has_value());

  server.write_error(stream_id, net::FrameType::kStreamEnd, not_found("channel 'jobs' deleted"));
  auto ended = client->next_delivery(5s);
  ASSERT_FALSE(ended.ok());
  EXPECT_EQ(ended.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(client->async()->stream_active());
}

TEST(ClientProtocol, StopStreamWaitsForStopOk) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  std::atomic<int> delivered{0};
  auto started = std::async(std::launch::async, [&] {
    return client->start_stream(10, [&](Result<Delivery> d) {
      if (d.ok()) delivered += static_cast<int>(d->messages.size());
    });
  });
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  const uint32_t stream_id = f->request_id;
  server.write_empty(stream_id, net::FrameType::kStreamStartOk);
  ASSERT_TRUE(started.get().ok());

  auto stopped = std::async(std::launch::async, [&] { return client->stop_stream(); });
  f = server.read_frame();
  ASSERT_TRUE(f);
  ASSERT_TRUE(std::holds_alternative<net::StreamStop>(f->body));
  // A delivery sent before stream-stop-ok still reaches the handler.
  server.write(stream_id, net::Deliver{"jobs", {text_message("late")}});
  server.write_empty(f->request_id, net::FrameType::kStreamStopOk);
  ASSERT_TRUE(stopped.get().ok());
  EXPECT_EQ(delivered.load(), 1);
  EXPECT_FALSE(client->async()->stream_active());
}

TEST(ClientProtocol, AdminCallsEncodeJsonAndParseReplies) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  auto fut = std::async(std::launch::async, [&] { return client->list_channels(); });
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  auto* a = std::get_if<net::AdminRequest>(&f->body);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->op, net::AdminOp::kChannelList);
  EXPECT_EQ(a->json, "{}");
  server.write(f->request_id,
               net::AdminReply{net::AdminOp::kChannelList,
                               R"({"channels":[{"name":"q","settings":{"kind":"point-to-point",)"
                               R"("durability":"group"},"depth":3,"in-flight":1}]})"});
  auto list = fut.get();
  ASSERT_TRUE(list.ok()) << list.error().to_string();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "q");
  EXPECT_EQ((*list)[0].depth, 3u);

  auto declared = std::async(std::launch::async, [&] {
    return client->declare_channel("q", {{"kind", "publish-subscribe"}, {"max-deliveries", "5"}});
  });
  f = server.read_frame();
  ASSERT_TRUE(f);
  a = std::get_if<net::AdminRequest>(&f->body);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->op, net::AdminOp::kChannelDeclare);
  EXPECT_EQ(a->json, R"({"name":"q","settings":{"kind":"publish-subscribe","max-deliveries":5}})");
  server.write(f->request_id, net::AdminReply{net::AdminOp::kChannelDeclare, "{}"});
  EXPECT_TRUE(declared.get().ok());

  auto browsed = std::async(std::launch::async, [&] { return client->browse("q.dlq", 4, 10); });
  f = server.read_frame();
  ASSERT_TRUE(f);
  a = std::get_if<net::AdminRequest>(&f->body);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->op, net::AdminOp::kBrowse);
  EXPECT_EQ(a->json, R"({"channel":"q.dlq","from":4,"max":10})");
  server.write(f->request_id, net::BrowseOk{{text_message("dead")}});
  auto b = browsed.get();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size(), 1u);

  auto purged = std::async(std::launch::async, [&] { return client->purge("q"); });
  f = server.read_frame();
  ASSERT_TRUE(f);
  server.write(f->request_id, net::AdminReply{net::AdminOp::kPurge, R"({"purged":7})"});
  auto p = purged.get();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, 7u);

  // A reply for the wrong admin op is reported, not mistaken for the right one.
  auto stats = std::async(std::launch::async, [&] { return client->channel_stats("q"); });
  f = server.read_frame();
  ASSERT_TRUE(f);
  server.write(f->request_id, net::AdminReply{net::AdminOp::kPurge, R"({"purged":7})"});
  auto s = stats.get();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kInternal);
}

TEST(ClientProtocol, GoawayOnConnectFailsTheConnect) {
  FakeServer server;
  auto fut = std::async(std::launch::async, [&] {
    Options o;
    o.token = "wrong";
    return Client::connect("127.0.0.1", server.port(), "", o);
  });
  server.accept();
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  server.write_error(f->request_id, net::FrameType::kGoaway,
                     Error(ErrorCode::kPermissionDenied, "connect: token refused"));
  server.close();
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied);
  EXPECT_EQ(r.error().message, "connect: token refused");
}

TEST(ClientProtocol, ServerClosingFailsPendingCallsAndLaterOnes) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  auto fut = std::async(std::launch::async, [&] { return client->subscribe_receive("q"); });
  auto f = server.read_frame();
  ASSERT_TRUE(f);
  server.write_error(0, net::FrameType::kGoaway,
                     Error(ErrorCode::kUnavailable, "server shutting down"));
  server.close();
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(r.error().message, "server shutting down");
  EXPECT_FALSE(client->is_open());
  Status later = client->send("q", std::vector<Message>{text_message("x")});
  ASSERT_FALSE(later.ok());
  EXPECT_EQ(later.error().code, ErrorCode::kUnavailable);
}

TEST(ClientProtocol, ConnectionDropWithoutGoawayFailsPendingCalls) {
  FakeServer server;
  auto client = connect_to(server);
  ASSERT_TRUE(client);
  auto fut = std::async(std::launch::async, [&] { return client->ping(9); });
  ASSERT_TRUE(server.read_frame());
  server.close();
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find("connection lost"), std::string::npos);
}

TEST(ClientProtocol, ConnectTimesOutWhenTheServerNeverAnswers) {
  FakeServer server;
  Options o;
  o.connect_timeout = 100ms;
  auto fut = std::async(std::launch::async,
                        [&] { return Client::connect("127.0.0.1", server.port(), "", o); });
  server.accept();
  ASSERT_TRUE(server.read_frame());  // the connect, never answered
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find("within 100 ms"), std::string::npos);
}

TEST(ClientProtocol, ConnectRefusedIsUnavailable) {
  uint16_t port;
  {
    FakeServer closed;
    port = closed.port();
  }
  auto r = Client::connect("127.0.0.1", port, "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
}

TEST(ClientProtocol, RequestTimeoutBoundsABlockingCall) {
  FakeServer server;
  Options o;
  o.request_timeout = 50ms;
  auto client = connect_to(server, nullptr, o);
  ASSERT_TRUE(client);
  Status st = client->update_guest_configuration(GuestConfiguration{{"q"}, std::nullopt});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(st.error().message.find("within 50 ms"), std::string::npos);
}

}  // namespace
}  // namespace witmq::client
