#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace iot::common {

/// A parsed `scheme://[user[:password]@]host[:port][/path][?query]` URL.
struct Url {
  std::string scheme;
  std::string user;
  std::string password;
  std::string host;
  uint16_t port = 0;  ///< 0 when the URL names none.
  std::string path;   ///< Without the leading '/'.
  std::string query;  ///< Without the leading '?'.
};

/// Parses `text`; user and password are percent-decoded. `default_port` fills a missing port.
absl::StatusOr<Url> ParseUrl(std::string_view text, uint16_t default_port = 0);

/// The URL with any password replaced by `***`, for logs.
std::string MaskUrl(std::string_view text);

}  // namespace iot::common
