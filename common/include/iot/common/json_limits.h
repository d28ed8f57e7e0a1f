#pragma once

// Bounds on JSON text from outside the platform (devices, API callers), checked before the text
// is parsed. nlohmann's parser is iterative, but copying, comparing and serialising its values
// recurse once per nesting level, and so do the validators, converters and the rule SQL over
// them: a document nested 400,000 deep parses fine and then overflows the stack. So every
// untrusted document is measured first (a byte scan, no recursion, no allocation) and refused
// when it is too large or too deep; everything after that works on bounded input.
//
// The limits are one platform-wide setting (IOT_JSON_MAX_DEPTH, IOT_JSON_MAX_BYTES; docs/
// security.md), the same in every process so that what the gateway admits every owner accepts.
// RunService sets them once at start-up, before any thread starts; ProcessJsonLimits() reads
// them. Parsers of untrusted bytes take explicit limits (the fuzz targets call them directly).

#include <cstddef>
#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace iot::common {

inline constexpr std::size_t kDefaultJsonMaxDepth = 64;
inline constexpr std::size_t kDefaultJsonMaxBytes = 1024 * 1024;
/// Levels the platform's own wrapping adds around device JSON: the gateway's forwarding envelope
/// (`{"notify_data":{"body":{"services":[{"properties":{...}}]}}}`) or a response record. Fields
/// that carry device JSON between services are checked against max_depth + this.
inline constexpr std::size_t kEnvelopeDepth = 8;

struct JsonLimits {
  std::size_t max_bytes = kDefaultJsonMaxBytes;
  std::size_t max_depth = kDefaultJsonMaxDepth;

  /// The limits for JSON one service passes to another after wrapping device JSON: deeper by
  /// kEnvelopeDepth, and larger (escaping a non-JSON payload as a JSON string may grow it up to
  /// six times, plus the envelope).
  [[nodiscard]] JsonLimits Internal() const {
    return {.max_bytes = max_bytes * 8 + 64 * 1024, .max_depth = max_depth + kEnvelopeDepth};
  }
};

/// Which limit a document exceeds.
enum class JsonLimitKind { kTooLarge, kTooDeep };

struct JsonLimitViolation {
  JsonLimitKind kind = JsonLimitKind::kTooLarge;
  /// "JSON of 2000000 bytes exceeds the limit of 1048576" or "JSON nested deeper than 64 levels".
  std::string message;
};

/// Deepest nesting of arrays and objects in `text` (brackets inside strings do not count). The
/// scan stops as soon as the nesting exceeds `stop_above` (returning stop_above + 1), so it
/// costs nothing more for a hostile document than for the first levels of it. Any bytes are
/// accepted: malformed text is measured as far as it goes.
std::size_t JsonNestingDepth(std::string_view text, std::size_t stop_above = SIZE_MAX);

/// The first limit `text` exceeds (size first, then depth), or nullopt.
std::optional<JsonLimitViolation> FindJsonLimitViolation(std::string_view text,
                                                         const JsonLimits& limits);

/// OK, or INVALID_ARGUMENT naming `field` (InvalidField) with the violation's message.
absl::Status CheckJsonLimits(std::string_view field, std::string_view text,
                             const JsonLimits& limits);

/// Parses `text` after checking the limits. INVALID_ARGUMENT naming `field`: a violated limit,
/// or "not valid JSON (...)" with the parser's position and reason. Never throws.
absl::StatusOr<nlohmann::json> ParseJson(std::string_view field, std::string_view text,
                                         const JsonLimits& limits);
/// The same with ProcessJsonLimits().
absl::StatusOr<nlohmann::json> ParseJson(std::string_view field, std::string_view text);

/// nlohmann's exception text without its "[json.exception.parse_error.101] " prefix.
std::string JsonErrorText(const std::exception& error);

/// The limits of this process: the defaults until SetProcessJsonLimits() (RunService calls it
/// with IOT_JSON_MAX_DEPTH / IOT_JSON_MAX_BYTES before anything else starts).
const JsonLimits& ProcessJsonLimits();
/// Start-up only, before any thread reads the limits.
void SetProcessJsonLimits(const JsonLimits& limits);

}  // namespace iot::common
