// Log matching and snapshots below the broker (storage/replication.h, storage/channel_snapshot.h):
// a follower applies a batch only after exactly the leader's previous entry, answers a duplicate
// only for the exact (epoch, position) it holds, and reports divergence otherwise; a snapshot
// replaces a diverged follower's copy of a channel with exactly the leader's, and a crash in the
// middle of one leaves the copy marked incomplete until a whole snapshot is applied.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <mutex>

#include "storage/channel_snapshot.h"
#include "storage/replication.h"
#include "storage/store.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::TempDir;

// Ships every channel under `epoch` and answers at once that a majority holds it.
class ImmediateReplicator : public Replicator {
 public:
  explicit ImmediateReplicator(uint64_t e) : epoch(e) {}
  void attach(Store*) override {}
  std::optional<uint64_t> shipping_epoch(const std::string&) override { return epoch; }
  void ship(Shipment s, std::function<void(Status)> held) override {
    {
      std::lock_guard lock(mu);
      shipments.push_back(s);
    }
    held(ok_status());
  }
  Shipment last() {
    std::lock_guard lock(mu);
    return shipments.back();
  }
  uint64_t epoch;
  std::mutex mu;
  std::vector<Shipment> shipments;
};

std::unique_ptr<Store> open_store(const std::string& path, std::shared_ptr<Replicator> r,
                                  RecoveredState* recovered = nullptr) {
  StoreOptions o;
  o.path = path;
  o.replicator = std::move(r);
  auto s = Store::open(o);
  EXPECT_TRUE(s) << s.error().message;
  auto state = (*s)->recover();
  EXPECT_TRUE(state) << state.error().message;
  if (recovered != nullptr) *recovered = std::move(*state);
  return std::move(*s);
}

ApplyOutcome apply(Store& s, const ReplicatedBatch& b) {
  std::promise<ApplyOutcome> p;
  s.apply_replicated(b, [&p](ApplyOutcome o) { p.set_value(std::move(o)); });
  return p.get_future().get();
}

ApplyOutcome apply(Store& s, const SnapshotChunk& c) {
  std::promise<ApplyOutcome> p;
  s.apply_snapshot(c, [&p](ApplyOutcome o) { p.set_value(std::move(o)); });
  return p.get_future().get();
}

ReplicatedBatch batch_of(const Shipment& s) {
  ReplicatedBatch b;
  b.channel = s.channel;
  b.epoch = s.epoch;
  b.position = s.position;
  b.prev_epoch = s.prev_epoch;
  b.prev_position = s.prev_position;
  b.durability = s.durability;
  b.records = s.records;
  return b;
}

// Commits `ws` on a leader store and returns what it shipped.
Shipment write(Store& leader, ImmediateReplicator& rep, WriteSet ws) {
  EXPECT_TRUE(leader.commit_and_wait(std::move(ws), Durability::kGroup));
  return rep.last();
}

ChannelId id_of(Store& s, const std::string& name) {
  auto state = s.recover(&name);
  EXPECT_TRUE(state) << state.error().message;
  EXPECT_EQ(state->channels.size(), 1u);
  return state->channels.empty() ? 0 : state->channels[0].def.id;
}

// A channel's whole state as a store holds it, without the store's ids.
struct ChannelView {
  std::string config;
  Seq head_first = 0, head_next = 0;
  struct Sub {
    std::string config;
    Seq floor = 0, next = 0;
    std::vector<std::tuple<Seq, int, uint32_t, int64_t>> deliveries;
    bool operator==(const Sub&) const = default;
  };
  std::map<std::string, Sub> subs;
  std::vector<std::tuple<Seq, int64_t, std::vector<uint8_t>>> messages;
  bool operator==(const ChannelView&) const = default;
};

