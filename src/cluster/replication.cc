#include "cluster/replication.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "common/log.h"
#include "storage/store.h"

namespace witmq::cluster {

namespace asio = boost::asio;

namespace {

using Clock = std::chrono::steady_clock;

// How long a frame for a channel this node's view does not place yet waits for a pass of the
// control loop to show its placement (when_placed_here).
constexpr std::chrono::milliseconds kPlacementWait{2'500};

uint8_t durability_byte(storage::Durability d) { return static_cast<uint8_t>(d); }

std::chrono::milliseconds in_sync_bound(const ReplicationOptions& o) {
  return o.in_sync_timeout.count() > 0 ? o.in_sync_timeout : o.timeout / 2;
}

// The refusal of a frame for `channel` in `epoch` when this node leads the channel in that epoch
// or a later one (nullopt otherwise). Each epoch is granted once, to one node: a frame of this
// node's own epoch is not its leader's, and an older one is stale (a leader that lost the
// channel and has not noticed yet, such as one resumed after a SIGSTOP); either would rewrite,
// or with a snapshot discard, the copy this node's broker serves. A frame of a later epoch is
// from the channel's new leader and is taken as usual (it fences this node's own writes).
std::optional<PeerReplicaRefused> refuse_if_led(const Node* node, const std::string& peer,
                                                const std::string& channel, uint64_t epoch,
                                                const char* what) {
  if (node == nullptr) return std::nullopt;
  const auto l = node->leadership(channel);
  if (!l || epoch > l->epoch) return std::nullopt;
  return PeerReplicaRefused{
      channel, l->epoch, ErrorCode::kFailedPrecondition,
      fmt::format("replication: channel '{}': {} of epoch {} from node '{}' is refused: this node "
                  "leads it in epoch {}",
                  peer_text(channel), what, epoch, peer, l->epoch)};
}

// The refusal of a frame for `channel` when its placement, as this node's view has it, does not
// list this node (nullopt when it does). Only a channel's replicas hold a copy of it: a frame for
// a channel placed elsewhere, or not placed at all, is not a leader's (a peer holding the token
// can send anything), and a snapshot begun for it would leave a copy here that no leader ever
// completes, which keeps the node from being ready for good.
std::optional<PeerReplicaRefused> refuse_if_unplaced(const Node& node, const std::string& self,
                                                     const std::string& peer,
                                                     const std::string& channel, uint64_t epoch,
                                                     const char* what) {
  const auto replicas = node.replicas_of(channel);
  if (replicas && std::find(replicas->begin(), replicas->end(), self) != replicas->end()) {
    return std::nullopt;
  }
  return PeerReplicaRefused{
      channel, 0, ErrorCode::kFailedPrecondition,
      replicas
          ? fmt::format("replication: channel '{}': {} of epoch {} from node '{}' is "
                        "refused: the channel is placed on {}, not on this node ('{}')",
                        peer_text(channel), what, epoch, peer, fmt::join(*replicas, ", "), self)
          : fmt::format("replication: channel '{}': {} of epoch {} from node '{}' is "
                        "refused: the channel has no placement in etcd (as of this node's "
                        "last view), so it has no replica here",
                        peer_text(channel), what, epoch, peer)};
}

}  // namespace

struct Replication::State : std::enable_shared_from_this<Replication::State> {
  State(asio::io_context& io, ReplicationOptions o)
      : strand(asio::make_strand(io)), options(std::move(o)) {}

  asio::strand<asio::io_context::executor_type> strand;
  const ReplicationOptions options;
  std::atomic<storage::Store*> store{nullptr};
  std::atomic<Node*> node{nullptr};
  std::atomic<PeerLinks*> links{nullptr};
  std::atomic<bool> stopped{false};

  std::atomic<uint64_t> shipped{0}, quorum_acks{0}, quorum_timeouts{0}, applied{0},
      stale_refused{0}, unplaced_refused{0}, resends{0}, beyond_retained{0}, diverged{0},
      snapshots_sent{0}, snapshots_received{0}, in_sync_shrinks{0}, in_sync_expands{0},
      stale_acks{0};

  // -- the leader's state, on `strand` only --
  struct Follower {
    uint64_t acked = 0;       // the last position it acknowledged in the leader's epoch
    bool introduced = false;  // sent the definitions on the current link
    bool beyond = false;      // asked for more than the retained log holds
    // A snapshot being sent (nothing else is sent meanwhile): the chunk in flight, and whether
    // it is the last one.
    std::unique_ptr<storage::ChannelSnapshot> snapshot;
    uint32_t chunk = 0;
    bool chunk_last = false;
    // The channel is gone from this node's store (deleted): instead of a snapshot, the follower
    // was sent word to drop its copy (an empty snapshot) at this position.
    std::optional<uint64_t> gone;
    // A snapshot or the word that the channel is gone is on its way: nothing else is sent.
    bool busy() const { return snapshot != nullptr || gone.has_value(); }
    // The last resend: from which position, and when. Every frame the follower takes before the
    // resend reaches it answers `resend` from the same position: those are answered by that one.
    uint64_t resent_from = 0;
    Clock::time_point resent_at{};
  };
  struct Retained {
    uint64_t position;
    std::shared_ptr<const PeerReplicate> frame;  // without definitions
    size_t bytes;
  };
  struct Pending {
    uint64_t position;
    std::function<void(Status)> held;
    std::shared_ptr<asio::steady_timer> timer;
    Clock::time_point shipped;
  };
  struct Led {
    uint64_t epoch = 0;
    uint64_t last = 0;  // last position shipped
    std::vector<std::string> replicas;
    std::map<std::string, Follower> followers;
    std::deque<Retained> log;
    size_t log_bytes = 0;
    std::deque<Pending> pending;
    // The in-sync set: `in_sync` as etcd has it (this node included); followers asked to be
    // added (`adding`) count for the ack rule from the moment they are asked; followers asked to
    // be removed (`dropping`) still count until etcd has the change.
    uint64_t epoch_start = 0;  // the first position shipped in `epoch`
    std::set<std::string> in_sync, adding, dropping;
    bool changing = false;    // a change is with the node (one at a time)
    uint64_t generation = 0;  // bumped when the epoch changes: older changes' answers are dropped
    std::shared_ptr<asio::steady_timer> in_sync_timer;
    bool in_sync_armed = false;
  };
  std::map<std::string, Led> led;
  // What a led channel looks like to readers off the strand (to_json, follower_caught_up):
  // copied at every change, turned into JSON only when asked for.
  struct Summary {
    uint64_t epoch = 0;
    uint64_t position = 0;
    std::vector<std::string> replicas, in_sync, catching_up;
    std::vector<std::pair<std::string, uint64_t>> acked;  // per follower
    size_t waiting = 0;
    size_t retained_bytes = 0;
  };
  mutable std::mutex json_mu;  // guards `summary`
  std::map<std::string, Summary> summary;

