// Request-reply over TCP against a real witmqd (docs/PROTOCOL.md section 16) with the C++ client:
// round trips, competing and scatter-gather responders, many concurrent requests, a responder
// that dies mid-request, hostile options, and a client that leaves 10 000 requests waiting.
// Skipped when the witmqd binary is not built.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "client/client.h"
#include "daemon_process.h"

namespace witmq::client {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;

Message text_message(std::string_view text) {
  Message m;
  m.data.assign(text.begin(), text.end());
  return m;
}

std::string text_of(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

class RequestReplyE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    binary_ = testing::find_witmqd();
    if (binary_.empty()) return;
    daemon_ = new DaemonProcess();
    // Unlimited in-flight requests per connection: the 10 000-request test holds them all.
    start_error_ = daemon_->start(binary_, "", {"--set", "max-in-flight=0"});
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

  std::unique_ptr<Client> connect(std::string name = "") {
    Options options;
    options.request_timeout = 30s;
    auto c = Client::connect("127.0.0.1", daemon_->port(), std::move(name), options);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().to_string());
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::string channel(std::string_view tag) { return fmt::format("rr-{}-{}", tag, ++counter_); }

  // Answers up to `n` requests on `ch` with `prefix` + the request's data, until `stop`.
  static int serve(Client& c, const std::string& ch, int n, const std::string& prefix,
                   const std::atomic<bool>* stop = nullptr) {
    int answered = 0;
    while (answered < n && !(stop && stop->load())) {
      auto r = c.subscribe_try_receive(ch, 200);
      if (!r.ok()) break;
      if (!*r) continue;
      for (auto& m : **r) {
        EXPECT_TRUE(c.reply(m, text_message(prefix + text_of(m))).ok());
        EXPECT_TRUE(c.complete_message(m).ok());
        ++answered;
      }
    }
    return answered;
  }

  static nlohmann::json broker_tables(Client& c) {
    auto s = c.server_stats();
    EXPECT_TRUE(s.ok());
    return s.ok() ? nlohmann::json::parse(*s)["broker"] : nlohmann::json{};
  }

  // Waits until the broker tables of the server show no inbox and no pending request.
  static nlohmann::json tables_at_rest(Client& observer) {
    nlohmann::json t;
    for (int i = 0; i < 100; ++i) {
      t = broker_tables(observer);
      if (t["request-inboxes"] == 0 && t["pending-requests"] == 0) break;
      std::this_thread::sleep_for(50ms);
    }
    return t;
  }

  static inline std::string binary_;
  static inline DaemonProcess* daemon_ = nullptr;
  static inline std::string start_error_;
  static inline std::atomic<int> counter_{0};
};

TEST_F(RequestReplyE2E, RoundTripOverTcp) {
  const std::string ch = channel("rt");
  auto responder = connect();
  auto requester = connect();
  ASSERT_TRUE(responder->declare_channel(ch, {{"kind", "point-to-point"}}).ok());
  auto served = std::async(std::launch::async, [&] { return serve(*responder, ch, 1, "re:"); });
  auto r = requester->request(ch, text_message("ping"), 5000ms);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(text_of((*r)[0]), "re:ping");
  EXPECT_NE(find_metadata((*r)[0], meta::kCorrelationId), nullptr);
  EXPECT_EQ(served.get(), 1);
}

TEST_F(RequestReplyE2E, NoResponderTimesOutWithTheTimeoutCode) {
  const std::string ch = channel("none");
  auto requester = connect();
  auto r = requester->request(ch, text_message("anyone"), 100ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout) << r.error().to_string();
  EXPECT_TRUE(requester->is_open());
}

TEST_F(RequestReplyE2E, HostileOptionsAreRefusedAndTheConnectionStays) {
  const std::string ch = channel("hostile");
  auto requester = connect();
  for (auto [timeout, replies] : std::vector<std::pair<uint32_t, uint32_t>>{
           {0, 1}, {1000, 0}, {1000, 0xFFFFFFFFu}, {0xFFFFFFFFu, 1}, {300'001, 1}}) {
    auto r = requester->request(ch, text_message("x"), std::chrono::milliseconds(timeout), replies);
    ASSERT_FALSE(r.ok()) << timeout << " " << replies;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << r.error().to_string();
  }
  // The longest timeout allowed is accepted (and ends with the connection).
  auto async = requester->async();
  std::promise<Result<std::vector<Message>>> longest;
  async->request(ch, text_message("x"), 300'000, 1000,
                 [&](Result<std::vector<Message>> r) { longest.set_value(std::move(r)); });
  EXPECT_TRUE(requester->ping(1).ok());
  // A reply without an address is refused by the client before it is sent.
  EXPECT_EQ(requester->reply(text_message("q"), text_message("a")).error().code,
            ErrorCode::kInvalidArgument);
  requester->close();
  auto r = longest.get_future().get();
  EXPECT_FALSE(r.ok());
}

TEST_F(RequestReplyE2E, ScatterGatherOnAPublishSubscribeChannel) {
  const std::string ch = channel("sg");
  auto admin = connect();
  ASSERT_TRUE(admin->declare_channel(ch, {{"kind", "publish-subscribe"}}).ok());
  std::vector<std::unique_ptr<Client>> responders;
  for (int i = 0; i < 3; ++i) {
    responders.push_back(connect(fmt::format("{}-sub{}", ch, i)));
    ASSERT_TRUE(responders.back()->update_guest_configuration({{ch}, std::nullopt}).ok());
  }
  std::vector<std::future<int>> served;
  for (int i = 0; i < 3; ++i) {
    served.push_back(std::async(
        std::launch::async, [&, i] { return serve(*responders[i], ch, 1, std::to_string(i)); }));
  }
  auto r = admin->request(ch, text_message("q"), 10'000ms, 3);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->size(), 3u);
  for (auto& s : served) EXPECT_EQ(s.get(), 1);
}

TEST_F(RequestReplyE2E, ManyConcurrentRequestsFromManyClientsAllAnswered) {
  const std::string ch = channel("many");
  auto admin = connect();
  ASSERT_TRUE(admin->declare_channel(ch, {{"kind", "point-to-point"}}).ok());
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Client>> responders;
  std::vector<std::future<int>> served;
  for (int i = 0; i < 4; ++i) responders.push_back(connect());
  for (int i = 0; i < 4; ++i) {
    served.push_back(std::async(std::launch::async,
                                [&, i] { return serve(*responders[i], ch, 1 << 30, "", &stop); }));
  }
  constexpr int kClients = 8, kEach = 250;
  std::vector<std::unique_ptr<Client>> requesters;
  for (int i = 0; i < kClients; ++i) requesters.push_back(connect());
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      // Pipelined on one connection: all of a client's requests wait at once.
      auto async = requesters[i]->async();
      std::vector<std::promise<bool>> done(kEach);
      for (int k = 0; k < kEach; ++k) {
        const std::string body = fmt::format("{}-{}", i, k);
        async->request(ch, text_message(body), 20'000, 1,
                       [&done, k, body](Result<std::vector<Message>> r) {
                         done[k].set_value(r.ok() && r->size() == 1 && text_of((*r)[0]) == body);
                       });
      }
      for (auto& d : done) ok += d.get_future().get() ? 1 : 0;
    });
  }
  for (auto& t : threads) t.join();
  stop = true;
  int total = 0;
  for (auto& s : served) total += s.get();
  EXPECT_EQ(ok.load(), kClients * kEach);
  EXPECT_EQ(total, kClients * kEach) << "each request answered exactly once";
  requesters.clear();
  auto t = tables_at_rest(*admin);
  EXPECT_EQ(t["pending-requests"], 0) << t.dump();
  EXPECT_EQ(t["request-inboxes"], 0) << t.dump();
}

TEST_F(RequestReplyE2E, ResponderThatDiesMidRequestGetsItsRequestRedelivered) {
  const std::string ch = channel("die");
  auto admin = connect();
  ASSERT_TRUE(admin->declare_channel(ch, {{"kind", "point-to-point"}, {"lease-ms", "300"}}).ok());
  auto requester = connect();
  auto async = requester->async();
  std::promise<Result<std::vector<Message>>> result;
  async->request(ch, text_message("job"), 10'000, 1,
                 [&](Result<std::vector<Message>> r) { result.set_value(std::move(r)); });
  {
    auto dying = connect();
    auto got = dying->subscribe_try_receive(ch, 5000);
    ASSERT_TRUE(got.ok() && *got && (*got)->size() == 1);
    dying->close();  // gone without replying: the request is available again
  }
  auto second = connect();
  EXPECT_EQ(serve(*second, ch, 1, "second:"), 1);
  auto r = result.get_future().get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(text_of((*r)[0]), "second:job");
}

TEST_F(RequestReplyE2E, TenThousandPendingRequestsThenDisconnectLeavesNothing) {
  const std::string ch = channel("pile");
  auto observer = connect();
  {
    auto requester = connect();
    auto async = requester->async();
    std::atomic<int> ended{0};
    for (int i = 0; i < 10'000; ++i) {
      async->request(ch, text_message("q"), 60'000, 1,
                     [&ended](Result<std::vector<Message>>) { ++ended; });
    }
    nlohmann::json t;
    for (int i = 0; i < 200; ++i) {
      t = broker_tables(*observer);
      if (t["pending-requests"] == 10'000) break;
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(t["pending-requests"], 10'000) << t.dump();
    // One more than max-pending-requests-per-connection (10 000) is refused.
    auto over = requester->request(ch, text_message("q"), 60'000ms);
    ASSERT_FALSE(over.ok());
    EXPECT_EQ(over.error().code, ErrorCode::kResourceExhausted) << over.error().to_string();
    requester->close();
    // Closing fails every pending call (on the connection's strand).
    for (int i = 0; i < 200 && ended.load() < 10'000; ++i) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(ended.load(), 10'000);
  }
  auto t = tables_at_rest(*observer);
  EXPECT_EQ(t["pending-requests"], 0) << t.dump();
  EXPECT_EQ(t["request-inboxes"], 0) << t.dump();
  // The requests themselves stay in their channel: they are ordinary messages; a reply to one
  // now is dropped and counted, and answered reply-ok.
  auto responder = connect();
  auto got = responder->subscribe_try_receive(ch, 5000);
  ASSERT_TRUE(got.ok() && *got && !(*got)->empty());
  const auto dropped_before = broker_tables(*observer)["replies-dropped-total"].get<uint64_t>();
  EXPECT_TRUE(responder->reply((**got)[0], text_message("late")).ok());
  EXPECT_EQ(broker_tables(*observer)["replies-dropped-total"].get<uint64_t>(), dropped_before + 1);
}

}  // namespace
}  // namespace witmq::client
