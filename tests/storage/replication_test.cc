// Replication below the broker (storage/replication.h): a leader store turns each commit group's
// writes of a shipped channel into one logical shipment with a position and an epoch, holds the
// callers until the shipment is held, and a follower store applies shipments into its own ids,
// refusing stale epochs and asking for what a gap lost.
#include "storage/replication.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <thread>
#include <mutex>

#include "storage/store.h"
#include "storage/store_fixture.h"

namespace witmq::storage {
namespace {

using testing::make_message;
using testing::TempDir;

// Ships every channel whose name starts with "r" under `epoch`; keeps the shipments and their
// `held` callbacks for the test to answer.
class FakeReplicator : public Replicator {
 public:
  void attach(Store*) override {}
  std::optional<uint64_t> shipping_epoch(const std::string& channel) override {
    if (!channel.starts_with("r")) return std::nullopt;
    return epoch;
  }
  void ship(Shipment s, std::function<void(Status)> held) override {
    std::lock_guard lock(mu);
    shipments.push_back(std::move(s));
    helds.push_back(std::move(held));
  }
  std::vector<Shipment> take() {
    std::lock_guard lock(mu);
    return shipments;
  }
  void answer_all(Status st) {
    std::vector<std::function<void(Status)>> h;
    {
      std::lock_guard lock(mu);
      h.swap(helds);
    }
    for (auto& f : h) f(st);
  }

