// Session: one client connection of the protocol server (docs/PROTOCOL.md).
//
// Three coroutines run on the connection's strand, and every broker callback is posted back to
// it, so the state below is only ever touched by one thread at a time:
//   - the reader reads into an input buffer, decodes whole frames with the codec and starts
//     each request in frame order. Requests that wait (send until durable, receives, admin calls)
//     complete later; at most max-in-flight may be unanswered, holding at most
//     max-in-flight-bytes of decoded requests; beyond either the reader stops reading (TCP
//     backpressure). The buffer grows only as bytes arrive, never on a length field's word, and
//     before connect a frame may be at most kMaxConnectFrameBytes.
//   - the writer owns the socket's write side: replies and deliver frames are encoded into a
//     pending buffer, which the writer swaps with the one it writes, so replies leave in completion
//     order (out of order relative to requests) without one write per frame.
// An idle connection holds no buffer: once the reader has decoded everything and the client has
// nothing more queued, the input buffer is given back and the next read goes into a few bytes
// inside the session (the buffer is allocated again when bytes arrive); once the writer has
// written everything, both output buffers are given back. So a burst's memory leaves with it, and
// an idle connection costs the session, its coroutines and the broker's client (docs/
// PERFORMANCE.md has the figures).
//   - the watchdog closes a connection that has not completed connect within connect-timeout-ms,
//     that is idle past idle-timeout-ms, or whose queued output stays above the output cap (a
//     client that stopped reading) past output-stall-timeout-ms.
// Output is bounded (max-output-bytes): above the cap the reader pauses, the stream and the
// connection's admin calls wait, waiting receives leave the broker until it drains (so that they
// take nothing they could not deliver), a stream round is sized by the bytes left under the cap,
// and a reply that completes above it is refused with resource-exhausted (a receive's messages
// released). So queued output stays under the cap plus one reply.
// Admin calls run on the shared admin pool one at a time per connection, so one connection's
// queue of calls never stands in front of another's.
// Every close is explained: goaway with the reason where it can still be written, otherwise a log
// line at info or above and ServerCounters::closed_without_goaway.
// On the TLS listener the session first completes the TLS handshake (bounded by
// tls-handshake-timeout-ms), then runs the same three coroutines over the TLS stream.
// A stream (section 7) is one broker receive at a time, sized by the credit left, so the server
// never acquires more than the client granted; a client without credit holds no broker waiter.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "auth/authenticator.h"
#include "broker/broker.h"
#include "common/message.h"
#include "common/result.h"
#include "net/codec.h"
#include "net/frames.h"
#include "net/server.h"

namespace witmq::net {

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `socket` must be bound to a strand of its own: every handler of the session runs on it. With
  // `tls` (the TLS listener's context, which must outlive the session) the connection speaks TLS.
  Session(uint64_t id, boost::asio::ip::tcp::socket socket, ServerContext& context,
          boost::asio::ssl::context* tls = nullptr);
  ~Session();

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Starts the reader, the writer and the watchdog (on TLS, once the handshake is done).
  void start();
  // Graceful close (server stop): stop reading requests, finish the ones in flight, answer
  // waiting receives with unavailable, end the stream, send goaway (unavailable) and close.
  // Safe from any thread.
  void shutdown();
  // Closes at once without goaway (shutdown timeout passed). Safe from any thread.
  void abort();
  // After a reload: when the connection's identity was revoked, sends goaway
  // (permission-denied), ends its waiting receives and its stream and closes; nothing is
  // delivered to it from then on. Safe from any thread.
  void revalidate();

  // Bytes the connection's input and output buffers hold now (their capacity). Safe from any
  // thread; for the figures of Server::footprint().
  size_t buffered_bytes() const { return buffered_bytes_.load(std::memory_order_relaxed); }

  // Bytes a read goes into while the connection holds no input buffer: enough for a small request
  // whole (a ping, a settle, a small send), so an idle connection waits on these alone.
  static constexpr size_t kIdleReadBytes = 256;

 private:
  using Clock = std::chrono::steady_clock;

  // An admin call waiting for its turn on the admin pool.
  struct AdminCall {
    uint32_t request_id = 0;
    AdminOp op{};
    std::string json;
    size_t bytes = 0;  // counted against max-in-flight-bytes until answered
  };

  // A subscribe-receive or subscribe-try-receive waiting on the broker.
  struct ReceiveRequest {
    uint32_t request_id = 0;
    std::string channel;
    bool try_receive = false;
    Clock::time_point deadline;  // try_receive only
  };

  // The connection's stream (section 7); active between stream-start and stream-stop-ok or
  // stream-end.
  struct Stream {
    bool active = false;
    uint32_t id = 0;      // the stream-start request id: deliver frames carry it
    uint64_t credit = 0;  // messages the server may still deliver
    bool receive_pending = false;
    // stream-stop requests waiting for the pending receive to return; answered together.
    std::vector<uint32_t> stop_ids;
  };

