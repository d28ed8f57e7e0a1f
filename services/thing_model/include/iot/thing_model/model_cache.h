#pragma once

// Compiled product models by (product, version), shared by the services that validate payloads
// against a product's model (thing-model, shadow).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "iot/thing_model/product_model.h"

namespace iot::thing_model {

/// Compiled models by (product, version): a version never changes once written. Thread-safe;
/// bounded (cleared when full).
class ModelCache {
 public:
  /// The compiled model of `product_json` (the stored product model of that version).
  absl::StatusOr<std::shared_ptr<const CompiledModel>> Get(const std::string& product_id,
                                                           int32_t version,
                                                           const std::string& product_json);

 private:
  static constexpr size_t kMaxModels = 1000;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const CompiledModel>> models_;
};

}  // namespace iot::thing_model
