// Message runs: a send's messages stored as one record under the seq of its last message
// (WriteSet::put_messages). Readers must see exactly the messages a record per message would
// give, across run boundaries, after head trims that cut a run, mixed with single-message records
// (the older form), after a reopen, and must report a corrupt run as kCorruption naming its key.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <vector>

#include "storage/codec.h"
#include "storage/records.h"
#include "storage/store.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::StoreTest;

constexpr ChannelId kChannel = 1;
constexpr int64_t kTime0 = 1'700'000'000'000;

std::vector<Message> messages(Seq first, size_t n, size_t size) {
  std::vector<Message> out;
  for (Seq s = first; s < first + n; ++s) out.push_back(make_message(s, size, s % 3 == 0));
  return out;
}

class MessageRunsTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    WriteSet ws;
    ws.put_channel({kChannel, "runs", "{}"});
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }

  // Appends messages [first, first + n) of `size` bytes as one send, published at kTime0 + first.
  void append(Seq first, size_t n, size_t size = 40) {
    WriteSet ws;
    ws.put_messages(kChannel, first, kTime0 + static_cast<int64_t>(first),
                    messages(first, n, size));
    ws.put_head(kChannel, {head_first_, first + n});
    head_next_ = first + n;
    auto st = store_->commit_and_wait(std::move(ws), Durability::kSync);
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  }

  void trim(Seq from, Seq to) {
    WriteSet ws;
    ws.delete_messages(kChannel, from, to);
    head_first_ = to;
    ws.put_head(kChannel, {head_first_, head_next_});
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }

  // The seqs read(from, to, max_count) returns, each checked against what was written.
  std::vector<Seq> read_seqs(Seq from, Seq to, size_t max_count = SIZE_MAX,
                             size_t max_bytes = SIZE_MAX) {
    auto r = store_->read(kChannel, from, to, max_count, max_bytes);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    std::vector<Seq> seqs;
    if (!r.ok()) return seqs;
    for (const auto& m : *r) {
      EXPECT_EQ(m.message, make_message(m.seq, m.message.data.size(), m.seq % 3 == 0))
          << "seq " << m.seq;
      seqs.push_back(m.seq);
    }
    return seqs;
  }

  static std::vector<Seq> range(Seq from, Seq to) {
    std::vector<Seq> out;
    for (Seq s = from; s < to; ++s) out.push_back(s);
    return out;
  }

  Seq head_first_ = 0, head_next_ = 0;
};

TEST_F(MessageRunsTest, ReadAcrossRunBoundariesWithBoundsInsideRuns) {
  append(0, 10);   // run 0..9
  append(10, 1);   // a single message
  append(11, 20);  // run 11..30
  append(31, 5);   // run 31..35
  EXPECT_EQ(read_seqs(0, 36), range(0, 36));
  EXPECT_EQ(read_seqs(4, 7), range(4, 7));      // inside one run
  EXPECT_EQ(read_seqs(7, 14), range(7, 14));    // run, single, into the next run
  EXPECT_EQ(read_seqs(29, 33), range(29, 33));  // end of one run into the next
  EXPECT_EQ(read_seqs(3, 36, 5), range(3, 8));  // max_count stops inside a run
  EXPECT_EQ(read_seqs(9, 36, 2), range(9, 11));
  EXPECT_EQ(read_seqs(35, 36), range(35, 36));
  EXPECT_EQ(read_seqs(36, 100), range(0, 0));
  EXPECT_EQ(read_seqs(5, 6), range(5, 6));
  // max_bytes per message, as for single records: 40-byte messages, 100 bytes -> 2 (a third
  // would pass the limit); never empty.
  EXPECT_EQ(read_seqs(12, 36, SIZE_MAX, 100), range(12, 14));
  EXPECT_EQ(read_seqs(12, 36, SIZE_MAX, 1), range(12, 13));
}

