// Values corrupted behind the store's back (written straight into RocksDB) must come back as
// kCorruption naming the key, from recover() and from read() and get(), never as a crash or a
// silently skipped record.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include "storage/codec.h"
#include "storage/store.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::StoreTest;

class CorruptionTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    WriteSet ws;
    ws.put_channel({1, "one", "{}"});
    ws.put_head(1, {0, 10});
    for (Seq s = 0; s < 10; ++s) ws.put_message(1, s, 1000 + s, make_message(s, 50, true));
    ws.put_subscription({2, 1, "sub", "{}"});
    ws.put_cursor(2, {0, 5});
    ws.put_delivery(2, 3, {DeliveryStatus::kReady, 1, 0});
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }

  // Closes the store, writes `value` under `key` in column family `cf` with RocksDB directly (the
  // same column families the store uses), and reopens the store.
  void inject(ColumnFamily cf, const std::string& key, const std::string& value) {
    store_.reset();
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
    for (auto name : kColumnFamilyNames) {
      descriptors.emplace_back(std::string(name), rocksdb::ColumnFamilyOptions());
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(rocksdb::DBOptions(), options_.path, descriptors, &handles, &raw);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::unique_ptr<rocksdb::DB> db(raw);
    s = db->Put(rocksdb::WriteOptions(), handles[1 + static_cast<size_t>(cf)], key, value);
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
    db.reset();
    open();
  }

  template <typename T>
  void expect_corruption(const Result<T>& r, std::string_view key_name) {
    ASSERT_FALSE(r.ok()) << "expected corruption naming " << key_name;
    EXPECT_EQ(r.error().code, ErrorCode::kCorruption) << r.error().to_string();
    EXPECT_NE(r.error().message.find(key_name), std::string::npos) << r.error().message;
  }
};

TEST_F(CorruptionTest, IntactStoreRecovers) {
  auto rec = store_->recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  EXPECT_EQ(rec->channels.size(), 1u);
  EXPECT_EQ(rec->subscriptions.size(), 1u);
}

TEST_F(CorruptionTest, MessageInTheMiddle) {
  std::string v = encode_message(1005, make_message(5, 50, true));
  v.resize(v.size() - 1);  // a torn value: the data is one byte short of its length
  inject(ColumnFamily::kMessages, message_key(1, 5), v);
  expect_corruption(store_->read(1, 0, 10, 100), "messages/ch=1/seq=5");
  expect_corruption(store_->get(1, 5), "messages/ch=1/seq=5");
  // Before the bad record everything still reads.
  auto head = store_->read(1, 0, 5, 100);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->size(), 5u);
  expect_corruption(store_->find_seq_by_time(1, 0, 10, 1005), "messages/ch=1/seq=5");
}

TEST_F(CorruptionTest, LastMessageFailsRecovery) {
  std::string v = encode_message(1009, make_message(9, 50));
  v[0] = 7;  // unknown version
  inject(ColumnFamily::kMessages, message_key(1, 9), v);
  expect_corruption(store_->recover(), "messages/ch=1/seq=9");
  expect_corruption(store_->read(1, 9, 10, 1), "messages/ch=1/seq=9");
}

TEST_F(CorruptionTest, MessageWithAMalformedKey) {
  inject(ColumnFamily::kMessages, message_key(1, 4) + "x", encode_message(1, make_message(1, 1)));
  expect_corruption(store_->read(1, 0, 10, 100), "key is 13 bytes");
}

TEST_F(CorruptionTest, ChannelRecord) {
  inject(ColumnFamily::kMeta, meta_key(kChannelTag, 1),
         std::string("\x01\x05\x00\x00\x00"
                     "ab",
                     7));
  expect_corruption(store_->recover(), "meta/channel=1");
}

TEST_F(CorruptionTest, HeadRecord) {
  inject(ColumnFamily::kMeta, meta_key(kHeadTag, 1), encode_head({0, 10}).substr(0, 10));
  expect_corruption(store_->recover(), "meta/head=1");
}

TEST_F(CorruptionTest, SubscriptionRecord) {
  inject(ColumnFamily::kMeta, meta_key(kSubscriptionTag, 2), "");
  expect_corruption(store_->recover(), "meta/subscription=2");
}

TEST_F(CorruptionTest, CursorRecord) {
  inject(ColumnFamily::kMeta, meta_key(kCursorTag, 2), encode_cursor({0, 5}) + "extra");
  expect_corruption(store_->recover(), "meta/cursor=2");
}

TEST_F(CorruptionTest, DeliveryRecord) {
  std::string v = encode_delivery({DeliveryStatus::kReady, 1, 0});
  v[1] = 42;  // no such status
  inject(ColumnFamily::kDelivery, delivery_key(2, 3), v);
  expect_corruption(store_->recover(), "delivery/sub=2/seq=3");
}

TEST_F(CorruptionTest, UnknownMetaKey) {
  inject(ColumnFamily::kMeta, std::string("Q\x00\x00\x00\x01", 5), "whatever");
  expect_corruption(store_->recover(), "meta/0x5100000001");
}

}  // namespace
}  // namespace witmq::storage
