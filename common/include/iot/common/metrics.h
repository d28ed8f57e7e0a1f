#pragma once

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Exposer;
}

namespace iot::common {

/// One registry per process, served on `/metrics` of the metrics port, with the process and
/// build-info metrics every service has (`iot_build_info`, `iot_process_*`).
class MetricsServer {
 public:
  /// `service` labels iot_build_info.
  explicit MetricsServer(const std::string& service);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  /// Starts serving `/metrics` on address:port (port 0 picks a free one). Throws on bind failure
  /// (bad start-up config).
  void Start(const std::string& address, uint16_t port);
  void Stop();
  /// The bound port, after Start().
  [[nodiscard]] uint16_t port() const;
  [[nodiscard]] prometheus::Registry& registry() { return *registry_; }
  [[nodiscard]] std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

/// The per-RPC metrics shared by every service's gRPC server:
/// `iot_grpc_server_requests_total{service,method,code}` and
/// `iot_grpc_server_request_duration_seconds{service,method}`.
struct GrpcServerMetrics {
  GrpcServerMetrics(prometheus::Registry& registry, std::string service);

  void Record(const std::string& method, int code, double seconds);

  std::string service;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& duration;
};

/// The interceptor factory that feeds GrpcServerMetrics; install with
/// ServerBuilder::experimental().SetInterceptorCreators.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeMetricsInterceptor(
    std::shared_ptr<GrpcServerMetrics> metrics);

/// Latency buckets (seconds) used by every latency histogram: 100 µs .. 60 s.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

/// The gRPC status code name, e.g. "OK", "DEADLINE_EXCEEDED".
std::string GrpcCodeName(int code);

}  // namespace iot::common
