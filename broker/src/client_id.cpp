#include "client_id.h"

#include <fmt/format.h>

namespace iot::broker {
namespace {

constexpr size_t kMaxDeviceIdLength = 256;
constexpr size_t kTimestampLength = 10;

bool AllDigits(std::string_view text) {
  for (const char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return !text.empty();
}

int Digits(std::string_view text) {
  int value = 0;
  for (const char c : text) {
    value = value * 10 + (c - '0');
  }
  return value;
}

std::optional<std::chrono::sys_seconds> ParseHour(std::string_view ts) {
  if (ts.size() != kTimestampLength || !AllDigits(ts)) {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{
      std::chrono::year{Digits(ts.substr(0, 4))},
      std::chrono::month{static_cast<unsigned>(Digits(ts.substr(4, 2)))},
      std::chrono::day{static_cast<unsigned>(Digits(ts.substr(6, 2)))}};
  const int hour = Digits(ts.substr(8, 2));
  if (!date.ok() || hour > 23) {
    return std::nullopt;
  }
  return std::chrono::sys_days{date} + std::chrono::hours{hour};
}

}  // namespace

bool IsValidDeviceId(std::string_view device_id) {
  if (device_id.empty() || device_id.size() > kMaxDeviceIdLength) {
    return false;
  }
  for (const char c : device_id) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '/' || c == '+' || c == '#') {
      return false;
    }
  }
  return true;
}

std::optional<DeviceClientId> ParseClientId(std::string_view client_id) {
  // {device_id}_0_{sign}_{YYYYMMDDHH}: the fixed tail is "_0_S_" + 10 digits.
  constexpr size_t kTail = 5 + kTimestampLength;
  if (client_id.size() <= kTail) {
    return std::nullopt;
  }
  const std::string_view tail = client_id.substr(client_id.size() - kTail);
  if (tail[0] != '_' || tail[1] != '0' || tail[2] != '_' || (tail[3] != '0' && tail[3] != '1') ||
      tail[4] != '_') {
    return std::nullopt;
  }
  const std::string_view timestamp = tail.substr(5);
  const auto hour = ParseHour(timestamp);
  if (!hour) {
    return std::nullopt;
  }
  const std::string_view device_id = client_id.substr(0, client_id.size() - kTail);
  if (!IsValidDeviceId(device_id)) {
    return std::nullopt;
  }
  return DeviceClientId{.device_id = std::string(device_id),
                        .sign_type = tail[3] - '0',
                        .timestamp = std::string(timestamp),
                        .hour_start = *hour};
}

bool TimestampWithinSkew(std::chrono::sys_seconds hour_start,
                         std::chrono::system_clock::time_point now, std::chrono::seconds skew) {
  // In seconds: a client id may name any year 0000..9999, far outside what the clock's
  // nanoseconds can hold (comparing in them overflowed: found by fuzz/broker_credentials).
  const auto now_seconds = std::chrono::floor<std::chrono::seconds>(now);
  const auto earliest = hour_start - skew;
  const auto latest = hour_start + std::chrono::hours{1} + skew;
  return now_seconds >= earliest && now_seconds < latest;
}

std::string FormatClientTimestamp(std::chrono::system_clock::time_point now) {
  const auto hours = std::chrono::floor<std::chrono::hours>(now);
  const std::chrono::year_month_day date{std::chrono::floor<std::chrono::days>(hours)};
  const auto hour = (hours - std::chrono::floor<std::chrono::days>(hours)).count();
  return fmt::format("{:04}{:02}{:02}{:02}", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()), hour);
}

}  // namespace iot::broker
