// A hostile or buggy guest must never take the daemon down or escape its limits (issue 18). Each
// test runs a hand-written guest (tests/guest/wat) that did one of these before the fix; the
// first group needs no broker, the second runs guests on a real one.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>

#include "guest/canonical_abi.h"
#include "guest/guest_fixture.h"
#include "guest/guest_instance.h"
#include "guest/test_wasm.h"

namespace witmq::guest {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::text_message;
using testing::wasm_path;

WasmLimits small_limits() {
  WasmLimits l;
  l.instruction_budget = 1'000'000;
  l.memory_pages = 16;
  return l;
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
    batch.push_back(m);
  }
  return batch;
}

uint32_t u32_at(GuestInstance& g, uint32_t ptr) {
  uint32_t v;
  std::memcpy(&v, g.wasm().memory_data() + ptr, 4);
  return v;
}

// ---- Item 1: host calls from the start function and `_initialize` ---------------------------

TEST(GuestIsolation, StartFunctionAndInitializeMayCallImports) {
  auto g = instance_of("init_import_guest");
  ASSERT_TRUE(g);
  EXPECT_EQ(u32_at(*g, 3000), 2u);  // the start function, then _initialize, each got through
  GuestConfiguration gc;
  EXPECT_TRUE(g->configure(&gc).returned_ok());
  EXPECT_TRUE(g->handle(batch_of(1)).returned_ok());
}

// ---- Item 2: error.trace lowers a copy ------------------------------------------------------

TEST(GuestIsolation, TraceIsNotChangedByAHostCallInsideCabiRealloc) {
  auto g = instance_of("trace_realloc_guest");
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  ASSERT_TRUE(r.returned_ok()) << r.message;
  const uint32_t ptr = u32_at(*g, 2096), len = u32_at(*g, 2100);
  const std::string traced(reinterpret_cast<const char*>(g->wasm().memory_data() + ptr), len);
  EXPECT_EQ(traced, Error(ErrorCode::kFailedPrecondition,
                          "update-guest-configuration: this guest cannot re-subscribe")
                        .to_string());
}

// ---- Item 3: nothing escapes an entry point -------------------------------------------------

TEST(GuestIsolationDeathTest, AllocationFailureWhileLiftingConfigureFailsTheGuestOnly) {
  // The child caps its address space just above what it uses, so lifting the guest's 16 MiB
  // channel name cannot be allocated: configure must report that, not end the process.
  WasmLimits l = small_limits();
  l.memory_pages = 300;
  auto g = instance_of("big_config_guest", l);
  ASSERT_TRUE(g);
  auto configure_with_little_memory = [&g] {
    long pages = 0;
    std::ifstream("/proc/self/statm") >> pages;
    const rlim_t used = static_cast<rlim_t>(pages) * static_cast<rlim_t>(getpagesize());
    const rlimit cap{used + (8u << 20), used + (8u << 20)};
    setrlimit(RLIMIT_AS, &cap);
    GuestConfiguration gc;
    CallReport r = g->configure(&gc);
    const bool reported = r.status == CallStatus::kTrap &&
                          r.message.find("failed in the host") != std::string::npos && !g->usable();
    std::fprintf(stderr, "%s\n", r.message.c_str());
    _exit(reported ? 0 : 1);
  };
  GTEST_FLAG_SET(death_test_style, "fast");
  EXPECT_EXIT(configure_with_little_memory(), ::testing::ExitedWithCode(0),
              "lifting the result of configure failed in the host");
}

// ---- Item 5: lifting is bounded before it copies --------------------------------------------

TEST(GuestIsolation, ConfigurationWithTooManyChannelsIsRefusedBeforeCopying) {
  auto g = instance_of("many_channels_guest");
  ASSERT_TRUE(g);
  GuestConfiguration gc;
  CallReport r = g->configure(&gc);
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("guest-configuration.channels: 2000 elements, more than the 1024 "
                           "allowed"),
            std::string::npos)
      << r.message;
}

TEST(GuestIsolation, LiftBudgetStopsElementsThatShareGuestBytes) {
  // What the amplifying guest does, directly on the ABI: 64 messages over the same 4 MiB.
  struct Flat : abi::GuestMemory {
    std::vector<uint8_t> mem = std::vector<uint8_t>(4u << 20);
    std::span<uint8_t> bytes() override { return mem; }
    uint32_t realloc(uint32_t, uint32_t, uint32_t, uint32_t) override { return 0; }
  } m;
  for (uint32_t i = 0; i < 64; ++i) {
    abi::store_u32(m, 8192 + i * 24, 0);
    abi::store_u32(m, 8192 + i * 24 + 4, 4u << 20);
  }
  m.set_lift_budget(2 * m.mem.size() + (1u << 20));
  try {
    abi::lift_messages(m, 8192, 64);
    FAIL() << "64 x 4 MiB were copied";
  } catch (const GuestTrap& e) {
    EXPECT_NE(std::string(e.what()).find("would exceed what this call may copy"), std::string::npos)
        << e.what();
  }
}

