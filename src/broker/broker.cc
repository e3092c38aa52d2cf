#include "broker/broker.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <shared_mutex>
#include <unordered_map>

#include <nlohmann/json.hpp>

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

namespace {

// Ephemeral subscriptions get ids from here up; they are never written to storage.
constexpr SubscriptionId kEphemeralBase = 0x8000'0000u;
// Settled messages are range-deleted once this many accumulate (and at the next housekeeping).
constexpr Seq kTrimThreshold = 8192;
// A subscription's cursor is written when its window empties or its floor has moved this far
// since the last write (and at shutdown). After a crash, not a clean stop, at most this many
// minus one completed messages per subscription can be delivered again.
constexpr Seq kCursorStride = 64;
// ... and no later than the next housekeeping, kHousekeepingDelay after the floor moved.
constexpr auto kHousekeepingDelay = std::chrono::seconds(1);
constexpr auto kRetentionCheckInterval = std::chrono::seconds(5);
// How long replay holds the dead letters it is moving.
constexpr auto kReplayLease = std::chrono::hours(1);

uint64_t new_lease_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t v;
  do v = rng();
  while (v == 0);
  return v;
}

std::chrono::milliseconds backoff_for(const ChannelSettings& s, uint32_t attempts) {
  auto d = s.backoff_initial;
  for (uint32_t i = 1; i < attempts && d < s.backoff_max; ++i) d *= 2;
  return std::min(d, s.backoff_max);
}

}  // namespace

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
};

// A pending receive, registered on one or more channels. Whoever claims it first (a channel with
// messages, its timeout, a cancel) completes it; the others drop it.
struct Waiter {
  ClientPtr client;
  uint32_t max = 0;
  Broker::ReceiveHandler done;
  TimerQueue::Handle timer;
  std::vector<std::weak_ptr<Channel>> channels;
  std::atomic<bool> claimed{false};

  bool claim() {
    bool expected = false;
    return claimed.compare_exchange_strong(expected, true);
  }
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
  std::vector<std::pair<Broker::ReceiveHandler, Grant>> deliveries;
  std::vector<DeadLetterJob> dead_letters;
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
  ChannelId next_channel_id = 1;
  std::atomic<SubscriptionId> next_durable_sub{1};
  std::atomic<SubscriptionId> next_ephemeral_sub{kEphemeralBase};

  std::atomic<uint64_t> next_client{1};
  std::mutex clients_mu;
  std::unordered_map<uint64_t, std::weak_ptr<Client>> clients;

  std::atomic<bool> closing{false};

  // -- storage helpers --
  void submit(WriteSet ws, Durability d = Durability::kNone) {
    if (ws.empty()) return;
    store->commit(std::move(ws), d, [](Status s) {
      if (!s) log::error("storage: state write failed: {}", s.error().to_string());
    });
  }

  static std::string channel_config(const Channel& ch) {
    nlohmann::json j{{"settings", settings_to_json(ch.settings)}};
    if (!ch.dead_letter_of.empty()) j["dead-letter-of"] = ch.dead_letter_of;
    return j.dump();
  }

