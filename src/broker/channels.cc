// The channel and subscription registry: lookup, creation, stats.
#include "broker/broker_impl.h"

namespace witmq::broker {

// Creates the channel in memory and queues its definition; map_mu must be held exclusively.
std::shared_ptr<Channel> Broker::Impl::create_locked(const std::string& name,
                                                     const ChannelSettings& settings,
                                                     const std::string& dead_letter_of) {
  auto ch = std::make_shared<Channel>();
  ch->id = store->allocate_channel_id();
  ch->name = name;
  ch->settings = settings;
  ch->dead_letter_of = dead_letter_of;
  WriteSet ws;
  ws.put_channel({ch->id, name, channel_config(*ch)});
  ws.put_head(ch->id, {0, 0});
  if (!ch->is_topic()) add_queue_subscription(*ch, ws);
  by_name[name] = ch;
  by_id[ch->id] = ch;
  // Group durability: the definition is on disk no later than the channel's first message. Under
  // the new channel's lock (the one taken under map_mu), ordered with its later writes.
  std::lock_guard channel_lock(ch->mu);
  submit(*ch, std::move(ws), Durability::kGroup);
  log::info("channel {}: created ({})", name, kind_name(settings.kind));
  return ch;
}

void Broker::Impl::add_queue_subscription(Channel& ch, WriteSet& ws) {
  auto sub = std::make_unique<Subscription>();
  sub->id = store->allocate_subscription_id();
  sub->floor = sub->next = sub->persisted_floor = ch.first;
  ws.put_subscription({sub->id, ch.id, "", "{}"});
  ws.put_cursor(sub->id, {sub->floor, sub->next});
  ch.subs_by_id[sub->id] = sub.get();
  ch.subs[""] = std::move(sub);
}

Status Broker::Impl::check_new_name(std::string_view name) const {
  if (name.size() <= opts.max_channel_name_bytes) return ok_status();
  return invalid_argument(fmt::format(
      "channel name '{}...' is {} bytes, above max-channel-name-bytes {}: no new channel may "
      "have a longer name",
      name.substr(0, 40), name.size(), opts.max_channel_name_bytes));
}

Status Broker::Impl::check_room_locked(std::string_view name) const {
  if (opts.max_channels == 0 || by_name.size() < opts.max_channels) return ok_status();
  return Error(ErrorCode::kResourceExhausted,
               fmt::format("channel '{}' cannot be created: {} channels exist, the limit "
                           "max-channels",
                           name, by_name.size()));
}

Result<std::shared_ptr<Channel>> Broker::Impl::find_or_create(std::string_view name, bool create) {
  if (auto ch = lookup(name)) return ch;
  auto valid = validate_channel_name(name);
  if (!valid) return std::move(valid).error();
  WITMQ_RETURN_IF_ERROR(check_new_name(name));
  {
    std::shared_lock lock(map_mu);
    if (released.contains(name)) return not_served(name);
  }
  if (!create) {
    return Error(ErrorCode::kNotFound,
                 fmt::format("channel '{}' does not exist and auto-create is off", name));
  }
  std::unique_lock lock(map_mu);
  auto it = by_name.find(std::string(name));
  if (it != by_name.end()) return it->second;
  if (released.contains(name)) return not_served(name);
  WITMQ_RETURN_IF_ERROR(check_room_locked(name));
  return create_locked(std::string(name), opts.default_channel, "");
}

// The dead-letter channel of `source_name`, created (point-to-point, unlimited deliveries) if
// needed and marked so that it never dead-letters itself.
std::shared_ptr<Channel> Broker::Impl::dead_letter_channel(const std::string& dlq_name,
                                                           const std::string& source_name,
                                                           Durability durability) {
  if (auto ch = lookup(dlq_name)) {
    std::lock_guard lock(ch->mu);
    // A deleted one is left alone (its definition rewritten would bring it back at the next
    // start); the append to it fails and the message stays where it is.
    if (ch->dead_letter_of.empty() && !ch->deleted) {
      ch->dead_letter_of = source_name;
      WriteSet ws;
      ws.put_channel({ch->id, ch->name, channel_config(*ch)});
      submit(*ch, std::move(ws), Durability::kGroup);
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
  if (released.contains(dlq_name)) {
    // Led by another node: a channel of that name made here would collide with the stored one.
    // The move fails (as into a deleted channel) and the message stays in its channel.
    auto gone = std::make_shared<Channel>();
    gone->name = dlq_name;
    gone->deleted = true;
    gone->released->store(true);
    return gone;
  }
  return create_locked(dlq_name, s, source_name);
}

// Finds or creates the client's subscription on `ch` (channel lock held).
Subscription* Broker::Impl::resolve_sub(const Client& c, Channel& ch, const ConsumerOptions& o,
                                        WriteSet& ws) {
  std::string name = sub_name_for(c, ch, o);
  auto it = ch.subs.find(name);
  if (it != ch.subs.end()) return it->second.get();
  auto sub = std::make_unique<Subscription>();
  sub->name = name;
  sub->durable = !name.starts_with('~');
  sub->id = sub->durable ? store->allocate_subscription_id() : next_ephemeral_sub++;
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
      auto r =
          store->find_seq_by_time(ch.id, ch.first, ch.head, static_cast<int64_t>(o.start.value));
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

ChannelStats Broker::Impl::stats_locked(Channel& ch) {
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
    ss.lag = ch.committed > sub->floor ? ch.committed - sub->floor - sub->accepted_in_window : 0;
    ss.available = (ch.committed > sub->next ? ch.committed - sub->next : 0) + sub->ready.size();
    st.depth = std::max(st.depth, ss.lag);
    st.in_flight += ss.in_flight;
    st.subscriptions.push_back(std::move(ss));
  }
  if (ch.is_topic() && ch.subs.empty()) st.depth = 0;
  return st;
}

}  // namespace witmq::broker