ChannelView view_of(Store& s, const std::string& name) {
  ChannelView v;
  auto state = s.recover(&name);
  EXPECT_TRUE(state) << state.error().message;
  if (!state || state->channels.size() != 1) {
    ADD_FAILURE() << "channel '" << name << "' is held " << state->channels.size() << " times";
    return v;
  }
  const auto& c = state->channels[0];
  v.config = c.def.config;
  v.head_first = c.head.first;
  v.head_next = c.head.next;
  for (const auto& sub : state->subscriptions) {
    ChannelView::Sub& out = v.subs[sub.def.name];
    out.config = sub.def.config;
    out.floor = sub.cursor.floor;
    out.next = sub.cursor.next;
    for (const auto& [seq, d] : sub.deliveries)
      out.deliveries.emplace_back(seq, static_cast<int>(d.status), d.attempts, d.not_before_ms);
  }
  auto read = s.read(c.def.id, 0, UINT64_MAX, 100000);
  EXPECT_TRUE(read);
  for (const auto& m : *read) v.messages.emplace_back(m.seq, m.publish_time_ms, m.message.data);
  return v;
}

// Leader epoch 7 writes positions 1..4: the definitions, then a message each.
std::vector<Shipment> three_writes(Store& leader, ImmediateReplicator& rep) {
  std::vector<Shipment> out;
  const ChannelId ch = leader.allocate_channel_id();
  WriteSet defs;
  defs.put_channel({ch, "rep", "{}"});
  defs.put_head(ch, {0, 0});
  out.push_back(write(leader, rep, std::move(defs)));
  for (Seq s = 0; s < 3; ++s) {
    WriteSet m;
    m.put_message(ch, s, 1000 + s, make_message(s, 50));
    out.push_back(write(leader, rep, std::move(m)));
  }
  return out;
}

TEST(LogMatchingTest, EachShipmentNamesTheLeadersEntryBeforeIt) {
  TempDir dir;
  auto rep = std::make_shared<ImmediateReplicator>(7);
  auto leader = open_store(dir.sub("leader"), rep);
  auto s = three_writes(*leader, *rep);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].prev_position, 0u);
  EXPECT_EQ(s[0].prev_epoch, 0u);
  for (size_t i = 1; i < s.size(); ++i) {
    EXPECT_EQ(s[i].prev_position, i);
    EXPECT_EQ(s[i].prev_epoch, 7u);
  }
  const auto p = leader->replica_position("rep");
  ASSERT_EQ(p.starts.size(), 1u);
  EXPECT_EQ(p.starts[0], (EpochStart{7, 1}));
}