  // -- channels --
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
                                         const std::string& dead_letter_of) {
    auto ch = std::make_shared<Channel>();
    ch->id = next_channel_id++;
    ch->name = name;
    ch->settings = settings;
    ch->dead_letter_of = dead_letter_of;
    WriteSet ws;
    ws.put_channel({ch->id, name, channel_config(*ch)});
    ws.put_head(ch->id, {0, 0});
    if (!ch->is_topic()) add_queue_subscription(*ch, ws);
    by_name[name] = ch;
    by_id[ch->id] = ch;
    // Group durability: the definition is on disk no later than the channel's first message.
    submit(std::move(ws), Durability::kGroup);
    log::info("channel {}: created ({})", name, kind_name(settings.kind));
    return ch;
  }

  void add_queue_subscription(Channel& ch, WriteSet& ws) {
    auto sub = std::make_unique<Subscription>();
    sub->id = next_durable_sub++;
    sub->floor = sub->next = sub->persisted_floor = ch.first;
    ws.put_subscription({sub->id, ch.id, "", "{}"});
    ws.put_cursor(sub->id, {sub->floor, sub->next});
    ch.subs_by_id[sub->id] = sub.get();
    ch.subs[""] = std::move(sub);
  }

  Result<std::shared_ptr<Channel>> find_or_create(std::string_view name, bool create) {
    if (auto ch = lookup(name)) return ch;
    auto valid = validate_channel_name(name);
    if (!valid) return std::move(valid).error();
    if (!create) {
      return Error(ErrorCode::kNotFound,
                   fmt::format("channel '{}' does not exist and auto-create is off", name));
    }
    std::unique_lock lock(map_mu);
    auto it = by_name.find(std::string(name));
    if (it != by_name.end()) return it->second;
    return create_locked(std::string(name), opts.default_channel, "");
  }

  // The dead-letter channel of `source_name`, created (point-to-point, unlimited deliveries) if
  // needed and marked so that it never dead-letters itself.
  std::shared_ptr<Channel> dead_letter_channel(const std::string& dlq_name,
                                               const std::string& source_name,
                                               Durability durability) {
    if (auto ch = lookup(dlq_name)) {
      std::lock_guard lock(ch->mu);
      if (ch->dead_letter_of.empty()) {
        ch->dead_letter_of = source_name;
        WriteSet ws;
        ws.put_channel({ch->id, ch->name, channel_config(*ch)});
        submit(std::move(ws), Durability::kGroup);
      }
      return ch;
    }
    ChannelSettings s;
    s.kind = ChannelKind::kPointToPoint;
    s.durability = durability;
    s.max_deliveries = 0;
    std::unique_lock lock(map_mu);
    auto it = by_name.find(dlq_name);
    if (it != by_name.end()) return it->second;
    return create_locked(dlq_name, s, source_name);
  }

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
  Subscription* resolve_sub(const Client& c, Channel& ch, const ConsumerOptions& o, WriteSet& ws) {
    std::string name = sub_name_for(c, ch, o);
    auto it = ch.subs.find(name);
    if (it != ch.subs.end()) return it->second.get();
    auto sub = std::make_unique<Subscription>();
    sub->name = name;
    sub->durable = !name.starts_with('~');
    sub->id = sub->durable ? next_durable_sub++ : next_ephemeral_sub++;
    sub->owner = sub->durable ? 0 : c.id;
    Seq start = ch.head;
    switch (o.start.kind) {
      case StartPosition::Kind::kLatest:
        break;
      case StartPosition::Kind::kEarliest:
        start = ch.first;
        break;
      case StartPosition::Kind::kSequence:
        start = std::clamp<Seq>(o.start.value, ch.first, ch.head);
        break;
      case StartPosition::Kind::kTime: {
        // Rare (subscription creation): a bounded binary search over stored publish times.
        auto r = store->find_seq_by_time(ch.id, ch.first, ch.head,
                                         static_cast<int64_t>(o.start.value));
        start = r ? *r : ch.head;
        break;
      }
    }
    sub->floor = sub->next = sub->persisted_floor = start;
    if (sub->durable) {
      ws.put_subscription({sub->id, ch.id, name, "{}"});
      ws.put_cursor(sub->id, {sub->floor, sub->next});
    }
    log::debug("channel {}: subscription '{}' starts at {}", ch.name, name, start);
    Subscription* raw = sub.get();
    ch.subs_by_id[sub->id] = raw;
    ch.subs[name] = std::move(sub);
    return raw;
  }

  void remove_sub(Channel& ch, Subscription* sub, WriteSet& ws) {
    if (sub->durable) ws.delete_subscription(sub->id);
    ch.subs_by_id.erase(sub->id);
    ch.subs.erase(sub->name);
  }

  // -- timers --
  void arm(Channel& ch, std::optional<SteadyTime> extra = std::nullopt) {
    auto t = ch.next_deadline();
    if (extra && (!t || *extra < *t)) t = extra;
    if (!t) return;
    if (ch.armed && *ch.armed <= *t) return;
    ch.timer.cancel();
    ch.armed = t;
    std::weak_ptr<Channel> weak = ch.shared_from_this();
    ch.timer = timers.schedule(*t, [this, weak] {
      if (auto c = weak.lock()) on_timer(c);
    });
  }

  // Runs housekeeping() after `delay`, unless it is already due no later than that. An earlier
  // request does not cancel a later one: running housekeeping twice is harmless.
  void schedule_housekeeping(Channel& ch, std::chrono::milliseconds delay) {
    const auto when = steady_now() + delay;
    if (ch.housekeeping_due && ch.housekeeping_at <= when) return;
    ch.housekeeping_due = true;
    ch.housekeeping_at = when;
    std::weak_ptr<Channel> weak = ch.shared_from_this();
    timers.schedule(when, [this, weak] {
      if (auto c = weak.lock()) housekeeping(c);
    });
  }

  // -- acquisition --
  Grant acquire(Channel& ch, Subscription& sub, const Client& c, uint32_t max,
                const ConsumerOptions& o, WriteSet& ws) {
    Grant g;
    g.ch = ch.shared_from_this();
    g.sub = sub.id;
    g.lease = new_lease_id();
    g.auto_settled = o.auto_settle;
    const auto now = steady_now();
    const auto deadline = now + o.lease.value_or(ch.settings.lease);
    bool moved_next = false;

    auto take = [&](Seq seq, Delivery& d) {
      if (o.auto_settle) {
        d.state = Delivery::State::kAccepted;
        ++sub.accepted_in_window;
      } else {
        d.state = Delivery::State::kAcquired;
        d.lease = g.lease;
        d.holder = c.id;
        d.deadline = deadline;
        sub.leases.insert({deadline, seq});
        ++sub.in_flight;
        if (sub.durable && d.attempts > 1) {
          ws.put_delivery(sub.id, seq, {DeliveryStatus::kAcquired, d.attempts, 0});
          d.persisted = true;
        }
      }
      ++ch.deliveries_total;
      g.items.push_back({seq, d.attempts, ch.tail_get(seq)});
    };

    while (g.items.size() < max && !sub.ready.empty()) {
      Seq seq = *sub.ready.begin();
      sub.ready.erase(sub.ready.begin());
      Delivery& d = sub.at(seq);
      ++d.attempts;
      ++ch.redeliveries_total;
      take(seq, d);
    }
    while (g.items.size() < max && sub.next < ch.committed) {
      Seq seq = sub.next++;
      sub.window.emplace_back();
      Delivery& d = sub.window.back();
      d.attempts = 1;
      moved_next = true;
      take(seq, d);
    }

    bool moved_floor = false;
    if (o.auto_settle) {
      moved_floor = sub.advance_floor(ws);
      if (sub.durable) {
        for (const auto& it : g.items) {
          if (it.seq >= sub.floor) {
            ws.put_delivery(sub.id, it.seq, {DeliveryStatus::kAccepted, it.attempts, 0});
            sub.at(it.seq).persisted = true;
          }
        }
      }
    }
    if (moved_next) write_cursor(sub, ws);
    if (moved_floor) floor_moved(ch, sub, ws);
    if (!o.auto_settle && !g.items.empty()) arm(ch);
    return g;
  }

  // Turns a grant into WIT messages with the reserved metadata (no lock held).
  std::vector<Message> materialize(Grant& g) {
    std::vector<Message> out;
    out.reserve(g.items.size());
    const std::string& chname = g.ch->name;
    for (auto& it : g.items) {
      if (!it.body) {
        auto r = store->get(g.ch->id, it.seq);
        if (!r) {
          log::error("channel {}: reading seq {}: {}", chname, it.seq, r.error().to_string());
          continue;
        }
        if (!r->has_value()) continue;  // removed by retention meanwhile
        it.body = std::make_shared<const StoredMessage>(std::move(**r));
      }
      const Message& src = it.body->message;
      Message m;
      m.data = src.data;
      m.format = src.format;
      Metadata md;
      md.reserve((src.metadata ? src.metadata->size() : 0) + 6);
      if (src.metadata) md = *src.metadata;
      md.emplace_back(meta::kId, fmt::format("{}/{}", chname, it.seq));
      md.emplace_back(meta::kChannel, chname);
      md.emplace_back(meta::kSequence, std::to_string(it.seq));
      md.emplace_back(meta::kAttempt, std::to_string(it.attempts));
      md.emplace_back(meta::kPublishedAt, std::to_string(it.body->publish_time_ms));
      if (!g.auto_settled) {
        md.emplace_back(meta::kReceipt, format_receipt({g.ch->id, g.sub, it.seq, g.lease}));
      }
      m.metadata = std::move(md);
      out.push_back(std::move(m));
    }
    return out;
  }

  uint32_t batch_for(const Waiter& w, const ConsumerOptions& o) const {
    if (w.max) return std::min(w.max, opts.max_batch_size);
    return o.batch_size ? o.batch_size : opts.default_batch_size;
  }

  // Hands available messages to waiting receives (channel lock held).
  void wake(Channel& ch, Deferred& d) {
    if (ch.waiters.empty()) return;
    WriteSet ws;
    for (auto it = ch.waiters.begin(); it != ch.waiters.end();) {
      auto& w = *it;
      if (w->claimed.load()) {
        it = ch.waiters.erase(it);
        continue;
      }
      auto o = w->client->options_for(ch.name);
      Subscription* sub = find_sub_for(*w->client, ch, o);
      if (!sub) {
        it = ch.waiters.erase(it);
        continue;
      }
      if (!sub->has_available(ch.committed)) {
        ++it;
        continue;
      }
      if (!w->claim()) {
        it = ch.waiters.erase(it);
        continue;
      }
      w->timer.cancel();
      Grant g = acquire(ch, *sub, *w->client, batch_for(*w, o), o, ws);
      d.deliveries.emplace_back(std::move(w->done), std::move(g));
      it = ch.waiters.erase(it);
    }
    submit(std::move(ws));
  }

  void run(Deferred& d) {
    for (auto& [done, grant] : d.deliveries) done(materialize(grant));
    for (auto& job : d.dead_letters) dead_letter(std::move(job));
  }

  // -- failure, settlement, dead letters --

  // An acquired message failed (channel lock held).
  void fail(Channel& ch, Subscription& sub, Seq seq, FailCause cause, WriteSet& ws, Deferred& d) {
    Delivery& dl = sub.at(seq);
    if (dl.state == Delivery::State::kAcquired) {
      sub.leases.erase({dl.deadline, seq});
      --sub.in_flight;
    }
    if (cause == FailCause::kAbandon) ++ch.abandons_total;
    if (cause == FailCause::kLeaseExpired) ++ch.lease_expiries_total;
    const bool is_dlq = !ch.dead_letter_of.empty();
    const auto& s = ch.settings;
    if (!is_dlq && s.max_deliveries && dl.attempts >= s.max_deliveries) {
      to_dead_letter(ch, sub, seq, "max-deliveries", d);
      return;
    }
    if (cause == FailCause::kAbandon) {
      AbandonPolicy p = s.abandon;
      if (is_dlq && p == AbandonPolicy::kDeadLetter) p = AbandonPolicy::kRequeue;
      switch (p) {
        case AbandonPolicy::kDeadLetter:
          to_dead_letter(ch, sub, seq, "abandoned", d);
          return;
        case AbandonPolicy::kDrop:
          dl.state = Delivery::State::kMoving;  // accept() needs no set bookkeeping for it
          sub.accept(seq);
          if (sub.durable && seq >= sub.floor) {
            ws.put_delivery(sub.id, seq, {DeliveryStatus::kAccepted, dl.attempts, 0});
            dl.persisted = true;
          }
          if (sub.advance_floor(ws)) floor_moved(ch, sub, ws);
          return;
        case AbandonPolicy::kRequeue: {
          auto delay = backoff_for(s, dl.attempts);
          if (delay.count() > 0) {
            dl.state = Delivery::State::kWaiting;
            dl.deadline = steady_now() + delay;
            sub.waiting.insert({dl.deadline, seq});
            if (sub.durable) {
              ws.put_delivery(sub.id, seq,
                              {DeliveryStatus::kReady, dl.attempts, wall_ms() + delay.count()});
              dl.persisted = true;
            }
            arm(ch);
            return;
          }
          break;
        }
      }
    }
    make_ready(sub, seq, ws);
  }

  void make_ready(Subscription& sub, Seq seq, WriteSet& ws) {
    Delivery& dl = sub.at(seq);
    dl.state = Delivery::State::kReady;
    sub.ready.insert(seq);
    if (sub.durable) {
      ws.put_delivery(sub.id, seq, {DeliveryStatus::kReady, dl.attempts, 0});
      dl.persisted = true;
    }
  }

  void to_dead_letter(Channel& ch, Subscription& sub, Seq seq, std::string reason, Deferred& d) {
    Delivery& dl = sub.at(seq);
    dl.state = Delivery::State::kMoving;
    d.dead_letters.push_back(DeadLetterJob{ch.shared_from_this(), sub.id, sub.durable, sub.name,
                                           seq, dl.attempts, std::move(reason),
                                           ch.tail_get(seq)});
  }

  // Moves one message to its dead-letter channel: the copy in the dead-letter channel and the
  // source's "accepted" record are one atomic write. No lock held on entry.
  void dead_letter(DeadLetterJob job) {
    Channel& src = *job.source;
    std::string dlq_name;
    Durability durability;
    {
      std::lock_guard lock(src.mu);
      dlq_name = src.dead_letter_name();
      durability = src.settings.durability;
    }
    if (!job.body) {
      auto r = store->get(src.id, job.seq);
      if (r && r->has_value()) job.body = std::make_shared<const StoredMessage>(std::move(**r));
    }
    if (job.body) {
      auto dlq = dead_letter_channel(dlq_name, src.name, durability);
      Message m = job.body->message;
      Metadata md;
      if (m.metadata) {
        for (auto& kv : *m.metadata) {
          if (!kv.first.starts_with("witmq-dlq-")) md.push_back(std::move(kv));
        }
      }
      const int64_t now = wall_ms();
      md.emplace_back(meta::kDlqReason, job.reason);
      md.emplace_back(meta::kDlqSource, src.name);
      md.emplace_back(meta::kDlqSourceSequence, std::to_string(job.seq));
      md.emplace_back(meta::kDlqSubscription, job.sub_name);
      md.emplace_back(meta::kDlqAttempts, std::to_string(job.attempts));
      md.emplace_back(meta::kDlqTime, std::to_string(now));
      m.metadata = std::move(md);
      WriteSet ws;
      if (job.sub_durable) {
        ws.put_delivery(job.sub, job.seq, {DeliveryStatus::kAccepted, job.attempts, 0});
      }
      auto st = append_locked_free(*dlq, std::vector<Message>{std::move(m)}, std::move(ws),
                                   nullptr);
      if (!st) {
        // The dead-letter channel vanished (deleted meanwhile): keep the message where it is.
        log::warn("channel {}: seq {} cannot be dead-lettered: {}", src.name, job.seq,
                  st.error().to_string());
        std::lock_guard lock(src.mu);
        Subscription* sub = src.find_sub(job.sub);
        if (sub && sub->contains(job.seq) &&
            sub->at(job.seq).state == Delivery::State::kMoving) {
          WriteSet ready_ws;
          make_ready(*sub, job.seq, ready_ws);
          submit(std::move(ready_ws));
        }
        return;
      }
      log::info("channel {}: seq {} dead-lettered to {} ({}, {} attempts)", src.name, job.seq,
                dlq_name, job.reason, job.attempts);
    } else {
      log::warn("channel {}: seq {} to dead-letter is gone (retention); dropping it", src.name,
                job.seq);
    }
    std::lock_guard lock(src.mu);
    Subscription* sub = src.find_sub(job.sub);
    if (!sub || !sub->contains(job.seq) ||
        sub->at(job.seq).state != Delivery::State::kMoving) {
      return;
    }
    ++src.dead_letters_total;
    sub->at(job.seq).persisted = job.sub_durable;
    sub->accept(job.seq);
    WriteSet ws;
    if (sub->advance_floor(ws)) floor_moved(src, *sub, ws);
    submit(std::move(ws));
  }

  // Appends to `ch` (taking its lock), with `extra` writes in the same atomic batch. `done`
  // (optional) runs once durable.
  Status append_locked_free(Channel& ch, std::vector<Message> messages, WriteSet extra,
                            SendHandler* done) {
    const int64_t now = wall_ms();
    std::lock_guard lock(ch.mu);
    if (ch.deleted) {
      return Error(ErrorCode::kNotFound, fmt::format("channel '{}' was deleted", ch.name));
    }
    append_held(ch, std::move(messages), std::move(extra), done, now);
    return ok_status();
  }

  // Channel lock held.
  void append_held(Channel& ch, std::vector<Message> messages, WriteSet ws, SendHandler* done,
                   int64_t now) {
    for (auto& m : messages) {
      Seq seq = ch.head++;
      ws.put_message(ch.id, seq, now, m);
      ch.tail_push(std::make_shared<const StoredMessage>(StoredMessage{seq, now, std::move(m)}),
                   opts.tail_cache_bytes);
    }
    ws.put_head(ch.id, {ch.first, ch.head});
    ch.sends_total += messages.size();
    const Seq end = ch.head;
    std::shared_ptr<SendHandler> handler;
    if (done) handler = std::make_shared<SendHandler>(std::move(*done));
    std::weak_ptr<Channel> weak = ch.shared_from_this();
    // A failed commit may report inline (e.g. the store is closing) while this channel's lock is
    // held, so only the success path takes the lock.
    store->commit(std::move(ws), ch.settings.durability, [this, weak, end, handler](Status s) {
      Deferred d;
      if (auto c = weak.lock()) {
        if (s.ok()) {
          std::lock_guard lock(c->mu);
          c->committed = std::max(c->committed, end);
          wake(*c, d);
        } else {
          log::error("channel {}: append failed: {}", c->name, s.error().to_string());
        }
      }
      if (handler) (*handler)(s);
      run(d);
    });
  }

  void write_cursor(Subscription& sub, WriteSet& ws) {
    if (!sub.durable) return;
    ws.put_cursor(sub.id, {sub.floor, sub.next});
    sub.persisted_floor = sub.floor;
    sub.cursor_due = false;
  }

  // The floor of `sub` moved (channel lock held). Writing the cursor on every complete would cost
  // a storage write per message; see kCursorStride.
  void floor_moved(Channel& ch, Subscription& sub, WriteSet& ws) {
    if (sub.cursor_due || sub.window.empty() || sub.floor >= sub.persisted_floor + kCursorStride) {
      write_cursor(sub, ws);
    } else if (sub.durable) {
      schedule_housekeeping(ch, kHousekeepingDelay);
    }
    after_floor_moved(ch, ws);
  }

  // The floor of a subscription moved: settled messages may be removable (channel lock held).
  void after_floor_moved(Channel& ch, WriteSet& ws) {
    Seq target = ch.min_floor();
    if (target >= ch.first + kTrimThreshold) {
      trim(ch, target, ws);
    } else if (target > ch.first) {
      schedule_housekeeping(ch, kHousekeepingDelay);
    }
  }

  // Removes messages below `target` (channel lock held).
  void trim(Channel& ch, Seq target, WriteSet& ws) {
    if (target <= ch.first) return;
    ws.delete_messages(ch.id, ch.first, target);
    ch.first = target;
    ws.put_head(ch.id, {ch.first, ch.head});
    ch.tail_drop_below(target);
  }

  void on_timer(const std::shared_ptr<Channel>& chp) {
    Channel& ch = *chp;
    Deferred d;
    WriteSet ws;
    {
      std::lock_guard lock(ch.mu);
      ch.armed.reset();
      if (ch.deleted) return;
      const auto now = steady_now();
      for (auto& [name, subp] : ch.subs) {
        Subscription& sub = *subp;
        while (!sub.leases.empty() && sub.leases.begin()->first <= now) {
          Seq seq = sub.leases.begin()->second;
          fail(ch, sub, seq, FailCause::kLeaseExpired, ws, d);
        }
        while (!sub.waiting.empty() && sub.waiting.begin()->first <= now) {
          Seq seq = sub.waiting.begin()->second;
          sub.waiting.erase(sub.waiting.begin());
          Delivery& dl = sub.at(seq);
          dl.state = Delivery::State::kReady;
          sub.ready.insert(seq);
        }
      }
      wake(ch, d);
      arm(ch);
    }
    submit(std::move(ws));
    run(d);
  }

  // Removes settled messages and applies topic retention. Runs on the timer thread; storage
  // reads happen with no lock held.
  void housekeeping(const std::shared_ptr<Channel>& chp) {
    Channel& ch = *chp;
    Seq first, committed;
    bool retention;
    ChannelSettings s;
    {
      std::lock_guard lock(ch.mu);
      ch.housekeeping_due = false;
      if (ch.deleted) return;
      WriteSet ws;
      for (auto& [name, sub] : ch.subs) {
        if (sub->durable && sub->floor != sub->persisted_floor) write_cursor(*sub, ws);
      }
      trim(ch, ch.is_topic() && ch.subs.empty() ? ch.first : ch.min_floor(), ws);
      submit(std::move(ws));
      first = ch.first;
      committed = ch.committed;
      s = ch.settings;
      retention = ch.is_topic() && (s.retention_age.count() > 0 || s.retention_bytes > 0);
    }
    if (!retention || first >= committed) return;
    Seq cut = first;
    if (s.retention_age.count() > 0) {
      auto r = store->find_seq_by_time(ch.id, first, committed, wall_ms() - s.retention_age.count());
      if (r) cut = *r;
    }
    if (s.retention_bytes > 0 && cut < committed) {
      uint64_t bytes = store->approximate_bytes(ch.id, cut, committed);
      if (bytes > s.retention_bytes) {
        uint64_t count = committed - cut;
        uint64_t avg = std::max<uint64_t>(1, bytes / count);
        cut += std::min<uint64_t>(count, (bytes - s.retention_bytes) / avg + 1);
      }
    }
    std::lock_guard lock(ch.mu);
    if (!ch.deleted && cut > ch.first) {
      WriteSet ws;
      uint64_t dropped = 0;
      for (auto& [name, sub] : ch.subs) {
        if (sub->floor < cut) {
          dropped += sub->drop_below(cut, ws);
          write_cursor(*sub, ws);
        }
      }
      if (dropped) {
        log::info("channel {}: retention removed {} unsettled deliveries below seq {}", ch.name,
                  dropped, cut);
      }
      trim(ch, cut, ws);
      submit(std::move(ws));
    }
    if (ch.first < ch.committed) schedule_housekeeping(ch, kRetentionCheckInterval);
  }

  // -- settle --
  enum class Settle { kComplete, kAbandon, kExtend };

  Status settle(const Message& m, Settle how, std::chrono::milliseconds extension = {}) {
    const std::string* text = find_metadata(m, meta::kReceipt);
    if (!text) {
      return invalid_argument(
          "metadata witmq-receipt: missing; settle the message as it was delivered (with its "
          "witmq- metadata), and only messages received with settlement=explicit");
    }
    auto r = parse_receipt(*text);
    if (!r) return std::move(r).error();
    auto chp = lookup(r->channel);
    if (!chp) {
      return Error(ErrorCode::kStaleReceipt,
                   fmt::format("receipt {}: its channel no longer exists", *text));
    }
    Channel& ch = *chp;
    Deferred d;
    WriteSet ws;
    {
      std::lock_guard lock(ch.mu);
      Subscription* sub = ch.find_sub(r->subscription);
      auto stale = [&](std::string_view why) {
        return Error(ErrorCode::kStaleReceipt,
                     fmt::format("receipt for {}/{}: {}", ch.name, r->seq, why));
      };
      if (ch.deleted || !sub) return stale("its subscription no longer exists");
      if (!sub->contains(r->seq)) return stale("the message is already settled");
      Delivery& dl = sub->at(r->seq);
      if (dl.state != Delivery::State::kAcquired || dl.lease != r->lease) {
        return stale("the lease it was delivered under has ended (expired, or settled)");
      }
      const auto now = steady_now();
      if (dl.deadline < now) return stale("the lease expired");
      switch (how) {
        case Settle::kComplete:
          ++ch.completes_total;
          sub->accept(r->seq);
          if (sub->advance_floor(ws)) {
            floor_moved(ch, *sub, ws);
          } else if (sub->durable) {
            ws.put_delivery(sub->id, r->seq, {DeliveryStatus::kAccepted, dl.attempts, 0});
            dl.persisted = true;
          }
          break;
        case Settle::kAbandon:
          fail(ch, *sub, r->seq, FailCause::kAbandon, ws, d);
          wake(ch, d);
          break;
        case Settle::kExtend:
          sub->leases.erase({dl.deadline, r->seq});
          dl.deadline = now + extension;
          sub->leases.insert({dl.deadline, r->seq});
          break;
      }
    }
    submit(std::move(ws));
    run(d);
    return ok_status();
  }

  // -- clients --
  void end_waiters(Client& c, bool with_error) {
    std::vector<std::shared_ptr<Waiter>> ws;
    {
      std::lock_guard lock(c.mu);
      for (auto& w : c.waiters) {
        if (auto p = w.lock()) ws.push_back(std::move(p));
      }
      c.waiters.clear();
    }
    for (auto& w : ws) {
      if (!w->claim()) continue;
      w->timer.cancel();
      if (with_error) {
        w->done(Error(ErrorCode::kUnavailable, "the receive was ended: client disconnected or "
                                               "broker shutting down"));
      } else {
        w->done(std::vector<Message>{});
      }
      drop_waiter(*w);
    }
  }

  void drop_waiter(Waiter& w) {
    for (auto& weak : w.channels) {
      if (auto ch = weak.lock()) {
        std::lock_guard lock(ch->mu);
        ch->waiters.remove_if([&](const std::shared_ptr<Waiter>& p) { return p.get() == &w; });
      }
    }
  }

  Status check_open() const {
    if (closing.load()) return Error(ErrorCode::kUnavailable, "the broker is shutting down");
    return ok_status();
  }

  ChannelStats stats_locked(Channel& ch) {
    ChannelStats st;
    st.name = ch.name;
    st.settings = ch.settings;
    st.is_dead_letter = !ch.dead_letter_of.empty();
    st.first_seq = ch.first;
    st.head_seq = ch.committed;
    st.sends_total = ch.sends_total;
    st.deliveries_total = ch.deliveries_total;
    st.redeliveries_total = ch.redeliveries_total;
    st.completes_total = ch.completes_total;
    st.abandons_total = ch.abandons_total;
    st.lease_expiries_total = ch.lease_expiries_total;
    st.dead_letters_total = ch.dead_letters_total;
    for (auto& [name, sub] : ch.subs) {
      SubscriptionStats ss;
      ss.name = name;
      ss.durable = sub->durable;
      ss.floor = sub->floor;
      ss.next = sub->next;
      ss.in_flight = sub->in_flight;
      ss.lag = ch.committed > sub->floor
                   ? ch.committed - sub->floor - sub->accepted_in_window
                   : 0;
      ss.available = (ch.committed > sub->next ? ch.committed - sub->next : 0) + sub->ready.size();
      st.depth = std::max(st.depth, ss.lag);
      st.in_flight += ss.in_flight;
      st.subscriptions.push_back(std::move(ss));
    }
    if (ch.is_topic() && ch.subs.empty()) st.depth = 0;
    return st;
  }

  // -- recovery --
  Status recover() {
    auto state = store->recover();
    if (!state) return std::move(state).error();
    for (auto& c : state->channels) {
      auto ch = std::make_shared<Channel>();
      ch->id = c.def.id;
      ch->name = c.def.name;
      nlohmann::json j = nlohmann::json::parse(c.def.config, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("settings")) {
        return Error(ErrorCode::kCorruption,
                     fmt::format("meta/channel id={} ('{}'): config is not valid JSON: {}",
                                 c.def.id, c.def.name, c.def.config.substr(0, 200)));
      }
      auto s = settings_from_json(j["settings"], ChannelSettings{},
                                  fmt::format("stored channel '{}'", c.def.name));
      if (!s) return Error(ErrorCode::kCorruption, s.error().message);
      ch->settings = *s;
      if (j.contains("dead-letter-of") && j["dead-letter-of"].is_string()) {
        ch->dead_letter_of = j["dead-letter-of"].get<std::string>();
      }
      ch->first = c.head.first;
      ch->head = ch->committed = c.head.next;
      next_channel_id = std::max(next_channel_id, ch->id + 1);
      by_name[ch->name] = ch;
      by_id[ch->id] = ch;
    }
    std::vector<DeadLetterJob> jobs;
    WriteSet ws;
    const auto now = steady_now();
    const int64_t wall_now = wall_ms();
    for (auto& rs : state->subscriptions) {
      next_durable_sub = std::max<SubscriptionId>(next_durable_sub.load(), rs.def.id + 1);
      auto it = by_id.find(rs.def.channel);
      if (it == by_id.end()) {
        log::warn("recovery: subscription {} ('{}') names missing channel {}; removing it",
                  rs.def.id, rs.def.name, rs.def.channel);
        ws.delete_subscription(rs.def.id);
        continue;
      }
      Channel& ch = *it->second;
      auto sub = std::make_unique<Subscription>();
      sub->id = rs.def.id;
      sub->name = rs.def.name;
      sub->durable = true;
      sub->floor = std::max(rs.cursor.floor, ch.first);
      sub->next = std::clamp(rs.cursor.next, sub->floor, ch.head);
      std::map<Seq, DeliveryRecord> recs(rs.deliveries.begin(), rs.deliveries.end());
      uint64_t released = 0;
      for (Seq seq = sub->floor; seq < sub->next; ++seq) {
        sub->window.emplace_back();
        Delivery& d = sub->window.back();
        auto r = recs.find(seq);
        if (r != recs.end()) {
          d.persisted = true;
          d.attempts = r->second.attempts;
          if (r->second.status == DeliveryStatus::kAccepted) {
            d.state = Delivery::State::kAccepted;
            ++sub->accepted_in_window;
            continue;
          }
          if (r->second.status == DeliveryStatus::kReady) {
            int64_t wait = r->second.not_before_ms - wall_now;
            if (wait > 0) {
              d.state = Delivery::State::kWaiting;
              d.deadline = now + std::chrono::milliseconds(wait);
              sub->waiting.insert({d.deadline, seq});
            } else {
              d.state = Delivery::State::kReady;
              sub->ready.insert(seq);
            }
            continue;
          }
        } else {
          d.attempts = 1;  // delivered once (the cursor passed it) and never settled
        }
        // Held at the crash: available again, the attempt counted.
        ++released;
        if (ch.dead_letter_of.empty() && ch.settings.max_deliveries &&
            d.attempts >= ch.settings.max_deliveries) {
          d.state = Delivery::State::kMoving;
          jobs.push_back(DeadLetterJob{it->second, sub->id, true, sub->name, seq, d.attempts,
                                       "max-deliveries", nullptr});
        } else {
          d.state = Delivery::State::kReady;
          sub->ready.insert(seq);
          ws.put_delivery(sub->id, seq, {DeliveryStatus::kReady, d.attempts, 0});
          d.persisted = true;
        }
      }
      sub->advance_floor(ws);
      write_cursor(*sub, ws);
      if (released) {
        log::info("recovery: channel {} subscription '{}': {} messages held at the last stop are "
                  "available again",
                  ch.name, sub->name, released);
      }
      ch.subs_by_id[sub->id] = sub.get();
      ch.subs[sub->name] = std::move(sub);
    }
    // A point-to-point channel always has its shared subscription.
    for (auto& [id, ch] : by_id) {
      if (!ch->is_topic() && !ch->subs.count("")) add_queue_subscription(*ch, ws);
      std::lock_guard lock(ch->mu);
      arm(*ch);
      if (ch->min_floor() > ch->first) schedule_housekeeping(*ch, kHousekeepingDelay);
      if (ch->is_topic()) schedule_housekeeping(*ch, kRetentionCheckInterval);
    }
    auto st = store->commit_and_wait(std::move(ws), Durability::kSync);
    if (!st) return st;
    for (auto& job : jobs) dead_letter(std::move(job));
    log::info("recovery: {} channels, {} subscriptions", state->channels.size(),
              state->subscriptions.size());
    return ok_status();
  }
};

