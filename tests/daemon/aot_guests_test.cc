// Compiled guests ("engine": "aot", docs/GUESTS.md "Two tiers") inside the real witmqd: compiled
// once into <data-dir>/guest-cache, taken from there after a restart, compiled again when the
// cached code was tampered with, refused naming the step when compiling fails, and failing alone
// when they trap.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "daemon_process.h"
#include "guest_daemon.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

std::vector<std::filesystem::path> cached_objects(const std::string& data_dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(data_dir + "/guest-cache", ec)) {
    if (e.path().extension() == ".so") out.push_back(e.path());
  }
  return out;
}

TEST(AotGuestsTest, ACompiledGuestRunsIsCachedAcrossRestartsAndTamperingIsRefused) {
  const std::string config =
      write_config({{"guests",
                     {{{"name", "forwarder"}, {"module", wasm("forward_guest")}, {"engine", "aot"}},
                      {{"name", "oob"},
                       {"module", wasm("oob_guest")},
                       {"engine", "aot"},
                       {"channels", {"oob.in"}}},
                      {{"name", "slow"},
                       {"module", wasm("many_locals_guest")},
                       {"engine", "aot"},
                       {"compile-timeout-ms", 1},
                       {"channels", {"slow.in"}}}}}});
  Daemon d({"--config", config});
  // Compiling past its time limit refuses that guest alone, naming the step.
  EXPECT_TRUE(d.wait_for_log("guest 'slow': refused")) << d.log();
  EXPECT_NE(d.log().find("compiled tier: wasm2c timed out after 1 ms"), std::string::npos)
      << d.log();
  EXPECT_TRUE(d.wait_for_log("module '" + wasm("forward_guest") + "': compiled in")) << d.log();
  EXPECT_EQ(forward_round(d.port(), 5, "a", 30s),
            (std::vector<std::string>{"a0", "a1", "a2", "a3", "a4"}));

  // An out-of-bounds access fails that guest's batch, never the daemon.
  {
    Conn producer(d.port());
    producer.hello();
    EXPECT_FRAME(producer.call(net::Send{"oob.in", {text_message("x")}}), kSendOk);
  }
  EXPECT_TRUE(d.wait_for_log("guest 'oob' instance 0: trap in")) << d.log();
  EXPECT_NE(d.log().find("out of bounds memory or table access"), std::string::npos) << d.log();
  EXPECT_EQ(forward_round(d.port(), 2, "b", 30s), (std::vector<std::string>{"b0", "b1"}));
  EXPECT_EQ(d.stop(), 0) << d.log();
  ASSERT_EQ(cached_objects(d.data_dir()).size(), 2u);  // forwarder and oob

  // A restart compiles nothing.
  d.start();
  EXPECT_TRUE(d.wait_for_log("module '" + wasm("forward_guest") +
                             "': compiled module loaded from the cache"))
      << d.log();
  EXPECT_EQ(d.log().find("': compiled in"), std::string::npos) << d.log();
  EXPECT_EQ(forward_round(d.port(), 2, "c", 30s), (std::vector<std::string>{"c0", "c1"}));
  EXPECT_EQ(d.stop(), 0) << d.log();

  // Someone swaps the cached objects: each is refused by its hash and compiled again.
  const auto objects = cached_objects(d.data_dir());
  ASSERT_EQ(objects.size(), 2u);
  std::filesystem::copy_file(objects[0], objects[1],
                             std::filesystem::copy_options::overwrite_existing);
  d.start();
  EXPECT_TRUE(d.wait_for_log("does not match the hash recorded for it")) << d.log();
  EXPECT_EQ(forward_round(d.port(), 2, "d", 30s), (std::vector<std::string>{"d0", "d1"}));
  EXPECT_EQ(d.stop(), 0) << d.log();
  std::filesystem::remove(config);
}

// The files of the cache entry `object` ("<key>.so"): its key.
std::string key_of(const std::filesystem::path& object) { return object.stem().string(); }

