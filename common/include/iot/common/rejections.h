#pragma once

// What an owner of device data does with a record of a batch it refuses for good (issue #14:
// one bad record is one rejection): counts it, logs it with the device id and returns it in
// IngestAck.rejected, while the rest of the batch is taken.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/common/status.h"

namespace iot::common {

/// A record an owner will never take (iot.device_gateway.v1.RejectedRecord without proto types).
struct RejectedRecord {
  std::string message_id;
  std::string device_id;
  std::string reason;  ///< short and stable: "malformed", "invalid_envelope", "too_large", ...
  std::string detail;  ///< human-readable, names the offending field
};
using Rejected = std::vector<RejectedRecord>;

/// At most `per_second` lines a second: one flooding device must not flood the log (the
/// metric still counts everything).
class LogThrottle {
 public:
  explicit LogThrottle(int per_second) : per_second_(per_second) {}
  bool Allow();

 private:
  const int per_second_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_{};
  int used_ = 0;
};

/// `<metric>{reason}` and a warning per rejected record (with device id, message id, reason
/// and detail; at most 20 lines a second). Thread-safe.
class RejectionCounter {
 public:
  RejectionCounter(prometheus::Registry& registry, const std::string& metric,
                   const std::string& help);

  /// Counts and logs `record`, and appends it to `out`.
  void Reject(RejectedRecord record, Rejected& out);

 private:
  prometheus::Family<prometheus::Counter>& family_;
  LogThrottle throttle_{20};
};

/// The answer of an internal ingest RPC: OK with `rejected` in the IngestAck (any proto with
/// `repeated RejectedRecord rejected`), or the error that makes the gateway retry the batch.
template <typename Ack>
grpc::Status Acknowledge(const absl::StatusOr<Rejected>& rejected, Ack* ack) {
  if (!rejected.ok()) {
    return ToGrpcStatus(rejected.status());
  }
  for (const RejectedRecord& r : *rejected) {
    auto* out = ack->add_rejected();
    out->set_message_id(r.message_id);
    out->set_device_id(r.device_id);
    out->set_reason(r.reason);
    out->set_detail(r.detail);
  }
  return grpc::Status::OK;
}

}  // namespace iot::common
