#pragma once

// One rule for the broker plugin and the device-gateway: the `?_rid=...` that Alibaba's LinkSDK
// may append to the last level of a publish topic. The broker strips it before its ACL and relay,
// the gateway strips it again from what it is relayed; both must agree on where it is, or a topic
// the broker lets through is one the gateway does not know (fuzz/topics_fuzz.cpp checks it).

#include <string_view>

namespace iot::common {

/// `topic` without a `?_rid=...` in its last level (from the first `?_rid=` after the last `/`);
/// unchanged when there is none. A `?` anywhere else, or a `?` not followed by `_rid=`, is part of
/// the topic.
inline std::string_view StripAlinkRequestId(std::string_view topic) {
  constexpr std::string_view kMarker = "?_rid=";
  const size_t last_level = topic.rfind('/');
  const size_t marker = topic.find(kMarker, last_level == std::string_view::npos ? 0 : last_level);
  return marker == std::string_view::npos ? topic : topic.substr(0, marker);
}

}  // namespace iot::common
