#include "iot/shadow/document.h"

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <ctime>

#include "iot/common/status.h"

namespace iot::shadow {
namespace {

constexpr char kSep = '\0';

std::optional<int64_t> ParseInt(std::string_view text) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

/// Splits `<ms> <text>`.
std::optional<std::pair<int64_t, std::string_view>> Unstamp(std::string_view stamped) {
  const size_t space = stamped.find(' ');
  if (space == std::string_view::npos) {
    return std::nullopt;
  }
  auto ms = ParseInt(stamped.substr(0, space));
  if (!ms) {
    return std::nullopt;
  }
  return std::make_pair(*ms, stamped.substr(space + 1));
}

ShadowSide& SideOf(ServiceShadow& service, bool desired) {
  return desired ? service.desired : service.reported;
}
const ShadowSide& SideOf(const ServiceShadow& service, bool desired) {
  return desired ? service.desired : service.reported;
}

/// Fixed-width digits of `text` at `pos`, or -1.
int Digits(std::string_view text, size_t pos, size_t n) {
  if (pos + n > text.size()) {
    return -1;
  }
  int value = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (text[i] < '0' || text[i] > '9') {
      return -1;
    }
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

std::optional<int64_t> ToUnixMs(int year, int month, int day, int hour, int minute, int second,
                                int millis, int offset_minutes) {
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
      second > 60) {
    return std::nullopt;
  }
  const std::chrono::year_month_day ymd{std::chrono::year(year),
                                        std::chrono::month(static_cast<unsigned>(month)),
                                        std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) {
    return std::nullopt;
  }
  const int64_t days = std::chrono::sys_days(ymd).time_since_epoch().count();
  return ((days * 24 + hour) * 60 + minute - offset_minutes) * 60'000 +
         static_cast<int64_t>(second) * 1000 + millis;
}

}  // namespace

std::string PropertyField(char kind, std::string_view service_id, std::string_view property) {
  std::string out;
  out.reserve(3 + service_id.size() + property.size());
  out.push_back(kind);
  out.push_back(kSep);
  out.append(service_id);
  out.push_back(kSep);
  out.append(property);
  return out;
}

std::string ServiceTimeField(char kind, std::string_view service_id) {
  std::string out(1, kind);
  out.push_back(kSep);
  out.append(service_id);
  return out;
}

std::string Stamp(int64_t time_ms, std::string_view text) {
  return fmt::format("{} {}", time_ms, text);
}

void AppendSideFields(const std::string& service_id, const ShadowSide& side, bool desired,
                      std::vector<std::pair<std::string, std::string>>& out) {
  const char kind = desired ? field::kDesired : field::kReported;
  for (const auto& [name, value] : side.properties) {
    out.emplace_back(PropertyField(kind, service_id, name),
                     Stamp(value.time_ms, value.value.dump()));
  }
  if (side.event_ms > 0) {
    out.emplace_back(
        ServiceTimeField(desired ? field::kDesiredTime : field::kReportedTime, service_id),
        Stamp(side.event_ms, side.event_time));
  }
}

DeviceShadow DecodeHash(const std::string& device_id,
                        const std::vector<std::pair<std::string, std::string>>& hash) {
  DeviceShadow shadow;
  shadow.device_id = device_id;
  shadow.exists = !hash.empty();
  for (const auto& [name, value] : hash) {
    if (name == field::kVersion) {
      shadow.version = ParseInt(value).value_or(0);
    } else if (name == field::kTenant) {
      shadow.tenant_id = value;
    } else if (name == field::kWriteSeq) {
      shadow.write_seq = ParseInt(value).value_or(0);
    } else if (name == field::kPropertySet) {
      shadow.last_property_set = PropertySetFromJson(nlohmann::json::parse(value, nullptr, false));
    } else if (name.size() > 2 && name[1] == kSep) {
      const char kind = name[0];
      const std::string_view rest = std::string_view(name).substr(2);
      auto stamped = Unstamp(value);
      if (!stamped) {
        continue;
      }
      if (kind == field::kReportedTime || kind == field::kDesiredTime) {
        ShadowSide& side = SideOf(shadow.services[std::string(rest)], kind == field::kDesiredTime);
        side.event_ms = stamped->first;
        side.event_time = std::string(stamped->second);
        continue;
      }
      const size_t sep = rest.find(kSep);
      if (sep == std::string_view::npos || (kind != field::kReported && kind != field::kDesired)) {
        continue;
      }
      auto parsed = nlohmann::json::parse(stamped->second, nullptr, false);
      if (parsed.is_discarded()) {
        continue;
      }
      ShadowSide& side =
          SideOf(shadow.services[std::string(rest.substr(0, sep))], kind == field::kDesired);
      side.properties[std::string(rest.substr(sep + 1))] =
          PropertyValue{.value = std::move(parsed), .time_ms = stamped->first};
    }
  }
  return shadow;
}

nlohmann::json SideToJson(const std::map<std::string, ServiceShadow>& services, bool desired) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [service_id, service] : services) {
    const ShadowSide& side = SideOf(service, desired);
    if (side.properties.empty() && side.event_ms == 0) {
      continue;
    }
    nlohmann::json properties = nlohmann::json::object();
    nlohmann::json metadata = nlohmann::json::object();
    for (const auto& [name, value] : side.properties) {
      properties[name] = value.value;
      metadata[name] = value.time_ms;
    }
    out[service_id] = {{"properties", std::move(properties)},
                       {"metadata", std::move(metadata)},
                       {"event_time", side.event_time},
                       {"event_ms", side.event_ms}};
  }
  return out;
}

