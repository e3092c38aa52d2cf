// The in-sync set (docs/CLUSTERING.md, "The in-sync set"), against real etcd and three real
// witmqd: a follower that stops acknowledging leaves the set and writes go on with the other two;
// it comes back once it holds the leader's last write; a node out of the set is never elected,
// even when it is the only live replica; a follower whose log differs from the new leader's
// (positions of an older epoch) counts only once a snapshot replaced its copy.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "client/client.h"
#include "cluster/cluster_under_test.h"
#include "daemon/http_client.h"

namespace witmq::cluster::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

Message text_message(const std::string& text) {
  Message m;
  m.data.assign(text.begin(), text.end());
  return m;
}

class InSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WITMQ_REQUIRE_ETCD();
    cluster_ = std::make_unique<ClusterUnderTest>(3);
    for (const auto& id : cluster_->ids()) ASSERT_NE(cluster_->node(id).port(), 0) << id;
    {
      // Through the protocol: placed, and declared on its leader only.
      auto declarer = connect("n1");
      ASSERT_TRUE(declarer);
      ASSERT_TRUE(declarer->declare_channel("rep", {{"replicas", "3"}}));
    }
    ASSERT_TRUE(cluster_->wait_for_leaders({"rep"})) << view("n1").dump();
    leader_ = cluster_->leader_of("rep");
    ASSERT_FALSE(leader_.empty());
    for (const auto& id : cluster_->ids()) {
      if (id != leader_) followers_.push_back(id);
    }
  }

  json view(const std::string& id) {
    auto r = daemon::testing::http_request(cluster_->node(id).http_port(), "GET", "/v1/cluster");
    if (r.status != 200u) return json::object();
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  // The leader of "rep" once it is a node other than `old` (within 30 s); "" when none is.
  std::string new_leader(const std::string& old) {
    std::string next;
    ClusterUnderTest::wait(
        [&] {
          next = cluster_->leader_of("rep");
          return !next.empty() && next != old;
        },
        30s);
    return next != old ? next : std::string();
  }

  // The in-sync set of "rep" in etcd, as node `id` last read it.
  std::set<std::string> in_sync(const std::string& id) {
    std::set<std::string> out;
    const json v = view(id);
    if (!v.contains("channels")) return out;
    for (const json& c : v["channels"]) {
      if (c.value("name", "") != "rep" || !c.contains("in-sync")) continue;
      for (const json& m : c["in-sync"]) out.insert(m.get<std::string>());
    }
    return out;
  }

  std::unique_ptr<client::Client> connect(const std::string& id) {
    client::Options o;
    o.request_timeout = 30s;
    auto c = client::Client::connect("127.0.0.1", cluster_->node(id).port(), "in-sync-test", o);
    EXPECT_TRUE(c.ok()) << id << ": " << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Sends one message through `id`; its text when acknowledged.
  std::optional<std::string> send(client::Client& c, const std::string& text) {
    const std::vector<Message> one = {text_message(text)};
    if (!c.send("rep", one).ok()) return std::nullopt;
    return text;
  }

  std::unique_ptr<ClusterUnderTest> cluster_;
  std::string leader_;
  std::vector<std::string> followers_;
};

// A SIGSTOPped follower leaves the in-sync set (in etcd) and writes go on with the other two; it
// is put back after SIGCONT once it holds the leader's last write. /metrics shows the count.
TEST_F(InSyncTest, StoppedFollowerLeavesTheSetAndComesBackAfterItCatchesUp) {
  ASSERT_EQ(in_sync(leader_), (std::set<std::string>{"n1", "n2", "n3"}));
  auto producer = connect(leader_);
  ASSERT_TRUE(producer);
  ASSERT_TRUE(send(*producer, "before"));

  const std::string stopped = followers_[0];
  cluster_->pause(stopped);
  // Acknowledged once the stopped follower is out of the set (cluster-in-sync-timeout-ms).
  for (int i = 0; i < 20; ++i) {
    auto st = producer->send("rep", std::vector<Message>{text_message(fmt::format("w-{}", i))});
    ASSERT_TRUE(st.ok()) << "2 of 3 in sync: " << st.error().to_string();
  }
  std::set<std::string> without = {"n1", "n2", "n3"};
  without.erase(stopped);
  EXPECT_EQ(in_sync(leader_), without);
  const auto metrics =
      daemon::testing::http_request(cluster_->node(leader_).http_port(), "GET", "/metrics");
  EXPECT_NE(metrics.body.find("witmq_cluster_in_sync_replicas{channel=\"rep\"} 2\n"),
            std::string::npos)
      << metrics.body.substr(0, 400);

  cluster_->resume(stopped);
  int sent = 0;
  const bool back = ClusterUnderTest::wait(
      [&] {
        // Writes go on meanwhile: the set grows back only when the follower holds the last.
        EXPECT_TRUE(send(*producer, fmt::format("after-{}", sent++)));
        return in_sync(leader_).contains(stopped);
      },
      30s);
  EXPECT_TRUE(back) << view(leader_)["replication-state"].dump() << "\nLEADER LOG\n"
                    << cluster_->node(leader_).log() << "\nSTOPPED LOG\n"
                    << cluster_->node(stopped).log();
  EXPECT_EQ(in_sync(leader_), (std::set<std::string>{"n1", "n2", "n3"}));
  const json state = view(leader_)["replication-state"];
  EXPECT_GE(state.value("in-sync-shrinks", 0u), 1u) << state.dump();
  EXPECT_GE(state.value("in-sync-expands", 0u), 1u) << state.dump();
}

// Only a member of the in-sync set is elected: with the leader killed and the other member
// stopped, the follower left out of the set (it was stopped while writes were acknowledged
// without it) is the only live replica, and the channel stays without a leader rather than
// losing those writes. Once the member is back it leads, with every acknowledged write.
TEST_F(InSyncTest, BehindNodeIsNeverElectedAndTheInSyncMemberHasEveryWrite) {
  const std::string behind = followers_[0];
  const std::string member = followers_[1];
  auto producer = connect(leader_);
  ASSERT_TRUE(producer);
  std::set<std::string> acked;
  ASSERT_TRUE(send(*producer, "first"));
  acked.insert("first");
  cluster_->pause(behind);
  for (int i = 0; i < 30; ++i) {
    const auto text = fmt::format("while-{}-was-stopped-{}", behind, i);
    ASSERT_TRUE(send(*producer, text)) << "2 of 3 in sync";
    acked.insert(text);
  }
  ASSERT_FALSE(in_sync(leader_).contains(behind));
  producer.reset();

  cluster_->kill(leader_);
  cluster_->pause(member);
  cluster_->resume(behind);
  // The behind node rejoins (its lease expired while it was stopped) and sees the channel
  // without a leader for as long as the member is away: three lease TTLs past the old leader's
  // lease, and it never takes it.
  const auto deadline = std::chrono::steady_clock::now() + 4 * ClusterUnderTest::kTtlSeconds * 1s;
  bool rejoined = false;
  while (std::chrono::steady_clock::now() < deadline) {
    const json v = view(behind);
    rejoined = rejoined || (v.contains("node") && v["node"]["state"] == "member");
    for (const json& c : v.value("channels", json::array())) {
      if (c.value("name", "") != "rep") continue;
      ASSERT_TRUE(c["leader"].is_null() || c["leader"] != behind)
          << "a node out of the in-sync set was elected: " << v.dump();
    }
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_TRUE(rejoined) << view(behind).dump();
  {
    auto c = connect(behind);
    ASSERT_TRUE(c);
    const auto st = c->send("rep", std::vector<Message>{text_message("no leader")});
    ASSERT_FALSE(st.ok()) << "acknowledged with no in-sync member alive";
    EXPECT_EQ(st.error().code, ErrorCode::kUnavailable) << st.error().to_string();
  }

  cluster_->resume(member);
  ASSERT_TRUE(ClusterUnderTest::wait([&] { return cluster_->leader_of("rep") == member; }, 30s))
      << view(member).dump();
  // Every acknowledged write is on the new leader (browsed: a receive would write, and no write
  // is acknowledged while the dead old leader is still in the set and the behind node cannot
  // catch up from this leader's log).
  std::set<std::string> found;
  uint64_t from = 0;
  for (int page = 0; page < 20; ++page) {
    auto r = daemon::testing::http_request(cluster_->node(member).http_port(), "GET",
                                           fmt::format("/v1/channels/rep/messages?from={}", from));
    ASSERT_EQ(r.status, 200u) << r;
    const json j = json::parse(r.body);
    if (j["messages"].empty()) break;
    for (const json& m : j["messages"]) found.insert(m.value("data", ""));
    from = j["next"].get<uint64_t>();
  }
  for (const auto& text : acked) EXPECT_TRUE(found.contains(text)) << "lost: " << text;
}

// A follower holding positions from an older epoch where the new leader wrote its own (the old
// leader's writes no one else held, refused for want of a majority) answers the new leader's
// batches `diverged` (log matching): none of its answers counts, and it enters the in-sync set
// only once it holds the new leader's snapshot and last position.
TEST_F(InSyncTest, FollowerWithAnOlderEpochsPositionsNeverCounts) {
  const std::string old_leader = leader_;
  auto producer = connect(old_leader);
  ASSERT_TRUE(producer);
  ASSERT_TRUE(send(*producer, "held by all"));
  // The followers hear nothing more from the leader: its writes are held by it alone.
  for (const auto& f : followers_) cluster_->peer_link(f).drop();
  {
    auto st = producer->send(
        "rep", std::vector<Message>{text_message("alone-1"), text_message("alone-2")});
    ASSERT_FALSE(st.ok()) << "acknowledged by the leader alone";
  }
  producer.reset();
  cluster_->kill(old_leader);
  for (const auto& f : followers_) cluster_->peer_link(f).heal();
  const std::string next = new_leader(old_leader);
  ASSERT_FALSE(next.empty()) << "no node but " << old_leader << " was elected within 30 s";
  auto writer = connect(next);
  ASSERT_TRUE(writer);
  // Acknowledged by the two (the killed node leaves the set first).
  ASSERT_TRUE(send(*writer, "new epoch 1"));
  cluster_->restart(old_leader);
  // Writes go on until the old leader is back in the set, which it may join only once its copy
  // is the new leader's snapshot.
  const auto until = std::chrono::steady_clock::now() + 30s;
  bool back = false;
  int i = 0;
  while (!back && std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(send(*writer, fmt::format("new epoch {}", ++i)));
    back = in_sync(next).contains(old_leader);
    if (back) {
      ASSERT_GE(view(next)["replication-state"].value("snapshots-sent", 0u), 1u)
          << "a follower with another epoch's positions joined the in-sync set without a "
             "snapshot: "
          << view(next)["replication-state"].dump();
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(back) << view(next)["replication-state"].dump() << "\nOLD LEADER LOG\n"
                    << cluster_->node(old_leader).log();
  EXPECT_GE(view(next)["replication-state"].value("diverged", 0u), 1u)
      << view(next)["replication-state"].dump();
}

}  // namespace
}  // namespace witmq::cluster::testing

namespace witmq::cluster::testing {
namespace {

// A killed leader is not registered any more (its lease expired: that is why there is an
// election), so the new leader takes it out of the in-sync set in its election transaction,
// before any write: the first write of the new epoch does not wait cluster-in-sync-timeout-ms for
// a node that cannot answer. With no write after the kill, only the election can have done it.
TEST_F(InSyncTest, KilledLeaderLeavesTheSetAtTheElection) {
  auto producer = connect(leader_);
  ASSERT_TRUE(producer);
  ASSERT_TRUE(send(*producer, "before"));
  producer.reset();
  ASSERT_EQ(in_sync(leader_), (std::set<std::string>{"n1", "n2", "n3"}));
  const std::string old_leader = leader_;
  cluster_->kill(old_leader);
  const std::string next = new_leader(old_leader);
  ASSERT_FALSE(next.empty()) << "no node but " << old_leader << " was elected within 30 s";
  const std::set<std::string> survivors(followers_.begin(), followers_.end());
  EXPECT_EQ(in_sync(next), survivors) << view(next).dump();
  auto writer = connect(next);
  ASSERT_TRUE(writer);
  ASSERT_TRUE(send(*writer, "after"));
  EXPECT_EQ(view(next)["replication-state"].value("in-sync-shrinks", 0u), 0u)
      << "the killed leader left the set by the write timeout, not at the election: "
      << view(next)["replication-state"].dump();
}

}  // namespace
}  // namespace witmq::cluster::testing
