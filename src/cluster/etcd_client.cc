#include "cluster/etcd_client.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>

#include "common/base64.h"

namespace witmq::cluster {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

namespace {

// etcd's answers are small (a range over the cluster's own keys); anything larger is refused.
constexpr uint64_t kMaxAnswerBytes = 64ull << 20;

std::string b64(std::string_view bytes) {
  return base64_encode(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

std::string unb64(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) return {};
  auto bytes = base64_decode(it->get<std::string>());
  if (!bytes) return {};
  return std::string(bytes->begin(), bytes->end());
}

// The gateway writes 64-bit integers as JSON strings and leaves out fields equal to zero.
int64_t number(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string s = it->get<std::string>();
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && end == s.data() + s.size()) return v;
  }
  return 0;
}

KeyValue key_value(const json& j) {
  KeyValue kv;
  kv.key = unb64(j, "key");
  kv.value = unb64(j, "value");
  kv.create_revision = number(j, "create_revision");
  kv.mod_revision = number(j, "mod_revision");
  kv.version = number(j, "version");
  kv.lease = number(j, "lease");
  return kv;
}

std::vector<KeyValue> key_values(const json& j) {
  std::vector<KeyValue> out;
  auto it = j.find("kvs");
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& kv : *it) out.push_back(key_value(kv));
  return out;
}

int64_t revision(const json& j) {
  auto it = j.find("header");
  return it == j.end() || !it->is_object() ? 0 : number(*it, "revision");
}

json op_json(const TxnOp& op) {
  switch (op.kind) {
    case TxnOp::Kind::kPut: {
      json put = {{"key", b64(op.key)}, {"value", b64(op.value)}};
      if (op.lease != 0) put["lease"] = std::to_string(op.lease);
      return {{"request_put", std::move(put)}};
    }
    case TxnOp::Kind::kRange: {
      json range = {{"key", b64(op.key)}};
      if (!op.range_end.empty()) range["range_end"] = b64(op.range_end);
      return {{"request_range", std::move(range)}};
    }
    case TxnOp::Kind::kDelete: {
      json del = {{"key", b64(op.key)}};
      if (!op.range_end.empty()) del["range_end"] = b64(op.range_end);
      return {{"request_delete_range", std::move(del)}};
    }
  }
  return json::object();
}

json compare_json(const Compare& c) {
  static constexpr const char* kTargets[] = {"VERSION", "CREATE", "MOD", "VALUE"};
  static constexpr const char* kFields[] = {"version", "create_revision", "mod_revision", "value"};
  static constexpr const char* kOps[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
  const auto t = static_cast<size_t>(c.target);
  json j = {
      {"key", b64(c.key)}, {"target", kTargets[t]}, {"result", kOps[static_cast<size_t>(c.op)]}};
  if (c.target == Compare::Target::kValue) {
    j[kFields[t]] = b64(c.value);
  } else {
    j[kFields[t]] = std::to_string(c.number);
  }
  return j;
}

// gRPC status codes as etcd reports them, to ours.
ErrorCode error_code_of(int64_t grpc_code) {
  switch (grpc_code) {
    case 3:   // InvalidArgument
    case 11:  // OutOfRange
      return ErrorCode::kInvalidArgument;
    case 5:  // NotFound
      return ErrorCode::kNotFound;
    case 6:  // AlreadyExists
      return ErrorCode::kAlreadyExists;
    case 7:   // PermissionDenied
    case 16:  // Unauthenticated
      return ErrorCode::kPermissionDenied;
    case 8:  // ResourceExhausted
      return ErrorCode::kResourceExhausted;
    case 9:  // FailedPrecondition
      return ErrorCode::kFailedPrecondition;
    default:
      return ErrorCode::kUnavailable;
  }
}

struct Answer {
  unsigned status = 0;
  std::string body;
};

}  // namespace

Compare Compare::absent(std::string key) {
  Compare c;
  c.key = std::move(key);
  c.target = Target::kCreateRevision;
  c.number = 0;
  return c;
}

Compare Compare::mod_revision_is(std::string key, int64_t revision) {
  Compare c;
  c.key = std::move(key);
  c.target = Target::kModRevision;
  c.number = revision;
  return c;
}

Compare Compare::value_is(std::string key, std::string value) {
  Compare c;
  c.key = std::move(key);
  c.target = Target::kValue;
  c.value = std::move(value);
  return c;
}

TxnOp TxnOp::put(std::string key, std::string value, int64_t lease) {
  TxnOp op;
  op.kind = Kind::kPut;
  op.key = std::move(key);
  op.value = std::move(value);
  op.lease = lease;
  return op;
}

