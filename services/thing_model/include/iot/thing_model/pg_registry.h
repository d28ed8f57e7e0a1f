#pragma once

#include <memory>

#include "iot/common/postgres.h"
#include "iot/thing_model/ports.h"

namespace iot::thing_model {

/// Registry on PostgreSQL schema `thing_model` (migrations/).
class PgRegistry final : public Registry {
 public:
  explicit PgRegistry(std::shared_ptr<common::PgPool> pool) : pool_(std::move(pool)) {}

  absl::Status CreateTenant(const TenantRecord& tenant) override;
  absl::Status EnsureTenantAndKey(const TenantRecord& tenant, const ApiKeyRecord& key) override;
  absl::Status CreateApiKey(const ApiKeyRecord& key) override;
  absl::StatusOr<ApiKeyRecord> RevokeApiKey(const std::string& tenant_id,
                                            const std::string& key_id) override;
  absl::StatusOr<Page<ApiKeyRecord>> ListApiKeys(const std::string& tenant_id,
                                                 const PageRequest& page,
                                                 bool include_revoked) override;
  absl::StatusOr<std::vector<std::pair<ApiKeyRecord, bool>>> AllActiveKeys() override;

  absl::Status CreateProduct(const ProductRecord& product) override;
  absl::StatusOr<ProductRecord> GetProduct(const std::string& tenant_id,
                                           const std::string& product_id,
                                           int32_t model_version) override;
  absl::StatusOr<ProductRecord> UpdateProduct(const ProductRecord& product,
                                              bool new_model_version) override;
  absl::StatusOr<int64_t> DeleteProduct(const std::string& tenant_id, const std::string& product_id,
                                        bool force,
                                        std::vector<std::string>* deleted_devices) override;
  absl::StatusOr<Page<ProductRecord>> ListProducts(const std::string& tenant_id,
                                                   const PageRequest& page,
                                                   const ProductFilter& filter) override;
  absl::StatusOr<std::vector<std::pair<int32_t, std::string>>> ListModelVersions(
      const std::string& tenant_id, const std::string& product_id) override;

  absl::Status CreateDevice(const DeviceRecord& device) override;
  absl::StatusOr<DeviceRecord> GetDevice(const std::string& tenant_id,
                                         const std::string& device_id) override;
  absl::Status UpdateDevice(const DeviceRecord& device) override;
  absl::Status DeleteDevice(const std::string& tenant_id, const std::string& device_id) override;
  absl::StatusOr<Page<DeviceRecord>> ListDevices(const std::string& tenant_id,
                                                 const PageRequest& page,
                                                 const DeviceFilter& filter) override;
  absl::StatusOr<DeviceRecord> SetPresence(const std::string& device_id, bool online,
                                           const std::string& time) override;
  absl::Status ForEachDevice(const std::function<void(const DeviceRecord&)>& fn) override;

 private:
  std::shared_ptr<common::PgPool> pool_;
};

}  // namespace iot::thing_model
