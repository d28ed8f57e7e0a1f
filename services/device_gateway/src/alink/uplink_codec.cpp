#include "iot/device_gateway/alink/uplink_codec.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <ctime>

#include "iot/common/alink_topic.h"
#include "iot/device_gateway/uplink.h"

namespace iot::device_gateway {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kDefaultService = "default";

/// The `/`-separated levels of `topic` after its leading `/` (at most `max` of them, the rest
/// left in the last one).
std::vector<std::string_view> Levels(std::string_view topic, size_t max) {
  std::vector<std::string_view> levels;
  topic.remove_prefix(1);
  while (levels.size() + 1 < max) {
    const size_t slash = topic.find('/');
    if (slash == std::string_view::npos) {
      break;
    }
    levels.push_back(topic.substr(0, slash));
    topic.remove_prefix(slash + 1);
  }
  levels.push_back(topic);
  return levels;
}

bool OneLevel(std::string_view s) { return !s.empty() && s.find('/') == std::string_view::npos; }

/// What follows `/sys/{pk}/{dn}/`.
void ClassifySys(std::string_view rest, AlinkTopic& out) {
  struct Fixed {
    std::string_view suffix;
    AlinkFunction function;
  };
  static constexpr std::array<Fixed, 6> kFixed = {{
      {"thing/event/property/post", AlinkFunction::kPropertyPost},
      {"thing/event/property/batch/post", AlinkFunction::kPropertyBatchPost},
      {"thing/model/up_raw", AlinkFunction::kRawUp},
      {"thing/model/down_raw_reply", AlinkFunction::kDownRawReply},
      {"thing/service/property/set_reply", AlinkFunction::kPropertySetReply},
      {"thing/service/property/get_reply", AlinkFunction::kPropertyGetReply},
  }};
  for (const Fixed& fixed : kFixed) {
    if (rest == fixed.suffix) {
      out.function = fixed.function;
      return;
    }
  }
  constexpr std::string_view kEvent = "thing/event/";
  constexpr std::string_view kPost = "/post";
  if (rest.starts_with(kEvent) && rest.ends_with(kPost) &&
      rest.size() > kEvent.size() + kPost.size()) {
    const std::string_view id =
        rest.substr(kEvent.size(), rest.size() - kEvent.size() - kPost.size());
    if (OneLevel(id) && id != "property") {
      out.function = AlinkFunction::kEventPost;
      out.identifier = id;
    }
    return;
  }
  constexpr std::string_view kService = "thing/service/";
  constexpr std::string_view kReply = "_reply";
  if (rest.starts_with(kService) && rest.ends_with(kReply) &&
      rest.size() > kService.size() + kReply.size()) {
    const std::string_view id =
        rest.substr(kService.size(), rest.size() - kService.size() - kReply.size());
    if (OneLevel(id)) {
      out.function = AlinkFunction::kServiceReply;
      out.identifier = id;
    }
    return;
  }
  constexpr std::string_view kRrpc = "rrpc/response/";
  if (rest.starts_with(kRrpc) && OneLevel(rest.substr(kRrpc.size()))) {
    out.function = AlinkFunction::kRrpcResponse;
    out.message_id = rest.substr(kRrpc.size());
  }
}

/// A decimal string of at most 19 digits.
std::optional<int64_t> DecimalMillis(std::string_view text) {
  int64_t out = 0;
  if (text.empty() || text.size() > 19) {
    return std::nullopt;
  }
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (error != std::errc() || end != text.data() + text.size() || out < 0) {
    return std::nullopt;
  }
  return out;
}

/// One service entry of an AlinkReport being built.
struct Entry {
  std::string service_id;
  std::optional<int64_t> time;
  Json properties = Json::object();
};

class ReportBuilder {
 public:
  explicit ReportBuilder(const thing_model::CompiledModel& model) : model_(model) {}

  void Add(std::string_view identifier, Json value, std::optional<int64_t> time) {
    const auto [service_id, name] = SplitAlinkIdentifier(identifier);
    const thing_model::Parameter* spec = nullptr;
    if (const auto* service = model_.FindService(service_id); service != nullptr) {
      spec = service->properties.Find(name);
    }
    Entry* entry = nullptr;
    for (Entry& e : entries_) {
      if (e.service_id == service_id && e.time == time && !e.properties.contains(name)) {
        entry = &e;
        break;
      }
    }
    if (entry == nullptr) {
      entry = &entries_.emplace_back();
      entry->service_id = std::string(service_id);
      entry->time = time;
    }
    entry->properties[std::string(name)] = AlinkToModelValue(spec, std::move(value));
  }
  void Error(std::string text) { report_.errors.push_back(std::move(text)); }

