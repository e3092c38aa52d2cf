// The public Broker API: the WIT operations and the broker's lifetime.
#include "broker/broker.h"

#include <filesystem>
#include <future>

#include "broker/broker_impl.h"

namespace witmq::broker {
// ---- Broker --------------------------------------------------------------------------------

Broker::Broker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Broker::~Broker() { shutdown(); }

Result<std::unique_ptr<Broker>> Broker::open(BrokerOptions options,
                                             boost::asio::any_io_executor executor) {
  if (options.default_batch_size < 1 || options.default_batch_size > options.max_batch_size) {
    return invalid_argument(fmt::format("default-batch-size: {} is out of range 1..{}",
                                        options.default_batch_size, options.max_batch_size));
  }
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(options);
  impl->executor = std::move(executor);
  storage::StoreOptions so = impl->opts.store;
  so.path = impl->opts.data_dir;
  std::error_code ec;
  std::filesystem::create_directories(so.path, ec);
  if (ec) {
    return Error(ErrorCode::kIoError,
                 fmt::format("data-dir '{}': cannot create it: {}", so.path, ec.message()));
  }
  auto store = storage::Store::open(so);
  if (!store) return std::move(store).error();
  impl->store = std::move(*store);
  auto st = impl->recover();
  if (!st) return std::move(st).error();
  std::unique_ptr<Broker> b(new Broker(std::move(impl)));
  for (const auto& [name, settings] : b->impl_->opts.channels) {
    auto d = b->declare_channel(name, settings);
    if (d) continue;
    // A stored channel of the other kind (deleted and re-created by a send since the file named
    // it) keeps its kind and its messages, as on a reload: refusing to start over the data a
    // running daemon accepted would turn one declaration into an outage.
    if (d.error().code == ErrorCode::kAlreadyExists) {
      log::error("channel '{}': the configuration's declaration is not applied: {}", name,
                 d.error().message);
      continue;
    }
    return std::move(d).error();
  }
  return b;
}

boost::asio::any_io_executor Broker::executor() const { return impl_->executor; }

Result<ClientPtr> Broker::connect(std::string_view name) {
  WITMQ_RETURN_IF_ERROR(impl_->check_open());
  if (!name.empty()) {
    auto st = validate_channel_name(name);
    if (!st) {
      return invalid_argument(
          fmt::format("client name '{}': {}", name.substr(0, 100), st.error().message));
    }
  }
  auto c = std::make_shared<Client>(impl_->next_client++, std::string(name));
  std::lock_guard lock(impl_->clients_mu);
  impl_->clients[c->id] = c;
  return c;
}

void Broker::disconnect(const ClientPtr& c) {
  if (!c || c->gone.exchange(true)) return;
  impl_->end_waiters(*c, true);
  impl_->end_requests(*c, Error(ErrorCode::kUnavailable, "the client is disconnected"));
  std::set<ChannelId> used;
  {
    std::lock_guard lock(c->mu);
    used = c->used;
  }
  for (ChannelId id : used) {
    auto chp = impl_->lookup(id);
    if (!chp) continue;
    Deferred d;
    WriteSet ws;
    {
      std::lock_guard lock(chp->mu);
      if (chp->deleted) continue;  // its leases and subscriptions went with it
      std::vector<Subscription*> mine;
      for (auto& [name, sub] : chp->subs) {
        if (!sub->durable && sub->owner == c->id) {
          mine.push_back(sub.get());
          continue;
        }
        std::vector<Seq> held;
        for (Seq s = sub->floor; s < sub->next; ++s) {
          const Delivery& dl = sub->at(s);
          if (dl.state == Delivery::State::kAcquired && dl.holder == c->id) held.push_back(s);
        }
        for (Seq s : held) impl_->fail(*chp, *sub, s, FailCause::kConsumerGone, ws, d);
      }
      for (auto* sub : mine) impl_->remove_sub(*chp, sub, ws);
      impl_->wake(*chp, d);
      impl_->submit(*chp, std::move(ws));
    }
    impl_->run(d);
  }
  std::lock_guard lock(impl_->clients_mu);
  impl_->clients.erase(c->id);
}

Status Broker::Impl::check_send(std::vector<Message>& messages) const {
  const auto& o = opts;
  if (messages.size() > o.max_send_batch) {
    return Error(ErrorCode::kResourceExhausted,
                 fmt::format("send: {} messages in one batch, the limit is {}", messages.size(),
                             o.max_send_batch));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    Message& m = messages[i];
    if (static_cast<uint8_t>(m.format) >= kFormatCount) {
      return invalid_argument(fmt::format("message[{}].format: {} is not a format-spec case", i,
                                          static_cast<int>(m.format)));
    }
    if (m.data.size() > o.max_message_bytes) {
      return Error(ErrorCode::kResourceExhausted,
                   fmt::format("message[{}].data: {} bytes, the limit is {}", i, m.data.size(),
                               o.max_message_bytes));
    }
    if (m.metadata) {
      auto& md = *m.metadata;
      std::erase_if(md, [](const KeyValue& kv) { return is_reserved_key(kv.first); });
      if (md.size() > o.max_metadata_entries) {
        return Error(ErrorCode::kResourceExhausted,
                     fmt::format("message[{}].metadata: {} entries, the limit is {}", i, md.size(),
                                 o.max_metadata_entries));
      }
      size_t bytes = 0;
      for (const auto& [k, v] : md) bytes += k.size() + v.size();
      if (bytes > o.max_metadata_bytes) {
        return Error(ErrorCode::kResourceExhausted,
                     fmt::format("message[{}].metadata: {} bytes, the limit is {}", i, bytes,
                                 o.max_metadata_bytes));
      }
    }
  }
  return ok_status();
}

void Broker::Impl::append(std::string_view channel, std::vector<Message> messages,
                          SendHandler done) {
  auto chp = find_or_create(channel, opts.auto_create_channels);
  if (!chp) return done(std::move(chp).error());
  if (messages.empty()) return done(ok_status());
  Channel& ch = **chp;
  if (fenced(ch)) return done(Impl::not_served(ch.name));
  const int64_t now = wall_ms();
  std::unique_lock lock(ch.mu);
  if (ch.deleted) {
    lock.unlock();
    return done(Impl::gone(ch));
  }
  append_held(ch, std::move(messages), WriteSet{}, &done, now);
}

void Broker::send(const ClientPtr& client, std::string_view channel, std::vector<Message> messages,
                  SendHandler done) {
  (void)client;
  if (auto st = impl_->check_open(); !st) return done(std::move(st));
  if (auto st = impl_->check_send(messages); !st) return done(std::move(st));
  impl_->append(channel, std::move(messages), std::move(done));
}

std::vector<Message> DeliveredBatch::to_messages() const {
  std::vector<Message> out;
  out.reserve(items.size());
  for (const auto& it : items) {
    const Message& src = it.body->message;
    Message m;
    m.data = src.data;
    m.format = src.format;
    Metadata md;
    md.reserve((src.metadata ? src.metadata->size() : 0) + 6);
    if (src.metadata) md = *src.metadata;
    md.emplace_back(meta::kId, fmt::format("{}/{}", channel, it.body->seq));
    md.emplace_back(meta::kChannel, channel);
    md.emplace_back(meta::kSequence, std::to_string(it.body->seq));
    md.emplace_back(meta::kAttempt, std::to_string(it.attempts));
    md.emplace_back(meta::kPublishedAt, std::to_string(it.body->publish_time_ms));
    if (!it.receipt.empty()) md.emplace_back(meta::kReceipt, it.receipt);
    m.metadata = std::move(md);
    out.push_back(std::move(m));
  }
  return out;
}

void Broker::receive(const ClientPtr& client, std::vector<std::string> channels,
                     ReceiveOptions options, ReceiveHandler done) {
  receive_batch(client, std::move(channels), options,
                [done = std::move(done)](Result<DeliveredBatch> r) mutable {
                  if (!r) return done(std::move(r).error());
                  done(r->to_messages());
                });
}

void Broker::receive_batch(const ClientPtr& client, std::vector<std::string> channels,
                           ReceiveOptions options, BatchHandler done) {
  auto& impl = *impl_;
  if (auto st = impl.check_open(); !st) return done(std::move(st).error());
  if (client->gone.load()) {
    return done(Error(ErrorCode::kFailedPrecondition, "the client is disconnected"));
  }
  if (channels.empty()) return done(invalid_argument("channels: the list is empty"));
  std::vector<std::shared_ptr<Channel>> chs;
  for (const auto& name : channels) {
    auto ch = impl.find_or_create(name, impl.opts.auto_create_channels);
    if (!ch) return done(std::move(ch).error());
    if (impl.fenced(**ch)) return done(Impl::not_served(name));
    chs.push_back(std::move(*ch));
  }
  if (!options.wait_for_room &&
      std::none_of(channels.begin(), channels.end(), [&](const std::string& name) {
        return impl.has_room(*client, client->options_for(name));
      })) {
    return done(Error(ErrorCode::kResourceExhausted,
                      fmt::format("receive: the client holds {} delivered messages that are not "
                                  "completed, abandoned or expired, the limit of "
                                  "max-unacked-per-connection; settle some first",
                                  impl.opts.max_unacked_per_client)));
  }
  uint32_t start;
  {
    std::lock_guard lock(client->mu);
    start = client->rotate++;
    for (auto& ch : chs) client->used.insert(ch->id);
  }
  auto w = std::make_shared<Waiter>();
  w->client = client;
  w->max = options.max_messages;

  // Immediate attempt, rotating the starting channel so none starves.
  const size_t n = chs.size();
  for (size_t k = 0; k < n; ++k) {
    Channel& ch = *chs[(start + k) % n];
    auto o = client->options_for(ch.name);
    WriteSet ws;
    Grant g;
    {
      std::lock_guard lock(ch.mu);
      if (ch.deleted) continue;
      Subscription* sub = impl.resolve_sub(*client, ch, o, ws);
      if (sub->has_available(ch.committed) && impl.has_room(*client, o)) {
        g = impl.acquire(ch, *sub, *client, impl.batch_for(*w, o), o, ws);
      }
      impl.submit(ch, std::move(ws));
    }
    if (!g.items.empty()) return done(impl.materialize(g));
  }
  if (options.timeout && options.timeout->count() <= 0) return done(DeliveredBatch{});

  w->done = std::move(done);
  for (auto& ch : chs) w->channels.push_back(ch);
  if (options.timeout) {
    std::weak_ptr<Waiter> weak = w;
    w->timer = impl.timers.schedule(steady_now() + *options.timeout, [&impl, weak] {
      auto p = weak.lock();
      if (!p || !p->claim()) return;
      p->done(DeliveredBatch{});
      impl.drop_waiter(*p);
    });
  }
  {
    std::lock_guard lock(client->mu);
    std::erase_if(client->waiters, [](const std::weak_ptr<Waiter>& p) { return p.expired(); });
    client->waiters.push_back(w);
  }
  // Register on every channel; a message that arrived since the first look is taken now. The
  // channels' lists own the waiter (the timer and the client only point to it): one registered
  // nowhere would be answered by nobody.
  bool without_room = false;
  size_t registered = 0;
  const Channel* deleted = nullptr;
  for (size_t k = 0; k < n; ++k) {
    Channel& ch = *chs[k];
    auto o = client->options_for(ch.name);
    WriteSet ws;
    Grant g;
    bool claimed = false;
    {
      std::lock_guard lock(ch.mu);
      if (w->claimed.load()) return;  // answered already (timeout, cancel, a deleted channel)
      if (ch.deleted) {
        deleted = &ch;
        continue;
      }
      Subscription* sub = impl.resolve_sub(*client, ch, o, ws);
      const bool room = impl.has_room(*client, o);
      without_room = without_room || !room;
      if (sub->has_available(ch.committed) && room) {
        if (!w->claim()) return;
        claimed = true;
        g = impl.acquire(ch, *sub, *client, impl.batch_for(*w, o), o, ws);
      } else {
        ch.waiters.push_back(w);
        ++registered;
      }
      impl.submit(ch, std::move(ws));
    }
    if (claimed) {
      w->timer.cancel();
      w->done(impl.materialize(g));
      impl.drop_waiter(*w);
      return;
    }
  }
  if (registered == 0) {
    // Every channel was deleted since it was looked up (as if deleted while waiting).
    if (w->claim()) {
      w->timer.cancel();
      w->done(deleted ? Impl::gone(*deleted)
                      : Error(ErrorCode::kNotFound,
                              fmt::format("channel '{}' was deleted", channels[0])));
    }
    return;
  }
  // Shutdown or disconnect may have raced the registration.
  if (impl.closing.load() || client->gone.load()) return impl.end_waiters(*client, true);
  // Room freed while the waiter was not yet registered everywhere would wake nobody.
  if (without_room && !w->claimed.load() &&
      client->unacked.load() < impl.opts.max_unacked_per_client) {
    impl.retry_waiters(*client);
  }
}

void Broker::cancel_receives(const ClientPtr& client) { impl_->end_waiters(*client, false); }

Status Broker::update_guest_configuration(const ClientPtr& client,
                                          const GuestConfiguration& config) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  for (size_t i = 0; i < config.channels.size(); ++i) {
    auto st = validate_channel_name(config.channels[i]);
    if (!st) return invalid_argument(fmt::format("channels[{}]: {}", i, st.error().message));
  }
  auto o = parse_extensions(config.extensions, impl.opts.max_batch_size);
  if (!o) return std::move(o).error();
  std::set<std::string> now(config.channels.begin(), config.channels.end());
  std::set<std::string> before;
  ConsumerOptions old_options;
  {
    std::lock_guard lock(client->mu);
    before = client->configured;
    old_options = client->options;
  }
  // Unsubscribe from channels no longer listed: ephemeral subscriptions go, durable ones stay.
  for (const auto& name : before) {
    if (now.count(name)) continue;
    auto chp = impl.lookup(name);
    if (!chp) continue;
    WriteSet ws;
    std::lock_guard lock(chp->mu);
    if (chp->deleted) continue;
    Subscription* sub = impl.find_sub_for(*client, *chp, old_options);
    if (sub && !sub->durable) impl.remove_sub(*chp, sub, ws);
    impl.submit(*chp, std::move(ws));
  }
  {
    std::lock_guard lock(client->mu);
    client->config = config;
    client->options = *o;
    client->configured = now;
  }
  // Subscribe now, so that "latest" means from this call on.
  for (const auto& name : config.channels) {
    // In a cluster, a channel this node released is led by another node, where the client's
    // operations on it are forwarded and served: it is listed, and nothing is subscribed here.
    {
      std::shared_lock lock(impl.map_mu);
      if (impl.released.contains(name)) continue;
    }
    // A channel deleted between the lookup and its lock is looked up (created) again: a
    // subscription written for the deleted one would outlive it in storage.
    std::shared_ptr<Channel> ch;
    for (int attempt = 0; !ch; ++attempt) {
      auto chp = impl.find_or_create(name, impl.opts.auto_create_channels);
      if (!chp) return std::move(chp).error();
      WriteSet ws;
      std::lock_guard lock((*chp)->mu);
      if ((*chp)->released->load()) break;  // released meanwhile: as above
      if ((*chp)->deleted) {
        if (attempt < 3) continue;
        return Error(ErrorCode::kNotFound,
                     fmt::format("channels: '{}' was deleted while subscribing", name));
      }
      impl.resolve_sub(*client, **chp, *o, ws);
      impl.submit(**chp, std::move(ws));
      ch = *chp;
    }
    if (!ch) continue;
    std::lock_guard lock(client->mu);
    client->used.insert(ch->id);
  }
  return ok_status();
}

