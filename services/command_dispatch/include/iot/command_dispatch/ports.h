#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "iot/command_dispatch/types.h"
#include "iot/thing_model/validator.h"

namespace iot::command_dispatch {

/// How a request moves from one status to another (see RequestStore::Move).
struct Transition {
  std::vector<std::string_view> from;  ///< only from one of these
  std::string_view to;
  std::string error;  ///< kept when not empty
  /// Sets the response deadline to now + this; nullopt clears it.
  std::optional<std::chrono::milliseconds> deadline_in;
  bool stamp_sent = false;
  bool clear_sent = false;
  bool stamp_delivered = false;
  bool finished = false;
  bool record_history = true;
};

/// What `send` made of a claimed pending item (RequestStore::DrainPending).
enum class SendOutcome { kDelivered, kOffline, kFailed };

/// A request to record (RequestStore::InsertMany).
struct NewRequest {
  RequestRecord record;
  std::optional<std::chrono::milliseconds> expire_in;
  std::optional<std::chrono::milliseconds> deadline_in;
};

/// A device's response to record with the final status it gives (RequestStore::CompleteMany).
struct ResponseRecord {
  DeviceResponse response;
  std::string final_status;
};

/// Port: the durable record of every request (PostgreSQL).
class RequestStore {
 public:
  virtual ~RequestStore() = default;

  /// Records a new request with its first status (history included). `expire_in` sets when a
  /// PENDING item expires, `deadline_in` when a SENT one times out. ALREADY_EXISTS for a taken id.
  virtual absl::Status Insert(const RequestRecord& request,
                              std::optional<std::chrono::milliseconds> expire_in,
                              std::optional<std::chrono::milliseconds> deadline_in) = 0;
  /// Moves `request_id` if its status is one of `t.from`; false when it was not.
  virtual absl::StatusOr<bool> Move(const std::string& request_id, const Transition& t) = 0;
  /// Records a device's response: an open request (SENT, DELIVERED) becomes `final_status` and
  /// the Completion is returned; a closed one (TIMEOUT, ...) only keeps the response (late) and
  /// nullopt is returned, as for an unknown id, a message, or a response already recorded.
  virtual absl::StatusOr<std::optional<Completion>> Complete(const DeviceResponse& response,
                                                             std::string_view final_status) = 0;
  /// Insert() of several requests at once (one statement where the store can: concurrent
  /// calls' group commit). One status per request, in order.
  virtual std::vector<absl::Status> InsertMany(const std::vector<NewRequest>& requests) {
    std::vector<absl::Status> out;
    out.reserve(requests.size());
    for (const NewRequest& r : requests) {
      out.push_back(Insert(r.record, r.expire_in, r.deadline_in));
    }
    return out;
  }
  /// Complete() of several responses at once, as InsertMany(). A response repeated in the
  /// batch is recorded once (the repeat gets nullopt, as a duplicate does).
  virtual std::vector<absl::StatusOr<std::optional<Completion>>> CompleteMany(
      const std::vector<ResponseRecord>& responses) {
    std::vector<absl::StatusOr<std::optional<Completion>>> out;
    out.reserve(responses.size());
    for (const ResponseRecord& r : responses) {
      out.push_back(Complete(r.response, r.final_status));
    }
    return out;
  }
  /// The request of `tenant_id`'s device (history included); NOT_FOUND otherwise.
  virtual absl::StatusOr<RequestRecord> Get(const std::string& tenant_id,
                                            const std::string& device_id, Kind kind,
                                            const std::string& request_id) = 0;
  /// A device's requests of one kind, oldest first; `status` empty: any.
  virtual absl::StatusOr<Page<RequestRecord>> List(const std::string& tenant_id,
                                                   const std::string& device_id, Kind kind,
                                                   const std::string& status, int32_t limit,
                                                   const std::string& marker) = 0;
  /// The status and response of a request (any tenant): a waiting call checks it after a
  /// lost pub/sub connection.
  virtual absl::StatusOr<RequestRecord> Find(const std::string& request_id) = 0;
  /// Under a per-device lock shared by every replica, claims the device's unexpired PENDING
  /// items one at a time in creation order (-> SENT, timing out after `claim_timeout` if this
  /// process dies) and hands each to `send`. kDelivered: -> DELIVERED (a message is finished;
  /// an async command waits for its response until `response_timeout`); kOffline / kFailed:
  /// back to PENDING, and the drain stops. Returns the number delivered.
  virtual absl::StatusOr<int> DrainPending(
      const std::string& device_id, std::chrono::milliseconds claim_timeout,
      std::chrono::milliseconds response_timeout,
      const std::function<SendOutcome(const RequestRecord&)>& send) = 0;
  /// PENDING past expiry -> EXPIRED (messages: TIMEOUT); SENT / DELIVERED more than `grace`
  /// past their deadline -> TIMEOUT. Returns how many moved.
  virtual absl::StatusOr<int> Sweep(std::chrono::milliseconds grace) = 0;
};

/// What the platform knows about a device, for validating requests to it.
struct DeviceInfo {
  std::string device_id;
  std::string tenant_id;
  std::string product_id;
  std::shared_ptr<const thing_model::Validator> validator;
};

/// Port: the device registry (thing-model). NOT_FOUND for an unknown device.
class DeviceDirectory {
 public:
  virtual ~DeviceDirectory() = default;
  virtual absl::StatusOr<DeviceInfo> Lookup(const std::string& device_id) = 0;
};

/// One downlink to a device, through the device-gateway.
struct Downlink {
  std::string tenant_id;
  std::string device_id;
  Kind kind = Kind::kCommand;
  std::string request_id;
  std::string payload;
  std::string user_topic;
};

/// Port: publishes to devices (device-gateway InternalDownlink). true: the device is connected
/// and the broker took it; false: offline, nothing sent.
class DevicePublisher {
 public:
  virtual ~DevicePublisher() = default;
  virtual absl::StatusOr<bool> Publish(const Downlink& downlink) = 0;
};

/// Port: gets a device's response to the replica whose call waits for it (Redis pub/sub; the
/// waiting replica is recorded with the request, Completion::owner).
class ResponseRouter {
 public:
  using Deliver = std::function<void(const Completion&)>;
  using Resync = std::function<void()>;

  virtual ~ResponseRouter() = default;
  /// Starts receiving the completions other replicas route here.
  virtual absl::Status Start(Deliver deliver, Resync resync) = 0;
  virtual void Stop() = 0;
  /// Hands `completion` to its owner replica; false when it names none (or this one) or the
  /// owner does not listen.
  virtual absl::StatusOr<bool> Forward(const Completion& completion) = 0;
};

}  // namespace iot::command_dispatch
