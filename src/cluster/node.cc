#include "cluster/node.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <utility>

#include "cluster/placement.h"
#include "common/log.h"
#include "common/message.h"

namespace witmq::cluster {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxEvents = 20;

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t ns_of(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::optional<uint64_t> parse_epoch(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

json parse_object(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  return j.is_object() ? j : json::object();
}

// Fields of values read from etcd, which anyone with access to etcd can write: a field of the
// wrong type reads as absent, never as an exception.
std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

uint64_t number_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// The part of `key` after `prefix` when it names a channel witmq could have written; nullopt for
// anything else (a key written by hand), which is then ignored.
std::optional<std::string> channel_of(const std::string& key, size_t prefix) {
  std::string name = key.substr(prefix);
  if (!validate_channel_name(name).ok()) return std::nullopt;
  return name;
}

// The members of `in_sync` in the order of `replicas` (preferred leader first).
std::vector<std::string> in_placement_order(const std::vector<std::string>& replicas,
                                            const std::vector<std::string>& in_sync) {
  std::vector<std::string> out;
  for (const auto& r : replicas) {
    if (std::find(in_sync.begin(), in_sync.end(), r) != in_sync.end()) out.push_back(r);
  }
  return out;
}

std::string leader_value(const std::string& node, uint64_t epoch) {
  return json{{"node", node}, {"epoch", epoch}}.dump();
}

std::string in_sync_value(uint64_t epoch, const std::vector<std::string>& members) {
  return json{{"epoch", epoch}, {"members", members}}.dump();
}

}  // namespace

const char* state_name(NodeState s) {
  switch (s) {
    case NodeState::kJoining:
      return "joining";
    case NodeState::kMember:
      return "member";
    case NodeState::kLostEtcd:
      return "lost-etcd";
    case NodeState::kStopped:
      return "stopped";
  }
  return "unknown";
}

// What etcd says of one channel, as of the last reconcile.
struct Node::Channel {
  std::vector<std::string> replicas;  // empty: no placement record yet
  int64_t placement_revision = 0;     // the placement key's create revision
  std::string leader;                 // "" = none
  uint64_t leader_epoch = 0;
  int64_t leader_lease = 0;
  uint64_t last_epoch = 0;  // the epoch key: the last epoch granted
  // The in-sync set key: its members (in_sync_known false: no key, as for a channel placed
  // before the key existed: every replica counts as in sync) and its revision.
  std::vector<std::string> in_sync;
  bool in_sync_known = false;
  int64_t in_sync_revision = 0;
  // The epoch key holds something other than a number (written by hand): no election, since the
  // next epoch could not be known to be new.
  bool epoch_unreadable = false;
  int64_t epoch_revision = 0;  // the epoch key's mod_revision (0: absent)
};

// The snapshot readers see.
struct Node::View {
  NodeState state = NodeState::kJoining;
  std::string reason;
  int64_t lease = 0;
  int64_t ttl_seconds = 0;
  std::map<std::string, json> nodes;
  struct ChannelView {
    std::string name;
    std::vector<std::string> replicas;
    std::string leader;
    uint64_t epoch = 0;
    uint64_t last_epoch = 0;
    std::vector<std::string> in_sync;
  };
  std::vector<ChannelView> channels;
  std::map<std::string, size_t> index;  // channel name -> its place in `channels`
  std::map<std::string, uint64_t> leading;
  std::vector<std::pair<int64_t, std::string>> events;
  uint64_t leader_changes = 0, leaderships_lost = 0, lease_losses = 0, etcd_errors = 0;
  uint64_t handovers = 0;
  std::string etcd_endpoint;
  std::string last_error;
};

Node::Node(ClusterOptions options, NodeSources sources)
    : options_(std::move(options)),
      sources_(std::move(sources)),
      prefix_(options_.key_prefix()),
      etcd_(EtcdOptions{options_.etcd_endpoints, options_.etcd_timeout}),
      tick_(std::chrono::milliseconds(
          std::min<int64_t>(1'000, options_.lease_ttl_seconds * 1000 / 3))),
      margin_(std::chrono::milliseconds(std::min<int64_t>(500, options_.lease_ttl_seconds * 250))),
      started_unix_ms_(unix_ms()) {}

Result<std::unique_ptr<Node>> Node::start(ClusterOptions options, NodeSources sources) {
  std::unique_ptr<Node> node(new Node(std::move(options), std::move(sources)));
  if (auto st = node->join(true); !st) return std::move(st).error();
  node->reconcile();
  node->publish();
  node->thread_ = std::thread([n = node.get()] { n->run(); });
  return node;
}

Node::~Node() { stop(); }

void Node::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (lease_ != 0) {
    if (auto st = etcd_.lease_revoke(lease_); !st) {
      log::warn(
          "cluster: node {}: could not revoke lease {:x} on stop ({}); its keys go when it "
          "expires",
          options_.node_id, lease_, st.error().message);
    }
    lease_ = 0;
  }
  set_deadline(0, 0);
  for (const auto& [channel, epoch] : std::exchange(leading_, {})) lost(channel, epoch);
  std::vector<InSyncChange> changes;
  {
    std::lock_guard lock(mu_);
    changes.swap(in_sync_changes_);
  }
  for (auto& change : changes) change.done(false);
  state_ = NodeState::kStopped;
  reason_ = "stopped";
  publish();
  answer_waiters(true);
}

void Node::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    try {
      step();
    } catch (const std::exception& e) {
      // A bug, not an input: values read from etcd are checked field by field. The loop goes on.
      log::error("cluster: node {}: control loop step failed: {}", options_.node_id, e.what());
    }
    publish();
    lock.lock();
    // The control loop's period: a third of the lease TTL, as etcd's own clients keep leases,
    // and at most a second, so that new channels get a leader soon whatever the TTL.
    wake_.wait_for(lock, tick_, [this] { return stopping_ || kicked_; });
    kicked_ = false;
  }
}

Clock::time_point Node::now() const { return sources_.clock ? sources_.clock() : Clock::now(); }

bool Node::lease_alive(Clock::time_point now) const {
  std::lock_guard lock(mu_);
  return deadline_lease_ != 0 && deadline_lease_ == lease_ && ns_of(now) < deadline_ns_;
}

void Node::set_deadline(int64_t lease, int64_t deadline_ns) {
  std::lock_guard lock(mu_);
  deadline_lease_ = lease;
  deadline_ns_ = deadline_ns;
}

Node::Seen Node::seen() const {
  std::lock_guard lock(mu_);
  return {view_, alive_locked(now())};
}

bool Node::alive_locked(Clock::time_point now) const {
  // The deadline belongs to one lease: a view published under an earlier lease is not alive
  // under the deadline of a later one (the node may have joined again, with a new lease, before
  // it published the view that drops the old lease's leaderships).
  return view_ && view_->state == NodeState::kMember && view_->lease != 0 &&
         view_->lease == deadline_lease_ && ns_of(now) < deadline_ns_;
}

void Node::step() {
  if (state_ == NodeState::kMember && !lease_alive(now())) {
    lose(
        fmt::format("no keepalive of lease {:x} was answered within its TTL of {} s (etcd "
                    "unreachable, or this process was stopped)",
                    lease_, ttl_seconds_));
  }
  if (state_ == NodeState::kMember) {
    const auto sent = now();
    auto ttl = etcd_.lease_keepalive(lease_);
    if (!ttl) {
      if (ttl.error().message != last_error_ ||
          Clock::now() - last_error_log_ > std::chrono::seconds(10)) {
        log::warn("cluster: node {}: keepalive of lease {:x} failed: {}", options_.node_id, lease_,
                  ttl.error().message);
        last_error_log_ = Clock::now();
      }
      last_error_ = ttl.error().message;
      return;
    }
    if (*ttl <= 0) {
      lose(fmt::format("etcd says lease {:x} expired", lease_));
    } else {
      set_deadline(lease_, ns_of(sent + std::chrono::seconds(*ttl) - margin_));
    }
  }
  if (state_ != NodeState::kMember) {
    if (auto st = join(false); !st) {
      reason_ = st.error().message;
      if (reason_ != last_error_ || Clock::now() - last_error_log_ > std::chrono::seconds(10)) {
        log::warn("cluster: node {}: cannot join again: {}", options_.node_id, reason_);
        last_error_log_ = Clock::now();
      }
      last_error_ = reason_;
      return;
    }
  }
  write_in_sync();
  reconcile();
}

std::string Node::registration_json() const {
  return json{{"id", options_.node_id},
              {"client-address", options_.advertise_client},
              {"peer-address", options_.advertise_peer},
              {"version", options_.version},
              {"instance", options_.instance},
              {"started-unix-ms", started_unix_ms_}}
      .dump();
}

Status Node::join(bool first) {
  if (lease_ != 0) {
    // The old lease may still live in etcd (its TTL runs from etcd's last answer, later than
    // ours): revoke it so that its registration and leader keys go now.
    WITMQ_RETURN_IF_ERROR(etcd_.lease_revoke(lease_));
    lease_ = 0;
  }
  const auto sent = now();
  auto grant = etcd_.lease_grant(options_.lease_ttl_seconds);
  if (!grant) return std::move(grant).error();
  const std::string key = prefix_ + "nodes/" + options_.node_id;
  for (int attempt = 0;; ++attempt) {
    auto txn = etcd_.txn({Compare::absent(key)}, {TxnOp::put(key, registration_json(), grant->id)},
                         {TxnOp::get(key)});
    if (txn && txn->succeeded) {
      if (first_join_revision_ == 0) first_join_revision_ = txn->revision;
      break;
    }
    if (!txn) {
      (void)etcd_.lease_revoke(grant->id);
      return std::move(txn).error();
    }
    KeyValue existing;
    if (!txn->ranges.empty() && !txn->ranges[0].empty()) existing = txn->ranges[0][0];
    json other = parse_object(existing.value);
    // This node's previous run (killed, its lease not yet expired): the same host and data
    // directory, which this process holds open, so that run is over. Its lease goes now.
    if (attempt == 0 && !options_.instance.empty() &&
        string_field(other, "instance") == options_.instance && existing.lease != 0) {
      log::warn(
          "cluster: node {}: its previous run (same host and data directory) is still "
          "registered under lease {:x}; revoking that lease",
          options_.node_id, existing.lease);
      if (auto st = etcd_.lease_revoke(existing.lease); !st) {
        (void)etcd_.lease_revoke(grant->id);
        return st;
      }
      note(fmt::format("revoked lease {:x} of this node's previous run", existing.lease));
      continue;
    }
    (void)etcd_.lease_revoke(grant->id);
    return Error(ErrorCode::kAlreadyExists,
                 fmt::format("cluster-node-id '{}': another live node of cluster '{}' is "
                             "registered with this id (client address {}, started at unix ms "
                             "{}); stop it or give this node another id",
                             options_.node_id, options_.name, string_field(other, "client-address"),
                             number_field(other, "started-unix-ms")));
  }
  lease_ = grant->id;
  ttl_seconds_ = grant->ttl_seconds;
  joined_at_ = now();
  set_deadline(lease_, ns_of(sent + std::chrono::seconds(grant->ttl_seconds) - margin_));
  state_ = NodeState::kMember;
  reason_.clear();
  last_error_.clear();
  note(fmt::format("{} cluster '{}' with lease {:x} (TTL {} s)", first ? "joined" : "joined again",
                   options_.name, lease_, ttl_seconds_));
  log::info("cluster: node {} {} cluster '{}' through etcd {} (lease {:x}, TTL {} s)",
            options_.node_id, first ? "joined" : "joined again", options_.name,
            etcd_.current_endpoint(), lease_, ttl_seconds_);
  return ok_status();
}

void Node::lose(const std::string& why) {
  set_deadline(0, 0);
  state_ = NodeState::kLostEtcd;
  reason_ = why;
  ++lease_losses_;
  for (const auto& [channel, epoch] : leading_) {
    ++leaderships_lost_;
    note(fmt::format("no longer leads channel {} (epoch {}): lease lost", channel, epoch));
  }
  log::warn(
      "cluster: node {} lost its etcd lease: {}; it leads nothing ({} leadership{} given "
      "up) until it joins again",
      options_.node_id, why, leading_.size(), leading_.size() == 1 ? "" : "s");
  for (const auto& [channel, epoch] : std::exchange(leading_, {})) lost(channel, epoch);
  note("lost-etcd: " + why);
}

void Node::gain(const std::string& channel, uint64_t epoch) {
  leading_[channel] = epoch;
  if (sources_.gained) sources_.gained(channel, epoch);
}

void Node::lost(const std::string& channel, uint64_t epoch) {
  if (sources_.lost) sources_.lost(channel, epoch);
}

void Node::reconcile() {
  // One transaction reads everything at one revision: a consistent view.
  auto txn = etcd_.txn(
      {}, {TxnOp{TxnOp::Kind::kRange, prefix_ + "nodes/", "", 0, prefix_end(prefix_ + "nodes/")},
           TxnOp{TxnOp::Kind::kRange, prefix_ + "placement/", "", 0,
                 prefix_end(prefix_ + "placement/")},
           TxnOp{TxnOp::Kind::kRange, prefix_ + "leader/", "", 0, prefix_end(prefix_ + "leader/")},
           TxnOp{TxnOp::Kind::kRange, prefix_ + "epoch/", "", 0, prefix_end(prefix_ + "epoch/")},
           TxnOp::get(prefix_ + "placement-version"),
           TxnOp{TxnOp::Kind::kRange, prefix_ + "isr/", "", 0, prefix_end(prefix_ + "isr/")}});
  if (!txn || txn->ranges.size() != 6) {
    last_error_ = txn ? "etcd answered a read with missing ranges" : txn.error().message;
    return;
  }
  const auto& r = txn->ranges;
  nodes_.clear();
  registrations_.clear();
  for (const auto& kv : r[0]) {
    json info = parse_object(kv.value);
    const std::string id = kv.key.substr(prefix_.size() + 6);
    // Only what a node writes, so that a key written by hand cannot break the view.
    if (string_field(info, "id") != id) continue;
    json clean = json::object();
    for (const char* field : {"client-address", "peer-address", "version"}) {
      clean[field] = string_field(info, field);
    }
    clean["started-unix-ms"] = number_field(info, "started-unix-ms");
    nodes_[id] = std::move(clean);
    registrations_[id] = kv.create_revision;
  }
  std::map<std::string, std::unique_ptr<Channel>> seen;
  auto channel = [&](const std::string& name) -> Channel& {
    auto& c = seen[name];
    if (!c) c = std::make_unique<Channel>();
    return *c;
  };
  for (const auto& kv : r[1]) {
    auto name = channel_of(kv.key, prefix_.size() + 10);
    if (!name) continue;
    json p = parse_object(kv.value);
    auto& c = channel(*name);
    c.placement_revision = kv.create_revision;
    if (p.contains("replicas") && p["replicas"].is_array()) {
      for (const auto& n : p["replicas"]) {
        if (n.is_string()) c.replicas.push_back(n.get<std::string>());
      }
    }
  }
  for (const auto& kv : r[2]) {
    auto name = channel_of(kv.key, prefix_.size() + 7);
    if (!name) continue;
    json l = parse_object(kv.value);
    auto& c = channel(*name);
    c.leader = string_field(l, "node");
    c.leader_epoch = number_field(l, "epoch");
    c.leader_lease = kv.lease;
  }
  for (const auto& kv : r[3]) {
    auto name = channel_of(kv.key, prefix_.size() + 6);
    if (!name) continue;
    auto& c = channel(*name);
    const auto epoch = parse_epoch(kv.value);
    c.last_epoch = epoch.value_or(0);
    c.epoch_unreadable = !epoch;
    c.epoch_revision = kv.mod_revision;
  }
  placement_version_revision_ = r[4].empty() ? 0 : r[4][0].mod_revision;
  for (const auto& kv : r[5]) {
    auto name = channel_of(kv.key, prefix_.size() + 4);
    if (!name) continue;
    json v = parse_object(kv.value);
    auto& c = channel(*name);
    c.in_sync_known = true;
    c.in_sync_revision = kv.mod_revision;
    if (v.contains("members") && v["members"].is_array()) {
      for (const auto& n : v["members"]) {
        if (n.is_string()) c.in_sync.push_back(n.get<std::string>());
      }
    }
  }
  // Leader changes seen since the last view.
  for (const auto& [name, c] : seen) {
    auto before = channels_.find(name);
    const uint64_t old_epoch = before == channels_.end() ? 0 : before->second->leader_epoch;
    if (c->leader_epoch != 0 && c->leader_epoch != old_epoch) ++leader_changes_;
  }
  channels_ = std::move(seen);

  // Leaderships this node believed in but etcd no longer shows.
  for (auto it = leading_.begin(); it != leading_.end();) {
    auto c = channels_.find(it->first);
    if (c != channels_.end() && c->second->leader == options_.node_id &&
        c->second->leader_epoch == it->second && c->second->leader_lease == lease_) {
      ++it;
      continue;
    }
    ++leaderships_lost_;
    note(fmt::format(
        "no longer leads channel {} (epoch {}): etcd shows {}", it->first, it->second,
        c == channels_.end() || c->second->leader.empty()
            ? std::string("no leader")
            : fmt::format("{} in epoch {}", c->second->leader, c->second->leader_epoch)));
    log::warn("cluster: node {} no longer leads channel {} (epoch {})", options_.node_id, it->first,
              it->second);
    const auto [channel, epoch] = *it;
    it = leading_.erase(it);
    lost(channel, epoch);
  }
  // A leader key of ours that we did not know of (the answer to our election was lost).
  for (const auto& [name, c] : channels_) {
    if (c->leader == options_.node_id && c->leader_lease == lease_ && !leading_.contains(name)) {
      gain(name, c->leader_epoch);
      note(fmt::format("leads channel {} in epoch {}", name, c->leader_epoch));
    }
  }

  std::vector<LocalChannel> local;
  if (sources_.local_channels) local = sources_.local_channels();
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, replicas] : wanted_) local.push_back({name, replicas});
  }
  place(local);
  {
    std::lock_guard lock(mu_);
    std::erase_if(wanted_, [this](const auto& w) {
      auto it = channels_.find(w.first);
      return it != channels_.end() && !it->second->replicas.empty();
    });
  }
  hand_back();
  std::set<std::string> live;
  for (const auto& [id, info] : nodes_) live.insert(id);
  // A node that has just joined (at start, or again after etcd came back) may see a channel's
  // preferred node as absent only because that node has not joined again yet: it leaves the
  // channel to it for one lease TTL. Taking it would move the leadership, and (without
  // replication) strand what the preferred node stored until it gets the channel back. A node
  // that really is gone has been absent for a TTL already when its lease expired.
  const auto pass = now();
  const auto ttl = std::chrono::seconds(ttl_seconds_ > 0 ? ttl_seconds_ : 1);
  const bool settled = pass - joined_at_ >= std::chrono::seconds(ttl_seconds_);
  // By the same rule another node that joined less than a TTL ago (as far as this node knows:
  // it has not been seen registered for a TTL) does not stand for a channel it is not the
  // preferred leader of: the next member stands in its place at once instead of waiting a TTL
  // for it. The two views of "a TTL ago" differ by a pass, so both may stand in that instant:
  // the election transaction lets one win.
  const auto stands_now = [&](const std::string& id, const Channel& c) {
    if (id == c.replicas.front()) return true;
    if (id == options_.node_id) return settled;
    auto seen = seen_since_.find(id);
    return seen != seen_since_.end() && pass - seen->second.second >= ttl;
  };
  std::set<std::string> catching_up;
  if (sources_.catching_up) {
    for (std::string& name : sources_.catching_up()) catching_up.insert(std::move(name));
  }
  std::set<std::string> declined;
  std::erase_if(leaderless_since_, [this](const auto& l) {
    auto c = channels_.find(l.first);
    return c == channels_.end() || !c->second->leader.empty();
  });
  for (const auto& [name, c] : channels_) {
    if (c->replicas.empty() || !c->leader.empty()) continue;
    const auto since = leaderless_since_.try_emplace(name, pass).first->second;
    // Only a live member of the in-sync set holds every acknowledged write: no other is ever
    // elected, even when that leaves the channel without a leader. The first live member in
    // placement order that stands now (above) stands at once; the others once the channel has
    // been leaderless for a lease TTL (the first may decline: below).
    std::vector<std::string> candidates;
    for (const std::string& id :
         c->in_sync_known ? in_placement_order(c->replicas, c->in_sync) : c->replicas) {
      if (live.contains(id) && stands_now(id, *c)) candidates.push_back(id);
    }
    const auto me = std::find(candidates.begin(), candidates.end(), options_.node_id);
    if (me == candidates.end()) continue;
    if (me != candidates.begin() && pass - since < ttl) continue;
    // A copy being replaced by a snapshot lacks acknowledged writes: a member of the in-sync set
    // that kept its place only so that the set stays a majority must not lead with it. Nor may a
    // node given an empty data directory that etcd still counts in sync lead a channel that had
    // a leader (it holds none of its writes) before a leader has sent it the channel.
    const bool incomplete = catching_up.contains(name);
    // (A channel placed before this process first joined: this node ran before, and what it
    // stored then is gone. On a new cluster every node starts empty and holds what it is sent.)
    const bool emptied = c->last_epoch > 0 && c->placement_revision != 0 &&
                         c->placement_revision < first_join_revision_ && sources_.holds &&
                         !sources_.holds(name);
    if (incomplete || emptied) {
      declined.insert(name);
      if (!declined_.contains(name)) {
        const char* why = incomplete ? "its copy here is an incomplete snapshot (catching up)"
                                     : "its data directory was empty at start and no leader has "
                                       "sent it the channel yet";
        note(fmt::format("declines to lead channel {}: {}", name, why));
        log::warn("cluster: node {} declines to lead channel {}: {}", options_.node_id, name, why);
      }
      continue;
    }
    if (c->epoch_unreadable) {
      last_error_ = fmt::format(
          "channel {}: the epoch key {}epoch/{} is not a number: no leader is elected until it "
          "is repaired (docs/CLUSTERING.md)",
          name, prefix_, name);
      continue;
    }
    elect(name);
  }
  declined_ = std::move(declined);
}

