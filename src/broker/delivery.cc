// Acquiring, delivering and settling messages; waiting receives.
#include "broker/broker_impl.h"

namespace witmq::broker {

// -- acquisition --
Grant Broker::Impl::acquire(Channel& ch, Subscription& sub, Client& c, uint32_t max,
                            const ConsumerOptions& o, WriteSet& ws) {
  const bool counted = counts_unacked(c, o);
  if (counted) max = reserve_room(c, max);
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
  bool skipped = false;
  while (g.items.size() < max && sub.next < ch.committed) {
    Seq seq = sub.next++;
    sub.window.emplace_back();
    Delivery& d = sub.window.back();
    moved_next = true;
    if (ch.is_unstored(seq)) {
      d.state = Delivery::State::kAccepted;
      ++sub.accepted_in_window;
      skipped = true;
      continue;
    }
    d.attempts = 1;
    take(seq, d);
  }

  bool moved_floor = false;
  if (o.auto_settle) {
    // Settled now, these messages may be trimmed by this very write set: read what the tail cache
    // lacks while they are certainly still stored.
    load_bodies(ch, g);
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
  if (skipped && !o.auto_settle && sub.advance_floor(ws)) moved_floor = true;
  if (moved_next) write_cursor(sub, ws);
  if (moved_floor) floor_moved(ch, sub, ws);
  if (!o.auto_settle && !g.items.empty()) arm(ch);
  if (counted) give_back(c, max - g.items.size());
  return g;
}

// -- unsettled messages per client --
uint32_t Broker::Impl::reserve_room(Client& c, uint32_t want) {
  const uint64_t limit = opts.max_unacked_per_client;
  uint64_t held = c.unacked.load();
  uint64_t take = 0;
  do {
    take = held >= limit ? 0 : std::min<uint64_t>(want, limit - held);
    if (take == 0) return 0;
  } while (!c.unacked.compare_exchange_weak(held, held + take));
  return static_cast<uint32_t>(take);
}

void Broker::Impl::give_back(Client& c, uint64_t n) {
  if (n == 0) return;
  const uint64_t before = c.unacked.fetch_sub(n);
  const uint64_t limit = opts.max_unacked_per_client;
  if (before < limit || before - n >= limit || c.gone.load()) return;
  // Called with a channel lock held, and retrying takes channel locks: run it on the timer thread.
  timers.schedule(steady_now(), [this, id = c.id] {
    ClientPtr client;
    {
      std::lock_guard lock(clients_mu);
      auto it = clients.find(id);
      if (it != clients.end()) client = it->second.lock();
    }
    if (client && !client->gone.load()) retry_waiters(*client);
  });
}

void Broker::Impl::lease_ended(uint64_t holder) {
  if (opts.max_unacked_per_client == 0 || holder == 0) return;
  ClientPtr c;
  {
    // Lock order: a channel mutex may be held while taking clients_mu, never the reverse.
    std::lock_guard lock(clients_mu);
    auto it = clients.find(holder);
    if (it != clients.end()) c = it->second.lock();
  }
  if (c) give_back(*c, 1);
}

void Broker::Impl::retry_waiters(Client& c) {
  std::vector<std::shared_ptr<Channel>> chs;
  {
    std::lock_guard lock(c.mu);
    for (auto& weak : c.waiters) {
      auto w = weak.lock();
      if (!w || w->claimed.load()) continue;
      for (auto& wc : w->channels) {
        auto ch = wc.lock();
        if (ch && std::find(chs.begin(), chs.end(), ch) == chs.end()) chs.push_back(std::move(ch));
      }
    }
  }
  for (auto& ch : chs) {
    Deferred d;
    {
      std::lock_guard lock(ch->mu);
      if (!ch->deleted) wake(*ch, d);
    }
    run(d);
  }
}

void Broker::Impl::load_bodies(const Channel& ch, Grant& g) {
  // The items without a body are usually one ascending run (a consumer behind the tail cache):
  // one range read serves them; anything else is read one by one.
  std::vector<Grant::Item*> missing;
  for (auto& it : g.items) {
    if (!it.body) missing.push_back(&it);
  }
  if (missing.empty()) return;
  const Seq lo = missing.front()->seq;
  const Seq hi = missing.back()->seq;
  if (hi - lo + 1 == missing.size()) {
    auto r = store->read(ch.id, lo, hi + 1, missing.size());
    if (r) {
      for (auto& m : *r) {
        if (m.seq >= lo && m.seq <= hi && missing[m.seq - lo]->seq == m.seq &&
            !missing[m.seq - lo]->body) {
          missing[m.seq - lo]->body = std::make_shared<const StoredMessage>(std::move(m));
        }
      }
    } else {
      log::error("channel {}: reading seq {}..{}: {}", ch.name, lo, hi, r.error().to_string());
    }
  }
  for (auto* it : missing) {
    if (it->body) continue;
    auto r = store->get(ch.id, it->seq);
    if (r && r->has_value()) {
      it->body = std::make_shared<const StoredMessage>(std::move(**r));
    } else if (!r) {
      log::error("channel {}: reading seq {}: {}", ch.name, it->seq, r.error().to_string());
    }
  }
}

// Turns a grant into the batch a receive answers with (no lock held): bodies the tail cache did
// not have are read here; messages no longer stored are left out (and settled).
DeliveredBatch Broker::Impl::materialize(Grant& g) {
  DeliveredBatch out;
  out.items.reserve(g.items.size());
  out.channel = g.ch->name;
  const std::string& chname = out.channel;
  std::vector<Seq> absent;
  for (auto& it : g.items) {
    if (!it.body) {
      auto r = store->get(g.ch->id, it.seq);
      if (!r) {
        log::error("channel {}: reading seq {}: {}", chname, it.seq, r.error().to_string());
        continue;
      }
      if (!r->has_value()) {
        absent.push_back(it.seq);
        continue;
      }
      it.body = std::make_shared<const StoredMessage>(std::move(**r));
    }
    DeliveredBatch::Item item{std::move(it.body), it.attempts, {}};
    if (!g.auto_settled) item.receipt = format_receipt({g.ch->id, g.sub, it.seq, g.lease, chname});
    out.items.push_back(std::move(item));
  }
  if (!absent.empty()) settle_absent(g, absent);
  return out;
}

void Broker::Impl::settle_absent(const Grant& g, const std::vector<Seq>& absent) {
  // Removed by retention between acquisition and now, or never stored (an append that failed
  // before a crash): there is nothing to deliver, so there is nothing to redeliver either.
  log::warn("channel {}: {} messages from seq {} are no longer or were never stored; settled",
            g.ch->name, absent.size(), absent.front());
  if (g.auto_settled) return;
  Channel& ch = *g.ch;
  WriteSet ws;
  {
    std::lock_guard lock(ch.mu);
    Subscription* sub = ch.find_sub(g.sub);
    if (ch.deleted || !sub) return;
    for (Seq seq : absent) {
      if (!sub->contains(seq)) continue;
      Delivery& dl = sub->at(seq);
      if (dl.state != Delivery::State::kAcquired || dl.lease != g.lease) continue;
      lease_ended(sub->accept(seq));
      if (sub->durable) {
        ws.put_delivery(sub->id, seq, {DeliveryStatus::kAccepted, dl.attempts, 0});
        dl.persisted = true;
      }
    }
    if (sub->advance_floor(ws)) floor_moved(ch, *sub, ws);
    submit(ch, std::move(ws));  // under the lock: never after the channel's deletion
  }
}

// Hands available messages to waiting receives (channel lock held).
void Broker::Impl::wake(Channel& ch, Deferred& d) {
  if (ch.waiters.empty()) return;
  WriteSet ws;
  for (auto it = ch.waiters.begin(); it != ch.waiters.end();) {
    auto& w = *it;
    if (w->claimed.load()) {
      it = ch.waiters.erase(it);
      continue;
    }
    if (w->client->gone.load()) {  // its receive() ends it; no subscription for it any more
      ++it;
      continue;
    }
    auto o = w->client->options_for(ch.name);
    // The subscription the waiter registered with may be gone (unsubscribed, or the client's
    // group changed): wait on the one its options name now. Dropping the waiter instead could
    // leave it registered nowhere, answered by nobody.
    Subscription* sub = resolve_sub(*w->client, ch, o, ws);
    if (!sub->has_available(ch.committed) || !has_room(*w->client, o)) {
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
  submit(ch, std::move(ws));
}

// An acquired message failed (channel lock held).
void Broker::Impl::fail(Channel& ch, Subscription& sub, Seq seq, FailCause cause, WriteSet& ws,
                        Deferred& d) {
  Delivery& dl = sub.at(seq);
  if (dl.state == Delivery::State::kAcquired) {
    sub.leases.erase({dl.deadline, seq});
    --sub.in_flight;
    lease_ended(dl.holder);
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

void Broker::Impl::make_ready(Subscription& sub, Seq seq, WriteSet& ws) {
  Delivery& dl = sub.at(seq);
  dl.state = Delivery::State::kReady;
  sub.ready.insert(seq);
  if (sub.durable) {
    ws.put_delivery(sub.id, seq, {DeliveryStatus::kReady, dl.attempts, 0});
    dl.persisted = true;
  }
}

void Broker::Impl::settle(const Message& m, Settle how, std::chrono::milliseconds extension,
                          Broker::SettleHandler done) {
  const std::string* text = find_metadata(m, meta::kReceipt);
  if (!text) {
    return done(invalid_argument(
        "metadata witmq-receipt: missing; settle the message as it was delivered (with its "
        "witmq- metadata), and only messages received with settlement=explicit"));
  }
  auto r = parse_receipt(*text);
  if (!r) return done(std::move(r).error());
  auto chp = lookup(r->channel);
  // An r2 receipt names its channel: an id that now names another channel (the channel was
  // deleted and its id reused, or the receipt was issued by another node) settles nothing.
  if (chp && !r->channel_name.empty() && chp->name != r->channel_name) chp = nullptr;
  if (!chp && !r->channel_name.empty()) {
    std::shared_lock lock(map_mu);
    if (released.contains(r->channel_name)) return done(not_served(r->channel_name));
  }
  if (!chp) {
    return done(Error(ErrorCode::kStaleReceipt,
                      fmt::format("receipt {}: its channel no longer exists", *text)));
  }
  Channel& ch = *chp;
  if (fenced(ch)) return done(not_served(ch.name));
  Deferred d;
  Status refused;
  std::shared_ptr<AfterCommit> reply;
  {
    std::lock_guard lock(ch.mu);
    Subscription* sub = ch.find_sub(r->subscription);
    auto stale = [&](std::string_view why) {
      return Error(ErrorCode::kStaleReceipt,
                   fmt::format("receipt for {}/{}: {}", ch.name, r->seq, why));
    };
    const auto now = steady_now();
    if (ch.deleted || !sub) {
      refused = stale("its subscription no longer exists");
    } else if (!sub->contains(r->seq)) {
      refused = stale("the message is already settled");
    } else if (Delivery& dl = sub->at(r->seq);
               dl.state != Delivery::State::kAcquired || dl.lease != r->lease) {
      refused = stale("the lease it was delivered under has ended (expired, or settled)");
    } else if (dl.deadline < now) {
      refused = stale("the lease expired");
    } else {
      // Every settlement of a durable subscription writes its record (the cursor when the floor
      // moves, else the delivery record), and the reply waits for that write: a settle
      // answered ok survives a crash as the channel's durability says.
      Broker::SettleHandler reply_when_stored;
      if (done) {
        reply_when_stored = [this, seq = r->seq, name = ch.name, released = ch.released,
                             done = std::move(done)](Status s) mutable {
          // This node lost the channel while the settlement was being stored: it acknowledges
          // nothing for it any more.
          if (s.ok() && (released->load() || (opts.may_serve && !opts.may_serve(name)))) {
            s = not_served(name);
          }
          if (!s) {
            s = Error(s.error().code,
                      fmt::format("the settlement of {}/{} was not stored, so a restart may "
                                  "deliver the message again: {}",
                                  name, seq, s.error().message));
          }
          done(std::move(s));
        };
      }
      WriteSet ws;
      switch (how) {
        case Settle::kComplete:
          if (reply_when_stored) {
            // Gathered with the channel's other completes into one write.
            reply = complete_held(ch, *sub, r->seq, std::move(reply_when_stored));
            break;
          }
          ++ch.completes_total;
          lease_ended(sub->accept(r->seq));
          if (sub->advance_floor(ws)) {
            write_cursor(*sub, ws);
            after_floor_moved(ch, ws);
          } else if (sub->durable) {
            ws.put_delivery(sub->id, r->seq, {DeliveryStatus::kAccepted, dl.attempts, 0});
            dl.persisted = true;
          }
          break;
        case Settle::kAbandon: {
          const size_t moves = d.dead_letters.size();
          fail(ch, *sub, r->seq, FailCause::kAbandon, ws, d);
          if (d.dead_letters.size() > moves && reply_when_stored) {
            // Moved to the dead-letter channel: the reply waits for that write instead.
            d.dead_letter_replies.emplace_back(moves, std::move(reply_when_stored));
          }
          wake(ch, d);
          break;
        }
        case Settle::kExtend:
          sub->leases.erase({dl.deadline, r->seq});
          dl.deadline = now + extension;
          sub->leases.insert({dl.deadline, r->seq});
          // A shorter lease (0 releases the message) must wake the timer before its old
          // deadline.
          arm(ch);
          break;
      }
      if (reply) {
        // complete_held() queued it.
      } else if (reply_when_stored) {
        reply = submit_for_reply(ch, std::move(ws), std::move(reply_when_stored));
      } else {
        submit(ch, std::move(ws));
      }
    }
  }
  if (!refused.ok()) return done(std::move(refused));
  if (reply) reply->unlocked();
  run(d);
}

// -- clients --
void Broker::Impl::end_waiters(Client& c, bool with_error) {
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
      w->done(Error(ErrorCode::kUnavailable,
                    "the receive was ended: client disconnected or "
                    "broker shutting down"));
    } else {
      w->done(DeliveredBatch{});
    }
    drop_waiter(*w);
  }
}

void Broker::Impl::drop_waiter(Waiter& w) {
  for (auto& weak : w.channels) {
    if (auto ch = weak.lock()) {
      std::lock_guard lock(ch->mu);
      ch->waiters.remove_if([&](const std::shared_ptr<Waiter>& p) { return p.get() == &w; });
    }
  }
}

}  // namespace witmq::broker
