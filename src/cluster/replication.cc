#include "cluster/replication.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <deque>
#include <map>
#include <mutex>

#include "common/log.h"
#include "storage/store.h"

namespace witmq::cluster {

namespace asio = boost::asio;

namespace {

uint8_t durability_byte(storage::Durability d) { return static_cast<uint8_t>(d); }

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
      stale_refused{0}, resends{0}, beyond_retained{0}, diverged{0}, snapshots_sent{0},
      snapshots_received{0};

  // -- the leader's state, on `strand` only --
  struct Follower {
    uint64_t acked = 0;
    bool introduced = false;  // sent the definitions on the current link
    bool beyond = false;      // asked for more than the retained log holds
    // A snapshot being sent (nothing else is sent meanwhile): the chunk in flight, and whether
    // it is the last one.
    std::unique_ptr<storage::ChannelSnapshot> snapshot;
    uint32_t chunk = 0;
    bool chunk_last = false;
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
  };
  struct Led {
    uint64_t epoch = 0;
    uint64_t last = 0;  // last position shipped
    std::vector<std::string> replicas;
    std::map<std::string, Follower> followers;
    std::deque<Retained> log;
    size_t log_bytes = 0;
    std::deque<Pending> pending;
  };
  std::map<std::string, Led> led;
  mutable std::mutex json_mu;  // guards `summary`, the JSON view published from the strand
  nlohmann::json summary = nlohmann::json::object();

