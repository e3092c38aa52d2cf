// wasmCloud's wasmcloud:messaging@0.2.0 (wit/wasmcloud-messaging/): the `consumer` imports
// (publish, request) and the `handler.handle-message` export, served with the same broker calls,
// grants, limits and budgets as the other worlds (docs/GUESTS.md "Worlds").
//
// A broker-message's subject is the channel. A message that is a request (it carries
// witmq-reply-to and witmq-correlation-id) reaches handle-message with reply-to set to a reply
// address, kReplyPrefix + "<witmq-reply-to>/<witmq-correlation-id>", which is never a channel
// name; publishing to that subject answers the request (Broker::reply_to). Any other reply-to a
// guest publishes with travels as the metadata entry "reply-to" and comes back as reply-to to
// the guest that handles the message, so that the NATS pattern of replying to a subject named
// in the message works between guests and TCP clients alike.
//
// consumer.request blocks the guest's worker thread (not a network thread) until the reply,
// the timeout or the end of the call's wall time (call-timeout-ms), whichever comes first.
#include <fmt/format.h>

#include <future>

#include "guest/canonical_abi.h"
#include "guest/guest_instance.h"

namespace witmq::guest {
namespace {

using namespace wasmcloud_names;  // NOLINT: the names are the point of this file

uint32_t u32(RawValue v) { return static_cast<uint32_t>(v); }

template <typename T, typename Start>
T await_broker(Start&& start) {
  std::promise<T> promise;
  std::future<T> future = promise.get_future();
  start([p = std::move(promise)](T value) mutable { p.set_value(std::move(value)); });
  return future.get();
}

// The subject prefix of a reply address; '@' is not a channel name character.
constexpr std::string_view kReplyPrefix = "@witmq-reply/";
// The metadata entry that carries a reply-to that is not a reply address.
constexpr std::string_view kReplyToKey = "reply-to";

// broker-message { subject: string, body: list<u8>, reply-to: option<string> }
constexpr abi::Layout kOptionString = abi::option(abi::kString);
constexpr abi::Layout kBrokerMessage = abi::record({abi::kString, abi::kList, kOptionString});
constexpr uint32_t kBody = abi::field_offset({abi::kString, abi::kList, kOptionString}, 1);
constexpr uint32_t kReplyTo = abi::field_offset({abi::kString, abi::kList, kOptionString}, 2);
constexpr uint32_t kOptionPayload = abi::payload_offset(2, {abi::kNone, abi::kString});
// Flat: subject (2), body (2), reply-to (discriminant, ptr, len).
constexpr size_t kFlatBrokerMessage = 7;
// result<_, string> and result<broker-message, string>
constexpr abi::Layout kResultUnit = abi::result(abi::kNone, abi::kString);
constexpr uint32_t kResultUnitPayload = abi::payload_offset(2, {abi::kNone, abi::kString});
constexpr abi::Layout kResultMessage = abi::result(kBrokerMessage, abi::kString);
constexpr uint32_t kResultMessagePayload = abi::payload_offset(2, {kBrokerMessage, abi::kString});
static_assert(kBrokerMessage.size == 28 && kBody == 8 && kReplyTo == 16 && kOptionPayload == 4);
static_assert(kResultUnit.size == 12 && kResultMessage.size == 32 && kResultMessagePayload == 4);

std::string cut_text(std::string text) {
  if (text.size() > kMaxErrorTextBytes) {
    size_t cut = kMaxErrorTextBytes;
    while (cut > 0 && (static_cast<uint8_t>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
    text += "...";
  }
  return text;
}

// What handle-message and request hand the guest as reply-to.
std::optional<std::string> reply_address(const Message& m) {
  const std::string* inbox = find_metadata(m, meta::kReplyTo);
  const std::string* correlation = find_metadata(m, meta::kCorrelationId);
  if (inbox && correlation) return fmt::format("{}{}/{}", kReplyPrefix, *inbox, *correlation);
  if (const std::string* reply_to = find_metadata(m, kReplyToKey)) return *reply_to;
  return std::nullopt;
}

// Writes result<_, string> at `retptr`: ok, or err with the error's text. The text is lowered
// first (cabi_realloc may grow the memory), the return area checked before and after.
void store_unit_result(abi::GuestMemory& m, uint32_t retptr, const Status& st,
                       std::string_view use) {
  abi::check_range(m, retptr, kResultUnit.size, kResultUnit.align, use);
  if (st.ok()) return abi::store_u8(m, retptr, 0);
  const auto text = abi::lower_string(m, cut_text(st.error().to_string()));
  abi::check_range(m, retptr, kResultUnit.size, kResultUnit.align, use);
  abi::store_u8(m, retptr, 1);
  abi::store_u32(m, retptr + kResultUnitPayload, text.first);
  abi::store_u32(m, retptr + kResultUnitPayload + 4, text.second);
}

}  // namespace

const ModuleRequirements& wasmcloud_requirements() {
  static const ModuleRequirements req = [] {
    auto i32s = [](size_t params, size_t results) {
      return FuncSig{std::vector<ValType>(params, ValType::kI32),
                     std::vector<ValType>(results, ValType::kI32)};
    };
    ModuleRequirements r;
    // request(subject: string, body: list<u8>, timeout-ms: u32) -> result<broker-message,
    // string>: 2 + 2 + 1 + retptr; publish(msg: broker-message) -> result<_, string>: 7 + retptr.
    r.offered_imports.push_back(ImportSpec{kConsumer, "request", i32s(6, 0)});
    r.offered_imports.push_back(ImportSpec{kConsumer, "publish", i32s(kFlatBrokerMessage + 1, 0)});
    r.exports = {
        // (broker-message) -> retptr of result<_, string>
        {kHandleMessage, i32s(kFlatBrokerMessage, 1), true},
        {"cabi_realloc", i32s(4, 1), true},
        {kPostHandleMessage, i32s(1, 0), false},
    };
    for (const ImportSpec& spec : wasi_imports()) r.offered_imports.push_back(spec);
    r.memory_export = "memory";
    return r;
  }();
  return req;
}

Result<broker::ClientPtr> GuestInstance::wasmcloud_client(std::string_view use) {
  if (wasmcloud_client_) return wasmcloud_client_;
  auto stopping = [&] {
    return Error(ErrorCode::kUnavailable,
                 fmt::format("{}: guest '{}' is stopping", use, ctx_.guest_name));
  };
  if (interrupted_) return stopping();
  // Ephemeral: publish and request need no subscription, and the inbox of request goes with it.
  auto c = ctx_.broker->connect(std::string());
  if (!c.ok()) return std::move(c).error();
  bool kept = false;
  {
    // interrupt() disconnects the clients it sees: one connected after it is disconnected here.
    std::lock_guard lock(connected_mu_);
    kept = !interrupted_;
    if (kept) connected_.push_back(*c);
  }
  if (!kept) {
    ctx_.broker->disconnect(*c);
    return stopping();
  }
  wasmcloud_client_ = std::move(c).value();
  return wasmcloud_client_;
}

std::vector<HostFunction> GuestInstance::wasmcloud_host_functions() {
  auto m = [this]() -> abi::GuestMemory& { return mem(); };
  auto need_broker = [this](const char* use) {
    if (!ctx_.broker) throw GuestTrap(fmt::format("{}: no broker is attached to this guest", use));
  };

  auto publish = [this, m, need_broker](const RawValue* a, RawValue*) {
    const char* use = "consumer.publish";
    const uint32_t retptr = u32(a[kFlatBrokerMessage]);
    abi::check_range(m(), retptr, kResultUnit.size, kResultUnit.align, use);
    std::string subject = abi::lift_string(m(), u32(a[0]), u32(a[1]), "consumer.publish subject");
    Message msg;
    msg.data = abi::lift_bytes(m(), u32(a[2]), u32(a[3]));
    const uint32_t disc = u32(a[4]);
    if (disc > 1) {
      throw GuestTrap(fmt::format("{}: invalid option discriminant {} of reply-to", use, disc));
    }
    std::optional<std::string> reply_to;
    if (disc == 1) {
      reply_to = abi::lift_string(m(), u32(a[5]), u32(a[6]), "consumer.publish reply-to");
    }
    need_broker(use);
    if (reply_to) msg.metadata.emplace().emplace_back(kReplyToKey, std::move(*reply_to));
    Status st = ok_status();
    if (subject.starts_with(kReplyPrefix)) {
      // A reply: the address is the proof (broker.h, Broker::reply), no send grant is needed.
      const std::string_view address = std::string_view(subject).substr(kReplyPrefix.size());
      const size_t slash = address.find('/');
      if (slash == std::string_view::npos || slash == 0 || slash + 1 == address.size()) {
        st = Error(ErrorCode::kInvalidArgument,
                   fmt::format("publish to '{}': a subject starting with '{}' is a reply address "
                               "(the reply-to of a request), and this one is malformed",
                               cut_text(subject), kReplyPrefix));
      } else {
        st = ctx_.broker->reply_to(address.substr(0, slash), address.substr(slash + 1),
                                   std::move(msg));
      }
    } else {
      st = permitted(auth::Action::kSend, subject);
      if (st.ok()) {
        auto c = wasmcloud_client(use);
        if (!c.ok()) {
          st = std::move(c).error();
        } else {
          std::vector<Message> batch;
          batch.push_back(std::move(msg));
          st = await_broker<Status>([&](auto done) {
            ctx_.broker->send(*c, subject, std::move(batch), std::move(done));
          });
        }
      }
    }
    store_unit_result(m(), retptr, st, use);
  };

  auto request = [this, m, need_broker](const RawValue* a, RawValue*) {
    const char* use = "consumer.request";
    const uint32_t retptr = u32(a[5]);
    abi::check_range(m(), retptr, kResultMessage.size, kResultMessage.align, use);
    std::string subject = abi::lift_string(m(), u32(a[0]), u32(a[1]), "consumer.request subject");
    Message msg;
    msg.data = abi::lift_bytes(m(), u32(a[2]), u32(a[3]));
    const std::chrono::milliseconds timeout(u32(a[4]));
    need_broker(use);
    Status st = permitted(auth::Action::kSend, subject);
    Result<std::vector<Message>> replies = std::vector<Message>();
    if (st.ok()) {
      auto c = wasmcloud_client(use);
      if (!c.ok()) {
        st = std::move(c).error();
      } else {
        broker::RequestOptions options;
        // The call's wall time bounds the wait; the broker refuses 0 and more than
        // max-request-timeout-ms.
        options.timeout = *bounded_wait(timeout, use);
        replies = await_broker<Result<std::vector<Message>>>([&](auto done) {
          ctx_.broker->request(*c, subject, std::move(msg), options, std::move(done));
        });
        // A wait the deadline ended fails the call (GuestTrap), not just this request.
        bounded_wait(std::nullopt, use);
        if (!replies.ok()) st = std::move(replies).error();
      }
    }
    if (!st.ok()) {
      const auto text = abi::lower_string(m(), cut_text(st.error().to_string()));
      abi::check_range(m(), retptr, kResultMessage.size, kResultMessage.align, use);
      abi::store_u8(m(), retptr, 1);
      abi::store_u32(m(), retptr + kResultMessagePayload, text.first);
      abi::store_u32(m(), retptr + kResultMessagePayload + 4, text.second);
      return;
    }
    // The broker answers with at least one reply (expected_replies = 1) or an error.
    const Message& reply = replies->front();
    const std::optional<std::string> reply_to = reply_address(reply);
    const auto lowered_subject = abi::lower_string(m(), subject);
    const auto lowered_body = abi::lower_bytes(m(), reply.data);
    std::pair<uint32_t, uint32_t> lowered_reply_to{0, 0};
    if (reply_to) lowered_reply_to = abi::lower_string(m(), *reply_to);
    abi::check_range(m(), retptr, kResultMessage.size, kResultMessage.align, use);
    const uint32_t at = retptr + kResultMessagePayload;
    abi::store_u8(m(), retptr, 0);
    abi::store_u32(m(), at, lowered_subject.first);
    abi::store_u32(m(), at + 4, lowered_subject.second);
    abi::store_u32(m(), at + kBody, lowered_body.first);
    abi::store_u32(m(), at + kBody + 4, lowered_body.second);
    abi::store_u8(m(), at + kReplyTo, reply_to ? 1 : 0);
    abi::store_u32(m(), at + kReplyTo + kOptionPayload, lowered_reply_to.first);
    abi::store_u32(m(), at + kReplyTo + kOptionPayload + 4, lowered_reply_to.second);
  };

  std::vector<HostFunction> out;
  for (const ImportSpec& spec : wasmcloud_requirements().offered_imports) {
    if (spec.module != kConsumer) continue;
    std::function<void(const RawValue*, RawValue*)> body =
        spec.name == "request" ? decltype(body)(request) : decltype(body)(publish);
    out.push_back(HostFunction{spec, [this, body](const RawValue* args, RawValue* results) {
                                 begin_lift();
                                 body(args, results);
                               }});
  }
  return out;
}

CallReport GuestInstance::handle_wasmcloud_one(const Message& message) {
  realloc_failure_.reset();
  std::vector<RawValue> args;
  try {
    // Lowered one after the other: each cabi_realloc may grow the memory, and only offsets are
    // kept.
    const std::string* channel = find_metadata(message, meta::kChannel);
    const std::optional<std::string> reply_to = reply_address(message);
    const auto subject = abi::lower_string(mem(), channel ? *channel : std::string());
    const auto body = abi::lower_bytes(mem(), message.data);
    std::pair<uint32_t, uint32_t> lowered_reply_to{0, 0};
    if (reply_to) lowered_reply_to = abi::lower_string(mem(), *reply_to);
    args = {
        subject.first,          subject.second,         body.first, body.second, reply_to ? 1u : 0u,
        lowered_reply_to.first, lowered_reply_to.second};
  } catch (const std::exception& e) {
    return report_failure(e, "passing a message to handle-message");
  }
  return call_and_lift(
      wasmcloud_handle_, args, kHandleMessage, "lifting the result of handle-message",
      [this](RawValue retptr, CallReport* r) {
        begin_lift();
        const uint32_t p = u32(retptr);
        abi::check_range(mem(), p, kResultUnit.size, kResultUnit.align,
                         "the result of handle-message");
        const uint8_t disc = abi::load_u8(mem(), p);
        if (disc > 1) {
          throw GuestTrap(
              fmt::format("the result of handle-message: invalid result discriminant {}", disc));
        }
        if (disc == 1) {
          std::string text = abi::lift_string(mem(), abi::load_u32(mem(), p + kResultUnitPayload),
                                              abi::load_u32(mem(), p + kResultUnitPayload + 4),
                                              "the error text of handle-message");
          r->guest_error = Error(ErrorCode::kFailedPrecondition, cut_text(std::move(text)));
        }
      },
      wasmcloud_post_handle_, kPostHandleMessage);
}

CallReport GuestInstance::handle_wasmcloud(const std::vector<Message>& batch) {
  return handle_each(batch, &GuestInstance::handle_wasmcloud_one);
}

}  // namespace witmq::guest
