// Every client operation end to end against a real witmqd (daemon_process.h) on 127.0.0.1 with
// an ephemeral port and a temporary data directory. Skipped when the witmqd binary is not built.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "client/client.h"
#include "daemon_process.h"

namespace witmq::client {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;

Message text_message(std::string_view text, Metadata md = {}) {
  Message m;
  m.data.assign(text.begin(), text.end());
  if (!md.empty()) m.metadata = std::move(md);
  return m;
}

std::string text_of(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

std::string md(const Message& m, std::string_view key) {
  const std::string* v = find_metadata(m, key);
  return v ? *v : std::string();
}

class EndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    binary_ = testing::find_witmqd();
    if (binary_.empty()) return;
    daemon_ = new DaemonProcess();
    start_error_ = daemon_->start(binary_);
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }

  void SetUp() override {
    if (binary_.empty())
      GTEST_SKIP() << "witmqd is not built (set WITMQ_WITMQD or WITMQ_BUILD_DIR)";
    ASSERT_EQ(start_error_, "");
  }

  std::unique_ptr<Client> connect(std::string name = "", Options options = {}) {
    if (options.request_timeout.count() == 0) options.request_timeout = 20s;
    auto c = Client::connect("127.0.0.1", daemon_->port(), std::move(name), options);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().to_string());
    return c.ok() ? std::move(*c) : nullptr;
  }

  // A channel name no other test uses.
  std::string channel(std::string_view tag) { return fmt::format("e2e-{}-{}", tag, ++counter_); }

  // Receives until `n` messages arrived or 10 s passed.
  static std::vector<Message> receive_n(Client& c, const std::string& ch, size_t n) {
    std::vector<Message> out;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      auto r = c.subscribe_try_receive(ch, 500);
      EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
      if (!r.ok()) break;
      if (*r) out.insert(out.end(), (*r)->begin(), (*r)->end());
    }
    return out;
  }

  static inline std::string binary_;
  static inline DaemonProcess* daemon_ = nullptr;
  static inline std::string start_error_;
  static inline std::atomic<int> counter_{0};
};

TEST_F(EndToEnd, ConnectAnnouncesServerAndLimits) {
  auto c = connect("e2e-client");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->server_info().version, 1);
  EXPECT_TRUE(c->server_info().server.starts_with("witmqd/")) << c->server_info().server;
  EXPECT_GT(c->server_info().limits.max_frame_bytes, 0u);
  auto pong = c->ping(77);
  ASSERT_TRUE(pong.ok());
  EXPECT_EQ(*pong, 77u);
}

TEST_F(EndToEnd, SendTryReceiveComplete) {
  auto c = connect();
  ASSERT_TRUE(c);
  const std::string ch = channel("basic");
  ASSERT_TRUE(c->declare_channel(ch, {{"kind", "point-to-point"}}).ok());
  std::vector<Message> batch{text_message("one", {{"k", "v"}, {"witmq-id", "forged"}}),
                             text_message("two"), text_message("three")};
  batch[1].format = Format::kCloudevents;
  ASSERT_TRUE(c->send(ch, batch).ok()) << c->error_trace();

  auto got = receive_n(*c, ch, 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(text_of(got[0]), "one");
  EXPECT_EQ(text_of(got[1]), "two");
  EXPECT_EQ(text_of(got[2]), "three");
  EXPECT_EQ(got[1].format, Format::kCloudevents);
  EXPECT_EQ(md(got[0], "k"), "v");
  EXPECT_NE(md(got[0], meta::kId), "forged");  // reserved keys are the broker's
  EXPECT_EQ(md(got[0], meta::kChannel), ch);
  EXPECT_EQ(md(got[0], meta::kAttempt), "1");
  EXPECT_FALSE(md(got[0], meta::kReceipt).empty());
  for (const auto& m : got) EXPECT_TRUE(c->complete_message(m).ok()) << c->error_trace();

  // Settled twice: the receipt is no longer valid.
  Status again = c->complete_message(got[0]);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kStaleReceipt) << again.error().to_string();
  EXPECT_EQ(c->error_trace(), again.error().message);

  auto stats = c->channel_stats(ch);
  ASSERT_TRUE(stats.ok()) << c->error_trace();
  EXPECT_EQ(stats->depth, 0u);
  EXPECT_EQ(stats->in_flight, 0u);
  EXPECT_EQ(stats->completes_total, 3u);
  EXPECT_EQ(stats->kind, "point-to-point");

  // Nothing left: try-receive times out with none.
  auto none = c->subscribe_try_receive(ch, 50);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(EndToEnd, SubscribeReceiveWaitsForASendFromAnotherClient) {
  auto consumer = connect();
  auto producer = connect();
  ASSERT_TRUE(consumer && producer);
  const std::string ch = channel("wait");
  ASSERT_TRUE(consumer->declare_channel(ch, {{"kind", "point-to-point"}}).ok());
  auto pending = std::async(std::launch::async, [&] { return consumer->subscribe_receive(ch); });
  EXPECT_EQ(pending.wait_for(200ms), std::future_status::timeout);
  // The waiting receive does not hold up other requests on the same connection.
  ASSERT_TRUE(consumer->ping(1).ok());
  ASSERT_TRUE(producer->send(ch, std::vector<Message>{text_message("wake")}).ok());
  ASSERT_EQ(pending.wait_for(10s), std::future_status::ready);
  auto r = pending.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text_of((*r)[0]), "wake");
}

