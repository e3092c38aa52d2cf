// Internals of the broker shared by its implementation files (not a public header).
#pragma once

#include <fmt/format.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <shared_mutex>
#include <unordered_map>

#include "broker/broker.h"
#include "broker/channel.h"
#include "broker/extensions.h"
#include "broker/receipt.h"
#include "broker/timer_queue.h"
#include "common/log.h"

namespace witmq::broker {

using storage::ChannelId;
using storage::DeliveryRecord;
using storage::DeliveryStatus;
using storage::Durability;
using storage::StoredMessage;
using storage::SubscriptionId;
using storage::WriteSet;

// Ephemeral subscriptions get ids from here up; they are never written to storage.
inline constexpr SubscriptionId kEphemeralBase = 0x8000'0000u;
// Settled messages are range-deleted once this many accumulate (and at the next housekeeping).
inline constexpr Seq kTrimThreshold = 8192;
// When the floor moves without a client waiting for it (a dead-letter move, an absent message),
// a subscription's cursor is written when its window empties or its floor has moved this far
// since the last write (and at shutdown). After a crash, not a clean stop, at most this many
// minus one such messages per subscription can be delivered again. A complete or abandon answered
// to a client always writes its record first (Impl::settle).
inline constexpr Seq kCursorStride = 64;
// ... and no later than the next housekeeping, kHousekeepingDelay after the floor moved.
inline constexpr auto kHousekeepingDelay = std::chrono::seconds(1);
inline constexpr auto kRetentionCheckInterval = std::chrono::seconds(5);
// How long replay holds the dead letters it is moving.
inline constexpr auto kReplayLease = std::chrono::hours(1);
// Replay moves dead letters in steps of at most this many messages and data bytes (always at
// least one message): one write per step and source channel, and the next step only once it is
// stored. A large replay so never has more than one write queued ahead of other clients' sends on
// the store's one commit path, nor builds one huge batch.
inline constexpr uint32_t kReplayStepMessages = 256;
inline constexpr size_t kReplayStepBytes = 1 << 20;
// A message whose move to the dead-letter channel could not be stored (a full disk) stays in its
// channel and is available again after this long, so that consumers do not spin on a disk that
// refuses every write.
inline constexpr auto kDeadLetterRetryDelay = std::chrono::seconds(1);

// 64 bits from the system's cryptographic generator (getrandom(2)), read 64 values at a time per
// thread, for the values that are a proof (reply addresses, leases): not a Mersenne Twister,
// whose outputs give away its state (312 consecutive ones suffice), so that a client that saw
// a run of them could compute others' reply addresses or leases and answer or settle for them.
// Aborts when the generator fails.
inline uint64_t secure_random_u64() {
  thread_local std::array<uint64_t, 64> pool;
  thread_local size_t left = 0;
  if (left == 0) {
    auto* p = reinterpret_cast<uint8_t*>(pool.data());
    size_t done = 0;
    while (done < sizeof pool) {
      const ssize_t n = ::getrandom(p + done, sizeof pool - done, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        std::fprintf(stderr, "witmqd: the system's random generator failed: %s\n",
                     std::strerror(errno));
        std::abort();
      }
      done += static_cast<size_t>(n);
    }
    left = pool.size();
  }
  const uint64_t v = pool[--left];
  pool[left] = 0;
  return v;
}

// A receipt settles by its lease alone: unguessable, never 0.
inline uint64_t new_lease_id() {
  uint64_t v;
  do v = secure_random_u64();
  while (v == 0);
  return v;
}

inline std::chrono::milliseconds backoff_for(const ChannelSettings& s, uint32_t attempts) {
  auto d = s.backoff_initial;
  for (uint32_t i = 1; i < attempts && d < s.backoff_max; ++i) d *= 2;
  return std::min(d, s.backoff_max);
}

// ---- clients and waiters -------------------------------------------------------------------

class Client {
 public:
  Client(uint64_t id, std::string name) : id(id), name(std::move(name)) {}

  const uint64_t id;
  const std::string name;

