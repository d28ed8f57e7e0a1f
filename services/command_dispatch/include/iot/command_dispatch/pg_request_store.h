#pragma once

#include <memory>

#include "iot/command_dispatch/ports.h"
#include "iot/common/postgres.h"

namespace iot::command_dispatch {

/// RequestStore on PostgreSQL schema `command_dispatch` (migrations/). The drain lock is a
/// session advisory lock per device, so replicas drain one device one at a time.
class PgRequestStore final : public RequestStore {
 public:
  explicit PgRequestStore(std::shared_ptr<common::PgPool> pool) : pool_(std::move(pool)) {}

  absl::Status Insert(const RequestRecord& request,
                      std::optional<std::chrono::milliseconds> expire_in,
                      std::optional<std::chrono::milliseconds> deadline_in) override;
  absl::StatusOr<bool> Move(const std::string& request_id, const Transition& t) override;
  absl::StatusOr<std::optional<Completion>> Complete(const DeviceResponse& response,
                                                     std::string_view final_status) override;
  /// One prepared statement per batch (unnest of arrays).
  std::vector<absl::Status> InsertMany(const std::vector<NewRequest>& requests) override;
  std::vector<absl::StatusOr<std::optional<Completion>>> CompleteMany(
      const std::vector<ResponseRecord>& responses) override;
  absl::StatusOr<RequestRecord> Get(const std::string& tenant_id, const std::string& device_id,
                                    Kind kind, const std::string& request_id) override;
  absl::StatusOr<Page<RequestRecord>> List(const std::string& tenant_id,
                                           const std::string& device_id, Kind kind,
                                           const std::string& status, int32_t limit,
                                           const std::string& marker) override;
  absl::StatusOr<RequestRecord> Find(const std::string& request_id) override;
  absl::StatusOr<int> DrainPending(
      const std::string& device_id, std::chrono::milliseconds claim_timeout,
      std::chrono::milliseconds response_timeout,
      const std::function<SendOutcome(const RequestRecord&)>& send) override;
  absl::StatusOr<int> Sweep(std::chrono::milliseconds grace) override;

 private:
  std::shared_ptr<common::PgPool> pool_;
};

}  // namespace iot::command_dispatch
