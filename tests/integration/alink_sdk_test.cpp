// The Alink dialect end to end with Alibaba's own device SDK (issue #17): the npm package
// alibabacloud-iot-device-sdk, unmodified, run by node (tests/alink/device.js) with only the
// broker's host and port changed, against a real Mosquitto with the iot_auth plugin, a real
// device-gateway, thing-model (the product created from a TSL), shadow and command-dispatch on
// PostgreSQL and Redis. Plus a device that talks as Alibaba's C LinkSDK 4.x does (never
// subscribes, signs in upper case over the fixed timestamp) and the bad input the issue names.
#include <fcntl.h>
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "iot/testing/http.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace cd = iot::command_dispatch::v1;
namespace sh = iot::shadow::v1;
namespace tm = iot::thing_model::v1;
using iot::testing::WaitUntil;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kSecretKey(64, 'e');
const std::string kAdminKey = "alink-e2e-admin-key-0123456789";
const std::string kServiceKey = "alink-e2e-service-key-0123456789";
const std::string kGatewayPassword = "gateway-password-for-alink-tests";
/// testdata/alink_lamp_tsl.json's profile.productKey.
const std::string kProductKey = "a1LampE2E01";

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  common::SetBearer(*ctx, kAdminKey);
  ctx->set_deadline(std::chrono::system_clock::now() + seconds(30));
  return ctx;
}

bool IsDecimal(const std::string& id) {
  return !id.empty() && id.size() <= 19 && id[0] != '0' &&
         std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// tests/alink/device.js in a node process: commands go to it through a named pipe, its events
/// (one JSON line each on stdout) are read from its log.
class AlinkDevice {
 public:
  struct Options {
    std::string mode = "sdk";  ///< sdk | linksdk4
    std::string product_key;
    std::string device_name;
    std::string secret;
    std::string client_id;  ///< empty: the SDK's own
  };

  AlinkDevice(uint16_t broker_port, const Options& options)
      : fifo_(dir_.path() / "commands"), log_(dir_.path() / "device.log") {
    EXPECT_EQ(mkfifo(fifo_.c_str(), 0600), 0);
    std::map<std::string, std::string> env = {{"IOT_ALINK_MODE", options.mode},
                                              {"IOT_ALINK_HOST", "127.0.0.1"},
                                              {"IOT_ALINK_PORT", std::to_string(broker_port)},
                                              {"IOT_ALINK_PK", options.product_key},
                                              {"IOT_ALINK_DN", options.device_name},
                                              {"IOT_ALINK_SECRET", options.secret},
                                              {"IOT_ALINK_COMMANDS", fifo_.string()}};
    if (!options.client_id.empty()) {
      env["IOT_ALINK_CLIENT_ID"] = options.client_id;
    }
    process_ = std::make_unique<iot::testing::Process>(
        iot::testing::Process::Options{.argv = {"node", IOT_ALINK_DIR "/device.js"},
                                       .env = env,
                                       .log_file = log_,
                                       .run_as_user = {}});
    // The writer's open succeeds once node opened the pipe for reading.
    WaitUntil(
        [&] {
          fd_ = open(fifo_.c_str(), O_WRONLY | O_NONBLOCK);
          return fd_ >= 0 || !process_->running();
        },
        seconds(20));
    EXPECT_GE(fd_, 0) << "node did not start: " << Log();
    if (fd_ >= 0) {
      fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
    }
  }

  ~AlinkDevice() {
    if (fd_ >= 0) {
      close(fd_);  // node ends its client and exits
    }
    process_->Stop(seconds(3));
  }
  AlinkDevice(const AlinkDevice&) = delete;
  AlinkDevice& operator=(const AlinkDevice&) = delete;

  void Send(const json& command) {
    const std::string line = command.dump() + "\n";
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(write(fd_, line.data(), line.size()), static_cast<ssize_t>(line.size()));
  }

  std::vector<json> Events() const {
    std::vector<json> events;
    std::istringstream in(iot::testing::ReadTextFile(log_));
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("{\"event\"")) {
        auto event = json::parse(line, nullptr, false);
        if (!event.is_discarded()) {
          events.push_back(std::move(event));
        }
      }
    }
    return events;
  }

  /// The first event `match` accepts, waiting up to `timeout`.
  std::optional<json> Await(const std::function<bool(const json&)>& match,
                            milliseconds timeout = seconds(15)) const {
    std::optional<json> found;
    WaitUntil(
        [&] {
          for (const json& event : Events()) {
            if (match(event)) {
              found = event;
              return true;
            }
          }
          return false;
        },
        timeout);
    return found;
  }

  std::optional<json> AwaitEvent(const std::string& name) const {
    return Await([&](const json& e) { return e["event"] == name; });
  }

  /// The first message the device received on `topic`.
  std::optional<json> AwaitMessage(const std::string& topic) const {
    auto event =
        Await([&](const json& e) { return e["event"] == "message" && e["topic"] == topic; });
    if (!event) {
      return std::nullopt;
    }
    return json::parse((*event)["payload"].get<std::string>(), nullptr, false);
  }

  std::string Log() const { return iot::testing::ReadTextFile(log_); }

 private:
  iot::testing::TempDir dir_{"iot-alink-device"};
  std::filesystem::path fifo_;
  std::filesystem::path log_;
  std::unique_ptr<iot::testing::Process> process_;
  int fd_ = -1;
};

class AlinkSdkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(std::filesystem::exists(IOT_ALINK_DIR
                                        "/node_modules/alibabacloud-iot-device-sdk/package.json"))
        << "the Alibaba SDK is not installed: scripts/install-deps.sh runs npm ci in tests/alink";
    redis_ = std::make_unique<iot::testing::TestRedis>();
    broker_ = std::make_unique<iot::testing::TestMosquitto>(iot::testing::AuthPluginConfig(
        redis_->Url(), kSecretKey,
        iot::testing::ServiceAccountEntry("gateway", "salt", kGatewayPassword)));
    thing_model_ = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis_->Url(),
                                               .secret_key = kSecretKey,
                                               .admin_key = kAdminKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    tm_channel_ = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    tm::CreateProductRequest product;
    product.set_tsl_json(iot::testing::ReadTextFile(IOT_TESTDATA_DIR "/alink_lamp_tsl.json"));
    tm::Product created;
    auto ctx = Context();
    const grpc::Status made =
        tm::Products::NewStub(tm_channel_)->CreateProduct(ctx.get(), product, &created);
    ASSERT_TRUE(made.ok()) << made.error_message();
    ASSERT_EQ(created.product_id(), kProductKey);
    ASSERT_EQ(created.dialect(), "alink");

    // command-dispatch and shadow need the gateway's address, the gateway theirs.
    const uint16_t gateway_port = iot::testing::FreePort();
    const std::string gateway_addr = fmt::format("127.0.0.1:{}", gateway_port);
    dispatch_ = std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
        .binary = "command-dispatch",
        .env_prefix = "IOT_COMMAND_DISPATCH",
        .env = {{"IOT_PG_URL", iot::testing::CreateTestDatabase()},
                {"IOT_REDIS_URL", redis_->Url()},
                {"IOT_THING_MODEL_ADDR", thing_model_->address()},
                {"IOT_DEVICE_GATEWAY_ADDR", gateway_addr},
                {"IOT_SERVICE_API_KEY", kServiceKey}},
        .args = {}});
    ASSERT_TRUE(dispatch_->WaitServing()) << dispatch_->process().Log();
    shadow_ = std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
        .binary = "shadow",
        .env_prefix = "IOT_SHADOW",
        .env = {{"IOT_PG_URL", iot::testing::CreateTestDatabase()},
                {"IOT_REDIS_URL", redis_->Url()},
                {"IOT_THING_MODEL_ADDR", thing_model_->address()},
                {"IOT_DEVICE_GATEWAY_ADDR", gateway_addr},
                {"IOT_SERVICE_API_KEY", kServiceKey}},
        .args = {}});
    ASSERT_TRUE(shadow_->WaitServing()) << shadow_->process().Log();
    gateway_ = std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
        .binary = "device-gateway",
        .env_prefix = "IOT_DEVICE_GATEWAY",
        .env = {{"IOT_MQTT_URL",
                 fmt::format("mqtt://gateway:{}@127.0.0.1:{}", kGatewayPassword, broker_->port())},
                {"IOT_REDIS_URL", redis_->Url()},
                {"IOT_PG_URL", thing_model_->pg_url()},
                {"IOT_THING_MODEL_ADDR", thing_model_->address()},
                {"IOT_SHADOW_ADDR", shadow_->address()},
                {"IOT_COMMAND_DISPATCH_ADDR", dispatch_->address()},
                {"IOT_RULE_FORWARDING_ADDR", "none"},
                {"IOT_SERVICE_API_KEY", kServiceKey},
                {"IOT_DEVICE_GATEWAY_MQTT_CLIENT_ID", "gw-alink-e2e"}},
        .args = {},
        .grpc_port = gateway_port});
    ASSERT_TRUE(gateway_->WaitServing()) << gateway_->process().Log();
    commands_ = cd::Commands::NewStub(
        grpc::CreateChannel(dispatch_->address(), grpc::InsecureChannelCredentials()));
    shadows_ = sh::Shadows::NewStub(
        grpc::CreateChannel(shadow_->address(), grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() {
    gateway_.reset();
    shadow_.reset();
    dispatch_.reset();
    thing_model_.reset();
    broker_.reset();
    redis_.reset();
  }

  void SetUp() override {
    tm::AddDeviceRequest add;
    add.set_product_id(kProductKey);
    // Alibaba device names may hold '@', '.', ':' and '-'.
    device_name_ = "lamp-" + common::HexEncode(common::RandomBytes(4)) + "@home";
    add.set_node_id(device_name_);
    tm::AddDeviceResponse added;
    auto ctx = Context();
    const grpc::Status status =
        tm::Devices::NewStub(tm_channel_)->AddDevice(ctx.get(), add, &added);
    ASSERT_TRUE(status.ok()) << status.error_message();
    device_id_ = added.device().device_id();
    ASSERT_EQ(device_id_, kProductKey + "_" + device_name_);
    secret_ = added.secret();
  }

  std::unique_ptr<AlinkDevice> Start(std::string mode = "sdk", std::string client_id = {}) {
    return std::make_unique<AlinkDevice>(broker_->port(),
                                         AlinkDevice::Options{.mode = std::move(mode),
                                                              .product_key = kProductKey,
                                                              .device_name = device_name_,
                                                              .secret = secret_,
                                                              .client_id = std::move(client_id)});
  }

  /// Starts a device and waits for its CONNACK.
  std::unique_ptr<AlinkDevice> Connected(std::string mode = "sdk") {
    auto device = Start(std::move(mode));
    auto connected = device->AwaitEvent("connect");
    EXPECT_TRUE(connected.has_value()) << device->Log() << Diagnostics();
    return device;
  }

  std::string Topic(std::string_view rest) const {
    return fmt::format("/sys/{}/{}/{}", kProductKey, device_name_, rest);
  }

  std::string Diagnostics() const {
    return "\n--- gateway\n" + gateway_->process().Log() + "\n--- command-dispatch\n" +
           dispatch_->process().Log();
  }

  double GatewayMetric(const std::string& name,
                       const std::map<std::string, std::string>& labels = {}) const {
    auto series = iot::testing::ParsePrometheusText(gateway_->Metrics());
    return series.ok() ? iot::testing::SumSeries(*series, name, labels) : -1;
  }

  /// Runs `call` until the device is known to be online (command-dispatch learns of the
  /// connect from the broker's presence event, just after CONNACK).
  static grpc::Status UntilOnline(const std::function<grpc::Status()>& call) {
    grpc::Status status;
    WaitUntil(
        [&] {
          status = call();
          return status.error_code() != grpc::StatusCode::FAILED_PRECONDITION;
        },
        seconds(15));
    return status;
  }

  sh::ShowDeviceShadowResponse Shadow() const {
    sh::ShowDeviceShadowRequest request;
    request.set_device_id(device_id_);
    sh::ShowDeviceShadowResponse response;
    auto ctx = Context();
    const grpc::Status status = shadows_->ShowDeviceShadow(ctx.get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  /// The reported value of `name` in the shadow's default service (null when absent).
  json Reported(const std::string& name) const {
    const sh::ShowDeviceShadowResponse shadow = Shadow();
    for (const auto& service : shadow.shadow()) {
      if (service.service_id() == "default") {
        return json::parse(service.reported().properties_json(), nullptr, false)
            .value(name, json());
      }
    }
    return json();
  }

  static inline std::unique_ptr<iot::testing::TestRedis> redis_;
  static inline std::unique_ptr<iot::testing::TestMosquitto> broker_;
  static inline std::unique_ptr<iot::testing::ThingModelProcess> thing_model_;
  static inline std::shared_ptr<grpc::Channel> tm_channel_;
  static inline std::unique_ptr<iot::testing::ServiceProcess> dispatch_;
  static inline std::unique_ptr<iot::testing::ServiceProcess> shadow_;
  static inline std::unique_ptr<iot::testing::ServiceProcess> gateway_;
  static inline std::unique_ptr<cd::Commands::Stub> commands_;
  static inline std::unique_ptr<sh::Shadows::Stub> shadows_;

  std::string device_name_;
  std::string device_id_;
  std::string secret_;
};

TEST_F(AlinkSdkTest, SdkConnectsAndItsPropertyPostIsAnsweredAndReachesTheShadow) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE((*device->AwaitEvent("connect"))["client_id"].get<std::string>().starts_with(
      kProductKey + "&" + device_name_ + "|securemode=3,signmethod=hmacsha1,"));
  device->Send({{"op", "postProps"}, {"params", {{"LightSwitch", 1}, {"Brightness", 40}}}});
  // The SDK calls back only for a reply on post_reply with its own id echoed exactly
  // ("1|exp-topic|/sys/.../post_reply").
  auto reply = device->Await([](const json& e) { return e["event"] == "reply"; });
  ASSERT_TRUE(reply.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ((*reply)["res"]["code"], 200) << reply->dump();
  EXPECT_TRUE((*reply)["res"]["id"].get<std::string>().ends_with(
      "|exp-topic|" + Topic("thing/event/property/post_reply")));
  ASSERT_TRUE(WaitUntil([&] { return Reported("Brightness") == 40; }, seconds(10)))
      << Shadow().DebugString() << Diagnostics();
  // TSL bool travels as 0/1 and is a boolean in the model.
  EXPECT_EQ(Reported("LightSwitch"), true);
}

TEST_F(AlinkSdkTest, EventPostIsAnswered) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  device->Send({{"op", "postEvent"}, {"name", "Overheat"}, {"params", {{"temp", 80.5}}}});
  auto reply = device->Await([](const json& e) { return e["event"] == "reply"; });
  ASSERT_TRUE(reply.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ((*reply)["res"]["code"], 200) << reply->dump();
}

TEST_F(AlinkSdkTest, UpdatePropertiesIsAPropertySetCompletedByTheSetReply) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  device->Send({{"op", "onProps"}, {"reply", {{"code", 200}}}});
  cd::UpdatePropertiesRequest set;
  set.set_device_id(device_id_);
  set.set_services_json(
      R"({"services":[{"service_id":"default","properties":{"LightSwitch":true,"Brightness":70}}]})");
  set.set_timeout(10);
  cd::UpdatePropertiesResponse answer;
  const grpc::Status status = UntilOnline([&] {
    auto ctx = Context();
    return commands_->UpdateProperties(ctx.get(), set, &answer);
  });
  ASSERT_TRUE(status.ok()) << status.error_message() << device->Log() << Diagnostics();
  auto props = device->AwaitEvent("props");
  ASSERT_TRUE(props.has_value());
  const json& request = (*props)["res"];
  EXPECT_EQ(request["method"], "thing.service.property.set");
  EXPECT_EQ(request["version"], "1.0");
  EXPECT_EQ(request["params"], json::parse(R"({"LightSwitch":1,"Brightness":70})"));
  EXPECT_EQ(request["id"], answer.request_id());
  EXPECT_TRUE(IsDecimal(answer.request_id())) << answer.request_id();
}

TEST_F(AlinkSdkTest, ListPropertiesIsAPropertyGetOfTheReadableNames) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  cd::ListPropertiesRequest get;
  get.set_device_id(device_id_);
  get.set_timeout(10);
  cd::ListPropertiesResponse answer;
  std::thread device_side([&] {
    auto asked = device->AwaitMessage(Topic("thing/service/property/get"));
    if (asked && asked->is_object()) {
      device->Send({{"op", "publish"},
                    {"topic", Topic("thing/service/property/get_reply")},
                    {"payload",
                     {{"id", (*asked)["id"]},
                      {"code", 200},
                      {"data", {{"Brightness", 33}, {"LightSwitch", 0}}}}}});
    }
  });
  const grpc::Status status = UntilOnline([&] {
    auto ctx = Context();
    return commands_->ListProperties(ctx.get(), get, &answer);
  });
  device_side.join();
  ASSERT_TRUE(status.ok()) << status.error_message() << device->Log() << Diagnostics();
  const auto asked = device->AwaitMessage(Topic("thing/service/property/get"));
  ASSERT_TRUE(asked.has_value());
  EXPECT_EQ((*asked)["method"], "thing.service.property.get");
  EXPECT_EQ((*asked)["params"], json::parse(R"(["LightSwitch","Brightness","Temperature"])"));
  EXPECT_NE(answer.response_json().find("33"), std::string::npos) << answer.response_json();
}

TEST_F(AlinkSdkTest, SyncServiceIsCalledOverRrpcAndItsResponseCompletesTheCommand) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  device->Send({{"op", "onService"},
                {"name", "Reboot"},
                {"type", "sync"},
                {"reply", {{"code", 200}, {"data", {{"result", "rebooting"}}}}}});
  cd::CreateCommandRequest command;
  command.set_device_id(device_id_);
  command.set_service_id("default");
  command.set_command_name("Reboot");
  command.set_paras_json(R"({"delay":2})");
  command.set_timeout(10);
  cd::CreateCommandResponse answer;
  const grpc::Status status = UntilOnline([&] {
    auto ctx = Context();
    return commands_->CreateCommand(ctx.get(), command, &answer);
  });
  ASSERT_TRUE(status.ok()) << status.error_message() << device->Log() << Diagnostics();
  EXPECT_NE(answer.response_json().find("rebooting"), std::string::npos) << answer.response_json();
  EXPECT_TRUE(IsDecimal(answer.command_id())) << answer.command_id();
  auto called = device->Await([](const json& e) {
    return e["event"] == "message" &&
           e["topic"].get<std::string>().find("/rrpc/request/") != std::string::npos;
  });
  ASSERT_TRUE(called.has_value());
  EXPECT_EQ((*called)["topic"], Topic("rrpc/request/" + answer.command_id()));
  const json request = json::parse((*called)["payload"].get<std::string>());
  EXPECT_EQ(request["method"], "thing.service.Reboot");
  EXPECT_EQ(request["params"], json::parse(R"({"delay":2})"));
}

