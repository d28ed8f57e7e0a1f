#include "iot/common/backoff.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>

namespace iot::common {
namespace {

// A distinct jitter seed per Backoff without opening the entropy device each time (callers build
// one per retry loop, on hot paths): one random_device read per process, then splitmix64.
uint64_t NextSeed() {
  static std::atomic<uint64_t> state{(static_cast<uint64_t>(std::random_device{}()) << 32) |
                                     std::random_device{}()};
  uint64_t z = state.fetch_add(0x9e3779b97f4a7c15ULL, std::memory_order_relaxed);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z == 0 ? 1 : z;  // xorshift must not start at 0
}

}  // namespace

Backoff::Backoff(Duration initial, Duration max, double factor)
    : initial_(initial),
      max_(max),
      factor_(factor),
      current_ms_(static_cast<double>(initial.count())),
      rng_state_(NextSeed()) {}

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
