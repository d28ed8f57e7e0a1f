#pragma once

#include <grpcpp/support/status.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace iot::common {

/// Expected failures are absl::Status values throughout the domain code; this is the one place
/// they become gRPC statuses. The codes map one to one (absl and gRPC share the numbering).
grpc::Status ToGrpcStatus(const absl::Status& status);

/// The reverse, for clients of peer services.
absl::Status FromGrpcStatus(const grpc::Status& status);

/// INVALID_ARGUMENT that names the offending field: "<field>: <reason>". The field is also
/// attached as payload kFieldPayload so handlers and tests can read it without parsing.
absl::Status InvalidField(std::string_view field, std::string_view reason);

/// The field named by InvalidField, or empty.
std::string FieldOf(const absl::Status& status);

/// Debian's abseil has its own absl::string_view (not std::string_view): pass std::string or
/// C strings to absl APIs.
inline constexpr const char* kFieldPayload = "iot.field";

}  // namespace iot::common
