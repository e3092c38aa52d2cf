// Appends, and moves to dead-letter channels.
#include "broker/broker_impl.h"

namespace witmq::broker {

void Broker::Impl::to_dead_letter(Channel& ch, Subscription& sub, Seq seq, std::string reason,
                                  Deferred& d) {
  Delivery& dl = sub.at(seq);
  dl.state = Delivery::State::kMoving;
  d.dead_letters.push_back(DeadLetterJob{ch.shared_from_this(), sub.id, sub.durable, sub.name, seq,
                                         dl.attempts, std::move(reason), ch.tail_get(seq)});
}

// Moves one message to its dead-letter channel: the copy in the dead-letter channel and the
// source's "accepted" record are one atomic write. No lock held on entry.
void Broker::Impl::dead_letter(DeadLetterJob job) {
  Channel& src = *job.source;
  std::string dlq_name;
  Durability durability;
  {
    std::lock_guard lock(src.mu);
    // Deleted meanwhile: the message went with its channel. Otherwise the source's "accepted"
    // record rides in the dead-letter channel's append; a delete of the source waits for it.
    if (!begin_foreign_write(src)) return;
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
    auto st = append_locked_free(*dlq, std::vector<Message>{std::move(m)}, std::move(ws), nullptr);
    if (!st) {
      // The dead-letter channel vanished (deleted meanwhile): keep the message where it is.
      log::warn("channel {}: seq {} cannot be dead-lettered: {}", src.name, job.seq,
                st.error().to_string());
      std::lock_guard lock(src.mu);
      Subscription* sub = src.find_sub(job.sub);
      if (!src.deleted && sub && sub->contains(job.seq) &&
          sub->at(job.seq).state == Delivery::State::kMoving) {
        WriteSet ready_ws;
        make_ready(*sub, job.seq, ready_ws);
        submit(std::move(ready_ws));
      }
      end_foreign_write(src);
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
  if (!src.deleted && sub && sub->contains(job.seq) &&
      sub->at(job.seq).state == Delivery::State::kMoving) {
    ++src.dead_letters_total;
    sub->at(job.seq).persisted = job.sub_durable;
    sub->accept(job.seq);
    WriteSet ws;
    if (sub->advance_floor(ws)) floor_moved(src, *sub, ws);
    submit(std::move(ws));
  }
  end_foreign_write(src);
}

// Appends to `ch` (taking its lock), with `extra` writes in the same atomic batch. `done`
// (optional) runs once durable.
Status Broker::Impl::append_locked_free(Channel& ch, std::vector<Message> messages, WriteSet extra,
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
void Broker::Impl::append_held(Channel& ch, std::vector<Message> messages, WriteSet ws,
                               SendHandler* done, int64_t now) {
  for (auto& m : messages) {
    Seq seq = ch.head++;
    ws.put_message(ch.id, seq, now, m);
    ch.tail_push(std::make_shared<const StoredMessage>(StoredMessage{seq, now, std::move(m)}),
                 opts.tail_cache_bytes);
  }
  ws.put_head(ch.id, {ch.first, ch.head});
  ch.sends_total += messages.size();
  const Seq end = ch.head;
  const Seq begin = end - messages.size();
  std::shared_ptr<SendHandler> handler;
  if (done) handler = std::make_shared<SendHandler>(std::move(*done));
  std::weak_ptr<Channel> weak = ch.shared_from_this();
  // A failed commit may report inline (e.g. the store is closing) while this channel's lock is
  // held, so only the success path takes the lock.
  store->commit(std::move(ws), ch.settings.durability, [this, weak, begin, end, handler](Status s) {
    Deferred d;
    if (auto c = weak.lock()) {
      if (s.ok()) {
        std::lock_guard lock(c->mu);
        c->committed = std::max(c->committed, end);
        wake(*c, d);
      } else {
        // A later append that succeeds moves `committed` past these seqs: mark them first.
        c->add_unstored(begin, end);
        if (s.error().code != ErrorCode::kResourceExhausted) {
          log::error("channel {}: append failed: {}", c->name, s.error().to_string());
        }
      }
    }
    if (handler) (*handler)(s);
    run(d);
  });
}

}  // namespace witmq::broker
