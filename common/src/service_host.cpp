#include "iot/common/service_host.h"

#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <pthread.h>
#include <signal.h>

#include "absl/synchronization/mutex.h"
#include "iot/common/backoff.h"
#include "iot/common/logging.h"

namespace iot::common {
namespace {

/// Idle gRPC worker threads a service keeps (see ServiceHost::Start).
constexpr int kMaxIdleGrpcThreads = 32;
/// Largest request a service accepts (gRPC's default is 4 MiB).
constexpr int kMaxReceiveBytes = 16 * 1024 * 1024;

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  const sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

ServiceHost::ServiceHost(ServerConfig config)
    : config_(std::move(config)), metrics_(config_.service) {
  BlockTerminationSignals();
  // Debian's abseil is built without NDEBUG, so every absl::Mutex (gRPC's locks) would keep
  // the lock-order graph of its deadlock detector: a tenth of the gateway's CPU under load.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  grpc_metrics_ = std::make_shared<GrpcServerMetrics>(metrics_.registry(), config_.service);
  ready_gauge_ = &prometheus::BuildGauge()
                      .Name("iot_service_ready")
                      .Help("1 while the service reports SERVING (dependencies up), else 0")
                      .Register(metrics_.registry())
                      .Add({{"service", config_.service}});
}

ServiceHost::~ServiceHost() { Shutdown(); }

void ServiceHost::AddService(grpc::Service* service) { services_.push_back(service); }

void ServiceHost::AddService(std::shared_ptr<grpc::Service> service) {
  services_.push_back(service.get());
  owned_services_.push_back(std::move(service));
}

void ServiceHost::AddInterceptor(
    std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> interceptor) {
  interceptors_.push_back(std::move(interceptor));
}

void ServiceHost::AddStartupTask(std::string name, std::function<absl::Status()> task) {
  startup_.push_back({std::move(name), std::move(task)});
}

void ServiceHost::AddDependency(std::string name, std::function<absl::Status()> probe) {
  dependencies_.push_back({std::move(name), std::move(probe)});
}

void ServiceHost::OnReady(std::function<void()> callback) {
  on_ready_.push_back(std::move(callback));
}

void ServiceHost::OnShutdown(std::function<void()> callback) {
  on_shutdown_.push_back(std::move(callback));
}

void ServiceHost::Start() {
  metrics_.Start(config_.listen_address, config_.metrics_port);

  // Our own health service (iot/common/health_service.h): gRPC's built-in one answers SERVING
  // before the host can first set it.
  grpc::EnableDefaultHealthCheckService(false);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC binds with SO_REUSEPORT by default: a second process on the same port then starts
  // without an error and the kernel splits new connections between the two (grpc/grpc#10755).
  // A port already taken must fail the start instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // The gateway hands device data on in calls of up to 3 MiB, but one record alone may be
  // larger: a 2 MiB payload that is not JSON, escaped into the forwarding envelope.
  builder.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  int bound_port = 0;
  builder.AddListeningPort(config_.listen_address + ":" + std::to_string(config_.grpc_port),
                           grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&health_);
  for (grpc::Service* service : services_) {
    builder.RegisterService(service);
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(MakeMetricsInterceptor(grpc_metrics_));
  for (auto& interceptor : interceptors_) {
    creators.push_back(std::move(interceptor));
  }
  interceptors_.clear();
  builder.experimental().SetInterceptorCreators(std::move(creators));
  // The sync server ends a worker thread that finishes a call while MAX_POLLERS (default 2)
  // others poll, and starts one when none is left: with a few calls that wait (a sync command,
  // a publish awaiting its PUBACK) in flight, that is a thread created and ended per call.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                              kMaxIdleGrpcThreads);
  server_ = builder.BuildAndStart();
  if (!server_ || bound_port == 0) {
    throw std::runtime_error("cannot listen for gRPC on " + config_.listen_address + ":" +
                             std::to_string(config_.grpc_port) +
                             " (address in use by another process, or not an address of this "
                             "host)");
  }
  grpc_port_ = static_cast<uint16_t>(bound_port);
  // "" stays NOT_SERVING until ready. "liveness" stays SERVING while the process runs, so
  // that a liveness probe does not restart it for a dependency outage it is already waiting out.
  health_.SetServing(std::string(kLivenessService), true);
  LogInfo("listening", {{"grpc_port", grpc_port_}, {"metrics_port", metrics_.port()}});
  readiness_thread_ = std::thread([this] { ReadinessLoop(); });
}

int ServiceHost::Run() {
  Start();
  signal_thread_ = std::thread([this] {
    const sigset_t set = TerminationSignals();
    int signal = 0;
    sigwait(&set, &signal);
    {
      std::lock_guard lock(mu_);
      if (stopping_) {
        return;  // woken by Shutdown(), not by an operator
      }
    }
    LogInfo("signal received, draining", {{"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"},
                                          {"drain_timeout_ms", config_.drain_timeout.count()}});
    RequestShutdown();
  });
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return stopping_; });
  }
  Shutdown();
  LogInfo("stopped");
  return 0;
}