// ---- Broker --------------------------------------------------------------------------------

Broker::Broker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Broker::~Broker() { shutdown(); }

Result<std::unique_ptr<Broker>> Broker::open(BrokerOptions options,
                                             boost::asio::any_io_executor executor) {
  if (options.default_batch_size < 1 || options.default_batch_size > options.max_batch_size) {
    return invalid_argument(fmt::format("default-batch-size: {} is out of range 1..{}",
                                        options.default_batch_size, options.max_batch_size));
  }
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(options);
  impl->executor = std::move(executor);
  storage::StoreOptions so = impl->opts.store;
  so.path = impl->opts.data_dir;
  std::error_code ec;
  std::filesystem::create_directories(so.path, ec);
  if (ec) {
    return Error(ErrorCode::kIoError,
                 fmt::format("data-dir '{}': cannot create it: {}", so.path, ec.message()));
  }
  auto store = storage::Store::open(so);
  if (!store) return std::move(store).error();
  impl->store = std::move(*store);
  auto st = impl->recover();
  if (!st) return std::move(st).error();
  std::unique_ptr<Broker> b(new Broker(std::move(impl)));
  for (const auto& [name, settings] : b->impl_->opts.channels) {
    auto d = b->declare_channel(name, settings);
    if (!d) return std::move(d).error();
  }
  return b;
}

