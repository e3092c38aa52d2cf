// Leadership changes (docs/CLUSTERING.md, "Leadership changes"): real etcd and three real witmqd
// on 127.0.0.1. A node that gains a channel serves what its own store holds of it; a node that
// loses one serves nothing of it any more (it forwards, or answers unavailable) and acknowledges
// nothing for it. Lease TTL 2 s; every wait bounded.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
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

namespace witmq::cluster {
namespace {

using daemon::testing::Daemon;
using daemon::testing::http_request;
using nlohmann::json;
using testing::Etcd;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

Message text_message(std::string_view text) {
  Message m;
  m.data.assign(text.begin(), text.end());
  return m;
}

std::string text_of(const Message& m) { return std::string(m.data.begin(), m.data.end()); }

std::string meta(const Message& m, std::string_view key) {
  const std::string* v = find_metadata(m, key);
  return v ? *v : std::string();
}

class LeadershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WITMQ_REQUIRE_ETCD();
    etcd_ = std::make_unique<Etcd>();
    for (const char* id : {"n1", "n2", "n3"}) {
      nodes_[id] = std::make_unique<Daemon>(std::vector<std::string>{
          "--set", fmt::format("cluster-node-id={}", id), "--set", "cluster-name=lead", "--set",
          fmt::format("cluster-etcd-endpoints=[\"{}\"]", etcd_->endpoint()), "--set",
          "cluster-lease-ttl-seconds=2", "--set", "cluster-etcd-timeout-ms=500", "--set",
          "cluster-peer-token=leadership-test-cluster-secret-0123"});
      ASSERT_NE(nodes_[id]->port(), 0) << id << " did not start";
    }
    ASSERT_TRUE(wait_until([&] { return view("n1")["nodes"].size() == 3; }, 15s)) << views();
  }

  json view(const std::string& node) {
    auto r = http_request(nodes_[node]->http_port(), "GET", "/v1/cluster", "", {});
    return r.status == 200 ? r.json : json::object();
  }

  std::string views() {
    std::string out;
    for (auto& [id, d] : nodes_) out += id + ": " + view(id).dump() + "\n";
    return out;
  }

  // The channel's leader and epoch as `from` sees them; "" when none.
  std::pair<std::string, uint64_t> leader(const std::string& from, const std::string& channel) {
    const json v = view(from);
    if (!v.contains("channels")) return {"", 0};
    for (const auto& c : v["channels"]) {
      if (c["name"] == channel && !c["leader"].is_null()) {
        return {c["leader"].get<std::string>(), c["epoch"].get<uint64_t>()};
      }
    }
    return {"", 0};
  }

