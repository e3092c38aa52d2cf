#include "guest/component.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <stdexcept>
#include <utility>

#include "guest/guest_instance.h"
#include "guest/worlds.h"

namespace witmq::guest {
namespace {

// Refusal of a malformed or unsupported component; caught at read_component's boundary.
struct Refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void refuse(const std::string& why) { throw Refused(why); }

// Most nested type constructors / declarations the reader follows (the format allows any depth;
// real components need a handful).
constexpr int kMaxDepth = 64;
// Most items of one index space: far beyond any real component, small enough that the tables
// stay small whatever the counts in a hostile binary say.
constexpr size_t kMaxItems = 100'000;
// Most core instances, and most imports all of them take together (each instantiation copies
// its module's import list, so a large module instantiated many times would otherwise cost
// memory far beyond the binary's size). wit-component's output has a few dozen of each.
constexpr size_t kMaxCoreInstances = 1'000;
constexpr size_t kMaxLinkedImports = 100'000;
// Bytes the reader's tables may hold: kHeldBase plus kHeldPerByte per byte of the binary. An
// entry a few bytes long can copy a name, an instance's function list or a module's imports that
// the binary holds once (a lift of a core function aliased under a 1 MiB name, say), so the
// counts alone do not bound the memory; what every table entry holds is charged to this instead.
// wit-component's output holds less than its own size.
constexpr size_t kHeldBase = 16u << 20;
constexpr size_t kHeldPerByte = 8;

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes, size_t base = 0) : b_(bytes), base_(base) {}
  bool done() const { return pos_ >= b_.size(); }
  size_t offset() const { return base_ + pos_; }
  uint8_t u8() {
    if (pos_ >= b_.size()) fail("unexpected end");
    return b_[pos_++];
  }
  uint8_t peek() const {
    if (pos_ >= b_.size()) fail("unexpected end");
    return b_[pos_];
  }
  uint32_t u32() {
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
      const uint8_t byte = u8();
      v |= uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) {
        if (v > UINT32_MAX) fail("integer too large");
        return static_cast<uint32_t>(v);
      }
    }
    fail("integer too long");
  }
  // A signed LEB128 of at most 33 bits (valtype: negative = primitive, else a type index).
  int64_t s33() {
    int64_t v = 0;
    int shift = 0;
    uint8_t byte = 0;
    do {
      if (shift >= 35) fail("integer too long");
      byte = u8();
      v |= int64_t{byte & 0x7f} << shift;
      shift += 7;
    } while (byte & 0x80);
    if (shift < 64 && (byte & 0x40)) v |= -(int64_t{1} << shift);
    return v;
  }
  // A vector length: each element takes at least one byte, so a count past the bytes left is a
  // lie (and would make the reader reserve memory it was never given).
  uint32_t count() {
    const uint32_t n = u32();
    if (n > b_.size() - pos_) fail(fmt::format("count {} exceeds the bytes left", n));
    return n;
  }
  std::span<const uint8_t> bytes(size_t n) {
    if (n > b_.size() - pos_) fail("length past the end");
    auto out = b_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  std::span<const uint8_t> rest() { return bytes(b_.size() - pos_); }
  std::string name() {
    auto s = bytes(u32());
    return std::string(s.begin(), s.end());
  }
  [[noreturn]] void fail(const std::string& what) const {
    refuse(fmt::format("malformed component at byte offset {}: {}", base_ + pos_, what));
  }

 private:
  std::span<const uint8_t> b_;
  size_t base_;
  size_t pos_ = 0;
};

// ---- skipping type definitions ------------------------------------------------------------

void skip_valtype(Reader& r) { r.s33(); }
void skip_opt_valtype(Reader& r) {
  if (r.u8() == 0x01) skip_valtype(r);
}

void skip_externdesc(Reader& r);
void skip_deftype(Reader& r, int depth);

void skip_core_type(Reader& r) {
  const uint8_t kind = r.u8();
  if (kind != 0x60) r.fail(fmt::format("core type 0x{:02x} is not supported", kind));
  for (int i = 0; i < 2; ++i) {  // params, results
    const uint32_t n = r.count();
    for (uint32_t k = 0; k < n; ++k) r.u8();
  }
}

void skip_alias(Reader& r) {
  const uint8_t sort = r.u8();
  if (sort == 0x00) r.u8();
  switch (r.u8()) {
    case 0x00:
    case 0x01:
      r.u32();
      r.name();
      break;
    case 0x02:
      r.u32();
      r.u32();
      break;
    default:
      r.fail("unknown alias target");
  }
}

void skip_exportname(Reader& r) {
  const uint8_t form = r.u8();
  r.name();
  if (form == 0x01)
    r.name();  // version suffix
  else if (form != 0x00)
    r.fail("unknown import/export name form");
}