  void ship(storage::Shipment s, std::function<void(Status)> held);
  // Follower side: runs `go` once `channel`'s placement is known to list this node, or answers
  // `reply` with a refusal (refuse_if_unplaced). A channel the view does not place yet (another
  // node placed it a moment ago and leads it) is looked at again after the control loop's next
  // pass (at most kPlacementWait); the frame waits meanwhile (and counts against its
  // connection's bounds, PeerServerOptions).
  void when_placed_here(const std::string& peer, const std::string& channel, uint64_t epoch,
                        const char* what, PeerServerOptions::ReplyFn reply,
                        std::function<void(PeerServerOptions::ReplyFn)> go);
  // Follower side: a replicate frame or a snapshot chunk from `peer`, refused when the node is not
  // ready, else handed to `apply` once the channel is known to be placed here (when_placed_here).
  template <typename Frame>
  void take(const std::string& peer, Frame frame, const char* what,
            PeerServerOptions::ReplyFn reply,
            void (State::*apply)(storage::Store*, const std::string&, Frame,
                                 PeerServerOptions::ReplyFn)) {
    storage::Store* st = store.load();
    if (st == nullptr || stopped.load()) {
      reply(encode_peer_frame(PeerReplicaRefused{frame.channel, 0, ErrorCode::kUnavailable,
                                                 "the node is not ready to replicate"}));
      return;
    }
    const std::string channel = frame.channel;
    const uint64_t epoch = frame.epoch;
    auto held = std::make_shared<Frame>(std::move(frame));
    when_placed_here(
        peer, channel, epoch, what, std::move(reply),
        [self = shared_from_this(), st, peer, held, apply](PeerServerOptions::ReplyFn reply) {
          ((*self).*apply)(st, peer, std::move(*held), std::move(reply));
        });
  }
  // Leader side: whether this node still leads `channel` in the epoch `c` ships in. A node that
  // lost the channel (its lease's deadline passed, or a newer epoch was granted) sends nothing
  // more for it, and its writes still waiting fail.
  bool still_leads(const std::string& channel, Led& c);
  // Follower side, once the channel is known to be placed here: a batch, a snapshot chunk.
  void apply_batch(storage::Store* store, const std::string& peer, PeerReplicate frame,
                   PeerServerOptions::ReplyFn reply);
  void apply_chunk(storage::Store* store, const std::string& peer, PeerSnapshot frame,
                   PeerServerOptions::ReplyFn reply);
  // `encoded`, when given, is r.frame already encoded (one encoding for every follower of a
  // shipment); null: encoded here.
  void send(const std::string& channel, Led& c, const std::string& follower, const Retained& r,
            std::shared_ptr<const std::string>* encoded = nullptr);
  void release(const std::string& channel, Led& c);
  void fail_all(Led& c, const std::string& why);
  void expire(const std::string& channel, uint64_t position);
  void answer(const std::string& node, PeerFrame frame);
  void up(const std::string& node);
  void publish(const std::string& channel, const Led& c);
  // The followers whose acknowledgement a write needs (the in-sync set and those being added).
  std::vector<std::string> required(const Led& c) const;
  void check_in_sync(const std::string& channel, Led& c);
  void arm_in_sync(const std::string& channel, Led& c);
  void change_in_sync(const std::string& channel, Led& c);
  void in_sync_changed(const std::string& channel, uint64_t generation, bool written,
                       std::set<std::string> members, std::set<std::string> added,
                       std::set<std::string> dropped);
  std::map<std::string, size_t> in_sync_count;  // under json_mu
  void start_snapshot(const std::string& channel, Led& c, const std::string& id, Follower& f);
  void send_chunk(const std::string& channel, Led& c, const std::string& id, Follower& f);
  // Sends what follows `position` from the retained log, or a snapshot when it no longer
  // reaches that far back.
  void catch_up(const std::string& channel, Led& c, const std::string& id, Follower& f,
                uint64_t position);
  // A follower whose log differs from this leader's: it is sent a snapshot.
  void diverged_follower(const std::string& channel, Led& c, const std::string& id, Follower& f);
  // Asks etcd to take `id` out of the in-sync set at once (never below a majority).
  void leave_in_sync(const std::string& channel, Led& c, const std::string& id, const char* why);
  // Asks etcd to put `id` back into the in-sync set once it holds this leader's last position,
  // not while it is being sent a snapshot.
  void rejoin_in_sync(const std::string& channel, Led& c, const std::string& id, const Follower& f);
};

std::vector<std::string> Replication::State::required(const Led& c) const {
  std::vector<std::string> out;
  for (const std::string& id : c.replicas) {
    if (id == options.node_id) continue;
    if (c.in_sync.contains(id) || c.adding.contains(id)) out.push_back(id);
  }
  return out;
}

void Replication::State::arm_in_sync(const std::string& channel, Led& c) {
  if (c.in_sync_armed || c.pending.empty()) return;
  const auto bound = in_sync_bound(options);
  // At the oldest waiting write's bound; no sooner than a quarter bound from now, so that a
  // change etcd has not taken yet is retried at that pace and not in a loop.
  const auto at = std::max(c.pending.front().shipped + bound, Clock::now() + bound / 4);
  if (!c.in_sync_timer) c.in_sync_timer = std::make_shared<asio::steady_timer>(strand);
  c.in_sync_timer->expires_at(at);
  c.in_sync_armed = true;
  c.in_sync_timer->async_wait(
      [self = shared_from_this(), channel, generation = c.generation](boost::system::error_code) {
        auto it = self->led.find(channel);
        if (it == self->led.end() || it->second.generation != generation) return;
        it->second.in_sync_armed = false;
        self->check_in_sync(channel, it->second);
      });
}

void Replication::State::check_in_sync(const std::string& channel, Led& c) {
  if (c.pending.empty()) return;
  const Pending& oldest = c.pending.front();
  if (Clock::now() - oldest.shipped >= in_sync_bound(options)) {
    const size_t majority = c.replicas.size() / 2 + 1;
    size_t staying = 1;  // this node
    for (const std::string& id : required(c)) staying += c.dropping.contains(id) ? 0 : 1;
    for (const std::string& id : required(c)) {
      if (c.dropping.contains(id)) continue;
      const auto f = c.followers.find(id);
      const uint64_t acked = f == c.followers.end() ? 0 : f->second.acked;
      if (acked >= oldest.position) continue;
      // Never below a majority: a write no majority holds is not acknowledged anyway, and a
      // member that stays can still be elected with every acknowledged write.
      if (staying - 1 < majority) break;
      --staying;
      c.dropping.insert(id);
      log::warn(
          "replication: channel '{}': follower '{}' has not acknowledged position {} within {} "
          "ms (cluster-in-sync-timeout-ms; it acknowledged {}): taking it out of the in-sync set",
          channel, id, oldest.position, in_sync_bound(options).count(), acked);
    }
    change_in_sync(channel, c);
  }
  arm_in_sync(channel, c);
}

void Replication::State::change_in_sync(const std::string& channel, Led& c) {
  if (c.changing || (c.adding.empty() && c.dropping.empty())) return;
  Node* n = node.load();
  if (n == nullptr) return;
  std::set<std::string> members;
  std::vector<std::string> ordered;
  for (const std::string& id : c.replicas) {
    const bool in = id == options.node_id || c.in_sync.contains(id) || c.adding.contains(id);
    if (!in || c.dropping.contains(id)) continue;
    members.insert(id);
    ordered.push_back(id);
  }
  c.changing = true;
  n->change_in_sync(
      channel, c.epoch, std::move(ordered),
      [self = shared_from_this(), channel, generation = c.generation, members, added = c.adding,
       dropped = c.dropping](bool written) mutable {
        asio::post(self->strand, [self, channel, generation, written, members = std::move(members),
                                  added = std::move(added), dropped = std::move(dropped)] {
          self->in_sync_changed(channel, generation, written, members, added, dropped);
        });
      });
}

void Replication::State::in_sync_changed(const std::string& channel, uint64_t generation,
                                         bool written, std::set<std::string> members,
                                         std::set<std::string> added,
                                         std::set<std::string> dropped) {
  auto it = led.find(channel);
  if (it == led.end() || it->second.generation != generation) return;
  Led& c = it->second;
  c.changing = false;
  if (written) {
    c.in_sync = std::move(members);
    for (const auto& id : added) {
      if (c.adding.erase(id) != 0) ++in_sync_expands;
    }
    for (const auto& id : dropped) {
      if (c.dropping.erase(id) != 0) ++in_sync_shrinks;
    }
  }
  // Not written: etcd may or may not have it, so both stay counted (adding and dropping alike)
  // until a later change is written.
  // A follower that caught up while its removal was with etcd was not put back then (no write
  // may come to ask again): now it is.
  for (auto& [id, f] : c.followers) rejoin_in_sync(channel, c, id, f);
  release(channel, c);
  change_in_sync(channel, c);
  arm_in_sync(channel, c);
}

void Replication::State::when_placed_here(const std::string& peer, const std::string& channel,
                                          uint64_t epoch, const char* what,
                                          PeerServerOptions::ReplyFn reply,
                                          std::function<void(PeerServerOptions::ReplyFn)> go) {
  Node* n = node.load();
  if (n == nullptr) {
    reply(encode_peer_frame(PeerReplicaRefused{
        channel, 0, ErrorCode::kUnavailable,
        fmt::format("replication: channel '{}': this node has not joined its cluster yet",
                    peer_text(channel))}));
    return;
  }
  auto decide = [self = shared_from_this(), n, peer, channel, epoch, what](
                    PeerServerOptions::ReplyFn& reply,
                    std::function<void(PeerServerOptions::ReplyFn)>& go) {
    if (self->stopped.load()) {
      reply(encode_peer_frame(PeerReplicaRefused{channel, 0, ErrorCode::kUnavailable,
                                                 "the node is not ready to replicate"}));
      return;
    }
    if (auto refused = refuse_if_unplaced(*n, self->options.node_id, peer, channel, epoch, what)) {
      ++self->unplaced_refused;
      log::warn("{}", refused->text);
      reply(encode_peer_frame(*refused));
      return;
    }
    go(std::move(reply));
  };
  if (n->replicas_of(channel) || stopped.load()) return decide(reply, go);
  // A placement written before its leader shipped this frame is in every view read after the
  // frame came: one pass of the control loop (a tick is at most 1 s) that starts after it. The
  // bound leaves room for that pass to finish, and a frame for a channel nobody placed waits no
  // longer.
  n->await_placement(
      channel, Clock::now() + std::min<std::chrono::milliseconds>(options.timeout, kPlacementWait),
      [decide, reply = std::move(reply), go = std::move(go)]() mutable { decide(reply, go); });
}

bool Replication::State::still_leads(const std::string& channel, Led& c) {
  Node* n = node.load();
  if (n == nullptr || stopped.load()) return false;
  const auto l = n->leadership(channel);
  if (l && l->epoch == c.epoch) return true;
  if (!c.pending.empty()) {
    fail_all(c, fmt::format("replication: channel '{}': this node no longer leads it in epoch {}; "
                            "the write is not acknowledged",
                            channel, c.epoch));
  }
  return false;
}

void Replication::State::start_snapshot(const std::string& channel, Led& c, const std::string& id,
                                        Follower& f) {
  storage::Store* st = store.load();
  if (st == nullptr || f.busy()) return;
  if (!still_leads(channel, c)) return;
  auto snap = st->snapshot_channel(channel);
  if (!snap && snap.error().code == ErrorCode::kNotFound) {
    // The channel was deleted here after this node shipped its writes (the delete among them):
    // there is no state to send, and the follower's copy (diverged, or an incomplete snapshot
    // that would otherwise never complete) must go. An empty snapshot says so: the follower
    // drops its copy, and takes the channel again from its first position if it is made again.
    f.gone = c.last;
    f.beyond = false;
    f.acked = 0;
    log::info(
        "replication: channel '{}': it is gone from this node's store: telling follower '{}' to "
        "drop its copy (position {})",
        channel, id, c.last);
    PeerLinks* l = links.load();
    if (l == nullptr ||
        !l->send(id, std::make_shared<const std::string>(encode_peer_frame(
                         PeerSnapshot{channel, c.epoch, c.last, 0, true, {}, ""})))) {
      f.gone.reset();
    }
    return;
  }
  if (!snap) {
    log::warn("replication: channel '{}': cannot send follower '{}' a snapshot: {}", channel, id,
              snap.error().message);
    f.beyond = true;
    return;
  }
  f.snapshot = std::move(*snap);
  f.chunk = 0;
  f.beyond = false;
  // The first chunk discards the follower's copy: it holds nothing this node acknowledged until
  // the last chunk is stored, so it counts for nothing and leaves the in-sync set meanwhile.
  f.acked = 0;
  leave_in_sync(channel, c, id, "it is being sent a snapshot");
  log::info("replication: channel '{}': sending follower '{}' a snapshot at position {}", channel,
            id, f.snapshot->position().position);
  send_chunk(channel, c, id, f);
}

void Replication::State::send_chunk(const std::string& channel, Led& c, const std::string& id,
                                    Follower& f) {
  PeerLinks* l = links.load();
  Node* n = node.load();
  std::optional<Node::Leadership> leadership;
  if (n != nullptr) leadership = n->leadership(channel);
  bool done = false;
  auto records = f.snapshot->next(options.snapshot_chunk_bytes, done);
  if (!records || l == nullptr || stopped.load() || !leadership || leadership->epoch != c.epoch) {
    if (!records) {
      log::warn("replication: channel '{}': snapshot for follower '{}' ended: {}", channel, id,
                records.error().message);
    }
    f.snapshot.reset();
    return;
  }
  PeerSnapshot frame;
  frame.channel = channel;
  frame.epoch = c.epoch;
  frame.position = f.snapshot->position().position;
  frame.index = f.chunk;
  frame.last = done;
  if (done) {
    for (const storage::EpochStart& s : f.snapshot->position().starts)
      frame.starts.push_back({s.epoch, s.first});
  }
  frame.records = std::move(*records);
  f.chunk_last = done;
  // A full queue or a link down: the follower starts over when it next answers `diverged`.
  if (!l->send(id, std::make_shared<const std::string>(encode_peer_frame(frame)))) {
    f.snapshot.reset();
  }
}

void Replication::State::catch_up(const std::string& channel, Led& c, const std::string& id,
                                  Follower& f, uint64_t position) {
  if (position >= c.last || !still_leads(channel, c)) return;
  if (c.log.empty() || c.log.front().position > position + 1) {
    ++beyond_retained;
    start_snapshot(channel, c, id, f);
    return;
  }
  ++resends;
  for (const Retained& r : c.log) {
    if (r.position > position) send(channel, c, id, r);
  }
}

void Replication::State::diverged_follower(const std::string& channel, Led& c,
                                           const std::string& id, Follower& f) {
  if (f.busy()) return;
  ++diverged;
  start_snapshot(channel, c, id, f);
  publish(channel, c);
}

void Replication::State::leave_in_sync(const std::string& channel, Led& c, const std::string& id,
                                       const char* why) {
  if (!(c.in_sync.contains(id) || c.adding.contains(id)) || c.dropping.contains(id)) return;
  const size_t majority = c.replicas.size() / 2 + 1;
  size_t staying = 1;  // this node
  for (const std::string& r : required(c)) staying += c.dropping.contains(r) ? 0 : 1;
  if (staying - 1 < majority) {
    log::warn(
        "replication: channel '{}': follower '{}' stays in the in-sync set although {}: without "
        "it the set would be below a majority ({}) of the replicas",
        channel, id, why, majority);
    return;
  }
  c.dropping.insert(id);
  log::warn("replication: channel '{}': taking follower '{}' out of the in-sync set: {}", channel,
            id, why);
  change_in_sync(channel, c);
}

void Replication::State::rejoin_in_sync(const std::string& channel, Led& c, const std::string& id,
                                        const Follower& f) {
  if (f.busy() || f.beyond || f.acked != c.last || c.last < c.epoch_start ||
      c.in_sync.contains(id) || c.adding.contains(id) || c.dropping.contains(id)) {
    return;
  }
  c.adding.insert(id);
  log::info(
      "replication: channel '{}': follower '{}' holds position {}, the last: putting it back into "
      "the in-sync set",
      channel, id, c.last);
  change_in_sync(channel, c);
}

void Replication::State::publish(const std::string& channel, const Led& c) {
  Summary n;
  n.epoch = c.epoch;
  n.position = c.last;
  n.replicas = c.replicas;
  for (const auto& [id, f] : c.followers) {
    n.acked.emplace_back(id, f.acked);
    if (f.busy()) n.catching_up.push_back(id);
  }
  for (const std::string& id : c.replicas) {
    if (c.in_sync.contains(id)) n.in_sync.push_back(id);
  }
  n.waiting = c.pending.size();
  n.retained_bytes = c.log_bytes;
  std::lock_guard lock(json_mu);
  in_sync_count[channel] = n.in_sync.size();
  summary[channel] = std::move(n);
}

void Replication::State::fail_all(Led& c, const std::string& why) {
  auto pending = std::move(c.pending);
  c.pending.clear();
  for (auto& p : pending) {
    p.timer->cancel();
    ++quorum_timeouts;
    p.held(Error(ErrorCode::kUnavailable, why));
  }
}

void Replication::State::send(const std::string& channel, Led& c, const std::string& follower,
                              const Retained& r, std::shared_ptr<const std::string>* encoded) {
  PeerLinks* l = links.load();
  if (l == nullptr) return;
  Follower& f = c.followers[follower];
  if (f.beyond || f.busy()) return;
  if (!f.introduced) {
    PeerReplicate with = *r.frame;
    if (storage::Store* st = store.load()) with.definitions = st->replica_definitions(channel);
    if (l->send(follower, std::make_shared<const std::string>(encode_peer_frame(with)))) {
      f.introduced = true;
    }
    return;
  }
  if (encoded == nullptr) {
    l->send(follower, std::make_shared<const std::string>(encode_peer_frame(*r.frame)));
    return;
  }
  if (!*encoded) *encoded = std::make_shared<const std::string>(encode_peer_frame(*r.frame));
  l->send(follower, *encoded);
}

void Replication::State::ship(storage::Shipment s, std::function<void(Status)> held) {
  Node* n = node.load();
  std::optional<Node::Leadership> leadership;
  if (n != nullptr) leadership = n->leadership(s.channel);
  if (stopped.load() || !leadership || leadership->epoch != s.epoch) {
    ++quorum_timeouts;
    held(Error(ErrorCode::kUnavailable,
               fmt::format("replication: channel '{}': this node no longer leads it (epoch {}); "
                           "the write at position {} is not acknowledged",
                           s.channel, s.epoch, s.position)));
    return;
  }
  Led& c = led[s.channel];
  if (s.position <= c.last || s.epoch != c.epoch) {
    // A new epoch, or the channel was deleted and made again (positions start over): what the
    // followers acknowledged before says nothing about this log.
    if (s.position <= c.last) {
      fail_all(c, fmt::format("replication: channel '{}' was deleted", s.channel));
      c.log.clear();
      c.log_bytes = 0;
    }
    for (auto& [id, f] : c.followers) f = Follower{};
    c.epoch = s.epoch;
    c.epoch_start = s.position;
    // The set as etcd had it when this node was elected: its members hold every acknowledged
    // write (those this node does not hear from in time are taken out before it acknowledges
    // without them).
    c.in_sync = std::set<std::string>(leadership->in_sync.begin(), leadership->in_sync.end());
    c.in_sync.insert(options.node_id);
    c.adding.clear();
    c.dropping.clear();
    c.changing = false;
    ++c.generation;
    if (c.in_sync_timer) c.in_sync_timer->cancel();
    c.in_sync_armed = false;
  }
  if (c.last != 0 && s.position != c.last + 1) {
    // Positions this node stored without shipping them (written while it did not lead the
    // channel: its lease was lost, etcd was down) are missing from the retained log, which must
    // hold a run of positions: a follower that lacks them would ask for a resend from the first
    // of them again and again, and get what follows the hole each time. It is sent a snapshot.
    c.log.clear();
    c.log_bytes = 0;
  }
  c.last = s.position;
  c.replicas = leadership->replicas;
  for (auto it = c.followers.begin(); it != c.followers.end();) {
    if (std::find(c.replicas.begin(), c.replicas.end(), it->first) == c.replicas.end()) {
      it = c.followers.erase(it);
    } else {
      ++it;
    }
  }
  auto frame = std::make_shared<PeerReplicate>();
  frame->channel = s.channel;
  frame->epoch = s.epoch;
  frame->position = s.position;
  frame->prev_epoch = s.prev_epoch;
  frame->prev_position = s.prev_position;
  frame->durability = durability_byte(s.durability);
  frame->records = std::move(s.records);
  Retained r{s.position, frame, frame->records.size() + 64};
  ++shipped;
  auto timer = std::make_shared<asio::steady_timer>(strand, options.timeout);
  c.pending.push_back({s.position, std::move(held), timer, Clock::now()});
  timer->async_wait([self = shared_from_this(), channel = s.channel,
                     position = s.position](boost::system::error_code ec) {
    if (!ec) self->expire(channel, position);
  });
  std::shared_ptr<const std::string> encoded;
  for (const std::string& id : c.replicas) {
    if (id != options.node_id) send(s.channel, c, id, r, &encoded);
  }
  c.log_bytes += r.bytes;
  c.log.push_back(std::move(r));
  while (c.log_bytes > options.retained_bytes && c.log.size() > 1) {
    c.log_bytes -= c.log.front().bytes;
    c.log.pop_front();
  }
  release(s.channel, c);
  arm_in_sync(s.channel, c);
}

void Replication::State::release(const std::string& channel, Led& c) {
  const size_t majority = c.replicas.size() / 2 + 1;
  // This node holds every position it shipped; every other member of the in-sync set (and every
  // follower being added) must hold one too, and the set must be a majority.
  uint64_t held = c.in_sync.size() >= majority ? c.last : 0;
  for (const std::string& id : required(c)) {
    auto f = c.followers.find(id);
    held = std::min(held, f == c.followers.end() ? 0 : f->second.acked);
  }
  while (!c.pending.empty() && c.pending.front().position <= held) {
    Pending p = std::move(c.pending.front());
    c.pending.pop_front();
    p.timer->cancel();
    ++quorum_acks;
    p.held(ok_status());
  }
  publish(channel, c);
}

void Replication::State::expire(const std::string& channel, uint64_t position) {
  auto it = led.find(channel);
  if (it == led.end()) return;
  Led& c = it->second;
  size_t holding = 1;
  for (const auto& [id, f] : c.followers) holding += f.acked >= position ? 1 : 0;
  std::vector<std::string> in_sync;
  for (const std::string& id : c.replicas) {
    if (c.in_sync.contains(id)) in_sync.push_back(id);
  }
  const std::string why = fmt::format(
      "replication: channel '{}': the write at position {} is held by {} of its {} replicas "
      "after {} ms (cluster-replication-timeout-ms); every member of the in-sync set ({}) must "
      "hold it and the set must be a majority ({}) of the replicas; it is not acknowledged",
      channel, position, holding, c.replicas.size(), options.timeout.count(),
      fmt::join(in_sync, ", "), c.replicas.size() / 2 + 1);
  // Deadlines come in position order: every earlier write has expired too.
  while (!c.pending.empty() && c.pending.front().position <= position) {
    Pending p = std::move(c.pending.front());
    c.pending.pop_front();
    p.timer->cancel();
    ++quorum_timeouts;
    p.held(Error(ErrorCode::kUnavailable, why));
  }
  publish(channel, c);
}

void Replication::State::answer(const std::string& node_id, PeerFrame frame) {
  if (auto* ack = std::get_if<PeerReplicated>(&frame)) {
    auto it = led.find(ack->channel);
    if (it == led.end()) return;
    Led& c = it->second;
    if (ack->epoch > c.epoch) {
      fail_all(c, fmt::format("replication: channel '{}': node '{}' has seen epoch {}, newer "
                              "than this node's {}: this node no longer leads it",
                              ack->channel, node_id, ack->epoch, c.epoch));
      return;
    }
    auto f = c.followers.find(node_id);
    if (f == c.followers.end()) return;
    if (ack->epoch < c.epoch) {
      // An answer in an older epoch (to a frame of that epoch, resent or in flight) says nothing
      // of this epoch's log: it counts for nothing. A follower holding a position of this epoch
      // from another leader answers `diverged` (log matching); one that claims such a position
      // here is taken as diverged too.
      ++stale_acks;
      if (ack->position >= c.epoch_start) {
        log::warn(
            "replication: channel '{}': follower '{}' holds position {} from epoch {}, but this "
            "node wrote positions from {} in epoch {}: its log differs",
            ack->channel, node_id, ack->position, ack->epoch, c.epoch_start, c.epoch);
        diverged_follower(ack->channel, c, node_id, f->second);
      }
      return;
    }
    // Being sent a snapshot: an answer to a frame sent before it is void, the copy it speaks of
    // is being replaced.
    if (f->second.busy()) return;
    f->second.acked = std::max(f->second.acked, std::min(ack->position, c.last));
    rejoin_in_sync(ack->channel, c, node_id, f->second);
    release(ack->channel, c);
    return;
  }
  if (auto* resend = std::get_if<PeerResend>(&frame)) {
    auto it = led.find(resend->channel);
    if (it == led.end()) return;
    Led& c = it->second;
    auto f = c.followers.find(node_id);
    if (f == c.followers.end() || resend->from > c.last || resend->from == 0 || f->second.busy())
      return;
    // Each frame a follower behind by a gap takes answers `resend` from the same position until
    // the frames resent reach it: resending the retained log for each answer sends it once per
    // frame in flight (under load, thousands of times: the link's queue fills, frames are
    // dropped, the follower's listener stops reading and the link's pings go unanswered). One
    // resend per position; the same one again only after cluster-in-sync-timeout-ms (the frames
    // resent were lost).
    const auto now = Clock::now();
    if (resend->from == f->second.resent_from && now - f->second.resent_at < in_sync_bound(options))
      return;
    f->second.resent_from = resend->from;
    f->second.resent_at = now;
    f->second.introduced = false;
    catch_up(resend->channel, c, node_id, f->second, resend->from - 1);
    return;
  }
  if (auto* d = std::get_if<PeerDiverged>(&frame)) {
    auto it = led.find(d->channel);
    if (it == led.end()) return;
    Led& c = it->second;
    if (d->epoch > c.epoch) {
      fail_all(c, fmt::format("replication: channel '{}': node '{}' has seen epoch {}, newer "
                              "than this node's {}: this node no longer leads it",
                              d->channel, node_id, d->epoch, c.epoch));
      return;
    }
    auto f = c.followers.find(node_id);
    if (f == c.followers.end() || f->second.busy()) return;
    log::warn(
        "replication: channel '{}': follower '{}' diverged from this node's log (its last entry: "
        "epoch {}, position {}); it is sent a snapshot",
        d->channel, node_id, d->last_epoch, d->last_position);
    diverged_follower(d->channel, c, node_id, f->second);
    return;
  }
  if (auto* ack = std::get_if<PeerSnapshotAck>(&frame)) {
    auto it = led.find(ack->channel);
    if (it == led.end()) return;
    Led& c = it->second;
    auto f = c.followers.find(node_id);
    if (f == c.followers.end()) return;
    Follower& fw = f->second;
    if (fw.gone) {
      if (ack->index != 0 || ack->position != *fw.gone) return;
      fw.gone.reset();
      log::info(
          "replication: channel '{}': follower '{}' dropped its copy (the channel is gone here) "
          "at position {}",
          ack->channel, node_id, ack->position);
    } else {
      if (!fw.snapshot || ack->index != fw.chunk ||
          ack->position != fw.snapshot->position().position) {
        return;
      }
      if (!fw.chunk_last) {
        ++fw.chunk;
        send_chunk(ack->channel, c, node_id, fw);
        return;
      }
      fw.snapshot.reset();
      ++snapshots_sent;
      log::info("replication: channel '{}': follower '{}' holds the snapshot at position {}",
                ack->channel, node_id, ack->position);
    }
    const uint64_t position = ack->position;
    fw.introduced = true;  // the snapshot held the definitions
    fw.acked = std::max(fw.acked, std::min(position, c.last));
    catch_up(ack->channel, c, node_id, fw, position);
    // Whole and at the last position: back into the in-sync set (else once it acknowledges the
    // last position of what catch_up sent).
    rejoin_in_sync(ack->channel, c, node_id, fw);
    release(ack->channel, c);
    return;
  }
  if (auto* refused = std::get_if<PeerReplicaRefused>(&frame)) {
    log::warn("replication: channel '{}': node '{}' refused a batch: {}",
              peer_text(refused->channel), node_id, peer_text(refused->text));
    auto it = led.find(refused->channel);
    if (it == led.end()) return;
    // A refused snapshot chunk ends that snapshot; the follower's next answer starts another.
    if (auto f = it->second.followers.find(node_id); f != it->second.followers.end()) {
      f->second.snapshot.reset();
      f->second.gone.reset();
    }
    if (refused->epoch > it->second.epoch) {
      fail_all(it->second,
               fmt::format("replication: channel '{}': node '{}' has seen epoch {}, "
                           "newer than this node's {}: this node no longer leads it",
                           refused->channel, node_id, refused->epoch, it->second.epoch));
    }
  }
}

void Replication::State::up(const std::string& node_id) {
  // The follower may have missed frames while the link was down: the newest frame (with the
  // definitions) makes it answer with its position, or ask for what it lacks.
  for (auto& [channel, c] : led) {
    auto f = c.followers.find(node_id);
    if (std::find(c.replicas.begin(), c.replicas.end(), node_id) == c.replicas.end()) continue;
    // A channel this node no longer leads in the epoch it shipped in: nothing more of it goes out
    // (its log is that epoch's; the follower may already take a newer leader's frames).
    if (!still_leads(channel, c)) continue;
    if (f != c.followers.end()) {
      f->second.introduced = false;
      f->second.beyond = false;
      f->second.snapshot.reset();  // the chunk in flight may be lost: it starts over
      f->second.gone.reset();
      f->second.resent_from = 0;  // and so may a resend
    }
    if (!c.log.empty()) send(channel, c, node_id, c.log.back());
  }
}

Replication::Replication(asio::io_context& io, ReplicationOptions options)
    : state_(std::make_shared<State>(io, std::move(options))) {}

Replication::~Replication() { stop(); }

void Replication::attach(storage::Store* store) { state_->store.store(store); }

void Replication::connect(Node* node, PeerLinks* links) {
  state_->links.store(links);
  state_->node.store(links != nullptr ? node : nullptr);
}

std::optional<uint64_t> Replication::shipping_epoch(const std::string& channel) {
  if (state_->stopped.load()) return std::nullopt;
  Node* n = state_->node.load();
  if (n == nullptr) return std::nullopt;
  auto l = n->leadership(channel);
  if (!l || l->replicas.size() <= 1) return std::nullopt;
  return l->epoch;
}

void Replication::ship(storage::Shipment s, std::function<void(Status)> held) {
  asio::post(state_->strand, [st = state_, s = std::move(s), held = std::move(held)]() mutable {
    st->ship(std::move(s), std::move(held));
  });
}

void Replication::stop() {
  if (state_->stopped.exchange(true)) return;
  asio::post(state_->strand, [st = state_] {
    for (auto& [channel, c] : st->led) {
      st->fail_all(c, fmt::format("replication: channel '{}': the node is stopping", channel));
    }
  });
}

void Replication::State::apply_batch(storage::Store* store, const std::string& peer,
                                     PeerReplicate frame, PeerServerOptions::ReplyFn reply) {
  if (auto refused = refuse_if_led(node.load(), peer, frame.channel, frame.epoch, "a batch")) {
    ++stale_refused;
    log::warn("{}", refused->text);
    reply(encode_peer_frame(*refused));
    return;
  }
  storage::ReplicatedBatch b;
  b.channel = std::move(frame.channel);
  b.epoch = frame.epoch;
  b.position = frame.position;
  b.prev_epoch = frame.prev_epoch;
  b.prev_position = frame.prev_position;
  b.durability = static_cast<storage::Durability>(frame.durability);
  b.definitions = std::move(frame.definitions);
  b.records = std::move(frame.records);
  store->apply_replicated(b, [st = shared_from_this(), peer, channel = b.channel,
                              reply = std::move(reply)](storage::ApplyOutcome o) {
    using Kind = storage::ApplyOutcome::Kind;
    switch (o.kind) {
      case Kind::kApplied:
        ++st->applied;
        [[fallthrough]];
      case Kind::kDuplicate:
        reply(encode_peer_frame(PeerReplicated{channel, o.epoch, o.position}));
        return;
      case Kind::kGap:
        reply(encode_peer_frame(PeerResend{channel, o.position}));
        return;
      case Kind::kDiverged:
        reply(encode_peer_frame(PeerDiverged{channel, o.epoch, o.last_epoch, o.position}));
        return;
      case Kind::kStale:
        ++st->stale_refused;
        log::warn("replication: from node '{}': {}", peer, o.text);
        reply(encode_peer_frame(
            PeerReplicaRefused{channel, o.epoch, ErrorCode::kFailedPrecondition, o.text}));
        return;
      case Kind::kFailed:
        log::warn("replication: from node '{}': {}", peer, o.text);
        reply(encode_peer_frame(
            PeerReplicaRefused{channel, o.epoch, ErrorCode::kInvalidArgument, o.text}));
        return;
    }
  });
}

void Replication::State::apply_chunk(storage::Store* store, const std::string& peer,
                                     PeerSnapshot frame, PeerServerOptions::ReplyFn reply) {
  if (auto refused =
          refuse_if_led(node.load(), peer, frame.channel, frame.epoch, "a snapshot chunk")) {
    ++stale_refused;
    log::warn("{}", refused->text);
    reply(encode_peer_frame(*refused));
    return;
  }
  storage::SnapshotChunk c;
  c.channel = std::move(frame.channel);
  c.epoch = frame.epoch;
  c.position = frame.position;
  c.index = frame.index;
  c.last = frame.last;
  for (const PeerEpochStart& s : frame.starts) c.starts.push_back({s.epoch, s.first});
  c.records = std::move(frame.records);
  store->apply_snapshot(c, [st = shared_from_this(), peer, channel = c.channel, index = c.index,
                            last = c.last, reply = std::move(reply)](storage::ApplyOutcome o) {
    using Kind = storage::ApplyOutcome::Kind;
    if (o.kind == Kind::kApplied) {
      if (last) {
        ++st->snapshots_received;
        log::info("replication: channel '{}': stored the snapshot from node '{}' at position {}",
                  channel, peer, o.position);
      }
      reply(encode_peer_frame(PeerSnapshotAck{channel, o.epoch, o.position, index}));
      return;
    }
    if (o.kind == Kind::kStale) ++st->stale_refused;
    log::warn("replication: from node '{}': {}", peer, o.text);
    reply(encode_peer_frame(PeerReplicaRefused{
        channel, o.epoch,
        o.kind == Kind::kStale ? ErrorCode::kFailedPrecondition : ErrorCode::kInvalidArgument,
        o.text}));
  });
}

void Replication::on_replicate(const std::string& peer, PeerReplicate frame,
                               PeerServerOptions::ReplyFn reply) {
  state_->take(peer, std::move(frame), "a batch", std::move(reply), &State::apply_batch);
}

void Replication::on_snapshot(const std::string& peer, PeerSnapshot frame,
                              PeerServerOptions::ReplyFn reply) {
  state_->take(peer, std::move(frame), "a snapshot chunk", std::move(reply), &State::apply_chunk);
}

void Replication::on_frame(const std::string& node, PeerFrame frame) {
  asio::post(state_->strand, [st = state_, node, frame = std::move(frame)]() mutable {
    st->answer(node, std::move(frame));
  });
}

bool Replication::follower_caught_up(const std::string& channel, uint64_t epoch,
                                     const std::string& follower) const {
  std::lock_guard lock(state_->json_mu);
  auto it = state_->summary.find(channel);
  if (it == state_->summary.end() || it->second.epoch != epoch) return true;
  const State::Summary& c = it->second;
  auto acked = std::find_if(c.acked.begin(), c.acked.end(),
                            [&](const auto& a) { return a.first == follower; });
  if (acked == c.acked.end() || acked->second != c.position) return false;
  if (std::find(c.catching_up.begin(), c.catching_up.end(), follower) != c.catching_up.end()) {
    return false;
  }
  return std::find(c.in_sync.begin(), c.in_sync.end(), follower) != c.in_sync.end();
}

bool Replication::holds(const std::string& channel) const {
  storage::Store* st = state_->store.load();
  if (st == nullptr) return false;
  const storage::ReplicaPosition p = st->replica_position(channel);
  return p.position > 0 && !p.incomplete;
}

std::vector<std::string> Replication::catching_up() const {
  storage::Store* st = state_->store.load();
  return st == nullptr ? std::vector<std::string>() : st->replica_catching_up();
}

void Replication::on_up(const std::string& node) {
  asio::post(state_->strand, [st = state_, node] { st->up(node); });
}

ReplicationFigures Replication::figures() const {
  const State& s = *state_;
  return {s.shipped.load(),         s.quorum_acks.load(),        s.quorum_timeouts.load(),
          s.applied.load(),         s.stale_refused.load(),      s.unplaced_refused.load(),
          s.resends.load(),         s.beyond_retained.load(),    s.diverged.load(),
          s.snapshots_sent.load(),  s.snapshots_received.load(), s.in_sync_shrinks.load(),
          s.in_sync_expands.load(), s.stale_acks.load()};
}

nlohmann::json Replication::to_json() const {
  const ReplicationFigures f = figures();
  nlohmann::json j{{"batches-shipped", f.batches_shipped},
                   {"quorum-acks", f.quorum_acks},
                   {"quorum-timeouts", f.quorum_timeouts},
                   {"batches-applied", f.batches_applied},
                   {"stale-refused", f.stale_refused},
                   {"unplaced-refused", f.unplaced_refused},
                   {"resends", f.resends},
                   {"beyond-retained", f.beyond_retained},
                   {"diverged", f.diverged},
                   {"snapshots-sent", f.snapshots_sent},
                   {"snapshots-received", f.snapshots_received},
                   {"in-sync-shrinks", f.in_sync_shrinks},
                   {"in-sync-expands", f.in_sync_expands},
                   {"stale-acks", f.stale_acks}};
  j["catching-up"] = catching_up();
  nlohmann::json led = nlohmann::json::object();
  std::lock_guard lock(state_->json_mu);
  for (const auto& [channel, c] : state_->summary) {
    nlohmann::json followers = nlohmann::json::object();
    nlohmann::json lag = nlohmann::json::object();
    for (const auto& [id, acked] : c.acked) {
      followers[id] = acked;
      lag[id] = c.position - std::min(c.position, acked);
    }
    led[channel] = {{"epoch", c.epoch},
                    {"position", c.position},
                    {"replicas", c.replicas},
                    {"in-sync", c.in_sync},
                    {"followers-acked", followers},
                    {"followers-catching-up", c.catching_up},
                    {"followers-lag", lag},
                    {"waiting", c.waiting},
                    {"retained-bytes", c.retained_bytes}};
  }
  j["channels-led"] = std::move(led);
  return j;
}

std::vector<std::pair<std::string, size_t>> Replication::in_sync_counts() const {
  Node* n = state_->node.load();
  std::vector<std::pair<std::string, size_t>> out;
  if (n == nullptr) return out;
  std::lock_guard lock(state_->json_mu);
  for (const auto& [channel, count] : state_->in_sync_count) {
    if (n->leadership(channel)) out.emplace_back(channel, count);
  }
  return out;
}

}  // namespace witmq::cluster
