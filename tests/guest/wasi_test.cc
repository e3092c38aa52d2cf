// wasi_snapshot_preview1 for guests (src/guest/wasi.h): a C guest built against wasi-libc end to
// end, and the WASI functions called directly by a WAT guest with ordinary and hostile arguments.
#include "guest/wasi.h"

#include <gtest/gtest.h>

#include <cstring>
#include <mutex>

#include "guest/guest_fixture.h"
#include "guest/guest_instance.h"
#include "guest/test_wasm.h"

namespace witmq::guest {
namespace {

using namespace std::chrono_literals;
using namespace testing;     // NOLINT
using namespace wasi_errno;  // NOLINT

// The probe guest (wat/wasi_probe_guest.wat) in one instance, with its output captured.
class WasiProbe : public ::testing::Test {
 protected:
  void start(WasmLimits limits = {}, std::vector<std::pair<std::string, std::string>> env = {}) {
    limits.memory_pages = 16;
    if (limits.instruction_budget == WasmLimits{}.instruction_budget) {
      limits.instruction_budget = 1'000'000;
    }
    auto m = load_guest_module(wasm_path("wasi_probe_guest"), limits);
    ASSERT_TRUE(m.ok()) << m.error().message;
    output_ = std::make_shared<GuestOutput>("probe", [this](bool is_stderr, std::string_view l) {
      std::lock_guard lock(mu_);
      lines_.push_back(std::string(is_stderr ? "E " : "O ") + std::string(l));
    });
    InstanceContext ctx;
    ctx.guest_name = "probe";
    ctx.env = std::move(env);
    ctx.output = output_;
    auto g = GuestInstance::create(*m, std::move(ctx));
    ASSERT_TRUE(g.ok()) << g.error().message;
    g_ = std::move(g).value();
  }

  CallOutcome call(const std::string& name, const std::vector<RawValue>& args,
                   uint32_t* result = nullptr) {
    std::vector<RawValue> results;
    CallOutcome o = g_->wasm().call(g_->wasm().find_export(name), args, &results);
    if (result && o.ok() && !results.empty()) *result = static_cast<uint32_t>(results[0]);
    return o;
  }
  // Calls a "w_<function>" export that must return; its errno.
  uint32_t wasi(const std::string& function, const std::vector<RawValue>& args) {
    uint32_t e = 0xdead;
    CallOutcome o = call("w_" + function, args, &e);
    EXPECT_TRUE(o.ok()) << function << ": " << o.message;
    return e;
  }
  uint8_t* mem() { return g_->wasm().memory_data(); }
  uint32_t u32_at(uint32_t at) {
    uint32_t v;
    std::memcpy(&v, mem() + at, 4);
    return v;
  }
  void put_u32(uint32_t at, uint32_t v) { std::memcpy(mem() + at, &v, 4); }
  void put_u64(uint32_t at, uint64_t v) { std::memcpy(mem() + at, &v, 8); }
  std::vector<std::string> lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }

