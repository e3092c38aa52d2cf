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
// source's "accepted" record are one atomic write, and the source settles the message only once
// that write is stored. No lock held on entry.
void Broker::Impl::dead_letter(DeadLetterJob job, Broker::SettleHandler done) {
  Channel& src = *job.source;
  std::string dlq_name;
  Durability durability;
  bool gone = false;
  {
    std::lock_guard lock(src.mu);
    // Deleted meanwhile: the message went with its channel (as in finish_dead_letter), so the
    // settlement that asked for the move is done. Otherwise the source's "accepted" record rides
    // in the dead-letter channel's append, and finish_dead_letter writes the source's settlement:
    // a delete of the source waits for both (end_foreign_write there).
    if (!begin_foreign_write(src)) gone = true;
    dlq_name = src.dead_letter_name();
    durability = src.settings.durability;
  }
  if (gone) {
    if (done) done(ok_status());
    return;
  }
  if (!job.body) {
    auto r = store->get(src.id, job.seq);
    if (r && r->has_value()) job.body = std::make_shared<const StoredMessage>(std::move(**r));
  }
  if (!job.body) {
    log::warn("channel {}: seq {} to dead-letter is gone (retention); dropping it", src.name,
              job.seq);
    return finish_dead_letter(job, ok_status(), std::move(done));
  }
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
  // The append reports on the commit thread, or at once under the dead-letter channel's lock
  // when the store is closing; the source's lock is taken only once both that report and the
  // return from append_locked_free are in (no thread holds two channel locks).
  auto moving = std::make_shared<DeadLetterJob>(std::move(job));
  auto after =
      std::make_shared<AfterCommit>([this, moving, done = std::move(done)](Status s) mutable {
        finish_dead_letter(*moving, s, std::move(done));
      });
  SendHandler stored = [after](Status s) { after->reported(std::move(s)); };
  auto st = append_locked_free(*dlq, std::vector<Message>{std::move(m)}, std::move(ws), &stored);
  // Not queued (the dead-letter channel was deleted meanwhile): the handler never runs.
  if (!st) after->reported(std::move(st));
  after->unlocked();
}

void Broker::Impl::finish_dead_letter(DeadLetterJob& job, const Status& s,
                                      Broker::SettleHandler done) {
  Channel& src = *job.source;
  Deferred d;
  Status reply;
  {
    std::lock_guard lock(src.mu);
    Subscription* sub = src.find_sub(job.sub);
    if (src.deleted || !sub || !sub->contains(job.seq) ||
        sub->at(job.seq).state != Delivery::State::kMoving) {
      // Settled or removed meanwhile (the channel deleted, say): nothing is left to move.
    } else if (s.ok()) {
      if (job.body) {
        log::info("channel {}: seq {} dead-lettered to {} ({}, {} attempts)", src.name, job.seq,
                  src.dead_letter_name(), job.reason, job.attempts);
      }
      ++src.dead_letters_total;
      // The move wrote the source's "accepted" record with the copy.
      if (job.body && job.sub_durable) sub->at(job.seq).persisted = true;
      sub->accept(job.seq);
      WriteSet ws;
      if (sub->advance_floor(ws)) floor_moved(src, *sub, ws);
      submit(src, std::move(ws));
    } else {
      // Not stored (a full disk, or the dead-letter channel deleted): the message stays here and
      // is available again; a full disk is given a moment first. A later failure moves it again.
      log::warn("channel {}: seq {} could not be dead-lettered, it stays in the channel: {}",
                src.name, job.seq, s.error().to_string());
      reply = Error(s.error().code,
                    fmt::format("the move of {}/{} to its dead-letter channel was not stored; "
                                "the message stays in {} and will be delivered again: {}",
                                src.name, job.seq, src.name, s.error().message));
      WriteSet ws;
      Delivery& dl = sub->at(job.seq);
      if (s.error().code == ErrorCode::kNotFound) {
        make_ready(*sub, job.seq, ws);
        wake(src, d);
      } else {
        dl.state = Delivery::State::kWaiting;
        dl.deadline = steady_now() + kDeadLetterRetryDelay;
        sub->waiting.insert({dl.deadline, job.seq});
        if (sub->durable) {
          const auto delay =
              std::chrono::duration_cast<std::chrono::milliseconds>(kDeadLetterRetryDelay);
          ws.put_delivery(sub->id, job.seq,
                          {DeliveryStatus::kReady, dl.attempts, wall_ms() + delay.count()});
          dl.persisted = true;
        }
        arm(src);
      }
      submit(src, std::move(ws));
    }
    // The last write naming the source for this move is queued: a delete waiting for it may go.
    end_foreign_write(src);
  }
  run(d);
  if (done) done(std::move(reply));
}

