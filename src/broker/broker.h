// Broker: channels, subscriptions and the message lifecycle. The one place where the WIT
// operations of wasi:messaging@0.2.0-draft have their meaning; the TCP server, the HTTP admin and
// the wasm host are front doors onto these calls.
//
// Threading: every method may be called from any thread. Each channel's state is guarded by its
// own mutex (never one global lock) and no lock is held across storage I/O. Callbacks (handlers)
// run on a broker or storage thread with no broker lock held; they must be short and must not
// block (post real work to your own executor; see broker/async.h for completion-token wrappers).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/channel_settings.h"
#include "common/message.h"
#include "common/result.h"
#include "common/unique_function.h"
#include "storage/store.h"

namespace witmq::broker {

struct BrokerOptions {
  // RocksDB directory.
  std::string data_dir = "./data";
  storage::StoreOptions store;  // store.path is set from data_dir
  // Create a channel with `default_channel` settings the first time it is used.
  bool auto_create_channels = true;
  ChannelSettings default_channel;
  // Channels declared up front (name, settings). Settings of an existing channel are updated to
  // these on open; a kind that differs from the stored one is an error.
  std::vector<std::pair<std::string, ChannelSettings>> channels;

  // Messages returned by one receive when the client did not set "batch-size". 1..max.
  uint32_t default_batch_size = 100;
  uint32_t max_batch_size = 10'000;
  // Limits on send.
  uint32_t max_send_batch = 10'000;      // messages in one send
  size_t max_message_bytes = 1 << 20;    // data bytes of one message
  uint32_t max_metadata_entries = 64;    // metadata pairs of one message
  size_t max_metadata_bytes = 16 << 10;  // keys + values of one message
  // Longest name of a channel that a send, receive or declare may create (1..200, the protocol's
  // cap). Existing channels and the dead-letter channels the broker makes are exempt.
  size_t max_channel_name_bytes = kMaxChannelNameBytes;
  // Most channels that may exist; a send, receive or declare that would create one more is
  // refused (resource-exhausted). Dead-letter channels the broker makes are exempt, so that a
  // dead-letter move never fails on it. 0 = no limit.
  size_t max_channels = 100'000;
  // Recent messages of each channel kept in memory so consumers that keep up never read disk.
  size_t tail_cache_bytes = 8 << 20;
  // Messages one client may hold acquired with explicit settlement (delivered, not yet completed,
  // abandoned or expired). Receives are cut to the room left; see ReceiveOptions::wait_for_room.
  // 0 = no limit.
  uint64_t max_unacked_per_client = 100'000;
  // Requests (Broker::request) one client may have waiting for replies; one more is refused
  // (resource-exhausted). Bounds what a client can make the broker hold: each waiting request
  // holds its timer and the replies gathered so far.
  uint32_t max_pending_requests_per_client = 10'000;
  // Longest timeout a request may ask for.
  std::chrono::milliseconds max_request_timeout{std::chrono::minutes(5)};
  // Cluster mode: whether this node may serve and acknowledge writes of a channel now (it has
  // not lost the channel's leadership). Asked before a send, receive or settlement is served and
  // again before its reply; false answers kUnavailable. Any thread; must be quick and must not
  // call the broker. Unset (a single node): always true.
  std::function<bool(std::string_view channel)> may_serve;
  // Cluster mode: what every inbox this broker makes starts with, "<node id>/" (docs/PROTOCOL.md,
  // "Request and reply"), so that a reply given to any node names the node that holds the
  // inbox. "" (a single node): an inbox is 32 hex digits.
  std::string inbox_prefix;
};

// Most replies one request may wait for (RequestOptions::expected_replies).
inline constexpr uint32_t kMaxExpectedReplies = 1000;
// Longest witmq-reply-to and witmq-correlation-id a reply may name: the broker makes them far
// shorter, so a longer one names no request.
inline constexpr size_t kMaxReplyAddressBytes = 128;
// Most bytes of replies (data and metadata) all the waiting requests of one client may gather
// together; a reply past it is dropped and counted like one to a gone inbox.
inline constexpr size_t kMaxGatheredReplyBytesPerClient = 64 << 20;

struct RequestOptions {
  // How long to wait for replies: 1 ms .. BrokerOptions::max_request_timeout.
  std::chrono::milliseconds timeout{5000};
  // The request is answered once this many replies arrived (1..kMaxExpectedReplies).
  uint32_t expected_replies = 1;
  // Most bytes of replies (data and metadata) the request gathers: a reply that would pass it
  // answers the request at once with the replies gathered so far, and is itself dropped and
  // counted (unless it is the first). The TCP server sets what fits in one frame. 0 = no bound
  // but kMaxGatheredReplyBytesPerClient's.
  size_t max_reply_bytes = 0;
};

// A connected client: the WIT `client` resource. Created by Broker::connect.
class Client;
using ClientPtr = std::shared_ptr<Client>;

struct ReceiveOptions {
  // At most this many messages; 0 = the client's "batch-size" for the channel.
  uint32_t max_messages = 0;
  // Give up after this long with an empty batch; nullopt = wait until a message arrives (or the
  // client disconnects, or the broker shuts down).
  std::optional<std::chrono::milliseconds> timeout;
  // When the client already holds max_unacked_per_client messages: false fails the receive at
  // once with kResourceExhausted; true waits (like an empty channel) until settlements, lease
  // expiries or abandons free room. Streams wait; request receives fail.
  bool wait_for_room = false;
};

struct SubscriptionStats {
  std::string name;  // "" for a point-to-point channel's shared subscription
  bool durable = true;
  uint64_t floor = 0;  // every seq below is settled
  uint64_t next = 0;   // next seq never delivered
  uint64_t lag = 0;    // head - floor: messages not yet settled
  uint64_t in_flight = 0;
  uint64_t available = 0;
};

struct ChannelStats {
  std::string name;
  ChannelSettings settings;
  bool is_dead_letter = false;  // a "<x>.dlq" channel, or named as someone's dead-letter channel
  uint64_t first_seq = 0;       // first retained
  uint64_t head_seq = 0;        // next to assign
  uint64_t depth = 0;           // messages not settled in the busiest subscription
  uint64_t in_flight = 0;       // acquired now, all subscriptions
  int64_t oldest_age_ms = 0;    // age of the oldest unsettled message, 0 if none
  uint64_t sends_total = 0, deliveries_total = 0, redeliveries_total = 0, completes_total = 0,
           abandons_total = 0, lease_expiries_total = 0, dead_letters_total = 0;
  std::vector<SubscriptionStats> subscriptions;
};

// The broker's in-memory tables at one moment (server-stats' "broker", the witmq_broker_*
// metrics): what connected clients and their receives hold. With no client connected and no
// guest running, clients, waiters and ephemeral subscriptions are 0.
struct BrokerTables {
  uint64_t clients = 0;                  // connected clients: protocol connections and guests
  uint64_t waiters = 0;                  // receives waiting, once per channel each waits on
  uint64_t durable_subscriptions = 0;    // stored; they outlive their clients
  uint64_t ephemeral_subscriptions = 0;  // gone with their client
  uint64_t timers = 0;  // scheduled timer callbacks, cancelled ones included until they are due
  uint64_t inboxes = 0;           // clients with a request-reply inbox (one that made a request)
  uint64_t pending_requests = 0;  // requests waiting for replies
  // Counters since start (not table sizes): replies that found no waiting request (its inbox
  // gone, or the request answered or timed out already) and were dropped, and requests that
  // ended at their timeout.
  uint64_t replies_dropped_total = 0;
  uint64_t requests_timed_out_total = 0;
};

// Messages one receive delivers, as the broker holds them: every stored message shared, not
// copied, with what its reserved metadata is made of. A stream encodes it straight into deliver
// frames (the payload copied once, no Message built per delivery); to_messages() builds the WIT
// messages for everyone else.
struct DeliveredBatch {
  std::string channel;
  struct Item {
    std::shared_ptr<const storage::StoredMessage> body;  // seq, publish time and the message
    uint32_t attempts = 0;
    std::string receipt;  // empty when settled on delivery (settlement auto)
  };
  std::vector<Item> items;