void Node::place(const std::vector<LocalChannel>& local) {
  std::set<std::string> live;
  for (const auto& [id, info] : nodes_) live.insert(id);
  for (const auto& lc : local) {
    auto it = channels_.find(lc.name);
    if (it != channels_.end() && !it->second->replicas.empty()) continue;
    std::map<std::string, std::vector<std::string>> placements;
    for (const auto& [name, c] : channels_) {
      if (!c->replicas.empty()) placements[name] = c->replicas;
    }
    const auto replicas = choose_replicas(live, placements, lc.replicas);
    if (replicas.empty()) return;
    const std::string key = prefix_ + "placement/" + lc.name;
    const std::string version = prefix_ + "placement-version";
    // Decided over a complete view: the transaction fails when any placement was written since
    // this node read them (the next step reads again).
    // Nothing is acknowledged yet: every replica holds every acknowledged write.
    auto txn = etcd_.txn(
        {Compare::absent(key), Compare::mod_revision_is(version, placement_version_revision_)},
        {TxnOp::put(key, json{{"replicas", replicas}}.dump()), TxnOp::put(version, lc.name),
         TxnOp::put(prefix_ + "isr/" + lc.name, in_sync_value(0, replicas))});
    if (!txn || !txn->succeeded) return;
    placement_version_revision_ = txn->revision;
    auto& c = channels_[lc.name];
    if (!c) c = std::make_unique<Channel>();
    c->replicas = replicas;
    c->in_sync = replicas;
    c->in_sync_known = true;
    c->in_sync_revision = txn->revision;
    note(fmt::format("placed channel {} on {}", lc.name, fmt::join(replicas, ", ")));
  }
}

