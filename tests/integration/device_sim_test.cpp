// iot-device-sim as a process against a real stack: thing-model (real PostgreSQL, private
// Redis) and mosquitto with the iot_auth plugin reading thing-model's projection. A service
// account watches what the simulated devices publish and sends them downlink messages.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/health_client.h"
#include "iot/common/mqtt.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/product_model.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"
#include "iot/thing_model/validator.h"

namespace iot {
namespace {

namespace pb = thing_model::v1;
using iot::testing::WaitUntil;
using Json = nlohmann::json;
using std::chrono::seconds;

constexpr char kSecretKeyHex[] = "5f1c0a3b2e4d6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
constexpr char kRootKey[] = "device-sim-test-root-admin-key-0123456789";
constexpr char kServiceKey[] = "device-sim-test-service-key-0123456789ab";
constexpr char kGatewayUser[] = "gateway";
constexpr char kGatewayPassword[] = "gateway-pass";
constexpr char kGatewaySalt[] = "c2FsdA";
constexpr char kProductId[] = "smartmeter01";
constexpr char kReportSuffix[] = "/sys/properties/report";

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The device id of `$oc/devices/{id}/...`.
std::string DeviceOf(const std::string& topic) {
  const std::string prefix = "$oc/devices/";
  const auto end = topic.find('/', prefix.size());
  return topic.substr(prefix.size(), end - prefix.size());
}

/// The last line of `output` that is a JSON object (the sim's --json summary).
Json Summary(const std::string& output) {
  std::istringstream lines(output);
  std::string line;
  Json summary;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.front() == '{') {
      summary = Json::parse(line, nullptr, false);
    }
  }
  return summary;
}

/// The service account's view of the broker: every message under `$oc/devices/+/sys/`.
class Watcher {
 public:
  static constexpr std::string_view kRelayPrefix = "iot/up/";

  explicit Watcher(uint16_t port) {
    auto client = common::MqttClient::Create(
        common::MqttOptions{.url = fmt::format("mqtt://127.0.0.1:{}", port),
                            .client_id = "device-sim-test-watcher",
                            .username = kGatewayUser,
                            .password = kGatewayPassword});
    EXPECT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    client_->SetMessageHandler([this](const common::MqttMessage& message) {
      // The iot_auth plugin delivers device uplink `$oc/devices/{id}/...` as
      // `iot/up/{partition}/{id}/...` (broker/README.md, Uplink); kept here under the device's
      // own topic.
      common::MqttMessage device_view = message;
      if (device_view.topic.rfind(kRelayPrefix, 0) == 0) {
        const auto slash = device_view.topic.find('/', kRelayPrefix.size());
        device_view.topic = "$oc/devices/" + device_view.topic.substr(slash + 1);
      }
      const std::lock_guard lock(mutex_);
      messages_.push_back(std::move(device_view));
    });
    EXPECT_TRUE(client_->Subscribe("iot/up/+/+/sys/#", 1).ok());
    EXPECT_TRUE(client_->Start().ok());
    EXPECT_TRUE(client_->WaitSubscribed(seconds(10)));
  }

  common::MqttClient& client() { return *client_; }

  std::vector<common::MqttMessage> Messages() const {
    const std::lock_guard lock(mutex_);
    return messages_;
  }

  std::vector<common::MqttMessage> Reports(const std::string& device_prefix) const {
    std::vector<common::MqttMessage> out;
    for (auto& message : Messages()) {
      if (EndsWith(message.topic, kReportSuffix) &&
          DeviceOf(message.topic).rfind(device_prefix, 0) == 0) {
        out.push_back(message);
      }
    }
    return out;
  }

  /// Index in Messages() of the first message on `topic`, or -1.
  long Find(const std::string& topic) const {
    const auto messages = Messages();
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].topic == topic) {
        return static_cast<long>(i);
      }
    }
    return -1;
  }

 private:
  std::unique_ptr<common::MqttClient> client_;
  mutable std::mutex mutex_;
  std::vector<common::MqttMessage> messages_;
};

class DeviceSimTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<iot::testing::TempDir>("iot-device-sim");
    redis_ = std::make_unique<iot::testing::TestRedis>();
    broker_ = std::make_unique<iot::testing::TestMosquitto>(iot::testing::AuthPluginConfig(
        redis_->Url(), kSecretKeyHex,
        iot::testing::ServiceAccountEntry(kGatewayUser, kGatewaySalt, kGatewayPassword)));
    server_ = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis_->Url(),
                                               .secret_key = kSecretKeyHex,
                                               .admin_key = kRootKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    address_ = server_->address();
    ASSERT_TRUE(server_->WaitServing()) << server_->process().Log();

    auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    {
      grpc::ClientContext context;
      common::SetBearer(context, kRootKey);
      pb::CreateTenantRequest request;
      request.set_name("device sim test");
      request.set_create_admin_key(true);
      pb::CreateTenantResponse response;
      const auto status = pb::Tenants::NewStub(channel)->CreateTenant(&context, request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      admin_key_ = response.admin_key_secret();
    }
    product_json_ = ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json");
    {
      grpc::ClientContext context;
      common::SetBearer(context, admin_key_);
      pb::CreateProductRequest request;
      request.set_product_json(product_json_);
      pb::Product product;
      const auto status =
          pb::Products::NewStub(channel)->CreateProduct(&context, request, &product);
      ASSERT_TRUE(status.ok()) << status.error_message();
    }
    auto model = thing_model::ParseProductModel(product_json_);
    ASSERT_TRUE(model.ok()) << model.status();
    validator_ = std::make_unique<thing_model::Validator>(model->model);
  }

  static void TearDownTestSuite() {
    if (server_) {
      EXPECT_EQ(server_->process().Stop(), 0) << server_->process().Log();
    }
    server_.reset();
    broker_.reset();
    redis_.reset();
  }

  /// The sim's command line: `args`, plus the test servers' addresses unless `args` has them.
  static std::vector<std::string> SimArgv(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {iot::testing::ExecutablePath("iot-device-sim").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto has = [&](const std::string& flag) {
      return std::find(args.begin(), args.end(), flag) != args.end();
    };
    if (!has("--thing-model-addr")) {
      argv.insert(argv.end(), {"--thing-model-addr", address_});
    }
    if (!has("--mqtt-port")) {
      argv.insert(argv.end(), {"--mqtt-port", std::to_string(broker_->port())});
    }
    return argv;
  }

  static std::unique_ptr<iot::testing::Process> StartSim(const std::vector<std::string>& args,
                                                         const std::filesystem::path& log) {
    return std::make_unique<iot::testing::Process>(iot::testing::Process::Options{
        .argv = SimArgv(args),
        .env = {{"IOTCTL_API_KEY", admin_key_}, {"IOTCTL_API_KEY_FILE", ""}},
        .log_file = log,
        .run_as_user = {}});
  }

  /// Runs the sim to completion: exit code and output.
  static std::pair<int, std::string> RunSim(const std::vector<std::string>& args) {
    const auto log = dir_->path() / fmt::format("sim-{}.log", ++runs_);
    auto sim = StartSim(args, log);
    const int code = sim->Wait(seconds(60)).value_or(-1);
    return {code, ReadFile(log)};
  }

  static inline std::unique_ptr<iot::testing::TempDir> dir_;
  static inline std::unique_ptr<iot::testing::TestRedis> redis_;
  static inline std::unique_ptr<iot::testing::TestMosquitto> broker_;
  static inline std::unique_ptr<iot::testing::ThingModelProcess> server_;
  static inline std::unique_ptr<thing_model::Validator> validator_;
  static inline std::string address_;
  static inline std::string admin_key_;
  static inline std::string product_json_;
  static inline int runs_ = 0;
};

