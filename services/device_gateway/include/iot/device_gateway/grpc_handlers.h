#pragma once

// The gateway's gRPC handlers (src/grpc/): iot.device_gateway.v1.InternalDownlink, proto <->
// DownlinkService. The domain headers (downlink.h) know nothing of gRPC.

#include <grpcpp/impl/service_type.h>

#include <memory>

#include "iot/common/auth.h"
#include "iot/device_gateway/downlink.h"

namespace iot::device_gateway {

/// The InternalDownlink gRPC handler (service credential: Access::kInternal).
std::shared_ptr<grpc::Service> MakeDownlinkHandler(std::shared_ptr<DownlinkService> service,
                                                   std::shared_ptr<common::Authenticator> auth);

}  // namespace iot::device_gateway
