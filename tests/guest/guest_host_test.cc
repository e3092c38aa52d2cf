// End to end: guests on the real wabt interpreter, subscribed to the real broker on RocksDB in a
// temporary directory. Messages are sent and checked with ordinary broker clients.
#include "guest/guest_host.h"

#include <gtest/gtest.h>

#include "guest/guest_fixture.h"

namespace witmq::guest {
namespace {

using namespace std::chrono_literals;
using namespace testing;  // NOLINT

TEST_F(GuestHostTest, ConfigureSubscribesAndOkCompletes) {
  GuestHost* h = start(options("completer", "ok_guest"));
  ASSERT_TRUE(h);
  send("guest.in", {text_message("a"), text_message("b"), text_message("c")});
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 3; })) << h->stats().completed;
  const GuestStats s = h->stats();
  EXPECT_EQ(s.messages_handled, 3u);
  EXPECT_GE(s.batches, 1u);
  EXPECT_EQ(s.abandoned, 0u);
  EXPECT_EQ(s.traps, 0u);
  EXPECT_EQ(s.instances_running, 1u);
  EXPECT_GT(s.handler_time_ns, 0u);
  const auto ch = channel("guest.in");
  EXPECT_EQ(ch.completes_total, 3u);
  EXPECT_EQ(ch.depth, 0u);
  EXPECT_TRUE(logged("guest 'completer': started 1 instance(s)"));
}

TEST_F(GuestHostTest, InstancesShareTheSubscription) {
  GuestOptions o = options("pair", "ok_guest");
  o.instances = 2;
  o.batch_size = 1;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  std::vector<Message> batch;
  for (int i = 0; i < 20; ++i) batch.push_back(text_message("m" + std::to_string(i)));
  send("guest.in", batch);
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 20; }));
  EXPECT_EQ(h->stats().messages_handled, 20u);  // each message handled once
  EXPECT_EQ(h->stats().instances_running, 2u);
}

TEST_F(GuestHostTest, ErrAbandonsUntilTheDeadLetterChannel) {
  GuestHost* h = start(options("failer", "err_guest"));
  ASSERT_TRUE(h);
  send("guest.in", {text_message("poison")});
  auto dead = dead_letters(1);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "poison");
  const GuestStats s = h->stats();
  EXPECT_EQ(s.handler_errors, 3u);
  EXPECT_EQ(s.abandoned, 3u);
  EXPECT_EQ(s.completed, 0u);
  EXPECT_EQ(s.traps, 0u);
  EXPECT_TRUE(logged("guest 'failer' instance 0: handler returned err: invalid-argument"));
}

TEST_F(GuestHostTest, ExplicitSettlementWinsOverTheHandlerResult) {
  GuestHost* h = start(options("settler", "settle_guest"));
  ASSERT_TRUE(h);
  // c: the guest completes it; a: the guest abandons it (then again on each redelivery, until
  // it is dead-lettered); x: left to the host, completed because handler returns ok.
  send("guest.in", {text_message("c1"), text_message("a1"), text_message("x1")});
  auto dead = dead_letters(1);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "a1");
  EXPECT_EQ(channel("guest.in").completes_total, 2u);  // c1 by the guest, x1 by the host
  EXPECT_EQ(h->stats().completed, 1u);
  EXPECT_EQ(h->stats().abandoned, 0u);
}

TEST_F(GuestHostTest, ExplicitCompleteSurvivesATrap) {
  GuestHost* h = start(options("settle-trap", "settle_guest"));
  ASSERT_TRUE(h);
  // The guest completes c2, then traps because of t2: c2 stays completed, t2 is abandoned
  // (and traps every time until it is dead-lettered).
  send("guest.in", {text_message("c2"), text_message("t2")});
  auto dead = dead_letters(1);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "t2");
  EXPECT_EQ(channel("guest.in").completes_total, 1u);
  EXPECT_EQ(h->stats().traps, 3u);
}

TEST_F(GuestHostTest, TrapAbandonsReinstantiatesAndPoisonIsDeadLettered) {
  GuestHost* h = start(options("trapper", "trap_guest"));
  ASSERT_TRUE(h);
  send("guest.in", {text_message("poison")});
  auto dead = dead_letters(1);
  ASSERT_EQ(dead.size(), 1u);
  const std::string* reason = find_metadata(dead[0], meta::kDlqReason);
  ASSERT_NE(reason, nullptr);
  EXPECT_EQ(*reason, "max-deliveries");
  ASSERT_TRUE(eventually([&] { return h->stats().instances_running == 1; }));
  const GuestStats s = h->stats();
  EXPECT_EQ(s.traps, 3u);
  EXPECT_EQ(s.abandoned, 3u);
  EXPECT_EQ(s.instantiations, 4u);  // the first one and one after each trap
  EXPECT_TRUE(
      logged("guest 'trapper' instance 0: trap in "
             "'wasi:messaging/messaging-guest@0.2.0-draft#handler': unreachable executed "
             "(trap); batch of 1 from 'guest.in' abandoned"));
  EXPECT_EQ(channel("guest.in").depth, 0u);
}