void SideFromJson(const nlohmann::json& json, bool desired,
                  std::map<std::string, ServiceShadow>& services) {
  if (!json.is_object()) {
    return;
  }
  for (const auto& [service_id, entry] : json.items()) {
    if (!entry.is_object()) {
      continue;
    }
    ShadowSide& side = SideOf(services[service_id], desired);
    side.event_time = entry.value("event_time", "");
    side.event_ms = entry.value("event_ms", int64_t{0});
    const nlohmann::json& properties = entry.value("properties", nlohmann::json::object());
    const nlohmann::json& metadata = entry.value("metadata", nlohmann::json::object());
    if (!properties.is_object()) {
      continue;
    }
    for (const auto& [name, value] : properties.items()) {
      int64_t time_ms = side.event_ms;
      if (metadata.is_object() && metadata.contains(name) && metadata[name].is_number_integer()) {
        time_ms = metadata[name].get<int64_t>();
      }
      side.properties[name] = PropertyValue{.value = value, .time_ms = time_ms};
    }
  }
}

nlohmann::json PropertySetToJson(const PropertySetRecord& record) {
  return {{"request_id", record.request_id},
          {"result_code", record.result_code},
          {"result_desc", record.result_desc},
          {"time_ms", record.time_ms}};
}

std::optional<PropertySetRecord> PropertySetFromJson(const nlohmann::json& json) {
  if (!json.is_object() || !json.contains("request_id")) {
    return std::nullopt;
  }
  PropertySetRecord record;
  record.request_id = json.value("request_id", "");
  record.result_code = json.value("result_code", 0);
  record.result_desc = json.value("result_desc", "");
  record.time_ms = json.value("time_ms", int64_t{0});
  return record;
}

nlohmann::json Delta(const ServiceShadow& service) {
  nlohmann::json delta = nlohmann::json::object();
  for (const auto& [name, desired] : service.desired.properties) {
    auto reported = service.reported.properties.find(name);
    if (reported == service.reported.properties.end() || reported->second.value != desired.value) {
      delta[name] = desired.value;
    }
  }
  return delta;
}

std::optional<nlohmann::json> PropertySetBody(const DeviceShadow& shadow) {
  nlohmann::json services = nlohmann::json::array();
  for (const auto& [service_id, service] : shadow.services) {
    nlohmann::json delta = Delta(service);
    if (!delta.empty()) {
      services.push_back({{"service_id", service_id}, {"properties", std::move(delta)}});
    }
  }
  if (services.empty()) {
    return std::nullopt;
  }
  return nlohmann::json{{"object_device_id", shadow.device_id}, {"services", std::move(services)}};
}

