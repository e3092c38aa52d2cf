// The commit path: group commit from many threads, which requests may share a write and a sync,
// callback order, and what close() does with queued and late commits.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "storage/store.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::Countdown;
using testing::make_message;
using testing::StoreTest;

constexpr int64_t kTime0 = 1'700'000'000'000;

WriteSet one_message(ChannelId ch, Seq seq, size_t size = 64) {
  WriteSet ws;
  ws.put_message(ch, seq, kTime0, make_message(ch * 1'000'000 + seq, size));
  ws.put_head(ch, {0, seq + 1});
  return ws;
}

void expect_channel(Store& store, ChannelId ch, Seq count, size_t size = 64) {
  auto r = store.read(ch, 0, UINT64_MAX, SIZE_MAX);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), count) << "channel " << ch;
  for (Seq s = 0; s < count; ++s) {
    ASSERT_EQ((*r)[s].seq, s);
    ASSERT_EQ((*r)[s].message, make_message(ch * 1'000'000 + s, size)) << ch << "/" << s;
  }
}

TEST_F(StoreTest, GroupCommitFromManyThreads) {
  constexpr int kThreads = 8;
  constexpr Seq kPerThread = 2000;
  Countdown all(kThreads * kPerThread);
  std::mutex mu;
  std::vector<std::vector<Seq>> order(kThreads);  // callback order, per producer
  std::atomic<int> failures{0};
  uint64_t bytes = 0;
  std::mutex bytes_mu;

  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      uint64_t mine = 0;
      for (Seq i = 0; i < kPerThread; ++i) {
        WriteSet ws = one_message(static_cast<ChannelId>(t + 1), i);
        mine += ws.bytes();
        store_->commit(std::move(ws), Durability::kGroup, [&, t, i](Status s) {
          if (!s.ok()) failures++;
          {
            std::lock_guard lock(mu);
            order[t].push_back(i);
          }
          all.done();
        });
      }
      std::lock_guard lock(bytes_mu);
      bytes += mine;
    });
  }
  for (auto& p : producers) p.join();
  ASSERT_TRUE(all.wait()) << "callbacks missing";

  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(order[t].size(), kPerThread) << "each callback exactly once";
    for (Seq i = 0; i < kPerThread; ++i) ASSERT_EQ(order[t][i], i) << "submission order";
  }
  StoreStats st = store_->stats();
  EXPECT_EQ(st.commits, kThreads * kPerThread);
  EXPECT_EQ(st.bytes_written, bytes);
  EXPECT_EQ(st.syncs, st.writes) << "every kGroup write is synced";
  EXPECT_LT(st.syncs, st.commits / 4) << "group commit merged requests";
  EXPECT_GT(st.max_requests_per_write, 1u);
  for (int t = 0; t < kThreads; ++t)
    expect_channel(*store_, static_cast<ChannelId>(t + 1), kPerThread);
}

// Submits a deterministic mix of durabilities from one thread without waiting, so requests queue
// up behind each write's fsync, and checks from inside each callback which requests shared a
// write: those that see the same stats().commits. Checks that a kSync request is always alone, a
// group syncs iff any member asked for it, callbacks run in submission order, and each callback
// already sees its own write.
TEST_F(StoreTest, MergedWritesRespectEveryMembersDurability) {
  constexpr Seq kCount = 3000;
  struct Seen {
    Seq index;
    uint64_t commits, syncs;
    bool readable;
  };
  std::vector<Seen> seen;
  std::vector<Durability> durability(kCount);
  Countdown all(kCount);
  uint32_t x = 12345;
  for (Seq i = 0; i < kCount; ++i) {
    x = x * 1103515245 + 12345;
    uint32_t r = (x >> 16) % 100;
    durability[i] = r < 5 ? Durability::kSync : r < 50 ? Durability::kGroup : Durability::kNone;
    store_->commit(one_message(1, i), durability[i], [&, i](Status s) {
      EXPECT_TRUE(s.ok());
      auto got = store_->get(1, i);
      StoreStats st = store_->stats();
      seen.push_back({i, st.commits, st.syncs, got.ok() && got->has_value()});
      all.done();
    });
  }
  ASSERT_TRUE(all.wait());
  ASSERT_EQ(seen.size(), kCount);

  std::map<uint64_t, std::vector<Seq>> groups;  // stats().commits after the write -> members
  std::map<uint64_t, uint64_t> syncs_after;
  for (Seq i = 0; i < kCount; ++i) {
    ASSERT_EQ(seen[i].index, i) << "callbacks in submission order";
    EXPECT_TRUE(seen[i].readable) << "a callback sees its own write";
    groups[seen[i].commits].push_back(i);
    syncs_after[seen[i].commits] = seen[i].syncs;
  }
  uint64_t prev_commits = 0, prev_syncs = 0;
  size_t merged = 0;
  for (const auto& [commits, members] : groups) {
    ASSERT_EQ(commits - prev_commits, members.size()) << "groups are contiguous runs";
    bool needs_sync = false;
    for (Seq i : members) {
      if (durability[i] == Durability::kSync) {
        EXPECT_EQ(members.size(), 1u) << "kSync request " << i << " shared a write";
      }
      needs_sync = needs_sync || durability[i] != Durability::kNone;
    }
    EXPECT_EQ(syncs_after[commits] - prev_syncs, needs_sync ? 1u : 0u)
        << "group ending " << commits;
    if (members.size() > 1) merged++;
    prev_commits = commits;
    prev_syncs = syncs_after[commits];
  }
  EXPECT_GT(merged, 0u) << "nothing was merged";
  StoreStats st = store_->stats();
  EXPECT_EQ(st.writes, groups.size());
  expect_channel(*store_, 1, kCount);
}