  ConsumerOptions options_for(const std::string& channel) {
    std::lock_guard lock(mu);
    return configured.count(channel) ? options : ConsumerOptions{};
  }

  // Lock order: a channel mutex may be held while taking this one, never the reverse.
  std::mutex mu;
  GuestConfiguration config;
  ConsumerOptions options;           // applies to the configured channels
  std::set<std::string> configured;  // channels of the last update-guest-configuration
  std::set<ChannelId> used;          // channels it received from
  std::vector<std::weak_ptr<struct Waiter>> waiters;
  uint32_t rotate = 0;
  std::atomic<bool> gone{false};
  // Request-reply (request_reply.cc). Guarded by rr_mu, which is taken with no other broker lock
  // held, or before Impl::inboxes_mu.
  std::mutex rr_mu;
  std::string inbox;  // "" until the first request
  // Bytes of replies the waiting requests in `pending` hold (PendingRequest::bytes summed).
  size_t reply_bytes = 0;
  std::unordered_map<std::string, std::shared_ptr<struct PendingRequest>> pending;
  // Messages acquired by this client with explicit settlement and not yet settled, plus room
  // reserved by acquisitions under way (see Impl::reserve_room). Counted only when
  // max_unacked_per_client is set.
  std::atomic<uint64_t> unacked{0};
};

// A pending receive, registered on one or more channels. Whoever claims it first (a channel with
// messages, its timeout, a cancel) completes it; the others drop it.
struct Waiter {
  ClientPtr client;
  uint32_t max = 0;
  Broker::BatchHandler done;
  TimerQueue::Handle timer;
  std::vector<std::weak_ptr<Channel>> channels;
  std::atomic<bool> claimed{false};

  bool claim() {
    bool expected = false;
    return claimed.compare_exchange_strong(expected, true);
  }
};

// A request waiting for replies, in its client's `pending` map under its correlation id. Whoever
// removes it from the map (the last expected reply, the timeout, a failed send, the client
// leaving) answers it.
struct PendingRequest {
  Broker::RequestHandler done;
  std::vector<Message> replies;
  uint32_t expected = 1;
  size_t bytes = 0;      // of `replies`, counted in the client's reply_bytes while pending
  size_t max_bytes = 0;  // RequestOptions::max_reply_bytes, 0 = none
  TimerQueue::Handle timer;
};

// Messages acquired under one channel lock, turned into WIT messages after it is released.
struct Grant {
  std::shared_ptr<Channel> ch;
  SubscriptionId sub = 0;
  uint64_t lease = 0;
  bool auto_settled = false;
  struct Item {
    Seq seq;
    uint32_t attempts;
    std::shared_ptr<const StoredMessage> body;
  };
  std::vector<Item> items;
};

struct DeadLetterJob {
  std::shared_ptr<Channel> source;
  SubscriptionId sub = 0;
  bool sub_durable = true;
  std::string sub_name;
  Seq seq = 0;
  uint32_t attempts = 0;
  std::string reason;
  std::shared_ptr<const StoredMessage> body;
};

// Work found under a channel lock and done after releasing it.
struct Deferred {
  std::vector<std::pair<Broker::BatchHandler, Grant>> deliveries;
  std::vector<DeadLetterJob> dead_letters;
  // The reply of the abandon that queued dead_letters[first]: it waits for that move.
  std::vector<std::pair<size_t, Broker::SettleHandler>> dead_letter_replies;
};

// Runs a handler once both a storage write has reported and the thread that queued the write has
// released its channel lock. Writes are queued under the lock, and a write the store refuses at
// once (it is closing) reports on the queuing thread, where no handler may run: so the handler
// runs on whichever of the two arrives second, never under a broker lock.
class AfterCommit {
 public:
  explicit AfterCommit(Broker::SettleHandler done) : done_(std::move(done)) {}
  // The write reported `s` (from the store's callback).
  void reported(Status s) {
    status_ = std::move(s);
    arrive();
  }
  // The queuing thread released its lock.
  void unlocked() { arrive(); }

