// Loading, refusing and running guests on the real wabt interpreter, without a broker: module
// checks, configure/handler through the canonical ABI, traps, the instruction budget and the
// memory limit.
#include "guest/guest_instance.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "guest/test_wasm.h"

namespace witmq::guest {
namespace {

using testing::wasm_path;

WasmLimits small_limits() {
  WasmLimits l;
  l.instruction_budget = 1'000'000;
  l.memory_pages = 16;
  return l;
}

std::string load_error(const std::string& stem, const WasmLimits& limits = small_limits()) {
  auto m = load_guest_module(wasm_path(stem), limits);
  EXPECT_FALSE(m.ok()) << stem << " was accepted";
  return m.ok() ? std::string() : m.error().message;
}

std::unique_ptr<GuestInstance> instance_of(const std::string& stem,
                                           const WasmLimits& limits = small_limits()) {
  auto m = load_guest_module(wasm_path(stem), limits);
  EXPECT_TRUE(m.ok()) << m.error().message;
  if (!m.ok()) return nullptr;
  InstanceContext ctx;
  ctx.guest_name = stem;
  auto g = GuestInstance::create(*m, ctx);
  EXPECT_TRUE(g.ok()) << g.error().message;
  return g.ok() ? std::move(g).value() : nullptr;
}

std::vector<Message> batch_of(int n) {
  std::vector<Message> batch;
  for (int i = 0; i < n; ++i) {
    Message m;
    m.data = {'m', static_cast<uint8_t>('0' + i)};
    m.metadata = Metadata{{"witmq-receipt", "r" + std::to_string(i)}};
    batch.push_back(m);
  }
  return batch;
}

TEST(GuestModule, RefusesMissingExport) {
  const std::string e = load_error("missing_export_guest");
  EXPECT_NE(e.find("missing_export_guest.wasm"), std::string::npos) << e;
  EXPECT_NE(e.find("missing export 'wasi:messaging/messaging-guest@0.2.0-draft#handler' "
                   "(expected (func (param i32 i32) (result i32)))"),
            std::string::npos)
      << e;
}

TEST(GuestModule, RefusesWrongSignature) {
  const std::string e = load_error("wrong_signature_guest");
  EXPECT_NE(e.find("export 'wasi:messaging/messaging-guest@0.2.0-draft#handler' has type "
                   "(func (param i32) (result i32)), expected (func (param i32 i32) (result "
                   "i32))"),
            std::string::npos)
      << e;
}

TEST(GuestModule, RefusesUnknownImport) {
  const std::string e = load_error("unknown_import_guest");
  EXPECT_NE(e.find("unknown_import_guest.wasm"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown import \"env\".\"clock\""), std::string::npos) << e;
}

TEST(GuestModule, RefusesInvalidBytesAndMissingFiles) {
  auto bad = WasmModule::compile("junk.wasm", {0, 'a', 's', 'n', 1, 0, 0, 0}, guest_requirements(),
                                 small_limits());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("module 'junk.wasm': not a valid WebAssembly module"),
            std::string::npos)
      << bad.error().message;
  auto missing = load_guest_module(wasm_path("no_such_guest"), small_limits());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("cannot open"), std::string::npos);
}

TEST(GuestModule, AModulePathThatIsNotARegularFileIsRefusedWithoutReadingIt) {
  // A FIFO would block the load until a writer came, /dev/zero would be read without end.
  const std::string fifo = ::testing::TempDir() + "/guest_fifo_" + std::to_string(::getpid());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {fifo, std::string("/dev/zero"), ::testing::TempDir()}) {
    auto m = load_guest_module(path, small_limits());
    ASSERT_FALSE(m.ok()) << path;
    EXPECT_NE(m.error().message.find("is not a regular file"), std::string::npos)
        << m.error().message;
  }
  ::unlink(fifo.c_str());
}

