// Store round trips: commit then read, get, range deletes, recovery, time search, sizes and
// checkpoints, each against a real RocksDB in a temporary directory.
#include "storage/store.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <thread>

#include "storage/small_files.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::StoreTest;

constexpr int64_t kTime0 = 1'700'000'000'000;

// Commits messages [from, to) of `ch` (message i built from seed ch * 1'000'000 + i, published at
// kTime0 + 10 * i) and the head {0, to}, in one kGroup write.
void append(Store& store, ChannelId ch, Seq from, Seq to, size_t size = 100) {
  WriteSet ws;
  for (Seq s = from; s < to; ++s) {
    ws.put_message(ch, s, kTime0 + 10 * static_cast<int64_t>(s),
                   make_message(ch * 1'000'000 + s, size, s % 2 == 0));
  }
  ws.put_head(ch, {0, to});
  auto st = store.commit_and_wait(std::move(ws), Durability::kGroup);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
}

std::vector<Seq> seqs(const Result<std::vector<StoredMessage>>& r) {
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  std::vector<Seq> out;
  if (r.ok()) {
    for (const auto& m : *r) out.push_back(m.seq);
  }
  return out;
}

std::vector<Seq> range(Seq from, Seq to) {
  std::vector<Seq> out;
  for (Seq s = from; s < to; ++s) out.push_back(s);
  return out;
}

Status commit(Store& store, WriteSet ws) {
  return store.commit_and_wait(std::move(ws), Durability::kGroup);
}

TEST_F(StoreTest, CommitThenReadAndGet) {
  append(*store_, 1, 0, 10);
  auto all = store_->read(1, 0, 10, 100);
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  ASSERT_EQ(all->size(), 10u);
  for (Seq s = 0; s < 10; ++s) {
    const auto& m = (*all)[s];
    EXPECT_EQ(m.seq, s);
    EXPECT_EQ(m.publish_time_ms, kTime0 + 10 * static_cast<int64_t>(s));
    EXPECT_EQ(m.message, make_message(1'000'000 + s, 100, s % 2 == 0));
  }
  EXPECT_EQ(seqs(store_->read(1, 0, 10, 3)), range(0, 3));
  EXPECT_EQ(seqs(store_->read(1, 5, 8, 100)), range(5, 8));
  EXPECT_EQ(seqs(store_->read(1, 8, 100, 100)), range(8, 10));
  EXPECT_EQ(seqs(store_->read(1, 10, 20, 100)), range(0, 0));
  EXPECT_EQ(seqs(store_->read(1, 5, 5, 100)), range(0, 0));
  EXPECT_EQ(seqs(store_->read(1, 0, 10, 0)), range(0, 0));
  // max_bytes counts data bytes: 100 per message here.
  EXPECT_EQ(seqs(store_->read(1, 0, 10, 100, 250)), range(0, 2));
  EXPECT_EQ(seqs(store_->read(1, 0, 10, 100, 300)), range(0, 3));
  EXPECT_EQ(seqs(store_->read(1, 4, 10, 100, 1)), range(4, 5)) << "always at least one";

  auto got = store_->get(1, 5);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->seq, 5u);
  EXPECT_EQ((*got)->message, make_message(1'000'005, 100, false));
  auto missing = store_->get(1, 10);
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  auto other = store_->get(2, 5);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
}

TEST_F(StoreTest, ReadsStayInsideTheirChannel) {
  append(*store_, 1, 0, 5);
  append(*store_, 2, 0, 5);
  append(*store_, 3, 0, 5);
  auto r = store_->read(2, 0, UINT64_MAX, 100);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 5u);
  for (const auto& m : *r)
    EXPECT_EQ(m.message, make_message(2'000'000 + m.seq, 100, m.seq % 2 == 0));
}

TEST_F(StoreTest, DeleteMessagesRemovesExactlyTheRange) {
  append(*store_, 1, 0, 10);
  append(*store_, 2, 0, 10);
  WriteSet ws;
  ws.delete_messages(1, 3, 7);
  ws.delete_messages(1, 9, 9);  // empty: nothing
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
  EXPECT_EQ(seqs(store_->read(1, 0, 100, 100)), (std::vector<Seq>{0, 1, 2, 7, 8, 9}));
  EXPECT_EQ(seqs(store_->read(2, 0, 100, 100)), range(0, 10));
  reopen();  // the tombstones survive a restart (and a flush)
  EXPECT_EQ(seqs(store_->read(1, 0, 100, 100)), (std::vector<Seq>{0, 1, 2, 7, 8, 9}));
  EXPECT_EQ(seqs(store_->read(2, 0, 100, 100)), range(0, 10));
}

