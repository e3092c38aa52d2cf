// max_unacked_per_client: what a client holds unsettled caps its receives, and every way a lease
// ends (complete, abandon, expiry, disconnect, channel deletion) gives the room back.
#include <gtest/gtest.h>

#include <future>

#include "broker_fixture.h"

namespace witmq::broker::testing {
namespace {

using namespace std::chrono_literals;

class UnackedLimitTest : public BrokerTest {
 protected:
  void configure(BrokerOptions& o) override { o.max_unacked_per_client = 4; }

  void fill(const std::string& ch, int n) {
    std::vector<Message> batch;
    for (int i = 0; i < n; ++i) batch.push_back(msg(std::to_string(i)));
    send_ok(producer_, ch, std::move(batch));
  }

  bool refused(const ClientPtr& c, const std::string& ch) {
    auto r = receive(c, {ch}, 0ms, 100);
    if (r.ok()) return false;
    EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted) << r.error().to_string();
    EXPECT_NE(r.error().message.find("max-unacked-per-connection"), std::string::npos);
    return true;
  }

  ClientPtr producer_ = nullptr;
};

TEST_F(UnackedLimitTest, ReceivesAreCutToTheRoomLeftAndSettlingGivesItBack) {
  producer_ = connect();
  fill("u.q", 20);
  auto c = connect();
  auto held = receive_ok(c, "u.q", 100);
  ASSERT_EQ(held.size(), 4u);
  EXPECT_TRUE(refused(c, "u.q"));
  ASSERT_TRUE(broker_->complete_message(held[0]).ok());
  ASSERT_TRUE(broker_->abandon_message(held[1]).ok());
  EXPECT_EQ(receive_ok(c, "u.q", 100).size(), 2u);
  EXPECT_TRUE(refused(c, "u.q"));
  // Other clients have their own room.
  auto other = connect();
  EXPECT_EQ(receive_ok(other, "u.q", 100).size(), 4u);
}

TEST_F(UnackedLimitTest, ExpiryAndDeletionGiveRoomBack) {
  producer_ = connect();
  fill("u.exp", 10);
  auto c = connect();
  GuestConfiguration config{{"u.exp"}, Metadata{{"lease-ms", "100"}}};
  ASSERT_TRUE(broker_->update_guest_configuration(c, config).ok());
  ASSERT_EQ(receive_ok(c, "u.exp", 100).size(), 4u);
  // A blocking receive waits for room rather than failing when asked to, and gets it when the
  // leases expire.
  std::promise<Result<std::vector<Message>>> p;
  auto f = p.get_future();
  ReceiveOptions wait{100, 5000ms, true};
  broker_->receive(c, {"u.exp"}, wait,
                   [&p](Result<std::vector<Message>> r) { p.set_value(std::move(r)); });
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->size(), 4u);

  fill("u.del", 4);
  auto d = connect();
  ASSERT_EQ(receive_ok(d, "u.del", 100).size(), 4u);
  EXPECT_TRUE(refused(d, "u.del"));
  ASSERT_TRUE(broker_->delete_channel("u.del").ok());
  fill("u.del2", 4);
  EXPECT_EQ(receive_ok(d, "u.del2", 100).size(), 4u);
}

TEST_F(UnackedLimitTest, AutoSettledReceivesDoNotCount) {
  producer_ = connect();
  fill("u.auto", 10);
  auto c = connect();
  GuestConfiguration config{{"u.auto"}, Metadata{{"settlement", "auto"}}};
  ASSERT_TRUE(broker_->update_guest_configuration(c, config).ok());
  EXPECT_EQ(receive_ok(c, "u.auto", 100).size(), 10u);
}

}  // namespace
}  // namespace witmq::broker::testing
