// Forwarding (docs/CLUSTERING.md, "Forwarding"): in cluster mode a connection's operations on a
// channel that another node leads are relayed to that node, so any node serves any client. The
// session decides, in one place of its dispatch, which frames go elsewhere; the implementation
// (src/forward/) knows the cluster and the client library, which net/ does not.
//
// The forwarding connection acts on behalf of the client: it connects to the leader with the
// client's name (so subscriptions and leases belong to the same client there) and a connect token
// that proves cluster membership (cluster-peer-token) and names the client's identity, whose
// grants the entry node has already checked. See forward_token() below.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.h"
#include "common/unique_function.h"
#include "net/frames.h"

namespace witmq::net {

// The node that serves a channel.
struct ForwardTarget {
  std::string node;     // its id
  std::string address;  // its advertised protocol address, HOST:PORT
  bool operator==(const ForwardTarget&) const = default;
};

// One client connection's link to one other node. Requests go out in the order they are made.
class ForwardLink {
 public:
  virtual ~ForwardLink() = default;
  // Relays `request` (any request frame; its request id is the link's business) and calls `done`
  // with the reply frame (an error reply is a frame too), or with kUnavailable naming the node
  // when the link could not be opened or was lost. Any thread; `done` runs on another.
  virtual void request(Frame request, UniqueFunction<void(Result<Frame>)> done) = 0;
  // False once the link failed or was closed: the next request needs a new link.
  virtual bool usable() const = 0;
  // Closes the connection to the other node (the client left): what it held there (leases,
  // waiting receives) is released as for any closed connection.
  virtual void close() = 0;
};

// What locate() does about a channel whose leader is not known now.
enum class Locate {
  // Answers at once: kUnavailable naming the channel.
  kKnownOnly,
  // Waits for the leader of a channel the cluster has placed (its leader just died, an election
  // is under way); a channel the cluster has not placed is kNotFound at once. For settles: a
  // receipt names any channel its bearer likes, and must never create one.
  kPlaced,
  // Waits, placing a channel the cluster does not know yet first (the operations that create a
  // channel on first use).
  kPlace,
};

class Forwarder {
 public:
  virtual ~Forwarder() = default;
  using Located = UniqueFunction<void(Result<std::optional<ForwardTarget>>)>;
  // Who serves `channel`: nullopt when this node does, a target when another node does. A
  // channel without a known leader is treated as `mode` says; a wait is bounded by the forward
  // timeout, then kUnavailable naming the channel. `done` may run at once on the caller's thread
  // or later on another.
  virtual void locate(const std::string& channel, Locate mode, Located done) = 0;
  // Whether this node leads `channel` now, as its last view says: the answer locate() would give
  // at once (nullopt), without its bookkeeping. Lets a connection serve the operations of the
  // channels its node leads on its own path, with no hand-off.
  virtual bool leads(const std::string& /*channel*/) { return false; }
  // A new link to `target` acting for the client `client_name` with identity `identity` ("" when
  // the server has no authentication).
  // The node that holds the request-reply inbox `reply_to` names ("<node id>/<token>", made by
  // a broker with BrokerOptions::inbox_prefix): a target when that is another live node, nullopt
  // when the inbox is this node's or names no live node (the reply is then served here, where
  // it finds no inbox and is dropped and counted).
  virtual std::optional<ForwardTarget> inbox_node(std::string_view reply_to) = 0;
  virtual std::shared_ptr<ForwardLink> link(const ForwardTarget& target,
                                            const std::string& client_name,
                                            const std::string& identity) = 0;
  // The bound on one relayed operation (cluster-forward-timeout-ms).
  virtual std::chrono::milliseconds timeout() const = 0;
};

// Forwarding for a front door that serves a request on a thread that may wait (the HTTP admin
// API and publishing, docs/HTTP.md "In a cluster"): one call relays one request to the channel's
// leader and waits for its answer. Links are kept per (node, identity) and reused; each acts for
// an anonymous client (connect name ""), since these requests hold nothing on the leader between
// calls. A leader that left a relayed request unanswered (the link failed or timed out) is
// failing for one forward timeout: requests for it meanwhile fail at once, unrelayed, so that
// those queued behind the first on the admin pool do not each wait a whole timeout in turn.
// Thread-safe.
class Relay {
 public:
  explicit Relay(std::shared_ptr<Forwarder> forwarder) : forwarder_(std::move(forwarder)) {}
  // Whether this node serves `channel` now, as its last view says, without waiting: false when
  // another node leads it or no leader is known (call() then waits for one).
  bool served_here(const std::string& channel);
  // nullopt when this node serves `channel` (it leads it; or `mode` is kPlaced and the cluster
  // has not placed it, and this node answers as a node without it does). Otherwise the leader's
  // reply to `request` (an error reply is returned as its Error), or kUnavailable naming the
  // channel and the node when it could not be relayed. Blocks until the leader is known and has
  // answered, each bounded by cluster-forward-timeout-ms.
  Result<std::optional<Frame>> call(const std::string& channel, Locate mode, Frame request,
                                    const std::string& identity);

 private:
  std::shared_ptr<Forwarder> forwarder_;
  std::mutex mu_;  // guards links_ and failing_
  std::map<std::pair<std::string, std::string>, std::shared_ptr<ForwardLink>> links_;
  // "<node>\n<address>" of leaders that failed a relayed request, and until when they count as
  // failing.
  std::map<std::string, std::chrono::steady_clock::time_point> failing_;
};

// A forwarding connection's connect token: "witmq-forward\n<identity>\n<cluster-peer-token>".
inline constexpr std::string_view kForwardTokenPrefix = "witmq-forward\n";
std::string forward_token(std::string_view identity, std::string_view peer_token);
// The identity a forwarding token names, when `token` is one whose secret equals `peer_token`
// (compared in constant time); kPermissionDenied otherwise (never echoing the token).
Result<std::string> check_forward_token(std::string_view token, std::string_view peer_token);

}  // namespace witmq::net
