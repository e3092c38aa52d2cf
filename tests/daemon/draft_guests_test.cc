// A guest of the upstream wasi:messaging draft's messaging-core world inside the real witmqd:
// channels from its config entry, messages in and out over TCP, and a draft guest without
// "channels" or a module of no world refused alone.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

std::string wasm(const std::string& stem) {
  return std::string(WITMQ_GUEST_WASM_DIR) + "/" + stem + ".wasm";
}

std::string write_config(const json& config) {
  auto path = std::filesystem::temp_directory_path() /
              ("witmqd-draft-" + std::to_string(::getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".json");
  std::ofstream(path) << config.dump(2);
  return path.string();
}

TEST(DraftGuestsTest, AMessagingCoreGuestMovesMessagesAndBadOnesAreRefusedAlone) {
#ifndef WITMQ_C_TEST_GUESTS_BUILT
  GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
  const std::string config = write_config(
      {{"guests",
        {{{"name", "draft"}, {"module", wasm("draft_forward_guest")}, {"channels", {"draft.in"}}},
         {{"name", "no-channels"}, {"module", wasm("draft_forward_guest")}},
         {{"name", "no-world"}, {"module", wasm("no_world_guest")}}}}});
  Daemon d({"--config", config});
  std::filesystem::remove(config);
  EXPECT_TRUE(d.wait_for_log("guest 'no-channels': refused")) << d.log();
  EXPECT_TRUE(d.wait_for_log("implements the world messaging-core, which has no configure"))
      << d.log();
  EXPECT_TRUE(d.wait_for_log("guest 'no-world': refused")) << d.log();
  EXPECT_TRUE(d.wait_for_log("matches no world the host serves")) << d.log();

  Conn producer(d.port());
  producer.hello();
  Conn consumer(d.port());
  consumer.hello();
  std::vector<Message> batch;
  for (int i = 0; i < 3; ++i) batch.push_back(text_message("m" + std::to_string(i)));
  EXPECT_FRAME(producer.call(net::Send{"draft.in", std::move(batch)}), kSendOk);

  std::vector<std::string> got;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.size() < 3 && std::chrono::steady_clock::now() < deadline) {
    Frame f = consumer.call(net::SubscribeTryReceive{"draft.out", 1000}, 5s);
    auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
    ASSERT_NE(ok, nullptr) << describe(f);
    if (!ok->messages) continue;
    for (const auto& m : *ok->messages) {
      got.push_back(text(m));
      const std::string* from = find_metadata(m, "from");
      ASSERT_NE(from, nullptr);
      EXPECT_EQ(*from, "draft.in");
      EXPECT_FRAME(consumer.call(net::CompleteMessage{receipt_of(m)}), kCompleteMessageOk);
    }
  }
  EXPECT_EQ(got, (std::vector<std::string>{"fwd:m0", "fwd:m1", "fwd:m2"}));
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
