// This witmqd as a member of a cluster (docs/CLUSTERING.md): its registration in etcd under a
// lease kept alive, the channels' placement records, and the leaderships it wins by etcd
// transactions, each with a fencing epoch that only grows.
//
// Keys, under the prefix /witmq/<cluster-name>/ (ClusterOptions::key_prefix):
//   nodes/<id>          the node's registration (JSON), attached to its lease
//   placement/<channel> {"replicas": [ids, preferred leader first]}, written once
//   epoch/<channel>     the last epoch ever granted for the channel (decimal), never deleted
//   leader/<channel>    {"node": id, "epoch": n}, attached to the leader's lease
//   isr/<channel>       {"epoch": n, "members": [ids]}: the in-sync set, the replicas that hold
//                       every acknowledged write of the channel; written with the placement (all
//                       replicas), then only by the leader of epoch n, by a transaction that
//                       requires its leader key to be unchanged (change_in_sync)
//   placement-version   bumped by every placement write, so that placements are decided one
//                       at a time over a complete view (leaders spread evenly)
//
// Fencing: a node wins epoch e of a channel only by a transaction that (1) finds no leader key
// and (2) finds the epoch key unchanged since it read e-1, and writes both the epoch key (e) and
// the leader key (under its own lease) at once. Since etcd applies transactions one at a time,
// each epoch is granted to exactly one node. The leader key goes away only when its lease does;
// etcd expires the lease no earlier than TTL after the last keepalive it answered, and the node
// stops believing it leads at TTL (minus a margin) after it *sent* that keepalive, on its own
// monotonic clock. So the old leader has stopped believing before a new epoch can be granted.
// The election also requires the in-sync set key unchanged since it was read and the candidate
// to be a member of it: only a replica holding every acknowledged write can lead (a channel
// whose in-sync members are all gone stays leaderless, as Kafka with unclean leader election
// off).
//
// Threading: one thread of its own runs the control loop (keepalive, reconcile, elect) and owns
// the etcd client; its requests are bounded by the etcd timeout and never run on the daemon's I/O
// threads. Readers (HTTP, metrics, readiness) see a snapshot published after each step, and check
// the lease deadline themselves, so that a process resumed after SIGSTOP never reports a
// leadership it may have lost.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"
#include "cluster/options.h"
#include "common/result.h"