void skip_decls(Reader& r, int depth, bool component) {
  const uint32_t n = r.count();
  for (uint32_t i = 0; i < n; ++i) {
    switch (r.u8()) {
      case 0x00:
        skip_core_type(r);
        break;
      case 0x01:
        skip_deftype(r, depth + 1);
        break;
      case 0x02:
        skip_alias(r);
        break;
      case 0x03:
        if (!component) r.fail("import declaration in an instance type");
        skip_exportname(r);
        skip_externdesc(r);
        break;
      case 0x04:
        skip_exportname(r);
        skip_externdesc(r);
        break;
      default:
        r.fail("unknown declaration");
    }
  }
}

void skip_deftype(Reader& r, int depth) {
  if (depth > kMaxDepth) r.fail(fmt::format("types nested deeper than {}", kMaxDepth));
  const uint8_t tag = r.u8();
  if (tag >= 0x73 && tag <= 0x7f) return;  // primitive value types
  switch (tag) {
    case 0x64:  // error-context
      return;
    case 0x72: {  // record
      const uint32_t n = r.count();
      for (uint32_t i = 0; i < n; ++i) {
        r.name();
        skip_valtype(r);
      }
      return;
    }
    case 0x71: {  // variant
      const uint32_t n = r.count();
      for (uint32_t i = 0; i < n; ++i) {
        r.name();
        skip_opt_valtype(r);
        if (r.u8() != 0x00) r.fail("variant case refinements are not supported");
      }
      return;
    }
    case 0x70:  // list
    case 0x6b:  // option
      skip_valtype(r);
      return;
    case 0x67:  // fixed-size list
      skip_valtype(r);
      r.u32();
      return;
    case 0x6f: {  // tuple
      const uint32_t n = r.count();
      for (uint32_t i = 0; i < n; ++i) skip_valtype(r);
      return;
    }
    case 0x6e:    // flags
    case 0x6d: {  // enum
      const uint32_t n = r.count();
      for (uint32_t i = 0; i < n; ++i) r.name();
      return;
    }
    case 0x6a:  // result
      skip_opt_valtype(r);
      skip_opt_valtype(r);
      return;
    case 0x69:  // own
    case 0x68:  // borrow
      r.u32();
      return;
    case 0x40: {  // func
      const uint32_t n = r.count();
      for (uint32_t i = 0; i < n; ++i) {
        r.name();
        skip_valtype(r);
      }
      if (r.u8() == 0x00) {
        skip_valtype(r);
      } else if (r.u8() != 0x00) {
        r.fail("named function results are not supported");
      }
      return;
    }
    case 0x41:
      skip_decls(r, depth, true);
      return;
    case 0x42:
      skip_decls(r, depth, false);
      return;
    case 0x3f:  // resource (rep i32) with an optional destructor
      if (r.u8() != 0x7f) r.fail("resource representation must be i32");
      if (r.u8() == 0x01) r.u32();
      return;
    default:
      r.fail(fmt::format("type 0x{:02x} is not supported", tag));
  }
}

void skip_externdesc(Reader& r) {
  switch (r.u8()) {
    case 0x00:
      if (r.u8() != 0x11) r.fail("core externdesc other than a module");
      r.u32();
      return;
    case 0x01:
    case 0x04:
    case 0x05:
      r.u32();
      return;
    case 0x02:
      if (r.u8() == 0x00)
        r.u32();
      else
        skip_valtype(r);
      return;
    case 0x03:
      if (r.u8() == 0x00) r.u32();
      return;
    default:
      r.fail("unknown extern description");
  }
}

// ---- the imports of a core module --------------------------------------------------------

struct CoreImport {
  std::string module, name;
};

void skip_limits(Reader& r) {
  const uint8_t flags = r.u8();
  if (flags > 0x07) r.fail("unknown limits");
  if (flags & 0x04) {  // 64-bit: refused later by the runtime; read as LEB128
    for (int i = 0; i < ((flags & 1) ? 2 : 1); ++i) {
      while (r.u8() & 0x80) {
      }
    }
    return;
  }
  r.u32();
  if (flags & 0x01) r.u32();
}

