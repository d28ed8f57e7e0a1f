// A real Prometheus (Debian's `prometheus`, run as a local process) scraping the five real
// services with the configuration shipped in deploy/prometheus (only the intervals, its own
// port and the targets' ports changed), asserted through Prometheus' own HTTP API: every
// service is `up == 1` under its job name, the gateway's uplink counter rises after simulated
// devices (iot-device-sim) report through Mosquitto with the iot_auth plugin, and a stopped
// service turns `up == 0`.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <vector>

#include "iot/common/auth.h"
#include "iot/testing/http.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace fs = std::filesystem;
namespace pb = iot::thing_model::v1;
using iot::testing::ServiceProcess;
using iot::testing::WaitUntil;
using Json = nlohmann::json;
using std::chrono::seconds;

const std::string kSecretKey(64, 'd');
constexpr char kAdminKey[] = "prometheus-test-admin-key-0123456789";
constexpr char kServiceKey[] = "prometheus-test-service-key-0123456789";
constexpr char kGatewayPassword[] = "prometheus-test-gateway-mqtt";
constexpr char kRulesPassword[] = "prometheus-test-rules-mqtt";
// The metric that must rise when devices report: property reports the gateway accepted.
constexpr char kDeviceMetric[] =
    R"(sum(iot_gateway_uplink_messages_total{kind="properties_report"}))";

struct ServiceCase {
  std::string job;     ///< = binary = Prometheus job name
  std::string prefix;  ///< env prefix
  uint16_t default_metrics_port;
};

const std::vector<ServiceCase> kServices = {
    {"thing-model", "IOT_THING_MODEL", 9102},
    {"shadow", "IOT_SHADOW", 9104},
    {"command-dispatch", "IOT_COMMAND_DISPATCH", 9103},
    {"rule-forwarding", "IOT_RULE_FORWARDING", 9105},
    {"device-gateway", "IOT_DEVICE_GATEWAY", 9101},
};

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

/// Replaces every match of `pattern` in `text`; fails the test when there is none, so that a
/// change of the shipped file that this derivation no longer understands is noticed.
std::string ReplaceOrFail(const std::string& text, const std::string& pattern,
                          const std::string& replacement) {
  const std::regex re(pattern);
  EXPECT_TRUE(std::regex_search(text, re)) << "deploy/prometheus has no '" << pattern << "'";
  return std::regex_replace(text, re, replacement);
}