namespace witmq::cluster {

// A channel that exists on this node, as the placement needs it.
struct LocalChannel {
  std::string name;
  uint32_t replicas = 3;  // the channel's `replicas` setting
};

// Another live node, as the peer link dials it.
struct PeerAddress {
  std::string id;
  std::string address;  // its advertised peer address, HOST:PORT
};

// What the node asks of the daemon (cluster/ does not know the broker). Called on the node's
// thread.
struct NodeSources {
  std::function<std::vector<LocalChannel>()> local_channels;
  // Told the other live nodes' peer addresses after every pass of the control loop (optional).
  std::function<void(const std::vector<PeerAddress>&)> peers_seen;
  // The monotonic clock lease deadlines are measured on (optional; steady_clock::now). A test
  // moves it forward to pass a deadline without waiting for it.
  std::function<std::chrono::steady_clock::time_point()> clock;
  // Leadership changes of this node (optional), on the node's thread. `gained`: it leads
  // `channel` in `epoch`, called before any reader is shown that (the daemon's broker takes the
  // channel up from its store first). `lost`: it no longer leads it (the epoch moved, the lease
  // was lost or revoked, it handed the channel back), called before the view that drops the
  // leadership is published; readers already refuse it from the instant the lease's deadline
  // passed (may_serve).
  std::function<void(const std::string& channel, uint64_t epoch)> gained;
  std::function<void(const std::string& channel, uint64_t epoch)> lost;
  // The channels whose copy in this node's store is catching up (an incomplete snapshot), by
  // name (optional). The node declines the candidacy for them (its copy lacks acknowledged
  // writes, even when it is a member of the in-sync set) and is not ready while any is listed.
  std::function<std::vector<std::string>()> catching_up;
  // Whether this node's store may hold acknowledged writes of `channel` (optional; absent:
  // true). False for a store created empty in this run (a node given a new data directory) that
  // has not been sent anything of the channel yet: the node may still be in the channel's
  // in-sync set, and declines the candidacy for a channel that had a leader before.
  std::function<bool(const std::string& channel)> holds;
  // Whether `follower` holds, by this leader's own count, the last position this node wrote to
  // `channel` in `epoch`, with no snapshot under way to it (optional; absent: true; true when
  // this node wrote nothing in that epoch yet). A channel
  // is handed back to its preferred node only then: the in-sync set in etcd may still list a
  // node that came back with an empty data directory and has not been taken out yet.
  std::function<bool(const std::string& channel, uint64_t epoch, const std::string& follower)>
      caught_up;
};

// member: registered, lease alive. lost-etcd: the lease is lost or could not be kept alive in
// time (etcd down or unreachable, the process was stopped); the node leads nothing and tries to
// join again. joining: before the first registration. stopped: after stop().
enum class NodeState { kJoining, kMember, kLostEtcd, kStopped };
const char* state_name(NodeState s);

// Who leads a channel, as a node sees it (Node::leader_of).
struct LeaderInfo {
  std::string node;            // the leader's id
  std::string client_address;  // the protocol address it advertises (cluster-advertise-client)
  uint64_t epoch = 0;
  bool self = false;  // this node leads it now (its lease is alive and the epoch is its own)
};

// Counters and gauges for /metrics.
struct NodeFigures {
  bool member = false;
  uint64_t nodes_alive = 0;
  uint64_t channels_led = 0;
  uint64_t leases_held = 0;
  uint64_t leader_changes = 0;    // changes of a channel's leader epoch this node observed
  uint64_t leaderships_lost = 0;  // leaderships this node held and lost
  uint64_t handovers = 0;         // leaderships this node handed back to a preferred leader
  uint64_t lease_losses = 0;      // times the node went from member to lost-etcd
  uint64_t etcd_errors = 0;       // etcd requests that failed on some endpoint
};

class Node {
 public:
  // Registers this node (a lease of options.lease_ttl_seconds, then nodes/<id> under it) and
  // starts the control loop. Errors: no etcd endpoint answered (naming each and why), or another
  // live node is registered with this id (kAlreadyExists, naming its addresses and start time).
  static Result<std::unique_ptr<Node>> start(ClusterOptions options, NodeSources sources);
  // stop(), if not done yet.
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Ends the control loop and revokes the lease (the node's registration and leaderships go at
  // once, so that other nodes take over without waiting for the TTL). Idempotent.
  void stop();

  // GET /v1/cluster: this node, every live node, every channel's placement and leader.
  nlohmann::json to_json() const;
  // Whether the node is a member now; when not, `why` says why.
  bool ready(std::string* why) const;
  NodeFigures figures() const;
  // The other live nodes that advertise a peer address, by id, as of the last pass.
  std::vector<PeerAddress> peers() const;

  // Who leads `channel` as of the last view: nullopt when nobody does (no placement yet, no live
  // replica, an election under way) or when this node is not a member (it cannot know). Any
  // thread; takes no etcd round trip.
  std::optional<LeaderInfo> leader_of(const std::string& channel) const;
  // Whether `channel` has a placement (replicas) in the last view, whether or not anyone leads it
  // now. Any thread; takes no etcd round trip.
  bool placed(const std::string& channel) const;
  // The replicas of `channel` (this node's place among them or not) as of the last view: nullopt
  // when it has no placement there. Placements are written once, so a view that is not alive
  // (etcd unreachable) still names them. Any thread; takes no etcd round trip.
  std::optional<std::vector<std::string>> replicas_of(const std::string& channel) const;
  // Calls `done` once the view places `channel`, or after the first pass of the control loop
  // past `deadline`, or when the node stops; the caller asks replicas_of() again. Asks for no
  // pass of its own: a placement another node has just written is seen at the next regular
  // pass. `done` runs on the node's thread (at once on the caller's when the view places the
  // channel already) and must not block.
  void await_placement(const std::string& channel, std::chrono::steady_clock::time_point deadline,
                       std::function<void()> done);
  // False when this node's last view says it leads `channel` but it may no longer act on that:
  // the lease's deadline passed (the process was stopped, etcd does not answer) or the epoch
  // moved, before the control loop has told `lost`. True for every channel it does not claim.
  // The broker asks it before acknowledging a write. Any thread; takes no etcd round trip.
  bool may_serve(const std::string& channel) const;
  // Calls `done` once `channel` has a leader, or with nullopt when it has none at `deadline`
  // (checked after each pass of the control loop, so at most one tick late) or the node stops.
  // A channel without placement is placed first (`replicas` of the live nodes), by this node, as
  // one it holds would be; with `replicas` 0 it is not, and only a leader elected otherwise is
  // waited for. `done` runs on the node's thread, or at once on the caller's when the
  // leader is known; it must not block.
  // The channel's epoch and replica set (this node included) when this node leads it now, as
  // await_leader's `self`; nullopt otherwise. Any thread; takes no etcd round trip.
  struct Leadership {
    uint64_t epoch = 0;
    std::vector<std::string> replicas;
    std::vector<std::string> in_sync;  // the in-sync set as of the last view
  };
  std::optional<Leadership> leadership(const std::string& channel) const;
  void await_leader(const std::string& channel, uint32_t replicas,
                    std::chrono::steady_clock::time_point deadline,
                    std::function<void(std::optional<LeaderInfo>)> done);
  // The protocol address (cluster-advertise-client) of the live node `id`, as of the last view;
  // nullopt when `id` is this node, is not registered, or this node is not a member. Request-reply
  // uses it to take a reply to the node that holds its inbox. Any thread; no etcd round trip.
  std::optional<std::string> client_address_of(const std::string& id) const;
  // Asks to make `members` the in-sync set of `channel`, which this node leads in `epoch`: done
  // by the control loop with one etcd transaction that requires this node's leader key of that
  // epoch to be unchanged. `done(true)` once etcd has it; `done(false)` when it was refused (the
  // leadership is gone) or etcd did not answer (the change may or may not be in etcd: the
  // caller must act as if both were true). `done` runs on the node's thread and must not block.
  void change_in_sync(const std::string& channel, uint64_t epoch, std::vector<std::string> members,
                      std::function<void(bool)> done);

 private:
  struct View;
  struct Channel;
  Node(ClusterOptions options, NodeSources sources);

  void run();
  void step();
  Status join(bool first);
  void lose(const std::string& why);
  // leading_[channel] = epoch, and sources_.gained told.
  void gain(const std::string& channel, uint64_t epoch);
  // Told to sources_.lost (the entry is already out of leading_).
  void lost(const std::string& channel, uint64_t epoch);
  void reconcile();
  void place(const std::vector<LocalChannel>& local);
  void elect(const std::string& channel);
  // Writes the in-sync set changes asked for (change_in_sync) and answers them.
  void write_in_sync();
  // Leaderships this node holds for channels whose preferred leader (first replica) is back:
  // handed over (docs/CLUSTERING.md, "Moving leaders back").
  void hand_back();
  std::optional<LeaderInfo> leader_in(const View& v, const std::string& channel, bool alive) const;
  // Answers the await_leader() callers whose leader is known or whose deadline passed (all of
  // them when the node stops).
  void answer_waiters(bool stopping);
  void note(std::string event);
  void publish();
  std::string registration_json() const;
  std::chrono::steady_clock::time_point now() const;
  // Whether the control loop's lease (lease_) is alive at `now`.
  bool lease_alive(std::chrono::steady_clock::time_point now) const;
  void set_deadline(int64_t lease, int64_t deadline_ns);
  // The last view, and whether its lease is alive now (readers).
  struct Seen {
    std::shared_ptr<const View> view;
    bool alive = false;
  };
  Seen seen() const;
  // Whether view_ is a member's under a lease that is alive at `now` (mu_ held).
  bool alive_locked(std::chrono::steady_clock::time_point now) const;

  const ClusterOptions options_;
  const NodeSources sources_;
  const std::string prefix_;
  EtcdClient etcd_;
  std::chrono::milliseconds tick_;
  std::chrono::milliseconds margin_;
  const int64_t started_unix_ms_;

  // The control loop's state (its thread only, and start()/stop() before and after it).
  NodeState state_ = NodeState::kJoining;
  std::string reason_;
  int64_t lease_ = 0;
  int64_t ttl_seconds_ = 0;
  std::map<std::string, nlohmann::json> nodes_;  // live nodes: id -> registration
  std::map<std::string, std::unique_ptr<Channel>> channels_;
  int64_t placement_version_revision_ = 0;
  std::map<std::string, uint64_t> leading_;  // channel -> epoch this node won
  std::string last_error_;
  std::chrono::steady_clock::time_point last_error_log_{};
  // When this node last joined (its clock): for one lease TTL after that, it elects itself only
  // for channels it is the preferred leader of (see reconcile()).
  std::chrono::steady_clock::time_point joined_at_{};
  // The etcd revision of this process's first registration (0: not yet).
  int64_t first_join_revision_ = 0;
  std::vector<std::pair<int64_t, std::string>> events_;  // (unix ms, text), the last few
  uint64_t leader_changes_ = 0, leaderships_lost_ = 0, lease_losses_ = 0;
  uint64_t handovers_ = 0;  // leaderships handed back to a channel's preferred leader
  // The etcd revision at which each live node registered: a new one for every join, also one
  // after a lost lease in the same process.
  std::map<std::string, int64_t> registrations_;
  // When each live node was first seen alive in this registration of it (the control loop's
  // clock): a returning preferred leader gets its channels back once it has stayed one lease TTL,
  // and a node that joined less than a TTL ago is not waited for as a candidate (reconcile()).
  std::map<std::string, std::pair<int64_t, std::chrono::steady_clock::time_point>> seen_since_;
  // Since when (the control loop's clock) each channel has been seen without a leader: the
  // second and later live members of its in-sync set stand once it has been leaderless for a
  // lease TTL, so that a first one that declines (catching up) does not leave it leaderless.
  std::map<std::string, std::chrono::steady_clock::time_point> leaderless_since_;
  // The channels this node declined the candidacy for, last pass (logged once per change).
  std::set<std::string> declined_;

  mutable std::mutex mu_;  // guards the members below
  // The lease whose deadline deadline_ns_ is (0: none), and the monotonic time (ns since the
  // clock's epoch) after which that lease may have expired in etcd. A view is alive only under
  // the deadline of its own lease.
  int64_t deadline_lease_ = 0;
  int64_t deadline_ns_ = 0;
  std::shared_ptr<const View> view_;
  bool stopping_ = false;
  std::condition_variable wake_;
  bool kicked_ = false;  // await_leader() wants a pass of the control loop now
  // Channels await_leader() asked to place (name -> replicas), taken by the control loop.
  std::map<std::string, uint32_t> wanted_;
  struct Waiter {
    std::string channel;
    std::chrono::steady_clock::time_point deadline;
    std::function<void(std::optional<LeaderInfo>)> done;
    bool placement = false;  // await_placement(): answered once the channel is placed
  };
  std::vector<Waiter> waiters_;
  struct InSyncChange {
    std::string channel;
    uint64_t epoch = 0;
    std::vector<std::string> members;
    std::function<void(bool)> done;
  };
  std::vector<InSyncChange> in_sync_changes_;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace witmq::cluster
