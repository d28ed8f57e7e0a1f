#pragma once

#include <grpcpp/channel.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "iot/command_dispatch/ports.h"
#include "iot/common/redis.h"
#include "iot/common/redis_subscriber.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::command_dispatch {

/// DevicePublisher over the device-gateway's InternalDownlink.Publish (service credential).
class GatewayPublisher final : public DevicePublisher {
 public:
  GatewayPublisher(std::shared_ptr<grpc::Channel> channel, std::string service_key,
                   std::chrono::milliseconds call_timeout = std::chrono::milliseconds(5000));
  absl::StatusOr<bool> Publish(const Downlink& downlink) override;

 private:
  std::unique_ptr<device_gateway::v1::InternalDownlink::Stub> stub_;
  std::string service_key_;
  std::chrono::milliseconds call_timeout_;
};

/// DeviceDirectory over thing-model's InternalThingModel.GetDeviceContext. Device contexts are
/// kept for `ttl` (a changed model or a deleted device is seen after at most that long);
/// compiled models by (product, model version), which never change.
class ThingModelDirectory final : public DeviceDirectory {
 public:
  ThingModelDirectory(std::shared_ptr<grpc::Channel> channel, std::string service_key,
                      std::chrono::milliseconds ttl = std::chrono::milliseconds(2000));
  absl::StatusOr<DeviceInfo> Lookup(const std::string& device_id) override;

 private:
  struct Cached {
    DeviceInfo info;
    std::chrono::steady_clock::time_point expires;
  };
  static constexpr size_t kMaxEntries = 10'000;

  absl::StatusOr<std::shared_ptr<const thing_model::Validator>> ValidatorOf(
      const thing_model::v1::DeviceContext& context);

  std::unique_ptr<thing_model::v1::InternalThingModel::Stub> stub_;
  std::string service_key_;
  std::chrono::milliseconds ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Cached> devices_;
  std::unordered_map<std::string, std::shared_ptr<const thing_model::Validator>> models_;
};

/// ResponseRouter on Redis: completions are published on `cmd:resp:{owner}`, which the owner
/// replica subscribes (the owner is recorded with the request in PostgreSQL).
class RedisResponseRouter final : public ResponseRouter {
 public:
  RedisResponseRouter(std::shared_ptr<common::RedisClient> redis, std::string redis_url,
                      std::string replica_id);
  absl::Status Start(Deliver deliver, Resync resync) override;
  void Stop() override;
  absl::StatusOr<bool> Forward(const Completion& completion) override;

  [[nodiscard]] const std::string& replica_id() const { return replica_id_; }

 private:
  std::shared_ptr<common::RedisClient> redis_;
  std::string redis_url_;
  std::string replica_id_;
  std::unique_ptr<common::RedisSubscriber> subscriber_;
};

}  // namespace iot::command_dispatch