std::vector<CoreImport> core_imports(std::span<const uint8_t> module, size_t base) {
  Reader r(module, base);
  auto header = r.bytes(8);
  static constexpr uint8_t kCore[8] = {0, 'a', 's', 'm', 1, 0, 0, 0};
  if (!std::equal(header.begin(), header.end(), kCore)) r.fail("not a core module");
  std::vector<CoreImport> out;
  while (!r.done()) {
    const uint8_t id = r.u8();
    const uint32_t size = r.u32();
    const size_t at = r.offset();
    Reader s(r.bytes(size), at);
    if (id != 2) continue;
    const uint32_t n = s.count();
    for (uint32_t i = 0; i < n; ++i) {
      CoreImport imp{s.name(), s.name()};
      switch (s.u8()) {
        case 0x00:  // func
          s.u32();
          break;
        case 0x01:  // table
          s.u8();
          skip_limits(s);
          break;
        case 0x02:  // memory
          skip_limits(s);
          break;
        case 0x03:  // global
          s.u8();
          s.u8();
          break;
        case 0x04:  // tag
          s.u8();
          s.u32();
          break;
        default:
          s.fail("unknown import kind");
      }
      out.push_back(std::move(imp));
    }
  }
  return out;
}

// ---- index spaces ---------------------------------------------------------------------------

// A core item (function, memory, table, global): an export of a linked core instance, or a host
// function.
using CoreItem = CoreLink::Source;

struct CoreInstance {
  int linked = -1;                          // >= 0: index in CoreLink::instances
  std::map<std::string, CoreItem> exports;  // linked < 0: an instance of inline exports
};

struct CanonOptions {
  std::optional<CoreItem> memory, realloc, post_return;
};

struct ComponentFunc {
  enum Kind { kOpaque, kImported, kLifted } kind = kOpaque;
  std::string interface, name;  // kImported
  CoreItem core;                // kLifted
  CanonOptions options;         // kLifted
};

struct ComponentInstance {
  std::string interface;                // an imported interface ("" otherwise)
  std::map<std::string, size_t> funcs;  // exported functions (index into funcs)
};

struct TypeEntry {
  std::string interface, name;  // an export of an imported instance ("" otherwise)
};

// A nested component that only re-exports what it imports (the shim wit-component emits to
// give the exported interface its types): which import each exported function is.
struct NestedComponent {
  std::map<std::string, std::string> func_exports;  // export name -> import name
};

bool same_item(const CoreItem& a, const CoreItem& b) {
  return a.instance == b.instance && a.name == b.name && a.host_module == b.host_module &&
         a.host_name == b.host_name;
}

// What an entry of the reader's tables holds, in bytes (strings and map nodes included).
constexpr size_t kNode = 64;  // a map node or vector slot beside its key and value
size_t held(const CoreItem& i) {
  return sizeof(CoreItem) + i.name.size() + i.host_module.size() + i.host_name.size();
}
size_t held(const std::optional<CoreItem>& i) { return i ? held(*i) : 0; }
size_t held(const ComponentFunc& f) {
  return sizeof(ComponentFunc) + f.interface.size() + f.name.size() + held(f.core) +
         held(f.options.memory) + held(f.options.realloc) + held(f.options.post_return);
}
size_t held(const ComponentInstance& i) {
  size_t n = sizeof(ComponentInstance) + i.interface.size();
  for (const auto& [name, func] : i.funcs) n += kNode + name.size();
  return n;
}
// Its exports are charged as they are added (core_instance()).
size_t held(const CoreInstance&) { return sizeof(CoreInstance); }
size_t held(const NestedComponent& c) {
  size_t n = sizeof(NestedComponent);
  for (const auto& [e, i] : c.func_exports) n += kNode + e.size() + i.size();
  return n;
}
size_t held(const TypeEntry& t) { return sizeof(TypeEntry) + t.interface.size() + t.name.size(); }
template <typename T>
size_t held(const T& item) {
  return sizeof(item);
}

std::string read_export_name(Reader& r) {
  const uint8_t form = r.u8();
  std::string name = r.name();
  if (form == 0x01)
    r.name();
  else if (form != 0x00)
    r.fail("unknown import/export name form");
  return name;
}

class ComponentReader {
 public:
  ComponentReader(std::string name, const std::vector<ImportSpec>& offered,
                  const ComponentWorld& world)
      : name_(std::move(name)), offered_(offered), world_(world) {}

  CoreLink read(std::span<const uint8_t> bytes) {
    binary_size_ = bytes.size();
    held_limit_ = kHeldBase + kHeldPerByte * bytes.size();
    Reader r(bytes);
    check_preamble(r);
    while (!r.done()) {
      const uint8_t id = r.u8();
      const uint32_t size = r.u32();
      const size_t at = r.offset();
      Reader s(r.bytes(size), at);
      section(id, s);
    }
    return finish();
  }

 private:
  static void check_preamble(Reader& r) {
    auto header = r.bytes(8);
    static constexpr uint8_t kComponent[8] = {0, 'a', 's', 'm', 0x0d, 0, 0x01, 0};
    if (!std::equal(header.begin(), header.end(), kComponent)) {
      r.fail("not a component (expected the preamble \\0asm 0d 00 01 00)");
    }
  }