TEST_F(AlinkSdkTest, AsyncServiceGoesToItsServiceTopicAndTheReplyIsRecorded) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  device->Send({{"op", "onService"},
                {"name", "Blink"},
                {"type", "async"},
                {"reply", {{"code", 200}, {"data", json::object()}}}});
  cd::CreateAsyncCommandRequest command;
  command.set_device_id(device_id_);
  command.set_service_id("default");
  command.set_command_name("Blink");
  command.set_paras_json(R"({"times":3})");
  cd::AsyncDeviceCommand created;
  const grpc::Status status = UntilOnline([&] {
    auto ctx = Context();
    return commands_->CreateAsyncCommand(ctx.get(), command, &created);
  });
  ASSERT_TRUE(status.ok()) << status.error_message() << Diagnostics();
  EXPECT_TRUE(IsDecimal(created.command_id())) << created.command_id();
  const auto called = device->AwaitMessage(Topic("thing/service/Blink"));
  ASSERT_TRUE(called.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ((*called)["id"], created.command_id());
  EXPECT_EQ((*called)["method"], "thing.service.Blink");
  cd::AsyncDeviceCommand shown;
  EXPECT_TRUE(WaitUntil(
      [&] {
        cd::ShowAsyncDeviceCommandRequest show;
        show.set_device_id(device_id_);
        show.set_command_id(created.command_id());
        auto ctx = Context();
        return commands_->ShowAsyncDeviceCommand(ctx.get(), show, &shown).ok() &&
               shown.status() == "SUCCESSFUL";
      },
      seconds(15)))
      << shown.DebugString() << Diagnostics();
}