TEST_F(MessageRunsTest, GetFindsMessagesInsideRuns) {
  append(0, 10);
  append(10, 10);
  for (Seq s = 0; s < 20; ++s) {
    auto r = store_->get(kChannel, s);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ASSERT_TRUE(r->has_value()) << "seq " << s;
    EXPECT_EQ((*r)->seq, s);
    EXPECT_EQ((*r)->publish_time_ms, kTime0 + (s < 10 ? 0 : 10));
    EXPECT_EQ((*r)->message, make_message(s, 40, s % 3 == 0));
  }
  auto past = store_->get(kChannel, 20);
  ASSERT_TRUE(past.ok());
  EXPECT_FALSE(past->has_value());
  auto other = store_->get(kChannel + 1, 5);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
}

TEST_F(MessageRunsTest, FindSeqByTimeLandsInsideRuns) {
  // Runs published at kTime0 + their first seq: 0..9 at +0, 10..29 at +10, 30..34 at +30.
  append(0, 10);
  append(10, 20);
  append(30, 5);
  auto find = [&](Seq from, Seq to, int64_t offset) {
    auto r = store_->find_seq_by_time(kChannel, from, to, kTime0 + offset);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r.ok() ? *r : UINT64_MAX;
  };
  EXPECT_EQ(find(0, 35, 0), 0u);
  EXPECT_EQ(find(0, 35, 1), 10u);
  EXPECT_EQ(find(0, 35, 10), 10u);
  EXPECT_EQ(find(0, 35, 11), 30u);
  EXPECT_EQ(find(0, 35, 31), 35u);  // none: `to`
  EXPECT_EQ(find(15, 35, 0), 15u);  // `from` inside a run
  EXPECT_EQ(find(3, 8, 1), 8u);     // the whole range inside one run, all older
  EXPECT_EQ(find(3, 8, 0), 3u);
  EXPECT_EQ(find(12, 20, 11), 20u);  // `to` inside a run whose messages are all older
}

TEST_F(MessageRunsTest, TrimInsideARunKeepsTheRestUntilALaterTrim) {
  append(0, 10);
  append(10, 10);
  trim(0, 15);  // deletes run 0..9; run 10..19 straddles 15 and is kept whole
  EXPECT_EQ(read_seqs(15, 20), range(15, 20));
  EXPECT_EQ(read_seqs(15, 20, 2), range(15, 17));
  auto g = store_->get(kChannel, 17);
  ASSERT_TRUE(g.ok() && g->has_value());
  EXPECT_EQ((*g)->seq, 17u);
  auto f = store_->find_seq_by_time(kChannel, 15, 20, kTime0 + 5);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, 15u);
  // Nothing below 10 is left.
  auto gone = store_->get(kChannel, 9);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());

  append(20, 5);
  trim(15, 22);  // covers run 10..19's key: it goes; run 20..24 straddles and stays
  auto old = store_->get(kChannel, 19);
  ASSERT_TRUE(old.ok());
  EXPECT_FALSE(old->has_value());
  EXPECT_EQ(read_seqs(22, 25), range(22, 25));
  trim(22, 25);
  EXPECT_EQ(read_seqs(0, 100), range(0, 0));
}

TEST_F(MessageRunsTest, SingleRecordsAndRunsMixInOneChannel) {
  {
    WriteSet ws;  // the older form: one record per message
    for (Seq s = 0; s < 5; ++s) {
      ws.put_message(kChannel, s, kTime0 + static_cast<int64_t>(s),
                     make_message(s, 40, s % 3 == 0));
    }
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }
  append(5, 10);
  {
    WriteSet ws;
    ws.put_message(kChannel, 15, kTime0 + 15, make_message(15, 40, true));
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }
  append(16, 4);
  EXPECT_EQ(read_seqs(0, 20), range(0, 20));
  EXPECT_EQ(read_seqs(3, 17), range(3, 17));
  trim(0, 3);
  EXPECT_EQ(read_seqs(3, 20), range(3, 20));
  trim(3, 8);
  EXPECT_EQ(read_seqs(8, 20), range(8, 20));
}

TEST_F(MessageRunsTest, RecoveryFindsTheHeadFromRuns) {
  append(0, 10);
  append(10, 7);
  trim(0, 4);  // run 0..9 stays (it straddles 4)
  {
    // A head record older than the last run: recovery must go by the run's last seq.
    WriteSet ws;
    ws.put_head(kChannel, {4, 10});
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }
  reopen();
  auto state = store_->recover();
  ASSERT_TRUE(state.ok()) << state.error().to_string();
  ASSERT_EQ(state->channels.size(), 1u);
  EXPECT_EQ(state->channels[0].head.first, 4u);
  EXPECT_EQ(state->channels[0].head.next, 17u);
  EXPECT_EQ(read_seqs(4, 17), range(4, 17));
}

