#include "broker/channel.h"

#include <algorithm>

namespace witmq::broker {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool Subscription::advance_floor(storage::WriteSet& ws) {
  bool moved = false;
  while (!window.empty() && window.front().state == Delivery::State::kAccepted) {
    if (durable && window.front().persisted) {
      ws.delete_delivery(id, floor);
      cursor_due = true;
    }
    window.pop_front();
    --accepted_in_window;
    ++floor;
    moved = true;
  }
  return moved;
}

uint64_t Subscription::accept(Seq seq) {
  Delivery& d = at(seq);
  uint64_t holder = 0;
  switch (d.state) {
    case Delivery::State::kAcquired:
      leases.erase({d.deadline, seq});
      --in_flight;
      holder = d.holder;
      break;
    case Delivery::State::kReady:
      ready.erase(seq);
      break;
    case Delivery::State::kWaiting:
      waiting.erase({d.deadline, seq});
      break;
    case Delivery::State::kMoving:
      break;
    case Delivery::State::kAccepted:
      return 0;
  }
  d.state = Delivery::State::kAccepted;
  ++accepted_in_window;
  return holder;
}

uint64_t Subscription::drop_below(Seq new_floor, storage::WriteSet& ws,
                                  std::vector<uint64_t>& holders) {
  if (new_floor <= floor) return 0;
  const Seq old_floor = floor;
  uint64_t unsettled = 0;
  while (floor < new_floor && !window.empty()) {
    if (window.front().state != Delivery::State::kAccepted) {
      ++unsettled;
      if (const uint64_t holder = accept(floor)) holders.push_back(holder);
    }
    window.pop_front();
    --accepted_in_window;
    ++floor;
  }
  if (floor < new_floor) {
    // Past the window: never delivered, so nothing is held.
    unsettled += new_floor - floor;
    floor = new_floor;
    next = new_floor;
  }
  if (durable) ws.delete_deliveries(id, old_floor, new_floor);
  return unsettled;
}

std::optional<SteadyTime> Subscription::next_deadline() const {
  std::optional<SteadyTime> t;
  if (!leases.empty()) t = leases.begin()->first;
  if (!waiting.empty() && (!t || waiting.begin()->first < *t)) t = waiting.begin()->first;
  return t;
}

std::shared_ptr<const storage::StoredMessage> Channel::tail_get(Seq seq) const {
  if (seq < tail_first || seq >= tail_first + tail.size()) return nullptr;
  return tail[seq - tail_first];
}

void Channel::tail_push(std::shared_ptr<const storage::StoredMessage> m, size_t limit_bytes) {
  if (tail.empty()) tail_first = m->seq;
  if (m->seq != tail_first + tail.size()) {
    // A gap (e.g. after a restart): start the cache afresh at this message.
    tail.clear();
    tail_bytes = 0;
    tail_first = m->seq;
  }
  tail_bytes += m->message.data.size() + 64;
  tail.push_back(std::move(m));
  while (tail_bytes > limit_bytes && !tail.empty()) {
    tail_bytes -= tail.front()->message.data.size() + 64;
    tail.pop_front();
    ++tail_first;
  }
}

void Channel::tail_drop_below(Seq seq) {
  while (!tail.empty() && tail_first < seq) {
    tail_bytes -= tail.front()->message.data.size() + 64;
    tail.pop_front();
    ++tail_first;
  }
}

void Channel::add_unstored(Seq from, Seq to) {
  std::lock_guard lock(unstored_mu);
  unstored.emplace_back(from, to);
  has_unstored.store(true);
}

bool Channel::is_unstored(Seq seq) {
  if (!has_unstored.load()) return false;
  std::lock_guard lock(unstored_mu);
  return std::any_of(unstored.begin(), unstored.end(),
                     [seq](const auto& r) { return seq >= r.first && seq < r.second; });
}

void Channel::forget_unstored_below(Seq seq) {
  if (!has_unstored.load()) return;
  std::lock_guard lock(unstored_mu);
  std::erase_if(unstored, [seq](const auto& r) { return r.second <= seq; });
  has_unstored.store(!unstored.empty());
}

Seq Channel::min_floor() const {
  Seq m = head;
  for (const auto& [name, sub] : subs) m = std::min(m, sub->floor);
  return m;
}

std::optional<SteadyTime> Channel::next_deadline() const {
  std::optional<SteadyTime> t;
  for (const auto& [name, sub] : subs) {
    auto d = sub->next_deadline();
    if (d && (!t || *d < *t)) t = d;
  }
  return t;
}

}  // namespace witmq::broker
