// Replication end to end (docs/CLUSTERING.md, "Replication"): three real witmqd on a real etcd,
// a channel with replicas 3. Every send-ok'd message, and every completed message completed, is
// found in each follower's own store (opened after the cluster is killed); with one follower
// down writes are still acknowledged by the other two; with two down they fail with
// `unavailable` within cluster-replication-timeout-ms.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <functional>
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
using nlohmann::json;
using testing::Etcd;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::string_view kSecret = "replication-test-secret-0123456789";
constexpr auto kReplicationTimeout = 2s;

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
  return m;
}

std::string text_of(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

class ReplicationClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WITMQ_REQUIRE_ETCD();
    etcd_ = std::make_unique<Etcd>();
    for (const char* id : {"n1", "n2", "n3"}) {
      nodes_[id] = std::make_unique<Daemon>(std::vector<std::string>{
          "--set", std::string("cluster-node-id=") + id, "--set", "cluster-name=repl", "--set",
          "cluster-etcd-endpoints=[\"" + etcd_->endpoint() + "\"]", "--set",
          "cluster-lease-ttl-seconds=2", "--set", "cluster-etcd-timeout-ms=500", "--set",
          "cluster-peer-listen=127.0.0.1:0", "--set", "cluster-peer-token=" + std::string(kSecret),
          "--set",
          fmt::format("cluster-replication-timeout-ms={}",
                      std::chrono::milliseconds(kReplicationTimeout).count())});
      ASSERT_NE(nodes_[id]->port(), 0) << id << " did not start";
    }
    // Every node sees the others and has its peer links up.
    ASSERT_TRUE(wait_until(
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
        30s))
        << view("n1").dump();
  }

  json view(const std::string& id) {
    auto r = daemon::testing::http_request(nodes_[id]->http_port(), "GET", "/v1/cluster", "");
    if (r.status != 200u) return json::object();
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
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

  std::unique_ptr<Etcd> etcd_;
  std::map<std::string, std::unique_ptr<Daemon>> nodes_;
};

// What a store holds of a channel: its messages by text, the texts of those settled (below the
// cursor's floor, or with an accepted record), how many are settled in all (settled messages
// below the floor are removed by housekeeping, on the leader and so on its followers), and the
// next sequence.
struct Held {
  std::map<std::string, storage::Seq> messages;
  std::set<std::string> settled;
  uint64_t settled_total = 0;
  storage::Seq next = 0;
  bool found = false;
};

Held read_store(const std::string& dir, const std::string& channel) {
  Held out;
  storage::StoreOptions o;
  o.path = dir;
  auto store = storage::Store::open(o);
  EXPECT_TRUE(store) << dir << ": " << store.error().message;
  if (!store) return out;
  auto state = (*store)->recover();
  EXPECT_TRUE(state) << dir << ": " << state.error().message;
  if (!state) return out;
  for (const auto& c : state->channels) {
    if (c.def.name != channel) continue;
    out.found = true;
    out.next = c.head.next;
    auto msgs = (*store)->read(c.def.id, 0, c.head.next, SIZE_MAX);
    EXPECT_TRUE(msgs);
    std::map<storage::Seq, std::string> by_seq;
    for (const auto& m : *msgs) {
      out.messages[text_of(m.message)] = m.seq;
      by_seq[m.seq] = text_of(m.message);
    }
    for (const auto& s : state->subscriptions) {
      if (s.def.channel != c.def.id) continue;
      out.settled_total += s.cursor.floor;
      for (const auto& [seq, r] : s.deliveries) {
        if (r.status == storage::DeliveryStatus::kAccepted && seq >= s.cursor.floor)
          ++out.settled_total;
      }
      for (const auto& [seq, text] : by_seq) {
        if (seq < s.cursor.floor) out.settled.insert(text);
      }
      for (const auto& [seq, r] : s.deliveries) {
        if (r.status == storage::DeliveryStatus::kAccepted && by_seq.contains(seq))
          out.settled.insert(by_seq[seq]);
      }
    }
  }
  return out;
}

