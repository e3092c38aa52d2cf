// A client of etcd's v3 API through its JSON gateway (the HTTP/1.1 + JSON face of the gRPC API
// that etcd serves on its client port): leases, put/range/delete and transactions with compares.
// Keys and values are bytes, sent base64 as the gateway wants; 64-bit integers come back as
// strings and are read either way.
//
// Threading: a client belongs to one thread (the cluster's control loop, cluster/node.h). Each
// call runs Boost.Beast's asynchronous operations on the client's own io_context until they
// finish or the request's deadline passes, so a call never takes longer than `timeout` per
// endpoint tried, and never runs on (or waits for) the daemon's I/O threads.
//
// Fail-over: the client talks to one endpoint at a time over one kept-alive connection. When a
// request cannot reach it (connect, send or receive fails, the deadline passes, or etcd answers
// 5xx: no leader, shutting down), the client tries the next endpoint, in order, once each; the
// error then names every endpoint and what failed there. An answer that says the request itself
// was wrong (4xx: a lease etcd does not know, a bad key) is returned at once.
//
// A request that failed in transit may still have been applied by etcd: callers make their
// writes safe to repeat (a transaction's compares fail the second time; the caller reads back).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace witmq::cluster {

struct EtcdOptions {
  // "HOST:PORT" of etcd's client URLs (plain HTTP), tried in this order. At least one.
  std::vector<std::string> endpoints;
  // How long one request may take on one endpoint: connect, send and the whole answer.
  std::chrono::milliseconds timeout{2'000};
};

// One key as etcd returns it. Revisions are etcd's: create_revision is 0 for a key that does not
// exist, mod_revision grows with every change of the key.
struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;  // 0: not attached to a lease
};

struct LeaseGrant {
  int64_t id = 0;
  int64_t ttl_seconds = 0;  // as granted: etcd raises a TTL below its minimum
};

// One condition of a transaction (etcd's Compare): the key's create_revision, mod_revision,
// version or value against a number or bytes.
struct Compare {
  enum class Target { kVersion, kCreateRevision, kModRevision, kValue };
  enum class Op { kEqual, kGreater, kLess, kNotEqual };
  std::string key;
  Target target = Target::kCreateRevision;
  Op op = Op::kEqual;
  int64_t number = 0;  // for every target but kValue
  std::string value;   // for kValue

  // The key does not exist (its create_revision is 0).
  static Compare absent(std::string key);
  // The key was last changed at `revision` (0: it does not exist).
  static Compare mod_revision_is(std::string key, int64_t revision);
  static Compare value_is(std::string key, std::string value);
};

// One operation of a transaction's branch.
struct TxnOp {
  enum class Kind { kPut, kRange, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;      // kPut
  int64_t lease = 0;      // kPut: attach the key to this lease (0: none)
  std::string range_end;  // kRange, kDelete: "" = just `key`

  static TxnOp put(std::string key, std::string value, int64_t lease = 0);
  static TxnOp get(std::string key);
  static TxnOp remove(std::string key);
};

struct TxnResult {
  bool succeeded = false;
  // The keys each kRange operation of the branch that ran returned, in order.
  std::vector<std::vector<KeyValue>> ranges;
  int64_t revision = 0;  // etcd's revision after the transaction
};

struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;  // etcd's revision the read saw
};

// The range_end that makes a range cover every key starting with `prefix`.
std::string prefix_end(std::string_view prefix);

class EtcdClient {
 public:
  explicit EtcdClient(EtcdOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  Result<LeaseGrant> lease_grant(int64_t ttl_seconds);
  // The lease's remaining TTL in seconds after the refresh; 0 when etcd no longer has the lease
  // (it expired or was revoked).
  Result<int64_t> lease_keepalive(int64_t id);
  // Deletes the lease and every key attached to it. A lease etcd does not know is not an error.
  Status lease_revoke(int64_t id);

  Status put(std::string_view key, std::string_view value, int64_t lease = 0);
  // Every key in [key, range_end); range_end "" reads just `key`.
  Result<RangeResult> range(std::string_view key, std::string_view range_end = "");
  Result<RangeResult> range_prefix(std::string_view prefix) {
    return range(prefix, prefix_end(prefix));
  }
  // The number of keys deleted.
  Result<int64_t> delete_range(std::string_view key, std::string_view range_end = "");
  Result<TxnResult> txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                        const std::vector<TxnOp>& failure = {});

  // Requests that failed on some endpoint (each endpoint tried counts), since the start.
  uint64_t errors() const { return errors_; }
  // The endpoint the next request goes to first.
  const std::string& current_endpoint() const;

 private:
  struct Connection;
  // POSTs `body` to `path` ("/v3/kv/range"), with fail-over; the answer's JSON.
  Result<nlohmann::json> call(std::string_view path, const nlohmann::json& body);

  const EtcdOptions options_;
  size_t current_ = 0;
  uint64_t errors_ = 0;
  std::unique_ptr<Connection> connection_;
};

}  // namespace witmq::cluster
