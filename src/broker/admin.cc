// Admin calls: declare, delete, list, stats, browse, replay, purge, checkpoint.
#include <future>

#include "broker/broker_impl.h"

namespace witmq::broker {

Status Broker::declare_channel(std::string_view name, const ChannelSettings& settings) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  WITMQ_RETURN_IF_ERROR(validate_channel_name(name));
  if (settings.dead_letter_channel == name) {
    return invalid_argument(
        fmt::format("channel '{}': dead-letter-channel may not be the channel itself", name));
  }
  std::shared_ptr<Channel> ch;
  std::unique_lock<std::mutex> ch_lock;
  // A channel deleted between the lookup and its lock is gone: declare the name afresh (a
  // definition written for the deleted one would bring it back at the next start).
  for (;;) {
    {
      std::unique_lock lock(impl.map_mu);
      auto it = impl.by_name.find(std::string(name));
      if (it == impl.by_name.end()) {
        if (impl.released.contains(name)) return Impl::not_served(name);
        WITMQ_RETURN_IF_ERROR(impl.check_new_name(name));
        WITMQ_RETURN_IF_ERROR(impl.check_room_locked(name));
        impl.create_locked(std::string(name), settings, "");
        return ok_status();
      }
      ch = it->second;
    }
    ch_lock = std::unique_lock(ch->mu);
    if (!ch->deleted) break;
    ch_lock.unlock();
  }
  if (ch->settings.kind != settings.kind) {
    return Error(ErrorCode::kAlreadyExists,
                 fmt::format("channel '{}' exists as {}; its kind cannot change to {}", name,
                             kind_name(ch->settings.kind), kind_name(settings.kind)));
  }
  if (ch->settings == settings) return ok_status();
  ch->settings = settings;
  WriteSet ws;
  ws.put_channel({ch->id, ch->name, Impl::channel_config(*ch)});
  impl.submit(*ch, std::move(ws), Durability::kGroup);
  log::info("channel {}: settings updated", name);
  return ok_status();
}

bool Broker::creates_channels_on_use() const { return impl_->opts.auto_create_channels; }

