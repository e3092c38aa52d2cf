// Records a crash or a race can leave without their owner (a cursor, delivery records or a
// subscription whose owner was deleted, a channel's head or messages without its definition):
// recover() removes them, counts them, and starts, instead of refusing. Undecodable bytes still
// refuse (corruption_test.cc).
#include <gtest/gtest.h>

#include "storage/codec.h"
#include "storage/store.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::StoreTest;

class OrphansTest : public StoreTest {
 protected:
  // Channel 1 with subscription 2: the state that must come through untouched.
  void write_live_state() {
    WriteSet ws;
    ws.put_channel({1, "one", "{}"});
    ws.put_head(1, {0, 4});
    for (Seq s = 0; s < 4; ++s) ws.put_message(1, s, 1000 + s, make_message(s, 20));
    ws.put_subscription({2, 1, "", "{}"});
    ws.put_cursor(2, {1, 3});
    ws.put_delivery(2, 2, {DeliveryStatus::kReady, 2, 0});
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }

  void expect_live_state(const RecoveredState& st) {
    ASSERT_EQ(st.channels.size(), 1u);
    EXPECT_EQ(st.channels[0].def.name, "one");
    EXPECT_EQ(st.channels[0].head.next, 4u);
    ASSERT_EQ(st.subscriptions.size(), 1u);
    EXPECT_EQ(st.subscriptions[0].def.id, 2u);
    EXPECT_EQ(st.subscriptions[0].cursor.floor, 1u);
    EXPECT_EQ(st.subscriptions[0].cursor.next, 3u);
    ASSERT_EQ(st.subscriptions[0].deliveries.size(), 1u);
    EXPECT_EQ(st.subscriptions[0].deliveries[0].first, 2u);
    auto m = store_->read(1, 0, 4, 10);
    ASSERT_TRUE(m.ok()) << m.error().to_string();
    EXPECT_EQ(m->size(), 4u);
  }
};

// Issue 17 item 1 / issue 20 item 2: the exact records the delete races left behind.
TEST_F(OrphansTest, DeliveryRecordAndCursorOfADeletedSubscriptionAreRemoved) {
  write_live_state();
  WriteSet ws;
  // Subscription 7 of a deleted channel: its cursor (issue 20) and delivery records (issue 17)
  // written after the deletion.
  ws.put_cursor(7, {3, 5});
  ws.put_delivery(7, 3, {DeliveryStatus::kAccepted, 1, 0});
  ws.put_delivery(7, 4, {DeliveryStatus::kReady, 2, 0});
  // Delivery records alone, of subscription 8.
  ws.put_delivery(8, 1, {DeliveryStatus::kAccepted, 1, 0});
  ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  reopen();

  auto st = store_->recover();
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(st->orphans.cursors, 1u);
  EXPECT_EQ(st->orphans.delivery_records, 3u);
  EXPECT_EQ(st->orphans.total(), 4u);
  EXPECT_EQ(store_->stats().recovered_orphans.total(), 4u);
  expect_live_state(*st);

  // Removed for good: the next start finds nothing.
  reopen();
  auto again = store_->recover();
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(again->orphans.total(), 0u);
  EXPECT_EQ(store_->stats().recovered_orphans.total(), 0u);
  expect_live_state(*again);
}

TEST_F(OrphansTest, HeadMessagesAndSubscriptionsWithoutTheirChannelAreRemoved) {
  write_live_state();
  WriteSet ws;
  ws.put_head(9, {0, 2});  // a trim's head write after the deletion of channel 9
  ws.put_message(9, 0, 1, make_message(1, 10));
  ws.put_message(10, 5, 1, make_message(2, 10));  // messages of channel 10, nothing else
  ws.put_message(10, 6, 1, make_message(3, 10));
  ws.put_subscription({11, 12, "s", "{}"});  // a subscription of missing channel 12
  ws.put_cursor(11, {0, 1});
  ws.put_delivery(11, 0, {DeliveryStatus::kAcquired, 1, 0});
  ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  reopen();

  auto st = store_->recover();
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(st->orphans.heads, 1u);
  EXPECT_EQ(st->orphans.message_channels, 1u);  // channel 9's go with its head
  EXPECT_EQ(st->orphans.subscriptions, 1u);     // with its cursor and delivery record
  EXPECT_EQ(st->orphans.cursors, 0u);
  EXPECT_EQ(st->orphans.delivery_records, 0u);
  expect_live_state(*st);

  reopen();
  auto again = store_->recover();
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(again->orphans.total(), 0u);
  expect_live_state(*again);
  auto m9 = store_->read(9, 0, 10, 10);
  ASSERT_TRUE(m9.ok());
  EXPECT_TRUE(m9->empty());
  auto m10 = store_->read(10, 0, 10, 10);
  ASSERT_TRUE(m10.ok());
  EXPECT_TRUE(m10->empty());
}

TEST_F(OrphansTest, CleanStoreRemovesNothing) {
  write_live_state();
  reopen();
  auto st = store_->recover();
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(st->orphans.total(), 0u);
  expect_live_state(*st);
}

}  // namespace
}  // namespace witmq::storage
