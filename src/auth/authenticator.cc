#include "auth/authenticator.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

namespace witmq::auth {

using nlohmann::json;

namespace {

constexpr uint32_t kMaxConnectionsLimit = 1'000'000;

Status check_members(const json& object, std::string_view where,
                     std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (auto k : known) list += fmt::format("{}{}", list.empty() ? "" : ", ", k);
      return invalid_argument(fmt::format("{}: unknown field '{}', expected one of {}", where, key, list));
    }
  }
  return ok_status();
}

Status read_max_connections(const json& object, std::string_view where, uint32_t& out) {
  auto it = object.find("max-connections");
  if (it == object.end()) return ok_status();
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() > kMaxConnectionsLimit) {
    return invalid_argument(fmt::format(
        "{}.max-connections: {} is not an integer in 0..{} (0 = only the server's limit)", where,
        it->dump(), kMaxConnectionsLimit));
  }
  out = static_cast<uint32_t>(it->get<int64_t>());
  return ok_status();
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '@';
}

}  // namespace

Result<AuthConfig> auth_config_from_json(const json& anonymous, const json& identities) {
  AuthConfig out;
  if (!anonymous.is_object()) {
    return invalid_argument(fmt::format("anonymous: is {}, expected an object such as "
                                        "{{\"enabled\": false}}",
                                        anonymous.type_name()));
  }
  WITMQ_RETURN_IF_ERROR(check_members(
      anonymous, "anonymous",
      {"enabled", "send", "receive", "manage", "monitor", "max-connections"}));
  auto enabled = anonymous.find("enabled");
  if (enabled == anonymous.end() || !enabled->is_boolean()) {
    return invalid_argument(
        "anonymous.enabled: is required, true or false: whether clients without a token are "
        "let in");
  }
  if (enabled->get<bool>()) {
    Identity a;
    a.name = "anonymous";
    a.anonymous = true;
    WITMQ_RETURN_IF_ERROR(read_grants(anonymous, "anonymous", true, a.grants));
    WITMQ_RETURN_IF_ERROR(read_max_connections(anonymous, "anonymous", a.max_connections));
    out.anonymous = std::move(a);
  }

  if (!identities.is_array()) {
    return invalid_argument(
        fmt::format("identities: is {}, expected an array of objects", identities.type_name()));
  }
  std::set<std::string> names, cns;
  for (size_t i = 0; i < identities.size(); ++i) {
    const json& e = identities[i];
    std::string where = fmt::format("identities[{}]", i);
    if (!e.is_object()) {
      return invalid_argument(fmt::format("{}: is {}, expected an object", where, e.type_name()));
    }
    Identity id;
    auto name = e.find("name");
    if (name == e.end() || !name->is_string()) {
      return invalid_argument(fmt::format("{}.name: is required, a string", where));
    }
    id.name = name->get<std::string>();
    if (id.name.empty() || id.name.size() > 64 ||
        !std::all_of(id.name.begin(), id.name.end(), name_char)) {
      return invalid_argument(fmt::format(
          "{}.name: '{}' is not 1 to 64 of A-Z a-z 0-9 . _ - @", where, id.name));
    }
    where = fmt::format("identities[{}] ('{}')", i, id.name);
    if (id.name == "anonymous") {
      return invalid_argument(
          fmt::format("{}.name: 'anonymous' is reserved; the anonymous key configures it", where));
    }
    if (!names.insert(id.name).second) {
      return invalid_argument(fmt::format("{}.name: a second identity has this name", where));
    }
    WITMQ_RETURN_IF_ERROR(check_members(e, where,
                                        {"name", "token-sha256", "certificate-cn",
                                         "max-connections", "send", "receive", "manage",
                                         "monitor"}));
    if (auto t = e.find("token-sha256"); t != e.end()) {
      if (!t->is_string()) {
        return invalid_argument(fmt::format("{}.token-sha256: is {}, expected a string of 64 hex "
                                            "digits",
                                            where, t->type_name()));
      }
      auto digest = digest_from_hex(t->get<std::string>());
      if (!digest) {
        return invalid_argument(
            fmt::format("{}.token-sha256: {}", where, digest.error().message));
      }
      for (const Identity& other : out.identities) {
        if (other.token && digests_equal(*other.token, *digest)) {
          return invalid_argument(fmt::format(
              "{}.token-sha256: is also identity '{}''s: each token names one identity", where,
              other.name));
        }
      }
      id.token = *digest;
    }
    if (auto c = e.find("certificate-cn"); c != e.end()) {
      if (!c->is_string() || c->get<std::string>().empty()) {
        return invalid_argument(
            fmt::format("{}.certificate-cn: expected a non-empty string, the CN of the client "
                        "certificate",
                        where));
      }
      id.certificate_cn = c->get<std::string>();
      if (!cns.insert(id.certificate_cn).second) {
        return invalid_argument(fmt::format(
            "{}.certificate-cn: '{}' is also another identity's", where, id.certificate_cn));
      }
    }
    if (!id.token && id.certificate_cn.empty()) {
      return invalid_argument(fmt::format(
          "{}: has neither token-sha256 nor certificate-cn: nothing could authenticate it",
          where));
    }
    WITMQ_RETURN_IF_ERROR(read_grants(e, where, true, id.grants));
    WITMQ_RETURN_IF_ERROR(read_max_connections(e, where, id.max_connections));
    out.identities.push_back(std::move(id));
  }
  return out;
}

