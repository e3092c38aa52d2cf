// The torture test's clients (docs/TORTURE.md): a connection doing random operations with a
// few in flight, checking every answer, and a pinger timing round trips.
#pragma once

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "torture_workload.h"

namespace witmq::daemon::torture {

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
      // The daemon is gone (killed, or died: the run records which); a close just before was
      // part of that.
      f_.count("connects refused");
      unexplained_close_.clear();
      reconnecting_at_ = Clock::now() + 100ms;
      return;
    }
    // The daemon still accepts connections: the close was its choice, and it sent no goaway.
    if (!unexplained_close_.empty() && shared_.running()) {
      f_.fail("closed-without-goaway", unexplained_close_);
    }
    unexplained_close_.clear();
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
  // done on the server, or may still do until the daemon stops, is recorded as possible.
  void give_up(const Pending& p) {
    switch (p.type) {
      case FrameType::kChannelDelete:
      case FrameType::kPurge:
        model_.given_up_removal(p.channel, p.type == FrameType::kChannelDelete);
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
          unexplained_close_ = who() +
                               ": the server closed the connection without goaway; pending:" +
                               (in_flight.empty() ? " none" : in_flight) +
                               (stream_ != StreamState::kNone ? "; a stream was open" : "");
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
    if (p.type == FrameType::kChannelDelete) model_.delete_finished(p.channel);
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
  // A close without goaway, judged at the next connect: one the daemon's death explains is not.
  std::string unexplained_close_;
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
inline void pinger(uint16_t port, Shared& shared) {
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
        Wire probe;  // a close is unexplained only if the daemon still accepts connections
        if (shared.running() && (got == Wire::Got::kFrame || probe.open(port, &why))) {
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

}  // namespace witmq::daemon::torture
