#pragma once

// The bench's gRPC clients. thing-model (products, devices) is called through its generated
// stubs. The other services' public APIs are called by name through the protobuf descriptors
// linked into this binary, with requests and answers as JSON (proto field names): the bench
// builds whatever protos this tree has, and a service, method or field that is not there yet
// becomes a "not available: <reason>" figure instead of a build failure.

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fleet.h"

namespace google::protobuf {
class Message;
}

namespace iotbench {

/// Products and devices of the run, created through thing-model and deleted afterwards.
class ThingModelClient {
 public:
  ThingModelClient(const std::string& address, std::string api_key);
  ~ThingModelClient();

  absl::Status CreateProduct(const nlohmann::json& product);
  /// An alink product from an Alibaba TSL (its product_id is the TSL's productKey).
  absl::Status CreateTslProduct(const nlohmann::json& tsl);
  /// Adds `{product_id}_{prefix}{i}` for i in 1..count with `threads` concurrent callers.
  absl::StatusOr<std::vector<DeviceCredentials>> AddDevices(const std::string& product_id,
                                                            const std::string& prefix, int count,
                                                            int threads);
  /// Deletes the product and its devices.
  absl::Status DeleteProduct(const std::string& product_id);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Calls `package.Service/Method` of a service by name with JSON requests (see above).
class DynamicClient {
 public:
  DynamicClient(const std::string& address, std::string api_key);
  ~DynamicClient();

  /// OK when `service` (full name, e.g. "iot.shadow.v1.Shadows") has `method` in the protos
  /// built into the bench; else FAILED_PRECONDITION saying what is missing.
  [[nodiscard]] absl::Status Check(const std::string& service, const std::string& method) const;

  /// A unary call. Errors: the Check() error, INVALID_ARGUMENT when `request` does not fit the
  /// request message, or the server's status (code and message).
  absl::StatusOr<nlohmann::json> Call(const std::string& service, const std::string& method,
                                      const nlohmann::json& request,
                                      std::chrono::milliseconds timeout) const;

  /// A bidirectional stream (e.g. Subscriptions/Subscribe). Read() and Write() may be used by
  /// different threads at once (one reader, any writers); Finish() waits for a Write() in
  /// progress, and Write() after Finish() returns false.
  class Stream {
   public:
    virtual ~Stream() = default;
    virtual bool Write(const nlohmann::json& message) = 0;
    /// The next message, nullopt when the stream ended.
    virtual std::optional<nlohmann::json> Read() = 0;
    /// Cancels the call: a blocked Read() returns nullopt. Thread-safe.
    virtual void Cancel() = 0;
    /// The call's final status, once Read() returned nullopt (on the reading thread).
    virtual absl::Status Finish() = 0;
  };
  absl::StatusOr<std::unique_ptr<Stream>> OpenStream(const std::string& service,
                                                     const std::string& method) const;

 private:
  std::string api_key_;
  std::shared_ptr<grpc::Channel> channel_;
};

/// grpc::Status as absl::Status (same codes).
absl::Status FromGrpc(const grpc::Status& status);

/// `code: message` of a status, for the report.
std::string Describe(const absl::Status& status);

}  // namespace iotbench
