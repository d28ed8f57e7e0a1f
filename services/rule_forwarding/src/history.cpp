#include "iot/rule_forwarding/history.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "iot/common/crypto.h"
#include "iot/common/json_limits.h"
#include "iot/common/status.h"

namespace iot::rule_forwarding {
namespace {

using common::InvalidField;

constexpr int64_t kMaxBucketSeconds = 31 * 86'400;
constexpr int32_t kMaxLimit = 1000;
constexpr std::string_view kPartitionPrefix = "property_history_p";

/// Reads `width` digits at `pos` (advancing it), or nullopt.
std::optional<int> Digits(std::string_view s, size_t& pos, size_t width) {
  if (pos + width > s.size()) {
    return std::nullopt;
  }
  int value = 0;
  const auto [end, ec] = std::from_chars(s.data() + pos, s.data() + pos + width, value);
  if (ec != std::errc() || end != s.data() + pos + width) {
    return std::nullopt;
  }
  pos += width;
  return value;
}

bool Expect(std::string_view s, size_t& pos, char c) {
  if (pos < s.size() && (s[pos] == c || (c == 'T' && s[pos] == 't'))) {
    ++pos;
    return true;
  }
  return false;
}

std::optional<int64_t> CivilToMs(int y, int mo, int d, int h, int mi, int sec) {
  using namespace std::chrono;
  const year_month_day date{year{y}, month{static_cast<unsigned>(mo)},
                            day{static_cast<unsigned>(d)}};
  if (!date.ok() || h > 23 || mi > 59 || sec > 60) {
    return std::nullopt;
  }
  const int64_t days = sys_days(date).time_since_epoch().count();
  return ((days * 24 + h) * 60 + mi) * 60'000 + int64_t{sec} * 1000;
}

std::optional<int64_t> ParseRfc3339(std::string_view s) {
  size_t p = 0;
  auto y = Digits(s, p, 4);
  if (!y || !Expect(s, p, '-')) {
    return std::nullopt;
  }
  auto mo = Digits(s, p, 2);
  if (!mo || !Expect(s, p, '-')) {
    return std::nullopt;
  }
  auto d = Digits(s, p, 2);
  if (!d || !(Expect(s, p, 'T') || Expect(s, p, ' '))) {
    return std::nullopt;
  }
  auto h = Digits(s, p, 2);
  if (!h || !Expect(s, p, ':')) {
    return std::nullopt;
  }
  auto mi = Digits(s, p, 2);
  if (!mi || !Expect(s, p, ':')) {
    return std::nullopt;
  }
  auto sec = Digits(s, p, 2);
  if (!sec) {
    return std::nullopt;
  }
  auto ms = CivilToMs(*y, *mo, *d, *h, *mi, *sec);
  if (!ms) {
    return std::nullopt;
  }
  if (p < s.size() && s[p] == '.') {
    ++p;
    int64_t scale = 100;
    const size_t start = p;
    for (; p < s.size() && s[p] >= '0' && s[p] <= '9'; ++p) {
      *ms += (s[p] - '0') * scale;
      scale /= 10;
    }
    if (p == start) {
      return std::nullopt;
    }
  }
  if (p < s.size() && (s[p] == 'Z' || s[p] == 'z')) {
    return p + 1 == s.size() ? ms : std::nullopt;
  }
  if (p < s.size() && (s[p] == '+' || s[p] == '-')) {
    const int sign = s[p] == '+' ? 1 : -1;
    ++p;
    auto oh = Digits(s, p, 2);
    if (!oh || !Expect(s, p, ':')) {
      return std::nullopt;
    }
    auto om = Digits(s, p, 2);
    if (!om || p != s.size() || *oh > 23 || *om > 59) {
      return std::nullopt;
    }
    return *ms - sign * (int64_t{*oh} * 60 + *om) * 60'000;
  }
  return std::nullopt;
}

std::optional<int64_t> ParseIotda(std::string_view s) {
  if (s.size() != 16 || (s[8] != 'T' && s[8] != 't') || (s[15] != 'Z' && s[15] != 'z')) {
    return std::nullopt;
  }
  size_t p = 0;
  auto y = Digits(s, p, 4);
  auto mo = Digits(s, p, 2);
  auto d = Digits(s, p, 2);
  p = 9;
  auto h = Digits(s, p, 2);
  auto mi = Digits(s, p, 2);
  auto sec = Digits(s, p, 2);
  if (!y || !mo || !d || !h || !mi || !sec) {
    return std::nullopt;
  }
  return CivilToMs(*y, *mo, *d, *h, *mi, *sec);
}

struct Civil {
  int y;
  unsigned mo, d;
  int64_t h, mi, s, ms;
};

Civil ToCivil(int64_t ms) {
  using namespace std::chrono;
  const int64_t day = DayOf(ms);
  const int64_t rest = ms - day * kMsPerDay;
  const year_month_day date{sys_days{days{day}}};
  return {static_cast<int>(date.year()),
          static_cast<unsigned>(date.month()),
          static_cast<unsigned>(date.day()),
          rest / 3'600'000,
          rest / 60'000 % 60,
          rest / 1000 % 60,
          rest % 1000};
}

int64_t FloorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

absl::StatusOr<int64_t> TimeField(std::string_view field, const std::string& text) {
  auto ms = ParseTimestamp(text);
  if (!ms.ok()) {
    return InvalidField(field, std::string(ms.status().message()));
  }
  return ms;
}

const nlohmann::json* ServicesOf(const nlohmann::json& payload) {
  if (!payload.is_object()) {
    return nullptr;
  }
  if (auto it = payload.find("services"); it != payload.end() && it->is_array()) {
    return &*it;
  }
  const auto nd = payload.find("notify_data");
  if (nd == payload.end() || !nd->is_object()) {
    return nullptr;
  }
  const auto body = nd->find("body");
  if (body == nd->end() || !body->is_object()) {
    return nullptr;
  }
  const auto services = body->find("services");
  return services != body->end() && services->is_array() ? &*services : nullptr;
}

}  // namespace

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<HistoryRow> RowsOf(const Delivery& delivery) {
  std::vector<HistoryRow> rows;
  const nlohmann::json* services = ServicesOf(delivery.payload);
  if (services == nullptr) {
    return rows;
  }
  for (const auto& service : *services) {
    if (!service.is_object()) {
      continue;
    }
    const auto id = service.find("service_id");
    const auto properties = service.find("properties");
    if (id == service.end() || !id->is_string() || properties == service.end() ||
        !properties->is_object()) {
      continue;
    }
    int64_t time_ms = delivery.event_time_unix_ms;
    if (auto t = service.find("event_time"); t != service.end() && t->is_string()) {
      if (auto parsed = ParseTimestamp(t->get<std::string>()); parsed.ok()) {
        time_ms = *parsed;
      }
    }
    for (const auto& [name, value] : properties->items()) {
      HistoryRow row{.tenant_id = delivery.tenant_id,
                     .device_id = delivery.device_id,
                     .service_id = id->get<std::string>(),
                     .property = name,
                     .time_ms = time_ms,
                     .value_json = value.dump(),
                     .num = std::nullopt,
                     .dedupe_key = delivery.delivery_id};
      if (value.is_number()) {
        row.num = value.get<double>();
      }
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

absl::StatusOr<int64_t> ParseTimestamp(std::string_view text) {
  std::optional<int64_t> ms = ParseIotda(text);
  if (!ms) {
    ms = ParseRfc3339(text);
  }
  if (!ms) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' is not a time: use RFC 3339 (2026-11-26T20:00:00Z) or "
                    "yyyyMMddTHHmmssZ",
                    text));
  }
  return *ms;
}

std::string FormatTimestamp(int64_t ms) {
  const Civil c = ToCivil(ms);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", c.y, c.mo, c.d, c.h, c.mi, c.s,
                     c.ms);
}

