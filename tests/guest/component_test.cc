// Component guests: components built with jco from the project's wit/ (a C guest wrapped alone,
// and a C guest using printf and time wrapped with the WASI preview1 reactor adapter) run end to
// end with the real broker; components that are not for the messaging world, import what witmq
// does not offer, or are malformed or hostile are refused with a clear error and never crash.
#include "guest/component.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>

#include "guest/guest_fixture.h"
#include "guest/guest_instance.h"

namespace witmq::guest {
namespace {

using namespace testing;  // NOLINT

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// ---- a small encoder for hand-made components ----------------------------------------------

void leb(std::vector<uint8_t>& out, uint64_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    out.push_back(v ? (b | 0x80) : b);
  } while (v);
}
void str(std::vector<uint8_t>& out, std::string_view s) {
  leb(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}
void section(std::vector<uint8_t>& out, uint8_t id, const std::vector<uint8_t>& body) {
  out.push_back(id);
  leb(out, body.size());
  out.insert(out.end(), body.begin(), body.end());
}
std::vector<uint8_t> preamble() { return {0x00, 'a', 's', 'm', 0x0d, 0x00, 0x01, 0x00}; }

constexpr const char* kGuestInterface = "wasi:messaging/messaging-guest@0.2.0-draft";

// A component around the core module `core` (no imports): instantiates it, lifts its configure
// and handler (the core exports named `configure_export` and `handler_export`) with its memory
// and cabi_realloc, and exports them as the messaging-guest interface.
std::vector<uint8_t> wrap_core(const std::vector<uint8_t>& core,
                               const std::string& configure_export = abi_names::kConfigure,
                               const std::string& handler_export = abi_names::kHandler) {
  std::vector<uint8_t> c = preamble();
  section(c, 1, core);
  {  // core instance 0 = instantiate module 0
    std::vector<uint8_t> b;
    leb(b, 1);
    b.push_back(0x00);
    leb(b, 0);
    leb(b, 0);
    section(c, 2, b);
  }
  {  // core aliases: func 0 configure, func 1 handler, func 2 cabi_realloc, memory 0
    std::vector<uint8_t> b;
    leb(b, 4);
    for (const std::string& name :
         {configure_export, handler_export, std::string(abi_names::kRealloc)}) {
      b.insert(b.end(), {0x00, 0x00, 0x01});
      leb(b, 0);
      str(b, name);
    }
    b.insert(b.end(), {0x00, 0x02, 0x01});
    leb(b, 0);
    str(b, "memory");
    section(c, 6, b);
  }
  {  // type 0: func () (the host checks the core signatures)
    std::vector<uint8_t> b;
    leb(b, 1);
    b.insert(b.end(), {0x40, 0x00, 0x01, 0x00});
    section(c, 7, b);
  }
  {  // canon lift: func 0 = configure, func 1 = handler
    std::vector<uint8_t> b;
    leb(b, 2);
    for (uint32_t f = 0; f < 2; ++f) {
      b.insert(b.end(), {0x00, 0x00});
      leb(b, f);
      leb(b, 2);
      b.push_back(0x03);  // memory 0
      leb(b, 0);
      b.push_back(0x04);  // realloc
      leb(b, 2);
      leb(b, 0);  // type 0
    }
    section(c, 8, b);
  }
  {  // instance 0 = { configure: func 0, handler: func 1 }
    std::vector<uint8_t> b;
    leb(b, 1);
    b.push_back(0x01);
    leb(b, 2);
    for (uint32_t f = 0; f < 2; ++f) {
      b.push_back(0x00);
      str(b, f == 0 ? "configure" : "handler");
      b.push_back(0x01);
      leb(b, f);
    }
    section(c, 5, b);
  }
  {  // export the interface
    std::vector<uint8_t> b;
    leb(b, 1);
    b.push_back(0x00);
    str(b, kGuestInterface);
    b.push_back(0x05);
    leb(b, 0);
    b.push_back(0x00);
    section(c, 11, b);
  }
  return c;
}

Result<CoreLink> read(const std::vector<uint8_t>& bytes) {
  return read_component("test.wasm", bytes, component_requirements().offered_imports);
}

std::string load_error(const std::vector<uint8_t>& bytes, WasmLimits limits = {}) {
  auto link = read(bytes);
  if (!link.ok()) return link.error().message;
  auto m = WasmModule::compile_linked("test.wasm", *link, component_requirements(), limits);
  return m.ok() ? std::string() : m.error().message;
}

// ---- hand-made components ---------------------------------------------------------------------

TEST(ComponentReaderTest, RecognizesTheComponentPreamble) {
  EXPECT_TRUE(is_component(preamble()));
  EXPECT_FALSE(is_component(read_bytes(wasm_path("ok_guest"))));
  EXPECT_FALSE(is_component(std::vector<uint8_t>{0x00, 'a', 's'}));
}

TEST(ComponentReaderTest, AcceptsWasiAtAny02VersionAndMessagingExactly) {
  EXPECT_EQ(component_host_module("wasi:io/streams@0.2.12"), "wasi:io/streams@0.2");
  EXPECT_EQ(component_host_module("wasi:io/streams@0.2.0"), "wasi:io/streams@0.2");
  EXPECT_EQ(component_host_module("wasi:io/streams@0.2.3-rc.1"), "wasi:io/streams@0.2");
  EXPECT_EQ(component_host_module("wasi:io/streams@0.3.0"), "");
  EXPECT_EQ(component_host_module("wasi:io/streams"), "");
  EXPECT_EQ(component_host_module("acme:io/streams@0.2.0"), "");
  EXPECT_EQ(component_host_module("wasi:messaging/producer@0.2.0-draft"),
            "wasi:messaging/producer@0.2.0-draft");
  EXPECT_EQ(component_host_module("wasi:messaging/producer@0.2.1"), "");
}

TEST(ComponentReaderTest, AHandMadeComponentRunsItsCoreModule) {
  auto link = read(wrap_core(read_bytes(wasm_path("ok_guest"))));
  ASSERT_TRUE(link.ok()) << link.error().message;
  auto module = WasmModule::compile_linked("ok.component", *link, component_requirements(), {});
  ASSERT_TRUE(module.ok()) << module.error().message;
  InstanceContext ctx;
  ctx.guest_name = "ok";
  auto g = GuestInstance::create(*module, ctx);
  ASSERT_TRUE(g.ok()) << g.error().message;
  GuestConfiguration gc;
  CallReport r = (*g)->configure(&gc);
  ASSERT_TRUE(r.returned_ok()) << r.message;
  ASSERT_EQ(gc.channels.size(), 1u);
  EXPECT_EQ(gc.channels[0], "guest.in");
  r = (*g)->handle({text_message("a"), text_message("b")});
  EXPECT_TRUE(r.returned_ok()) << r.message;
}

TEST(ComponentReaderTest, LiftsWhoseCoreSignatureDoesNotMatchAreRefused) {
  // configure lifted from the core handler: (param i32 i32) (result i32), not (result i32).
  const std::string e = load_error(
      wrap_core(read_bytes(wasm_path("ok_guest")), abi_names::kHandler, abi_names::kHandler));
  EXPECT_NE(e.find("'" + std::string(abi_names::kConfigure) +
                   "' has type (func (param i32 i32) "
                   "(result i32)), expected (func (result i32))"),
            std::string::npos)
      << e;
}

TEST(ComponentReaderTest, AWorldOtherThanMessagingIsRefused) {
  const std::string e = load_error(preamble());
  EXPECT_NE(e.find("does not export wasi:messaging/messaging-guest@0.2.0-draft: its world is not "
                   "`messaging`"),
            std::string::npos)
      << e;
  // An export the messaging world does not have.
  std::vector<uint8_t> c = wrap_core(read_bytes(wasm_path("ok_guest")));
  std::vector<uint8_t> b;
  leb(b, 1);
  b.push_back(0x00);
  str(b, "wasi:http/incoming-handler@0.2.0");
  b.push_back(0x05);
  leb(b, 0);
  b.push_back(0x00);
  section(c, 11, b);
  const std::string e2 = load_error(c);
  EXPECT_NE(e2.find("exports \"wasi:http/incoming-handler@0.2.0\", which the messaging world "
                    "does not"),
            std::string::npos)
      << e2;
}

// A component that imports `interface` (an empty instance type) and lowers its function `func`.
std::vector<uint8_t> importing(const std::string& interface, const std::string& func) {
  std::vector<uint8_t> c = preamble();
  std::vector<uint8_t> b;
  leb(b, 1);
  b.insert(b.end(), {0x42, 0x00});  // type 0: (instance)
  section(c, 7, b);
  b.clear();
  leb(b, 1);
  b.push_back(0x00);
  str(b, interface);
  b.push_back(0x05);
  leb(b, 0);
  section(c, 10, b);
  b.clear();
  leb(b, 1);
  b.insert(b.end(), {0x01, 0x00});  // alias func, instance export
  leb(b, 0);
  str(b, func);
  section(c, 6, b);
  b.clear();
  leb(b, 1);
  b.insert(b.end(), {0x01, 0x00});
  leb(b, 0);
  leb(b, 0);
  section(c, 8, b);
  return c;
}

TEST(ComponentReaderTest, ImportsWitmqDoesNotOfferAreRefusedByName) {
  std::string e = load_error(importing("wasi:sockets/tcp@0.2.0", "[method]tcp-socket.connect"));
  EXPECT_NE(e.find("imports interface \"wasi:sockets/tcp@0.2.0\", which witmq does not offer"),
            std::string::npos)
      << e;
  e = load_error(importing("wasi:io/streams@0.2.3", "[method]output-stream.splice"));
  EXPECT_NE(e.find("imports function \"[method]output-stream.splice\" of interface "
                   "\"wasi:io/streams@0.2.3\", which witmq does not offer"),
            std::string::npos)
      << e;
  e = load_error(importing("wasi:messaging/producer@0.2.0-draft", "publish"));
  EXPECT_NE(e.find("imports function \"publish\" of interface "
                   "\"wasi:messaging/producer@0.2.0-draft\""),
            std::string::npos)
      << e;
}

TEST(ComponentReaderTest, HostileCountsNestingAndIndicesAreRefused) {
  // A count far beyond the section's bytes.
  std::vector<uint8_t> c = preamble();
  std::vector<uint8_t> b;
  leb(b, 0xffffffffu);
  section(c, 7, b);
  EXPECT_NE(load_error(c).find("count 4294967295 exceeds the bytes left"), std::string::npos)
      << load_error(c);

  // Instance types nested 10,000 deep.
  c = preamble();
  b.clear();
  leb(b, 1);
  for (int i = 0; i < 10'000; ++i) b.insert(b.end(), {0x42, 0x01, 0x01});
  b.insert(b.end(), {0x42, 0x00});
  section(c, 7, b);
  EXPECT_NE(load_error(c).find("types nested deeper than 64"), std::string::npos) << load_error(c);

  // A lift of a core function that does not exist.
  c = preamble();
  b.clear();
  leb(b, 1);
  b.insert(b.end(), {0x00, 0x00});
  leb(b, 99);
  leb(b, 0);
  leb(b, 0);
  section(c, 8, b);
  EXPECT_NE(load_error(c).find("core function index 99 is out of range (0 defined)"),
            std::string::npos)
      << load_error(c);

  // A core instantiation of a module that does not exist, and an unsupported canon.
  c = preamble();
  b.clear();
  leb(b, 1);
  b.push_back(0x00);
  leb(b, 7);
  leb(b, 0);
  section(c, 2, b);
  EXPECT_NE(load_error(c).find("core module index 7 is out of range"), std::string::npos);
  c = preamble();
  b.clear();
  leb(b, 1);
  b.push_back(0x02);  // resource.new
  leb(b, 0);
  section(c, 8, b);
  EXPECT_NE(load_error(c).find("canonical function 0x02 is not supported"), std::string::npos);
  c = preamble();
  section(c, 9, {0x00, 0x00});
  EXPECT_NE(load_error(c).find("component start functions are not supported"), std::string::npos);
}

TEST(ComponentReaderTest, OneModuleInstantiatedTwiceHasTwoMemoriesAndIsRefused) {
  std::vector<uint8_t> c = wrap_core(read_bytes(wasm_path("ok_guest")));
  std::vector<uint8_t> b;
  leb(b, 1);
  b.push_back(0x00);
  leb(b, 0);
  leb(b, 0);
  section(c, 2, b);
  const std::string e = load_error(c);
  EXPECT_NE(e.find("its core instances define 2 memories"), std::string::npos) << e;
}

TEST(ComponentReaderTest, ManyInstantiationsAreBoundedWhateverTheBinarySays) {
  // 2,000 instantiations of one module in a few kilobytes.
  std::vector<uint8_t> c = preamble();
  section(c, 1, read_bytes(wasm_path("ok_guest")));
  std::vector<uint8_t> b;
  leb(b, 2'000);
  for (int i = 0; i < 2'000; ++i) b.insert(b.end(), {0x00, 0x00, 0x00});
  section(c, 2, b);
  const std::string e = load_error(c);
  EXPECT_NE(e.find("more than 1000 core instances"), std::string::npos) << e;
}

TEST(ComponentReaderTest, EntriesThatCopyALongNameAreBoundedByTheBinarySize) {
  // A core function aliased under a 64 KiB name, lifted 20,000 times (5 bytes a lift): each
  // lift would hold its own copy of the name, 1.3 GB from a binary of 300 KB.
  std::vector<uint8_t> c = preamble();
  section(c, 1, read_bytes(wasm_path("ok_guest")));
  std::vector<uint8_t> b;
  leb(b, 1);
  b.insert(b.end(), {0x00, 0x00, 0x00});
  section(c, 2, b);
  b.clear();
  leb(b, 1);
  b.insert(b.end(), {0x00, 0x00, 0x01, 0x00});
  str(b, std::string(64 << 10, 'x'));
  section(c, 6, b);
  b.clear();
  constexpr int kLifts = 20'000;
  leb(b, kLifts);
  for (int i = 0; i < kLifts; ++i) b.insert(b.end(), {0x00, 0x00, 0x00, 0x00, 0x00});
  section(c, 8, b);
  const std::string e = load_error(c);
  EXPECT_NE(e.find("its definitions would make the reader hold more than"), std::string::npos) << e;

  // The same through a nested component that re-exports one imported function under many names.
  c = preamble();
  std::vector<uint8_t> nested = preamble();
  b.clear();
  leb(b, 1);
  b.push_back(0x00);
  str(b, std::string(64 << 10, 'y'));
  b.insert(b.end(), {0x01, 0x00});  // a function of type 0
  section(nested, 10, b);
  b.clear();
  leb(b, kLifts);
  for (int i = 0; i < kLifts; ++i) {
    b.push_back(0x00);
    str(b, std::to_string(i));
    b.insert(b.end(), {0x01, 0x00, 0x00});  // func 0, no type ascription
  }
  section(nested, 11, b);
  section(c, 4, nested);
  const std::string e2 = load_error(c);
  EXPECT_NE(e2.find("its definitions would make the reader hold more than"), std::string::npos)
      << e2;
}

// The core module wasi_p2_probe_guest in a hand-made component that imports WASI 0.2 stdout and
// streams and lowers get-stdout, blocking-write-and-flush and the output-stream drop into it.
std::vector<uint8_t> probe_component() {
  std::vector<uint8_t> c = preamble();
  std::vector<uint8_t> b;
  leb(b, 1);
  b.insert(b.end(), {0x42, 0x00});  // type 0: (instance)
  section(c, 7, b);
  b.clear();
  leb(b, 2);
  for (const char* interface : {"wasi:cli/stdout@0.2.0", "wasi:io/streams@0.2.0"}) {
    b.push_back(0x00);
    str(b, interface);
    b.push_back(0x05);
    leb(b, 0);
  }
  section(c, 10, b);  // instances 0 and 1
  section(c, 1, read_bytes(wasm_path("wasi_p2_probe_guest")));
  b.clear();
  leb(b, 3);
  b.insert(b.end(), {0x01, 0x00, 0x00});  // func 0 = stdout.get-stdout
  str(b, "get-stdout");
  b.insert(b.end(), {0x01, 0x00, 0x01});  // func 1 = streams.blocking-write-and-flush
  str(b, "[method]output-stream.blocking-write-and-flush");
  b.insert(b.end(), {0x03, 0x00, 0x01});  // type 1 = streams.output-stream
  str(b, "output-stream");
  section(c, 6, b);
  b.clear();
  leb(b, 3);
  b.insert(b.end(), {0x01, 0x00, 0x00, 0x00});  // core func 0 = lower func 0
  b.insert(b.end(), {0x01, 0x00, 0x01, 0x00});  // core func 1 = lower func 1
  b.insert(b.end(), {0x03, 0x01});              // core func 2 = resource.drop type 1
  section(c, 8, b);
  b.clear();
  leb(b, 2);
  b.push_back(0x01);  // core instance 0 = { get-stdout, write, drop }
  leb(b, 3);
  const char* names[] = {"get-stdout", "write", "drop"};
  for (uint32_t f = 0; f < 3; ++f) {
    str(b, names[f]);
    b.push_back(0x00);
    leb(b, f);
  }
  b.push_back(0x00);  // core instance 1 = instantiate module 0 with "host" = instance 0
  leb(b, 0);
  leb(b, 1);
  str(b, "host");
  b.push_back(0x12);
  leb(b, 0);
  section(c, 2, b);
  b.clear();
  leb(b, 4);  // core funcs 3, 4, 5 and memory 0 from core instance 1
  for (const char* name : {abi_names::kConfigure, abi_names::kHandler, abi_names::kRealloc}) {
    b.insert(b.end(), {0x00, 0x00, 0x01});
    leb(b, 1);
    str(b, name);
  }
  b.insert(b.end(), {0x00, 0x02, 0x01});
  leb(b, 1);
  str(b, "memory");
  section(c, 6, b);
  b.clear();
  leb(b, 1);
  b.insert(b.end(), {0x40, 0x00, 0x01, 0x00});  // type 2: func ()
  section(c, 7, b);
  b.clear();
  leb(b, 2);  // funcs 2, 3 = lift configure, handler
  for (uint32_t f = 3; f < 5; ++f) {
    b.insert(b.end(), {0x00, 0x00});
    leb(b, f);
    leb(b, 2);
    b.push_back(0x03);
    leb(b, 0);
    b.push_back(0x04);
    leb(b, 5);
    leb(b, 2);
  }
  section(c, 8, b);
  b.clear();
  leb(b, 1);
  b.push_back(0x01);  // instance 2 = { configure, handler }
  leb(b, 2);
  for (uint32_t f = 0; f < 2; ++f) {
    b.push_back(0x00);
    str(b, f == 0 ? "configure" : "handler");
    b.push_back(0x01);
    leb(b, 2 + f);
  }
  section(c, 5, b);
  b.clear();
  leb(b, 1);
  b.push_back(0x00);
  str(b, kGuestInterface);
  b.push_back(0x05);
  leb(b, 2);
  b.push_back(0x00);
  section(c, 11, b);
  return c;
}

// Runs the probe component's handler once with `op`; `lines` gets its stdout.
CallReport run_probe(char op, std::vector<std::string>* lines) {
  auto link = read(probe_component());
  EXPECT_TRUE(link.ok()) << link.error().message;
  if (!link.ok()) return {CallStatus::kTrap, "unreadable", {}};
  auto module = WasmModule::compile_linked("p2", *link, component_requirements(), {});
  EXPECT_TRUE(module.ok()) << module.error().message;
  if (!module.ok()) return {CallStatus::kTrap, "refused", {}};
  InstanceContext ctx;
  ctx.guest_name = "p2";
  ctx.output = std::make_shared<GuestOutput>(
      "p2", [lines](bool, std::string_view line) { lines->emplace_back(line); });
  auto g = GuestInstance::create(*module, ctx);
  EXPECT_TRUE(g.ok()) << g.error().message;
  if (!g.ok()) return {CallStatus::kTrap, "no instance", {}};
  GuestConfiguration gc;
  CallReport r = (*g)->configure(&gc);
  EXPECT_TRUE(r.returned_ok()) << r.message;
  return (*g)->handle({text_message(std::string(1, op))});
}

TEST(ComponentWasiTest, StdoutStreamWritesBecomeLogLines) {
  std::vector<std::string> lines;
  CallReport r = run_probe('w', &lines);
  EXPECT_TRUE(r.returned_ok()) << r.message;
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("hello p2"), std::string::npos) << lines[0];
}

TEST(ComponentWasiTest, ResourceHandleAbuseTrapsTheCallOnly) {
  std::vector<std::string> lines;
  CallReport r = run_probe('h', &lines);
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("WASI resource handles: 256 are live"), std::string::npos) << r.message;
  r = run_probe('d', &lines);
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("handle 77 is not live"), std::string::npos) << r.message;
  r = run_probe('t', &lines);
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("is not live"), std::string::npos) << r.message;
  r = run_probe('o', &lines);
  EXPECT_EQ(r.status, CallStatus::kTrap);
  EXPECT_NE(r.message.find("outside the guest's memory"), std::string::npos) << r.message;
  EXPECT_TRUE(lines.empty());
}

// Every truncation and many random mutations of `bytes`: each is refused or loads; none crashes.
void survive_damage(const std::vector<uint8_t>& bytes) {
  size_t refused = 0;
  const size_t step = std::max<size_t>(1, bytes.size() / 400);
  for (size_t n = 0; n < bytes.size(); n += step) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    refused += !load_error(cut).empty();
  }
  EXPECT_GT(refused, 0u);
  std::mt19937 rng(13);
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> m = bytes;
    for (int k = 0; k < 4; ++k) {
      m[std::uniform_int_distribution<size_t>(8, m.size() - 1)(rng)] = static_cast<uint8_t>(rng());
    }
    load_error(m);
  }
}

