// The compiled tier's module transformation (aot_module.h). C++17 translation unit: it includes
// wabt (see wasm_runtime.h).
#include "guest/aot_module.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "wabt/binary-reader-ir.h"
#include "wabt/binary-reader.h"
#include "wabt/binary-writer.h"
#include "wabt/cast.h"
#include "wabt/ir.h"
#include "wabt/stream.h"

namespace witmq::guest {
namespace {

using wabt::cast;
using wabt::Expr;
using wabt::ExprList;
using wabt::ExprType;
using wabt::Location;
using wabt::Var;

template <typename T, typename... Args>
std::unique_ptr<T> make(Args&&... args) {
  return std::make_unique<T>(std::forward<Args>(args)...);
}

// Instructions in `exprs` that run at most once per entry into it: nested blocks and ifs
// included, the bodies of nested loops not (each loop pays for its own iterations).
uint64_t straight_count(const ExprList& exprs) {
  uint64_t n = 0;
  for (const Expr& e : exprs) {
    ++n;
    switch (e.type()) {
      case ExprType::Block:
        n += straight_count(cast<wabt::BlockExpr>(&e)->block.exprs);
        break;
      case ExprType::If: {
        const auto* if_expr = cast<wabt::IfExpr>(&e);
        n += straight_count(if_expr->true_.exprs) + straight_count(if_expr->false_);
        break;
      }
      case ExprType::Try: {
        const auto* try_expr = cast<wabt::TryExpr>(&e);
        n += straight_count(try_expr->block.exprs);
        for (const auto& c : try_expr->catches) n += straight_count(c.exprs);
        break;
      }
      default:
        break;
    }
  }
  return n;
}

// Inserts at the front of `exprs`:
//   (global.set $fuel (i64.sub (global.get $fuel) (i64.const N)))
//   (if (i64.lt_s (global.get $fuel) (i64.const 0)) (then (call $refuel)))
void insert_charge(ExprList& exprs, uint64_t n, wabt::Index fuel, wabt::Index refuel) {
  const Location loc;
  ExprList charge;
  charge.push_back(make<wabt::GlobalGetExpr>(Var(fuel, loc)));
  charge.push_back(make<wabt::ConstExpr>(wabt::Const::I64(n)));
  charge.push_back(make<wabt::BinaryExpr>(wabt::Opcode::I64Sub));
  charge.push_back(make<wabt::GlobalSetExpr>(Var(fuel, loc)));
  charge.push_back(make<wabt::GlobalGetExpr>(Var(fuel, loc)));
  charge.push_back(make<wabt::ConstExpr>(wabt::Const::I64(0)));
  charge.push_back(make<wabt::CompareExpr>(wabt::Opcode::I64LtS));
  auto if_expr = make<wabt::IfExpr>(loc);
  if_expr->true_.exprs.push_back(make<wabt::CallExpr>(Var(refuel, loc), loc));
  charge.push_back(std::move(if_expr));
  exprs.splice(exprs.begin(), charge);
}

void shift(Var& var, wabt::Index first_defined) {
  if (var.index() >= first_defined) var.set_index(var.index() + 1);
}

// Adds a charge to every loop in `exprs` (recursively), and shifts every reference to a defined
// function (index >= `first_defined`) up by one: the refuel import takes that index.
void instrument(ExprList& exprs, wabt::Index first_defined, wabt::Index fuel, wabt::Index refuel) {
  for (Expr& e : exprs) {
    switch (e.type()) {
      case ExprType::Call:
        shift(cast<wabt::CallExpr>(&e)->var, first_defined);
        break;
      case ExprType::ReturnCall:
        shift(cast<wabt::ReturnCallExpr>(&e)->var, first_defined);
        break;
      case ExprType::RefFunc:
        shift(cast<wabt::RefFuncExpr>(&e)->var, first_defined);
        break;
      case ExprType::Block:
        instrument(cast<wabt::BlockExpr>(&e)->block.exprs, first_defined, fuel, refuel);
        break;
      case ExprType::Loop: {
        ExprList& body = cast<wabt::LoopExpr>(&e)->block.exprs;
        const uint64_t n = std::max<uint64_t>(straight_count(body), 1);
        instrument(body, first_defined, fuel, refuel);
        insert_charge(body, n, fuel, refuel);
        break;
      }
      case ExprType::If: {
        auto* if_expr = cast<wabt::IfExpr>(&e);
        instrument(if_expr->true_.exprs, first_defined, fuel, refuel);
        instrument(if_expr->false_, first_defined, fuel, refuel);
        break;
      }
      case ExprType::Try: {
        auto* try_expr = cast<wabt::TryExpr>(&e);
        instrument(try_expr->block.exprs, first_defined, fuel, refuel);
        for (auto& c : try_expr->catches) instrument(c.exprs, first_defined, fuel, refuel);
        break;
      }
      default:
        break;
    }
  }
}

// Shifts references to defined functions in a constant expression (ref.func).
void shift_refs(ExprList& exprs, wabt::Index first_defined) {
  for (Expr& e : exprs) {
    if (e.type() == ExprType::RefFunc) shift(cast<wabt::RefFuncExpr>(&e)->var, first_defined);
  }
}

bool to_val_type(wabt::Type t, ValType* out) {
  switch (t) {
    case wabt::Type::I32:
      *out = ValType::kI32;
      return true;
    case wabt::Type::I64:
      *out = ValType::kI64;
      return true;
    case wabt::Type::F32:
      *out = ValType::kF32;
      return true;
    case wabt::Type::F64:
      *out = ValType::kF64;
      return true;
    default:
      return false;
  }
}

// The signature as FuncSig when every type is a number type and there is at most one result.
bool to_func_sig(const wabt::FuncSignature& sig, FuncSig* out) {
  if (sig.result_types.size() > 1) return false;
  for (wabt::Type t : sig.param_types) {
    ValType v;
    if (!to_val_type(t, &v)) return false;
    out->params.push_back(v);
  }
  for (wabt::Type t : sig.result_types) {
    ValType v;
    if (!to_val_type(t, &v)) return false;
    out->results.push_back(v);
  }
  return true;
}

void add_export(wabt::Module& ir, std::string name, wabt::ExternalKind kind, wabt::Index index) {
  auto field = make<wabt::ExportModuleField>();
  field->export_.name = std::move(name);
  field->export_.kind = kind;
  field->export_.var = Var(index, Location());
  ir.AppendField(std::move(field));
}

Error refuse(const std::string& module, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "module '" + module + "': " + what);
}

}  // namespace