boost::asio::any_io_executor Broker::executor() const { return impl_->executor; }

Result<ClientPtr> Broker::connect(std::string_view name) {
  WITMQ_RETURN_IF_ERROR(impl_->check_open());
  if (!name.empty()) {
    auto st = validate_channel_name(name);
    if (!st) {
      return invalid_argument(
          fmt::format("client name '{}': {}", name.substr(0, 100), st.error().message));
    }
  }
  auto c = std::make_shared<Client>(impl_->next_client++, std::string(name));
  std::lock_guard lock(impl_->clients_mu);
  impl_->clients[c->id] = c;
  return c;
}

void Broker::disconnect(const ClientPtr& c) {
  if (!c || c->gone.exchange(true)) return;
  impl_->end_waiters(*c, true);
  std::set<ChannelId> used;
  {
    std::lock_guard lock(c->mu);
    used = c->used;
  }
  for (ChannelId id : used) {
    auto chp = impl_->lookup(id);
    if (!chp) continue;
    Deferred d;
    WriteSet ws;
    {
      std::lock_guard lock(chp->mu);
      std::vector<Subscription*> mine;
      for (auto& [name, sub] : chp->subs) {
        if (!sub->durable && sub->owner == c->id) {
          mine.push_back(sub.get());
          continue;
        }
        std::vector<Seq> held;
        for (Seq s = sub->floor; s < sub->next; ++s) {
          const Delivery& dl = sub->at(s);
          if (dl.state == Delivery::State::kAcquired && dl.holder == c->id) held.push_back(s);
        }
        for (Seq s : held) impl_->fail(*chp, *sub, s, FailCause::kConsumerGone, ws, d);
      }
      for (auto* sub : mine) impl_->remove_sub(*chp, sub, ws);
      impl_->wake(*chp, d);
    }
    impl_->submit(std::move(ws));
    impl_->run(d);
  }
  std::lock_guard lock(impl_->clients_mu);
  impl_->clients.erase(c->id);
}

