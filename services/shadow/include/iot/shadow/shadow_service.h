#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/common/auth.h"
#include "iot/common/rejections.h"
#include "iot/shadow/document.h"
#include "iot/shadow/ports.h"

namespace iot::shadow {

struct ShadowOptions {
  /// Largest live document (field names + stamped values) per device.
  size_t max_document_bytes = 64 * 1024;
  /// How long presence events are remembered as done (their effect: a delta push).
  std::chrono::seconds dedupe_ttl{600};
  /// Devices per durable write-behind batch.
  size_t flush_batch = 500;
  /// A claimed batch is skipped by other replicas this long.
  std::chrono::milliseconds flush_lease{30'000};
};

/// The shadow's metrics (iot_shadow_*).
struct ShadowMetrics {
  explicit ShadowMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& reports;  ///< {outcome}
  prometheus::Counter& reports_applied;
  prometheus::Counter& reports_unchanged;
  prometheus::Counter& reports_duplicate;
  prometheus::Counter& reports_too_large;
  prometheus::Counter& reports_malformed;
  prometheus::Counter& properties_refused;
  prometheus::Counter& flushed_devices;
  prometheus::Counter& flush_batches;
  prometheus::Counter& flush_failures;
  prometheus::Counter& restores;
  prometheus::Counter& rebuilds;
  prometheus::Counter& deltas_pushed;
  prometheus::Counter& deltas_offline;
  prometheus::Counter& push_failures;
  prometheus::Counter& property_set_results;
  /// iot_shadow_rejected_records_total{reason}: records refused for good (IngestAck.rejected).
  common::RejectionCounter rejections;
};

/// One property report from the gateway.
struct Report {
  std::string message_id;
  std::string tenant_id;
  std::string device_id;
  std::string services_json;  ///< [{"service_id","properties":{},"event_time"}]
  int64_t received_at_ms = 0;
};

/// Desired properties of one service; null values remove.
struct DesiredUpdate {
  std::string service_id;
  nlohmann::json properties;
  std::optional<int64_t> version;
};

/// A device's shadow as the API shows it: every service of its model, in model order.
struct ShadowView {
  DeviceShadow shadow;
  std::vector<std::string> service_ids;
};

/// A presence event from the gateway.
struct Presence {
  std::string message_id;
  std::string tenant_id;
  std::string device_id;
  bool online = false;
};

/// Device shadows: the logic behind the public and internal RPCs and the write-behind.
class ShadowService {
 public:
  ShadowService(std::shared_ptr<LiveStore> live, std::shared_ptr<DurableStore> durable,
                std::shared_ptr<DeviceDirectory> directory,
                std::shared_ptr<DevicePublisher> publisher, std::shared_ptr<ShadowMetrics> metrics,
                ShadowOptions options = {});

  // Internal (gateway). Each returns the records it refused for good (counted, logged and
  // answered in IngestAck.rejected) and takes the rest; an error status means nothing new was
  // taken and the gateway retries. Every one is idempotent on the records' message ids.

  /// Merges the reports in order; a report applied already (among its device's recent
  /// messages) is a duplicate. UNAVAILABLE when the live store cannot be reached. Rejected:
  /// `malformed` (no device or message id, services_json not an array), `invalid_property`
  /// (none of its properties can be kept) and `too_large` (the document would pass the limit).
  absl::StatusOr<common::Rejected> ReportProperties(const std::vector<Report>& reports);
  /// The body of the device's shadow-get response.
  absl::StatusOr<std::string> DeviceShadowGet(const std::string& device_id,
                                              const std::string& service_id);
  /// Records the device's answer to a delta push; `malformed` without device, request or
  /// message id.
  absl::StatusOr<common::Rejected> CompletePropertySet(
      const std::string& message_id, const std::string& tenant_id, const std::string& device_id,
      const std::string& request_id, const std::string& payload_json, int64_t received_at_ms);
  /// A connect pushes the device's pending delta, once per event (marked done after the push);
  /// `malformed` without device id.
  absl::StatusOr<common::Rejected> ReportPresence(const std::vector<Presence>& events);

  // Public (tenant API keys): another tenant's device is NOT_FOUND.
  absl::StatusOr<ShadowView> Show(const common::Principal& caller, const std::string& device_id,
                                  const std::string& service_id);
  absl::StatusOr<ShadowView> UpdateDesired(const common::Principal& caller,
                                           const std::string& device_id,
                                           const std::vector<DesiredUpdate>& updates);

  // Write-behind and recovery (WriteBehind's loop).
  /// Writes one batch of dirty devices to PostgreSQL; returns how many were written.
  absl::StatusOr<size_t> FlushOnce();
  /// When Redis lost its marker (flushed or replaced), rebuilds every shadow from PostgreSQL.
  /// Returns true when a rebuild ran.
  absl::StatusOr<bool> RebuildIfFlushed();

 private:
  absl::StatusOr<DeviceInfo> Authorize(const common::Principal& caller,
                                       const std::string& device_id);
  /// The live shadow, restored from the durable copy first if Redis does not have it.
  absl::StatusOr<DeviceShadow> LoadLive(const std::string& device_id);
  absl::Status RestoreFromDurable(const std::string& device_id);
  /// Pushes the delta as a property set if there is one; failures are counted, not returned.
  void PushDelta(const DeviceShadow& shadow);
  /// The report's stamped fields; counts the properties it refuses in `refused`.
  absl::Status ParseReport(const Report& report, LiveStore::ReportWrite& write, size_t& refused);
  /// Counts, logs and appends a rejection.
  void Reject(common::Rejected& out, const std::string& message_id, const std::string& device_id,
              std::string reason, std::string detail);

  std::shared_ptr<LiveStore> live_;
  std::shared_ptr<DurableStore> durable_;
  std::shared_ptr<DeviceDirectory> directory_;
  std::shared_ptr<DevicePublisher> publisher_;
  std::shared_ptr<ShadowMetrics> metrics_;
  ShadowOptions options_;
};

}  // namespace iot::shadow