void Node::elect(const std::string& name) {
  Channel& c = *channels_.at(name);
  const uint64_t epoch = c.last_epoch + 1;
  const std::string leader_key = prefix_ + "leader/" + name;
  const std::string epoch_key = prefix_ + "epoch/" + name;
  // Granted only if nobody leads, nobody was granted an epoch since this node read last_epoch
  // (each epoch goes to one node, and epochs only grow), and the in-sync set this node found
  // itself in is unchanged. Its members hold every acknowledged write, and the new leader removes
  // those that do not keep up before it acknowledges without them. Members that are not
  // registered (the old leader whose lease expired, which is why there is an election) cannot
  // acknowledge anything: they leave the set in this same transaction, as long as a majority of
  // the replicas stays in it, so the first write of the new epoch does not wait
  // cluster-in-sync-timeout-ms for them. Taking members out never breaks the invariant.
  std::vector<TxnOp> ops{TxnOp::put(epoch_key, std::to_string(epoch)),
                         TxnOp::put(leader_key, leader_value(options_.node_id, epoch), lease_)};
  std::vector<std::string> in_sync = c.in_sync;
  // Only where replication runs (a peer listener): without it nothing would ever put a returning
  // member back into the set.
  if (c.in_sync_known && !options_.peer_listen.empty()) {
    std::vector<std::string> live_members;
    for (const auto& id : in_placement_order(c.replicas, c.in_sync)) {
      if (id == options_.node_id || nodes_.contains(id)) live_members.push_back(id);
    }
    if (live_members.size() < c.in_sync.size() &&
        live_members.size() >= c.replicas.size() / 2 + 1) {
      in_sync = std::move(live_members);
      ops.push_back(TxnOp::put(prefix_ + "isr/" + name, in_sync_value(epoch, in_sync)));
    }
  }
  auto txn =
      etcd_.txn({Compare::absent(leader_key), Compare::mod_revision_is(epoch_key, c.epoch_revision),
                 Compare::mod_revision_is(prefix_ + "isr/" + name, c.in_sync_revision)},
                std::move(ops));
  if (!txn) {
    last_error_ = txn.error().message;
    return;
  }
  if (!txn->succeeded) return;  // someone else was faster; the next step reads who
  if (in_sync.size() != c.in_sync.size()) {
    log::info("cluster: channel {}: in-sync set is now {} (leader {}, epoch {}: {} not registered)",
              name, fmt::join(in_sync, ", "), options_.node_id, epoch,
              c.in_sync.size() - in_sync.size());
    c.in_sync = std::move(in_sync);
    c.in_sync_revision = txn->revision;
  }
  c.leader = options_.node_id;
  c.leader_epoch = epoch;
  c.leader_lease = lease_;
  c.last_epoch = epoch;
  c.epoch_revision = txn->revision;
  gain(name, epoch);
  ++leader_changes_;
  note(fmt::format("leads channel {} in epoch {}", name, epoch));
  log::info("cluster: node {} leads channel {} in epoch {}", options_.node_id, name, epoch);
}

