#include "cluster/history.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <utility>

namespace witmq::cluster::history {

using nlohmann::json;

const char* type_name(OpType t) {
  switch (t) {
    case OpType::kSend:
      return "send";
    case OpType::kReceive:
      return "receive";
    case OpType::kComplete:
      return "complete";
  }
  return "?";
}

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kFailed:
      return "failed";
    case Outcome::kUnknown:
      return "unknown";
  }
  return "?";
}

namespace {

std::string describe(const Op& op) {
  std::ostringstream s;
  s << type_name(op.type) << " by " << op.process << " on node " << op.node << " ["
    << op.invoke_ns / 1000000 << " ms, " << op.complete_ns / 1000000 << " ms]";
  if (op.epoch != 0) s << " epoch " << op.epoch;
  return s.str();
}

class Checker {
 public:
  Checker(const std::vector<Op>& ops, const Rules& rules) : ops_(ops), rules_(rules) {}

  Report run() {
    figures();
    index();
    if (rules_.phantom) phantom();
    if (rules_.lost) lost();
    if (rules_.redelivered) redelivered();
    if (rules_.order) order();
    if (rules_.epoch) epoch();
    return std::move(report_);
  }

 private:
  void add(const char* rule, std::string text) {
    report_.violations.push_back({rule, std::move(text)});
  }

  void figures() {
    report_.ops = ops_.size();
    for (const Op& op : ops_) {
      const bool ok = op.outcome == Outcome::kOk, failed = op.outcome == Outcome::kFailed;
      switch (op.type) {
        case OpType::kSend:
          (ok ? report_.sends_ok : failed ? report_.sends_failed : report_.sends_unknown)++;
          if (ok) report_.messages_ok += op.ids.size();
          break;
        case OpType::kReceive:
          (ok       ? report_.receives_ok
           : failed ? report_.receives_failed
                    : report_.receives_unknown)++;
          if (!ok) break;
          for (const Delivery& d : op.deliveries) {
            ++report_.deliveries;
            if (d.attempt > 1) ++report_.redeliveries;
            if (op.drain) ++report_.drained;
          }
          break;
        case OpType::kComplete:
          (ok       ? report_.completes_ok
           : failed ? report_.completes_failed
                    : report_.completes_unknown)++;
          break;
      }
    }
  }

  void index() {
    for (const Op& op : ops_) {
      if (op.type == OpType::kSend) {
        for (const auto& id : op.ids) sends_[id].push_back(&op);
      } else if (op.type == OpType::kReceive && op.outcome == Outcome::kOk) {
        for (const Delivery& d : op.deliveries) delivered_[d.id].push_back({&op, &d});
      } else if (op.type == OpType::kComplete && !op.ids.empty()) {
        completes_[op.ids.front()].push_back(&op);
      }
    }
  }

  // Every delivered message was sent, by a send that did not fail.
  void phantom() {
    for (const auto& [id, ds] : delivered_) {
      auto it = sends_.find(id);
      if (it == sends_.end()) {
        add("phantom", "message " + id + " was delivered (" + describe(*ds.front().first) +
                           ") but never sent");
        continue;
      }
      const bool possible = std::any_of(it->second.begin(), it->second.end(),
                                        [](const Op* s) { return s->outcome != Outcome::kFailed; });
      if (!possible) {
        add("phantom", "message " + id + " was delivered (" + describe(*ds.front().first) +
                           ") although its send failed (" + describe(*it->second.front()) + ": " +
                           it->second.front()->error + ")");
      }
    }
  }

  void lost() {
    std::set<std::string> seen;
    for (const Op& op : ops_) {
      if (op.type != OpType::kSend || op.outcome != Outcome::kOk) continue;
      for (const auto& id : op.ids) {
        if (!seen.insert(id).second) continue;
        bool settled = false;
        if (auto c = completes_.find(id); c != completes_.end()) {
          settled = std::any_of(c->second.begin(), c->second.end(),
                                [](const Op* s) { return s->outcome != Outcome::kFailed; });
        }
        bool drained = false;
        if (auto d = delivered_.find(id); d != delivered_.end()) {
          drained = std::any_of(d->second.begin(), d->second.end(),
                                [](const auto& p) { return p.first->drain; });
        }
        if (settled || drained) continue;
        ++report_.lost;
        const bool ever = delivered_.contains(id);
        add("lost", "message " + id + " of channel " + op.channel + " was acknowledged (" +
                        describe(op) + ") but " +
                        (ever ? "never settled and not found by the drain"
                              : "never delivered, not even by the drain"));
      }
    }
  }

