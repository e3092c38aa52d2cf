#include "guest/guest_instance.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <iterator>
#include <map>
#include <span>
#include <utility>

#include "guest/canonical_abi.h"
#include "guest/component.h"
#include "guest/file_bytes.h"

namespace witmq::guest {
namespace {

using namespace abi_names;  // NOLINT: the names are the point of this file

// The host imports: module, WIT name, count of i32 params of the flattened core signature
// (arguments + a return-area pointer when the results flatten to more than one value; no core
// results). Derivations are in docs/GUESTS.md.
struct ImportEntry {
  const char* module;
  const char* name;
  size_t params;
};
constexpr ImportEntry kImports[] = {
    // connect(name: string) -> result<client, error>: string(2) + retptr
    {kTypes, "[static]client.connect", 3},
    // trace() -> string: retptr
    {kTypes, "[static]error.trace", 1},
    {kTypes, "[resource-drop]client", 1},
    {kTypes, "[resource-drop]error", 1},
    // send(c: client, ch: channel, m: list<message>) -> result<_, error>: 1 + 2 + 2 + retptr
    {kProducer, "send", 6},
    // subscribe-try-receive(c, ch, t-milliseconds: u32) -> result<option<list<message>>, error>
    {kConsumer, "subscribe-try-receive", 5},
    // subscribe-receive(c, ch) -> result<list<message>, error>
    {kConsumer, "subscribe-receive", 4},
    // update-guest-configuration(gc) -> result<_, error>: 5 + retptr
    {kConsumer, "update-guest-configuration", 6},
    // complete-message(m: message) / abandon-message(m) -> result<_, error>: 6 + retptr
    {kConsumer, "complete-message", 7},
    {kConsumer, "abandon-message", 7},
};

FuncSig i32s(size_t params, size_t results) {
  return FuncSig{std::vector<ValType>(params, ValType::kI32),
                 std::vector<ValType>(results, ValType::kI32)};
}

uint32_t u32(RawValue v) { return static_cast<uint32_t>(v); }

// Runs `start(callback)` and blocks this (guest worker) thread until the broker calls back. No
// lock of ours is held here, and the broker runs callbacks with none of its own.
template <typename T, typename Start>
T await_broker(Start&& start) {
  std::promise<T> promise;
  std::future<T> future = promise.get_future();
  start([p = std::move(promise)](T value) mutable { p.set_value(std::move(value)); });
  return future.get();
}

}  // namespace

const ModuleRequirements& guest_requirements() {
  static const ModuleRequirements req = [] {
    ModuleRequirements r;
    for (const ImportEntry& e : kImports) {
      r.offered_imports.push_back(ImportSpec{e.module, e.name, i32s(e.params, 0)});
    }
    r.exports = {
        {kConfigure, i32s(0, 1), true},  // () -> retptr of result<guest-configuration, error>
        {kHandler, i32s(2, 1), true},    // (list<message>) -> retptr of result<_, error>
        {kRealloc, i32s(4, 1), true},    // (old_ptr, old_size, align, new_size) -> ptr
        {kPostConfigure, i32s(1, 0), false}, {kPostHandler, i32s(1, 0), false},
    };
    // Every wasi_snapshot_preview1 function, so that any module built for wasm32-wasi loads.
    for (const ImportSpec& spec : wasi_imports()) r.offered_imports.push_back(spec);
    r.memory_export = kMemory;
    return r;
  }();
  return req;
}

const ModuleRequirements& component_requirements() {
  static const ModuleRequirements req = [] {
    ModuleRequirements r = guest_requirements();
    for (const ImportSpec& spec : wasi_p2_imports()) r.offered_imports.push_back(spec);
    return r;
  }();
  return req;
}

const ModuleRequirements& wasmcloud_component_requirements() {
  static const ModuleRequirements req = [] {
    ModuleRequirements r = wasmcloud_requirements();
    for (const ImportSpec& spec : wasi_p2_imports()) r.offered_imports.push_back(spec);
    return r;
  }();
  return req;
}

const ModuleRequirements& draft_component_requirements() {
  static const ModuleRequirements req = [] {
    ModuleRequirements r = messaging_core_requirements();
    for (const ImportSpec& spec : wasi_p2_imports()) r.offered_imports.push_back(spec);
    return r;
  }();
  return req;
}

Result<std::shared_ptr<const WasmModule>> load_guest_module(const std::string& path,
                                                            const WasmLimits& limits,
                                                            const EngineOptions& engine) {
  auto read = read_regular_file(path, kMaxModuleBytes);
  if (!read.ok()) {
    return Error(read.error().code,
                 fmt::format("module '{}': cannot open the file: {}", path, read.error().message));
  }
  const std::vector<uint8_t>& bytes = *read;
  if (!is_component(bytes)) {
    if (recognize_core_world(bytes) == World::kMessagingCore) {
      return WasmModule::compile(path, bytes, messaging_core_requirements(), limits, engine);
    }
    if (recognize_core_world(bytes) == World::kWasmcloudMessaging) {
      return WasmModule::compile(path, bytes, wasmcloud_requirements(), limits, engine);
    }
    auto seed = WasmModule::compile(path, bytes, guest_requirements(), limits, engine);
    const std::vector<std::string> exports = core_export_names(bytes);
    auto exported = [&](const char* name) {
      return std::find(exports.begin(), exports.end(), name) != exports.end();
    };
    if (!seed.ok() && !exported(kConfigure) && !exported(kHandler)) {
      Error e = std::move(seed).error();
      e.message += fmt::format(
          "; the module matches no world the host serves: it exports neither '{}' (world "
          "messaging) nor '{}' (world messaging-core) nor '{}' (world wasmcloud-messaging)",
          kHandler, draft_names::kHandle, wasmcloud_names::kHandleMessage);
      return e;
    }
    return seed;
  }
  if (engine.engine == Engine::kAot) {
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("module '{}': a component runs in the interpreter only; set the "
                             "guest's \"engine\" to \"interp\" (the ahead-of-time tier takes "
                             "core modules)",
                             path));
  }
  const ComponentWorld& world = recognize_component_world(bytes);
  const ModuleRequirements& req = &world == &draft_component_world()
                                      ? draft_component_requirements()
                                  : &world == &wasmcloud_component_world()
                                      ? wasmcloud_component_requirements()
                                      : component_requirements();
  auto link = read_component(path, bytes, req.offered_imports, world);
  if (!link.ok()) return std::move(link).error();
  return WasmModule::compile_linked(path, *link, req, limits);
}

