#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

/// The product model (thing model) in Huawei IoTDA's product-model JSON: parsing, checking and
/// the compiled, immutable form that payload validation (validator.h) runs on.
namespace iot::thing_model {

/// The IoTDA data types. DataTypeName() gives IoTDA's exact spelling ("DateTime", "string list").
enum class DataType : std::uint8_t {
  kInt,         ///< "int": a JSON integer in int32 range
  kLong,        ///< "long": a JSON integer in int64 range
  kDecimal,     ///< "decimal": any JSON number
  kString,      ///< "string"
  kDateTime,    ///< "DateTime": a string, yyyyMMdd'T'HHmmss'Z' or ISO-8601 with a zone
  kJsonObject,  ///< "jsonObject": any JSON object
  kEnum,        ///< "enum": a string from enum_list
  kBoolean,     ///< "boolean": true or false
  kStringList,  ///< "string list": a JSON array of strings
};

/// IoTDA's spelling of `type`.
std::string_view DataTypeName(DataType type);
/// The data type IoTDA spells `name` (exact, case-sensitive), or nullopt.
std::optional<DataType> DataTypeFromName(std::string_view name);
/// "int, long, decimal, string, DateTime, jsonObject, enum, boolean, string list".
std::string_view AllowedDataTypeNames();

/// Bits of a property's `method`: R (readable), W (writable), E (subscribable / event on change).
inline constexpr std::uint8_t kMethodRead = 1;
inline constexpr std::uint8_t kMethodWrite = 2;
inline constexpr std::uint8_t kMethodExecute = 4;

/// Hash for string-keyed maps that are looked up with std::string_view without allocating.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view name) const noexcept {
    return std::hash<std::string_view>{}(name);
  }
};
/// Name -> position in the owning vector.
using NameIndex = std::unordered_map<std::string, std::uint32_t, NameHash, std::equal_to<>>;

/// A min, max or step as the model gave it: a JSON number or a numeric string ("0", "100").
struct NumericLimit {
  double value = 0;
  /// Set when the limit is an exact integer in int64 range; int/long values compare against it.
  std::optional<std::int64_t> integer;
  /// The limit as written ("10", "0.5"), for messages.
  std::string text;
};

/// A property, a command or response para, or an event para: IoTDA gives all of them the same
/// attributes. Attributes that do not apply to the data type (min on a string, max_length on an
/// int, ...) are ignored, as IoTDA ignores them, and reported as warnings when parsing.
struct Parameter {
  std::string name;  ///< property_name or para_name
  DataType type = DataType::kString;
  bool required = false;
  /// kMethod* bits from `method`; properties only (paras are kMethodRead | kMethodWrite).
  std::uint8_t method = kMethodRead;
  std::optional<NumericLimit> min;   ///< int, long and decimal only
  std::optional<NumericLimit> max;   ///< int, long and decimal only
  std::optional<NumericLimit> step;  ///< int, long and decimal only; kept, not enforced
  /// Maximum length in characters (UTF-8 code points) of a string, DateTime or each element of
  /// a string list.
  std::optional<std::int64_t> max_length;
  /// Allowed values of an enum or a string (empty: any string).
  std::vector<std::string> enum_list;
  NameIndex enum_index;
  std::string unit;
  std::string description;
  nlohmann::json default_value;  ///< null when absent
  std::uint32_t index = 0;       ///< position in its list
  /// A jsonObject that also takes a JSON array: an Alibaba TSL array of numbers or structs
  /// (`"alink_type": "array"` in a model derived from a TSL, alink_tsl.h).
  bool accepts_array = false;

  bool Writable() const { return (method & kMethodWrite) != 0; }
  bool InEnum(std::string_view value) const { return enum_index.find(value) != enum_index.end(); }
};

/// An ordered list of parameters with a name index; required ones listed for the presence check.
struct ParameterList {
  std::vector<Parameter> items;
  NameIndex index;
  std::vector<std::uint32_t> required;  ///< positions of the required items

  const Parameter* Find(std::string_view name) const {
    auto it = index.find(name);
    return it == index.end() ? nullptr : &items[it->second];
  }
  std::size_t size() const { return items.size(); }
};

