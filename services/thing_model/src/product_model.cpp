#include "iot/thing_model/product_model.h"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cmath>
#include <exception>
#include <limits>
#include <utility>

#include "model/model_document.h"
#include "model/value_checks.h"

namespace iot::thing_model {
namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 9> kDataTypeNames = {
    "int", "long", "decimal", "string", "DateTime", "jsonObject", "enum", "boolean", "string list"};
constexpr std::string_view kAllowedDataTypes =
    "int, long, decimal, string, DateTime, jsonObject, enum, boolean, string list";

// IoTDA caps commands and events per service like properties.
constexpr std::size_t kMaxCommandsPerService = 500;
constexpr std::size_t kMaxEventsPerService = 500;

std::string Join(std::string_view path, std::string_view key) {
  return detail::JoinPath(path, key);
}

std::string At(std::string_view path, std::size_t index) { return detail::IndexPath(path, index); }

const json* Get(const json& object, std::string_view key) { return detail::Member(object, key); }

std::string_view Trim(std::string_view text) { return detail::TrimBlanks(text); }

// Checks one document, collecting every error (up to the cap) with its path.
class ModelParser : public detail::IssueCollector {
 public:
  using IssueCollector::IssueCollector;

  // A product field: absent, null or a string.
  void ReadString(const json& object, std::string_view key, std::string_view path,
                  std::string& out) {
    const json* value = Get(object, key);
    if (value == nullptr) {
      return;
    }
    if (!value->is_string()) {
      Error(Join(path, key), "must be a string");
      return;
    }
    out = value->get<std::string>();
  }

  // A name that identifies something: required, a non-empty string of at most 64 characters.
  void ReadName(const json& object, std::string_view key, std::string_view path, std::string& out) {
    const json* value = Get(object, key);
    if (value == nullptr) {
      Error(Join(path, key), "required");
      return;
    }
    if (!value->is_string()) {
      Error(Join(path, key), "must be a string");
      return;
    }
    out = value->get<std::string>();
    if (out.empty()) {
      Error(Join(path, key), "must not be empty");
    } else if (detail::Utf8Length(out) > kMaxNameLength) {
      Error(Join(path, key), fmt::format("longer than {} characters", kMaxNameLength));
    }
  }

  // An array member: absent or null (empty) or an array of at most `max` elements.
  const json* ReadArray(const json& object, std::string_view key, std::string_view path,
                        std::size_t max, std::string_view what) {
    const json* value = Get(object, key);
    if (value == nullptr) {
      return nullptr;
    }
    if (!value->is_array()) {
      Error(Join(path, key), "must be an array");
      return nullptr;
    }
    if (value->size() > max) {
      Error(Join(path, key), fmt::format("too many {} ({} > {})", what, value->size(), max));
    }
    return value;
  }

  std::vector<Service> ParseDocument(const json& root, ProductModel& product) {
    std::vector<Service> services;
    if (!root.is_object()) {
      Error("", "product model must be a JSON object");
      return services;
    }
    ReadString(root, "product_id", "", product.product_id);
    ReadString(root, "name", "", product.name);
    ReadString(root, "device_type", "", product.device_type);
    ReadString(root, "protocol_type", "", product.protocol_type);
    ReadString(root, "data_format", "", product.data_format);
    ReadString(root, "manufacturer_name", "", product.manufacturer_name);
    ReadString(root, "industry", "", product.industry);
    ReadString(root, "description", "", product.description);

    if (Get(root, "service_capabilities") == nullptr) {
      Error("service_capabilities", "required");
      return services;
    }
    const json* list = ReadArray(root, "service_capabilities", "", kMaxServices, "services");
    if (list == nullptr) {
      return services;
    }
    NameIndex seen;
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string path = At("service_capabilities", i);
      Service service = ParseService((*list)[i], path);
      if (service.service_id.empty()) {
        continue;
      }
      auto [it, inserted] = seen.emplace(service.service_id, static_cast<std::uint32_t>(i));
      if (!inserted) {
        Error(Join(path, "service_id"),
              fmt::format("duplicate service_id {} (also service_capabilities[{}])",
                          detail::Quoted(service.service_id), it->second));
        continue;
      }
      services.push_back(std::move(service));
    }
    return services;
  }