// The instance's memory and cabi_realloc, for the canonical ABI.
class GuestInstance::Memory : public abi::GuestMemory {
 public:
  explicit Memory(GuestInstance& g) : g_(g) {}
  std::span<uint8_t> bytes() override {
    return {g_.wasm_->memory_data(), static_cast<size_t>(g_.wasm_->memory_size())};
  }
  // The host's copying is charged like bulk memory instructions: one step per 8 bytes.
  void charge_copy(uint64_t bytes) override {
    if (!g_.wasm_->charge(bytes / 8)) {
      throw GuestTrap("instruction budget exhausted by the host copying guest data");
    }
  }
  uint32_t realloc(uint32_t old_ptr, uint32_t old_size, uint32_t align,
                   uint32_t new_size) override {
    const RawValue args[4] = {old_ptr, old_size, align, new_size};
    RawValue result = 0;
    CallOutcome o = g_.wasm_->call(g_.realloc_, args, 4, &result, 1);
    if (!o.ok()) {
      if (!g_.realloc_failure_) g_.realloc_failure_ = o;
      throw GuestTrap(o.message);
    }
    return u32(result);
  }

 private:
  GuestInstance& g_;
};

GuestInstance::GuestInstance(InstanceContext context) : ctx_(std::move(context)) {
  wasi_ = std::make_unique<WasiHost>(WasiContext{ctx_.guest_name, ctx_.env, ctx_.output});
  wasi_p2_ = std::make_unique<WasiP2Host>(*wasi_);
}

