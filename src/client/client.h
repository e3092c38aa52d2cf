// The blocking witmq client: the WIT operations of wasi:messaging@0.2.0-draft as plain calls that
// return Result values, on top of AsyncClient (async_client.h). For the CLI, tests and simple
// programs; a program that wants many requests in flight uses AsyncClient.
//
// A Client owns one connection at a time and one I/O thread. Its methods may be called from
// several threads at once; each waits for its own reply while the others' requests pipeline on
// the same connection. They must not be called from a stream handler (it runs on the I/O thread).
//
// Server lists (a cluster, docs/CLUSTERING.md): connect() tries the servers in order. With
// options.reconnect_timeout set, a call that finds the connection lost (or loses it, with
// unavailable) connects again to the next server and, unless it is a send, is made again there
// once (a send that failed with the connection may or may not have been stored: the caller
// decides whether to send again). On the new connection the client restores what it had set up:
// the last guest configuration and the stream (with its initial credit and handler; a handler
// sees the connection's loss as an error first). Messages it held unsettled become available
// again once their leases expire on the server; their receipts are refused (stale-receipt).
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "client/async_client.h"
#include "client/types.h"
#include "common/message.h"
#include "common/result.h"

namespace witmq::client {

class Client {
 public:
  // WIT client.connect(name): connects to `endpoint` and performs the handshake. Fails with
  // kUnavailable when the server cannot be reached in options.connect_timeout, or with the
  // server's error when it refuses the connect (e.g. kPermissionDenied for a bad token).
  static Result<std::unique_ptr<Client>> connect(const Endpoint& endpoint, std::string name,
                                                 Options options = {}) {
    return connect(std::vector<Endpoint>{endpoint}, std::move(name), std::move(options));
  }
  // The first of `servers` (in order) that accepts the connect; with options.reconnect_timeout,
  // round after round with backoff until it passes. Errors name every server tried.
  static Result<std::unique_ptr<Client>> connect(std::vector<Endpoint> servers, std::string name,
                                                 Options options = {});
  static Result<std::unique_ptr<Client>> connect(std::string host, uint16_t port, std::string name,
                                                 Options options = {}) {
    return connect(Endpoint{std::move(host), port}, std::move(name), std::move(options));
  }

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  // Closes the connection and joins the I/O thread.
  ~Client();

  const ServerInfo& server_info() const { return async_->server_info(); }
  // False once the connection is gone (closed by the server, a network error, close()); with
  // reconnection the next call opens another.
  bool is_open() const { return current()->is_open(); }
  // The server the connection is to now.
  Endpoint server() const;
  // Connections opened after the first (reconnections).
  uint64_t reconnects() const;
  // The text of the last error any call on this client returned ("" if none): WIT error.trace().
  std::string error_trace() const;
  // The asynchronous client underneath (the current connection), for pipelined use on it.
  AsyncClient::Pointer async() const { return current(); }

  // ---- WIT operations ------------------------------------------------------------------------
  // producer.send: returns once the server confirmed the batch durable as the channel promises.
  Status send(std::string_view channel, std::span<const Message> messages);
  // consumer.subscribe-try-receive: nullopt when nothing arrived within `timeout_ms`.
  Result<std::optional<std::vector<Message>>> subscribe_try_receive(std::string_view channel,
                                                                    uint32_t timeout_ms);
  // consumer.subscribe-receive: waits until at least one message arrives.
  Result<std::vector<Message>> subscribe_receive(std::string_view channel);
  // consumer.update-guest-configuration.
  Status update_guest_configuration(const GuestConfiguration& config);
  // consumer.complete-message / abandon-message, by the message's witmq-receipt.
  Status complete_message(const Message& message);
  Status abandon_message(const Message& message);

  // ---- request-reply -------------------------------------------------------------------------
  // Sends `message` to `channel` as a request and returns the replies: `expected_replies` of
  // them, or at `timeout` those that came (kTimeout when none did). Not made again after a
  // reconnection (the request may have reached a responder).
  Result<std::vector<Message>> request(std::string_view channel, const Message& message,
                                       std::chrono::milliseconds timeout,
                                       uint32_t expected_replies = 1);
  // Answers `request`, a message delivered to this client, with `reply`.
  Status reply(const Message& request, const Message& reply);