TEST_F(StoreTest, SyncRequestsAreNeverMerged) {
  constexpr int kThreads = 2;
  constexpr Seq kPerThread = 150;
  Countdown all(kThreads * kPerThread);
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (Seq i = 0; i < kPerThread; ++i) {
        store_->commit(one_message(static_cast<ChannelId>(t + 1), i), Durability::kSync,
                       [&](Status s) {
                         EXPECT_TRUE(s.ok());
                         all.done();
                       });
      }
    });
  }
  for (auto& p : producers) p.join();
  ASSERT_TRUE(all.wait());
  StoreStats st = store_->stats();
  EXPECT_EQ(st.commits, kThreads * kPerThread);
  EXPECT_EQ(st.writes, st.commits);
  EXPECT_EQ(st.syncs, st.commits);
  EXPECT_EQ(st.max_requests_per_write, 1u);
  EXPECT_GT(st.sync_micros_total, 0u);
}

TEST_F(StoreTest, NoneNeverSyncs) {
  constexpr Seq kCount = 5000;
  Countdown all(kCount);
  for (Seq i = 0; i < kCount; ++i) {
    store_->commit(one_message(1, i), Durability::kNone, [&](Status s) {
      EXPECT_TRUE(s.ok());
      all.done();
    });
  }
  ASSERT_TRUE(all.wait());
  StoreStats st = store_->stats();
  EXPECT_EQ(st.commits, kCount);
  EXPECT_EQ(st.syncs, 0u);
  EXPECT_EQ(st.sync_micros_total, 0u);
  EXPECT_LE(st.writes, kCount);
  expect_channel(*store_, 1, kCount);
}

TEST_F(StoreTest, MaxCommitBytesBoundsMerges) {
  WriteSet probe = one_message(1, 0);
  options_.max_commit_bytes = 4 * probe.bytes();
  reopen();
  constexpr Seq kCount = 2000;
  Countdown all(kCount);
  for (Seq i = 0; i < kCount; ++i) {
    store_->commit(one_message(1, i), Durability::kGroup, [&](Status) { all.done(); });
  }
  ASSERT_TRUE(all.wait());
  StoreStats st = store_->stats();
  EXPECT_LE(st.max_requests_per_write, 4u);
  EXPECT_GE(st.writes, kCount / 4);

  // A request larger than the limit is still written, alone.
  options_.max_commit_bytes = 1;
  reopen();
  ASSERT_TRUE(store_->commit_and_wait(one_message(2, 0), Durability::kGroup).ok());
  expect_channel(*store_, 2, 1);
}