GuestConfiguration Broker::guest_configuration(const ClientPtr& client) const {
  std::lock_guard lock(client->mu);
  return client->config;
}

void Broker::complete_message(const Message& m, SettleHandler done) {
  if (auto st = impl_->check_open(); !st) return done(std::move(st));
  impl_->settle(m, Impl::Settle::kComplete, {}, std::move(done));
}

void Broker::abandon_message(const Message& m, SettleHandler done) {
  if (auto st = impl_->check_open(); !st) return done(std::move(st));
  impl_->settle(m, Impl::Settle::kAbandon, {}, std::move(done));
}

namespace {
// Runs an asynchronous settle and waits for its reply.
template <typename Start>
Status wait_for(Start start) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  start([&promise](Status s) { promise.set_value(std::move(s)); });
  return future.get();
}
}  // namespace

Status Broker::complete_message(const Message& m) {
  return wait_for([&](SettleHandler done) { complete_message(m, std::move(done)); });
}

Status Broker::abandon_message(const Message& m) {
  return wait_for([&](SettleHandler done) { abandon_message(m, std::move(done)); });
}

Status Broker::extend_lease(const Message& m, std::chrono::milliseconds extension) {
  WITMQ_RETURN_IF_ERROR(impl_->check_open());
  // An extension stores nothing, so the reply comes before settle() returns.
  Status result;
  impl_->settle(m, Impl::Settle::kExtend, extension,
                [&result](Status s) { result = std::move(s); });
  return result;
}