TEST(LogMatchingTest, AFollowerHoldingWritesTheNewLeaderNeverHadReportsDivergence) {
  TempDir dir;
  auto old_rep = std::make_shared<ImmediateReplicator>(7);
  auto old_leader = open_store(dir.sub("old"), old_rep);
  auto s = three_writes(*old_leader, *old_rep);  // positions 1..4 under epoch 7

  // The new leader got positions 1..3; the follower got all four.
  auto new_rep = std::make_shared<ImmediateReplicator>(8);
  auto new_leader = open_store(dir.sub("new"), new_rep);
  auto follower = open_store(dir.sub("follower"), nullptr);
  auto behind = open_store(dir.sub("behind"), nullptr);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_EQ(apply(*new_leader, batch_of(s[i])).kind, ApplyOutcome::Kind::kApplied);
  }
  for (const auto& b : s) {
    ASSERT_EQ(apply(*follower, batch_of(b)).kind, ApplyOutcome::Kind::kApplied);
  }
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(apply(*behind, batch_of(s[i])).kind, ApplyOutcome::Kind::kApplied);
  }

  // The new leader (epoch 8) writes its own position 4, after (7, 3).
  const ChannelId ch = id_of(*new_leader, "rep");
  WriteSet m;
  m.put_message(ch, 2, 2000, make_message(99, 50));
  const Shipment b4 = write(*new_leader, *new_rep, std::move(m));
  EXPECT_EQ(b4.epoch, 8u);
  EXPECT_EQ(b4.position, 4u);
  EXPECT_EQ(b4.prev_epoch, 7u);
  EXPECT_EQ(b4.prev_position, 3u);

  // The follower holds position 4 under epoch 7: not a duplicate (which would be a false
  // acknowledgement of the new leader's write), but divergence, naming its last entry.
  auto o = apply(*follower, batch_of(b4));
  EXPECT_EQ(o.kind, ApplyOutcome::Kind::kDiverged) << o.text;
  EXPECT_EQ(o.position, 4u);
  EXPECT_EQ(o.last_epoch, 7u);
  EXPECT_EQ(o.epoch, 8u) << "the newer epoch is remembered for fencing";
  // The next one does not chain on its last entry either; nor after a restart.
  WriteSet m5;
  m5.put_message(ch, 3, 2001, make_message(100, 50));
  const Shipment b5 = write(*new_leader, *new_rep, std::move(m5));
  EXPECT_EQ(apply(*follower, batch_of(b5)).kind, ApplyOutcome::Kind::kDiverged);
  follower.reset();
  follower = open_store(dir.sub("follower"), nullptr);
  EXPECT_EQ(apply(*follower, batch_of(b4)).kind, ApplyOutcome::Kind::kDiverged);

  // A follower that is only behind asks for what it lacks, then chains on.
  auto gap = apply(*behind, batch_of(b4));
  EXPECT_EQ(gap.kind, ApplyOutcome::Kind::kGap);
  EXPECT_EQ(gap.position, 3u);
  ASSERT_EQ(apply(*behind, batch_of(s[2])).kind, ApplyOutcome::Kind::kApplied);
  // A duplicate is answered for the exact (epoch, position) only, and acknowledges no more.
  auto dup = apply(*behind, batch_of(s[1]));
  EXPECT_EQ(dup.kind, ApplyOutcome::Kind::kDuplicate);
  EXPECT_EQ(dup.position, 2u) << "no more than the batch's own position";
  ASSERT_EQ(apply(*behind, batch_of(b4)).kind, ApplyOutcome::Kind::kApplied);
  auto other = batch_of(s[3]);  // (7, 4): the old leader's position 4, not the new one's
  EXPECT_EQ(apply(*behind, other).kind, ApplyOutcome::Kind::kStale) << "epoch 7 < 8 seen";
  auto forged = batch_of(b4);
  forged.epoch = 9;  // a position 4 of another epoch than the one held
  EXPECT_EQ(apply(*behind, forged).kind, ApplyOutcome::Kind::kDiverged);
}

// Builds a channel with two subscriptions, messages, delivery records and cursors on a leader.
std::vector<Shipment> build_channel(Store& leader, ImmediateReplicator& rep) {
  std::vector<Shipment> out;
  const ChannelId ch = leader.allocate_channel_id();
  const SubscriptionId a = leader.allocate_subscription_id();
  const SubscriptionId b = leader.allocate_subscription_id();
  WriteSet defs;
  defs.put_channel({ch, "rep", R"({"settings":{"replicas":3}})"});
  defs.put_head(ch, {2, 0});
  defs.put_subscription({a, ch, "a", R"({"x":1})"});
  defs.put_subscription({b, ch, "b", "{}"});
  out.push_back(write(leader, rep, std::move(defs)));
  for (Seq s = 0; s < 40; ++s) {
    WriteSet m;
    m.put_message(ch, s, 5000 + s, make_message(s, 100, s % 3 == 0));
    out.push_back(write(leader, rep, std::move(m)));
  }
  WriteSet state;
  state.delete_messages(ch, 0, 2);
  state.put_head(ch, {2, 40});
  state.put_cursor(a, {5, 30});
  state.put_delivery(a, 7, {DeliveryStatus::kAccepted, 1, 0});
  state.put_delivery(a, 9, {DeliveryStatus::kReady, 2, 123456});
  state.put_delivery(a, 10, {DeliveryStatus::kAcquired, 1, 0});
  state.put_cursor(b, {0, 3});
  state.put_delivery(b, 1, {DeliveryStatus::kAcquired, 3, 0});
  out.push_back(write(leader, rep, std::move(state)));
  return out;
}