  void ship(storage::Shipment s, std::function<void(Status)> held);
  void send(const std::string& channel, Led& c, const std::string& follower, const Retained& r);
  void release(const std::string& channel, Led& c);
  void fail_all(Led& c, const std::string& why);
  void expire(const std::string& channel, uint64_t position);
  void answer(const std::string& node, PeerFrame frame);
  void up(const std::string& node);
  void publish(const std::string& channel, const Led& c);
  void start_snapshot(const std::string& channel, Led& c, const std::string& id, Follower& f);
  void send_chunk(const std::string& channel, Led& c, const std::string& id, Follower& f);
  // Sends what follows `position` from the retained log, or a snapshot when it no longer
  // reaches that far back.
  void catch_up(const std::string& channel, Led& c, const std::string& id, Follower& f,
                uint64_t position);
};

void Replication::State::start_snapshot(const std::string& channel, Led& c, const std::string& id,
                                        Follower& f) {
  storage::Store* st = store.load();
  if (st == nullptr || f.snapshot) return;
  auto snap = st->snapshot_channel(channel);
  if (!snap) {
    log::warn("replication: channel '{}': cannot send follower '{}' a snapshot: {}", channel, id,
              snap.error().message);
    f.beyond = true;
    return;
  }
  f.snapshot = std::move(*snap);
  f.chunk = 0;
  f.beyond = false;
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
  if (position >= c.last) return;
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

void Replication::State::publish(const std::string& channel, const Led& c) {
  nlohmann::json followers = nlohmann::json::object();
  nlohmann::json catching_up = nlohmann::json::array();
  for (const auto& [id, f] : c.followers) {
    followers[id] = f.acked;
    if (f.snapshot) catching_up.push_back(id);
  }
  std::lock_guard lock(json_mu);
  summary[channel] = {{"epoch", c.epoch},
                      {"position", c.last},
                      {"replicas", c.replicas},
                      {"followers-acked", followers},
                      {"followers-catching-up", catching_up},
                      {"waiting", c.pending.size()},
                      {"retained-bytes", c.log_bytes}};
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
                              const Retained& r) {
  PeerLinks* l = links.load();
  if (l == nullptr) return;
  Follower& f = c.followers[follower];
  if (f.beyond || f.snapshot) return;
  if (!f.introduced) {
    PeerReplicate with = *r.frame;
    if (storage::Store* st = store.load()) with.definitions = st->replica_definitions(channel);
    if (l->send(follower, std::make_shared<const std::string>(encode_peer_frame(with)))) {
      f.introduced = true;
    }
    return;
  }
  l->send(follower, std::make_shared<const std::string>(encode_peer_frame(*r.frame)));
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
  c.pending.push_back({s.position, std::move(held), timer});
  timer->async_wait([self = shared_from_this(), channel = s.channel,
                     position = s.position](boost::system::error_code ec) {
    if (!ec) self->expire(channel, position);
  });
  for (const std::string& id : c.replicas) {
    if (id != options.node_id) send(s.channel, c, id, r);
  }
  c.log_bytes += r.bytes;
  c.log.push_back(std::move(r));
  while (c.log_bytes > options.retained_bytes && c.log.size() > 1) {
    c.log_bytes -= c.log.front().bytes;
    c.log.pop_front();
  }
  release(s.channel, c);
}

void Replication::State::release(const std::string& channel, Led& c) {
  const size_t majority = c.replicas.size() / 2 + 1;
  std::vector<uint64_t> acked;
  for (const std::string& id : c.replicas) {
    if (id == options.node_id) continue;
    auto f = c.followers.find(id);
    acked.push_back(f == c.followers.end() ? 0 : f->second.acked);
  }
  std::sort(acked.rbegin(), acked.rend());
  // This node holds every position it shipped; majority - 1 followers must hold one too.
  uint64_t held = c.last;
  if (majority >= 2) held = majority - 2 < acked.size() ? acked[majority - 2] : 0;
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
  const std::string why = fmt::format(
      "replication: channel '{}': the write at position {} is held by {} of its {} replicas "
      "after {} ms (cluster-replication-timeout-ms); a majority ({}) is needed; it is not "
      "acknowledged",
      channel, position, holding, c.replicas.size(), options.timeout.count(),
      c.replicas.size() / 2 + 1);
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
    f->second.acked = std::max(f->second.acked, std::min(ack->position, c.last));
    release(ack->channel, c);
    return;
  }
  if (auto* resend = std::get_if<PeerResend>(&frame)) {
    auto it = led.find(resend->channel);
    if (it == led.end()) return;
    Led& c = it->second;
    auto f = c.followers.find(node_id);
    if (f == c.followers.end() || resend->from > c.last || resend->from == 0 || f->second.snapshot)
      return;
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
    if (f == c.followers.end() || f->second.snapshot) return;
    ++diverged;
    log::warn(
        "replication: channel '{}': follower '{}' diverged from this node's log (its last entry: "
        "epoch {}, position {}); it is sent a snapshot",
        d->channel, node_id, d->last_epoch, d->last_position);
    start_snapshot(d->channel, c, node_id, f->second);
    publish(d->channel, c);
    return;
  }
  if (auto* ack = std::get_if<PeerSnapshotAck>(&frame)) {
    auto it = led.find(ack->channel);
    if (it == led.end()) return;
    Led& c = it->second;
    auto f = c.followers.find(node_id);
    if (f == c.followers.end()) return;
    Follower& fw = f->second;
    if (!fw.snapshot || ack->index != fw.chunk ||
        ack->position != fw.snapshot->position().position) {
      return;
    }
    if (!fw.chunk_last) {
      ++fw.chunk;
      send_chunk(ack->channel, c, node_id, fw);
      return;
    }
    const uint64_t position = ack->position;
    fw.snapshot.reset();
    fw.introduced = true;  // the snapshot held the definitions
    ++snapshots_sent;
    log::info("replication: channel '{}': follower '{}' holds the snapshot at position {}",
              ack->channel, node_id, position);
    fw.acked = std::max(fw.acked, std::min(position, c.last));
    catch_up(ack->channel, c, node_id, fw, position);
    release(ack->channel, c);
    return;
  }
  if (auto* refused = std::get_if<PeerReplicaRefused>(&frame)) {
    log::warn("replication: channel '{}': node '{}' refused a batch: {}",
              peer_text(refused->channel), node_id, peer_text(refused->text));
    auto it = led.find(refused->channel);
    if (it == led.end()) return;
    // A refused snapshot chunk ends that snapshot; the follower's next answer starts another.
    if (auto f = it->second.followers.find(node_id); f != it->second.followers.end())
      f->second.snapshot.reset();
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
    if (f != c.followers.end()) {
      f->second.introduced = false;
      f->second.beyond = false;
      f->second.snapshot.reset();  // the chunk in flight may be lost: it starts over
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

void Replication::on_replicate(const std::string& peer, PeerReplicate frame,
                               PeerServerOptions::ReplyFn reply) {
  storage::Store* store = state_->store.load();
  if (store == nullptr || state_->stopped.load()) {
    reply(encode_peer_frame(PeerReplicaRefused{frame.channel, 0, ErrorCode::kUnavailable,
                                               "the node is not ready to replicate"}));
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
  store->apply_replicated(b, [st = state_, peer, channel = b.channel,
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

void Replication::on_snapshot(const std::string& peer, PeerSnapshot frame,
                              PeerServerOptions::ReplyFn reply) {
  storage::Store* store = state_->store.load();
  if (store == nullptr || state_->stopped.load()) {
    reply(encode_peer_frame(PeerReplicaRefused{frame.channel, 0, ErrorCode::kUnavailable,
                                               "the node is not ready to replicate"}));
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
  store->apply_snapshot(c, [st = state_, peer, channel = c.channel, index = c.index, last = c.last,
                            reply = std::move(reply)](storage::ApplyOutcome o) {
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

void Replication::on_frame(const std::string& node, PeerFrame frame) {
  asio::post(state_->strand, [st = state_, node, frame = std::move(frame)]() mutable {
    st->answer(node, std::move(frame));
  });
}

void Replication::on_up(const std::string& node) {
  asio::post(state_->strand, [st = state_, node] { st->up(node); });
}

ReplicationFigures Replication::figures() const {
  const State& s = *state_;
  return {s.shipped.load(),           s.quorum_acks.load(),   s.quorum_timeouts.load(),
          s.applied.load(),           s.stale_refused.load(), s.resends.load(),
          s.beyond_retained.load(),   s.diverged.load(),      s.snapshots_sent.load(),
          s.snapshots_received.load()};
}

nlohmann::json Replication::to_json() const {
  const ReplicationFigures f = figures();
  nlohmann::json j{
      {"batches-shipped", f.batches_shipped}, {"quorum-acks", f.quorum_acks},
      {"quorum-timeouts", f.quorum_timeouts}, {"batches-applied", f.batches_applied},
      {"stale-refused", f.stale_refused},     {"resends", f.resends},
      {"beyond-retained", f.beyond_retained}, {"diverged", f.diverged},
      {"snapshots-sent", f.snapshots_sent},   {"snapshots-received", f.snapshots_received}};
  if (storage::Store* st = state_->store.load()) j["catching-up"] = st->replica_catching_up();
  std::lock_guard lock(state_->json_mu);
  j["channels-led"] = state_->summary;
  return j;
}

}  // namespace witmq::cluster
