#pragma once

#include <memory>

#include "iot/common/redis.h"
#include "iot/thing_model/ports.h"

namespace iot::thing_model {

/// The projection in Redis, in the format of docs/redis-projection.md.
class RedisProjection final : public Projection {
 public:
  explicit RedisProjection(std::shared_ptr<common::RedisClient> redis) : redis_(std::move(redis)) {}

  absl::Status PutDevice(const DeviceRecord& device) override;
  absl::Status PutDevices(const std::vector<DeviceRecord>& devices) override;
  absl::Status DeleteDevice(const DeviceRecord& device) override;
  absl::Status PutKey(const ApiKeyRecord& key, bool root_tenant) override;
  absl::Status DeleteKey(const ApiKeyRecord& key) override;
  absl::Status PublishChange(const std::string& json) override;
  absl::StatusOr<bool> IsReady() override;
  absl::Status MarkReady() override;
  absl::Status RemoveStale(const std::vector<std::string>& live_device_ids,
                           const std::vector<std::string>& live_key_hashes) override;

 private:
  absl::Status Exec(const std::vector<std::vector<std::string>>& commands);
  absl::Status RemoveStaleWithPrefix(const std::string& prefix,
                                     const std::vector<std::string>& live);

  std::shared_ptr<common::RedisClient> redis_;
};

}  // namespace iot::thing_model
