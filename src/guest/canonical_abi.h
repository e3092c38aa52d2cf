// The Component Model canonical ABI for the types of wasi:messaging@0.2.0-draft, between host
// values (common/message.h) and a guest's linear memory.
//
// Lifting reads guest memory into host values; lowering writes host values into guest memory,
// allocating with the guest's `cabi_realloc`. Every pointer and length is checked against the
// memory as it is at that moment (a cabi_realloc may grow it): a violation throws GuestTrap,
// which traps the guest. Nothing here can read or write outside the guest's memory.
//
// Layouts follow the canonical ABI's size/alignment rules (records: fields at their natural
// alignment, size rounded up to the record's alignment; variants: the smallest discriminant that
// holds the cases, then the payload at the largest payload alignment). They are computed below
// with constexpr helpers and checked against hand-derived numbers in the tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/message.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest::abi {

// ---- Layout ---------------------------------------------------------------------------------

// Size and alignment of a type in linear memory.
struct Layout {
  uint32_t size = 0;
  uint32_t align = 1;
  constexpr bool operator==(const Layout&) const = default;
};

constexpr uint32_t align_to(uint32_t n, uint32_t align) { return (n + align - 1) / align * align; }

inline constexpr Layout kU8{1, 1};
inline constexpr Layout kU16{2, 2};
inline constexpr Layout kU32{4, 4};
inline constexpr Layout kHandle{4, 4};  // own<T> / borrow<T>: an i32 table index
inline constexpr Layout kList{8, 4};    // list<T> and string: (ptr: u32, len: u32)
inline constexpr Layout kString = kList;
inline constexpr Layout kNone{0, 1};  // an absent payload (result<_, E>)

// record / tuple: fields in order, each at its alignment.
constexpr Layout record(std::initializer_list<Layout> fields) {
  uint32_t size = 0, align = 1;
  for (const Layout& f : fields) {
    size = align_to(size, f.align) + f.size;
    align = std::max(align, f.align);
  }
  return {align_to(size, align), align};
}

// Byte offset of field `index` of a record.
constexpr uint32_t field_offset(std::initializer_list<Layout> fields, size_t index) {
  uint32_t size = 0;
  size_t i = 0;
  for (const Layout& f : fields) {
    size = align_to(size, f.align);
    if (i++ == index) return size;
    size += f.size;
  }
  return size;
}

// The discriminant of a variant / enum with `cases` cases.
constexpr Layout discriminant(size_t cases) {
  return cases <= (1u << 8) ? kU8 : cases <= (1u << 16) ? kU16 : kU32;
}

// variant: discriminant, then the payload at the largest payload alignment.
constexpr Layout variant(size_t cases, std::initializer_list<Layout> payloads) {
  const Layout d = discriminant(cases);
  uint32_t payload_size = 0, payload_align = 1;
  for (const Layout& p : payloads) {
    payload_size = std::max(payload_size, p.size);
    payload_align = std::max(payload_align, p.align);
  }
  const uint32_t align = std::max(d.align, payload_align);
  return {align_to(align_to(d.size, payload_align) + payload_size, align), align};
}

// Offset of a variant's payload.
constexpr uint32_t payload_offset(size_t cases, std::initializer_list<Layout> payloads) {
  uint32_t payload_align = 1;
  for (const Layout& p : payloads) payload_align = std::max(payload_align, p.align);
  return align_to(discriminant(cases).size, payload_align);
}

constexpr Layout option(Layout t) { return variant(2, {kNone, t}); }
constexpr Layout result(Layout ok, Layout err) { return variant(2, {ok, err}); }
constexpr Layout enumeration(size_t cases) { return discriminant(cases); }

