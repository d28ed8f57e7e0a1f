#pragma once

// Latency samples and the figures the report prints from them.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace iotbench {

using Clock = std::chrono::steady_clock;

/// Milliseconds since the Unix epoch (what the bench puts in payloads to measure end to end).
std::int64_t UnixMillis();

/// RFC 3339 UTC with whole seconds, e.g. 2026-11-26T20:00:00Z.
std::string Rfc3339(std::chrono::system_clock::time_point time);

/// Seconds between two steady-clock points.
double SecondsBetween(Clock::time_point from, Clock::time_point to);

/// Thread-safe collection of latencies in milliseconds.
class Latencies {
 public:
  void Add(double ms);
  [[nodiscard]] std::size_t size() const;
  /// {"count","p50_ms","p90_ms","p99_ms","max_ms","mean_ms"}; {"count":0} when empty.
  [[nodiscard]] nlohmann::json Summary() const;
  /// The q-quantile (0..1) in ms; 0 when empty.
  [[nodiscard]] double Quantile(double q) const;

 private:
  [[nodiscard]] std::vector<double> Sorted() const;

  mutable std::mutex mutex_;
  std::vector<double> ms_;
};

/// `{"not_available": reason}`: a figure the run could not produce, and why.
nlohmann::json NotAvailable(const std::string& reason);

/// a / b rounded to 3 decimals, or a NotAvailable naming what is missing.
nlohmann::json Ratio(const nlohmann::json& numerator, const nlohmann::json& denominator);

/// Rounds to `digits` decimals (report readability).
double Round(double value, int digits = 1);

}  // namespace iotbench
