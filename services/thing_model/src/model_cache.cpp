#include "iot/thing_model/model_cache.h"

namespace iot::thing_model {

absl::StatusOr<std::shared_ptr<const CompiledModel>> ModelCache::Get(
    const std::string& product_id, int32_t version, const std::string& product_json) {
  const std::string key = product_id + "#" + std::to_string(version);
  {
    std::lock_guard lock(mu_);
    if (auto it = models_.find(key); it != models_.end()) {
      return it->second;
    }
  }
  auto parsed = ParseProductModel(product_json);
  if (!parsed.ok()) {
    return absl::InternalError("stored product model no longer parses: " +
                               std::string(parsed.status().message()));
  }
  std::lock_guard lock(mu_);
  if (models_.size() >= kMaxModels) {
    models_.clear();
  }
  models_[key] = parsed->model;
  return parsed->model;
}

}  // namespace iot::thing_model