// A follower whose copy of "rep" diverged: other messages, a subscription the leader never had.
void build_diverged_copy(const std::string& path, Store& follower) {
  auto rep = std::make_shared<ImmediateReplicator>(6);
  auto other = open_store(path, rep);
  const ChannelId ch = other->allocate_channel_id();
  const SubscriptionId gone = other->allocate_subscription_id();
  const SubscriptionId a = other->allocate_subscription_id();
  std::vector<Shipment> s;
  WriteSet defs;
  defs.put_channel({ch, "rep", R"({"old":true})"});
  defs.put_subscription({gone, ch, "gone", "{}"});
  defs.put_subscription({a, ch, "a", "{}"});
  s.push_back(write(*other, *rep, std::move(defs)));
  for (Seq q = 0; q < 60; ++q) {
    WriteSet m;
    m.put_message(ch, q, 1, make_message(1000 + q, 80));
    m.put_delivery(gone, q, {DeliveryStatus::kAcquired, 1, 0});
    m.put_delivery(a, q + 50, {DeliveryStatus::kAccepted, 1, 0});
    m.put_cursor(a, {q, q + 100});
    s.push_back(write(*other, *rep, std::move(m)));
  }
  for (const auto& b : s)
    ASSERT_EQ(apply(follower, batch_of(b)).kind, ApplyOutcome::Kind::kApplied);
}

// Reads the leader's snapshot of "rep" in chunks of about `bytes`.
std::vector<SnapshotChunk> snapshot_of(Store& leader, size_t bytes, uint64_t epoch) {
  std::vector<SnapshotChunk> out;
  auto snap = leader.snapshot_channel("rep");
  EXPECT_TRUE(snap) << snap.error().message;
  if (!snap) return out;
  bool done = false;
  while (!done) {
    auto records = (*snap)->next(bytes, done);
    EXPECT_TRUE(records) << records.error().message;
    if (!records) return out;
    SnapshotChunk c;
    c.channel = "rep";
    c.epoch = epoch;
    c.position = (*snap)->position().position;
    c.index = static_cast<uint32_t>(out.size());
    c.last = done;
    if (done) c.starts = (*snap)->position().starts;
    c.records = std::move(*records);
    out.push_back(std::move(c));
  }
  return out;
}

TEST(SnapshotTest, ASnapshotReplacesTheFollowersCopyWithExactlyTheLeaders) {
  TempDir dir;
  auto rep = std::make_shared<ImmediateReplicator>(7);
  auto leader = open_store(dir.sub("leader"), rep);
  build_channel(*leader, *rep);
  auto follower = open_store(dir.sub("follower"), nullptr);
  build_diverged_copy(dir.sub("other"), *follower);
  ASSERT_NE(view_of(*follower, "rep"), view_of(*leader, "rep"));

  auto chunks = snapshot_of(*leader, 1000, 7);
  ASSERT_GT(chunks.size(), 3u) << "bounded chunks";
  for (const auto& c : chunks) {
    EXPECT_LE(c.records.size(), 1000u + 200u);
    auto o = apply(*follower, c);
    ASSERT_EQ(o.kind, ApplyOutcome::Kind::kApplied) << o.text;
  }
  const ChannelView leader_view = view_of(*leader, "rep");
  EXPECT_EQ(view_of(*follower, "rep"), leader_view);
  EXPECT_EQ(leader_view.messages.size(), 38u);
  EXPECT_EQ(leader_view.subs.size(), 2u);
  const auto lp = leader->replica_position("rep");
  const auto fp = follower->replica_position("rep");
  EXPECT_EQ(fp.position, lp.position);
  EXPECT_EQ(fp.starts, lp.starts);
  EXPECT_FALSE(fp.incomplete);
  EXPECT_TRUE(follower->replica_catching_up().empty());

  // It chains on the leader's next write, and a restart finds one copy, nothing orphaned.
  WriteSet m;
  m.put_message(id_of(*leader, "rep"), 40, 9000, make_message(40, 100));
  const Shipment next = write(*leader, *rep, std::move(m));
  EXPECT_EQ(apply(*follower, batch_of(next)).kind, ApplyOutcome::Kind::kApplied);
  follower.reset();
  RecoveredState state;
  follower = open_store(dir.sub("follower"), nullptr, &state);
  EXPECT_EQ(state.orphans.total(), 0u);
  ASSERT_EQ(state.channels.size(), 1u);
  EXPECT_EQ(state.subscriptions.size(), 2u);
  EXPECT_EQ(view_of(*follower, "rep"), view_of(*leader, "rep"));
}