void Node::hand_back() {
  const auto now = this->now();
  std::map<std::string, std::pair<int64_t, Clock::time_point>> seen;
  for (const auto& [id, registered] : registrations_) {
    auto it = seen_since_.find(id);
    seen[id] = it != seen_since_.end() && it->second.first == registered
                   ? it->second
                   : std::pair<int64_t, Clock::time_point>{registered, now};
  }
  seen_since_ = std::move(seen);
  // A node that returns gets its channels back once it has stayed registered for one lease TTL,
  // so that a node restarting in a loop does not move leaders back and forth.
  const auto settle = std::chrono::seconds(ttl_seconds_ > 0 ? ttl_seconds_ : 1);
  for (auto it = leading_.begin(); it != leading_.end();) {
    auto c = channels_.find(it->first);
    if (c == channels_.end() || c->second->replicas.empty() ||
        c->second->replicas.front() == options_.node_id) {
      ++it;
      continue;
    }
    const std::string preferred = c->second->replicas.front();
    auto back = seen_since_.find(preferred);
    // Only to a member of the in-sync set: a returning node first catches up and is taken back
    // into the set by this leader; the election after the hand-back would refuse it otherwise.
    const auto& in_sync = c->second->in_sync;
    const bool preferred_in_sync =
        !c->second->in_sync_known ||
        std::find(in_sync.begin(), in_sync.end(), preferred) != in_sync.end();
    if (back == seen_since_.end() || now - back->second.second < settle || !preferred_in_sync ||
        (sources_.caught_up && !sources_.caught_up(it->first, it->second, preferred))) {
      ++it;
      continue;
    }
    // Fencing: this node stops believing it leads (and says so to every reader) before the
    // leader key goes, and the next epoch can be granted only once it is gone. The delete
    // requires the key to hold this very leadership (node and epoch).
    const std::string name = it->first;
    const uint64_t epoch = it->second;
    it = leading_.erase(it);
    lost(name, epoch);
    publish();
    const std::string leader_key = prefix_ + "leader/" + name;
    auto txn = etcd_.txn({Compare::value_is(leader_key, leader_value(options_.node_id, epoch))},
                         {TxnOp::remove(leader_key)});
    if (!txn || !txn->succeeded) {
      // The key stays (etcd did not answer, or it changed): the next pass reads it again and,
      // when it still names this leadership, takes it up and tries again.
      if (!txn) last_error_ = txn.error().message;
      continue;
    }
    c->second->leader.clear();
    c->second->leader_epoch = 0;
    c->second->leader_lease = 0;
    ++handovers_;
    note(fmt::format("handed channel {} (epoch {}) back to its preferred leader {}", name, epoch,
                     preferred));
    log::info("cluster: node {} hands channel {} (epoch {}) back to its preferred leader {}",
              options_.node_id, name, epoch, preferred);
  }
}

