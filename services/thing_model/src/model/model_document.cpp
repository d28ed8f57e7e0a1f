#include "model/model_document.h"

#include <fmt/format.h>

#include "iot/common/json_limits.h"
#include "iot/common/status.h"

namespace iot::thing_model::detail {

std::string JoinPath(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}

std::string IndexPath(std::string_view path, std::size_t index) {
  return fmt::format("{}[{}]", path, index);
}

std::string_view TrimBlanks(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return text;
}

const nlohmann::json* Member(const nlohmann::json& object, std::string_view key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    return nullptr;
  }
  return &*it;
}

void IssueCollector::Error(std::string path, std::string message) {
  if (diagnostics_.errors.size() >= kMaxModelErrors) {
    ++diagnostics_.dropped_errors;
    return;
  }
  diagnostics_.errors.push_back({std::move(path), std::move(message)});
}

void IssueCollector::Warn(std::string path, std::string message) {
  if (diagnostics_.warnings.size() < kMaxModelErrors) {
    diagnostics_.warnings.push_back({std::move(path), std::move(message)});
  }
}

std::optional<nlohmann::json> ReadDocument(std::string_view text, std::string_view what,
                                           IssueCollector& issues) {
  if (text.size() > kMaxModelBytes) {
    issues.Error(
        "", fmt::format("{} too large: {} bytes > {} bytes", what, text.size(), kMaxModelBytes));
    return std::nullopt;
  }
  if (common::JsonNestingDepth(text, kMaxModelDepth) > kMaxModelDepth) {
    issues.Error("", fmt::format("{} nested deeper than {} levels", what, kMaxModelDepth));
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& error) {
    issues.Error("", fmt::format("not valid JSON: {}", common::JsonErrorText(error)));
  }
  return std::nullopt;
}

absl::Status Rejected(const ModelDiagnostics& diagnostics) {
  const ModelIssue& first = diagnostics.errors.front();
  const std::size_t more = diagnostics.errors.size() - 1 + diagnostics.dropped_errors;
  std::string reason = first.message;
  if (more > 0) {
    reason += fmt::format(" (and {} more error{})", more, more == 1 ? "" : "s");
  }
  if (first.path.empty()) {
    return absl::InvalidArgumentError(reason);
  }
  return common::InvalidField(first.path, reason);
}

}  // namespace iot::thing_model::detail
