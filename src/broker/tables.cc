// Broker::tables(): the sizes of the broker's in-memory tables, so that what clients leave behind
// is visible (docs/OPERATIONS.md, "Memory").
#include "broker/broker_impl.h"

namespace witmq::broker {

BrokerTables Broker::tables() const {
  BrokerTables t;
  {
    std::lock_guard lock(impl_->clients_mu);
    t.clients = impl_->clients.size();
  }
  std::vector<std::weak_ptr<Client>> requesters;
  {
    std::lock_guard lock(impl_->inboxes_mu);
    t.inboxes = impl_->inboxes.size();
    for (const auto& [token, weak] : impl_->inboxes) requesters.push_back(weak);
  }
  // A client's rr_mu is never taken under inboxes_mu (the lock order is the reverse).
  for (const auto& weak : requesters) {
    if (auto c = weak.lock()) {
      std::lock_guard lock(c->rr_mu);
      t.pending_requests += c->pending.size();
    }
  }
  t.replies_dropped_total = impl_->replies_dropped.load(std::memory_order_relaxed);
  t.requests_timed_out_total = impl_->requests_timed_out.load(std::memory_order_relaxed);
  std::vector<std::shared_ptr<Channel>> channels;
  {
    std::shared_lock lock(impl_->map_mu);
    channels.reserve(impl_->by_id.size());
    for (const auto& [id, ch] : impl_->by_id) channels.push_back(ch);
  }
  for (const auto& ch : channels) {
    std::lock_guard lock(ch->mu);
    t.waiters += ch->waiters.size();
    for (const auto& [name, sub] : ch->subs) {
      ++(sub->durable ? t.durable_subscriptions : t.ephemeral_subscriptions);
    }
  }
  t.timers = impl_->timers.size();
  return t;
}

}  // namespace witmq::broker