void Broker::shutdown() {
  if (!impl_ || impl_->closing.exchange(true)) return;
  std::vector<std::shared_ptr<Client>> clients;
  {
    std::lock_guard lock(impl_->clients_mu);
    for (auto& [id, weak] : impl_->clients) {
      if (auto c = weak.lock()) clients.push_back(std::move(c));
    }
  }
  for (auto& c : clients) {
    impl_->end_waiters(*c, true);
    impl_->end_requests(*c, Error(ErrorCode::kUnavailable, "the broker is shutting down"));
  }
  impl_->timers.stop();
  // Cursors are written lazily (kCursorStride): a clean stop writes every one that lags, so a
  // restart redelivers nothing that was completed.
  std::vector<std::shared_ptr<Channel>> all;
  {
    std::shared_lock lock(impl_->map_mu);
    for (auto& [id, ch] : impl_->by_id) all.push_back(ch);
  }
  for (auto& ch : all) {
    WriteSet ws;
    std::lock_guard lock(ch->mu);
    if (ch->deleted) continue;
    for (auto& [name, sub] : ch->subs) {
      if (sub->durable && (sub->floor != sub->persisted_floor || sub->cursor_due)) {
        impl_->write_cursor(*sub, ws);
      }
    }
    impl_->submit(*ch, std::move(ws));
  }
  impl_->store->close();
  log::info("broker: stopped");
}

}  // namespace witmq::broker
