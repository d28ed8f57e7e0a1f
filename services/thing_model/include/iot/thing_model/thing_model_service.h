#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/thing_model/alink_tsl.h"
#include "iot/thing_model/ports.h"
#include "iot/thing_model/product_model.h"
#include "iot/thing_model/types.h"

namespace iot::thing_model {

struct ThingModelOptions {
  /// Created on first start: the root tenant and its admin key (IOT_THING_MODEL_BOOTSTRAP_*).
  std::string bootstrap_tenant = "default";
  std::string bootstrap_admin_key;
  /// The platform's service credential (IOT_SERVICE_API_KEY): role service, no tenant.
  std::string service_key;
};

struct CreatedKey {
  ApiKeyRecord key;
  std::string secret;
};

struct CreatedTenant {
  TenantRecord tenant;
  std::optional<CreatedKey> admin_key;
};

struct CreatedDevice {
  DeviceRecord device;
  std::string secret;  ///< plaintext, returned once
};

/// The thing-model logic: tenants and keys, products and models, devices. Registry is the
/// source of truth; the projection is updated after each change and rebuilt when missing.
class ThingModelService {
 public:
  ThingModelService(std::shared_ptr<Registry> registry, std::shared_ptr<Projection> projection,
                    common::SecretBox secrets, ThingModelOptions options);

  /// Bootstrap tenant/keys (idempotent) and a projection rebuild: a start-up step.
  absl::Status Bootstrap();
  /// Rebuilds the projection if it is incomplete (Redis flushed, writes missed while Redis was
  /// down). Cheap when nothing is to do: call it periodically.
  absl::Status ReconcileProjection();

  absl::StatusOr<CreatedTenant> CreateTenant(const common::Principal& caller, std::string tenant_id,
                                             std::string name, bool create_admin_key);
  absl::StatusOr<CreatedKey> CreateApiKey(const common::Principal& caller, std::string name,
                                          common::Role role);
  absl::StatusOr<ApiKeyRecord> RevokeApiKey(const common::Principal& caller,
                                            const std::string& key_id);
  absl::StatusOr<Page<ApiKeyRecord>> ListApiKeys(const common::Principal& caller,
                                                 const PageRequest& page, bool include_revoked);

  /// From a Huawei product model or (dialect alink) an Alibaba TSL, exactly one of them. On an
  /// invalid model: INVALID_ARGUMENT naming the first path; `issues` gets all of them.
  absl::StatusOr<ProductRecord> CreateProduct(const common::Principal& caller,
                                              const std::string& product_json,
                                              const std::string& tsl_json,
                                              std::vector<ModelIssue>* issues);
  absl::StatusOr<ProductRecord> ShowProduct(const common::Principal& caller,
                                            const std::string& product_id, int32_t version);
  /// huawei products take product_json, alink products tsl_json: a product keeps its dialect.
  absl::StatusOr<ProductRecord> UpdateProduct(const common::Principal& caller,
                                              const std::string& product_id,
                                              const std::string& product_json,
                                              const std::string& tsl_json,
                                              std::vector<ModelIssue>* issues);
  absl::StatusOr<int64_t> DeleteProduct(const common::Principal& caller,
                                        const std::string& product_id, bool force);
  absl::StatusOr<Page<ProductRecord>> ListProducts(const common::Principal& caller,
                                                   const PageRequest& page,
                                                   const ProductFilter& filter);
  absl::StatusOr<std::vector<std::pair<int32_t, std::string>>> ListModelVersions(
      const common::Principal& caller, const std::string& product_id);

  absl::StatusOr<CreatedDevice> AddDevice(const common::Principal& caller, DeviceRecord device,
                                          std::string secret);
  absl::StatusOr<DeviceRecord> ShowDevice(const common::Principal& caller,
                                          const std::string& device_id);
  struct DeviceUpdate {
    std::optional<std::string> device_name;
    std::optional<std::string> description;
    std::optional<std::map<std::string, std::string>> tags;
  };
  absl::StatusOr<DeviceRecord> UpdateDevice(const common::Principal& caller,
                                            const std::string& device_id,
                                            const DeviceUpdate& update);
  absl::Status DeleteDevice(const common::Principal& caller, const std::string& device_id);
  absl::StatusOr<Page<DeviceRecord>> ListDevices(const common::Principal& caller,
                                                 const PageRequest& page,
                                                 const DeviceFilter& filter);
  absl::StatusOr<CreatedDevice> ResetDeviceSecret(const common::Principal& caller,
                                                  const std::string& device_id, std::string secret);
  absl::StatusOr<DeviceRecord> SetFrozen(const common::Principal& caller,
                                         const std::string& device_id, bool frozen);

  /// Internal: presence from the gateway.
  absl::StatusOr<DeviceRecord> ReportPresence(const std::string& device_id, bool online,
                                              const std::string& time);
  /// Internal: a device and its product's current model.
  absl::StatusOr<std::pair<DeviceRecord, ProductRecord>> DeviceContext(
      const std::string& device_id);

  /// The plaintext secret of a device (tests and the internal credential check only).
  absl::StatusOr<std::string> OpenSecret(const DeviceRecord& device) const;

 private:
  absl::StatusOr<ProductRecord> ParseProduct(const std::string& tenant_id,
                                             const std::string& product_json,
                                             std::vector<ModelIssue>* issues) const;
  /// A product of dialect alink from its TSL; `product_id` set: the product being updated.
  absl::StatusOr<ProductRecord> ParseTslProduct(const std::string& tenant_id,
                                                const std::string& tsl_json,
                                                const std::string& product_id,
                                                std::vector<ModelIssue>* issues) const;
  /// After a committed change: write the projection, or mark it for rebuild if Redis fails.
  void Project(const std::function<absl::Status()>& write);
  absl::Status RebuildProjection();

  std::shared_ptr<Registry> registry_;
  std::shared_ptr<Projection> projection_;
  common::SecretBox secrets_;
  ThingModelOptions options_;
  std::mutex projection_mu_;
  bool projection_dirty_ = true;
};

/// RFC 3339 UTC with milliseconds, e.g. 2026-11-26T17:42:48.123Z.
std::string NowRfc3339();

}  // namespace iot::thing_model