  std::shared_ptr<GuestOutput> output_;
  std::unique_ptr<GuestInstance> g_;
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// The memory of the probe: 2 pages.
constexpr uint32_t kMemory = 2 * 65536;

TEST(WasiModule, AnUnknownWasiFunctionIsRefusedNamingIt) {
  WasmLimits limits;
  auto m = load_guest_module(wasm_path("wasi_unknown_guest"), limits);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find(
                "unknown import \"wasi_snapshot_preview1\".\"fd_frobnicate\": the host does not "
                "offer it"),
            std::string::npos)
      << m.error().message;
}

TEST(WasiModule, EveryPreview1FunctionIsOffered) {
  // The whole wasi_snapshot_preview1 surface: 46 functions.
  EXPECT_EQ(wasi_imports().size(), 46u);
  for (const ImportSpec& spec : wasi_imports()) {
    const auto& offered = guest_requirements().offered_imports;
    EXPECT_TRUE(std::any_of(offered.begin(), offered.end(), [&](const ImportSpec& s) {
      return s.module == spec.module && s.name == spec.name && s.sig == spec.sig;
    })) << spec.name;
  }
}

TEST_F(WasiProbe, StdoutAndStderrBecomeLogLinesTaggedWithTheGuestName) {
  start();
  ASSERT_TRUE(call("flood", {3}).ok());
  // "ab\ncd" then "e\n" to stderr: complete lines only, the partial one joined with the next.
  std::memcpy(mem() + 5000, "ab\ncd", 5);
  std::memcpy(mem() + 5010, "e\n\x1b[2J", 6);
  put_u32(4000, 5000);
  put_u32(4004, 5);
  put_u32(4008, 5010);
  put_u32(4012, 6);
  EXPECT_EQ(wasi("fd_write", {2, 4000, 2, 4100}), kSuccess);
  EXPECT_EQ(u32_at(4100), 11u);
  g_.reset();  // the unfinished "\x1b[2J" is logged when the instance ends
  EXPECT_EQ(lines(), (std::vector<std::string>{
                         "O guest 'probe' stdout: line", "O guest 'probe' stdout: line",
                         "O guest 'probe' stdout: line", "E guest 'probe' stderr: ab",
                         "E guest 'probe' stderr: cde", "E guest 'probe' stderr: \\x1b[2J"}));
  EXPECT_EQ(output_->lines_written(), 6u);
  EXPECT_EQ(output_->lines_dropped(), 0u);
}

TEST_F(WasiProbe, APrintFloodIsBoundedInRate) {
  start();
  ASSERT_TRUE(call("flood", {1000}).ok());
  const GuestOutputLimits limits;
  // The burst, plus what the rate refills while the loop runs (well under a second).
  EXPECT_LE(output_->lines_written(), limits.burst_lines + limits.lines_per_second);
  EXPECT_GE(output_->lines_written(), limits.burst_lines);
  EXPECT_EQ(output_->lines_written() + output_->lines_dropped(), 1000u);
  EXPECT_EQ(output_->bytes_dropped(), output_->lines_dropped() * 4);
  EXPECT_EQ(lines().size(), output_->lines_written());
}

TEST_F(WasiProbe, ALongLineIsCutToTheLineLimit) {
  start();
  std::memset(mem() + 10000, 'a', 5000);
  mem()[15000] = '\n';
  put_u32(4000, 10000);
  put_u32(4004, 5001);
  EXPECT_EQ(wasi("fd_write", {1, 4000, 1, 4100}), kSuccess);
  EXPECT_EQ(u32_at(4100), 5001u);
  ASSERT_EQ(lines().size(), 1u);
  EXPECT_EQ(lines()[0], "O guest 'probe' stdout: " + std::string(1024, 'a') + " [3976 bytes cut]");
  EXPECT_EQ(output_->bytes_dropped(), 3976u);
}

TEST_F(WasiProbe, OutOfBoundsPointersAnswerEfaultAndTheInstanceCarriesOn) {
  start();
  put_u32(4000, kMemory - 2);  // an iovec whose buffer runs past the end of memory
  put_u32(4004, 100);
  EXPECT_EQ(wasi("fd_write", {1, 4000, 1, 4100}), kFault);
  EXPECT_EQ(wasi("fd_write", {1, kMemory - 4, 1, 4100}), kFault);  // the iovec array
  EXPECT_EQ(wasi("fd_write", {1, 3000, 1, 0xFFFFFFFF}), kFault);   // nwritten
  EXPECT_EQ(wasi("fd_read", {0, 3000, 1, kMemory - 3}), kFault);
  EXPECT_EQ(wasi("random_get", {kMemory - 8, 9}), kFault);
  EXPECT_EQ(wasi("random_get", {0xFFFFFFFF, 0xFFFFFFFF}), kFault);
  EXPECT_EQ(wasi("clock_time_get", {0, kMemory - 7}), kFault);
  EXPECT_EQ(wasi("args_sizes_get", {kMemory, 0}), kFault);
  EXPECT_EQ(wasi("args_get", {kMemory - 2, 0}), kFault);
  EXPECT_EQ(wasi("args_get", {100, kMemory - 3}), kFault);  // "probe\0" does not fit
  EXPECT_EQ(wasi("environ_sizes_get", {0, 0xFFFFFFFC}), kFault);
  EXPECT_EQ(wasi("fd_fdstat_get", {1, kMemory - 23}), kFault);
  EXPECT_EQ(wasi("poll_oneoff", {kMemory - 47, 0, 1, 4100}), kFault);
  EXPECT_EQ(wasi("poll_oneoff", {0, kMemory - 31, 1, 4100}), kFault);
  EXPECT_EQ(wasi("poll_oneoff", {0, 0, 4000, 4100}), kFault);        // 4000 x 48 bytes > memory
  EXPECT_EQ(wasi("poll_oneoff", {0, 0, 0xFFFFFFFF, 4100}), kInval);  // over the cap
  EXPECT_TRUE(g_->usable());
  EXPECT_TRUE(lines().empty());
}

TEST_F(WasiProbe, HugeIovecCountsAreBoundedByMemoryAndChargedToTheBudget) {
  start();
  // More iovecs than the memory holds: refused before any is read.
  EXPECT_EQ(wasi("fd_write", {1, 0, 0xFFFFFFFF, 4100}), kFault);
  EXPECT_EQ(wasi("fd_write", {1, 0, kMemory / 8 + 1, 4100}), kFault);
  // As many as the memory holds, each naming all of it: the host reads no more than the call's
  // budget pays for, and the call ends as budget-exhausted, not the daemon.
  for (uint32_t at = 0; at < kMemory; at += 8) {
    put_u32(at, 0);
    put_u32(at + 4, kMemory);
  }
  std::vector<RawValue> results;
  CallOutcome o = call("w_fd_write", {1, 0, kMemory / 8, 0});
  EXPECT_EQ(o.status, CallStatus::kBudgetExhausted) << o.message;
  EXPECT_NE(o.message.find("host"), std::string::npos) << o.message;
  EXPECT_FALSE(g_->usable());
  // At most one line (its cut part dropped) was logged: nothing is kept unbounded.
  EXPECT_LE(lines().size(), 1u);
}

TEST_F(WasiProbe, RandomGetFillsTheBufferFromARealSource) {
  start();
  std::memset(mem() + 8000, 0, 4096);
  EXPECT_EQ(wasi("random_get", {8000, 4096}), kSuccess);
  size_t zeros = 0;
  for (size_t i = 0; i < 4096; ++i) zeros += mem()[8000 + i] == 0;
  EXPECT_LT(zeros, 100u);  // about 16 expected of 4096 random bytes
  std::vector<uint8_t> first(mem() + 8000, mem() + 8000 + 4096);
  EXPECT_EQ(wasi("random_get", {8000, 4096}), kSuccess);
  EXPECT_NE(first, std::vector<uint8_t>(mem() + 8000, mem() + 8000 + 4096));
  EXPECT_EQ(wasi("random_get", {8000, 0}), kSuccess);
}

TEST_F(WasiProbe, ClocksAnswerAndUnknownClocksAreInvalid) {
  start();
  EXPECT_EQ(wasi("clock_time_get", {0, 4000}), kSuccess);
  uint64_t realtime;
  std::memcpy(&realtime, mem() + 4000, 8);
  const uint64_t now =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  EXPECT_LE(realtime, now);
  EXPECT_GT(realtime, now - 60'000'000'000ull);
  EXPECT_EQ(wasi("clock_time_get", {1, 4000}), kSuccess);
  EXPECT_EQ(wasi("clock_time_get", {9, 4000}), kInval);
}

TEST_F(WasiProbe, ArgsAreTheGuestNameAndEnvironIsItsEnvSetting) {
  start({}, {{"GREETING", "hello"}, {"EMPTY", ""}});
  EXPECT_EQ(wasi("args_sizes_get", {4000, 4004}), kSuccess);
  EXPECT_EQ(u32_at(4000), 1u);
  EXPECT_EQ(u32_at(4004), 6u);
  EXPECT_EQ(wasi("args_get", {4100, 4200}), kSuccess);
  EXPECT_EQ(u32_at(4100), 4200u);
  EXPECT_STREQ(reinterpret_cast<const char*>(mem() + 4200), "probe");

  EXPECT_EQ(wasi("environ_sizes_get", {4000, 4004}), kSuccess);
  EXPECT_EQ(u32_at(4000), 2u);
  EXPECT_EQ(u32_at(4004), 15u + 7u);
  EXPECT_EQ(wasi("environ_get", {4100, 4200}), kSuccess);
  EXPECT_STREQ(reinterpret_cast<const char*>(mem() + u32_at(4100)), "GREETING=hello");
  EXPECT_STREQ(reinterpret_cast<const char*>(mem() + u32_at(4104)), "EMPTY=");
}

TEST_F(WasiProbe, NothingOutsideIsReachable) {
  start();
  std::memcpy(mem() + 5000, "/etc/passwd", 11);
  EXPECT_EQ(wasi("fd_prestat_get", {3, 4000}), kBadf);  // no preopens
  EXPECT_EQ(wasi("path_open", {3, 5000, 11, 4000}), kBadf);
  EXPECT_EQ(wasi("path_open", {0, 5000, 11, 4000}), kNotdir);
  EXPECT_EQ(wasi("sock_send", {3, 3000, 1, 0, 4000}), kBadf);
  EXPECT_EQ(wasi("sock_send", {1, 3000, 1, 0, 4000}), kNotsock);
  EXPECT_EQ(wasi("fd_write", {3, 3000, 1, 4000}), kBadf);
  EXPECT_EQ(wasi("fd_write", {0, 3000, 1, 4000}), kBadf);
}

TEST_F(WasiProbe, TheStandardDescriptorsAreATerminallessPipe) {
  start();
  EXPECT_EQ(wasi("fd_fdstat_get", {1, 4000}), kSuccess);
  EXPECT_EQ(mem()[4000], 0u);  // filetype unknown: not a character device, so not a tty
  uint64_t rights;
  std::memcpy(&rights, mem() + 4008, 8);
  EXPECT_EQ(rights & ((1u << 2) | (1u << 5)), 0u);  // no seek, no tell
  EXPECT_EQ(wasi("fd_seek", {1, 0, 0, 4000}), kSpipe);
  EXPECT_EQ(wasi("fd_seek", {7, 0, 0, 4000}), kBadf);
  put_u32(4104, 0xFFFF);
  EXPECT_EQ(wasi("fd_read", {0, 3000, 1, 4104}), kSuccess);  // end of file
  EXPECT_EQ(u32_at(4104), 0u);
  EXPECT_EQ(wasi("fd_close", {1}), kSuccess);
  EXPECT_EQ(wasi("fd_close", {1}), kBadf);
  EXPECT_EQ(wasi("fd_write", {1, 3000, 1, 4100}), kBadf);
  EXPECT_EQ(wasi("fd_fdstat_get", {1, 4000}), kBadf);
  EXPECT_EQ(wasi("sched_yield", {}), kSuccess);
}

TEST_F(WasiProbe, PollOneoffSleepsOnAClock) {
  start();
  // One relative clock subscription of 20 ms, userdata 42.
  std::memset(mem() + 6000, 0, 48);
  put_u64(6000, 42);
  put_u32(6016, 1);           // monotonic
  put_u64(6024, 20'000'000);  // 20 ms
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(wasi("poll_oneoff", {6000, 7000, 1, 4000}), kSuccess);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 20ms);
  EXPECT_EQ(u32_at(4000), 1u);
  uint64_t userdata;
  std::memcpy(&userdata, mem() + 7000, 8);
  EXPECT_EQ(userdata, 42u);
  EXPECT_EQ(mem()[7010], 0u);  // clock event
  EXPECT_EQ(wasi("poll_oneoff", {6000, 7000, 0, 4000}), kInval);
  // More subscriptions than a call may pass (4096): refused before the host gathers any event.
  EXPECT_EQ(wasi("poll_oneoff", {0, 0, 4097, 4000}), kInval);
}

TEST_F(WasiProbe, ASleepPastTheCallTimeoutFailsTheCallAsATimeLimit) {
  WasmLimits limits;
  limits.call_time_limit = 100ms;
  start(limits);
  std::memset(mem() + 6000, 0, 48);
  put_u32(6016, 1);
  put_u64(6024, 3'600'000'000'000ull);  // an hour
  const auto t0 = std::chrono::steady_clock::now();
  CallOutcome o = call("w_poll_oneoff", {6000, 7000, 1, 4000});
  EXPECT_EQ(o.status, CallStatus::kTimeLimit) << o.message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
}

TEST_F(WasiProbe, InterruptEndsASleep) {
  start();
  std::memset(mem() + 6000, 0, 48);
  put_u32(6016, 1);
  put_u64(6024, 3'600'000'000'000ull);
  std::thread stopper([this] {
    std::this_thread::sleep_for(50ms);
    g_->interrupt();
  });
  CallOutcome o = call("w_poll_oneoff", {6000, 7000, 1, 4000});
  stopper.join();
  EXPECT_EQ(o.status, CallStatus::kTrap);
  EXPECT_NE(o.message.find("stopping"), std::string::npos) << o.message;
}

// ---- End to end, with the broker ------------------------------------------------------------

TEST_F(GuestHostTest, ProcExitEndsTheCallLikeATrap) {
  GuestHost* h = start(options("exiter", "wasi_probe_guest"));
  ASSERT_TRUE(h);
  send("guest.in", {text_message("x")});
  // Each delivery exits: the batch is abandoned, the instance replaced, until the message is
  // dead-lettered; the daemon carries on.
  auto dead = dead_letters(1);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "x");
  EXPECT_TRUE(eventually([&] { return h->stats().traps == 3u; })) << h->stats().traps;
  EXPECT_TRUE(logged("proc_exit(3): the guest exited"));
  send("guest.in", {text_message("ok")});
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 1; }));
  EXPECT_EQ(h->stats().instantiations, 4u);
  EXPECT_EQ(h->stats().traps, 3u);
}

