#pragma once

#include <memory>

#include "iot/common/postgres.h"
#include "iot/shadow/ports.h"

namespace iot::shadow {

/// The durable copy in table shadow.device_shadows (migrations/002_shadows.sql).
class PgDurableStore final : public DurableStore {
 public:
  explicit PgDurableStore(std::shared_ptr<common::PgPool> pool) : pool_(std::move(pool)) {}

  absl::Status WriteReported(const std::vector<DeviceShadow>& shadows) override;
  absl::StatusOr<std::optional<DeviceShadow>> Load(const std::string& device_id) override;
  absl::StatusOr<std::vector<DeviceShadow>> Scan(const std::string& after, size_t limit) override;
  absl::Status UpdateDesired(const std::string& device_id, const std::string& tenant_id,
                             const DesiredApply& apply) override;

 private:
  std::shared_ptr<common::PgPool> pool_;
};

}  // namespace iot::shadow
