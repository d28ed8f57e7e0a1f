#include "iot/thing_model/alink_tsl.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "model/model_document.h"
#include "model/value_checks.h"

namespace iot::thing_model {
namespace {

using detail::IndexPath;
using detail::JoinPath;
using detail::Member;
using nlohmann::json;

constexpr std::string_view kTypes = "int, float, double, text, date, bool, enum, struct, array";
constexpr std::string_view kItemTypes = "int, float, double, text, struct";
constexpr std::string_view kDefaultService = "default";
// A product name's limit in the registry.
constexpr std::size_t kMaxProductNameLength = 128;

bool IsIdentifierChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

bool IsIdentifier(std::string_view text) {
  if (text.empty() || text.size() > kMaxNameLength) {
    return false;
  }
  for (const char c : text) {
    if (!IsIdentifierChar(c)) {
      return false;
    }
  }
  return true;
}

/// A spec value as text: Alibaba writes them as strings ("100"); numbers are accepted too.
std::optional<std::string> SpecText(const json& value) {
  if (value.is_string()) {
    return std::string(detail::TrimBlanks(value.get_ref<const std::string&>()));
  }
  if (value.is_number()) {
    return value.dump();
  }
  return std::nullopt;
}

std::optional<double> ToNumber(std::string_view text) {
  if (!text.empty() && text.front() == '+') {
    text.remove_prefix(1);
  }
  double number = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, number);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(number)) {
    return std::nullopt;
  }
  return number;
}

/// Where a TSL identifier lands in the Huawei form.
struct Target {
  std::string service;
  std::string name;
};

/// One service of the Huawei form being built.
struct ServiceBuild {
  json properties = json::array();
  json commands = json::array();
  json events = json::array();
};

// Checks one TSL, collecting every error (up to the cap) with its path, and builds the model.
class TslConverter : public detail::IssueCollector {
 public:
  using IssueCollector::IssueCollector;

  json Convert(const json& root, TslModel& out) {
    if (!root.is_object()) {
      Error("", "TSL must be a JSON object");
      return {};
    }
    ReadProfile(root, out);
    ServiceOf(std::string(kDefaultService));
    if (const json* list = ReadList(root, "properties", "")) {
      for (std::size_t i = 0; i < list->size(); ++i) {
        ConvertProperty((*list)[i], IndexPath("properties", i));
      }
    }
    if (const json* list = ReadList(root, "services", "")) {
      for (std::size_t i = 0; i < list->size(); ++i) {
        ConvertService((*list)[i], IndexPath("services", i));
      }
    }
    if (const json* list = ReadList(root, "events", "")) {
      for (std::size_t i = 0; i < list->size(); ++i) {
        ConvertEvent((*list)[i], IndexPath("events", i));
      }
    }
    json services = json::array();
    for (auto& [id, build] : services_) {
      services.push_back({{"service_id", id},
                          {"service_type", id},
                          {"properties", std::move(build.properties)},
                          {"commands", std::move(build.commands)},
                          {"events", std::move(build.events)}});
    }
    return {{"protocol_type", "MQTT"},
            {"data_format", "json"},
            {"service_capabilities", std::move(services)}};
  }

 private:
  void ReadProfile(const json& root, TslModel& out) {
    const json* profile = Member(root, "profile");
    if (profile == nullptr) {
      return;
    }
    if (!profile->is_object()) {
      Error("profile", "must be an object");
      return;
    }
    if (const json* key = Member(*profile, "productKey")) {
      if (!key->is_string()) {
        Error("profile.productKey", "must be a string");
      } else if (!key->get_ref<const std::string&>().empty()) {
        out.product_key = key->get<std::string>();
        if (!IsValidProductKey(out.product_key)) {
          Error("profile.productKey",
                fmt::format("{} is not 1..{} characters of A-Z, a-z, 0-9",
                            detail::Quoted(out.product_key), kMaxProductKeyLength));
        }
      }
    }
    if (const json* name = Member(*profile, "productName")) {
      if (name->is_string()) {
        out.product_name = name->get<std::string>();
        if (out.product_name.size() > kMaxProductNameLength) {
          Error("profile.productName",
                fmt::format("longer than {} characters", kMaxProductNameLength));
        }
      } else {
        Error("profile.productName", "must be a string");
      }
    }
  }

