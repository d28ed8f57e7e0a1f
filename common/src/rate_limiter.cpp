#include "iot/common/rate_limiter.h"

#include <algorithm>

namespace iot::common {

KeyedRateLimiter::KeyedRateLimiter(double rate_per_second, size_t max_keys, Clock clock,
                                   double burst)
    : rate_(rate_per_second),
      burst_(burst > 0 ? std::max(1.0, burst) : std::max(1.0, rate_per_second)),
      max_keys_(max_keys),
      clock_(clock ? std::move(clock) : Clock([] { return std::chrono::steady_clock::now(); })) {}

bool KeyedRateLimiter::Allow(std::string_view key, std::chrono::steady_clock::duration age) {
  const auto now = clock_() - std::max(age, std::chrono::steady_clock::duration::zero());
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      Sweep(now);
    }
    it = buckets_.emplace(std::string(key), Bucket{.tokens = burst_, .updated = now}).first;
  }
  Bucket& bucket = it->second;
  // Events of a key come in the order they happened, but one stamped earlier than the bucket's
  // last update (clock steps, a backlog's first message) refills nothing rather than taking
  // tokens back.
  if (now > bucket.updated) {
    const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
    bucket.tokens = std::min(burst_, bucket.tokens + elapsed * rate_);
    bucket.updated = now;
  }
  if (bucket.tokens < 1.0) {
    return false;
  }
  bucket.tokens -= 1.0;
  return true;
}

void KeyedRateLimiter::Sweep(std::chrono::steady_clock::time_point now) {
  std::erase_if(buckets_, [&](const auto& entry) {
    const double elapsed = std::chrono::duration<double>(now - entry.second.updated).count();
    return entry.second.tokens + elapsed * rate_ >= burst_;
  });
}

}  // namespace iot::common
