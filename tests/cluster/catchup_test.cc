// Catch-up end to end (docs/CLUSTERING.md, "Snapshots"): three real witmqd on a real etcd, a
// channel with replicas 3 and a small retained log (cluster-replication-retained-bytes). A
// follower stopped while more than the retained log is written, and a node restarted with an
// empty data directory, are each sent a snapshot by the leader; afterwards each holds every
// send-ok'd message and every completion in its own store (opened after the cluster is killed).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "cluster/etcd_process.h"
#include "daemon/daemon_process.h"
#include "daemon/http_client.h"
#include "storage/store.h"

namespace witmq::cluster {
namespace {

using daemon::testing::Daemon;
using daemon::testing::make_temp_dir;
using nlohmann::json;
using testing::Etcd;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::string_view kSecret = "catchup-test-secret-0123456789abc";
// Far less than what is written while the follower is away.
constexpr size_t kRetainedBytes = 64 * 1024;

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

Message text_message(const std::string& text) {
  Message m;
  m.data.assign(text.begin(), text.end());
  m.data.resize(1024, '.');  // a kilobyte each: the retained log holds about 60
  return m;
}

std::string text_of(const Message& m) {
  std::string s(m.data.begin(), m.data.end());
  return s.substr(0, s.find('.'));
}

class CatchUpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WITMQ_REQUIRE_ETCD();
    etcd_ = std::make_unique<Etcd>();
    for (const char* id : {"n1", "n2", "n3"}) {
      dirs_[id] = make_temp_dir(std::string("catchup-") + id);
      nodes_[id] = std::make_unique<Daemon>(
          std::vector<std::string>{
              "--set", std::string("cluster-node-id=") + id, "--set", "cluster-name=catchup",
              "--set", "cluster-etcd-endpoints=[\"" + etcd_->endpoint() + "\"]", "--set",
              "cluster-lease-ttl-seconds=2", "--set", "cluster-etcd-timeout-ms=500", "--set",
              "cluster-peer-listen=127.0.0.1:0", "--set",
              "cluster-peer-token=" + std::string(kSecret), "--set",
              "cluster-replication-timeout-ms=3000", "--set",
              fmt::format("cluster-replication-retained-bytes={}", kRetainedBytes)},
          dirs_[id]);
      ASSERT_NE(nodes_[id]->port(), 0) << id << " did not start";
    }
    ASSERT_TRUE(all_linked()) << view("n1").dump();
  }

  void TearDown() override {
    nodes_.clear();
    for (const auto& [id, dir] : dirs_) std::filesystem::remove_all(dir);
  }

  bool all_linked() {
    return wait_until(
        [&] {
          for (const auto& [id, d] : nodes_) {
            json v = view(id);
            if (v["nodes"].size() != 3) return false;
            const json& links = v["peer-link"]["links"];
            if (links.size() != 2) return false;
            for (const json& l : links) {
              if (l.value("state", "") != "up") return false;
            }
          }
          return true;
        },
        30s);
  }