 private:
  Service ParseService(const json& node, const std::string& path) {
    Service service;
    if (!node.is_object()) {
      Error(path, "must be an object");
      return service;
    }
    ReadName(node, "service_id", path, service.service_id);
    ReadString(node, "service_type", path, service.service_type);
    ReadString(node, "description", path, service.description);
    ReadString(node, "option", path, service.option);
    if (!service.option.empty() && service.option != "Master" && service.option != "Mandatory" &&
        service.option != "Optional") {
      Warn(Join(path, "option"),
           fmt::format("unknown option {} (IoTDA: Master, Mandatory, Optional)",
                       detail::Quoted(service.option)));
    }
    service.properties = ParseList(node, "properties", path, /*properties=*/true,
                                   kMaxPropertiesPerService, "property_name");

    if (const json* commands =
            ReadArray(node, "commands", path, kMaxCommandsPerService, "commands")) {
      for (std::size_t k = 0; k < commands->size(); ++k) {
        const std::string command_path = At(Join(path, "commands"), k);
        const json& item = (*commands)[k];
        if (!item.is_object()) {
          Error(command_path, "must be an object");
          continue;
        }
        Command command;
        ReadName(item, "command_name", command_path, command.name);
        ReadString(item, "call_type", command_path, command.call_type);
        command.paras = ParseList(item, "paras", command_path, false,
                                  std::numeric_limits<std::size_t>::max(), "para_name");
        if (const json* responses =
                ReadArray(item, "responses", command_path, std::numeric_limits<std::size_t>::max(),
                          "responses")) {
          for (std::size_t r = 0; r < responses->size(); ++r) {
            const std::string response_path = At(Join(command_path, "responses"), r);
            const json& response_node = (*responses)[r];
            if (!response_node.is_object()) {
              Error(response_path, "must be an object");
              continue;
            }
            CommandResponse response;
            ReadString(response_node, "response_name", response_path, response.name);
            response.paras = ParseList(response_node, "paras", response_path, false,
                                       std::numeric_limits<std::size_t>::max(), "para_name");
            command.responses.push_back(std::move(response));
          }
        }
        if (command.name.empty()) {
          continue;
        }
        auto [it, inserted] = service.command_index.emplace(
            command.name, static_cast<std::uint32_t>(service.commands.size()));
        if (!inserted) {
          Error(Join(command_path, "command_name"),
                fmt::format("duplicate command_name {}", detail::Quoted(command.name)));
          continue;
        }
        service.commands.push_back(std::move(command));
      }
    }

    if (const json* events = ReadArray(node, "events", path, kMaxEventsPerService, "events")) {
      for (std::size_t k = 0; k < events->size(); ++k) {
        const std::string event_path = At(Join(path, "events"), k);
        const json& item = (*events)[k];
        if (!item.is_object()) {
          Error(event_path, "must be an object");
          continue;
        }
        Event event;
        ReadName(item, "event_type", event_path, event.type);
        event.paras = ParseList(item, "paras", event_path, false,
                                std::numeric_limits<std::size_t>::max(), "para_name");
        if (event.type.empty()) {
          continue;
        }
        auto [it, inserted] = service.event_index.emplace(
            event.type, static_cast<std::uint32_t>(service.events.size()));
        if (!inserted) {
          Error(Join(event_path, "event_type"),
                fmt::format("duplicate event_type {}", detail::Quoted(event.type)));
          continue;
        }
        service.events.push_back(std::move(event));
      }
    }
    return service;
  }

  ParameterList ParseList(const json& parent, std::string_view key, std::string_view parent_path,
                          bool properties, std::size_t max, std::string_view name_key) {
    ParameterList list;
    const json* items =
        ReadArray(parent, key, parent_path, max, properties ? "properties" : "paras");
    if (items == nullptr) {
      return list;
    }
    const std::string list_path = Join(parent_path, key);
    for (std::size_t k = 0; k < items->size(); ++k) {
      const std::string path = At(list_path, k);
      std::optional<Parameter> param = ParseParameter((*items)[k], path, properties, name_key);
      if (!param || param->name.empty()) {
        continue;
      }
      param->index = static_cast<std::uint32_t>(list.items.size());
      auto [it, inserted] = list.index.emplace(param->name, param->index);
      if (!inserted) {
        Error(Join(path, name_key),
              fmt::format("duplicate {} {} (also {}[{}])", name_key, detail::Quoted(param->name),
                          list_path, PositionOf(*items, name_key, param->name)));
        continue;
      }
      if (param->required) {
        list.required.push_back(param->index);
      }
      list.items.push_back(std::move(*param));
    }
    return list;
  }

