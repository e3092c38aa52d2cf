#include "net/forward.h"

#include <fmt/format.h>
#include <openssl/crypto.h>

#include <future>

namespace witmq::net {

std::string forward_token(std::string_view identity, std::string_view peer_token) {
  std::string token(kForwardTokenPrefix);
  token.append(identity).append("\n").append(peer_token);
  return token;
}

Result<std::string> check_forward_token(std::string_view token, std::string_view peer_token) {
  if (peer_token.empty()) {
    return Error(ErrorCode::kPermissionDenied,
                 "connect: a forwarding token was given, but this node has no cluster-peer-token: "
                 "it accepts no forwarded connections");
  }
  if (!token.starts_with(kForwardTokenPrefix)) {
    return Error(ErrorCode::kPermissionDenied, "connect: malformed forwarding token");
  }
  std::string_view rest = token.substr(kForwardTokenPrefix.size());
  const size_t newline = rest.find('\n');
  if (newline == std::string_view::npos) {
    return Error(ErrorCode::kPermissionDenied, "connect: malformed forwarding token");
  }
  const std::string_view secret = rest.substr(newline + 1);
  if (secret.size() != peer_token.size() ||
      CRYPTO_memcmp(secret.data(), peer_token.data(), secret.size()) != 0) {
    return Error(ErrorCode::kPermissionDenied,
                 "connect: the forwarding token's cluster secret does not match this node's "
                 "cluster-peer-token");
  }
  return std::string(rest.substr(0, newline));
}

bool Relay::served_here(const std::string& channel) {
  bool here = false;
  // kKnownOnly answers at once, on this thread.
  forwarder_->locate(
      channel, Locate::kKnownOnly,
      [&here](Result<std::optional<ForwardTarget>> where) { here = where.ok() && !*where; });
  return here;
}

Result<std::optional<Frame>> Relay::call(const std::string& channel, Locate mode, Frame request,
                                         const std::string& identity) {
  std::promise<Result<std::optional<ForwardTarget>>> located;
  auto where_future = located.get_future();
  forwarder_->locate(channel, mode, [&located](Result<std::optional<ForwardTarget>> where) {
    located.set_value(std::move(where));
  });
  Result<std::optional<ForwardTarget>> where = where_future.get();
  if (!where && where.error().code == ErrorCode::kNotFound) return std::optional<Frame>();
  if (!where) return std::move(where).error();
  if (!*where) return std::optional<Frame>();
  const ForwardTarget target = **where;
  const std::string key = target.node + "\n" + target.address;
  std::shared_ptr<ForwardLink> link;
  {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(failing_, [now](const auto& f) { return f.second <= now; });
    if (failing_.contains(key)) {
      return Error(
          ErrorCode::kUnavailable,
          fmt::format("channel '{}' (led by node {} at {}): not relayed, since an "
                      "earlier request to that node was not answered within "
                      "cluster-forward-timeout-ms ({} ms); try again",
                      channel, target.node, target.address, forwarder_->timeout().count()));
    }
    for (auto it = links_.begin(); it != links_.end();) {
      it = it->second->usable() ? std::next(it) : links_.erase(it);
    }
    auto& slot = links_[{key, identity}];
    if (!slot) slot = forwarder_->link(target, "", identity);
    link = slot;
  }
  // Shared with the link's callback, which may run after a timeout of ours.
  auto answered = std::make_shared<std::promise<Result<Frame>>>();
  auto reply_future = answered->get_future();
  link->request(std::move(request),
                [answered](Result<Frame> reply) { answered->set_value(std::move(reply)); });
  Result<Frame> reply = reply_future.get();
  if (!reply) {
    if (reply.error().code == ErrorCode::kUnavailable) {
      std::lock_guard lock(mu_);
      failing_[key] = std::chrono::steady_clock::now() + forwarder_->timeout();
    }
    return Error(reply.error().code,
                 fmt::format("channel '{}' (led by node {} at {}): {}", channel, target.node,
                             target.address, reply.error().message));
  }
  if (auto* e = std::get_if<ErrorReply>(&reply->body)) return std::move(e->error);
  return std::optional<Frame>(std::move(*reply));
}

}  // namespace witmq::net