GuestInstance::~GuestInstance() {
  if (ctx_.track) ctx_.track(nullptr);
  std::vector<broker::ClientPtr> clients;
  {
    std::lock_guard lock(connected_mu_);
    if (!interrupted_) clients.swap(connected_);
  }
  if (ctx_.broker) {
    for (const auto& c : clients) ctx_.broker->disconnect(c);
  }
}

Result<std::unique_ptr<GuestInstance>> GuestInstance::create(
    std::shared_ptr<const WasmModule> module, InstanceContext context) {
  std::unique_ptr<GuestInstance> g(new GuestInstance(std::move(context)));
  g->world_ = module_world(*module);
  auto fail = [&g](const std::string& why) {
    return Error(ErrorCode::kFailedPrecondition,
                 fmt::format("guest '{}': {}", g->ctx_.guest_name, why));
  };
  try {
    auto wasm = WasmInstance::instantiate(std::move(module), g->host_functions());
    if (!wasm.ok()) {
      Error e = std::move(wasm).error();
      return Error(e.code, fmt::format("guest '{}': {}", g->ctx_.guest_name, e.message));
    }
    // Everything the host functions use is in place before any guest code runs: a start
    // function or `_initialize` (WASI libc constructors) may call them.
    g->wasm_ = std::move(wasm).value();
    if (g->ctx_.track) g->ctx_.track(g.get());
    g->memory_ = std::make_unique<Memory>(*g);
    g->configure_ = g->wasm_->find_export(kConfigure);
    g->handler_ = g->wasm_->find_export(kHandler);
    g->post_configure_ = g->wasm_->find_export(kPostConfigure);
    g->post_handler_ = g->wasm_->find_export(kPostHandler);
    g->realloc_ = g->wasm_->find_export(kRealloc);
    g->draft_handle_ = g->wasm_->find_export(draft_names::kHandle);
    g->draft_post_handle_ = g->wasm_->find_export(draft_names::kPostHandle);
    g->wasmcloud_handle_ = g->wasm_->find_export(wasmcloud_names::kHandleMessage);
    g->wasmcloud_post_handle_ = g->wasm_->find_export(wasmcloud_names::kPostHandleMessage);
    Status init = g->wasm_->initialize();
    if (!init.ok()) return fail(init.error().message);
  } catch (const std::exception& e) {
    return fail(fmt::format("instantiation failed: {}", e.what()));
  }
  return g;
}

bool GuestInstance::usable() const { return wasm_->usable() && !failed_; }
uint32_t GuestInstance::memory_pages() const { return wasm_->memory_pages(); }
abi::GuestMemory& GuestInstance::mem() { return *memory_; }

void GuestInstance::interrupt() {
  wasi_->interrupt();
  wasi_p2_->interrupt();
  std::vector<broker::ClientPtr> clients;
  {
    std::lock_guard lock(connected_mu_);
    interrupted_ = true;
    clients = connected_;
  }
  if (ctx_.broker) {
    for (const auto& c : clients) ctx_.broker->disconnect(c);
  }
}

CallReport GuestInstance::report_trap(const GuestTrap& trap) {
  failed_ = true;
  if (realloc_failure_) return {realloc_failure_->status, realloc_failure_->message, {}};
  return {CallStatus::kTrap, trap.what(), {}};
}

CallReport GuestInstance::report_failure(const std::exception& e, const char* during) {
  failed_ = true;
  if (const auto* trap = dynamic_cast<const GuestTrap*>(&e)) return report_trap(*trap);
  return {CallStatus::kTrap, fmt::format("{} failed in the host: {}", during, e.what()), {}};
}

void GuestInstance::begin_lift() {
  // At most twice the guest's memory plus 1 MiB for the host objects: a lift never copies
  // more than the guest could have written.
  memory_->set_lift_budget(2 * wasm_->memory_size() + (uint64_t{1} << 20));
}