void Broker::send(const ClientPtr& client, std::string_view channel,
                  std::vector<Message> messages, SendHandler done) {
  (void)client;
  if (auto st = impl_->check_open(); !st) return done(std::move(st));
  const auto& o = impl_->opts;
  if (messages.size() > o.max_send_batch) {
    return done(Error(ErrorCode::kResourceExhausted,
                      fmt::format("send: {} messages in one batch, the limit is {}",
                                  messages.size(), o.max_send_batch)));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    Message& m = messages[i];
    if (static_cast<uint8_t>(m.format) >= kFormatCount) {
      return done(invalid_argument(fmt::format("message[{}].format: {} is not a format-spec case",
                                               i, static_cast<int>(m.format))));
    }
    if (m.data.size() > o.max_message_bytes) {
      return done(Error(ErrorCode::kResourceExhausted,
                        fmt::format("message[{}].data: {} bytes, the limit is {}", i,
                                    m.data.size(), o.max_message_bytes)));
    }
    if (m.metadata) {
      auto& md = *m.metadata;
      std::erase_if(md, [](const KeyValue& kv) { return is_reserved_key(kv.first); });
      if (md.size() > o.max_metadata_entries) {
        return done(Error(ErrorCode::kResourceExhausted,
                          fmt::format("message[{}].metadata: {} entries, the limit is {}", i,
                                      md.size(), o.max_metadata_entries)));
      }
      size_t bytes = 0;
      for (const auto& [k, v] : md) bytes += k.size() + v.size();
      if (bytes > o.max_metadata_bytes) {
        return done(Error(ErrorCode::kResourceExhausted,
                          fmt::format("message[{}].metadata: {} bytes, the limit is {}", i, bytes,
                                      o.max_metadata_bytes)));
      }
    }
  }
  auto chp = impl_->find_or_create(channel, o.auto_create_channels);
  if (!chp) return done(std::move(chp).error());
  if (messages.empty()) return done(ok_status());
  Channel& ch = **chp;
  const int64_t now = wall_ms();
  std::unique_lock lock(ch.mu);
  if (ch.deleted) {
    lock.unlock();
    return done(Error(ErrorCode::kNotFound, fmt::format("channel '{}' was deleted", ch.name)));
  }
  impl_->append_held(ch, std::move(messages), WriteSet{}, &done, now);
}