TEST(SnapshotTest, ACrashInTheMiddleLeavesTheCopyIncompleteUntilAWholeOneIsApplied) {
  TempDir dir;
  auto rep = std::make_shared<ImmediateReplicator>(7);
  auto leader = open_store(dir.sub("leader"), rep);
  auto shipments = build_channel(*leader, *rep);
  auto follower = open_store(dir.sub("follower"), nullptr);
  build_diverged_copy(dir.sub("other"), *follower);
  auto chunks = snapshot_of(*leader, 1000, 7);
  ASSERT_GT(chunks.size(), 3u);
  ASSERT_EQ(apply(*follower, chunks[0]).kind, ApplyOutcome::Kind::kApplied);
  ASSERT_EQ(apply(*follower, chunks[1]).kind, ApplyOutcome::Kind::kApplied);
  follower.reset();  // as a crash would leave it: two chunks stored
  follower = open_store(dir.sub("follower"), nullptr);
  EXPECT_EQ(follower->replica_catching_up(), std::vector<std::string>{"rep"});
  EXPECT_TRUE(follower->replica_position("rep").incomplete);

  // Nothing chains on a partial copy, and the snapshot does not go on where it stopped.
  auto o = apply(*follower, batch_of(shipments.back()));
  EXPECT_EQ(o.kind, ApplyOutcome::Kind::kDiverged) << o.text;
  EXPECT_EQ(o.position, 0u);
  auto resumed = apply(*follower, chunks[2]);
  EXPECT_EQ(resumed.kind, ApplyOutcome::Kind::kFailed);
  EXPECT_NE(resumed.text.find("expected chunk 0"), std::string::npos) << resumed.text;

  for (const auto& c : snapshot_of(*leader, 1000, 7)) {
    auto a = apply(*follower, c);
    ASSERT_EQ(a.kind, ApplyOutcome::Kind::kApplied) << a.text;
  }
  EXPECT_TRUE(follower->replica_catching_up().empty());
  EXPECT_EQ(view_of(*follower, "rep"), view_of(*leader, "rep"));
  follower.reset();
  RecoveredState state;
  follower = open_store(dir.sub("follower"), nullptr, &state);
  EXPECT_EQ(state.orphans.total(), 0u);
  EXPECT_EQ(state.channels.size(), 1u);
  EXPECT_EQ(view_of(*follower, "rep"), view_of(*leader, "rep"));
}

TEST(SnapshotTest, StaleAndOutOfOrderChunksAreRefused) {
  TempDir dir;
  auto rep = std::make_shared<ImmediateReplicator>(7);
  auto leader = open_store(dir.sub("leader"), rep);
  build_channel(*leader, *rep);
  auto follower = open_store(dir.sub("follower"), nullptr);
  auto chunks = snapshot_of(*leader, 1000, 7);
  ASSERT_GT(chunks.size(), 2u);
  auto first = apply(*follower, chunks[1]);
  EXPECT_EQ(first.kind, ApplyOutcome::Kind::kFailed) << "a snapshot starts with chunk 0";
  ASSERT_EQ(apply(*follower, chunks[0]).kind, ApplyOutcome::Kind::kApplied);
  auto skipped = apply(*follower, chunks[2]);
  EXPECT_EQ(skipped.kind, ApplyOutcome::Kind::kFailed);
  EXPECT_NE(skipped.text.find("expected chunk 1"), std::string::npos) << skipped.text;
  // A snapshot from an older leader than one already seen is refused.
  auto old = chunks[0];
  old.epoch = 5;
  EXPECT_EQ(apply(*follower, old).kind, ApplyOutcome::Kind::kStale);
  // Epoch starts past the snapshot's position are refused.
  auto bad = chunks.back();
  bad.starts = {{7, bad.position + 1}};
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    ASSERT_EQ(apply(*follower, chunks[i]).kind, ApplyOutcome::Kind::kApplied);
  }
  EXPECT_EQ(apply(*follower, bad).kind, ApplyOutcome::Kind::kFailed);
}

}  // namespace
}  // namespace witmq::storage