 private:
  void arrive() {
    if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1 && done_) done_(std::move(status_));
  }
  std::atomic<int> left_{2};
  Status status_;
  Broker::SettleHandler done_;
};

// Completes of one channel gathered into one commit request while that request waits in the
// store's queue (Store::commit_filled): every complete queued before the commit thread takes it
// shares its write and its fsync, and a subscription's cursor is written once per batch.
struct SettleBatch {
  std::mutex mu;
  // The commit thread took the writes (or the store refused them): gather no more.
  bool taken = false;
  WriteSet ws;
  // The newest cursor of each subscription that moved, written when the batch is taken.
  std::vector<std::pair<SubscriptionId, storage::CursorRecord>> cursors;
  std::vector<std::shared_ptr<AfterCommit>> replies;
};

enum class FailCause { kAbandon, kLeaseExpired, kConsumerGone, kRecovered };

// ---- Impl ----------------------------------------------------------------------------------

struct Broker::Impl {
  BrokerOptions opts;
  boost::asio::any_io_executor executor;
  std::unique_ptr<storage::Store> store;
  TimerQueue timers;

  // Lock order: map_mu may be taken while holding a channel mutex (shared, for lookups); a
  // channel mutex is never taken while holding map_mu, except a brand-new channel's.
  std::shared_mutex map_mu;
  std::unordered_map<std::string, std::shared_ptr<Channel>> by_name;
  std::unordered_map<ChannelId, std::shared_ptr<Channel>> by_id;
  // Channel and durable subscription ids come from the store (Store::allocate_channel_id), which
  // a follower's replication applier shares in cluster mode.
  // Channels this node released (Broker::release_channel) and has not adopted again: no call
  // serves or creates them. Guarded by map_mu.
  std::set<std::string, std::less<>> released;
  std::atomic<SubscriptionId> next_ephemeral_sub{kEphemeralBase};

  std::atomic<uint64_t> next_client{1};
  std::mutex clients_mu;
  std::unordered_map<uint64_t, std::weak_ptr<Client>> clients;

  std::atomic<bool> closing{false};

  // Request-reply inboxes: the token in witmq-reply-to -> its client.
  std::mutex inboxes_mu;
  std::unordered_map<std::string, std::weak_ptr<Client>> inboxes;
  std::atomic<uint64_t> replies_dropped{0};
  std::atomic<uint64_t> requests_timed_out{0};

  // The checks send applies to `messages` (count, format, sizes), reserved keys dropped.
  Status check_send(std::vector<Message>& messages) const;
  // Appends checked messages to `channel` (created if allowed); `done` runs once durable.
  void append(std::string_view channel, std::vector<Message> messages, SendHandler done);
  // Gives the client an inbox if it has none, files `p` under a new correlation id and arms its
  // timeout; returns the two in `inbox` and `correlation`. c->rr_mu held.
  void register_request(const ClientPtr& c, const std::shared_ptr<PendingRequest>& p,
                        std::string_view channel, std::chrono::milliseconds timeout,
                        std::string& inbox, std::string& correlation);
  // Ends the client's waiting requests with `why` and forgets its inbox.
  void end_requests(Client& c, const Error& why);

  // -- storage helpers --
  // Queues writes that belong to no channel's sequence of changes (definitions, shutdown).
  void submit(WriteSet ws, Durability d = Durability::kNone) {
    if (ws.empty()) return;
    store->commit(std::move(ws), d, [](Status s) { log_failed_write(s); });
  }

  // Queues writes that record `ch`'s state. Call it with ch.mu held, in the critical section that
  // changed the state: the store applies writes in submission order, so this is what makes
  // storage see a channel's changes in the order they happened (a write set queued after the
  // lock is released could land after a newer one: an older cursor over a newer, say). `then`
  // (optional) runs with the write's status, on the commit thread, or at once on this thread
  // when the store refuses the write at once. A failed write calls write_failed() before `then`.
  void submit(Channel& ch, WriteSet ws, Durability d = Durability::kNone,
              storage::Store::CommitCallback then = {});