void Broker::receive(const ClientPtr& client, std::vector<std::string> channels,
                     ReceiveOptions options, ReceiveHandler done) {
  auto& impl = *impl_;
  if (auto st = impl.check_open(); !st) return done(std::move(st).error());
  if (client->gone.load()) {
    return done(Error(ErrorCode::kFailedPrecondition, "the client is disconnected"));
  }
  if (channels.empty()) return done(invalid_argument("channels: the list is empty"));
  std::vector<std::shared_ptr<Channel>> chs;
  for (const auto& name : channels) {
    auto ch = impl.find_or_create(name, impl.opts.auto_create_channels);
    if (!ch) return done(std::move(ch).error());
    chs.push_back(std::move(*ch));
  }
  uint32_t start;
  {
    std::lock_guard lock(client->mu);
    start = client->rotate++;
    for (auto& ch : chs) client->used.insert(ch->id);
  }
  auto w = std::make_shared<Waiter>();
  w->client = client;
  w->max = options.max_messages;

  // Immediate attempt, rotating the starting channel so none starves.
  const size_t n = chs.size();
  for (size_t k = 0; k < n; ++k) {
    Channel& ch = *chs[(start + k) % n];
    auto o = client->options_for(ch.name);
    WriteSet ws;
    Grant g;
    {
      std::lock_guard lock(ch.mu);
      if (ch.deleted) continue;
      Subscription* sub = impl.resolve_sub(*client, ch, o, ws);
      if (sub->has_available(ch.committed)) {
        g = impl.acquire(ch, *sub, *client, impl.batch_for(*w, o), o, ws);
      }
    }
    impl.submit(std::move(ws));
    if (!g.items.empty()) return done(impl.materialize(g));
  }
  if (options.timeout && options.timeout->count() <= 0) return done(std::vector<Message>{});

  w->done = std::move(done);
  for (auto& ch : chs) w->channels.push_back(ch);
  if (options.timeout) {
    std::weak_ptr<Waiter> weak = w;
    w->timer = impl.timers.schedule(steady_now() + *options.timeout, [&impl, weak] {
      auto p = weak.lock();
      if (!p || !p->claim()) return;
      p->done(std::vector<Message>{});
      impl.drop_waiter(*p);
    });
  }
  {
    std::lock_guard lock(client->mu);
    std::erase_if(client->waiters, [](const std::weak_ptr<Waiter>& p) { return p.expired(); });
    client->waiters.push_back(w);
  }
  // Register on every channel; a message that arrived since the first look is taken now.
  for (auto& chp : chs) {
    Channel& ch = *chp;
    auto o = client->options_for(ch.name);
    WriteSet ws;
    Grant g;
    bool claimed = false;
    {
      std::lock_guard lock(ch.mu);
      if (w->claimed.load()) break;
      if (ch.deleted) continue;
      Subscription* sub = impl.resolve_sub(*client, ch, o, ws);
      if (sub->has_available(ch.committed)) {
        if (!w->claim()) break;
        claimed = true;
        g = impl.acquire(ch, *sub, *client, impl.batch_for(*w, o), o, ws);
      } else {
        ch.waiters.push_back(w);
      }
    }
    impl.submit(std::move(ws));
    if (claimed) {
      w->timer.cancel();
      w->done(impl.materialize(g));
      impl.drop_waiter(*w);
      return;
    }
  }
  // Shutdown or disconnect may have raced the registration.
  if (impl.closing.load() || client->gone.load()) impl.end_waiters(*client, true);
}

