// One live instance of a guest: a WasmInstance whose imports (wasi:messaging producer, consumer
// and messaging-types) are served by the broker, and wasi_snapshot_preview1 by the sandbox of
// wasi.h, plus the two calls the host makes into it,
// `configure` and `handler`, lifted and lowered per the canonical ABI.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "auth/grants.h"
#include "broker/broker.h"
#include "common/message.h"
#include "common/result.h"
#include "guest/handle_table.h"
#include "guest/wasi.h"
#include "guest/wasi_p2.h"
#include "guest/wasm_runtime.h"
#include "guest/worlds.h"

namespace witmq::guest {

namespace abi {
class GuestMemory;
}  // namespace abi

// Canonical ABI names of the `messaging` world in core-module form.
namespace abi_names {
inline constexpr const char* kTypes = "wasi:messaging/messaging-types@0.2.0-draft";
inline constexpr const char* kProducer = "wasi:messaging/producer@0.2.0-draft";
inline constexpr const char* kConsumer = "wasi:messaging/consumer@0.2.0-draft";
inline constexpr const char* kConfigure = "wasi:messaging/messaging-guest@0.2.0-draft#configure";
inline constexpr const char* kHandler = "wasi:messaging/messaging-guest@0.2.0-draft#handler";
inline constexpr const char* kPostConfigure =
    "cabi_post_wasi:messaging/messaging-guest@0.2.0-draft#configure";
inline constexpr const char* kPostHandler =
    "cabi_post_wasi:messaging/messaging-guest@0.2.0-draft#handler";
inline constexpr const char* kRealloc = "cabi_realloc";
inline constexpr const char* kMemory = "memory";
}  // namespace abi_names

// The imports the host offers and the exports it requires, with their core signatures.
const ModuleRequirements& guest_requirements();

// What a component guest may import and must export (guest_requirements() plus WASI 0.2), and
// the same for a component of the draft's worlds (messaging_core_requirements() plus WASI 0.2).
const ModuleRequirements& component_requirements();
// The same for a component of wasmCloud's world (wasmcloud_requirements() plus WASI 0.2).
const ModuleRequirements& wasmcloud_component_requirements();
const ModuleRequirements& draft_component_requirements();

// Largest module file a guest may name (a core module or a component): far above what the
// toolchains emit (a JavaScript runtime compiled to wasm is about 10 MB).
inline constexpr uint64_t kMaxModuleBytes = 256u << 20;

// Loads and checks a guest: a core module, or a component (component.h) whose core modules are
// linked as it says. Errors name the module and the missing or wrong item.
Result<std::shared_ptr<const WasmModule>> load_guest_module(const std::string& path,
                                                            const WasmLimits& limits,
                                                            const EngineOptions& engine = {});

// How a call into the guest ended.
struct CallReport {
  CallStatus status = CallStatus::kOk;  // kOk: the export returned (ok or err)
  std::string message;                  // what went wrong, for logs (status != kOk)
  std::optional<Error> guest_error;     // the error the guest returned in `err`

