// In-memory state of channels and subscriptions (internal to the broker).
//
// Invariants (under Channel::mu):
//  - first <= every subscription's floor <= next <= committed <= head.
//  - A subscription's window holds exactly the seqs [floor, next): window[i] is seq floor + i.
//    Seqs >= next were never delivered; seqs < floor are settled.
//  - Messages with seq < committed are durable per the channel's durability and visible to
//    consumers; [committed, head) are written or being written but not yet confirmed.
//  - No thread ever holds two channels' mutexes at once: moves between channels (dead letters,
//    replay) happen in steps, each under one lock, joined by one atomic storage write.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "broker/channel_settings.h"
#include "broker/timer_queue.h"
#include "storage/store.h"

namespace witmq::broker {

using storage::Seq;

int64_t wall_ms();
inline SteadyTime steady_now() { return std::chrono::steady_clock::now(); }

// Delivery state of one seq in [floor, next) of a subscription.
struct Delivery {
  enum class State : uint8_t {
    kAcquired,  // leased to `holder` until `deadline`
    kMoving,    // being moved to the dead-letter channel; settles when the move is written
    kReady,     // available for redelivery now
    kWaiting,   // available again at `deadline` (backoff)
    kAccepted,  // settled; stays until the floor passes it
  };
  State state = State::kAcquired;
  bool persisted = false;  // a DeliveryRecord exists in storage for this seq
  uint32_t attempts = 0;   // deliveries so far
  uint64_t lease = 0;
  uint64_t holder = 0;  // client id
  SteadyTime deadline{};
};

struct Subscription {
  storage::SubscriptionId id = 0;
  std::string name;     // "" for a point-to-point channel's shared subscription
  bool durable = true;  // ephemeral subscriptions write nothing to storage
  uint64_t owner = 0;   // ephemeral: the client it belongs to
  Seq floor = 0;
  Seq next = 0;
  // The floor last written to storage (the cursor is written lazily, see Impl::floor_moved).
  Seq persisted_floor = 0;
  // advance_floor() deleted a stored delivery record: the cursor must be written with it, or a
  // crash would forget that message's attempt count.
  bool cursor_due = false;
  std::deque<Delivery> window;
  std::set<Seq> ready;
  std::set<std::pair<SteadyTime, Seq>> waiting;
  std::set<std::pair<SteadyTime, Seq>> leases;
  uint64_t in_flight = 0;
  uint64_t accepted_in_window = 0;

  Delivery& at(Seq s) { return window[s - floor]; }
  bool contains(Seq s) const { return s >= floor && s < next; }
  // Messages this subscription could hand out now, given the channel's committed seq.
  bool has_available(Seq committed) const { return !ready.empty() || next < committed; }
  // Pops settled entries off the front of the window; deletes their stored records. Returns true
  // when the floor moved (the cursor must be written).
  bool advance_floor(storage::WriteSet& ws);
  // Settles `seq` (acquired or ready or waiting) as accepted. Returns the client whose lease
  // this ended, 0 if it was not acquired.
  uint64_t accept(Seq seq);
  // Drops every entry below `new_floor` (retention or purge). Returns how many were unsettled;
  // the clients whose leases it ended are appended to `holders`.
  uint64_t drop_below(Seq new_floor, storage::WriteSet& ws, std::vector<uint64_t>& holders);
  std::optional<SteadyTime> next_deadline() const;
};

struct Waiter;
struct SettleBatch;

struct Channel : std::enable_shared_from_this<Channel> {
  std::mutex mu;
  storage::ChannelId id = 0;
  std::string name;
  ChannelSettings settings;
  std::string dead_letter_of;  // non-empty: this is that channel's dead-letter channel
  // Set by delete_channel under `mu`. Every path that takes `mu` and then writes state of this
  // channel checks it first, and submits its writes before releasing `mu`: the store applies
  // writes in submission order, so nothing naming the channel lands after its deletion.
  bool deleted = false;
  // Set (with `deleted`) when this node stopped serving the channel because another node leads
  // it now (Broker::release_channel). Shared with the replies still waiting for a write, so that
  // a reply after the release says kUnavailable even when the channel object is gone.
  std::shared_ptr<std::atomic<bool>> released = std::make_shared<std::atomic<bool>>(false);
  // Writes naming this channel that are submitted under another channel's lock (a dead-letter
  // move carries the source's "accepted" record in the dead-letter channel's append; a replay
  // carries the dead-letter channel's record in the source's). While any is under way, a
  // delete_channel keeps its own writes in `deferred_delete`, and the last one to finish submits
  // them: a deletion then always lands after the writes that name the channel.
  uint32_t foreign_writers = 0;
  std::optional<storage::WriteSet> deferred_delete;