// ---- Authenticator -----------------------------------------------------------------------------

std::shared_ptr<const Authenticator::State> Authenticator::make_state(AuthConfig config) {
  auto s = std::make_shared<State>();
  for (const Identity& id : config.identities) {
    s->identities.push_back(std::make_shared<const Identity>(id));
  }
  if (config.anonymous) s->anonymous = std::make_shared<const Identity>(*config.anonymous);
  s->config = std::move(config);
  return s;
}

Authenticator::Authenticator(AuthConfig config) : state_(make_state(std::move(config))) {}

void Authenticator::replace(AuthConfig config) {
  auto next = make_state(std::move(config));
  {
    std::lock_guard lock(mu_);
    state_ = std::move(next);
    generation_.fetch_add(1, std::memory_order_release);
  }
  std::lock_guard lock(listeners_mu_);
  for (const auto& [id, f] : listeners_) f();
}

uint64_t Authenticator::add_replace_listener(std::function<void()> f) {
  std::lock_guard lock(listeners_mu_);
  const uint64_t id = next_listener_++;
  listeners_.emplace_back(id, std::move(f));
  return id;
}

void Authenticator::remove_replace_listener(uint64_t id) {
  std::lock_guard lock(listeners_mu_);
  std::erase_if(listeners_, [id](const auto& l) { return l.first == id; });
}

bool Authenticator::anonymous_enabled() const {
  std::lock_guard lock(mu_);
  return state_->anonymous != nullptr;
}

std::optional<Grants> Authenticator::anonymous_grants() const {
  std::lock_guard lock(mu_);
  if (!state_->anonymous) return std::nullopt;
  return state_->anonymous->grants;
}

std::vector<std::pair<std::string, uint32_t>> Authenticator::connections() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, uint32_t>> out(connections_.begin(), connections_.end());
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::unique_ptr<Access>> Authenticator::authenticate(
    const std::optional<std::string>& token, const std::optional<std::string>& certificate_cn,
    bool counted) {
  std::shared_ptr<const State> state;
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    state = state_;
    generation = generation_.load(std::memory_order_acquire);
  }
  std::shared_ptr<const Identity> found;
  Access::Credential credential = Access::Credential::kAnonymous;
  // Without identities there is nothing a token could name: it is ignored, as on a server
  // without authentication.
  if (token && !state->identities.empty()) {
    const Digest digest = sha256(*token);
    // Every identity is compared, so the time taken does not tell which one matched.
    for (const auto& id : state->identities) {
      if (id->token && digests_equal(*id->token, digest)) found = id;
    }
    if (!found) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return Error(ErrorCode::kPermissionDenied,
                   "the token matches no identity (a token is checked against the SHA-256 "
                   "digests of the identities key)");
    }
    credential = Access::Credential::kToken;
  } else if (certificate_cn && !certificate_cn->empty()) {
    for (const auto& id : state->identities) {
      if (id->certificate_cn == *certificate_cn) found = id;
    }
    if (found) credential = Access::Credential::kCertificate;
  }
  if (!found) {
    if (!state->anonymous) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      if (certificate_cn) {
        return Error(ErrorCode::kPermissionDenied,
                     fmt::format("the client certificate's CN '{}' names no identity, no token "
                                 "was given, and anonymous access is off",
                                 *certificate_cn));
      }
      return Error(ErrorCode::kPermissionDenied,
                   "a token is required: anonymous access is off on this server");
    }
    found = state->anonymous;
  }
  if (counted) {
    std::lock_guard lock(mu_);
    uint32_t& n = connections_[found->name];
    if (found->max_connections != 0 && n >= found->max_connections) {
      if (n == 0) connections_.erase(found->name);
      refused_.fetch_add(1, std::memory_order_relaxed);
      return Error(ErrorCode::kResourceExhausted,
                   fmt::format("identity '{}' has {} connections open, its max-connections",
                               found->name, found->max_connections));
    }
    ++n;
  }
  return std::unique_ptr<Access>(
      new Access(*this, std::move(found), credential, counted, generation));
}

