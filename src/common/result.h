// Error values and Result<T>, the one way fallible calls report failure across layers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace witmq {

// Stable numeric codes: they travel on the wire (docs/PROTOCOL.md), so never renumber.
enum class ErrorCode : uint16_t {
  kInvalidArgument = 1,     // the caller sent something malformed or out of range
  kNotFound = 2,            // a named channel, subscription or record does not exist
  kAlreadyExists = 3,       // declare of an existing channel with different settings
  kStaleReceipt = 4,        // settle with a receipt whose lease expired or moved on
  kPermissionDenied = 5,    // authentication or authorization refused
  kResourceExhausted = 6,   // a limit was hit (size, count, credit, disk)
  kUnavailable = 7,         // the broker is shutting down or not ready
  kCorruption = 8,          // a stored record failed to decode
  kIoError = 9,             // the storage engine reported an I/O failure
  kUnsupported = 10,        // a protocol version or feature the server does not offer
  kFailedPrecondition = 11, // the operation is valid but not in the current state
  kInternal = 12,           // a bug: an invariant did not hold
  kTimeout = 13,            // a request-reply got no reply before its timeout
};

std::string_view error_code_name(ErrorCode code);

// An error a caller can act on: a code and a message naming the field, the value and what was
// expected. The message is what WIT's `error.trace()` returns.
struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;

  Error() = default;
  Error(ErrorCode c, std::string m) : code(c), message(std::move(m)) {}

  // "<code-name>: <message>"
  std::string to_string() const;
};

inline Error invalid_argument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Error not_found(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }

// A value or an Error. Intentionally small: GCC 12 has no std::expected.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Status ok_status() { return {}; }

}  // namespace witmq

// Early-return helpers for functions returning Result/Status.
#define WITMQ_RETURN_IF_ERROR(expr)                \
  do {                                             \
    auto witmq_status_ = (expr);                   \
    if (!witmq_status_.ok()) return std::move(witmq_status_).error(); \
  } while (0)