std::string PgTimestamp(int64_t ms) {
  const Civil c = ToCivil(ms);
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}+00", c.y, c.mo, c.d, c.h, c.mi, c.s,
                     c.ms);
}

absl::StatusOr<int64_t> ParseBucket(std::string_view text) {
  int64_t unit = 1;
  std::string_view number = text;
  if (!text.empty()) {
    switch (text.back()) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86'400;
        break;
      default:
        unit = 0;
    }
    if (unit != 0) {
      number.remove_suffix(1);
    } else {
      unit = 1;
    }
  }
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (number.empty() || ec != std::errc() || end != number.data() + number.size() || value <= 0 ||
      value > kMaxBucketSeconds / unit) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' is not a bucket width: use e.g. 30s, 5m, 1h, 1d (1 s to 31 d)", text));
  }
  return value * unit;
}

int64_t BucketStart(int64_t time_ms, int64_t bucket_ms) {
  return FloorDiv(time_ms, bucket_ms) * bucket_ms;
}

int64_t DayOf(int64_t time_ms) { return FloorDiv(time_ms, kMsPerDay); }

std::string PartitionName(int64_t day) {
  const Civil c = ToCivil(day * kMsPerDay);
  return fmt::format("{}{:04}{:02}{:02}", kPartitionPrefix, c.y, c.mo, c.d);
}