/// One of a command's responses.
struct CommandResponse {
  std::string name;  ///< response_name (may be empty: IoTDA does not require it)
  ParameterList paras;
};

struct Command {
  std::string name;  ///< command_name
  /// Alink products: the TSL service's callType as the model keeps it (`"call_type"`): "sync"
  /// (the gateway calls it over RRPC) or "async"; empty for IoTDA models.
  std::string call_type;
  ParameterList paras;
  std::vector<CommandResponse> responses;
};

struct Event {
  std::string type;  ///< event_type
  ParameterList paras;
};

/// One entry of service_capabilities.
struct Service {
  std::string service_id;
  std::string service_type;
  std::string description;
  std::string option;  ///< Master, Mandatory or Optional (informational, as in IoTDA)
  ParameterList properties;
  std::vector<Command> commands;
  NameIndex command_index;
  std::vector<Event> events;
  NameIndex event_index;

  const Command* FindCommand(std::string_view name) const;
  const Event* FindEvent(std::string_view type) const;
};

/// The typed model that validation runs on: immutable, built once per model version and shared
/// (std::shared_ptr<const CompiledModel>) by every validator and thread that uses that version.
/// Lookups are hash lookups by name that do not allocate.
class CompiledModel {
 public:
  explicit CompiledModel(std::vector<Service> services);

  const std::vector<Service>& services() const { return services_; }
  const Service* FindService(std::string_view service_id) const;
  /// The largest property count of any service (sizes per-thread scratch space).
  std::size_t max_properties() const { return max_properties_; }

 private:
  std::vector<Service> services_;
  NameIndex service_index_;
  std::size_t max_properties_ = 0;
};

/// A product as imported: the product fields, the original document and the compiled model.
struct ProductModel {
  std::string product_id;
  std::string name;
  std::string device_type;
  std::string protocol_type;
  std::string data_format;
  std::string manufacturer_name;
  std::string industry;
  std::string description;
  /// The document exactly as imported, unknown fields included: what the API gives back.
  std::string source;
  std::shared_ptr<const CompiledModel> model;

  const std::vector<Service>& services() const { return model->services(); }
  const Service* FindService(std::string_view service_id) const {
    return model->FindService(service_id);
  }
};

/// A problem in a model document, at a JSON path such as
/// `service_capabilities[2].properties[0].max` ("" for the document itself).
struct ModelIssue {
  std::string path;
  std::string message;

  /// "path: message" (just the message when the path is empty).
  std::string ToString() const;
  friend bool operator==(const ModelIssue&, const ModelIssue&) = default;
};

/// Everything ParseProductModel found: errors (the model is rejected if there is any) and
/// warnings (attributes IoTDA ignores, and so do we).
struct ModelDiagnostics {
  std::vector<ModelIssue> errors;    ///< at most kMaxModelErrors, in document order
  std::vector<ModelIssue> warnings;  ///< at most kMaxModelErrors
  std::size_t dropped_errors = 0;    ///< errors beyond the cap, counted only
};

inline constexpr std::size_t kMaxModelBytes = 500 * 1024;
inline constexpr std::size_t kMaxServices = 500;
inline constexpr std::size_t kMaxPropertiesPerService = 500;
inline constexpr std::size_t kMaxModelErrors = 100;
/// Longest service_id, property, command, para and event name, in characters (IoTDA's limit).
inline constexpr std::size_t kMaxNameLength = 64;
/// Deepest nesting accepted in a model document (default values included).
inline constexpr std::size_t kMaxModelDepth = 64;

/// Parses, checks and compiles a Huawei IoTDA product-model document (the body of IoTDA's
/// CreateProduct / ShowProduct). On failure: INVALID_ARGUMENT naming the first error's path
/// (common::FieldOf gives it) with the message "path: reason (and N more errors)"; every error
/// and warning goes to `diagnostics` when given. Never throws.
absl::StatusOr<ProductModel> ParseProductModel(std::string_view json,
                                               ModelDiagnostics* diagnostics = nullptr);

}  // namespace iot::thing_model