  std::atomic<uint64_t> epoch{7};
  std::mutex mu;
  std::vector<Shipment> shipments;
  std::vector<std::function<void(Status)>> helds;
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

// Commits `ws` and returns a future of its callback's status.
std::future<Status> commit_async(Store& s, WriteSet ws, Durability d = Durability::kGroup) {
  auto p = std::make_shared<std::promise<Status>>();
  auto f = p->get_future();
  s.commit(std::move(ws), d, [p](Status st) { p->set_value(std::move(st)); });
  return f;
}

bool ready(std::future<Status>& f) {
  return f.wait_for(std::chrono::milliseconds(200)) == std::future_status::ready;
}

TEST(ReplicationTest, ShipmentsAreHeldThenAppliedUnderTheFollowersOwnIds) {
  TempDir dir;
  auto rep = std::make_shared<FakeReplicator>();
  auto leader = open_store(dir.sub("leader"), rep);
  // A channel that is not shipped takes id 1 on the leader, so that the replicated one's ids
  // differ between the two stores.
  WriteSet local;
  local.put_channel({leader->allocate_channel_id(), "local", "{}"});
  ASSERT_TRUE(leader->commit_and_wait(std::move(local), Durability::kGroup));
  EXPECT_TRUE(rep->take().empty()) << "a channel that is not shipped ships nothing";

  const ChannelId ch = leader->allocate_channel_id();
  const SubscriptionId sub = leader->allocate_subscription_id();
  WriteSet defs;
  defs.put_channel({ch, "rep", R"({"settings":{}})"});
  defs.put_subscription({sub, ch, "", "{}"});
  defs.put_head(ch, {0, 0});
  auto first = commit_async(*leader, std::move(defs));
  WriteSet msgs;
  for (Seq s = 0; s < 10; ++s) msgs.put_message(ch, s, 1000 + s, make_message(s, 100));
  msgs.put_delivery(sub, 3, {DeliveryStatus::kAccepted, 1, 0});
  msgs.put_cursor(sub, {2, 10});
  auto second = commit_async(*leader, std::move(msgs));
  EXPECT_FALSE(ready(first)) << "answered before the shipment was held";
  EXPECT_FALSE(ready(second));
  rep->answer_all(ok_status());
  ASSERT_TRUE(ready(first));
  ASSERT_TRUE(ready(second));
  EXPECT_TRUE(first.get());
  EXPECT_TRUE(second.get());

  auto shipments = rep->take();
  ASSERT_GE(shipments.size(), 1u);
  for (size_t i = 0; i < shipments.size(); ++i) {
    EXPECT_EQ(shipments[i].channel, "rep");
    EXPECT_EQ(shipments[i].epoch, 7u);
    EXPECT_EQ(shipments[i].position, i + 1) << "one position per commit group, from 1";
  }
  EXPECT_EQ(leader->replica_position("rep").position, shipments.size());

  // The follower already holds a channel of its own under the id the leader gave "rep".
  auto follower = open_store(dir.sub("follower"), nullptr);
  WriteSet own;
  own.put_channel({follower->allocate_channel_id(), "own", "{}"});
  own.put_channel({follower->allocate_channel_id(), "own2", "{}"});
  ASSERT_TRUE(follower->commit_and_wait(std::move(own), Durability::kGroup));
  for (const auto& s : shipments) {
    auto o = apply(*follower, batch_of(s));
    EXPECT_EQ(o.kind, ApplyOutcome::Kind::kApplied) << o.text;
    EXPECT_EQ(o.position, s.position);
  }
  follower.reset();
  auto state = std::make_unique<RecoveredState>();
  follower = open_store(dir.sub("follower"), nullptr, state.get());
  EXPECT_EQ(follower->replica_position("rep").position, shipments.size()) << "durable position";
  EXPECT_EQ(follower->replica_position("rep").epoch, 7u);
  const RecoveredState::Channel* rep_ch = nullptr;
  for (const auto& c : state->channels) {
    if (c.def.name == "rep") rep_ch = &c;
  }
  ASSERT_NE(rep_ch, nullptr);
  EXPECT_NE(rep_ch->def.id, ch) << "the follower gives the channel an id of its own";
  EXPECT_EQ(rep_ch->def.config, R"({"settings":{}})");
  EXPECT_EQ(rep_ch->head.next, 10u);
  auto read = follower->read(rep_ch->def.id, 0, 100, 100);
  ASSERT_TRUE(read);
  ASSERT_EQ(read->size(), 10u);
  for (Seq s = 0; s < 10; ++s) EXPECT_EQ((*read)[s].message.data, make_message(s, 100).data);
  ASSERT_EQ(state->subscriptions.size(), 1u);
  const auto& rs = state->subscriptions[0];
  EXPECT_EQ(rs.def.channel, rep_ch->def.id);
  EXPECT_EQ(rs.cursor.floor, 2u);
  EXPECT_EQ(rs.cursor.next, 10u);
  ASSERT_EQ(rs.deliveries.size(), 1u);
  EXPECT_EQ(rs.deliveries[0].first, 3u);
  EXPECT_EQ(rs.deliveries[0].second.status, DeliveryStatus::kAccepted);
}

TEST(ReplicationTest, AWriteNoMajorityHoldsFailsWithTheReplicatorsError) {
  TempDir dir;
  auto rep = std::make_shared<FakeReplicator>();
  auto leader = open_store(dir.sub("leader"), rep);
  WriteSet ws;
  const ChannelId ch = leader->allocate_channel_id();
  ws.put_channel({ch, "rep", "{}"});
  ws.put_message(ch, 0, 1, make_message(1, 10));
  auto f = commit_async(*leader, std::move(ws));
  EXPECT_FALSE(ready(f));
  rep->answer_all(Error(ErrorCode::kUnavailable, "only 1 of 3 replicas"));
  ASSERT_TRUE(ready(f));
  auto st = f.get();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(st.error().message.find("only 1 of 3"), std::string::npos);
}

// A cluster node takes a channel up again (Store::recover with one channel) while another
// channel's write is between getting its position and being written. The position record on disk
// is then one behind the catalog; taking the first channel up must not move the second's position
// back, or its next write is shipped under a position already shipped (followers that hold that
// epoch and position count it as held without storing it: an acknowledged write lost at the next
// failover).
TEST(ReplicationTest, TakingAChannelUpLeavesAnotherChannelsPositionsAsTheyAre) {
  TempDir dir;
  auto rep = std::make_shared<FakeReplicator>();
  std::mutex mu;
  std::condition_variable cv;
  bool hold = false, held = false, go = false;
  StoreOptions o;
  o.path = dir.sub("leader");
  o.replicator = rep;
  o.test_hooks.before_write = [&]() -> Status {
    std::unique_lock lock(mu);
    if (hold) {
      held = true;
      cv.notify_all();
      cv.wait(lock, [&] { return go; });
      hold = false;
    }
    return ok_status();
  };
  auto opened = Store::open(o);
  ASSERT_TRUE(opened) << opened.error().message;
  auto leader = std::move(*opened);
  ASSERT_TRUE(leader->recover());
  const ChannelId busy = leader->allocate_channel_id();
  const ChannelId other = leader->allocate_channel_id();
  WriteSet defs;
  defs.put_channel({busy, "rbusy", "{}"});
  defs.put_channel({other, "rother", "{}"});
  auto first = commit_async(*leader, std::move(defs));
  auto shipped = [&](size_t n) {
    for (int i = 0; i < 250 && rep->take().size() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return rep->take().size() >= n;
  };
  ASSERT_TRUE(shipped(1));
  rep->answer_all(ok_status());
  ASSERT_TRUE(ready(first));
  ASSERT_TRUE(first.get());
  const uint64_t before = leader->replica_position("rbusy").position;

  // The busy channel's next write takes its position and stops before RocksDB writes it.
  {
    std::lock_guard lock(mu);
    hold = true;
  }
  WriteSet m1;
  m1.put_message(busy, 0, 1, make_message(0, 10));
  auto second = commit_async(*leader, std::move(m1));
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return held; }));
  }
  const std::string name = "rother";
  auto state = leader->recover(&name);
  ASSERT_TRUE(state) << state.error().message;
  EXPECT_EQ(state->channels.size(), 1u);
  {
    std::lock_guard lock(mu);
    go = true;
  }
  cv.notify_all();
  WriteSet m2;
  m2.put_message(busy, 1, 1, make_message(1, 10));
  auto third = commit_async(*leader, std::move(m2));
  ASSERT_TRUE(shipped(4));
  rep->answer_all(ok_status());
  ASSERT_TRUE(ready(second));
  ASSERT_TRUE(ready(third));
  EXPECT_TRUE(second.get());
  EXPECT_TRUE(third.get());

