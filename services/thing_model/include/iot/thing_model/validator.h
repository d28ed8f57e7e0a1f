#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "iot/thing_model/product_model.h"

namespace iot::thing_model {

/// What is wrong with a value or a payload.
enum class ErrorKind : std::uint8_t {
  kMalformed,        ///< not JSON, or not the expected shape (no services array, ...)
  kTooLarge,         ///< the payload exceeds the size limit
  kUnknownService,   ///< service_id not in the model
  kUnknownProperty,  ///< property not in the service
  kUnknownCommand,   ///< command_name not in the service
  kUnknownEvent,     ///< event_type not in the service
  kUnknownPara,      ///< para not declared by the command or event
  kWrongType,        ///< JSON type does not match data_type (int beyond int32 included)
  kOutOfRange,       ///< below min or above max
  kTooLong,          ///< longer than max_length
  kNotInEnum,        ///< not one of enum_list
  kMissingRequired,  ///< a required property or para is absent
  kNotWritable,      ///< a write to a property whose method lacks W
  kDuplicate,        ///< the same property reported twice in one service entry
  // Limits on what one message may carry (ReportOptions): exceeding one refuses the whole report.
  kTooDeep,   ///< JSON nested deeper than ReportOptions::max_depth
  kTooMany,   ///< more service entries or properties than ReportOptions allows
  kOverlong,  ///< a service id, property name or string value over ReportOptions' length limit
};

/// True for the kinds that refuse a whole payload (malformed, too large, and the limits).
bool RefusesWholePayload(ErrorKind kind);

/// "malformed", "unknown service", "wrong type", "out of range", ...
std::string_view ErrorKindName(ErrorKind kind);

/// One validation failure. `path` names the offending value: `services[0].properties.voltage`
/// for reports, the property or para name for the API-side checks, "" for the whole payload.
struct ValidationError {
  ErrorKind kind = ErrorKind::kMalformed;
  std::string path;
  std::string message;  ///< e.g. "out of range: 4000 > max 3600"

  /// "path: message" (just the message when the path is empty).
  std::string ToString() const;
};

/// Result of the API-side checks (properties, command paras, event paras).
struct ValidationResult {
  std::vector<ValidationError> errors;

  bool ok() const { return errors.empty(); }
  /// OK, or INVALID_ARGUMENT naming the first error's path (common::InvalidField) with
  /// "(and N more errors)" appended when there are more.
  absl::Status ToStatus() const;
};

/// How a set of properties is meant.
enum class PropertyMode : std::uint8_t {
  kReport,  ///< from the device, partial (devices report what changed): any method, none required
  kFullState,  ///< a complete state: every required property must be present
  kWrite,      ///< to the device (desired shadow, property set): each property needs W; partial
};

struct ReportOptions {
  /// Report required properties absent from a reported service entry (off: devices report only
  /// what changed).
  bool check_required = false;
  /// Larger payloads are rejected whole (kTooLarge) without parsing.
  std::size_t max_bytes = 1024 * 1024;
  /// Errors beyond this are counted in ReportResult::dropped_errors only.
  std::size_t max_errors = 100;
  /// Limits on what one report may carry (docs/security.md). The depth is checked by a scan
  /// before parsing, the rest while walking; any of them exceeded refuses the whole report with
  /// a single error (kTooDeep, kTooMany, kOverlong) and nothing is kept.
  std::size_t max_depth = 64;
  std::size_t max_services = 100;            ///< service entries
  std::size_t max_properties = 500;          ///< properties of one service entry
  std::size_t max_name_bytes = 256;          ///< a service id or property name
  std::size_t max_string_bytes = 64 * 1024;  ///< a string value (also in a string list)
};

/// A property that passed validation. `value` is its JSON text exactly as reported, a view into
/// the report text; `name` and `spec` point into the CompiledModel. Both stay valid while the
/// report text and the model do.
struct ReportedProperty {
  std::string_view name;
  std::string_view value;
  const Parameter* spec = nullptr;
};

/// A reported service entry whose service_id is in the model; its valid properties are
/// ReportResult::PropertiesOf(entry). Entries of unknown services are errors, not listed here.
struct ReportedService {
  std::string_view service_id;  ///< into the CompiledModel
  std::string_view event_time;  ///< as reported, into the report text; empty if absent or invalid
  std::uint32_t index = 0;      ///< position in the report's services array
  std::uint32_t first_property = 0;
  std::uint32_t property_count = 0;
  const Service* spec = nullptr;
};

/// Outcome of ValidateReport: the valid part (to pass on) and one error per rejected value.
/// Reusing one ReportResult across calls reuses its memory: after warm-up a report with no
/// errors is validated without allocating.
struct ReportResult {
  std::vector<ReportedService> services;
  std::vector<ReportedProperty> properties;  ///< valid properties, grouped by service entry
  std::vector<ValidationError> errors;
  std::size_t dropped_errors = 0;  ///< errors beyond ReportOptions::max_errors