  // submit() for a settlement: `done` runs once `ws` is stored per the channel's durability
  // (at once if `ws` is empty). Call unlocked() on the result after releasing ch.mu.
  std::shared_ptr<AfterCommit> submit_for_reply(Channel& ch, WriteSet ws,
                                                Broker::SettleHandler done);

  static void log_failed_write(const Status& s) {
    // A full disk is logged once by the store, not once per refused write; a closing store
    // refuses what is still queued.
    if (!s && s.error().code != ErrorCode::kResourceExhausted &&
        s.error().code != ErrorCode::kUnavailable) {
      log::error("storage: state write failed: {}", s.error().to_string());
    }
  }

  // What submit()'s callback does for every write of `ch`'s state once it reported `s`: records
  // the trim it carried as done, or has the lost state written again.
  void state_write_reported(const std::weak_ptr<Channel>& weak, Seq trimmed, const Status& s);

  // Completes `seq` of `sub` (acquired under a lease that is current; channel lock held) and
  // gathers its record into the channel's open SettleBatch. `done` runs once that is stored; call
  // unlocked() on the result after releasing ch.mu.
  std::shared_ptr<AfterCommit> complete_held(Channel& ch, Subscription& sub, Seq seq,
                                             Broker::SettleHandler done);

  // A write of `ch`'s state failed (channel lock held): its cursors are written again, and any
  // trim whose range delete was lost, by housekeeping once the store accepts writes.
  void write_failed(Channel& ch);
  // Adds the channel's and its durable subscriptions' definitions to `ws` when a failed write may
  // have lost them (channel lock held).
  void rewrite_definition_if_due(Channel& ch, WriteSet& ws);

  static std::string channel_config(const Channel& ch) {
    nlohmann::json j{{"settings", settings_to_json(ch.settings)}};
    if (!ch.dead_letter_of.empty()) j["dead-letter-of"] = ch.dead_letter_of;
    return j.dump();
  }

  // -- channels --
  // Registers a write naming `ch` that will be submitted under another channel's lock (see
  // Channel::foreign_writers). Channel lock held. False when the channel is already deleted.
  bool begin_foreign_write(Channel& ch) {
    if (ch.deleted) return false;
    ++ch.foreign_writers;
    return true;
  }
  // The write registered by begin_foreign_write was submitted (or abandoned). Channel lock held.
  void end_foreign_write(Channel& ch) {
    if (--ch.foreign_writers == 0 && ch.deferred_delete) {
      submit(std::move(*ch.deferred_delete), Durability::kGroup);
      ch.deferred_delete.reset();
    }
  }

  std::shared_ptr<Channel> lookup(std::string_view name) {
    std::shared_lock lock(map_mu);
    auto it = by_name.find(std::string(name));
    return it == by_name.end() ? nullptr : it->second;
  }
  std::shared_ptr<Channel> lookup(ChannelId id) {
    std::shared_lock lock(map_mu);
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : it->second;
  }

  // Creates the channel in memory and queues its definition; map_mu must be held exclusively.
  std::shared_ptr<Channel> create_locked(const std::string& name, const ChannelSettings& settings,
                                         const std::string& dead_letter_of);

  void add_queue_subscription(Channel& ch, WriteSet& ws);

  Result<std::shared_ptr<Channel>> find_or_create(std::string_view name, bool create);
  // invalid-argument when `name` is longer than opts.max_channel_name_bytes (for new channels).
  Status check_new_name(std::string_view name) const;
  // resource-exhausted when opts.max_channels channels exist; map_mu must be held.
  Status check_room_locked(std::string_view name) const;

  // The dead-letter channel of `source_name`, created (point-to-point, unlimited deliveries) if
  // needed and marked so that it never dead-letters itself.
  std::shared_ptr<Channel> dead_letter_channel(const std::string& dlq_name,
                                               const std::string& source_name,
                                               Durability durability);

  // -- subscriptions --
  static std::string sub_name_for(const Client& c, const Channel& ch, const ConsumerOptions& o) {
    if (!ch.is_topic()) return "";
    if (!o.group.empty()) return o.group;
    if (!c.name.empty()) return c.name;
    return fmt::format("~{}", c.id);
  }