  template <typename T>
  static T& at(std::vector<T>& v, uint32_t i, const char* what) {
    if (i >= v.size())
      refuse(fmt::format("{} index {} is out of range ({} defined)", what, i, v.size()));
    return v[i];
  }
  template <typename T>
  void push(std::vector<T>& v, T item, const char* what) {
    if (v.size() >= kMaxItems) refuse(fmt::format("more than {} {}", kMaxItems, what));
    charge(held(item));
    v.push_back(std::move(item));
  }
  // Counts `bytes` more held by the tables; refuses the component past its bound.
  void charge(size_t bytes) {
    held_ += bytes;
    if (held_ > held_limit_) {
      refuse(
          fmt::format("its definitions would make the reader hold more than {} bytes (16 MiB "
                      "plus {} per byte of its {} bytes): an entry copies what the binary "
                      "holds once, too many times",
                      held_limit_, kHeldPerByte, binary_size_));
    }
  }

  void section(uint8_t id, Reader& s) {
    switch (id) {
      case 0:  // custom
        return;
      case 1:
        module_offsets_.push_back(s.offset());
        push(modules_, s.rest(), "core modules");
        return;
      case 2:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) core_instance(s);
        break;
      case 3:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) {
          skip_core_type(s);
          push(core_types_, 0, "core types");
        }
        break;
      case 4:
        push(components_, nested_component(s), "components");
        return;
      case 5:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) instance(s);
        break;
      case 6:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) alias(s);
        break;
      case 7:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) {
          skip_deftype(s, 0);
          push(types_, TypeEntry{}, "types");
        }
        break;
      case 8:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) canon(s);
        break;
      case 9:
        refuse("component start functions are not supported");
      case 10:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) import(s);
        break;
      case 11:
        for (uint32_t n = s.count(), i = 0; i < n; ++i) export_(s);
        break;
      case 12:
        refuse("component values are not supported");
      default:
        s.fail(fmt::format("unknown section id {}", id));
    }
    if (!s.done()) s.fail(fmt::format("section {} has bytes past its last entry", id));
  }

  // ---- core instances ----
  void core_instance(Reader& s) {
    const uint8_t kind = s.u8();
    CoreInstance out;
    if (kind == 0x00) {
      const uint32_t module = s.u32();
      at(modules_, module, "core module");
      std::map<std::string, uint32_t> args;
      for (uint32_t n = s.count(), i = 0; i < n; ++i) {
        std::string arg = s.name();
        if (s.u8() != 0x12) s.fail("core instantiation argument is not an instance");
        args[arg] = s.u32();
        at(core_instances_, args[arg], "core instance");
      }
      CoreLink::Instance inst;
      inst.module = module;
      const std::vector<CoreImport>& imports = imports_of(module);
      linked_imports_ += imports.size();
      if (link_.instances.size() >= kMaxCoreInstances || linked_imports_ > kMaxLinkedImports) {
        refuse(fmt::format("more than {} core instances or {} imports among them",
                           kMaxCoreInstances, kMaxLinkedImports));
      }
      for (const CoreImport& imp : imports) {
        auto it = args.find(imp.module);
        if (it == args.end()) {
          refuse(
              fmt::format("core module {} imports \"{}\".\"{}\" and its instantiation does "
                          "not supply \"{}\"",
                          module, imp.module, imp.name, imp.module));
        }
        CoreItem source = export_of(it->second, imp.name);
        charge(held(source));
        inst.imports.push_back(std::move(source));
      }
      out.linked = static_cast<int>(link_.instances.size());
      link_.instances.push_back(std::move(inst));
    } else if (kind == 0x01) {
      for (uint32_t n = s.count(), i = 0; i < n; ++i) {
        std::string export_name = s.name();
        const uint8_t sort = s.u8();
        CoreItem item = core_sort_item(sort, s.u32());
        charge(kNode + export_name.size() + held(item));
        out.exports[export_name] = std::move(item);
      }
    } else {
      s.fail("unknown core instance form");
    }
    push(core_instances_, std::move(out), "core instances");
  }

  const std::vector<CoreImport>& imports_of(uint32_t module) {
    auto it = module_imports_.find(module);
    if (it == module_imports_.end()) {
      it = module_imports_.emplace(module, core_imports(modules_[module], module_offsets_[module]))
               .first;
    }
    return it->second;
  }

  CoreItem export_of(uint32_t core_instance, const std::string& name) {
    const CoreInstance& inst = at(core_instances_, core_instance, "core instance");
    if (inst.linked >= 0) return CoreItem{inst.linked, name, {}, {}};
    auto it = inst.exports.find(name);
    if (it == inst.exports.end()) {
      refuse(fmt::format("core instance {} has no export \"{}\"", core_instance, name));
    }
    return it->second;
  }

  CoreItem core_sort_item(uint8_t sort, uint32_t index) {
    switch (sort) {
      case 0x00:
        return at(core_funcs_, index, "core function");
      case 0x01:
        return at(core_tables_, index, "core table");
      case 0x02:
        return at(core_memories_, index, "core memory");
      case 0x03:
        return at(core_globals_, index, "core global");
      default:
        refuse(fmt::format("core sort 0x{:02x} cannot be exported by a core instance", sort));
    }
  }

  std::vector<CoreItem>& core_space(uint8_t sort) {
    switch (sort) {
      case 0x00:
        return core_funcs_;
      case 0x01:
        return core_tables_;
      case 0x02:
        return core_memories_;
      case 0x03:
        return core_globals_;
      default:
        refuse(fmt::format("core sort 0x{:02x} is not supported here", sort));
    }
  }

  // ---- aliases ----
  void alias(Reader& s) {
    const uint8_t sort = s.u8();
    const uint8_t core_sort = sort == 0x00 ? s.u8() : 0;
    const uint8_t target = s.u8();
    if (target == 0x01) {  // core export
      if (sort != 0x00) s.fail("core export alias of a non-core sort");
      const uint32_t inst = s.u32();
      const std::string export_name = s.name();
      CoreItem item = export_of(inst, export_name);
      push(core_space(core_sort), std::move(item), "core items");
      return;
    }
    if (target == 0x00) {  // instance export
      const uint32_t inst = s.u32();
      const std::string export_name = s.name();
      ComponentInstance& ci = at(instances_, inst, "instance");
      switch (sort) {
        case 0x01: {  // func
          ComponentFunc f;
          if (!ci.interface.empty()) {
            f.kind = ComponentFunc::kImported;
            f.interface = ci.interface;
            f.name = export_name;
          } else {
            auto it = ci.funcs.find(export_name);
            if (it == ci.funcs.end()) {
              refuse(fmt::format("instance {} has no function \"{}\"", inst, export_name));
            }
            f = funcs_[it->second];
          }
          push(funcs_, std::move(f), "functions");
          return;
        }
        case 0x03:
          push(types_, TypeEntry{ci.interface, export_name}, "types");
          return;
        case 0x05:
          push(instances_, ComponentInstance{}, "instances");
          return;
        default:
          s.fail("unsupported instance export alias");
      }
    }
    if (target == 0x02) {  // outer
      s.u32();
      s.u32();
      if (sort == 0x03) return push(types_, TypeEntry{}, "types");
      if (sort == 0x00 && core_sort == 0x10) return push(core_types_, 0, "core types");
      refuse("outer aliases other than of types are not supported");
    }
    s.fail("unknown alias target");
  }

  // ---- canonical functions ----
  CanonOptions options(Reader& s, const std::string& use) {
    CanonOptions o;
    for (uint32_t n = s.count(), i = 0; i < n; ++i) {
      const uint8_t opt = s.u8();
      switch (opt) {
        case 0x00:  // utf8
          break;
        case 0x01:
        case 0x02:
          refuse(fmt::format("{}: only utf8 strings are supported", use));
        case 0x03:
          o.memory = at(core_memories_, s.u32(), "core memory");
          break;
        case 0x04:
          o.realloc = at(core_funcs_, s.u32(), "core function");
          break;
        case 0x05:
          o.post_return = at(core_funcs_, s.u32(), "core function");
          break;
        default:
          refuse(fmt::format("{}: canonical option 0x{:02x} (async and later) is not supported",
                             use, opt));
      }
    }
    return o;
  }

  void canon(Reader& s) {
    const uint8_t kind = s.u8();
    switch (kind) {
      case 0x00: {  // lift
        if (s.u8() != 0x00) s.fail("canon lift");
        ComponentFunc f;
        f.kind = ComponentFunc::kLifted;
        f.core = at(core_funcs_, s.u32(), "core function");
        f.options = options(s, "canon lift");
        s.u32();  // its type: the core signatures are what the host checks (compile_linked)
        push(funcs_, std::move(f), "functions");
        return;
      }
      case 0x01: {  // lower
        if (s.u8() != 0x00) s.fail("canon lower");
        const ComponentFunc& f = at(funcs_, s.u32(), "function");
        if (f.kind != ComponentFunc::kImported) {
          refuse("canon lower of a function that is not imported is not supported");
        }
        const CanonOptions o =
            options(s, fmt::format("lowering \"{}\".\"{}\"", f.interface, f.name));
        use_memory(o.memory);
        if (o.realloc) {
          const bool wasi = f.interface.rfind("wasi:messaging/", 0) != 0 &&
                            f.interface.rfind("wasmcloud:messaging/", 0) != 0;
          use_realloc(wasi ? kWasiImportRealloc : abi_names::kRealloc, *o.realloc);
        }
        push(core_funcs_, host_item(f.interface, f.name), "core functions");
        return;
      }
      case 0x03: {  // resource.drop
        const TypeEntry& t = at(types_, s.u32(), "type");
        if (t.interface.empty()) {
          refuse("resource.drop of a type that is not a resource of an imported interface");
        }
        push(core_funcs_, host_item(t.interface, "[resource-drop]" + t.name), "core functions");
        return;
      }
      default:
        refuse(
            fmt::format("canonical function 0x{:02x} is not supported (witmq offers "
                        "lift, lower and resource.drop of imported resources)",
                        kind));
    }
  }

  CoreItem host_item(const std::string& interface, const std::string& func) {
    const std::string module = component_host_module(interface);
    const bool offered =
        !module.empty() && std::any_of(offered_.begin(), offered_.end(), [&](const ImportSpec& o) {
          return o.module == module && o.name == func;
        });
    if (!offered) {
      refuse(fmt::format("imports function \"{}\" of interface \"{}\", which witmq does not offer",
                         func, interface));
    }
    return CoreItem{-1, {}, module, func};
  }

  void use_memory(const std::optional<CoreItem>& memory) {
    if (!memory) return;
    if (memory_ && !same_item(*memory_, *memory)) {
      refuse("its lifts and lowers use more than one memory; witmq supports one");
    }
    memory_ = memory;
  }
  void use_realloc(const std::string& export_name, const CoreItem& realloc) {
    auto& slot = reallocs_[export_name];
    if (slot && !same_item(*slot, realloc)) {
      refuse(fmt::format("its lifts and lowers use more than one {} function", export_name));
    }
    slot = realloc;
  }

  // ---- imports, instances, exports ----
  void import(Reader& s) {
    const std::string name = read_export_name(s);
    const uint8_t kind = s.u8();
    if (kind != 0x05) {
      refuse(
          fmt::format("imports \"{}\", which is not an interface; the {} world imports "
                      "only interfaces",
                      name, world_.name));
    }
    s.u32();
    const std::string module = component_host_module(name);
    // wasmcloud:messaging/types has types only: offered whenever its world is.
    const std::string of = module == kWasmcloudTypes ? std::string(kWasmcloudConsumer) : module;
    const bool offered = std::any_of(offered_.begin(), offered_.end(),
                                     [&](const ImportSpec& o) { return o.module == of; });
    if (module.empty() || !offered) {
      refuse(fmt::format("imports interface \"{}\", which witmq does not offer", name));
    }
    push(instances_, ComponentInstance{name, {}}, "instances");
  }

  NestedComponent nested_component(Reader& s) {
    check_preamble(s);
    NestedComponent out;
    std::vector<std::string> func_imports;  // func index -> import name
    while (!s.done()) {
      const uint8_t id = s.u8();
      const uint32_t size = s.u32();
      const size_t at_offset = s.offset();
      Reader sec(s.bytes(size), at_offset);
      if (id == 0) continue;
      const uint32_t n = sec.count();
      for (uint32_t i = 0; i < n; ++i) {
        if (id == 7) {
          skip_deftype(sec, 0);
        } else if (id == 10) {
          std::string import_name = read_export_name(sec);
          const uint8_t kind = sec.peek();
          skip_externdesc(sec);
          if (kind == 0x01) {
            charge(kNode + import_name.size());
            func_imports.push_back(import_name);
          }
        } else if (id == 11) {
          std::string export_name = read_export_name(sec);
          const uint8_t sort = sec.u8();
          const uint32_t index = sec.u32();
          if (sec.u8() == 0x01) skip_externdesc(sec);
          if (sort == 0x01) {
            if (index >= func_imports.size()) {
              refuse("a nested component exports a function it does not import");
            }
            charge(2 * kNode + export_name.size() + 2 * func_imports[index].size());
            out.func_exports[export_name] = func_imports[index];
            func_imports.push_back(func_imports[index]);  // an export is a new index too
          }
        } else {
          refuse(
              fmt::format("a nested component with section {} is not supported (only one "
                          "that re-exports the component's functions)",
                          id));
        }
      }
      if (!sec.done()) sec.fail("nested section has bytes past its last entry");
    }
    return out;
  }

  void instance(Reader& s) {
    const uint8_t kind = s.u8();
    ComponentInstance out;
    if (kind == 0x00) {
      const NestedComponent& c = at(components_, s.u32(), "component");
      std::map<std::string, size_t> args;
      for (uint32_t n = s.count(), i = 0; i < n; ++i) {
        std::string arg = s.name();
        const uint8_t sort = s.u8();
        if (sort == 0x00) s.u8();
        const uint32_t index = s.u32();
        if (sort == 0x01) {
          at(funcs_, index, "function");
          args[arg] = index;
        }
      }
      for (const auto& [export_name, import_name] : c.func_exports) {
        auto it = args.find(import_name);
        if (it == args.end()) {
          refuse(fmt::format("instantiation of a nested component does not supply \"{}\"",
                             import_name));
        }
        out.funcs[export_name] = it->second;
      }
    } else if (kind == 0x01) {
      for (uint32_t n = s.count(), i = 0; i < n; ++i) {
        std::string export_name = read_export_name(s);
        const uint8_t sort = s.u8();
        if (sort == 0x00) s.u8();
        const uint32_t index = s.u32();
        if (sort == 0x01) {
          at(funcs_, index, "function");
          out.funcs[export_name] = index;
        }
      }
    } else {
      s.fail("unknown instance form");
    }
    push(instances_, std::move(out), "instances");
  }

  void export_(Reader& s) {
    const std::string export_name = read_export_name(s);
    const uint8_t sort = s.u8();
    if (sort == 0x00) s.u8();
    const uint32_t index = s.u32();
    if (s.u8() == 0x01) skip_externdesc(s);
    switch (sort) {
      case 0x01:
        refuse(
            fmt::format("exports function \"{}\"; the {} world exports only the "
                        "interface {}",
                        export_name, world_.name, world_.interface));
      case 0x03:
        push(types_, TypeEntry{}, "types");
        return;
      case 0x05: {
        if (export_name != world_.interface) {
          refuse(
              fmt::format("exports \"{}\", which the {} world does not (it exports "
                          "{})",
                          export_name, world_.name, world_.interface));
        }
        if (guest_) refuse("exports more than one guest interface");
        guest_ = at(instances_, index, "instance");
        push(instances_, *guest_, "instances");
        return;
      }
      default:
        refuse(fmt::format("exports \"{}\" of a sort the {} world does not export", export_name,
                           world_.name));
    }
  }

  // ---- the result ----
  CoreLink finish() {
    if (!guest_) {
      refuse(
          fmt::format("does not export {}: its world is not `{}`", world_.interface, world_.name));
    }
    for (const ComponentWorld::Func& want : world_.funcs) {
      auto it = guest_->funcs.find(want.name);
      if (it == guest_->funcs.end()) {
        refuse(fmt::format("{} has no function \"{}\"", world_.interface, want.name));
      }
      const ComponentFunc& f = funcs_[it->second];
      if (f.kind != ComponentFunc::kLifted) {
        refuse(fmt::format("{}#{} is not a lifted core function", world_.interface, want.name));
      }
      link_.exports.emplace_back(want.core_name, f.core);
      use_memory(f.options.memory);
      if (f.options.realloc) use_realloc(abi_names::kRealloc, *f.options.realloc);
      if (f.options.post_return) link_.exports.emplace_back(want.post_name, *f.options.post_return);
    }
    for (const auto& [name, source] : guest_->funcs) {
      const bool known = std::any_of(world_.funcs.begin(), world_.funcs.end(),
                                     [&](const ComponentWorld::Func& f) { return f.name == name; });
      if (!known) {
        refuse(fmt::format("{} exports \"{}\", which is not in the {} world", world_.interface,
                           name, world_.name));
      }
    }
    if (!memory_) refuse("its lifts and lowers name no memory");
    link_.exports.emplace_back(abi_names::kMemory, *memory_);
    for (const auto& [name, item] : reallocs_) {
      if (item) link_.exports.emplace_back(name, *item);
    }
    for (const auto& [name, item] : link_.exports) {
      if (item.instance < 0) refuse(fmt::format("'{}' is a host function, not the guest's", name));
    }
    for (const auto& m : modules_) link_.modules.emplace_back(m.begin(), m.end());
    return std::move(link_);
  }

  static constexpr std::string_view kWasmcloudTypes = "wasmcloud:messaging/types@0.2.0";
  static constexpr std::string_view kWasmcloudConsumer = wasmcloud_names::kConsumer;

  std::string name_;
  const std::vector<ImportSpec>& offered_;
  const ComponentWorld& world_;
  CoreLink link_;
  std::vector<std::span<const uint8_t>> modules_;
  std::vector<size_t> module_offsets_;
  std::map<uint32_t, std::vector<CoreImport>> module_imports_;
  std::vector<CoreInstance> core_instances_;
  std::vector<CoreItem> core_funcs_, core_tables_, core_memories_, core_globals_;
  std::vector<int> core_types_;
  std::vector<ComponentFunc> funcs_;
  std::vector<ComponentInstance> instances_;
  std::vector<TypeEntry> types_;
  std::vector<NestedComponent> components_;
  std::optional<ComponentInstance> guest_;
  std::optional<CoreItem> memory_;
  std::map<std::string, std::optional<CoreItem>> reallocs_;
  size_t linked_imports_ = 0;
  size_t binary_size_ = 0;
  size_t held_ = 0;  // bytes the tables hold (charge())
  size_t held_limit_ = 0;
};

}  // namespace