  bool ok() const { return errors.empty(); }
  std::size_t error_count() const { return errors.size() + dropped_errors; }
  std::span<const ReportedProperty> PropertiesOf(const ReportedService& service) const {
    return std::span<const ReportedProperty>(properties)
        .subspan(service.first_property, service.property_count);
  }
  void Clear();
};

/// Validates payloads against one model version. Cheap to copy; thread-safe (the report path
/// keeps a per-thread simdjson parser). Never throws and never crashes on any input.
class Validator {
 public:
  explicit Validator(std::shared_ptr<const CompiledModel> model);

  const CompiledModel& model() const { return *model_; }

  /// A device property report, `{"services":[{"service_id","properties":{},"event_time"}]}`.
  /// Valid properties are kept; each invalid one is an error at
  /// `services[i].properties.<name>`. Malformed JSON or a missing services array is a single
  /// error and nothing is kept. Unknown top-level and service-entry fields are ignored.
  ReportResult ValidateReport(std::string_view report_json,
                              const ReportOptions& options = {}) const;
  /// The same, filling `result` (cleared first) so that its memory is reused.
  void ValidateReport(std::string_view report_json, ReportResult& result,
                      const ReportOptions& options = {}) const;
  /// The result points into the report text: a temporary std::string would leave it dangling.
  template <std::same_as<std::string> String>
  ReportResult ValidateReport(String&& report_json,
                              const ReportOptions& options = {}) const = delete;
  template <std::same_as<std::string> String>
  void ValidateReport(String&& report_json, ReportResult& result,
                      const ReportOptions& options = {}) const = delete;

  /// Properties of one service (a JSON object name -> value) for the API side: shadow desired
  /// (kWrite), property set (kWrite), a full state (kFullState). Errors name the property.
  ValidationResult ValidateProperties(std::string_view service_id, const nlohmann::json& properties,
                                      PropertyMode mode) const;

  /// A command's paras (a JSON object; null means none). Unknown service or command is an error
  /// at `service_id` / `command_name`; para errors name the para; required paras must be there.
  ValidationResult ValidateCommand(std::string_view service_id, std::string_view command_name,
                                   const nlohmann::json& paras) const;

  /// An event's paras, as ValidateCommand (unknown event type: error at `event_type`).
  ValidationResult ValidateEvent(std::string_view service_id, std::string_view event_type,
                                 const nlohmann::json& paras) const;

 private:
  std::shared_ptr<const CompiledModel> model_;
};

/// True for IoTDA's yyyyMMdd'T'HHmmss'Z' (e.g. 20261126T174248Z) and ISO-8601 date-times with a
/// zone (2026-11-26T17:42:48Z, 2026-11-26T17:42:48.123+08:00); fields are range-checked.
bool IsValidDateTime(std::string_view text);

}  // namespace iot::thing_model
