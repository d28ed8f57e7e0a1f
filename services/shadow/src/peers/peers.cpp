#include "iot/shadow/peers.h"

#include <grpcpp/create_channel.h>

#include "iot/common/auth.h"
#include "iot/common/status.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/thing_model/model_cache.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::shadow {
namespace {

namespace tm = iot::thing_model::v1;
namespace gw = iot::device_gateway::v1;

class ThingModelDirectory final : public DeviceDirectory {
 public:
  ThingModelDirectory(const std::string& address, std::string service_key,
                      std::chrono::milliseconds ttl)
      : stub_(tm::InternalThingModel::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))),
        service_key_(std::move(service_key)),
        ttl_(ttl) {}

  absl::StatusOr<DeviceInfo> Find(const std::string& device_id) override {
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mu_);
      if (auto it = cache_.find(device_id); it != cache_.end() && it->second.expires > now) {
        return it->second.info;
      }
    }
    grpc::ClientContext context;
    common::SetBearer(context, service_key_);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    tm::GetDeviceContextRequest request;
    request.set_device_id(device_id);
    tm::DeviceContext response;
    if (grpc::Status status = stub_->GetDeviceContext(&context, request, &response); !status.ok()) {
      return common::FromGrpcStatus(status);
    }
    auto model =
        models_.Get(response.product_id(), response.model_version(), response.product_json());
    if (!model.ok()) {
      return model.status();
    }
    DeviceInfo info{.device_id = response.device_id(),
                    .tenant_id = response.tenant_id(),
                    .product_id = response.product_id(),
                    .model = *std::move(model)};
    std::lock_guard lock(mu_);
    if (cache_.size() >= kMaxDevices) {
      cache_.clear();
    }
    cache_[device_id] = Entry{.info = info, .expires = now + ttl_};
    return info;
  }

 private:
  static constexpr size_t kMaxDevices = 100'000;
  struct Entry {
    DeviceInfo info;
    std::chrono::steady_clock::time_point expires;
  };

  std::unique_ptr<tm::InternalThingModel::Stub> stub_;
  std::string service_key_;
  std::chrono::milliseconds ttl_;
  thing_model::ModelCache models_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> cache_;
};

class GatewayPublisher final : public DevicePublisher {
 public:
  GatewayPublisher(const std::string& address, std::string service_key,
                   std::chrono::milliseconds timeout)
      : stub_(gw::InternalDownlink::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))),
        service_key_(std::move(service_key)),
        timeout_(timeout) {}

  absl::StatusOr<bool> PublishPropertySet(const std::string& tenant_id,
                                          const std::string& device_id,
                                          const std::string& request_id,
                                          const std::string& payload) override {
    grpc::ClientContext context;
    common::SetBearer(context, service_key_);
    context.set_deadline(std::chrono::system_clock::now() + timeout_);
    gw::PublishRequest request;
    request.set_tenant_id(tenant_id);
    request.set_device_id(device_id);
    request.set_kind(gw::DOWNLINK_KIND_PROPERTIES_SET);
    request.set_request_id(request_id);
    request.set_payload(payload);
    request.set_qos(1);
    gw::PublishResponse response;
    if (grpc::Status status = stub_->Publish(&context, request, &response); !status.ok()) {
      return common::FromGrpcStatus(status);
    }
    return response.online();
  }

 private:
  std::unique_ptr<gw::InternalDownlink::Stub> stub_;
  std::string service_key_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::shared_ptr<DeviceDirectory> MakeThingModelDirectory(const std::string& address,
                                                         const std::string& service_key,
                                                         std::chrono::milliseconds ttl) {
  return std::make_shared<ThingModelDirectory>(address, service_key, ttl);
}

std::shared_ptr<DevicePublisher> MakeGatewayPublisher(const std::string& address,
                                                      const std::string& service_key,
                                                      std::chrono::milliseconds timeout) {
  return std::make_shared<GatewayPublisher>(address, service_key, timeout);
}

}  // namespace iot::shadow
