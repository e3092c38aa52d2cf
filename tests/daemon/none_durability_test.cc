// What durability `none` promises, against the real witmqd: its appends skip the write-ahead log,
// so a clean stop (SIGTERM, which flushes) keeps every confirmed message, while a SIGKILL may lose
// what was not flushed yet; either way the daemon comes back, a sequence number is never given
// out twice, and a subscription that had moved past the lost messages still gets new ones.
#include <gtest/gtest.h>

#include <set>

#include "daemon_process.h"
#include "test_client.h"

namespace witmq::daemon::testing {
namespace {

// Sends "<prefix><i>" for i in [0, n), each confirmed.
void send_all(uint16_t port, const std::string& ch, const std::string& prefix, int n) {
  Conn c(port);
  c.hello();
  for (int i = 0; i < n; ++i) {
    Frame f = c.call(net::Send{ch, {text_message(prefix + std::to_string(i))}});
    ASSERT_FRAME(f, kSendOk);
  }
}

// Takes what `ch` has for this client (explicit settlement), completing the first `complete`.
std::vector<Message> take(Conn& c, const std::string& ch, size_t complete) {
  Frame f = c.call(net::SubscribeTryReceive{ch, 0});
  auto* ok = std::get_if<net::SubscribeTryReceiveOk>(&f.body);
  EXPECT_NE(ok, nullptr) << describe(f);
  if (!ok || !ok->messages) return {};
  for (size_t i = 0; i < complete && i < ok->messages->size(); ++i) {
    Frame done = c.call(net::CompleteMessage{receipt_of((*ok->messages)[i])});
    EXPECT_EQ(done.type(), net::FrameType::kCompleteMessageOk) << describe(done);
  }
  return std::move(*ok->messages);
}

uint64_t seq_of(const Message& m) { return std::stoull(meta_value(m, meta::kSequence)); }

TEST(NoneDurabilityTest, CleanStopKeepsEverythingSigkillLosesOnlyUnflushedMessages) {
  Daemon d({"--set", "default-channel={\"durability\": \"none\"}"});
  const std::string ch = "none-promise";

  // Clean stop: every confirmed message is there after the restart.
  send_all(d.port(), ch, "kept", 50);
  ASSERT_EQ(d.stop(), 0);
  d.start();
  std::set<uint64_t> seen;
  {
    Conn c(d.port());
    c.hello();
    auto got = take(c, ch, 50);
    ASSERT_EQ(got.size(), 50u) << "confirmed messages lost at a clean stop";
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(text(got[i]), "kept" + std::to_string(i));
      seen.insert(seq_of(got[i]));
    }
  }

  // SIGKILL after more sends, with the subscription's cursor moved past some of them (completes
  // are written with the log, the messages without it).
  send_all(d.port(), ch, "maybe", 50);
  {
    Conn c(d.port());
    c.hello();
    auto got = take(c, ch, 30);  // the other 20 stay unsettled: delivered again if kept
    ASSERT_EQ(got.size(), 50u);
    for (size_t i = 0; i < 30; ++i) seen.insert(seq_of(got[i]));
  }
  EXPECT_EQ(d.stop(SIGKILL), 128 + SIGKILL);
  d.start();

  // The daemon is back; a new message gets a sequence number never given out before, and the
  // subscription receives it (it is not below the cursor the lost messages left behind).
  send_all(d.port(), ch, "after", 1);
  Conn c(d.port());
  c.hello();
  bool after_seen = false;
  for (int round = 0; round < 10 && !after_seen; ++round) {
    for (const Message& m : take(c, ch, SIZE_MAX)) {
      const std::string t = text(m);
      EXPECT_TRUE(t.rfind("maybe", 0) == 0 || t == "after0") << "unexpected message " << t;
      EXPECT_TRUE(seen.insert(seq_of(m)).second) << t << " has a sequence number given before";
      if (t == "after0") after_seen = true;
    }
  }
  EXPECT_TRUE(after_seen) << "a message sent after the restart was never delivered";
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace witmq::daemon::testing
