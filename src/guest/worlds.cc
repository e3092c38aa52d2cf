#include "guest/worlds.h"

#include <algorithm>
#include <optional>

#include "guest/wasi.h"

namespace witmq::guest {
namespace {

// A bounds-checked reader of the parts of the binary format recognition needs.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}
  bool done() const { return p_ == end_; }
  std::optional<uint8_t> byte() {
    if (p_ == end_) return std::nullopt;
    return *p_++;
  }
  // Unsigned LEB128 of at most 32 bits (5 bytes).
  std::optional<uint32_t> u32() {
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
      auto b = byte();
      if (!b) return std::nullopt;
      v |= uint64_t{static_cast<uint8_t>(*b & 0x7f)} << shift;
      if (!(*b & 0x80)) {
        if (v > UINT32_MAX) return std::nullopt;
        return static_cast<uint32_t>(v);
      }
    }
    return std::nullopt;
  }
  std::optional<Reader> sub(uint32_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return std::nullopt;
    Reader r(p_, n);
    p_ += n;
    return r;
  }
  std::optional<std::string> name() {
    auto n = u32();
    if (!n) return std::nullopt;
    auto r = sub(*n);
    if (!r) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(r->p_), *n);
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

constexpr uint8_t kExportSection = 7;

}  // namespace

const char* world_name(World w) {
  switch (w) {
    case World::kMessaging:
      return "messaging";
    case World::kMessagingCore:
      return "messaging-core";
    case World::kWasmcloudMessaging:
      return "wasmcloud-messaging";
  }
  return "?";
}

std::vector<std::string> core_export_names(const std::vector<uint8_t>& bytes) {
  std::vector<std::string> names;
  if (bytes.size() < 8) return names;
  Reader r(bytes.data() + 8, bytes.size() - 8);  // after the magic and the version
  while (!r.done()) {
    auto id = r.byte();
    auto size = r.u32();
    if (!id || !size) return {};
    auto section = r.sub(*size);
    if (!section) return {};
    if (*id != kExportSection) continue;
    auto count = section->u32();
    if (!count) return {};
    // Each export takes at least 3 bytes, so a count the section cannot hold stops at the end.
    for (uint32_t i = 0; i < *count; ++i) {
      auto name = section->name();
      auto kind = section->byte();
      auto index = section->u32();
      if (!name || !kind || !index) return {};
      names.push_back(std::move(*name));
    }
    return names;
  }
  return names;
}

World recognize_core_world(const std::vector<uint8_t>& bytes) {
  const std::vector<std::string> names = core_export_names(bytes);
  if (std::find(names.begin(), names.end(), draft_names::kHandle) != names.end()) {
    return World::kMessagingCore;
  }
  if (std::find(names.begin(), names.end(), wasmcloud_names::kHandleMessage) != names.end()) {
    return World::kWasmcloudMessaging;
  }
  return World::kMessaging;
}

World module_world(const WasmModule& module) {
  if (module.has_function_export(draft_names::kHandle)) return World::kMessagingCore;
  if (module.has_function_export(wasmcloud_names::kHandleMessage)) {
    return World::kWasmcloudMessaging;
  }
  return World::kMessaging;
}

const std::vector<DraftImport>& draft_imports() {
  using namespace draft_names;  // NOLINT
  static const std::vector<DraftImport> imports = {
      // connect(name: string) -> result<client, error>: string(2) + retptr
      {kTypes, "[static]client.connect", 3, 0},
      // disconnect(self) -> result<_, error>: self + retptr
      {kTypes, "[method]client.disconnect", 2, 0},
      {kTypes, "[resource-drop]client", 1, 0},
      // constructor(data: list<u8>) -> message: list(2) -> handle
      {kTypes, "[constructor]message", 2, 1},
      // topic / content-type -> option<string>, data -> list<u8>, metadata ->
      // option<metadata>: self + retptr
      {kTypes, "[method]message.topic", 2, 0},
      {kTypes, "[method]message.content-type", 2, 0},
      {kTypes, "[method]message.data", 2, 0},
      {kTypes, "[method]message.metadata", 2, 0},
      // set-content-type(string), set-data(list<u8>), set-metadata(metadata),
      // remove-metadata(key: string): self + list(2)
      {kTypes, "[method]message.set-content-type", 3, 0},
      {kTypes, "[method]message.set-data", 3, 0},
      {kTypes, "[method]message.set-metadata", 3, 0},
      {kTypes, "[method]message.remove-metadata", 3, 0},
      // add-metadata(key: string, value: string): self + 2 + 2
      {kTypes, "[method]message.add-metadata", 5, 0},
      {kTypes, "[resource-drop]message", 1, 0},
      // send(c: borrow<client>, topic: string, message: own<message>) -> result<_, error>:
      // 1 + 2 + 1 + retptr
      {kProducer, "send", 5, 0},
      // request-reply: request-options is a resource of its own.
      {kRequestReply, "[constructor]request-options", 0, 1},
      {kRequestReply, "[method]request-options.set-timeout-ms", 2, 0},
      {kRequestReply, "[method]request-options.set-expected-replies", 2, 0},
      {kRequestReply, "[resource-drop]request-options", 1, 0},
      // request(c: borrow<client>, topic: string, message: borrow<message>,
      // options: option<own<request-options>>) -> result<list<own<message>>, error>:
      // 1 + 2 + 1 + 2 + retptr
      {kRequestReply, "request", 7, 0},
      // reply(reply-to: borrow<message>, message: own<message>) -> result<_, error>: 1 + 1 + retptr
      {kRequestReply, "reply", 3, 0},
  };
  return imports;
}

const ModuleRequirements& messaging_core_requirements() {
  static const ModuleRequirements req = [] {
    auto i32s = [](size_t params, size_t results) {
      return FuncSig{std::vector<ValType>(params, ValType::kI32),
                     std::vector<ValType>(results, ValType::kI32)};
    };
    ModuleRequirements r;
    for (const DraftImport& e : draft_imports()) {
      r.offered_imports.push_back(ImportSpec{e.module, e.name, i32s(e.params, e.results)});
    }
    r.exports = {
        {draft_names::kHandle, i32s(1, 1), true},  // (own<message>) -> retptr of result<_, error>
        {"cabi_realloc", i32s(4, 1), true},
        {draft_names::kPostHandle, i32s(1, 0), false},
    };
    for (const ImportSpec& spec : wasi_imports()) r.offered_imports.push_back(spec);
    r.memory_export = "memory";
    return r;
  }();
  return req;
}

}  // namespace witmq::guest
