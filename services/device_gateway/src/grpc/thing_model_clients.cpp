// thing-model's InternalThingModel over gRPC (service credential): the device registry and
// the device status.

#include <grpcpp/create_channel.h>

#include "iot/common/auth.h"
#include "iot/common/status.h"
#include "iot/device_gateway/grpc_clients.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::device_gateway {
namespace {

namespace tm = iot::thing_model::v1;

/// A stub of InternalThingModel and what every call carries: the service credential and a 5 s
/// deadline.
class ThingModelClient {
 public:
  ThingModelClient(const std::string& address, std::string service_key)
      : stub_(tm::InternalThingModel::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))),
        service_key_(std::move(service_key)) {}

  void Prepare(grpc::ClientContext& context) const {
    common::SetBearer(context, service_key_);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  [[nodiscard]] tm::InternalThingModel::Stub& stub() const { return *stub_; }

 private:
  std::unique_ptr<tm::InternalThingModel::Stub> stub_;
  std::string service_key_;
};

class ThingModelContextSource final : public DeviceContextSource {
 public:
  explicit ThingModelContextSource(ThingModelClient client) : client_(std::move(client)) {}

  absl::StatusOr<DeviceContextData> GetDeviceContext(const std::string& device_id) override {
    grpc::ClientContext context;
    client_.Prepare(context);
    tm::GetDeviceContextRequest request;
    request.set_device_id(device_id);
    tm::DeviceContext response;
    if (auto status =
            common::FromGrpcStatus(client_.stub().GetDeviceContext(&context, request, &response));
        !status.ok()) {
      return status;
    }
    return DeviceContextData{.device_id = response.device_id(),
                             .tenant_id = response.tenant_id(),
                             .product_id = response.product_id(),
                             .node_id = response.node_id(),
                             .dialect = response.dialect(),
                             .model_version = response.model_version(),
                             .product_json = response.product_json()};
  }

 private:
  ThingModelClient client_;
};

class ThingModelStatusSink final : public DeviceStatusSink {
 public:
  explicit ThingModelStatusSink(ThingModelClient client) : client_(std::move(client)) {}

  absl::Status ReportPresence(const PresenceEvent& event) override {
    grpc::ClientContext context;
    client_.Prepare(context);
    tm::ReportDevicePresenceRequest request;
    request.set_device_id(event.device_id);
    request.set_online(event.online);
    request.set_time(event.time);
    tm::ReportDevicePresenceResponse response;
    return common::FromGrpcStatus(
        client_.stub().ReportDevicePresence(&context, request, &response));
  }

 private:
  ThingModelClient client_;
};

}  // namespace

std::shared_ptr<DeviceContextSource> MakeThingModelContextSource(const std::string& address,
                                                                 const std::string& service_key) {
  return std::make_shared<ThingModelContextSource>(ThingModelClient(address, service_key));
}

std::shared_ptr<DeviceStatusSink> MakeThingModelStatusSink(const std::string& address,
                                                           const std::string& service_key) {
  return std::make_shared<ThingModelStatusSink>(ThingModelClient(address, service_key));
}

}  // namespace iot::device_gateway
