#pragma once

// Telemetry history: property rows in a day-partitioned PostgreSQL table (docs/history.md).
// This header holds the domain types and the pure rules (time parsing, buckets, partition names,
// page markers, row extraction); history_store.h and history_writer.h hold the machinery.

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "iot/rule_forwarding/destination.h"

namespace iot::rule_forwarding {

inline constexpr int64_t kMsPerDay = 86'400'000;

/// One stored property value.
struct HistoryRow {
  std::string tenant_id;
  std::string device_id;
  std::string service_id;
  std::string property;
  int64_t time_ms = 0;        ///< Unix milliseconds (the service's event_time, else the record's)
  std::string value_json;     ///< the value as reported
  std::optional<double> num;  ///< the value when it is a JSON number (min/max/avg use it)
  std::string dedupe_key;     ///< the delivery id: a retried delivery stores nothing new
};

/// The rows of a device.property delivery: payload.notify_data.body.services[] (SELECT *) or
/// payload.services[] (a SELECT of the body), one row per property. Other payloads give none.
std::vector<HistoryRow> RowsOf(const Delivery& delivery);

/// RFC 3339 (`2026-11-26T20:00:00.5+01:00`) or IoTDA's `20261126T200000Z` to Unix ms.
absl::StatusOr<int64_t> ParseTimestamp(std::string_view text);
/// Unix ms as RFC 3339 UTC with milliseconds: `2026-11-26T20:00:00.000Z`.
std::string FormatTimestamp(int64_t ms);
/// Unix ms in PostgreSQL's timestamptz input form (`2026-11-26 20:00:00.000+00`), for COPY.
std::string PgTimestamp(int64_t ms);

/// A bucket width "30s", "5m", "1h", "1d" (or bare seconds) → seconds, 1 s .. 31 d.
absl::StatusOr<int64_t> ParseBucket(std::string_view text);
/// The start of the epoch-aligned bucket of width `bucket_ms` that holds `time_ms`.
int64_t BucketStart(int64_t time_ms, int64_t bucket_ms);

/// Day number (days since 1970-01-01 UTC) of a Unix ms time, floor for times before 1970.
int64_t DayOf(int64_t time_ms);
/// `property_history_p20261126`: the partition holding day `day`.
std::string PartitionName(int64_t day);
/// The day of a partition name, or nullopt for a name that is not one of ours.
std::optional<int64_t> PartitionDay(std::string_view name);
/// Partitions wholly older than `retention_days` before `now_ms` (their upper bound is at or
/// before the cut-off), i.e. those the retention task drops.
std::vector<std::string> PartitionsToDrop(std::span<const std::string> partitions, int64_t now_ms,
                                          int64_t retention_days);

/// A validated ListPropertyHistory request.
struct HistoryQuery {
  std::string tenant_id;
  std::string device_id;
  std::string service_id;
  std::string property;
  int64_t start_ms = 0;  ///< inclusive
  int64_t end_ms = 0;    ///< exclusive
  int32_t limit = 100;
  int64_t bucket_seconds = 0;  ///< 0: raw rows
  /// Raw: resume after (after_ms, after_key); bucketed: resume at bucket after_ms.
  std::optional<int64_t> after_ms;
  std::string after_key;
};

/// The request as it arrives; MakeHistoryQuery checks it.
struct HistoryQueryInput {
  std::string device_id;
  std::string service_id;
  std::string property;
  std::string start_time;
  std::string end_time;
  int32_t limit = 0;
  std::string marker;
  std::string bucket;
};

/// INVALID_ARGUMENT naming the field for a missing id, an unparsable time, start_time not
/// before end_time, a bad limit, bucket or marker. `now_ms` fills the default range.
absl::StatusOr<HistoryQuery> MakeHistoryQuery(std::string tenant_id, const HistoryQueryInput& in,
                                              int64_t now_ms);

/// Page markers (opaque to clients).
std::string RawMarker(int64_t time_ms, std::string_view key);
std::string BucketMarker(int64_t next_bucket_ms);

struct HistoryValue {
  int64_t time_ms = 0;
  std::string value_json;
  std::string key;  ///< dedupe key: the page marker's tie-breaker
};

struct HistoryBucket {
  int64_t start_ms = 0;
  int64_t count = 0;
  std::optional<double> min;
  std::optional<double> max;
  std::optional<double> avg;
};

struct HistoryPage {
  std::vector<HistoryValue> values;
  std::vector<HistoryBucket> buckets;
  std::string next_marker;
};

/// Where history lives (PgHistoryStore). Thread-safe.
class HistoryStore {
 public:
  virtual ~HistoryStore() = default;
  /// Stores rows (one transaction). Rows already stored (same tenant, device, service,
  /// property, time and dedupe key) are skipped; returns how many rows were new.
  virtual absl::StatusOr<int64_t> Insert(std::span<const HistoryRow> rows) = 0;
  virtual absl::StatusOr<HistoryPage> Query(const HistoryQuery& query) = 0;
};

/// Milliseconds since the epoch, from the system clock.
int64_t NowMs();

}  // namespace iot::rule_forwarding
