// Timers (leases, backoff), the writes of channel state and their repair, cursors, trimming of
// settled messages and topic retention.
#include "broker/broker_impl.h"

namespace witmq::broker {

// -- writes of channel state --
void Broker::Impl::submit(Channel& ch, WriteSet ws, Durability d,
                          storage::Store::CommitCallback then) {
  // Completes gathered from now on are stored after this write.
  ch.settle_batch.reset();
  const Seq trimmed = std::exchange(ch.trim_unsubmitted, 0);
  if (ws.empty()) {
    if (then) then(ok_status());
    return;
  }
  rewrite_definition_if_due(ch, ws);
  std::weak_ptr<Channel> weak = ch.shared_from_this();
  store->commit(std::move(ws), d, [this, weak, trimmed, then = std::move(then)](Status s) mutable {
    state_write_reported(weak, trimmed, s);
    if (then) then(std::move(s));
  });
}

void Broker::Impl::state_write_reported(const std::weak_ptr<Channel>& weak, Seq trimmed,
                                        const Status& s) {
  if (auto c = weak.lock()) {
    if (s.ok()) {
      // Commits report in submission order, and each trim deletes from
      // deleted_below: everything below `trimmed` is gone now.
      Seq below = c->deleted_below.load();
      while (below < trimmed && !c->deleted_below.compare_exchange_weak(below, trimmed)) {
      }
    } else if (s.error().code != ErrorCode::kUnavailable) {
      // On the commit thread: only a closing store (kUnavailable) reports at
      // once, where the queuing thread may hold this lock.
      std::lock_guard lock(c->mu);
      if (!c->deleted) write_failed(*c);
    }
  }
  log_failed_write(s);
}

std::shared_ptr<AfterCommit> Broker::Impl::complete_held(Channel& ch, Subscription& sub, Seq seq,
                                                         Broker::SettleHandler done) {
  auto after = std::make_shared<AfterCommit>(std::move(done));
  ++ch.completes_total;
  // Taken before accept(): advance_floor() may drop the entry.
  Delivery& dl = sub.at(seq);
  const uint32_t attempts = dl.attempts;
  lease_ended(sub.accept(seq));
  if (!sub.durable) {
    // Nothing of an ephemeral subscription is stored but a trim its floor allows.
    WriteSet ws;
    if (sub.advance_floor(ws)) after_floor_moved(ch, ws);
    submit(ch, std::move(ws));
    after->reported(ok_status());
    return after;
  }
  std::shared_ptr<SettleBatch> b = ch.settle_batch;
  std::unique_lock<std::mutex> held;
  if (b) {
    held = std::unique_lock(b->mu);
    if (b->taken) {
      held.unlock();
      b.reset();
    }
  }
  const bool fresh = !b;
  if (fresh) {
    b = std::make_shared<SettleBatch>();
    held = std::unique_lock(b->mu);
  }
  WriteSet trim_ws;
  if (sub.advance_floor(b->ws)) {
    const storage::CursorRecord cursor{sub.floor, sub.next};
    auto it = std::find_if(b->cursors.begin(), b->cursors.end(),
                           [&](const auto& c) { return c.first == sub.id; });
    if (it == b->cursors.end()) {
      b->cursors.emplace_back(sub.id, cursor);
    } else {
      it->second = cursor;
    }
    sub.persisted_floor = sub.floor;
    sub.cursor_due = false;
    // A trim is a write of its own, queued after the batch like any later state write.
    after_floor_moved(ch, trim_ws);
  } else {
    b->ws.put_delivery(sub.id, seq, {storage::DeliveryStatus::kAccepted, attempts, 0});
    dl.persisted = true;
  }
  if (ch.definition_due) rewrite_definition_if_due(ch, b->ws);
  b->replies.push_back(after);
  held.unlock();
  if (fresh) {
    ch.settle_batch = b;
    std::weak_ptr<Channel> weak = ch.shared_from_this();
    store->commit_filled(
        [b](WriteSet& ws) {
          std::lock_guard lock(b->mu);
          b->taken = true;
          for (const auto& [id, cursor] : b->cursors) b->ws.put_cursor(id, cursor);
          ws = std::move(b->ws);
        },
        ch.settings.durability,
        [this, weak, b](Status s) {
          std::vector<std::shared_ptr<AfterCommit>> replies;
          {
            std::lock_guard lock(b->mu);
            b->taken = true;
            replies.swap(b->replies);
          }
          state_write_reported(weak, 0, s);
          for (auto& r : replies) r->reported(s);
        });
  }
  if (!trim_ws.empty() || ch.trim_unsubmitted != 0) submit(ch, std::move(trim_ws));
  return after;
}

std::shared_ptr<AfterCommit> Broker::Impl::submit_for_reply(Channel& ch, WriteSet ws,
                                                            Broker::SettleHandler done) {
  auto after = std::make_shared<AfterCommit>(std::move(done));
  submit(ch, std::move(ws), ch.settings.durability,
         [after](Status s) { after->reported(std::move(s)); });
  return after;
}

void Broker::Impl::write_failed(Channel& ch) {
  // What the failed write carried is not known: take no cursor and no definition as stored. A
  // trim whose delete was lost shows as deleted_below < first, which housekeeping covers again.
  // Not at once: the store refuses writes while its disk is full, and retries its own resume
  // once a second.
  for (auto& [name, sub] : ch.subs) {
    if (sub->durable) sub->cursor_due = true;
  }
  ch.definition_due = true;
  schedule_housekeeping(ch, kHousekeepingDelay);
}

void Broker::Impl::rewrite_definition_if_due(Channel& ch, WriteSet& ws) {
  if (!ch.definition_due) return;
  ch.definition_due = false;
  ws.put_channel({ch.id, ch.name, channel_config(ch)});
  for (auto& [name, sub] : ch.subs) {
    if (sub->durable) ws.put_subscription({sub->id, ch.id, name, "{}"});
  }
}

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
  target = std::max(target, ch.first);
  const Seq from = ch.deleted_below.load();
  if (from >= target) return;
  ws.delete_messages(ch.id, from, target);
  ch.first = target;
  ws.put_head(ch.id, {ch.first, ch.head});
  ch.tail_drop_below(target);
  ch.forget_unstored_below(target);
  ch.trim_unsubmitted = target;
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
    submit(ch, std::move(ws));  // under the lock: never after the channel's deletion
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
      if (sub->durable && (sub->floor != sub->persisted_floor || sub->cursor_due)) {
        write_cursor(*sub, ws);
      }
    }
    trim(ch, ch.is_topic() && ch.subs.empty() ? ch.first : ch.min_floor(), ws);
    submit(ch, std::move(ws));
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
    submit(ch, std::move(ws));
  }
  if (ch.first < ch.committed) schedule_housekeeping(ch, kRetentionCheckInterval);
}

}  // namespace witmq::broker
