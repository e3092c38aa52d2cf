// The asynchronous core of the witmq client: one TCP connection to witmqd speaking protocol v1
// (docs/PROTOCOL.md) with the frame codec of net/codec.h, inside TLS when options.tls asks.
//
// Requests pipeline: every call encodes its frame at once into the connection's output buffer,
// registers a completion under a fresh request id and returns; replies are matched by id in
// whatever order they come. Frames queued while a write is under way go out together in the next
// write, so a busy producer pays for few system calls.
//
// Threading: the connection's I/O (reading, writing, timers) runs on a strand of the executor it
// was created with, so the executor may have any number of threads. Every public method may be
// called from any thread, including from inside a completion. Completions and stream handlers run
// on that strand; they must not block (the blocking API is client.h, which runs its own I/O
// thread). The request table and the output buffer are guarded by one mutex, held only to encode
// a frame or to look up an id, never across I/O or a completion.
//
// Lifetime: the object stays alive while the connection is open, even when the caller drops its
// pointer. Call close() to end it; pending calls then fail with kUnavailable.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "client/types.h"
#include "common/message.h"
#include "common/result.h"
#include "common/unique_function.h"
#include "net/codec.h"
#include "net/frames.h"

namespace witmq::client {

// A completion: called exactly once, with the call's value or the error the server (or the
// connection) reported.
template <typename T>
using Callback = UniqueFunction<void(Result<T>)>;
using StatusCallback = UniqueFunction<void(Status)>;

class AsyncClient : public std::enable_shared_from_this<AsyncClient> {
 public:
  using Pointer = std::shared_ptr<AsyncClient>;

  // WIT client.connect(name): opens a TCP connection to `endpoint` (with options.tls, completes
  // the TLS handshake), sends connect (version 1, `name`, options.token) and calls `done` with the
  // client once connect-ok arrives, or with the error: kUnavailable when the address cannot be
  // resolved or reached, the TLS handshake fails or options.connect_timeout passes;
  // kInvalidArgument when a TLS file cannot be loaded; the goaway's error when the server refuses
  // the connect.
  static void connect(boost::asio::any_io_executor executor, Endpoint endpoint, std::string name,
                      Options options, Callback<Pointer> done);

  AsyncClient(const AsyncClient&) = delete;
  AsyncClient& operator=(const AsyncClient&) = delete;
  ~AsyncClient();

  // What the server announced in connect-ok.
  const ServerInfo& server_info() const { return info_; }
  // The strand completions and stream handlers run on. Work posted to it is serialized with them,
  // so state touched only there needs no lock.
  const boost::asio::strand<boost::asio::any_io_executor>& executor() const { return strand_; }
  // False once the connection is closed (close(), goaway, a read or write error).
  bool is_open() const;
  // Why the connection closed; nullopt while it is open.
  std::optional<Error> close_reason() const;

  // ---- WIT: producer -------------------------------------------------------------------------
  // producer.send(channel, messages). The messages are encoded before send returns, so the caller
  // may reuse them at once. A batch over the server's max-send-messages or max-message-bytes, or
  // a frame over max-frame-bytes, fails at once (kResourceExhausted) without being sent.
  void send(std::string_view channel, std::span<const Message> messages, StatusCallback done);

  // ---- WIT: consumer -------------------------------------------------------------------------
  // consumer.subscribe-try-receive(channel, timeout_ms): nullopt when nothing arrived in time.
  void subscribe_try_receive(std::string_view channel, uint32_t timeout_ms,
                             Callback<std::optional<std::vector<Message>>> done);
  // consumer.subscribe-receive(channel): waits until at least one message arrives.
  void subscribe_receive(std::string_view channel, Callback<std::vector<Message>> done);
  // consumer.update-guest-configuration(config): channels and extensions (start, group,
  // batch-size, lease-ms, settlement).
  void update_guest_configuration(const GuestConfiguration& config, StatusCallback done);
  // consumer.complete-message(message) / abandon-message(message). Only the message's
  // witmq-receipt entry is sent; a message without one fails at once (kInvalidArgument).
  void complete_message(const Message& message, StatusCallback done);
  void abandon_message(const Message& message, StatusCallback done);

  // ---- request-reply (docs/PROTOCOL.md, section 16) ------------------------------------------
  // request: sends `message` to `channel` as a request and calls `done` with the replies, once
  // `expected_replies` came, or at `timeout_ms` with those that came (kTimeout when none did).
  void request(std::string_view channel, const Message& message, uint32_t timeout_ms,
               uint32_t expected_replies, Callback<std::vector<Message>> done);
  // reply: answers `request` (a message as delivered; only its witmq-reply-to and
  // witmq-correlation-id are sent) with `reply`. A request without them fails at once
  // (kInvalidArgument). ok also when the requester is gone: the server drops such replies.
  void reply(const Message& request, const Message& reply, StatusCallback done);

