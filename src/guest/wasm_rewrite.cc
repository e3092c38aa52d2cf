// The memory.grow guard (see wasm_internal.h). C++17 translation unit: it includes wabt.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "guest/wasm_internal.h"
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

// Replaces every memory.grow in `exprs` (recursively) with `call helper`; returns how many.
size_t replace_grows(ExprList& exprs, wabt::Index helper) {
  size_t replaced = 0;
  for (auto it = exprs.begin(); it != exprs.end(); ++it) {
    switch (it->type()) {
      case ExprType::MemoryGrow: {
        auto call = std::make_unique<wabt::CallExpr>(Var(helper, it->loc), it->loc);
        it = exprs.erase(it);
        it = exprs.insert(it, std::move(call));
        ++replaced;
        break;
      }
      case ExprType::Block:
        replaced += replace_grows(cast<wabt::BlockExpr>(&*it)->block.exprs, helper);
        break;
      case ExprType::Loop:
        replaced += replace_grows(cast<wabt::LoopExpr>(&*it)->block.exprs, helper);
        break;
      case ExprType::If: {
        auto* if_expr = cast<wabt::IfExpr>(&*it);
        replaced += replace_grows(if_expr->true_.exprs, helper);
        replaced += replace_grows(if_expr->false_, helper);
        break;
      }
      case ExprType::Try: {
        auto* try_expr = cast<wabt::TryExpr>(&*it);
        replaced += replace_grows(try_expr->block.exprs, helper);
        for (auto& c : try_expr->catches) replaced += replace_grows(c.exprs, helper);
        break;
      }
      default:
        break;
    }
  }
  return replaced;
}

template <typename T, typename... Args>
void append(ExprList& list, Args&&... args) {
  list.push_back(std::make_unique<T>(std::forward<Args>(args)...));
}

}  // namespace

Result<GrowGuard> guard_memory_grow(const std::string& name, const std::vector<uint8_t>& bytes) {
  wabt::Module ir;
  wabt::Errors errors;
  const wabt::Features features;
  wabt::ReadBinaryOptions options(features, nullptr, /*read_debug_names=*/false,
                                  /*stop_on_first_error=*/true,
                                  /*fail_on_custom_section_error=*/false);
  if (wabt::Failed(
          wabt::ReadBinaryIr(name.c_str(), bytes.data(), bytes.size(), options, &errors, &ir))) {
    return Error(ErrorCode::kInvalidArgument,
                 "module '" + name + "': cannot be read for the memory.grow guard: " +
                     (errors.empty() ? std::string("unknown error") : errors.front().message));
  }

  const wabt::Index helper_index = static_cast<wabt::Index>(ir.funcs.size());
  size_t replaced = 0;
  for (wabt::Func* func : ir.funcs) replaced += replace_grows(func->exprs, helper_index);
  GrowGuard guard;
  if (replaced == 0) return guard;

  const Location loc;
  // Type (func (param i32) (result i32)).
  const wabt::Index type_index = static_cast<wabt::Index>(ir.types.size());
  {
    auto field = std::make_unique<wabt::TypeModuleField>(loc);
    auto type = std::make_unique<wabt::FuncType>();
    type->sig.param_types = {wabt::Type::I32};
    type->sig.result_types = {wabt::Type::I32};
    field->type = std::move(type);
    ir.AppendField(std::move(field));
  }
  // (global (mut i32) (i32.const 0)): the refused delta.
  const wabt::Index global_index = static_cast<wabt::Index>(ir.globals.size());
  {
    auto field = std::make_unique<wabt::GlobalModuleField>(loc);
    field->global.type = wabt::Type::I32;
    field->global.mutable_ = true;
    append<wabt::ConstExpr>(field->global.init_expr, wabt::Const::I32(0));
    ir.AppendField(std::move(field));
  }
  // (func (param $delta i32) (result i32) (local $old i32)
  //   (if (i32.ne (local.tee $old (memory.grow (local.get $delta))) (i32.const -1))
  //     (then (return (local.get $old))))
  //   (global.set $refused (local.get $delta))
  //   unreachable)
  {
    auto field = std::make_unique<wabt::FuncModuleField>(loc);
    wabt::Func& f = field->func;
    f.decl.has_func_type = true;
    f.decl.type_var = Var(type_index, loc);
    f.decl.sig.param_types = {wabt::Type::I32};
    f.decl.sig.result_types = {wabt::Type::I32};
    f.local_types.Set({wabt::Type::I32});
    append<wabt::LocalGetExpr>(f.exprs, Var(0, loc));
    append<wabt::MemoryGrowExpr>(f.exprs, Var(0, loc));
    append<wabt::LocalTeeExpr>(f.exprs, Var(1, loc));
    append<wabt::ConstExpr>(f.exprs, wabt::Const::I32(0xffffffffu));
    append<wabt::CompareExpr>(f.exprs, wabt::Opcode::I32Ne);
    auto if_expr = std::make_unique<wabt::IfExpr>(loc);
    append<wabt::LocalGetExpr>(if_expr->true_.exprs, Var(1, loc));
    append<wabt::ReturnExpr>(if_expr->true_.exprs);
    f.exprs.push_back(std::move(if_expr));
    append<wabt::LocalGetExpr>(f.exprs, Var(0, loc));
    append<wabt::GlobalSetExpr>(f.exprs, Var(global_index, loc));
    append<wabt::UnreachableExpr>(f.exprs);
    ir.AppendField(std::move(field));
  }

  wabt::MemoryStream stream;
  wabt::WriteBinaryOptions write_options(features, /*canonicalize_lebs=*/true,
                                         /*relocatable=*/false, /*write_debug_names=*/false);
  if (wabt::Failed(wabt::WriteBinaryModule(&stream, &ir, write_options))) {
    return Error(ErrorCode::kInternal,
                 "module '" + name + "': writing the memory.grow guard failed");
  }
  guard.rewritten = true;
  guard.bytes = std::move(stream.output_buffer().data);
  guard.refused_global = global_index;
  return guard;
}

}  // namespace witmq::guest
