// Component binaries (the component model's binary format) for the `messaging` world, the
// upstream draft's `messaging-core` / `messaging-request-reply` and wasmCloud's
// `wasmcloud:messaging` (worlds.h): reads the component, checks that it exports its world's
// interface and imports only what witmq offers, and turns its core modules, core instances,
// aliases and canonical lifts and lowers into a CoreLink that the runtime instantiates as one
// guest instance (docs/GUESTS.md, "Components").
//
// What is supported is what the standard tools produce (wasm-tools `component new`, jco): core
// modules instantiated with core instances and inline exports, aliases of core and instance
// exports, `canon lift` / `canon lower` with utf8 strings, `canon resource.drop` of imported
// resources, and a nested component that only re-exports the lifted functions. Anything else
// (component start functions, values, imported modules or components, other string encodings,
// async) is refused with an error naming it, as are malformed binaries.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest {

// The CoreLink export under which the realloc of WASI imports (`cabi_import_realloc` of the
// preview1 adapter) is reachable.
inline constexpr const char* kWasiImportRealloc = "cabi_import_realloc";

// A world a component may implement: the interface it exports, and the functions of it the host
// calls with the core export names (worlds.h, guest_instance.h) they are linked under.
struct ComponentWorld {
  struct Func {
    std::string name;       // in the interface: "handler"
    std::string core_name;  // the core export the host calls
    std::string post_name;  // its cabi_post_ export
  };
  std::string name;       // "messaging"
  std::string interface;  // "wasi:messaging/messaging-guest@0.2.0-draft"
  std::vector<Func> funcs;
};
// The seed's `messaging` (exports messaging-guest: configure, handler) and the draft's worlds
// (export incoming-handler: handle; messaging-core and messaging-request-reply differ only in
// their imports).
const ComponentWorld& seed_component_world();
const ComponentWorld& draft_component_world();
// wasmCloud's `wasmcloud:messaging` (exports handler: handle-message).
const ComponentWorld& wasmcloud_component_world();
// The world whose interface the component exports at its top level; the seed's when it exports
// neither (read_component then names what is missing). Reads only the export sections.
const ComponentWorld& recognize_component_world(std::span<const uint8_t> bytes);

// True when `bytes` starts with the component preamble (not a core module's).
bool is_component(std::span<const uint8_t> bytes);

// The host module name under which the function `name` of the imported interface `interface`
// ("wasi:io/streams@0.2.12") would be served, or "" for a version witmq does not serve. WASI 0.2
// interfaces are accepted at any 0.2.x version ("wasi:io/streams@0.2"); the messaging
// interfaces at exactly @0.2.0-draft (wasmcloud:messaging's at exactly @0.2.0). Whether the
// interface is offered at all is the offered list's to say (read_component).
std::string component_host_module(std::string_view interface);

// Reads the component `bytes` (named `name` in errors). `offered` lists the host functions
// (module as component_host_module() names it): a lowered function or dropped resource that is
// not among them is refused naming the interface and function.
Result<CoreLink> read_component(const std::string& name, std::span<const uint8_t> bytes,
                                const std::vector<ImportSpec>& offered,
                                const ComponentWorld& world = seed_component_world());

}  // namespace witmq::guest