  static std::size_t PositionOf(const json& items, std::string_view name_key,
                                const std::string& name) {
    for (std::size_t k = 0; k < items.size(); ++k) {
      const json* value = items[k].is_object() ? Get(items[k], name_key) : nullptr;
      if (value != nullptr && value->is_string() && value->get_ref<const std::string&>() == name) {
        return k;
      }
    }
    return 0;
  }

  // A min, max or step: a JSON number or a numeric string; "" counts as absent.
  std::optional<NumericLimit> ParseLimit(const json& value, const std::string& path) {
    NumericLimit limit;
    if (value.is_number_integer()) {
      if (value.is_number_unsigned() &&
          value.get<std::uint64_t>() >
              static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        limit.value = value.get<double>();
      } else {
        limit.integer = value.get<std::int64_t>();
        limit.value = static_cast<double>(*limit.integer);
      }
      limit.text = value.dump();
      return limit;
    }
    if (value.is_number_float()) {
      limit.value = value.get<double>();
      limit.text = value.dump();
    } else if (value.is_string()) {
      const std::string_view text = Trim(value.get_ref<const std::string&>());
      if (text.empty()) {
        return std::nullopt;
      }
      std::string_view digits = text;
      if (digits.front() == '+') {
        digits.remove_prefix(1);
      }
      const char* end = digits.data() + digits.size();
      std::int64_t integer = 0;
      if (auto [ptr, ec] = std::from_chars(digits.data(), end, integer);
          ec == std::errc() && ptr == end) {
        limit.integer = integer;
        limit.value = static_cast<double>(integer);
        limit.text = std::string(text);
        return limit;
      }
      double number = 0;
      auto [ptr, ec] = std::from_chars(digits.data(), end, number);
      if (ec != std::errc() || ptr != end || !std::isfinite(number)) {
        Error(path, fmt::format("not numeric: {}", detail::Quoted(text)));
        return std::nullopt;
      }
      limit.value = number;
      limit.text = std::string(text);
    } else {
      Error(path, "must be a number or a numeric string");
      return std::nullopt;
    }
    if (!std::isfinite(limit.value)) {
      Error(path, "must be finite");
      return std::nullopt;
    }
    // An integral double ("100.0") still compares exactly against int and long values.
    if (std::trunc(limit.value) == limit.value && limit.value >= -9223372036854775808.0 &&
        limit.value < 9223372036854775808.0) {
      limit.integer = static_cast<std::int64_t>(limit.value);
    }
    return limit;
  }

  // max_length: a non-negative integer, as a JSON number or a numeric string.
  std::optional<std::int64_t> ParseLength(const json& value, const std::string& path) {
    std::int64_t length = 0;
    bool ok = false;
    if (value.is_number_unsigned()) {
      const auto u = value.get<std::uint64_t>();
      length = u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                   ? std::numeric_limits<std::int64_t>::max()
                   : static_cast<std::int64_t>(u);
      ok = true;
    } else if (value.is_number_integer()) {
      length = value.get<std::int64_t>();
      ok = true;
    } else if (value.is_number_float()) {
      const double d = value.get<double>();
      ok = std::isfinite(d) && std::trunc(d) == d && std::abs(d) < 9.0e18;
      length = ok ? static_cast<std::int64_t>(d) : 0;
    } else if (value.is_string()) {
      const std::string_view text = Trim(value.get_ref<const std::string&>());
      const char* end = text.data() + text.size();
      auto [ptr, ec] = std::from_chars(text.data(), end, length);
      ok = !text.empty() && ec == std::errc() && ptr == end;
    }
    if (!ok) {
      Error(path, "must be a non-negative integer");
      return std::nullopt;
    }
    if (length < 0) {
      Error(path, fmt::format("must not be negative (got {})", length));
      return std::nullopt;
    }
    return length;
  }