  // The messages with their own metadata followed by the reserved entries, in this order:
  // witmq-id, witmq-channel, witmq-sequence, witmq-attempt, witmq-published-at, and
  // witmq-receipt unless settled on delivery.
  std::vector<Message> to_messages() const;
};

class Broker {
 public:
  using SendHandler = UniqueFunction<void(Status)>;
  using SettleHandler = UniqueFunction<void(Status)>;
  using ReceiveHandler = UniqueFunction<void(Result<std::vector<Message>>)>;
  using BatchHandler = UniqueFunction<void(Result<DeliveredBatch>)>;
  // The replies of a request, in arrival order, or why there are none.
  using RequestHandler = UniqueFunction<void(Result<std::vector<Message>>)>;

  // Opens (or creates) the data directory and recovers every channel, subscription, cursor and
  // delivery state. Leases held at a crash become available again with their attempt counted.
  // Timers (leases, backoff, wait timeouts, retention) run on `executor`.
  static Result<std::unique_ptr<Broker>> open(BrokerOptions options,
                                              boost::asio::any_io_executor executor);
  ~Broker();  // shutdown()

  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // ---- WIT: messaging-types ------------------------------------------------------------------
  // client.connect(name). A non-empty name makes the client's publish-subscribe subscriptions
  // durable under that name; "" makes them ephemeral (gone at disconnect).
  Result<ClientPtr> connect(std::string_view name);
  // The client is gone: its pending receives end with kUnavailable, the messages it holds become
  // available again (a failed attempt each), its ephemeral subscriptions are removed.
  void disconnect(const ClientPtr& client);