// tuple<string, string>
inline constexpr Layout kKeyValue = record({kString, kString});
// option<list<tuple<string, string>>>
inline constexpr Layout kOptionKeyValues = option(kList);
inline constexpr Layout kFormat = enumeration(kFormatCount);
// message { data: list<u8>, format: format-spec, metadata: option<list<tuple<string,string>>> }
inline constexpr Layout kMessage = record({kList, kFormat, kOptionKeyValues});
inline constexpr uint32_t kMessageData = field_offset({kList, kFormat, kOptionKeyValues}, 0);
inline constexpr uint32_t kMessageFormat = field_offset({kList, kFormat, kOptionKeyValues}, 1);
inline constexpr uint32_t kMessageMetadata = field_offset({kList, kFormat, kOptionKeyValues}, 2);
inline constexpr uint32_t kOptionPayload = payload_offset(2, {kNone, kList});
// guest-configuration { channels: list<string>, extensions: option<list<tuple<string,string>>> }
inline constexpr Layout kGuestConfiguration = record({kList, kOptionKeyValues});
inline constexpr uint32_t kConfigChannels = field_offset({kList, kOptionKeyValues}, 0);
inline constexpr uint32_t kConfigExtensions = field_offset({kList, kOptionKeyValues}, 1);
// result<_, error>
inline constexpr Layout kResultUnit = result(kNone, kHandle);
inline constexpr uint32_t kResultUnitPayload = payload_offset(2, {kNone, kHandle});
// result<client, error>
inline constexpr Layout kResultHandle = result(kHandle, kHandle);
inline constexpr uint32_t kResultHandlePayload = payload_offset(2, {kHandle, kHandle});
// result<guest-configuration, error>
inline constexpr Layout kResultConfiguration = result(kGuestConfiguration, kHandle);
inline constexpr uint32_t kResultConfigurationPayload =
    payload_offset(2, {kGuestConfiguration, kHandle});
// result<list<message>, error>
inline constexpr Layout kResultMessages = result(kList, kHandle);
inline constexpr uint32_t kResultMessagesPayload = payload_offset(2, {kList, kHandle});
// result<option<list<message>>, error>
inline constexpr Layout kResultOptionMessages = result(option(kList), kHandle);
inline constexpr uint32_t kResultOptionMessagesPayload =
    payload_offset(2, {option(kList), kHandle});

// Flattened (core) forms: how many i32s a value takes as parameters.
inline constexpr size_t kFlatString = 2;
inline constexpr size_t kFlatList = 2;
inline constexpr size_t kFlatOptionList = 3;                                    // disc, ptr, len
inline constexpr size_t kFlatMessage = kFlatList + 1 + kFlatOptionList;         // 6
inline constexpr size_t kFlatGuestConfiguration = kFlatList + kFlatOptionList;  // 5
// Canonical ABI: at most one flat result; more go through a return area.
inline constexpr size_t kMaxFlatResults = 1;
inline constexpr size_t kMaxFlatParams = 16;
// Longest string the canonical ABI allows (2^31 - 1 bytes).
inline constexpr uint32_t kMaxStringBytes = (1u << 31) - 1;

// ---- Guest memory ---------------------------------------------------------------------------

// Most elements one lifted list may have, checked before anything is copied: messages of a send,
// channels of a guest-configuration (the protocol's max-config-channels), key/value pairs of
// metadata or extensions.
inline constexpr uint32_t kMaxLiftMessages = 10'000;
inline constexpr uint32_t kMaxLiftChannels = 1024;
inline constexpr uint32_t kMaxLiftEntries = 1024;

// A guest's linear memory plus its allocator.
class GuestMemory {
 public:
  virtual ~GuestMemory() = default;

  // What lifting may still copy into host memory: the bytes of strings and lists plus the host
  // objects that hold them (sizeof(std::string), sizeof(Message), ...). Every lift charges it
  // before it allocates and traps when the charge does not fit, so elements that all point at the
  // same guest bytes cannot make the host copy them again and again. Set it before a lift;
  // unlimited until then.
  void set_lift_budget(uint64_t bytes) { lift_budget_ = bytes; }
  uint64_t lift_budget() const { return lift_budget_; }
  // Takes `bytes` from the lift budget, or traps naming `what`; then charge_copy(bytes).
  void charge_lift(uint64_t bytes, std::string_view what);
  // Called with the bytes every lift and lowering is about to copy, so that the host's copying
  // can be charged to the call the guest is in; may throw GuestTrap. Charges nothing by default.
  virtual void charge_copy(uint64_t /*bytes*/) {}

  // The memory as it is now. Invalidated by realloc().
  virtual std::span<uint8_t> bytes() = 0;
  // cabi_realloc(old_ptr, old_size, align, new_size). Throws GuestTrap if the guest's function
  // fails. The returned pointer is NOT checked here (lowering checks it).
  virtual uint32_t realloc(uint32_t old_ptr, uint32_t old_size, uint32_t align,
                           uint32_t new_size) = 0;

 private:
  uint64_t lift_budget_ = UINT64_MAX;
};

