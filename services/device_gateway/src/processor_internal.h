#pragma once

// What processor.cpp and alink/uplink.cpp (the Alink part of UplinkProcessor) share.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace iot::device_gateway::internal {

/// At most this many errors are named in one validation_failed record.
inline constexpr size_t kMaxErrorsInRecord = 20;

/// JSON text of any bytes: invalid UTF-8 is replaced rather than refused.
std::string Dump(const nlohmann::json& value);

/// `errors` joined with "; ", and "(and N more)" when `total` is larger.
std::string JoinErrors(const std::vector<std::string>& errors, size_t total);

}  // namespace iot::device_gateway::internal
