#include "auth/grants.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/message.h"

namespace witmq::auth {

using nlohmann::json;

std::string_view action_name(Action action) {
  switch (action) {
    case Action::kSend:
      return "send";
    case Action::kReceive:
      return "receive";
    case Action::kManage:
      return "manage";
  }
  return "?";
}

namespace {

// Glob match with `*` only: iterative, backtracking to the last star (linear in practice,
// O(n*m) at worst for patterns of 200 bytes at most).
bool glob(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (pi < p.size() && p[pi] == s[si]) {
      ++pi;
      ++si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

bool any_matches(const std::vector<ChannelPattern>& patterns, std::string_view channel) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const ChannelPattern& p) { return p.matches(channel); });
}

std::string grant_texts(const std::vector<ChannelPattern>& patterns) {
  if (patterns.empty()) return "none";
  std::string out;
  for (const auto& p : patterns) out += fmt::format("{}{}", out.empty() ? "" : ", ", p.text());
  return out;
}

std::string_view action_phrase(Action a) {
  switch (a) {
    case Action::kSend:
      return "send to";
    case Action::kReceive:
      return "receive from";
    case Action::kManage:
      break;
  }
  return "manage";
}

}  // namespace

Status check_grants(const Grants& grants, Action action, std::string_view channel,
                    std::string_view who) {
  if (grants.allows(action, channel)) return ok_status();
  const auto& patterns = action == Action::kSend      ? grants.send
                         : action == Action::kReceive ? grants.receive
                                                      : grants.manage;
  return Error(ErrorCode::kPermissionDenied,
               fmt::format("{} may not {} channel '{}' (its {} grants: {})", who,
                           action_phrase(action), channel, action_name(action),
                           grant_texts(patterns)));
}

Result<ChannelPattern> ChannelPattern::parse(std::string_view text) {
  if (text.empty()) return invalid_argument("is empty, expected a channel name or pattern");
  if (text.size() > kMaxChannelNameBytes) {
    return invalid_argument(fmt::format("is {} bytes long, at most {} (a channel name's limit)",
                                        text.size(), kMaxChannelNameBytes));
  }
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c != '*' && !is_channel_name_char(c)) {
      return invalid_argument(fmt::format(
          "'{}' has '{}' at position {}: patterns use the characters of channel names "
          "(A-Z a-z 0-9 . _ - : /) and *",
          text, c >= 0x20 && c < 0x7F ? std::string(1, c) : fmt::format("\\x{:02x}", c), i));
    }
  }
  ChannelPattern p;
  p.text_ = std::string(text);
  p.everything_ = std::all_of(text.begin(), text.end(), [](char c) { return c == '*'; });
  return p;
}

bool ChannelPattern::matches(std::string_view channel) const {
  return everything_ || glob(text_, channel);
}

bool Grants::allows(Action action, std::string_view channel) const {
  switch (action) {
    case Action::kSend:
      return any_matches(send, channel);
    case Action::kReceive:
      return any_matches(receive, channel);
    case Action::kManage:
      return any_matches(manage, channel);
  }
  return false;
}

bool Grants::allows_any(std::string_view channel) const {
  return any_matches(send, channel) || any_matches(receive, channel) ||
         any_matches(manage, channel);
}

bool Grants::manages_everything() const {
  return std::any_of(manage.begin(), manage.end(),
                     [](const ChannelPattern& p) { return p.matches_everything(); });
}

Grants Grants::everything() {
  Grants g;
  auto all = *ChannelPattern::parse("*");
  g.send = g.receive = g.manage = {all};
  g.monitor = true;
  return g;
}

Status read_grants(const json& object, std::string_view where, bool with_manage, Grants& out) {
  auto list = [&](const char* key, std::vector<ChannelPattern>& into) -> Status {
    auto it = object.find(key);
    if (it == object.end()) return ok_status();
    if (!it->is_array()) {
      return invalid_argument(fmt::format("{}.{}: is {}, expected an array of channel patterns",
                                          where, key, it->type_name()));
    }
    into.clear();
    for (size_t i = 0; i < it->size(); ++i) {
      const json& v = (*it)[i];
      if (!v.is_string()) {
        return invalid_argument(fmt::format("{}.{}[{}]: is {}, expected a channel pattern string",
                                            where, key, i, v.type_name()));
      }
      auto p = ChannelPattern::parse(v.get<std::string>());
      if (!p) return invalid_argument(fmt::format("{}.{}[{}]: {}", where, key, i, p.error().message));
      into.push_back(std::move(*p));
    }
    return ok_status();
  };
  WITMQ_RETURN_IF_ERROR(list("send", out.send));
  WITMQ_RETURN_IF_ERROR(list("receive", out.receive));
  if (!with_manage) return ok_status();
  WITMQ_RETURN_IF_ERROR(list("manage", out.manage));
  if (auto it = object.find("monitor"); it != object.end()) {
    if (!it->is_boolean()) {
      return invalid_argument(
          fmt::format("{}.monitor: is {}, expected true or false", where, it->type_name()));
    }
    out.monitor = it->get<bool>();
  }
  return ok_status();
}

json grants_to_json(const Grants& g, bool with_manage) {
  auto texts = [](const std::vector<ChannelPattern>& ps) {
    json a = json::array();
    for (const auto& p : ps) a.push_back(p.text());
    return a;
  };
  json j = {{"send", texts(g.send)}, {"receive", texts(g.receive)}};
  if (with_manage) {
    j["manage"] = texts(g.manage);
    j["monitor"] = g.monitor;
  }
  return j;
}

}  // namespace witmq::auth