// Traps (throws GuestTrap) unless [ptr, ptr + size) lies in memory and ptr is aligned.
void check_range(GuestMemory& mem, uint64_t ptr, uint64_t size, uint32_t align,
                 std::string_view what);
uint8_t load_u8(GuestMemory& mem, uint32_t ptr);
uint32_t load_u32(GuestMemory& mem, uint32_t ptr);
void store_u8(GuestMemory& mem, uint32_t ptr, uint8_t v);
void store_u32(GuestMemory& mem, uint32_t ptr, uint32_t v);

// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool valid_utf8(std::string_view s);

// ---- Lifting (guest memory -> host values) ----------------------------------------------------

std::string lift_string(GuestMemory& mem, uint32_t ptr, uint32_t len, std::string_view what);
std::vector<uint8_t> lift_bytes(GuestMemory& mem, uint32_t ptr, uint32_t len);
std::vector<std::string> lift_strings(GuestMemory& mem, uint32_t ptr, uint32_t len,
                                      std::string_view what);
Metadata lift_key_values(GuestMemory& mem, uint32_t ptr, uint32_t len, std::string_view what);
// option<list<tuple<string,string>>> from its flat form (disc, ptr, len).
std::optional<Metadata> lift_option_key_values(GuestMemory& mem, uint32_t disc, uint32_t ptr,
                                               uint32_t len, std::string_view what);
Format lift_format(uint32_t case_index);

// message from its 6 flat values.
Message lift_message(GuestMemory& mem, std::span<const uint32_t, kFlatMessage> flat);
// message stored at `ptr`.
Message load_message(GuestMemory& mem, uint32_t ptr);
std::vector<Message> lift_messages(GuestMemory& mem, uint32_t ptr, uint32_t len);
// guest-configuration from its 5 flat values / stored at `ptr`.
GuestConfiguration lift_guest_configuration(
    GuestMemory& mem, std::span<const uint32_t, kFlatGuestConfiguration> flat);
GuestConfiguration load_guest_configuration(GuestMemory& mem, uint32_t ptr);

// The `err` case of a result: the guest's own<error> handle index.
struct ErrorHandle {
  uint32_t index = 0;
};
// result<_, error> returned through a return area at `ptr`: nullopt = ok.
std::optional<ErrorHandle> load_result_unit(GuestMemory& mem, uint32_t ptr);
// result<guest-configuration, error> returned through a return area at `ptr`.
std::variant<GuestConfiguration, ErrorHandle> load_result_configuration(GuestMemory& mem,
                                                                        uint32_t ptr);

// ---- Lowering (host values -> guest memory) ---------------------------------------------------

// Allocates with cabi_realloc and copies; returns (ptr, len).
std::pair<uint32_t, uint32_t> lower_string(GuestMemory& mem, std::string_view s);
std::pair<uint32_t, uint32_t> lower_bytes(GuestMemory& mem, std::span<const uint8_t> b);
std::pair<uint32_t, uint32_t> lower_key_values(GuestMemory& mem, const Metadata& kv);
// list<own<T>> (or any list<u32>): the handle indexes, 4 bytes each.
std::pair<uint32_t, uint32_t> lower_handles(GuestMemory& mem, std::span<const uint32_t> handles);
void store_message(GuestMemory& mem, uint32_t ptr, const Message& m);
std::pair<uint32_t, uint32_t> lower_messages(GuestMemory& mem, const std::vector<Message>& ms);
void store_guest_configuration(GuestMemory& mem, uint32_t ptr, const GuestConfiguration& gc);

// Results written into a return area the guest passed (checked for alignment and bounds first).
// `err` is the host-side handle index of a new own<error>.
void store_result_unit(GuestMemory& mem, uint32_t retptr, std::optional<ErrorHandle> err);
void store_result_handle(GuestMemory& mem, uint32_t retptr, uint32_t ok_handle);
void store_result_error(GuestMemory& mem, uint32_t retptr, Layout layout, uint32_t payload_offset,
                        ErrorHandle err);
void store_result_messages(GuestMemory& mem, uint32_t retptr, const std::vector<Message>& ms);
// nullopt = `none`.
void store_result_option_messages(GuestMemory& mem, uint32_t retptr,
                                  const std::optional<std::vector<Message>>& ms);
// A string result (error.trace) at `retptr`.
void store_string_result(GuestMemory& mem, uint32_t retptr, std::string_view s);

}  // namespace witmq::guest::abi
