#include "stats.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace iotbench {

std::int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Rfc3339(std::chrono::system_clock::time_point time) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                     fmt::gmtime(std::chrono::system_clock::to_time_t(time)));
}

double SecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

namespace {

/// Nearest-rank quantile of sorted, non-empty samples.
double QuantileOf(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) {
    return 0;
  }
  const double rank = std::ceil(q * static_cast<double>(sorted.size()));
  const auto index = static_cast<std::size_t>(std::max(rank, 1.0)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

}  // namespace

std::vector<double> Latencies::Sorted() const {
  std::vector<double> sorted;
  {
    const std::lock_guard lock(mutex_);
    sorted = ms_;
  }
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

void Latencies::Add(double ms) {
  const std::lock_guard lock(mutex_);
  ms_.push_back(ms);
}

std::size_t Latencies::size() const {
  const std::lock_guard lock(mutex_);
  return ms_.size();
}

double Latencies::Quantile(double q) const { return QuantileOf(Sorted(), q); }

nlohmann::json Latencies::Summary() const {
  const std::vector<double> sorted = Sorted();
  if (sorted.empty()) {
    return {{"count", 0}};
  }
  const double mean =
      std::accumulate(sorted.begin(), sorted.end(), 0.0) / static_cast<double>(sorted.size());
  return {{"count", sorted.size()},
          {"p50_ms", Round(QuantileOf(sorted, 0.5), 3)},
          {"p90_ms", Round(QuantileOf(sorted, 0.9), 3)},
          {"p99_ms", Round(QuantileOf(sorted, 0.99), 3)},
          {"max_ms", Round(sorted.back(), 3)},
          {"mean_ms", Round(mean, 3)}};
}

nlohmann::json NotAvailable(const std::string& reason) { return {{"not_available", reason}}; }

nlohmann::json Ratio(const nlohmann::json& numerator, const nlohmann::json& denominator) {
  if (!numerator.is_number() || !denominator.is_number()) {
    return NotAvailable(!numerator.is_number() ? "the platform figure is not available"
                                               : "the raw broker figure is not available");
  }
  const double den = denominator.get<double>();
  if (den == 0) {
    return NotAvailable("the raw broker figure is 0");
  }
  return Round(numerator.get<double>() / den, 3);
}

double Round(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

}  // namespace iotbench