  // TLS only: the server handshake, then the three coroutines; closes on failure or timeout.
  boost::asio::awaitable<void> handshake();
  void start_loops();
  // Runs one of the three loops; an exception that escapes it is logged and closes the
  // connection (goaway internal when it can still be written).
  void spawn(boost::asio::awaitable<void> (Session::*loop)(), const char* name);
  void on_loop_failure(const char* name, std::exception_ptr e);
  boost::asio::awaitable<void> read_loop();
  boost::asio::awaitable<void> write_loop();
  boost::asio::awaitable<void> watchdog();

  // Reading.
  bool reading_paused() const;
  void decode_buffered();
  void handle_first_frame(Frame& frame);
  void handle_decode_error(const DecodeError& e);
  void handle(Frame& frame);
  // A request served by this node's broker.
  void serve(Frame& frame);
  void handle_connect(uint32_t id, const Connect& c);
  void handle_send(uint32_t id, Send& s);
  void handle_update(uint32_t id, const UpdateGuestConfiguration& u);
  void handle_settle(uint32_t id, const Message& m, bool complete);
  void handle_request(uint32_t id, Request& r);
  void on_request_done(uint32_t id, size_t bytes, Result<std::vector<Message>> result);
  void handle_reply(uint32_t id, Reply& r);
  void handle_stream_start(uint32_t id, const StreamStart& s);
  void handle_credit(uint32_t id, const Credit& c);
  void handle_stream_stop(uint32_t id);
  void handle_admin_request(uint32_t id, AdminRequest& a);
  // Cluster mode: when `frame` is an operation on a channel another node leads, checks the
  // connection's grants here, relays it there and returns true (net/forward.h). The one place
  // that decides what is forwarded.
  bool maybe_forward(Frame& frame);
  void forward(Frame frame, std::string channel, const ForwardTarget& target, size_t bytes);
  void on_forwarded(uint32_t id, const std::string& channel, const ForwardTarget& target,
                    Result<Frame> reply, size_t bytes);
  // Starts the next queued admin call unless one runs or the output is over its cap.
  void run_admin();
  // ok when the connection's identity may do `action` on `channel` (always without an
  // authenticator).
  Status authorize(auth::Action action, std::string_view channel);

  // Receives.
  void start_receive(std::shared_ptr<ReceiveRequest> r);
  void on_receive(std::shared_ptr<ReceiveRequest> r, Result<std::vector<Message>> result);
  // Drops the messages of `messages` from index `keep` on: they did not fit in one frame.
  // `why` says why, for the log line.
  void release(std::vector<Message>& messages, size_t keep, std::string_view why);
  // How many of `messages` fit in `budget` bytes with `overhead` bytes besides them (maybe 0).
  static size_t fitting(std::span<const Message> messages, size_t overhead, size_t budget);
  // Largest frame the client accepts: max-frame-bytes plus the length field.
  size_t frame_limit() const { return size_t{opts_.limits.max_frame_bytes} + kLengthFieldBytes; }
  // Bytes of output a reply may still queue without passing max-output-bytes.
  size_t output_room() const {
    return opts_.max_output_bytes > queued_bytes() ? opts_.max_output_bytes - queued_bytes() : 0;
  }
  // How many of `messages` a reply with `overhead` bytes besides them may carry now: what fits in
  // one frame (at least one) while the output is under its cap, none over it.
  size_t reply_fitting(std::span<const Message> messages, size_t overhead) const;

  // Streaming.
  void pump_stream();
  void on_stream_receive(Result<broker::DeliveredBatch> result);
  void end_stream(const Error& error);
  void finish_stream_stop();
  void deliver(const broker::DeliveredBatch& batch);

  // Writing. Every reply goes through these; `answered` counts a request as no longer in flight.
  void reply_empty(uint32_t id, FrameType type);
  void reply_error(uint32_t id, const Error& error);
  // `bytes`: what the request counted against max-in-flight-bytes.
  void answered(size_t bytes = 0);
  bool can_write() const { return !closed_ && !close_after_flush_; }
  void queued();  // after appending to out_pending_: wake the writer, check the output cap
  size_t queued_bytes() const { return out_pending_.size() + out_writing_.size(); }
  void goaway(uint32_t id, const Error& error);

