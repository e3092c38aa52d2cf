// Rebuilding the broker's state from the store: every channel at open, and one channel that a
// cluster node takes up again (Broker::adopt_channel), by the same function.
#include "broker/broker_impl.h"

namespace witmq::broker {

// -- recovery --
Status Broker::Impl::recover() {
  auto state = store->recover();
  if (!state) return std::move(state).error();
  return load(*state);
}

Status Broker::Impl::load(storage::RecoveredState& recovered) {
  storage::RecoveredState* state = &recovered;
  // Built here, and published to the maps only once whole: a call that finds the channel finds
  // its subscriptions too.
  std::unordered_map<ChannelId, std::shared_ptr<Channel>> loaded;
  for (auto& c : state->channels) {
    auto ch = std::make_shared<Channel>();
    ch->id = c.def.id;
    ch->name = c.def.name;
    nlohmann::json j = nlohmann::json::parse(c.def.config, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("settings")) {
      return Error(ErrorCode::kCorruption,
                   fmt::format("meta/channel id={} ('{}'): config is not valid JSON: {}", c.def.id,
                               c.def.name, c.def.config.substr(0, 200)));
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
    loaded[ch->id] = ch;
  }
  // A `none` channel's appends skip the write-ahead log, so after a crash its subscriptions'
  // cursors and delivery records (which are logged) may name seqs past the last stored message.
  // The head moves past them, never giving a seq out twice; the seqs between were lost.
  for (const auto& rs : state->subscriptions) {
    auto it = loaded.find(rs.def.channel);
    if (it == loaded.end()) continue;
    Channel& ch = *it->second;
    Seq named = std::max(rs.cursor.floor, rs.cursor.next);
    if (!rs.deliveries.empty()) named = std::max(named, rs.deliveries.back().first + 1);
    if (named > ch.head) {
      log::warn("recovery: channel {}: messages {}..{} were lost at the last stop (durability {})",
                ch.name, ch.head, named - 1, storage::durability_name(ch.settings.durability));
      ch.add_unstored(ch.head, named);
      ch.head = ch.committed = named;
    }
  }
  std::vector<DeadLetterJob> jobs;
  WriteSet ws;
  const auto now = steady_now();
  const int64_t wall_now = wall_ms();
  for (auto& rs : state->subscriptions) {
    auto it = loaded.find(rs.def.channel);
    if (it == loaded.end()) {
      log::warn("recovery: subscription {} ('{}') names missing channel {}; removing it", rs.def.id,
                rs.def.name, rs.def.channel);
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
      log::info(
          "recovery: channel {} subscription '{}': {} messages held at the last stop are "
          "available again",
          ch.name, sub->name, released);
    }
    ch.subs_by_id[sub->id] = sub.get();
    ch.subs[sub->name] = std::move(sub);
  }
  // A point-to-point channel always has its shared subscription.
  for (auto& [id, ch] : loaded) {
    if (!ch->is_topic() && !ch->subs.count("")) add_queue_subscription(*ch, ws);
    std::lock_guard lock(ch->mu);
    arm(*ch);
    if (ch->min_floor() > ch->first) schedule_housekeeping(*ch, kHousekeepingDelay);
    if (ch->is_topic()) schedule_housekeeping(*ch, kRetentionCheckInterval);
  }
  auto st = store->commit_and_wait(std::move(ws), Durability::kSync);
  if (!st) return st;
  {
    std::unique_lock lock(map_mu);
    for (auto& [id, ch] : loaded) {
      by_name[ch->name] = ch;
      by_id[id] = ch;
    }
  }
  for (auto& job : jobs) dead_letter(std::move(job));
  log::info("recovery: {} channels, {} subscriptions", state->channels.size(),
            state->subscriptions.size());
  return ok_status();
}

}  // namespace witmq::broker