  void ParseMethod(const json& node, const std::string& path, Parameter& param) {
    const json* value = Get(node, "method");
    if (value == nullptr) {
      param.method = kMethodRead;
      return;
    }
    const std::string method_path = Join(path, "method");
    if (!value->is_string()) {
      Error(method_path, "must be a string of the letters R, W, E");
      return;
    }
    const auto& text = value->get_ref<const std::string&>();
    std::uint8_t bits = 0;
    bool ok = !text.empty();
    for (const char c : text) {
      std::uint8_t bit = 0;
      if (c == 'R') {
        bit = kMethodRead;
      } else if (c == 'W') {
        bit = kMethodWrite;
      } else if (c == 'E') {
        bit = kMethodExecute;
      }
      if (bit == 0 || (bits & bit) != 0) {
        ok = false;
        break;
      }
      bits = static_cast<std::uint8_t>(bits | bit);
    }
    if (!ok) {
      Error(method_path, fmt::format("bad method {}: letters from R, W, E, each at most once "
                                     "(e.g. R, RW, RWE)",
                                     detail::Quoted(text)));
      return;
    }
    param.method = bits;
  }

  std::optional<Parameter> ParseParameter(const json& node, const std::string& path, bool property,
                                          std::string_view name_key) {
    if (!node.is_object()) {
      Error(path, "must be an object");
      return std::nullopt;
    }
    Parameter param;
    param.method = property ? kMethodRead : static_cast<std::uint8_t>(kMethodRead | kMethodWrite);
    ReadName(node, name_key, path, param.name);

    bool type_known = false;
    const json* type = Get(node, "data_type");
    const std::string type_path = Join(path, "data_type");
    if (type == nullptr) {
      Error(type_path, fmt::format("required (one of {})", kAllowedDataTypes));
    } else if (!type->is_string()) {
      Error(type_path, fmt::format("must be a string (one of {})", kAllowedDataTypes));
    } else if (auto parsed = DataTypeFromName(type->get_ref<const std::string&>())) {
      param.type = *parsed;
      type_known = true;
    } else {
      Error(type_path,
            fmt::format("unknown data_type {} (allowed: {})",
                        detail::Quoted(type->get_ref<const std::string&>()), kAllowedDataTypes));
    }

    if (const json* required = Get(node, "required")) {
      if (required->is_boolean()) {
        param.required = required->get<bool>();
      } else {
        Error(Join(path, "required"), "must be a boolean");
      }
    }
    ReadString(node, "unit", path, param.unit);
    ReadString(node, "description", path, param.description);
    if (property) {
      ParseMethod(node, path, param);
    }
    if (!type_known) {
      return param;
    }
    const std::string_view type_name = DataTypeName(param.type);
    if (param.type == DataType::kJsonObject) {
      const json* alink_type = Get(node, "alink_type");
      param.accepts_array = alink_type != nullptr && *alink_type == "array";
    }

    // min / max / step: numeric types only; elsewhere ignored, as IoTDA does.
    std::optional<NumericLimit>* limits[] = {&param.min, &param.max, &param.step};
    constexpr std::string_view kLimitKeys[] = {"min", "max", "step"};
    for (std::size_t k = 0; k < 3; ++k) {
      const json* value = Get(node, kLimitKeys[k]);
      if (value == nullptr) {
        continue;
      }
      const std::string limit_path = Join(path, kLimitKeys[k]);
      if (!detail::IsNumeric(param.type)) {
        Warn(limit_path, fmt::format("ignored for data_type {}", type_name));
        continue;
      }
      *limits[k] = ParseLimit(*value, limit_path);
    }
    if (param.min && param.max) {
      const bool inverted = param.min->integer && param.max->integer
                                ? *param.min->integer > *param.max->integer
                                : param.min->value > param.max->value;
      if (inverted) {
        Error(Join(path, "max"),
              fmt::format("min ({}) > max ({})", param.min->text, param.max->text));
      }
    }
    if (param.step && param.step->value <= 0) {
      Error(Join(path, "step"), fmt::format("must be > 0 (got {})", param.step->text));
    }

    if (const json* value = Get(node, "max_length")) {
      const std::string length_path = Join(path, "max_length");
      auto length = ParseLength(*value, length_path);
      if (param.type == DataType::kString || param.type == DataType::kDateTime ||
          param.type == DataType::kStringList) {
        param.max_length = length;
      } else if (length) {
        Warn(length_path, fmt::format("ignored for data_type {}", type_name));
      }
    }

    ParseEnumList(node, path, param);

    if (const json* value = Get(node, "default_value")) {
      param.default_value = *value;
      if (auto issue = detail::CheckJsonValue(param, *value)) {
        Warn(Join(path, "default_value") + issue->sub_path, issue->message);
      }
    }
    return param;
  }