  std::unique_ptr<client::Client> connect(const std::string& node, std::string name = "") {
    client::Options o;
    o.request_timeout = 20s;
    auto c = client::Client::connect("127.0.0.1", nodes_[node]->port(), std::move(name), o);
    EXPECT_TRUE(c.ok()) << node << ": " << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Receives through `c` until `channel` gives nothing for 1.5 s (bounded).
  std::vector<Message> drain(client::Client& c, const std::string& channel) {
    std::vector<Message> out;
    for (int i = 0; i < 100; ++i) {
      auto r = c.subscribe_try_receive(channel, 1'500);
      EXPECT_TRUE(r.ok()) << c.error_trace();
      if (!r.ok() || !r->has_value() || (*r)->empty()) break;
      for (auto& m : **r) out.push_back(std::move(m));
    }
    return out;
  }

  std::unique_ptr<Etcd> etcd_;
  std::map<std::string, std::unique_ptr<Daemon>> nodes_;
};

// A -> B -> A: what A stored is served by A again once B hands the channel back; B, which no
// longer leads it, forwards sends and acknowledges none itself; a settlement from before the
// moves settles nothing else, and no settled message comes back.
TEST_F(LeadershipTest, HandBackServesWhatTheReturningNodeStored) {
  auto admin = connect("n1");
  ASSERT_TRUE(admin->declare_channel("home", {{"lease-ms", "60000"}}).ok())
      << admin->error_trace();
  std::string a;
  ASSERT_TRUE(wait_until([&] { return !(a = leader("n1", "home").first).empty(); }, 15s))
      << views();
  const std::string entry = a == "n1" ? "n2" : "n1";  // not A: sends are forwarded to A
  auto producer = connect(entry);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(producer->send("home", std::vector<Message>{text_message(fmt::format("a{}", i))})
                    .ok())
        << producer->error_trace();
  }
  // Eight completed, two (a8, a9) left held under a long lease, all on A.
  auto consumer = connect(entry, "worker");
  auto first = drain(*consumer, "home");
  ASSERT_EQ(first.size(), 10u);
  Message held;
  for (const auto& m : first) {
    if (text_of(m) == "a8") held = m;
    if (text_of(m) == "a8" || text_of(m) == "a9") continue;
    ASSERT_TRUE(consumer->complete_message(m).ok()) << consumer->error_trace();
  }
  const uint64_t epoch_a = leader("n1", "home").second;

  // A leaves (SIGTERM revokes its lease): B leads in a higher epoch, from its own store.
  nodes_[a]->stop(SIGTERM);
  const std::string watcher = entry;
  std::pair<std::string, uint64_t> interim;
  ASSERT_TRUE(wait_until(
      [&] {
        interim = leader(watcher, "home");
        return !interim.first.empty() && interim.first != a;
      },
      15s))
      << views();
  EXPECT_GT(interim.second, epoch_a);
  const std::string b = interim.first;
  auto on_b = connect(b);
  ASSERT_TRUE(on_b->send("home", std::vector<Message>{text_message("b0")}).ok())
      << on_b->error_trace();

  // A returns and gets its channel back after a lease TTL.
  nodes_[a]->start();
  std::pair<std::string, uint64_t> back;
  ASSERT_TRUE(wait_until(
      [&] {
        back = leader(watcher, "home");
        return back.first == a;
      },
      20s))
      << views();
  EXPECT_GT(back.second, interim.second);
  ASSERT_TRUE(wait_until([&] { return leader(b, "home").first == a; }, 10s)) << views();

  // B released the channel: its own broker serves nothing of it (its own list, which is never
  // relayed, lacks it; a request about the channel itself is relayed to A, docs/HTTP.md), and a
  // send through B is forwarded to A (acknowledged there), never stored and acknowledged by B.
  auto local = http_request(nodes_[b]->http_port(), "GET", "/v1/channels", "", {});
  ASSERT_EQ(local.status, 200u) << local;
  for (const auto& c : nlohmann::json::parse(local.body)["channels"]) {
    EXPECT_NE(c.value("name", ""), "home") << local;
  }
  auto through_b = connect(b);
  ASSERT_TRUE(through_b->send("home", std::vector<Message>{text_message("via-b")}).ok())
      << through_b->error_trace();

  // The settlement of a8 from epoch 1 settles nothing (A restarted: that lease is gone).
  auto stale = consumer->complete_message(held);
  EXPECT_FALSE(stale.ok());

  // A serves what it stored before: a8 and a9 again (attempt 2), never a0..a7, and what was
  // sent through B after the hand-back. b0 stays in B's store (no replication).
  auto reader = connect(watcher, "worker");
  auto again = drain(*reader, "home");
  std::map<std::string, std::string> attempts;
  for (const auto& m : again) attempts[text_of(m)] = meta(m, "witmq-attempt");
  EXPECT_EQ(attempts,
            (std::map<std::string, std::string>{{"a8", "2"}, {"a9", "2"}, {"via-b", "1"}}))
      << views();
  for (const auto& m : again) {
    ASSERT_TRUE(reader->complete_message(m).ok()) << reader->error_trace();
  }
  // Settled once, never again.
  auto none = reader->subscribe_try_receive("home", 500);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(!none->has_value() || (*none)->empty());
}

// A leader stopped past its lease loses the channel without a restart: once resumed it releases
// what it held in memory, acknowledges nothing for the channel itself (a send that waited for it
// while it was stopped is forwarded or refused), and when the channel is handed back it takes it
// up from its store: the messages it had delivered and not seen settled are available again at
// once, with the attempt counted, not after their 60 s leases.
TEST_F(LeadershipTest, StoppedLeaderReleasesAndTakesItsChannelBackFromItsStore) {
  auto admin = connect("n1");
  ASSERT_TRUE(admin->declare_channel("home", {{"lease-ms", "60000"}}).ok())
      << admin->error_trace();
  std::string a;
  ASSERT_TRUE(wait_until([&] { return !(a = leader("n1", "home").first).empty(); }, 15s))
      << views();
  const std::string watcher = a == "n1" ? "n2" : "n1";
  auto on_a = connect(a);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(on_a->send("home", std::vector<Message>{text_message(fmt::format("a{}", i))}).ok())
        << on_a->error_trace();
  }
  auto consumer = connect(a, "worker");
  auto first = drain(*consumer, "home");
  ASSERT_EQ(first.size(), 4u);
  for (const auto& m : first) {
    if (text_of(m) == "a3") continue;  // held under its 60 s lease
    ASSERT_TRUE(consumer->complete_message(m).ok()) << consumer->error_trace();
  }

