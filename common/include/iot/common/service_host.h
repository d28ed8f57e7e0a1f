#pragma once

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "iot/common/config.h"
#include "iot/common/health_service.h"
#include "iot/common/metrics.h"

namespace iot::common {

/// Health service name that answers SERVING for as long as the process runs (liveness probes);
/// the overall status ("") follows readiness.
inline constexpr std::string_view kLivenessService = "liveness";

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it creates afterwards, so
/// that ServiceHost::Run() can wait for them synchronously. Call first thing in main, before
/// anything starts a thread.
void BlockTerminationSignals();

/// Hosts one service process: the gRPC server (health, reflection, the metrics interceptor),
/// `/metrics`, start-up tasks retried with backoff, dependency probes that drive the health
/// status, and the drain on SIGTERM.
///
/// Health stays NOT_SERVING until every start-up task has succeeded once and every dependency
/// probe passes; it follows the probes afterwards. A dependency that is down never stops the
/// process: it is retried with backoff and logged.
class ServiceHost {
 public:
  explicit ServiceHost(ServerConfig config);
  ~ServiceHost();
  ServiceHost(const ServiceHost&) = delete;
  ServiceHost& operator=(const ServiceHost&) = delete;

  /// The metrics registry: services build their metrics structs from it.
  prometheus::Registry& metrics() { return metrics_.registry(); }

  /// Registers a gRPC service (owned by the caller, must outlive the host). Before Start().
  void AddService(grpc::Service* service);
  /// Registers a gRPC service that the host keeps alive.
  void AddService(std::shared_ptr<grpc::Service> service);
  /// Additional interceptors (e.g. authentication), run after the metrics interceptor.
  void AddInterceptor(
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> interceptor);

  /// A task run once, in order, retried with backoff until it returns OK (e.g. migrations).
  void AddStartupTask(std::string name, std::function<absl::Status()> task);
  /// A probe run every probe interval; the service is SERVING only while all probes pass.
  void AddDependency(std::string name, std::function<absl::Status()> probe);
  /// Called once when every start-up task has succeeded (e.g. start consumers).
  void OnReady(std::function<void()> callback);
  /// Called on shutdown before the gRPC server drains (e.g. stop consumers).
  void OnShutdown(std::function<void()> callback);

  /// Starts `/metrics`, the gRPC server and the readiness loop. Throws on bind failure.
  void Start();
  /// Start(), then block until SIGTERM/SIGINT (or RequestShutdown()), drain, and return the
  /// process exit code (0).
  int Run();
  /// Makes Run() return as if a signal had arrived (tests, fatal internal errors).
  void RequestShutdown();
  /// Stop accepting calls, let in-flight calls finish within the drain timeout, stop everything.
  void Shutdown();

  [[nodiscard]] uint16_t grpc_port() const { return grpc_port_; }
  [[nodiscard]] uint16_t metrics_port() const { return metrics_.port(); }
  [[nodiscard]] bool serving() const { return serving_.load(); }
  [[nodiscard]] const ServerConfig& config() const { return config_; }

 private:
  struct Step {
    std::string name;
    std::function<absl::Status()> fn;
  };

  void ReadinessLoop();
  void SetServing(bool serving);
  bool WaitStop(std::chrono::milliseconds delay);

  ServerConfig config_;
  MetricsServer metrics_;
  std::shared_ptr<GrpcServerMetrics> grpc_metrics_;
  std::vector<grpc::Service*> services_;
  std::vector<std::shared_ptr<grpc::Service>> owned_services_;
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors_;
  std::vector<Step> startup_;
  std::vector<Step> dependencies_;
  std::vector<std::function<void()>> on_ready_;
  std::vector<std::function<void()>> on_shutdown_;
  HealthService health_;
  std::unique_ptr<grpc::Server> server_;
  uint16_t grpc_port_ = 0;
  std::atomic<bool> serving_{false};
  prometheus::Gauge* ready_gauge_ = nullptr;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool shutdown_done_ = false;
  std::thread readiness_thread_;
  std::thread signal_thread_;
};

}  // namespace iot::common