std::string UrlEncode(const std::string& text) {
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += ch;
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

/// Prometheus on a free port, configured from deploy/prometheus with the given metrics ports.
class TestPrometheus {
 public:
  explicit TestPrometheus(const std::map<uint16_t, uint16_t>& metrics_ports)
      : port_(iot::testing::FreePort()) {
    const fs::path deploy = IOT_DEPLOY_DIR "/prometheus";
    std::string config = ReadFile(deploy / "prometheus.yml");
    config = ReplaceOrFail(config, R"(scrape_interval: \d+s)", "scrape_interval: 1s");
    config = ReplaceOrFail(config, R"(scrape_timeout: \d+s)", "scrape_timeout: 1s");
    config = ReplaceOrFail(config, R"(evaluation_interval: \d+s)", "evaluation_interval: 1s");
    config = ReplaceOrFail(config, R"(localhost:9090)", fmt::format("127.0.0.1:{}", port_));
    std::string targets = ReadFile(deploy / "targets.yml");
    for (const auto& [shipped, actual] : metrics_ports) {
      targets = ReplaceOrFail(targets, fmt::format(R"(127\.0\.0\.1:{}\b)", shipped),
                              fmt::format("127.0.0.1:{}", actual));
    }
    WriteFile(dir_.path() / "prometheus.yml", config);
    WriteFile(dir_.path() / "targets.yml", targets);
    process_ = std::make_unique<iot::testing::Process>(iot::testing::Process::Options{
        .argv = {"/usr/bin/prometheus",
                 "--config.file=" + (dir_.path() / "prometheus.yml").string(),
                 "--storage.tsdb.path=" + (dir_.path() / "data").string(),
                 fmt::format("--web.listen-address=127.0.0.1:{}", port_), "--log.level=warn"},
        .env = {},
        .log_file = dir_.path() / "prometheus.log",
        .run_as_user = {}});
  }
  ~TestPrometheus() { process_->Stop(); }

  [[nodiscard]] bool WaitReady() {
    return WaitUntil([&] { return iot::testing::HttpGet(port_, "/-/ready").ok(); }, seconds(30));
  }

  /// The instant vector of `query` as {labels -> value}; nullopt on an API error.
  std::optional<std::vector<std::pair<Json, double>>> Query(const std::string& query) {
    auto body = iot::testing::HttpGet(port_, "/api/v1/query?query=" + UrlEncode(query));
    if (!body.ok()) {
      return std::nullopt;
    }
    const Json reply = Json::parse(*body, nullptr, false);
    if (!reply.is_object() || reply.value("status", "") != "success") {
      return std::nullopt;
    }
    std::vector<std::pair<Json, double>> samples;
    for (const Json& sample : reply["data"]["result"]) {
      samples.emplace_back(sample["metric"], std::stod(sample["value"][1].get<std::string>()));
    }
    return samples;
  }

  /// The value of a query that yields one sample, else nullopt.
  std::optional<double> Scalar(const std::string& query) {
    auto samples = Query(query);
    if (!samples || samples->size() != 1) {
      return std::nullopt;
    }
    return samples->front().second;
  }

  std::string Log() const { return process_->Log(); }

 private:
  iot::testing::TempDir dir_{"iot-prometheus"};
  uint16_t port_;
  std::unique_ptr<iot::testing::Process> process_;
};

class PrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists("/usr/bin/prometheus"))
        << "Prometheus is not installed: scripts/install-deps.sh installs Debian's prometheus";
    redis_ = std::make_unique<iot::testing::TestRedis>();
    broker_ = std::make_unique<iot::testing::TestMosquitto>(iot::testing::AuthPluginConfig(
        redis_->Url(), kSecretKey,
        iot::testing::ServiceAccountEntry("device-gateway", "s1", kGatewayPassword) + "," +
            iot::testing::ServiceAccountEntry("rule-forwarding", "s2", kRulesPassword)));
    const std::string pg_url = iot::testing::CreateTestDatabase();
    // Every service gets the same shared settings, as compose and Helm give them.
    std::map<std::string, std::string> shared = {
        {"IOT_PG_URL", pg_url},
        {"IOT_REDIS_URL", redis_->Url()},
        {"IOT_MQTT_URL", broker_->Url()},
        {"IOT_SECRET_KEY", kSecretKey},
        {"IOT_SERVICE_API_KEY", kServiceKey},
        {"IOT_THING_MODEL_BOOTSTRAP_API_KEY", kAdminKey},
        {"IOT_DEVICE_GATEWAY_MQTT_USERNAME", "device-gateway"},
        {"IOT_DEVICE_GATEWAY_MQTT_PASSWORD", kGatewayPassword},
        {"IOT_RULE_FORWARDING_MQTT_USERNAME", "rule-forwarding"},
        {"IOT_RULE_FORWARDING_MQTT_PASSWORD", kRulesPassword}};
    // thing-model first: the others find it through IOT_THING_MODEL_ADDR.
    for (const ServiceCase& service : kServices) {
      auto process = std::make_unique<ServiceProcess>(iot::testing::ServiceProcessOptions{
          .binary = service.job, .env_prefix = service.prefix, .env = shared, .args = {}});
      shared[service.prefix + "_ADDR"] = process->address();
      ASSERT_TRUE(process->WaitServing()) << service.job << ":\n" << process->process().Log();
      services_[service.job] = std::move(process);
    }
    std::map<uint16_t, uint16_t> ports;
    for (const ServiceCase& service : kServices) {
      ports[service.default_metrics_port] = services_[service.job]->metrics_port();
    }
    prometheus_ = std::make_unique<TestPrometheus>(ports);
    ASSERT_TRUE(prometheus_->WaitReady()) << prometheus_->Log();
  }

  /// Polls until `query` yields one sample satisfying `predicate` (scrapes run every second).
  template <typename Predicate>
  bool WaitForValue(const std::string& query, Predicate predicate, seconds timeout = seconds(30)) {
    return WaitUntil(
        [&] {
          auto value = prometheus_->Scalar(query);
          return value.has_value() && predicate(*value);
        },
        timeout);
  }

  /// The product the simulated devices report against, created with the root admin key.
  void CreateProduct() {
    auto channel = grpc::CreateChannel(services_["thing-model"]->address(),
                                       grpc::InsecureChannelCredentials());
    auto products = pb::Products::NewStub(channel);
    pb::CreateProductRequest request;
    request.set_product_json(ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    pb::Product created;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    const grpc::Status status = products->CreateProduct(&ctx, request, &created);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  std::unique_ptr<iot::testing::TestRedis> redis_;
  std::unique_ptr<iot::testing::TestMosquitto> broker_;
  std::map<std::string, std::unique_ptr<ServiceProcess>> services_;
  std::unique_ptr<TestPrometheus> prometheus_;
};

TEST_F(PrometheusTest, ScrapesAllFiveServicesAndSeesDeviceTrafficAndOutages) {
  // 1. Every service up under its own job name, as the shipped targets name them.
  for (const ServiceCase& service : kServices) {
    EXPECT_TRUE(WaitForValue(fmt::format(R"(up{{job="{}"}})", service.job),
                             [](double up) { return up == 1; }))
        << service.job << " is not up in Prometheus; targets: "
        << prometheus_->Query("up").value_or(std::vector<std::pair<Json, double>>{}).size() << "\n"
        << prometheus_->Log();
  }
  auto up = prometheus_->Query(
      R"(up{job=~"device-gateway|thing-model|command-dispatch|shadow|rule-forwarding"})");
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(up->size(), kServices.size());
  // The services' own metrics arrive with their service label.
  EXPECT_TRUE(
      WaitForValue(R"(count(iot_build_info{service=~".+"}))", [](double n) { return n == 5; }));

  // 2. Simulated devices connect and report; the platform metric rises.
  const double before = prometheus_->Scalar(kDeviceMetric).value_or(0);
  CreateProduct();
  iot::testing::Process sim(
      {.argv = {iot::testing::ExecutablePath("iot-device-sim").string(), "--create", "3",
                "--product", "smartmeter01", "--thing-model-addr",
                services_["thing-model"]->address(), "--mqtt-port", std::to_string(broker_->port()),
                "--count", "2", "--report-interval", "1"},
       .env = {{"IOTCTL_API_KEY", kAdminKey}},
       .log_file = broker_->dir() / "sim.log",
       .run_as_user = {}});
  ASSERT_EQ(sim.Wait(seconds(60)), 0) << sim.Log();
  EXPECT_TRUE(WaitForValue(kDeviceMetric, [&](double now) { return now >= before + 6; }))
      << kDeviceMetric << " did not rise by the 3 devices x 2 reports; was " << before << ", now "
      << prometheus_->Scalar(kDeviceMetric).value_or(-1) << "\n"
      << services_["device-gateway"]->process().Log();
  // thing-model's RPCs made by the simulator were counted and scraped too.
  EXPECT_TRUE(WaitForValue(
      R"(sum(iot_grpc_server_requests_total{job="thing-model",method=~".*/AddDevice",code="OK"}))",
      [](double n) { return n >= 3; }));

  // 3. A service that stops is seen down: the scrape really reaches each process.
  services_["shadow"]->process().Stop();
  EXPECT_TRUE(WaitForValue(R"(up{job="shadow"})", [](double v) { return v == 0; }));
  EXPECT_EQ(prometheus_->Scalar(R"(up{job="thing-model"})"), std::optional<double>(1));
}

}  // namespace
}  // namespace iot
