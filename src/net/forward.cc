#include "net/forward.h"

#include <openssl/crypto.h>

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

}  // namespace witmq::net
