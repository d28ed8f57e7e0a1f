#include "iot/common/json_limits.h"

#include <fmt/format.h>

#include "iot/common/status.h"

namespace iot::common {
namespace {

JsonLimits& MutableProcessJsonLimits() {
  static JsonLimits limits;
  return limits;
}

}  // namespace

std::string JsonErrorText(const std::exception& error) {
  std::string_view text = error.what();
  if (auto pos = text.find("] "); !text.empty() && text.front() == '[' && pos != text.npos) {
    text.remove_prefix(pos + 2);
  }
  return std::string(text);
}

std::size_t JsonNestingDepth(std::string_view text, std::size_t stop_above) {
  std::size_t depth = 0;
  std::size_t deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > stop_above) {
          return deepest;
        }
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

std::optional<JsonLimitViolation> FindJsonLimitViolation(std::string_view text,
                                                         const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) {
    return JsonLimitViolation{.kind = JsonLimitKind::kTooLarge,
                              .message = fmt::format("JSON of {} bytes exceeds the limit of {}",
                                                     text.size(), limits.max_bytes)};
  }
  if (JsonNestingDepth(text, limits.max_depth) > limits.max_depth) {
    return JsonLimitViolation{
        .kind = JsonLimitKind::kTooDeep,
        .message = fmt::format("JSON nested deeper than {} levels", limits.max_depth)};
  }
  return std::nullopt;
}

absl::Status CheckJsonLimits(std::string_view field, std::string_view text,
                             const JsonLimits& limits) {
  if (auto violation = FindJsonLimitViolation(text, limits)) {
    return InvalidField(field, violation->message);
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view field, std::string_view text,
                                         const JsonLimits& limits) {
  if (absl::Status status = CheckJsonLimits(field, text, limits); !status.ok()) {
    return status;
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& error) {
    return InvalidField(field, fmt::format("not valid JSON ({})", JsonErrorText(error)));
  }
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view field, std::string_view text) {
  return ParseJson(field, text, ProcessJsonLimits());
}

const JsonLimits& ProcessJsonLimits() { return MutableProcessJsonLimits(); }

void SetProcessJsonLimits(const JsonLimits& limits) { MutableProcessJsonLimits() = limits; }

}  // namespace iot::common