TEST(AotGuestsTest, TheCacheKeepsOnlyConfiguredGuestsAndDamagedEntriesAreCompiledAgain) {
  namespace fs = std::filesystem;
  const json forwarder = {
      {"name", "forwarder"}, {"module", wasm("forward_guest")}, {"engine", "aot"}};
  const json oob = {
      {"name", "oob"}, {"module", wasm("oob_guest")}, {"engine", "aot"}, {"channels", {"oob.in"}}};
  std::string config = write_config({{"guests", {forwarder, oob}}});
  Daemon d({"--config", config});
  EXPECT_TRUE(d.wait_for_log("module '" + wasm("oob_guest") + "': compiled in")) << d.log();
  EXPECT_EQ(d.stop(), 0) << d.log();
  const std::string cache = d.data_dir() + "/guest-cache";
  auto objects = cached_objects(d.data_dir());
  ASSERT_EQ(objects.size(), 2u);

  // What a crash during a build leaves, an entry of a module no guest runs any more, and a file
  // that is not the cache's.
  const std::string stale(64, 'a');
  fs::create_directories(cache + "/build-" + stale + "-Xy12Z9");
  std::ofstream(cache + "/build-" + stale + "-Xy12Z9/module.c") << "int x;";
  std::ofstream(cache + "/" + stale + ".so.tmp") << "half";
  std::ofstream(cache + "/" + stale + ".so") << "old";
  std::ofstream(cache + "/" + stale + ".meta") << "old";
  std::ofstream(cache + "/notes.txt") << "the operator's";
  // Damaged entries: a FIFO where a shared object was (reading it would wait for a writer
  // forever), a directory where metadata was.
  std::string version;  // the first line of the metadata: this witmqd's glue version
  std::getline(std::ifstream(fs::path(objects[0]).replace_extension(".meta")), version);
  for (const fs::path& object : objects) {
    fs::remove(object);
    fs::remove(fs::path(object).replace_extension(".meta"));
  }
  ASSERT_EQ(::mkfifo(objects[0].c_str(), 0600), 0);
  std::ofstream(fs::path(objects[0]).replace_extension(".meta"))
      << version << "\nsha256 " << std::string(64, '0') << "\nframe 100\n";
  fs::create_directories(fs::path(objects[1]).replace_extension(".meta"));

  // Only the forwarder now: it starts (compiled again), the rest of the cache goes.
  std::ofstream(config) << json({{"guests", {forwarder}}}).dump();
  d.start();
  EXPECT_TRUE(d.wait_for_log("module '" + wasm("forward_guest") + "': compiled in")) << d.log();
  EXPECT_NE(d.log().find("is not a regular file"), std::string::npos) << d.log();
  EXPECT_EQ(forward_round(d.port(), 2, "a", 30s), (std::vector<std::string>{"a0", "a1"}));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(cache)) left.push_back(e.path().filename());
  std::sort(left.begin(), left.end());
  objects = cached_objects(d.data_dir());
  ASSERT_EQ(objects.size(), 1u);
  const std::string key = key_of(objects[0]);
  EXPECT_EQ(left, (std::vector<std::string>{key + ".meta", key + ".so", "notes.txt"}));

  // A reload that replaces the forwarder by oob leaves only oob's entry.
  std::ofstream(config) << json({{"guests", {oob}}}).dump();
  d.signal(SIGHUP);
  EXPECT_TRUE(d.wait_for_log("reload done")) << d.log();
  objects = cached_objects(d.data_dir());
  ASSERT_EQ(objects.size(), 1u);
  EXPECT_NE(key_of(objects[0]), key);
  EXPECT_FALSE(fs::exists(cache + "/" + key + ".meta"));
  EXPECT_EQ(d.stop(), 0) << d.log();
  fs::remove(config);
}

TEST(AotGuestsTest, AGuestWhoseMemoryTheHostCannotAllocateIsRefusedInBothTiers) {
  // witmqd inherits an address-space limit of 3 GiB (the soft limit only, so this process can
  // raise it again); the guest's memory is 4 GiB from its first instruction.
  const json small = {{"name", "small"}, {"module", wasm("forward_guest")}};
  json guests = {small};
  for (const char* engine : {"interp", "aot"}) {
    guests.push_back({{"name", std::string("huge-") + engine},
                      {"module", wasm("huge_memory_guest")},
                      {"engine", engine},
                      {"memory-pages", 65536},
                      {"channels", {std::string("huge.") + engine}}});
  }
  const std::string config = write_config({{"guests", guests}});
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &saved), 0);
  rlimit limited = saved;
  limited.rlim_cur = rlim_t{3} << 30;
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &limited), 0);
  std::optional<Daemon> d;
  d.emplace(std::vector<std::string>{"--config", config});
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &saved), 0);
  for (const char* engine : {"interp", "aot"}) {
    EXPECT_TRUE(d->wait_for_log(std::string("guest 'huge-") + engine + "': refused")) << d->log();
  }
  const std::string log = d->log();
  size_t count = 0;
  for (size_t at = log.find("the host cannot allocate the module's memory or tables");
       at != std::string::npos;
       at = log.find("the host cannot allocate the module's memory or tables", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 2u) << log;
  // The daemon and its other guest carry on.
  EXPECT_EQ(forward_round(d->port(), 2, "m", 30s), (std::vector<std::string>{"m0", "m1"}));
  EXPECT_EQ(d->stop(), 0) << d->log();
  std::filesystem::remove(config);
}

