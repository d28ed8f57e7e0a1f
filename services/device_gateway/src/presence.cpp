#include "iot/device_gateway/presence.h"

#include <grpcpp/create_channel.h>

#include <nlohmann/json.hpp>

#include "iot/common/auth.h"
#include "iot/common/backoff.h"
#include "iot/common/logging.h"
#include "iot/common/status.h"
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

bool IsFinal(const absl::Status& status) {
  return status.code() == absl::StatusCode::kNotFound ||
         status.code() == absl::StatusCode::kInvalidArgument ||
         status.code() == absl::StatusCode::kPermissionDenied;
}

}  // namespace

absl::StatusOr<PresenceEvent> ParsePresence(std::string_view topic, std::string_view payload) {
  if (topic.substr(0, kPresencePrefix.size()) != kPresencePrefix ||
      topic.size() == kPresencePrefix.size()) {
    return common::InvalidField("topic", "not $iot/presence/{device_id}");
  }
  const std::string device_id(topic.substr(kPresencePrefix.size()));
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
  return PresenceEvent{.device_id = device_id,
                       .online = event == "connected",
                       .time = time,
                       .reason = body.value("reason", "")};
}

std::shared_ptr<DeviceStatusSink> MakeThingModelStatusSink(const std::string& address,
                                                           const std::string& service_key) {
  return std::make_shared<ThingModelStatusSink>(address, service_key);
}

PresenceForwarder::PresenceForwarder(std::shared_ptr<DeviceStatusSink> sink,
                                     prometheus::Registry& registry, size_t capacity)
    : sink_(std::move(sink)),
      capacity_(capacity),
      events_(prometheus::BuildCounter()
                  .Name("iot_gateway_presence_events_total")
                  .Help("Presence events handed to thing-model, by event")
                  .Register(registry)),
      dropped_(prometheus::BuildCounter()
                   .Name("iot_gateway_presence_dropped_total")
                   .Help("Presence events not applied, by reason")
                   .Register(registry)),
      worker_([this] { Run(); }) {}

PresenceForwarder::~PresenceForwarder() { Stop(); }

bool PresenceForwarder::Submit(PresenceEvent event) {
  std::unique_lock lock(mu_);
  changed_.wait(lock, [this] { return stopping_ || queue_.size() < capacity_; });
  if (stopping_) {
    return false;
  }
  queue_.push_back(std::move(event));
  changed_.notify_all();
  return true;
}

void PresenceForwarder::Reject(std::string_view topic, const absl::Status& why) {
  dropped_.Add({{"reason", "malformed"}}).Increment();
  common::LogWarn("presence event rejected",
                  {{"topic", std::string(topic)}, {"error", std::string(why.message())}});
}

size_t PresenceForwarder::queued() {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void PresenceForwarder::Stop(std::chrono::milliseconds drain) {
  {
    std::unique_lock lock(mu_);
    if (stopping_ && !worker_.joinable()) {
      return;
    }
    changed_.wait_for(lock, drain, [this] { return queue_.empty(); });
    stopping_ = true;
    if (!queue_.empty()) {
      dropped_.Add({{"reason", "shutdown"}}).Increment(static_cast<double>(queue_.size()));
      common::LogError("presence events not delivered at shutdown", {{"count", queue_.size()}});
    }
  }
  changed_.notify_all();
  if (worker_.joinable()) {
    worker_.join();
  }
}

void PresenceForwarder::Run() {
  common::Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
  while (true) {
    PresenceEvent event;
    {
      std::unique_lock lock(mu_);
      changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        return;  // stopping
      }
      event = queue_.front();
    }
    const absl::Status status = sink_->ReportPresence(event);
    if (status.ok() || IsFinal(status)) {
      if (status.ok()) {
        events_.Add({{"event", event.online ? "connected" : "disconnected"}}).Increment();
      } else {
        dropped_.Add({{"reason", "rejected"}}).Increment();
        common::LogWarn("presence event refused by thing-model",
                        {{"device_id", event.device_id}, {"error", std::string(status.message())}});
      }
      backoff.Reset();
      std::lock_guard lock(mu_);
      queue_.pop_front();
      changed_.notify_all();
      continue;
    }
    // Transient: keep the event at the head (order per device) and retry.
    const auto delay = backoff.Next();
    common::LogWarn("thing-model unavailable for presence, retrying",
                    {{"device_id", event.device_id},
                     {"error", std::string(status.message())},
                     {"retry_in_ms", delay.count()}});
    std::unique_lock lock(mu_);
    if (changed_.wait_for(lock, delay, [this] { return stopping_; })) {
      return;
    }
  }
}

}  // namespace iot::device_gateway