void ServiceHost::RequestShutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void ServiceHost::Shutdown() {
  {
    std::lock_guard lock(mu_);
    if (shutdown_done_) {
      return;
    }
    shutdown_done_ = true;
    stopping_ = true;
  }
  cv_.notify_all();
  if (readiness_thread_.joinable()) {
    readiness_thread_.join();
  }
  if (signal_thread_.joinable()) {
    // Wakes its sigwait(SIGTERM), which returns: the thread ends, nothing is terminated.
    // NOLINTNEXTLINE(bugprone-bad-signal-to-kill-thread)
    pthread_kill(signal_thread_.native_handle(), SIGTERM);
    signal_thread_.join();
  }
  SetServing(false);
  for (auto& callback : on_shutdown_) {
    callback();
  }
  if (server_) {
    health_.Shutdown();
    // No new calls from here; in-flight calls get until the deadline, then are cancelled.
    server_->Shutdown(std::chrono::system_clock::now() + config_.drain_timeout);
    server_->Wait();
  }
  metrics_.Stop();
}

void ServiceHost::SetServing(bool serving) {
  const bool was = serving_.exchange(serving);
  ready_gauge_->Set(serving ? 1 : 0);
  health_.SetServing("", serving);
  if (was != serving) {
    LogInfo(serving ? "serving" : "not serving");
  }
}

bool ServiceHost::WaitStop(std::chrono::milliseconds delay) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, delay, [this] { return stopping_; });
}

void ServiceHost::ReadinessLoop() {
  Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(5));
  size_t next_task = 0;
  bool fired_ready = false;
  std::vector<bool> dependency_ok(dependencies_.size(), true);
  while (true) {
    bool ok = true;
    while (ok && next_task < startup_.size()) {
      const Step& task = startup_[next_task];
      if (absl::Status status = task.fn(); !status.ok()) {
        LogWarn("start-up step failed, will retry", {{"step", task.name},
                                                     {"attempt", backoff.attempts() + 1},
                                                     {"error", std::string(status.message())}});
        ok = false;
      } else {
        LogInfo("start-up step done", {{"step", task.name}});
        ++next_task;
      }
    }
    if (ok && !fired_ready) {
      fired_ready = true;
      for (auto& callback : on_ready_) {
        callback();
      }
    }
    for (size_t i = 0; ok && i < dependencies_.size(); ++i) {
      absl::Status status = dependencies_[i].fn();
      if (status.ok() != dependency_ok[i]) {
        dependency_ok[i] = status.ok();
        if (status.ok()) {
          LogInfo("dependency up", {{"dependency", dependencies_[i].name}});
        } else {
          LogWarn("dependency down", {{"dependency", dependencies_[i].name},
                                      {"error", std::string(status.message())}});
        }
      }
      ok = ok && status.ok();
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) {
        return;
      }
    }
    SetServing(ok);
    std::chrono::milliseconds delay = config_.probe_interval;
    if (ok) {
      backoff.Reset();
    } else {
      delay = std::min(delay, backoff.Next());
    }
    if (WaitStop(delay)) {
      return;
    }
  }
}

}  // namespace iot::common