  // ---- streaming -----------------------------------------------------------------------------
  // Starts the stream with `credit`. With a handler, deliveries go to it on the I/O thread; with
  // none, they queue inside the client for next_delivery().
  Status start_stream(uint32_t credit, StreamHandler handler = {});
  // Grants the stream `additional` more messages.
  Status grant_credit(uint32_t additional);
  // The next queued delivery (pull mode), waiting up to `timeout`: nullopt when none arrived in
  // time; the stream's end error once it ended without stop_stream.
  Result<std::optional<Delivery>> next_delivery(std::chrono::milliseconds timeout);
  // Stops the stream; deliveries that arrived before it stay queued for next_delivery().
  Status stop_stream();

  // ---- admin extensions ----------------------------------------------------------------------
  Result<std::vector<ChannelStats>> list_channels();
  // Creates `name` or updates its settings (kind, durability, max-deliveries, ...).
  Status declare_channel(std::string_view name, const ChannelSettings& settings);
  Status delete_channel(std::string_view name);
  Result<ChannelStats> channel_stats(std::string_view name);
  // Messages of `channel` from sequence `from` on, not acquired; at most `max`.
  Result<std::vector<Message>> browse(std::string_view channel, uint64_t from, uint32_t max);
  // Moves dead letters of dead-letter channel `dlq` back to their sources; returns how many.
  Result<uint64_t> replay_dead_letters(std::string_view dlq,
                                       std::optional<uint64_t> max = std::nullopt);
  // Settles every available message of `channel`; returns how many.
  Result<uint64_t> purge(std::string_view channel);
  // The server-stats object, as JSON text.
  Result<std::string> server_stats();
  // A round trip; returns the payload echoed.
  Result<uint64_t> ping(uint64_t payload);

  // Closes the connection now; later calls fail with kUnavailable.
  void close();

 private:
  struct IoThread;
  Client(std::unique_ptr<IoThread> io, AsyncClient::Pointer async, Options options,
         std::vector<Endpoint> servers, size_t server, std::string name);

  // Connects to servers[i] on `io` and waits for the outcome.
  static Result<AsyncClient::Pointer> open(IoThread& io, const Endpoint& server,
                                           const std::string& name, const Options& options);
  // Rounds over `servers` from `first` on, as connect() and reconnect do; `wake` (may be null)
  // ends the backoff waits early when the client is closed. On success `*index` is the server's.
  static Result<AsyncClient::Pointer> open_any(IoThread& io, const std::vector<Endpoint>& servers,
                                               size_t first, const std::string& name,
                                               const Options& options, size_t* index,
                                               const std::function<bool()>& closed);
  AsyncClient::Pointer current() const;
  // The connection to use: the current one, or (reconnection on, the current one lost) a new one
  // with the configuration and the stream restored. `stale`: a connection known to be going
  // away (its stream ended with unavailable) that is replaced even while it still looks open.
  Result<AsyncClient::Pointer> connection(const AsyncClient::Pointer& stale = nullptr);
  // Whether a call that failed with `error` on `used` should be made again on a new connection.
  bool should_retry(const AsyncClient::Pointer& used, const Error& error) const;

  // Runs `start(connection, callback)` and waits for the callback's value, up to `wait` (0 = no
  // limit); with reconnection and `retry`, once more on a new connection when the first was lost.
  template <typename T, typename Start>
  Result<T> call(Start&& start, std::chrono::milliseconds wait, bool retry = true);
  template <typename T, typename Start>
  Result<T> call_once(const AsyncClient::Pointer& a, Start& start, std::chrono::milliseconds wait);
  template <typename T>
  Result<T> remember(Result<T> r);

  std::unique_ptr<IoThread> io_;
  Options options_;
  const std::vector<Endpoint> servers_;
  const std::string name_;

  // Guards the connection and what is restored on a new one.
  mutable std::mutex conn_mu_;
  AsyncClient::Pointer async_;
  size_t server_ = 0;  // index in servers_ of async_'s server
  uint64_t reconnects_ = 0;
  bool closed_ = false;  // close() was called: no reconnection
  std::optional<GuestConfiguration> config_;
  // The stream to restore: its initial credit and its handler (shared by every connection).
  bool stream_wanted_ = false;
  uint32_t stream_credit_ = 0;
  std::shared_ptr<StreamHandler> stream_handler_;
  // Serializes reconnections (a call reconnecting holds it while it waits).
  std::mutex reconnect_mu_;

  mutable std::mutex mu_;
  std::string last_error_;  // guarded by mu_

  // Pull-mode stream deliveries, guarded by stream_mu_.
  std::mutex stream_mu_;
  std::condition_variable stream_cv_;
  std::deque<Delivery> deliveries_;
  std::optional<Error> stream_end_;
};

}  // namespace witmq::client
