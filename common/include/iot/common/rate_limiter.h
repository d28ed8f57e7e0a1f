#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace iot::common {

/// Token buckets by key (a device id, a client address): `rate_per_second` tokens a second, up
/// to `burst` (default one second's worth, at least 1). Not thread-safe. Memory is bounded: when
/// more than `max_keys` buckets exist, those that are full again (idle long enough) are dropped.
class KeyedRateLimiter {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  explicit KeyedRateLimiter(double rate_per_second, size_t max_keys = 200'000, Clock clock = {},
                            double burst = 0);
  /// True: takes a token for `key`; false: the key is over its rate. `age`: how long ago the
  /// event happened (e.g. when the broker received a device's message); the token is taken at
  /// that moment, so a backlog queued while the consumer was slow or away, delivered at once, is
  /// measured at the rate it was sent, not at the rate it is drained.
  bool Allow(std::string_view key, std::chrono::steady_clock::duration age = {});
  [[nodiscard]] size_t tracked() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point updated;
  };
  void Sweep(std::chrono::steady_clock::time_point now);

  double rate_;
  double burst_;
  size_t max_keys_;
  Clock clock_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace iot::common
