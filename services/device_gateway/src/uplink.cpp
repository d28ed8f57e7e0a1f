#include "iot/device_gateway/uplink.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "iot/device_gateway/alink/uplink_codec.h"

namespace iot::device_gateway {

std::optional<std::string_view> AfterPartition(std::string_view rest) {
  const size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string_view::npos ||
      !std::all_of(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(slash),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return rest.substr(slash + 1);
}

std::optional<std::string> DeviceTopicOfRelay(std::string_view relay_topic) {
  if (!relay_topic.starts_with(kUplinkRelayPrefix)) {
    return std::nullopt;
  }
  const auto rest = AfterPartition(relay_topic.substr(kUplinkRelayPrefix.size()));
  if (!rest) {
    return std::nullopt;
  }
  return std::string("$oc/devices/").append(*rest);
}

std::string_view RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kUnknownTopic:
      return "unknown_topic";
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kRateLimited:
      return "rate_limited";
    case RejectReason::kMalformed:
      return "malformed";
    case RejectReason::kInvalidProperty:
      return "invalid_property";
    case RejectReason::kInvalidEvent:
      return "invalid_event";
    case RejectReason::kUnknownDevice:
      return "unknown_device";
    case RejectReason::kUnsupported:
      return "unsupported";
    case RejectReason::kTooDeep:
      return "too_deep";
    case RejectReason::kTooMany:
      return "too_many";
    case RejectReason::kTooLong:
      return "too_long";
  }
  return "unknown";
}

namespace {

/// Over the topic's byte or level limit: what to say; nullopt within them.
std::optional<std::string> TopicLimitViolation(std::string_view topic, const UplinkLimits& limits) {
  if (topic.size() > limits.max_topic_bytes) {
    return fmt::format("topic of {} bytes exceeds the limit of {}", topic.size(),
                       limits.max_topic_bytes);
  }
  const size_t levels = static_cast<size_t>(std::count(topic.begin(), topic.end(), '/')) + 1;
  if (levels > limits.max_topic_levels) {
    return fmt::format("topic of {} levels exceeds the limit of {}", levels,
                       limits.max_topic_levels);
  }
  return std::nullopt;
}

/// A topic over the limit is not repeated whole in records and logs.
std::string TruncatedTopic(std::string_view topic, size_t max_bytes) {
  if (topic.size() <= max_bytes) {
    return std::string(topic);
  }
  return std::string(topic.substr(0, max_bytes)) + "...";
}

/// Names the device of `device_topic` in `rejected` when the topic does (the rejection is
/// forwarded to its applications) and checks the topic's limits: false when refused.
bool AdmitDeviceTopic(const std::string& device_topic, const UplinkLimits& limits,
                      RejectedUplink& rejected) {
  // A device id over the limit names nobody (the broker only admits registered ids, so it is
  // not one of ours either).
  const std::string_view rest = std::string_view(device_topic).substr(12);  // "$oc/devices/"
  const std::string_view named = rest.substr(0, rest.find('/'));
  if (named.size() > limits.max_id_bytes) {
    rejected.topic = TruncatedTopic(device_topic, limits.max_topic_bytes);
    rejected.reason = RejectReason::kTooLong;
    rejected.detail = fmt::format("device id of {} bytes exceeds the limit of {}", named.size(),
                                  limits.max_id_bytes);
    return false;
  }
  if (named.size() < rest.size()) {
    rejected.device_id = std::string(named);
  }
  if (auto violation = TopicLimitViolation(device_topic, limits)) {
    rejected.topic = TruncatedTopic(device_topic, limits.max_topic_bytes);
    rejected.reason = RejectReason::kTooLong;
    rejected.detail = *std::move(violation);
    return false;
  }
  return true;
}

/// The payload's size limit (reports may have a lower one) and the device's rate: false when
/// refused.
bool AdmitSizeAndRate(const UplinkTopic& parsed, const std::optional<AlinkTopic>& alink,
                      size_t payload_size, const UplinkLimits& limits, RateLimiter& rate_limiter,
                      int64_t received_at_unix_ms, RejectedUplink& rejected) {
  const bool report = parsed.kind == UplinkKind::kPropertiesReport ||
                      parsed.kind == UplinkKind::kGatewayPropertiesReport ||
                      (alink && IsAlinkReport(alink->function));
  const size_t limit = report ? std::min(limits.max_report_bytes, limits.max_payload_bytes)
                              : limits.max_payload_bytes;
  if (payload_size > limit) {
    rejected.reason = RejectReason::kTooLarge;
    rejected.detail =
        fmt::format("payload of {} bytes exceeds the limit of {}", payload_size, limit);
    return false;
  }
  const bool response = parsed.kind == UplinkKind::kCommandResponse ||
                        parsed.kind == UplinkKind::kPropertiesSetResponse ||
                        parsed.kind == UplinkKind::kPropertiesGetResponse ||
                        (alink && IsAlinkResponse(alink->function));
  // Responses count in a bucket of their own, keyed apart from the device's messages.
  const std::string response_key =
      response ? std::string(parsed.device_id) + "\x1fresponses" : std::string();
  const auto age =
      std::chrono::milliseconds(std::max<int64_t>(0, NowUnixMs() - received_at_unix_ms));
  if (!rate_limiter.Allow(response ? std::string_view(response_key) : parsed.device_id, age)) {
    rejected.reason = RejectReason::kRateLimited;
    rejected.detail = fmt::format("over {} messages/s", limits.rate_per_second);
    return false;
  }
  return true;
}

}  // namespace