// Unlogged requests (WriteSet::set_unlogged) never share a write with logged ones, so a logged
// write always has its WAL record; consecutive unlogged ones still share one.
TEST_F(StoreTest, UnloggedAndLoggedRequestsAreWrittenApart) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  const StoreStats before = store_->stats();
  // The first request's callback holds the commit thread while the others queue up.
  store_->commit(one_message(1, 0), Durability::kNone, [&](Status) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
  });
  Countdown all(5);
  auto ok = [&](Status s) {
    EXPECT_TRUE(s.ok());
    all.done();
  };
  auto unlogged = [](Seq seq) {
    WriteSet ws = one_message(1, seq);
    ws.set_unlogged();
    return ws;
  };
  store_->commit(unlogged(1), Durability::kNone, ok);
  store_->commit(unlogged(2), Durability::kNone, ok);
  store_->commit(one_message(1, 3), Durability::kNone, ok);
  store_->commit(unlogged(4), Durability::kNone, ok);
  // Unlogged is for kNone only: a kGroup request is logged and synced whatever its WriteSet says.
  store_->commit(unlogged(5), Durability::kGroup, ok);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(all.wait());
  StoreStats st = store_->stats();
  // [0] logged, [1, 2] unlogged, [3] logged, [4] unlogged, [5] logged (and synced).
  EXPECT_EQ(st.writes - before.writes, 5u);
  EXPECT_EQ(st.syncs - before.syncs, 1u);
  // close() flushes, so the unlogged writes are there after a reopen.
  reopen();
  expect_channel(*store_, 1, 6);
}

// Requests merged into one write, with every kind of write in every column family, are stored
// exactly: the commit thread hands WriteSets to RocksDB in its serialized form (store.cc), so the
// records' types, column family ids and lengths (1, 2 and 3-byte varints) must be RocksDB's.
void commit_mixed_group_and_check(std::unique_ptr<Store>& store,
                                  const std::function<void()>& reopen) {
  std::mutex mu;
  std::condition_variable cv;
  bool holding = false, release = false;
  const StoreStats before = store->stats();
  // The first request's callback holds the commit thread while the others queue up.
  WriteSet hold;
  hold.put_channel({2, "hold", "{}"});
  store->commit(std::move(hold), Durability::kNone, [&](Status) {
    std::unique_lock lock(mu);
    holding = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return holding; }));
  }
  const size_t sizes[] = {0, 10, 200, 20'000, 70'000, 64};
  Countdown all(3);
  auto ok = [&](Status s) {
    EXPECT_TRUE(s.ok()) << s.error().to_string();
    all.done();
  };
  WriteSet defs;
  defs.put_channel({1, std::string(300, 'c'), "{}"});
  for (Seq i = 0; i < 6; ++i) {
    defs.put_message(1, i, kTime0 + static_cast<int64_t>(i),
                     testing::make_message(i, sizes[i], /*with_metadata=*/i % 2 == 1));
  }
  defs.put_head(1, {0, 6});
  store->commit(std::move(defs), Durability::kNone, ok);
  WriteSet subs;
  subs.put_subscription({7, 1, "s", "{}"});
  subs.put_cursor(7, {1, 5});
  for (Seq i = 0; i < 5; ++i) subs.put_delivery(7, i, {DeliveryStatus::kAcquired, 1, 0});
  subs.delete_delivery(7, 1);
  subs.delete_deliveries(7, 2, 4);
  store->commit(std::move(subs), Durability::kNone, ok);
  WriteSet trim;
  trim.delete_messages(1, 0, 2);
  trim.put_message(1, 6, kTime0, testing::make_message(6, 300));
  trim.put_head(1, {2, 7});
  store->commit(std::move(trim), Durability::kNone, ok);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(all.wait());
  const StoreStats st = store->stats();
  EXPECT_EQ(st.writes - before.writes, 2u) << "the three requests were not merged";

  auto check = [&] {
    auto r = store->read(1, 0, UINT64_MAX, SIZE_MAX);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ASSERT_EQ(r->size(), 5u);
    for (Seq i = 2; i < 7; ++i) {
      const auto& got = (*r)[i - 2];
      EXPECT_EQ(got.seq, i);
      EXPECT_EQ(got.message, i < 6 ? testing::make_message(i, sizes[i], i % 2 == 1)
                                   : testing::make_message(6, 300));
    }
    auto rec = store->recover();
    ASSERT_TRUE(rec.ok()) << rec.error().to_string();
    ASSERT_EQ(rec->channels.size(), 2u);  // 1, and 2 of the holding request
    const auto& ch = rec->channels[0];
    EXPECT_EQ(ch.def.name, std::string(300, 'c'));
    EXPECT_EQ(ch.head.first, 2u);
    EXPECT_EQ(ch.head.next, 7u);
    ASSERT_EQ(rec->subscriptions.size(), 1u);
    const auto& sub = rec->subscriptions[0];
    EXPECT_EQ(sub.def.name, "s");
    EXPECT_EQ(sub.cursor.floor, 1u);
    EXPECT_EQ(sub.cursor.next, 5u);
    ASSERT_EQ(sub.deliveries.size(), 2u);
    EXPECT_EQ(sub.deliveries[0].first, 0u);
    EXPECT_EQ(sub.deliveries[1].first, 4u);
  };
  check();
  reopen();
  check();
}