Result<AotPlan> plan_aot_module(const std::string& name, const std::vector<uint8_t>& bytes,
                                int refused_global, const WasmLimits& limits) {
  wabt::Module ir;
  wabt::Errors errors;
  const wabt::Features features;
  wabt::ReadBinaryOptions options(features, nullptr, /*read_debug_names=*/false,
                                  /*stop_on_first_error=*/true,
                                  /*fail_on_custom_section_error=*/false);
  if (wabt::Failed(
          wabt::ReadBinaryIr(name.c_str(), bytes.data(), bytes.size(), options, &errors, &ir))) {
    return refuse(name,
                  "cannot be read for the compiled tier: " +
                      (errors.empty() ? std::string("unknown error") : errors.front().message));
  }
  AotPlan plan;
  const Location loc;

  // Imports: every one is a function (WasmModule::compile checked it).
  const wabt::Index num_imports = ir.num_func_imports;
  for (wabt::Index i = 0; i < ir.imports.size(); ++i) {
    wabt::Import* import = ir.imports[i];
    auto* func_import = wabt::dyn_cast<wabt::FuncImport>(import);
    if (!func_import) return refuse(name, "imports something other than a function");
    AotImport out;
    out.module = import->module_name;
    out.name = import->field_name;
    if (!to_func_sig(func_import->func.decl.sig, &out.sig)) {
      return refuse(name, "import \"" + out.module + "\".\"" + out.name +
                              "\" has a type the compiled tier does not bind");
    }
    plan.imports.push_back(std::move(out));
    import->module_name = "witmq";
    import->field_name = "i" + std::to_string(i);
  }

  // The function exports the host may call, and the memory export, read before the exports
  // are replaced.
  for (uint32_t i = 0; i < ir.exports.size(); ++i) {
    const wabt::Export& e = *ir.exports[i];
    if (e.kind != wabt::ExternalKind::Func) continue;
    const wabt::Func* f = ir.GetFunc(e.var);
    AotExport out;
    out.export_index = i;
    out.name = e.name;
    if (!f || !to_func_sig(f->decl.sig, &out.sig)) continue;
    plan.exports.push_back(std::move(out));
  }
  wabt::Index memory_index = wabt::kInvalidIndex;
  for (const wabt::Export* e : ir.exports) {
    if (e->kind == wabt::ExternalKind::Memory && e->name == "memory") {
      memory_index = ir.GetMemoryIndex(e->var);
    }
  }
  std::vector<std::pair<wabt::Index, uint32_t>> export_funcs;  // (function index, export index)
  for (const AotExport& e : plan.exports) {
    export_funcs.emplace_back(ir.GetFuncIndex(ir.exports[e.export_index]->var), e.export_index);
  }
  wabt::Index start = wabt::kInvalidIndex;
  if (!ir.starts.empty()) start = ir.GetFuncIndex(*ir.starts.front());

  // The refuel import, "witmq"."refuel" (func), becomes function `num_imports`: the imports
  // precede the defined functions in the function index space, so every defined function moves
  // up by one.
  wabt::Index void_type = static_cast<wabt::Index>(ir.types.size());
  {
    auto field = make<wabt::TypeModuleField>(loc);
    field->type = make<wabt::FuncType>();
    ir.AppendField(std::move(field));
  }
  {
    auto import = make<wabt::FuncImport>();
    import->module_name = "witmq";
    import->field_name = "refuel";
    import->func.decl.has_func_type = true;
    import->func.decl.type_var = Var(void_type, loc);
    ir.AppendField(make<wabt::ImportModuleField>(std::move(import), loc));
    // AppendField put the import's function last; it belongs after the other imports.
    std::rotate(ir.funcs.begin() + num_imports, ir.funcs.end() - 1, ir.funcs.end());
  }
  const wabt::Index refuel = num_imports;
  auto shifted = [&](wabt::Index f) { return f >= num_imports ? f + 1 : f; };

  // The fuel global.
  const wabt::Index fuel = static_cast<wabt::Index>(ir.globals.size());
  {
    auto field = make<wabt::GlobalModuleField>(loc);
    field->global.type = wabt::Type::I64;
    field->global.mutable_ = true;
    field->global.init_expr.push_back(make<wabt::ConstExpr>(wabt::Const::I64(0)));
    ir.AppendField(std::move(field));
  }

  for (wabt::Index i = num_imports + 1; i < ir.funcs.size(); ++i) {
    wabt::Func& f = *ir.funcs[i];
    const uint64_t n = std::max<uint64_t>(straight_count(f.exprs), 1);
    instrument(f.exprs, num_imports, fuel, refuel);
    insert_charge(f.exprs, n, fuel, refuel);
  }
  for (wabt::Global* g : ir.globals) shift_refs(g->init_expr, num_imports);
  for (wabt::ElemSegment* s : ir.elem_segments) {
    for (ExprList& e : s->elem_exprs) shift_refs(e, num_imports);
  }

  for (wabt::Memory* m : ir.memories) {
    wabt::Limits& l = m->page_limits;
    l.max = std::min<uint64_t>(l.has_max ? l.max : 65536, limits.memory_pages);
    l.has_max = true;
  }
  for (wabt::Table* t : ir.tables) {
    wabt::Limits& l = t->elem_limits;
    l.max = std::min<uint64_t>(l.has_max ? l.max : std::numeric_limits<uint32_t>::max(),
                               limits.table_elements);
    l.has_max = true;
  }

  // Replace the exports (the module's own names could collide with the aliases) and the start.
  ir.exports.clear();
  for (const auto& [func, index] : export_funcs) {
    add_export(ir, "witmq_e" + std::to_string(index), wabt::ExternalKind::Func, shifted(func));
  }
  add_export(ir, "witmq_fuel", wabt::ExternalKind::Global, fuel);
  if (memory_index != wabt::kInvalidIndex) {
    add_export(ir, "witmq_memory", wabt::ExternalKind::Memory, memory_index);
    plan.has_memory = true;
  }
  if (refused_global >= 0) {
    add_export(ir, "witmq_refused", wabt::ExternalKind::Global,
               static_cast<wabt::Index>(refused_global));
    plan.has_refused = true;
  }
  if (start != wabt::kInvalidIndex) {
    if (start < num_imports) {
      return refuse(name, "the start function must be defined by the module");
    }
    ir.starts.clear();
    add_export(ir, "witmq_start", wabt::ExternalKind::Func, shifted(start));
    plan.has_start = true;
  }

  wabt::MemoryStream stream;
  wabt::WriteBinaryOptions write_options(features, /*canonicalize_lebs=*/true,
                                         /*relocatable=*/false, /*write_debug_names=*/false);
  if (wabt::Failed(wabt::WriteBinaryModule(&stream, &ir, write_options))) {
    return Error(ErrorCode::kInternal,
                 "module '" + name + "': writing the module for the compiled tier failed");
  }
  plan.bytes = std::move(stream.output_buffer().data);
  return plan;
}

}  // namespace witmq::guest
