#include "iot/device_gateway/device_cache.h"

#include <nlohmann/json.hpp>

#include "iot/common/logging.h"
#include "iot/thing_model/product_model.h"

namespace iot::device_gateway {

DeviceCache::DeviceCache(std::shared_ptr<DeviceContextSource> source, size_t capacity)
    : source_(std::move(source)), capacity_(std::max<size_t>(capacity, 1)) {}

absl::StatusOr<std::shared_ptr<const DeviceInfo>> DeviceCache::Get(const std::string& device_id) {
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    if (auto it = devices_.find(device_id); it != devices_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.position);
      return it->second.info;
    }
    generation = generation_;
  }
  auto data = source_->GetDeviceContext(device_id);
  if (!data.ok()) {
    return data.status();
  }
  auto validator = Compile(*data);
  if (!validator.ok()) {
    return validator.status();
  }
  auto info = std::make_shared<const DeviceInfo>(DeviceInfo{.device_id = data->device_id,
                                                            .tenant_id = data->tenant_id,
                                                            .product_id = data->product_id,
                                                            .node_id = data->node_id,
                                                            .dialect = data->dialect,
                                                            .model_version = data->model_version,
                                                            .validator = *std::move(validator)});
  std::lock_guard lock(mu_);
  if (generation == generation_ && !devices_.contains(device_id)) {
    lru_.push_front(device_id);
    devices_.emplace(device_id, Entry{.info = info, .position = lru_.begin()});
    while (devices_.size() > capacity_) {
      devices_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  return info;
}

absl::StatusOr<std::shared_ptr<const thing_model::Validator>> DeviceCache::Compile(
    const DeviceContextData& data) {
  const auto key = std::make_pair(data.product_id, data.model_version);
  {
    std::lock_guard lock(mu_);
    if (auto it = models_.find(key); it != models_.end()) {
      return it->second;
    }
  }
  auto model = thing_model::ParseProductModel(data.product_json);
  if (!model.ok()) {
    common::LogError("product model of a device does not compile",
                     {{"device_id", data.device_id},
                      {"product_id", data.product_id},
                      {"error", std::string(model.status().message())}});
    return absl::InvalidArgumentError("product model does not compile: " +
                                      std::string(model.status().message()));
  }
  auto validator = std::make_shared<const thing_model::Validator>(model->model);
  std::lock_guard lock(mu_);
  // Older versions of the product are no longer needed by new lookups.
  std::erase_if(models_, [&](const auto& entry) {
    return entry.first.first == data.product_id && entry.first.second < data.model_version;
  });
  models_.emplace(key, validator);
  return validator;
}

void DeviceCache::OnChange(std::string_view message) {
  const auto change = nlohmann::json::parse(message, nullptr, false);
  if (!change.is_object()) {
    Clear();
    return;
  }
  const std::string kind = change.value("kind", "");
  std::lock_guard lock(mu_);
  ++generation_;
  if (kind == "device") {
    DropDevice(change.value("device_id", ""));
  } else if (kind == "product") {
    const std::string product_id = change.value("product_id", "");
    for (auto it = devices_.begin(); it != devices_.end();) {
      if (it->second.info->product_id == product_id) {
        lru_.erase(it->second.position);
        it = devices_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void DeviceCache::DropDevice(const std::string& device_id) {
  if (auto it = devices_.find(device_id); it != devices_.end()) {
    lru_.erase(it->second.position);
    devices_.erase(it);
  }
}

void DeviceCache::Clear() {
  std::lock_guard lock(mu_);
  ++generation_;
  devices_.clear();
  lru_.clear();
}

size_t DeviceCache::size() {
  std::lock_guard lock(mu_);
  return devices_.size();
}

}  // namespace iot::device_gateway
