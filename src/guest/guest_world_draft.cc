// The upstream wasi:messaging draft's `messaging-core` and `messaging-request-reply` worlds
// (wit/wasi-messaging-draft/): the imports of `types` (client, message), `producer` and
// `request-reply`, and the `incoming-handler.handle` export, served with the same broker calls,
// grants, limits and budgets as the seed's world.
#include <fmt/format.h>

#include <future>
#include <map>

#include "guest/canonical_abi.h"
#include "guest/guest_instance.h"

namespace witmq::guest {
namespace {

using namespace draft_names;  // NOLINT: the names are the point of this file

uint32_t u32(RawValue v) { return static_cast<uint32_t>(v); }

template <typename T, typename Start>
T await_broker(Start&& start) {
  std::promise<T> promise;
  std::future<T> future = promise.get_future();
  start([p = std::move(promise)](T value) mutable { p.set_value(std::move(value)); });
  return future.get();
}

// variant error { timeout, connection(string), permission-denied(string), other(string) }
constexpr abi::Layout kError =
    abi::variant(4, {abi::kNone, abi::kString, abi::kString, abi::kString});
constexpr uint32_t kErrorPayload =
    abi::payload_offset(4, {abi::kNone, abi::kString, abi::kString, abi::kString});
enum ErrorCase : uint8_t { kTimeout = 0, kConnection = 1, kPermissionDenied = 2, kOther = 3 };
// result<_, error> and result<own<client>, error>
constexpr abi::Layout kResultUnit = abi::result(abi::kNone, kError);
constexpr uint32_t kResultUnitPayload = abi::payload_offset(2, {abi::kNone, kError});
constexpr abi::Layout kResultClient = abi::result(abi::kHandle, kError);
constexpr uint32_t kResultClientPayload = abi::payload_offset(2, {abi::kHandle, kError});
// result<list<own<message>>, error>
constexpr abi::Layout kResultList = abi::result(abi::kList, kError);
constexpr uint32_t kResultListPayload = abi::payload_offset(2, {abi::kList, kError});
// option<string>, option<metadata>
constexpr abi::Layout kOptionList = abi::option(abi::kList);
constexpr uint32_t kOptionListPayload = abi::payload_offset(2, {abi::kNone, abi::kList});

constexpr std::string_view kContentTypeKey = "content-type";

ErrorCase error_case(ErrorCode code) {
  switch (code) {
    case ErrorCode::kTimeout:
      return kTimeout;
    case ErrorCode::kPermissionDenied:
      return kPermissionDenied;
    case ErrorCode::kUnavailable:
      return kConnection;
    default:
      return kOther;
  }
}

std::string cut_text(std::string text) {
  if (text.size() > kMaxErrorTextBytes) {
    size_t cut = kMaxErrorTextBytes;
    while (cut > 0 && (static_cast<uint8_t>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
    text += "...";
  }
  return text;
}

// Writes `result` with `err` at `retptr`. The text is lowered first (cabi_realloc may move or
// grow the memory), the return area checked before and after.
void store_error_result(abi::GuestMemory& m, uint32_t retptr, abi::Layout layout, uint32_t payload,
                        const Error& err, std::string_view use) {
  abi::check_range(m, retptr, layout.size, layout.align, use);
  const ErrorCase c = error_case(err.code);
  std::pair<uint32_t, uint32_t> text{0, 0};
  if (c != kTimeout) text = abi::lower_string(m, cut_text(err.message));  // timeout has no text
  abi::check_range(m, retptr, layout.size, layout.align, use);
  abi::store_u8(m, retptr, 1);
  abi::store_u8(m, retptr + payload, c);
  if (c == kTimeout) return;
  abi::store_u32(m, retptr + payload + kErrorPayload, text.first);
  abi::store_u32(m, retptr + payload + kErrorPayload + 4, text.second);
}

void store_unit_result(abi::GuestMemory& m, uint32_t retptr, const Status& st,
                       std::string_view use) {
  if (!st.ok())
    return store_error_result(m, retptr, kResultUnit, kResultUnitPayload, st.error(), use);
  abi::check_range(m, retptr, kResultUnit.size, kResultUnit.align, use);
  abi::store_u8(m, retptr, 0);
}

// option<string> / option<list<..>> at `retptr`, `lowered` = (ptr, len) or nullopt.
void store_option_list(abi::GuestMemory& m, uint32_t retptr,
                       std::optional<std::pair<uint32_t, uint32_t>> lowered, std::string_view use) {
  abi::check_range(m, retptr, kOptionList.size, kOptionList.align, use);
  abi::store_u8(m, retptr, lowered ? 1 : 0);
  if (!lowered) return;
  abi::store_u32(m, retptr + kOptionListPayload, lowered->first);
  abi::store_u32(m, retptr + kOptionListPayload + 4, lowered->second);
}

uint64_t message_bytes(const Message& m) {
  uint64_t n = sizeof(Message) + m.data.size();
  if (m.metadata) {
    for (const auto& [k, v] : *m.metadata) n += sizeof(KeyValue) + k.size() + v.size();
  }
  return n;
}

void set_metadata_value(Message& m, std::string_view key, std::string value) {
  if (!m.metadata) m.metadata.emplace();
  for (auto& [k, v] : *m.metadata) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  if (m.metadata->size() >= abi::kMaxLiftEntries) {
    throw GuestTrap(fmt::format("add-metadata: a message holds at most {} metadata entries",
                                abi::kMaxLiftEntries));
  }
  m.metadata->emplace_back(std::string(key), std::move(value));
}

}  // namespace

void GuestInstance::account_message_bytes(uint64_t before, uint64_t after) {
  message_bytes_ = message_bytes_ - before + after;
  if (message_bytes_ > kMaxMessageBytesPerInstance) {
    throw GuestTrap(
        fmt::format("the guest's messages hold {} bytes, more than the {} an "
                    "instance may; drop messages ([resource-drop]message)",
                    message_bytes_, kMaxMessageBytesPerInstance));
  }
}

uint32_t GuestInstance::add_message(Message m) {
  const uint64_t n = message_bytes(m);
  const uint32_t h = messages_.add(std::move(m));
  account_message_bytes(0, n);
  return h;
}

std::vector<HostFunction> GuestInstance::draft_host_functions() {
  using Body = std::function<void(const RawValue*, RawValue*)>;
  auto m = [this]() -> abi::GuestMemory& { return mem(); };
  // Applies `change` to the message behind handle a[0], keeping the byte count.
  auto change_message = [this](uint32_t handle, const char* use, auto&& change) {
    Message& msg = messages_.get(handle, use);
    const uint64_t before = message_bytes(msg);
    change(msg);
    account_message_bytes(before, message_bytes(msg));
  };
  std::map<std::string, Body> bodies;

  bodies["[static]client.connect"] = [this, m](const RawValue* a, RawValue*) {
    const char* use = "[static]client.connect";
    const uint32_t retptr = u32(a[2]);
    abi::check_range(m(), retptr, kResultClient.size, kResultClient.align, use);
    const bool ephemeral = abi::lift_string(m(), u32(a[0]), u32(a[1]), use).empty();
    if (!ctx_.broker) throw GuestTrap(fmt::format("{}: no broker is attached to this guest", use));
    auto fail = [&](Error e) {
      store_error_result(m(), retptr, kResultClient, kResultClientPayload, e, use);
    };
    auto stopping = Error(ErrorCode::kUnavailable,
                          fmt::format("connect: guest '{}' is stopping", ctx_.guest_name));
    if (interrupted_) return fail(stopping);
    if (clients_.size() >= clients_.capacity()) {
      return fail(Error(ErrorCode::kResourceExhausted,
                        fmt::format("connect: guest '{}' already holds {} clients, the most an "
                                    "instance may; drop one first",
                                    ctx_.guest_name, clients_.capacity())));
    }
    auto c = ctx_.broker->connect(ephemeral                  ? std::string()
                                  : ctx_.client_name.empty() ? ctx_.guest_name
                                                             : ctx_.client_name);
    if (!c.ok()) return fail(std::move(c).error());
    bool kept = false;
    {
      std::lock_guard lock(connected_mu_);
      kept = !interrupted_;
      if (kept) connected_.push_back(*c);
    }
    if (!kept) {
      ctx_.broker->disconnect(*c);
      return fail(stopping);
    }
    const uint32_t handle = clients_.add(std::move(c).value());
    abi::store_u8(m(), retptr, 0);
    abi::store_u32(m(), retptr + kResultClientPayload, handle);
  };
  // Disconnects the broker client; the handle stays until dropped, and sends on it fail.
  auto release = [this](broker::ClientPtr c) {
    if (!c) return;
    bool disconnect = false;
    {
      std::lock_guard lock(connected_mu_);
      std::erase(connected_, c);
      disconnect = !interrupted_;
    }
    if (disconnect && ctx_.broker) ctx_.broker->disconnect(c);
  };
  bodies["[method]client.disconnect"] = [this, m, release](const RawValue* a, RawValue*) {
    const uint32_t retptr = u32(a[1]);
    abi::check_range(m(), retptr, kResultUnit.size, kResultUnit.align, "client.disconnect");
    broker::ClientPtr c = std::move(clients_.get(u32(a[0]), "client.disconnect"));
    release(std::move(c));
    store_unit_result(m(), retptr, ok_status(), "client.disconnect");
  };
  bodies["[resource-drop]client"] = [this, release](const RawValue* a, RawValue*) {
    release(clients_.take(u32(a[0]), "[resource-drop]client"));
  };

  bodies["[constructor]message"] = [this, m](const RawValue* a, RawValue* r) {
    Message msg;
    msg.data = abi::lift_bytes(m(), u32(a[0]), u32(a[1]));
    r[0] = add_message(std::move(msg));
  };
  // Getters: the value is copied before it is lowered, since cabi_realloc runs guest code that
  // may drop or change the message.
  auto optional_string = [this, m](const RawValue* a, const char* use, std::string_view key) {
    const uint32_t retptr = u32(a[1]);
    abi::check_range(m(), retptr, kOptionList.size, kOptionList.align, use);
    const std::string* v = find_metadata(messages_.get(u32(a[0]), use), key);
    std::optional<std::string> value;
    if (v) value = *v;
    std::optional<std::pair<uint32_t, uint32_t>> lowered;
    if (value) lowered = abi::lower_string(m(), *value);
    store_option_list(m(), retptr, lowered, use);
  };
  bodies["[method]message.topic"] = [optional_string](const RawValue* a, RawValue*) {
    optional_string(a, "message.topic", meta::kChannel);
  };
  bodies["[method]message.content-type"] = [optional_string](const RawValue* a, RawValue*) {
    optional_string(a, "message.content-type", kContentTypeKey);
  };
  bodies["[method]message.data"] = [this, m](const RawValue* a, RawValue*) {
    const uint32_t retptr = u32(a[1]);
    abi::check_range(m(), retptr, abi::kList.size, abi::kList.align, "message.data");
    const std::vector<uint8_t> data = messages_.get(u32(a[0]), "message.data").data;
    auto [ptr, len] = abi::lower_bytes(m(), data);
    abi::store_u32(m(), retptr, ptr);
    abi::store_u32(m(), retptr + 4, len);
  };
  bodies["[method]message.metadata"] = [this, m](const RawValue* a, RawValue*) {
    const uint32_t retptr = u32(a[1]);
    abi::check_range(m(), retptr, kOptionList.size, kOptionList.align, "message.metadata");
    const std::optional<Metadata> md = messages_.get(u32(a[0]), "message.metadata").metadata;
    std::optional<std::pair<uint32_t, uint32_t>> lowered;
    if (md) lowered = abi::lower_key_values(m(), *md);
    store_option_list(m(), retptr, lowered, "message.metadata");
  };
  bodies["[method]message.set-content-type"] = [m, change_message](const RawValue* a, RawValue*) {
    std::string v = abi::lift_string(m(), u32(a[1]), u32(a[2]), "message.set-content-type");
    change_message(u32(a[0]), "message.set-content-type",
                   [&](Message& msg) { set_metadata_value(msg, kContentTypeKey, std::move(v)); });
  };
  bodies["[method]message.set-data"] = [m, change_message](const RawValue* a, RawValue*) {
    std::vector<uint8_t> data = abi::lift_bytes(m(), u32(a[1]), u32(a[2]));
    change_message(u32(a[0]), "message.set-data",
                   [&](Message& msg) { msg.data = std::move(data); });
  };
  bodies["[method]message.set-metadata"] = [m, change_message](const RawValue* a, RawValue*) {
    Metadata md = abi::lift_key_values(m(), u32(a[1]), u32(a[2]), "message.set-metadata");
    change_message(u32(a[0]), "message.set-metadata",
                   [&](Message& msg) { msg.metadata = std::move(md); });
  };
  bodies["[method]message.remove-metadata"] = [m, change_message](const RawValue* a, RawValue*) {
    std::string key = abi::lift_string(m(), u32(a[1]), u32(a[2]), "message.remove-metadata");
    change_message(u32(a[0]), "message.remove-metadata", [&](Message& msg) {
      if (msg.metadata)
        std::erase_if(*msg.metadata, [&](const KeyValue& kv) { return kv.first == key; });
    });
  };
  bodies["[method]message.add-metadata"] = [m, change_message](const RawValue* a, RawValue*) {
    std::string key = abi::lift_string(m(), u32(a[1]), u32(a[2]), "message.add-metadata key");
    std::string value = abi::lift_string(m(), u32(a[3]), u32(a[4]), "message.add-metadata value");
    change_message(u32(a[0]), "message.add-metadata",
                   [&](Message& msg) { set_metadata_value(msg, key, std::move(value)); });
  };
  bodies["[resource-drop]message"] = [this](const RawValue* a, RawValue*) {
    Message msg = messages_.take(u32(a[0]), "[resource-drop]message");
    account_message_bytes(message_bytes(msg), 0);
  };

  bodies["send"] = [this, m](const RawValue* a, RawValue*) {
    const char* use = "producer.send";
    const uint32_t retptr = u32(a[4]);
    abi::check_range(m(), retptr, kResultUnit.size, kResultUnit.align, use);
    broker::ClientPtr c = clients_.get(u32(a[0]), use);
    std::string topic = abi::lift_string(m(), u32(a[1]), u32(a[2]), "producer.send topic");
    // own<message>: the message moves to the host whatever the outcome.
    Message msg = messages_.take(u32(a[3]), use);
    account_message_bytes(message_bytes(msg), 0);
    if (!ctx_.broker) throw GuestTrap(fmt::format("{}: no broker is attached to this guest", use));
    Status st = ok_status();
    if (!c) {
      st = Error(ErrorCode::kUnavailable,
                 fmt::format("send to '{}': the client is disconnected", topic));
    } else {
      st = permitted(auth::Action::kSend, topic);
    }
    if (st.ok()) {
      std::vector<Message> batch;
      batch.push_back(std::move(msg));
      st = await_broker<Status>(
          [&](auto done) { ctx_.broker->send(c, topic, std::move(batch), std::move(done)); });
    }
    store_unit_result(m(), retptr, st, use);
  };

  bodies["[constructor]request-options"] = [this](const RawValue*, RawValue* r) {
    r[0] = request_options_.add(DraftRequestOptions{});
  };
  bodies["[method]request-options.set-timeout-ms"] = [this](const RawValue* a, RawValue*) {
    request_options_.get(u32(a[0]), "request-options.set-timeout-ms").timeout_ms = u32(a[1]);
  };
  bodies["[method]request-options.set-expected-replies"] = [this](const RawValue* a, RawValue*) {
    request_options_.get(u32(a[0]), "request-options.set-expected-replies").expected_replies =
        u32(a[1]);
  };
  bodies["[resource-drop]request-options"] = [this](const RawValue* a, RawValue*) {
    request_options_.take(u32(a[0]), "[resource-drop]request-options");
  };
  bodies["request"] = [this, m](const RawValue* a, RawValue*) {
    const char* use = "request-reply.request";
    const uint32_t retptr = u32(a[6]);
    abi::check_range(m(), retptr, kResultList.size, kResultList.align, use);
    broker::ClientPtr c = clients_.get(u32(a[0]), use);
    std::string topic = abi::lift_string(m(), u32(a[1]), u32(a[2]), "request-reply.request topic");
    Message msg = messages_.get(u32(a[3]), use);  // borrow<message>: the guest keeps it
    const uint32_t has_options = u32(a[4]);
    if (has_options > 1) {
      throw GuestTrap(fmt::format("{}: options: invalid option discriminant {}", use, has_options));
    }
    DraftRequestOptions o;
    if (has_options == 1) o = request_options_.take(u32(a[5]), use);  // own: moves to the host
    if (!ctx_.broker) throw GuestTrap(fmt::format("{}: no broker is attached to this guest", use));
    auto fail = [&](Error e) {
      store_error_result(m(), retptr, kResultList, kResultListPayload, e, use);
    };
    if (!c) {
      return fail(Error(ErrorCode::kUnavailable,
                        fmt::format("request to '{}': the client is disconnected", topic)));
    }
    if (Status st = permitted(auth::Action::kSend, topic); !st.ok()) return fail(st.error());
    const uint32_t expected = o.expected_replies.value_or(1);
    // Every reply becomes a message handle of this instance: ask for no more than it can hold.
    const size_t room = messages_.capacity() - messages_.size();
    if (expected > room && expected <= broker::kMaxExpectedReplies) {
      return fail(Error(ErrorCode::kResourceExhausted,
                        fmt::format("request to '{}': expected-replies {} is more than the {} "
                                    "message handles guest '{}' may still hold; drop messages "
                                    "([resource-drop]message) first",
                                    topic, expected, room, ctx_.guest_name)));
    }
    // The wait: the timeout asked (unset: the longest), never past the call's deadline. A guest's
    // request waits at most kMaxGuestRequestTimeout (and the broker's max-request-timeout-ms).
    std::chrono::milliseconds timeout =
        o.timeout_ms ? std::chrono::milliseconds(*o.timeout_ms) : kMaxGuestRequestTimeout;
    if (timeout > kMaxGuestRequestTimeout) {
      return fail(invalid_argument(fmt::format("request: timeout-ms: {} is out of range 1..{}",
                                               timeout.count(), kMaxGuestRequestTimeout.count())));
    }
    const bool waits = timeout.count() >= 1;  // 0 goes to the broker as asked, for its error
    if (waits) timeout = *bounded_wait(timeout, use);
    // Replies are held by the instance, within its message byte bound.
    const uint64_t byte_room =
        kMaxMessageBytesPerInstance - std::min(message_bytes_, kMaxMessageBytesPerInstance);
    broker::RequestOptions options{timeout, expected, std::max<size_t>(byte_room, 1)};
    auto r = await_broker<Result<std::vector<Message>>>([&](auto done) {
      ctx_.broker->request(c, topic, std::move(msg), options, std::move(done));
    });
    if (!r.ok()) {
      // A wait the call's deadline cut short fails the call, as a receive's does.
      if (waits && r.error().code == ErrorCode::kTimeout) bounded_wait(std::nullopt, use);
      return fail(std::move(r).error());
    }
    std::vector<uint32_t> handles;
    handles.reserve(r->size());
    for (Message& reply : *r) handles.push_back(add_message(std::move(reply)));
    const auto [ptr, len] = abi::lower_handles(m(), handles);
    abi::check_range(m(), retptr, kResultList.size, kResultList.align, use);
    abi::store_u8(m(), retptr, 0);
    abi::store_u32(m(), retptr + kResultListPayload, ptr);
    abi::store_u32(m(), retptr + kResultListPayload + 4, len);
  };
  bodies["reply"] = [this, m](const RawValue* a, RawValue*) {
    const char* use = "request-reply.reply";
    const uint32_t retptr = u32(a[2]);
    abi::check_range(m(), retptr, kResultUnit.size, kResultUnit.align, use);
    if (u32(a[0]) == u32(a[1])) {
      throw GuestTrap(fmt::format(
          "{}: message handle {} is passed both as reply-to (borrowed) and as the reply (moved)",
          use, u32(a[0])));
    }
    const Message& request = messages_.get(u32(a[0]), use);
    const std::string* to = find_metadata(request, meta::kReplyTo);
    const std::string* correlation = find_metadata(request, meta::kCorrelationId);
    std::optional<std::pair<std::string, std::string>> address;
    if (to && correlation) address.emplace(*to, *correlation);
    // own<message>: the reply moves to the host whatever the outcome.
    Message msg = messages_.take(u32(a[1]), use);
    account_message_bytes(message_bytes(msg), 0);
    if (!ctx_.broker) throw GuestTrap(fmt::format("{}: no broker is attached to this guest", use));
    Status st = ok_status();
    if (!address) {
      st = invalid_argument(fmt::format(
          "reply: the reply-to message has no {} metadata: only a message delivered as a "
          "request can be replied to",
          !to ? meta::kReplyTo : meta::kCorrelationId));
    } else {
      st = ctx_.broker->reply_to(address->first, address->second, std::move(msg));
    }
    store_unit_result(m(), retptr, st, use);
  };

  std::vector<HostFunction> out;
  for (const DraftImport& e : draft_imports()) {
    Body body = bodies.at(e.name);
    FuncSig sig{std::vector<ValType>(e.params, ValType::kI32),
                std::vector<ValType>(e.results, ValType::kI32)};
    out.push_back(HostFunction{ImportSpec{e.module, e.name, std::move(sig)},
                               [this, body](const RawValue* args, RawValue* results) {
                                 begin_lift();
                                 body(args, results);
                               }});
  }
  return out;
}

CallReport GuestInstance::handle_draft_one(const Message& message) {
  realloc_failure_.reset();
  uint32_t handle = 0;
  try {
    handle = add_message(message);
  } catch (const std::exception& e) {
    return report_failure(e, "passing a message to handle");
  }
  return call_and_lift(
      draft_handle_, {handle}, kHandle, "lifting the result of handle",
      [this](RawValue retptr, CallReport* r) {
        begin_lift();
        const uint32_t p = u32(retptr);
        abi::check_range(mem(), p, kResultUnit.size, kResultUnit.align, "the result of handle");
        const uint8_t disc = abi::load_u8(mem(), p);
        if (disc > 1) {
          throw GuestTrap(
              fmt::format("the result of handle: invalid result discriminant {}", disc));
        }
        if (disc == 1) {
          const uint32_t at = p + kResultUnitPayload;
          const uint8_t c = abi::load_u8(mem(), at);
          if (c > kOther) {
            throw GuestTrap(fmt::format("the result of handle: invalid error case {}", c));
          }
          std::string text = c == kTimeout ? std::string("timeout")
                                           : abi::lift_string(mem(), abi::load_u32(mem(), at + 4),
                                                              abi::load_u32(mem(), at + 8),
                                                              "the error text of handle");
          const ErrorCode code = c == kPermissionDenied ? ErrorCode::kPermissionDenied
                                 : c == kConnection     ? ErrorCode::kUnavailable
                                                        : ErrorCode::kFailedPrecondition;
          r->guest_error = Error(code, cut_text(std::move(text)));
        }
      },
      draft_post_handle_, kPostHandle);
}

CallReport GuestInstance::handle_draft(const std::vector<Message>& batch) {
  return handle_each(batch, &GuestInstance::handle_draft_one);
}

}  // namespace witmq::guest