  std::vector<uint64_t> busy_positions;
  for (const auto& s : rep->take()) {
    if (s.channel == "rbusy") busy_positions.push_back(s.position);
  }
  ASSERT_EQ(busy_positions.size(), 3u);
  EXPECT_EQ(busy_positions[1], before + 1);
  EXPECT_EQ(busy_positions[2], before + 2) << "a position shipped twice";
  EXPECT_EQ(leader->replica_position("rbusy").position, before + 2);
}

TEST(ReplicationTest, FollowerRefusesStaleEpochsAndAsksForGaps) {
  TempDir dir;
  auto rep = std::make_shared<FakeReplicator>();
  auto leader = open_store(dir.sub("leader"), rep);
  const ChannelId ch = leader->allocate_channel_id();
  std::vector<std::future<Status>> done;
  WriteSet d;
  d.put_channel({ch, "rep", "{}"});
  done.push_back(commit_async(*leader, std::move(d)));
  ASSERT_FALSE(ready(done.back()));  // shipped, held: the next write is a group of its own
  for (Seq s = 0; s < 3; ++s) {
    WriteSet m;
    m.put_message(ch, s, 1, make_message(s, 10));
    done.push_back(commit_async(*leader, std::move(m)));
    ASSERT_FALSE(ready(done.back()));
    rep->answer_all(ok_status());
  }
  rep->answer_all(ok_status());
  auto shipments = rep->take();
  ASSERT_EQ(shipments.size(), 4u) << "each commit waited for the one before it";

  auto follower = open_store(dir.sub("follower"), nullptr);
  auto gap = apply(*follower, batch_of(shipments[1]));
  EXPECT_EQ(gap.kind, ApplyOutcome::Kind::kGap);
  EXPECT_EQ(gap.position, 1u) << "resend from the first position it lacks";
  ASSERT_EQ(apply(*follower, batch_of(shipments[0])).kind, ApplyOutcome::Kind::kApplied);
  // A newer leader (epoch 9) wrote position 2.
  auto newer = batch_of(shipments[1]);
  newer.epoch = 9;
  ASSERT_EQ(apply(*follower, newer).kind, ApplyOutcome::Kind::kApplied);
  // The old leader (epoch 7) is refused, naming both epochs, and nothing of it is stored.
  auto stale = apply(*follower, batch_of(shipments[2]));
  EXPECT_EQ(stale.kind, ApplyOutcome::Kind::kStale);
  EXPECT_EQ(stale.epoch, 9u);
  EXPECT_NE(stale.text.find("epoch 7 is stale"), std::string::npos) << stale.text;
  EXPECT_NE(stale.text.find("epoch 9"), std::string::npos) << stale.text;
  auto dup = apply(*follower, newer);
  EXPECT_EQ(dup.kind, ApplyOutcome::Kind::kDuplicate);
  EXPECT_EQ(dup.position, 2u);
  // The refusal survives a restart: the highest epoch is stored with the position.
  follower.reset();
  follower = open_store(dir.sub("follower"), nullptr);
  EXPECT_EQ(apply(*follower, batch_of(shipments[2])).kind, ApplyOutcome::Kind::kStale);
  for (auto& f : done) ASSERT_TRUE(ready(f));
}

