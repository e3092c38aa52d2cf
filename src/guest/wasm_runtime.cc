// WasmModule and WasmInstance over the wabt 1.0.32 interpreter. C++17 translation unit (see
// wasm_runtime.h for why).
#include "guest/wasm_runtime.h"

#include <algorithm>
#include <cinttypes>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "guest/wasm_internal.h"
#include "wabt/binary-reader.h"
#include "wabt/interp/binary-reader-interp.h"
#include "wabt/interp/interp.h"

namespace witmq::guest {
namespace wi = wabt::interp;

// ---- Access to three private members of wabt::interp::Thread ------------------------------
//
// wabt runs an exported function with Func::Call, which ends in Thread::Run(Trap::Ptr*) and
// steps until the function returns: there is no budget on that path. The budgeted entry point,
// Thread::Run(int num_instructions, Trap::Ptr*), is public, but the calls that set up a frame
// for it (PushValues, PushCall, and PopValues for the results) are private; DefinedFunc::DoCall
// is exactly PushValues + PushCall + Run + PopValues. We name those three members through the
// explicit-instantiation rule ([temp.spec.general]/6: access is not checked in the template
// arguments of an explicit instantiation), which is well-defined C++ and fails to compile, not
// silently misbehaves, if wabt ever changes their signatures.
namespace {

template <typename Tag, typename Tag::type Member>
struct PrivateMember {
  friend typename Tag::type member_of(Tag) { return Member; }
};

struct ThreadPushValues {
  using type = void (wi::Thread::*)(const wi::ValueTypes&, const wi::Values&);
  friend type member_of(ThreadPushValues);
};
struct ThreadPushCall {
  using type = wi::RunResult (wi::Thread::*)(const wi::DefinedFunc&, wi::Trap::Ptr*);
  friend type member_of(ThreadPushCall);
};
struct ThreadPopValues {
  using type = void (wi::Thread::*)(const wi::ValueTypes&, wi::Values*);
  friend type member_of(ThreadPopValues);
};
// The call stack: PushCall traps "call stack exhausted" when it is at its capacity, so its
// capacity is the call depth limit.
struct ThreadFrames {
  using type = std::vector<wi::Frame> wi::Thread::*;
  friend type member_of(ThreadFrames);
};

}  // namespace

template struct PrivateMember<ThreadPushValues, &wi::Thread::PushValues>;
template struct PrivateMember<ThreadPushCall, &wi::Thread::PushCall>;
template struct PrivateMember<ThreadPopValues, &wi::Thread::PopValues>;
template struct PrivateMember<ThreadFrames, &wi::Thread::frames_>;

namespace {

// Interpreter steps per Thread::Run slice of a top-level call. Between slices the wall-time
// limit is checked; steps taken by calls nested in a slice can exceed the budget by at most this.
constexpr uint64_t kRunSlice = 1u << 16;
// Slice of a nested call (cabi_realloc from a host function): such calls are short, and a call
// that returns mid-slice is charged the whole slice, so it is small.
constexpr uint64_t kNestedRunSlice = 32;
// wasm's own ceiling on 32-bit memories.
constexpr uint64_t kMaxPages32 = 65536;

wabt::Type to_wabt(ValType t) {
  switch (t) {
    case ValType::kI32:
      return wabt::Type::I32;
    case ValType::kI64:
      return wabt::Type::I64;
    case ValType::kF32:
      return wabt::Type::F32;
    case ValType::kF64:
      return wabt::Type::F64;
  }
  return wabt::Type::I32;
}

wi::ValueTypes to_wabt(const std::vector<ValType>& types) {
  wi::ValueTypes out;
  for (ValType t : types) out.push_back(to_wabt(t));
  return out;
}

wi::FuncType to_wabt(const FuncSig& sig) {
  return wi::FuncType(to_wabt(sig.params), to_wabt(sig.results));
}

std::string wat_types(const wi::ValueTypes& types) {
  std::string out;
  for (const auto& t : types) {
    out += ' ';
    out += t.GetName();
  }
  return out;
}

std::string wat_sig(const wi::FuncType& type) {
  std::string out = "(func";
  if (!type.params.empty()) out += " (param" + wat_types(type.params) + ")";
  if (!type.results.empty()) out += " (result" + wat_types(type.results) + ")";
  return out + ")";
}

bool same_sig(const wi::FuncType& a, const wi::FuncType& b) {
  return a.params == b.params && a.results == b.results;
}

const char* kind_name(wi::ExternKind kind) {
  switch (kind) {
    case wi::ExternKind::Func:
      return "a function";
    case wi::ExternKind::Table:
      return "a table";
    case wi::ExternKind::Memory:
      return "a memory";
    case wi::ExternKind::Global:
      return "a global";
    case wi::ExternKind::Tag:
      return "a tag";
  }
  return "an unknown item";
}

Error refuse(const std::string& module, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "module '" + module + "': " + what);
}

Error out_of_memory(const std::string& module, const std::string& what) {
  return Error(ErrorCode::kResourceExhausted,
               "module '" + module + "': " + what + ": " + kCannotAllocateMemory);
}

Result<wi::ModuleDesc> read_module(const std::string& name, const std::vector<uint8_t>& bytes) {
  wabt::Errors errors;
  wi::ModuleDesc desc;
  wabt::ReadBinaryOptions options(wabt::Features(), nullptr, /*read_debug_names=*/false,
                                  /*stop_on_first_error=*/true,
                                  /*fail_on_custom_section_error=*/false);
  if (wabt::Failed(
          wi::ReadBinaryInterp(name, bytes.data(), bytes.size(), options, &errors, &desc))) {
    std::string why = errors.empty() ? std::string("unreadable") : errors.front().message;
    if (!errors.empty() && errors.front().loc.offset != size_t(~0)) {
      why += " (at byte offset " + std::to_string(errors.front().loc.offset) + ")";
    }
    return refuse(name, "not a valid WebAssembly module: " + why);
  }
  return desc;
}

Status check_limits(const std::string& name, const wi::ModuleDesc& desc, const WasmLimits& limits);

// Checks imports, exports, memory and locals; returns the first problem.
Status check_module(const std::string& name, const wi::ModuleDesc& desc,
                    const ModuleRequirements& req, const WasmLimits& limits) {
  for (const wi::ImportDesc& import : desc.imports) {
    const wi::ImportType& type = import.type;
    const std::string what = "import \"" + type.module + "\".\"" + type.name + "\"";
    if (type.type->kind != wi::ExternKind::Func) {
      return refuse(
          name, what + " is " + kind_name(type.type->kind) + "; the host offers only functions");
    }
    auto it = std::find_if(
        req.offered_imports.begin(), req.offered_imports.end(),
        [&](const ImportSpec& s) { return s.module == type.module && s.name == type.name; });
    if (it == req.offered_imports.end()) {
      return refuse(name, "unknown " + what + ": the host does not offer it");
    }
    const auto& actual = *wabt::cast<wi::FuncType>(type.type.get());
    const wi::FuncType expected = to_wabt(it->sig);
    if (!same_sig(actual, expected)) {
      return refuse(name,
                    what + " has type " + wat_sig(actual) + ", expected " + wat_sig(expected));
    }
  }

  const size_t func_imports = desc.imports.size();  // every import is a function (checked above)
  std::map<std::string, const wi::ExportDesc*> exports;
  for (const wi::ExportDesc& e : desc.exports) exports[e.type.name] = &e;

  for (const ExportSpec& spec : req.exports) {
    const wi::FuncType expected = to_wabt(spec.sig);
    auto it = exports.find(spec.name);
    if (it == exports.end()) {
      if (!spec.required) continue;
      return refuse(name,
                    "missing export '" + spec.name + "' (expected " + wat_sig(expected) + ")");
    }
    const wi::ExportDesc& e = *it->second;
    if (e.type.type->kind != wi::ExternKind::Func) {
      return refuse(name, "export '" + spec.name + "' is " + kind_name(e.type.type->kind) +
                              ", expected a function " + wat_sig(expected));
    }
    const auto& actual = *wabt::cast<wi::FuncType>(e.type.type.get());
    if (!same_sig(actual, expected)) {
      return refuse(name, "export '" + spec.name + "' has type " + wat_sig(actual) + ", expected " +
                              wat_sig(expected));
    }
    if (e.index < func_imports) {
      return refuse(name, "export '" + spec.name +
                              "' re-exports an import; it must be defined by the module");
    }
  }

  if (!req.memory_export.empty()) {
    auto it = exports.find(req.memory_export);
    if (it == exports.end()) {
      return refuse(name, "missing export '" + req.memory_export + "' (expected a memory)");
    }
    const wi::ExportDesc& e = *it->second;
    if (e.type.type->kind != wi::ExternKind::Memory) {
      return refuse(name, "export '" + req.memory_export + "' is " + kind_name(e.type.type->kind) +
                              ", expected a memory");
    }
  }
  return check_limits(name, desc, limits);
}

// Checks what a module defines against the limits (memories, tables, locals).
Status check_limits(const std::string& name, const wi::ModuleDesc& desc, const WasmLimits& limits) {
  size_t func_imports = 0;
  for (const wi::ImportDesc& import : desc.imports) {
    if (import.type.type->kind == wi::ExternKind::Func) ++func_imports;
  }
  for (const wi::MemoryDesc& m : desc.memories) {
    if (m.type.limits.is_64) return refuse(name, "64-bit memories are not supported");
    if (m.type.limits.is_shared) return refuse(name, "shared memories are not supported");
    if (m.type.limits.initial > limits.memory_pages) {
      return refuse(name, "memory starts at " + std::to_string(m.type.limits.initial) +
                              " pages, above the memory limit of " +
                              std::to_string(limits.memory_pages) + " pages");
    }
  }
  if (desc.tables.size() > limits.max_tables) {
    return refuse(name, "defines " + std::to_string(desc.tables.size()) +
                            " tables, above the limit of " + std::to_string(limits.max_tables));
  }
  for (const wi::TableDesc& t : desc.tables) {
    if (t.type.limits.initial > limits.table_elements) {
      return refuse(name, "a table starts at " + std::to_string(t.type.limits.initial) +
                              " elements, above the limit of " +
                              std::to_string(limits.table_elements));
    }
  }
  for (size_t i = 0; i < desc.funcs.size(); ++i) {
    const wi::FuncDesc& f = desc.funcs[i];
    uint64_t count = f.type.params.size();
    for (const wi::LocalDesc& l : f.locals) count += l.count;
    if (count > limits.locals_per_function) {
      return refuse(name, "function " + std::to_string(func_imports + i) + " has " +
                              std::to_string(count) + " params and locals, above the limit of " +
                              std::to_string(limits.locals_per_function));
    }
  }
  return ok_status();
}

// Rewrites a checked module (wasm_internal.h), reads it for the interpreter with the limits
// applied and its start function taken out, and lowers *call_depth to what its frames allow.
// *prepared (when given) receives the rewritten bytes, for the ahead-of-time tier.
Status prepare_module(const std::string& name, const std::vector<uint8_t>& bytes,
                      const WasmLimits& limits, WasmModule::Impl::Part* part,
                      uint32_t* call_depth, std::vector<uint8_t>* prepared = nullptr) {
  auto rewrite = rewrite_module(name, bytes);
  if (!rewrite.ok()) return std::move(rewrite).error();
  if (prepared) *prepared = rewrite->rewritten ? rewrite->bytes : bytes;
  auto desc = read_module(name, rewrite->rewritten ? rewrite->bytes : bytes);
  if (!desc.ok()) return std::move(desc).error();
  if (rewrite->rewritten) part->grow_refused_global = rewrite->refused_global;
  // The value stack holds at most call_depth frames of at most max_frame_values 16-byte values.
  const uint64_t frame = std::max<uint64_t>(rewrite->max_frame_values, 1);
  const uint64_t depth = limits.value_stack_bytes / 16 / frame;
  if (depth < kMinCallDepth) {
    return refuse(name, "a function can need a frame of " + std::to_string(frame) +
                            " values (params, locals and the operands its code pushes); only " +
                            std::to_string(depth) + " such frames fit the value stack limit of " +
                            std::to_string(limits.value_stack_bytes) + " bytes, at least " +
                            std::to_string(kMinCallDepth) + " are needed");
  }
  *call_depth = std::min<uint32_t>(*call_depth,
                                   static_cast<uint32_t>(std::min<uint64_t>(depth, kMaxCallDepth)));
  part->desc = std::move(desc).value();
  for (wi::MemoryDesc& m : part->desc.memories) {
    wabt::Limits& l = m.type.limits;
    l.max = std::min<uint64_t>(l.has_max ? l.max : kMaxPages32, limits.memory_pages);
    l.has_max = true;
  }
  for (wi::TableDesc& t : part->desc.tables) {
    wabt::Limits& l = t.type.limits;
    l.max = std::min<uint64_t>(l.has_max ? l.max : std::numeric_limits<uint32_t>::max(),
                               limits.table_elements);
    l.has_max = true;
  }
  part->starts = std::move(part->desc.starts);
  part->desc.starts.clear();
  return ok_status();
}

}  // namespace