std::variant<UplinkMessage, RejectedUplink> AdmitUplink(std::string_view relay_topic,
                                                        std::string payload,
                                                        const UplinkLimits& limits,
                                                        RateLimiter& rate_limiter,
                                                        int64_t received_at_unix_ms) {
  RejectedUplink rejected{.message_id = {},
                          .reason = RejectReason::kUnknownTopic,
                          .device_id = {},
                          .topic = std::string(relay_topic),
                          .detail = {},
                          .received_at_unix_ms = received_at_unix_ms};
  const auto device_topic = DeviceTopicOfRelay(relay_topic);
  if (!device_topic) {
    rejected.detail = "not below iot/up/";
    return rejected;
  }
  rejected.topic = *device_topic;
  if (!AdmitDeviceTopic(*device_topic, limits, rejected)) {
    return rejected;
  }
  auto parsed = ParseUplinkTopic(*device_topic);
  if (!parsed) {
    rejected.detail = "not a device uplink topic";
    return rejected;
  }
  // An Alink device's topic is its Alibaba topic (alink/uplink_codec.h): what records and
  // rejections name.
  std::optional<AlinkTopic> alink;
  if (parsed->kind == UplinkKind::kAlink) {
    alink = ParseAlinkTopic(parsed->custom);
    rejected.topic = std::string(alink ? alink->topic : parsed->custom);
    if (!alink) {
      rejected.detail = "not an Alink device topic";
      return rejected;
    }
    parsed->request_id = alink->message_id;
  }
  if (parsed->request_id.size() > limits.max_id_bytes) {
    rejected.reason = RejectReason::kTooLong;
    rejected.detail = fmt::format("request id of {} bytes exceeds the limit of {}",
                                  parsed->request_id.size(), limits.max_id_bytes);
    return rejected;
  }
  if (!AdmitSizeAndRate(*parsed, alink, payload.size(), limits, rate_limiter, received_at_unix_ms,
                        rejected)) {
    return rejected;
  }
  if (parsed->kind == UplinkKind::kGatewayPropertiesReport) {
    rejected.reason = RejectReason::kUnsupported;
    rejected.detail = "sub-device property reports are not supported yet";
    return rejected;
  }
  return UplinkMessage{.message_id = {},
                       .kind = parsed->kind,
                       .device_id = std::string(parsed->device_id),
                       .topic = alink ? std::string(alink->topic) : *device_topic,
                       .request_id = std::string(parsed->request_id),
                       .payload = std::move(payload),
                       .received_at_unix_ms = received_at_unix_ms};
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string CompactUtc(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:04d}{:02d}{:02d}T{:02d}{:02d}{:02d}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

namespace {

bool Digits(std::string_view text, size_t pos, size_t count, int& out) {
  if (pos + count > text.size()) {
    return false;
  }
  out = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    if (text[i] < '0' || text[i] > '9') {
      return false;
    }
    out = out * 10 + (text[i] - '0');
  }
  return true;
}

}  // namespace

std::optional<int64_t> ParseDeviceTime(std::string_view text) {
  std::tm tm{};
  int year = 0;
  int month = 0;
  int millis = 0;
  bool ok = false;
  if (text.size() == 16 && text[8] == 'T' && text[15] == 'Z') {  // yyyyMMddTHHmmssZ
    ok = Digits(text, 0, 4, year) && Digits(text, 4, 2, month) && Digits(text, 6, 2, tm.tm_mday) &&
         Digits(text, 9, 2, tm.tm_hour) && Digits(text, 11, 2, tm.tm_min) &&
         Digits(text, 13, 2, tm.tm_sec);
  } else if (text.size() >= 20 && text[4] == '-' && text[7] == '-' && text[10] == 'T' &&
             text[13] == ':' && text[16] == ':' && text.back() == 'Z') {
    ok = Digits(text, 0, 4, year) && Digits(text, 5, 2, month) && Digits(text, 8, 2, tm.tm_mday) &&
         Digits(text, 11, 2, tm.tm_hour) && Digits(text, 14, 2, tm.tm_min) &&
         Digits(text, 17, 2, tm.tm_sec);
    if (ok && text.size() == 24 && text[19] == '.') {
      ok = Digits(text, 20, 3, millis);
    } else if (ok && text.size() != 20) {
      ok = false;
    }
  }
  if (!ok || month < 1 || month > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60) {
    return std::nullopt;
  }
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + millis;
}

}  // namespace iot::device_gateway