std::optional<std::chrono::milliseconds> GuestInstance::bounded_wait(
    std::optional<std::chrono::milliseconds> timeout, std::string_view use) const {
  const auto deadline = wasm_->deadline();
  if (deadline == std::chrono::steady_clock::time_point::max()) return timeout;
  const auto now = std::chrono::steady_clock::now();
  if (now >= deadline) {
    throw GuestTrap(fmt::format("{}: the call's wall time limit is reached", use));
  }
  // Rounded up so that a wait ends at or after the deadline, never just before it.
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
  return timeout ? std::min(*timeout, left) : left;
}

CallReport GuestInstance::call_export(int index, const std::vector<RawValue>& args,
                                      RawValue* result, const char* name) {
  std::vector<RawValue> results;
  CallOutcome o = wasm_->call(index, args, &results);
  if (!o.ok()) return {o.status, o.message, {}};
  if (result) {
    if (results.empty()) {
      return {CallStatus::kTrap, fmt::format("'{}' returned no value", name), std::nullopt};
    }
    *result = results[0];
  }
  return {};
}

uint32_t GuestInstance::new_error(Error error) {
  if (error.message.size() > kMaxErrorTextBytes) {
    // Cut at a UTF-8 character boundary: the text is lowered as a string.
    size_t cut = kMaxErrorTextBytes;
    while (cut > 0 && (static_cast<uint8_t>(error.message[cut]) & 0xC0) == 0x80) --cut;
    error.message.resize(cut);
    error.message += "...";
  }
  const uint32_t handle = errors_.add(error);
  last_error_ = error.to_string();
  return handle;
}

Error GuestInstance::take_guest_error(uint32_t handle, const char* export_name) {
  return errors_.take(handle, fmt::format("the err result of '{}'", export_name));
}

broker::ClientPtr& GuestInstance::client(uint32_t handle, const char* use) {
  return clients_.get(handle, use);
}

void GuestInstance::record_settled(const Message& m) {
  if (const std::string* receipt = find_metadata(m, meta::kReceipt)) settled_.insert(*receipt);
}

CallReport GuestInstance::call_and_lift(
    int index, const std::vector<RawValue>& args, const char* name, const char* lifting,
    const std::function<void(RawValue retptr, CallReport* report)>& lift, int post,
    const char* post_name) {
  RawValue retptr = 0;
  CallReport r = call_export(index, args, &retptr, name);
  if (r.status != CallStatus::kOk) return r;
  try {
    lift(retptr, &r);
  } catch (const std::exception& e) {
    return report_failure(e, lifting);
  }
  if (post >= 0) {
    CallReport post_report = call_export(post, {retptr}, nullptr, post_name);
    if (post_report.status != CallStatus::kOk) return post_report;
  }
  return r;
}

CallReport GuestInstance::handle_each(const std::vector<Message>& batch,
                                      CallReport (GuestInstance::*handle_one)(const Message&)) {
  settled_.clear();
  std::vector<const Message*> handled;
  std::optional<CallReport> failure;
  for (const Message& message : batch) {
    CallReport r = (this->*handle_one)(message);
    if (r.returned_ok()) {
      handled.push_back(&message);
      continue;
    }
    if (!failure) failure = std::move(r);
    if (failure->status != CallStatus::kOk) break;  // the instance is spent
  }
  if (!failure) return {};
  // The host abandons the batch: complete what was handled first, so that only the failed
  // messages (and those a trap left unhandled) come back.
  if (ctx_.broker) {
    for (const Message* message : handled) {
      if (ctx_.broker->complete_message(*message).ok()) record_settled(*message);
    }
  }
  return *failure;
}

Status GuestInstance::permitted(auth::Action action, std::string_view channel) const {
  if (!ctx_.grants) return ok_status();
  return auth::check_grants(*ctx_.grants, action, channel,
                            fmt::format("guest '{}'", ctx_.guest_name));
}