  Subscription* find_sub_for(const Client& c, const Channel& ch, const ConsumerOptions& o) {
    auto it = ch.subs.find(sub_name_for(c, ch, o));
    return it == ch.subs.end() ? nullptr : it->second.get();
  }

  // Finds or creates the client's subscription on `ch` (channel lock held).
  Subscription* resolve_sub(const Client& c, Channel& ch, const ConsumerOptions& o, WriteSet& ws);

  void remove_sub(Channel& ch, Subscription* sub, WriteSet& ws) {
    if (sub->durable) ws.delete_subscription(sub->id);
    ch.subs_by_id.erase(sub->id);
    ch.subs.erase(sub->name);
  }

  // -- timers --
  void arm(Channel& ch, std::optional<SteadyTime> extra = std::nullopt);

  // Runs housekeeping() after `delay`, unless it is already due no later than that. An earlier
  // request does not cancel a later one: running housekeeping twice is harmless.
  void schedule_housekeeping(Channel& ch, std::chrono::milliseconds delay);

  // -- acquisition --
  // Acquires at most `max` messages, fewer when the client's room (max_unacked_per_client) is
  // smaller; none when it has no room.
  Grant acquire(Channel& ch, Subscription& sub, Client& c, uint32_t max, const ConsumerOptions& o,
                WriteSet& ws);

  // -- unsettled messages per client (max_unacked_per_client) --
  // Whether acquisitions with `o` count against the client's limit. The replayer of dead letters
  // (client id 0) never does.
  bool counts_unacked(const Client& c, const ConsumerOptions& o) const {
    return opts.max_unacked_per_client != 0 && !o.auto_settle && c.id != 0;
  }
  bool has_room(const Client& c, const ConsumerOptions& o) const {
    return !counts_unacked(c, o) || c.unacked.load() < opts.max_unacked_per_client;
  }
  // Adds up to `want` to the client's count and returns how much it added.
  uint32_t reserve_room(Client& c, uint32_t want);
  // Takes `n` off the client's count; when that frees room for a client at its limit, its
  // waiting receives are retried (on the timer thread, so that no lock is held).
  void give_back(Client& c, uint64_t n);
  // A lease held by client `holder` ended (settled, abandoned, expired, released); channel lock
  // may be held.
  void lease_ended(uint64_t holder);
  // Hands available messages to the client's waiting receives (no lock held).
  void retry_waiters(Client& c);

  // Turns a grant into WIT messages with the reserved metadata (no lock held).
  DeliveredBatch materialize(Grant& g);
  // Settles the messages of `g` that storage no longer has, or never had (no lock held).
  void settle_absent(const Grant& g, const std::vector<Seq>& absent);
  // Reads the bodies the tail cache did not have (channel lock held). Needed before a grant's
  // messages can be trimmed, i.e. when they are settled as they are acquired.
  void load_bodies(const Channel& ch, Grant& g);

  uint32_t batch_for(const Waiter& w, const ConsumerOptions& o) const {
    if (w.max) return std::min(w.max, opts.max_batch_size);
    return o.batch_size ? o.batch_size : opts.default_batch_size;
  }

  // Hands available messages to waiting receives (channel lock held).
  void wake(Channel& ch, Deferred& d);

  void run(Deferred& d) {
    for (auto& [done, grant] : d.deliveries) done(materialize(grant));
    for (size_t i = 0; i < d.dead_letters.size(); ++i) {
      Broker::SettleHandler reply;
      for (auto& [index, handler] : d.dead_letter_replies) {
        if (index == i) reply = std::move(handler);
      }
      dead_letter(std::move(d.dead_letters[i]), std::move(reply));
    }
  }

  // -- failure, settlement, dead letters --

  // An acquired message failed (channel lock held).
  void fail(Channel& ch, Subscription& sub, Seq seq, FailCause cause, WriteSet& ws, Deferred& d);

  void make_ready(Subscription& sub, Seq seq, WriteSet& ws);

  void to_dead_letter(Channel& ch, Subscription& sub, Seq seq, std::string reason, Deferred& d);

