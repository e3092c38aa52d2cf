// Request-reply: Broker::request, Broker::reply and the per-client inboxes behind them.
//
// A request is an ordinary message of its channel plus two reserved entries: witmq-reply-to, the
// requester's inbox (a random token, one per client, made at its first request), and
// witmq-correlation-id (random per request). The inbox and the replies live only in memory, in
// the client's `pending` map, and go with the client. A reply names its request by those two
// values, so knowing them is the only permission a reply needs: both are unguessable, and a
// client learns them only from a request delivered to it.
#include "broker/broker_impl.h"

namespace witmq::broker {
namespace {

// 64 random bits as 16 hex digits (see secure_random_u64: outputs seen predict no others).
std::string random_token() { return fmt::format("{:016x}", secure_random_u64()); }

// What a reply holds in memory, as the gathering bounds count it.
size_t reply_size(const Message& m) {
  size_t n = m.data.size();
  if (m.metadata) {
    for (const auto& [k, v] : *m.metadata) n += k.size() + v.size();
  }
  return n;
}

}  // namespace

void Broker::Impl::register_request(const ClientPtr& cp, const std::shared_ptr<PendingRequest>& p,
                                    std::string_view channel, std::chrono::milliseconds timeout,
                                    std::string& inbox, std::string& correlation) {
  auto& impl = *this;
  Client& c = *cp;
  if (c.inbox.empty()) {
    c.inbox = impl.opts.inbox_prefix + random_token() + random_token();
    std::lock_guard inboxes_lock(impl.inboxes_mu);
    impl.inboxes[c.inbox] = cp;
  }
  inbox = c.inbox;
  do correlation = random_token();
  while (c.pending.count(correlation));
  c.pending.emplace(correlation, p);
  std::weak_ptr<Client> weak = cp;
  p->timer = impl.timers.schedule(
      steady_now() + timeout, [&impl, weak, correlation, timeout, channel = std::string(channel)] {
        auto client = weak.lock();
        if (!client) return;
        std::shared_ptr<PendingRequest> timed_out;
        {
          std::lock_guard lock(client->rr_mu);
          auto it = client->pending.find(correlation);
          if (it == client->pending.end()) return;
          timed_out = std::move(it->second);
          client->pending.erase(it);
          client->reply_bytes -= timed_out->bytes;
        }
        if (!timed_out->replies.empty()) return timed_out->done(std::move(timed_out->replies));
        impl.requests_timed_out.fetch_add(1, std::memory_order_relaxed);
        timed_out->done(
            Error(ErrorCode::kTimeout, fmt::format("request: no reply on channel '{}' within {} ms",
                                                   channel, timeout.count())));
      });
}

void Broker::Impl::end_requests(Client& c, const Error& why) {
  std::unordered_map<std::string, std::shared_ptr<PendingRequest>> pending;
  std::string inbox;
  {
    std::lock_guard lock(c.rr_mu);
    pending.swap(c.pending);
    inbox.swap(c.inbox);
    c.reply_bytes = 0;
  }
  if (!inbox.empty()) {
    std::lock_guard lock(inboxes_mu);
    inboxes.erase(inbox);
  }
  for (auto& [id, p] : pending) {
    p->timer.cancel();
    p->done(why);
  }
}

void Broker::request(const ClientPtr& client, std::string_view channel, Message message,
                     RequestOptions options, RequestHandler done) {
  auto& impl = *impl_;
  if (auto st = impl.check_open(); !st) return done(std::move(st).error());
  if (options.expected_replies < 1 || options.expected_replies > kMaxExpectedReplies) {
    return done(invalid_argument(fmt::format("request: expected-replies: {} is out of range 1..{}",
                                             options.expected_replies, kMaxExpectedReplies)));
  }
  const auto max_timeout = impl.opts.max_request_timeout;
  if (options.timeout.count() < 1 || options.timeout > max_timeout) {
    return done(invalid_argument(fmt::format("request: timeout-ms: {} is out of range 1..{}",
                                             options.timeout.count(), max_timeout.count())));
  }
  std::vector<Message> batch;
  batch.push_back(std::move(message));
  if (auto st = impl.check_send(batch); !st) return done(std::move(st).error());

  auto p = std::make_shared<PendingRequest>();
  p->expected = options.expected_replies;
  p->max_bytes = options.max_reply_bytes;
  p->done = std::move(done);
  std::string inbox, correlation;
  std::optional<Error> refused;
  {
    std::lock_guard lock(client->rr_mu);
    if (client->gone.load()) {
      refused = Error(ErrorCode::kFailedPrecondition, "the client is disconnected");
    } else if (client->pending.size() >= impl.opts.max_pending_requests_per_client) {
      refused =
          Error(ErrorCode::kResourceExhausted,
                fmt::format("request: the client has {} requests waiting for replies, the limit of "
                            "max-pending-requests-per-connection; wait for some to end first",
                            client->pending.size()));
    } else {
      impl.register_request(client, p, channel, options.timeout, inbox, correlation);
    }
  }
  if (refused) return p->done(std::move(*refused));
  // A shutdown that listed the clients before this one registered would leave it waiting on a
  // stopped timer.
  if (impl.closing.load()) {
    return impl.end_requests(*client,
                             Error(ErrorCode::kUnavailable, "the broker is shutting down"));
  }

  Message& m = batch.front();
  if (!m.metadata) m.metadata.emplace();
  m.metadata->emplace_back(meta::kReplyTo, inbox);
  m.metadata->emplace_back(meta::kCorrelationId, correlation);
  std::weak_ptr<Client> weak = client;
  impl.append(channel, std::move(batch), [weak, correlation](Status st) {
    if (st) return;
    auto c = weak.lock();
    if (!c) return;
    std::shared_ptr<PendingRequest> failed;
    {
      std::lock_guard lock(c->rr_mu);
      auto it = c->pending.find(correlation);
      if (it == c->pending.end()) return;
      failed = std::move(it->second);
      c->pending.erase(it);
      c->reply_bytes -= failed->bytes;
    }
    failed->timer.cancel();
    failed->done(std::move(st).error());
  });
}

void Broker::cancel_requests(const ClientPtr& client) {
  impl_->end_requests(
      *client, Error(ErrorCode::kUnavailable, "the request was cancelled: the server stops"));
}

Status Broker::reply(const Message& request, Message reply) {
  const std::string* to = find_metadata(request, meta::kReplyTo);
  const std::string* correlation = find_metadata(request, meta::kCorrelationId);
  if (!to || !correlation) {
    return invalid_argument(fmt::format(
        "reply: the message has no {} metadata: only a message sent by request can be replied to",
        !to ? meta::kReplyTo : meta::kCorrelationId));
  }
  return reply_to(*to, *correlation, std::move(reply));
}

Status Broker::reply_to(std::string_view reply_to, std::string_view correlation_id, Message reply) {
  auto& impl = *impl_;
  WITMQ_RETURN_IF_ERROR(impl.check_open());
  if (reply_to.empty() || reply_to.size() > kMaxReplyAddressBytes) {
    return invalid_argument(fmt::format("reply: {}: {} bytes, expected 1..{}", meta::kReplyTo,
                                        reply_to.size(), kMaxReplyAddressBytes));
  }
  if (correlation_id.empty() || correlation_id.size() > kMaxReplyAddressBytes) {
    return invalid_argument(fmt::format("reply: {}: {} bytes, expected 1..{}", meta::kCorrelationId,
                                        correlation_id.size(), kMaxReplyAddressBytes));
  }
  std::vector<Message> batch;
  batch.push_back(std::move(reply));
  if (auto st = impl.check_send(batch); !st) {
    return Error(st.error().code, fmt::format("reply: {}", st.error().message));
  }
  Message& m = batch.front();
  if (!m.metadata) m.metadata.emplace();
  m.metadata->emplace_back(meta::kCorrelationId, std::string(correlation_id));

  ClientPtr c;
  {
    std::lock_guard lock(impl.inboxes_mu);
    auto it = impl.inboxes.find(std::string(reply_to));
    if (it != impl.inboxes.end()) c = it->second.lock();
  }
  std::shared_ptr<PendingRequest> answered;
  bool delivered = false;
  if (c) {
    std::lock_guard lock(c->rr_mu);
    auto it = c->pending.find(std::string(correlation_id));
    // The inbox may have been given up (the client left) and the token is never reused, so a
    // found request is this inbox's.
    if (it != c->pending.end() && c->inbox == reply_to) {
      PendingRequest& p = *it->second;
      const size_t size = reply_size(m);
      const bool fits = p.max_bytes == 0 || p.bytes + size <= p.max_bytes || p.replies.empty();
      // A client's waiting requests together hold at most kMaxGatheredReplyBytesPerClient: a
      // reply past it is dropped, and its request gathers no more.
      const bool room = c->reply_bytes + size <= kMaxGatheredReplyBytesPerClient;
      if (fits && room) {
        p.replies.push_back(std::move(m));
        p.bytes += size;
        c->reply_bytes += size;
        delivered = true;
      }
      // Full: the expected count, or no room for this reply in the request's own bound (it is
      // answered with what it has; the reply that did not fit is dropped).
      if (p.replies.size() >= p.expected || (!fits && !p.replies.empty())) {
        answered = std::move(it->second);
        c->pending.erase(it);
        c->reply_bytes -= answered->bytes;
      }
    }
  }
  if (!delivered) impl.replies_dropped.fetch_add(1, std::memory_order_relaxed);
  if (answered) {
    answered->timer.cancel();
    answered->done(std::move(answered->replies));
  }
  return ok_status();
}

void Broker::count_dropped_reply() {
  impl_->replies_dropped.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace witmq::broker