void Broker::cancel_receives(const ClientPtr& client) { impl_->end_waiters(*client, false); }

Status Broker::update_guest_configuration(const ClientPtr& client,
                                          const GuestConfiguration& config) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  for (size_t i = 0; i < config.channels.size(); ++i) {
    auto st = validate_channel_name(config.channels[i]);
    if (!st) return invalid_argument(fmt::format("channels[{}]: {}", i, st.error().message));
  }
  auto o = parse_extensions(config.extensions, impl.opts.max_batch_size);
  if (!o) return std::move(o).error();
  std::set<std::string> now(config.channels.begin(), config.channels.end());
  std::set<std::string> before;
  ConsumerOptions old_options;
  {
    std::lock_guard lock(client->mu);
    before = client->configured;
    old_options = client->options;
  }
  // Unsubscribe from channels no longer listed: ephemeral subscriptions go, durable ones stay.
  for (const auto& name : before) {
    if (now.count(name)) continue;
    auto chp = impl.lookup(name);
    if (!chp) continue;
    WriteSet ws;
    std::lock_guard lock(chp->mu);
    Subscription* sub = impl.find_sub_for(*client, *chp, old_options);
    if (sub && !sub->durable) impl.remove_sub(*chp, sub, ws);
    impl.submit(std::move(ws));
  }
  {
    std::lock_guard lock(client->mu);
    client->config = config;
    client->options = *o;
    client->configured = now;
  }
  // Subscribe now, so that "latest" means from this call on.
  for (const auto& name : config.channels) {
    auto chp = impl.find_or_create(name, impl.opts.auto_create_channels);
    if (!chp) return std::move(chp).error();
    WriteSet ws;
    {
      std::lock_guard lock((*chp)->mu);
      impl.resolve_sub(*client, **chp, *o, ws);
    }
    {
      std::lock_guard lock(client->mu);
      client->used.insert((*chp)->id);
    }
    impl.submit(std::move(ws));
  }
  return ok_status();
}

GuestConfiguration Broker::guest_configuration(const ClientPtr& client) const {
  std::lock_guard lock(client->mu);
  return client->config;
}

Status Broker::complete_message(const Message& m) {
  WITMQ_RETURN_IF_ERROR(impl_->check_open());
  return impl_->settle(m, Impl::Settle::kComplete);
}

Status Broker::abandon_message(const Message& m) {
  WITMQ_RETURN_IF_ERROR(impl_->check_open());
  return impl_->settle(m, Impl::Settle::kAbandon);
}

Status Broker::extend_lease(const Message& m, std::chrono::milliseconds extension) {
  WITMQ_RETURN_IF_ERROR(impl_->check_open());
  return impl_->settle(m, Impl::Settle::kExtend, extension);
}

Status Broker::declare_channel(std::string_view name, const ChannelSettings& settings) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  WITMQ_RETURN_IF_ERROR(validate_channel_name(name));
  if (settings.dead_letter_channel == name) {
    return invalid_argument(fmt::format(
        "channel '{}': dead-letter-channel may not be the channel itself", name));
  }
  std::shared_ptr<Channel> ch;
  {
    std::unique_lock lock(impl.map_mu);
    auto it = impl.by_name.find(std::string(name));
    if (it == impl.by_name.end()) {
      impl.create_locked(std::string(name), settings, "");
      return ok_status();
    }
    ch = it->second;
  }
  std::lock_guard lock(ch->mu);
  if (ch->settings.kind != settings.kind) {
    return Error(ErrorCode::kAlreadyExists,
                 fmt::format("channel '{}' exists as {}; its kind cannot change to {}", name,
                             kind_name(ch->settings.kind), kind_name(settings.kind)));
  }
  if (ch->settings == settings) return ok_status();
  ch->settings = settings;
  WriteSet ws;
  ws.put_channel({ch->id, ch->name, Impl::channel_config(*ch)});
  impl.submit(std::move(ws), Durability::kGroup);
  log::info("channel {}: settings updated", name);
  return ok_status();
}

Status Broker::delete_channel(std::string_view name) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  std::shared_ptr<Channel> ch;
  {
    std::unique_lock lock(impl.map_mu);
    auto it = impl.by_name.find(std::string(name));
    if (it == impl.by_name.end()) {
      return not_found(fmt::format("channel '{}' does not exist", name));
    }
    ch = it->second;
    impl.by_name.erase(it);
    impl.by_id.erase(ch->id);
  }
  std::list<std::shared_ptr<Waiter>> waiters;
  {
    std::lock_guard lock(ch->mu);
    ch->deleted = true;
    ch->timer.cancel();
    WriteSet ws;
    for (auto& [n, sub] : ch->subs) {
      if (sub->durable) ws.delete_subscription(sub->id);
    }
    ws.delete_channel(ch->id);
    impl.submit(std::move(ws), Durability::kGroup);
    waiters.swap(ch->waiters);
  }
  for (auto& w : waiters) {
    if (!w->claim()) continue;
    w->timer.cancel();
    w->done(Error(ErrorCode::kNotFound, fmt::format("channel '{}' was deleted", name)));
    impl.drop_waiter(*w);
  }
  log::info("channel {}: deleted", name);
  return ok_status();
}