TEST_F(StoreTest, DeleteChannelRemovesExactlyItsRecords) {
  for (ChannelId ch : {1u, 2u}) {
    WriteSet ws;
    ws.put_channel({ch, fmt::format("ch{}", ch), "{}"});
    ws.put_message(ch, UINT64_MAX - 1, kTime0, make_message(ch, 10));
    ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
    append(*store_, ch, 0, 10);
  }
  WriteSet ws;
  ws.delete_channel(1);
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());

  EXPECT_EQ(seqs(store_->read(1, 0, UINT64_MAX, 100)), range(0, 0));
  EXPECT_FALSE(store_->get(1, UINT64_MAX - 1)->has_value());
  auto two = store_->read(2, 0, UINT64_MAX, 100);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 11u);
  EXPECT_TRUE(store_->get(2, UINT64_MAX - 1)->has_value());

  reopen();
  auto rec = store_->recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  ASSERT_EQ(rec->channels.size(), 1u);
  EXPECT_EQ(rec->channels[0].def.id, 2u);
  EXPECT_EQ(rec->channels[0].def.name, "ch2");
  EXPECT_EQ(rec->channels[0].head.next, UINT64_MAX) << "raised past the message at MAX - 1";
}

TEST_F(StoreTest, DeleteSubscriptionRemovesExactlyItsRecords) {
  for (SubscriptionId sub : {1u, 2u}) {
    WriteSet ws;
    ws.put_subscription({sub, 9, fmt::format("sub{}", sub), "{}"});
    ws.put_cursor(sub, {sub * 10, sub * 10 + 5});
    for (Seq s = 0; s < 5; ++s) ws.put_delivery(sub, s, {DeliveryStatus::kReady, 1, 0});
    ws.put_delivery(sub, UINT64_MAX, {DeliveryStatus::kAcquired, 2, 0});
    ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
  }
  WriteSet ws;
  ws.put_channel({9, "nine", "{}"});
  ws.delete_subscription(1);
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());

  auto rec = store_->recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  ASSERT_EQ(rec->subscriptions.size(), 1u);
  const auto& s = rec->subscriptions[0];
  EXPECT_EQ(s.def.id, 2u);
  EXPECT_EQ(s.def.channel, 9u);
  EXPECT_EQ(s.def.name, "sub2");
  EXPECT_EQ(s.cursor.floor, 20u);
  EXPECT_EQ(s.cursor.next, 25u);
  ASSERT_EQ(s.deliveries.size(), 6u);
  EXPECT_EQ(s.deliveries.back().first, UINT64_MAX);
  EXPECT_EQ(s.deliveries.back().second.status, DeliveryStatus::kAcquired);
}

TEST_F(StoreTest, DeliveryPutDeleteAndRangeDelete) {
  WriteSet ws;
  ws.put_subscription({4, 1, "s", ""});
  ws.put_channel({1, "c", ""});
  for (Seq s = 0; s < 10; ++s) {
    ws.put_delivery(4, s, {DeliveryStatus::kReady, static_cast<uint32_t>(s), 1000 + int64_t(s)});
  }
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
  WriteSet del;
  del.delete_delivery(4, 0);
  del.delete_deliveries(4, 3, 6);
  del.put_delivery(4, 8, {DeliveryStatus::kAccepted, 9, 0});  // overwrite
  ASSERT_TRUE(commit(*store_, std::move(del)).ok());

  reopen();
  auto rec = store_->recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  ASSERT_EQ(rec->subscriptions.size(), 1u);
  std::vector<Seq> got;
  for (const auto& [seq, d] : rec->subscriptions[0].deliveries) {
    got.push_back(seq);
    EXPECT_EQ(d.attempts, seq == 8 ? 9u : seq);
    EXPECT_EQ(d.status, seq == 8 ? DeliveryStatus::kAccepted : DeliveryStatus::kReady);
  }
  EXPECT_EQ(got, (std::vector<Seq>{1, 2, 6, 7, 8, 9}));
}