  // ---- WIT: producer -------------------------------------------------------------------------
  // Appends `messages` to `channel` (auto-created if allowed). Reserved "witmq-" metadata keys are
  // dropped. `done` runs once the batch is durable per the channel's durability; only then do
  // consumers see it.
  void send(const ClientPtr& client, std::string_view channel, std::vector<Message> messages,
            SendHandler done);

  // ---- WIT: consumer -------------------------------------------------------------------------
  // Acquires up to N messages from any of `channels` (one channel per batch), waiting as
  // `options` says. An empty batch means the timeout passed. Delivered messages carry the
  // reserved metadata (witmq-id, witmq-attempt, witmq-receipt, ...). The client's position on
  // each channel is kept between calls.
  void receive(const ClientPtr& client, std::vector<std::string> channels, ReceiveOptions options,
               ReceiveHandler done);
  // receive() answering with the batch as the broker holds it (DeliveredBatch).
  void receive_batch(const ClientPtr& client, std::vector<std::string> channels,
                     ReceiveOptions options, BatchHandler done);
  // Ends the client's pending receives now with an empty batch (e.g. a stream stopped).
  void cancel_receives(const ClientPtr& client);

  // update-guest-configuration: the client's channels and extensions. Channels no longer listed
  // are unsubscribed (ephemeral subscriptions removed, durable ones kept). Extensions apply to the
  // listed channels: "start", "group", "batch-size", "lease-ms", "settlement"
  // (docs/CONFIGURATION.md). Unknown keys and bad values are errors naming the key.
  Status update_guest_configuration(const ClientPtr& client, const GuestConfiguration& config);
  // The configuration last set (channels + extensions).
  GuestConfiguration guest_configuration(const ClientPtr& client) const;

  // complete-message / abandon-message: settle by the message's witmq-receipt. A missing,
  // malformed, unknown or expired receipt is refused (kStaleReceipt / kInvalidArgument).
  // The settlement takes effect at once (the message is no longer the caller's); `done` runs
  // once it is stored as durably as the channel's durability says, sharing group commits with
  // sends: after `ok`, a crash does not bring a completed message back, and an abandoned one
  // comes back with its attempt counted (or sits in the dead-letter channel, when the abandon
  // moved it there). An error after the receipt was accepted means the settlement could not be
  // stored (say, the disk is full): it holds until a restart, which may deliver the message again.
  void complete_message(const Message& message, SettleHandler done);
  void abandon_message(const Message& message, SettleHandler done);
  // The same, waiting for `done`. Blocks the calling thread until the write is stored: never
  // call it from a broker or storage callback, nor from a thread the network path needs.
  Status complete_message(const Message& message);
  Status abandon_message(const Message& message);
  // Keeps the message acquired for `extension` more from now (guests' running handlers).
  Status extend_lease(const Message& message, std::chrono::milliseconds extension);

