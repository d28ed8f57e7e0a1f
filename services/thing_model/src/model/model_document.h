#pragma once

// What the product-model and TSL parsers share: reading a bounded JSON document, collecting
// errors and warnings at JSON paths, and the status a rejected document gets.

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "iot/thing_model/product_model.h"

namespace iot::thing_model::detail {

/// `path.key` ("key" at the root).
std::string JoinPath(std::string_view path, std::string_view key);
/// `path[index]`.
std::string IndexPath(std::string_view path, std::size_t index);
/// `text` without leading and trailing spaces and tabs.
std::string_view TrimBlanks(std::string_view text);
/// The member `key`, or nullptr when it is absent or null (the same thing in both documents).
const nlohmann::json* Member(const nlohmann::json& object, std::string_view key);

/// Errors (at most kMaxModelErrors, the rest counted) and warnings of one document.
class IssueCollector {
 public:
  explicit IssueCollector(ModelDiagnostics& diagnostics) : diagnostics_(diagnostics) {}

  void Error(std::string path, std::string message);
  void Warn(std::string path, std::string message);
  bool failed() const { return !diagnostics_.errors.empty() || diagnostics_.dropped_errors > 0; }

 private:
  ModelDiagnostics& diagnostics_;
};

/// Checks the size (kMaxModelBytes) and nesting (kMaxModelDepth) of `text` before parsing it;
/// nullopt with an error at the root when either or the JSON fails. `what` names the document
/// in messages ("product model too large: ...").
std::optional<nlohmann::json> ReadDocument(std::string_view text, std::string_view what,
                                           IssueCollector& issues);

/// INVALID_ARGUMENT naming the first error's path (common::FieldOf gives it) with the message
/// "path: reason (and N more errors)". `diagnostics` must hold an error.
absl::Status Rejected(const ModelDiagnostics& diagnostics);

}  // namespace iot::thing_model::detail