// A module whose compile takes seconds (the 160 KB wasi-libc test guest: 10 to 50 s on the
// shared test machine).
TEST(AotGuestsTest, ClientsAreServedWhileAGuestCompilesAtStartAndOnReload) {
#ifndef WITMQ_C_TEST_GUESTS_BUILT
  GTEST_SKIP() << "no wasm32-wasi clang: the C test guests were not built";
#else
  const json slow = {{"name", "slow"}, {"module", wasm("wasi_guest")}, {"engine", "aot"},
                     {"channels", {"slow.in"}}};
  const std::string config = write_config({{"guests", {slow}}});
  const std::string compiled = "module '" + wasm("wasi_guest") + "': compiled in";
  auto ping = [](Daemon& d) {
    Conn c(d.port());
    c.hello();
    EXPECT_FRAME(c.call(net::Send{"ping", {text_message("p")}}), kSendOk);
  };
  {
    // Listening, and answering, before the compile ends.
    Daemon d({"--config", config});
    ping(d);
    EXPECT_EQ(d.log().find(compiled), std::string::npos) << d.log();
    EXPECT_TRUE(d.wait_for_log(compiled, std::chrono::seconds(240))) << d.log();
    EXPECT_TRUE(d.wait_for_log("guest 'slow': 1 instance(s)")) << d.log();
    EXPECT_EQ(d.stop(), 0) << d.log();
  }
  {
    // A reload that compiles: the same.
    std::ofstream(config) << json({{"guests", json::array()}}).dump();
    Daemon d({"--config", config});
    std::ofstream(config) << json({{"guests", {slow}}}).dump();
    d.signal(SIGHUP);
    EXPECT_TRUE(d.wait_for_log("received SIGHUP")) << d.log();
    ping(d);
    EXPECT_EQ(d.log().find(compiled), std::string::npos) << d.log();
    EXPECT_TRUE(d.wait_for_log("reload done", std::chrono::seconds(240))) << d.log();
    EXPECT_NE(d.log().find(compiled), std::string::npos) << d.log();
    EXPECT_EQ(d.stop(), 0) << d.log();
  }
  std::filesystem::remove(config);
#endif
}

TEST(AotGuestsTest, ASigtermDuringACompileEndsTheCompileAndTheDaemon) {
#ifndef WITMQ_C_TEST_GUESTS_BUILT
  GTEST_SKIP() << "no wasm32-wasi clang: the C test guests were not built";
#else
  const json slow = {{"name", "slow"},
                     {"module", wasm("wasi_guest")},
                     {"engine", "aot"},
                     {"channels", {"slow.in"}}};
  const std::string config = write_config({{"guests", {slow}}});
  Daemon d({"--config", config});
  // Once its build directory exists, the compile is under way.
  auto building = [&] {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(d.data_dir() + "/guest-cache", ec)) {
      if (e.path().filename().string().rfind("build-", 0) == 0) return true;
    }
    return false;
  };
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!building() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(building()) << d.log();
  EXPECT_EQ(d.stop(), 0) << d.log();
  EXPECT_TRUE(d.wait_for_log("guest 'slow': refused")) << d.log();
  EXPECT_NE(d.log().find("witmqd is stopping"), std::string::npos) << d.log();
  EXPECT_EQ(d.log().find("': compiled in"), std::string::npos) << d.log();
  EXPECT_NE(d.log().find("witmqd stopped"), std::string::npos) << d.log();
  std::filesystem::remove(config);
#endif
}

}  // namespace
}  // namespace witmq::daemon::testing