TEST(ComponentReaderTest, TruncatedAndMutatedComponentsNeverCrash) {
  survive_damage(wrap_core(read_bytes(wasm_path("ok_guest"))));
}

// ---- components built with jco -----------------------------------------------------------------

class ComponentGuestsTest : public GuestHostTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_COMPONENT_GUESTS_BUILT
    GTEST_SKIP() << "no wasm32-wasi clang or no node/npm: the component guests were not built";
#endif
    GuestHostTest::SetUp();
  }
  bool logged(std::string_view text) {
    std::lock_guard lock(log_mu_);
    for (const auto& l : log_) {
      if (l.find(text) != std::string::npos) return true;
    }
    return false;
  }
};

TEST_F(ComponentGuestsTest, EchoWrappedWithJcoForwardsMessages) {
  GuestHost* h = start(options("echo", "component_echo"));
  ASSERT_TRUE(h);
  send("orders", {text_message("order-1"), text_message("order-2")});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("orders.audit", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return got.size() >= 2;
  }));
  EXPECT_EQ(text_of(got[0]), "order-1");
  EXPECT_EQ(text_of(got[1]), "order-2");
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(ComponentGuestsTest, PrintfAndTimeThroughThePreview1AdapterAndWasi02) {
  GuestHost* h = start(options("hello", "component_hello"));
  ASSERT_TRUE(h);
  send("hello.in", {text_message("hi")});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("hello.out", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return !got.empty();
  }));
  EXPECT_EQ(text_of(got[0]), "hi");
  const std::string* seen = find_metadata(got[0], "seen-at");
  ASSERT_NE(seen, nullptr);
  EXPECT_GT(std::stoll(*seen), 1'600'000'000);  // wall-clock.now through the adapter
  EXPECT_TRUE(eventually([&] { return logged("guest 'hello' stdout: hello: 1 message(s) at "); }));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(ComponentGuestsTest, TheWasiLibcGuestAsAComponentUsesEnvRandomAndSleep) {
  GuestOptions o = options("wasi-c", "component_wasi");
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
  EXPECT_TRUE(logged("guest 'wasi-c' stderr: to stderr"));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(ComponentGuestsTest, TheLimitsHoldAcrossTheCoreInstances) {
  // The memory limit: the main module's memory starts above one page.
  WasmLimits small;
  small.memory_pages = 1;
  auto m = load_guest_module(wasm_path("component_hello"), small);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("above the memory limit of 1 pages"), std::string::npos)
      << m.error().message;
  // The instruction budget: one per call for all the core instances. The handler's printf runs
  // in the adapter's core instance (called from the main one through the shim's table): a budget
  // that initialization and configure fit in but printf does not fails the handler's call.
  WasmLimits limits;
  limits.instruction_budget = 2'000;  // measured: the handler needs about 15,000
  auto module = load_guest_module(wasm_path("component_hello"), limits);
  ASSERT_TRUE(module.ok()) << module.error().message;
  InstanceContext ctx;
  ctx.guest_name = "hello";
  ctx.broker = broker_.get();
  auto g = GuestInstance::create(*module, ctx);
  ASSERT_TRUE(g.ok()) << g.error().message;
  GuestConfiguration gc;
  CallReport r = (*g)->configure(&gc);
  ASSERT_TRUE(r.returned_ok()) << r.message;
  r = (*g)->handle({text_message("x")});
  EXPECT_EQ(r.status, CallStatus::kBudgetExhausted) << r.message;
  EXPECT_NE(r.message.find("instruction budget of 2000 exhausted"), std::string::npos) << r.message;
  EXPECT_FALSE((*g)->usable());
}

TEST_F(ComponentGuestsTest, TheAheadOfTimeTierRefusesAComponentSayingSo) {
  EngineOptions aot;
  aot.engine = Engine::kAot;
  auto m = load_guest_module(wasm_path("component_echo"), WasmLimits{}, aot);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("a component runs in the interpreter only"), std::string::npos)
      << m.error().message;
  EXPECT_TRUE(load_guest_module(wasm_path("component_echo"), WasmLimits{}).ok());
}

TEST_F(ComponentGuestsTest, JcoComponentsSurviveTruncationAndMutation) {
  survive_damage(read_bytes(wasm_path("component_echo")));
}

}  // namespace
}  // namespace witmq::guest
