#include "iot/device_gateway/presence.h"

#include <grpcpp/create_channel.h>

#include <nlohmann/json.hpp>

#include "iot/common/auth.h"
#include "iot/common/backoff.h"
#include "iot/common/logging.h"
#include "iot/common/status.h"
#include "iot/device_gateway/uplink.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::device_gateway {
namespace {

constexpr std::string_view kPresencePrefix = "$iot/presence/";

class ThingModelStatusSink final : public DeviceStatusSink {
 public:
  ThingModelStatusSink(const std::string& address, std::string service_key)
      : stub_(iot::thing_model::v1::InternalThingModel::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))),
        service_key_(std::move(service_key)) {}

  absl::Status ReportPresence(const PresenceEvent& event) override {
    grpc::ClientContext context;
    common::SetBearer(context, service_key_);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    iot::thing_model::v1::ReportDevicePresenceRequest request;
    request.set_device_id(event.device_id);
    request.set_online(event.online);
    request.set_time(event.time);
    iot::thing_model::v1::ReportDevicePresenceResponse response;
    return common::FromGrpcStatus(stub_->ReportDevicePresence(&context, request, &response));
  }

 private:
  std::unique_ptr<iot::thing_model::v1::InternalThingModel::Stub> stub_;
  std::string service_key_;
};

}  // namespace

absl::StatusOr<PresenceEvent> ParsePresence(std::string_view topic, std::string_view payload) {
  std::string_view rest = topic;
  if (rest.starts_with(kPresencePrefix)) {
    rest.remove_prefix(kPresencePrefix.size());
  } else if (rest.starts_with(kSharedPresencePrefix)) {
    rest = AfterPartition(rest.substr(kSharedPresencePrefix.size())).value_or("");
  } else {
    return common::InvalidField("topic", "not $iot/presence/{device_id}");
  }
  if (rest.empty() || rest.find('/') != std::string_view::npos) {
    return common::InvalidField("topic", "not $iot/presence/{device_id}");
  }
  const std::string device_id(rest);
  const auto body = nlohmann::json::parse(payload, nullptr, false);
  if (!body.is_object()) {
    return common::InvalidField("payload", "not a JSON object");
  }
  const std::string event = body.value("event", "");
  if (event != "connected" && event != "disconnected") {
    return common::InvalidField("event", "must be connected or disconnected");
  }
  if (body.value("device_id", device_id) != device_id) {
    return common::InvalidField("device_id", "differs from the topic's device id");
  }
  const std::string time = body.value("time", "");
  if (time.empty()) {
    return common::InvalidField("time", "is required");
  }
  return PresenceEvent{.message_id = {},
                       .device_id = device_id,
                       .online = event == "connected",
                       .time = time,
                       .reason = body.value("reason", ""),
                       .client_address = body.value("client_address", "")};
}

std::shared_ptr<DeviceStatusSink> MakeThingModelStatusSink(const std::string& address,
                                                           const std::string& service_key) {
  return std::make_shared<ThingModelStatusSink>(address, service_key);
}

}  // namespace iot::device_gateway