  AlinkReport Finish() {
    if (entries_.empty()) {
      return std::move(report_);
    }
    Json services = Json::array();
    for (Entry& e : entries_) {
      Json service = {{"service_id", e.service_id}, {"properties", std::move(e.properties)}};
      if (e.time) {
        service["event_time"] = Rfc3339Millis(*e.time);
      }
      report_.service_ids.push_back(std::move(e.service_id));
      services.push_back(std::move(service));
    }
    report_.report_json = Json{{"services", std::move(services)}}.dump(
        -1, ' ', false, Json::error_handler_t::replace);
    return std::move(report_);
  }

 private:
  const thing_model::CompiledModel& model_;
  std::vector<Entry> entries_;
  AlinkReport report_;
};

void SetSide(const Json& side, std::string_view service_id, Json& state, Json& metadata) {
  if (!side.is_object()) {
    return;
  }
  const auto properties = side.find("properties");
  if (properties == side.end() || !properties->is_object()) {
    return;
  }
  std::optional<int64_t> at;
  if (const auto t = side.find("event_time"); t != side.end() && t->is_string()) {
    at = ParseDeviceTime(t->get<std::string>());
  }
  for (const auto& [name, value] : properties->items()) {
    const std::string identifier = AlinkIdentifier(service_id, name);
    state[identifier] = value;
    if (at) {
      metadata[identifier] = {{"timestamp", *at / 1000}};
    }
  }
}

}  // namespace

std::optional<AlinkTopic> ParseAlinkTopic(std::string_view topic) {
  // The broker relays topics with this already stripped, by the same rule.
  topic = common::StripAlinkRequestId(topic);
  if (!topic.starts_with('/') || topic.size() < 2) {
    return std::nullopt;
  }
  AlinkTopic out;
  out.topic = topic;
  const auto named = [&](std::string_view pk, std::string_view dn) {
    out.product_key = pk;
    out.device_name = dn;
    return OneLevel(pk) && OneLevel(dn);
  };
  const auto levels = Levels(topic, 8);
  if (levels.size() >= 4 && levels[0] == "sys") {
    if (!named(levels[1], levels[2])) {
      return std::nullopt;
    }
    const size_t offset =
        std::string_view("/sys/").size() + levels[1].size() + 1 + levels[2].size() + 1;
    ClassifySys(topic.substr(offset), out);
    return out;
  }
  if (levels.size() == 4 && levels[0] == "shadow" && levels[1] == "update") {
    if (!named(levels[2], levels[3])) {
      return std::nullopt;
    }
    out.function = AlinkFunction::kShadowUpdate;
    return out;
  }
  if (levels.size() >= 2 && levels[0] == "ext" && levels[1] == "ntp") {
    if (levels.size() != 5 || !named(levels[2], levels[3])) {
      return std::nullopt;
    }
    if (levels[4] == "request") {
      out.function = AlinkFunction::kNtpRequest;
    }
    return out;
  }
  if (levels.size() >= 2 && levels[0] == "ext" && levels[1] == "rrpc") {
    // /ext/rrpc/{messageId}/sys/{pk}/{dn}/thing/service/{identifier}
    const auto rrpc = Levels(topic, 10);
    if (rrpc.size() < 7 || !OneLevel(rrpc[2]) || rrpc[3] != "sys" || !named(rrpc[4], rrpc[5])) {
      return std::nullopt;
    }
    if (rrpc.size() == 9 && rrpc[6] == "thing" && rrpc[7] == "service" && OneLevel(rrpc[8])) {
      out.function = AlinkFunction::kExtRrpcResponse;
      out.message_id = rrpc[2];
      out.identifier = rrpc[8];
    }
    return out;
  }
  if (levels.size() >= 4 && levels[2] == "user") {
    // Something after `/{pk}/{dn}/user/` (as the broker's ACL asks): `user/a/` is a topic too.
    if (!named(levels[0], levels[1]) || (levels.size() == 4 && levels[3].empty())) {
      return std::nullopt;
    }
    out.function = AlinkFunction::kCustom;
    return out;
  }
  return std::nullopt;
}