TEST_F(DeviceSimTest, CreatedDevicesReportValidProperties) {
  Watcher watcher(broker_->port());
  const auto saved = dir_->path() / "devices.json";
  const auto [code, output] =
      RunSim({"--create", "3", "--product", kProductId, "--count", "5", "--report-interval", "0.05",
              "--json", "--save-devices", saved.string()});
  ASSERT_EQ(code, 0) << output;
  const Json summary = Summary(output);
  ASSERT_TRUE(summary.is_object()) << output;
  EXPECT_EQ(summary["devices"], 3) << output;
  EXPECT_EQ(summary["connected"], 3) << output;
  EXPECT_EQ(summary["reports_sent"], 15) << output;
  EXPECT_EQ(summary["reports_acked"], 15) << output;
  EXPECT_EQ(summary["errors"], 0) << output;

  const std::string prefix = std::string(kProductId) + "_sim-";
  ASSERT_TRUE(WaitUntil([&] { return watcher.Reports(prefix).size() >= 15; }, seconds(10)))
      << watcher.Reports(prefix).size() << " reports\n"
      << output;
  const auto reports = watcher.Reports(prefix);
  EXPECT_EQ(reports.size(), 15u);
  std::set<std::string> devices;
  for (const auto& report : reports) {
    devices.insert(DeviceOf(report.topic));
    const auto result = validator_->ValidateReport(std::string_view(report.payload));
    EXPECT_TRUE(result.ok()) << report.payload << "\n"
                             << (result.errors.empty() ? "" : result.errors[0].ToString());
    const Json body = Json::parse(report.payload);
    ASSERT_EQ(body["services"].size(), 1u) << report.payload;
    EXPECT_EQ(body["services"][0]["service_id"], "meter");
    EXPECT_TRUE(body["services"][0]["properties"].contains("voltage")) << report.payload;
  }
  EXPECT_EQ(devices.size(), 3u);

  // The saved devices file drives a second run (model from the API, devices from the file).
  const auto saved_devices = Json::parse(ReadFile(saved));
  ASSERT_EQ(saved_devices.size(), 3u);
  EXPECT_EQ(std::filesystem::status(saved).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  const auto again = RunSim({"--devices-file", saved.string(), "--product", kProductId, "--count",
                             "1", "--report-interval", "0.05"});
  EXPECT_EQ(again.first, 0) << again.second;
  EXPECT_NE(again.second.find("3 sent, 3 acknowledged"), std::string::npos) << again.second;

  // --create of an existing device resets its secret: the old one no longer works, the sim's does.
  const auto recreated = dir_->path() / "recreated.json";
  const auto reset = RunSim({"--create", "1", "--product", kProductId, "--count", "1",
                             "--save-devices", recreated.string(), "--json"});
  EXPECT_EQ(reset.first, 0) << reset.second;
  EXPECT_EQ(Summary(reset.second)["reports_acked"], 1) << reset.second;
  const auto new_secret = Json::parse(ReadFile(recreated))[0]["secret"];
  EXPECT_NE(new_secret, saved_devices[0]["secret"]);
}

TEST_F(DeviceSimTest, AnswersCommandsAndAdoptsPropertySets) {
  Watcher watcher(broker_->port());
  const auto log = dir_->path() / "sim-background.log";
  auto sim = StartSim({"--create", "2", "--product", kProductId, "--node-prefix", "cmd-",
                       "--duration", "10", "--report-interval", "0.1", "--json"},
                      log);
  const std::string device = std::string(kProductId) + "_cmd-1";
  const std::string up = "$oc/devices/" + device + "/sys/";
  const std::string down = "$iot/down/" + device + "/sys/";
  ASSERT_TRUE(WaitUntil([&] { return watcher.Find(up + "properties/report") >= 0; }, seconds(20)))
      << ReadFile(log);

  // A command: answered on the device's response topic with the same request id.
  ASSERT_TRUE(watcher.client()
                  .Publish(down + "commands/request_id=abc",
                           Json{{"object_device_id", device},
                                {"service_id", "meter"},
                                {"command_name", "reboot"},
                                {"paras", {{"delay", 1}}}}
                               .dump(),
                           1)
                  .ok());
  const std::string command_response = up + "commands/response/request_id=abc";
  ASSERT_TRUE(WaitUntil([&] { return watcher.Find(command_response) >= 0; }, seconds(10)))
      << ReadFile(log);
  const Json answer = Json::parse(
      watcher.Messages()[static_cast<std::size_t>(watcher.Find(command_response))].payload);
  EXPECT_EQ(answer["result_code"], 0);
  EXPECT_EQ(answer["response_name"], "reboot_response");

  // A property set: acknowledged, and every later report carries the new value.
  ASSERT_TRUE(
      watcher.client()
          .Publish(down + "properties/set/request_id=set1",
                   Json{{"object_device_id", device},
                        {"services",
                         {{{"service_id", "meter"}, {"properties", {{"report_interval", 1777}}}}}}}
                       .dump(),
                   1)
          .ok());
  const std::string set_response = up + "properties/set/response/request_id=set1";
  ASSERT_TRUE(WaitUntil([&] { return watcher.Find(set_response) >= 0; }, seconds(10)))
      << ReadFile(log);
  const std::size_t acked_at = static_cast<std::size_t>(watcher.Find(set_response));
  EXPECT_EQ(Json::parse(watcher.Messages()[acked_at].payload)["result_code"], 0);
  const auto later_reports = [&] {
    std::vector<Json> out;
    const auto messages = watcher.Messages();
    for (std::size_t i = acked_at + 1; i < messages.size(); ++i) {
      if (messages[i].topic == up + "properties/report") {
        out.push_back(Json::parse(messages[i].payload));
      }
    }
    return out;
  };
  ASSERT_TRUE(WaitUntil([&] { return later_reports().size() >= 2; }, seconds(10))) << ReadFile(log);
  for (const Json& report : later_reports()) {
    EXPECT_EQ(report["services"][0]["properties"]["report_interval"], 1777) << report.dump();
  }

  // A property get: the current values, the adopted one included.
  ASSERT_TRUE(watcher.client()
                  .Publish(down + "properties/get/request_id=get1",
                           Json{{"object_device_id", device}, {"service_id", "meter"}}.dump(), 1)
                  .ok());
  const std::string get_response = up + "properties/get/response/request_id=get1";
  ASSERT_TRUE(WaitUntil([&] { return watcher.Find(get_response) >= 0; }, seconds(10)));
  const Json got =
      Json::parse(watcher.Messages()[static_cast<std::size_t>(watcher.Find(get_response))].payload);
  EXPECT_EQ(got["services"][0]["properties"]["report_interval"], 1777) << got.dump();

  sim->Signal(SIGTERM);
  const int code = sim->Wait(seconds(20)).value_or(-1);
  const std::string output = ReadFile(log);
  EXPECT_EQ(code, 0) << output;
  const Json summary = Summary(output);
  ASSERT_TRUE(summary.is_object()) << output;
  EXPECT_EQ(summary["connected"], 2) << output;
  EXPECT_EQ(summary["commands_answered"], 1) << output;
  EXPECT_EQ(summary["property_sets_answered"], 1) << output;
  EXPECT_EQ(summary["property_gets_answered"], 1) << output;
}

TEST_F(DeviceSimTest, UsageAndUnreachableServers) {
  // Neither --devices-file nor --create.
  EXPECT_EQ(RunSim({"--product", kProductId}).first, 2);
  // A bad flag value.
  EXPECT_EQ(RunSim({"--create", "1", "--product", kProductId, "--failure-rate", "2"}).first, 2);
  // An event type the model does not have.
  const auto event = RunSim({"--create", "1", "--product", kProductId, "--event", "nope"});
  EXPECT_EQ(event.first, 2) << event.second;

  // thing-model unreachable.
  const auto no_server =
      RunSim({"--thing-model-addr", fmt::format("127.0.0.1:{}", iot::testing::FreePort()),
              "--create", "1", "--product", kProductId, "--timeout", "2"});
  EXPECT_EQ(no_server.first, 3) << no_server.second;
  EXPECT_NE(no_server.second.find("unreachable"), std::string::npos) << no_server.second;

  // The broker unreachable (devices and model from files: no thing-model call).
  const auto devices = dir_->path() / "one-device.jsonl";
  std::ofstream(devices) << R"({"device_id":"smartmeter01_x","secret":"whatever-secret"})"
                         << "\n";
  const auto model = dir_->path() / "model.json";
  std::ofstream(model) << product_json_;
  const auto no_broker =
      RunSim({"--devices-file", devices.string(), "--model-file", model.string(), "--mqtt-port",
              std::to_string(iot::testing::FreePort()), "--count", "1"});
  EXPECT_EQ(no_broker.first, 3) << no_broker.second;
}

}  // namespace
}  // namespace iot
