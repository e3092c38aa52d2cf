// The history checker on synthetic histories: each rule accepts legal histories (whatever the
// unknown operations did) and catches its violation.
#include "cluster/history.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "daemon/daemon_process.h"

namespace witmq::cluster::history {
namespace {

// Builds histories with times in milliseconds.
class H {
 public:
  H& send(const std::string& process, const std::string& node, std::vector<std::string> ids,
          int64_t invoke, int64_t complete, Outcome outcome = Outcome::kOk, uint64_t epoch = 0,
          const std::string& channel = "c") {
    Op op = base(OpType::kSend, process, node, channel, invoke, complete, outcome);
    op.ids = std::move(ids);
    op.epoch = epoch;
    ops.push_back(op);
    return *this;
  }
  H& receive(const std::string& process, std::vector<Delivery> ds, int64_t invoke, int64_t complete,
             bool drain = false, const std::string& channel = "c") {
    Op op = base(OpType::kReceive, process, "n1", channel, invoke, complete, Outcome::kOk);
    op.deliveries = std::move(ds);
    op.drain = drain;
    ops.push_back(op);
    return *this;
  }
  H& complete(const std::string& process, const std::string& node, const std::string& id,
              int64_t invoke, int64_t complete, Outcome outcome = Outcome::kOk,
              uint64_t epoch = 0) {
    Op op = base(OpType::kComplete, process, node, "c", invoke, complete, outcome);
    op.ids = {id};
    op.epoch = epoch;
    ops.push_back(op);
    return *this;
  }
  std::vector<Op> ops;