TEST_F(EndToEnd, AbandonRedeliversWithTheNextAttempt) {
  auto c = connect();
  ASSERT_TRUE(c);
  const std::string ch = channel("abandon");
  ASSERT_TRUE(
      c->declare_channel(
           ch, {{"kind", "point-to-point"}, {"backoff-initial-ms", "0"}, {"backoff-max-ms", "0"}})
          .ok())
      << c->error_trace();
  ASSERT_TRUE(c->send(ch, std::vector<Message>{text_message("again")}).ok());
  auto first = receive_n(*c, ch, 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(c->abandon_message(first[0]).ok()) << c->error_trace();
  auto second = receive_n(*c, ch, 1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(text_of(second[0]), "again");
  EXPECT_EQ(md(second[0], meta::kAttempt), "2");
  EXPECT_TRUE(c->complete_message(second[0]).ok());
}

TEST_F(EndToEnd, DeadLettersBrowseReplayAndPurge) {
  auto c = connect();
  ASSERT_TRUE(c);
  const std::string ch = channel("dlq");
  ASSERT_TRUE(
      c->declare_channel(ch, {{"kind", "point-to-point"}, {"abandon-policy", "dead-letter"}}).ok())
      << c->error_trace();
  ASSERT_TRUE(c->send(ch, std::vector<Message>{text_message("poison")}).ok());
  auto got = receive_n(*c, ch, 1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(c->abandon_message(got[0]).ok()) << c->error_trace();

  auto stats = c->channel_stats(ch);
  ASSERT_TRUE(stats.ok());
  const std::string dlq = stats->dead_letter_target();
  EXPECT_EQ(dlq, ch + ".dlq");
  std::vector<Message> dead;
  for (int i = 0; i < 100 && dead.empty(); ++i) {
    auto b = c->browse(dlq, 0, 10);
    if (b.ok()) dead = *b;
    if (dead.empty()) std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "poison");
  EXPECT_EQ(md(dead[0], meta::kDlqSource), ch);
  EXPECT_FALSE(md(dead[0], meta::kDlqReason).empty());
  EXPECT_TRUE(md(dead[0], meta::kReceipt).empty());  // browse does not acquire

  auto moved = c->replay_dead_letters(dlq);
  ASSERT_TRUE(moved.ok()) << c->error_trace();
  EXPECT_EQ(*moved, 1u);
  auto back = receive_n(*c, ch, 1);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(text_of(back[0]), "poison");
  ASSERT_TRUE(c->complete_message(back[0]).ok());

  std::vector<Message> five(5, text_message("p"));
  ASSERT_TRUE(c->send(ch, five).ok());
  auto purged = c->purge(ch);
  ASSERT_TRUE(purged.ok()) << c->error_trace();
  EXPECT_EQ(*purged, 5u);
  auto none = c->subscribe_try_receive(ch, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(EndToEnd, PublishSubscribeReachesEverySubscription) {
  auto a = connect();
  auto b = connect();
  auto producer = connect();
  ASSERT_TRUE(a && b && producer);
  const std::string ch = channel("topic");
  ASSERT_TRUE(producer->declare_channel(ch, {{"kind", "publish-subscribe"}}).ok());
  ASSERT_TRUE(a->update_guest_configuration({{ch}, std::nullopt}).ok()) << a->error_trace();
  ASSERT_TRUE(b->update_guest_configuration({{ch}, std::nullopt}).ok()) << b->error_trace();
  std::vector<Message> two{text_message("x"), text_message("y")};
  ASSERT_TRUE(producer->send(ch, two).ok());
  auto ga = receive_n(*a, ch, 2);
  auto gb = receive_n(*b, ch, 2);
  ASSERT_EQ(ga.size(), 2u);
  ASSERT_EQ(gb.size(), 2u);
  EXPECT_EQ(text_of(ga[1]), "y");
  EXPECT_EQ(text_of(gb[0]), "x");
}

TEST_F(EndToEnd, ExtensionsAreCheckedByTheServer) {
  auto c = connect();
  ASSERT_TRUE(c);
  const std::string ch = channel("ext");
  Status st = c->update_guest_configuration({{ch}, Metadata{{"no-such-key", "1"}}});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message.find("no-such-key"), std::string::npos) << st.error().message;
  // batch-size bounds what one receive returns.
  ASSERT_TRUE(c->update_guest_configuration({{ch}, Metadata{{"batch-size", "2"}}}).ok());
  std::vector<Message> five(5, text_message("b"));
  ASSERT_TRUE(c->send(ch, five).ok());
  auto r = c->subscribe_try_receive(ch, 2000);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->size(), 2u);
}

TEST_F(EndToEnd, StreamingNeverExceedsCredit) {
  auto c = connect();
  auto producer = connect();
  ASSERT_TRUE(c && producer);
  const std::string ch = channel("stream");
  ASSERT_TRUE(c->update_guest_configuration({{ch}, std::nullopt}).ok()) << c->error_trace();
  ASSERT_TRUE(c->start_stream(3).ok()) << c->error_trace();
  std::vector<Message> ten;
  for (int i = 0; i < 10; ++i) ten.push_back(text_message(std::to_string(i)));
  ASSERT_TRUE(producer->send(ch, ten).ok());

  auto drain = [&](std::chrono::milliseconds quiet) {
    std::vector<Message> got;
    for (int i = 0; i < 1000; ++i) {
      auto d = c->next_delivery(quiet);
      EXPECT_TRUE(d.ok());
      if (!d.ok() || !d->has_value()) break;
      EXPECT_EQ((*d)->channel, ch);
      for (auto& m : (*d)->messages) got.push_back(std::move(m));
    }
    return got;
  };
  auto first = drain(500ms);
  EXPECT_EQ(first.size(), 3u);  // exactly the credit, no more
  ASSERT_TRUE(c->grant_credit(4).ok()) << c->error_trace();
  auto second = drain(500ms);
  EXPECT_EQ(second.size(), 4u);
  ASSERT_TRUE(c->grant_credit(100).ok());
  auto third = drain(500ms);
  EXPECT_EQ(third.size(), 3u);
  std::set<std::string> seen;
  for (auto* v : {&first, &second, &third}) {
    for (const auto& m : *v) {
      seen.insert(text_of(m));
      EXPECT_TRUE(c->complete_message(m).ok()) << c->error_trace();
    }
  }
  EXPECT_EQ(seen.size(), 10u);
  ASSERT_TRUE(c->stop_stream().ok());
  EXPECT_FALSE(c->async()->stream_active());
  // Credit with no stream: failed-precondition.
  Status st = c->grant_credit(1);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kFailedPrecondition);
}

TEST_F(EndToEnd, AStalledStreamStallsOnlyItself) {
  auto stalled = connect();
  auto other = connect();
  auto producer = connect();
  ASSERT_TRUE(stalled && other && producer);
  const std::string ch = channel("stall");
  ASSERT_TRUE(producer->declare_channel(ch, {{"kind", "point-to-point"}}).ok());
  ASSERT_TRUE(stalled->update_guest_configuration({{ch}, std::nullopt}).ok());
  std::atomic<int> delivered{0};
  ASSERT_TRUE(stalled
                  ->start_stream(1,
                                 [&](Result<Delivery> d) {
                                   if (d.ok()) delivered += static_cast<int>(d->messages.size());
                                 })
                  .ok());
  std::vector<Message> ten(10, text_message("m"));
  ASSERT_TRUE(producer->send(ch, ten).ok());
  // The other consumer gets every message the stalled stream has no credit for.
  auto got = receive_n(*other, ch, 9);
  EXPECT_EQ(got.size(), 9u);
  // The stalled stream's one deliver may still be on its way: wait for it (bounded), then no more.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (delivered.load() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(delivered.load(), 1);
  for (const auto& m : got) EXPECT_TRUE(other->complete_message(m).ok());
}

TEST_F(EndToEnd, PipelinedAsyncSendsAllConfirmInOrder) {
  auto c = connect();
  ASSERT_TRUE(c);
  const std::string ch = channel("pipe");
  constexpr int kSends = 500;
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  std::promise<void> all;
  for (int i = 0; i < kSends; ++i) {
    std::vector<Message> one{text_message(std::to_string(i))};
    c->async()->send(ch, one, [&](Status s) {
      if (s.ok()) ++ok;
      if (++done == kSends) all.set_value();
    });
  }
  ASSERT_EQ(all.get_future().wait_for(30s), std::future_status::ready);
  EXPECT_EQ(ok.load(), kSends);
  ASSERT_TRUE(c->update_guest_configuration({{ch}, Metadata{{"batch-size", "1000"}}}).ok());
  auto got = receive_n(*c, ch, kSends);
  ASSERT_EQ(got.size(), static_cast<size_t>(kSends));
  for (int i = 0; i < kSends; ++i) EXPECT_EQ(text_of(got[i]), std::to_string(i));
}

TEST_F(EndToEnd, AdminListDeclareDeleteAndServerStats) {
  auto c = connect();
  ASSERT_TRUE(c);
  const std::string ch = channel("admin");
  ASSERT_TRUE(c->declare_channel(ch, {{"kind", "publish-subscribe"}, {"durability", "none"}}).ok());
  auto list = c->list_channels();
  ASSERT_TRUE(list.ok()) << c->error_trace();
  bool found = false;
  for (const auto& s : *list) {
    if (s.name == ch) {
      found = true;
      EXPECT_EQ(s.kind, "publish-subscribe");
      EXPECT_EQ(s.durability, "none");
    }
  }
  EXPECT_TRUE(found);

  // The kind of an existing channel cannot change.
  Status st = c->declare_channel(ch, {{"kind", "point-to-point"}});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kAlreadyExists);
  // Bad settings name the key.
  st = c->declare_channel(ch, {{"max-deliveries", "lots"}});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message.find("max-deliveries"), std::string::npos);

  ASSERT_TRUE(c->delete_channel(ch).ok()) << c->error_trace();
  auto gone = c->channel_stats(ch);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ErrorCode::kNotFound);

  auto server = c->server_stats();
  ASSERT_TRUE(server.ok()) << c->error_trace();
  auto j = nlohmann::json::parse(*server, nullptr, false);
  EXPECT_TRUE(j.is_object()) << *server;
}