  // ---- streaming (docs/PROTOCOL.md, section 7) -----------------------------------------------
  // stream-start with `credit`: after update_guest_configuration, the server pushes deliveries to
  // `handler`, never more messages than the credit granted. One stream per connection: a second
  // start_stream before the first is stopped fails at once (kFailedPrecondition).
  void start_stream(uint32_t credit, StreamHandler handler, StatusCallback done);
  // credit: the stream may deliver `additional` more messages.
  void grant_credit(uint32_t additional, StatusCallback done);
  // stream-stop: `done` runs after the stream's last delivery was handed to its handler.
  void stop_stream(StatusCallback done);
  // True between a successful start_stream and stop_stream or the stream's end.
  bool stream_active() const;

  // ping: answered with the same payload. The client pings by itself when the server announced an
  // idle timeout.
  void ping(uint64_t payload, Callback<uint64_t> done);

  // ---- admin extensions (docs/PROTOCOL.md, section 13) ---------------------------------------
  // An admin request other than browse with its JSON body; `done` gets the reply's JSON text.
  void admin(net::AdminOp op, std::string json, Callback<std::string> done);
  // browse: messages of `channel` from sequence `from` on, without acquiring them.
  void browse(std::string_view channel, uint64_t from, uint32_t max,
              Callback<std::vector<Message>> done);

  // ---- relaying ------------------------------------------------------------------------------
  // Sends `request` (any request frame but connect and the stream's; its request id is replaced
  // by a fresh one) and calls `done` with the server's reply frame as it came, an error reply
  // included. For a node forwarding its clients' requests (docs/CLUSTERING.md).
  void request(net::Frame request, Callback<net::Frame> done);

  // Closes the connection: pending calls and the stream fail with kUnavailable "client closed".
  void close();

  // Requests sent and not yet answered.
  size_t pending_requests() const;

 private:
  struct PrivateTag {};
  // Completion of a request: the reply frame, or the error that ended the connection.
  using FrameCallback = UniqueFunction<void(Result<net::Frame>)>;
  struct Stream {
    uint32_t id = 0;  // the stream-start request id; 0 = no stream
    bool started = false;
    std::shared_ptr<StreamHandler> handler;
  };

 public:
  AsyncClient(PrivateTag, boost::asio::any_io_executor executor, Options options);

 private:
  // The coroutines take `self` so that their frames keep the client alive: they start after the
  // call that spawned them has returned.
  boost::asio::awaitable<void> run_connect(Pointer self, Endpoint endpoint, std::string name,
                                           Callback<Pointer> done);
  boost::asio::awaitable<void> read_loop(Pointer self);
  boost::asio::awaitable<void> keepalive_loop(Pointer self);

  // Encodes one request with `encode(buffer, id)` and registers `done` for its reply. On failure
  // (closed, frame too large) `done` is called at once with the error.
  template <typename Encode>
  void submit(std::string_view what, Encode&& encode, FrameCallback done,
              uint32_t* id_out = nullptr);
  uint32_t next_id_locked();
  void start_write();
  void dispatch(net::Frame&& frame);
  void handle_deliver(uint32_t id, net::Deliver&& deliver);
  void handle_stream_end(uint32_t id, Error&& error);
  // Ends the connection with `error`: fails every pending call and the stream. Strand only.
  void fail(Error error);
  void settle(net::FrameType type, const Message& message, StatusCallback done);

  boost::asio::strand<boost::asio::any_io_executor> strand_;
  // The TCP connection: socket_, or the layer under tls_ with options.tls.
  boost::asio::ip::tcp::socket socket_;
  std::shared_ptr<boost::asio::ssl::context> tls_context_;
  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
  boost::asio::steady_timer connect_timer_;
  boost::asio::steady_timer keepalive_timer_;
  Options options_;
  ServerInfo info_;     // written once, before connect's callback runs
  net::Limits limits_;  // decoder limits; strand only

  mutable std::mutex mu_;
  // Guarded by mu_.
  net::Buffer out_;  // frames encoded and not yet handed to the socket
  bool writing_ = false;
  uint32_t next_id_ = 1;
  std::unordered_map<uint32_t, FrameCallback> pending_;
  Stream stream_;
  std::optional<Error> closed_;

  // Strand only.
  net::Buffer write_buf_;  // the frames of the write under way
  std::vector<uint8_t> in_;
};

}  // namespace witmq::client