TEST_F(StoreTest, AMergedGroupOfEveryKindOfWriteIsStoredExactly) {
  commit_mixed_group_and_check(store_, [&] { reopen(); });
}

// A database whose column families RocksDB numbered otherwise (created in another order) is
// written write by write, into the right column families.
TEST_F(StoreTest, ColumnFamiliesNumberedOtherwiseAreStillWrittenRight) {
  store_.reset();
  std::filesystem::remove_all(options_.path);
  {
    rocksdb::DBOptions o;
    o.create_if_missing = true;
    o.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {"meta", {}}, {"delivery", {}}, {"messages", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, options_.path, cfs, &handles, &db).ok());
    ASSERT_EQ(handles[3]->GetID(), 3u);  // messages: 3 here, 1 in a database witmq created
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    delete db;
  }
  open();
  commit_mixed_group_and_check(store_, [&] { reopen(); });
}

TEST_F(StoreTest, CallbackMayCommitAgain) {
  Countdown all(2);
  store_->commit(one_message(1, 0), Durability::kGroup, [&](Status s) {
    EXPECT_TRUE(s.ok());
    store_->commit(one_message(1, 1), Durability::kNone, [&](Status s2) {
      EXPECT_TRUE(s2.ok());
      all.done();
    });
    all.done();
  });
  ASSERT_TRUE(all.wait());
  expect_channel(*store_, 1, 2);
}

TEST_F(StoreTest, CommitAndWaitFromACallbackIsRefusedNotDeadlocked) {
  Countdown done(1);
  store_->commit(one_message(1, 0), Durability::kNone, [&](Status) {
    auto s = store_->commit_and_wait(one_message(1, 1), Durability::kNone);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kFailedPrecondition);
    done.done();
  });
  ASSERT_TRUE(done.wait());
  expect_channel(*store_, 1, 1);
}

TEST_F(StoreTest, CloseDrainsQueuedCommitsAndRefusesLaterOnes) {
  constexpr Seq kCount = 3000;
  std::atomic<Seq> ok{0};
  for (Seq i = 0; i < kCount; ++i) {
    store_->commit(one_message(1, i), i % 2 ? Durability::kGroup : Durability::kNone,
                   [&](Status s) {
                     if (s.ok()) ok++;
                   });
  }
  store_->close();
  EXPECT_EQ(ok.load(), kCount) << "close() returns after every queued callback ran";

  bool called = false;
  store_->commit(one_message(1, kCount), Durability::kGroup, [&](Status s) {
    called = true;
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
  });
  EXPECT_TRUE(called) << "refused at once, not queued";
  auto waited = store_->commit_and_wait(one_message(1, kCount), Durability::kSync);
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.error().code, ErrorCode::kUnavailable);
  store_->close();  // idempotent

  // Reads still work on a closed store; a reopened one has everything.
  expect_channel(*store_, 1, kCount);
  reopen();
  expect_channel(*store_, 1, kCount);
}

TEST_F(StoreTest, DestructorDrainsQueuedCommits) {
  constexpr Seq kCount = 2000;
  std::atomic<Seq> ok{0};
  for (Seq i = 0; i < kCount; ++i) {
    store_->commit(one_message(1, i), Durability::kGroup, [&](Status s) {
      if (s.ok()) ok++;
    });
  }
  store_.reset();
  EXPECT_EQ(ok.load(), kCount);
  open();
  expect_channel(*store_, 1, kCount);
}

TEST_F(StoreTest, ConcurrentCloseCallsAllWaitForTheDrain) {
  constexpr Seq kCount = 1000;
  std::atomic<Seq> ok{0};
  for (Seq i = 0; i < kCount; ++i) {
    store_->commit(one_message(1, i), Durability::kGroup, [&](Status s) {
      if (s.ok()) ok++;
    });
  }
  std::vector<std::thread> closers;
  std::atomic<int> early{0};
  for (int t = 0; t < 3; ++t) {
    closers.emplace_back([&] {
      store_->close();
      if (ok.load() != kCount) early++;
    });
  }
  for (auto& c : closers) c.join();
  EXPECT_EQ(early.load(), 0);
}

}  // namespace
}  // namespace witmq::storage