  Seq first = 0;      // first retained
  Seq head = 0;       // next to assign
  Seq committed = 0;  // next not yet confirmed

  // Every message below this seq is known to be deleted from storage: a trim's range delete
  // reported stored. Trims delete from here, so a range whose delete failed (a full disk) is
  // covered again by the next one. 0 when the channel is opened: the first trim after a start
  // also removes what a trim that failed before the restart left behind.
  std::atomic<Seq> deleted_below{0};
  // The target of a trim recorded in a write set not yet submitted (0: none); submit() takes it.
  Seq trim_unsubmitted = 0;
  // A write of this channel failed, and it may have held the channel's or a subscription's
  // definition: the next write carries them again (Impl::write_failed).
  bool definition_due = false;
  // The completes gathered for this channel's next commit (Impl::complete_held), while that
  // request waits in the store's queue; any other write of the channel's state closes it, so
  // that later completes are stored after that write.
  std::shared_ptr<SettleBatch> settle_batch;

  // Seq ranges [from, to) whose append failed (say, the disk was full): never stored, so never
  // delivered; acquisition settles them as it reaches them. Recorded under unstored_mu alone,
  // because a failed commit may report while `mu` is held, and always before any later append
  // is confirmed (commits report in order).
  std::mutex unstored_mu;
  std::vector<std::pair<Seq, Seq>> unstored;
  std::atomic<bool> has_unstored{false};
  void add_unstored(Seq from, Seq to);
  bool is_unstored(Seq seq);
  void forget_unstored_below(Seq seq);

  // Recent messages, so consumers that keep up never read storage. tail[i] is seq tail_first + i.
  std::deque<std::shared_ptr<const storage::StoredMessage>> tail;
  Seq tail_first = 0;
  size_t tail_bytes = 0;

  std::map<std::string, std::unique_ptr<Subscription>> subs;
  std::unordered_map<storage::SubscriptionId, Subscription*> subs_by_id;
  std::list<std::shared_ptr<Waiter>> waiters;

  std::optional<SteadyTime> armed;  // when the channel's timer is set to fire
  TimerQueue::Handle timer;
  bool housekeeping_due = false;
  SteadyTime housekeeping_at{};

  uint64_t sends_total = 0, deliveries_total = 0, redeliveries_total = 0, completes_total = 0,
           abandons_total = 0, lease_expiries_total = 0, dead_letters_total = 0;

  bool is_topic() const { return settings.kind == ChannelKind::kPublishSubscribe; }
  std::string dead_letter_name() const {
    return settings.dead_letter_channel.empty() ? name + ".dlq" : settings.dead_letter_channel;
  }
  std::shared_ptr<const storage::StoredMessage> tail_get(Seq seq) const;
  void tail_push(std::shared_ptr<const storage::StoredMessage> m, size_t limit_bytes);
  void tail_drop_below(Seq seq);
  Seq min_floor() const;  // head when there is no subscription
  Subscription* find_sub(storage::SubscriptionId id) const {
    auto it = subs_by_id.find(id);
    return it == subs_by_id.end() ? nullptr : it->second;
  }
  std::optional<SteadyTime> next_deadline() const;
};

}  // namespace witmq::broker