  const json* ReadList(const json& parent, std::string_view key, std::string_view path) {
    const json* value = Member(parent, key);
    if (value == nullptr) {
      return nullptr;
    }
    if (!value->is_array()) {
      Error(JoinPath(path, key), "must be an array");
      return nullptr;
    }
    return value;
  }

  ServiceBuild& ServiceOf(const std::string& service_id) {
    for (auto& [id, build] : services_) {
      if (id == service_id) {
        return build;
      }
    }
    return services_.emplace_back(service_id, ServiceBuild{}).second;
  }

  /// The identifier of a property, service or event: `{id}` or `{functionBlockId}:{id}`.
  std::optional<std::string> ReadIdentifier(const json& node, const std::string& path) {
    const std::string id_path = JoinPath(path, "identifier");
    const json* value = Member(node, "identifier");
    if (value == nullptr) {
      Error(id_path, "required");
      return std::nullopt;
    }
    if (!value->is_string()) {
      Error(id_path, "must be a string");
      return std::nullopt;
    }
    return value->get<std::string>();
  }

  /// Splits and checks a top-level identifier, and claims it: Alibaba's identifiers are unique
  /// across the properties, services and events of a function block.
  std::optional<Target> Claim(const std::string& identifier, const std::string& path) {
    const std::string id_path = JoinPath(path, "identifier");
    Target target{.service = std::string(kDefaultService), .name = identifier};
    const std::size_t colon = identifier.find(':');
    if (colon != std::string::npos) {
      target.service = identifier.substr(0, colon);
      target.name = identifier.substr(colon + 1);
    }
    if (!IsIdentifier(target.service) || !IsIdentifier(target.name)) {
      Error(id_path, fmt::format("bad identifier {}: 1..{} characters of A-Z, a-z, 0-9, '_' and "
                                 "'-', optionally after a function block id and ':'",
                                 detail::Quoted(identifier), kMaxNameLength));
      return std::nullopt;
    }
    auto [it, inserted] = claimed_.emplace(target.service + ":" + target.name, path);
    if (!inserted) {
      Error(id_path, fmt::format("duplicate identifier {} (also {})", detail::Quoted(identifier),
                                 it->second));
      return std::nullopt;
    }
    return target;
  }

  void ConvertProperty(const json& node, const std::string& path) {
    if (!node.is_object()) {
      Error(path, "must be an object");
      return;
    }
    auto identifier = ReadIdentifier(node, path);
    std::optional<Target> target;
    if (identifier) {
      target = Claim(*identifier, path);
    }
    json property = json::object();
    if (target) {
      property["property_name"] = target->name;
    }
    ReadDescription(node, path, property);
    const json* access = Member(node, "accessMode");
    const std::string access_path = JoinPath(path, "accessMode");
    if (access == nullptr) {
      Error(access_path, "required (\"r\" or \"rw\")");
    } else if (!access->is_string() || (*access != "r" && *access != "rw")) {
      Error(access_path, fmt::format("must be \"r\" or \"rw\" (got {})", access->dump()));
    } else {
      property["method"] = *access == "r" ? "R" : "RW";
    }
    std::optional<json> type = ConvertTyped(node, path);
    if (!target || !type) {
      return;
    }
    property.update(*type);
    ServiceOf(target->service).properties.push_back(std::move(property));
  }

  void ConvertService(const json& node, const std::string& path) {
    if (!node.is_object()) {
      Error(path, "must be an object");
      return;
    }
    auto identifier = ReadIdentifier(node, path);
    // The implicit property set / get of every export: property set and get are built in.
    if (identifier && (*identifier == "set" || *identifier == "get")) {
      return;
    }
    std::optional<Target> target;
    if (identifier) {
      target = Claim(*identifier, path);
    }
    json command = json::object();
    if (target) {
      command["command_name"] = target->name;
    }
    ReadDescription(node, path, command);
    command["call_type"] = "async";
    if (const json* call = Member(node, "callType")) {
      if (!call->is_string() || (*call != "sync" && *call != "async")) {
        Error(JoinPath(path, "callType"),
              fmt::format("must be \"sync\" or \"async\" (got {})", call->dump()));
      } else {
        command["call_type"] = *call;
      }
    }
    command["paras"] = ConvertParams(node, "inputData", path);
    json output = ConvertParams(node, "outputData", path);
    command["responses"] = json::array();
    if (!output.empty()) {
      command["responses"].push_back({{"paras", std::move(output)}});
    }
    if (target) {
      ServiceOf(target->service).commands.push_back(std::move(command));
    }
  }

