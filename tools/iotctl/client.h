#pragma once

// The connection iotctl's commands call through: one channel, the bearer key and a deadline
// on every call, and the one place failed calls become messages and exit codes.

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string>

#include "cli.h"

namespace iotctl {

/// The API key from, in this order: --api-key, --api-key-file, IOTCTL_API_KEY,
/// IOTCTL_API_KEY_FILE. Failure(kExitUsage) naming them when there is none or the file cannot
/// be read. The key is never printed.
std::string ResolveApiKey(const GlobalOptions& options);

class Client {
 public:
  /// Connects (lazily) to `options.addr`.
  Client(const GlobalOptions& options, std::string api_key);

  [[nodiscard]] const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  [[nodiscard]] bool json() const { return options_.json; }

  /// Runs `rpc(context, &response)` with a fresh context (bearer key, deadline). On failure
  /// prints the error (see Report) and throws Failure with its exit code.
  template <typename Response, typename Rpc>
  Response Call(Rpc&& rpc) {
    Response response;
    const std::unique_ptr<grpc::ClientContext> context = NewContext();
    const grpc::Status status = rpc(context.get(), &response);
    if (!status.ok()) {
      throw Failure(Report(status, *context), {});
    }
    return response;
  }

  /// Calls a paged list RPC, `rpc(context, request, &response)`. With `all` it follows
  /// next_marker (stopping if the server does not advance it) and merges the pages into one
  /// response; next_marker is the last page's.
  template <typename Response, typename Request, typename Rpc>
  Response CallPages(Request request, bool all, Rpc&& rpc) {
    Response result;
    while (true) {
      Response page =
          Call<Response>([&](auto* context, auto* out) { return rpc(context, request, out); });
      const std::string next = page.next_marker();
      result.MergeFrom(page);  // repeated fields append
      result.set_next_marker(next);
      if (!all || next.empty() || next == request.marker()) {
        return result;
      }
      request.set_marker(next);
    }
  }

  /// Prints `error: <CODE>: <message>` to stderr, plus every model error of the trailing
  /// metadata `iot-model-errors-bin` (one `  <path>: <message>` per line); returns the exit
  /// code: kExitUnavailable when the server is unreachable or unavailable, else
  /// kExitServerError.
  int Report(const grpc::Status& status, const grpc::ClientContext& context) const;

 private:
  [[nodiscard]] std::unique_ptr<grpc::ClientContext> NewContext() const;

  GlobalOptions options_;
  std::string api_key_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace iotctl