  // Moves one message to its dead-letter channel: the copy in the dead-letter channel and the
  // source's "accepted" record are one atomic write, and the source settles the message only once
  // that write is stored. If it is not (a full disk, the dead-letter channel deleted), the message
  // stays in its channel, available again. `done` (optional) runs once the move is stored or has
  // failed. No lock held on entry.
  void dead_letter(DeadLetterJob job, Broker::SettleHandler done = {});
  // The second half of dead_letter(), once its write reported `s`. No lock held.
  void finish_dead_letter(DeadLetterJob& job, const Status& s, Broker::SettleHandler done);

  // Appends to `ch` (taking its lock), with `extra` writes in the same atomic batch. `done`
  // (optional) runs once durable.
  Status append_locked_free(Channel& ch, std::vector<Message> messages, WriteSet extra,
                            SendHandler* done);

  // Channel lock held.
  void append_held(Channel& ch, std::vector<Message> messages, WriteSet ws, SendHandler* done,
                   int64_t now);

  // Records the cursor in `ws`. `persisted_floor` then says what was last queued; should the
  // write fail, write_failed() sets cursor_due so that it is written again.
  void write_cursor(Subscription& sub, WriteSet& ws) {
    if (!sub.durable) return;
    ws.put_cursor(sub.id, {sub.floor, sub.next});
    sub.persisted_floor = sub.floor;
    sub.cursor_due = false;
  }

  // The floor of `sub` moved (channel lock held). Writing the cursor on every complete would cost
  // a storage write per message; see kCursorStride.
  void floor_moved(Channel& ch, Subscription& sub, WriteSet& ws);

  // The floor of a subscription moved: settled messages may be removable (channel lock held).
  void after_floor_moved(Channel& ch, WriteSet& ws);

  // Removes messages below `target` (channel lock held). The range delete starts at
  // ch.deleted_below, not at ch.first, so it also covers a range whose earlier delete failed.
  void trim(Channel& ch, Seq target, WriteSet& ws);

  void on_timer(const std::shared_ptr<Channel>& chp);

  // Removes settled messages and applies topic retention. Runs on the timer thread; storage
  // reads happen with no lock held.
  void housekeeping(const std::shared_ptr<Channel>& chp);

  // -- settle --
  enum class Settle { kComplete, kAbandon, kExtend };

  // Settles (or extends) the message named by m's receipt. `done` runs once the settlement is
  // stored per the channel's durability (at once for kExtend, which stores nothing), never under
  // a broker lock.
  void settle(const Message& m, Settle how, std::chrono::milliseconds extension,
              Broker::SettleHandler done);

  // -- clients --
  void end_waiters(Client& c, bool with_error);

  void drop_waiter(Waiter& w);

  Status check_open() const {
    if (closing.load()) return Error(ErrorCode::kUnavailable, "the broker is shutting down");
    return ok_status();
  }

  ChannelStats stats_locked(Channel& ch);

  // -- cluster leadership --
  // kUnavailable for a channel this node does not serve (released, or its leadership lost).
  static Error not_served(std::string_view name) {
    return Error(ErrorCode::kUnavailable,
                 fmt::format("channel '{}': this node no longer leads it; ask its leader (any "
                             "node of the cluster forwards)",
                             name));
  }
  // Whether `ch` may no longer be served here (released, or may_serve says so).
  bool fenced(const Channel& ch) const {
    return ch.released->load() || (opts.may_serve && !opts.may_serve(ch.name));
  }
  // The error for a channel found deleted under its lock: released, or deleted.
  static Error gone(const Channel& ch) {
    if (ch.released->load()) return not_served(ch.name);
    return Error(ErrorCode::kNotFound, fmt::format("channel '{}' was deleted", ch.name));
  }

  // -- recovery --
  Status recover();
  // Builds the channels of `state` in memory (their subscriptions, cursors, delivery states,
  // leases held at the last stop available again) and then serves them: open() with every
  // channel, adopt_channel() with one.
  Status load(storage::RecoveredState& state);
};

}  // namespace witmq::broker