TEST_F(AlinkSdkTest, ShadowUpdateGetAndDesiredControl) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  device->Send({{"op", "postShadow"}, {"reported", {{"Brightness", 12}}}});
  ASSERT_TRUE(WaitUntil([&] { return Reported("Brightness") == 12; }, seconds(10)))
      << Shadow().DebugString() << device->Log() << Diagnostics();

  // The update is answered on /shadow/get too ({"method":"reply","payload":{"status","version"}});
  // the get's reply carries the state.
  auto updated_answer = device->Await(
      [](const json& e) { return e["event"] == "shadow" && e["res"]["method"] == "reply"; });
  ASSERT_TRUE(updated_answer.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ((*updated_answer)["res"]["payload"]["status"], "success");
  device->Send({{"op", "getShadow"}});
  auto reply = device->Await([](const json& e) {
    return e["event"] == "shadow" && e["res"]["method"] == "reply" &&
           e["res"]["payload"].contains("state");
  });
  ASSERT_TRUE(reply.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ((*reply)["res"]["payload"]["status"], "success");
  EXPECT_EQ((*reply)["res"]["payload"]["state"]["reported"]["Brightness"], 12);

  sh::UpdateDeviceShadowDesiredDataRequest desired;
  desired.set_device_id(device_id_);
  desired.add_shadow()->set_service_id("default");
  desired.mutable_shadow(0)->set_desired_json(R"({"LightSwitch":true,"Brightness":80})");
  sh::ShowDeviceShadowResponse updated;
  auto ctx = Context();
  const grpc::Status status = shadows_->UpdateDeviceShadowDesiredData(ctx.get(), desired, &updated);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto control = device->Await(
      [](const json& e) { return e["event"] == "shadow" && e["res"]["method"] == "control"; });
  ASSERT_TRUE(control.has_value()) << device->Log() << Diagnostics();
  const json& payload = (*control)["res"]["payload"];
  EXPECT_EQ(payload["status"], "success");
  EXPECT_EQ(payload["state"]["desired"], json::parse(R"({"LightSwitch":1,"Brightness":80})"));
  EXPECT_EQ(payload["state"]["reported"]["Brightness"], 12);
  EXPECT_TRUE(payload["metadata"]["desired"]["Brightness"]["timestamp"].is_number_integer());
  EXPECT_EQ((*control)["res"]["version"], updated.version());
}

TEST_F(AlinkSdkTest, CustomTopicsAndMessagesDown) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  const double uplinks = GatewayMetric("iot_gateway_uplink_messages_total");
  device->Send({{"op", "publish"},
                {"topic", fmt::format("/{}/{}/user/telemetry", kProductKey, device_name_)},
                {"payload", "free-form bytes"}});
  EXPECT_TRUE(
      WaitUntil([&] { return GatewayMetric("iot_gateway_uplink_messages_total") >= uplinks + 1; },
                seconds(10)))
      << gateway_->Metrics();

  cd::CreateMessageRequest message;
  message.set_device_id(device_id_);
  message.set_message_json(R"({"text":"hello"})");
  message.set_topic("alerts");
  cd::CreateMessageResponse created;
  auto ctx = Context();
  grpc::Status status = commands_->CreateMessage(ctx.get(), message, &created);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto custom = device->AwaitMessage(fmt::format("/{}/{}/user/alerts", kProductKey, device_name_));
  ASSERT_TRUE(custom.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ(*custom, json::parse(R"({"text":"hello"})"));

  cd::CreateMessageRequest raw;
  raw.set_device_id(device_id_);
  raw.set_payload_format("raw");
  raw.set_raw_message(R"({"raw":1})");
  auto ctx2 = Context();
  status = commands_->CreateMessage(ctx2.get(), raw, &created);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto down_raw = device->AwaitMessage(Topic("thing/model/down_raw"));
  ASSERT_TRUE(down_raw.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ(*down_raw, json::parse(R"({"raw":1})"));
}

TEST_F(AlinkSdkTest, LinkSdk4DeviceNeverSubscribesAndSignsInUpperCaseWithTheFixedTimestamp) {
  auto device = Connected("linksdk4");
  ASSERT_FALSE(HasFailure());
  // No method in the payload: LinkSDK 4.x leaves it to the topic. The reply comes although
  // the device never subscribed to anything.
  device->Send({{"op", "publish"},
                {"topic", Topic("thing/event/property/post")},
                {"payload",
                 {{"id", "7"},
                  {"version", "1.0"},
                  {"params", {{"Brightness", 21}}},
                  {"sys", {{"ack", 1}}}}}});
  auto reply = device->AwaitMessage(Topic("thing/event/property/post_reply"));
  ASSERT_TRUE(reply.has_value()) << device->Log() << Diagnostics();
  EXPECT_EQ((*reply)["id"], "7");
  EXPECT_EQ((*reply)["code"], 200);
  EXPECT_TRUE(WaitUntil([&] { return Reported("Brightness") == 21; }, seconds(10)));

  cd::UpdatePropertiesRequest set;
  set.set_device_id(device_id_);
  set.set_services_json(R"({"services":[{"service_id":"default","properties":{"Brightness":5}}]})");
  set.set_timeout(10);
  cd::UpdatePropertiesResponse answer;
  std::thread device_side([&] {
    auto asked = device->AwaitMessage(Topic("thing/service/property/set"));
    if (asked && asked->is_object()) {
      device->Send(
          {{"op", "publish"},
           {"topic", Topic("thing/service/property/set_reply")},
           {"payload", {{"id", (*asked)["id"]}, {"code", 200}, {"data", json::object()}}}});
    }
  });
  const grpc::Status status = UntilOnline([&] {
    auto ctx = Context();
    return commands_->UpdateProperties(ctx.get(), set, &answer);
  });
  device_side.join();
  ASSERT_TRUE(status.ok()) << status.error_message() << device->Log() << Diagnostics();
}

TEST_F(AlinkSdkTest, WrongSignatureUnknownProductKeyAndMalformedClientIdAreRefused) {
  const auto refused = [&](AlinkDevice& device) {
    auto outcome = device.Await(
        [](const json& e) { return e["event"] == "connect" || e["event"] == "close"; });
    return outcome.has_value() && (*outcome)["event"] == "close";
  };
  secret_ = "not-the-device-secret";
  auto wrong_secret = Start();
  EXPECT_TRUE(refused(*wrong_secret)) << wrong_secret->Log();

  device_name_ = "no-such-device";
  auto unknown_device = Start();
  EXPECT_TRUE(refused(*unknown_device)) << unknown_device->Log();

  auto unknown_product = std::make_unique<AlinkDevice>(
      broker_->port(), AlinkDevice::Options{.mode = "sdk",
                                            .product_key = "a1NoSuchPK0",
                                            .device_name = "lamp",
                                            .secret = "whatever-secret",
                                            .client_id = {}});
  EXPECT_TRUE(refused(*unknown_product)) << unknown_product->Log();

  SetUp();  // a real device again, with its real secret
  for (const std::string& client_id :
       {fmt::format("{}.{}|securemode=3,signmethod=hmacsha256", kProductKey, device_name_),
        std::string("|securemode=3,signmethod=hmacsha256,timestamp=2524608000000|")}) {
    auto malformed = Start("linksdk4", client_id);
    EXPECT_TRUE(refused(*malformed)) << client_id << "\n" << malformed->Log();
  }
  // The same device with its own client id connects: the refusals were about the input.
  // (Their counts are in the plugin's connect-guard log lines, which the broker's own tests
  // check: AlinkTest in broker/tests/plugin_test.cpp; mosquitto's stdout log is block-buffered,
  // too late for a check here.)
  auto good = Connected("linksdk4");
  EXPECT_FALSE(HasFailure());
}

TEST_F(AlinkSdkTest, InvalidParamsAndUnknownServicesAreAnsweredWithErrorsAndCounted) {
  auto device = Connected();
  ASSERT_FALSE(HasFailure());
  const double invalid =
      GatewayMetric("iot_gateway_uplink_rejected_total", {{"reason", "invalid_property"}});
  device->Send({{"op", "postProps"}, {"params", {{"Brightness", 1000}}}});
  auto reply = device->Await([](const json& e) { return e["event"] == "reply"; });
  ASSERT_TRUE(reply.has_value()) << device->Log() << Diagnostics();
  EXPECT_NE((*reply)["res"]["code"], 200) << reply->dump();
  EXPECT_TRUE(WaitUntil(
      [&] {
        return GatewayMetric("iot_gateway_uplink_rejected_total",
                             {{"reason", "invalid_property"}}) >= invalid + 1;
      },
      seconds(10)))
      << gateway_->Metrics();

  const double events = GatewayMetric("iot_gateway_uplink_rejected_total");
  device->Send({{"op", "postEvent"}, {"name", "NoSuchEvent"}, {"params", {{"x", 1}}}});
  auto event_reply =
      device->Await([](const json& e) { return e["event"] == "reply" && e["res"]["code"] != 200; });
  ASSERT_TRUE(event_reply.has_value()) << device->Log();
  EXPECT_EQ((*event_reply)["res"]["code"], 460) << event_reply->dump();
  EXPECT_TRUE(
      WaitUntil([&] { return GatewayMetric("iot_gateway_uplink_rejected_total") >= events + 1; },
                seconds(10)));

  // A service the model does not have is refused before anything reaches the device.
  cd::CreateCommandRequest command;
  command.set_device_id(device_id_);
  command.set_service_id("default");
  command.set_command_name("SelfDestruct");
  command.set_paras_json("{}");
  cd::CreateCommandResponse answer;
  auto ctx = Context();
  const grpc::Status status = commands_->CreateCommand(ctx.get(), command, &answer);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  auto ctx2 = Context();
  command.set_command_name("Reboot");
  command.set_paras_json(R"({"delay":"soon"})");
  EXPECT_EQ(commands_->CreateCommand(ctx2.get(), command, &answer).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace iot
