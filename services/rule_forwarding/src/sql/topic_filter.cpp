#include "iot/rule_forwarding/sql/topic_filter.h"

namespace iot::rule_forwarding::sql {

namespace {

constexpr std::size_t kMaxTopicBytes = 65535;

}  // namespace

std::optional<TopicFilterError> ValidateTopicFilter(std::string_view filter) {
  if (filter.empty()) {
    return TopicFilterError{0, "the filter is empty"};
  }
  if (filter.size() > kMaxTopicBytes) {
    return TopicFilterError{kMaxTopicBytes, "the filter is longer than 65535 bytes"};
  }
  std::size_t level_start = 0;
  for (std::size_t i = 0; i < filter.size(); ++i) {
    const char c = filter[i];
    if (c == '\0') {
      return TopicFilterError{i, "NUL is not allowed"};
    }
    if (c == '/') {
      level_start = i + 1;
      continue;
    }
    if (c == '+' || c == '#') {
      const bool alone = i == level_start && (i + 1 == filter.size() || filter[i + 1] == '/');
      if (!alone) {
        return TopicFilterError{
            i, c == '+' ? "'+' must occupy a whole level" : "'#' must occupy a whole level"};
      }
      if (c == '#' && i + 1 != filter.size()) {
        return TopicFilterError{i, "'#' must be the last level"};
      }
    }
  }
  return std::nullopt;
}

bool TopicMatchesFilter(std::string_view filter, std::string_view topic) {
  if (filter.empty() || topic.empty()) {
    return false;
  }
  if (topic.front() == '$' && (filter.front() == '+' || filter.front() == '#')) {
    return false;
  }
  // One pass over both strings, level by level; f and t always start a level together.
  const std::size_t fn = filter.size();
  const std::size_t tn = topic.size();
  std::size_t f = 0;
  std::size_t t = 0;
  for (;;) {
    if (f < fn && filter[f] == '#') {
      return f + 1 == fn;
    }
    if (f < fn && filter[f] == '+' && (f + 1 == fn || filter[f + 1] == '/')) {
      while (t < tn && topic[t] != '/') {
        ++t;
      }
      ++f;
    } else {
      for (; f < fn && filter[f] != '/'; ++f, ++t) {
        if (t >= tn || topic[t] != filter[f]) {
          return false;
        }
      }
      if (t < tn && topic[t] != '/') {
        return false;
      }
    }
    if (f == fn) {
      return t == tn;
    }
    if (t == tn) {
      // The topic ends here: only a trailing "/#" (which also matches the parent) remains.
      return f + 2 == fn && filter[f + 1] == '#';
    }
    ++f;
    ++t;
  }
}

}  // namespace iot::rule_forwarding::sql