  void ConvertEvent(const json& node, const std::string& path) {
    if (!node.is_object()) {
      Error(path, "must be an object");
      return;
    }
    auto identifier = ReadIdentifier(node, path);
    // The implicit property-post event: property reports are built in.
    if (identifier && *identifier == "post") {
      return;
    }
    std::optional<Target> target;
    if (identifier) {
      target = Claim(*identifier, path);
    }
    json event = json::object();
    if (target) {
      event["event_type"] = target->name;
    }
    ReadDescription(node, path, event);
    event["event_level"] = "info";
    if (const json* type = Member(node, "type")) {
      if (!type->is_string() || (*type != "info" && *type != "alert" && *type != "error")) {
        Error(JoinPath(path, "type"),
              fmt::format("must be \"info\", \"alert\" or \"error\" (got {})", type->dump()));
      } else {
        event["event_level"] = *type;
      }
    }
    event["paras"] = ConvertParams(node, "outputData", path);
    if (target) {
      ServiceOf(target->service).events.push_back(std::move(event));
    }
  }

  /// inputData / outputData: parameters with plain identifiers, unique within the list.
  json ConvertParams(const json& parent, std::string_view key, const std::string& parent_path) {
    json paras = json::array();
    const json* list = ReadList(parent, key, parent_path);
    if (list == nullptr) {
      return paras;
    }
    const std::string list_path = JoinPath(parent_path, key);
    std::map<std::string, std::string, std::less<>> seen;
    for (std::size_t k = 0; k < list->size(); ++k) {
      const std::string path = IndexPath(list_path, k);
      std::optional<json> para = ConvertMember((*list)[k], path, seen);
      if (para) {
        json out = {{"para_name", (*para)["identifier"]}};
        para->erase("identifier");
        out.update(*para);
        paras.push_back(std::move(out));
      }
    }
    return paras;
  }

  /// A parameter or struct member: {identifier, name, dataType}. Returns its Huawei fields
  /// with `identifier`, or nullopt when it has an error.
  std::optional<json> ConvertMember(const json& node, const std::string& path,
                                    std::map<std::string, std::string, std::less<>>& seen) {
    if (!node.is_object()) {
      Error(path, "must be an object");
      return std::nullopt;
    }
    auto identifier = ReadIdentifier(node, path);
    bool ok = identifier.has_value();
    if (identifier && !IsIdentifier(*identifier)) {
      Error(JoinPath(path, "identifier"),
            fmt::format("bad identifier {}: 1..{} characters of A-Z, a-z, 0-9, '_' and '-'",
                        detail::Quoted(*identifier), kMaxNameLength));
      ok = false;
    } else if (identifier) {
      auto [it, inserted] = seen.emplace(*identifier, path);
      if (!inserted) {
        Error(JoinPath(path, "identifier"), fmt::format("duplicate identifier {} (also {})",
                                                        detail::Quoted(*identifier), it->second));
        ok = false;
      }
    }
    json member = json::object();
    ReadDescription(node, path, member);
    std::optional<json> type = ConvertTyped(node, path);
    if (!ok || !type) {
      return std::nullopt;
    }
    member["identifier"] = *identifier;
    member.update(*type);
    return member;
  }

  /// Alibaba's display `name` becomes the description.
  void ReadDescription(const json& node, const std::string& path, json& out) {
    if (const json* name = Member(node, "name")) {
      if (name->is_string()) {
        out["description"] = *name;
      } else {
        Error(JoinPath(path, "name"), "must be a string");
      }
    }
  }

  std::optional<json> ConvertTyped(const json& node, const std::string& path) {
    const std::string type_path = JoinPath(path, "dataType");
    const json* data_type = Member(node, "dataType");
    if (data_type == nullptr) {
      Error(type_path, "required");
      return std::nullopt;
    }
    return ConvertType(*data_type, type_path, /*item=*/false);
  }