  json view(const std::string& id) {
    auto r = daemon::testing::http_request(nodes_[id]->http_port(), "GET", "/v1/cluster", "");
    if (r.status != 200u) return json::object();
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  // Declares channel "rep" with 3 replicas through n1; its leader ("" when none was elected).
  std::string declare_rep() {
    auto declarer = connect("n1");
    const bool declared = declarer && declarer->declare_channel("rep", {{"replicas", "3"}});
    EXPECT_TRUE(declared);
    declarer.reset();
    return declared ? leader_of("rep") : std::string();
  }

  // The nodes other than `id`.
  std::vector<std::string> others(const std::string& id) const {
    std::vector<std::string> out;
    for (const auto& [other, d] : nodes_) {
      if (other != id) out.push_back(other);
    }
    return out;
  }

  // SIGKILLs node `id` and starts it again on an empty data directory; false when it did not
  // start.
  bool restart_empty(const std::string& id) {
    nodes_[id]->stop(SIGKILL);
    std::filesystem::remove_all(dirs_[id]);
    std::filesystem::create_directories(dirs_[id]);
    nodes_[id]->start();
    return nodes_[id]->port() != 0;
  }

  std::string leader_of(const std::string& channel) {
    std::string leader;
    wait_until(
        [&] {
          const json v = view("n1");
          for (const json& c : v["channels"]) {
            if (c.value("name", "") == channel && c.contains("leader") && c["leader"].is_string())
              leader = c["leader"].get<std::string>();
          }
          return !leader.empty() && view(leader)["node"]["leads"].contains(channel);
        },
        20s);
    return leader;
  }

  std::unique_ptr<client::Client> connect(const std::string& node) {
    client::Options o;
    o.request_timeout = 30s;
    auto c = client::Client::connect("127.0.0.1", nodes_[node]->port(), "", o);
    EXPECT_TRUE(c.ok()) << node << ": " << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Sends `count` messages named prefix-i in batches of 20, each send-ok'd.
  void send(client::Client& c, const std::string& prefix, int count) {
    for (int i = 0; i < count; i += 20) {
      std::vector<Message> batch;
      for (int j = i; j < i + 20 && j < count; ++j)
        batch.push_back(text_message(fmt::format("{}-{}", prefix, j)));
      auto st = c.send("rep", batch);
      ASSERT_TRUE(st) << st.error().to_string();
      for (const auto& m : batch) sent_.insert(text_of(m));
    }
  }

  void complete(client::Client& c, size_t count) {
    const size_t target = completed_.size() + count;
    while (completed_.size() < target) {
      auto got = c.subscribe_try_receive("rep", 1000);
      ASSERT_TRUE(got) << got.error().to_string();
      ASSERT_TRUE(got->has_value());
      for (const auto& m : **got) {
        auto st = c.complete_message(m);
        ASSERT_TRUE(st) << st.error().to_string();
        completed_.insert(text_of(m));
      }
    }
  }

  // Waits until `follower` has acknowledged the leader's last position of "rep".
  bool caught_up(const std::string& leader, const std::string& follower) {
    return wait_until(
        [&] {
          const json c = view(leader)["replication-state"]["channels-led"]["rep"];
          if (!c.is_object() || !c["followers-acked"].contains(follower)) return false;
          return c["followers-acked"][follower].get<uint64_t>() == c["position"].get<uint64_t>() &&
                 c["followers-catching-up"].empty();
        },
        60s);
  }

  void expect_holds_everything(const std::string& id) {
    storage::StoreOptions o;
    o.path = dirs_[id];
    auto store = storage::Store::open(o);
    ASSERT_TRUE(store) << id << ": " << store.error().message;
    auto state = (*store)->recover();
    ASSERT_TRUE(state) << id << ": " << state.error().message;
    int copies = 0;
    for (const auto& c : state->channels) {
      if (c.def.name != "rep") continue;
      ++copies;
      auto msgs = (*store)->read(c.def.id, 0, c.head.next, SIZE_MAX);
      ASSERT_TRUE(msgs);
      std::map<storage::Seq, std::string> by_seq;
      std::set<std::string> held;
      for (const auto& m : *msgs) {
        by_seq[m.seq] = text_of(m.message);
        held.insert(text_of(m.message));
      }
      std::set<std::string> settled;
      for (const auto& s : state->subscriptions) {
        if (s.def.channel != c.def.id) continue;
        for (const auto& [seq, text] : by_seq) {
          if (seq < s.cursor.floor) settled.insert(text);
        }
        for (const auto& [seq, r] : s.deliveries) {
          if (r.status == storage::DeliveryStatus::kAccepted && by_seq.contains(seq))
            settled.insert(by_seq[seq]);
        }
      }
      size_t missing = 0, wrongly_settled = 0, unsettled = 0;
      for (const auto& text : sent_) {
        if (completed_.contains(text)) {
          if (held.contains(text) && !settled.contains(text)) ++unsettled;
          continue;
        }
        if (!held.contains(text)) ++missing;
        if (settled.contains(text)) ++wrongly_settled;
      }
      EXPECT_EQ(missing, 0u) << id << " lacks send-ok'd messages";
      EXPECT_EQ(wrongly_settled, 0u) << id;
      EXPECT_EQ(unsettled, 0u) << id << " does not hold completions";
      EXPECT_EQ(c.head.next, sent_.size()) << id;
    }
    EXPECT_EQ(copies, 1) << id;
  }

  // Leaves node `id`'s copy of "rep" (the node is stopped) as a crash in the middle of a snapshot
  // leaves it: the snapshot's first chunk stored, no other.
  void leave_mid_snapshot(const std::string& id) {
    storage::StoreOptions o;
    o.path = dirs_[id];
    auto store = storage::Store::open(o);
    ASSERT_TRUE(store) << store.error().message;
    ASSERT_TRUE((*store)->recover());
    auto snap = (*store)->snapshot_channel("rep");
    ASSERT_TRUE(snap) << snap.error().message;
    bool done = false;
    auto records = (*snap)->next(1, done);
    ASSERT_TRUE(records) << records.error().message;
    storage::SnapshotChunk first;
    first.channel = "rep";
    first.epoch = (*snap)->position().epoch;
    first.position = (*snap)->position().position;
    first.index = 0;
    first.last = false;
    first.records = std::move(*records);
    snap->reset();
    std::promise<storage::ApplyOutcome> applied;
    (*store)->apply_snapshot(first, [&applied](storage::ApplyOutcome o) { applied.set_value(o); });
    ASSERT_EQ(applied.get_future().get().kind, storage::ApplyOutcome::Kind::kApplied);
    ASSERT_EQ((*store)->replica_catching_up(), std::vector<std::string>{"rep"});
  }

  std::unique_ptr<Etcd> etcd_;
  std::map<std::string, std::string> dirs_;
  std::map<std::string, std::unique_ptr<Daemon>> nodes_;
  std::set<std::string> sent_, completed_;
};

TEST_F(CatchUpTest, AFollowerFarBehindAndAnEmptyNodeAreSentSnapshotsAndHoldEverything) {
  const std::string leader = declare_rep();
  ASSERT_FALSE(leader.empty()) << view("n1").dump();
  const std::vector<std::string> followers = others(leader);
  auto c = connect(leader);
  ASSERT_TRUE(c);
  send(*c, "before", 40);
  complete(*c, 10);
  ASSERT_TRUE(caught_up(leader, followers[0]));

  // Far behind: stopped while five times the retained log is written and settled.
  nodes_[followers[0]]->stop(SIGKILL);
  send(*c, "away", 320);
  complete(*c, 100);
  nodes_[followers[0]]->start();
  ASSERT_NE(nodes_[followers[0]]->port(), 0);
  send(*c, "back", 20);  // writes go on while it catches up
  ASSERT_TRUE(caught_up(leader, followers[0])) << view(leader)["replication-state"].dump() << "\n"
                                               << view(followers[0])["replication-state"].dump();
  EXPECT_GE(view(leader)["replication-state"]["snapshots-sent"].get<uint64_t>(), 1u);
  EXPECT_EQ(view(followers[0])["replication-state"]["snapshots-received"], 1)
      << view(followers[0])["replication-state"].dump();
  EXPECT_EQ(view(followers[0])["replication-state"]["catching-up"], json::array());

  // Empty: the other follower comes back with nothing.
  ASSERT_TRUE(restart_empty(followers[1]));
  send(*c, "empty", 40);
  complete(*c, 20);
  ASSERT_TRUE(caught_up(leader, followers[1])) << view(leader)["replication-state"].dump() << "\n"
                                               << view(followers[1])["replication-state"].dump();
  EXPECT_EQ(view(followers[1])["replication-state"]["snapshots-received"], 1)
      << view(followers[1])["replication-state"].dump();
  // Caught up, both hold what the leader holds: every position after the snapshot too.
  ASSERT_TRUE(caught_up(leader, followers[0]));
  c.reset();
  for (auto& [id, d] : nodes_) d->stop(SIGKILL);
  for (const auto& id : followers) expect_holds_everything(id);
  expect_holds_everything(leader);
}

// An in-sync member whose copy is replaced by a snapshot (restarted with an empty data directory
// before any write could take it out of the set) leaves the in-sync set when the leader starts
// the snapshot, and is put back only once it holds the whole snapshot, at the leader's last
// position (docs/CLUSTERING.md, "Snapshots and the in-sync set").
TEST_F(CatchUpTest, AnInSyncMemberBeingSentASnapshotLeavesTheSetUntilItHoldsTheLast) {
  const std::string leader = declare_rep();
  ASSERT_FALSE(leader.empty()) << view("n1").dump();
  const std::vector<std::string> followers = others(leader);
  auto c = connect(leader);
  ASSERT_TRUE(c);
  // More than the retained log: an empty copy cannot be brought up to date by resending.
  send(*c, "before", 120);
  for (const auto& f : followers) ASSERT_TRUE(caught_up(leader, f));
  auto in_sync = [&] {
    std::set<std::string> out;
    const json ch = view(leader)["replication-state"]["channels-led"]["rep"];
    for (const json& m : ch.value("in-sync", json::array())) out.insert(m.get<std::string>());
    return out;
  };
  const std::set<std::string> all = {"n1", "n2", "n3"};
  ASSERT_EQ(in_sync(), all);
  const json before = view(leader)["replication-state"];

  // No write while it is away or after: nothing but the snapshot can take it out of the set.
  const std::string emptied = followers[0];
  ASSERT_TRUE(restart_empty(emptied));
  ASSERT_TRUE(wait_until(
      [&] {
        const json st = view(leader)["replication-state"];
        return st.value("snapshots-sent", 0u) > before["snapshots-sent"].get<uint64_t>();
      },
      60s))
      << view(leader)["replication-state"].dump();
  ASSERT_TRUE(caught_up(leader, emptied)) << view(leader)["replication-state"].dump();
  ASSERT_TRUE(wait_until([&] { return in_sync() == all; }, 30s))
      << "not put back after the snapshot: " << view(leader)["replication-state"].dump();
  const json after = view(leader)["replication-state"];
  EXPECT_GT(after["snapshots-sent"].get<uint64_t>(), before["snapshots-sent"].get<uint64_t>())
      << after.dump();
  EXPECT_GT(after["in-sync-shrinks"].get<uint64_t>(), before["in-sync-shrinks"].get<uint64_t>())
      << "an in-sync member being sent a snapshot stayed in the set: " << after.dump();
  EXPECT_GT(after["in-sync-expands"].get<uint64_t>(), before["in-sync-expands"].get<uint64_t>())
      << after.dump();
  EXPECT_NE(
      nodes_[leader]->log().find(fmt::format(
          "taking follower '{}' out of the in-sync set: it is being sent a snapshot", emptied)),
      std::string::npos)
      << nodes_[leader]->log();
  c.reset();
  for (auto& [id, d] : nodes_) d->stop(SIGKILL);
  expect_holds_everything(emptied);
}

// A node whose copy of a channel is catching up (an incomplete snapshot: a crash in the middle of
// one) declines the candidacy for it even as the first live member of its in-sync set, and its
// /readyz answers 503 naming the channel; the next member of the set is elected instead, after
// the channel has been leaderless for a lease TTL, and sends it a snapshot; then it is ready.
TEST_F(CatchUpTest, ANodeCatchingUpDeclinesToLeadAndIsNotReady) {
  const std::string leader = declare_rep();
  ASSERT_FALSE(leader.empty()) << view("n1").dump();
  auto c = connect(leader);
  ASSERT_TRUE(c);
  send(*c, "before", 40);
  // The placement order (preferred leader first), as the leader has it.
  std::vector<std::string> replicas;
  const json led = view(leader);
  for (const json& r : led["replication-state"]["channels-led"]["rep"]["replicas"]) {
    replicas.push_back(r.get<std::string>());
  }
  ASSERT_EQ(replicas.size(), 3u) << view(leader).dump();
  for (const auto& id : replicas) {
    if (id != leader) {
      ASSERT_TRUE(caught_up(leader, id));
    }
  }
  c.reset();
  // Every member of the set holds everything; all three stop. The first replica's copy is then
  // left as a crash in the middle of a snapshot leaves it.
  for (auto& [id, d] : nodes_) d->stop(SIGKILL);
  const std::string catching = replicas[0], next = replicas[1];
  ASSERT_NO_FATAL_FAILURE(leave_mid_snapshot(catching));
  // The first two replicas come back; the third stays away. Its lease runs out: no leader.
  nodes_[catching]->start();
  nodes_[next]->start();
  ASSERT_NE(nodes_[catching]->port(), 0);
  ASSERT_NE(nodes_[next]->port(), 0);
  ASSERT_TRUE(wait_until(
      [&] {
        auto r = daemon::testing::http_request(nodes_[catching]->http_port(), "GET", "/readyz", "");
        return r.status == 503u && r.body.find("catching up") != std::string::npos;
      },
      20s))
      << daemon::testing::http_request(nodes_[catching]->http_port(), "GET", "/readyz", "").body;
  const auto r = daemon::testing::http_request(nodes_[catching]->http_port(), "GET", "/readyz", "");
  EXPECT_NE(r.body.find("rep"), std::string::npos) << r.body;
  EXPECT_EQ(view(catching)["node"].value("state", ""), "member") << view(catching).dump();

  // The next member leads; the one catching up never does, and is sent a snapshot.
  ASSERT_TRUE(wait_until([&] { return view(next)["node"]["leads"].contains("rep"); }, 30s))
      << view(next).dump() << "\n"
      << nodes_[catching]->log();
  EXPECT_NE(nodes_[catching]->log().find("declines to lead channel rep"), std::string::npos)
      << nodes_[catching]->log();
  EXPECT_EQ(nodes_[catching]->log().find("leads channel rep in epoch"), std::string::npos)
      << nodes_[catching]->log();
  // The new leader's first write reaches the node, which answers that its copy is incomplete,
  // and is sent a snapshot.
  // (The stopped third node is still in the set: a first write may fail with `unavailable` while
  // the leader takes it out; the same messages are sent again then.)
  {
    auto writer = connect(next);
    ASSERT_TRUE(writer);
    std::vector<Message> batch;
    for (int j = 0; j < 20; ++j) batch.push_back(text_message(fmt::format("after-{}", j)));
    bool sent = false;
    for (int attempt = 0; attempt < 5 && !sent; ++attempt) sent = writer->send("rep", batch).ok();
    ASSERT_TRUE(sent);
    for (const auto& m : batch) sent_.insert(text_of(m));
  }
  ASSERT_TRUE(wait_until(
      [&] {
        return daemon::testing::http_request(nodes_[catching]->http_port(), "GET", "/readyz", "")
                   .status == 200u;
      },
      30s))
      << daemon::testing::http_request(nodes_[catching]->http_port(), "GET", "/readyz", "").body
      << "\n"
      << view(next)["replication-state"].dump();
  EXPECT_EQ(view(catching)["replication-state"]["catching-up"], json::array());
  // Everything sent before is there, through the node that caught up.
  auto reader = connect(catching);
  ASSERT_TRUE(reader);
  std::set<std::string> got;
  for (int i = 0; i < 100 && got.size() < sent_.size(); ++i) {
    auto batch = reader->subscribe_try_receive("rep", 1000);
    ASSERT_TRUE(batch) << batch.error().to_string();
    if (!batch->has_value()) continue;
    for (const auto& m : **batch) got.insert(text_of(m));
  }
  EXPECT_EQ(got, sent_);
}

// A leader restarted at once on an empty data directory finds its old registration (same host
// and data directory) and revokes its lease, which ends its leadership: it is then the channel's
// first candidate, and etcd still counts it in the in-sync set. It declines the channel (it holds
// none of it); another member leads, sends it the channel, and nothing acknowledged is lost.
TEST_F(CatchUpTest, ANodeBackWithAnEmptyDataDirectoryDoesNotLeadWithIt) {
  const std::string leader = declare_rep();
  ASSERT_FALSE(leader.empty()) << view("n1").dump();
  auto c = connect(leader);
  ASSERT_TRUE(c);
  send(*c, "before", 40);
  for (const auto& [id, d] : nodes_) {
    if (id != leader) {
      ASSERT_TRUE(caught_up(leader, id));
    }
  }
  c.reset();
  ASSERT_TRUE(restart_empty(leader));
  std::string other;
  for (const auto& [id, d] : nodes_) {
    if (id != leader) other = id;
  }
  // Everything sent before is still there, read through another node.
  auto reader = connect(other);
  ASSERT_TRUE(reader);
  std::set<std::string> got;
  const auto deadline = Clock::now() + 60s;
  while (got.size() < sent_.size() && Clock::now() < deadline) {
    auto batch = reader->subscribe_try_receive("rep", 1000);
    if (!batch || !batch->has_value()) {
      std::this_thread::sleep_for(100ms);
      continue;
    }
    for (const auto& m : **batch) got.insert(text_of(m));
  }
  EXPECT_EQ(got, sent_) << nodes_[leader]->log();
  EXPECT_NE(
      nodes_[leader]->log().find("declines to lead channel rep: its data directory was empty"),
      std::string::npos)
      << nodes_[leader]->log();
}

// A follower whose copy of a channel is an incomplete snapshot (it crashed in the middle of one)
// comes back after the channel was deleted: its leader has no state of the channel to send, and
// tells it to drop its copy (an empty snapshot), so that it does not stay `catching-up`, and
// unready, for good.
TEST_F(CatchUpTest, AnIncompleteCopyOfADeletedChannelIsDroppedAndTheNodeIsReady) {
  const std::string leader = declare_rep();
  ASSERT_FALSE(leader.empty()) << view("n1").dump();
  auto c = connect(leader);
  ASSERT_TRUE(c);
  send(*c, "before", 40);
  c.reset();
  std::vector<std::string> replicas;
  const json led = view(leader);
  for (const json& r : led["replication-state"]["channels-led"]["rep"]["replicas"]) {
    replicas.push_back(r.get<std::string>());
  }
  ASSERT_EQ(replicas.size(), 3u) << led.dump();
  // A follower that is not the preferred leader (which would get the channel handed back).
  std::string follower;
  for (const auto& id : replicas) {
    if (id != leader && id != replicas[0]) follower = id;
  }
  ASSERT_FALSE(follower.empty());
  ASSERT_TRUE(caught_up(leader, follower));
  nodes_[follower]->stop(SIGKILL);
  ASSERT_NO_FATAL_FAILURE(leave_mid_snapshot(follower));
  auto deleted =
      daemon::testing::http_request(nodes_[leader]->http_port(), "DELETE", "/v1/channels/rep", "");
  ASSERT_EQ(deleted.status, 200u) << deleted;
  nodes_[follower]->start();
  ASSERT_NE(nodes_[follower]->port(), 0);
  auto ready = [&] {
    return daemon::testing::http_request(nodes_[follower]->http_port(), "GET", "/readyz", "");
  };
  ASSERT_TRUE(wait_until([&] { return ready().status == 200u; }, 30s))
      << ready().body << "\n"
      << view(leader)["replication-state"].dump() << "\n"
      << nodes_[leader]->log();
  EXPECT_EQ(view(follower)["replication-state"]["catching-up"], json::array())
      << view(follower).dump();
  EXPECT_NE(nodes_[leader]->log().find("to drop its copy"), std::string::npos)
      << nodes_[leader]->log();
  // Nothing of the channel is left in the follower's store.
  nodes_[follower]->stop(SIGKILL);
  storage::StoreOptions o;
  o.path = dirs_[follower];
  auto store = storage::Store::open(o);
  ASSERT_TRUE(store) << store.error().message;
  auto state = (*store)->recover();
  ASSERT_TRUE(state) << state.error().message;
  for (const auto& ch : state->channels) EXPECT_NE(ch.def.name, "rep");
  EXPECT_EQ((*store)->replica_catching_up(), std::vector<std::string>());
}

}  // namespace
}  // namespace witmq::cluster