// ---- FuncSig --------------------------------------------------------------------------------

std::string FuncSig::to_string() const { return wat_sig(to_wabt(*this)); }

const char* engine_name(Engine e) { return e == Engine::kAot ? "aot" : "interp"; }

const char* call_status_name(CallStatus s) {
  switch (s) {
    case CallStatus::kOk:
      return "ok";
    case CallStatus::kTrap:
      return "trap";
    case CallStatus::kBudgetExhausted:
      return "budget-exhausted";
    case CallStatus::kMemoryLimit:
      return "memory-limit";
    case CallStatus::kTimeLimit:
      return "time-limit";
  }
  return "unknown";
}

// ---- WasmModule -----------------------------------------------------------------------------

WasmModule::WasmModule(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WasmModule::~WasmModule() = default;
const std::string& WasmModule::name() const { return impl_->name; }
const WasmLimits& WasmModule::limits() const { return impl_->limits; }
Engine WasmModule::engine() const { return impl_->aot ? Engine::kAot : Engine::kInterp; }

bool WasmModule::has_function_export(const std::string& name) const {
  // A linked module (a component) exports what its link says (only functions are named there,
  // besides the memory).
  if (!impl_->parts.empty()) {
    return std::any_of(impl_->link.exports.begin(), impl_->link.exports.end(),
                       [&](const auto& e) { return e.first == name; });
  }
  for (const wi::ExportDesc& e : impl_->desc.exports) {
    if (e.type.name == name && e.type.type->kind == wi::ExternKind::Func) return true;
  }
  return false;
}

Result<std::shared_ptr<const WasmModule>> WasmModule::compile(
    std::string name, const std::vector<uint8_t>& bytes, const ModuleRequirements& requirements,
    const WasmLimits& limits, const EngineOptions& engine) {
  auto impl = std::make_unique<Impl>();
  impl->name = std::move(name);
  impl->limits = limits;
  if (limits.memory_pages == 0 || limits.memory_pages > kMaxPages32) {
    return refuse(impl->name, "memory limit of " + std::to_string(limits.memory_pages) +
                                  " pages is outside 1..65536");
  }
  auto desc = read_module(impl->name, bytes);
  if (!desc.ok()) return std::move(desc).error();
  WITMQ_RETURN_IF_ERROR(check_module(impl->name, *desc, requirements, limits));

  WasmModule::Impl::Part part;
  std::vector<uint8_t> prepared;
  WITMQ_RETURN_IF_ERROR(prepare_module(impl->name, bytes, limits, &part, &impl->call_depth,
                                       engine.engine == Engine::kAot ? &prepared : nullptr));
  impl->desc = std::move(part.desc);
  impl->starts = std::move(part.starts);
  impl->grow_refused_global = part.grow_refused_global;
  if (engine.engine == Engine::kAot) {
    auto plan = plan_aot_module(impl->name, prepared, impl->grow_refused_global, limits);
    if (!plan.ok()) return std::move(plan).error();
    auto lib = load_aot_library(impl->name, *plan, impl->call_depth, engine);
    if (!lib.ok()) return std::move(lib).error();
    impl->aot = std::move(lib).value();
  }
  return std::shared_ptr<const WasmModule>(new WasmModule(std::move(impl)));
}

Result<std::shared_ptr<const WasmModule>> WasmModule::compile_file(
    const std::string& path, const ModuleRequirements& requirements, const WasmLimits& limits,
    const EngineOptions& engine) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kNotFound, "module '" + path + "': cannot open the file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) return Error(ErrorCode::kIoError, "module '" + path + "': read failed");
  return compile(path, bytes, requirements, limits, engine);
}

