#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/shadow/document.h"
#include "iot/thing_model/product_model.h"

namespace iot::shadow {

using FieldValues = std::vector<std::pair<std::string, std::string>>;

/// The live store (Redis): the truth for live shadow state, shared by every replica. Every
/// write is one atomic script, so concurrent replicas never interleave inside a device.
class LiveStore {
 public:
  virtual ~LiveStore() = default;

  /// One report's stamped fields (PropertyField / ServiceTimeField -> Stamp).
  struct ReportWrite {
    std::string device_id;
    std::string tenant_id;
    std::string message_id;  ///< a message among the device's recent ones is not applied again
    FieldValues fields;
  };
  enum class Outcome { kApplied, kUnchanged, kTooLarge, kDuplicate, kConflict };
  struct WriteResult {
    Outcome outcome = Outcome::kApplied;
    int64_t version = 0;
    bool created = false;  ///< the device had no live shadow before this write
  };

  /// Merges reports in order: a field is written unless the stored one is newer (by its
  /// stamp); any write bumps the version and marks the device dirty for the write-behind. A
  /// report whose message id is among the last ones applied to its device is kDuplicate; an
  /// applied report's id is remembered in the same atomic step as its writes.
  virtual absl::StatusOr<std::vector<WriteResult>> MergeReports(
      const std::vector<ReportWrite>& reports) = 0;

  /// Desired fields to set (stamped) or remove (empty value), if the version is `expected`
  /// (< 0: any). kConflict carries the current version.
  virtual absl::StatusOr<WriteResult> ApplyDesired(const std::string& device_id,
                                                   const std::string& tenant_id, int64_t expected,
                                                   const FieldValues& fields) = 0;

  /// The device's shadow (exists=false when there is none).
  virtual absl::StatusOr<DeviceShadow> Load(const std::string& device_id) = 0;

  /// Merges the durable copy under the live state (newer live fields win); the version becomes
  /// at least the durable one. Used after Redis lost data.
  virtual absl::Status Restore(const DeviceShadow& durable) = 0;

  /// Records the device's answer to a property set, remembering `message_id` with it as a
  /// report's; false (nothing written) when that message was applied already.
  virtual absl::StatusOr<bool> RecordPropertySet(const std::string& device_id,
                                                 const std::string& tenant_id,
                                                 const std::string& message_id,
                                                 const PropertySetRecord& record) = 0;

  /// True when `key` was marked done within its ttl (presence events).
  virtual absl::StatusOr<bool> IsDone(const std::string& key) = 0;
  /// Marks `key` done for `ttl`: only once its effect happened.
  virtual absl::Status MarkDone(const std::string& key, std::chrono::seconds ttl) = 0;

  /// Write-behind: up to `max` dirty devices, leased for `lease` so other replicas skip them.
  virtual absl::StatusOr<std::vector<DeviceShadow>> ClaimDirty(size_t max,
                                                               std::chrono::milliseconds lease) = 0;
  /// The devices were written durably at their write_seq: clean unless written since.
  virtual absl::Status AckFlushed(const std::vector<DeviceShadow>& flushed) = 0;
  /// The durable write failed: make the devices claimable again at once.
  virtual absl::Status ReleaseClaims(const std::vector<DeviceShadow>& claimed) = 0;

  /// The marker that says "this Redis holds the rebuilt state"; missing after a flush.
  virtual absl::StatusOr<bool> HasMarker() = 0;
  virtual absl::Status SetMarker() = 0;
  /// One replica at a time rebuilds; true when this one may.
  virtual absl::StatusOr<bool> TryLockRebuild(std::chrono::milliseconds ttl) = 0;
  virtual absl::Status UnlockRebuild() = 0;
};

/// The durable copy (PostgreSQL).
class DurableStore {
 public:
  virtual ~DurableStore() = default;

  /// Writes reported state, version and last property set of each device in one transaction;
  /// a row already at a higher version is left alone.
  virtual absl::Status WriteReported(const std::vector<DeviceShadow>& shadows) = 0;
  /// nullopt when the device has no durable shadow.
  virtual absl::StatusOr<std::optional<DeviceShadow>> Load(const std::string& device_id) = 0;
  /// Up to `limit` shadows with device_id > `after`, by device_id.
  virtual absl::StatusOr<std::vector<DeviceShadow>> Scan(const std::string& after,
                                                         size_t limit) = 0;
  /// Runs `apply` in a transaction holding the device's row lock, with the durable desired
  /// side of every service in `services`. When `apply` returns a version, the desired side it
  /// leaves is written with that version and committed; otherwise the transaction is rolled
  /// back and its status returned.
  using DesiredApply =
      std::function<absl::StatusOr<int64_t>(std::map<std::string, ServiceShadow>& services)>;
  virtual absl::Status UpdateDesired(const std::string& device_id, const std::string& tenant_id,
                                     const DesiredApply& apply) = 0;
};

/// What the registry says about a device.
struct DeviceInfo {
  std::string device_id;
  std::string tenant_id;
  std::string product_id;
  std::shared_ptr<const thing_model::CompiledModel> model;
};

/// thing-model's registry (InternalThingModel.GetDeviceContext), cached.
class DeviceDirectory {
 public:
  virtual ~DeviceDirectory() = default;
  /// NOT_FOUND for an unknown device.
  virtual absl::StatusOr<DeviceInfo> Find(const std::string& device_id) = 0;
};

/// The gateway's downlink (InternalDownlink.Publish).
class DevicePublisher {
 public:
  virtual ~DevicePublisher() = default;
  /// Publishes a property set; true when the device was online and got it.
  virtual absl::StatusOr<bool> PublishPropertySet(const std::string& tenant_id,
                                                  const std::string& device_id,
                                                  const std::string& request_id,
                                                  const std::string& payload) = 0;
};

}  // namespace iot::shadow
