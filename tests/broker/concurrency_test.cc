// Many threads sending, receiving, completing and abandoning at once. Run under the sanitizer
// build (tools/test.sh --sanitize) it checks for data races' usual symptoms and memory errors.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <atomic>
#include <map>
#include <mutex>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

class ConcurrencyTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override {
    o.default_channel.backoff_initial = 0ms;
    o.default_channel.max_deliveries = 0;  // unlimited: every message must end up completed
  }
};

TEST_F(ConcurrencyTest, ProducersAndConsumersOnSeveralChannels) {
  constexpr int kProducers = 4, kConsumers = 4, kBatches = 50, kBatch = 20;
  const std::vector<std::string> channels = {"c0", "c1", "c2"};
  std::atomic<int> sent{0};
  std::mutex mu;
  std::map<std::string, int> completed;
  std::atomic<bool> producers_done{false};

  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      auto c = connect();
      for (int b = 0; b < kBatches; ++b) {
        std::vector<Message> batch;
        for (int i = 0; i < kBatch; ++i) {
          batch.push_back(msg(fmt::format("p{}-b{}-{}", p, b, i)));
        }
        ASSERT_TRUE(send(c, channels[(p + b) % channels.size()], std::move(batch)).ok());
        sent += kBatch;
      }
    });
  }
  for (int k = 0; k < kConsumers; ++k) {
    threads.emplace_back([&, k] {
      auto c = connect();
      int idle = 0;
      uint32_t round = 0;
      while (idle < 5) {
        auto r = receive(c, channels, 100ms, 7);
        ASSERT_TRUE(r.ok()) << r.error().to_string();
        if (r->empty()) {
          if (producers_done) ++idle;
          continue;
        }
        idle = 0;
        for (auto& m : *r) {
          // Every third message of consumer 0 is abandoned once, to exercise redelivery.
          if (k == 0 && ++round % 3 == 0 && md(m, "witmq-attempt") == "1") {
            ASSERT_TRUE(broker_->abandon_message(m).ok());
            continue;
          }
          auto st = broker_->complete_message(m);
          ASSERT_TRUE(st.ok()) << st.error().to_string();
          std::lock_guard lock(mu);
          ++completed[text(m)];
        }
      }
      broker_->disconnect(c);
    });
  }
  for (int p = 0; p < kProducers; ++p) threads[p].join();
  producers_done = true;
  for (size_t i = kProducers; i < threads.size(); ++i) threads[i].join();

  EXPECT_EQ(sent.load(), kProducers * kBatches * kBatch);
  EXPECT_EQ(completed.size(), static_cast<size_t>(kProducers * kBatches * kBatch));
  for (auto& [k, n] : completed) EXPECT_EQ(n, 1) << k;
  for (auto& ch : channels) {
    EXPECT_EQ(stats(ch).depth, 0u) << ch;
    EXPECT_EQ(stats(ch).in_flight, 0u) << ch;
  }
}

TEST_F(ConcurrencyTest, TopicFanOutWhileSubscribersComeAndGo) {
  ChannelSettings topic;
  topic.kind = ChannelKind::kPublishSubscribe;
  ASSERT_TRUE(broker_->declare_channel("t", topic).ok());
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  // Durable readers that must see everything.
  std::vector<std::atomic<int>> counts(3);
  std::vector<ClientPtr> readers;
  for (int i = 0; i < 3; ++i) {
    readers.push_back(connect("reader" + std::to_string(i)));
    ASSERT_TRUE(broker_->update_guest_configuration(readers[i], {{"t"}, {}}).ok());
  }
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      while (!stop || counts[i] < 1000) {
        auto r = receive(readers[i], {"t"}, 50ms, 64);
        ASSERT_TRUE(r.ok());
        if (r->empty() && stop) break;
        for (auto& m : *r) {
          ASSERT_TRUE(broker_->complete_message(m).ok());
          ++counts[i];
        }
      }
    });
  }
  // Ephemeral subscribers churning.
  threads.emplace_back([&] {
    while (!stop) {
      auto c = connect("");
      ASSERT_TRUE(broker_->update_guest_configuration(c, {{"t"}, {}}).ok());
      auto r = receive(c, {"t"}, 5ms, 10);
      ASSERT_TRUE(r.ok());
      broker_->disconnect(c);
    }
  });
  auto p = connect();
  for (int b = 0; b < 50; ++b) {
    std::vector<Message> batch;
    for (int i = 0; i < 20; ++i) batch.push_back(msg(std::to_string(b * 20 + i)));
    send_ok(p, "t", std::move(batch));
  }
  stop = true;
  for (auto& t : threads) t.join();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(counts[i].load(), 1000) << "reader" << i;
}

}  // namespace
}  // namespace witmq::broker::testing
