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
  std::shared_ptr<ForwardLink> link;
  {
    std::lock_guard lock(mu_);
    for (auto it = links_.begin(); it != links_.end();) {
      it = it->second->usable() ? std::next(it) : links_.erase(it);
    }
    auto& slot = links_[{target.node + "\n" + target.address, identity}];
    if (!slot) slot = forwarder_->link(target, "", identity);
    link = slot;
  }
  std::promise<Result<Frame>> answered;
  auto reply_future = answered.get_future();
  link->request(std::move(request),
                [&answered](Result<Frame> reply) { answered.set_value(std::move(reply)); });
  Result<Frame> reply = reply_future.get();
  if (!reply) {
    return Error(reply.error().code,
                 fmt::format("channel '{}' (led by node {} at {}): {}", channel, target.node,
                             target.address, reply.error().message));
  }
  if (auto* e = std::get_if<ErrorReply>(&reply->body)) return std::move(e->error);
  return std::optional<Frame>(std::move(*reply));
}

}  // namespace witmq::net
