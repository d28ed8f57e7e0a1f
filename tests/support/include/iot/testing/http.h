#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace iot::testing {

/// HTTP/1.0 GET on 127.0.0.1:`port`; returns the body of a 200 response.
absl::StatusOr<std::string> HttpGet(uint16_t port, const std::string& path);

/// Parses Prometheus text exposition format (0.0.4) strictly enough to catch a malformed
/// page: every sample line `name{label="v",...} value [timestamp]`, HELP/TYPE comments with a
/// known type, label values properly quoted. Returns each series (`name{labels}` as written)
/// with its value.
absl::StatusOr<std::map<std::string, double>> ParsePrometheusText(const std::string& text);

/// Sum of every series of metric `name` whose labels contain all of `labels` (`key="value"`).
double SumSeries(const std::map<std::string, double>& series, const std::string& name,
                 const std::map<std::string, std::string>& labels = {});

}  // namespace iot::testing
