#include "daemon/access_warning.h"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "common/log.h"

namespace witmq::daemon {

namespace {

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "::1" || host == "localhost" || host.starts_with("127.");
}

struct Listener {
  const char* key;
  std::string host;
  uint16_t port;
};

}  // namespace

void warn_about_anonymous(const Config& config) {
  if (!config.auth.anonymous) {
    log::info("authentication: anonymous access is off; {} identities configured",
              config.auth.identities.size());
    return;
  }
  std::vector<Listener> listeners;
  if (config.listen_enabled) {
    listeners.push_back({"listen", config.listen_host, config.listen_port});
  }
  if (config.tls_listen_enabled) {
    listeners.push_back({"tls-listen", config.server.tls_host, config.server.tls_port});
  }
  if (config.http.enabled) listeners.push_back({"http-listen", config.http.host, config.http.port});
  if (config.https_listen_enabled) {
    listeners.push_back({"https-listen", config.http.tls_host, config.http.tls_port});
  }
  std::string where;
  for (const auto& l : listeners) {
    where += fmt::format("{}{} {}:{}", where.empty() ? "" : ", ", l.key, l.host, l.port);
  }
  const auth::Grants& g = config.auth.anonymous->grants;
  auto list = [](const std::vector<auth::ChannelPattern>& ps) {
    std::string out;
    for (const auto& p : ps) out += fmt::format("{}{}", out.empty() ? "" : " ", p.text());
    return out.empty() ? std::string("-") : out;
  };
  log::warn(
      "ANONYMOUS ACCESS IS ON: any client that reaches {} needs no token and may send to [{}], "
      "receive from [{}], manage [{}]{}. Set \"anonymous\": {{\"enabled\": false}} and add "
      "identities before exposing this server (docs/SECURITY.md).",
      where.empty() ? std::string("a listener") : where, list(g.send), list(g.receive),
      list(g.manage), g.monitor ? ", and read all figures" : "");
  for (const auto& l : listeners) {
    if (is_loopback(l.host)) continue;
    log::warn(
        "ANONYMOUS ACCESS IS ON and the listener {} {} is not a loopback address: every "
        "host that can reach it has these grants",
        l.key, l.host);
  }
}

}  // namespace witmq::daemon