Status Broker::delete_channel(std::string_view name) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  std::shared_ptr<Channel> ch;
  {
    std::unique_lock lock(impl.map_mu);
    auto it = impl.by_name.find(std::string(name));
    if (it == impl.by_name.end()) {
      if (impl.released.contains(name)) return Impl::not_served(name);
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
      // The leases end with the channel: they no longer count against their holders' limit.
      for (const Delivery& dl : sub->window) {
        if (dl.state == Delivery::State::kAcquired) impl.lease_ended(dl.holder);
      }
    }
    ws.delete_channel(ch->id);
    if (ch->foreign_writers > 0) {
      ch->deferred_delete = std::move(ws);  // submitted by the last of them (end_foreign_write)
    } else {
      impl.submit(std::move(ws), Durability::kGroup);
    }
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
    if (oldest < chp->committed && st.depth > 0)
      body = chp->tail_get(oldest);
    else
      oldest = chp->committed;
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
  // Replay acquires like a consumer with a long lease, then moves what it acquired in steps.
  Client replayer(0, "");
  ConsumerOptions o;
  o.lease = std::chrono::duration_cast<std::chrono::milliseconds>(kReplayLease);
  uint64_t moved = 0;
  // Each move's write carries the dead-letter channel's "accepted" record in the source's append,
  // under the source's lock: registered as a foreign write, so that a concurrent delete of the
  // dead-letter channel lands after it.
  struct ForeignWrite {
    ForeignWrite(Impl& i, Channel& c) : impl(i), ch(c) {}
    ForeignWrite(const ForeignWrite&) = delete;
    ForeignWrite& operator=(const ForeignWrite&) = delete;
    Impl& impl;
    Channel& ch;
    ~ForeignWrite() {
      std::lock_guard lock(ch.mu);
      impl.end_foreign_write(ch);
    }
  };
  // Dead letters this replay cannot move (no source to go back to, the source deleted meanwhile,
  // a write that failed): held until it ends, so that its next steps take others rather than the
  // same ones again, then left available again.
  struct Unmovable {
    Impl& impl;
    Channel& dlq;
    struct Held {
      SubscriptionId sub;
      Seq seq;
      uint64_t lease;
    };
    std::vector<Held> held;
    ~Unmovable() {
      if (held.empty()) return;
      Deferred d;
      {
        WriteSet ws;
        std::lock_guard lock(dlq.mu);
        if (dlq.deleted) return;  // they went with their channel
        for (const Held& h : held) {
          Subscription* sub = dlq.find_sub(h.sub);
          if (sub && sub->contains(h.seq) && sub->at(h.seq).lease == h.lease &&
              sub->at(h.seq).state == Delivery::State::kAcquired) {
            --sub->in_flight;
            sub->leases.erase({sub->at(h.seq).deadline, h.seq});
            impl.make_ready(*sub, h.seq, ws);
          }
        }
        impl.wake(dlq, d);
        impl.submit(dlq, std::move(ws));
      }
      impl.run(d);
    }
  } unmovable{impl, dlq, {}};
  // Bytes a message adds to a step's write, near enough for kReplayStepBytes.
  auto size_of = [](const Message& m) {
    size_t n = m.data.size();
    if (m.metadata) {
      for (const auto& [k, v] : *m.metadata) n += k.size() + v.size();
    }
    return n;
  };
  auto source_of = [](const Grant::Item& item) -> const std::string* {
    return item.body ? find_metadata(item.body->message, meta::kDlqSource) : nullptr;
  };
  while (moved < max_messages) {
    Grant g;
    std::optional<ForeignWrite> foreign;
    {
      WriteSet ws;
      std::lock_guard lock(dlq.mu);
      if (!impl.begin_foreign_write(dlq)) break;  // deleted meanwhile: nothing left to move
      foreign.emplace(impl, dlq);
      if (dlq.is_topic()) {
        return Error(ErrorCode::kFailedPrecondition,
                     fmt::format("channel '{}' is publish-subscribe; dead-letter channels are "
                                 "point-to-point",
                                 dlq_name));
      }
      Subscription* sub = dlq.find_sub(dlq.subs.at("")->id);
      const auto n =
          static_cast<uint32_t>(std::min<uint64_t>(max_messages - moved, kReplayStepMessages));
      if (!sub->has_available(dlq.committed)) break;
      g = impl.acquire(dlq, *sub, replayer, n, o, ws);
      impl.submit(dlq, std::move(ws));
    }
    if (g.items.empty()) break;
    auto keep = [&](Seq seq) { unmovable.held.push_back({g.sub, seq, g.lease}); };
    for (auto& item : g.items) {
      if (item.body) continue;
      auto r = impl.store->get(dlq.id, item.seq);
      if (r && r->has_value()) item.body = std::make_shared<const StoredMessage>(std::move(**r));
    }
    // The step goes back in runs of messages with the same source, each run one atomic write
    // (the copies in the source and the dead letters' "accepted" records), stored before the next
    // is queued. A dead letter settles only once its run is stored, so a write that fails (a full
    // disk) leaves the messages here rather than in neither channel.
    Status failed;
    size_t i = 0;
    while (i < g.items.size()) {
      const std::string* source = source_of(g.items[i]);
      if (!source) {
        keep(g.items[i++].seq);  // nowhere to go back to
        continue;
      }
      const std::string source_name = *source;
      std::vector<Message> messages;
      std::vector<Seq> seqs;
      WriteSet ws;
      size_t bytes = 0;
      for (; i < g.items.size(); ++i) {
        const Grant::Item& item = g.items[i];
        const std::string* s = source_of(item);
        if (!s || *s != source_name) break;
        const size_t size = size_of(item.body->message);
        if (!seqs.empty() && bytes + size > kReplayStepBytes) break;
        bytes += size;
        Message m = item.body->message;
        if (m.metadata) {
          std::erase_if(*m.metadata, [](const KeyValue& kv) { return is_reserved_key(kv.first); });
        }
        messages.push_back(std::move(m));
        seqs.push_back(item.seq);
        ws.put_delivery(g.sub, item.seq, {DeliveryStatus::kAccepted, item.attempts, 0});
      }
      auto src = impl.find_or_create(source_name, true);
      if (!src) {
        for (Seq seq : seqs) keep(seq);  // nowhere to go back to
        continue;
      }
      std::promise<Status> promise;
      auto stored = promise.get_future();
      SendHandler done = [p = std::move(promise)](Status st) mutable {
        p.set_value(std::move(st));
      };
      auto st = impl.append_locked_free(**src, std::move(messages), std::move(ws), &done);
      if (!st) {
        // The source was deleted since it was looked up (the only refusal): the messages stay
        // dead letters, and the replay goes on.
        log::warn("channel {}: {} messages from seq {} cannot be replayed: {}", dlq_name,
                  seqs.size(), seqs.front(), st.error().to_string());
        for (Seq seq : seqs) keep(seq);
        continue;
      }
      if (auto written = stored.get(); !written) {
        failed = std::move(written);
        for (Seq seq : seqs) keep(seq);
        break;
      }
      WriteSet settled;
      std::lock_guard lock(dlq.mu);
      Subscription* sub = dlq.find_sub(g.sub);
      for (Seq seq : seqs) {
        if (sub && sub->contains(seq) && sub->at(seq).lease == g.lease) {
          sub->at(seq).persisted = true;
          sub->accept(seq);
          ++dlq.completes_total;
        }
      }
      if (sub && sub->advance_floor(settled)) impl.floor_moved(dlq, *sub, settled);
      impl.submit(dlq, std::move(settled));
      moved += seqs.size();
    }
    if (!failed.ok()) {
      for (; i < g.items.size(); ++i) keep(g.items[i].seq);  // not tried
      log::warn("channel {}: replay stopped after {} messages: {}", dlq_name, moved,
                failed.error().to_string());
      return std::move(failed).error();
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
  if (ch.deleted) return not_found(fmt::format("channel '{}' was deleted", channel));
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
  impl.submit(ch, std::move(ws), Durability::kGroup);
  log::info("channel {}: purged {} messages", channel, purged);
  return purged;
}

Status Broker::checkpoint(const std::string& dir) { return impl_->store->checkpoint(dir); }

storage::StoreStats Broker::store_stats() const { return impl_->store->stats(); }

}  // namespace witmq::broker
