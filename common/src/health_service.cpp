#include "iot/common/health_service.h"

#include <chrono>

namespace iot::common {

namespace {
using grpc::health::v1::HealthCheckResponse;
/// How often a Watch call looks whether its client went away while nothing changes.
constexpr std::chrono::milliseconds kWatchPoll(500);
}  // namespace

void HealthService::SetServing(const std::string& service, bool serving) {
  const ServingStatus status =
      serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  std::lock_guard lock(mu_);
  if (shut_down_) {
    return;
  }
  auto [it, inserted] = statuses_.emplace(service, status);
  if (inserted || it->second != status) {
    it->second = status;
    ++version_;
    changed_.notify_all();
  }
}

void HealthService::Shutdown() {
  std::lock_guard lock(mu_);
  if (shut_down_) {
    return;
  }
  shut_down_ = true;
  for (auto& [name, status] : statuses_) {
    status = HealthCheckResponse::NOT_SERVING;
  }
  ++version_;
  changed_.notify_all();
}

HealthService::ServingStatus HealthService::StatusOf(const std::string& service) const {
  const auto it = statuses_.find(service);
  return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

grpc::Status HealthService::Check(grpc::ServerContext* /*context*/,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  HealthCheckResponse* response) {
  std::lock_guard lock(mu_);
  const ServingStatus status = StatusOf(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    return {grpc::StatusCode::NOT_FOUND, "service name unknown: '" + request->service() + "'"};
  }
  response->set_status(status);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::ServerWriter<HealthCheckResponse>* writer) {
  std::unique_lock lock(mu_);
  uint64_t seen = version_;
  ServingStatus sent = StatusOf(request->service());
  while (true) {
    HealthCheckResponse response;
    response.set_status(sent);
    lock.unlock();
    const bool written = writer->Write(response);
    lock.lock();
    if (!written) {
      return grpc::Status::OK;  // the client went away
    }
    // Only a change of this name's status is sent; a client gone is noticed within kWatchPoll.
    while (StatusOf(request->service()) == sent && !shut_down_) {
      if (context->IsCancelled()) {
        return grpc::Status::CANCELLED;
      }
      changed_.wait_for(lock, kWatchPoll, [&] { return version_ != seen; });
      seen = version_;
    }
    if (StatusOf(request->service()) == sent) {
      return grpc::Status::OK;  // shut down, and the last status was sent
    }
    sent = StatusOf(request->service());
  }
}

}  // namespace iot::common
