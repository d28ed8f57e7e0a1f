#pragma once

// Rule actions' secrets at rest. The secret settings of an action (`secret`, `password`, `url`:
// a URL may carry a password or a token) are sealed with the platform's SecretBox
// (IOT_SECRET_KEY, AES-256-GCM, as device secrets are) wherever an action's settings are
// stored: the rules table and the delivery outbox. The stored form keeps the masked settings
// readable and the sealed values beside them:
//
//   {"config": {"url": "postgresql://u:***@db/x", "table": "t"}, "sealed": {"url": "v1:..."}}
//
// Each sealed value is bound (associated data) to its tenant, rule, action index and setting,
// so it cannot be moved to another record. Rows written before sealing existed have no
// `sealed` and plain settings: they are read as they are and re-sealed at start-up.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "iot/common/crypto.h"

namespace iot::rule_forwarding {

/// Which action the settings belong to: the sealed values' associated data.
struct ActionRef {
  std::string_view tenant_id;
  std::string_view rule_id;
  size_t action_index = 0;
};

/// A URL of an action as shown to users and logs: scheme, host and path; its password and its
/// query string (where tokens go) are masked.
std::string MaskActionUrl(std::string_view url);

/// Whether `key` names a secret setting (sealed at rest, masked by the API, never logged).
bool IsSecretSetting(std::string_view key);

/// An action's settings as shown to users and logs: secret values replaced by "***" (a URL keeps
/// all but its password and its query string).
nlohmann::json MaskConfig(const nlohmann::json& config);

/// True when `config` holds a secret setting in plain text (a row from before sealing).
bool HasPlainSecrets(const nlohmann::json& config);

class ActionSecrets {
 public:
  explicit ActionSecrets(common::SecretBox box) : box_(std::move(box)) {}

  /// The stored form of `config`: {"config": masked, "sealed": {key: sealed value}} (no
  /// "sealed" when nothing is secret).
  [[nodiscard]] nlohmann::json Seal(const nlohmann::json& config, const ActionRef& ref) const;

  /// The settings in plain text from a stored form (`stored` holds "config" and maybe "sealed";
  /// a legacy plain "config" comes back as it is). DATA_LOSS naming the setting when a sealed
  /// value cannot be opened (another IOT_SECRET_KEY, or moved to another record).
  [[nodiscard]] absl::StatusOr<nlohmann::json> Open(const nlohmann::json& stored,
                                                    const ActionRef& ref) const;

 private:
  common::SecretBox box_;
};

}  // namespace iot::rule_forwarding