nlohmann::json DeviceGetResponse(const DeviceShadow& shadow, std::string_view service_id) {
  auto side_json = [](const ShadowSide& side) {
    nlohmann::json properties = nlohmann::json::object();
    for (const auto& [name, value] : side.properties) {
      properties[name] = value.value;
    }
    nlohmann::json out = {{"properties", std::move(properties)}};
    if (!side.event_time.empty()) {
      out["event_time"] = side.event_time;
    }
    return out;
  };
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& [id, service] : shadow.services) {
    if (!service_id.empty() && id != service_id) {
      continue;
    }
    entries.push_back({{"service_id", id},
                       {"desired", side_json(service.desired)},
                       {"reported", side_json(service.reported)},
                       {"version", shadow.version}});
  }
  return {{"object_device_id", shadow.device_id}, {"shadow", std::move(entries)}};
}

std::string IotdaTime(int64_t time_ms) {
  const std::time_t seconds = static_cast<std::time_t>(time_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:04d}{:02d}{:02d}T{:02d}{:02d}{:02d}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string Rfc3339Time(int64_t time_ms) {
  const std::time_t seconds = static_cast<std::time_t>(time_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, time_ms % 1000);
}

std::optional<int64_t> ParseEventTime(std::string_view text) {
  // yyyyMMdd'T'HHmmss'Z'
  if (text.size() == 16 && text[8] == 'T' && text[15] == 'Z') {
    const int year = Digits(text, 0, 4);
    const int month = Digits(text, 4, 2);
    const int day = Digits(text, 6, 2);
    const int hour = Digits(text, 9, 2);
    const int minute = Digits(text, 11, 2);
    const int second = Digits(text, 13, 2);
    if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) {
      return std::nullopt;
    }
    return ToUnixMs(year, month, day, hour, minute, second, 0, 0);
  }
  // yyyy-MM-ddTHH:mm:ss[.fff...](Z|±HH:mm)
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't') || text[13] != ':' || text[16] != ':') {
    return std::nullopt;
  }
  const int year = Digits(text, 0, 4);
  const int month = Digits(text, 5, 2);
  const int day = Digits(text, 8, 2);
  const int hour = Digits(text, 11, 2);
  const int minute = Digits(text, 14, 2);
  const int second = Digits(text, 17, 2);
  if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) {
    return std::nullopt;
  }
  size_t pos = 19;
  int millis = 0;
  if (pos < text.size() && text[pos] == '.') {
    size_t digits = 0;
    ++pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 3) {
        millis = millis * 10 + (text[pos] - '0');
      }
      ++digits;
      ++pos;
    }
    if (digits == 0) {
      return std::nullopt;
    }
    for (size_t i = digits; i < 3; ++i) {
      millis *= 10;
    }
  }
  int offset = 0;
  if (pos + 1 == text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    offset = 0;
  } else if (pos + 6 == text.size() && (text[pos] == '+' || text[pos] == '-') &&
             text[pos + 3] == ':') {
    const int oh = Digits(text, pos + 1, 2);
    const int om = Digits(text, pos + 4, 2);
    if (oh < 0 || om < 0 || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset = (text[pos] == '-' ? -1 : 1) * (oh * 60 + om);
  } else {
    return std::nullopt;
  }
  return ToUnixMs(year, month, day, hour, minute, second, millis, offset);
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status CheckKey(std::string_view field, std::string_view key) {
  if (key.empty()) {
    return common::InvalidField(field, "empty key");
  }
  if (key.find_first_of(std::string_view(".$\0", 3)) != std::string_view::npos) {
    return common::InvalidField(field, "keys must not contain '.', '$' or NUL");
  }
  return absl::OkStatus();
}

}  // namespace iot::shadow
