// A guest of the upstream wasi:messaging draft's messaging-core world inside the real witmqd:
// channels from its config entry, messages in and out over TCP, and a draft guest without
// "channels" or a module of no world refused alone.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "guest_daemon.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

using nlohmann::json;

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

  const std::vector<Message> got = receive_messages(consumer, "draft.out", 3);
  for (const Message& m : got) {
    const std::string* from = find_metadata(m, "from");
    ASSERT_NE(from, nullptr);
    EXPECT_EQ(*from, "draft.in");
  }
  EXPECT_EQ(texts(got), (std::vector<std::string>{"fwd:m0", "fwd:m1", "fwd:m2"}));
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace witmq::daemon::testing
