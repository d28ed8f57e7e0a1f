#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/connection>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace iot::common {

struct PgPoolOptions {
  /// libpq connection string: `postgresql://user:pass@host:port/db?...` or `key=value ...`.
  std::string url;
  /// Connections kept; 0 is taken as 1.
  size_t size = 4;
  /// How long Run() waits for a free connection before UNAVAILABLE.
  std::chrono::milliseconds acquire_timeout{5000};
  /// libpq `connect_timeout`, rounded up to whole seconds and at least 2 (libpq's minimum).
  /// A `connect_timeout` already in `url` wins.
  std::chrono::milliseconds connect_timeout{3000};
  /// Backoff between failed connect attempts of one pool slot (iot::common::Backoff).
  std::chrono::milliseconds reconnect_backoff_initial{100};
  std::chrono::milliseconds reconnect_backoff_max{5000};
};

/// The one place libpqxx (and other) exceptions become statuses: unique violation ->
/// ALREADY_EXISTS, foreign key / restrict violation -> FAILED_PRECONDITION, check / not-null
/// violation and data exceptions (SQLSTATE 22xxx) -> INVALID_ARGUMENT, serialization failure,
/// deadlock, lock not available -> ABORTED, query cancelled (statement_timeout) ->
/// DEADLINE_EXCEEDED, broken connection / server shutting down -> UNAVAILABLE, commit outcome
/// unknown -> UNKNOWN, anything else -> INTERNAL. The message is PostgreSQL's (one line).
absl::Status FromPqxx(const std::exception& e);

/// `conninfo` (URI or key=value form) with libpq's `connect_timeout` added unless it names one.
std::string WithConnectTimeout(std::string_view conninfo, std::chrono::milliseconds timeout);

/// `conninfo` with any password replaced by `***`, for logs and error messages.
std::string MaskConninfo(std::string_view conninfo);

/// A fixed-size pool of libpqxx connections, shared by all threads of a service.
///
/// Connections are opened lazily on first use, so construction never blocks or throws. A
/// connection found broken while in use is dropped and the call retried once on a fresh one;
/// a slot whose connect failed waits (iot::common::Backoff) before trying again, and callers
/// that get such a slot in the meantime fail fast with UNAVAILABLE instead of blocking.
/// No pqxx exception ever leaves the pool: they become statuses through FromPqxx().
///
/// `fn` must leave no session state behind (SET without LOCAL, session locks, temp tables):
/// the connection goes back to the pool. It may run twice (see above), so anything it does
/// outside a transaction must be idempotent. Do not call Run() from inside `fn` (a pool of
/// one would deadlock until acquire_timeout). The pool must outlive every call.
class PgPool {
 public:
  explicit PgPool(PgPoolOptions options);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  /// Borrows a connection (connecting if needed) and runs `fn` on it.
  absl::Status Run(const std::function<void(pqxx::connection&)>& fn);

  /// Like Run(), for a `fn` that returns a value: T gives absl::StatusOr<T>; absl::Status and
  /// absl::StatusOr<T> are passed through (the pool's own failures take precedence).
  template <typename Fn>
  auto Call(Fn&& fn);

  /// `SELECT 1` on a pooled connection.
  absl::Status Ping();

  [[nodiscard]] size_t size() const { return slots_.size(); }
  /// The connection string with the password masked.
  [[nodiscard]] const std::string& masked_url() const { return masked_url_; }

 private:
  struct Slot;
  class Lease;

  absl::StatusOr<Slot*> Acquire();
  void Release(Slot* slot);
  absl::Status Connect(Slot& slot);

  PgPoolOptions options_;
  std::string conninfo_;
  std::string masked_url_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::mutex mu_;
  std::condition_variable freed_;
};

namespace internal {
template <typename T>
inline constexpr bool kIsStatusOr = false;
template <typename T>
inline constexpr bool kIsStatusOr<absl::StatusOr<T>> = true;
}  // namespace internal

template <typename Fn>
auto PgPool::Call(Fn&& fn) {
  using R = std::invoke_result_t<Fn&, pqxx::connection&>;
  static_assert(!std::is_void_v<R>, "use Run() for a function that returns nothing");
  if constexpr (std::is_same_v<R, absl::Status>) {
    absl::Status inner;
    absl::Status outer = Run([&](pqxx::connection& c) { inner = fn(c); });
    return outer.ok() ? inner : outer;
  } else {
    using Out = std::conditional_t<internal::kIsStatusOr<R>, R, absl::StatusOr<R>>;
    std::optional<R> value;
    absl::Status status = Run([&](pqxx::connection& c) { value.emplace(fn(c)); });
    if (!status.ok()) {
      return Out(std::move(status));
    }
    return Out(*std::move(value));
  }
}

}  // namespace iot::common