namespace {

const wi::ExportDesc* find_export_desc(const wi::ModuleDesc& desc, const std::string& name) {
  for (const wi::ExportDesc& e : desc.exports) {
    if (e.type.name == name) return &e;
  }
  return nullptr;
}

}  // namespace

Result<std::shared_ptr<const WasmModule>> WasmModule::compile_linked(
    std::string name, const CoreLink& link, const ModuleRequirements& requirements,
    const WasmLimits& limits) {
  auto impl = std::make_unique<Impl>();
  impl->name = std::move(name);
  impl->limits = limits;
  if (limits.memory_pages == 0 || limits.memory_pages > kMaxPages32) {
    return refuse(impl->name, "memory limit of " + std::to_string(limits.memory_pages) +
                                  " pages is outside 1..65536");
  }
  for (size_t i = 0; i < link.modules.size(); ++i) {
    const std::string part_name = impl->name + "' core module '" + std::to_string(i);
    auto desc = read_module(part_name, link.modules[i]);
    if (!desc.ok()) return std::move(desc).error();
    WITMQ_RETURN_IF_ERROR(check_limits(part_name, *desc, limits));
    Impl::Part part;
    WITMQ_RETURN_IF_ERROR(
        prepare_module(part_name, link.modules[i], limits, &part, &impl->call_depth));
    impl->parts.push_back(std::move(part));
  }
  // Counted per core instance: each instantiation of a module has its own memories and tables.
  size_t memories = 0, tables = 0;
  for (const CoreLink::Instance& inst : link.instances) {
    if (inst.module >= impl->parts.size()) continue;  // refused below
    memories += impl->parts[inst.module].desc.memories.size();
    tables += impl->parts[inst.module].desc.tables.size();
  }
  if (memories > 1) {
    return refuse(impl->name, "its core instances define " + std::to_string(memories) +
                                  " memories; at most one is supported (the memory limit "
                                  "holds for it)");
  }
  if (tables > limits.max_tables) {
    return refuse(impl->name, "its core instances define " + std::to_string(tables) +
                                  " tables, above the limit of " +
                                  std::to_string(limits.max_tables));
  }
  // Every import of every core instance must come from the host or an earlier instance's export
  // of the same kind and type.
  for (size_t i = 0; i < link.instances.size(); ++i) {
    const CoreLink::Instance& inst = link.instances[i];
    if (inst.module >= impl->parts.size()) {
      return refuse(impl->name, "core instance " + std::to_string(i) + " instantiates module " +
                                    std::to_string(inst.module) + ", which does not exist");
    }
    const wi::ModuleDesc& desc = impl->parts[inst.module].desc;
    if (inst.imports.size() != desc.imports.size()) {
      return refuse(impl->name, "core instance " + std::to_string(i) + " supplies " +
                                    std::to_string(inst.imports.size()) + " imports, module " +
                                    std::to_string(inst.module) + " has " +
                                    std::to_string(desc.imports.size()));
    }
    for (size_t j = 0; j < desc.imports.size(); ++j) {
      const wi::ImportType& want = desc.imports[j].type;
      const CoreLink::Source& src = inst.imports[j];
      const std::string what = "core instance " + std::to_string(i) + ": import \"" + want.module +
                               "\".\"" + want.name + "\"";
      if (src.instance < 0) {
        auto it = std::find_if(requirements.offered_imports.begin(),
                               requirements.offered_imports.end(), [&](const ImportSpec& o) {
                                 return o.module == src.host_module && o.name == src.host_name;
                               });
        if (it == requirements.offered_imports.end()) {
          return refuse(impl->name, "unknown import \"" + src.host_module + "\".\"" +
                                        src.host_name + "\": the host does not offer it");
        }
        if (want.type->kind != wi::ExternKind::Func) {
          return refuse(impl->name, what + " is " + kind_name(want.type->kind) +
                                        " but is given the host function \"" + src.host_module +
                                        "\".\"" + src.host_name + "\"");
        }
        const auto& actual = *wabt::cast<wi::FuncType>(want.type.get());
        const wi::FuncType expected = to_wabt(it->sig);
        if (!same_sig(actual, expected)) {
          return refuse(impl->name, what + " has type " + wat_sig(actual) + ", but \"" +
                                        src.host_module + "\".\"" + src.host_name + "\" is " +
                                        wat_sig(expected));
        }
        continue;
      }
      if (static_cast<size_t>(src.instance) >= i) {
        return refuse(impl->name, what + " refers to core instance " +
                                      std::to_string(src.instance) + ", not created before it");
      }
      const size_t from_module = link.instances[static_cast<size_t>(src.instance)].module;
      const wi::ExportDesc* e = find_export_desc(impl->parts[from_module].desc, src.name);
      if (!e) {
        return refuse(impl->name, what + " names export '" + src.name + "' of core instance " +
                                      std::to_string(src.instance) + ", which has none");
      }
      if (e->type.type->kind != want.type->kind) {
        return refuse(impl->name, what + " is " + kind_name(want.type->kind) + ", export '" +
                                      src.name + "' is " + kind_name(e->type.type->kind));
      }
      if (want.type->kind == wi::ExternKind::Func &&
          !same_sig(*wabt::cast<wi::FuncType>(want.type.get()),
                    *wabt::cast<wi::FuncType>(e->type.type.get()))) {
        return refuse(impl->name, what + " has type " +
                                      wat_sig(*wabt::cast<wi::FuncType>(want.type.get())) +
                                      ", export '" + src.name + "' is " +
                                      wat_sig(*wabt::cast<wi::FuncType>(e->type.type.get())));
      }
    }
  }
  auto export_kind = [&](const std::string& name, wi::ExternKind kind,
                         const wi::FuncType* sig) -> Status {
    for (const auto& [export_name, src] : link.exports) {
      if (export_name != name) continue;
      if (src.instance < 0 || static_cast<size_t>(src.instance) >= link.instances.size()) {
        return refuse(impl->name, "'" + name + "' is not an export of a core instance");
      }
      const size_t module = link.instances[static_cast<size_t>(src.instance)].module;
      const wi::ExportDesc* e = find_export_desc(impl->parts[module].desc, src.name);
      if (!e || e->type.type->kind != kind) {
        return refuse(impl->name, "'" + name + "' names '" + src.name + "' of core instance " +
                                      std::to_string(src.instance) + ", which is not " +
                                      kind_name(kind) + " export");
      }
      if (sig && !same_sig(*sig, *wabt::cast<wi::FuncType>(e->type.type.get()))) {
        return refuse(impl->name, "'" + name + "' has type " +
                                      wat_sig(*wabt::cast<wi::FuncType>(e->type.type.get())) +
                                      ", expected " + wat_sig(*sig));
      }
      return ok_status();
    }
    return Error(ErrorCode::kNotFound, name);
  };
  for (const ExportSpec& spec : requirements.exports) {
    const wi::FuncType expected = to_wabt(spec.sig);
    Status st = export_kind(spec.name, wi::ExternKind::Func, &expected);
    if (!st.ok() && st.error().code == ErrorCode::kNotFound) {
      if (!spec.required) continue;
      return refuse(impl->name,
                    "missing export '" + spec.name + "' (expected " + wat_sig(expected) + ")");
    }
    WITMQ_RETURN_IF_ERROR(st);
  }
  if (!requirements.memory_export.empty()) {
    Status st = export_kind(requirements.memory_export, wi::ExternKind::Memory, nullptr);
    if (!st.ok() && st.error().code == ErrorCode::kNotFound) {
      return refuse(impl->name, "no memory for the canonical ABI");
    }
    WITMQ_RETURN_IF_ERROR(st);
  }
  impl->link.instances = link.instances;
  impl->link.exports = link.exports;
  return std::shared_ptr<const WasmModule>(new WasmModule(std::move(impl)));
}