std::vector<Message> GuestInstance::receive(const broker::ClientPtr& c, const std::string& channel,
                                            std::optional<std::chrono::milliseconds> timeout,
                                            Status* status) {
  if (interrupted_) {
    *status = Error(ErrorCode::kUnavailable, fmt::format("receive on '{}': guest '{}' is stopping",
                                                         channel, ctx_.guest_name));
    return {};
  }
  broker::ReceiveOptions options;
  options.timeout = bounded_wait(timeout, "receive");
  auto r = await_broker<Result<std::vector<Message>>>(
      [&](auto done) { ctx_.broker->receive(c, {channel}, options, std::move(done)); });
  // A wait the deadline ended fails the call (GuestTrap), not just this receive.
  bounded_wait(std::nullopt, "receive");
  if (!r.ok()) {
    *status = std::move(r).error();
    return {};
  }
  *status = ok_status();
  return std::move(r).value();
}

CallReport GuestInstance::configure(GuestConfiguration* out) {
  if (world_ != World::kMessaging) {
    return {
        CallStatus::kTrap, fmt::format("the world {} has no configure", world_name(world_)), {}};
  }
  realloc_failure_.reset();
  return call_and_lift(
      configure_, {}, kConfigure, "lifting the result of configure",
      [this, out](RawValue retptr, CallReport* r) {
        begin_lift();
        auto result = abi::load_result_configuration(*memory_, u32(retptr));
        if (auto* err = std::get_if<abi::ErrorHandle>(&result)) {
          r->guest_error = take_guest_error(err->index, kConfigure);
        } else {
          *out = std::move(std::get<GuestConfiguration>(result));
        }
      },
      post_configure_, kPostConfigure);
}

CallReport GuestInstance::handle(const std::vector<Message>& batch) {
  if (world_ == World::kMessagingCore) return handle_draft(batch);
  if (world_ == World::kWasmcloudMessaging) return handle_wasmcloud(batch);
  settled_.clear();
  realloc_failure_.reset();
  std::pair<uint32_t, uint32_t> list;
  try {
    list = abi::lower_messages(*memory_, batch);
  } catch (const std::exception& e) {
    return report_failure(e, "lowering the batch");
  }
  return call_and_lift(
      handler_, {list.first, list.second}, kHandler, "lifting the result of handler",
      [this](RawValue retptr, CallReport* r) {
        if (auto err = abi::load_result_unit(*memory_, u32(retptr))) {
          r->guest_error = take_guest_error(err->index, kHandler);
        }
      },
      post_handler_, kPostHandler);
}

