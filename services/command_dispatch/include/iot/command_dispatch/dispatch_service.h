#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "iot/command_dispatch/batcher.h"
#include "iot/command_dispatch/ports.h"
#include "iot/common/auth.h"
#include "iot/common/rejections.h"

namespace iot::command_dispatch {

struct DispatchOptions {
  std::chrono::milliseconds default_timeout{20'000};
  std::chrono::milliseconds max_timeout{60'000};
  /// How long a delivered async command waits for the device's response.
  std::chrono::milliseconds async_response_timeout{60'000};
  /// A claimed item whose publish outcome was never recorded (process died) times out then.
  std::chrono::milliseconds claim_timeout{30'000};
  std::chrono::milliseconds default_message_ttl{24 * 3600 * 1000};
  /// The sweeper leaves an open request this long past its deadline to the replica waiting.
  std::chrono::milliseconds sweep_grace{2'000};
  /// This replica (recorded as the owner of its sync requests: responses are routed to it).
  std::string replica_id;
  /// At most this many new requests (responses) go into one statement.
  size_t max_batch = 64;
};

/// A sync command, property set or property get to send.
struct SyncRequest {
  Kind kind = Kind::kCommand;
  std::string device_id;
  std::string service_id;
  std::string command_name;
  std::string body_json;  ///< paras (command) or services (property set)
  int32_t timeout_seconds = 0;
};

struct SyncResult {
  std::string request_id;
  std::string response_json;
};

struct MessageRequest {
  std::string device_id;
  std::string message_id;
  std::string name;
  std::string payload_format;  ///< standard (default) | raw
  std::string message_json;
  std::string raw_message;
  std::string topic;
  int32_t ttl_minutes = 0;
  int64_t ttl_seconds = 0;
};

struct AsyncCommandRequest {
  std::string device_id;
  std::string service_id;
  std::string command_name;
  std::string paras_json;
  int32_t expire_time = 0;
  std::string send_strategy;  ///< immediately (default) | delay
};

/// The metrics of command-dispatch (iot_command_dispatch_*).
struct DispatchMetrics {
  explicit DispatchMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& requests;   ///< {kind, status}
  prometheus::Family<prometheus::Counter>& responses;  ///< {route}
  prometheus::Family<prometheus::Histogram>& latency;  ///< {kind}: sync round trip
  prometheus::Counter& swept;
  /// iot_command_dispatch_rejected_records_total{reason}: records refused for good.
  common::RejectionCounter rejections;
};

/// The logic of command-dispatch, free of gRPC: validates against the device's model, records
/// every request, publishes through the gateway, waits for sync responses (routed between
/// replicas), drains the pending queue of a device that comes online, sweeps what expired.
class DispatchService {
 public:
  DispatchService(std::shared_ptr<RequestStore> store, std::shared_ptr<DeviceDirectory> devices,
                  std::shared_ptr<DevicePublisher> publisher,
                  std::shared_ptr<ResponseRouter> router, std::shared_ptr<DispatchMetrics> metrics,
                  DispatchOptions options = {});

  /// Starts receiving routed responses.
  absl::Status Start();
  void Stop();

  /// CreateCommand, UpdateProperties, ListProperties: waits at most the request's timeout
  /// (and `deadline`, the caller's own).
  absl::StatusOr<SyncResult> SendSync(const common::Principal& caller, const SyncRequest& request,
                                      std::chrono::system_clock::time_point deadline);
  absl::StatusOr<RequestRecord> CreateMessage(const common::Principal& caller,
                                              const MessageRequest& request);
  absl::StatusOr<RequestRecord> CreateAsyncCommand(const common::Principal& caller,
                                                   const AsyncCommandRequest& request);
  absl::StatusOr<RequestRecord> Show(const common::Principal& caller, const std::string& device_id,
                                     Kind kind, const std::string& request_id);
  absl::StatusOr<Page<RequestRecord>> List(const common::Principal& caller,
                                           const std::string& device_id, Kind kind,
                                           const std::string& status, int32_t limit,
                                           const std::string& marker);

  /// Device responses from the gateway (at least once: idempotent on the request id, as only
  /// an open request completes). Returns the responses refused for good (`malformed`: no device
  /// or request id), counted and logged; the others are recorded before it returns.
  absl::StatusOr<common::Rejected> CompleteRequests(const std::vector<DeviceResponse>& responses);
  /// Presence from the gateway: a device whose last event in the batch is a connect gets its
  /// pending items (idempotent: a drain sends each item once). Events without a device id are
  /// returned as `malformed`.
  absl::StatusOr<common::Rejected> ReportPresence(const std::vector<DevicePresence>& events);
  /// A device came online: its pending items go out, in order.
  absl::Status DeviceOnline(const std::string& device_id);
  /// Expired pending items and timed-out open ones.
  absl::Status Sweep();

 private:
  struct Waiter {
    std::string device_id;
    Kind kind = Kind::kCommand;
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Completion> completion;
  };

  absl::StatusOr<DeviceInfo> DeviceOf(const common::Principal& caller,
                                      const std::string& device_id);
  std::shared_ptr<Waiter> AddWaiter(const std::string& request_id, const std::string& device_id,
                                    Kind kind);
  void RemoveWaiter(const std::string& request_id);
  /// True when a call of this replica waited for it (and had no completion yet).
  bool Resolve(const Completion& completion);
  /// Resolve() for a device's response to a call of this replica, before it is recorded.
  bool ResolveEarly(const DeviceResponse& response);
  /// A recorded completion of a sync request to its waiting call, here or on its owner
  /// replica; the route for the metrics.
  std::string Route(const Completion& completion);
  /// Publishes a recorded sync request; a device offline or a gateway error finishes it as
  /// FAILED and is returned (FAILED_PRECONDITION, UNAVAILABLE).
  absl::Status PublishSync(const RequestRecord& record);
  /// The completion of a published sync request, waited for until `wait_until`; then the
  /// request times out, unless the store has a completion whose routing was lost
  /// (DEADLINE_EXCEEDED when it has none).
  absl::StatusOr<Completion> AwaitSync(Waiter& waiter, const RequestRecord& record,
                                       std::chrono::system_clock::time_point wait_until);
  /// After a lost pub/sub connection: completions recorded meanwhile are read back.
  void ResyncWaiters();
  /// Sends the device's pending items; `failure` (if given) says why one was not sent.
  absl::Status Drain(const std::string& device_id, std::string* failure);
  void Count(Kind kind, std::string_view status);

  std::shared_ptr<RequestStore> store_;
  std::shared_ptr<DeviceDirectory> devices_;
  std::shared_ptr<DevicePublisher> publisher_;
  std::shared_ptr<ResponseRouter> router_;
  std::shared_ptr<DispatchMetrics> metrics_;
  DispatchOptions options_;
  /// Sync requests and device responses are recorded in group commits (Batcher).
  Batcher<NewRequest, absl::Status> inserts_;
  Batcher<ResponseRecord, absl::StatusOr<std::optional<Completion>>> completions_;

  std::mutex waiters_mu_;
  std::unordered_map<std::string, std::shared_ptr<Waiter>> waiters_;
  /// One drain per device at a time in this process (across replicas: the store's lock).
  std::mutex drains_mu_;
  std::unordered_map<std::string, std::shared_ptr<std::mutex>> drains_;
};

/// The downlink payloads of DESIGN.md §3.
std::string CommandPayload(const std::string& device_id, const std::string& service_id,
                           const std::string& command_name, const nlohmann::json& paras);
/// SUCCESSFUL or FAILED from a response's result_code (absent: success).
std::string_view ResultStatus(const std::string& payload_json);

}  // namespace iot::command_dispatch
