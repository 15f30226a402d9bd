// Status and Result<T>: how every user- or peer-caused error travels in kvcomm.
//
// The numeric values of ErrorCode are the wire values of schemas/kvcomm.capnp's ErrorCode enum
// (a static_assert in daemon/ and agents/client checks they agree), so an error crosses the
// socket without translation. Programmer errors assert instead.
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kvcomm {

enum class ErrorCode : uint16_t {
  kOk = 0,
  kInvalidArgument = 1,      // a field, shape, size or flag is wrong
  kNotFound = 2,             // no such segment / key
  kAlreadyExists = 3,        // reserved for create-only operations
  kFailedPrecondition = 4,   // e.g. a request before Hello
  kVersionMismatch = 5,      // protocol version not supported
  kFingerprintMismatch = 6,  // segment and session model differ
  kPermissionDenied = 7,     // namespace rights
  kResourceExhausted = 8,    // over a size limit or no tier can hold it
  kDataLoss = 9,             // a stored record failed its checksum
  kUnavailable = 10,         // daemon unreachable
  kDeadlineExceeded = 11,    // no reply in time
  kInternal = 12,            // a bug or an I/O failure inside the daemon
  kMalformedMessage = 13,    // bytes that are not a valid protocol message
};
inline constexpr int kNumErrorCodes = 14;

std::string_view ErrorCodeName(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {
    assert(code != ErrorCode::kOk);
  }
  static Status Ok() { return {}; }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "NotFound: no segment with context key 00ab..."
  std::string ToString() const;

  // Prefixes the message with context, keeping the code.
  Status WithContext(std::string_view context) const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

template <typename... Args>
Status Error(ErrorCode code, fmt::format_string<Args...> fmt, Args&&... args) {
  return Status(code, fmt::format(fmt, std::forward<Args>(args)...));
}
template <typename... Args>
Status InvalidArgument(fmt::format_string<Args...> fmt, Args&&... args) {
  return Status(ErrorCode::kInvalidArgument, fmt::format(fmt, std::forward<Args>(args)...));
}

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!status_.ok());
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace kvcomm

#define KVCOMM_CONCAT_INNER(a, b) a##b
#define KVCOMM_CONCAT(a, b) KVCOMM_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define KVCOMM_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::kvcomm::Status kvcomm_status_ = (expr);        \
    if (!kvcomm_status_.ok()) return kvcomm_status_; \
  } while (0)

// `KVCOMM_ASSIGN_OR_RETURN(auto x, Foo());` unwraps a Result or returns its Status.
#define KVCOMM_ASSIGN_OR_RETURN(lhs, expr)                   \
  auto KVCOMM_CONCAT(kvcomm_result_, __LINE__) = (expr);     \
  if (!KVCOMM_CONCAT(kvcomm_result_, __LINE__).ok())         \
    return KVCOMM_CONCAT(kvcomm_result_, __LINE__).status(); \
  lhs = std::move(KVCOMM_CONCAT(kvcomm_result_, __LINE__)).value()