// ---- WasmInstance ---------------------------------------------------------------------------

struct WasmInstance::Impl {
  std::shared_ptr<const WasmModule> module;
  // The compiled tier's instance when the module has one; everything below is then unused.
  std::unique_ptr<AotInstance> aot;
  std::vector<HostFunction> host;
  // Declared first so that it is destroyed last: every RefPtr and the Thread below point into it.
  std::unique_ptr<wi::Store> store;
  wi::Instance::Ptr instance;
  std::vector<wi::Instance::Ptr> linked;  // the core instances of a linked module, in order
  wi::Memory::Ptr memory;
  std::vector<wi::Global::Ptr> grow_refused;  // one per (core) instance that grows its memory
  std::vector<wi::DefinedFunc::Ptr> funcs;    // by export index; empty for non-functions
  std::vector<std::string> export_names;
  std::unique_ptr<wi::Thread> thread;

  int depth = 0;               // calls in progress on `thread` (nested through host functions)
  bool spent = false;          // a call failed: the interpreter state is no longer consistent
  CallOutcome nested_failure;  // the first failure of a nested call, reported by the outer one
  // The top-level call in progress: steps left to it and to everything nested in it, and when
  // it must end.
  uint64_t remaining = 0;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();

  // Reused across calls; a nested call (from a host function) finishes before the outer call
  // touches them again.
  wi::Values params_buf, results_buf;

