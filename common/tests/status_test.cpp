#include "iot/common/status.h"

#include <gtest/gtest.h>

namespace iot::common {
namespace {

TEST(StatusTest, MapsEveryCodeBothWays) {
  for (int code = 0; code <= 16; ++code) {
    const absl::Status status(static_cast<absl::StatusCode>(code), code == 0 ? "" : "why");
    const grpc::Status grpc_status = ToGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(grpc_status.error_code()), code);
    EXPECT_EQ(FromGrpcStatus(grpc_status), status);
  }
}

TEST(StatusTest, NotFoundKeepsMessage) {
  const grpc::Status s = ToGrpcStatus(absl::NotFoundError("device 'd1' not found"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "device 'd1' not found");
}

TEST(StatusTest, InvalidFieldNamesTheField) {
  const absl::Status s = InvalidField("service_capabilities[2].properties[0].max", "min > max");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(s.message()), "service_capabilities[2].properties[0].max: min > max");
  EXPECT_EQ(FieldOf(s), "service_capabilities[2].properties[0].max");
  EXPECT_EQ(FieldOf(absl::InternalError("x")), "");
  EXPECT_EQ(ToGrpcStatus(s).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace iot::common
