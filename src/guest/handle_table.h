// Per-instance resource handle tables (canonical ABI): a guest refers to a host resource by a
// small i32 index into a table the host keeps for that instance only.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "guest/wasm_runtime.h"

namespace witmq::guest {

// Index 0 is never handed out (the canonical ABI reserves it), so a zeroed field in guest
// memory is never a valid handle. Freed slots are reused, lowest first. Any use of an index that
// is not live (never issued, or already dropped) throws GuestTrap: a bad handle traps the guest.
// At most `capacity` handles are live at once: adding one more traps too, so a guest that never
// drops its handles cannot grow the table without bound.
template <typename T>
class HandleTable {
 public:
  // `resource` names the resource type in trap messages ("client", "error").
  HandleTable(std::string_view resource, size_t capacity)
      : resource_(resource), capacity_(capacity) {}

  // Stores `value` and returns its new handle index; traps when `capacity` handles are live.
  uint32_t add(T value) {
    if (live_ >= capacity_) {
      throw GuestTrap(fmt::format(
          "{} handles: {} are live, the most an instance may hold; drop the ones it no longer "
          "needs ([resource-drop]{})",
          resource_, capacity_, resource_));
    }
    ++live_;
    if (!free_.empty()) {
      const uint32_t i = *free_.begin();
      free_.erase(free_.begin());
      slots_[i] = std::move(value);
      return i;
    }
    slots_.emplace_back(std::move(value));
    return static_cast<uint32_t>(slots_.size() - 1);
  }

  // The value behind a live handle; traps otherwise. `use` names the call for the message.
  T& get(uint32_t index, std::string_view use) {
    if (!live(index)) trap_bad(index, use);
    return *slots_[index];
  }

  // Removes a live handle and returns its value; traps otherwise.
  T take(uint32_t index, std::string_view use) {
    if (!live(index)) trap_bad(index, use);
    T value = std::move(*slots_[index]);
    slots_[index].reset();
    free_.insert(index);
    --live_;
    return value;
  }

  bool live(uint32_t index) const { return index != 0 && index < slots_.size() && slots_[index]; }
  size_t size() const { return live_; }
  size_t capacity() const { return capacity_; }

  // Every live value, in handle order (for teardown).
  template <typename F>
  void for_each(F&& f) {
    for (auto& slot : slots_) {
      if (slot) f(*slot);
    }
  }

 private:
  [[noreturn]] void trap_bad(uint32_t index, std::string_view use) const {
    throw GuestTrap(fmt::format("{}: {} handle {} is not live (never issued or already dropped)",
                                use, resource_, index));
  }

  std::string_view resource_;
  size_t capacity_;
  std::vector<std::optional<T>> slots_{std::nullopt};  // slot 0 reserved
  std::set<uint32_t> free_;                            // dropped slots, reused lowest first
  size_t live_ = 0;
};

}  // namespace witmq::guest