  void redelivered() {
    for (const auto& [id, cs] : completes_) {
      const Op* first = nullptr;
      for (const Op* c : cs) {
        if (c->outcome == Outcome::kOk && (!first || c->complete_ns < first->complete_ns)) {
          first = c;
        }
      }
      if (!first) continue;
      auto d = delivered_.find(id);
      if (d == delivered_.end()) continue;
      for (const auto& [r, del] : d->second) {
        if (r->invoke_ns > first->complete_ns) {
          add("redelivered", "message " + id + " was delivered again (" + describe(*r) +
                                 ", attempt " + std::to_string(del->attempt) +
                                 ") after its complete was acknowledged (" + describe(*first) +
                                 ")");
        }
      }
    }
  }

  // A set of ops of one key, each with the sequences it carries; checks that an op invoked after
  // another completed carries higher sequences than all of the other's.
  struct Ranged {
    const Op* op;
    uint64_t min, max;
  };
  void real_time_order(std::vector<Ranged>& items, const std::string& what) {
    std::vector<Ranged> by_complete = items;
    std::sort(items.begin(), items.end(),
              [](const Ranged& a, const Ranged& b) { return a.op->invoke_ns < b.op->invoke_ns; });
    std::sort(by_complete.begin(), by_complete.end(), [](const Ranged& a, const Ranged& b) {
      return a.op->complete_ns < b.op->complete_ns;
    });
    size_t next = 0;
    const Ranged* highest = nullptr;
    for (const Ranged& r : items) {
      while (next < by_complete.size() && by_complete[next].op->complete_ns < r.op->invoke_ns) {
        if (!highest || by_complete[next].max > highest->max) highest = &by_complete[next];
        ++next;
      }
      if (highest && highest->max >= r.min) {
        add("order", what + ": " + describe(*r.op) + " carries sequence " + std::to_string(r.min) +
                         " although it was invoked after " + describe(*highest->op) +
                         " completed with sequence " + std::to_string(highest->max));
      }
    }
  }

  void order() {
    // One message, one sequence.
    std::unordered_map<std::string, uint64_t> sequence;
    for (const auto& [id, ds] : delivered_) {
      for (const auto& [r, d] : ds) {
        auto [it, inserted] = sequence.emplace(id, d->sequence);
        if (!inserted && it->second != d->sequence) {
          add("order", "message " + id + " was delivered with sequence " +
                           std::to_string(it->second) + " and with sequence " +
                           std::to_string(d->sequence) + " (" + describe(*r) +
                           "): it was stored twice");
        }
      }
    }
    // Sends of one producer to one channel.
    std::map<std::pair<std::string, std::string>, std::vector<Ranged>> sends;
    for (const Op& op : ops_) {
      if (op.type != OpType::kSend || op.outcome != Outcome::kOk) continue;
      std::optional<uint64_t> previous;
      Ranged r{&op, UINT64_MAX, 0};
      for (const auto& id : op.ids) {
        auto it = sequence.find(id);
        if (it == sequence.end()) continue;
        if (previous && it->second <= *previous) {
          add("order", "message " + id + " has sequence " + std::to_string(it->second) +
                           ", not above the one before it in the same send (" + describe(op) + ")");
        }
        previous = it->second;
        r.min = std::min(r.min, it->second);
        r.max = std::max(r.max, it->second);
      }
      if (previous) sends[{op.channel, op.process}].push_back(r);
    }
    for (auto& [key, items] : sends) {
      real_time_order(items, "channel " + key.first + ", producer " + key.second);
    }
    // First deliveries of one channel. A crash right after a delivery may deliver the message
    // again with the same attempt number (docs/PROTOCOL.md): only the earliest delivery of each
    // message is its first.
    std::unordered_map<std::string, const Op*> first;
    for (const Op& op : ops_) {
      if (op.type != OpType::kReceive || op.outcome != Outcome::kOk) continue;
      for (const Delivery& d : op.deliveries) {
        auto [it, inserted] = first.emplace(d.id, &op);
        if (!inserted && op.invoke_ns < it->second->invoke_ns) it->second = &op;
      }
    }
    std::map<std::string, std::vector<Ranged>> receives;
    for (const Op& op : ops_) {
      if (op.type != OpType::kReceive || op.outcome != Outcome::kOk) continue;
      std::optional<uint64_t> previous;
      Ranged r{&op, UINT64_MAX, 0};
      for (const Delivery& d : op.deliveries) {
        if (d.attempt != 1 || first[d.id] != &op) continue;
        if (previous && d.sequence <= *previous) {
          add("order", "first delivery of " + d.id + " (sequence " + std::to_string(d.sequence) +
                           ") follows sequence " + std::to_string(*previous) + " in one receive (" +
                           describe(op) + ")");
        }
        previous = d.sequence;
        r.min = std::min(r.min, d.sequence);
        r.max = std::max(r.max, d.sequence);
      }
      if (previous) receives[op.channel].push_back(r);
    }
    for (auto& [channel, items] : receives) {
      real_time_order(items, "first deliveries of channel " + channel);
    }
  }