  /// A dataType object ({"type", "specs"}) → data_type and its attributes in the Huawei form.
  std::optional<json> ConvertType(const json& data_type, const std::string& path, bool item) {
    if (!data_type.is_object()) {
      Error(path, "must be an object");
      return std::nullopt;
    }
    const std::string type_path = JoinPath(path, "type");
    const json* type_value = Member(data_type, "type");
    const std::string_view allowed = item ? kItemTypes : kTypes;
    if (type_value == nullptr) {
      Error(type_path, fmt::format("required (one of {})", allowed));
      return std::nullopt;
    }
    if (!type_value->is_string()) {
      Error(type_path, fmt::format("must be a string (one of {})", allowed));
      return std::nullopt;
    }
    const std::string type = type_value->get<std::string>();
    const json* specs = Member(data_type, "specs");
    const std::string specs_path = JoinPath(path, "specs");
    json out = {{"alink_type", type}};
    const auto specs_object = [&]() -> const json* {
      if (specs != nullptr && !specs->is_object()) {
        Error(specs_path, fmt::format("must be an object for type {}", type));
        return nullptr;
      }
      return specs;
    };
    if (type == "int" || type == "float" || type == "double") {
      out["data_type"] = type == "int" ? "int" : "decimal";
      if (const json* s = specs_object()) {
        ConvertNumericSpecs(*s, specs_path, type == "int", out);
      }
    } else if (type == "text") {
      out["data_type"] = "string";
      if (const json* s = specs_object()) {
        if (const json* length = Member(*s, "length")) {
          if (auto value = ReadCount(*length, JoinPath(specs_path, "length"), 0)) {
            out["max_length"] = *value;
          }
        }
      }
    } else if (type == "date" && !item) {
      out["data_type"] = "string";
    } else if (type == "bool" && !item) {
      out["data_type"] = "boolean";
      if (const json* s = specs_object()) {
        for (const auto& [key, label] : s->items()) {
          if (key != "0" && key != "1") {
            Error(JoinPath(specs_path, key),
                  fmt::format("bool values are 0 and 1 (got {})", detail::Quoted(key)));
          }
        }
      }
    } else if (type == "enum" && !item) {
      out["data_type"] = "int";
      ConvertEnum(specs, specs_path, out);
    } else if (type == "struct") {
      out["data_type"] = "jsonObject";
      ConvertStruct(specs, specs_path);
    } else if (type == "array" && !item) {
      ConvertArray(specs, specs_path, out);
    } else {
      Error(type_path, fmt::format("unknown type {} (allowed: {})", detail::Quoted(type), allowed));
      return std::nullopt;
    }
    return out;
  }

  void ConvertNumericSpecs(const json& specs, const std::string& path, bool integer, json& out) {
    std::optional<double> limits[3];
    constexpr std::string_view kKeys[] = {"min", "max", "step"};
    for (std::size_t k = 0; k < 3; ++k) {
      const json* value = Member(specs, kKeys[k]);
      if (value == nullptr) {
        continue;
      }
      const std::string key_path = JoinPath(path, kKeys[k]);
      const std::optional<std::string> text = SpecText(*value);
      if (!text) {
        Error(key_path, "must be a number or a numeric string");
        continue;
      }
      if (text->empty()) {
        continue;
      }
      limits[k] = ToNumber(*text);
      if (!limits[k]) {
        Error(key_path, fmt::format("not numeric: {}", detail::Quoted(*text)));
        continue;
      }
      if (integer && k < 2 && std::trunc(*limits[k]) != *limits[k]) {
        Error(key_path, fmt::format("must be an integer for type int (got {})", *text));
        limits[k].reset();
        continue;
      }
      out[std::string(kKeys[k])] = *text;
    }
    if (limits[0] && limits[1] && *limits[0] > *limits[1]) {
      Error(JoinPath(path, "max"), fmt::format("min ({}) > max ({})", out["min"].get<std::string>(),
                                               out["max"].get<std::string>()));
    }
    if (limits[2] && *limits[2] <= 0) {
      Error(JoinPath(path, "step"),
            fmt::format("must be > 0 (got {})", out["step"].get<std::string>()));
    }
    if (const json* unit = Member(specs, "unit")) {
      if (!unit->is_string()) {
        Error(JoinPath(path, "unit"), "must be a string");
      } else if (!unit->get_ref<const std::string&>().empty()) {
        out["unit"] = *unit;
      }
    }
  }

