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
#include "iot/shadow/document.h"
#include "iot/shadow/ports.h"

namespace iot::shadow {

struct ShadowOptions {
  /// Largest live document (field names + stamped values) per device.
  size_t max_document_bytes = 64 * 1024;
  /// How long message ids of internal calls are remembered for idempotency.
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

  // Internal (gateway).
  /// Merges the reports in order. UNAVAILABLE when the live store cannot be reached (the
  /// gateway retries); a malformed or oversize report is counted and skipped.
  absl::Status ReportProperties(const std::vector<Report>& reports);
  /// The body of the device's shadow-get response.
  absl::StatusOr<std::string> DeviceShadowGet(const std::string& device_id,
                                              const std::string& service_id);
  absl::Status CompletePropertySet(const std::string& message_id, const std::string& tenant_id,
                                   const std::string& device_id, const std::string& request_id,
                                   const std::string& payload_json, int64_t received_at_ms);
  /// A connect pushes the device's pending delta.
  absl::Status ReportPresence(const std::vector<Presence>& events);

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
  absl::Status ParseReport(const Report& report, LiveStore::ReportWrite& write);

  std::shared_ptr<LiveStore> live_;
  std::shared_ptr<DurableStore> durable_;
  std::shared_ptr<DeviceDirectory> directory_;
  std::shared_ptr<DevicePublisher> publisher_;
  std::shared_ptr<ShadowMetrics> metrics_;
  ShadowOptions options_;
};

}  // namespace iot::shadow
