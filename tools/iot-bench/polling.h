#pragma once

// What the ingest and faults scenarios read back from the platform after publishing: every
// device's history rows and shadow, polled until complete or no longer progressing.

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "api.h"
#include "stats.h"

namespace iotbench {

struct BenchContext;

struct PollResult {
  std::size_t complete = 0;  ///< devices whose check returned true
  double seconds = 0;        ///< from `started` to the last device that became complete
  std::string first_error;   ///< a call that failed for good (or still UNAVAILABLE at the end)
  std::size_t retried = 0;   ///< checks answered UNAVAILABLE and tried again
};

/// Polls `check(device index)` (true: the device's data is complete) over every device with a
/// few threads, pass after pass, until all are complete, a pass makes no progress for the
/// context's stall time, or its deadline. A check answered UNAVAILABLE is tried again in the
/// next pass; any other error ends the poll.
PollResult PollDevices(const BenchContext& context, std::size_t devices,
                       const std::function<absl::StatusOr<bool>(std::size_t)>& check,
                       Clock::time_point started);

/// The figure of a PollDevices() run; NotAvailable naming `call` when a call failed.
nlohmann::json PollSummary(const PollResult& result, const std::string& call, std::size_t devices,
                           std::size_t per_device, const std::string& what);

/// The bench's readers of history and shadow (rule-forwarding's History, shadow's Shadows).
class DeviceDataReader {
 public:
  explicit DeviceDataReader(const BenchContext& context);

  /// OK when this build's protos have ListPropertyHistory / ShowDeviceShadow.
  [[nodiscard]] absl::Status CheckHistory() const;
  [[nodiscard]] absl::Status CheckShadow() const;

  /// Rows of property `seq` of the context's service of `device_id` since `since` (RFC 3339) whose
  /// value is in [first, end): value -> number of rows with it (more than 1: duplicates).
  absl::StatusOr<std::map<std::int64_t, int>> HistorySeqs(const std::string& device_id,
                                                          const std::string& since,
                                                          std::int64_t first,
                                                          std::int64_t end) const;
  /// The `seq` in the reported properties of the context's service in the device's shadow; -1 when
  /// it has none.
  absl::StatusOr<std::int64_t> ShadowSeq(const std::string& device_id) const;

 private:
  DynamicClient history_;
  DynamicClient shadow_;
  std::string service_id_;  ///< the context's: "bench", or "default" for alink devices
};

}  // namespace iotbench
