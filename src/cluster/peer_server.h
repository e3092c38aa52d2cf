// The peer link's listener (docs/CLUSTERING.md, "The peer link"): the TCP endpoint other nodes of
// the cluster dial on cluster-peer-listen. A connection must complete the handshake (hello,
// challenge, proof: cluster/peer_auth.h) within the handshake bound, and until it has, the
// listener says nothing that names this node or its cluster; anything else is refused with a
// `refused` frame and the connection closed. Frame bodies are bounded before they are read (4096
// bytes during the handshake, cluster-peer-max-frame-bytes after), so no peer, known or not, can
// make the node buffer more than that, and malformed bytes only close their connection.
//
// Threading: runs on the daemon's io_context; each connection is a coroutine on a strand of its
// own. stop() may be called from any thread.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cluster/peer_frames.h"
#include "common/result.h"

namespace witmq::cluster {

// What one authenticated connection may make the listener hold for it: its answers not yet
// written (a peer that does not read them), and frames handed to replication and not yet stored
// and answered (a peer that sends faster than they are stored; their bytes are bounded by
// cluster-peer-max-frame-bytes). Over either bound the listener reads nothing more from that
// connection until it is back under it, so the peer's further frames wait in TCP.
inline constexpr size_t kPeerMaxAnswerBytes = 1 << 20;
inline constexpr size_t kPeerMaxFramesInFlight = 4096;

struct PeerServerOptions {
  std::string listen;   // HOST:PORT (an IP address; port 0 picks a free one)
  std::string cluster;  // this cluster's name: the dialer's proof covers it
  std::string node_id;  // this node's id, told in the welcome (only after the dialer's proof)
  std::string token;    // the shared secret the dialer must prove it holds
  uint32_t max_frame_bytes = 16 * 1024 * 1024;
  // How long a new connection may take to complete the handshake (hello, proof).
  std::chrono::milliseconds handshake_timeout{3'000};
  // Connections open at once (authenticated or not); one more is closed at once.
  size_t max_connections = 64;
  // Of those, connections that have not completed the handshake: one more closes the oldest of
  // them. Strangers hold these few slots for the handshake bound at most and never the others,
  // so authenticated peers keep max_connections - max_unauthenticated slots whatever strangers
  // do, and a peer's handshake (a few round trips) is not crowded out by connections that wait.
  size_t max_unauthenticated = 8;
  // Replication (optional): a replicate frame from the authenticated node `peer`. `reply` queues
  // an encoded frame back on the same connection (any thread, any time; dropped once it is
  // closed). Runs on the connection's strand; it must not block. Without it, a replicate frame
  // is refused like any frame a listener does not take.
  using ReplyFn = std::function<void(std::string frame)>;
  std::function<void(const std::string& peer, PeerReplicate frame, ReplyFn reply)> on_replicate;
  // A snapshot chunk from a channel's leader (docs/CLUSTERING.md, "Snapshots"); unset: refused.
  std::function<void(const std::string& peer, PeerSnapshot frame, ReplyFn reply)> on_snapshot;
};

// Counters for /v1/cluster and /metrics.
struct PeerServerFigures {
  uint64_t connections_open = 0;
  uint64_t peers_authenticated = 0;  // connections whose hello was accepted, since start
  uint64_t peers_refused = 0;        // connections refused (bad hello, token, frame, limit)
  uint64_t frames_received = 0;
};

class PeerServer {
 public:
  PeerServer(boost::asio::io_context& io, PeerServerOptions options);
  // stop().
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  // Binds and starts accepting. Errors name cluster-peer-listen and the address.
  Status listen();
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  // Stops accepting and closes every connection. Idempotent; any thread.
  void stop();

  PeerServerFigures figures() const;
  nlohmann::json to_json() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace witmq::cluster