  void epoch() {
    std::map<std::string, std::vector<const Op*>> writes;
    for (const Op& op : ops_) {
      if (op.type == OpType::kReceive || op.outcome != Outcome::kOk || op.epoch == 0) continue;
      writes[op.channel].push_back(&op);
    }
    for (auto& [channel, ws] : writes) {
      std::map<uint64_t, const Op*> owner;
      for (const Op* w : ws) {
        auto [it, inserted] = owner.emplace(w->epoch, w);
        if (!inserted && it->second->node != w->node) {
          add("epoch", "channel " + channel + " epoch " + std::to_string(w->epoch) +
                           ": writes acknowledged by node " + it->second->node + " (" +
                           describe(*it->second) + ") and by node " + w->node + " (" +
                           describe(*w) + ")");
        }
      }
      report_.epochs += owner.size();
      std::vector<const Op*> by_complete = ws;
      std::sort(ws.begin(), ws.end(),
                [](const Op* a, const Op* b) { return a->invoke_ns < b->invoke_ns; });
      std::sort(by_complete.begin(), by_complete.end(),
                [](const Op* a, const Op* b) { return a->complete_ns < b->complete_ns; });
      size_t next = 0;
      const Op* highest = nullptr;
      for (const Op* w : ws) {
        while (next < by_complete.size() && by_complete[next]->complete_ns < w->invoke_ns) {
          if (!highest || by_complete[next]->epoch > highest->epoch) highest = by_complete[next];
          ++next;
        }
        if (highest && highest->epoch > w->epoch) {
          add("epoch", "channel " + channel + ": node " + w->node +
                           " acknowledged a write in epoch " + std::to_string(w->epoch) + " (" +
                           describe(*w) + ") invoked after node " + highest->node +
                           " had acknowledged one in epoch " + std::to_string(highest->epoch) +
                           " (" + describe(*highest) + ")");
        }
      }
    }
  }

  const std::vector<Op>& ops_;
  const Rules rules_;
  Report report_;
  std::unordered_map<std::string, std::vector<const Op*>> sends_;
  std::unordered_map<std::string, std::vector<std::pair<const Op*, const Delivery*>>> delivered_;
  std::unordered_map<std::string, std::vector<const Op*>> completes_;
};

}  // namespace

size_t Report::count(std::string_view rule) const {
  return static_cast<size_t>(std::count_if(violations.begin(), violations.end(),
                                           [&](const Violation& v) { return v.rule == rule; }));
}

std::string Report::summary(size_t max_listed) const {
  std::ostringstream s;
  s << "ops " << ops << ": sends ok " << sends_ok << " failed " << sends_failed << " unknown "
    << sends_unknown << " (messages ok " << messages_ok << "); receives ok " << receives_ok
    << " failed " << receives_failed << " unknown " << receives_unknown << "; deliveries "
    << deliveries << " (redeliveries " << redeliveries << ", by the drain " << drained
    << "); completes ok " << completes_ok << " failed " << completes_failed << " unknown "
    << completes_unknown << "; epochs " << epochs << "; lost " << lost << "; violations "
    << violations.size() << "\n";
  std::map<std::string, size_t> listed;
  for (const Violation& v : violations) {
    if (listed[v.rule]++ < max_listed) s << "  [" << v.rule << "] " << v.text << "\n";
  }
  for (const auto& [rule, n] : listed) {
    if (n > max_listed) s << "  [" << rule << "] ... and " << n - max_listed << " more\n";
  }
  return s.str();
}

Report check(const std::vector<Op>& ops, const Rules& rules) { return Checker(ops, rules).run(); }

