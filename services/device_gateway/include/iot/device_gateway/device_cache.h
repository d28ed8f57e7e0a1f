#pragma once

// Who a device is (tenant, product, node) and the validator of its product's current model,
// from thing-model's InternalThingModel.GetDeviceContext, cached with a bound and invalidated by
// thing-model's change feed `tm:changes` (docs/redis-projection.md).

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "absl/status/statusor.h"
#include "iot/device_gateway/ports.h"
#include "iot/thing_model/validator.h"

namespace iot::device_gateway {

struct DeviceInfo {
  std::string device_id;
  std::string tenant_id;
  std::string product_id;
  std::string node_id;
  std::string dialect;  ///< the product's: "huawei" or "alink" ("" = huawei)
  int32_t model_version = 0;
  /// Validator of the product's model at model_version; shared by the product's devices.
  std::shared_ptr<const thing_model::Validator> validator;
};

/// Bounded LRU cache of DeviceInfo with one compiled validator per (product, model version).
/// Thread-safe; lookups of cached devices take one mutex and no allocation.
class DeviceCache {
 public:
  DeviceCache(std::shared_ptr<DeviceContextSource> source, size_t capacity = 100'000);

  /// The cached device, or asks the source. NOT_FOUND: unknown device; INVALID_ARGUMENT: its
  /// product's model does not compile; else transient.
  absl::StatusOr<std::shared_ptr<const DeviceInfo>> Get(const std::string& device_id);

  /// A `tm:changes` message: drops what it makes stale (a device, or every device of a
  /// product whose model changed). Unparseable messages drop everything.
  void OnChange(std::string_view message);
  /// Drops everything (after a change-feed resubscription: messages may have been missed).
  void Clear();
  [[nodiscard]] size_t size();

 private:
  using Lru = std::list<std::string>;
  struct Entry {
    std::shared_ptr<const DeviceInfo> info;
    Lru::iterator position;
  };
  absl::StatusOr<std::shared_ptr<const thing_model::Validator>> Compile(
      const DeviceContextData& data);
  void DropDevice(const std::string& device_id);

  std::shared_ptr<DeviceContextSource> source_;
  size_t capacity_;
  std::mutex mu_;
  uint64_t generation_ = 0;  ///< Bumped by every invalidation: a fetch that raced one is not kept.
  std::unordered_map<std::string, Entry> devices_;
  Lru lru_;  ///< Most recently used first.
  std::map<std::pair<std::string, int32_t>, std::shared_ptr<const thing_model::Validator>> models_;
};

}  // namespace iot::device_gateway