const ComponentWorld& seed_component_world() {
  static const ComponentWorld w{"messaging",
                                "wasi:messaging/messaging-guest@0.2.0-draft",
                                {{"configure", abi_names::kConfigure, abi_names::kPostConfigure},
                                 {"handler", abi_names::kHandler, abi_names::kPostHandler}}};
  return w;
}

const ComponentWorld& draft_component_world() {
  static const ComponentWorld w{"messaging-core",
                                "wasi:messaging/incoming-handler@0.2.0-draft",
                                {{"handle", draft_names::kHandle, draft_names::kPostHandle}}};
  return w;
}

const ComponentWorld& wasmcloud_component_world() {
  static const ComponentWorld w{
      "wasmcloud-messaging",
      "wasmcloud:messaging/handler@0.2.0",
      {{"handle-message", wasmcloud_names::kHandleMessage, wasmcloud_names::kPostHandleMessage}}};
  return w;
}

const ComponentWorld& recognize_component_world(std::span<const uint8_t> bytes) {
  try {
    Reader r(bytes);
    r.bytes(8);
    while (!r.done()) {
      const uint8_t id = r.u8();
      Reader s(r.bytes(r.u32()));
      if (id != 11) continue;
      for (uint32_t n = s.count(), i = 0; i < n; ++i) {
        const std::string name = read_export_name(s);
        if (name == draft_component_world().interface) return draft_component_world();
        if (name == wasmcloud_component_world().interface) return wasmcloud_component_world();
        if (s.u8() == 0x00) s.u8();
        s.u32();
        if (s.u8() == 0x01) skip_externdesc(s);
      }
    }
  } catch (const Refused&) {
    // Malformed: read_component says where.
  }
  return seed_component_world();
}