  // The export returned `ok`.
  bool returned_ok() const { return status == CallStatus::kOk && !guest_error; }
};

class GuestInstance;

// What the host imports need from the guest's owner.
struct InstanceContext {
  broker::Broker* broker = nullptr;
  std::string guest_name;
  // The name a client the guest connects with a non-empty name is connected under, whatever
  // name it passed to [static]client.connect ("" still connects an ephemeral client): the
  // guest's configured group, else its name. A guest cannot choose another client's name and so
  // cannot read through another client's durable subscription.
  std::string client_name;
  // Serves update-guest-configuration: re-subscribes the guest. Runs on the calling thread.
  std::function<Status(const GuestConfiguration&)> update_configuration;
  // What the guest may send to and receive from; nullptr = unrestricted. Outlives the instance.
  const auth::Grants* grants = nullptr;
  // Called with the instance as soon as it exists, before any guest code runs (its start
  // function and `_initialize` may wait in host calls, and stopping must be able to interrupt
  // them), and with nullptr from its destructor. Must not call back into the instance except
  // interrupt().
  std::function<void(GuestInstance*)> track;
  // WASI: environ (the guest's `env` setting) and where stdout / stderr lines go (shared by the
  // guest's instances; nullptr discards them). argv is the guest's name.
  std::vector<std::pair<std::string, std::string>> env;
  std::shared_ptr<GuestOutput> output;
};

// One instance. Not thread-safe except interrupt(): one thread calls configure() / handle().
//
// Most clients and errors one instance may hold at once (handle table capacities).
inline constexpr size_t kMaxClientsPerInstance = 16;
inline constexpr size_t kMaxErrorsPerInstance = 1024;
// Longest error text an instance keeps (in its error table and for error.trace); longer texts,
// which may quote what the guest sent, are cut.
inline constexpr size_t kMaxErrorTextBytes = 1024;
// messaging-core: most `message` resources one instance may hold at once, and most bytes they
// may hold together (data and metadata); past either the guest traps.
inline constexpr size_t kMaxMessagesPerInstance = 1024;
inline constexpr uint64_t kMaxMessageBytesPerInstance = uint64_t{64} << 20;
// messaging-request-reply: most `request-options` resources one instance may hold at once, and
// the longest a guest's request may wait (the default max-request-timeout-ms; the call's
// call-timeout-ms bounds it too). An unset timeout-ms waits that long.
inline constexpr size_t kMaxRequestOptionsPerInstance = 1024;
inline constexpr std::chrono::milliseconds kMaxGuestRequestTimeout{300'000};

// What a `request-options` resource holds: unset fields take the defaults of request.
struct DraftRequestOptions {
  std::optional<uint32_t> timeout_ms;
  std::optional<uint32_t> expected_replies;
};

// Handles: `client` and `error` live in per-instance tables; a dead or unknown handle traps.
// send / subscribe-* take `own<client>` in WIT, which would move the handle to the host on every
// call; this host keeps it valid after the call instead (guests reuse one client), and releases
// it only on [resource-drop]client or when the instance ends. An `error` returned in `err` by
// configure / handler moves to the host.
class GuestInstance {
 public:
  static Result<std::unique_ptr<GuestInstance>> create(std::shared_ptr<const WasmModule> module,
                                                       InstanceContext context);
  // Disconnects every client the guest connected and did not drop.
  ~GuestInstance();
  GuestInstance(const GuestInstance&) = delete;
  GuestInstance& operator=(const GuestInstance&) = delete;

  // Every entry point below reports any failure (a trap, a limit, a host exception such as an
  // allocation failure) in its result and leaves the instance unusable; none throws.
  //
  // Calls `configure`; on `ok` stores the configuration in *out.
  CallReport configure(GuestConfiguration* out);
  // Calls `handler` with `batch` (messaging-core and wasmcloud-messaging: their export once per
  // message, see handle_each()). Messages the guest settled itself (complete-message /
  // abandon-message that succeeded) are listed by receipt in explicitly_settled() until the
  // next call.
  CallReport handle(const std::vector<Message>& batch);
  const std::unordered_set<std::string>& explicitly_settled() const { return settled_; }

  // Ends the guest's blocking receives now and makes later ones fail at once (stopping).
  // Callable from any thread.
  void interrupt();
  // False once a call trapped, ran out of budget or hit the memory limit.
  bool usable() const;
  uint32_t memory_pages() const;
  WasmInstance& wasm() { return *wasm_; }
  // The world the guest's module implements (worlds.h).
  World world() const { return world_; }

 private:
  class Memory;
  GuestInstance(InstanceContext context);
  std::vector<HostFunction> host_functions();
  std::vector<HostFunction> seed_host_functions();
  abi::GuestMemory& mem();
  // The batch loop of the worlds whose export takes one message: calls `handle_one` for each
  // message of `batch` in order, until one traps. When one failed, the messages handled ok are
  // completed here (and listed in explicitly_settled()), so that only the failed ones and those
  // after a trap are abandoned; returns the first failure, else ok.
  CallReport handle_each(const std::vector<Message>& batch,
                         CallReport (GuestInstance::*handle_one)(const Message&));
  // messaging-core (guest_world_draft.cc): its imports, and `handle` called once per message of
  // the batch through handle_each().
  std::vector<HostFunction> draft_host_functions();
  CallReport handle_draft(const std::vector<Message>& batch);
  CallReport handle_draft_one(const Message& message);
  // wasmcloud-messaging (guest_world_wasmcloud.cc): consumer's imports, and `handle-message`
  // called once per message of the batch through handle_each().
  std::vector<HostFunction> wasmcloud_host_functions();
  CallReport handle_wasmcloud(const std::vector<Message>& batch);
  CallReport handle_wasmcloud_one(const Message& message);
  // The broker client consumer.publish / consumer.request use, connected on first use.
  Result<broker::ClientPtr> wasmcloud_client(std::string_view use);
  uint32_t add_message(Message m);
  void account_message_bytes(uint64_t before, uint64_t after);
  CallReport call_export(int index, const std::vector<RawValue>& args, RawValue* result,
                         const char* name);
  // Calls export `index` with `args`; when it returned, `lift` reads its result at `retptr`
  // (setting report->guest_error for an `err`; a throw fails the call, reported as `lifting`),
  // then the post-return export `post` (none when < 0) frees it. What every world's
  // configure / handle entry point does after lowering its arguments.
  CallReport call_and_lift(int index, const std::vector<RawValue>& args, const char* name,
                           const char* lifting,
                           const std::function<void(RawValue retptr, CallReport* report)>& lift,
                           int post, const char* post_name);
  CallReport report_trap(const GuestTrap& trap);
  CallReport report_failure(const std::exception& e, const char* during);
  // Sets the lift budget for one lift from guest memory (canonical_abi.h).
  void begin_lift();
  // Bounds a wait by the deadline of the call in progress: the timeout to use, or a GuestTrap
  // when the deadline has passed.
  std::optional<std::chrono::milliseconds> bounded_wait(
      std::optional<std::chrono::milliseconds> timeout, std::string_view use) const;
  uint32_t new_error(Error error);
  Error take_guest_error(uint32_t handle, const char* export_name);
  broker::ClientPtr& client(uint32_t handle, const char* use);
  void record_settled(const Message& m);
  // ok, or kPermissionDenied when ctx_.grants do not allow `action` on `channel`.
  Status permitted(auth::Action action, std::string_view channel) const;
  std::vector<Message> receive(const broker::ClientPtr& client, const std::string& channel,
                               std::optional<std::chrono::milliseconds> timeout, Status* status);

  InstanceContext ctx_;
  // Before wasm_, so that it outlives the host functions bound to it.
  std::unique_ptr<WasiHost> wasi_;
  std::unique_ptr<WasiP2Host> wasi_p2_;  // served to components only
  std::unique_ptr<WasmInstance> wasm_;
  std::unique_ptr<Memory> memory_;
  int configure_ = -1, handler_ = -1, post_configure_ = -1, post_handler_ = -1, realloc_ = -1;
  HandleTable<broker::ClientPtr> clients_{"client", kMaxClientsPerInstance};
  HandleTable<Error> errors_{"error", kMaxErrorsPerInstance};
  World world_ = World::kMessaging;
  int draft_handle_ = -1, draft_post_handle_ = -1;
  int wasmcloud_handle_ = -1, wasmcloud_post_handle_ = -1;
  broker::ClientPtr wasmcloud_client_;
  HandleTable<Message> messages_{"message", kMaxMessagesPerInstance};
  HandleTable<DraftRequestOptions> request_options_{"request-options",
                                                    kMaxRequestOptionsPerInstance};
  uint64_t message_bytes_ = 0;  // held by messages_
  std::string last_error_;
  std::unordered_set<std::string> settled_;
  std::optional<CallOutcome> realloc_failure_;  // the failure behind a GuestTrap from realloc
  bool failed_ = false;  // a trap raised by host code (lifting, lowering) ended a call

  std::atomic<bool> interrupted_{false};
  std::mutex connected_mu_;  // guards connected_ (interrupt() runs on another thread)
  std::vector<broker::ClientPtr> connected_;
};

}  // namespace witmq::guest
