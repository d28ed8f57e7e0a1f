// Command round trip through command-dispatch against a raw MQTT request/response through the
// same broker, in the same run, with N concurrent callers.
//
//   command: caller -gRPC-> command-dispatch (validate, record in PostgreSQL, register in Redis)
//            -gRPC-> gateway bridge -MQTT-> device -MQTT-> gateway bridge -gRPC CompleteRequests->
//            command-dispatch -> caller
//   mqtt:    caller -MQTT-> device -MQTT-> caller
//
// The gateway bridge is a minimal in-process stand-in for the device-gateway's downlink and
// response path (InternalDownlink.Publish -> MQTT, response topic -> CompleteRequests). Real
// PostgreSQL, Redis, Mosquitto, thing-model and command-dispatch processes.
//
// Run: command_dispatch_bench   (prints Google Benchmark's table, then p50/p99, throughput
//                                and the command/mqtt ratios per concurrency)
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>
#include <mosquitto.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace {

namespace cd = iot::command_dispatch::v1;
namespace gw = iot::device_gateway::v1;
namespace tm = iot::thing_model::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

const std::string kSecretKey(64, 'e');
const std::string kAdminKey = "command-bench-admin-key-0123456789";
const std::string kServiceKey = "command-bench-service-key-0123456789";

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "command_dispatch_bench: " << what << "\n";
  std::exit(1);
}

/// A plain libmosquitto client on its own network thread (mosquitto_loop_start), which writes
/// a publish at once: the raw-MQTT baseline, and the MQTT side of the bridge and the device.
class RawMqtt {
 public:
  using Handler = std::function<void(const std::string& topic, const std::string& payload)>;

  RawMqtt(const std::string& host, int port, const std::string& id, Handler handler,
          std::vector<std::string> filters)
      : handler_(std::move(handler)), filters_(std::move(filters)) {
    mosq_ = mosquitto_new(id.c_str(), true, this);
    mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(mosq_, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(mosq_, [](mosquitto* m, void* self, int rc) {
      if (rc != 0) {
        return;
      }
      for (const auto& f : static_cast<RawMqtt*>(self)->filters_) {
        mosquitto_subscribe(m, nullptr, f.c_str(), 1);
      }
    });
    mosquitto_subscribe_callback_set(mosq_, [](mosquitto*, void* self, int, int, const int*) {
      auto* me = static_cast<RawMqtt*>(self);
      std::lock_guard lock(me->mu_);
      ++me->subacks_;
      me->cv_.notify_all();
    });
    mosquitto_message_callback_set(mosq_, [](mosquitto*, void* self, const mosquitto_message* m) {
      static_cast<RawMqtt*>(self)->handler_(
          m->topic,
          std::string(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen)));
    });
    if (mosquitto_connect(mosq_, host.c_str(), port, 30) != MOSQ_ERR_SUCCESS ||
        mosquitto_loop_start(mosq_) != MOSQ_ERR_SUCCESS) {
      Die("mqtt connect " + id);
    }
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, seconds(10), [&] { return subacks_ >= filters_.size(); })) {
      Die("mqtt subscribe " + id);
    }
  }
  ~RawMqtt() {
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, false);
    mosquitto_destroy(mosq_);
  }
  RawMqtt(const RawMqtt&) = delete;
  RawMqtt& operator=(const RawMqtt&) = delete;

  bool Publish(const std::string& topic, const std::string& payload) {
    return mosquitto_publish(mosq_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                             payload.data(), 1, false) == MOSQ_ERR_SUCCESS;
  }

 private:
  mosquitto* mosq_ = nullptr;
  Handler handler_;
  std::vector<std::string> filters_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t subacks_ = 0;
};

/// The device-gateway's downlink and response path, reduced to what a command needs.
class GatewayBridge final : public gw::InternalDownlink::Service {
 public:
  explicit GatewayBridge(int broker_port) {
    mqtt_ = std::make_unique<RawMqtt>(
        "127.0.0.1", broker_port, "bench-gateway",
        [this](const std::string& topic, const std::string& payload) {
          std::lock_guard lock(mu_);
          queue_.emplace_back(topic, payload);
          cv_.notify_one();
        },
        std::vector<std::string>{"$oc/devices/+/sys/commands/response/#"});
    for (int i = 0; i < 4; ++i) {
      workers_.emplace_back([this] { Forward(); });
    }
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    address_ = "127.0.0.1:" + std::to_string(port);
  }
  ~GatewayBridge() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) {
      t.join();
    }
    server_->Shutdown();
  }

  grpc::Status Publish(grpc::ServerContext* /*context*/, const gw::PublishRequest* request,
                       gw::PublishResponse* response) override {
    const std::string topic = fmt::format("$oc/devices/{}/sys/commands/request_id={}",
                                          request->device_id(), request->request_id());
    if (!mqtt_->Publish(topic, request->payload())) {
      return {grpc::StatusCode::UNAVAILABLE, "broker"};
    }
    response->set_online(true);
    response->set_topic(topic);
    return grpc::Status::OK;
  }

  [[nodiscard]] const std::string& address() const { return address_; }
  /// Where responses go; before the first command.
  void SetDispatch(const std::string& address) {
    dispatch_ = cd::InternalCommandDispatch::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

 private:
  void Forward() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) {
        return;
      }
      const auto [topic, payload] = queue_.front();
      queue_.pop_front();
      lock.unlock();
      // $oc/devices/{device_id}/sys/commands/response/request_id={id}
      const size_t device_start = std::string("$oc/devices/").size();
      const std::string device_id =
          topic.substr(device_start, topic.find('/', device_start) - device_start);
      cd::CompleteRequestsRequest request;
      auto* r = request.add_responses();
      r->mutable_device()->set_device_id(device_id);
      r->set_kind(cd::RESPONSE_KIND_COMMAND);
      r->set_request_id(topic.substr(topic.rfind('=') + 1));
      r->set_payload_json(payload);
      grpc::ClientContext context;
      iot::common::SetBearer(context, kServiceKey);
      gw::IngestAck ack;
      if (const grpc::Status s = dispatch_->CompleteRequests(&context, request, &ack); !s.ok()) {
        std::cerr << "CompleteRequests: " << s.error_message() << "\n";
      }
      lock.lock();
    }
  }

  std::unique_ptr<RawMqtt> mqtt_;
  std::unique_ptr<cd::InternalCommandDispatch::Stub> dispatch_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, std::string>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

