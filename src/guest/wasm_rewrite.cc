// The load-time rewrite (see wasm_internal.h). C++17 translation unit: it includes wabt.
#include <algorithm>
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

// Helper functions the rewrite calls instead of an instruction, by the instruction they replace.
struct Helpers {
  wabt::Index grow = wabt::kInvalidIndex;
  wabt::Index fill = wabt::kInvalidIndex;
  wabt::Index copy = wabt::kInvalidIndex;
};

// Counts what replace() would replace, by kind.
struct Counts {
  size_t grow = 0, fill = 0, copy = 0;
  uint64_t instructions = 0;  // every expression, nested ones included
};

void count(const ExprList& exprs, Counts& c);

void count_block(const wabt::Block& b, Counts& c) { count(b.exprs, c); }

void count(const ExprList& exprs, Counts& c) {
  for (const Expr& e : exprs) {
    ++c.instructions;
    switch (e.type()) {
      case ExprType::MemoryGrow:
        ++c.grow;
        break;
      case ExprType::MemoryFill:
        ++c.fill;
        break;
      case ExprType::MemoryCopy:
        ++c.copy;
        break;
      case ExprType::Block:
        count_block(cast<wabt::BlockExpr>(&e)->block, c);
        break;
      case ExprType::Loop:
        count_block(cast<wabt::LoopExpr>(&e)->block, c);
        break;
      case ExprType::If: {
        const auto* if_expr = cast<wabt::IfExpr>(&e);
        count_block(if_expr->true_, c);
        count(if_expr->false_, c);
        break;
      }
      case ExprType::Try: {
        const auto* try_expr = cast<wabt::TryExpr>(&e);
        count_block(try_expr->block, c);
        for (const auto& k : try_expr->catches) count(k.exprs, c);
        break;
      }
      default:
        break;
    }
  }
}

// Replaces every memory.grow / memory.fill / memory.copy in `exprs` (recursively) with a call to
// its helper.
void replace(ExprList& exprs, const Helpers& h) {
  for (auto it = exprs.begin(); it != exprs.end(); ++it) {
    wabt::Index helper = wabt::kInvalidIndex;
    switch (it->type()) {
      case ExprType::MemoryGrow:
        helper = h.grow;
        break;
      case ExprType::MemoryFill:
        helper = h.fill;
        break;
      case ExprType::MemoryCopy:
        helper = h.copy;
        break;
      case ExprType::Block:
        replace(cast<wabt::BlockExpr>(&*it)->block.exprs, h);
        break;
      case ExprType::Loop:
        replace(cast<wabt::LoopExpr>(&*it)->block.exprs, h);
        break;
      case ExprType::If: {
        auto* if_expr = cast<wabt::IfExpr>(&*it);
        replace(if_expr->true_.exprs, h);
        replace(if_expr->false_, h);
        break;
      }
      case ExprType::Try: {
        auto* try_expr = cast<wabt::TryExpr>(&*it);
        replace(try_expr->block.exprs, h);
        for (auto& c : try_expr->catches) replace(c.exprs, h);
        break;
      }
      default:
        break;
    }
    if (helper != wabt::kInvalidIndex) {
      auto call = std::make_unique<wabt::CallExpr>(Var(helper, it->loc), it->loc);
      it = exprs.erase(it);
      it = exprs.insert(it, std::move(call));
    }
  }
}

template <typename T, typename... Args>
void append(ExprList& list, Args&&... args) {
  list.push_back(std::make_unique<T>(std::forward<Args>(args)...));
}

// Appends a function type and returns its index.
wabt::Index append_type(wabt::Module& ir, wabt::TypeVector params, wabt::TypeVector results) {
  const wabt::Index index = static_cast<wabt::Index>(ir.types.size());
  auto field = std::make_unique<wabt::TypeModuleField>(Location());
  auto type = std::make_unique<wabt::FuncType>();
  type->sig.param_types = std::move(params);
  type->sig.result_types = std::move(results);
  field->type = std::move(type);
  ir.AppendField(std::move(field));
  return index;
}

