// The history of a run against witmq (every send, receive and settle a workload made, with when it
// was invoked, when it completed and how), and the checker that reads it. The cluster scenarios
// and tools/chaos.sh record one; `witmq-history-check FILE` checks a recorded one offline.
//
// Outcomes: ok (the server said so), failed (the server refused: the operation did not happen),
// unknown (a timeout or a lost connection: it may or may not have happened). The checker accepts
// every history that some choice for the unknown operations makes legal.
//
// The rules (docs/CLUSTERING.md, "How it is tested"):
//  lost:        every message of an ok'd send is, at the end, either settled by an ok'd (or
//               unknown) complete, or delivered by the drain (which reads the channels empty).
//  redelivered: no message is delivered by a receive invoked after a complete of it was ok'd.
//  order:       what witmq promises (docs/PROTOCOL.md section 12 and 7): sends of one producer
//               (one connection) to one channel are appended in send order, so a send invoked
//               after another of the same producer completed ok got higher sequences; and
//               messages of one channel are delivered in channel order except redeliveries, so a
//               first delivery (witmq-attempt 1) made by a receive invoked after another receive
//               of the channel completed carries a higher sequence than every first delivery of
//               that receive, and first deliveries within one receive increase. One message has
//               one sequence (it is stored once).
//  phantom:     a delivered message was sent, and not by a send that failed.
//  epoch:       no two nodes acknowledge writes (send, complete) of one channel in one epoch, and
//               no node acknowledges a write in epoch e when the write was invoked after a write
//               of the channel acknowledged in a higher epoch had completed (a deposed leader
//               acknowledges nothing). An op's epoch is the leader epoch its node claimed for the
//               channel (its own /v1/cluster) when the workload routed the op there; 0: unknown,
//               such ops are outside this rule.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace witmq::cluster::history {

enum class OpType { kSend, kReceive, kComplete };
enum class Outcome { kOk, kFailed, kUnknown };
const char* type_name(OpType t);
const char* outcome_name(Outcome o);

// One message as a receive returned it.
struct Delivery {
  std::string id;         // the workload's message id (the payload)
  uint64_t sequence = 0;  // witmq-sequence
  uint32_t attempt = 0;   // witmq-attempt; 1 on a first delivery
  std::string receipt;    // witmq-receipt
};

struct Op {
  OpType type = OpType::kSend;
  std::string process;  // the producer or consumer (one connection per node)
  std::string node;     // the node the op was sent to
  std::string channel;
  int64_t invoke_ns = 0;  // monotonic, one clock per history
  int64_t complete_ns = 0;
  Outcome outcome = Outcome::kUnknown;
  std::vector<std::string> ids;      // send: the messages, in order; complete: the one settled
  std::vector<Delivery> deliveries;  // receive (ok)
  std::string receipt;               // complete
  uint64_t epoch = 0;                // see "epoch" above
  bool drain = false;                // made by the final drain
  std::string error;                 // failed / unknown: why
};

struct Violation {
  std::string rule;  // lost, redelivered, order, phantom, epoch
  std::string text;
};

// Which rules to apply (all by default). A test that can only promise some of them says which.
struct Rules {
  bool lost = true;
  bool redelivered = true;
  bool order = true;
  bool phantom = true;
  bool epoch = true;
};

struct Report {
  std::vector<Violation> violations;
  // Figures.
  uint64_t ops = 0;
  uint64_t sends_ok = 0, sends_failed = 0, sends_unknown = 0;
  uint64_t messages_ok = 0;  // messages of ok'd sends
  uint64_t receives_ok = 0, receives_failed = 0, receives_unknown = 0;
  uint64_t deliveries = 0, redeliveries = 0;  // redeliveries: attempt > 1
  uint64_t completes_ok = 0, completes_failed = 0, completes_unknown = 0;
  uint64_t drained = 0;  // deliveries made by the drain
  uint64_t lost = 0;     // messages of ok'd sends missing at the end
  uint64_t epochs = 0;   // distinct (channel, epoch) pairs that acknowledged writes

  bool ok() const { return violations.empty(); }
  // How many violations of `rule`.
  size_t count(std::string_view rule) const;
  // One line of figures, then each violation on a line (the first `max_listed` of each rule).
  std::string summary(size_t max_listed = 10) const;
};

Report check(const std::vector<Op>& ops, const Rules& rules = {});

// One JSON object per line; the file starts with the line {"witmq-history": 1}.
std::string to_json_line(const Op& op);
// Parses one line written by to_json_line; nullopt with `error` set when it is not one.
std::optional<Op> from_json_line(std::string_view line, std::string* error);
// Reads a history file; nullopt with `error` naming the line when a line is malformed.
std::optional<std::vector<Op>> read_file(const std::string& path, std::string* error);

// Records ops from many threads; optionally writes each line to a file as it completes (so a
// run that is killed still leaves its history).
class Recorder {
 public:
  Recorder() = default;
  explicit Recorder(const std::string& path);
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Nanoseconds on the history's clock (monotonic).
  static int64_t now_ns();
  void add(Op op);
  std::vector<Op> ops() const;

 private:
  mutable std::mutex mu_;
  std::vector<Op> ops_;
  std::FILE* file_ = nullptr;
};

}  // namespace witmq::cluster::history