std::string AlinkMethod(const AlinkTopic& topic) {
  switch (topic.function) {
    case AlinkFunction::kPropertyPost:
      return "thing.event.property.post";
    case AlinkFunction::kPropertyBatchPost:
      return "thing.event.property.batch.post";
    case AlinkFunction::kEventPost:
      return fmt::format("thing.event.{}.post", topic.identifier);
    case AlinkFunction::kRawUp:
      return "thing.model.up_raw";
    default:
      return "";
  }
}

bool IsAlinkResponse(AlinkFunction function) {
  switch (function) {
    case AlinkFunction::kPropertySetReply:
    case AlinkFunction::kPropertyGetReply:
    case AlinkFunction::kServiceReply:
    case AlinkFunction::kRrpcResponse:
    case AlinkFunction::kExtRrpcResponse:
    case AlinkFunction::kDownRawReply:
      return true;
    default:
      return false;
  }
}

bool IsAlinkReport(AlinkFunction function) {
  return function == AlinkFunction::kPropertyPost ||
         function == AlinkFunction::kPropertyBatchPost || function == AlinkFunction::kShadowUpdate;
}

std::string AlinkDeviceTopic(std::string_view device_id, std::string_view alink_topic) {
  return fmt::format("$oc/devices/{}/{}{}", device_id, kAlinkRelayLevel, alink_topic);
}

AlinkRequest ReadAlinkRequest(const Json& document) {
  AlinkRequest out;
  if (!document.is_object()) {
    return out;
  }
  if (const auto id = document.find("id"); id != document.end()) {
    out.id = *id;
  }
  if (const auto sys = document.find("sys"); sys != document.end() && sys->is_object()) {
    if (const auto ack = sys->find("ack"); ack != sys->end()) {
      out.ack =
          !((ack->is_number() && ack->get<double>() == 0) || (ack->is_string() && *ack == "0"));
    }
  }
  if (const auto params = document.find("params"); params != document.end()) {
    out.params = *params;
  }
  return out;
}

std::optional<Json> RecoverAlinkId(std::string_view payload, bool& ack) {
  ack = true;
  std::optional<Json> id;
  int depth = 0;
  size_t i = 0;
  const auto skip_space = [&](size_t at) {
    while (at < payload.size() && (payload[at] == ' ' || payload[at] == '\t' ||
                                   payload[at] == '\n' || payload[at] == '\r')) {
      ++at;
    }
    return at;
  };
  // The end of the string token starting at `at` (a '"'), past its closing quote.
  const auto string_end = [&](size_t at) -> std::optional<size_t> {
    for (size_t k = at + 1; k < payload.size(); ++k) {
      if (payload[k] == '\\') {
        ++k;
      } else if (payload[k] == '"') {
        return k + 1;
      }
    }
    return std::nullopt;
  };
  while (i < payload.size()) {
    const char c = payload[i];
    if (c == '{' || c == '[') {
      ++depth;
      ++i;
      continue;
    }
    if (c == '}' || c == ']') {
      --depth;
      ++i;
      continue;
    }
    if (c != '"') {
      ++i;
      continue;
    }
    const auto end = string_end(i);
    if (!end) {
      break;
    }
    const std::string_view key = payload.substr(i + 1, *end - i - 2);
    const size_t colon = skip_space(*end);
    if (colon >= payload.size() || payload[colon] != ':' || (key != "id" && key != "ack")) {
      i = *end;
      continue;
    }
    const size_t value = skip_space(colon + 1);
    size_t value_end = value;
    if (value < payload.size() && payload[value] == '"') {
      value_end = string_end(value).value_or(value);
    } else {
      while (value_end < payload.size() &&
             (std::isdigit(static_cast<unsigned char>(payload[value_end])) != 0 ||
              payload[value_end] == '-')) {
        ++value_end;
      }
    }
    Json parsed = Json::parse(payload.substr(value, value_end - value), nullptr, false);
    if (key == "id" && depth == 1 && !id && (parsed.is_string() || parsed.is_number())) {
      id = std::move(parsed);
    } else if (key == "ack" && ((parsed.is_number() && parsed.get<double>() == 0) ||
                                (parsed.is_string() && parsed == "0"))) {
      ack = false;
    }
    i = std::max(value_end, *end);
  }
  return id;
}