  CallOutcome run(const wi::DefinedFunc::Ptr& func, std::string_view name, const RawValue* args,
                  size_t nargs, RawValue* results, size_t nresults);
  CallOutcome classify_trap(const std::string& what, const wi::Trap::Ptr& trap);
  CallOutcome time_limit(const std::string& what) const;
  Status run_start_functions(const std::string& module_name);
  wi::HostFunc::Ptr host_func(const HostFunction* hf);
  Status instantiate_linked();
};

WasmInstance::WasmInstance(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WasmInstance::~WasmInstance() = default;

CallOutcome WasmInstance::Impl::time_limit(const std::string& what) const {
  return {CallStatus::kTimeLimit, "wall time limit of " +
                                      std::to_string(module->limits().call_time_limit.count()) +
                                      " ms exceeded in " + what};
}

CallOutcome WasmInstance::Impl::classify_trap(const std::string& what, const wi::Trap::Ptr& trap) {
  if (nested_failure.status != CallStatus::kOk) return nested_failure;
  for (const wi::Global::Ptr& refused : grow_refused) {
    const uint32_t delta = refused->Get().Get<uint32_t>();
    if (delta != 0) {
      return {CallStatus::kMemoryLimit,
              "memory.grow by " + std::to_string(delta) + " pages in " + what +
                  " exceeds the memory limit of " + std::to_string(module->limits().memory_pages) +
                  " pages (memory is at " + std::to_string(memory ? memory->PageSize() : 0) +
                  " pages)"};
    }
  }
  // A host function that stopped waiting at the deadline traps its caller.
  if (std::chrono::steady_clock::now() >= deadline) return time_limit(what);
  const std::string message = trap ? trap->message() : std::string("unknown trap");
  return {CallStatus::kTrap, "trap in " + what + ": " + message};
}

CallOutcome WasmInstance::Impl::run(const wi::DefinedFunc::Ptr& func, std::string_view name,
                                    const RawValue* args, size_t nargs, RawValue* results,
                                    size_t nresults) {
  auto what = [&] { return "'" + std::string(name) + "'"; };  // built only for messages
  if (spent) {
    return {CallStatus::kTrap, "call to " + what() + " refused: the instance failed earlier"};
  }
  const wi::FuncType& type = func->type();
  if (nargs != type.params.size()) {
    return {CallStatus::kTrap, "call to " + what() + " with " + std::to_string(nargs) +
                                   " arguments, expected " + std::to_string(type.params.size())};
  }
  params_buf.clear();
  for (size_t i = 0; i < nargs; ++i) {
    switch (type.params[i]) {
      case wabt::Type::I32:
        params_buf.push_back(wi::Value::Make(static_cast<uint32_t>(args[i])));
        break;
      case wabt::Type::I64:
        params_buf.push_back(wi::Value::Make(static_cast<uint64_t>(args[i])));
        break;
      default:
        return {CallStatus::kTrap, "call to " + what() + ": only i32/i64 parameters are supported"};
    }
  }

  const bool top = depth == 0;
  if (top) {
    remaining = module->limits().instruction_budget;
    const auto limit = module->limits().call_time_limit;
    deadline = limit.count() > 0 ? std::chrono::steady_clock::now() + limit
                                 : std::chrono::steady_clock::time_point::max();
  }
  wi::Thread& t = *thread;
  wi::Trap::Ptr trap;
  ++depth;
  wi::RunResult r = wi::RunResult::Trap;
  bool timed_out = false;
  std::string host_failure;
  try {
    (t.*member_of(ThreadPushValues{}))(type.params, params_buf);
    r = (t.*member_of(ThreadPushCall{}))(*func, &trap);
    const uint64_t slice_cap = top ? kRunSlice : kNestedRunSlice;
    // `remaining` is shared with the calls nested in this one (made by host functions during
    // t.Run), which charge it as they go.
    while (r == wi::RunResult::Ok && remaining > 0) {
      if (top && std::chrono::steady_clock::now() >= deadline) {
        timed_out = true;
        break;
      }
      const uint64_t slice = std::min(remaining, slice_cap);
      r = t.Run(static_cast<int>(slice), &trap);
      remaining -= std::min(remaining, slice);
    }
  } catch (const std::exception& e) {
    // The interpreter itself failed (e.g. could not allocate): this instance is done, the
    // daemon is not.
    r = wi::RunResult::Trap;
    host_failure = e.what();
  }
  --depth;

  CallOutcome outcome;
  if (r == wi::RunResult::Return) {
    (t.*member_of(ThreadPopValues{}))(type.results, &results_buf);
    for (size_t i = 0; i < results_buf.size() && i < nresults; ++i) {
      results[i] = type.results[i] == wabt::Type::I64 ? results_buf[i].Get<uint64_t>()
                                                      : results_buf[i].Get<uint32_t>();
    }
    return outcome;
  }
  spent = true;
  if (nested_failure.status != CallStatus::kOk) {
    outcome = nested_failure;
  } else if (!host_failure.empty()) {
    outcome = {CallStatus::kTrap, "the interpreter failed in " + what() + ": " + host_failure};
  } else if (timed_out) {
    outcome = time_limit(what());
  } else if (r == wi::RunResult::Ok) {
    outcome = {CallStatus::kBudgetExhausted,
               "instruction budget of " + std::to_string(module->limits().instruction_budget) +
                   " exhausted in " + what() + (top ? "" : " (nested in a host call)")};
  } else if (r == wi::RunResult::Exception) {
    outcome = {CallStatus::kTrap, "trap in " + what() + ": uncaught wasm exception"};
  } else {
    outcome = classify_trap(what(), trap);
  }
  if (depth > 0 && nested_failure.status == CallStatus::kOk) nested_failure = outcome;
  return outcome;
}

wi::HostFunc::Ptr WasmInstance::Impl::host_func(const HostFunction* hf) {
  Impl* self = this;
  const std::string label = "host function \"" + hf->spec.module + "\".\"" + hf->spec.name + "\"";
  auto callback = [self, hf, label](wi::Thread&, const wi::Values& params, wi::Values& results,
                                    wi::Trap::Ptr* out_trap) -> wabt::Result {
    try {
      RawValue args[16] = {};
      RawValue outs[4] = {};
      const size_t n = std::min<size_t>(params.size(), 16);
      for (size_t i = 0; i < n; ++i) {
        args[i] = hf->spec.sig.params[i] == ValType::kI64 ? params[i].Get<uint64_t>()
                                                          : params[i].Get<uint32_t>();
      }
      hf->fn(args, outs);
      for (size_t i = 0; i < results.size() && i < 4; ++i) {
        results[i] = hf->spec.sig.results[i] == ValType::kI64
                         ? wi::Value::Make(static_cast<uint64_t>(outs[i]))
                         : wi::Value::Make(static_cast<uint32_t>(outs[i]));
      }
      return wabt::Result::Ok;
    } catch (const GuestTrap& e) {
      *out_trap = wi::Trap::New(*self->store, e.what());
    } catch (const std::exception& e) {
      *out_trap = wi::Trap::New(*self->store, label + " failed: " + e.what());
    } catch (...) {
      *out_trap = wi::Trap::New(*self->store, label + " failed");
    }
    return wabt::Result::Error;
  };
  return wi::HostFunc::New(*store, to_wabt(hf->spec.sig), callback);
}

Result<std::unique_ptr<WasmInstance>> WasmInstance::instantiate(
    std::shared_ptr<const WasmModule> module, std::vector<HostFunction> host) {
  auto impl = std::make_unique<Impl>();
  const WasmModule::Impl& m = module->impl();
  impl->module = module;
  if (m.aot) {
    auto aot = AotInstance::instantiate(m.aot, m.name, m.limits, std::move(host));
    if (!aot.ok()) return std::move(aot).error();
    impl->aot = std::move(aot).value();
    return std::unique_ptr<WasmInstance>(new WasmInstance(std::move(impl)));
  }
  impl->host = std::move(host);
  impl->store = std::make_unique<wi::Store>();
  wi::Store& store = *impl->store;
  Impl* self = impl.get();

  if (!m.parts.empty()) {
    WITMQ_RETURN_IF_ERROR(impl->instantiate_linked());
    impl->thread = std::make_unique<wi::Thread>(store);
  } else {
    impl->thread = std::make_unique<wi::Thread>(store);
    wi::RefVec imports;
    std::vector<wi::HostFunc::Ptr> host_funcs;
    for (const wi::ImportDesc& import : m.desc.imports) {
      auto it = std::find_if(self->host.begin(), self->host.end(), [&](const HostFunction& h) {
        return h.spec.module == import.type.module && h.spec.name == import.type.name;
      });
      if (it == self->host.end()) {
        return refuse(m.name, "import \"" + import.type.module + "\".\"" + import.type.name +
                                  "\" has no host function bound to it");
      }
      auto func = self->host_func(&*it);
      imports.push_back(func.ref());
      host_funcs.push_back(func);
    }

    wi::Module::Ptr mod = wi::Module::New(store, m.desc);
    wi::Trap::Ptr trap;
    try {
      impl->instance = wi::Instance::Instantiate(store, mod.ref(), imports, &trap);
    } catch (const std::bad_alloc&) {
      return out_of_memory(m.name, "instantiation failed");
    }
    if (!impl->instance) {
      return Error(ErrorCode::kFailedPrecondition,
                   "module '" + m.name + "': instantiation failed: " +
                       (trap ? trap->message() : std::string("unknown error")));
    }
    // Nothing below needs these, and they must not outlive the store once `impl` moves.
    host_funcs.clear();
    mod.reset();
    trap.reset();

    const auto& exports = impl->instance->exports();
    for (size_t i = 0; i < m.desc.exports.size(); ++i) {
      const wi::ExportDesc& e = m.desc.exports[i];
      impl->export_names.push_back(e.type.name);
      impl->funcs.emplace_back();
      if (e.type.type->kind == wi::ExternKind::Func && store.Is<wi::DefinedFunc>(exports[i])) {
        impl->funcs.back() = wi::DefinedFunc::Ptr(store, exports[i]);
      } else if (e.type.type->kind == wi::ExternKind::Memory && !impl->memory) {
        impl->memory = wi::Memory::Ptr(store, exports[i]);
      }
    }
    if (m.grow_refused_global >= 0) {
      impl->grow_refused.push_back(wi::Global::Ptr(
          store, impl->instance->globals()[static_cast<size_t>(m.grow_refused_global)]));
    }
  }
  {
    // PushCall traps at the stack's capacity: give it exactly call_depth frames.
    std::vector<wi::Frame> frames;
    frames.reserve(m.call_depth);
    impl->thread.get()->*member_of(ThreadFrames{}) = std::move(frames);
  }
  return std::unique_ptr<WasmInstance>(new WasmInstance(std::move(impl)));
}

Status WasmInstance::Impl::instantiate_linked() {
  const WasmModule::Impl& m = module->impl();
  wi::Store& s = *store;
  // The export of core instance `src.instance` named `src.name` (checked at compile_linked).
  auto export_of = [&](const CoreLink::Source& src) -> wi::Ref {
    const size_t from = static_cast<size_t>(src.instance);
    const wi::ModuleDesc& desc = m.parts[m.link.instances[from].module].desc;
    for (size_t k = 0; k < desc.exports.size(); ++k) {
      if (desc.exports[k].type.name == src.name) return linked[from]->exports()[k];
    }
    return wi::Ref::Null;
  };
  for (size_t i = 0; i < m.link.instances.size(); ++i) {
    const CoreLink::Instance& inst = m.link.instances[i];
    const WasmModule::Impl::Part& part = m.parts[inst.module];
    wi::RefVec imports;
    std::vector<wi::HostFunc::Ptr> host_funcs;
    for (const CoreLink::Source& src : inst.imports) {
      if (src.instance >= 0) {
        imports.push_back(export_of(src));
        continue;
      }
      auto it = std::find_if(host.begin(), host.end(), [&](const HostFunction& h) {
        return h.spec.module == src.host_module && h.spec.name == src.host_name;
      });
      if (it == host.end()) {
        return refuse(m.name, "import \"" + src.host_module + "\".\"" + src.host_name +
                                  "\" has no host function bound to it");
      }
      host_funcs.push_back(host_func(&*it));
      imports.push_back(host_funcs.back().ref());
    }
    wi::Module::Ptr mod = wi::Module::New(s, part.desc);
    wi::Trap::Ptr trap;
    wi::Instance::Ptr instance;
    try {
      instance = wi::Instance::Instantiate(s, mod.ref(), imports, &trap);
    } catch (const std::bad_alloc&) {
      return out_of_memory(m.name, "instantiating core instance " + std::to_string(i) + " failed");
    }
    if (!instance) {
      return Error(ErrorCode::kFailedPrecondition,
                   "module '" + m.name + "': instantiating core instance " + std::to_string(i) +
                       " failed: " + (trap ? trap->message() : std::string("unknown error")));
    }
    if (part.grow_refused_global >= 0) {
      grow_refused.push_back(
          wi::Global::Ptr(s, instance->globals()[static_cast<size_t>(part.grow_refused_global)]));
    }
    linked.push_back(std::move(instance));
  }
  for (const auto& [name, src] : m.link.exports) {
    const wi::Ref ref = export_of(src);
    export_names.push_back(name);
    funcs.emplace_back();
    if (s.Is<wi::DefinedFunc>(ref)) {
      funcs.back() = wi::DefinedFunc::Ptr(s, ref);
    } else if (s.Is<wi::Memory>(ref) && !memory) {
      memory = wi::Memory::Ptr(s, ref);
    }
  }
  return ok_status();
}

Status WasmInstance::initialize() {
  if (impl_->aot) return impl_->aot->initialize();
  const WasmModule::Impl& m = impl_->module->impl();
  wi::Store& store = *impl_->store;
  // The start functions of linked core instances, in order (a component's reactor
  // initialization is one of them): each a top-level call under the limits.
  for (size_t i = 0; i < impl_->linked.size(); ++i) {
    for (const wi::StartDesc& start : m.parts[m.link.instances[i].module].starts) {
      wi::Ref ref = impl_->linked[i]->funcs()[start.func_index];
      if (!store.Is<wi::DefinedFunc>(ref)) {
        return refuse(m.name, "the start function of core instance " + std::to_string(i) +
                                  " must be defined by its module");
      }
      CallOutcome o =
          impl_->run(wi::DefinedFunc::Ptr(store, ref), "a start function", nullptr, 0, nullptr, 0);
      if (!o.ok()) {
        return Error(ErrorCode::kFailedPrecondition, "module '" + m.name + "': " + o.message);
      }
    }
  }
  if (!m.parts.empty()) return ok_status();
  // Start function, then `_initialize`, each a top-level call under the limits.
  for (const wi::StartDesc& start : m.starts) {
    wi::Ref ref = impl_->instance->funcs()[start.func_index];
    if (!store.Is<wi::DefinedFunc>(ref)) {
      return refuse(m.name, "the start function must be defined by the module");
    }
    CallOutcome o =
        impl_->run(wi::DefinedFunc::Ptr(store, ref), "the start function", nullptr, 0, nullptr, 0);
    if (!o.ok()) {
      return Error(ErrorCode::kFailedPrecondition, "module '" + m.name + "': " + o.message);
    }
  }
  const int init = find_export("_initialize");
  if (init >= 0) {
    const wi::FuncType& type = impl_->funcs[static_cast<size_t>(init)]->type();
    if (!type.params.empty() || !type.results.empty()) {
      return refuse(m.name, "export '_initialize' has type " + wat_sig(type) + ", expected (func)");
    }
    CallOutcome o = call(init, {}, nullptr);
    if (!o.ok()) {
      return Error(ErrorCode::kFailedPrecondition, "module '" + m.name + "': " + o.message);
    }
  }
  return ok_status();
}

std::chrono::steady_clock::time_point WasmInstance::deadline() const {
  if (impl_->aot) return impl_->aot->deadline();
  return impl_->depth > 0 ? impl_->deadline : std::chrono::steady_clock::time_point::max();
}
bool WasmInstance::charge(uint64_t steps) {
  if (impl_->aot) return impl_->aot->charge(steps);
  if (impl_->depth == 0) return true;
  if (steps <= impl_->remaining) {
    impl_->remaining -= steps;
    return true;
  }
  impl_->remaining = 0;
  if (impl_->nested_failure.status == CallStatus::kOk) {
    impl_->nested_failure = {CallStatus::kBudgetExhausted,
                             "instruction budget of " +
                                 std::to_string(impl_->module->limits().instruction_budget) +
                                 " exhausted by the host copying guest data in a host call"};
  }
  return false;
}

uint32_t WasmInstance::call_depth_limit() const {
  return impl_->aot ? impl_->aot->call_depth_limit() : impl_->module->impl().call_depth;
}

int WasmInstance::find_export(const std::string& name) const {
  if (impl_->aot) return impl_->aot->find_export(name);
  for (size_t i = 0; i < impl_->export_names.size(); ++i) {
    if (impl_->export_names[i] == name && impl_->funcs[i]) return static_cast<int>(i);
  }
  return -1;
}

CallOutcome WasmInstance::call(int export_index, const std::vector<RawValue>& args,
                               std::vector<RawValue>* results) {
  RawValue out[4] = {};
  CallOutcome o = call(export_index, args.data(), args.size(), out, 4);
  if (o.ok() && results) {
    const size_t n = impl_->aot
                         ? impl_->aot->result_count(export_index)
                         : impl_->funcs[static_cast<size_t>(export_index)]->type().results.size();
    results->assign(out, out + std::min<size_t>(n, 4));
  }
  return o;
}

CallOutcome WasmInstance::call(int export_index, const RawValue* args, size_t nargs,
                               RawValue* results, size_t nresults) {
  if (impl_->aot) return impl_->aot->call(export_index, args, nargs, results, nresults);
  if (export_index < 0 || static_cast<size_t>(export_index) >= impl_->funcs.size() ||
      !impl_->funcs[static_cast<size_t>(export_index)]) {
    return {CallStatus::kTrap, "call to export #" + std::to_string(export_index) +
                                   ", which is not a function the module defines"};
  }
  const size_t i = static_cast<size_t>(export_index);
  return impl_->run(impl_->funcs[i], impl_->export_names[i], args, nargs, results, nresults);
}

uint8_t* WasmInstance::memory_data() {
  if (impl_->aot) return impl_->aot->memory_data();
  return impl_->memory ? impl_->memory->UnsafeData() : nullptr;
}
uint64_t WasmInstance::memory_size() const {
  if (impl_->aot) return impl_->aot->memory_size();
  return impl_->memory ? impl_->memory->ByteSize() : 0;
}
uint32_t WasmInstance::memory_pages() const {
  if (impl_->aot) return impl_->aot->memory_pages();
  return impl_->memory ? static_cast<uint32_t>(impl_->memory->PageSize()) : 0;
}
bool WasmInstance::usable() const { return impl_->aot ? impl_->aot->usable() : !impl_->spent; }
const WasmModule& WasmInstance::module() const { return *impl_->module; }

}  // namespace witmq::guest
