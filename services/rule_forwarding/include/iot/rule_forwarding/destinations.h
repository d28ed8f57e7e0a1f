#pragma once

// The destination types of this part of the service: postgres, republish, webhook. (history and
// consumer_group live with telemetry history and subscriptions.)

#include <memory>

#include "iot/rule_forwarding/destination.h"

namespace iot::common {
class MqttClient;
}  // namespace iot::common

namespace iot::rule_forwarding {

/// `postgres`: inserts each delivery's payload (a JSON object: keys are columns) as a row of a
/// user-named table in a PostgreSQL database, one multi-row INSERT per batch.
/// Config: {"url": "postgresql://...", "table": "[schema.]table", "id_column": "col"
/// (optional: receives delivery_id; with a unique index there, redelivery inserts nothing)}.
std::shared_ptr<Destination> MakePostgresDestination();

/// `republish`: publishes each payload as JSON to an MQTT topic through the service's client.
/// Config: {"topic": "app/alerts/${device_id}", "qos": 0|1}; `${device_id}`, `${product_id}`
/// and `${tenant_id}` are replaced; topics starting with '$' and wildcards are refused.
std::shared_ptr<Destination> MakeRepublishDestination(std::shared_ptr<common::MqttClient> mqtt);

/// `webhook`: HTTP(S) POST of each payload as JSON (libcurl), headers X-Iot-Delivery-Id,
/// X-Iot-Rule-Id and, with a secret, X-Iot-Signature: sha256=<hex HMAC-SHA256(secret, body)>.
/// Config: {"url": "https://...", "secret": "...", "timeout_ms": 5000}. 2xx: delivered;
/// 408, 429, 5xx, connect errors and timeouts: retried; other statuses: dead letter. Unless
/// `allow_private_addresses`, a URL resolving to a loopback, private or link-local address is
/// refused (dead letter) when connecting: tenants cannot reach the platform's own network.
std::shared_ptr<Destination> MakeWebhookDestination(bool allow_private_addresses);

}  // namespace iot::rule_forwarding
