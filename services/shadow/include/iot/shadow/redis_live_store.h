#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "iot/common/redis.h"
#include "iot/shadow/ports.h"

namespace iot::shadow {

/// The live store in Redis: HASH `shadow:dev:{device_id}` per device (fields in document.h,
/// plus `m`: digests of the device's last `dedupe_window` messages applied), ZSET `shadow:dirty`
/// (devices the write-behind owes PostgreSQL, scored by when they are due), `shadow:msg:*`
/// done marks of presence events, `shadow:marker` (present while Redis holds the rebuilt
/// state). Every write is one Lua script (EVALSHA), atomic per device.
class RedisLiveStore final : public LiveStore {
 public:
  RedisLiveStore(std::shared_ptr<common::RedisClient> redis, size_t max_document_bytes,
                 size_t dedupe_window);

  absl::StatusOr<std::vector<WriteResult>> MergeReports(
      const std::vector<ReportWrite>& reports) override;
  absl::StatusOr<WriteResult> ApplyDesired(const std::string& device_id,
                                           const std::string& tenant_id, int64_t expected,
                                           const FieldValues& fields) override;
  absl::StatusOr<DeviceShadow> Load(const std::string& device_id) override;
  absl::Status Restore(const DeviceShadow& durable) override;
  absl::StatusOr<bool> RecordPropertySet(const std::string& device_id, const std::string& tenant_id,
                                         const std::string& message_id,
                                         const PropertySetRecord& record) override;
  absl::StatusOr<bool> IsDone(const std::string& key) override;
  absl::Status MarkDone(const std::string& key, std::chrono::seconds ttl) override;
  absl::StatusOr<std::vector<DeviceShadow>> ClaimDirty(size_t max,
                                                       std::chrono::milliseconds lease) override;
  absl::Status AckFlushed(const std::vector<DeviceShadow>& flushed) override;
  absl::Status ReleaseClaims(const std::vector<DeviceShadow>& claimed) override;
  absl::StatusOr<bool> HasMarker() override;
  absl::Status SetMarker() override;
  absl::StatusOr<bool> TryLockRebuild(std::chrono::milliseconds ttl) override;
  absl::Status UnlockRebuild() override;

  /// The report-merge script's text and the EVALSHA arguments of one report: what the
  /// benchmark runs bare against Redis.
  static const std::string& MergeScript();
  static std::vector<std::string> MergeArgs(const std::string& sha, const ReportWrite& report,
                                            size_t max_document_bytes, int64_t now_ms,
                                            size_t dedupe_window);
  /// What the scripts remember of a message id: 8 bytes of its SHA-256.
  static std::string MessageDigest(const std::string& message_id);

  static std::string ShadowKey(const std::string& device_id);

 private:
  struct Script {
    const std::string* text;
    std::string sha;  // guarded by mu_
  };

  /// SCRIPT LOAD once (and again after NOSCRIPT).
  absl::StatusOr<std::string> Sha(Script& script, bool reload);
  /// EVALSHA `script` with `keys` and `args`, reloading it once on NOSCRIPT.
  absl::StatusOr<common::RedisReply> Eval(Script& script, const std::vector<std::string>& keys,
                                          const std::vector<std::string>& args);

  std::shared_ptr<common::RedisClient> redis_;
  size_t max_document_bytes_;
  size_t dedupe_window_;
  std::mutex mu_;
  Script merge_;
  Script desired_;
  Script restore_;
  Script claim_;
  Script ack_;
  Script property_set_;
};

}  // namespace iot::shadow
