// The load-time rewrite (see wasm_internal.h). C++17 translation unit: it includes wabt.
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
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

// Functions with at least this many locals (besides params) pay for them on entry.
constexpr wabt::Index kChargedLocals = 64;

// An instruction the rewrite replaces with a call to a helper, with the immediates that pick the
// helper: one helper per distinct (opcode, immediates).
struct Site {
  ExprType op;
  wabt::Index a = 0;  // memory.init: the data segment; table ops: the (destination) table
  wabt::Index b = 0;  // table.copy: the source table; table.init: the element segment
  bool operator<(const Site& o) const { return std::tie(op, a, b) < std::tie(o.op, o.a, o.b); }
};

// The site `e` is, if the rewrite replaces it.
std::optional<Site> site_of(const Expr& e) {
  switch (e.type()) {
    case ExprType::MemoryGrow:
    case ExprType::MemoryFill:
    case ExprType::MemoryCopy:
      return Site{e.type()};
    case ExprType::MemoryInit:
      return Site{e.type(), cast<wabt::MemoryInitExpr>(&e)->var.index()};
    case ExprType::TableFill:
      return Site{e.type(), cast<wabt::TableFillExpr>(&e)->var.index()};
    case ExprType::TableCopy: {
      const auto* c = cast<wabt::TableCopyExpr>(&e);
      return Site{e.type(), c->dst_table.index(), c->src_table.index()};
    }
    case ExprType::TableInit: {
      const auto* i = cast<wabt::TableInitExpr>(&e);
      return Site{e.type(), i->table_index.index(), i->segment_index.index()};
    }
    default:
      return std::nullopt;
  }
}

// What count() finds: the sites to replace and the number of instructions.
struct Counts {
  std::map<Site, wabt::Index> sites;  // each site's helper index, once assigned
  uint64_t instructions = 0;          // every expression, nested ones included
};

void count(const ExprList& exprs, Counts& c);

void count_block(const wabt::Block& b, Counts& c) { count(b.exprs, c); }