TEST_F(GuestHostTest, APrintFloodIsCountedInTheGuestStats) {
  GuestHost* h = start(options("flooder", "wasi_probe_guest"));
  ASSERT_TRUE(h);
  send("guest.in", {text_message("f")});
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 1; }));
  const GuestStats s = h->stats();
  EXPECT_EQ(s.output_lines + s.output_lines_dropped, 1000u);
  EXPECT_GT(s.output_lines_dropped, 0u);
  EXPECT_EQ(s.output_bytes_dropped, s.output_lines_dropped * 4);
  EXPECT_TRUE(logged("guest 'flooder' stdout: line"));
  // The next line that passes says how many were dropped.
  std::this_thread::sleep_for(50ms);
  send("guest.in", {text_message("f")});
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_TRUE(logged("of its output dropped: over 100 lines per second"));
}

class WasiCGuestTest : public GuestHostTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_EXAMPLE_GUESTS_BUILT
    GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
    GuestHostTest::SetUp();
  }
};

TEST_F(WasiCGuestTest, ACGuestBuiltWithWasiLibcRunsAndPrints) {
  GuestOptions o = options("wasi-c", "wasi_guest");
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
  EXPECT_EQ(text_of(got[0]), "one");
  for (const char* key : {"time-ok", "entropy-ok", "slept"}) {
    const std::string* v = find_metadata(got[0], key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(*v, "1") << key;
  }
  const std::string* greeting = find_metadata(got[0], "greeting");
  ASSERT_NE(greeting, nullptr);
  EXPECT_EQ(*greeting, "hello from env");
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_TRUE(logged("guest 'wasi-c' stdout: batch 1 of "));
  EXPECT_TRUE(logged("greeting hello from env"));
  EXPECT_TRUE(logged("guest 'wasi-c' stderr: to stderr"));
  EXPECT_EQ(h->stats().traps, 0u);
  EXPECT_GE(h->stats().output_lines, 2u);
}

}  // namespace
}  // namespace witmq::guest