std::optional<LeaderInfo> Node::leader_in(const View& v, const std::string& channel,
                                          bool alive) const {
  if (!alive) return std::nullopt;
  auto it = v.index.find(channel);
  if (it == v.index.end()) return std::nullopt;
  const View::ChannelView& c = v.channels[it->second];
  if (c.leader.empty()) return std::nullopt;
  LeaderInfo info{c.leader, "", c.epoch, false};
  if (c.leader == options_.node_id) {
    auto mine = v.leading.find(channel);
    // Our key, but not a leadership we hold (one being handed back, or not yet taken up).
    if (mine == v.leading.end() || mine->second != c.epoch) return std::nullopt;
    info.self = true;
    info.client_address = options_.advertise_client;
    return info;
  }
  auto node = v.nodes.find(c.leader);
  if (node == v.nodes.end()) return std::nullopt;
  info.client_address = string_field(node->second, "client-address");
  if (info.client_address.empty()) return std::nullopt;
  return info;
}

std::optional<std::string> Node::client_address_of(const std::string& id) const {
  const Seen s = seen();
  if (!s.view || !s.alive || id == options_.node_id) return std::nullopt;
  auto node = s.view->nodes.find(id);
  if (node == s.view->nodes.end()) return std::nullopt;
  std::string address = string_field(node->second, "client-address");
  if (address.empty()) return std::nullopt;
  return address;
}