std::vector<ChannelStats> Broker::list_channels() {
  std::vector<std::shared_ptr<Channel>> all;
  {
    std::shared_lock lock(impl_->map_mu);
    for (auto& [name, ch] : impl_->by_name) all.push_back(ch);
  }
  std::vector<ChannelStats> out;
  for (auto& ch : all) {
    auto st = channel_stats(ch->name);
    if (st) out.push_back(std::move(*st));
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

Result<ChannelStats> Broker::channel_stats(std::string_view name) {
  auto chp = impl_->lookup(name);
  if (!chp) return not_found(fmt::format("channel '{}' does not exist", name));
  ChannelStats st;
  Seq oldest = 0;
  std::shared_ptr<const StoredMessage> body;
  {
    std::lock_guard lock(chp->mu);
    st = impl_->stats_locked(*chp);
    oldest = chp->min_floor();
    // Skip messages already accepted at the front of every window.
    if (oldest < chp->committed && st.depth > 0) body = chp->tail_get(oldest);
    else oldest = chp->committed;
  }
  if (oldest < st.head_seq && st.depth > 0) {
    if (!body) {
      auto r = impl_->store->get(chp->id, oldest);
      if (r && r->has_value()) body = std::make_shared<const StoredMessage>(std::move(**r));
    }
    if (body) st.oldest_age_ms = std::max<int64_t>(0, wall_ms() - body->publish_time_ms);
  }
  return st;
}

Result<std::vector<Message>> Broker::browse(std::string_view channel, uint64_t from_seq,
                                            uint32_t max_messages) {
  auto chp = impl_->lookup(channel);
  if (!chp) return not_found(fmt::format("channel '{}' does not exist", channel));
  Seq first, committed;
  {
    std::lock_guard lock(chp->mu);
    first = chp->first;
    committed = chp->committed;
  }
  Seq from = std::max<Seq>(from_seq, first);
  if (from >= committed) return std::vector<Message>{};
  auto r = impl_->store->read(chp->id, from, committed,
                              std::min(max_messages, impl_->opts.max_batch_size));
  if (!r) return std::move(r).error();
  std::vector<Message> out;
  for (auto& sm : *r) {
    Message m = std::move(sm.message);
    if (!m.metadata) m.metadata.emplace();
    m.metadata->emplace_back(meta::kId, fmt::format("{}/{}", chp->name, sm.seq));
    m.metadata->emplace_back(meta::kChannel, chp->name);
    m.metadata->emplace_back(meta::kSequence, std::to_string(sm.seq));
    m.metadata->emplace_back(meta::kPublishedAt, std::to_string(sm.publish_time_ms));
    out.push_back(std::move(m));
  }
  return out;
}

Result<uint64_t> Broker::replay_dead_letters(std::string_view dlq_name, uint64_t max_messages) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  auto dlqp = impl.lookup(dlq_name);
  if (!dlqp) return not_found(fmt::format("channel '{}' does not exist", dlq_name));
  Channel& dlq = *dlqp;
  // Replay acquires like a consumer with a long lease, then moves each message in one write.
  Client replayer(0, "");
  ConsumerOptions o;
  o.lease = std::chrono::duration_cast<std::chrono::milliseconds>(kReplayLease);
  uint64_t moved = 0;
  while (moved < max_messages) {
    Grant g;
    {
      WriteSet ws;
      std::lock_guard lock(dlq.mu);
      if (dlq.is_topic()) {
        return Error(ErrorCode::kFailedPrecondition,
                     fmt::format("channel '{}' is publish-subscribe; dead-letter channels are "
                                 "point-to-point",
                                 dlq_name));
      }
      Subscription* sub = dlq.find_sub(dlq.subs.at("")->id);
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(max_messages - moved, 1000));
      if (!sub->has_available(dlq.committed)) break;
      g = impl.acquire(dlq, *sub, replayer, n, o, ws);
      impl.submit(std::move(ws));
    }
    if (g.items.empty()) break;
    for (auto& item : g.items) {
      if (!item.body) {
        auto r = impl.store->get(dlq.id, item.seq);
        if (r && r->has_value()) item.body = std::make_shared<const StoredMessage>(std::move(**r));
      }
      const std::string* source = item.body ? find_metadata(item.body->message, meta::kDlqSource)
                                            : nullptr;
      std::shared_ptr<Channel> src;
      if (source) {
        auto s = impl.find_or_create(*source, true);
        if (s) src = *s;
      }
      if (!src) {
        // Nowhere to go back to: leave it in the dead-letter channel, available.
        Deferred d;
        WriteSet ws;
        {
          std::lock_guard lock(dlq.mu);
          Subscription* sub = dlq.find_sub(g.sub);
          if (sub && sub->contains(item.seq) && sub->at(item.seq).lease == g.lease) {
            --sub->in_flight;
            sub->leases.erase({sub->at(item.seq).deadline, item.seq});
            impl.make_ready(*sub, item.seq, ws);
            impl.wake(dlq, d);
          }
        }
        impl.submit(std::move(ws));
        impl.run(d);
        continue;
      }
      Message m = item.body->message;
      if (m.metadata) {
        std::erase_if(*m.metadata, [](const KeyValue& kv) { return is_reserved_key(kv.first); });
      }
      WriteSet ws;
      ws.put_delivery(g.sub, item.seq, {DeliveryStatus::kAccepted, item.attempts, 0});
      auto st = impl.append_locked_free(*src, std::vector<Message>{std::move(m)}, std::move(ws),
                                        nullptr);
      if (!st) return std::move(st).error();
      WriteSet ws2;
      {
        std::lock_guard lock(dlq.mu);
        Subscription* sub = dlq.find_sub(g.sub);
        if (sub && sub->contains(item.seq) && sub->at(item.seq).lease == g.lease) {
          sub->at(item.seq).persisted = true;
          sub->accept(item.seq);
          ++dlq.completes_total;
          if (sub->advance_floor(ws2)) impl.floor_moved(dlq, *sub, ws2);
        }
      }
      impl.submit(std::move(ws2));
      ++moved;
    }
  }
  if (moved) log::info("channel {}: replayed {} dead letters", dlq_name, moved);
  return moved;
}

Result<uint64_t> Broker::purge(std::string_view channel) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  auto chp = impl.lookup(channel);
  if (!chp) return not_found(fmt::format("channel '{}' does not exist", channel));
  Channel& ch = *chp;
  uint64_t purged = 0;
  WriteSet ws;
  std::lock_guard lock(ch.mu);
  for (auto& [name, subp] : ch.subs) {
    Subscription& sub = *subp;
    std::vector<Seq> pending(sub.ready.begin(), sub.ready.end());
    for (auto& [t, s] : sub.waiting) pending.push_back(s);
    for (Seq s : pending) {
      sub.accept(s);
      ++purged;
    }
    if (sub.next < ch.committed) {
      purged += ch.committed - sub.next;
      if (sub.window.empty()) {
        sub.floor = sub.next = ch.committed;
      } else {
        while (sub.next < ch.committed) {
          sub.window.push_back(Delivery{Delivery::State::kAccepted, false, 1, 0, 0, {}});
          ++sub.accepted_in_window;
          ++sub.next;
        }
      }
    }
    sub.advance_floor(ws);
    if (sub.durable) {
      for (Seq s = sub.floor; s < sub.next; ++s) {
        Delivery& d = sub.at(s);
        if (d.state == Delivery::State::kAccepted && !d.persisted) {
          ws.put_delivery(sub.id, s, {DeliveryStatus::kAccepted, d.attempts, 0});
          d.persisted = true;
        }
      }
      impl.write_cursor(sub, ws);
    }
  }
  impl.trim(ch, ch.is_topic() && ch.subs.empty() ? ch.committed : ch.min_floor(), ws);
  impl.submit(std::move(ws), Durability::kGroup);
  log::info("channel {}: purged {} messages", channel, purged);
  return purged;
}

Status Broker::checkpoint(const std::string& dir) { return impl_->store->checkpoint(dir); }

storage::StoreStats Broker::store_stats() const { return impl_->store->stats(); }

void Broker::shutdown() {
  if (!impl_ || impl_->closing.exchange(true)) return;
  std::vector<std::shared_ptr<Client>> clients;
  {
    std::lock_guard lock(impl_->clients_mu);
    for (auto& [id, weak] : impl_->clients) {
      if (auto c = weak.lock()) clients.push_back(std::move(c));
    }
  }
  for (auto& c : clients) impl_->end_waiters(*c, true);
  impl_->timers.stop();
  // Cursors are written lazily (kCursorStride): a clean stop writes every one that lags, so a
  // restart redelivers nothing that was completed.
  std::vector<std::shared_ptr<Channel>> all;
  {
    std::shared_lock lock(impl_->map_mu);
    for (auto& [id, ch] : impl_->by_id) all.push_back(ch);
  }
  WriteSet ws;
  for (auto& ch : all) {
    std::lock_guard lock(ch->mu);
    for (auto& [name, sub] : ch->subs) {
      if (sub->durable && sub->floor != sub->persisted_floor) impl_->write_cursor(*sub, ws);
    }
  }
  impl_->submit(std::move(ws));
  impl_->store->close();
  log::info("broker: stopped");
}

}  // namespace witmq::broker