TEST_F(StoreTest, RecoverReturnsEverythingSortedById) {
  WriteSet ws;
  for (ChannelId ch : {30u, 10u, 20u}) {
    ws.put_channel({ch, fmt::format("c{}", ch), fmt::format("cfg{}", ch)});
    ws.put_head(ch, {ch, ch + 100});
  }
  for (SubscriptionId sub : {300u, 100u, 200u}) {
    ws.put_subscription({sub, sub / 10, fmt::format("s{}", sub), ""});
    ws.put_cursor(sub, {sub, sub + 1});
    ws.put_delivery(sub, sub + 5, {DeliveryStatus::kAcquired, 3, 0});
    ws.put_delivery(sub, sub + 2, {DeliveryStatus::kReady, 1, 77});
  }
  ws.put_subscription({400, 10, "no-cursor", ""});
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
  reopen();

  auto rec = store_->recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  ASSERT_EQ(rec->channels.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    ChannelId id = static_cast<ChannelId>(10 * (i + 1));
    EXPECT_EQ(rec->channels[i].def.id, id);
    EXPECT_EQ(rec->channels[i].def.config, fmt::format("cfg{}", id));
    EXPECT_EQ(rec->channels[i].head.first, id);
    EXPECT_EQ(rec->channels[i].head.next, id + 100);
  }
  ASSERT_EQ(rec->subscriptions.size(), 4u);
  for (size_t i = 0; i < 3; ++i) {
    SubscriptionId id = static_cast<SubscriptionId>(100 * (i + 1));
    const auto& s = rec->subscriptions[i];
    EXPECT_EQ(s.def.id, id);
    EXPECT_EQ(s.def.channel, id / 10);
    EXPECT_EQ(s.cursor.floor, id);
    EXPECT_EQ(s.cursor.next, id + 1);
    ASSERT_EQ(s.deliveries.size(), 2u);
    EXPECT_EQ(s.deliveries[0].first, id + 2);
    EXPECT_EQ(s.deliveries[0].second.not_before_ms, 77);
    EXPECT_EQ(s.deliveries[1].first, id + 5);
  }
  EXPECT_EQ(rec->subscriptions[3].def.name, "no-cursor");
  EXPECT_EQ(rec->subscriptions[3].cursor.next, 0u);
  EXPECT_TRUE(rec->subscriptions[3].deliveries.empty());
}

TEST_F(StoreTest, RecoverNeverLeavesHeadBelowStoredMessages) {
  WriteSet ws;
  for (ChannelId ch : {1u, 2u, 3u, 4u}) ws.put_channel({ch, "c", ""});
  ws.put_head(1, {0, 5});    // behind: messages up to 9 were written later
  ws.put_head(3, {0, 100});  // ahead of everything stored: kept
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
  for (ChannelId ch : {1u, 2u}) {
    WriteSet m;
    for (Seq s = 3; s < 10; ++s) m.put_message(ch, s, kTime0, make_message(s, 8));
    ASSERT_TRUE(commit(*store_, std::move(m)).ok());
  }
  reopen();
  auto rec = store_->recover();
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  ASSERT_EQ(rec->channels.size(), 4u);
  EXPECT_EQ(rec->channels[0].head.first, 0u);
  EXPECT_EQ(rec->channels[0].head.next, 10u);
  // No head record: derived from the stored messages.
  EXPECT_EQ(rec->channels[1].head.first, 3u);
  EXPECT_EQ(rec->channels[1].head.next, 10u);
  EXPECT_EQ(rec->channels[2].head.next, 100u);
  // Neither head nor messages.
  EXPECT_EQ(rec->channels[3].head.first, 0u);
  EXPECT_EQ(rec->channels[3].head.next, 0u);
}