TxnOp TxnOp::get(std::string key) {
  TxnOp op;
  op.kind = Kind::kRange;
  op.key = std::move(key);
  return op;
}

TxnOp TxnOp::remove(std::string key) {
  TxnOp op;
  op.kind = Kind::kDelete;
  op.key = std::move(key);
  return op;
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// One kept-alive connection to one endpoint, and the io_context its operations run on.
struct EtcdClient::Connection {
  asio::io_context io;
  std::unique_ptr<beast::tcp_stream> stream;
  std::string endpoint;
  beast::flat_buffer buffer;

  // One POST to `endpoint`, connecting first unless the open connection goes there. Transport
  // failures are errors naming the stage that failed.
  Result<Answer> exchange(const std::string& to, std::string_view path, const std::string& body,
                          std::chrono::milliseconds timeout, bool* reused);
};

Result<Answer> EtcdClient::Connection::exchange(const std::string& to, std::string_view path,
                                                const std::string& body,
                                                std::chrono::milliseconds timeout, bool* reused) {
  const auto colon = to.rfind(':');
  std::string host = to.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = colon == std::string::npos ? "2379" : to.substr(colon + 1);
  *reused = stream && endpoint == to;
  if (!*reused) {
    stream = std::make_unique<beast::tcp_stream>(io);
    endpoint = to;
    buffer.clear();
  }
  http::request<http::string_body> request{http::verb::post, std::string(path), 11};
  request.set(http::field::host, to);
  request.set(http::field::content_type, "application/json");
  request.keep_alive(true);
  request.body() = body;
  request.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxAnswerBytes);

  boost::system::error_code failure;
  const char* stage = "";
  bool finished = false;
  asio::ip::tcp::resolver resolver(io);
  beast::tcp_stream& s = *stream;
  s.expires_after(timeout);
  auto fail = [&](boost::system::error_code ec, const char* where) {
    failure = ec;
    stage = where;
  };
  auto on_read = [&](boost::system::error_code ec, size_t) {
    if (ec) return fail(ec, "reading the answer");
    finished = true;
  };
  auto on_write = [&](boost::system::error_code ec, size_t) {
    if (ec) return fail(ec, "sending the request");
    http::async_read(s, buffer, parser, on_read);
  };
  auto on_connect = [&](boost::system::error_code ec, const asio::ip::tcp::endpoint&) {
    if (ec) return fail(ec, "connecting");
    http::async_write(s, request, on_write);
  };
  auto on_resolve = [&](boost::system::error_code ec,
                        const asio::ip::tcp::resolver::results_type& results) {
    if (ec) return fail(ec, "resolving the host");
    s.async_connect(results, on_connect);
  };
  if (*reused) {
    http::async_write(s, request, on_write);
  } else {
    resolver.async_resolve(host, port, on_resolve);
  }
  io.restart();
  // The stream's deadline bounds connect, write and read; this one also bounds the resolve.
  io.run_for(timeout + std::chrono::milliseconds(100));
  if (!io.stopped()) {
    resolver.cancel();
    s.close();
    io.restart();
    io.run();
    if (!failure) failure = beast::error::timeout;
    if (!*stage) stage = "resolving the host";
  }
  if (failure || !finished) {
    stream.reset();
    if (failure == beast::error::timeout) {
      return Error(ErrorCode::kUnavailable,
                   fmt::format("{}: no answer within {} ms", stage, timeout.count()));
    }
    return Error(ErrorCode::kUnavailable, fmt::format("{}: {}", stage, failure.message()));
  }
  auto& response = parser.get();
  Answer answer{response.result_int(), std::move(response.body())};
  if (!response.keep_alive()) stream.reset();
  return answer;
}

EtcdClient::EtcdClient(EtcdOptions options)
    : options_(std::move(options)), connection_(std::make_unique<Connection>()) {}

EtcdClient::~EtcdClient() = default;

const std::string& EtcdClient::current_endpoint() const {
  static const std::string kNone;
  return options_.endpoints.empty() ? kNone : options_.endpoints[current_];
}