std::optional<LeaderInfo> Node::leader_of(const std::string& channel) const {
  const Seen s = seen();
  if (!s.view) return std::nullopt;
  return leader_in(*s.view, channel, s.alive);
}

bool Node::may_serve(const std::string& channel) const {
  const Seen s = seen();
  if (!s.view || !s.view->leading.contains(channel)) return true;
  auto l = leader_in(*s.view, channel, s.alive);
  return l && l->self;
}

bool Node::placed(const std::string& channel) const {
  std::shared_ptr<const View> v;
  {
    std::lock_guard lock(mu_);
    v = view_;
  }
  if (!v) return false;
  auto it = v->index.find(channel);
  return it != v->index.end() && !v->channels[it->second].replicas.empty();
}

std::optional<std::vector<std::string>> Node::replicas_of(const std::string& channel) const {
  std::shared_ptr<const View> v;
  {
    std::lock_guard lock(mu_);
    v = view_;
  }
  if (!v) return std::nullopt;
  auto it = v->index.find(channel);
  if (it == v->index.end() || v->channels[it->second].replicas.empty()) return std::nullopt;
  return v->channels[it->second].replicas;
}

void Node::await_placement(const std::string& channel, Clock::time_point deadline,
                           std::function<void()> done) {
  if (replicas_of(channel)) return done();
  bool queued = false;
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      waiters_.push_back({channel, deadline,
                          [done = std::move(done)](std::optional<LeaderInfo>) { done(); }, true});
      queued = true;
    }
  }
  if (!queued) done();
}

