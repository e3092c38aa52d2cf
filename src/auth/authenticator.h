// Who a client is and what it may do, for the protocol server, the HTTP side and the guests.
//
// The configuration names identities, each with a token (stored as its SHA-256), a client
// certificate CN, or both, its grants and its own connection limit; and says whether clients
// without credentials are let in, as the anonymous identity, with which grants. Nothing is
// allowed that no grant allows.
//
// A reload replaces the configuration at once: every connection re-reads its identity on its
// next check, and one whose identity is gone or whose credential changed is refused from then on.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "auth/grants.h"
#include "auth/token.h"
#include "common/result.h"

namespace witmq::auth {

struct Identity {
  std::string name;  // "anonymous" for the anonymous identity
  bool anonymous = false;
  std::optional<Digest> token;   // SHA-256 of its token
  std::string certificate_cn;    // the CN of a verified client certificate; "" = none
  uint32_t max_connections = 0;  // protocol connections at once; 0 = only the server's limit
  Grants grants;
  bool operator==(const Identity&) const = default;
};

struct AuthConfig {
  std::optional<Identity> anonymous;  // set when anonymous access is on
  std::vector<Identity> identities;
  bool operator==(const AuthConfig&) const = default;
};

// The config keys "anonymous" ({"enabled": b, "send": [...], "receive": [...], "manage": [...],
// "monitor": b, "max-connections": n}) and "identities" ([{"name": ..., "token-sha256": ...,
// "certificate-cn": ..., "max-connections": n, "send": [...], ...}]). Errors name the key, the
// entry and the field.
Result<AuthConfig> auth_config_from_json(const nlohmann::json& anonymous,
                                         const nlohmann::json& identities);

class Authenticator;

// A client's identity while it is connected: one per protocol connection or HTTP request. A
// counted Access holds one of its identity's max-connections until it is destroyed. Thread-safe
// (a connection checks on its strand and in admin calls on the admin pool).
class Access {
 public:
  ~Access();
  Access(const Access&) = delete;
  Access& operator=(const Access&) = delete;

  const std::string& name() const { return name_; }
  bool anonymous() const { return anonymous_; }

  // kPermissionDenied naming the identity, the action and the channel, e.g. "identity 'billing'
  // may not send to channel 'orders' (its send grants: billing.*)".
  Status check(Action action, std::string_view channel);
  bool allows(Action action, std::string_view channel);
  bool allows_any(std::string_view channel);
  bool monitor();
  bool manages_everything();
  // kPermissionDenied for `what` unless monitor is granted.
  Status check_monitor(std::string_view what);
  // Set once a reload removed the identity or changed its credential; every check then fails.
  bool revoked();

 private:
  friend class Authenticator;
  // kForwarded: a cluster node's forwarded connection acting on behalf of the identity
  // (Authenticator::on_behalf_of).
  enum class Credential { kToken, kCertificate, kAnonymous, kForwarded };
  // `generation` is the Authenticator's when `identity` was read.
  Access(Authenticator& auth, std::shared_ptr<const Identity> identity, Credential credential,
         bool counted, uint64_t generation);
  // Re-reads the identity when the configuration changed since the last check. Holds mu_.
  const Identity* current();
  Error revoked_error() const;

  Authenticator& auth_;
  const std::string name_;
  const bool anonymous_;
  const Credential credential_;
  const bool counted_;
  std::mutex mu_;                             // guards the members below
  std::shared_ptr<const Identity> identity_;  // null once revoked
  uint64_t generation_;
  // The last channel each action was allowed on: most connections use one or two channels.
  std::string allowed_[3];
};

class Authenticator {
 public:
  explicit Authenticator(AuthConfig config);

  // Takes effect for every Access at its next check; then runs the replace listeners, so that
  // what a revoked identity holds open (waiting receives, streams, connections) ends now.
  void replace(AuthConfig config);

  // `f` runs after every replace(), on the thread that called it, with no lock of the
  // Authenticator held but the listeners' own (so a listener may call Access and Authenticator
  // functions). Returns the id that remove_replace_listener() takes; remove a listener before
  // what it captures is destroyed.
  uint64_t add_replace_listener(std::function<void()> f);
  // Once this returns, the listener is not running and never runs again.
  void remove_replace_listener(uint64_t id);

  // A client presenting `token` (connect's token, an HTTP bearer token) and/or a verified client
  // certificate with `certificate_cn`. A token must match an identity's (when no identity is
  // configured, tokens are ignored); without one, the certificate's CN picks the identity;
  // without either, the client is anonymous if that is on.
  // `counted` (protocol connections) checks and takes one of the identity's max-connections.
  // Errors are kPermissionDenied (kResourceExhausted at max-connections) and never contain the
  // token.
  Result<std::unique_ptr<Access>> authenticate(const std::optional<std::string>& token,
                                               const std::optional<std::string>& certificate_cn,
                                               bool counted);

  // The identity called `name` ("anonymous" when anonymous access is on), for a connection
  // that has already proved it may act on behalf of others: a cluster node forwarding its
  // client's requests (docs/CLUSTERING.md, "Forwarding"). Not counted against max-connections
  // (the entry node counts the client's connection). kPermissionDenied when no identity has that
  // name.
  Result<std::unique_ptr<Access>> on_behalf_of(std::string_view name);

  bool anonymous_enabled() const;
  std::optional<Grants> anonymous_grants() const;
  // Identities with at least one counted connection now, and how many.
  std::vector<std::pair<std::string, uint32_t>> connections() const;
  // Failed authentications (connects and HTTP requests refused) and requests an identity's
  // grants refused, since start.
  uint64_t refused_total() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t denied_total() const { return denied_.load(std::memory_order_relaxed); }

 private:
  friend class Access;
  struct State {
    AuthConfig config;
    std::vector<std::shared_ptr<const Identity>> identities;
    std::shared_ptr<const Identity> anonymous;
  };
  static std::shared_ptr<const State> make_state(AuthConfig config);
  void release(const std::string& name);

  std::mutex listeners_mu_;  // guards listeners_; held while they run
  std::vector<std::pair<uint64_t, std::function<void()>>> listeners_;
  uint64_t next_listener_ = 1;
  mutable std::mutex mu_;  // guards state_ and connections_
  std::shared_ptr<const State> state_;
  std::atomic<uint64_t> generation_{1};
  std::atomic<uint64_t> refused_{0}, denied_{0};
  std::unordered_map<std::string, uint32_t> connections_;
};

}  // namespace witmq::auth
