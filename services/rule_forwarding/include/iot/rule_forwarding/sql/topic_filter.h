#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

/// MQTT topic filters (MQTT 3.1.1 / 5.0 section 4.7), as used by rule FROM clauses.
namespace iot::rule_forwarding::sql {

/// Why a topic filter is invalid, and the byte offset of the problem inside the filter.
struct TopicFilterError {
  std::size_t offset = 0;
  std::string message;
};

/// Checks a filter: non-empty, at most 65535 bytes, no NUL, `+` and `#` each alone in their
/// level, `#` only as the last level.
std::optional<TopicFilterError> ValidateTopicFilter(std::string_view filter);

/// Whether `topic` matches `filter` (`+` one level, `#` the remaining levels including the
/// parent, `$`-topics not matched by a leading wildcard). Expects a filter that passed
/// ValidateTopicFilter (anything else is safe but unspecified); an empty topic matches nothing.
/// Allocation-free.
bool TopicMatchesFilter(std::string_view filter, std::string_view topic);

}  // namespace iot::rule_forwarding::sql
