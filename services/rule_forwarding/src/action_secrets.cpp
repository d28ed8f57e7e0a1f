#include "iot/rule_forwarding/action_secrets.h"

#include <fmt/format.h>

#include "iot/common/url.h"

namespace iot::rule_forwarding {
namespace {

constexpr const char* kMasked = "***";

std::string Aad(const ActionRef& ref, std::string_view key) {
  return fmt::format("rule_forwarding.action:{}:{}:{}:{}", ref.tenant_id, ref.rule_id,
                     ref.action_index, key);
}

nlohmann::json MaskValue(std::string_view key, const std::string& value) {
  return key == "url" ? nlohmann::json(MaskActionUrl(value)) : nlohmann::json(kMasked);
}

}  // namespace

std::string MaskActionUrl(std::string_view url) {
  std::string masked = common::MaskUrl(url);
  if (const size_t query = masked.find('?'); query != std::string::npos) {
    masked.replace(query + 1, std::string::npos, kMasked);
  }
  return masked;
}

bool IsSecretSetting(std::string_view key) {
  return key == "secret" || key == "password" || key == "url";
}

nlohmann::json MaskConfig(const nlohmann::json& config) {
  if (!config.is_object()) {
    return config;
  }
  nlohmann::json out = config;
  for (auto& [key, value] : out.items()) {
    if (value.is_string() && IsSecretSetting(key)) {
      value = MaskValue(key, value.get<std::string>());
    }
  }
  return out;
}

bool HasPlainSecrets(const nlohmann::json& config) {
  if (!config.is_object()) {
    return false;
  }
  for (const auto& [key, value] : config.items()) {
    if (value.is_string() && IsSecretSetting(key)) {
      return true;
    }
  }
  return false;
}

nlohmann::json ActionSecrets::Seal(const nlohmann::json& config, const ActionRef& ref) const {
  nlohmann::json stored = {{"config", config}};
  if (!config.is_object()) {
    return stored;
  }
  nlohmann::json sealed = nlohmann::json::object();
  for (auto& [key, value] : stored["config"].items()) {
    if (value.is_string() && IsSecretSetting(key)) {
      const std::string& plain = value.get_ref<const std::string&>();
      sealed[key] = box_.Seal(plain, Aad(ref, key));
      value = MaskValue(key, plain);
    }
  }
  if (!sealed.empty()) {
    stored["sealed"] = std::move(sealed);
  }
  return stored;
}

absl::StatusOr<nlohmann::json> ActionSecrets::Open(const nlohmann::json& stored,
                                                   const ActionRef& ref) const {
  nlohmann::json config = stored.value("config", nlohmann::json::object());
  const auto sealed = stored.find("sealed");
  if (sealed == stored.end() || !sealed->is_object() || !config.is_object()) {
    return config;
  }
  for (const auto& [key, value] : sealed->items()) {
    auto plain = value.is_string() ? box_.Open(value.get<std::string>(), Aad(ref, key))
                                   : absl::InvalidArgumentError("not a sealed value");
    if (!plain.ok()) {
      return absl::DataLossError(
          fmt::format("the sealed setting '{}' cannot be opened (was IOT_SECRET_KEY changed?): {}",
                      key, std::string(plain.status().message())));
    }
    config[key] = *std::move(plain);
  }
  return config;
}

}  // namespace iot::rule_forwarding
