#pragma once

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace iot::common {

/// Makes spdlog's default logger write one JSON object per line to stdout:
/// {"ts":"2026-11-26T17:42:48.123Z","level":"info","service":"shadow","msg":"...",...}.
/// Every message is passed through MaskSecrets. Call once, first thing in main.
void InitLogging(const std::string& service, const std::string& level);

/// Replaces secrets in free text: URL passwords (`scheme://user:***@host`) and bearer tokens.
std::string MaskSecrets(std::string_view text);

/// True for field names whose values are never logged (password, secret, token, api_key,
/// authorization, ...).
bool IsSecretField(std::string_view name);

/// A structured log line: `Log(spdlog::level::info, "connected", {{"url", url}})`. Fields whose
/// names are secret are replaced by "***"; string values are masked like messages.
void Log(spdlog::level::level_enum level, std::string_view message,
         const nlohmann::json& fields = nlohmann::json::object());

inline void LogInfo(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  Log(spdlog::level::info, m, f);
}
inline void LogWarn(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  Log(spdlog::level::warn, m, f);
}
inline void LogError(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  Log(spdlog::level::err, m, f);
}
inline void LogDebug(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  Log(spdlog::level::debug, m, f);
}

/// The formatter behind InitLogging, exposed for tests.
std::unique_ptr<spdlog::formatter> MakeJsonFormatter(std::string service);

}  // namespace iot::common
