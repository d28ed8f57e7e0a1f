#include "iot/common/status.h"

#include <fmt/format.h>

namespace iot::common {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) {
    return grpc::Status::OK;
  }
  return {static_cast<grpc::StatusCode>(status.code()), std::string(status.message())};
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) {
    return absl::OkStatus();
  }
  return {static_cast<absl::StatusCode>(status.error_code()), status.error_message()};
}

absl::Status InvalidField(std::string_view field, std::string_view reason) {
  absl::Status status = absl::InvalidArgumentError(fmt::format("{}: {}", field, reason));
  status.SetPayload(kFieldPayload, absl::Cord(std::string(field)));
  return status;
}

std::string FieldOf(const absl::Status& status) {
  auto payload = status.GetPayload(kFieldPayload);
  return payload ? std::string(*payload) : std::string();
}

}  // namespace iot::common