// Starts a function of type `type_index` (params/results as given); the caller fills `exprs`.
std::unique_ptr<wabt::FuncModuleField> new_func(wabt::Index type_index, wabt::TypeVector params,
                                                wabt::TypeVector results, wabt::TypeVector locals) {
  const Location loc;
  auto field = std::make_unique<wabt::FuncModuleField>(loc);
  wabt::Func& f = field->func;
  f.decl.has_func_type = true;
  f.decl.type_var = Var(type_index, loc);
  f.decl.sig.param_types = std::move(params);
  f.decl.sig.result_types = std::move(results);
  f.local_types.Set(locals);
  return field;
}

// (func (param $a i32) (param $b i32) (param $n i32) (local $k i32)
//   (local.set $k (i32.shr_u (local.get $n) (i32.const 6)))
//   (block $done (loop $spin
//     (br_if $done (i32.eqz (local.get $k)))
//     (local.set $k (i32.sub (local.get $k) (i32.const 1)))
//     (br $spin)))
//   (OP (local.get $a) (local.get $b) (local.get $n)))
// where OP is memory.fill or memory.copy: the loop charges the budget for the length.
wabt::Index append_charged_bulk_op(wabt::Module& ir, wabt::Index type_index, ExprType op) {
  const Location loc;
  const wabt::Index index = static_cast<wabt::Index>(ir.funcs.size());
  const wabt::TypeVector i32x3 = {wabt::Type::I32, wabt::Type::I32, wabt::Type::I32};
  auto field = new_func(type_index, i32x3, {}, {wabt::Type::I32});
  ExprList& body = field->func.exprs;
  append<wabt::LocalGetExpr>(body, Var(2, loc));
  append<wabt::ConstExpr>(body, wabt::Const::I32(6));
  append<wabt::BinaryExpr>(body, wabt::Opcode::I32ShrU);
  append<wabt::LocalSetExpr>(body, Var(3, loc));
  auto block = std::make_unique<wabt::BlockExpr>(loc);
  auto loop = std::make_unique<wabt::LoopExpr>(loc);
  ExprList& spin = loop->block.exprs;
  append<wabt::LocalGetExpr>(spin, Var(3, loc));
  append<wabt::ConvertExpr>(spin, wabt::Opcode::I32Eqz);
  append<wabt::BrIfExpr>(spin, Var(1, loc));  // depth 1: out of the block
  append<wabt::LocalGetExpr>(spin, Var(3, loc));
  append<wabt::ConstExpr>(spin, wabt::Const::I32(1));
  append<wabt::BinaryExpr>(spin, wabt::Opcode::I32Sub);
  append<wabt::LocalSetExpr>(spin, Var(3, loc));
  append<wabt::BrExpr>(spin, Var(0, loc));  // depth 0: the loop again
  block->block.exprs.push_back(std::move(loop));
  body.push_back(std::move(block));
  append<wabt::LocalGetExpr>(body, Var(0, loc));
  append<wabt::LocalGetExpr>(body, Var(1, loc));
  append<wabt::LocalGetExpr>(body, Var(2, loc));
  if (op == ExprType::MemoryFill) {
    append<wabt::MemoryFillExpr>(body, Var(0, loc));
  } else {
    append<wabt::MemoryCopyExpr>(body, Var(0, loc), Var(0, loc));
  }
  ir.AppendField(std::move(field));
  return index;
}

}  // namespace