  void begin_drain();
  void maybe_finish_drain();
  void close();  // idempotent: close the socket, disconnect the broker client, tell the server
  // close() where no goaway can be written: logs `why` (at info when the client went away, a
  // write failing) and counts it.
  void close_without_goaway(std::string_view why, bool peer_gone = false);
  void wake_reader();
  // While reading is paused the client's input is not read, so its close would not be seen until
  // reading resumes, which a waiting `subscribe-receive` may never let happen: watch the socket
  // for the client's FIN or reset (never reading its data) and close the connection when it comes.
  void watch_for_peer_close();
  bool peer_closed();
  void ensure_input_space();
  // The input buffer and both output buffers given back (the connection went idle).
  void release_input();
  // Counts an input buffer of `size` bytes against max-input-buffer-bytes: false (nothing
  // counted) when the server's input buffers hold too much already.
  bool charge_input(size_t size);
  void release_output();
  // Publishes the bytes the connection's buffers hold now (ServerCounters::buffered_bytes and
  // buffered_bytes()).
  void account_buffers();
  void set_state(ConnectionState state);
  template <typename F>
  void post(F&& f);

  // The TCP connection's socket is socket_ for a plain connection and tls_->next_layer() on TLS;
  // socket_ then is moved-from but keeps the strand, which every handler runs on.
  boost::asio::ip::tcp::socket& lowest_socket() { return tls_ ? tls_->next_layer() : socket_; }

  const uint64_t id_;
  boost::asio::ip::tcp::socket socket_;
  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_;
  // TLS: set after a successful handshake in which the client presented a certificate that
  // verified against tls-client-ca-file; the subject's common name ("" when it has none). The
  // identity a client certificate proves.
  std::optional<std::string> peer_certificate_cn_;
  bool handshake_done_ = false;
  ServerContext& ctx_;
  const ServerOptions& opts_;
  broker::Broker& broker_;

  // Input: bytes [in_begin_, in_end_) of in_ are read but not yet decoded. Empty while the
  // connection is idle; reads then go into idle_read_.
  std::vector<uint8_t> in_;
  size_t in_begin_ = 0, in_end_ = 0;
  size_t need_ = 0;  // bytes the codec asked for beyond what is buffered
  // What in_ is allocated with when bytes arrive: kInitialInputBytes, doubled (up to
  // kInputBytes) each time a read fills the buffer, back to kInitialInputBytes when idle.
  size_t read_size_ = 0;
  // The last read took less than it was offered: the client had nothing more queued.
  bool drained_ = true;
  std::array<uint8_t, kIdleReadBytes> idle_read_;
  // The limits the first frame is decoded with: max-frame-bytes at most kMaxConnectFrameBytes.
  Limits connect_limits_;
  Clock::time_point accepted_at_;
  Clock::time_point last_read_;

  // Output: replies are appended to out_pending_ while the writer writes out_writing_.
  Buffer out_pending_, out_writing_;
  bool over_cap_ = false;
  Clock::time_point over_cap_since_;

  boost::asio::steady_timer reader_wake_, writer_wake_, watchdog_timer_, handshake_timer_;
  bool reader_waiting_ = false, writer_waiting_ = false;
  bool watching_peer_ = false;  // a wait for readability of the paused socket is pending

  broker::ClientPtr client_;
  // The identity connect authenticated; null without an authenticator. Shared with admin calls
  // running on the admin pool.
  std::shared_ptr<auth::Access> access_;
  bool connected_ = false;
  // The name connect gave: forwarded requests act for the same client on the leader.
  std::string client_name_;
  // This connection is a cluster node forwarding its client's requests (a forwarding token): it
  // is served here and never forwarded again.
  bool forwarded_ = false;
  // Links to the other nodes this connection's requests were forwarded to, by node id.
  std::vector<std::pair<ForwardTarget, std::shared_ptr<ForwardLink>>> links_;
  uint32_t in_flight_ = 0;
  size_t in_flight_bytes_ = 0;  // decoded size of the requests in flight (sends, admin calls)
  std::deque<AdminCall> admin_queue_;
  bool admin_running_ = false;
  // Receives taken out of the broker while the output is over its cap; restarted when it drains.
  std::vector<std::shared_ptr<ReceiveRequest>> parked_;
  Stream stream_;
  // From the last successful update-guest-configuration: what the stream draws from.
  std::vector<std::string> configured_channels_;
  uint32_t stream_batch_size_ = 0;
  // The most bytes one message takes in a reply under the limits: sizes stream rounds by bytes.
  size_t max_message_wire_bytes_ = 0;

  bool closing_ = false;            // no more requests are decoded; input is discarded
  bool draining_ = false;           // server stop: waiting for in-flight requests before goaway
  bool close_after_flush_ = false;  // goaway queued: close once it is written
  Clock::time_point close_deadline_;
  bool closed_ = false;

  ConnectionState state_;
  // What account_buffers() last published.
  std::atomic<size_t> buffered_bytes_{0};
  // What this connection counts in ServerCounters::input_buffer_bytes.
  size_t input_charge_ = 0;
};

}  // namespace witmq::net
