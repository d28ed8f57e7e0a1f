#include "iot/common/backoff.h"

#include <algorithm>
#include <random>

namespace iot::common {

Backoff::Backoff(Duration initial, Duration max, double factor)
    : initial_(initial),
      max_(max),
      factor_(factor),
      current_ms_(static_cast<double>(initial.count())),
      rng_state_(std::random_device{}()) {}

Backoff::Duration Backoff::Next() {
  ++attempts_;
  const double ceiling = current_ms_;
  current_ms_ = std::min(current_ms_ * factor_, static_cast<double>(max_.count()));
  // xorshift64: cheap, and jitter needs no quality beyond spreading replicas apart.
  rng_state_ ^= rng_state_ << 13;
  rng_state_ ^= rng_state_ >> 7;
  rng_state_ ^= rng_state_ << 17;
  const double unit = static_cast<double>(rng_state_ % 10'000) / 10'000.0;
  // Half fixed, half jitter: never zero, never above the ceiling.
  const double delay = ceiling * (0.5 + 0.5 * unit);
  return Duration{static_cast<int64_t>(std::max(1.0, delay))};
}

void Backoff::Reset() {
  attempts_ = 0;
  current_ms_ = static_cast<double>(initial_.count());
}

}  // namespace iot::common