Result<ModuleRewrite> rewrite_module(const std::string& name, const std::vector<uint8_t>& bytes) {
  wabt::Module ir;
  wabt::Errors errors;
  const wabt::Features features;
  wabt::ReadBinaryOptions options(features, nullptr, /*read_debug_names=*/false,
                                  /*stop_on_first_error=*/true,
                                  /*fail_on_custom_section_error=*/false);
  if (wabt::Failed(
          wabt::ReadBinaryIr(name.c_str(), bytes.data(), bytes.size(), options, &errors, &ir))) {
    return Error(ErrorCode::kInvalidArgument,
                 "module '" + name + "': cannot be read for the load-time rewrite: " +
                     (errors.empty() ? std::string("unknown error") : errors.front().message));
  }

  ModuleRewrite out;
  // The widest push one instruction can make: a call or block returning many values.
  uint64_t widest = 1;
  for (const wabt::TypeEntry* t : ir.types) {
    if (const auto* ft = wabt::dyn_cast<wabt::FuncType>(t)) {
      widest = std::max<uint64_t>(widest, ft->sig.result_types.size());
      widest = std::max<uint64_t>(widest, ft->sig.param_types.size());
    }
  }
  Counts total;
  for (const wabt::Func* func : ir.funcs) {
    Counts c;
    count(func->exprs, c);
    const uint64_t frame =
        uint64_t{func->GetNumParams()} + func->GetNumLocals() + c.instructions * widest;
    out.max_frame_values = std::max(out.max_frame_values, frame);
    total.grow += c.grow;
    total.fill += c.fill;
    total.copy += c.copy;
  }
  if (total.grow + total.fill + total.copy == 0) return out;

  const Location loc;
  Helpers helpers;
  const wabt::Index first_helper = static_cast<wabt::Index>(ir.funcs.size());
  wabt::Index next = first_helper;
  if (total.grow) helpers.grow = next++;
  if (total.fill) helpers.fill = next++;
  if (total.copy) helpers.copy = next++;
  for (wabt::Func* func : ir.funcs) replace(func->exprs, helpers);

  if (total.grow) {
    const wabt::Index type_index = append_type(ir, {wabt::Type::I32}, {wabt::Type::I32});
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
    auto field = new_func(type_index, {wabt::Type::I32}, {wabt::Type::I32}, {wabt::Type::I32});
    ExprList& body = field->func.exprs;
    append<wabt::LocalGetExpr>(body, Var(0, loc));
    append<wabt::MemoryGrowExpr>(body, Var(0, loc));
    append<wabt::LocalTeeExpr>(body, Var(1, loc));
    append<wabt::ConstExpr>(body, wabt::Const::I32(0xffffffffu));
    append<wabt::CompareExpr>(body, wabt::Opcode::I32Ne);
    auto if_expr = std::make_unique<wabt::IfExpr>(loc);
    append<wabt::LocalGetExpr>(if_expr->true_.exprs, Var(1, loc));
    append<wabt::ReturnExpr>(if_expr->true_.exprs);
    body.push_back(std::move(if_expr));
    append<wabt::LocalGetExpr>(body, Var(0, loc));
    append<wabt::GlobalSetExpr>(body, Var(global_index, loc));
    append<wabt::UnreachableExpr>(body);
    ir.AppendField(std::move(field));
    out.refused_global = static_cast<int>(global_index);
  }
  if (total.fill || total.copy) {
    const wabt::Index type_index =
        append_type(ir, {wabt::Type::I32, wabt::Type::I32, wabt::Type::I32}, {});
    if (total.fill) append_charged_bulk_op(ir, type_index, ExprType::MemoryFill);
    if (total.copy) append_charged_bulk_op(ir, type_index, ExprType::MemoryCopy);
  }

  wabt::MemoryStream stream;
  wabt::WriteBinaryOptions write_options(features, /*canonicalize_lebs=*/true,
                                         /*relocatable=*/false, /*write_debug_names=*/false);
  if (wabt::Failed(wabt::WriteBinaryModule(&stream, &ir, write_options))) {
    return Error(ErrorCode::kInternal,
                 "module '" + name + "': writing the load-time rewrite failed");
  }
  out.rewritten = true;
  out.bytes = std::move(stream.output_buffer().data);
  return out;
}

}  // namespace witmq::guest
