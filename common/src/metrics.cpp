#include "iot/common/metrics.h"

#include <prometheus/exposer.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <unordered_map>

namespace iot::common {
namespace {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

prometheus::MetricFamily GaugeFamily(std::string name, std::string help, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  prometheus::ClientMetric metric;
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
  return family;
}

/// Reads /proc/self on every scrape: memory, CPU, threads, open files, start time.
class ProcessCollector final : public prometheus::Collectable {
 public:
  ProcessCollector() : start_time_(NowSeconds()) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    const auto page = static_cast<double>(sysconf(_SC_PAGESIZE));
    const auto ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    std::ifstream statm("/proc/self/statm");
    double size_pages = 0;
    double resident_pages = 0;
    statm >> size_pages >> resident_pages;
    out.push_back(GaugeFamily("iot_process_resident_memory_bytes", "Resident memory size in bytes",
                              resident_pages * page));
    out.push_back(GaugeFamily("iot_process_virtual_memory_bytes", "Virtual memory size in bytes",
                              size_pages * page));
    std::ifstream stat("/proc/self/stat");
    std::string field;
    double utime = 0;
    double stime = 0;
    double threads = 0;
    // Fields 14/15 are utime/stime in ticks, field 20 the thread count; the command name
    // (field 2) has no spaces for our binaries.
    for (int i = 1; i <= 20 && stat >> field; ++i) {
      if (i == 14) {
        utime = std::stod(field);
      } else if (i == 15) {
        stime = std::stod(field);
      } else if (i == 20) {
        threads = std::stod(field);
      }
    }
    prometheus::MetricFamily cpu =
        GaugeFamily("iot_process_cpu_seconds_total", "User and system CPU time in seconds", 0);
    cpu.type = prometheus::MetricType::Counter;
    cpu.metric[0].gauge = {};
    cpu.metric[0].counter.value = (utime + stime) / ticks;
    out.push_back(std::move(cpu));
    out.push_back(GaugeFamily("iot_process_threads", "Number of OS threads", threads));
    std::error_code ec;
    double fds = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      ++fds;
    }
    out.push_back(GaugeFamily("iot_process_open_fds", "Number of open file descriptors", fds));
    out.push_back(GaugeFamily("iot_process_start_time_seconds",
                              "Start time of the process since the Unix epoch in seconds",
                              start_time_));
    return out;
  }

 private:
  double start_time_;
};

class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(GrpcServerMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->Record(method_, static_cast<int>(status.error_code()), seconds);
    }
    methods->Proceed();
  }

 private:
  GrpcServerMetrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(std::shared_ptr<GrpcServerMetrics> metrics)
      : metrics_(std::move(metrics)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_.get(), info->method());
  }

 private:
  std::shared_ptr<GrpcServerMetrics> metrics_;
};

}  // namespace

MetricsServer::MetricsServer(const std::string& service)
    : registry_(std::make_shared<prometheus::Registry>()),
      process_collector_(std::make_shared<ProcessCollector>()) {
  prometheus::BuildGauge()
      .Name("iot_build_info")
      .Help("Build information: service and version; always 1")
      .Register(*registry_)
      .Add({{"service", service}, {"version", IOT_VERSION}})
      .Set(1);
}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Start(const std::string& address, uint16_t port) {
  exposer_ = std::make_unique<prometheus::Exposer>(address + ":" + std::to_string(port));
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(process_collector_);
}

void MetricsServer::Stop() { exposer_.reset(); }

uint16_t MetricsServer::port() const {
  if (!exposer_) {
    return 0;
  }
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : static_cast<uint16_t>(ports.front());
}

GrpcServerMetrics::GrpcServerMetrics(prometheus::Registry& registry, std::string service_name)
    : service(std::move(service_name)),
      requests(prometheus::BuildCounter()
                   .Name("iot_grpc_server_requests_total")
                   .Help("gRPC calls handled, by method and status code")
                   .Register(registry)),
      duration(prometheus::BuildHistogram()
                   .Name("iot_grpc_server_request_duration_seconds")
                   .Help("gRPC call latency in seconds, from first metadata to status")
                   .Register(registry)) {}

void GrpcServerMetrics::Record(const std::string& method, int code, double seconds) {
  requests.Add({{"service", service}, {"method", method}, {"code", GrpcCodeName(code)}})
      .Increment();
  duration.Add({{"service", service}, {"method", method}}, LatencyBuckets()).Observe(seconds);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeMetricsInterceptor(
    std::shared_ptr<GrpcServerMetrics> metrics) {
  return std::make_unique<MetricsInterceptorFactory>(std::move(metrics));
}

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
  return kBuckets;
}

std::string GrpcCodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code < 0 || code > 16) {
    return "UNKNOWN";
  }
  return kNames[code];
}

}  // namespace iot::common
