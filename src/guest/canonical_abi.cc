#include "guest/canonical_abi.h"

#include <fmt/format.h>

#include <cstring>
#include <string>

namespace witmq::guest::abi {
namespace {

[[noreturn]] void trap(std::string message) { throw GuestTrap(std::move(message)); }

// Calls cabi_realloc for a fresh block and checks the result per the canonical ABI
// (aligned, in bounds).
uint32_t allocate(GuestMemory& mem, uint32_t align, uint64_t size, std::string_view what) {
  if (size > UINT32_MAX) trap(fmt::format("{} of {} bytes does not fit guest memory", what, size));
  const uint32_t ptr = mem.realloc(0, 0, align, static_cast<uint32_t>(size));
  const uint64_t limit = mem.bytes().size();
  if (ptr % align != 0 || ptr > limit || size > limit - ptr) {
    check_range(mem, ptr, size, align, fmt::format("cabi_realloc result for {}", what));
  }
  return ptr;
}

// Traps unless a list of `len` elements stays within `max`.
void check_count(uint32_t len, uint32_t max, std::string_view what) {
  if (len > max) trap(fmt::format("{}: {} elements, more than the {} allowed", what, len, max));
}

}  // namespace

void GuestMemory::charge_lift(uint64_t bytes, std::string_view what) {
  if (bytes > lift_budget_) {
    trap(
        fmt::format("{}: lifting {} more bytes would exceed what this call may copy out of guest "
                    "memory ({} bytes left; lists whose elements share guest bytes are copied "
                    "once per element)",
                    what, bytes, lift_budget_));
  }
  lift_budget_ -= bytes;
  charge_copy(bytes);
}

void check_range(GuestMemory& mem, uint64_t ptr, uint64_t size, uint32_t align,
                 std::string_view what) {
  if (align > 1 && ptr % align != 0) {
    trap(fmt::format("{}: pointer {} is not {}-byte aligned", what, ptr, align));
  }
  const uint64_t limit = mem.bytes().size();
  if (ptr > limit || size > limit - ptr) {
    trap(fmt::format("{}: [{}, {}) is outside guest memory of {} bytes", what, ptr, ptr + size,
                     limit));
  }
}

uint8_t load_u8(GuestMemory& mem, uint32_t ptr) {
  check_range(mem, ptr, 1, 1, "load");
  return mem.bytes()[ptr];
}

uint32_t load_u32(GuestMemory& mem, uint32_t ptr) {
  check_range(mem, ptr, 4, 1, "load");
  uint32_t v;
  std::memcpy(&v, mem.bytes().data() + ptr, 4);  // wasm is little-endian, like the host
  return v;
}

void store_u8(GuestMemory& mem, uint32_t ptr, uint8_t v) {
  check_range(mem, ptr, 1, 1, "store");
  mem.bytes()[ptr] = v;
}

void store_u32(GuestMemory& mem, uint32_t ptr, uint32_t v) {
  check_range(mem, ptr, 4, 1, "store");
  std::memcpy(mem.bytes().data() + ptr, &v, 4);
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// ---- Lifting --------------------------------------------------------------------------------

std::string lift_string(GuestMemory& mem, uint32_t ptr, uint32_t len, std::string_view what) {
  if (len > kMaxStringBytes) trap(fmt::format("{}: string of {} bytes is too long", what, len));
  check_range(mem, ptr, len, 1, what);
  mem.charge_lift(len, what);
  std::string s(reinterpret_cast<const char*>(mem.bytes().data() + ptr), len);
  if (!valid_utf8(s)) trap(fmt::format("{}: string at {} is not valid UTF-8", what, ptr));
  return s;
}

std::vector<uint8_t> lift_bytes(GuestMemory& mem, uint32_t ptr, uint32_t len) {
  check_range(mem, ptr, len, 1, "list<u8>");
  mem.charge_lift(len, "list<u8>");
  const uint8_t* p = mem.bytes().data() + ptr;
  return std::vector<uint8_t>(p, p + len);
}

std::vector<std::string> lift_strings(GuestMemory& mem, uint32_t ptr, uint32_t len,
                                      std::string_view what) {
  check_count(len, kMaxLiftChannels, what);
  check_range(mem, ptr, uint64_t{len} * kString.size, kString.align, what);
  mem.charge_lift(uint64_t{len} * sizeof(std::string), what);
  std::vector<std::string> out;
  out.reserve(len);
  for (uint32_t i = 0; i < len; ++i) {
    const uint32_t at = ptr + i * kString.size;
    out.push_back(lift_string(mem, load_u32(mem, at), load_u32(mem, at + 4), what));
  }
  return out;
}

Metadata lift_key_values(GuestMemory& mem, uint32_t ptr, uint32_t len, std::string_view what) {
  check_count(len, kMaxLiftEntries, what);
  check_range(mem, ptr, uint64_t{len} * kKeyValue.size, kKeyValue.align, what);
  mem.charge_lift(uint64_t{len} * sizeof(Metadata::value_type), what);
  Metadata out;
  out.reserve(len);
  for (uint32_t i = 0; i < len; ++i) {
    const uint32_t at = ptr + i * kKeyValue.size;
    std::string key = lift_string(mem, load_u32(mem, at), load_u32(mem, at + 4), what);
    std::string value = lift_string(mem, load_u32(mem, at + 8), load_u32(mem, at + 12), what);
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

std::optional<Metadata> lift_option_key_values(GuestMemory& mem, uint32_t disc, uint32_t ptr,
                                               uint32_t len, std::string_view what) {
  if (disc >= 2) trap(fmt::format("{}: option discriminant {} is not 0 or 1", what, disc));
  if (disc == 0) return std::nullopt;
  return lift_key_values(mem, ptr, len, what);
}

Format lift_format(uint32_t case_index) {
  if (case_index >= kFormatCount) {
    trap(fmt::format("message.format: case {} is not a format-spec (0..{})", case_index,
                     kFormatCount - 1));
  }
  return static_cast<Format>(case_index);
}

Message lift_message(GuestMemory& mem, std::span<const uint32_t, kFlatMessage> flat) {
  Message m;
  m.data = lift_bytes(mem, flat[0], flat[1]);
  m.format = lift_format(flat[2]);
  m.metadata = lift_option_key_values(mem, flat[3], flat[4], flat[5], "message.metadata");
  return m;
}

Message load_message(GuestMemory& mem, uint32_t ptr) {
  check_range(mem, ptr, kMessage.size, kMessage.align, "message");
  const uint32_t md = ptr + kMessageMetadata;
  const uint32_t flat[kFlatMessage] = {
      load_u32(mem, ptr + kMessageData),  load_u32(mem, ptr + kMessageData + 4),
      load_u8(mem, ptr + kMessageFormat), load_u8(mem, md),
      load_u32(mem, md + kOptionPayload), load_u32(mem, md + kOptionPayload + 4)};
  return lift_message(mem, flat);
}

std::vector<Message> lift_messages(GuestMemory& mem, uint32_t ptr, uint32_t len) {
  check_count(len, kMaxLiftMessages, "list<message>");
  check_range(mem, ptr, uint64_t{len} * kMessage.size, kMessage.align, "list<message>");
  mem.charge_lift(uint64_t{len} * sizeof(Message), "list<message>");
  std::vector<Message> out;
  out.reserve(len);
  for (uint32_t i = 0; i < len; ++i) out.push_back(load_message(mem, ptr + i * kMessage.size));
  return out;
}

GuestConfiguration lift_guest_configuration(
    GuestMemory& mem, std::span<const uint32_t, kFlatGuestConfiguration> flat) {
  GuestConfiguration gc;
  gc.channels = lift_strings(mem, flat[0], flat[1], "guest-configuration.channels");
  gc.extensions =
      lift_option_key_values(mem, flat[2], flat[3], flat[4], "guest-configuration.extensions");
  return gc;
}

GuestConfiguration load_guest_configuration(GuestMemory& mem, uint32_t ptr) {
  check_range(mem, ptr, kGuestConfiguration.size, kGuestConfiguration.align, "guest-configuration");
  const uint32_t ext = ptr + kConfigExtensions;
  const uint32_t flat[kFlatGuestConfiguration] = {
      load_u32(mem, ptr + kConfigChannels), load_u32(mem, ptr + kConfigChannels + 4),
      load_u8(mem, ext), load_u32(mem, ext + kOptionPayload),
      load_u32(mem, ext + kOptionPayload + 4)};
  return lift_guest_configuration(mem, flat);
}

std::optional<ErrorHandle> load_result_unit(GuestMemory& mem, uint32_t ptr) {
  check_range(mem, ptr, kResultUnit.size, kResultUnit.align, "result<_, error>");
  const uint8_t disc = load_u8(mem, ptr);
  if (disc >= 2) trap(fmt::format("result<_, error>: discriminant {} is not 0 or 1", disc));
  if (disc == 0) return std::nullopt;
  return ErrorHandle{load_u32(mem, ptr + kResultUnitPayload)};
}

std::variant<GuestConfiguration, ErrorHandle> load_result_configuration(GuestMemory& mem,
                                                                        uint32_t ptr) {
  check_range(mem, ptr, kResultConfiguration.size, kResultConfiguration.align,
              "result<guest-configuration, error>");
  const uint8_t disc = load_u8(mem, ptr);
  if (disc >= 2) {
    trap(fmt::format("result<guest-configuration, error>: discriminant {} is not 0 or 1", disc));
  }
  if (disc == 1) return ErrorHandle{load_u32(mem, ptr + kResultConfigurationPayload)};
  return load_guest_configuration(mem, ptr + kResultConfigurationPayload);
}

// ---- Lowering -------------------------------------------------------------------------------

std::pair<uint32_t, uint32_t> lower_string(GuestMemory& mem, std::string_view s) {
  if (s.size() > kMaxStringBytes) trap(fmt::format("string of {} bytes is too long", s.size()));
  const uint32_t ptr = allocate(mem, 1, s.size(), "a string");
  mem.charge_copy(s.size());
  if (!s.empty()) std::memcpy(mem.bytes().data() + ptr, s.data(), s.size());
  return {ptr, static_cast<uint32_t>(s.size())};
}

std::pair<uint32_t, uint32_t> lower_bytes(GuestMemory& mem, std::span<const uint8_t> b) {
  const uint32_t ptr = allocate(mem, 1, b.size(), "a list<u8>");
  mem.charge_copy(b.size());
  if (!b.empty()) std::memcpy(mem.bytes().data() + ptr, b.data(), b.size());
  return {ptr, static_cast<uint32_t>(b.size())};
}

std::pair<uint32_t, uint32_t> lower_handles(GuestMemory& mem, std::span<const uint32_t> handles) {
  const uint32_t ptr =
      allocate(mem, kHandle.align, uint64_t{kHandle.size} * handles.size(), "a list of handles");
  for (size_t i = 0; i < handles.size(); ++i) {
    store_u32(mem, ptr + static_cast<uint32_t>(i) * kHandle.size, handles[i]);
  }
  return {ptr, static_cast<uint32_t>(handles.size())};
}

std::pair<uint32_t, uint32_t> lower_key_values(GuestMemory& mem, const Metadata& kv) {
  const uint32_t ptr =
      allocate(mem, kKeyValue.align, uint64_t{kKeyValue.size} * kv.size(), "a key/value list");
  for (size_t i = 0; i < kv.size(); ++i) {
    const uint32_t at = ptr + static_cast<uint32_t>(i) * kKeyValue.size;
    const auto key = lower_string(mem, kv[i].first);
    store_u32(mem, at, key.first);
    store_u32(mem, at + 4, key.second);
    const auto value = lower_string(mem, kv[i].second);
    store_u32(mem, at + 8, value.first);
    store_u32(mem, at + 12, value.second);
  }
  return {ptr, static_cast<uint32_t>(kv.size())};
}

namespace {
void store_option_key_values(GuestMemory& mem, uint32_t at, const std::optional<Metadata>& kv) {
  store_u8(mem, at, kv ? 1 : 0);
  if (!kv) return;
  const auto list = lower_key_values(mem, *kv);
  store_u32(mem, at + kOptionPayload, list.first);
  store_u32(mem, at + kOptionPayload + 4, list.second);
}
}  // namespace

void store_message(GuestMemory& mem, uint32_t ptr, const Message& m) {
  const auto data = lower_bytes(mem, m.data);
  store_u32(mem, ptr + kMessageData, data.first);
  store_u32(mem, ptr + kMessageData + 4, data.second);
  store_u8(mem, ptr + kMessageFormat, static_cast<uint8_t>(m.format));
  store_option_key_values(mem, ptr + kMessageMetadata, m.metadata);
}

std::pair<uint32_t, uint32_t> lower_messages(GuestMemory& mem, const std::vector<Message>& ms) {
  const uint32_t ptr =
      allocate(mem, kMessage.align, uint64_t{kMessage.size} * ms.size(), "a list<message>");
  for (size_t i = 0; i < ms.size(); ++i) {
    store_message(mem, ptr + static_cast<uint32_t>(i) * kMessage.size, ms[i]);
  }
  return {ptr, static_cast<uint32_t>(ms.size())};
}

void store_guest_configuration(GuestMemory& mem, uint32_t ptr, const GuestConfiguration& gc) {
  const uint32_t list =
      allocate(mem, kString.align, uint64_t{kString.size} * gc.channels.size(), "a list<string>");
  for (size_t i = 0; i < gc.channels.size(); ++i) {
    const auto s = lower_string(mem, gc.channels[i]);
    const uint32_t at = list + static_cast<uint32_t>(i) * kString.size;
    store_u32(mem, at, s.first);
    store_u32(mem, at + 4, s.second);
  }
  store_u32(mem, ptr + kConfigChannels, list);
  store_u32(mem, ptr + kConfigChannels + 4, static_cast<uint32_t>(gc.channels.size()));
  store_option_key_values(mem, ptr + kConfigExtensions, gc.extensions);
}

void store_result_unit(GuestMemory& mem, uint32_t retptr, std::optional<ErrorHandle> err) {
  check_range(mem, retptr, kResultUnit.size, kResultUnit.align, "return area");
  store_u8(mem, retptr, err ? 1 : 0);
  if (err) store_u32(mem, retptr + kResultUnitPayload, err->index);
}

void store_result_handle(GuestMemory& mem, uint32_t retptr, uint32_t ok_handle) {
  check_range(mem, retptr, kResultHandle.size, kResultHandle.align, "return area");
  store_u8(mem, retptr, 0);
  store_u32(mem, retptr + kResultHandlePayload, ok_handle);
}

void store_result_error(GuestMemory& mem, uint32_t retptr, Layout layout, uint32_t payload_offset,
                        ErrorHandle err) {
  check_range(mem, retptr, layout.size, layout.align, "return area");
  store_u8(mem, retptr, 1);
  store_u32(mem, retptr + payload_offset, err.index);
}

void store_result_messages(GuestMemory& mem, uint32_t retptr, const std::vector<Message>& ms) {
  check_range(mem, retptr, kResultMessages.size, kResultMessages.align, "return area");
  const auto list = lower_messages(mem, ms);
  store_u8(mem, retptr, 0);
  store_u32(mem, retptr + kResultMessagesPayload, list.first);
  store_u32(mem, retptr + kResultMessagesPayload + 4, list.second);
}

void store_result_option_messages(GuestMemory& mem, uint32_t retptr,
                                  const std::optional<std::vector<Message>>& ms) {
  check_range(mem, retptr, kResultOptionMessages.size, kResultOptionMessages.align, "return area");
  const uint32_t opt = retptr + kResultOptionMessagesPayload;
  if (!ms) {
    store_u8(mem, retptr, 0);
    store_u8(mem, opt, 0);
    return;
  }
  const auto list = lower_messages(mem, *ms);
  store_u8(mem, retptr, 0);
  store_u8(mem, opt, 1);
  store_u32(mem, opt + kOptionPayload, list.first);
  store_u32(mem, opt + kOptionPayload + 4, list.second);
}

void store_string_result(GuestMemory& mem, uint32_t retptr, std::string_view s) {
  check_range(mem, retptr, kString.size, kString.align, "return area");
  const auto str = lower_string(mem, s);
  store_u32(mem, retptr, str.first);
  store_u32(mem, retptr + 4, str.second);
}

}  // namespace witmq::guest::abi
