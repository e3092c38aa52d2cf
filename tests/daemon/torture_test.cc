// The randomized concurrency test against the real witmqd (docs/OPERATIONS.md, "Torture test").
//
// Several connections do random operations over a few channels: send, both receives, complete,
// abandon, declare with changing dead-letter / requeue / drop policies, delete, purge, replay,
// browse, stats, stream start / credit / stop, reconfigure and reconnect; meanwhile the config
// file is rewritten and SIGHUP reloads it (guests started, refused, replaced and stopped), a
// pinger times round trips, and each round ends with a SIGKILL at a random moment and a restart
// (the last one with SIGTERM). It checks as it goes:
//  - every request is answered within its timeout (a try-receive's own, else none) plus a margin;
//    a subscribe-receive once the messages its connection sends to the channel could feed it;
//  - ping round trips stay under a bound;
//  - no connection is closed by the server without a goaway, and none gets a goaway at all while
//    the daemon runs (nothing in this workload is a reason to close one);
//  - no reply is an internal, corruption or io-error error;
//  - channel stats are consistent (no counter wrapped below zero, in-flight and available within
//    the unsettled depth, floor <= next <= head) and never go backwards between two samples
//    that no delete or restart separates;
//  - streams: no deliver before stream-start-ok or after stream-stop-ok, never beyond the credit;
//  - every reload is answered in the log; after a SIGKILL witmqd restarts, and every confirmed
//    send on a channel neither deleted nor purged since is still stored (Model, torture.h).
//
// Seeded: the seed is printed, and WITMQ_TORTURE_SEED=N repeats the same random choices (the
// threads' interleaving still varies). WITMQ_TORTURE_SECONDS sets the length (default 45),
// WITMQ_TORTURE_CLIENTS the connections (default 6), WITMQ_TORTURE_MARGIN_MS the answer margin
// (default 10000), WITMQ_TORTURE_PING_BOUND_MS the ping bound (default 2000).
// tools/torture.sh --minutes N runs it for long.
#include "torture.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "daemon_process.h"

