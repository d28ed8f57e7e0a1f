#include "alink_topics.h"

#include <fmt/format.h>

#include "client_id.h"

namespace iot::broker {
namespace {

/// The rest of `text` after `prefix`, or nullopt when it does not start with it.
std::optional<std::string_view> After(std::string_view text, std::string_view prefix) {
  if (!text.starts_with(prefix)) {
    return std::nullopt;
  }
  return text.substr(prefix.size());
}

/// The rest of `text` after the literal levels `/{a}/{b}/`... given as `parts`, joined by `/`
/// and ended by `/` (`{"", "sys", pk, dn, ""}` is `/sys/{pk}/{dn}/`).
std::optional<std::string_view> AfterLevels(std::string_view text,
                                            std::initializer_list<std::string_view> parts) {
  bool first = true;
  for (const std::string_view part : parts) {
    if (!first) {
      if (!text.starts_with('/')) {
        return std::nullopt;
      }
      text.remove_prefix(1);
    }
    first = false;
    auto rest = After(text, part);
    if (!rest) {
      return std::nullopt;
    }
    text = *rest;
  }
  return text;
}

bool NonEmpty(const std::optional<std::string_view>& rest) { return rest && !rest->empty(); }

bool Exactly(std::string_view text, std::initializer_list<std::string_view> parts) {
  const auto rest = AfterLevels(text, parts);
  return rest && rest->empty();
}

/// One level (no `/`), not empty.
bool IsLevel(std::string_view text) {
  return !text.empty() && text.find('/') == std::string_view::npos;
}

/// `/ext/rrpc/{id}/sys/{pk}/{dn}/{rest}`: rest (nullopt when not of this shape). The id is one
/// level, `+` in a filter, never `#`.
std::optional<std::string_view> ExtRrpcRest(std::string_view topic, std::string_view pk,
                                            std::string_view dn) {
  const auto after = After(topic, "/ext/rrpc/");
  if (!after) {
    return std::nullopt;
  }
  const size_t slash = after->find('/');
  if (slash == 0 || slash == std::string_view::npos || after->substr(0, slash) == "#") {
    return std::nullopt;
  }
  return AfterLevels(after->substr(slash), {"", "sys", pk, dn, ""});
}

/// The receive set as topics or as filters (a filter's wildcards can only come after the
/// literal part naming the device: the RRPC id level aside, which may be `+`).
bool InReceiveSet(std::string_view pk, std::string_view dn, std::string_view topic) {
  return NonEmpty(AfterLevels(topic, {"", "sys", pk, dn, ""})) ||
         NonEmpty(AfterLevels(topic, {"", pk, dn, "user", ""})) ||
         Exactly(topic, {"", "shadow", "get", pk, dn}) ||
         Exactly(topic, {"", "ext", "ntp", pk, dn, "response"}) ||
         NonEmpty(ExtRrpcRest(topic, pk, dn));
}

bool HasWildcard(std::string_view topic) {
  return topic.find_first_of("+#") != std::string_view::npos;
}

}  // namespace

bool AlinkMayPublish(std::string_view pk, std::string_view dn, std::string_view topic) {
  topic = StripAlinkRequestId(topic);
  if (const auto rest = AfterLevels(topic, {"", "sys", pk, dn, ""})) {
    if (const auto thing = After(*rest, "thing/")) {
      return !thing->empty();
    }
    if (const auto id = After(*rest, "rrpc/response/")) {
      return IsLevel(*id);
    }
    return false;
  }
  return NonEmpty(AfterLevels(topic, {"", pk, dn, "user", ""})) ||
         Exactly(topic, {"", "shadow", "update", pk, dn}) ||
         Exactly(topic, {"", "ext", "ntp", pk, dn, "request"}) ||
         NonEmpty(ExtRrpcRest(topic, pk, dn));
}

bool AlinkMaySubscribe(std::string_view pk, std::string_view dn, std::string_view filter) {
  return InReceiveSet(pk, dn, filter);
}

bool AlinkMayReceive(std::string_view pk, std::string_view dn, std::string_view topic) {
  return !HasWildcard(topic) && InReceiveSet(pk, dn, topic);
}

std::optional<std::string> AlinkUplinkRelayTopic(std::string_view device_id, std::string_view pk,
                                                 std::string_view dn, std::string_view topic,
                                                 uint32_t partitions) {
  if (!AlinkMayPublish(pk, dn, topic)) {
    return std::nullopt;
  }
  return fmt::format("{}{}/{}/{}{}", kUplinkPrefix, UplinkPartition(device_id, partitions),
                     device_id, kAlinkRelayMarker, StripAlinkRequestId(topic));
}

std::optional<DownlinkTopic> ParseAlinkDownlinkTopic(std::string_view topic) {
  auto rest = After(topic, kDownlinkPrefix);
  if (!rest) {
    return std::nullopt;
  }
  const size_t slash = rest->find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view device_id = rest->substr(0, slash);
  const std::string_view suffix = rest->substr(slash + 1);
  const auto device_topic = After(suffix, kAlinkRelayMarker);
  if (!IsValidDeviceId(device_id) || !device_topic || !device_topic->starts_with('/')) {
    return std::nullopt;
  }
  // The device id is `{pk}_{dn}`; both may contain `_`, so try every split: the topic must name
  // the device itself.
  for (size_t split = device_id.find('_'); split != std::string_view::npos;
       split = device_id.find('_', split + 1)) {
    const std::string_view pk = device_id.substr(0, split);
    const std::string_view dn = device_id.substr(split + 1);
    if (!pk.empty() && !dn.empty() && AlinkMayReceive(pk, dn, *device_topic)) {
      return DownlinkTopic{.device_id = std::string(device_id),
                           .suffix = std::string(suffix),
                           .device_topic = std::string(*device_topic)};
    }
  }
  return std::nullopt;
}

}  // namespace iot::broker