std::string AlinkReply(const Json& id, int code, std::string_view message, std::string_view method,
                       const Json& data) {
  const auto dump = [](const Json& value) {
    return value.dump(-1, ' ', false, Json::error_handler_t::replace);
  };
  return fmt::format(R"({{"id":{},"code":{},"data":{},"message":{},"method":{},"version":"1.0"}})",
                     dump(id), code, dump(data), dump(Json(message)), dump(Json(method)));
}

std::pair<std::string_view, std::string_view> SplitAlinkIdentifier(std::string_view identifier) {
  const size_t colon = identifier.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return {kDefaultService, identifier};
  }
  return {identifier.substr(0, colon), identifier.substr(colon + 1)};
}

std::string AlinkIdentifier(std::string_view service_id, std::string_view name) {
  return service_id == kDefaultService ? std::string(name) : fmt::format("{}:{}", service_id, name);
}

Json AlinkToModelValue(const thing_model::Parameter* spec, Json value) {
  if (spec == nullptr) {
    return value;
  }
  using thing_model::DataType;
  switch (spec->type) {
    case DataType::kBoolean:
      if (value.is_number_integer() && (value == 0 || value == 1)) {
        return value == 1;
      }
      if (value.is_string() && (value == "0" || value == "1")) {
        return value == "1";
      }
      return value;
    case DataType::kEnum:
    case DataType::kString:
      if (value.is_number_integer()) {
        return value.dump();
      }
      return value;
    case DataType::kDateTime:
      if (const auto ms = AlinkTime(value)) {
        return Rfc3339Millis(*ms);
      }
      return value;
    default:
      return value;
  }
}

bool IsAlinkTimedValue(const Json& value) {
  if (!value.is_object() || !value.contains("value")) {
    return false;
  }
  return std::all_of(value.items().begin(), value.items().end(), [](const auto& item) {
    return item.key() == "value" || item.key() == "time";
  });
}

std::string Rfc3339Millis(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, unix_ms % 1000);
}

std::optional<int64_t> AlinkTime(const Json& value) {
  // Up to the year 9999: a time the owners' parsers and the shadow stamps can represent.
  constexpr int64_t kMax = 253402300799999;
  std::optional<int64_t> ms;
  if (value.is_number_unsigned() || value.is_number_integer()) {
    ms = value.get<int64_t>();
  } else if (value.is_string()) {
    ms = DecimalMillis(value.get_ref<const std::string&>());
  }
  if (!ms || *ms < 0 || *ms > kMax) {
    return std::nullopt;
  }
  return ms;
}

AlinkReport AlinkPropertyReport(const thing_model::CompiledModel& model, const Json& params) {
  ReportBuilder builder(model);
  for (const auto& [identifier, value] : params.items()) {
    if (!IsAlinkTimedValue(value)) {
      builder.Add(identifier, value, std::nullopt);
      continue;
    }
    std::optional<int64_t> time;
    if (const auto t = value.find("time"); t != value.end()) {
      time = AlinkTime(*t);
      if (!time) {
        builder.Error(fmt::format("params.{}.time: not a time in milliseconds", identifier));
        continue;
      }
    }
    builder.Add(identifier, value["value"], time);
  }
  return builder.Finish();
}

std::vector<std::pair<Json, int64_t>> AlinkBatchItems(const Json& values, std::string_view where,
                                                      std::vector<std::string>& errors) {
  std::vector<std::pair<Json, int64_t>> items;
  if (!values.is_array()) {
    errors.push_back(fmt::format("{}: must be an array of {{value, time}}", where));
    return items;
  }
  for (const Json& value : values) {
    const auto time = IsAlinkTimedValue(value) && value.contains("time") ? AlinkTime(value["time"])
                                                                         : std::optional<int64_t>();
    if (!time) {
      errors.push_back(
          fmt::format("{}: each value needs {{value, time}} with a time in milliseconds", where));
      continue;
    }
    items.emplace_back(value["value"], *time);
  }
  return items;
}

AlinkReport AlinkBatchReport(const thing_model::CompiledModel& model, const Json& properties) {
  ReportBuilder builder(model);
  std::vector<std::string> errors;
  for (const auto& [identifier, values] : properties.items()) {
    for (auto& [value, time] : AlinkBatchItems(values, "params.properties." + identifier, errors)) {
      builder.Add(identifier, std::move(value), time);
    }
  }
  for (auto& error : errors) {
    builder.Error(std::move(error));
  }
  return builder.Finish();
}

