#include "cluster/workload.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <random>
#include <utility>

#include "client/client.h"
#include "common/message.h"

namespace witmq::cluster::testing {

using history::Delivery;
using history::Op;
using history::OpType;
using history::Outcome;
using history::Recorder;
using Clock = std::chrono::steady_clock;

std::optional<std::string> bounded_http_get(uint16_t port, const std::string& target,
                                            std::chrono::milliseconds bound) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{static_cast<time_t>(bound.count() / 1000),
             static_cast<suseconds_t>((bound.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  std::string reply;
  const auto deadline = Clock::now() + bound;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request =
        "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buf[16384];
      ssize_t n;
      while (Clock::now() < deadline && (n = ::read(fd, buf, sizeof buf)) > 0) {
        reply.append(buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(fd);
  const auto body = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.", 0) != 0 || reply.find(" 200 ") == std::string::npos ||
      body == std::string::npos) {
    return std::nullopt;
  }
  return reply.substr(body + 4);
}

// ---- LeaderObserver ------------------------------------------------------------------------

LeaderObserver::LeaderObserver(std::chrono::milliseconds period) : period_(period) {
  thread_ = std::thread([this] {
    while (!stopping_.load()) {
      poll_once();
      const auto until = Clock::now() + period_;
      while (!stopping_.load() && Clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  });
}

LeaderObserver::~LeaderObserver() {
  stopping_ = true;
  thread_.join();
}

void LeaderObserver::set_node(const std::string& id, uint16_t http_port) {
  std::lock_guard lock(mu_);
  NodeState& n = nodes_[id];
  if (n.http_port != http_port) n = NodeState{http_port, 0, {}, nullptr, {}};
}

void LeaderObserver::forget(const std::string& id) {
  std::lock_guard lock(mu_);
  nodes_.erase(id);
}

void LeaderObserver::poll_now() { poll_once(); }

void LeaderObserver::poll_once() {
  std::lock_guard polling(poll_mu_);
  std::map<std::string, uint16_t> ports;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, n] : nodes_) ports[id] = n.http_port;
  }
  for (const auto& [id, port] : ports) {
    auto body = bounded_http_get(port, "/v1/cluster", std::chrono::milliseconds(500));
    if (!body) continue;  // stopped, restarting, or dead: keep what it said last
    auto v = nlohmann::json::parse(*body, nullptr, false);
    if (!v.is_object() || !v.contains("node")) continue;
    std::map<std::string, uint64_t> leads;
    if (v["node"].contains("leads") && v["node"]["leads"].is_object()) {
      for (const auto& [channel, epoch] : v["node"]["leads"].items()) {
        if (epoch.is_number_unsigned()) leads[channel] = epoch.get<uint64_t>();
      }
    }
    uint16_t client_port = 0;
    const std::string address = v["node"].value("client-address", std::string());
    if (auto colon = address.rfind(':'); colon != std::string::npos) {
      client_port = static_cast<uint16_t>(std::stoi(address.substr(colon + 1)));
    }
    std::lock_guard lock(mu_);
    auto it = nodes_.find(id);
    if (it == nodes_.end() || it->second.http_port != port) continue;
    it->second.leads = std::move(leads);
    it->second.client_port = client_port;
    it->second.view = std::move(v);
    it->second.seen = Clock::now();
  }
}

std::optional<Target> LeaderObserver::route(const std::string& channel) const {
  std::lock_guard lock(mu_);
  std::optional<Target> best;
  for (const auto& [id, n] : nodes_) {
    auto it = n.leads.find(channel);
    if (it == n.leads.end() || n.client_port == 0) continue;
    if (!best || it->second > best->epoch) best = Target{id, n.client_port, it->second};
  }
  if (best) {
    last_route_[channel] = *best;
    return best;
  }
  auto last = last_route_.find(channel);
  if (last == last_route_.end()) return std::nullopt;
  Target t = last->second;
  t.epoch = 0;
  if (auto n = nodes_.find(t.node); n != nodes_.end() && n->second.client_port != 0) {
    t.port = n->second.client_port;
  }
  return t;
}

uint64_t LeaderObserver::epoch_of(const std::string& node, const std::string& channel) const {
  std::lock_guard lock(mu_);
  auto n = nodes_.find(node);
  if (n == nodes_.end()) return 0;
  auto it = n->second.leads.find(channel);
  return it == n->second.leads.end() ? 0 : it->second;
}

uint64_t LeaderObserver::fresh_epoch_of(const std::string& node, const std::string& channel,
                                        std::chrono::milliseconds max_age) const {
  std::lock_guard lock(mu_);
  auto n = nodes_.find(node);
  if (n == nodes_.end() || Clock::now() - n->second.seen > max_age) return 0;
  auto it = n->second.leads.find(channel);
  return it == n->second.leads.end() ? 0 : it->second;
}

uint16_t LeaderObserver::port_of(const std::string& node) const {
  std::lock_guard lock(mu_);
  auto n = nodes_.find(node);
  return n == nodes_.end() ? 0 : n->second.client_port;
}

nlohmann::json LeaderObserver::view(const std::string& node) const {
  std::lock_guard lock(mu_);
  auto n = nodes_.find(node);
  return n == nodes_.end() ? nlohmann::json() : n->second.view;
}

// ---- Workload ------------------------------------------------------------------------------

// One producer's or consumer's connections, one per node, opened when first needed and dropped
// after an unknown outcome (a late reply must not be taken for the next one's).
class Workload::Session {
 public:
  Session(std::string name, const WorkloadOptions& options)
      : name_(std::move(name)), options_(options) {}

  client::Client* get(const Target& t, std::string* error) {
    auto& slot = clients_[t.node];
    if (slot.client && (slot.port != t.port || !slot.client->is_open())) slot.client.reset();
    if (!slot.client) {
      client::Options o;
      o.connect_timeout = std::chrono::milliseconds(2000);
      o.request_timeout = options_.request_timeout;
      auto c = client::Client::connect("127.0.0.1", t.port, name_, o);
      if (!c.ok()) {
        *error = "connect: " + c.error().message;
        return nullptr;
      }
      // Only the lease: a configuration that names channels subscribes to them on this node at
      // once, and a node refuses one naming a channel it released (led elsewhere), so a session
      // that names every channel could not be used on a node that leads only some of them. The
      // receives subscribe on the node that serves them.
      GuestConfiguration config;
      config.extensions = Metadata{{"lease-ms", std::to_string(options_.lease_ms)}};
      if (auto st = (*c)->update_guest_configuration(config); !st.ok()) {
        *error = "update-guest-configuration: " + st.error().message;
        return nullptr;
      }
      slot.client = std::move(*c);
      slot.port = t.port;
    }
    return slot.client.get();
  }
  void drop(const std::string& node) { clients_.erase(node); }

  const std::string& name() const { return name_; }

 private:
  struct Slot {
    uint16_t port = 0;
    std::unique_ptr<client::Client> client;
  };
  const std::string name_;
  const WorkloadOptions& options_;
  std::map<std::string, Slot> clients_;
};

namespace {

// ok, failed (the server refused), or unknown (no answer: timeout, connection lost, or the
// server going away while it worked on it).
Outcome classify(const Error& e, const client::Client& c) {
  if (e.code == ErrorCode::kUnavailable || !c.is_open()) return Outcome::kUnknown;
  return Outcome::kFailed;
}

Delivery delivery_of(const Message& m) {
  Delivery d;
  d.id.assign(m.data.begin(), m.data.end());
  if (auto s = find_metadata(m, meta::kSequence)) d.sequence = std::stoull(*s);
  if (auto a = find_metadata(m, meta::kAttempt)) d.attempt = static_cast<uint32_t>(std::stoul(*a));
  if (auto r = find_metadata(m, meta::kReceipt)) d.receipt = *r;
  return d;
}

}  // namespace

Workload::Workload(WorkloadOptions options, Recorder& recorder)
    : options_(std::move(options)), recorder_(recorder) {}

Workload::~Workload() { stop(); }

void Workload::start() {
  for (int i = 0; i < options_.producers; ++i) threads_.emplace_back([this, i] { produce(i); });
  for (int i = 0; i < options_.consumers; ++i) threads_.emplace_back([this, i] { consume(i); });
}

void Workload::stop() {
  stopping_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Workload::produce(int index) {
  Session session("producer-" + std::to_string(index + 1), options_);
  std::mt19937 rng(options_.seed * 1000 + static_cast<uint32_t>(index));
  uint64_t next = 0;
  while (!stopping_.load()) {
    const std::string& channel = options_.channels[rng() % options_.channels.size()];
    auto target = options_.route(channel);
    if (!target) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    Op op;
    op.type = OpType::kSend;
    op.process = session.name();
    op.node = target->node;
    op.channel = channel;
    op.epoch = target->epoch;
    std::vector<Message> batch(1 + rng() % static_cast<uint32_t>(options_.max_batch));
    for (auto& m : batch) {
      const std::string id = session.name() + "-" + std::to_string(++next);
      m.data.assign(id.begin(), id.end());
      op.ids.push_back(id);
    }
    op.invoke_ns = Recorder::now_ns();
    std::string error;
    client::Client* c = session.get(*target, &error);
    if (!c) {
      // Nothing was sent: the op did not happen.
      op.outcome = Outcome::kFailed;
      op.error = error;
      op.complete_ns = Recorder::now_ns();
      recorder_.add(std::move(op));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const Status st = c->send(channel, batch);
    op.complete_ns = Recorder::now_ns();
    if (st.ok()) {
      op.outcome = Outcome::kOk;
      sends_ok_ += 1;
    } else {
      op.outcome = classify(st.error(), *c);
      op.error = st.error().message;
      if (op.outcome == Outcome::kUnknown) session.drop(target->node);
    }
    recorder_.add(std::move(op));
    std::this_thread::sleep_for(options_.pause_between_ops);
  }
}

void Workload::consume(int index) {
  Session session("consumer-" + std::to_string(index + 1), options_);
  std::mt19937 rng(options_.seed * 1000 + 500 + static_cast<uint32_t>(index));
  size_t turn = static_cast<size_t>(index);
  while (!stopping_.load()) {
    const std::string& channel = options_.channels[turn++ % options_.channels.size()];
    auto target = options_.route(channel);
    if (!target) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    Op op;
    op.type = OpType::kReceive;
    op.process = session.name();
    op.node = target->node;
    op.channel = channel;
    op.epoch = target->epoch;
    op.invoke_ns = Recorder::now_ns();
    std::string error;
    client::Client* c = session.get(*target, &error);
    if (!c) {
      op.outcome = Outcome::kFailed;
      op.error = error;
      op.complete_ns = Recorder::now_ns();
      recorder_.add(std::move(op));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    auto got = c->subscribe_try_receive(channel, 100);
    op.complete_ns = Recorder::now_ns();
    std::vector<Message> messages;
    if (got.ok()) {
      op.outcome = Outcome::kOk;
      if (*got) messages = std::move(**got);
      for (const auto& m : messages) op.deliveries.push_back(delivery_of(m));
    } else {
      op.outcome = classify(got.error(), *c);
      op.error = got.error().message;
    }
    const std::string node = target->node;
    recorder_.add(std::move(op));
    if (!got.ok()) {
      if (classify(got.error(), *c) == Outcome::kUnknown) session.drop(node);
      continue;
    }
    for (const auto& m : messages) {
      if (static_cast<int>(rng() % 100) < options_.skip_complete_percent) continue;
      Op settle;
      settle.type = OpType::kComplete;
      settle.process = session.name();
      settle.node = node;
      settle.channel = channel;
      settle.ids = {delivery_of(m).id};
      settle.receipt = delivery_of(m).receipt;
      settle.epoch = options_.epoch_of ? options_.epoch_of(node, channel) : 0;
      settle.invoke_ns = Recorder::now_ns();
      const Status st = c->complete_message(m);
      settle.complete_ns = Recorder::now_ns();
      if (st.ok()) {
        settle.outcome = Outcome::kOk;
        completes_ok_ += 1;
      } else {
        settle.outcome = classify(st.error(), *c);
        settle.error = st.error().message;
      }
      recorder_.add(std::move(settle));
      if (!st.ok() && classify(st.error(), *c) == Outcome::kUnknown) {
        session.drop(node);
        break;
      }
    }
  }
}

bool Workload::drain(std::chrono::milliseconds limit) {
  // One thread per channel (their leaders are spread over the nodes), each with its own
  // connections. The limit is on progress, not on the whole drain: after a long run a channel
  // may hold tens of thousands of unsettled messages, and the drain fails only when nothing was
  // received or settled on any channel for `limit` (or after five times `limit` in all).
  const auto start = Clock::now();
  std::atomic<int64_t> progress_ns{Recorder::now_ns()};
  std::atomic<bool> gave_up{false};
  auto stalled = [&] {
    if (Clock::now() - start > limit * 5) return true;
    return Recorder::now_ns() - progress_ns.load() >
           std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count();
  };
  std::vector<std::thread> threads;
  for (const auto& channel : options_.channels) {
    threads.emplace_back([&, channel] {
      if (!drain_channel(channel, progress_ns, stalled)) gave_up = true;
    });
  }
  for (auto& t : threads) t.join();
  return !gave_up.load();
}

bool Workload::drain_channel(const std::string& channel, std::atomic<int64_t>& progress_ns,
                             const std::function<bool()>& stalled) {
  Session session("drain-" + channel, options_);
  const auto quiet = std::chrono::milliseconds(options_.lease_ms + 1000);
  auto empty_since = Clock::now();
  bool seen_empty = false;
  for (;;) {
    if (stalled()) return false;
    auto target = options_.route(channel);
    if (!target) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    Op op;
    op.type = OpType::kReceive;
    op.process = session.name();
    op.node = target->node;
    op.channel = channel;
    op.epoch = target->epoch;
    op.drain = true;
    op.invoke_ns = Recorder::now_ns();
    std::string error;
    client::Client* c = session.get(*target, &error);
    if (!c) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    auto got = c->subscribe_try_receive(channel, 300);
    op.complete_ns = Recorder::now_ns();
    std::vector<Message> messages;
    if (got.ok()) {
      op.outcome = Outcome::kOk;
      if (*got) messages = std::move(**got);
      for (const auto& m : messages) op.deliveries.push_back(delivery_of(m));
    } else {
      op.outcome = classify(got.error(), *c);
      op.error = got.error().message;
    }
    const std::string node = target->node;
    recorder_.add(std::move(op));
    if (!got.ok()) {
      session.drop(node);
      seen_empty = false;
      continue;
    }
    if (messages.empty()) {
      if (!seen_empty) empty_since = Clock::now();
      seen_empty = true;
      if (Clock::now() - empty_since > quiet) return true;
      continue;
    }
    seen_empty = false;
    progress_ns = Recorder::now_ns();
    // The batch's completes are pipelined on the connection (one round trip, one commit group),
    // each recorded with its own reply time; one not answered within the request timeout is an
    // unknown outcome.
    struct Pending {
      std::mutex mu;
      std::condition_variable cv;
      size_t left = 0;
      std::vector<std::optional<Status>> results;
      std::vector<int64_t> done_ns;
    };
    auto pending = std::make_shared<Pending>();
    pending->left = messages.size();
    pending->results.resize(messages.size());
    pending->done_ns.resize(messages.size());
    const uint64_t epoch = options_.epoch_of ? options_.epoch_of(node, channel) : 0;
    const int64_t invoked = Recorder::now_ns();
    auto async = c->async();
    for (size_t i = 0; i < messages.size(); ++i) {
      async->complete_message(messages[i], [pending, i](Status st) {
        std::lock_guard lock(pending->mu);
        pending->results[i] = std::move(st);
        pending->done_ns[i] = Recorder::now_ns();
        if (--pending->left == 0) pending->cv.notify_all();
      });
    }
    bool lost_connection = false;
    {
      std::unique_lock lock(pending->mu);
      pending->cv.wait_for(lock, options_.request_timeout + std::chrono::seconds(1),
                           [&] { return pending->left == 0; });
      for (size_t i = 0; i < messages.size(); ++i) {
        Op settle;
        settle.type = OpType::kComplete;
        settle.process = session.name();
        settle.node = node;
        settle.channel = channel;
        settle.ids = {delivery_of(messages[i]).id};
        settle.receipt = delivery_of(messages[i]).receipt;
        settle.epoch = epoch;
        settle.drain = true;
        settle.invoke_ns = invoked;
        const auto& st = pending->results[i];
        if (!st) {
          settle.complete_ns = Recorder::now_ns();
          settle.outcome = Outcome::kUnknown;
          settle.error = "no reply within the request timeout";
          lost_connection = true;
        } else {
          settle.complete_ns = pending->done_ns[i];
          settle.outcome = st->ok() ? Outcome::kOk : classify(st->error(), *c);
          if (!st->ok()) settle.error = st->error().message;
          if (settle.outcome == Outcome::kUnknown) lost_connection = true;
          if (st->ok()) progress_ns = Recorder::now_ns();
        }
        recorder_.add(std::move(settle));
      }
    }
    if (lost_connection) session.drop(node);
  }
}

}  // namespace witmq::cluster::testing
