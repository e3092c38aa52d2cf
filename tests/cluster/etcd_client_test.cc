// The etcd client against a real etcd: leases, keys, transactions with compares, and fail-over
// between endpoints.
#include "cluster/etcd_client.h"

#include <gtest/gtest.h>

#include "cluster/etcd_process.h"

namespace witmq::cluster {
namespace {

using testing::Etcd;
using testing::free_port;

EtcdOptions options_for(std::vector<std::string> endpoints) {
  return EtcdOptions{std::move(endpoints), std::chrono::milliseconds(1'000)};
}

TEST(EtcdClientTest, LeaseKeysAndTransactions) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  EtcdClient client(options_for({etcd.endpoint()}));
  auto lease = client.lease_grant(5);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  EXPECT_EQ(lease->ttl_seconds, 5);
  auto ttl = client.lease_keepalive(lease->id);
  ASSERT_TRUE(ttl.ok()) << ttl.error().message;
  EXPECT_EQ(*ttl, 5);

  // Bytes that are not text survive the base64 round trip.
  const std::string key = std::string("/t/k\0\xff", 6);
  ASSERT_TRUE(client.put(key, std::string("v\0\x01", 3), lease->id).ok());
  auto got = client.range(key);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_EQ(got->kvs[0].value, std::string("v\0\x01", 3));
  EXPECT_EQ(got->kvs[0].lease, lease->id);
  EXPECT_GT(got->kvs[0].create_revision, 0);

  // Create-if-absent succeeds once.
  auto first = client.txn({Compare::absent("/t/once")}, {TxnOp::put("/t/once", "1")});
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_TRUE(first->succeeded);
  auto second = client.txn({Compare::absent("/t/once")}, {TxnOp::put("/t/once", "2")},
                           {TxnOp::get("/t/once")});
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_FALSE(second->succeeded);
  ASSERT_EQ(second->ranges.size(), 1u);
  ASSERT_EQ(second->ranges[0].size(), 1u);
  EXPECT_EQ(second->ranges[0][0].value, "1");
  // Compare on mod_revision and on value.
  const int64_t rev = second->ranges[0][0].mod_revision;
  auto stale =
      client.txn({Compare::mod_revision_is("/t/once", rev - 1)}, {TxnOp::put("/t/once", "x")});
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->succeeded);
  auto fresh =
      client.txn({Compare::mod_revision_is("/t/once", rev), Compare::value_is("/t/once", "1")},
                 {TxnOp::put("/t/once", "3")});
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->succeeded);

  auto all = client.range_prefix("/t/");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->kvs.size(), 2u);

  // Revoking the lease deletes its keys; a revoked lease is not alive, and revoking it again is
  // not an error.
  ASSERT_TRUE(client.lease_revoke(lease->id).ok());
  EXPECT_TRUE(client.range(key)->kvs.empty());
  auto gone = client.lease_keepalive(lease->id);
  ASSERT_TRUE(gone.ok()) << gone.error().message;
  EXPECT_EQ(*gone, 0);
  EXPECT_TRUE(client.lease_revoke(lease->id).ok());
  // A put under a lease etcd does not know is refused, naming the endpoint.
  auto bad = client.put("/t/x", "y", lease->id);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find(etcd.endpoint()), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("lease not found"), std::string::npos) << bad.error().message;
  EXPECT_EQ(client.delete_range("/t/", prefix_end("/t/")).value(), 1);
}

TEST(EtcdClientTest, FailsOverToTheNextEndpoint) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  const std::string dead = "127.0.0.1:" + std::to_string(free_port());
  EtcdClient client(options_for({dead, etcd.endpoint()}));
  ASSERT_TRUE(client.put("/f/a", "1").ok());
  EXPECT_EQ(client.current_endpoint(), etcd.endpoint());
  EXPECT_EQ(client.errors(), 1u);
  // It stays on the endpoint that answered.
  ASSERT_TRUE(client.range("/f/a").ok());
  EXPECT_EQ(client.errors(), 1u);
  // The kept-alive connection breaks when etcd restarts: the next request reconnects.
  etcd.kill(SIGTERM);
  etcd.start();
  auto after = client.range("/f/a");
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after->kvs.size(), 1u);
}

TEST(EtcdClientTest, NoEndpointAnsweringNamesEachOne) {
  const std::string a = "127.0.0.1:" + std::to_string(free_port());
  const std::string b = "127.0.0.1:" + std::to_string(free_port());
  EtcdClient client(options_for({a, b}));
  auto r = client.range("/x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find(a + ": connecting"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(b + ": connecting"), std::string::npos) << r.error().message;
  EXPECT_EQ(client.errors(), 2u);
}

TEST(EtcdClientTest, AStoppedEtcdTimesOut) {
  WITMQ_REQUIRE_ETCD();
  Etcd etcd;
  EtcdClient client(EtcdOptions{{etcd.endpoint()}, std::chrono::milliseconds(300)});
  ASSERT_TRUE(client.range("/x").ok());
  etcd.kill(SIGSTOP);
  auto r = client.range("/x");
  etcd.kill(SIGCONT);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("no answer within 300 ms"), std::string::npos)
      << r.error().message;
  // Resumed, etcd answers again; on a loaded machine its first answers may take longer than the
  // 300 ms bound, so a few tries are allowed.
  bool answered = false;
  for (int i = 0; i < 20 && !answered; ++i) answered = client.range("/x").ok();
  EXPECT_TRUE(answered);
}

}  // namespace
}  // namespace witmq::cluster