/// One waiting MQTT requester per benchmark thread: publishes and waits for its response.
class MqttRequester {
 public:
  MqttRequester(int broker_port, int index) : index_(index) {
    client_ = std::make_unique<RawMqtt>(
        "127.0.0.1", broker_port, fmt::format("bench-requester-{}", index),
        [this](const std::string&, const std::string&) {
          std::lock_guard lock(mu_);
          ++answered_;
          cv_.notify_one();
        },
        std::vector<std::string>{fmt::format("bench/resp/{}/#", index)});
  }
  bool RoundTrip(uint64_t n, const std::string& payload) {
    if (!client_->Publish(fmt::format("bench/req/{}/{}", index_, n), payload)) {
      return false;
    }
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(10), [&] { return answered_ > n; });
  }

 private:
  std::unique_ptr<RawMqtt> client_;
  int index_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t answered_ = 0;
};

struct Environment {
  Environment() {
    redis = std::make_unique<iot::testing::TestRedis>();
    // As deploy/mosquitto/mosquitto.conf: small request/response packets are not held back.
    broker = std::make_unique<iot::testing::TestMosquitto>("set_tcp_nodelay true\n");
    thing_model = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis->Url(),
                                               .secret_key = kSecretKey,
                                               .admin_key = kAdminKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    if (!thing_model->WaitServing()) {
      Die("thing-model: " + thing_model->process().Log());
    }
    bridge = std::make_unique<GatewayBridge>(broker->port());
    dispatch = std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
        .binary = "command-dispatch",
        .env_prefix = "IOT_COMMAND_DISPATCH",
        .env = {{"IOT_PG_URL", iot::testing::CreateTestDatabase()},
                {"IOT_REDIS_URL", redis->Url()},
                {"IOT_SERVICE_API_KEY", kServiceKey},
                {"IOT_THING_MODEL_ADDR", thing_model->address()},
                {"IOT_DEVICE_GATEWAY_ADDR", bridge->address()},
                {"IOT_LOG_LEVEL", "warn"}},
        .args = {}});
    if (!dispatch->WaitServing()) {
      Die("command-dispatch: " + dispatch->process().Log());
    }
    bridge->SetDispatch(dispatch->address());

    auto channel = grpc::CreateChannel(thing_model->address(), grpc::InsecureChannelCredentials());
    tm::CreateProductRequest product;
    std::ifstream in(IOT_TESTDATA_DIR "/smart_meter_product.json");
    std::stringstream ss;
    ss << in.rdbuf();
    product.set_product_json(ss.str());
    tm::Product created;
    grpc::ClientContext ctx;
    iot::common::SetBearer(ctx, kAdminKey);
    if (!tm::Products::NewStub(channel)->CreateProduct(&ctx, product, &created).ok()) {
      Die("create product");
    }
    tm::AddDeviceRequest add;
    add.set_product_id("smartmeter01");
    add.set_node_id("bench");
    tm::AddDeviceResponse added;
    grpc::ClientContext ctx2;
    iot::common::SetBearer(ctx2, kAdminKey);
    if (!tm::Devices::NewStub(channel)->AddDevice(&ctx2, add, &added).ok()) {
      Die("add device");
    }
    device_id = added.device().device_id();

    // The simulated device answers commands and raw requests alike.
    device = std::make_unique<RawMqtt>(
        "127.0.0.1", broker->port(), "bench-device",
        [this](const std::string& topic, const std::string& payload) {
          if (topic.starts_with("bench/req/")) {
            device->Publish("bench/resp/" + topic.substr(10), payload);
            return;
          }
          device->Publish(fmt::format("$oc/devices/{}/sys/commands/response/request_id={}",
                                      device_id, topic.substr(topic.rfind('=') + 1)),
                          R"({"result_code":0,"response_name":"reboot_response",)"
                          R"("paras":{"result":"ok"}})");
        },
        std::vector<std::string>{fmt::format("$oc/devices/{}/sys/commands/+", device_id),
                                 "bench/req/#"});
    commands = cd::Commands::NewStub(
        grpc::CreateChannel(dispatch->address(), grpc::InsecureChannelCredentials()));
  }
  ~Environment() {
    device.reset();
    dispatch.reset();
    bridge.reset();
  }

  std::unique_ptr<iot::testing::TestRedis> redis;
  std::unique_ptr<iot::testing::TestMosquitto> broker;
  std::unique_ptr<iot::testing::ThingModelProcess> thing_model;
  std::unique_ptr<GatewayBridge> bridge;
  std::unique_ptr<iot::testing::ServiceProcess> dispatch;
  std::unique_ptr<RawMqtt> device;
  std::unique_ptr<cd::Commands::Stub> commands;
  std::string device_id;
};