TEST_F(GuestHostTest, InfiniteLoopIsStoppedByTheBudget) {
  GuestOptions o = options("spinner", "loop_guest");
  o.instruction_budget = 1'000'000;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("guest.in", {text_message("spin")});
  ASSERT_TRUE(eventually([&] { return h->stats().budget_exhaustions >= 1; }));
  ASSERT_TRUE(eventually([&] { return h->stats().abandoned >= 1; }));
  EXPECT_TRUE(logged("instruction budget of 1000000 exhausted"));
  EXPECT_TRUE(logged("guest 'spinner'"));
  auto dead = dead_letters(1);
  EXPECT_EQ(dead.size(), 1u);
  // The third exhaustion is counted once its batch is settled, which may be after the message
  // reached the dead-letter channel: wait for it, then check that no fourth attempt follows.
  EXPECT_TRUE(eventually([&] { return h->stats().budget_exhaustions >= 3; }));
  EXPECT_EQ(h->stats().budget_exhaustions, 3u);
}

TEST_F(GuestHostTest, MemoryGrowthPastTheLimit) {
  GuestOptions o = options("grower", "grow_guest");
  o.memory_pages = 8;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("guest.in", {text_message("grow")});
  ASSERT_TRUE(eventually([&] { return h->stats().memory_limit_hits >= 1; }));
  EXPECT_TRUE(eventually([&] { return logged("exceeds the memory limit of 8 pages"); }));
}

TEST_F(GuestHostTest, GuestSendIsReceivedByAClient) {
  GuestHost* h = start(options("forwarder", "forward_guest"));
  ASSERT_TRUE(h);
  Message m = text_message("hello");
  m.format = Format::kCloudevents;
  m.metadata = Metadata{{"trace-id", "t-1"}};
  send("guest.in", {m});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("guest.out", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return !got.empty();
  }));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(text_of(got[0]), "hello");
  EXPECT_EQ(got[0].format, Format::kCloudevents);
  const std::string* trace = find_metadata(got[0], "trace-id");
  ASSERT_NE(trace, nullptr);
  EXPECT_EQ(*trace, "t-1");
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 1; }));
}

TEST_F(GuestHostTest, ChannelsOverrideReplacesWhatConfigureAsks) {
  GuestOptions o = options("overridden", "ok_guest");
  o.channels = {"other.in"};
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("other.in", {text_message("x")});
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 1; }));
}

TEST_F(GuestHostTest, StartFailureNamesTheGuest) {
  auto h = GuestHost::load(*broker_, options("cfg", "config_trap_guest"),
                           [](LogLevel, std::string_view) {});
  ASSERT_TRUE(h.ok()) << h.error().message;
  Status st = (*h)->start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("guest 'cfg': configure failed: trap in "
                                    "'wasi:messaging/messaging-guest@0.2.0-draft#configure'"),
            std::string::npos)
      << st.error().message;
}

TEST_F(GuestHostTest, LoadRefusesABadModuleNamingGuestAndModule) {
  auto h = GuestHost::load(*broker_, options("bad", "wrong_signature_guest"));
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.error().message.find("guest 'bad': module '"), std::string::npos);
  EXPECT_NE(h.error().message.find("wrong_signature_guest.wasm': export "
                                   "'wasi:messaging/messaging-guest@0.2.0-draft#handler' has type"),
            std::string::npos)
      << h.error().message;
  GuestOptions o = options("", "ok_guest");
  auto unnamed = GuestHost::load(*broker_, o);
  ASSERT_FALSE(unnamed.ok());
  EXPECT_NE(unnamed.error().message.find("\"name\" is required"), std::string::npos);
}

}  // namespace
}  // namespace witmq::guest

namespace witmq::guest {
namespace {

using namespace testing;  // NOLINT

TEST_F(GuestHostTest, ConsumerAndResourceImportsEndToEnd) {
  send("side", {text_message("s1")});
  GuestHost* h = start(options("importer", "imports_guest"));
  ASSERT_TRUE(h);
  send("guest.in", {text_message("go")});
  // error.trace() of the failed send, sent on by the guest.
  std::vector<Message> trace;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("guest.trace", 100ms);
    trace.insert(trace.end(), r.begin(), r.end());
    return !trace.empty();
  }));
  EXPECT_EQ(text_of(trace[0]).rfind("invalid-argument: ", 0), 0u) << text_of(trace[0]);
  // The message on "side" was taken with subscribe-try-receive and completed by the guest.
  ASSERT_TRUE(eventually([&] { return channel("side").completes_total == 1; }));
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 1; }));
  // update-guest-configuration subscribed the guest to "guest.more" as well.
  send("guest.more", {text_message("more")});
  ASSERT_TRUE(eventually([&] { return channel("guest.more").completes_total == 1; }));
  EXPECT_EQ(h->stats().traps, 0u);
  EXPECT_EQ(h->stats().instantiations, 1u);
}

TEST_F(GuestHostTest, LeasesStayAliveWhileTheHandlerRuns) {
  broker::ChannelSettings s;
  s.lease = 300ms;
  s.max_deliveries = 2;
  s.backoff_initial = 10ms;
  s.backoff_max = 20ms;
  ASSERT_TRUE(broker_->declare_channel("guest.in", s).ok());
  GuestOptions o = options("slow", "loop_guest");
  o.instruction_budget = 200'000'000;  // well over a second of interpretation
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("guest.in", {text_message("slow")});
  ASSERT_TRUE(eventually([&] { return h->stats().budget_exhaustions >= 1; }, 60s));
  EXPECT_GT(h->stats().handler_time_ns, 300'000'000u);  // it did outlive the lease
  EXPECT_EQ(channel("guest.in").lease_expiries_total, 0u);
}

}  // namespace
}  // namespace witmq::guest