TEST_F(EndToEnd, InvalidRequestsGetErrorsAndTheConnectionStays) {
  auto c = connect();
  ASSERT_TRUE(c);
  Status st = c->send("bad name!", std::vector<Message>{text_message("x")});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(c->error_trace().empty());
  auto r = c->subscribe_try_receive(".hidden", 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  Message forged = text_message("x", {{"witmq-receipt", "not-a-receipt"}});
  st = c->complete_message(forged);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.error().code == ErrorCode::kInvalidArgument ||
              st.error().code == ErrorCode::kStaleReceipt)
      << st.error().to_string();
  EXPECT_TRUE(c->is_open());
  EXPECT_TRUE(c->ping(5).ok());
}

// Its own daemon: a SIGTERM while a receive waits fails the receive with kUnavailable.
TEST(EndToEndShutdown, SigtermEndsPendingCallsWithUnavailable) {
  std::string binary = testing::find_witmqd();
  if (binary.empty()) GTEST_SKIP() << "witmqd is not built";
  DaemonProcess d;
  ASSERT_EQ(d.start(binary), "");
  auto c = Client::connect("127.0.0.1", d.port(), "");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  auto pending = std::async(std::launch::async, [&] { return (*c)->subscribe_receive("idle"); });
  EXPECT_EQ(pending.wait_for(100ms), std::future_status::timeout);
  int status = d.stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n"
                                                             << d.output();
  ASSERT_EQ(pending.wait_for(10s), std::future_status::ready);
  auto r = pending.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << r.error().to_string();
  EXPECT_FALSE((*c)->is_open());
}

}  // namespace
}  // namespace witmq::client