Result<json> EtcdClient::call(std::string_view path, const json& body) {
  const std::string text = body.dump();
  const size_t n = options_.endpoints.size();
  std::vector<std::string> failures;
  for (size_t i = 0; i < n; ++i) {
    const size_t at = (current_ + i) % n;
    const std::string& endpoint = options_.endpoints[at];
    bool reused = false;
    auto answer = connection_->exchange(endpoint, path, text, options_.timeout, &reused);
    // A kept-alive connection the server closed meanwhile: once more on a new one.
    if (!answer && reused) {
      answer = connection_->exchange(endpoint, path, text, options_.timeout, &reused);
    }
    if (!answer) {
      ++errors_;
      failures.push_back(fmt::format("{}: {}", endpoint, answer.error().message));
      continue;
    }
    // A streaming call (lease keepalive) answers one JSON object per line: the first is ours.
    std::string_view first(answer->body);
    first = first.substr(0, first.find('\n'));
    json j = json::parse(first, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      ++errors_;
      connection_->stream.reset();
      failures.push_back(fmt::format("{}: HTTP {} with a body that is not a JSON object", endpoint,
                                     answer->status));
      continue;
    }
    // {"result": {...}} or {"error": {...}} from a streaming call.
    if (auto it = j.find("result"); it != j.end() && it->is_object()) j = *it;
    json error = j.contains("error") ? j["error"] : json();
    if (error.is_object()) j = error;
    if (answer->status >= 500) {
      ++errors_;
      connection_->stream.reset();
      failures.push_back(fmt::format("{}: HTTP {}: {}", endpoint, answer->status,
                                     j.value("message", std::string("(no message)"))));
      continue;
    }
    current_ = at;
    if (answer->status != 200 || !error.is_null()) {
      ++errors_;
      return Error(error_code_of(number(j, "code")),
                   fmt::format("etcd {} {}: {}", endpoint, path,
                               j.value("message", fmt::format("HTTP {}", answer->status))));
    }
    return j;
  }
  // The next call starts with the endpoint after the one this call started with.
  current_ = (current_ + 1) % (n == 0 ? 1 : n);
  if (n == 0) return Error(ErrorCode::kInvalidArgument, "etcd: no endpoints configured");
  return Error(ErrorCode::kUnavailable,
               fmt::format("etcd {}: no endpoint answered ({})", path, fmt::join(failures, "; ")));
}

Result<LeaseGrant> EtcdClient::lease_grant(int64_t ttl_seconds) {
  auto j = call("/v3/lease/grant", {{"TTL", std::to_string(ttl_seconds)}});
  if (!j) return std::move(j).error();
  LeaseGrant g{number(*j, "ID"), number(*j, "TTL")};
  if (g.id == 0 || g.ttl_seconds <= 0) {
    return Error(ErrorCode::kUnavailable,
                 fmt::format("etcd {} /v3/lease/grant: the answer has no lease: {}",
                             current_endpoint(), j->dump()));
  }
  return g;
}

Result<int64_t> EtcdClient::lease_keepalive(int64_t id) {
  auto j = call("/v3/lease/keepalive", {{"ID", std::to_string(id)}});
  if (!j) return std::move(j).error();
  return number(*j, "TTL");
}

Status EtcdClient::lease_revoke(int64_t id) {
  auto j = call("/v3/lease/revoke", {{"ID", std::to_string(id)}});
  if (!j && j.error().code != ErrorCode::kNotFound) return std::move(j).error();
  return ok_status();
}

Status EtcdClient::put(std::string_view key, std::string_view value, int64_t lease) {
  json body = {{"key", b64(key)}, {"value", b64(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  auto j = call("/v3/kv/put", body);
  if (!j) return std::move(j).error();
  return ok_status();
}

Result<RangeResult> EtcdClient::range(std::string_view key, std::string_view range_end) {
  json body = {{"key", b64(key)}};
  if (!range_end.empty()) body["range_end"] = b64(range_end);
  auto j = call("/v3/kv/range", body);
  if (!j) return std::move(j).error();
  return RangeResult{key_values(*j), revision(*j)};
}

Result<int64_t> EtcdClient::delete_range(std::string_view key, std::string_view range_end) {
  json body = {{"key", b64(key)}};
  if (!range_end.empty()) body["range_end"] = b64(range_end);
  auto j = call("/v3/kv/deleterange", body);
  if (!j) return std::move(j).error();
  return number(*j, "deleted");
}

Result<TxnResult> EtcdClient::txn(const std::vector<Compare>& compares,
                                  const std::vector<TxnOp>& success,
                                  const std::vector<TxnOp>& failure) {
  json body = json::object();
  body["compare"] = json::array();
  for (const auto& c : compares) body["compare"].push_back(compare_json(c));
  body["success"] = json::array();
  for (const auto& op : success) body["success"].push_back(op_json(op));
  body["failure"] = json::array();
  for (const auto& op : failure) body["failure"].push_back(op_json(op));
  auto j = call("/v3/kv/txn", body);
  if (!j) return std::move(j).error();
  TxnResult out;
  out.succeeded = j->value("succeeded", false);
  out.revision = revision(*j);
  if (auto it = j->find("responses"); it != j->end() && it->is_array()) {
    for (const auto& r : *it) {
      if (auto range = r.find("response_range"); range != r.end()) {
        out.ranges.push_back(key_values(*range));
      }
    }
  }
  return out;
}

}  // namespace witmq::cluster
