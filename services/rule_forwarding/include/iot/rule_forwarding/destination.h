#pragma once

// The seam between the rule engine and the places its actions deliver to. The dispatcher
// (rules, retry with backoff, dead letters) calls destinations; each destination type
// (history, postgres, consumer_group, republish, webhook) implements this interface.

#include <absl/status/status.h>

#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>

namespace iot::rule_forwarding {

/// One action's input: what a rule's SELECT produced for one forwarded record.
struct Delivery {
  std::string
      delivery_id;  // record message_id + ":" + rule_id + ":" + action index: idempotency key
  std::string tenant_id;
  std::string device_id;
  std::string product_id;
  std::string rule_id;   // "" for built-in deliveries (default history)
  std::string resource;  // device.property, ...
  std::string event;
  std::string topic;
  long long event_time_unix_ms = 0;
  const nlohmann::json* action_config = nullptr;  // the action's settings as stored with the rule
  nlohmann::json payload;                         // the SELECT result (the envelope for SELECT *)
};

/// A destination type. Implementations are thread-safe.
class Destination {
 public:
  virtual ~Destination() = default;

  /// The action `type` string in rules: "history", "postgres", "consumer_group", ...
  [[nodiscard]] virtual std::string_view type() const = 0;

  /// Checks an action's settings when a rule is created or updated: INVALID_ARGUMENT naming
  /// the field (common::InvalidField) if they are wrong.
  [[nodiscard]] virtual absl::Status ValidateConfig(const nlohmann::json& config) const = 0;

  /// Delivers a batch (per-device order kept within it). OK: every delivery is done. An error:
  /// none or only some are — the dispatcher retries the whole batch with backoff (deliveries
  /// must therefore be idempotent on delivery_id) and dead-letters it after N failures.
  /// UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED are retried; other codes are
  /// permanent and dead-lettered at once.
  virtual absl::Status Deliver(std::span<const Delivery> batch) = 0;
};

}  // namespace iot::rule_forwarding
