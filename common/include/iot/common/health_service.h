#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

namespace iot::common {

/// grpc.health.v1.Health as ServiceHost serves it. Unlike gRPC's built-in service, which answers
/// SERVING for "" from the moment the server starts until the host first sets it, every name
/// starts as registered here, NOT_SERVING until set: there is no window in which a probe sees a
/// process ready that has not yet run its start-up tasks.
///
/// Check answers NOT_FOUND for a name never registered, as the protocol says. Watch streams the
/// status of one name (SERVICE_UNKNOWN while it is not registered) and every change after it,
/// until the client goes away or Shutdown(). Shutdown() sets every name NOT_SERVING for good and
/// ends the Watch calls, so that they do not hold up the server's drain.
class HealthService final : public grpc::health::v1::Health::Service {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  /// Sets `service`'s status, registering the name the first time (the empty name is registered,
  /// NOT_SERVING, from the start). Ignored after Shutdown().
  void SetServing(const std::string& service, bool serving);
  /// Every name NOT_SERVING from now on; ends the Watch calls.
  void Shutdown();

  grpc::Status Check(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  /// The status of `service`, SERVICE_UNKNOWN when not registered. Requires mu_.
  [[nodiscard]] ServingStatus StatusOf(const std::string& service) const;

  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, ServingStatus> statuses_{
      {"", grpc::health::v1::HealthCheckResponse::NOT_SERVING}};
  uint64_t version_ = 0;  // bumped on every change, so that Watch sees each one
  bool shut_down_ = false;
};

}  // namespace iot::common
