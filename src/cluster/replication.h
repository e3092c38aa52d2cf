// Replication of channels between the nodes of a cluster (docs/CLUSTERING.md, "Replication").
//
// Leader side: the store's commit path hands over each commit group's writes of every channel
// this node leads with followers (storage::Replicator), already stored locally and numbered by
// a per-channel position under the leader's epoch. They go to every follower in one `replicate`
// frame per channel and commit group, over the peer link this node dialed; the first frame to
// a follower on a link also carries the channel's and its subscriptions' definitions. The last
// frames of each channel are kept (a bounded log) to answer a follower's `resend`.
//
// The ack rule (docs/CLUSTERING.md, "The in-sync set"): a write's callers are answered once
// every member of the channel's in-sync set (kept in etcd, Node::change_in_sync), and every
// follower being added to it, has acknowledged (`replicated`) a position at or past it in this
// leader's epoch, and the set holds a majority of the replicas; with `unavailable` once
// cluster-replication-timeout-ms passes without. Invariant: every acknowledged write is held by
// every member of the in-sync set in etcd. So a member that has not acknowledged a write within
// cluster-in-sync-timeout-ms of its shipping is taken out of the set (in etcd, before any write
// is acknowledged without it), as long as a majority stays in it; a follower that has
// acknowledged the leader's last position is put back (and counts from the moment that is
// asked). An acknowledgement counts only when it is in the leader's epoch: a `duplicate` answer
// of a follower that holds the position from an older epoch says nothing of this log.
//
// Follower side: `replicate` frames arrive on the peer listener; each is applied to this node's
// store in position order (Store::apply_replicated), as durably as the leader's write was, and
// acknowledged; a stale epoch is refused (`replica-refused`), a gap asks for a resend, and a
// frame whose previous entry is not the follower's last (log matching) is answered `diverged`.
//
// Snapshots: a follower that diverged, or asks for positions the retained log no longer holds
// (it was down, or its data directory is new), is sent the channel's whole state at one
// position (storage::ChannelSnapshot), one chunk at a time: the next chunk goes once the
// follower has stored the one before (`snapshot-ack`), so at most one chunk per follower is in
// flight. Then the retained frames after that position follow.
//
// Threading: the leader's state lives on one strand; the commit thread and the peer link post
// to it. Nothing here blocks the commit thread.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cluster/node.h"
#include "cluster/peer_frames.h"
#include "cluster/peer_links.h"
#include "cluster/peer_server.h"
#include "storage/replication.h"

namespace witmq::cluster {

struct ReplicationOptions {
  std::string node_id;
  // How long a write of a replicated channel waits for a majority of its replicas before its
  // callers get `unavailable` (cluster-replication-timeout-ms).
  std::chrono::milliseconds timeout{5'000};
  // How long an in-sync follower may leave a shipped write unacknowledged before it is taken out
  // of the in-sync set (cluster-in-sync-timeout-ms; 0: half of `timeout`).
  std::chrono::milliseconds in_sync_timeout{0};
  // Bytes of shipped frames kept per channel for followers that ask for a resend
  // (cluster-replication-retained-bytes); a follower further behind takes a snapshot.
  size_t retained_bytes = 32 << 20;
  // Bytes of records per snapshot chunk (a chunk holds at least one record).
  size_t snapshot_chunk_bytes = 1 << 20;
};

// Counters for /v1/cluster and /metrics.
struct ReplicationFigures {
  uint64_t batches_shipped = 0;     // commit groups shipped (one per channel and group)
  uint64_t quorum_acks = 0;         // shipped batches a majority acknowledged
  uint64_t quorum_timeouts = 0;     // shipped batches that failed for want of a majority
  uint64_t batches_applied = 0;     // received batches applied by this node as a follower
  uint64_t stale_refused = 0;       // received batches refused for a stale epoch
  uint64_t unplaced_refused = 0;    // received frames refused: their channel has no replica here
  uint64_t resends = 0;             // resend requests answered from the retained log
  uint64_t beyond_retained = 0;     // resend requests the retained log no longer reaches
  uint64_t diverged = 0;            // followers' divergence reports (leader side)
  uint64_t snapshots_sent = 0;      // snapshots a follower stored whole (leader side)
  uint64_t snapshots_received = 0;  // snapshots this node stored whole (follower side)
  uint64_t in_sync_shrinks = 0;     // followers taken out of an in-sync set by this node
  uint64_t in_sync_expands = 0;     // followers put back into an in-sync set by this node
  uint64_t stale_acks = 0;          // acknowledgements not counted: from an older epoch
};

class Replication : public storage::Replicator {
 public:
  Replication(boost::asio::io_context& io, ReplicationOptions options);
  ~Replication() override;

  // storage::Replicator
  void attach(storage::Store* store) override;
  std::optional<uint64_t> shipping_epoch(const std::string& channel) override;
  void ship(storage::Shipment s, std::function<void(Status)> held) override;

  // Once the node has joined and its links exist; until then nothing is shipped (a channel
  // cannot be led before). Either may be null (no peer listener: nothing can be replicated).
  void connect(Node* node, PeerLinks* links);
  // Fails every write still waiting (`unavailable`) and ships no more. Idempotent.
  void stop();

  // Follower side: a replicate frame from `peer` (PeerServerOptions::on_replicate).
  void on_replicate(const std::string& peer, PeerReplicate frame, PeerServerOptions::ReplyFn reply);
  // Follower side: a snapshot chunk from `peer` (PeerServerOptions::on_snapshot).
  void on_snapshot(const std::string& peer, PeerSnapshot frame, PeerServerOptions::ReplyFn reply);
  // Leader side: a follower's answer, and a link that came up (PeerLinksOptions).
  void on_frame(const std::string& node, PeerFrame frame);
  void on_up(const std::string& node);

  ReplicationFigures figures() const;
  // Per led channel: position, epoch, each follower's acknowledged position and the followers
  // being sent a snapshot, the in-sync set; and the channels whose copy here is an incomplete
  // snapshot ("catching-up").
  nlohmann::json to_json() const;
  // Whether `follower` has acknowledged the last position this node wrote to `channel` (which
  // it leads) in `epoch`, is not being sent a snapshot and is in the in-sync set; true when this
  // node has shipped nothing of the channel in that epoch.
  bool follower_caught_up(const std::string& channel, uint64_t epoch,
                          const std::string& follower) const;
  // Whether this node's store holds a replicated position of `channel` (a whole copy of some of
  // its log, as a follower or a leader).
  bool holds(const std::string& channel) const;
  // The channels whose copy in this node's store is an incomplete snapshot (catching up).
  std::vector<std::string> catching_up() const;
  // Per led channel with followers: how many replicas (this node included) are in its in-sync
  // set.
  std::vector<std::pair<std::string, size_t>> in_sync_counts() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace witmq::cluster