std::string AlinkErrorPath(const AlinkReport& report, std::string_view path) {
  constexpr std::string_view kServices = "services[";
  if (!path.starts_with(kServices)) {
    return "params";
  }
  const size_t close = path.find(']');
  size_t index = 0;
  const auto [end, error] =
      std::from_chars(path.data() + kServices.size(), path.data() + close, index);
  if (close == std::string_view::npos || error != std::errc() ||
      index >= report.service_ids.size()) {
    return "params";
  }
  constexpr std::string_view kProperties = ".properties.";
  const std::string_view rest = path.substr(close + 1);
  if (!rest.starts_with(kProperties)) {
    return fmt::format("params (function block {})", report.service_ids[index]);
  }
  return "params." + AlinkIdentifier(report.service_ids[index], rest.substr(kProperties.size()));
}

Json AlinkServices(const thing_model::CompiledModel& model, const Json& data) {
  Json services = Json::array();
  if (!data.is_object()) {
    return services;
  }
  std::vector<std::pair<std::string, Json>> grouped;
  for (const auto& [identifier, value] : data.items()) {
    const auto [service_id, name] = SplitAlinkIdentifier(identifier);
    const thing_model::Parameter* spec = nullptr;
    if (const auto* service = model.FindService(service_id); service != nullptr) {
      spec = service->properties.Find(name);
    }
    // A copy: clang 14 cannot capture a structured binding (the fuzz build uses it).
    const std::string_view wanted = service_id;
    auto it = std::find_if(grouped.begin(), grouped.end(),
                           [&](const auto& g) { return g.first == wanted; });
    if (it == grouped.end()) {
      it = grouped.insert(grouped.end(), {std::string(service_id), Json::object()});
    }
    it->second[std::string(name)] = AlinkToModelValue(spec, value);
  }
  for (auto& [service_id, properties] : grouped) {
    services.push_back({{"service_id", service_id}, {"properties", std::move(properties)}});
  }
  return services;
}

Json AlinkShadowReply(const Json& iotda_shadow, int64_t now_unix_ms) {
  Json desired = Json::object();
  Json reported = Json::object();
  Json desired_meta = Json::object();
  Json reported_meta = Json::object();
  int64_t version = 0;
  if (const auto entries = iotda_shadow.find("shadow");
      entries != iotda_shadow.end() && entries->is_array()) {
    for (const Json& entry : *entries) {
      if (!entry.is_object() || !entry.contains("service_id") || !entry["service_id"].is_string()) {
        continue;
      }
      const std::string service_id = entry["service_id"];
      if (const auto side = entry.find("desired"); side != entry.end()) {
        SetSide(*side, service_id, desired, desired_meta);
      }
      if (const auto side = entry.find("reported"); side != entry.end()) {
        SetSide(*side, service_id, reported, reported_meta);
      }
      if (const auto v = entry.find("version"); v != entry.end() && v->is_number_integer()) {
        version = std::max(version, v->get<int64_t>());
      }
    }
  }
  Json state = {{"reported", std::move(reported)}};
  Json metadata = {{"reported", std::move(reported_meta)}};
  if (!desired.empty()) {
    state["desired"] = std::move(desired);
    metadata["desired"] = std::move(desired_meta);
  }
  return {{"method", "reply"},
          {"payload",
           {{"status", "success"}, {"state", std::move(state)}, {"metadata", std::move(metadata)}}},
          {"version", version},
          {"timestamp", now_unix_ms / 1000}};
}

Json AlinkShadowAnswer(const std::optional<int64_t>& version, int64_t now_unix_ms,
                       std::string_view error_code, std::string_view error_message) {
  Json payload;
  if (error_code.empty()) {
    payload = {{"status", "success"}};
    if (version) {
      payload["version"] = *version;
    }
  } else {
    payload = {{"status", "error"},
               {"content", {{"errorcode", error_code}, {"errormessage", error_message}}}};
  }
  return {{"method", "reply"}, {"payload", std::move(payload)}, {"timestamp", now_unix_ms / 1000}};
}

}  // namespace iot::device_gateway
