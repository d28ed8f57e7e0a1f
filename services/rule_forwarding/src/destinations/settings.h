#pragma once

// Reading an action's settings (a JSON object) the same way in every destination type.

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "iot/common/egress.h"

namespace iot::rule_forwarding::settings {

/// INVALID_ARGUMENT unless `config` is an object whose keys are all in `known`.
absl::Status CheckKeys(const nlohmann::json& config, std::initializer_list<std::string_view> known);
/// The string at `key`: "" when absent (or INVALID_ARGUMENT when `required`), INVALID_ARGUMENT
/// when not a string.
absl::StatusOr<std::string> String(const nlohmann::json& config, const std::string& key,
                                   bool required);
/// The integer at `key` in [min, max], `fallback` when absent.
absl::StatusOr<int64_t> Int(const nlohmann::json& config, const std::string& key, int64_t fallback,
                            int64_t min, int64_t max);
/// `[A-Za-z_][A-Za-z0-9_]{0,62}`: a PostgreSQL identifier that needs no escaping inside quotes.
bool IsIdentifier(std::string_view name);
/// "`${name}`" placeholders of `text` replaced by `device_id`, `product_id`, `tenant_id`.
std::string Expand(std::string_view text, std::string_view device_id, std::string_view product_id,
                   std::string_view tenant_id);

/// A republish topic that is a device's downlink: `$oc/devices/{device_id}/sys/messages/down`
/// (user_topic empty) or `$oc/devices/{device_id}/user/{user_topic}`.
struct DeviceDownTopic {
  std::string device_id;
  std::string user_topic;
};
/// nullopt for an ordinary topic (not starting with '$'); the device and custom topic of a
/// device down topic; INVALID_ARGUMENT naming `topic` for any other '$' topic.
absl::StatusOr<std::optional<DeviceDownTopic>> ClassifyRepublishTopic(std::string_view topic);

/// The operator's switch named in refusals: IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST.
inline constexpr std::string_view kAllowListVariable = "IOT_RULE_FORWARDING_DESTINATION_ALLOWLIST";

/// At CreateRule/UpdateRule: INVALID_ARGUMENT naming `field` when `host` is not a host name, or
/// is or resolves to an address `egress` refuses (docs/security.md). A name that does not
/// resolve now passes: every connection checks it again (ResolveDestination).
absl::Status CheckDestinationHost(const common::EgressPolicy& egress, std::string_view host,
                                  const std::string& field);

/// Before every new connection: the addresses to connect to, every one checked; the caller
/// connects to one of them and never resolves the name again. PERMISSION_DENIED (permanent: a
/// dead letter) when one is refused; UNAVAILABLE (retried) when the name does not resolve.
absl::StatusOr<std::vector<common::IpAddress>> ResolveDestination(
    const common::EgressPolicy& egress, std::string_view host);

}  // namespace iot::rule_forwarding::settings