TEST_F(MessageRunsTest, RecoveryWithoutAHeadStartsAtTheFirstRunsFirstMessage) {
  {
    WriteSet ws;
    ws.put_channel({2, "headless", "{}"});
    ws.put_messages(2, 100, kTime0, messages(100, 6, 20));
    ws.put_messages(2, 106, kTime0, messages(106, 3, 20));
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }
  reopen();
  auto state = store_->recover();
  ASSERT_TRUE(state.ok()) << state.error().to_string();
  ASSERT_EQ(state->channels.size(), 2u);
  EXPECT_EQ(state->channels[1].def.id, 2u);
  EXPECT_EQ(state->channels[1].head.first, 100u);
  EXPECT_EQ(state->channels[1].head.next, 109u);
}

TEST_F(MessageRunsTest, LargeSendsSplitIntoBoundedRuns) {
  // 300 messages of 1000 bytes: about 310 KB, so five or six runs of at most kMaxRunBytes.
  WriteSet split;
  split.put_messages(kChannel, 0, kTime0, messages(0, 300, 1000));
  EXPECT_GE(split.op_count(), 300 * 1000 / kMaxRunBytes + 1);
  EXPECT_LE(split.op_count(), 6u);
  // A message larger than the bound is a run of its own, between two single messages.
  std::vector<Message> big = messages(300, 3, 10);
  big[1] = make_message(301, kMaxRunBytes + 10, false);
  WriteSet lone;
  lone.put_messages(kChannel, 300, kTime0, big);
  EXPECT_EQ(lone.op_count(), 3u);

  append(0, 300, 1000);
  {
    WriteSet ws;
    ws.put_messages(kChannel, 300, kTime0 + 300, big);
    ws.put_head(kChannel, {0, 303});
    ASSERT_TRUE(store_->commit_and_wait(std::move(ws), Durability::kSync).ok());
  }
  auto all = store_->read(kChannel, 0, 303, SIZE_MAX);
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  ASSERT_EQ(all->size(), 303u);
  for (Seq s = 0; s < 303; ++s) EXPECT_EQ((*all)[s].seq, s);
  EXPECT_EQ((*all)[301].message, big[1]);
  EXPECT_EQ((*all)[302].message, big[2]);
}

// Retention by bytes cuts at the seq where [cut, committed) fits, measured by approximate_bytes()
// on each pass. A run that straddles the cut is kept whole on disk; were its trimmed messages
// counted, each later pass would find the channel over its limit again and cut on until the whole
// run was gone, kept messages with it.
TEST_F(MessageRunsTest, ApproximateBytesCountsOnlyTheKeptPartOfAStraddlingRun) {
  for (Seq s = 0; s < 300; s += 60) append(s, 60, 1000);  // five runs of about 61 KB
  trim(0, 290);  // run 240..299 straddles the cut: 10 of its messages, about 10 KB, are kept
  for (int pass = 0; pass < 2; ++pass) {  // in memtables, then in files
    const uint64_t kept = store_->approximate_bytes(kChannel, 290, 300);
    EXPECT_GT(kept, 5'000u) << "pass " << pass;
    EXPECT_LT(kept, 25'000u) << "pass " << pass << ": the trimmed part of the run is counted";
    EXPECT_LT(store_->approximate_bytes(kChannel, 295, 300), kept) << "pass " << pass;
    EXPECT_EQ(read_seqs(290, 300), range(290, 300));
    reopen();
  }
}

// ---- corrupt runs ----------------------------------------------------------------------------

const std::string kRunKey = message_key(3, 17);

template <typename T>
void expect_corruption(const Result<T>& r, std::string_view key_name, std::string_view what) {
  ASSERT_FALSE(r.ok()) << "expected corruption naming " << key_name;
  EXPECT_EQ(r.error().code, ErrorCode::kCorruption) << r.error().to_string();
  EXPECT_NE(r.error().message.find(key_name), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(what), std::string::npos) << r.error().message;
}

TEST(MessageRunRecordTest, EncodesAndDecodesARun) {
  auto ms = messages(15, 3, 30);
  std::string v = encode_message_run(77, ms);
  EXPECT_EQ(static_cast<uint8_t>(v[0]), kRunVersion);
  auto d = decode_messages(kRunKey, v);
  ASSERT_TRUE(d.ok()) << d.error().to_string();
  ASSERT_EQ(d->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*d)[i].seq, 15 + i);
    EXPECT_EQ((*d)[i].publish_time_ms, 77);
    EXPECT_EQ((*d)[i].message, ms[i]);
  }
  // One message is the single-message form, which decodes as a run of one.
  std::string one = encode_message_run(5, std::span(ms).first(1));
  EXPECT_EQ(one, encode_message(5, ms[0]));
  auto d1 = decode_messages(kRunKey, one);
  ASSERT_TRUE(d1.ok());
  ASSERT_EQ(d1->size(), 1u);
  EXPECT_EQ((*d1)[0].seq, 17u);
}