  void ParseEnumList(const json& node, const std::string& path, Parameter& param) {
    const std::string enum_path = Join(path, "enum_list");
    const bool applies = param.type == DataType::kEnum || param.type == DataType::kString ||
                         param.type == DataType::kStringList;
    const json* value = Get(node, "enum_list");
    if (value != nullptr && !applies) {
      if (!value->is_array() || !value->empty()) {
        Warn(enum_path, fmt::format("ignored for data_type {}", DataTypeName(param.type)));
      }
      return;
    }
    if (value != nullptr && !value->is_array()) {
      Error(enum_path, "must be an array of strings");
      return;
    }
    if (value != nullptr) {
      for (std::size_t k = 0; k < value->size(); ++k) {
        const json& item = (*value)[k];
        if (!item.is_string()) {
          Error(At(enum_path, k), "must be a string");
          continue;
        }
        const auto& text = item.get_ref<const std::string&>();
        if (!param.enum_index.emplace(text, static_cast<std::uint32_t>(param.enum_list.size()))
                 .second) {
          Warn(At(enum_path, k), fmt::format("duplicate value {}", detail::Quoted(text)));
          continue;
        }
        param.enum_list.push_back(text);
      }
    }
    if (param.type == DataType::kEnum && param.enum_list.empty() &&
        (value == nullptr || value->empty())) {
      Error(enum_path, "data_type enum needs a non-empty enum_list");
    } else if (param.type != DataType::kEnum && value != nullptr && value->empty()) {
      // IoTDA exports carry "enum_list": [] or null on plain strings: no constraint.
      Warn(enum_path, "empty: any string is accepted");
    }
  }
};

}  // namespace

std::string_view DataTypeName(DataType type) {
  return kDataTypeNames[static_cast<std::size_t>(type)];
}

std::optional<DataType> DataTypeFromName(std::string_view name) {
  for (std::size_t k = 0; k < kDataTypeNames.size(); ++k) {
    if (kDataTypeNames[k] == name) {
      return static_cast<DataType>(k);
    }
  }
  return std::nullopt;
}

std::string_view AllowedDataTypeNames() { return kAllowedDataTypes; }

std::string ModelIssue::ToString() const {
  return path.empty() ? message : fmt::format("{}: {}", path, message);
}

const Command* Service::FindCommand(std::string_view name) const {
  auto it = command_index.find(name);
  return it == command_index.end() ? nullptr : &commands[it->second];
}

const Event* Service::FindEvent(std::string_view type) const {
  auto it = event_index.find(type);
  return it == event_index.end() ? nullptr : &events[it->second];
}

CompiledModel::CompiledModel(std::vector<Service> services) : services_(std::move(services)) {
  service_index_.reserve(services_.size());
  for (std::size_t i = 0; i < services_.size(); ++i) {
    service_index_.emplace(services_[i].service_id, static_cast<std::uint32_t>(i));
    max_properties_ = std::max(max_properties_, services_[i].properties.size());
  }
}

const Service* CompiledModel::FindService(std::string_view service_id) const {
  auto it = service_index_.find(service_id);
  return it == service_index_.end() ? nullptr : &services_[it->second];
}

absl::StatusOr<ProductModel> ParseProductModel(std::string_view json_text,
                                               ModelDiagnostics* diagnostics) {
  ModelDiagnostics local;
  ModelDiagnostics& diag = diagnostics != nullptr ? *diagnostics : local;
  diag = {};
  ModelParser parser(diag);
  ProductModel product;
  std::vector<Service> services;
  try {
    if (auto root = detail::ReadDocument(json_text, "product model", parser)) {
      services = parser.ParseDocument(*root, product);
    }
  } catch (const std::exception& error) {
    parser.Error("", fmt::format("cannot read product model: {}", error.what()));
  }
  if (parser.failed()) {
    return detail::Rejected(diag);
  }
  product.source = std::string(json_text);
  product.model = std::make_shared<const CompiledModel>(std::move(services));
  return product;
}

}  // namespace iot::thing_model
