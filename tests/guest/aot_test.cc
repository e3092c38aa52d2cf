// The two tiers (docs/GUESTS.md "Two tiers"): the same guests run in wabt's interpreter and in the
// ahead-of-time tier (src/guest/aot_runtime.h) must hit the same limits the same way, and the
// compiled tier's cache must hold only what it built.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "guest/aot_module.h"
#include "guest/aot_runtime.h"
#include "guest/guest_fixture.h"
#include "guest/guest_instance.h"
#include "guest/test_wasm.h"

namespace witmq::guest {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::eventually;
using testing::text_message;
using testing::wasm_path;

// One cache for the parameterised tests, kept between runs (that is what it is for); the cache
// tests below use fresh directories.
std::string shared_cache() {
  return (fs::temp_directory_path() / ("witmq-aot-test-cache-" + std::to_string(geteuid())))
      .string();
}

EngineOptions engine_options(Engine engine, std::string cache_dir = shared_cache()) {
  EngineOptions e;
  e.engine = engine;
  e.cache_dir = std::move(cache_dir);
  return e;
}

WasmLimits small_limits() {
  WasmLimits l;
  l.instruction_budget = 1'000'000;
  l.memory_pages = 16;
  return l;
}

std::vector<Message> batch_of(int n) {
  std::vector<Message> batch;
  for (int i = 0; i < n; ++i) batch.push_back(text_message("m" + std::to_string(i)));
  return batch;
}

std::string tier_name(const ::testing::TestParamInfo<Engine>& info) {
  return engine_name(info.param);
}

class BothTiers : public ::testing::TestWithParam<Engine> {
 protected:
  std::unique_ptr<GuestInstance> instance_of(const std::string& stem,
                                             const WasmLimits& limits = small_limits()) {
    auto m = load_guest_module(wasm_path(stem), limits, engine_options(GetParam()));
    EXPECT_TRUE(m.ok()) << m.error().message;
    if (!m.ok()) return nullptr;
    EXPECT_EQ((*m)->engine(), GetParam());
    InstanceContext ctx;
    ctx.guest_name = stem;
    auto g = GuestInstance::create(*m, ctx);
    EXPECT_TRUE(g.ok()) << g.error().message;
    return g.ok() ? std::move(g).value() : nullptr;
  }
};

TEST_P(BothTiers, AGuestConfiguresAndHandlesBatches) {
  auto g = instance_of("ok_guest");
  ASSERT_TRUE(g);
  GuestConfiguration gc;
  ASSERT_TRUE(g->configure(&gc).returned_ok());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(g->handle(batch_of(5)).returned_ok());
  EXPECT_TRUE(g->usable());
}

TEST_P(BothTiers, TheInstructionBudgetStopsAnEndlessLoop) {
  auto g = instance_of("loop_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
  EXPECT_NE(r.message.find("instruction budget of 1000000 exhausted"), std::string::npos)
      << r.message;
  EXPECT_FALSE(g->usable());
  EXPECT_EQ(g->handle(batch_of(1)).status, CallStatus::kTrap);  // spent: replaced, not reused
}

TEST_P(BothTiers, NestedCallsShareTheBudgetOfTheCallTheyAreIn) {
  auto g = instance_of("nested_budget_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(2));
  ASSERT_TRUE(r.returned_ok()) << r.message;
  r = g->handle(batch_of(10));
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
}

TEST_P(BothTiers, BulkMemoryIsChargedByLength) {
  WasmLimits l = small_limits();
  l.memory_pages = 256;
  auto g = instance_of("fill_guest", l);
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  ASSERT_TRUE(r.returned_ok()) << r.message;
  r = g->handle(batch_of(2));
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
}

TEST_P(BothTiers, HostCopyingIsChargedToTheBudget) {
  auto flood = instance_of("copy_flood_guest");
  ASSERT_TRUE(flood);
  CallReport r = flood->handle(batch_of(2));
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
  EXPECT_NE(r.message.find("exhausted by the host copying guest data"), std::string::npos)
      << r.message;
}

TEST_P(BothTiers, TheWallTimeLimitStopsALoopTheBudgetWouldAllow) {
  WasmLimits l = small_limits();
  l.instruction_budget = uint64_t{1} << 62;
  l.call_time_limit = 200ms;
  auto g = instance_of("loop_guest", l);
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTimeLimit) << r.message;
}

TEST_P(BothTiers, GrowingPastTheMemoryLimitFailsTheCall) {
  auto g = instance_of("grow_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kMemoryLimit) << r.message;
  EXPECT_NE(r.message.find("exceeds the memory limit of 16 pages"), std::string::npos) << r.message;
  EXPECT_LE(g->memory_pages(), 16u);
}

TEST_P(BothTiers, ATrapFailsTheCallAndSpendsTheInstance) {
  auto g = instance_of("trap_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap) << r.message;
  EXPECT_NE(r.message.find("unreachable"), std::string::npos) << r.message;
  EXPECT_FALSE(g->usable());
  auto fresh = instance_of("trap_guest");  // a new instance of the same module starts clean
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(fresh->usable());
}

TEST_P(BothTiers, AnOutOfBoundsAccessTraps) {
  auto g = instance_of("oob_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap) << r.message;
  EXPECT_NE(r.message.find("out of bounds"), std::string::npos) << r.message;
}

TEST_P(BothTiers, EndlessRecursionStopsAtTheCallDepthLimit) {
  auto g = instance_of("recursion_guest");
  ASSERT_TRUE(g);
  EXPECT_GE(g->wasm().call_depth_limit(), kMinCallDepth);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap) << r.message;
  EXPECT_NE(r.message.find("exhausted"), std::string::npos) << r.message;
}

TEST_P(BothTiers, ManyLocalsArePaidForOnEachCall) {
  auto g = instance_of("many_locals_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  ASSERT_TRUE(r.returned_ok()) << r.message;
  r = g->handle(batch_of(2));
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
}

TEST_P(BothTiers, StartFunctionAndInitializeMayCallImports) {
  auto g = instance_of("init_import_guest");
  ASSERT_TRUE(g);
  uint32_t v;
  std::memcpy(&v, g->wasm().memory_data() + 3000, 4);
  EXPECT_EQ(v, 2u);
  EXPECT_TRUE(g->handle(batch_of(1)).returned_ok());
}

TEST_P(BothTiers, WasiCallsReachTheSandbox) {
  auto m =
      load_guest_module(wasm_path("wasi_probe_guest"), small_limits(), engine_options(GetParam()));
  ASSERT_TRUE(m.ok()) << m.error().message;
  std::vector<std::string> lines;
  std::mutex mu;
  InstanceContext ctx;
  ctx.guest_name = "probe";
  ctx.output = std::make_shared<GuestOutput>("probe", [&](bool, std::string_view line) {
    std::lock_guard lock(mu);
    lines.emplace_back(line);
  });
  auto g = GuestInstance::create(*m, std::move(ctx));
  ASSERT_TRUE(g.ok()) << g.error().message;
  WasmInstance& w = (*g)->wasm();
  // random_get(8192, 32): 32 random bytes, errno 0.
  std::vector<RawValue> out;
  ASSERT_TRUE(w.call(w.find_export("w_random_get"), {8192, 32}, &out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], 0u);
  // clock_time_get(realtime, precision 1, 8300): now, in ns.
  ASSERT_TRUE(w.call(w.find_export("w_clock_time_get"), {0, 8300}, &out).ok());
  EXPECT_EQ(out[0], 0u);
  uint64_t ns;
  std::memcpy(&ns, w.memory_data() + 8300, 8);
  EXPECT_GT(ns, uint64_t{1'600'000'000} * 1'000'000'000);
  // fd_write(1, iovec at 8400 -> "hi\n" at 8500, 1, nwritten at 8600): a line of output.
  const uint32_t iov[2] = {8500, 3};
  std::memcpy(w.memory_data() + 8400, iov, 8);
  std::memcpy(w.memory_data() + 8500, "hi\n", 3);
  ASSERT_TRUE(w.call(w.find_export("w_fd_write"), {1, 8400, 1, 8600}, &out).ok());
  EXPECT_EQ(out[0], 0u);
  std::lock_guard lock(mu);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "guest 'probe' stdout: hi");
}

TEST(AotLoad, TwoCompiledModulesLoadedTogetherEachRunTheirOwnCode) {
  // The loader knows a library by its path; the compiled modules are loaded from memory files,
  // whose paths (/proc/self/fd/N) repeat once a file is closed.
  auto ok = load_guest_module(wasm_path("ok_guest"), small_limits(), engine_options(Engine::kAot));
  auto trap =
      load_guest_module(wasm_path("trap_guest"), small_limits(), engine_options(Engine::kAot));
  ASSERT_TRUE(ok.ok() && trap.ok());
  InstanceContext ctx;
  ctx.guest_name = "two";
  auto g_ok = GuestInstance::create(*ok, ctx);
  auto g_trap = GuestInstance::create(*trap, ctx);
  ASSERT_TRUE(g_ok.ok() && g_trap.ok());
  EXPECT_EQ((*g_trap)->handle(batch_of(1)).status, CallStatus::kTrap);
  EXPECT_TRUE((*g_ok)->handle(batch_of(1)).returned_ok());
}

INSTANTIATE_TEST_SUITE_P(Tiers, BothTiers, ::testing::Values(Engine::kInterp, Engine::kAot),
                         tier_name);

// ---- End to end on a broker: per-guest metrics and the failed batch --------------------------

class BothTiersOnABroker : public testing::GuestHostTest,
                           public ::testing::WithParamInterface<Engine> {
 protected:
  GuestOptions tier_options(const std::string& name, const std::string& stem) {
    GuestOptions o = options(name, stem);
    o.engine = GetParam();
    o.compile_cache_dir = shared_cache();
    return o;
  }
};

TEST_P(BothTiersOnABroker, MetricsCountHandledMessagesAndBudgetExhaustions) {
  GuestHost* ok = start(tier_options("ok", "ok_guest"));
  ASSERT_TRUE(ok);
  send("guest.in", batch_of(20));
  ASSERT_TRUE(eventually([&] { return ok->stats().completed == 20; })) << ok->stats().completed;
  EXPECT_EQ(ok->stats().messages_handled, 20u);
  EXPECT_EQ(ok->stats().traps, 0u);
}

TEST_P(BothTiersOnABroker, ALoopingGuestFailsItsBatchesNotTheHost) {
  GuestHost* h = start(tier_options("looper", "loop_guest"));
  ASSERT_TRUE(h);
  send("guest.in", batch_of(1));
  // max-deliveries 3: three attempts, each stopped by the budget, then a dead letter.
  auto dead = dead_letters(1);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_GE(h->stats().budget_exhaustions, 3u);
  EXPECT_GE(h->stats().instantiations, 4u);  // the first and one per failed attempt
  EXPECT_EQ(h->stats().instances_running, 1u);
}

TEST_P(BothTiersOnABroker, AnOutOfBoundsGuestFailsItsBatchesNotTheHost) {
  GuestHost* h = start(tier_options("oob", "oob_guest"));
  ASSERT_TRUE(h);
  send("guest.in", batch_of(1));
  auto dead = dead_letters(1);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_GE(h->stats().traps, 3u);
}

TEST_P(BothTiersOnABroker, ACGuestBuiltWithWasiLibcRunsAndPrints) {
#ifndef WITMQ_EXAMPLE_GUESTS_BUILT
  GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
  GuestOptions o = tier_options("wasi-c", "wasi_guest");
  o.env = {{"GREETING", "hello from env"}};
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("wasi.in", {text_message("one"), text_message("two")});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("wasi.out", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return got.size() >= 2;
  }));
  EXPECT_EQ(testing::text_of(got[0]), "one");
  for (const char* key : {"time-ok", "entropy-ok", "slept", "greeting"}) {
    const std::string* v = find_metadata(got[0], key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(*v, std::string(key) == "greeting" ? "hello from env" : "1") << key;
  }
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_TRUE(logged("guest 'wasi-c' stdout: batch 1 of "));
  EXPECT_TRUE(logged("guest 'wasi-c' stderr: to stderr"));
  EXPECT_EQ(h->stats().traps, 0u);
}

INSTANTIATE_TEST_SUITE_P(Tiers, BothTiersOnABroker,
                         ::testing::Values(Engine::kInterp, Engine::kAot), tier_name);

// ---- The compiled tier's cache ----------------------------------------------------------------

class AotCache : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("witmq-aot-cache-" + std::to_string(getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The plan of a test guest, as WasmModule::compile makes it (no rewrite needed for these).
  AotPlan plan_of(const std::string& stem) {
    std::ifstream in(wasm_path(stem), std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    auto plan = plan_aot_module(stem, bytes, -1, small_limits());
    EXPECT_TRUE(plan.ok()) << plan.error().message;
    return plan.ok() ? std::move(plan).value() : AotPlan{};
  }

  std::vector<fs::path> entries(const std::string& extension) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().extension() == extension) out.push_back(e.path());
    }
    return out;
  }

  std::string dir_;
};

TEST_F(AotCache, ASecondLoadUsesTheCompiledModuleFromTheCache) {
  const AotPlan plan = plan_of("trap_guest");
  AotLoadInfo info;
  {
    auto lib = load_aot_library("trap_guest", plan, 64, engine_options(Engine::kAot, dir_), &info);
    ASSERT_TRUE(lib.ok()) << lib.error().message;
    EXPECT_FALSE(info.from_cache);
  }
  ASSERT_EQ(entries(".so").size(), 1u);
  ASSERT_EQ(entries(".meta").size(), 1u);
  EXPECT_TRUE(entries(".tmp").empty());
  // The library was unloaded with its last user: this load reads the cache, compiles nothing.
  auto lib = load_aot_library("trap_guest", plan, 64, engine_options(Engine::kAot, dir_), &info);
  ASSERT_TRUE(lib.ok()) << lib.error().message;
  EXPECT_TRUE(info.from_cache);
  EXPECT_TRUE(info.note.empty()) << info.note;
  EXPECT_EQ(fs::status(dir_).permissions() & fs::perms::all, fs::perms::owner_all);
}

TEST_F(AotCache, ATamperedCompiledModuleIsNeverLoaded) {
  const AotPlan trap = plan_of("trap_guest");
  const AotPlan ok = plan_of("ok_guest");
  AotLoadInfo info;
  ASSERT_TRUE(
      load_aot_library("trap_guest", trap, 64, engine_options(Engine::kAot, dir_), &info).ok());
  const fs::path trap_so = entries(".so").at(0);
  ASSERT_TRUE(load_aot_library("ok_guest", ok, 64, engine_options(Engine::kAot, dir_), &info).ok());
  // Put the ok guest's (valid, loadable) code where the trapping guest's belongs.
  fs::path ok_so;
  for (const auto& p : entries(".so")) {
    if (p != trap_so) ok_so = p;
  }
  ASSERT_FALSE(ok_so.empty());
  fs::copy_file(ok_so, trap_so, fs::copy_options::overwrite_existing);

  auto module = WasmModule::compile_file(wasm_path("trap_guest"), guest_requirements(),
                                         small_limits(), engine_options(Engine::kAot, dir_));
  ASSERT_TRUE(module.ok()) << module.error().message;
  InstanceContext ctx;
  ctx.guest_name = "trap";
  auto g = GuestInstance::create(*module, ctx);
  ASSERT_TRUE(g.ok()) << g.error().message;
  // Still the trapping guest: the substituted code was refused and the module compiled again.
  EXPECT_EQ((*g)->handle(batch_of(1)).status, CallStatus::kTrap);
}

TEST_F(AotCache, AGarbledEntryIsReplaced) {
  const AotPlan plan = plan_of("ok_guest");
  AotLoadInfo info;
  ASSERT_TRUE(
      load_aot_library("ok_guest", plan, 64, engine_options(Engine::kAot, dir_), &info).ok());
  const fs::path so = entries(".so").at(0);
  std::ofstream(so, std::ios::binary | std::ios::trunc) << "not a shared object";
  auto lib = load_aot_library("ok_guest", plan, 64, engine_options(Engine::kAot, dir_), &info);
  ASSERT_TRUE(lib.ok()) << lib.error().message;
  EXPECT_FALSE(info.from_cache);
  EXPECT_NE(info.note.find("does not match the hash recorded for it"), std::string::npos)
      << info.note;
  // ... and the entry is whole again.
  lib = load_aot_library("ok_guest", plan, 64, engine_options(Engine::kAot, dir_), &info);
  ASSERT_TRUE(lib.ok());
}

TEST_F(AotCache, ConcurrentLoadsOfOneModuleBuildItOnce) {
  std::vector<std::thread> threads;
  std::vector<Result<std::shared_ptr<const WasmModule>>> results(4,
                                                                 Error(ErrorCode::kInternal, ""));
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      results[i] = load_guest_module(wasm_path("loop_guest"), small_limits(),
                                     engine_options(Engine::kAot, dir_));
    });
  }
  for (auto& t : threads) t.join();
  for (auto& r : results) ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(entries(".so").size(), 1u);
  // Their instances run side by side on their own threads, each under its own budget.
  threads.clear();
  std::vector<CallStatus> statuses(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      InstanceContext ctx;
      ctx.guest_name = "loop";
      auto g = GuestInstance::create(*results[i], ctx);
      statuses[i] = g.ok() ? (*g)->handle(batch_of(1)).status : CallStatus::kOk;
    });
  }
  for (auto& t : threads) t.join();
  for (CallStatus s : statuses) EXPECT_EQ(s, CallStatus::kBudgetExhausted);
}

