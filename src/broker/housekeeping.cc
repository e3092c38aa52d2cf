// Timers (leases, backoff), cursors, trimming of settled messages and topic retention.
#include "broker/broker_impl.h"

namespace witmq::broker {

// -- timers --
void Broker::Impl::arm(Channel& ch, std::optional<SteadyTime> extra) {
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
void Broker::Impl::schedule_housekeeping(Channel& ch, std::chrono::milliseconds delay) {
  const auto when = steady_now() + delay;
  if (ch.housekeeping_due && ch.housekeeping_at <= when) return;
  ch.housekeeping_due = true;
  ch.housekeeping_at = when;
  std::weak_ptr<Channel> weak = ch.shared_from_this();
  timers.schedule(when, [this, weak] {
    if (auto c = weak.lock()) housekeeping(c);
  });
}

// The floor of `sub` moved (channel lock held). Writing the cursor on every complete would cost
// a storage write per message; see kCursorStride.
void Broker::Impl::floor_moved(Channel& ch, Subscription& sub, WriteSet& ws) {
  if (sub.cursor_due || sub.window.empty() || sub.floor >= sub.persisted_floor + kCursorStride) {
    write_cursor(sub, ws);
  } else if (sub.durable) {
    schedule_housekeeping(ch, kHousekeepingDelay);
  }
  after_floor_moved(ch, ws);
}

// The floor of a subscription moved: settled messages may be removable (channel lock held).
void Broker::Impl::after_floor_moved(Channel& ch, WriteSet& ws) {
  Seq target = ch.min_floor();
  if (target >= ch.first + kTrimThreshold) {
    trim(ch, target, ws);
  } else if (target > ch.first) {
    schedule_housekeeping(ch, kHousekeepingDelay);
  }
}

// Removes messages below `target` (channel lock held).
void Broker::Impl::trim(Channel& ch, Seq target, WriteSet& ws) {
  if (target <= ch.first) return;
  ws.delete_messages(ch.id, ch.first, target);
  ch.first = target;
  ws.put_head(ch.id, {ch.first, ch.head});
  ch.tail_drop_below(target);
  ch.forget_unstored_below(target);
}

void Broker::Impl::on_timer(const std::shared_ptr<Channel>& chp) {
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
    submit(std::move(ws));  // under the lock: never after the channel's deletion
  }
  run(d);
}

// Removes settled messages and applies topic retention. Runs on the timer thread; storage
// reads happen with no lock held.
void Broker::Impl::housekeeping(const std::shared_ptr<Channel>& chp) {
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
    std::vector<uint64_t> holders;
    for (auto& [name, sub] : ch.subs) {
      if (sub->floor < cut) {
        dropped += sub->drop_below(cut, ws, holders);
        write_cursor(*sub, ws);
      }
    }
    for (uint64_t holder : holders) lease_ended(holder);
    if (dropped) {
      log::info("channel {}: retention removed {} unsettled deliveries below seq {}", ch.name,
                dropped, cut);
    }
    trim(ch, cut, ws);
    submit(std::move(ws));
  }
  if (ch.first < ch.committed) schedule_housekeeping(ch, kRetentionCheckInterval);
}

}  // namespace witmq::broker