// ---- Item 6: one budget per top-level call --------------------------------------------------

TEST(GuestIsolation, NestedCallsShareTheBudgetOfTheCallTheyAreIn) {
  // Each error.trace runs the armed cabi_realloc (~300,000 steps) nested in the host call.
  auto g = instance_of("nested_budget_guest");  // budget 1,000,000
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(2));  // ~600,000 steps: fits
  ASSERT_TRUE(r.returned_ok()) << r.message;
  r = g->handle(batch_of(10));  // ~3,000,000 steps: does not
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
  EXPECT_NE(r.message.find("instruction budget of 1000000 exhausted"), std::string::npos)
      << r.message;
}

// ---- Item 7: bulk memory is charged by length -----------------------------------------------

TEST(GuestIsolation, BulkMemoryOperationsAreChargedByLength) {
  WasmLimits l = small_limits();
  l.memory_pages = 256;
  auto g = instance_of("fill_guest", l);
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));  // fill + copy of 1,000 bytes, checked by the guest
  ASSERT_TRUE(r.returned_ok()) << r.message;
  r = g->handle(batch_of(2));  // ten fills of 16 MiB
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
}

TEST(GuestIsolation, MemoryInitAndTableBulkOperationsAreChargedByLength) {
  auto g = instance_of("bulk_table_guest");  // budget 1,000,000
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));  // each operation once, its effect checked by the guest
  ASSERT_TRUE(r.returned_ok()) << r.message;
  // 50,000 memory.init of 1 KiB, 10,000 table.fill of 65,536 references, 10,000 table.copy of
  // 65,535: a few hundred thousand steps if the lengths cost nothing.
  for (int n : {2, 3, 4}) {
    auto fresh = instance_of("bulk_table_guest");
    ASSERT_TRUE(fresh);
    r = fresh->handle(batch_of(n));
    EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << "batch of " << n << ": " << r.message;
  }
}

TEST(GuestIsolation, LocalsArePaidForOnEachCall) {
  auto g = instance_of("many_locals_guest");  // budget 1,000,000
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));  // one call of the 1,001-local function, checked
  ASSERT_TRUE(r.returned_ok()) << r.message;
  r = g->handle(batch_of(2));  // 30,000 calls: 30 million locals zeroed
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
}

TEST(GuestIsolation, HostCopyingInAHostCallIsChargedToTheBudget) {
  auto g = instance_of("copy_flood_guest");  // budget 1,000,000
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));  // one call: 2 MiB copied, about 262,000 steps
  ASSERT_TRUE(r.returned_ok()) << r.message;
  auto flood = instance_of("copy_flood_guest");
  ASSERT_TRUE(flood);
  r = flood->handle(batch_of(2));  // 100 calls: 200 MB copied in some 12,000 guest steps
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
  EXPECT_NE(r.message.find("exhausted by the host copying guest data"), std::string::npos)
      << r.message;
}

// ---- Item 9: host-side structures are capped ------------------------------------------------

TEST(GuestIsolation, ErrorHandlesTheGuestNeverDropsAreCapped) {
  auto g = instance_of("error_flood_guest", [] {
    WasmLimits l = small_limits();
    l.instruction_budget = 10'000'000;
    return l;
  }());
  ASSERT_TRUE(g);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("error handles: 1024 are live, the most an instance may hold"),
            std::string::npos)
      << r.message;
}

TEST(GuestIsolation, TooManyTablesAreRefused) {
  auto m = load_guest_module(wasm_path("tables_guest"), small_limits());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("defines 9 tables, above the limit of 8"), std::string::npos)
      << m.error().message;
}

TEST(GuestIsolation, ValueStackIsBoundedByTheCallDepth) {
  // 9,000 locals per frame: wabt's own ~1,600 frames would hold 230 MB of them. Each call pays
  // about 8,000 steps for its locals, so the budget lets the recursion reach the depth limit.
  WasmLimits l = small_limits();
  l.instruction_budget = 10'000'000;
  auto g = instance_of("deep_frame_guest", l);
  ASSERT_TRUE(g);
  const uint32_t depth = g->wasm().call_depth_limit();
  EXPECT_LE(uint64_t{depth} * 8971 * 16, WasmLimits{}.value_stack_bytes);
  EXPECT_GE(depth, kMinCallDepth);
  CallReport r = g->handle(batch_of(1));
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("call stack exhausted"), std::string::npos) << r.message;
  // The recursion went no deeper than the limit (the handler's own frame is one of them).
  EXPECT_LT(u32_at(*g, 3000), depth);
}

TEST(GuestIsolation, ModuleWhoseFramesCannotFitIsRefused) {
  auto m = load_guest_module(wasm_path("wide_frame_guest"), small_limits());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("such frames fit the value stack limit of 16777216 bytes"),
            std::string::npos)
      << m.error().message;
}