TEST_F(AotCache, ACompilationPastItsTimeLimitRefusesTheGuestNamingTheStep) {
  EngineOptions e = engine_options(Engine::kAot, dir_);
  e.compile_timeout = 1ms;
  auto m = load_guest_module(wasm_path("many_locals_guest"), small_limits(), e);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("compiled tier: wasm2c timed out after 1 ms"), std::string::npos)
      << m.error().message;
  EXPECT_TRUE(entries(".so").empty());
}

TEST(AotCompile, AModuleTheCCompilerCannotBuildIsRefusedNamingCc) {
  // A plan whose exports name a function the module does not export: the glue calls it, and the
  // C compiler reports the undeclared function.
  std::ifstream in(wasm_path("ok_guest"), std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  auto plan = plan_aot_module("ok_guest", bytes, -1, small_limits());
  ASSERT_TRUE(plan.ok());
  plan->exports.push_back({999, "missing", FuncSig{}});
  auto lib = load_aot_library("ok_guest", *plan, 64, engine_options(Engine::kAot, ""));
  ASSERT_FALSE(lib.ok());
  EXPECT_NE(lib.error().message.find("compiled tier: cc exited with status 1: "), std::string::npos)
      << lib.error().message;
  EXPECT_NE(lib.error().message.find("witmq_e999"), std::string::npos) << lib.error().message;
}

}  // namespace
}  // namespace witmq::guest