 private:
  static Op base(OpType type, const std::string& process, const std::string& node,
                 const std::string& channel, int64_t invoke, int64_t complete, Outcome outcome) {
    Op op;
    op.type = type;
    op.process = process;
    op.node = node;
    op.channel = channel;
    op.invoke_ns = invoke * 1000000;
    op.complete_ns = complete * 1000000;
    op.outcome = outcome;
    return op;
  }
};

Delivery d(const std::string& id, uint64_t seq, uint32_t attempt = 1) {
  return {id, seq, attempt, "r-" + id + "-" + std::to_string(attempt)};
}

TEST(HistoryCheckTest, LegalHistoryWithUnknownsPasses) {
  H h;
  h.send("p1", "n1", {"a", "b"}, 0, 10)
      .send("p1", "n1", {"c"}, 11, 20)
      .send("p1", "n1", {"u1"}, 21, 30, Outcome::kUnknown)  // happened
      .send("p1", "n1", {"u2"}, 31, 40, Outcome::kUnknown)  // did not happen
      .send("p1", "n1", {"f"}, 41, 42, Outcome::kFailed)
      .receive("k1", {d("a", 1), d("b", 2)}, 12, 15)
      .complete("k1", "n1", "a", 16, 17)
      .complete("k1", "n1", "b", 16, 50, Outcome::kUnknown)  // lost on the way: b comes back
      .receive("k2", {d("c", 3), d("u1", 4)}, 35, 36)
      .complete("k2", "n1", "c", 37, 38)
      // u1's lease expires; delivered again by the drain, with b.
      .receive("k1", {d("b", 2, 2), d("u1", 4, 2)}, 60, 61, /*drain=*/true)
      .complete("k1", "n1", "b", 62, 63)
      .complete("k1", "n1", "u1", 62, 63)
      .receive("k1", {}, 64, 70, /*drain=*/true);
  const Report r = check(h.ops);
  EXPECT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.messages_ok, 3u);
  EXPECT_EQ(r.sends_unknown, 2u);
  EXPECT_EQ(r.sends_failed, 1u);
  EXPECT_EQ(r.redeliveries, 2u);
  EXPECT_EQ(r.drained, 2u);
}

TEST(HistoryCheckTest, AcknowledgedMessageMissingAtTheEndIsLost) {
  H h;
  h.send("p1", "n1", {"a"}, 0, 1).send("p1", "n1", {"b"}, 2, 3).send("p1", "n1", {"c"}, 4, 5);
  // a settled; b delivered once, never settled nor drained; c never seen.
  h.receive("k1", {d("a", 1), d("b", 2)}, 6, 7)
      .complete("k1", "n1", "a", 8, 9)
      .complete("k1", "n1", "b", 8, 9, Outcome::kFailed)  // a refused settle settles nothing
      .receive("k1", {}, 20, 30, true);
  const Report r = check(h.ops);
  EXPECT_EQ(r.count("lost"), 2u) << r.summary();
  EXPECT_EQ(r.lost, 2u);
  EXPECT_NE(r.summary().find("message b of channel c was acknowledged"), std::string::npos);
  EXPECT_NE(r.summary().find("message c of channel c was acknowledged"), std::string::npos);
  EXPECT_NE(r.summary().find("never delivered, not even by the drain"), std::string::npos);
  // Switched off, the rule says nothing.
  EXPECT_TRUE(check(h.ops, Rules{false, true, true, true, true}).ok());
}

TEST(HistoryCheckTest, DeliveryAfterAcknowledgedCompleteIsCaught) {
  H h;
  h.send("p1", "n1", {"a"}, 0, 1)
      .receive("k1", {d("a", 1)}, 2, 3)
      .complete("k1", "n1", "a", 4, 5)
      // A receive that overlaps the complete may still see it: legal.
      .receive("k2", {d("a", 1, 2)}, 4, 6);
  EXPECT_TRUE(check(h.ops).ok()) << check(h.ops).summary();
  h.receive("k2", {d("a", 1, 3)}, 7, 8);
  const Report r = check(h.ops);
  EXPECT_EQ(r.count("redelivered"), 1u) << r.summary();
  EXPECT_EQ(r.violations.size(), 1u) << r.summary();
}

TEST(HistoryCheckTest, FirstDeliveriesOutOfChannelOrderAreCaught) {
  H ok;
  ok.send("p1", "n1", {"a", "b", "c"}, 0, 1)
      .receive("k1", {d("a", 1)}, 2, 3)
      .receive("k2", {d("b", 2)}, 2, 4)                // overlapping receives: any order
      .receive("k1", {d("c", 3), d("a", 1, 2)}, 5, 6)  // a redelivery may come later
      .complete("k1", "n1", "a", 7, 8)
      .complete("k2", "n1", "b", 7, 8)
      .complete("k1", "n1", "c", 7, 8);
  EXPECT_TRUE(check(ok.ops).ok()) << check(ok.ops).summary();

  // After a crash right after a delivery, the message may come again with attempt 1 (its
  // acquisition was not stored yet): that is not a first delivery out of order.
  H again;
  again.send("p1", "n1", {"a", "b"}, 0, 1)
      .receive("k1", {d("a", 1)}, 2, 3)
      .receive("k1", {d("b", 2)}, 4, 5)
      .receive("k2", {d("a", 1)}, 6, 7)
      .complete("k1", "n1", "b", 8, 9)
      .complete("k2", "n1", "a", 8, 9);
  EXPECT_TRUE(check(again.ops).ok()) << check(again.ops).summary();

  H late;
  late.send("p1", "n1", {"a", "b"}, 0, 1)
      .receive("k1", {d("b", 2)}, 2, 3)
      .receive("k2", {d("a", 1)}, 4, 5);  // a first delivery of a lower sequence, later
  Report r = check(late.ops, Rules{false, true, true, true, true});
  EXPECT_EQ(r.count("order"), 1u) << r.summary();
  EXPECT_NE(r.summary().find("first deliveries of channel c"), std::string::npos);

  H inside;
  inside.send("p1", "n1", {"a", "b"}, 0, 1).receive("k1", {d("b", 2), d("a", 1)}, 2, 3);
  r = check(inside.ops, Rules{false, true, true, true, true});
  EXPECT_EQ(r.count("order"), 1u) << r.summary();
  EXPECT_NE(r.summary().find("in one receive"), std::string::npos);
}

TEST(HistoryCheckTest, ProducerOrderAndDoubleStorageAreCaught) {
  // p1's second send got a lower sequence than its first: appended out of send order.
  H h;
  h.send("p1", "n1", {"a"}, 0, 1)
      .send("p1", "n1", {"b"}, 2, 3)
      .send("p2", "n1", {"x"}, 0, 10)  // another producer, concurrent: any order
      .receive("k1", {d("b", 1), d("x", 2)}, 11, 12)
      .receive("k1", {d("a", 3)}, 13, 14);
  Report r = check(h.ops, Rules{false, true, true, true, true});
  EXPECT_NE(r.summary().find("channel c, producer p1"), std::string::npos) << r.summary();
  EXPECT_EQ(r.summary().find("producer p2"), std::string::npos) << r.summary();

  H twice;
  twice.send("p1", "n1", {"a"}, 0, 1)
      .receive("k1", {d("a", 1)}, 2, 3)
      .receive("k1", {d("a", 7)}, 4, 5);
  r = check(twice.ops, Rules{false, true, true, true, true});
  EXPECT_NE(r.summary().find("stored twice"), std::string::npos) << r.summary();
}

TEST(HistoryCheckTest, PhantomAndFailedSendDeliveriesAreCaught) {
  H h;
  h.send("p1", "n1", {"a"}, 0, 1, Outcome::kFailed)
      .receive("k1", {d("a", 1), d("ghost", 2)}, 2, 3)
      .complete("k1", "n1", "a", 4, 5)
      .complete("k1", "n1", "ghost", 4, 5);
  const Report r = check(h.ops);
  EXPECT_EQ(r.count("phantom"), 2u) << r.summary();
  EXPECT_NE(r.summary().find("although its send failed"), std::string::npos);
  EXPECT_NE(r.summary().find("but never sent"), std::string::npos);
}

TEST(HistoryCheckTest, TwoNodesInOneEpochAreCaught) {
  H h;
  h.send("p1", "n1", {"a"}, 0, 1, Outcome::kOk, 1)
      .send("p2", "n2", {"b"}, 0, 1, Outcome::kOk, 1)
      .receive("k1", {d("a", 1), d("b", 2)}, 2, 3, true)
      .complete("k1", "n1", "a", 4, 5)
      .complete("k1", "n1", "b", 4, 5);
  const Report r = check(h.ops);
  EXPECT_EQ(r.count("epoch"), 1u) << r.summary();
  EXPECT_NE(r.summary().find("epoch 1: writes acknowledged by node n1"), std::string::npos);
}

TEST(HistoryCheckTest, DeposedLeaderAcknowledgingIsCaught) {
  H ok;
  // n1 leads in epoch 1, n2 takes over in epoch 2; a write to n1 that overlaps n2's first ack
  // may have been applied before it: legal. Failed and unknown writes in epoch 1 after it: legal.
  ok.send("p1", "n1", {"a"}, 0, 1, Outcome::kOk, 1)
      .send("p1", "n1", {"b"}, 2, 20, Outcome::kOk, 1)
      .send("p2", "n2", {"c"}, 10, 11, Outcome::kOk, 2)
      .send("p1", "n1", {"d"}, 21, 22, Outcome::kFailed, 1)
      .send("p1", "n1", {"e"}, 21, 40, Outcome::kUnknown, 1)
      .receive("k1", {d("a", 1), d("b", 2), d("c", 3)}, 30, 31, true)
      .complete("k1", "n2", "a", 32, 33, Outcome::kOk, 2)
      .complete("k1", "n2", "b", 32, 33, Outcome::kOk, 2)
      .complete("k1", "n2", "c", 32, 33, Outcome::kOk, 2);
  Report r = check(ok.ops);
  EXPECT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.epochs, 2u);

