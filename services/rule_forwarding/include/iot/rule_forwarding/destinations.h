#pragma once

// The destination types of this part of the service: postgres, republish, webhook. (history and
// consumer_group live with telemetry history and subscriptions.)

#include <absl/status/status.h>

#include <chrono>
#include <memory>
#include <string>

#include "iot/rule_forwarding/destination.h"

namespace iot::common {
class EgressPolicy;
class MqttClient;
}  // namespace iot::common

namespace iot::rule_forwarding {

/// `postgres`: inserts each delivery's payload (a JSON object: keys are columns) as a row of a
/// user-named table in a PostgreSQL database, one multi-row INSERT per batch.
/// Config: {"url": "postgresql://user:password@host:port/db[?sslmode=..]", "table":
/// "[schema.]table", "id_column": "col" (optional: receives delivery_id; with a unique index
/// there, redelivery inserts nothing)}. The host must pass `egress` (docs/security.md): checked
/// when the rule is saved and before every new connection, which goes to the checked address.
std::shared_ptr<Destination> MakePostgresDestination(
    std::shared_ptr<const common::EgressPolicy> egress);

/// Sends a republish action's payload down to a device of the rule's tenant.
class DeviceDownlink {
 public:
  virtual ~DeviceDownlink() = default;
  /// OK: published. NOT_FOUND / PERMISSION_DENIED (unknown device, another tenant's): permanent.
  /// UNAVAILABLE (device offline, a peer down): retried.
  virtual absl::Status Publish(const std::string& tenant_id, const std::string& device_id,
                               const std::string& user_topic, int qos, std::string payload) = 0;
};

/// Through thing-model's InternalThingModel.GetDeviceContext (the device's tenant, cached for
/// `cache_ttl`) and the device-gateway's InternalDownlink.Publish, with `Bearer service_key`.
std::shared_ptr<DeviceDownlink> MakeGatewayDownlink(const std::string& thing_model_addr,
                                                    const std::string& device_gateway_addr,
                                                    std::string service_key,
                                                    std::chrono::milliseconds cache_ttl);

/// `republish`: publishes each payload as JSON to an MQTT topic through the service's client.
/// Config: {"topic": "app/alerts/${device_id}", "qos": 0|1}; `${device_id}`, `${product_id}`
/// and `${tenant_id}` are replaced; wildcards are refused. Of the '$' topics only a device's
/// `$oc/devices/{device_id}/sys/messages/down` and `$oc/devices/{device_id}/user/{topic}` are
/// allowed: those go through `downlink` (qos 1 unless set) to a device of the rule's tenant.
std::shared_ptr<Destination> MakeRepublishDestination(
    std::shared_ptr<common::MqttClient> mqtt, std::shared_ptr<DeviceDownlink> downlink = nullptr);

/// `webhook`: HTTP(S) POST of each payload as JSON (libcurl), headers X-Iot-Delivery-Id,
/// X-Iot-Rule-Id and, with a secret, X-Iot-Signature: sha256=<hex HMAC-SHA256(secret, body)>.
/// Config: {"url": "https://...", "secret": "...", "timeout_ms": 5000}. 2xx: delivered;
/// 408, 429, 5xx, connect errors and timeouts: retried; other statuses: dead letter. The host
/// must pass `egress` (loopback, private, link-local, the platform's own addresses are refused
/// unless allowed: docs/security.md): checked when the rule is saved and before every POST,
/// which connects only to the checked addresses (a refusal is a dead letter).
std::shared_ptr<Destination> MakeWebhookDestination(
    std::shared_ptr<const common::EgressPolicy> egress);

}  // namespace iot::rule_forwarding
