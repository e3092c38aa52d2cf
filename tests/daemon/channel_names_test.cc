// max-channel-name-bytes against the real witmqd: a new channel's name is held to it on every
// path that creates channels (send, receive, declare, HTTP publish), with an error naming the
// key; existing channels and other clients are unaffected.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "http_client.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

TEST(ChannelNamesTest, NewChannelsAreHeldToMaxChannelNameBytes) {
  Daemon d({"--set", "max-channel-name-bytes=12"});
  Conn c(d.port());
  c.hello();
  EXPECT_FRAME(c.call(net::Send{"twelve-bytes", {text_message("ok")}}), kSendOk);

  auto refused = [](const Frame& f) {
    ASSERT_FRAME(f, kError);
    const Error e = *error_of(f);
    EXPECT_EQ(e.code, ErrorCode::kInvalidArgument);
    EXPECT_NE(e.message.find("is 13 bytes, above max-channel-name-bytes 12"), std::string::npos)
        << e.message;
  };
  refused(c.call(net::Send{"thirteen-byte", {text_message("x")}}));
  refused(c.call(net::SubscribeTryReceive{"thirteen-byte", 0}));
  refused(c.call(net::AdminRequest{net::AdminOp::kChannelDeclare,
                                   nlohmann::json{{"name", "thirteen-byte"}}.dump()}));
  HttpReply r = http_request(d.http_port(), "POST", "/v1/channels/thirteen-byte/messages", "x");
  EXPECT_EQ(r.status, 400u) << r;
  EXPECT_NE(r.error_message().find("max-channel-name-bytes"), std::string::npos) << r;

  // The connection and the existing channel carry on.
  Frame got = c.call(net::SubscribeTryReceive{"twelve-bytes", 2000});
  ASSERT_FRAME(got, kSubscribeTryReceiveOk);
  EXPECT_TRUE(std::get<net::SubscribeTryReceiveOk>(got.body).messages.has_value());
}

TEST(ChannelNamesTest, TheLimitIsCheckedAtStart) {
  RunResult r = run_witmqd({"--set", "max-channel-name-bytes=201", "--check-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("max-channel-name-bytes (from --set): 201 is out of range 1..200"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace witmq::daemon::testing