void count(const ExprList& exprs, Counts& c) {
  for (const Expr& e : exprs) {
    ++c.instructions;
    if (auto site = site_of(e)) c.sites.emplace(*site, wabt::kInvalidIndex);
    switch (e.type()) {
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

// Replaces every site in `exprs` (recursively) with a call to its helper.
void replace(ExprList& exprs, const std::map<Site, wabt::Index>& helpers) {
  for (auto it = exprs.begin(); it != exprs.end(); ++it) {
    switch (it->type()) {
      case ExprType::Block:
        replace(cast<wabt::BlockExpr>(&*it)->block.exprs, helpers);
        break;
      case ExprType::Loop:
        replace(cast<wabt::LoopExpr>(&*it)->block.exprs, helpers);
        break;
      case ExprType::If: {
        auto* if_expr = cast<wabt::IfExpr>(&*it);
        replace(if_expr->true_.exprs, helpers);
        replace(if_expr->false_, helpers);
        break;
      }
      case ExprType::Try: {
        auto* try_expr = cast<wabt::TryExpr>(&*it);
        replace(try_expr->block.exprs, helpers);
        for (auto& c : try_expr->catches) replace(c.exprs, helpers);
        break;
      }
      default:
        break;
    }
    if (auto site = site_of(*it)) {
      auto call = std::make_unique<wabt::CallExpr>(Var(helpers.at(*site), it->loc), it->loc);
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

// Appends to `body`
//   (local.set $k (i32.shr_u (local.get $n) (i32.const SHIFT)))
//   (block $done (loop $spin
//     (br_if $done (i32.eqz (local.get $k)))
//     (local.set $k (i32.sub (local.get $k) (i32.const 1)))
//     (br $spin)))
// which makes the budget pay about 7 steps per 2^SHIFT units of $n.
void append_spin(ExprList& body, wabt::Index n, wabt::Index k, uint32_t shift) {
  const Location loc;
  append<wabt::LocalGetExpr>(body, Var(n, loc));
  append<wabt::ConstExpr>(body, wabt::Const::I32(shift));
  append<wabt::BinaryExpr>(body, wabt::Opcode::I32ShrU);
  append<wabt::LocalSetExpr>(body, Var(k, loc));
  auto block = std::make_unique<wabt::BlockExpr>(loc);
  auto loop = std::make_unique<wabt::LoopExpr>(loc);
  ExprList& spin = loop->block.exprs;
  append<wabt::LocalGetExpr>(spin, Var(k, loc));
  append<wabt::ConvertExpr>(spin, wabt::Opcode::I32Eqz);
  append<wabt::BrIfExpr>(spin, Var(1, loc));  // depth 1: out of the block
  append<wabt::LocalGetExpr>(spin, Var(k, loc));
  append<wabt::ConstExpr>(spin, wabt::Const::I32(1));
  append<wabt::BinaryExpr>(spin, wabt::Opcode::I32Sub);
  append<wabt::LocalSetExpr>(spin, Var(k, loc));
  append<wabt::BrExpr>(spin, Var(0, loc));  // depth 0: the loop again
  block->block.exprs.push_back(std::move(loop));
  body.push_back(std::move(block));
}

// (func (param $a i32) (param $b T) (param $n i32) (local $k i32)
//   SPIN($n, SHIFT)
//   (OP (local.get $a) (local.get $b) (local.get $n)))
// where OP is the bulk instruction of `site` (every one takes its length last): the spin charges
// the budget for the length, about 7 steps per 2^SHIFT bytes or elements. T is i32, or the
// table's reference type for table.fill.
void append_charged_bulk_op(wabt::Module& ir, wabt::Index type_index, const Site& site,
                            wabt::Type second, uint32_t shift) {
  const Location loc;
  const wabt::TypeVector params = {wabt::Type::I32, second, wabt::Type::I32};
  auto field = new_func(type_index, params, {}, {wabt::Type::I32});
  ExprList& body = field->func.exprs;
  append_spin(body, 2, 3, shift);
  append<wabt::LocalGetExpr>(body, Var(0, loc));
  append<wabt::LocalGetExpr>(body, Var(1, loc));
  append<wabt::LocalGetExpr>(body, Var(2, loc));
  switch (site.op) {
    case ExprType::MemoryFill:
      append<wabt::MemoryFillExpr>(body, Var(0, loc));
      break;
    case ExprType::MemoryCopy:
      append<wabt::MemoryCopyExpr>(body, Var(0, loc), Var(0, loc));
      break;
    case ExprType::MemoryInit:
      append<wabt::MemoryInitExpr>(body, Var(site.a, loc), Var(0, loc));
      break;
    case ExprType::TableFill:
      append<wabt::TableFillExpr>(body, Var(site.a, loc));
      break;
    case ExprType::TableCopy:
      append<wabt::TableCopyExpr>(body, Var(site.a, loc), Var(site.b, loc));
      break;
    case ExprType::TableInit:
      append<wabt::TableInitExpr>(body, Var(site.b, loc), Var(site.a, loc));
      break;
    default:
      break;
  }
  ir.AppendField(std::move(field));
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
  bool charge_locals = false;
  for (const wabt::Func* func : ir.funcs) {
    Counts c;
    count(func->exprs, c);
    // A charged function gains two instructions (below).
    const bool charged = func->GetNumLocals() >= kChargedLocals;
    charge_locals |= charged;
    const uint64_t frame = uint64_t{func->GetNumParams()} + func->GetNumLocals() +
                           (c.instructions + (charged ? 2 : 0)) * widest;
    out.max_frame_values = std::max(out.max_frame_values, frame);
    total.sites.insert(c.sites.begin(), c.sites.end());
  }
  if (total.sites.empty() && !charge_locals) return out;

  // Helpers are appended in the order of the sites, then the locals charge, so the n-th
  // site's helper is function first_helper + n.
  wabt::Index next = static_cast<wabt::Index>(ir.funcs.size());
  for (auto& [site, helper] : total.sites) helper = next++;
  const wabt::Index locals_helper = charge_locals ? next++ : wabt::kInvalidIndex;
  const Location loc;
  for (wabt::Func* func : ir.funcs) {
    replace(func->exprs, total.sites);
    if (func->GetNumLocals() >= kChargedLocals) {
      // The interpreter zeroes a function's locals in one step on entry: the function first
      // pays for them, (call $charge (i32.const LOCALS)).
      auto call = std::make_unique<wabt::CallExpr>(Var(locals_helper, loc), loc);
      func->exprs.insert(func->exprs.begin(), std::move(call));
      auto count = std::make_unique<wabt::ConstExpr>(wabt::Const::I32(func->GetNumLocals()));
      func->exprs.insert(func->exprs.begin(), std::move(count));
    }
  }

  wabt::Index i32x3_type = wabt::kInvalidIndex;
  for (const auto& [site, helper] : total.sites) {
    if (site.op == ExprType::MemoryGrow) {
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
      continue;
    }
    // Memory operations are charged per 64 bytes, table operations per 8 elements (a
    // reference is 8 bytes, and the interpreter also tracks each one it stores).
    const bool table_op = site.op == ExprType::TableFill || site.op == ExprType::TableCopy ||
                          site.op == ExprType::TableInit;
    const uint32_t shift = table_op ? 3 : 6;
    if (site.op == ExprType::TableFill) {
      const wabt::Table* table = ir.GetTable(Var(site.a, loc));
      const wabt::Type ref = table ? table->elem_type : wabt::Type(wabt::Type::FuncRef);
      const wabt::Index type_index = append_type(ir, {wabt::Type::I32, ref, wabt::Type::I32}, {});
      append_charged_bulk_op(ir, type_index, site, ref, shift);
      continue;
    }
    if (i32x3_type == wabt::kInvalidIndex) {
      i32x3_type = append_type(ir, {wabt::Type::I32, wabt::Type::I32, wabt::Type::I32}, {});
    }
    append_charged_bulk_op(ir, i32x3_type, site, wabt::Type::I32, shift);
  }

  if (charge_locals) {
    // (func (param $n i32) (local $k i32) SPIN($n, 3)): about one step per local.
    const wabt::Index type_index = append_type(ir, {wabt::Type::I32}, {});
    auto field = new_func(type_index, {wabt::Type::I32}, {}, {wabt::Type::I32});
    append_spin(field->func.exprs, 0, 1, 3);
    ir.AppendField(std::move(field));
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
