#pragma once

// The ports of the gateway: what its domain (DeviceCache, UplinkPipeline, DownlinkService,
// BrokerControl) needs from outside, as small interfaces. Their adapters are declared in
// grpc_clients.h (src/grpc/), pg_dead_letters.h (src/postgres/) and mqtt_publisher.h
// (src/mqtt/); unit tests use in-memory fakes.
//
// The owners of device data the gateway hands uplink on to (DESIGN.md §1-2) are shadow,
// command-dispatch, rule-forwarding and thing-model (status). The messages are the internal
// contracts of proto/iot/*/v1 (fc31b8a); only the adapters see gRPC.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "iot/command_dispatch/v1/command_dispatch.pb.h"
#include "iot/device_gateway/presence.h"
#include "iot/device_gateway/v1/uplink.pb.h"
#include "iot/rule_forwarding/v1/rule_forwarding.pb.h"
#include "iot/shadow/v1/shadow.pb.h"

namespace iot::device_gateway {

/// What thing-model's GetDeviceContext returns, before compiling the model.
struct DeviceContextData {
  std::string device_id;
  std::string tenant_id;
  std::string product_id;
  std::string node_id;
  std::string dialect;
  int32_t model_version = 0;
  std::string product_json;
};

/// Port: the device registry (behind DeviceCache). NOT_FOUND for a device that does not exist;
/// anything else but OK is transient.
class DeviceContextSource {
 public:
  virtual ~DeviceContextSource() = default;
  virtual absl::StatusOr<DeviceContextData> GetDeviceContext(const std::string& device_id) = 0;
};

/// Port: where presence goes (thing-model's device status).
class DeviceStatusSink {
 public:
  virtual ~DeviceStatusSink() = default;
  /// NOT_FOUND / INVALID_ARGUMENT are final; anything else is retried.
  virtual absl::Status ReportPresence(const PresenceEvent& event) = 0;
};

/// Names of the downstream calls (the `target` label of the downstream metrics).
enum class Target {
  kThingModelPresence,
  kShadowReport,
  kShadowPropertySet,
  kShadowGet,
  kShadowPresence,
  kCommandResponses,
  kCommandPresence,
  kRuleIngest,
};
std::string_view TargetName(Target target);

/// What an owner answered to a batch: OK with the records it refused for good
/// (IngestAck.rejected; it durably took all the others), or an error (it took nothing).
using OwnerAnswer = absl::StatusOr<device_gateway::v1::IngestAck>;

/// Port: one call per owner RPC. The pipeline retries errors (pipeline.h says which for how
/// long).
class Downstream {
 public:
  virtual ~Downstream() = default;
  virtual OwnerAnswer ReportProperties(const shadow::v1::ReportPropertiesRequest& request) = 0;
  virtual OwnerAnswer CompletePropertySet(const shadow::v1::PropertySetResult& result) = 0;
  /// The body to publish on `.../sys/shadow/get/response/request_id=...`; NOT_FOUND: no shadow.
  virtual absl::StatusOr<std::string> GetDeviceShadow(
      const shadow::v1::DeviceShadowGetRequest& request) = 0;
  virtual OwnerAnswer ShadowPresence(const device_gateway::v1::PresenceEvents& events) = 0;
  virtual OwnerAnswer CompleteRequests(
      const command_dispatch::v1::CompleteRequestsRequest& request) = 0;
  virtual OwnerAnswer CommandPresence(const device_gateway::v1::PresenceEvents& events) = 0;
  virtual OwnerAnswer Ingest(const rule_forwarding::v1::IngestRequest& request) = 0;
};

/// A record no owner would take, kept for an operator (table device_gateway.dead_letters):
/// the one-record request as it was sent, and why it was refused.
struct DeadLetter {
  Target target = Target::kRuleIngest;
  std::string code;   ///< gRPC status code name of the last refusal, e.g. INVALID_ARGUMENT
  std::string error;  ///< its message
  int attempts = 0;
  std::string message_id;
  device_gateway::v1::DeviceRef device;
  /// The request carrying only this record, as protobuf JSON (replayable).
  std::string request_json;
};

/// Port: the durable store of dead letters. Put() is idempotent on (target, message_id): a
/// record redelivered after a crash is stored once.
class DeadLetterStore {
 public:
  virtual ~DeadLetterStore() = default;
  virtual absl::Status Put(const DeadLetter& letter) = 0;
};

/// Port: the gateway's own MQTT connection, publishing downlink through the broker plugin's
/// relay (`$iot/down/...`).
class DevicePublisher {
 public:
  virtual ~DevicePublisher() = default;
  /// true: handed to the device's connection; false: the device is not connected. Errors:
  /// UNAVAILABLE (not connected to the broker), DEADLINE_EXCEEDED (no answer in time).
  virtual absl::StatusOr<bool> Publish(const std::string& device_topic, std::string_view payload,
                                       int qos) = 0;
};

/// Port: what the broker's uplink partition count is applied to (PartitionOwner).
class PartitionCountSink {
 public:
  virtual ~PartitionCountSink() = default;
  /// The broker's partition count (0 until known: nothing is consumed).
  virtual void SetPartitionCount(uint32_t count) = 0;
};

}  // namespace iot::device_gateway
