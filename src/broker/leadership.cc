// Cluster leadership: a node stops serving a channel it no longer leads, and takes up from its
// own store a channel it leads again (docs/CLUSTERING.md, "Leadership changes").
#include "broker/broker_impl.h"

namespace witmq::broker {

void Broker::release_channel(std::string_view name) {
  auto& impl = *impl_;
  std::shared_ptr<Channel> ch;
  {
    std::unique_lock lock(impl.map_mu);
    impl.released.emplace(name);
    auto it = impl.by_name.find(std::string(name));
    if (it == impl.by_name.end()) return;
    ch = it->second;
    impl.by_name.erase(it);
    impl.by_id.erase(ch->id);
  }
  std::list<std::shared_ptr<Waiter>> waiters;
  {
    std::lock_guard lock(ch->mu);
    // Every path that writes the channel's state checks `deleted` under this lock first: from
    // here on nothing is written for it. Writes already queued land in the store, in order;
    // their replies check `released` and say kUnavailable.
    ch->deleted = true;
    ch->released->store(true);
    ch->timer.cancel();
    for (auto& [n, sub] : ch->subs) {
      // The leases end here: they no longer count against their holders' limit. The messages
      // stay acquired in the store; whoever serves the channel next makes them available again.
      for (const Delivery& dl : sub->window) {
        if (dl.state == Delivery::State::kAcquired) impl.lease_ended(dl.holder);
      }
    }
    waiters.swap(ch->waiters);
    ch->subs.clear();
    ch->subs_by_id.clear();
    ch->tail_drop_below(ch->head);
  }
  for (auto& w : waiters) {
    if (!w->claim()) continue;
    w->timer.cancel();
    w->done(Impl::not_served(name));
    impl.drop_waiter(*w);
  }
  log::info("channel {}: released (this node no longer leads it)", name);
}

Status Broker::adopt_channel(std::string_view name) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  {
    std::unique_lock lock(impl.map_mu);
    if (impl.by_name.contains(std::string(name))) {
      impl.released.erase(std::string(name));
      return ok_status();
    }
    // Nothing creates the channel while it is loaded (find_or_create refuses released names).
    impl.released.emplace(name);
  }
  auto finish = [&](Status st) {
    std::unique_lock lock(impl.map_mu);
    if (st) impl.released.erase(std::string(name));
    return st;
  };
  // Writes of the channel queued before its release are stored before it is read.
  if (auto st = impl.store->commit_and_wait(WriteSet{}, Durability::kNone); !st) return finish(st);
  const std::string only(name);
  auto state = impl.store->recover(&only);
  if (!state) return finish(std::move(state).error());
  if (state->channels.empty()) return finish(ok_status());
  auto st = impl.load(*state);
  if (st) log::info("channel {}: taken up from this node's store (this node leads it)", name);
  return finish(std::move(st));
}

}  // namespace witmq::broker