TEST_F(ReplicationClusterTest, EveryFollowerHoldsEverySendOkdMessageAndEveryCompletion) {
  auto declarer = connect("n1");
  ASSERT_TRUE(declarer);
  const client::ChannelSettings settings = {{"replicas", "3"}};
  ASSERT_TRUE(declarer->declare_channel("rep", settings));
  const std::string leader = leader_of("rep");
  ASSERT_FALSE(leader.empty()) << view("n1").dump();

  auto producer = connect(leader);
  ASSERT_TRUE(producer);
  constexpr int kBatches = 40, kPerBatch = 50;
  std::set<std::string> sent;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<Message> batch;
    for (int i = 0; i < kPerBatch; ++i) batch.push_back(text_message(fmt::format("m-{}-{}", b, i)));
    auto st = producer->send("rep", batch);
    ASSERT_TRUE(st) << st.error().to_string();
    for (const auto& m : batch) sent.insert(text_of(m));
  }
  std::set<std::string> completed;
  auto consumer = connect(leader);
  ASSERT_TRUE(consumer);
  while (completed.size() < 700) {
    auto got = consumer->subscribe_try_receive("rep", 1000);
    ASSERT_TRUE(got) << got.error().to_string();
    ASSERT_TRUE(got->has_value());
    for (const auto& m : **got) {
      auto st = consumer->complete_message(m);
      ASSERT_TRUE(st) << st.error().to_string();
      completed.insert(text_of(m));
    }
  }
  // Every follower acknowledged the leader's last position (the slower of the two need not
  // have, for the writes to be acknowledged).
  ASSERT_TRUE(wait_until(
      [&] {
        const json c = view(leader)["replication-state"]["channels-led"]["rep"];
        if (!c.is_object() || c["followers-acked"].size() != 2) return false;
        for (const auto& [id, acked] : c["followers-acked"].items()) {
          if (acked.get<uint64_t>() != c["position"].get<uint64_t>()) return false;
        }
        return true;
      },
      20s))
      << view(leader)["replication-state"].dump();
  producer.reset();
  consumer.reset();
  declarer.reset();
  for (auto& [id, d] : nodes_) d->stop(SIGKILL);

  for (auto& [id, d] : nodes_) {
    if (id == leader) continue;
    const Held held = read_store(d->data_dir(), "rep");
    ASSERT_TRUE(held.found) << "follower " << id << " holds no channel 'rep'";
    // Every message sent and not completed is there, unsettled; every completed one is there
    // settled or was removed as settled; the log's length is every message sent.
    size_t missing = 0, wrongly_settled = 0, unsettled = 0;
    for (const auto& text : sent) {
      if (completed.contains(text)) {
        if (held.messages.contains(text) && !held.settled.contains(text)) ++unsettled;
        continue;
      }
      if (!held.messages.contains(text)) ++missing;
      if (held.settled.contains(text)) ++wrongly_settled;
    }
    EXPECT_EQ(missing, 0u) << "follower " << id << " lacks send-ok'd messages";
    EXPECT_EQ(wrongly_settled, 0u) << "follower " << id;
    EXPECT_EQ(unsettled, 0u) << "follower " << id << " does not hold completions";
    EXPECT_EQ(held.settled_total, completed.size()) << "follower " << id;
    EXPECT_EQ(held.next, sent.size()) << "follower " << id;
  }
}

TEST_F(ReplicationClusterTest, OneFollowerDownStillAcknowledgesTwoDownIsUnavailableInTime) {
  auto declarer = connect("n1");
  ASSERT_TRUE(declarer);
  const client::ChannelSettings settings = {{"replicas", "3"}};
  ASSERT_TRUE(declarer->declare_channel("rep", settings));
  const std::string leader = leader_of("rep");
  ASSERT_FALSE(leader.empty()) << view("n1").dump();
  declarer.reset();
  std::vector<std::string> followers;
  for (const auto& [id, d] : nodes_) {
    if (id != leader) followers.push_back(id);
  }

  auto producer = connect(leader);
  ASSERT_TRUE(producer);
  const std::vector<Message> one = {text_message("before")};
  ASSERT_TRUE(producer->send("rep", one));

  nodes_[followers[0]]->stop(SIGKILL);
  const std::vector<Message> two = {text_message("one follower down")};
  auto st = producer->send("rep", two);
  ASSERT_TRUE(st) << "2 of 3 replicas hold it: " << st.error().to_string();

  nodes_[followers[1]]->stop(SIGKILL);
  const std::vector<Message> three = {text_message("two followers down")};
  const auto started = Clock::now();
  st = producer->send("rep", three);
  const auto took = Clock::now() - started;
  ASSERT_FALSE(st) << "acknowledged with only the leader holding it";
  EXPECT_EQ(st.error().code, ErrorCode::kUnavailable) << st.error().to_string();
  EXPECT_NE(st.error().message.find("majority"), std::string::npos) << st.error().to_string();
  EXPECT_GE(took, kReplicationTimeout - 100ms);
  EXPECT_LT(took, kReplicationTimeout + 5s) << "not within the bound";
}

}  // namespace
}  // namespace witmq::cluster