std::optional<Node::Leadership> Node::leadership(const std::string& channel) const {
  std::shared_ptr<const View> v;
  {
    std::lock_guard lock(mu_);
    v = view_;
  }
  if (!v) return std::nullopt;
  auto info = leader_in(*v, channel, v->state == NodeState::kMember && lease_alive(Clock::now()));
  if (!info || !info->self) return std::nullopt;
  const View::ChannelView& c = v->channels[v->index.at(channel)];
  return Leadership{info->epoch, c.replicas, c.in_sync};
}

void Node::await_leader(const std::string& channel, uint32_t replicas, Clock::time_point deadline,
                        std::function<void(std::optional<LeaderInfo>)> done) {
  if (auto known = leader_of(channel)) return done(std::move(known));
  bool queued = false;
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      if (replicas != 0) wanted_.emplace(channel, replicas);
      waiters_.push_back({channel, deadline, std::move(done)});
      kicked_ = queued = true;
    }
  }
  // `done` runs with no lock held: it may call back into the node.
  if (!queued) return done(std::nullopt);
  wake_.notify_all();
}

void Node::change_in_sync(const std::string& channel, uint64_t epoch,
                          std::vector<std::string> members, std::function<void(bool)> done) {
  bool queued = false;
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      in_sync_changes_.push_back({channel, epoch, std::move(members), std::move(done)});
      kicked_ = queued = true;
    }
  }
  if (!queued) return done(false);
  wake_.notify_all();
}

void Node::write_in_sync() {
  std::vector<InSyncChange> changes;
  {
    std::lock_guard lock(mu_);
    changes.swap(in_sync_changes_);
  }
  for (auto& change : changes) {
    const std::string leader_key = prefix_ + "leader/" + change.channel;
    const std::string key = prefix_ + "isr/" + change.channel;
    auto txn =
        etcd_.txn({Compare::value_is(leader_key, leader_value(options_.node_id, change.epoch))},
                  {TxnOp::put(key, in_sync_value(change.epoch, change.members))});
    const bool written = txn && txn->succeeded;
    if (!txn) last_error_ = txn.error().message;
    if (written) {
      auto& c = channels_[change.channel];
      if (!c) c = std::make_unique<Channel>();
      c->in_sync = change.members;
      c->in_sync_known = true;
      c->in_sync_revision = txn->revision;
      note(fmt::format("channel {}: in-sync set {} (epoch {})", change.channel,
                       fmt::join(change.members, ", "), change.epoch));
      log::info("cluster: channel {}: in-sync set is now {} (leader {}, epoch {})", change.channel,
                fmt::join(change.members, ", "), options_.node_id, change.epoch);
    }
    change.done(written);
  }
}

