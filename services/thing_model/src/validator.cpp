#include "iot/thing_model/validator.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "iot/common/json_limits.h"
#include "iot/common/status.h"
#include "model/value_checks.h"

namespace iot::thing_model {
namespace {

namespace od = simdjson::ondemand;
using detail::CheckResult;
using detail::Number;
using detail::ValueIssue;

constexpr std::array<std::string_view, 17> kErrorKindNames = {
    "malformed",     "too large",        "unknown service", "unknown property", "unknown command",
    "unknown event", "unknown para",     "wrong type",      "out of range",     "too long",
    "not in enum",   "missing required", "not writable",    "duplicate",        "too deep",
    "too many",      "overlong"};

constexpr std::size_t kMaxApiErrors = 100;

std::string_view TrimRight(std::string_view text) {
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\n' ||
                           text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

std::string MethodText(std::uint8_t method) {
  std::string text;
  if ((method & kMethodRead) != 0) {
    text += 'R';
  }
  if ((method & kMethodWrite) != 0) {
    text += 'W';
  }
  if ((method & kMethodExecute) != 0) {
    text += 'E';
  }
  return text;
}

// Per-thread state of the report path: the simdjson parser (not thread-safe, reused for its
// buffers), a padded copy of the input, and "seen" stamps per property position.
struct Scratch {
  od::parser parser;
  simdjson::dom::parser dom;  // validates jsonObject values, which On-Demand only skips
  std::unique_ptr<char[]> buffer;
  std::size_t capacity = 0;
  std::vector<std::uint32_t> seen;
  std::uint32_t stamp = 0;

  // Copies `text` into the padded buffer; simdjson reads up to SIMDJSON_PADDING bytes past it.
  const char* Load(std::string_view text) {
    const std::size_t needed = text.size() + simdjson::SIMDJSON_PADDING;
    if (needed > capacity) {
      capacity = std::max(needed, capacity * 2);
      buffer = std::make_unique<char[]>(capacity);
    }
    if (!text.empty()) {
      std::memcpy(buffer.get(), text.data(), text.size());
    }
    std::memset(buffer.get() + text.size(), 0, simdjson::SIMDJSON_PADDING);
    return buffer.get();
  }

  // A fresh stamp for one service entry: seen[k] == stamp means property k was reported.
  std::uint32_t NextStamp(std::size_t properties) {
    if (seen.size() < properties) {
      seen.resize(properties, 0);
    }
    if (++stamp == 0) {
      std::fill(seen.begin(), seen.end(), 0);
      stamp = 1;
    }
    return stamp;
  }
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Walks one report with simdjson On-Demand. Semantic problems become errors in the result;
// a simdjson error (malformed JSON) is returned and makes the whole report malformed.
class ReportWalker {
 public:
  ReportWalker(const CompiledModel& model, const ReportOptions& options, ReportResult& result,
               std::string_view input, const char* buffer, Scratch& scratch)
      : model_(model),
        options_(options),
        result_(result),
        input_(input),
        buffer_(buffer),
        scratch_(scratch) {}

  simdjson::error_code Walk(od::document& doc) {
    od::object root;
    auto error = doc.get_object().get(root);
    if (error == simdjson::INCORRECT_TYPE) {
      Fail(
          ErrorKind::kMalformed, [] { return std::string(); }, "report must be a JSON object");
      return simdjson::SUCCESS;
    }
    SIMDJSON_TRY(error);
    bool found = false;
    for (auto field_result : root) {
      od::field field;
      SIMDJSON_TRY(std::move(field_result).get(field));
      if (!(field.key() == "services")) {
        continue;
      }
      if (found) {
        Fail(
            ErrorKind::kMalformed, [] { return std::string("services"); }, "duplicate key");
        continue;
      }
      found = true;
      od::array services;
      error = field.value().get_array().get(services);
      if (error == simdjson::INCORRECT_TYPE) {
        Fail(
            ErrorKind::kMalformed, [] { return std::string("services"); }, "must be an array");
        continue;
      }
      SIMDJSON_TRY(error);
      std::uint32_t index = 0;
      for (auto element_result : services) {
        if (index >= options_.max_services) {
          return Exceed(ErrorKind::kTooMany, "services",
                        fmt::format("more than {} service entries", options_.max_services));
        }
        od::value element;
        SIMDJSON_TRY(std::move(element_result).get(element));
        SIMDJSON_TRY(WalkService(element, index));
        ++index;
      }
    }
    if (!found) {
      Fail(
          ErrorKind::kMalformed, [] { return std::string("services"); }, "required");
    }
    const char* location = nullptr;
    if (doc.current_location().get(location) == simdjson::SUCCESS) {
      return simdjson::TRAILING_CONTENT;
    }
    return simdjson::SUCCESS;
  }

  /// The limit the report exceeded, if the walk stopped for one.
  [[nodiscard]] const std::optional<ValidationError>& limit() const { return limit_; }

 private:
  // A limit of ReportOptions exceeded: the walk stops (any error code does) and the whole report
  // is refused with this error.
  simdjson::error_code Exceed(ErrorKind kind, std::string path, std::string message) {
    limit_ = ValidationError{kind, std::move(path), std::move(message)};
    return simdjson::CAPACITY;
  }
  simdjson::error_code Overlong(std::string path, std::string_view what, std::size_t size,
                                std::size_t limit) {
    return Exceed(ErrorKind::kOverlong, std::move(path),
                  fmt::format("{} of {} bytes exceeds the limit of {}", what, size, limit));
  }

  // Records an error unless the cap is reached; the path is built only when recorded.
  template <typename PathFn>
  void Fail(ErrorKind kind, PathFn&& path, std::string message) {
    if (result_.errors.size() >= options_.max_errors) {
      ++result_.dropped_errors;
      return;
    }
    result_.errors.push_back({kind, path(), std::move(message)});
  }
  bool Full() {
    if (result_.errors.size() >= options_.max_errors) {
      ++result_.dropped_errors;
      return true;
    }
    return false;
  }

  std::string_view ToInput(std::string_view in_buffer) const {
    return {input_.data() + (in_buffer.data() - buffer_), in_buffer.size()};
  }

  static std::string ServicePath(std::uint32_t index, std::string_view key) {
    return fmt::format("services[{}].{}", index, key);
  }
  static std::string PropertyPath(std::uint32_t index, std::string_view name,
                                  std::string_view sub = {}) {
    return fmt::format("services[{}].properties.{}{}", index, name, sub);
  }

  simdjson::error_code WalkService(od::value& element, std::uint32_t index) {
    od::object entry;
    auto error = element.get_object().get(entry);
    if (error == simdjson::INCORRECT_TYPE) {
      Fail(
          ErrorKind::kMalformed, [&] { return fmt::format("services[{}]", index); },
          "must be an object");
      return simdjson::SUCCESS;
    }
    SIMDJSON_TRY(error);

    ReportedService reported;
    reported.index = index;
    reported.first_property = static_cast<std::uint32_t>(result_.properties.size());
    const Service* service = nullptr;
    bool id_seen = false;
    bool properties_seen = false;
    bool deferred = false;  // properties came before service_id: walk them in a second pass
    for (auto field_result : entry) {
      od::field field;
      SIMDJSON_TRY(std::move(field_result).get(field));
      const od::raw_json_string key = field.key();
      if (key == "service_id") {
        id_seen = true;
        std::string_view id;
        error = field.value().get_string().get(id);
        if (error == simdjson::INCORRECT_TYPE) {
          Fail(
              ErrorKind::kMalformed, [&] { return ServicePath(index, "service_id"); },
              "must be a string");
          continue;
        }
        SIMDJSON_TRY(error);
        if (id.size() > options_.max_name_bytes) {
          return Overlong(ServicePath(index, "service_id"), "service id", id.size(),
                          options_.max_name_bytes);
        }
        service = model_.FindService(id);
        if (service == nullptr) {
          Fail(
              ErrorKind::kUnknownService, [&] { return ServicePath(index, "service_id"); },
              fmt::format("unknown service {}", detail::Quoted(id)));
        }
      } else if (key == "properties") {
        properties_seen = true;
        if (!id_seen) {
          deferred = true;
        } else if (service != nullptr) {
          SIMDJSON_TRY(WalkProperties(field.value(), *service, reported));
        }
      } else if (key == "event_time") {
        SIMDJSON_TRY(ReadEventTime(field.value(), reported));
      }
    }
    if (!id_seen) {
      Fail(
          ErrorKind::kMalformed, [&] { return ServicePath(index, "service_id"); }, "required");
    }
    if (!properties_seen) {
      Fail(
          ErrorKind::kMalformed, [&] { return ServicePath(index, "properties"); }, "required");
    }
    if (deferred && service != nullptr) {
      bool unused = false;
      SIMDJSON_TRY(entry.reset().get(unused));
      for (auto field_result : entry) {
        od::field field;
        SIMDJSON_TRY(std::move(field_result).get(field));
        if (field.key() == "properties") {
          SIMDJSON_TRY(WalkProperties(field.value(), *service, reported));
          break;
        }
      }
    }
    if (service != nullptr) {
      reported.spec = service;
      reported.service_id = service->service_id;
      reported.property_count =
          static_cast<std::uint32_t>(result_.properties.size()) - reported.first_property;
      result_.services.push_back(reported);
    }
    return simdjson::SUCCESS;
  }

  simdjson::error_code ReadEventTime(od::value& value, ReportedService& reported) {
    od::json_type type;
    SIMDJSON_TRY(value.type().get(type));
    if (type == od::json_type::null) {
      return simdjson::SUCCESS;
    }
    const std::uint32_t index = reported.index;
    if (type != od::json_type::string) {
      Fail(
          ErrorKind::kWrongType, [&] { return ServicePath(index, "event_time"); },
          "wrong type: expected DateTime string");
      return simdjson::SUCCESS;
    }
    std::string_view token = value.raw_json_token();
    std::string_view text;
    SIMDJSON_TRY(value.get_string().get(text));
    if (!IsValidDateTime(text)) {
      Fail(
          ErrorKind::kWrongType, [&] { return ServicePath(index, "event_time"); },
          fmt::format("wrong type: expected DateTime (yyyyMMdd'T'HHmmss'Z' or ISO-8601 with a "
                      "zone), got {}",
                      detail::Quoted(text)));
      return simdjson::SUCCESS;
    }
    // A valid date-time has no escapes: its raw token is `"` + text + `"`.
    reported.event_time = ToInput(token.substr(1, text.size()));
    return simdjson::SUCCESS;
  }

  simdjson::error_code WalkProperties(od::value& value, const Service& service,
                                      ReportedService& reported) {
    const std::uint32_t index = reported.index;
    od::object properties;
    auto error = value.get_object().get(properties);
    if (error == simdjson::INCORRECT_TYPE) {
      Fail(
          ErrorKind::kMalformed, [&] { return ServicePath(index, "properties"); },
          "must be an object");
      return simdjson::SUCCESS;
    }
    SIMDJSON_TRY(error);
    const std::uint32_t stamp = scratch_.NextStamp(service.properties.size());
    std::size_t count = 0;
    for (auto field_result : properties) {
      if (++count > options_.max_properties) {
        return Exceed(ErrorKind::kTooMany, ServicePath(index, "properties"),
                      fmt::format("more than {} properties", options_.max_properties));
      }
      od::field field;
      SIMDJSON_TRY(std::move(field_result).get(field));
      std::string_view name;
      SIMDJSON_TRY(field.unescaped_key().get(name));
      if (name.size() > options_.max_name_bytes) {
        return Overlong(ServicePath(index, "properties"), "property name", name.size(),
                        options_.max_name_bytes);
      }
      const Parameter* param = service.properties.Find(name);
      if (param == nullptr) {
        if (!Full()) {
          result_.errors.push_back(
              {ErrorKind::kUnknownProperty, PropertyPath(index, name),
               fmt::format("unknown property: service {} has no property {}",
                           detail::Quoted(service.service_id), detail::Quoted(name))});
        }
        continue;
      }
      std::uint32_t& seen = scratch_.seen[param->index];
      if (seen == stamp) {
        Fail(
            ErrorKind::kDuplicate, [&] { return PropertyPath(index, param->name); },
            "duplicate: reported twice in one service entry");
        continue;
      }
      seen = stamp;
      std::string_view raw;
      CheckResult issue;
      const simdjson::error_code checked = CheckValue(field.value(), *param, raw, issue);
      if (limit_) {
        limit_->path = PropertyPath(index, param->name, limit_->path);  // path: the sub-path
        return checked;
      }
      SIMDJSON_TRY(checked);
      if (!issue && param->type == DataType::kJsonObject) {
        // On-Demand skipped the object's content: parse it fully before passing it on. The
        // slice lies inside the padded buffer, so reading past its end is safe.
        simdjson::dom::element unused;
        SIMDJSON_TRY(scratch_.dom.parse(raw.data(), raw.size(), false).get(unused));
      }
      if (issue) {
        Fail(
            issue->kind, [&] { return PropertyPath(index, param->name, issue->sub_path); },
            std::move(issue->message));
      } else {
        result_.properties.push_back({param->name, ToInput(raw), param});
      }
    }
    if (options_.check_required) {
      for (const std::uint32_t k : service.properties.required) {
        if (scratch_.seen[k] != stamp) {
          const Parameter& param = service.properties.items[k];
          Fail(
              ErrorKind::kMissingRequired, [&] { return PropertyPath(index, param.name); },
              "missing required property");
        }
      }
    }
    return simdjson::SUCCESS;
  }

  // Checks one value; on success `raw` is its JSON text (in the padded buffer).
  simdjson::error_code CheckValue(od::value& value, const Parameter& param, std::string_view& raw,
                                  CheckResult& issue) {
    od::json_type type;
    SIMDJSON_TRY(value.type().get(type));
    std::string_view token = value.raw_json_token();
    switch (type) {
      case od::json_type::number: {
        token = TrimRight(token);
        SIMDJSON_TRY(ReadNumber(value, token, param, issue));
        raw = token;
        return simdjson::SUCCESS;
      }
      case od::json_type::string: {
        if (!detail::TakesString(param.type)) {
          issue = detail::WrongType(param, "string");
          return simdjson::SUCCESS;
        }
        std::string_view text;
        SIMDJSON_TRY(value.get_string().get(text));
        if (text.size() > options_.max_string_bytes) {
          return Overlong("", "string value", text.size(), options_.max_string_bytes);
        }
        issue = detail::CheckText(param, text);
        raw = TrimRight(token);
        return simdjson::SUCCESS;
      }
      case od::json_type::boolean: {
        if (param.type != DataType::kBoolean) {
          issue = detail::WrongType(param, "boolean");
          return simdjson::SUCCESS;
        }
        bool unused = false;
        SIMDJSON_TRY(value.get_bool().get(unused));
        raw = TrimRight(token);
        return simdjson::SUCCESS;
      }
      case od::json_type::null:
        issue = detail::WrongType(param, "null");
        return simdjson::SUCCESS;
      case od::json_type::object: {
        if (param.type != DataType::kJsonObject) {
          issue = detail::WrongType(param, "object");
          return simdjson::SUCCESS;
        }
        od::object object;
        SIMDJSON_TRY(value.get_object().get(object));
        return object.raw_json().get(raw);
      }
      case od::json_type::array:
        if (param.accepts_array) {
          // Parsed fully by the caller, as a jsonObject's content.
          od::array array;
          SIMDJSON_TRY(value.get_array().get(array));
          return array.raw_json().get(raw);
        }
        if (param.type != DataType::kStringList) {
          issue = detail::WrongType(param, "array");
          return simdjson::SUCCESS;
        }
        return CheckStringList(value, token, param, raw, issue);
    }
    return simdjson::INCORRECT_TYPE;
  }

  static simdjson::error_code ReadNumber(od::value& value, std::string_view token,
                                         const Parameter& param, CheckResult& issue) {
    Number number;
    number.text = token;
    od::number parsed;
    const auto error = value.get_number().get(parsed);
    if (error == simdjson::SUCCESS) {
      switch (parsed.get_number_type()) {
        case od::number_type::signed_integer:
          number.i = parsed.get_int64();
          break;
        case od::number_type::unsigned_integer:
          number.kind = Number::Kind::kUnsigned;
          number.u = parsed.get_uint64();
          break;
        case od::number_type::floating_point_number:
          number.kind = Number::Kind::kDouble;
          number.d = parsed.get_double();
          break;
      }
    } else if (error == simdjson::NUMBER_ERROR && detail::IsJsonNumber(token)) {
      // Valid JSON that simdjson cannot hold: an integer beyond 64 bits, or 1e400.
      double d = 0;
      const char* end = token.data() + token.size();
      auto [ptr, ec] = std::from_chars(token.data(), end, d);
      if (ec != std::errc() || ptr != end || !std::isfinite(d)) {
        issue = detail::WrongType(
            param, fmt::format("{} (beyond the range of a double)", detail::Quoted(token)));
        return simdjson::SUCCESS;
      }
      number.kind = Number::Kind::kDouble;
      number.d = d;
    } else {
      return error == simdjson::SUCCESS ? simdjson::NUMBER_ERROR : error;
    }
    issue = detail::CheckNumber(param, number);
    return simdjson::SUCCESS;
  }

  // `token` is the raw token of the array: "[" and the whitespace up to the next token.
  simdjson::error_code CheckStringList(od::value& value, std::string_view token,
                                       const Parameter& param, std::string_view& raw,
                                       CheckResult& issue) {
    od::array array;
    SIMDJSON_TRY(value.get_array().get(array));
    const char* end = token.data() + token.size();
    std::size_t k = 0;
    for (auto element_result : array) {
      od::value element;
      SIMDJSON_TRY(std::move(element_result).get(element));
      if (issue) {
        continue;  // the rest is skipped, only the first bad element is reported
      }
      od::json_type type;
      SIMDJSON_TRY(element.type().get(type));
      const std::string_view element_token = element.raw_json_token();
      if (type != od::json_type::string) {
        issue = ValueIssue{ErrorKind::kWrongType,
                           fmt::format("wrong type: expected string (element of string list), "
                                       "got {}",
                                       TypeName(type)),
                           fmt::format("[{}]", k)};
        continue;
      }
      std::string_view text;
      SIMDJSON_TRY(element.get_string().get(text));
      if (text.size() > options_.max_string_bytes) {
        return Overlong(fmt::format("[{}]", k), "string value", text.size(),
                        options_.max_string_bytes);
      }
      issue = detail::CheckText(param, text);
      if (issue) {
        issue->sub_path = fmt::format("[{}]", k);
      }
      // The raw token runs up to the next token: ',' or, after the last element, ']'.
      end = element_token.data() + element_token.size();
      ++k;
    }
    if (!issue) {
      if (*end != ']') {
        return simdjson::TAPE_ERROR;
      }
      raw = std::string_view(token.data(), static_cast<std::size_t>(end + 1 - token.data()));
    }
    return simdjson::SUCCESS;
  }

  static std::string_view TypeName(od::json_type type) {
    switch (type) {
      case od::json_type::array:
        return "array";
      case od::json_type::object:
        return "object";
      case od::json_type::number:
        return "number";
      case od::json_type::string:
        return "string";
      case od::json_type::boolean:
        return "boolean";
      case od::json_type::null:
        return "null";
    }
    return "unknown";
  }

  const CompiledModel& model_;
  const ReportOptions& options_;
  ReportResult& result_;
  std::string_view input_;
  const char* buffer_;
  Scratch& scratch_;
  std::optional<ValidationError> limit_;
};

// Collects API-side errors up to the cap.
class Collector {
 public:
  explicit Collector(ValidationResult& result) : result_(result) {}
  bool Full() const { return result_.errors.size() >= kMaxApiErrors; }
  void Add(ErrorKind kind, std::string path, std::string message) {
    if (!Full()) {
      result_.errors.push_back({kind, std::move(path), std::move(message)});
    }
  }

 private:
  ValidationResult& result_;
};

// Paras of a command or an event: declared ones valid, required ones present.
void CheckParas(const ParameterList& declared, const nlohmann::json& paras, std::string_view owner,
                Collector& out) {
  if (paras.is_null()) {
    for (const std::uint32_t k : declared.required) {
      out.Add(ErrorKind::kMissingRequired, fmt::format("paras.{}", declared.items[k].name),
              "missing required para");
    }
    return;
  }
  if (!paras.is_object()) {
    out.Add(ErrorKind::kMalformed, "paras",
            fmt::format("must be a JSON object, got {}", paras.type_name()));
    return;
  }
  for (const auto& [name, value] : paras.items()) {
    if (out.Full()) {
      return;
    }
    const Parameter* param = declared.Find(name);
    if (param == nullptr) {
      out.Add(ErrorKind::kUnknownPara, fmt::format("paras.{}", name),
              fmt::format("unknown para: {} has no para {}", owner, detail::Quoted(name)));
      continue;
    }
    if (auto issue = detail::CheckJsonValue(*param, value)) {
      out.Add(issue->kind, fmt::format("paras.{}{}", name, issue->sub_path),
              std::move(issue->message));
    }
  }
  for (const std::uint32_t k : declared.required) {
    const std::string& name = declared.items[k].name;
    if (!paras.contains(name)) {
      out.Add(ErrorKind::kMissingRequired, fmt::format("paras.{}", name), "missing required para");
    }
  }
}

}  // namespace

bool RefusesWholePayload(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kMalformed:
    case ErrorKind::kTooLarge:
    case ErrorKind::kTooDeep:
    case ErrorKind::kTooMany:
    case ErrorKind::kOverlong:
      return true;
    default:
      return false;
  }
}

std::string_view ErrorKindName(ErrorKind kind) {
  return kErrorKindNames[static_cast<std::size_t>(kind)];
}

std::string ValidationError::ToString() const {
  return path.empty() ? message : fmt::format("{}: {}", path, message);
}

absl::Status ValidationResult::ToStatus() const {
  if (errors.empty()) {
    return absl::OkStatus();
  }
  const ValidationError& first = errors.front();
  std::string reason = first.message;
  if (errors.size() > 1) {
    reason +=
        fmt::format(" (and {} more error{})", errors.size() - 1, errors.size() == 2 ? "" : "s");
  }
  if (first.path.empty()) {
    return absl::InvalidArgumentError(reason);
  }
  return common::InvalidField(first.path, reason);
}

void ReportResult::Clear() {
  services.clear();
  properties.clear();
  errors.clear();
  dropped_errors = 0;
}

Validator::Validator(std::shared_ptr<const CompiledModel> model) : model_(std::move(model)) {}

ReportResult Validator::ValidateReport(std::string_view report_json,
                                       const ReportOptions& options) const {
  ReportResult result;
  ValidateReport(report_json, result, options);
  return result;
}

void Validator::ValidateReport(std::string_view report_json, ReportResult& result,
                               const ReportOptions& options) const {
  result.Clear();
  if (report_json.size() > options.max_bytes) {
    result.errors.push_back({ErrorKind::kTooLarge, "",
                             fmt::format("too large: report of {} bytes > {} bytes",
                                         report_json.size(), options.max_bytes)});
    return;
  }
  if (common::JsonNestingDepth(report_json, options.max_depth) > options.max_depth) {
    result.errors.push_back(
        {ErrorKind::kTooDeep, "",
         fmt::format("report nested deeper than {} levels", options.max_depth)});
    return;
  }
  Scratch& scratch = ThreadScratch();
  const char* buffer = scratch.Load(report_json);
  od::document doc;
  auto error = scratch.parser.iterate(buffer, report_json.size(), scratch.capacity).get(doc);
  if (error == simdjson::SUCCESS) {
    ReportWalker walker(*model_, options, result, report_json, buffer, scratch);
    error = walker.Walk(doc);
    if (walker.limit()) {
      result.Clear();
      result.errors.push_back(*walker.limit());
      return;
    }
  }
  if (error != simdjson::SUCCESS) {
    result.Clear();
    result.errors.push_back(
        {ErrorKind::kMalformed, "",
         fmt::format("malformed: not valid JSON ({})", simdjson::error_message(error))});
  }
}

ValidationResult Validator::ValidateProperties(std::string_view service_id,
                                               const nlohmann::json& properties,
                                               PropertyMode mode) const {
  ValidationResult result;
  Collector out(result);
  const Service* service = model_->FindService(service_id);
  if (service == nullptr) {
    out.Add(ErrorKind::kUnknownService, "service_id",
            fmt::format("unknown service {}", detail::Quoted(service_id)));
    return result;
  }
  if (!properties.is_object()) {
    out.Add(ErrorKind::kMalformed, "properties",
            fmt::format("must be a JSON object, got {}", properties.type_name()));
    return result;
  }
  for (const auto& [name, value] : properties.items()) {
    if (out.Full()) {
      break;
    }
    const Parameter* param = service->properties.Find(name);
    const std::string path = fmt::format("properties.{}", name);
    if (param == nullptr) {
      out.Add(ErrorKind::kUnknownProperty, path,
              fmt::format("unknown property: service {} has no property {}",
                          detail::Quoted(service->service_id), detail::Quoted(name)));
      continue;
    }
    if (mode == PropertyMode::kWrite && !param->Writable()) {
      out.Add(ErrorKind::kNotWritable, path,
              fmt::format("not writable: method is {}", MethodText(param->method)));
      continue;
    }
    if (auto issue = detail::CheckJsonValue(*param, value)) {
      out.Add(issue->kind, path + issue->sub_path, std::move(issue->message));
    }
  }
  if (mode == PropertyMode::kFullState) {
    for (const std::uint32_t k : service->properties.required) {
      const std::string& name = service->properties.items[k].name;
      if (!properties.contains(name)) {
        out.Add(ErrorKind::kMissingRequired, fmt::format("properties.{}", name),
                "missing required property");
      }
    }
  }
  return result;
}

ValidationResult Validator::ValidateCommand(std::string_view service_id,
                                            std::string_view command_name,
                                            const nlohmann::json& paras) const {
  ValidationResult result;
  Collector out(result);
  const Service* service = model_->FindService(service_id);
  if (service == nullptr) {
    out.Add(ErrorKind::kUnknownService, "service_id",
            fmt::format("unknown service {}", detail::Quoted(service_id)));
    return result;
  }
  const Command* command = service->FindCommand(command_name);
  if (command == nullptr) {
    out.Add(ErrorKind::kUnknownCommand, "command_name",
            fmt::format("unknown command: service {} has no command {}",
                        detail::Quoted(service->service_id), detail::Quoted(command_name)));
    return result;
  }
  CheckParas(command->paras, paras, fmt::format("command {}", detail::Quoted(command->name)), out);
  return result;
}

ValidationResult Validator::ValidateEvent(std::string_view service_id, std::string_view event_type,
                                          const nlohmann::json& paras) const {
  ValidationResult result;
  Collector out(result);
  const Service* service = model_->FindService(service_id);
  if (service == nullptr) {
    out.Add(ErrorKind::kUnknownService, "service_id",
            fmt::format("unknown service {}", detail::Quoted(service_id)));
    return result;
  }
  const Event* event = service->FindEvent(event_type);
  if (event == nullptr) {
    out.Add(ErrorKind::kUnknownEvent, "event_type",
            fmt::format("unknown event: service {} has no event type {}",
                        detail::Quoted(service->service_id), detail::Quoted(event_type)));
    return result;
  }
  CheckParas(event->paras, paras, fmt::format("event {}", detail::Quoted(event->type)), out);
  return result;
}

}  // namespace iot::thing_model