  nodes_[a]->signal(SIGSTOP);
  std::pair<std::string, uint64_t> interim;
  const bool moved = wait_until(
      [&] {
        interim = leader(watcher, "home");
        return !interim.first.empty() && interim.first != a;
      },
      15s);
  // A send that reaches the stopped node and waits there for it.
  std::promise<Status> late;
  std::thread sender([&] {
    late.set_value(on_a->send("home", std::vector<Message>{text_message("late")}));
  });
  std::this_thread::sleep_for(200ms);
  nodes_[a]->signal(SIGCONT);
  sender.join();
  ASSERT_TRUE(moved) << views();
  const Status late_status = late.get_future().get();
  EXPECT_TRUE(nodes_[a]->wait_for_log("channel home: released")) << nodes_[a]->log();

  // A rejoins and gets the channel back after a lease TTL.
  std::pair<std::string, uint64_t> back;
  ASSERT_TRUE(wait_until(
      [&] {
        back = leader(watcher, "home");
        return back.first == a;
      },
      20s))
      << views();
  EXPECT_GT(back.second, interim.second);
  EXPECT_TRUE(nodes_[a]->wait_for_log("channel home: taken up from this node's store"))
      << nodes_[a]->log();

  auto reader = connect(watcher, "worker");
  auto again = drain(*reader, "home");
  std::map<std::string, std::string> attempts;
  for (const auto& m : again) attempts[text_of(m)] = meta(m, "witmq-attempt");
  // a3 again at once (attempt 2); never a0..a2. "late", if it was acknowledged at all, was
  // acknowledged by the interim leader and stored there, never by A while it did not lead.
  EXPECT_EQ(attempts, (std::map<std::string, std::string>{{"a3", "2"}}))
      << "late send: " << (late_status.ok() ? "ok" : late_status.error().message) << "\n"
      << views();

  // The interim leader released "home" when it handed it back: a client of that node still
  // configures its session with it (its operations on it are forwarded to A) and uses it.
  auto on_interim = connect(interim.first, "configured");
  ASSERT_TRUE(on_interim);
  GuestConfiguration config;
  config.channels = {"home"};
  EXPECT_TRUE(on_interim->update_guest_configuration(config).ok()) << on_interim->error_trace();
  EXPECT_TRUE(on_interim->send("home", std::vector<Message>{text_message("after")}).ok())
      << on_interim->error_trace();
}

}  // namespace
}  // namespace witmq::cluster