  H stale = ok;
  stale.complete("k2", "n1", "a", 34, 35, Outcome::kOk, 1);
  r = check(stale.ops);
  EXPECT_EQ(r.count("epoch"), 1u) << r.summary();
  EXPECT_NE(r.summary().find("node n1 acknowledged a write in epoch 1"), std::string::npos)
      << r.summary();
}

TEST(HistoryCheckTest, FileRoundTripAndBadFiles) {
  H h;
  h.send("p1", "n1", {"a"}, 0, 1, Outcome::kOk, 3)
      .receive("k1", {d("a", 1)}, 2, 3, true)
      .complete("k1", "n1", "a", 4, 5, Outcome::kUnknown, 3);
  h.ops.back().receipt = "r-a-1";
  h.ops.back().error = "connection lost";
  const std::string dir = daemon::testing::make_temp_dir("history");
  const std::string path = dir + "/h.jsonl";
  {
    Recorder rec(path);
    for (const Op& op : h.ops) rec.add(op);
  }
  std::string error;
  auto read = read_file(path, &error);
  ASSERT_TRUE(read) << error;
  ASSERT_EQ(read->size(), 3u);
  EXPECT_EQ(to_json_line((*read)[2]), to_json_line(h.ops[2]));
  EXPECT_EQ((*read)[1].deliveries[0].sequence, 1u);
  EXPECT_TRUE((*read)[1].drain);
  EXPECT_EQ((*read)[0].epoch, 3u);

  std::ofstream(dir + "/bad.jsonl") << "{\"witmq-history\": 1}\n"
                                    << to_json_line(h.ops[0]) << "\n"
                                    << R"({"type":"send","outcome":"maybe"})"
                                    << "\n";
  EXPECT_FALSE(read_file(dir + "/bad.jsonl", &error));
  EXPECT_NE(error.find("bad.jsonl:3:"), std::string::npos) << error;
  std::ofstream(dir + "/nohead.jsonl") << to_json_line(h.ops[0]) << "\n";
  EXPECT_FALSE(read_file(dir + "/nohead.jsonl", &error));
  EXPECT_NE(error.find("not a witmq history"), std::string::npos) << error;
  EXPECT_FALSE(read_file(dir + "/absent.jsonl", &error));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace witmq::cluster::history
