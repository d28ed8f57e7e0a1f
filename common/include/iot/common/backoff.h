#pragma once

#include <chrono>
#include <cstdint>

namespace iot::common {

/// Exponential backoff with full jitter, for reconnect and retry loops.
/// Not thread-safe: each retry loop owns one.
class Backoff {
 public:
  using Duration = std::chrono::milliseconds;

  Backoff(Duration initial = Duration{100}, Duration max = Duration{10'000}, double factor = 2.0);

  /// The delay to wait before the next attempt; grows with every call up to `max`.
  Duration Next();
  /// Back to the initial delay, after a success.
  void Reset();
  /// Attempts since the last Reset().
  [[nodiscard]] uint32_t attempts() const { return attempts_; }

 private:
  Duration initial_;
  Duration max_;
  double factor_;
  double current_ms_;
  uint32_t attempts_ = 0;
  uint64_t rng_state_;
};

}  // namespace iot::common