void Node::answer_waiters(bool stopping) {
  std::vector<std::pair<std::function<void(std::optional<LeaderInfo>)>, std::optional<LeaderInfo>>>
      ready;
  {
    std::lock_guard lock(mu_);
    if (waiters_.empty()) return;
    const auto now = this->now();
    const bool alive = alive_locked(now);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      auto leader = view_ ? leader_in(*view_, it->channel, alive) : std::nullopt;
      bool placed = false;
      if (it->placement && view_) {
        auto c = view_->index.find(it->channel);
        placed = c != view_->index.end() && !view_->channels[c->second].replicas.empty();
      }
      if (leader || placed || stopping || now >= it->deadline) {
        ready.emplace_back(std::move(it->done), std::move(leader));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [done, leader] : ready) done(std::move(leader));
}

void Node::note(std::string event) {
  events_.emplace_back(unix_ms(), std::move(event));
  if (events_.size() > kMaxEvents) events_.erase(events_.begin());
}

void Node::publish() {
  auto v = std::make_shared<View>();
  v->state = state_;
  v->reason = reason_;
  v->lease = lease_;
  v->ttl_seconds = ttl_seconds_;
  v->nodes = nodes_;
  for (const auto& [name, c] : channels_) {
    v->index[name] = v->channels.size();
    v->channels.push_back({name, c->replicas, c->leader, c->leader_epoch, c->last_epoch,
                           c->in_sync_known ? c->in_sync : c->replicas});
  }
  v->leading = leading_;
  v->events = events_;
  v->leader_changes = leader_changes_;
  v->leaderships_lost = leaderships_lost_;
  v->lease_losses = lease_losses_;
  v->handovers = handovers_;
  v->etcd_errors = etcd_.errors();
  v->etcd_endpoint = etcd_.current_endpoint();
  v->last_error = last_error_;
  {
    std::lock_guard lock(mu_);
    view_ = std::move(v);
  }
  if (sources_.peers_seen) sources_.peers_seen(peers());
  answer_waiters(false);
}

json Node::to_json() const {
  const Seen s = seen();
  const std::shared_ptr<const View>& v = s.view;
  if (!v) return json::object();
  // A member whose lease deadline passed (the control loop has not run since: the process was
  // stopped, or etcd is slow) may have lost its lease: it says so, and claims no leadership.
  const bool alive = s.alive;
  const NodeState state =
      v->state == NodeState::kMember && !alive ? NodeState::kLostEtcd : v->state;
  json nodes = json::array();
  for (const auto& [id, info] : v->nodes) {
    json n = info;
    n["id"] = id;
    n["state"] = id == options_.node_id ? state_name(state) : "alive";
    nodes.push_back(std::move(n));
  }
  json channels = json::array();
  for (const auto& c : v->channels) {
    json ch = {{"name", c.name},
               {"replicas", c.replicas},
               {"leader", c.leader.empty() ? json() : json(c.leader)},
               {"epoch", c.epoch},
               {"last-epoch", c.last_epoch},
               {"in-sync", c.in_sync}};
    ch["this-node-leads"] =
        alive && v->leading.contains(c.name) && v->leading.at(c.name) == c.epoch;
    channels.push_back(std::move(ch));
  }
  json leading = json::object();
  if (alive) {
    for (const auto& [name, epoch] : v->leading) leading[name] = epoch;
  }
  json events = json::array();
  for (const auto& [at, text] : v->events) events.push_back({{"unix-ms", at}, {"event", text}});
  json self = {{"id", options_.node_id},
               {"state", state_name(state)},
               {"lease", alive ? fmt::format("{:x}", v->lease) : std::string()},
               {"lease-ttl-seconds", v->ttl_seconds},
               {"client-address", options_.advertise_client},
               {"peer-address", options_.advertise_peer},
               {"leads", std::move(leading)},
               {"events", std::move(events)}};
  if (state != NodeState::kMember) {
    self["reason"] = v->state == NodeState::kMember
                         ? std::string("the lease's deadline passed before a keepalive answered")
                         : v->reason;
  }
  return json{{"cluster", options_.name},
              {"replication",
               "shipped: a write of a channel with replicas above 1 is acknowledged once a "
               "majority of its replicas holds it; a new leader serves what was shipped to it "
               "(docs/CLUSTERING.md)"},
              {"node", std::move(self)},
              {"etcd",
               {{"endpoint", v->etcd_endpoint},
                {"request-errors", v->etcd_errors},
                {"last-error", v->last_error}}},
              {"nodes", std::move(nodes)},
              {"channels", std::move(channels)}};
}

bool Node::ready(std::string* why) const {
  const Seen s = seen();
  const std::shared_ptr<const View>& v = s.view;
  if (s.alive) {
    std::vector<std::string> catching_up;
    if (sources_.catching_up) catching_up = sources_.catching_up();
    // Only a channel placed here has a leader that completes this node's copy: an incomplete copy
    // of another (left by a build that took snapshots of any channel, or a channel whose
    // placement no longer lists this node) is never completed and keeps nothing from serving.
    std::erase_if(catching_up, [&](const std::string& channel) {
      auto it = v->index.find(channel);
      if (it == v->index.end()) return true;
      const auto& replicas = v->channels[it->second].replicas;
      return std::find(replicas.begin(), replicas.end(), options_.node_id) == replicas.end();
    });
    if (catching_up.empty()) return true;
    if (why) {
      *why = fmt::format(
          "cluster: catching up: the copies of channel(s) {} here are incomplete snapshots "
          "(being sent by their leaders)",
          fmt::join(catching_up, ", "));
    }
    return false;
  }
  if (why) {
    *why = !v ? std::string("joining")
              : fmt::format(
                    "cluster: {}{}",
                    state_name(v->state == NodeState::kMember ? NodeState::kLostEtcd : v->state),
                    v->reason.empty() ? "" : ": " + v->reason);
  }
  return false;
}

std::vector<PeerAddress> Node::peers() const {
  std::shared_ptr<const View> v;
  {
    std::lock_guard lock(mu_);
    v = view_;
  }
  std::vector<PeerAddress> out;
  if (!v) return out;
  for (const auto& [id, registration] : v->nodes) {
    if (id == options_.node_id) continue;
    const auto it = registration.find("peer-address");
    if (it == registration.end() || !it->is_string() || it->get<std::string>().empty()) continue;
    out.push_back({id, it->get<std::string>()});
  }
  return out;
}

NodeFigures Node::figures() const {
  const Seen s = seen();
  const std::shared_ptr<const View>& v = s.view;
  NodeFigures f;
  if (!v) return f;
  const bool alive = s.alive;
  f.member = alive;
  f.nodes_alive = v->nodes.size();
  f.channels_led = alive ? v->leading.size() : 0;
  f.leases_held = alive ? 1 : 0;
  f.leader_changes = v->leader_changes;
  f.leaderships_lost = v->leaderships_lost;
  f.lease_losses = v->lease_losses;
  f.handovers = v->handovers;
  f.etcd_errors = v->etcd_errors;
  return f;
}

}  // namespace witmq::cluster