std::string to_json_line(const Op& op) {
  json j = {{"type", type_name(op.type)},
            {"process", op.process},
            {"node", op.node},
            {"channel", op.channel},
            {"invoke", op.invoke_ns},
            {"complete", op.complete_ns},
            {"outcome", outcome_name(op.outcome)}};
  if (!op.ids.empty()) j["ids"] = op.ids;
  if (op.type == OpType::kReceive) {
    json ds = json::array();
    for (const Delivery& d : op.deliveries) {
      ds.push_back(
          {{"id", d.id}, {"seq", d.sequence}, {"attempt", d.attempt}, {"receipt", d.receipt}});
    }
    j["deliveries"] = std::move(ds);
  }
  if (!op.receipt.empty()) j["receipt"] = op.receipt;
  if (op.epoch != 0) j["epoch"] = op.epoch;
  if (op.drain) j["drain"] = true;
  if (!op.error.empty()) j["error"] = op.error;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<Op> from_json_line(std::string_view line, std::string* error) {
  const json j = json::parse(line, nullptr, false);
  if (!j.is_object()) {
    *error = "not a JSON object";
    return std::nullopt;
  }
  try {
    Op op;
    const std::string type = j.at("type").get<std::string>();
    if (type == "send") {
      op.type = OpType::kSend;
    } else if (type == "receive") {
      op.type = OpType::kReceive;
    } else if (type == "complete") {
      op.type = OpType::kComplete;
    } else {
      *error = "type '" + type + "' is not send, receive or complete";
      return std::nullopt;
    }
    const std::string outcome = j.at("outcome").get<std::string>();
    if (outcome == "ok") {
      op.outcome = Outcome::kOk;
    } else if (outcome == "failed") {
      op.outcome = Outcome::kFailed;
    } else if (outcome == "unknown") {
      op.outcome = Outcome::kUnknown;
    } else {
      *error = "outcome '" + outcome + "' is not ok, failed or unknown";
      return std::nullopt;
    }
    op.process = j.at("process").get<std::string>();
    op.node = j.at("node").get<std::string>();
    op.channel = j.at("channel").get<std::string>();
    op.invoke_ns = j.at("invoke").get<int64_t>();
    op.complete_ns = j.at("complete").get<int64_t>();
    if (op.complete_ns < op.invoke_ns) {
      *error = "complete is before invoke";
      return std::nullopt;
    }
    if (j.contains("ids")) op.ids = j["ids"].get<std::vector<std::string>>();
    if (j.contains("deliveries")) {
      for (const auto& d : j["deliveries"]) {
        op.deliveries.push_back({d.at("id").get<std::string>(), d.at("seq").get<uint64_t>(),
                                 d.at("attempt").get<uint32_t>(),
                                 d.value("receipt", std::string())});
      }
    }
    op.receipt = j.value("receipt", std::string());
    op.epoch = j.value("epoch", uint64_t{0});
    op.drain = j.value("drain", false);
    op.error = j.value("error", std::string());
    return op;
  } catch (const json::exception& e) {
    *error = e.what();
    return std::nullopt;
  }
}

std::optional<std::vector<Op>> read_file(const std::string& path, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = path + ": cannot be opened";
    return std::nullopt;
  }
  std::vector<Op> ops;
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    if (number == 1) {
      const json header = json::parse(line, nullptr, false);
      if (!header.is_object() || header.value("witmq-history", 0) != 1) {
        *error = path + ":1: not a witmq history (expected {\"witmq-history\": 1})";
        return std::nullopt;
      }
      continue;
    }
    std::string why;
    auto op = from_json_line(line, &why);
    if (!op) {
      *error = path + ":" + std::to_string(number) + ": " + why;
      return std::nullopt;
    }
    ops.push_back(std::move(*op));
  }
  if (number == 0) {
    *error = path + ": empty (expected {\"witmq-history\": 1} first)";
    return std::nullopt;
  }
  return ops;
}

Recorder::Recorder(const std::string& path) : file_(std::fopen(path.c_str(), "w")) {
  if (file_) {
    std::fputs("{\"witmq-history\": 1}\n", file_);
    std::fflush(file_);
  }
}

Recorder::~Recorder() {
  if (file_) std::fclose(file_);
}

int64_t Recorder::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Recorder::add(Op op) {
  std::lock_guard lock(mu_);
  if (file_) {
    const std::string line = to_json_line(op) + "\n";
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }
  ops_.push_back(std::move(op));
}

std::vector<Op> Recorder::ops() const {
  std::lock_guard lock(mu_);
  return ops_;
}

}  // namespace witmq::cluster::history