Environment* env = nullptr;

/// Latencies (µs) and wall time of each run, by path and callers.
struct Run {
  std::vector<double> latencies_us;
  double seconds = 0;
};
std::mutex runs_mu;
std::map<std::pair<std::string, int>, Run> runs;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

template <typename Fn>
void Measure(benchmark::State& state, const std::string& path, Fn&& round_trip) {
  std::vector<double> latencies;
  const auto start = Clock::now();
  for (auto _ : state) {
    const auto t0 = Clock::now();
    if (!round_trip()) {
      state.SkipWithError("round trip failed");
      break;
    }
    latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  // Per thread, averaged over threads; the summary after the table pools every latency.
  state.counters["p50_us"] =
      benchmark::Counter(Percentile(latencies, 0.50), benchmark::Counter::kAvgThreads);
  state.counters["p99_us"] =
      benchmark::Counter(Percentile(latencies, 0.99), benchmark::Counter::kAvgThreads);
  state.counters["round_trips"] =
      benchmark::Counter(static_cast<double>(latencies.size()), benchmark::Counter::kIsRate);
  std::lock_guard lock(runs_mu);
  Run& run = runs[{path, state.threads()}];
  run.latencies_us.insert(run.latencies_us.end(), latencies.begin(), latencies.end());
  run.seconds = std::max(run.seconds, elapsed);
}

void BM_CommandRoundTrip(benchmark::State& state) {
  cd::CreateCommandRequest request;
  request.set_device_id(env->device_id);
  request.set_service_id("meter");
  request.set_command_name("reboot");
  request.set_paras_json(R"({"delay":1})");
  Measure(state, "command", [&] {
    grpc::ClientContext context;
    iot::common::SetBearer(context, kAdminKey);
    context.set_deadline(std::chrono::system_clock::now() + seconds(30));
    cd::CreateCommandResponse response;
    const grpc::Status s = env->commands->CreateCommand(&context, request, &response);
    if (!s.ok()) {
      std::cerr << "CreateCommand: " << s.error_message() << "\n"
                << env->dispatch->process().Log().substr(0, 20000) << "\n";
    }
    return s.ok();
  });
}

void BM_MqttRoundTrip(benchmark::State& state) {
  MqttRequester requester(env->broker->port(), state.thread_index());
  const std::string payload =
      R"({"object_device_id":"x","service_id":"meter","command_name":"reboot","paras":{"delay":1}})";
  uint64_t n = 0;
  Measure(state, "mqtt", [&] { return requester.RoundTrip(n++, payload); });
}

BENCHMARK(BM_CommandRoundTrip)->Threads(1)->Threads(8)->Threads(32)->UseRealTime()->MinTime(3);
BENCHMARK(BM_MqttRoundTrip)->Threads(1)->Threads(8)->Threads(32)->UseRealTime()->MinTime(3);

double Throughput(const Run& run) {
  return static_cast<double>(run.latencies_us.size()) / run.seconds;
}

void PrintSummary() {
  std::cout << "\npath     callers  round_trips  throughput/s    p50_us    p99_us\n";
  for (const auto& [key, run] : runs) {
    std::cout << fmt::format("{:<8} {:>7} {:>12} {:>13.0f} {:>9.0f} {:>9.0f}\n", key.first,
                             key.second, run.latencies_us.size(), Throughput(run),
                             Percentile(run.latencies_us, 0.50),
                             Percentile(run.latencies_us, 0.99));
  }
  std::cout << "\ncommand / raw MQTT (same broker, same run)\n";
  for (const auto& [key, run] : runs) {
    const auto raw = runs.find({"mqtt", key.second});
    if (key.first != "command" || raw == runs.end()) {
      continue;
    }
    std::cout << fmt::format(
        "callers {:>3}: p50 x{:.1f}  p99 x{:.1f}  throughput x{:.3f}\n", key.second,
        Percentile(run.latencies_us, 0.50) / Percentile(raw->second.latencies_us, 0.50),
        Percentile(run.latencies_us, 0.99) / Percentile(raw->second.latencies_us, 0.99),
        Throughput(run) / Throughput(raw->second));
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  env = new Environment();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  PrintSummary();
  delete env;
  return 0;
}