TEST(MessageRunRecordTest, EveryTruncationIsCorruptionNamingTheKey) {
  std::string v = encode_message_run(7, messages(15, 3, 30));
  for (size_t n = 0; n < v.size(); ++n) {
    auto r = decode_messages(kRunKey, std::string_view(v).substr(0, n));
    expect_corruption(r, "messages/ch=3/seq=17", "");
  }
}

TEST(MessageRunRecordTest, BadHeaderOrBodyIsCorruption) {
  const std::string v = encode_message_run(7, messages(15, 3, 30));
  auto with_count = [&](uint32_t count) {
    std::string c = v;
    for (int i = 0; i < 4; ++i) c[1 + i] = static_cast<char>(count >> (8 * i));
    return c;
  };
  expect_corruption(decode_messages(kRunKey, with_count(0)), "messages/ch=3/seq=17",
                    "run count is 0");
  // 19 messages cannot end at seq 17.
  expect_corruption(decode_messages(kRunKey, with_count(19)), "messages/ch=3/seq=17",
                    "run count is 19");
  expect_corruption(decode_messages(kRunKey, with_count(2)), "messages/ch=3/seq=17",
                    "unexpected bytes");
  expect_corruption(decode_messages(kRunKey, with_count(4)), "messages/ch=3/seq=17",
                    "message 3 of 4");
  expect_corruption(decode_messages(kRunKey, v + "x"), "messages/ch=3/seq=17", "unexpected bytes");
  std::string bad_version = v;
  bad_version[0] = 9;
  expect_corruption(decode_messages(kRunKey, bad_version), "messages/ch=3/seq=17", "version is 9");
  // The second message's format byte (after the run header, its length and the first message,
  // then its own length, version and publish time).
  const size_t first_len = 4 + message_value_size(messages(15, 1, 30)[0]);
  std::string bad_format = v;
  bad_format[1 + 4 + first_len + 4 + 1 + 8] = 42;
  expect_corruption(decode_messages(kRunKey, bad_format), "messages/ch=3/seq=17",
                    "run message seq=16: format is 42");
  expect_corruption(decode_messages("abc", v), "messages/0x616263", "key is 3 bytes");
}

// A corrupt run written behind the store's back: read, get and recover report it.
TEST_F(MessageRunsTest, CorruptRunInTheStoreIsCorruptionNamingItsKey) {
  append(0, 10);
  std::string v = encode_message_run(kTime0, messages(10, 5, 40));
  v.resize(v.size() - 3);
  store_.reset();
  {
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
    s = db->Put(rocksdb::WriteOptions(), handles[1], message_key(kChannel, 14), v);
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  open();
  expect_corruption(store_->recover(), "messages/ch=1/seq=14", "");
  expect_corruption(store_->read(kChannel, 8, 15, 100), "messages/ch=1/seq=14", "");
  expect_corruption(store_->get(kChannel, 12), "messages/ch=1/seq=14", "");
  expect_corruption(store_->find_seq_by_time(kChannel, 10, 15, kTime0 + 1), "messages/ch=1/seq=14",
                    "");
  // The good run before it still reads.
  EXPECT_EQ(read_seqs(0, 10), range(0, 10));
}

}  // namespace
}  // namespace witmq::storage