// A record without its definition is what a crash or a race with a deletion leaves: recover()
// removes it and counts it (orphans_test.cc has the details) instead of refusing to start.
TEST_F(StoreTest, RecoverRemovesRecordsWithoutTheirDefinition) {
  struct Case {
    std::function<void(WriteSet&)> write;
    std::function<uint64_t(const RecoveryOrphans&)> count;
  };
  std::vector<Case> cases = {
      {[](WriteSet& ws) {
         ws.put_head(5, {0, 1});
       },
       [](const RecoveryOrphans& o) { return o.heads; }},
      {[](WriteSet& ws) {
         ws.put_cursor(6, {0, 1});
       },
       [](const RecoveryOrphans& o) { return o.cursors; }},
      {[](WriteSet& ws) { ws.put_delivery(7, 3, {}); },
       [](const RecoveryOrphans& o) { return o.delivery_records; }},
  };
  for (const auto& c : cases) {
    WriteSet ws;
    c.write(ws);
    ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
    auto rec = store_->recover();
    ASSERT_TRUE(rec.ok()) << rec.error().to_string();
    EXPECT_EQ(c.count(rec->orphans), 1u);
    EXPECT_EQ(rec->orphans.total(), 1u);
    auto again = store_->recover();
    ASSERT_TRUE(again.ok()) << again.error().to_string();
    EXPECT_EQ(again->orphans.total(), 0u);
  }
}

TEST_F(StoreTest, FindSeqByTime) {
  append(*store_, 1, 0, 100);  // seq s published at kTime0 + 10 s
  append(*store_, 2, 0, 100);
  auto find = [&](Seq from, Seq to, int64_t t) {
    auto r = store_->find_seq_by_time(1, from, to, kTime0 + t);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r.ok() ? *r : Seq(-1);
  };
  EXPECT_EQ(find(0, 100, -1000), 0u);
  EXPECT_EQ(find(0, 100, 0), 0u);
  EXPECT_EQ(find(0, 100, 1), 1u);
  EXPECT_EQ(find(0, 100, 500), 50u);
  EXPECT_EQ(find(0, 100, 505), 51u);
  EXPECT_EQ(find(0, 100, 990), 99u);
  EXPECT_EQ(find(0, 100, 991), 100u) << "none: `to`";
  EXPECT_EQ(find(60, 70, 0), 60u);
  EXPECT_EQ(find(60, 70, 800), 70u);
  EXPECT_EQ(find(0, 1000, 2000), 1000u);
  EXPECT_EQ(find(5, 5, 0), 5u);

  WriteSet ws;
  ws.delete_messages(1, 20, 50);
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
  EXPECT_EQ(find(0, 100, 250), 50u) << "skips the deleted gap";
  EXPECT_EQ(find(0, 100, 150), 15u);
  EXPECT_EQ(find(25, 45, 0), 45u) << "nothing stored in range";

  auto empty = store_->find_seq_by_time(3, 0, 10, kTime0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, 10u);
}

TEST_F(StoreTest, ApproximateBytesCountsMemtablesAndFiles) {
  append(*store_, 1, 0, 1000, 1024);
  uint64_t in_memory = store_->approximate_bytes(1, 0, 1000);
  // RocksDB estimates a memtable range from its skiplist's random levels: seen from 420 KiB to
  // over 1 MiB for these 1000 KiB. Zero would mean memtables are not counted at all.
  EXPECT_GT(in_memory, 200u * 1024) << "memtable estimate";
  EXPECT_LT(in_memory, 4u * 1024 * 1024);
  EXPECT_EQ(store_->approximate_bytes(1, 5, 5), 0u);
  reopen();  // close() flushes: now the data is in SST files
  uint64_t on_disk = store_->approximate_bytes(1, 0, 1000);
  EXPECT_GT(on_disk, 500u * 1024) << "file estimate";
  EXPECT_LT(store_->approximate_bytes(2, 0, 1000), 64u * 1024);
}

TEST_F(StoreTest, CheckpointIsAnOpenableCopy) {
  append(*store_, 1, 0, 50);
  WriteSet ws;
  ws.put_channel({1, "c", "x"});
  ASSERT_TRUE(commit(*store_, std::move(ws)).ok());
  std::string cp = dir_.sub("checkpoint");
  auto st = store_->checkpoint(cp);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  append(*store_, 1, 50, 60);  // after the checkpoint: not in it

  auto again = store_->checkpoint(cp);
  EXPECT_FALSE(again.ok()) << "the directory exists";

  StoreOptions options;
  options.path = cp;
  auto copy = Store::open(options);
  ASSERT_TRUE(copy.ok()) << copy.error().to_string();
  EXPECT_EQ(seqs((*copy)->read(1, 0, 100, 100)), range(0, 50));
  auto rec = (*copy)->recover();
  ASSERT_TRUE(rec.ok());
  ASSERT_EQ(rec->channels.size(), 1u);
  EXPECT_EQ(rec->channels[0].head.next, 50u);
}

