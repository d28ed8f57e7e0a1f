#include "client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/status/status.h"
#include "iot/common/auth.h"
#include "iot/thing_model/v1/thing_model.pb.h"

namespace iotctl {
namespace {

constexpr const char* kModelErrorsKey = "iot-model-errors-bin";

std::string Trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) {
    return {};
  }
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

std::string ReadKeyFile(const std::string& path, const std::string& named_by) {
  std::ifstream in(path);
  if (!in) {
    throw Failure(kExitUsage, "cannot read the API key file " + path + " (" + named_by + ")");
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string key = Trim(ss.str());
  if (key.empty()) {
    throw Failure(kExitUsage, "the API key file " + path + " (" + named_by + ") is empty");
  }
  return key;
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string(value) : std::string();
}

}  // namespace

std::string ResolveApiKey(const GlobalOptions& options) {
  if (!options.api_key.empty()) {
    return options.api_key;
  }
  if (!options.api_key_file.empty()) {
    return ReadKeyFile(options.api_key_file, "--api-key-file");
  }
  if (std::string key = Trim(Env("IOTCTL_API_KEY")); !key.empty()) {
    return key;
  }
  if (const std::string file = Env("IOTCTL_API_KEY_FILE"); !file.empty()) {
    return ReadKeyFile(file, "IOTCTL_API_KEY_FILE");
  }
  throw Failure(kExitUsage,
                "no API key: set IOTCTL_API_KEY (or IOTCTL_API_KEY_FILE), or pass --api-key or "
                "--api-key-file");
}

Client::Client(const GlobalOptions& options, std::string api_key)
    : options_(options),
      api_key_(std::move(api_key)),
      channel_(grpc::CreateChannel(options.addr, grpc::InsecureChannelCredentials())) {}

std::unique_ptr<grpc::ClientContext> Client::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  iot::common::SetBearer(*context, api_key_);
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(options_.timeout_seconds)));
  return context;
}

int Client::Report(const grpc::Status& status, const grpc::ClientContext& context) const {
  const std::string code = absl::StatusCodeToString(
      static_cast<absl::StatusCode>(static_cast<int>(status.error_code())));
  // A deadline that passed before a connection was ever made means the server is unreachable
  // (e.g. packets dropped), not that it was slow.
  const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
                            channel_->GetState(false) != GRPC_CHANNEL_READY);
  std::cerr << "error: " << code << ": " << status.error_message();
  if (unreachable) {
    std::cerr << " (server " << options_.addr << ")";
  }
  std::cerr << "\n";

  const auto& trailers = context.GetServerTrailingMetadata();
  if (auto it = trailers.find(kModelErrorsKey); it != trailers.end()) {
    iot::thing_model::v1::ModelErrors errors;
    if (errors.ParseFromString(std::string(it->second.data(), it->second.size()))) {
      for (const auto& error : errors.errors()) {
        std::cerr << "  " << error.path() << ": " << error.message() << "\n";
      }
    }
  }
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    std::cerr << "  (check the API key: --api-key, --api-key-file or IOTCTL_API_KEY)\n";
  }
  return unreachable ? kExitUnavailable : kExitServerError;
}

}  // namespace iotctl