  // ---- request-reply -------------------------------------------------------------------------
  // Sends `message` to `channel` as a request and waits for replies (docs/PROTOCOL.md, "Request
  // and reply"). The message goes to the channel like a send (same checks, stored per the
  // channel's durability, delivered to its consumers) with two reserved entries added:
  // witmq-reply-to (the client's inbox) and witmq-correlation-id (random, this request's).
  // A point-to-point channel hands it to one of its competing consumers; a publish-subscribe one
  // to every subscription (scatter-gather). `done` runs once: with the replies when
  // `expected_replies` arrived; at the timeout with those that arrived, or kTimeout when none did;
  // with kUnavailable when the client disconnects or the broker shuts down first; or with the
  // send's error. The inbox lives only in memory and goes with the client.
  void request(const ClientPtr& client, std::string_view channel, Message message,
               RequestOptions options, RequestHandler done);
  // Answers the request `request` (a message as delivered, carrying witmq-reply-to and
  // witmq-correlation-id): `reply` goes to the requester's inbox, with witmq-correlation-id set
  // and other reserved keys dropped. Needs no grant: the reply address is the proof. A reply
  // whose requester is gone or no longer waits is dropped and counted
  // (BrokerTables::replies_dropped_total), not refused, so replying tells a client nothing about
  // others. kInvalidArgument when `request` carries no reply address or `reply` breaks a send
  // limit.
  Status reply(const Message& request, Message reply);
  // Ends the client's waiting requests now with kUnavailable (e.g. its server is stopping).
  void cancel_requests(const ClientPtr& client);
  // The same with the two values taken from the request.
  Status reply_to(std::string_view reply_to, std::string_view correlation_id, Message reply);
  // Counts a reply that could not be taken to the node its address names (cluster mode: that
  // node is unknown, or the link to it failed) like one to a gone inbox.
  void count_dropped_reply();

  // ---- admin ---------------------------------------------------------------------------------
  // Creates the channel, or updates the settings of an existing one (kind cannot change:
  // kAlreadyExists).
  Status declare_channel(std::string_view name, const ChannelSettings& settings);
  // Whether a send or receive creates a channel that does not exist (auto-create-channels).
  bool creates_channels_on_use() const;
  Status delete_channel(std::string_view name);
  std::vector<ChannelStats> list_channels();
  Result<ChannelStats> channel_stats(std::string_view name);
  // Reads messages [from, ...) without acquiring them (browse, e.g. of a dead-letter channel).
  Result<std::vector<Message>> browse(std::string_view channel, uint64_t from_seq,
                                      uint32_t max_messages);
  // Moves up to `max_messages` available messages of dead-letter channel `dlq` back to their
  // source channels, each move atomic. Blocks the calling thread until done: it moves steps of a
  // bounded size, one write each, so that other clients' writes interleave. Returns how many
  // moved.
  Result<uint64_t> replay_dead_letters(std::string_view dlq, uint64_t max_messages);
  // Settles every available message of `channel` in every subscription (acquired ones are left
  // to their consumers). Returns how many were removed.
  Result<uint64_t> purge(std::string_view channel);
  // A consistent copy of the data directory, for backup.
  Status checkpoint(const std::string& dir);
  storage::StoreStats store_stats() const;
  // Sizes of the client, waiter, subscription and timer tables. Takes each channel's lock in
  // turn: for stats, not for a hot path.
  BrokerTables tables() const;

  // ---- cluster leadership (docs/CLUSTERING.md) --------------------------------------------------
  // This node stops serving `channel` (it no longer leads it): its waiting receives end with
  // kUnavailable, replies to sends and settlements still waiting for their write say
  // kUnavailable, its in-memory state (subscriptions, leases, the tail cache, timers) is
  // dropped and nothing more is written for it. Until adopt_channel(), every call naming it
  // fails with kUnavailable and nothing creates it again. What the store holds stays.
  void release_channel(std::string_view channel);
  // This node serves `channel` (it leads it now): a channel not in memory is loaded from the
  // store by the very function open() recovers every channel with (messages available, those
  // acquired when it was released available again with the attempt counted, dead letters,
  // cursors, definitions). A channel the store does not hold may be created by its first use,
  // as before. A channel already served is left as it is.
  Status adopt_channel(std::string_view channel);

  // Ends every pending receive with kUnavailable, refuses new calls, waits for in-flight writes
  // and closes the store. Idempotent.
  void shutdown();

  boost::asio::any_io_executor executor() const;

 private:
  struct Impl;
  explicit Broker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace witmq::broker