namespace witmq::daemon::torture {
namespace {

using namespace std::chrono_literals;
using daemon::testing::Daemon;
using net::Frame;
using net::FrameType;
using nlohmann::json;
using Rng = std::mt19937_64;
using ms = std::chrono::milliseconds;

uint64_t env_number(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoull(v) : fallback;
}

struct Options {
  uint64_t seed = 0;
  std::chrono::seconds duration{45};
  int clients = 6;
  ms margin{10000};
  ms ping_bound{2000};
};

// The run's phase: clients check failures only while the daemon is meant to be running.
enum class Phase { kRunning, kStopping };

// The channels: four point-to-point queues whose sends the crash check follows, their dead-letter
// channels (the default "<name>.dlq" and "<name>.dead", which declares switch to), a topic, the
// channel the guests consume and the one the forwarding guest sends to.
const std::vector<std::string> kQueues = {"t0", "t1", "t2", "t3"};
const std::string kTopic = "t.topic";
const std::string kGuestIn = "t.guest";
const std::string kGuestOut = "guest.out";

std::vector<std::string> dead_letter_channels() {
  std::vector<std::string> out;
  for (const auto& q : kQueues) {
    out.push_back(q + ".dlq");
    out.push_back(q + ".dead");
  }
  return out;
}

template <typename T>
const T& pick(Rng& rng, const std::vector<T>& from) {
  return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
}
int64_t uniform(Rng& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
bool chance(Rng& rng, double p) { return std::bernoulli_distribution(p)(rng); }

// Random channel settings: the policies and limits a declare (or the config) changes.
json random_settings(Rng& rng, const std::string& channel) {
  json s;
  if (channel == kTopic) s["kind"] = "publish-subscribe";
  s["durability"] = pick(rng, std::vector<std::string>{"sync", "group", "none"});
  s["abandon-policy"] = pick(rng, std::vector<std::string>{"requeue", "dead-letter", "drop"});
  s["max-deliveries"] = uniform(rng, 0, 4);
  s["lease-ms"] = uniform(rng, 200, 4000);
  s["backoff-initial-ms"] = uniform(rng, 0, 100);
  s["backoff-max-ms"] = uniform(rng, 100, 1000);
  if (channel != kTopic && !Model::is_dead_letter_name(channel)) {
    s["dead-letter-channel"] = chance(rng, 0.5) ? "" : channel + ".dead";
  }
  return s;
}

std::string error_text(const Error& e) {
  return std::string(error_code_name(e.code)) + " " + e.message;
}

// A channel-stats sample, for the check that counters never go backwards.
struct Sample {
  Clock::time_point sent, received;
  uint64_t deletes_at_send = 0;  // deletes of the channel started when the request went out
  bool delete_in_flight = false;
  uint64_t deletes_at_receive = 0;
  std::map<std::string, uint64_t> counters;
};

// Channel-stats checks shared by every client: each sample is checked alone, and against earlier
// samples that the daemon certainly took before it (answered before it was asked) with no delete
// in between.
class StatsChecker {
 public:
  StatsChecker(Findings& findings, Model& model) : findings_(findings), model_(model) {}

  void check(const json& st, Clock::time_point sent, std::pair<uint64_t, uint64_t> deletes_at_send,
             const std::string& context) {
    const std::string name = st.value("name", "");
    const std::string where = context + " " + name + ": ";
    static const std::vector<std::string> kCounters = {
        "first-seq",          "head-seq",        "sends-total",    "deliveries-total",
        "redeliveries-total", "completes-total", "abandons-total", "lease-expiries-total",
        "dead-letters-total"};
    Sample sample;
    sample.sent = sent;
    sample.received = Clock::now();
    sample.deletes_at_send = deletes_at_send.first;
    sample.delete_in_flight = deletes_at_send.first != deletes_at_send.second;
    sample.deletes_at_receive = model_.deletes(name).first;
    // Any counter that wrapped below zero shows as a number near 2^64.
    auto number = [&](const json& j, const std::string& key) -> uint64_t {
      if (!j.contains(key) || !j[key].is_number_integer() ||
          (j[key].is_number_integer() && !j[key].is_number_unsigned() &&
           j[key].get<int64_t>() < 0)) {
        findings_.fail("stats-malformed", where + key + " is not a non-negative integer: " +
                                              (j.contains(key) ? j[key].dump() : "missing"));
        return 0;
      }
      const uint64_t v = j[key].get<uint64_t>();
      if (v > (uint64_t{1} << 48)) {
        findings_.fail("stats-negative", where + key + " = " + std::to_string(v) +
                                             " (wrapped below zero) in " + st.dump());
      }
      return v;
    };
    for (const auto& c : kCounters) sample.counters[c] = number(st, c);
    const uint64_t depth = number(st, "depth");
    const uint64_t in_flight = number(st, "in-flight");
    const uint64_t head = sample.counters["head-seq"];
    const uint64_t first = sample.counters["first-seq"];
    if (first > head)
      findings_.fail("stats-inconsistent", where + "first-seq > head-seq: " + st.dump());
    if (depth > head)
      findings_.fail("stats-inconsistent", where + "depth > head-seq: " + st.dump());
    uint64_t sub_in_flight = 0;
    for (const json& sub : st.value("subscriptions", json::array())) {
      const uint64_t floor = number(sub, "floor"), next = number(sub, "next");
      const uint64_t lag = number(sub, "lag"), avail = number(sub, "available");
      const uint64_t sin = number(sub, "in-flight");
      sub_in_flight += sin;
      if (floor > next) {
        findings_.fail("stats-inconsistent", where + "floor > next: " + st.dump());
      }
      // A topic subscription that starts while a send commits starts after that send: its next
      // may be ahead of head-seq (the committed end) for that moment.
      if (next > head) {
        if (st["settings"].value("kind", "") == "publish-subscribe") {
          findings_.count("topic subscription next ahead of head-seq (seen)");
        } else {
          findings_.fail("stats-inconsistent", where + "next > head-seq: " + st.dump());
        }
      }
      if (sin + avail > lag || lag > depth) {
        findings_.fail("stats-inconsistent",
                       where + "not in-flight + available <= lag <= depth: " + st.dump());
      }
    }
    if (sub_in_flight != in_flight) {
      findings_.fail("stats-inconsistent",
                     where + "in-flight is not the subscriptions' sum: " + st.dump());
    }

    std::lock_guard lock(mu_);
    auto& history = samples_[name];
    for (const Sample& before : history) {
      if (!(before.received < sample.sent) || before.delete_in_flight ||
          before.deletes_at_send != sample.deletes_at_receive) {
        continue;
      }
      for (const auto& [c, v] : before.counters) {
        if (sample.counters[c] < v) {
          findings_.fail("stats-backwards", where + c + " went from " + std::to_string(v) + " to " +
                                                std::to_string(sample.counters[c]));
        }
      }
    }
    history.push_back(std::move(sample));
    if (history.size() > 8) history.pop_front();
    findings_.count("stats samples checked");
  }

  // After a restart nothing is comparable with what the killed daemon said.
  void restarted() {
    std::lock_guard lock(mu_);
    samples_.clear();
  }

 private:
  Findings& findings_;
  Model& model_;
  std::mutex mu_;
  std::map<std::string, std::deque<Sample>> samples_;
};

struct Shared {
  Options options;
  Findings findings;
  Model model;
  StatsChecker stats{findings, model};
  // Channels no client deletes or purges this round, so that the crash check has messages to
  // follow; set between rounds.
  std::set<std::string> protected_channels;
  std::atomic<Phase> phase{Phase::kRunning};
  std::atomic<bool> stop{false};

  bool running() const { return phase.load() == Phase::kRunning && !stop.load(); }
};

// One client connection doing random operations, a few of them in flight at once.
class Actor {
 public:
  Actor(int index, uint64_t seed, Shared& shared)
      : index_(index), rng_(seed), shared_(shared), f_(shared.findings), model_(shared.model) {}

  void run(uint16_t port) {
    port_ = port;
    connect();
    while (!shared_.stop.load()) {
      const auto now = Clock::now();
      if (!wire_.is_open() && !reconnecting_at_) reconnecting_at_ = now;
      if (reconnecting_at_) {
        if (now >= *reconnecting_at_) connect();
        std::this_thread::sleep_for(5ms);
        continue;
      }
      if (connected_ && pending_.size() < max_pending_ && now >= next_op_) {
        operate();
        next_op_ = now + ms(uniform(rng_, 0, 8));
        if (reconnecting_at_) continue;  // the operation was a reconnect
      }
      feed_receives(now);
      read_frames();
      check_deadlines();
    }
    give_up_pending();
  }

 private:
  struct Pending {
    explicit Pending(FrameType t = FrameType::kPing, std::string c = "")
        : type(t), channel(std::move(c)) {}
    FrameType type;
    std::string channel;
    Clock::time_point sent, deadline;
    std::vector<std::string> ids;           // a send's messages
    std::pair<uint64_t, uint64_t> deletes;  // channel-stats: the channel's deletes when sent
    uint32_t credit = 0;                    // credit / stream-start: what it grants
    Clock::time_point next_feed{};          // subscribe-receive: when to send it a message
  };
  struct Held {
    std::string channel;
    Message receipt;
  };
  enum class StreamState { kNone, kStarting, kActive, kStopping };

  const Options& opt() const { return shared_.options; }
  std::string who() const { return "client " + std::to_string(index_); }

  void connect() {
    reconnecting_at_.reset();
    connected_ = false;
    std::string why;
    if (!wire_.open(port_, &why)) {
      if (shared_.running()) f_.fail("connect-refused", who() + ": " + why);
      reconnecting_at_ = Clock::now() + 100ms;
      return;
    }
    // Names are shared between connections, as instances of one consumer would share theirs.
    name_ = chance(rng_, 0.5) ? "tc" + std::to_string(uniform(rng_, 0, 2)) : "";
    configured_.clear();
    stream_ = StreamState::kNone;
    // Mostly a few requests in flight; sometimes bursts past the server's max-in-flight.
    max_pending_ = chance(rng_, 0.8) ? 4 : 24;
    submit(Pending(FrameType::kConnect, ""),
           net::Connect{{net::kProtocolVersion}, name_, std::nullopt});
    f_.count("op connect");
  }

  uint32_t submit(Pending p, net::Body body) {
    const uint32_t id = next_id_++;
    p.sent = Clock::now();
    if (p.deadline == Clock::time_point{}) p.deadline = p.sent + opt().margin;
    pending_.emplace(id, std::move(p));
    wire_.send(Frame{id, std::move(body)});
    return id;
  }

  // A request that will never be answered now (reconnect, the daemon killed): what it may have
  // done on the server is recorded as possible.
  void give_up(const Pending& p) {
    switch (p.type) {
      case FrameType::kChannelDelete:
        model_.delete_finished(p.channel);
        model_.disrupted(p.channel);
        break;
      case FrameType::kPurge:
        model_.disrupted(p.channel);
        break;
      case FrameType::kSubscribeReceive:
      case FrameType::kSubscribeTryReceive:
        model_.unseen_deliveries(p.channel);
        break;
      default:
        break;
    }
  }
  void give_up_pending() {
    for (auto& [id, p] : pending_) give_up(p);
    pending_.clear();
    if (stream_ != StreamState::kNone) {
      for (const auto& c : configured_) model_.unseen_deliveries(c);
    }
    held_.clear();
  }

  void reconnect(ms after) {
    give_up_pending();
    wire_.close();
    connected_ = false;
    reconnecting_at_ = Clock::now() + after;
  }

  // ---- operations ------------------------------------------------------------------------

  std::string any_channel() {
    const int r = static_cast<int>(uniform(rng_, 0, 99));
    if (r < 70) return pick(rng_, kQueues);
    if (r < 80) return pick(rng_, dead_letter_channels());
    if (r < 90) return kTopic;
    return chance(rng_, 0.5) ? kGuestIn : kGuestOut;
  }

  void operate() {
    const int r = static_cast<int>(uniform(rng_, 0, 999));
    if (r < 250) return send(pick(rng_, kQueues));
    if (r < 290) return send(chance(rng_, 0.5) ? kTopic : kGuestIn);
    if (r < 420) return try_receive();
    if (r < 450) return receive();
    if (r < 600) return settle(true);
    if (r < 660) return settle(false);
    if (r < 690) return configure();
    if (r < 750) return stream();
    if (r < 785) return declare();
    if (r < 795) return remove(FrameType::kChannelDelete);
    if (r < 805) return remove(FrameType::kPurge);
    if (r < 830) return replay();
    if (r < 870) return browse();
    if (r < 960) return stats();
    if (r < 975) return list();
    if (r < 985) return ping();
    f_.count("op reconnect");
    reconnect(ms(uniform(rng_, 0, 50)));
  }

  void send(const std::string& channel, bool feeder = false) {
    const int n = static_cast<int>(uniform(rng_, 1, 4));
    Pending p(FrameType::kSend, channel);
    std::vector<Message> batch;
    const bool followed = std::find(kQueues.begin(), kQueues.end(), channel) != kQueues.end();
    for (int i = 0; i < n; ++i) {
      std::string id = "m" + std::to_string(index_) + "-" + std::to_string(++sent_);
      if (followed) model_.sending(id, channel);
      Message m;
      m.data.assign(id.begin(), id.end());
      batch.push_back(std::move(m));
      p.ids.push_back(std::move(id));
    }
    submit(std::move(p), net::Send{channel, std::move(batch)});
    f_.count(feeder ? "op send (feeding a receive)" : "op send");
    f_.count("messages sent", static_cast<uint64_t>(n));
  }

  void try_receive() {
    const std::string channel = chance(rng_, 0.8) ? pick(rng_, kQueues) : any_channel();
    const uint32_t timeout = pick(rng_, std::vector<uint32_t>{0, 5, 20, 20, 50, 200, 1000});
    Pending p(FrameType::kSubscribeTryReceive, channel);
    p.deadline = Clock::now() + ms(timeout) + opt().margin;
    submit(std::move(p), net::SubscribeTryReceive{channel, timeout});
    f_.count("op subscribe-try-receive");
  }

  // A subscribe-receive waits for a message however long; so that its answer is due, this
  // connection sends one to its channel every half second while it waits (a waiting receive is
  // served before later ones).
  void receive() {
    for (auto& [id, p] : pending_) {
      if (p.type == FrameType::kSubscribeReceive) return try_receive();
    }
    const std::string channel = pick(rng_, kQueues);
    Pending p(FrameType::kSubscribeReceive, channel);
    p.next_feed = Clock::now() + 500ms;
    p.deadline = Clock::now() + 10s + opt().margin;
    submit(std::move(p), net::SubscribeReceive{channel});
    f_.count("op subscribe-receive");
  }

  void feed_receives(Clock::time_point now) {
    std::vector<std::string> feed;
    for (auto& [id, p] : pending_) {
      if (p.type == FrameType::kSubscribeReceive && now >= p.next_feed) {
        p.next_feed = now + 500ms;
        feed.push_back(p.channel);
      }
    }
    for (const auto& c : feed) send(c, true);
  }

  void settle(bool complete) {
    if (held_.empty()) return try_receive();
    // Mostly the oldest, so that leases rarely expire; sometimes any.
    const size_t at =
        chance(rng_, 0.7) ? 0 : static_cast<size_t>(uniform(rng_, 0, held_.size() - 1));
    Held h = std::move(held_[at]);
    held_.erase(held_.begin() + static_cast<ptrdiff_t>(at));
    if (complete) {
      submit(Pending(FrameType::kCompleteMessage, h.channel),
             net::CompleteMessage{std::move(h.receipt)});
      f_.count("op complete-message");
    } else {
      submit(Pending(FrameType::kAbandonMessage, h.channel),
             net::AbandonMessage{std::move(h.receipt)});
      f_.count("op abandon-message");
    }
  }

  void configure() {
    std::vector<std::string> channels;
    const int n = static_cast<int>(uniform(rng_, chance(rng_, 0.1) ? 0 : 1, 3));
    for (int i = 0; i < n; ++i) {
      const std::string c = chance(rng_, 0.85) ? pick(rng_, kQueues) : kTopic;
      if (std::find(channels.begin(), channels.end(), c) == channels.end()) channels.push_back(c);
    }
    Metadata ext;
    if (chance(rng_, 0.7)) ext.emplace_back("batch-size", std::to_string(uniform(rng_, 1, 20)));
    if (chance(rng_, 0.5)) ext.emplace_back("lease-ms", std::to_string(uniform(rng_, 300, 5000)));
    if (chance(rng_, 0.2)) ext.emplace_back("start", chance(rng_, 0.5) ? "earliest" : "latest");
    // Messages a stream may have delivered on channels it leaves are followed as unseen.
    if (stream_ != StreamState::kNone) {
      for (const auto& c : configured_) model_.unseen_deliveries(c);
    }
    configured_ = channels;
    GuestConfiguration gc{channels, ext.empty() ? std::nullopt : std::optional<Metadata>(ext)};
    submit(Pending(FrameType::kUpdateGuestConfiguration, ""),
           net::UpdateGuestConfiguration{std::move(gc)});
    f_.count("op update-guest-configuration");
  }

  void stream() {
    if (stream_ == StreamState::kNone) {
      Pending p(FrameType::kStreamStart, "");
      const auto credit = static_cast<uint32_t>(uniform(rng_, 0, 20));
      p.credit = credit;
      credit_left_ = credit;
      stream_ = StreamState::kStarting;
      stream_id_ = submit(std::move(p), net::StreamStart{credit});
      f_.count("op stream-start");
    } else if (stream_ == StreamState::kActive && chance(rng_, 0.6)) {
      const auto additional = static_cast<uint32_t>(uniform(rng_, 1, 10));
      Pending p(FrameType::kCredit, "");
      p.credit = additional;
      credit_left_ += additional;
      submit(std::move(p), net::Credit{additional});
      f_.count("op credit");
    } else if (stream_ == StreamState::kActive) {
      stream_ = StreamState::kStopping;
      submit(Pending(FrameType::kStreamStop, ""), net::StreamStop{});
      f_.count("op stream-stop");
    } else {
      try_receive();
    }
  }

  void admin(net::AdminOp op, const std::string& channel, const json& body, Pending p = Pending()) {
    p.type = static_cast<FrameType>(net::kAdminRequestBase + static_cast<uint8_t>(op));
    p.channel = channel;
    submit(std::move(p), net::AdminRequest{op, body.dump()});
  }

  void declare() {
    std::string channel = any_channel();
    if (channel == kGuestOut) channel = kGuestIn;
    admin(net::AdminOp::kChannelDeclare, channel,
          {{"name", channel}, {"settings", random_settings(rng_, channel)}});
    f_.count("op channel-declare");
  }

  void remove(FrameType type) {
    const std::string channel = any_channel();
    if (shared_.protected_channels.count(channel)) return stats();
    if (type == FrameType::kChannelDelete) {
      model_.delete_started(channel);
      model_.disrupted(channel);
      admin(net::AdminOp::kChannelDelete, channel, {{"name", channel}});
      f_.count("op channel-delete");
      // Deleted and at once created again by a send: waiters of the old channel must still be
      // answered.
      if (chance(rng_, 0.5) && channel != kGuestOut) send(channel);
    } else {
      model_.disrupted(channel);
      admin(net::AdminOp::kPurge, channel, {{"channel", channel}});
      f_.count("op purge");
    }
  }

  void replay() {
    const std::string dlq = pick(rng_, dead_letter_channels());
    json body = {{"channel", dlq}};
    if (chance(rng_, 0.5)) body["max"] = uniform(rng_, 1, 10);
    admin(net::AdminOp::kReplayDeadLetters, dlq, body);
    f_.count("op replay-dead-letters");
  }

  void browse() {
    const std::string channel = any_channel();
    admin(net::AdminOp::kBrowse, channel,
          {{"channel", channel}, {"from", uniform(rng_, 0, 3)}, {"max", uniform(rng_, 1, 50)}});
    f_.count("op browse");
  }

  void stats() {
    const std::string channel = any_channel();
    Pending p;
    p.deletes = model_.deletes(channel);
    admin(net::AdminOp::kChannelStats, channel, {{"name", channel}}, std::move(p));
    f_.count("op channel-stats");
  }

  void list() {
    admin(net::AdminOp::kChannelList, "", json::object());
    f_.count("op channel-list");
  }

  void ping() {
    submit(Pending(FrameType::kPing, ""), net::Ping{next_id_});
    f_.count("op ping");
  }

  // ---- replies ---------------------------------------------------------------------------

  void read_frames() {
    if (reconnecting_at_) return;
    Frame frame;
    auto wait = 2ms;
    for (;;) {
      const Wire::Got got = wire_.read(&frame, wait);
      wait = 0ms;
      if (got == Wire::Got::kNothing) return;
      if (got == Wire::Got::kMalformed) {
        if (shared_.running())
          f_.fail("malformed-frame", who() + ": the server sent a malformed frame");
        reconnect(0ms);
        return;
      }
      if (got == Wire::Got::kClosed) {
        if (shared_.running()) {
          std::string in_flight;
          for (auto& [id, p] : pending_) {
            in_flight += " " + std::string(net::frame_type_name(p.type)) +
                         (p.channel.empty() ? "" : "(" + p.channel + ")");
          }
          f_.fail("closed-without-goaway",
                  who() + ": the server closed the connection without goaway; pending:" +
                      (in_flight.empty() ? " none" : in_flight) +
                      (stream_ != StreamState::kNone ? "; a stream was open" : ""));
        }
        reconnect(0ms);
        return;
      }
      handle(std::move(frame));
      if (reconnecting_at_) return;
    }
  }

  void handle(Frame&& frame) {
    if (auto* g = std::get_if<net::Goaway>(&frame.body)) {
      if (shared_.running()) {
        f_.fail("goaway", who() + ": goaway on request " + std::to_string(frame.request_id) + ": " +
                              error_text(g->error));
      }
      reconnect(0ms);
      return;
    }
    if (frame.type() == FrameType::kDeliver || frame.type() == FrameType::kStreamEnd) {
      return handle_stream(std::move(frame));
    }
    auto it = pending_.find(frame.request_id);
    if (it == pending_.end()) {
      f_.fail("unexpected-reply", who() + ": " + std::string(net::frame_type_name(frame.type())) +
                                      " for request " + std::to_string(frame.request_id) +
                                      ", which is not pending");
      return;
    }
    Pending p = std::move(it->second);
    pending_.erase(it);
    const auto took = std::chrono::duration_cast<ms>(Clock::now() - p.sent);
    f_.max("slowest answer (ms) " + std::string(net::frame_type_name(p.type)),
           static_cast<uint64_t>(took.count()));
    if (auto* e = std::get_if<net::ErrorReply>(&frame.body)) return handle_error(p, e->error);
    const auto expected = static_cast<FrameType>(static_cast<uint8_t>(p.type) | 0x80);
    if (frame.type() != expected) {
      f_.fail("wrong-reply", who() + ": " + std::string(net::frame_type_name(frame.type())) +
                                 " answers " + std::string(net::frame_type_name(p.type)));
      return;
    }
    f_.count("ok " + std::string(net::frame_type_name(p.type)));
    switch (p.type) {
      case FrameType::kConnect:
        connected_ = true;
        break;
      case FrameType::kSend:
        for (const auto& id : p.ids) model_.confirmed(id);
        break;
      case FrameType::kSubscribeTryReceive:
        if (auto& got = std::get<net::SubscribeTryReceiveOk>(frame.body).messages) {
          received(p.channel, std::move(*got), "subscribe-try-receive");
        }
        break;
      case FrameType::kSubscribeReceive:
        received(p.channel, std::move(std::get<net::SubscribeReceiveOk>(frame.body).messages),
                 "subscribe-receive");
        break;
      case FrameType::kStreamStart:
        if (stream_ == StreamState::kStarting) stream_ = StreamState::kActive;
        break;
      case FrameType::kStreamStop:
        stream_ = StreamState::kNone;
        stopped_stream_id_ = stream_id_;
        stream_id_ = 0;
        break;
      case FrameType::kChannelDelete:
        model_.delete_finished(p.channel);
        model_.disrupted(p.channel);
        break;
      case FrameType::kPurge:
        model_.disrupted(p.channel);
        break;
      case FrameType::kBrowse:
        check_browse(p.channel, std::get<net::BrowseOk>(frame.body).messages);
        break;
      case FrameType::kChannelStats:
        shared_.stats.check(json::parse(std::get<net::AdminReply>(frame.body).json), p.sent,
                            p.deletes, "channel-stats");
        break;
      case FrameType::kChannelList: {
        const json list = json::parse(std::get<net::AdminReply>(frame.body).json);
        for (const json& st : list["channels"]) {
          shared_.stats.check(st, Clock::time_point{}, {0, 1}, "channel-list");
        }
        break;
      }
      default:
        break;
    }
  }

  void handle_error(const Pending& p, const Error& e) {
    const std::string op(net::frame_type_name(p.type));
    f_.count("error " + op + ": " + std::string(error_code_name(e.code)));
    if (p.type == FrameType::kChannelDelete || p.type == FrameType::kPurge) give_up(p);
    if (p.type == FrameType::kConnect) {
      f_.fail("connect-failed", who() + ": " + error_text(e));
      reconnect(100ms);
      return;
    }
    if (p.type == FrameType::kStreamStart) stream_ = StreamState::kNone;
    if (p.type == FrameType::kCredit && e.code == ErrorCode::kResourceExhausted) {
      credit_left_ -= p.credit;
    }
    switch (e.code) {
      case ErrorCode::kInternal:
      case ErrorCode::kCorruption:
      case ErrorCode::kIoError:
        f_.fail("error-" + std::string(error_code_name(e.code)),
                who() + ": " + op + (p.channel.empty() ? "" : " " + p.channel) + ": " + e.message);
        break;
      case ErrorCode::kUnavailable:
        if (shared_.running()) f_.fail("error-unavailable", who() + ": " + op + ": " + e.message);
        break;
      default:
        break;
    }
  }

  void received(const std::string& channel, std::vector<Message>&& messages, const char* how) {
    if (messages.empty()) {
      f_.fail("empty-receive", who() + ": " + how + " on " + channel + " returned no message");
    }
    for (auto& m : messages) {
      const std::string id(m.data.begin(), m.data.end());
      model_.seen(id);
      const std::string* from = find_metadata(m, meta::kChannel);
      if (!from || *from != channel) {
        f_.fail("wrong-channel", who() + ": " + how + " on " + channel + " got " + id + " of " +
                                     (from ? *from : "no channel"));
      }
      const std::string* receipt = find_metadata(m, meta::kReceipt);
      if (!receipt) {
        f_.fail("no-receipt", who() + ": " + how + " on " + channel + " got " + id);
        continue;
      }
      Message r;
      r.metadata = Metadata{{std::string(meta::kReceipt), *receipt}};
      held_.push_back(Held{channel, std::move(r)});
    }
    f_.count("messages received", messages.size());
    // Held messages past what settling keeps up with are left to their leases.
    while (held_.size() > 64) held_.pop_front();
  }

  void handle_stream(Frame&& frame) {
    const bool ours = frame.request_id == stream_id_ && stream_ != StreamState::kNone;
    if (auto* end = std::get_if<net::StreamEnd>(&frame.body)) {
      f_.count("stream-end " + std::string(error_code_name(end->error.code)));
      if (!ours) {
        f_.fail("stray-stream-end", who() + ": stream-end for stream " +
                                        std::to_string(frame.request_id) + ", not open");
      }
      // A stream-stop sent meanwhile is still answered (stream-stop-ok with no stream).
      stream_ = StreamState::kNone;
      stream_id_ = 0;
      return;
    }
    auto& d = std::get<net::Deliver>(frame.body);
    if (frame.request_id == stopped_stream_id_ && frame.request_id != 0) {
      f_.fail("deliver-after-stream-stop-ok",
              who() + ": stream " + std::to_string(frame.request_id));
    } else if (!ours || stream_ == StreamState::kStarting) {
      f_.fail("deliver-outside-stream", who() + ": deliver for stream " +
                                            std::to_string(frame.request_id) + " (state " +
                                            std::to_string(static_cast<int>(stream_)) + ")");
    }
    credit_left_ -= static_cast<int64_t>(d.messages.size());
    if (ours && credit_left_ < 0) {
      f_.fail("credit-exceeded", who() + ": deliver of " + std::to_string(d.messages.size()) +
                                     " went " + std::to_string(-credit_left_) +
                                     " beyond the credit");
      credit_left_ = 0;
    }
    f_.count("delivers");
    received(d.channel, std::move(d.messages), "stream");
  }

  void check_browse(const std::string& channel, const std::vector<Message>& messages) {
    uint64_t last = 0;
    bool first = true;
    for (const auto& m : messages) {
      const std::string* seq = find_metadata(m, meta::kSequence);
      const std::string* from = find_metadata(m, meta::kChannel);
      if (!seq || !from || *from != channel) {
        f_.fail("browse-metadata", who() + ": browse of " + channel + ": a message without its " +
                                       "sequence or of another channel");
        return;
      }
      const uint64_t s = std::stoull(*seq);
      if (!first && s <= last) {
        f_.fail("browse-order", who() + ": browse of " + channel + ": sequence " +
                                    std::to_string(s) + " after " + std::to_string(last));
      }
      first = false;
      last = s;
    }
  }

  // Requests past their deadline: a failure, and the connection is replaced (its state is no
  // longer known).
  void check_deadlines() {
    if (!shared_.running()) return;
    const auto now = Clock::now();
    bool late = false;
    for (auto& [id, p] : pending_) {
      if (now < p.deadline) continue;
      late = true;
      const auto waited = std::chrono::duration_cast<ms>(now - p.sent).count();
      auto deletes = model_.deletes(p.channel);
      f_.fail("unanswered-" + std::string(net::frame_type_name(p.type)),
              who() + ": request " + std::to_string(id) + " " +
                  std::string(net::frame_type_name(p.type)) +
                  (p.channel.empty() ? "" : " on " + p.channel) + " unanswered after " +
                  std::to_string(waited) +
                  " ms (deletes of the channel so far: " + std::to_string(deletes.first) + ")");
    }
    if (late) reconnect(0ms);
  }

  const int index_;
  Rng rng_;
  Shared& shared_;
  Findings& f_;
  Model& model_;
  uint16_t port_ = 0;
  Wire wire_;
  bool connected_ = false;
  std::optional<Clock::time_point> reconnecting_at_;
  std::string name_;
  uint32_t next_id_ = 1;
  size_t max_pending_ = 4;
  uint64_t sent_ = 0;
  Clock::time_point next_op_{};
  std::map<uint32_t, Pending> pending_;
  std::deque<Held> held_;
  std::vector<std::string> configured_;
  StreamState stream_ = StreamState::kNone;
  uint32_t stream_id_ = 0, stopped_stream_id_ = 0;
  int64_t credit_left_ = 0;
};

// Pings on a connection of its own and times the round trips.
void pinger(uint16_t port, Shared& shared) {
  Findings& f = shared.findings;
  Wire wire;
  std::string why;
  if (!wire.open(port, &why)) {
    if (shared.running()) f.fail("connect-refused", "pinger: " + why);
    return;
  }
  uint32_t id = 1;
  wire.send(Frame{id, net::Connect{{net::kProtocolVersion}, "", std::nullopt}});
  const ms wait = shared.options.ping_bound + shared.options.margin;
  while (!shared.stop.load()) {
    const auto sent = Clock::now();
    Frame frame;
    bool answered = false;
    while (!answered && Clock::now() - sent < wait && !shared.stop.load()) {
      const Wire::Got got = wire.read(&frame, 20ms);
      if (got == Wire::Got::kNothing) continue;
      if (got != Wire::Got::kFrame || frame.type() == FrameType::kGoaway) {
        if (shared.running()) {
          f.fail(got == Wire::Got::kFrame ? "goaway" : "closed-without-goaway",
                 "pinger: the server closed its connection" +
                     (got == Wire::Got::kFrame
                          ? ": " + error_text(std::get<net::Goaway>(frame.body).error)
                          : std::string()));
        }
        return;
      }
      answered = frame.request_id == id;
    }
    if (shared.stop.load()) return;
    const auto rtt = std::chrono::duration_cast<ms>(Clock::now() - sent);
    if (!answered) {
      if (shared.running()) {
        f.fail("unanswered-ping",
               "pinger: no answer within " + std::to_string(wait.count()) + " ms");
      }
      return;
    }
    f.count("pings");
    f.max("slowest ping (ms)", static_cast<uint64_t>(rtt.count()));
    if (rtt > shared.options.ping_bound && shared.running()) {
      f.fail("slow-ping", "pinger: round trip " + std::to_string(rtt.count()) + " ms > bound " +
                              std::to_string(shared.options.ping_bound.count()) + " ms");
    }
    std::this_thread::sleep_for(100ms);
    wire.send(Frame{++id, net::Ping{id}});
  }
}

std::string wasm(const std::string& stem) {
  return std::string(WITMQ_GUEST_WASM_DIR) + "/" + stem + ".wasm";
}

// A random configuration: channel declarations with random policies, and guests that forward,
// trap (failed batches, re-instantiated) or cannot load (refused), the same guest name switching
// between a good and a bad module from one reload to the next.
json random_config(Rng& rng) {
  json config;
  // Not "warn": the reload's own line is at info.
  config["log-level"] = chance(rng, 0.1) ? "debug" : "info";
  json channels = json::object();
  for (const auto& q : kQueues) {
    if (chance(rng, 0.4)) channels[q] = random_settings(rng, q);
  }
  // The topic is declared by clients only: a channel of the file whose kind differs from the
  // existing channel's (the topic deleted, then created again as a queue by a send) stops witmqd
  // at start.
  config["channels"] = channels;
  json guests = json::array();
  const int forwarder = static_cast<int>(uniform(rng, 0, 2));  // none, good, refused
  if (forwarder == 1) {
    guests.push_back({{"name", "forwarder"},
                      {"module", wasm("forward_guest")},
                      {"channels", {kGuestIn}},
                      {"instances", uniform(rng, 1, 2)}});
  } else if (forwarder == 2) {
    guests.push_back({{"name", "forwarder"}, {"module", wasm("missing_export_guest")}});
  }
  if (chance(rng, 0.5)) {
    guests.push_back({{"name", "trapper"},
                      {"module", wasm("trap_guest")},
                      {"channels", {kGuestIn}},
                      {"restart-backoff-ms", uniform(rng, 1, 100)}});
  }
  config["guests"] = guests;
  // Start-time limits: a reload only logs that they need a restart; the next restart (after the
  // SIGKILL) applies them. Small ones make the server stop reading connections (max-in-flight)
  // and cut receives (max-unacked-per-connection).
  config["max-in-flight"] = pick(rng, std::vector<int>{8, 64, 1024});
  config["max-unacked-per-connection"] = pick(rng, std::vector<int>{30, 100000});
  return config;
}

class ConfigFile {
 public:
  explicit ConfigFile(const std::string& dir) : path_(dir + "/witmqd.json") {}
  void write(const std::string& text) {
    const std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

size_t count_lines(const std::string& log, std::string_view text) {
  size_t n = 0;
  for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

std::string tail(const std::string& log, size_t lines) {
  size_t at = log.size();
  for (size_t i = 0; i <= lines && at != std::string::npos && at > 0; ++i) {
    at = log.rfind('\n', at - 1);
  }
  return at == std::string::npos ? log : log.substr(at + 1);
}

// Reloads with a freshly written config and checks the daemon answered it in its log.
void reload(Daemon& d, ConfigFile& config, Rng& rng, Shared& shared) {
  Findings& f = shared.findings;
  auto answered = [&d]() {
    const std::string log = d.log();
    return count_lines(log, "reload done") + count_lines(log, "reload refused");
  };
  auto signal_and_wait = [&](const char* what) {
    const size_t before = answered();
    d.signal(SIGHUP);
    const auto deadline = Clock::now() + 2 * shared.options.margin;
    while (answered() == before && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    if (answered() == before) {
      f.fail("reload-unanswered", std::string(what) +
                                      ": no 'reload done' or 'reload refused' within " +
                                      std::to_string(2 * shared.options.margin.count()) + " ms");
    }
    f.count(std::string("reloads ") + what);
  };
  if (chance(rng, 0.1)) {
    // A bad file is refused and changes nothing; the good one follows at once, so that a restart
    // always finds a good file.
    config.write(R"({"max-in-flight": -1})");
    signal_and_wait("(bad file)");
  }
  config.write(random_config(rng).dump(2));
  signal_and_wait("(good file)");
}

// After a restart: every channel browsed to its end; every message the model says must be stored
// is somewhere.
void check_stored(uint16_t port, Shared& shared) {
  Findings& f = shared.findings;
  Wire wire;
  std::string why;
  if (!wire.open(port, &why)) {
    f.fail("connect-refused", "crash check: " + why);
    return;
  }
  uint32_t next = 1;
  auto call = [&](net::Body body) -> std::optional<Frame> {
    const uint32_t id = next++;
    wire.send(Frame{id, std::move(body)});
    const auto deadline = Clock::now() + shared.options.margin * 2;
    Frame frame;
    while (Clock::now() < deadline) {
      const Wire::Got got = wire.read(&frame, 50ms);
      if (got == Wire::Got::kNothing) continue;
      if (got != Wire::Got::kFrame) break;
      if (frame.request_id == id) return frame;
    }
    f.fail("crash-check-unanswered", "crash check: request " + std::to_string(id) + " unanswered");
    return std::nullopt;
  };
  if (!call(net::Connect{{net::kProtocolVersion}, "", std::nullopt})) return;
  auto list = call(net::AdminRequest{net::AdminOp::kChannelList, "{}"});
  if (!list || list->type() != FrameType::kChannelListOk) return;
  std::set<std::string> found;
  const json channels = json::parse(std::get<net::AdminReply>(list->body).json);
  for (const json& st : channels["channels"]) {
    const std::string channel = st["name"];
    uint64_t from = 0;
    for (;;) {
      auto page = call(net::AdminRequest{
          net::AdminOp::kBrowse, json{{"channel", channel}, {"from", from}, {"max", 1000}}.dump()});
      if (!page) return;
      auto* ok = std::get_if<net::BrowseOk>(&page->body);
      if (!ok) {
        f.fail("crash-check-browse", "crash check: browse of " + channel + ": " +
                                         std::string(net::frame_type_name(page->type())));
        break;
      }
      if (ok->messages.empty()) break;
      for (const auto& m : ok->messages) {
        found.emplace(m.data.begin(), m.data.end());
        from = std::stoull(*find_metadata(m, meta::kSequence)) + 1;
      }
    }
  }
  uint64_t checked = 0;
  const auto missing = shared.model.missing(found, &checked);
  f.count("confirmed sends checked after a restart", checked);
  for (const auto& [id, channel] : missing) {
    f.fail("lost-confirmed-send", "message " + id + " on " + channel +
                                      " (confirmed; neither deleted nor purged since; never " +
                                      "delivered to the harness) is not stored after the restart");
  }
}

TEST(TortureTest, RandomOperationsAgainstTheRealDaemon) {
  Shared shared;
  Options& o = shared.options;
  o.seed = env_number("WITMQ_TORTURE_SEED", std::random_device{}());
  o.duration = std::chrono::seconds(env_number("WITMQ_TORTURE_SECONDS", 45));
  o.clients = static_cast<int>(env_number("WITMQ_TORTURE_CLIENTS", 6));
  o.margin = ms(env_number("WITMQ_TORTURE_MARGIN_MS", 10000));
  o.ping_bound = ms(env_number("WITMQ_TORTURE_PING_BOUND_MS", 2000));
  std::cout << "torture: seed " << o.seed << " (repeat with WITMQ_TORTURE_SEED=" << o.seed << "), "
            << o.duration.count() << " s, " << o.clients << " clients" << std::endl;
  Rng rng(o.seed);

  const std::string dir = daemon::testing::make_temp_dir("torture");
  ConfigFile config(dir);
  config.write(random_config(rng).dump(2));
  Daemon d({"--config", config.path()}, dir + "/data");
  ASSERT_NE(d.port(), 0) << d.log();

  std::string earlier_logs;  // of the daemons killed before the running one
  const auto end = Clock::now() + o.duration;
  int round = 0;
  uint64_t actor_seed = o.seed;
  for (bool last = false; !last;) {
    ++round;
    // Each round ends at a random moment; the last with a graceful stop.
    const auto round_end =
        std::min<Clock::time_point>(end, Clock::now() + ms(uniform(rng, 5000, 15000)));
    last = round_end == end || end - round_end < 3s;
    shared.stop = false;
    shared.phase = Phase::kRunning;
    shared.protected_channels.clear();
    for (const auto& q : kQueues) {
      if (!chance(rng, 0.5)) continue;
      shared.protected_channels.insert({q, q + ".dlq", q + ".dead"});
    }
    std::vector<std::unique_ptr<Actor>> actors;
    std::vector<std::thread> threads;
    for (int i = 0; i < o.clients; ++i) {
      actors.push_back(std::make_unique<Actor>(i, ++actor_seed, shared));
      threads.emplace_back([&a = *actors.back(), port = d.port()] { a.run(port); });
    }
    threads.emplace_back([&shared, port = d.port()] { pinger(port, shared); });
    auto next_reload = Clock::now() + ms(uniform(rng, 500, 3000));
    while (Clock::now() < (last ? end : round_end)) {
      if (Clock::now() >= next_reload) {
        reload(d, config, rng, shared);
        next_reload = Clock::now() + ms(uniform(rng, 500, 3000));
      }
      std::this_thread::sleep_for(20ms);
    }
    shared.phase = Phase::kStopping;
    if (last) {
      const auto code = d.stop(SIGTERM);
      if (code != 0) {
        shared.findings.fail("graceful-stop", "SIGTERM: exit " +
                                                  (code ? std::to_string(*code) : "none in 60 s") +
                                                  "\n" + tail(d.log(), 20));
      }
    } else {
      d.stop(SIGKILL);
      shared.findings.count("SIGKILLs");
    }
    shared.stop = true;
    for (auto& t : threads) t.join();
    if (last) break;
    shared.model.unseen_deliveries_everywhere();
    shared.stats.restarted();
    earlier_logs += d.log();
    d.start();
    if (d.wait(0ms)) {
      shared.findings.fail("restart-refused", "witmqd did not start after the SIGKILL of round " +
                                                  std::to_string(round) + ":\n" +
                                                  tail(d.log(), 20));
      // The refused directory is kept aside; the run goes on with an empty one.
      earlier_logs += d.log();
      std::filesystem::rename(dir + "/data", dir + "/data.refused-" + std::to_string(round));
      shared.model.forget_messages();
      d.start();
      if (d.wait(0ms)) break;
      continue;
    }
    check_stored(d.port(), shared);
  }

  std::cout << "torture: seed " << o.seed << ", " << round << " round(s)\n";
  for (const auto& [what, n] : shared.findings.counts()) {
    std::cout << "  " << what << ": " << n << "\n";
  }
  const auto failures = shared.findings.failures();
  for (const auto& [kind, failure] : failures) {
    std::string details;
    for (const auto& d : failure.details) details += "\n    " + d;
    ADD_FAILURE() << "torture (WITMQ_TORTURE_SEED=" << o.seed << "): " << kind << ": "
                  << failure.count << " time(s)" << details;
  }
  std::cout << std::flush;
  if (failures.empty()) {
    std::filesystem::remove_all(dir);
  } else {
    d.keep_data();
    std::ofstream(dir + "/witmqd.log") << earlier_logs << d.log();
    std::cout << "torture: data directory, config and witmqd.log kept in " << dir << "\n";
  }
}

}  // namespace
}  // namespace witmq::daemon::torture
