#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "iot/thing_model/types.h"

namespace iot::thing_model {

/// Durable registry (PostgreSQL). Every read and write of tenant resources is scoped by
/// `tenant_id`: another tenant's row is NOT_FOUND. Constraint violations come back as domain
/// errors (ALREADY_EXISTS, FAILED_PRECONDITION), an unreachable database as UNAVAILABLE.
class Registry {
 public:
  virtual ~Registry() = default;

  virtual absl::Status CreateTenant(const TenantRecord& tenant) = 0;
  /// Creates the tenant and key if missing (bootstrap; idempotent).
  virtual absl::Status EnsureTenantAndKey(const TenantRecord& tenant, const ApiKeyRecord& key) = 0;
  virtual absl::Status CreateApiKey(const ApiKeyRecord& key) = 0;
  virtual absl::StatusOr<ApiKeyRecord> RevokeApiKey(const std::string& tenant_id,
                                                    const std::string& key_id) = 0;
  virtual absl::StatusOr<Page<ApiKeyRecord>> ListApiKeys(const std::string& tenant_id,
                                                         const PageRequest& page,
                                                         bool include_revoked) = 0;
  /// Every active key of every tenant, for the projection rebuild.
  virtual absl::StatusOr<std::vector<std::pair<ApiKeyRecord, bool>>> AllActiveKeys() = 0;

  virtual absl::Status CreateProduct(const ProductRecord& product) = 0;
  /// `model_version` 0: current.
  virtual absl::StatusOr<ProductRecord> GetProduct(const std::string& tenant_id,
                                                   const std::string& product_id,
                                                   int32_t model_version) = 0;
  /// Stores the new metadata; a changed model becomes version current+1. Returns the product.
  virtual absl::StatusOr<ProductRecord> UpdateProduct(const ProductRecord& product,
                                                      bool new_model_version) = 0;
  /// Returns the number of devices deleted with it (force) or FAILED_PRECONDITION.
  virtual absl::StatusOr<int64_t> DeleteProduct(const std::string& tenant_id,
                                                const std::string& product_id, bool force,
                                                std::vector<std::string>* deleted_devices) = 0;
  virtual absl::StatusOr<Page<ProductRecord>> ListProducts(const std::string& tenant_id,
                                                           const PageRequest& page,
                                                           const ProductFilter& filter) = 0;
  virtual absl::StatusOr<std::vector<std::pair<int32_t, std::string>>> ListModelVersions(
      const std::string& tenant_id, const std::string& product_id) = 0;

  virtual absl::Status CreateDevice(const DeviceRecord& device) = 0;
  /// `tenant_id` empty: any tenant (internal calls).
  virtual absl::StatusOr<DeviceRecord> GetDevice(const std::string& tenant_id,
                                                 const std::string& device_id) = 0;
  virtual absl::Status UpdateDevice(const DeviceRecord& device) = 0;
  virtual absl::Status DeleteDevice(const std::string& tenant_id, const std::string& device_id) = 0;
  virtual absl::StatusOr<Page<DeviceRecord>> ListDevices(const std::string& tenant_id,
                                                         const PageRequest& page,
                                                         const DeviceFilter& filter) = 0;
  /// Applies a presence event unless an event with a later time was applied already.
  virtual absl::StatusOr<DeviceRecord> SetPresence(const std::string& device_id, bool online,
                                                   const std::string& time) = 0;
  /// Calls `fn` for every device (projection rebuild), in pages.
  virtual absl::Status ForEachDevice(const std::function<void(const DeviceRecord&)>& fn) = 0;
};

/// The Redis projection other components read (docs/redis-projection.md): device credentials
/// for the broker plugin, API keys for every service's Authenticator, and the change feed.
class Projection {
 public:
  virtual ~Projection() = default;
  virtual absl::Status PutDevice(const DeviceRecord& device) = 0;
  /// PutDevice() of each, in one round trip (the projection rebuild at start).
  virtual absl::Status PutDevices(const std::vector<DeviceRecord>& devices) = 0;
  virtual absl::Status DeleteDevice(const DeviceRecord& device) = 0;
  virtual absl::Status PutKey(const ApiKeyRecord& key, bool root_tenant) = 0;
  virtual absl::Status DeleteKey(const ApiKeyRecord& key) = 0;
  /// Publishes a change on the feed (`tm:changes`).
  virtual absl::Status PublishChange(const std::string& json) = 0;
  /// True when the projection is complete (`tm:projection:ready`); false after a flush.
  virtual absl::StatusOr<bool> IsReady() = 0;
  virtual absl::Status MarkReady() = 0;
  /// Removes projected devices and keys not in `live_*` (stale after outages).
  virtual absl::Status RemoveStale(const std::vector<std::string>& live_device_ids,
                                   const std::vector<std::string>& live_key_hashes) = 0;
};

}  // namespace iot::thing_model