TEST(GuestModule, RefusesMemoryThatStartsAboveTheLimit) {
  WasmLimits l = small_limits();
  l.memory_pages = 1;  // the test guests start at 2 pages
  const std::string e = load_error("ok_guest", l);
  EXPECT_NE(e.find("memory starts at 2 pages, above the memory limit of 1 pages"),
            std::string::npos)
      << e;
}

TEST(GuestInstance, ConfigureAndHandleThroughTheCanonicalAbi) {
  auto g = instance_of("ok_guest");
  ASSERT_TRUE(g);
  GuestConfiguration gc;
  CallReport r = g->configure(&gc);
  ASSERT_TRUE(r.returned_ok()) << r.message;
  EXPECT_EQ(gc.channels, std::vector<std::string>{"guest.in"});
  EXPECT_FALSE(gc.extensions.has_value());

  for (int round = 0; round < 3; ++round) {
    r = g->handle(batch_of(4));
    ASSERT_TRUE(r.returned_ok()) << r.message;
  }
  EXPECT_TRUE(g->usable());
  EXPECT_TRUE(g->explicitly_settled().empty());
}

TEST(GuestInstance, TrapIsReportedAndSpendsTheInstance) {
  auto g = instance_of("trap_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("trap in 'wasi:messaging/messaging-guest@0.2.0-draft#handler': "
                           "unreachable executed"),
            std::string::npos)
      << r.message;
  EXPECT_FALSE(g->usable());
  EXPECT_EQ(g->handle(batch_of(1)).status, CallStatus::kTrap);  // refused from now on
}

TEST(GuestInstance, TrapInConfigure) {
  auto g = instance_of("config_trap_guest");
  ASSERT_TRUE(g);
  GuestConfiguration gc;
  CallReport r = g->configure(&gc);
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("#configure"), std::string::npos) << r.message;
}

TEST(GuestInstance, InfiniteLoopIsStoppedByTheBudget) {
  WasmLimits l = small_limits();
  l.instruction_budget = 5'000'000;
  auto g = instance_of("loop_guest", l);
  ASSERT_TRUE(g);
  const auto t0 = std::chrono::steady_clock::now();
  CallReport r = g->handle(batch_of(2));
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted);
  EXPECT_NE(r.message.find("instruction budget of 5000000 exhausted"), std::string::npos)
      << r.message;
  EXPECT_LT(elapsed, std::chrono::seconds(10));
  EXPECT_FALSE(g->usable());
}

TEST(GuestInstance, BudgetCoversTheLoweringAllocations) {
  // A budget too small for even one cabi_realloc fails the call before the handler runs.
  WasmLimits l = small_limits();
  l.instruction_budget = 3;
  auto g = instance_of("ok_guest", l);
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
}

TEST(GuestInstance, MemoryGrowthPastTheLimitFailsTheCall) {
  auto g = instance_of("grow_guest");  // limit 16 pages, starts at 2
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kMemoryLimit);
  EXPECT_NE(r.message.find("exceeds the memory limit of 16 pages (memory is at 16 pages)"),
            std::string::npos)
      << r.message;
  EXPECT_EQ(g->memory_pages(), 16u);
  EXPECT_FALSE(g->usable());
}

TEST(GuestInstance, LoweringPastTheMemoryLimitFailsTheCall) {
  // The guest's allocator must grow memory to take a batch bigger than the limit allows.
  auto g = instance_of("ok_guest");
  ASSERT_TRUE(g);
  std::vector<Message> big(1);
  big[0].data.assign(20 * 65536, 'x');
  CallReport r = g->handle(big);
  EXPECT_EQ(r.status, CallStatus::kMemoryLimit) << r.message;
}

TEST(GuestInstance, UnknownHandleTraps) {
  auto g = instance_of("bad_handle_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("[resource-drop]client: client handle 42 is not live"),
            std::string::npos)
      << r.message;
}

TEST(GuestInstance, ImportsWithoutABrokerTrapCleanly) {
  auto g = instance_of("forward_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("no broker is attached"), std::string::npos) << r.message;
}

}  // namespace
}  // namespace witmq::guest