std::optional<int64_t> PartitionDay(std::string_view name) {
  if (!name.starts_with(kPartitionPrefix) || name.size() != kPartitionPrefix.size() + 8) {
    return std::nullopt;
  }
  const std::string_view date = name.substr(kPartitionPrefix.size());
  size_t p = 0;
  auto y = Digits(date, p, 4);
  auto mo = Digits(date, p, 2);
  auto d = Digits(date, p, 2);
  if (!y || !mo || !d) {
    return std::nullopt;
  }
  auto ms = CivilToMs(*y, *mo, *d, 0, 0, 0);
  if (!ms) {
    return std::nullopt;
  }
  return DayOf(*ms);
}

std::vector<std::string> PartitionsToDrop(std::span<const std::string> partitions, int64_t now_ms,
                                          int64_t retention_days) {
  const int64_t cutoff_ms = now_ms - retention_days * kMsPerDay;
  std::vector<std::string> drop;
  for (const std::string& name : partitions) {
    if (auto day = PartitionDay(name); day && (*day + 1) * kMsPerDay <= cutoff_ms) {
      drop.push_back(name);
    }
  }
  std::sort(drop.begin(), drop.end());
  return drop;
}

std::string RawMarker(int64_t time_ms, std::string_view key) {
  return common::HexEncode(nlohmann::json{{"t", time_ms}, {"k", key}}.dump());
}

std::string BucketMarker(int64_t next_bucket_ms) {
  return common::HexEncode(nlohmann::json{{"b", next_bucket_ms}}.dump());
}

absl::StatusOr<HistoryQuery> MakeHistoryQuery(std::string tenant_id, const HistoryQueryInput& in,
                                              int64_t now_ms) {
  HistoryQuery q;
  q.tenant_id = std::move(tenant_id);
  q.device_id = in.device_id;
  q.service_id = in.service_id;
  q.property = in.property;
  for (const auto& [field, value] :
       {std::pair<std::string_view, const std::string&>{"device_id", in.device_id},
        {"service_id", in.service_id},
        {"property", in.property}}) {
    if (value.empty()) {
      return InvalidField(field, "required");
    }
  }
  q.end_ms = now_ms;
  if (!in.end_time.empty()) {
    auto end = TimeField("end_time", in.end_time);
    if (!end.ok()) {
      return end.status();
    }
    q.end_ms = *end;
  }
  q.start_ms = q.end_ms - kMsPerDay;
  if (!in.start_time.empty()) {
    auto start = TimeField("start_time", in.start_time);
    if (!start.ok()) {
      return start.status();
    }
    q.start_ms = *start;
  }
  if (q.start_ms >= q.end_ms) {
    return InvalidField("start_time", "must be before end_time");
  }
  if (in.limit < 0 || in.limit > kMaxLimit) {
    return InvalidField("limit", fmt::format("must be 1..{} (0: 100)", kMaxLimit));
  }
  q.limit = in.limit == 0 ? 100 : in.limit;
  if (!in.bucket.empty()) {
    auto bucket = ParseBucket(in.bucket);
    if (!bucket.ok()) {
      return InvalidField("bucket", std::string(bucket.status().message()));
    }
    q.bucket_seconds = *bucket;
  }
  if (!in.marker.empty()) {
    auto text = common::HexDecode(in.marker);
    // The caller's page marker: JSON from outside, bounded like any other.
    nlohmann::json marker;
    if (text.ok()) {
      marker = common::ParseJson("marker", *text).value_or(nlohmann::json());
    }
    const bool bucketed = q.bucket_seconds > 0;
    const char* time_key = bucketed ? "b" : "t";
    if (!marker.is_object() || !marker.contains(time_key) ||
        !marker[time_key].is_number_integer() ||
        (!bucketed && (!marker.contains("k") || !marker["k"].is_string()))) {
      return InvalidField("marker", "not a marker of this query");
    }
    q.after_ms = marker[time_key].get<int64_t>();
    if (!bucketed) {
      q.after_key = marker["k"].get<std::string>();
    }
  }
  return q;
}

}  // namespace iot::rule_forwarding
