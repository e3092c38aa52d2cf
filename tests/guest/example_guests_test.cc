// The C example guests (examples/guests/, built with clang --target=wasm32-wasi against
// sdk/c/witmq_guest.h) end to end with the real broker.
#include <gtest/gtest.h>

#include "guest/guest_fixture.h"

namespace witmq::guest {
namespace {

using namespace testing;  // NOLINT

class ExampleGuestsTest : public GuestHostTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_EXAMPLE_GUESTS_BUILT
    GTEST_SKIP() << "no clang able to target wasm32-wasi: the example guests were not built";
#endif
    GuestHostTest::SetUp();
  }
};

TEST_F(ExampleGuestsTest, EchoForwardsOrdersToTheAuditChannel) {
  GuestHost* h = start(options("echo", "example_echo"));
  ASSERT_TRUE(h);
  send("orders", {text_message("order-1"), text_message("order-2")});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("orders.audit", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return got.size() >= 2;
  }));
  EXPECT_EQ(text_of(got[0]), "order-1");
  EXPECT_EQ(text_of(got[1]), "order-2");
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(ExampleGuestsTest, FilterCompletesApprovedAndAbandonsTheRest) {
  GuestHost* h = start(options("filter", "example_filter"));
  ASSERT_TRUE(h);
  send("payments", {text_message("{\"id\":1,\"approved\":true}"),
                    text_message("{\"id\":2,\"approved\":false}")});
  auto dead = dead_letters(1, "payments.dlq");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "{\"id\":2,\"approved\":false}");
  EXPECT_EQ(channel("payments").completes_total, 1u);
  // Every message was settled by the guest itself: the host settled nothing.
  EXPECT_EQ(h->stats().completed, 0u);
  EXPECT_EQ(h->stats().abandoned, 0u);
  auto summary = receive("payments.filtered", 1000ms);
  ASSERT_FALSE(summary.empty());
  const std::string* completed = find_metadata(summary[0], "completed");
  ASSERT_NE(completed, nullptr);
  EXPECT_EQ(*completed, "1");
}

TEST_F(ExampleGuestsTest, CounterKeepsStateAcrossBatches) {
  GuestOptions o = options("counter", "example_counter");
  o.batch_size = 1;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("events", {text_message("abc"), text_message("de"), text_message("f")});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("events.count", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return got.size() >= 3;
  }));
  EXPECT_EQ(text_of(got[0]), "messages=1 bytes=3");
  EXPECT_EQ(text_of(got[1]), "messages=2 bytes=5");
  EXPECT_EQ(text_of(got[2]), "messages=3 bytes=6");
  // The batch is counted once the handler returns; its output is visible from the send inside it.
  EXPECT_TRUE(eventually([&] { return h->stats().batches == 3u; })) << h->stats().batches;
}

}  // namespace
}  // namespace witmq::guest
