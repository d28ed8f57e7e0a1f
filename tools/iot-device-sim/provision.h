#pragma once

// Where the simulated devices and their model come from: thing-model's API (ShowProduct,
// AddDevice, ResetDeviceSecret) or local files.

#include <memory>
#include <string>
#include <vector>

#include "iot/thing_model/product_model.h"

namespace devsim {

struct DeviceCredentials {
  std::string device_id;
  std::string secret;
};

/// Reads `{device_id, secret}` objects as JSON lines or one JSON array. Failure(kExitUsage).
std::vector<DeviceCredentials> ReadDevicesFile(const std::string& path);

/// Writes a JSON array of `{device_id, secret}` (mode 0600). Failure(kExitRuntime).
void WriteDevicesFile(const std::string& path, const std::vector<DeviceCredentials>& devices);

/// Parses a product-model document. Failure(kExitUsage) naming `origin` on errors.
iot::thing_model::ProductModel ParseModel(const std::string& json, const std::string& origin);

/// Reads a file whole. Failure(kExitUsage).
std::string ReadTextFile(const std::string& path, const std::string& what);

/// Calls thing-model with a bearer key; failed calls throw Failure (kExitUnreachable when the
/// server cannot be reached, else kExitRuntime).
class ThingModel {
 public:
  ThingModel(std::string address, std::string api_key, double timeout_seconds);
  ~ThingModel();

  /// The product's current model (ShowProduct → product_json).
  iot::thing_model::ProductModel ShowProduct(const std::string& product_id);

  /// Adds `{product}_{node_prefix}{i}` for i in 1..count; devices that already exist get a new
  /// secret (ResetDeviceSecret) so that the simulator knows it.
  std::vector<DeviceCredentials> CreateDevices(const std::string& product_id,
                                               const std::string& node_prefix, int count);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The API key from --api-key, --api-key-file or IOTCTL_API_KEY (IOTCTL_API_KEY_FILE), as
/// iotctl does. Failure(kExitUsage) when there is none.
std::string ResolveApiKey(const std::string& api_key, const std::string& api_key_file);

}  // namespace devsim