Result<std::unique_ptr<Access>> Authenticator::on_behalf_of(std::string_view name) {
  std::shared_ptr<const State> state;
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    state = state_;
    generation = generation_.load(std::memory_order_acquire);
  }
  std::shared_ptr<const Identity> found;
  if (state->anonymous && name == state->anonymous->name) found = state->anonymous;
  for (const auto& id : state->identities) {
    if (id->name == name) found = id;
  }
  if (!found) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return Error(ErrorCode::kPermissionDenied,
                 fmt::format("a forwarded connection acts on behalf of identity '{}', which this "
                             "node does not know (every node needs the same identities)",
                             name.substr(0, 200)));
  }
  return std::unique_ptr<Access>(
      new Access(*this, std::move(found), Access::Credential::kForwarded, false, generation));
}

void Authenticator::release(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = connections_.find(name);
  if (it == connections_.end()) return;
  if (--it->second == 0) connections_.erase(it);
}

// ---- Access ------------------------------------------------------------------------------------

Access::Access(Authenticator& auth, std::shared_ptr<const Identity> identity,
               Credential credential, bool counted, uint64_t generation)
    : auth_(auth),
      name_(identity->name),
      anonymous_(identity->anonymous),
      credential_(credential),
      counted_(counted),
      identity_(std::move(identity)),
      generation_(generation) {}

Access::~Access() {
  if (counted_) auth_.release(name_);
}

const Identity* Access::current() {
  const uint64_t g = auth_.generation_.load(std::memory_order_acquire);
  if (g == generation_ || !identity_) return identity_.get();
  std::shared_ptr<const Authenticator::State> state;
  {
    std::lock_guard lock(auth_.mu_);
    state = auth_.state_;
    generation_ = auth_.generation_.load(std::memory_order_acquire);
  }
  const Identity& before = *identity_;
  std::shared_ptr<const Identity> next;
  if (credential_ == Credential::kAnonymous) {
    next = state->anonymous;
  } else if (credential_ == Credential::kForwarded) {
    // The entry node proved the credential; here the identity is known by its name.
    if (anonymous_) next = state->anonymous;
    for (const auto& id : state->identities) {
      if (!anonymous_ && id->name == name_) next = id;
    }
  } else {
    for (const auto& id : state->identities) {
      if (id->name != name_) continue;
      const bool same = credential_ == Credential::kToken
                            ? id->token && before.token && digests_equal(*id->token, *before.token)
                            : id->certificate_cn == before.certificate_cn;
      if (same) next = id;
    }
  }
  identity_ = std::move(next);
  for (auto& a : allowed_) a.clear();
  return identity_.get();
}

Error Access::revoked_error() const {
  if (anonymous_) {
    return Error(ErrorCode::kPermissionDenied,
                 "anonymous access was switched off by a configuration reload");
  }
  return Error(ErrorCode::kPermissionDenied,
               fmt::format("identity '{}' was removed or its credential changed by a "
                           "configuration reload",
                           name_));
}

bool Access::revoked() {
  std::lock_guard lock(mu_);
  return current() == nullptr;
}

bool Access::allows(Action action, std::string_view channel) {
  std::lock_guard lock(mu_);
  const Identity* id = current();
  if (!id) return false;
  std::string& last = allowed_[static_cast<int>(action)];
  if (!last.empty() && last == channel) return true;
  if (!id->grants.allows(action, channel)) return false;
  last.assign(channel);
  return true;
}

Status Access::check(Action action, std::string_view channel) {
  if (allows(action, channel)) return ok_status();
  auth_.denied_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  const Identity* id = identity_.get();
  if (!id) return revoked_error();
  return check_grants(id->grants, action, channel,
                      anonymous_ ? std::string("anonymous") : fmt::format("identity '{}'", name_));
}

bool Access::allows_any(std::string_view channel) {
  std::lock_guard lock(mu_);
  const Identity* id = current();
  return id && id->grants.allows_any(channel);
}

bool Access::monitor() {
  std::lock_guard lock(mu_);
  const Identity* id = current();
  return id && id->grants.monitor;
}

bool Access::manages_everything() {
  std::lock_guard lock(mu_);
  const Identity* id = current();
  return id && id->grants.manages_everything();
}

Status Access::check_monitor(std::string_view what) {
  std::lock_guard lock(mu_);
  const Identity* id = current();
  if (!id) {
    auth_.denied_.fetch_add(1, std::memory_order_relaxed);
    return revoked_error();
  }
  if (id->grants.monitor) return ok_status();
  auth_.denied_.fetch_add(1, std::memory_order_relaxed);
  return Error(ErrorCode::kPermissionDenied,
               fmt::format("identity '{}' may not read {}: that needs the monitor grant", name_,
                           what));
}

}  // namespace witmq::auth