bool is_component(std::span<const uint8_t> bytes) {
  static constexpr uint8_t kLayer[4] = {0x0d, 0x00, 0x01, 0x00};
  return bytes.size() >= 8 && bytes[0] == 0 && bytes[1] == 'a' && bytes[2] == 's' &&
         bytes[3] == 'm' && std::equal(kLayer, kLayer + 4, bytes.begin() + 4);
}

std::string component_host_module(std::string_view interface) {
  static constexpr std::string_view kMessaging[] = {
      "wasi:messaging/messaging-types@0.2.0-draft", "wasi:messaging/producer@0.2.0-draft",
      "wasi:messaging/consumer@0.2.0-draft", "wasi:messaging/types@0.2.0-draft",
      "wasi:messaging/request-reply@0.2.0-draft", "wasmcloud:messaging/types@0.2.0",
      "wasmcloud:messaging/consumer@0.2.0"};
  for (std::string_view m : kMessaging) {
    if (interface == m) return std::string(m);
  }
  // wasi:<package>/<interface>@0.2.<patch>[-pre]: served as "wasi:<package>/<interface>@0.2".
  const size_t at = interface.find('@');
  if (interface.rfind("wasi:", 0) != 0 || interface.rfind("wasi:messaging/", 0) == 0 ||
      at == std::string_view::npos) {
    return {};
  }
  const std::string_view version = interface.substr(at + 1);
  if (version.rfind("0.2.", 0) != 0 || version.size() == 4) return {};
  for (char c : version.substr(4)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '+') {
      return {};
    }
  }
  return std::string(interface.substr(0, at)) + "@0.2";
}

Result<CoreLink> read_component(const std::string& name, std::span<const uint8_t> bytes,
                                const std::vector<ImportSpec>& offered,
                                const ComponentWorld& world) {
  try {
    return ComponentReader(name, offered, world).read(bytes);
  } catch (const Refused& e) {
    return Error(ErrorCode::kInvalidArgument, fmt::format("component '{}': {}", name, e.what()));
  } catch (const std::bad_alloc&) {
    return Error(ErrorCode::kResourceExhausted,
                 fmt::format("component '{}': out of memory while reading it", name));
  }
}

}  // namespace witmq::guest