// The meta column family gets a small head record with every append and so fills its memtable
// slowly; the WAL must not grow without bound waiting for it.
TEST_F(StoreTest, WalStaysBoundedWhileMetaIsWrittenSlowly) {
  options_.write_buffer_size = 1 << 20;
  reopen();
  constexpr Seq kBatches = 2000;  // 2000 x 20 x 1 KiB: 40 MiB of messages, 2000 head records
  Seq next = 0;
  for (Seq b = 0; b < kBatches; ++b) {
    WriteSet ws;
    for (int i = 0; i < 20; ++i, ++next) ws.put_message(1, next, kTime0, make_message(next, 1024));
    ws.put_head(1, {0, next});
    store_->commit(std::move(ws), Durability::kNone, nullptr);
  }
  ASSERT_TRUE(store_->commit_and_wait(WriteSet(), Durability::kNone).ok());
  auto wal_bytes = [&] {
    uint64_t total = 0;
    std::error_code ec;  // files may vanish while we list them: RocksDB purges in the background
    for (const auto& e : std::filesystem::directory_iterator(options_.path, ec)) {
      if (e.path().extension() != ".log") continue;
      uintmax_t size = e.file_size(ec);
      if (!ec) total += size;
    }
    return total;
  };
  // Flushes and WAL purges run in the background and the cap is only checked as writes arrive, so
  // the total settles somewhere above the 4 MiB cap; without the cap it stays at the 40 MiB
  // written. Give the background work a moment, bounded.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  uint64_t bytes = wal_bytes();
  while (bytes >= (16u << 20) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    bytes = wal_bytes();
  }
  EXPECT_LT(bytes, 16u << 20) << "WAL files total " << bytes << " bytes";
  EXPECT_EQ(store_->read(1, 0, next, SIZE_MAX)->size(), next);
}

TEST(StoreOpen, RefusesAnEmptyPathAndAnUnusablePath) {
  auto empty = Store::open(StoreOptions{});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidArgument);

  testing::TempDir dir;
  std::string file = dir.sub("file");
  FILE* f = fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  StoreOptions options;
  options.path = file + "/db";  // below a regular file
  auto bad = Store::open(options);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find(options.path), std::string::npos) << bad.error().message;
}

// Delivery records arrive in key order and are deleted from the front: each flush of their column
// family writes a small file that overlaps no other, which RocksDB moves down whole and never
// merges. Before, every flush left one more table file (and its descriptor) for good: 40 here,
// 4 now that the small files are merged once there are more than SmallFileMerger::kMaxFiles.
TEST_F(StoreTest, SmallFilesOfKeyOrderedWritesDoNotAccumulate) {
  options_.write_buffer_size = 1 << 20;
  reopen();
  auto sst_files = [&] {
    size_t n = 0;
    std::error_code ec;  // files may vanish while we list them
    for (const auto& e : std::filesystem::directory_iterator(options_.path, ec)) {
      if (e.path().extension() == ".sst") ++n;
    }
    return n;
  };
  // 150 rounds, each about 4 MiB of messages (the WAL cap flushes every column family) with
  // delivery records, each deleted soon after it was written.
  Seq next = 0;
  for (int round = 0; round < 150; ++round) {
    for (int b = 0; b < 4; ++b) {
      WriteSet ws;
      for (int i = 0; i < 16; ++i, ++next) {
        ws.put_message(1, next, kTime0, make_message(next, 16 << 10));
        // A record written (a failed attempt, say) and deleted (settled) soon after.
        ws.put_delivery(7, next, DeliveryRecord{});
        ws.delete_delivery(7, next);
      }
      ws.delete_messages(1, 0, next - 8);
      store_->commit(std::move(ws), Durability::kNone, nullptr);
    }
    ASSERT_TRUE(store_->commit_and_wait(WriteSet(), Durability::kNone).ok());
  }
  // Merges run in the background after flushes: give them a moment, bounded.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  size_t files = sst_files();
  while (files > 2 * SmallFileMerger::kMaxFiles && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    files = sst_files();
  }
  std::cout << "table files: " << files << "\n";
  EXPECT_LE(files, 2 * SmallFileMerger::kMaxFiles) << "table files in the data directory";
}

}  // namespace
}  // namespace witmq::storage