  /// A non-negative integer (a string or a number) of at least `min`.
  std::optional<std::int64_t> ReadCount(const json& value, const std::string& path,
                                        std::int64_t min) {
    const std::optional<std::string> text = SpecText(value);
    std::int64_t count = 0;
    if (text) {
      const char* end = text->data() + text->size();
      auto [ptr, ec] = std::from_chars(text->data(), end, count);
      if (!text->empty() && ec == std::errc() && ptr == end && count >= min) {
        return count;
      }
    }
    Error(path, fmt::format("must be an integer >= {} (got {})", min, value.dump()));
    return std::nullopt;
  }

  void ConvertEnum(const json* specs, const std::string& path, json& out) {
    if (specs == nullptr || !specs->is_object() || specs->empty()) {
      Error(path, "type enum needs an object of at least one value: {\"0\": \"name\", ...}");
      return;
    }
    json keys = json::array();
    std::optional<std::int64_t> low;
    std::optional<std::int64_t> high;
    for (const auto& [key, label] : specs->items()) {
      std::int32_t value = 0;
      const char* end = key.data() + key.size();
      auto [ptr, ec] = std::from_chars(key.data(), end, value);
      if (key.empty() || ec != std::errc() || ptr != end) {
        Error(JoinPath(path, key),
              fmt::format("enum values are integers (got {})", detail::Quoted(key)));
        continue;
      }
      if (!label.is_string()) {
        Error(JoinPath(path, key), "must be a string (the value's name)");
      }
      keys.push_back(key);
      low = std::min<std::int64_t>(low.value_or(value), value);
      high = std::max<std::int64_t>(high.value_or(value), value);
    }
    if (low && high) {
      out["enum_list"] = std::move(keys);
      out["min"] = std::to_string(*low);
      out["max"] = std::to_string(*high);
    }
  }

  void ConvertStruct(const json* specs, const std::string& path) {
    if (specs == nullptr) {
      return;
    }
    if (!specs->is_array()) {
      Error(path, "must be an array of members for type struct");
      return;
    }
    std::map<std::string, std::string, std::less<>> seen;
    for (std::size_t k = 0; k < specs->size(); ++k) {
      ConvertMember((*specs)[k], IndexPath(path, k), seen);
    }
  }

  void ConvertArray(const json* specs, const std::string& path, json& out) {
    out["data_type"] = "jsonObject";
    if (specs == nullptr || !specs->is_object()) {
      Error(path, "type array needs {\"size\": \"N\", \"item\": {\"type\": ...}}");
      return;
    }
    if (const json* size = Member(*specs, "size")) {
      ReadCount(*size, JoinPath(path, "size"), 1);
    } else {
      Error(JoinPath(path, "size"), "required");
    }
    const std::string item_path = JoinPath(path, "item");
    const json* item = Member(*specs, "item");
    if (item == nullptr) {
      Error(item_path, "required");
      return;
    }
    std::optional<json> converted = ConvertType(*item, item_path, /*item=*/true);
    if (converted && (*converted)["alink_type"] == "text") {
      out["data_type"] = "string list";
      if (converted->contains("max_length")) {
        out["max_length"] = (*converted)["max_length"];
      }
    }
  }

  std::vector<std::pair<std::string, ServiceBuild>> services_;
  /// "{service}:{name}" → the path that claimed it.
  std::map<std::string, std::string, std::less<>> claimed_;
};

}  // namespace

bool IsValidProductKey(std::string_view product_key) {
  if (product_key.empty() || product_key.size() > kMaxProductKeyLength) {
    return false;
  }
  for (const char c : product_key) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<TslModel> ConvertTsl(std::string_view tsl_json, ModelDiagnostics* diagnostics) {
  ModelDiagnostics local;
  ModelDiagnostics& diag = diagnostics != nullptr ? *diagnostics : local;
  diag = {};
  TslConverter converter(diag);
  TslModel tsl;
  try {
    if (auto root = detail::ReadDocument(tsl_json, "TSL", converter)) {
      tsl.model = converter.Convert(*root, tsl);
    }
  } catch (const std::exception& error) {
    converter.Error("", fmt::format("cannot read TSL: {}", error.what()));
  }
  if (converter.failed()) {
    return detail::Rejected(diag);
  }
  return tsl;
}

}  // namespace iot::thing_model