TEST(ReplicationTest, AChannelDeletedAndMadeAgainStartsOverOnTheFollower) {
  TempDir dir;
  auto rep = std::make_shared<FakeReplicator>();
  auto leader = open_store(dir.sub("leader"), rep);
  std::vector<std::future<Status>> done;
  auto write = [&](WriteSet ws) {
    done.push_back(commit_async(*leader, std::move(ws)));
    EXPECT_FALSE(ready(done.back()));  // shipped and held: one group each
  };
  const ChannelId first = leader->allocate_channel_id();
  WriteSet a;
  a.put_channel({first, "rep", "{}"});
  a.put_message(first, 0, 1, make_message(1, 10));
  write(std::move(a));
  WriteSet b;
  b.put_message(first, 1, 1, make_message(2, 10));
  write(std::move(b));
  WriteSet del;
  del.delete_channel(first);
  write(std::move(del));
  const ChannelId second = leader->allocate_channel_id();
  WriteSet again;
  again.put_channel({second, "rep", "{}"});
  again.put_message(second, 0, 1, make_message(3, 10));
  write(std::move(again));
  rep->answer_all(ok_status());
  auto shipments = rep->take();
  ASSERT_EQ(shipments.size(), 4u);
  EXPECT_EQ(shipments[3].position, 1u) << "the channel made again starts at position 1";

  // Applied back to back, without waiting for each to be stored.
  auto follower = open_store(dir.sub("follower"), nullptr);
  std::vector<std::future<ApplyOutcome>> outcomes;
  for (const auto& s : shipments) {
    auto p = std::make_shared<std::promise<ApplyOutcome>>();
    outcomes.push_back(p->get_future());
    follower->apply_replicated(batch_of(s), [p](ApplyOutcome o) { p->set_value(std::move(o)); });
  }
  for (auto& o : outcomes) {
    auto got = o.get();
    EXPECT_EQ(got.kind, ApplyOutcome::Kind::kApplied) << got.text;
  }
  follower.reset();
  RecoveredState state;
  follower = open_store(dir.sub("follower"), nullptr, &state);
  ASSERT_EQ(state.channels.size(), 1u);
  auto read = follower->read(state.channels[0].def.id, 0, 10, 10);
  ASSERT_TRUE(read);
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].message.data, make_message(3, 10).data);
}

TEST(ReplicationTest, BadRecordsAreRefusedNamingTheByte) {
  TempDir dir;
  auto follower = open_store(dir.sub("follower"), nullptr);
  ReplicatedBatch b;
  b.channel = "rep";
  b.epoch = 1;
  b.position = 1;
  for (std::string records :
       {std::string("\x00\x00", 2), std::string("\x07\x00\x00", 3), std::string("\x00\x05\x00", 3),
        std::string("\x00\x02Z", 3), std::string("\x00\x00\x00\xff\xff\xff\x7f", 7)}) {
    b.records = records;
    auto o = apply(*follower, b);
    EXPECT_EQ(o.kind, ApplyOutcome::Kind::kFailed);
    EXPECT_NE(o.text.find("record at byte 0"), std::string::npos) << o.text;
  }
  // Nothing was taken: position 1 is still the next one.
  b.records.clear();
  EXPECT_EQ(apply(*follower, b).kind, ApplyOutcome::Kind::kApplied);
}

}  // namespace
}  // namespace witmq::storage
