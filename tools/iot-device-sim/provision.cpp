#include "provision.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/status/status.h"
#include "errors.h"
#include "iot/common/auth.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace devsim {
namespace {

namespace pb = iot::thing_model::v1;

std::string Trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) {
    return {};
  }
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

DeviceCredentials CredentialsFrom(const nlohmann::json& item, const std::string& where) {
  if (!item.is_object() || !item.contains("device_id") || !item["device_id"].is_string() ||
      !item.contains("secret") || !item["secret"].is_string() ||
      item["device_id"].get<std::string>().empty()) {
    throw Failure(kExitUsage, where + ": expected {\"device_id\": \"...\", \"secret\": \"...\"}");
  }
  return DeviceCredentials{.device_id = item["device_id"].get<std::string>(),
                           .secret = item["secret"].get<std::string>()};
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string(value) : std::string();
}

}  // namespace

std::string ReadTextFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Failure(kExitUsage, fmt::format("cannot read {} {}", what, path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<DeviceCredentials> ReadDevicesFile(const std::string& path) {
  const std::string text = Trim(ReadTextFile(path, "the devices file"));
  std::vector<DeviceCredentials> devices;
  if (!text.empty() && text.front() == '[') {
    const auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || !json.is_array()) {
      throw Failure(kExitUsage, path + ": not a JSON array");
    }
    for (std::size_t i = 0; i < json.size(); ++i) {
      devices.push_back(CredentialsFrom(json[i], fmt::format("{}[{}]", path, i)));
    }
  } else {
    std::istringstream lines(text);
    std::string line;
    int number = 0;
    while (std::getline(lines, line)) {
      ++number;
      if (Trim(line).empty()) {
        continue;
      }
      const auto json = nlohmann::json::parse(line, nullptr, false);
      const std::string where = fmt::format("{}:{}", path, number);
      if (json.is_discarded()) {
        throw Failure(kExitUsage, where + ": not JSON");
      }
      devices.push_back(CredentialsFrom(json, where));
    }
  }
  if (devices.empty()) {
    throw Failure(kExitUsage, path + ": no devices");
  }
  return devices;
}

void WriteDevicesFile(const std::string& path, const std::vector<DeviceCredentials>& devices) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& device : devices) {
    out.push_back({{"device_id", device.device_id}, {"secret", device.secret}});
  }
  const std::string text = out.dump(2) + "\n";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw Failure(kExitRuntime, "cannot write " + path);
  }
  ::fchmod(fd, 0600);
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n <= 0) {
      ::close(fd);
      throw Failure(kExitRuntime, "cannot write " + path);
    }
    written += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

iot::thing_model::ProductModel ParseModel(const std::string& json, const std::string& origin) {
  iot::thing_model::ModelDiagnostics diagnostics;
  auto model = iot::thing_model::ParseProductModel(json, &diagnostics);
  if (!model.ok()) {
    throw Failure(kExitUsage, fmt::format("the product model of {} is invalid: {}", origin,
                                          std::string(model.status().message())));
  }
  return *std::move(model);
}

std::string ResolveApiKey(const std::string& api_key, const std::string& api_key_file) {
  if (!api_key.empty()) {
    return api_key;
  }
  std::string file = api_key_file;
  if (file.empty()) {
    if (std::string key = Trim(Env("IOTCTL_API_KEY")); !key.empty()) {
      return key;
    }
    file = Env("IOTCTL_API_KEY_FILE");
  }
  if (file.empty()) {
    throw Failure(kExitUsage,
                  "no API key: set IOTCTL_API_KEY (or IOTCTL_API_KEY_FILE), or pass --api-key or "
                  "--api-key-file");
  }
  std::string key = Trim(ReadTextFile(file, "the API key file"));
  if (key.empty()) {
    throw Failure(kExitUsage, "the API key file " + file + " is empty");
  }
  return key;
}

struct ThingModel::Impl {
  std::string address;
  std::string api_key;
  double timeout_seconds = 10;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Products::Stub> products;
  std::unique_ptr<pb::Devices::Stub> devices;

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    iot::common::SetBearer(*context, api_key);
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(timeout_seconds)));
    return context;
  }

  [[noreturn]] void Fail(const std::string& what, const grpc::Status& status) const {
    const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                             (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
                              channel->GetState(false) != GRPC_CHANNEL_READY);
    const std::string code = absl::StatusCodeToString(
        static_cast<absl::StatusCode>(static_cast<int>(status.error_code())));
    if (unreachable) {
      throw Failure(kExitUnreachable, fmt::format("{}: thing-model at {} is unreachable: {}: {}",
                                                  what, address, code, status.error_message()));
    }
    throw Failure(kExitRuntime, fmt::format("{}: {}: {}", what, code, status.error_message()));
  }
};

ThingModel::ThingModel(std::string address, std::string api_key, double timeout_seconds)
    : impl_(std::make_unique<Impl>()) {
  impl_->address = std::move(address);
  impl_->api_key = std::move(api_key);
  impl_->timeout_seconds = timeout_seconds;
  impl_->channel = grpc::CreateChannel(impl_->address, grpc::InsecureChannelCredentials());
  impl_->products = pb::Products::NewStub(impl_->channel);
  impl_->devices = pb::Devices::NewStub(impl_->channel);
}

ThingModel::~ThingModel() = default;

iot::thing_model::ProductModel ThingModel::ShowProduct(const std::string& product_id) {
  pb::ShowProductRequest request;
  request.set_product_id(product_id);
  pb::Product product;
  const auto context = impl_->Context();
  const grpc::Status status = impl_->products->ShowProduct(context.get(), request, &product);
  if (!status.ok()) {
    impl_->Fail("ShowProduct " + product_id, status);
  }
  return ParseModel(product.product_json(), "product " + product_id);
}

std::vector<DeviceCredentials> ThingModel::CreateDevices(const std::string& product_id,
                                                         const std::string& node_prefix,
                                                         int count) {
  std::vector<DeviceCredentials> out;
  out.reserve(static_cast<std::size_t>(count));
  for (int i = 1; i <= count; ++i) {
    const std::string node_id = fmt::format("{}{}", node_prefix, i);
    pb::AddDeviceRequest request;
    request.set_product_id(product_id);
    request.set_node_id(node_id);
    request.set_device_name("simulated " + node_id);
    (*request.mutable_tags())["simulated"] = "iot-device-sim";
    pb::AddDeviceResponse response;
    const auto context = impl_->Context();
    const grpc::Status status = impl_->devices->AddDevice(context.get(), request, &response);
    if (status.ok()) {
      out.push_back({.device_id = response.device().device_id(), .secret = response.secret()});
      continue;
    }
    if (status.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      impl_->Fail("AddDevice " + node_id, status);
    }
    pb::ResetDeviceSecretRequest reset;
    reset.set_device_id(product_id + "_" + node_id);
    pb::ResetDeviceSecretResponse reset_response;
    const auto reset_context = impl_->Context();
    const grpc::Status reset_status =
        impl_->devices->ResetDeviceSecret(reset_context.get(), reset, &reset_response);
    if (!reset_status.ok()) {
      impl_->Fail("ResetDeviceSecret " + reset.device_id(), reset_status);
    }
    out.push_back({.device_id = reset_response.device_id(), .secret = reset_response.secret()});
  }
  return out;
}

}  // namespace devsim