std::vector<HostFunction> GuestInstance::host_functions() {
  std::vector<HostFunction> out = world_ == World::kMessagingCore ? draft_host_functions()
                                  : world_ == World::kWasmcloudMessaging
                                      ? wasmcloud_host_functions()
                                      : seed_host_functions();
  for (HostFunction& f : wasi_->functions([this] { return wasm_.get(); })) {
    out.push_back(std::move(f));
  }
  for (HostFunction& f : wasi_p2_->functions([this] { return wasm_.get(); })) {
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<HostFunction> GuestInstance::seed_host_functions() {
  using Body = std::function<void(const RawValue*)>;
  auto m = [this]() -> abi::GuestMemory& { return *memory_; };
  auto status_result = [this, m](uint32_t retptr, const Status& st) {
    std::optional<abi::ErrorHandle> err;
    if (!st.ok()) err = abi::ErrorHandle{new_error(st.error())};
    abi::store_result_unit(m(), retptr, err);
  };
  auto need_broker = [this](const char* use) {
    if (!ctx_.broker) throw GuestTrap(fmt::format("{}: no broker is attached to this guest", use));
  };

  std::map<std::string, Body> bodies;
  bodies["[static]client.connect"] = [this, m, need_broker](const RawValue* a) {
    const uint32_t retptr = u32(a[2]);
    abi::check_range(m(), retptr, abi::kResultHandle.size, abi::kResultHandle.align,
                     "[static]client.connect return area");
    // A guest does not choose its client's name: "" connects an ephemeral client, any other
    // name connects under ctx_.client_name (the guest's group or name), so that a guest cannot
    // read through another client's durable subscription.
    const bool ephemeral =
        abi::lift_string(m(), u32(a[0]), u32(a[1]), "[static]client.connect name").empty();
    need_broker("[static]client.connect");
    auto stopping = [&] {
      abi::store_result_error(
          m(), retptr, abi::kResultHandle, abi::kResultHandlePayload,
          {new_error(Error(ErrorCode::kUnavailable,
                           fmt::format("connect: guest '{}' is stopping", ctx_.guest_name)))});
    };
    if (interrupted_) return stopping();
    if (clients_.size() >= clients_.capacity()) {
      abi::store_result_error(
          m(), retptr, abi::kResultHandle, abi::kResultHandlePayload,
          {new_error(Error(ErrorCode::kResourceExhausted,
                           fmt::format("connect: guest '{}' already holds {} clients, the most "
                                       "an instance may; drop one first",
                                       ctx_.guest_name, clients_.capacity())))});
      return;
    }
    auto c = ctx_.broker->connect(ephemeral                  ? std::string()
                                  : ctx_.client_name.empty() ? ctx_.guest_name
                                                             : ctx_.client_name);
    if (!c.ok()) {
      abi::store_result_error(m(), retptr, abi::kResultHandle, abi::kResultHandlePayload,
                              {new_error(std::move(c).error())});
      return;
    }
    bool kept = false;
    {
      // interrupt() may have run since the check above: it disconnected only the clients it
      // saw, so a client connected meanwhile is disconnected here rather than leaked.
      std::lock_guard lock(connected_mu_);
      kept = !interrupted_;
      if (kept) connected_.push_back(*c);
    }
    if (!kept) {
      ctx_.broker->disconnect(*c);
      return stopping();
    }
    abi::store_result_handle(m(), retptr, clients_.add(std::move(c).value()));
  };
  bodies["[static]error.trace"] = [this, m](const RawValue* a) {
    // A copy: lowering calls cabi_realloc, whose host calls may replace last_error_.
    const std::string trace = last_error_;
    abi::store_string_result(m(), u32(a[0]), trace);
  };
  bodies["[resource-drop]client"] = [this](const RawValue* a) {
    broker::ClientPtr c = clients_.take(u32(a[0]), "[resource-drop]client");
    bool disconnect = false;
    {
      std::lock_guard lock(connected_mu_);
      std::erase(connected_, c);
      disconnect = !interrupted_;
    }
    if (disconnect && ctx_.broker) ctx_.broker->disconnect(c);
  };
  bodies["[resource-drop]error"] = [this](const RawValue* a) {
    errors_.take(u32(a[0]), "[resource-drop]error");
  };
  bodies["send"] = [this, m, status_result, need_broker](const RawValue* a) {
    const uint32_t retptr = u32(a[5]);
    abi::check_range(m(), retptr, abi::kResultUnit.size, abi::kResultUnit.align,
                     "send return area");
    broker::ClientPtr c = client(u32(a[0]), "send");
    std::string channel = abi::lift_string(m(), u32(a[1]), u32(a[2]), "send channel");
    std::vector<Message> messages = abi::lift_messages(m(), u32(a[3]), u32(a[4]));
    need_broker("send");
    Status st = permitted(auth::Action::kSend, channel);
    if (st.ok()) {
      st = await_broker<Status>(
          [&](auto done) { ctx_.broker->send(c, channel, std::move(messages), std::move(done)); });
    }
    status_result(retptr, st);
  };
  bodies["subscribe-try-receive"] = [this, m](const RawValue* a) {
    const uint32_t retptr = u32(a[4]);
    abi::check_range(m(), retptr, abi::kResultOptionMessages.size, abi::kResultOptionMessages.align,
                     "subscribe-try-receive return area");
    broker::ClientPtr c = client(u32(a[0]), "subscribe-try-receive");
    std::string channel =
        abi::lift_string(m(), u32(a[1]), u32(a[2]), "subscribe-try-receive channel");
    if (!ctx_.broker) throw GuestTrap("subscribe-try-receive: no broker is attached");
    Status st = permitted(auth::Action::kReceive, channel);
    std::vector<Message> batch;
    if (st.ok()) batch = receive(c, channel, std::chrono::milliseconds(u32(a[3])), &st);
    if (!st.ok()) {
      abi::store_result_error(m(), retptr, abi::kResultOptionMessages,
                              abi::kResultOptionMessagesPayload, {new_error(st.error())});
      return;
    }
    abi::store_result_option_messages(
        m(), retptr, batch.empty() ? std::nullopt : std::optional(std::move(batch)));
  };
  bodies["subscribe-receive"] = [this, m](const RawValue* a) {
    const uint32_t retptr = u32(a[3]);
    abi::check_range(m(), retptr, abi::kResultMessages.size, abi::kResultMessages.align,
                     "subscribe-receive return area");
    broker::ClientPtr c = client(u32(a[0]), "subscribe-receive");
    std::string channel = abi::lift_string(m(), u32(a[1]), u32(a[2]), "subscribe-receive channel");
    if (!ctx_.broker) throw GuestTrap("subscribe-receive: no broker is attached");
    Status st = permitted(auth::Action::kReceive, channel);
    std::vector<Message> batch;
    if (st.ok()) batch = receive(c, channel, std::nullopt, &st);
    if (st.ok() && batch.empty()) {
      st = Error(ErrorCode::kUnavailable,
                 fmt::format("subscribe-receive on '{}' ended without a message", channel));
    }
    if (!st.ok()) {
      abi::store_result_error(m(), retptr, abi::kResultMessages, abi::kResultMessagesPayload,
                              {new_error(st.error())});
      return;
    }
    abi::store_result_messages(m(), retptr, batch);
  };
  bodies["update-guest-configuration"] = [this, m, status_result](const RawValue* a) {
    const uint32_t retptr = u32(a[5]);
    abi::check_range(m(), retptr, abi::kResultUnit.size, abi::kResultUnit.align,
                     "update-guest-configuration return area");
    const uint32_t flat[abi::kFlatGuestConfiguration] = {u32(a[0]), u32(a[1]), u32(a[2]), u32(a[3]),
                                                         u32(a[4])};
    GuestConfiguration gc = abi::lift_guest_configuration(m(), flat);
    Status st = ctx_.update_configuration
                    ? ctx_.update_configuration(gc)
                    : Status(Error(ErrorCode::kFailedPrecondition,
                                   "update-guest-configuration: this guest cannot re-subscribe"));
    status_result(retptr, st);
  };
  auto settle = [this, m, status_result, need_broker](const RawValue* a, bool complete) {
    const char* use = complete ? "complete-message" : "abandon-message";
    const uint32_t retptr = u32(a[6]);
    abi::check_range(m(), retptr, abi::kResultUnit.size, abi::kResultUnit.align, use);
    const uint32_t flat[abi::kFlatMessage] = {u32(a[0]), u32(a[1]), u32(a[2]),
                                              u32(a[3]), u32(a[4]), u32(a[5])};
    Message message = abi::lift_message(m(), flat);
    need_broker(use);
    Status st =
        complete ? ctx_.broker->complete_message(message) : ctx_.broker->abandon_message(message);
    if (st.ok()) record_settled(message);
    status_result(retptr, st);
  };
  bodies["complete-message"] = [settle](const RawValue* a) { settle(a, true); };
  bodies["abandon-message"] = [settle](const RawValue* a) { settle(a, false); };

  std::vector<HostFunction> out;
  for (const ImportEntry& e : kImports) {
    Body body = bodies.at(e.name);
    out.push_back(HostFunction{ImportSpec{e.module, e.name, i32s(e.params, 0)},
                               [this, body](const RawValue* args, RawValue*) {
                                 begin_lift();
                                 body(args);
                               }});
  }
  return out;
}

}  // namespace witmq::guest
