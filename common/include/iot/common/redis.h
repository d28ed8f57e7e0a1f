#pragma once

// A small, thread-safe, synchronous Redis client over hiredis with a connection pool.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "iot/common/backoff.h"

namespace iot::common {

struct RedisOptions {
  /// `redis://[[user]:password@]host[:port][/db]`; port defaults to 6379, db to 0.
  std::string url{};
  /// Bounds the TCP connect and the AUTH/SELECT handshake.
  std::chrono::milliseconds connect_timeout{2000};
  /// Bounds every command (and a whole pipeline's socket reads/writes).
  std::chrono::milliseconds command_timeout{2000};
  /// Connections, opened lazily; concurrent callers beyond this wait for a free one.
  size_t pool_size = 2;
};

/// One Redis reply. An error reply (`-ERR ...`) is data here, not a failed status.
struct RedisReply {
  enum class Type { kNil, kStatus, kError, kInteger, kString, kArray };

  Type type = Type::kNil;
  int64_t integer = 0;               ///< kInteger.
  std::string str;                   ///< kStatus, kError and kString (binary-safe).
  std::vector<RedisReply> elements;  ///< kArray.

  [[nodiscard]] bool is_nil() const { return type == Type::kNil; }
  [[nodiscard]] bool is_error() const { return type == Type::kError; }
  /// For logs and test failures, e.g. `"OK"`, `(integer) 3`, `(error) ERR ...`.
  [[nodiscard]] std::string DebugString() const;
};

/// Passes `reply` through, except that a Redis error reply becomes FAILED_PRECONDITION with the
/// error text: `CheckReply(client.Command({"INCR", key}))` when an error reply is a bug.
absl::StatusOr<RedisReply> CheckReply(absl::StatusOr<RedisReply> reply);

/// Thread-safe Redis client. Construction does no I/O: connections are opened on first use
/// (AUTH and SELECT on connect). A call that fails on the connection (refused, reset, timeout)
/// returns UNAVAILABLE and drops that connection; the next call reconnects. After a failed
/// connect, calls fail fast with the last error until a backoff delay (100 ms doubling to 10 s)
/// has passed, so a Redis outage costs callers nothing but the error. Bad credentials give
/// UNAUTHENTICATED.
class RedisClient {
 public:
  /// Validates the options (URL, pool size); never touches the network.
  static absl::StatusOr<std::unique_ptr<RedisClient>> Create(RedisOptions options);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  /// Runs one command given as its arguments (binary-safe), e.g. `{"SET", key, value}`.
  absl::StatusOr<RedisReply> Command(std::span<const std::string_view> args);
  absl::StatusOr<RedisReply> Command(std::initializer_list<std::string_view> args);
  absl::StatusOr<RedisReply> Command(const std::vector<std::string>& args);

  /// Sends all commands, then reads all replies: one round trip. Replies are in command order;
  /// error replies are elements like any other. Not a transaction (wrap in MULTI/EXEC for that).
  absl::StatusOr<std::vector<RedisReply>> Pipeline(
      const std::vector<std::vector<std::string>>& commands);

  /// PING; OK when the server answers PONG.
  absl::Status Ping();

  [[nodiscard]] const RedisOptions& options() const { return options_; }

 private:
  friend class RedisSubscriber;
  struct Connection;
  struct Target {
    std::string host;
    uint16_t port = 0;
    std::string user;
    std::string password;
    int db = 0;
  };

  RedisClient(RedisOptions options, Target target);

  /// Takes a pooled connection (waiting for one if all are busy), connected, or fails.
  absl::StatusOr<std::unique_ptr<Connection>> Acquire();
  /// Returns `connection` to the pool; a broken one (or nullptr) is replaced by an empty slot.
  void Release(std::unique_ptr<Connection> connection);
  absl::Status Connect(Connection& connection);

  const RedisOptions options_;
  const Target target_;
  const std::string masked_url_;

  std::mutex mutex_;
  std::condition_variable slot_free_;
  std::vector<std::unique_ptr<Connection>> idle_;  ///< Free slots, connected or not.
  Backoff backoff_;
  std::chrono::steady_clock::time_point next_connect_{};
  absl::Status last_connect_error_;
};

}  // namespace iot::common
