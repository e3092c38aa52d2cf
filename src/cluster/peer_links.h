// The peer link's dialing side (docs/CLUSTERING.md, "The peer link"): one connection from this
// node to every other live node's advertised peer address, opened with a hello carrying the
// cluster's shared secret and kept checked with pings. A link that fails is dialed again after a
// delay that doubles up to 5 s; a refused hello (a wrong secret, another cluster) is reported
// with the peer's reason and retried the same way, since the other side may be fixed.
//
// Threading: runs on the daemon's io_context, one coroutine per peer on a strand of its own.
// refresh() (the set of peers to keep) and the readers may be called from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/node.h"
#include "cluster/peer_frames.h"

namespace witmq::cluster {

struct PeerLinksOptions {
  std::string cluster;  // this cluster's name, sent in the hello
  std::string node_id;  // this node's id, sent in the hello
  std::string token;    // the shared secret
  // Bound on connecting plus the hello's answer, and on a ping's answer.
  std::chrono::milliseconds timeout{2'000};
  // How often an idle link is pinged.
  std::chrono::milliseconds ping_interval{1'000};
  // Replication (optional): frames a peer sends back on this link (replicated, resend,
  // replica-refused), and each time a link comes up. Both run on the link's strand; they must
  // not block.
  std::function<void(const std::string& node, PeerFrame frame)> on_frame;
  std::function<void(const std::string& node)> on_up;
  // Frames queued on one link and not yet written, in bytes: more are dropped (the follower then
  // sees a gap and asks for them again).
  size_t max_queued_bytes = 64 << 20;
};

// up: welcomed, and the last ping was answered in time. connecting: dialing or waiting for the
// welcome. down: the last attempt failed (`error` says how); refused: the peer refused the hello.
enum class PeerLinkState { kConnecting, kUp, kDown, kRefused };
const char* peer_link_state_name(PeerLinkState s);

struct PeerLinkStatus {
  std::string node;
  std::string address;
  PeerLinkState state = PeerLinkState::kConnecting;
  std::string error;        // why the link is down or refused
  int64_t rtt_micros = -1;  // the last ping's round trip, -1 before the first
  uint64_t connects = 0;    // links opened (welcomed) since start
};

class PeerLinks {
 public:
  PeerLinks(boost::asio::io_context& io, PeerLinksOptions options);
  // stop().
  ~PeerLinks();
  PeerLinks(const PeerLinks&) = delete;
  PeerLinks& operator=(const PeerLinks&) = delete;

  // The peers to keep a link to: new ones are dialed, ones not listed (or whose address changed)
  // are closed.
  void refresh(const std::vector<PeerAddress>& peers);
  // Closes every link and dials no more. Idempotent.
  void stop();
  // Queues an encoded frame on the link to `node`; false (and dropped) when that link is not up
  // or its queue is full. Any thread.
  bool send(const std::string& node, std::shared_ptr<const std::string> frame);

  std::vector<PeerLinkStatus> status() const;
  nlohmann::json to_json() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace witmq::cluster