// Appends to `ch` (taking its lock), with `extra` writes in the same atomic batch. `done`
// (optional) runs once durable.
Status Broker::Impl::append_locked_free(Channel& ch, std::vector<Message> messages, WriteSet extra,
                                        SendHandler* done) {
  const int64_t now = wall_ms();
  std::lock_guard lock(ch.mu);
  if (ch.deleted) return gone(ch);
  append_held(ch, std::move(messages), std::move(extra), done, now);
  return ok_status();
}

// Channel lock held.
void Broker::Impl::append_held(Channel& ch, std::vector<Message> messages, WriteSet ws,
                               SendHandler* done, int64_t now) {
  // A plain append to a `none` channel skips the write-ahead log (Store: WriteSet::set_unlogged);
  // one that carries other writes (a dead-letter move's settlement, a definition written again)
  // stays logged, as those writes promise.
  const bool plain = ws.empty();
  // The send's messages as runs (one record each) rather than a record per message.
  ws.put_messages(ch.id, ch.head, now, messages);
  for (auto& m : messages) {
    Seq seq = ch.head++;
    ch.tail_push(std::make_shared<const StoredMessage>(StoredMessage{seq, now, std::move(m)}),
                 opts.tail_cache_bytes);
  }
  ws.put_head(ch.id, {ch.first, ch.head});
  // A topic's retention is checked while it holds messages (housekeeping checks again while any
  // remain): an append starts the checks of a topic declared since start, or emptied since.
  if (ch.is_topic() && !ch.housekeeping_due) schedule_housekeeping(ch, kRetentionCheckInterval);
  const size_t own_ops = ws.op_count();
  rewrite_definition_if_due(ch, ws);
  if (plain && ws.op_count() == own_ops && ch.settings.durability == Durability::kNone) {
    ws.set_unlogged();
  }
  ch.sends_total += messages.size();
  const Seq end = ch.head;
  const Seq begin = end - messages.size();
  std::shared_ptr<SendHandler> handler;
  if (done) handler = std::make_shared<SendHandler>(std::move(*done));
  std::weak_ptr<Channel> weak = ch.shared_from_this();
  // A commit refused because the store is closing reports inline, while this channel's lock is
  // held, so that path never takes the lock.
  store->commit(std::move(ws), ch.settings.durability,
                [this, weak, begin, end, handler, released = ch.released](Status s) {
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
        if (s.error().code != ErrorCode::kUnavailable) {
          // On the commit thread (only a closing store reports at once, under this lock): the
          // write may have carried the head, or a definition rewritten after an earlier failure.
          std::lock_guard lock(c->mu);
          if (!c->deleted) write_failed(*c);
        }
      }
    }
    if (handler) {
      // This node lost the channel while the write was under way: it acknowledges nothing for
      // it any more (the write may be stored here, where no leader reads it).
      auto c = weak.lock();
      if (s.ok() && (released->load() || (c && fenced(*c)))) {
        s = not_served(c ? std::string_view(c->name) : std::string_view("(released)"));
      }
      (*handler)(s);
    }
    run(d);
  });
}

}  // namespace witmq::broker
