// The guest worlds the host serves, and how it recognizes which one a core module implements
// (docs/GUESTS.md "Worlds"):
//
//  - `messaging`: the seed's world (wit/worlds.wit): exports configure + handler.
//  - `messaging-core`: the upstream wasi:messaging draft (wit/wasi-messaging-draft/): exports
//    incoming-handler.handle, imports types + producer, and request-reply for the draft's world
//    `messaging-request-reply` (served as the same world: it only adds imports). It has no
//    configure: the guest's channels come from its "channels" setting.
//  - `wasmcloud-messaging`: wasmCloud's wasmcloud:messaging@0.2.0 (wit/wasmcloud-messaging/):
//    exports handler.handle-message, imports consumer (guest_world_wasmcloud.cc). No configure
//    either: its channels come from "channels".
//
// A module is recognized by its exports: one that exports the draft's handle is messaging-core,
// one that exports wasmCloud's handle-message is wasmcloud-messaging; any other is checked as the
// seed's world.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "guest/wasm_runtime.h"

namespace witmq::guest {

enum class World : uint8_t { kMessaging, kMessagingCore, kWasmcloudMessaging };
// "messaging", "messaging-core", "wasmcloud-messaging".
const char* world_name(World w);

// Canonical ABI names of the draft's messaging-core world in core-module form.
namespace draft_names {
inline constexpr const char* kTypes = "wasi:messaging/types@0.2.0-draft";
inline constexpr const char* kProducer = "wasi:messaging/producer@0.2.0-draft";
inline constexpr const char* kRequestReply = "wasi:messaging/request-reply@0.2.0-draft";
inline constexpr const char* kHandle = "wasi:messaging/incoming-handler@0.2.0-draft#handle";
inline constexpr const char* kPostHandle =
    "cabi_post_wasi:messaging/incoming-handler@0.2.0-draft#handle";
}  // namespace draft_names

// Canonical ABI names of wasmCloud's wasmcloud:messaging@0.2.0 in core-module form.
namespace wasmcloud_names {
inline constexpr const char* kConsumer = "wasmcloud:messaging/consumer@0.2.0";
inline constexpr const char* kHandleMessage = "wasmcloud:messaging/handler@0.2.0#handle-message";
inline constexpr const char* kPostHandleMessage =
    "cabi_post_wasmcloud:messaging/handler@0.2.0#handle-message";
}  // namespace wasmcloud_names

// The names of the exports of a core module binary (empty if it has none or is malformed: the
// module's own validation reports that). Reads only the export section, bounds-checked.
std::vector<std::string> core_export_names(const std::vector<uint8_t>& bytes);

// The world a core module binary implements, by its exports.
World recognize_core_world(const std::vector<uint8_t>& bytes);

// The world of a module load_guest_module() accepted (by its exports, as above).
World module_world(const WasmModule& module);

// The draft's host imports: module, name and count of i32 params (the results that flatten to
// more than one value go through a return area). Derivations are in docs/GUESTS.md.
struct DraftImport {
  const char* module;
  const char* name;
  size_t params;
  size_t results;
};
const std::vector<DraftImport>& draft_imports();

// What a messaging-core module may import and must export (wasi_snapshot_preview1 included).
const ModuleRequirements& messaging_core_requirements();

// What a wasmcloud-messaging module may import and must export (guest_world_wasmcloud.cc).
const ModuleRequirements& wasmcloud_requirements();

}  // namespace witmq::guest