TEST(HandleTableCap, AddingPastTheCapacityTraps) {
  HandleTable<int> t("error", 2);
  EXPECT_EQ(t.add(1), 1u);
  EXPECT_EQ(t.add(2), 2u);
  EXPECT_THROW(t.add(3), GuestTrap);
  t.take(1, "drop");
  EXPECT_EQ(t.add(4), 1u);  // a dropped handle makes room, its slot reused
}

// ---- On a real broker -----------------------------------------------------------------------

class GuestIsolationHostTest : public testing::GuestHostTest {};

TEST_F(GuestIsolationHostTest, ConfigureThatWaitsForeverEndsAtTheCallTimeout) {
  // Item 4: the daemon's start must not hang on a guest.
  GuestOptions o = options("blocker", "block_config_guest");
  o.call_timeout = 300ms;
  auto h = GuestHost::load(*broker_, o, [](LogLevel, std::string_view) {});
  ASSERT_TRUE(h.ok()) << h.error().message;
  Status st = (*h)->start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("wall time limit of 300 ms exceeded"), std::string::npos)
      << st.error().message;
}

TEST_F(GuestIsolationHostTest, StopInterruptsAnInstanceStillInConfigure) {
  // Item 4: after a trap the guest is instantiated again and its configure waits forever; stop()
  // must end that wait, not sit out the (here long) call timeout.
  GuestOptions o = options("gated", "gate_guest");
  o.call_timeout = std::chrono::minutes(10);
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("gate", {text_message("close")});
  send("guest.in", {text_message("trap")});
  ASSERT_TRUE(eventually([&] { return h->stats().instantiations >= 2; }));
  auto stopped = std::async(std::launch::async, [h] { h->stop(); });
  ASSERT_EQ(stopped.wait_for(60s), std::future_status::ready) << "stop() is stuck in configure";
  EXPECT_FALSE(logged("wall time limit"));
}

TEST_F(GuestIsolationHostTest, SendOfElementsSharingGuestMemoryTrapsBeforeCopying) {
  // Item 5: 64 messages x 4 MiB of the same bytes.
  GuestOptions o = options("amplifier", "amplify_guest");
  o.memory_pages = 64;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("guest.in", {text_message("go")});
  ASSERT_TRUE(eventually([&] { return h->stats().traps >= 1; }));
  EXPECT_TRUE(logged("would exceed what this call may copy out of guest memory"));
  EXPECT_EQ(channel("guest.out").head_seq, 0u);
}

TEST_F(GuestIsolationHostTest, HandlerThatWaitsForeverEndsAtTheCallTimeout) {
  // Item 8: the batch is abandoned at the timeout, the instance replaced.
  GuestOptions o = options("waiter", "wait_guest");
  o.call_timeout = 300ms;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("guest.in", {text_message("wait")});
  ASSERT_TRUE(eventually([&] { return h->stats().time_limit_hits >= 1; }));
  ASSERT_TRUE(eventually([&] { return h->stats().abandoned >= 1; }));
  EXPECT_TRUE(
      logged("wall time limit of 300 ms exceeded in "
             "'wasi:messaging/messaging-guest@0.2.0-draft#handler'"));
  EXPECT_EQ(h->stats().completed, 0u);
}

TEST_F(GuestIsolationHostTest, ClientsPerInstanceAreCapped) {
  // Item 9: the 17th connect fails with an error; the guest traps unless it does.
  GuestHost* h = start(options("connector", "client_flood_guest"));
  ASSERT_TRUE(h);
  send("guest.in", {text_message("connect")});
  ASSERT_TRUE(eventually([&] { return h->stats().completed >= 1; }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(GuestIsolationHostTest, GuestConnectsUnderItsOwnNameNotTheOneItAsksFor) {
  // Item 10: "victim" has a durable subscription to the topic "news" with a message waiting.
  broker::ChannelSettings topic;
  topic.kind = broker::ChannelKind::kPublishSubscribe;
  ASSERT_TRUE(broker_->declare_channel("news", topic).ok());
  auto victim = broker_->connect("victim");
  ASSERT_TRUE(victim.ok());
  auto receive_news = [&](const broker::ClientPtr& c) {
    std::promise<Result<std::vector<Message>>> p;
    auto f = p.get_future();
    broker_->receive(c, {"news"}, broker::ReceiveOptions{0, 0ms},
                     [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
    auto r = f.get();
    return r.ok() ? r->size() : size_t{0};
  };
  EXPECT_EQ(receive_news(*victim), 0u);  // subscribes "victim" from the latest message
  broker_->disconnect(*victim);
  send("news", {text_message("for the victim")});

  GuestHost* h = start(options("namer", "name_guest"));  // connects asking for "victim"
  ASSERT_TRUE(h);
  send("guest.in", {text_message("go")});
  ASSERT_TRUE(eventually([&] { return h->stats().completed + h->stats().traps >= 1; }));
  EXPECT_EQ(h->stats().traps, 0u) << "the guest read through the subscription of 'victim'";

  auto again = broker_->connect("victim");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(receive_news(*again), 1u);  // still there for its owner
}

}  // namespace
}  // namespace witmq::guest
