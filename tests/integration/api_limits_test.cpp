// The limits on JSON in the application API (issue #15; docs/security.md): every `*_json` field
// a caller sends is refused with INVALID_ARGUMENT naming the field when it is nested deeper than
// IOT_JSON_MAX_DEPTH (64) or larger than IOT_JSON_MAX_BYTES (1 MiB), and not refused for that at
// the limit. Real thing-model, shadow, command-dispatch and rule-forwarding processes against
// real PostgreSQL, Redis and Mosquitto, called through real gRPC channels.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "iot/testing/platform.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace tm = iot::thing_model::v1;
namespace cd = iot::command_dispatch::v1;
namespace rf = iot::rule_forwarding::v1;
namespace sh = iot::shadow::v1;

const std::string kSecretKey(64, 'e');
const std::string kAdminKey = "api-limits-test-admin-key-0123456789";
const std::string kServiceKey = "api-limits-test-service-key-0123456789";
constexpr size_t kMaxDepth = 64;           // IOT_JSON_MAX_DEPTH's default
constexpr size_t kMaxBytes = 1024 * 1024;  // IOT_JSON_MAX_BYTES's default

/// A product whose service takes JSON objects everywhere, so that a deep document is valid.
constexpr char kProduct[] = R"({
  "product_id": "limits01", "name": "Limits", "device_type": "Box", "protocol_type": "MQTT",
  "data_format": "json", "manufacturer_name": "Acme",
  "service_capabilities": [{
    "service_id": "conf",
    "properties": [{"property_name": "config", "data_type": "jsonObject", "method": "RW"}],
    "commands": [{"command_name": "configure",
                  "paras": [{"para_name": "config", "data_type": "jsonObject"}]}],
    "events": []
  }]
})";

std::unique_ptr<grpc::ClientContext> Context(const std::string& key) {
  auto context = std::make_unique<grpc::ClientContext>();
  common::SetBearer(*context, key);
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return context;
}

/// One `*_json` field: how to call its RPC with a given text in it, and the JSON around the part
/// a test varies (`prefix` opens `prefix_depth` levels, `suffix` closes them).
struct FieldCase {
  std::string name;   ///< test name
  std::string field;  ///< as INVALID_ARGUMENT names it
  std::string prefix;
  std::string suffix;
  size_t prefix_depth = 0;
  /// The call succeeds with a document just at the depth limit (the others fail for another
  /// reason: no device connected, a setting the action does not know).
  bool accepts_deep = false;
  std::function<grpc::Status(const std::string& json)> call;

  /// A document of exactly `depth` levels.
  [[nodiscard]] std::string Deep(size_t depth) const {
    std::string inner = "1";
    for (size_t i = prefix_depth; i < depth; ++i) {
      inner.insert(0, R"({"a":)").push_back('}');
    }
    return prefix + inner + suffix;
  }
  /// A document of exactly `bytes` bytes.
  [[nodiscard]] std::string Sized(size_t bytes) const {
    return prefix + "\"" + std::string(bytes - prefix.size() - suffix.size() - 2, 'x') + "\"" +
           suffix;
  }
};

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
}

/// thing-model, shadow, command-dispatch and rule-forwarding, started once for every test here.
class Platform : public ::testing::Environment {
 public:
  void SetUp() override {
    redis_ = new iot::testing::TestRedis();
    broker_ = new iot::testing::TestMosquitto();
    thing_model_ = new iot::testing::ThingModelProcess({.redis_url = redis_->Url(),
                                                        .secret_key = kSecretKey,
                                                        .admin_key = kAdminKey,
                                                        .service_key = kServiceKey,
                                                        .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    const std::string pg_url = iot::testing::CreateTestDatabase();
    // Nothing listens there: deliveries to the device fail, which none of these tests needs.
    const std::string no_gateway = fmt::format("127.0.0.1:{}", iot::testing::FreePort());
    const std::map<std::string, std::string> env = {
        {"IOT_PG_URL", pg_url},
        {"IOT_REDIS_URL", redis_->Url()},
        {"IOT_MQTT_URL", broker_->Url()},
        {"IOT_SERVICE_API_KEY", kServiceKey},
        {"IOT_SECRET_KEY", kSecretKey},
        {"IOT_THING_MODEL_ADDR", thing_model_->address()},
        {"IOT_DEVICE_GATEWAY_ADDR", no_gateway}};
    for (const auto& [binary, prefix] : {std::pair{"shadow", "IOT_SHADOW"},
                                         {"command-dispatch", "IOT_COMMAND_DISPATCH"},
                                         {"rule-forwarding", "IOT_RULE_FORWARDING"}}) {
      services_[binary] = new iot::testing::ServiceProcess(
          {.binary = binary, .env_prefix = prefix, .env = env, .args = {}});
    }
    for (const auto& [binary, process] : services_) {
      ASSERT_TRUE(process->WaitServing()) << binary << process->process().Log();
    }
    tm::CreateProductRequest product;
    product.set_product_json(kProduct);
    tm::Product created;
    ASSERT_TRUE(tm::Products::NewStub(Channel(thing_model_->address()))
                    ->CreateProduct(Context(kAdminKey).get(), product, &created)
                    .ok());
    tm::AddDeviceRequest add;
    add.set_product_id("limits01");
    add.set_node_id("n1");
    tm::AddDeviceResponse added;
    const grpc::Status status = tm::Devices::NewStub(Channel(thing_model_->address()))
                                    ->AddDevice(Context(kAdminKey).get(), add, &added);
    ASSERT_TRUE(status.ok()) << status.error_message();
    device_id_ = new std::string(added.device().device_id());
  }

  void TearDown() override {
    for (auto& [binary, process] : services_) {
      delete process;
    }
    services_.clear();
    delete thing_model_;
    delete broker_;
    delete redis_;
    delete device_id_;
  }

  static std::string Address(const std::string& binary) { return services_.at(binary)->address(); }

  static inline iot::testing::TestRedis* redis_ = nullptr;
  static inline iot::testing::TestMosquitto* broker_ = nullptr;
  static inline iot::testing::ThingModelProcess* thing_model_ = nullptr;
  static inline std::map<std::string, iot::testing::ServiceProcess*> services_;
  static inline std::string* device_id_ = nullptr;
};

const auto* const kPlatform = ::testing::AddGlobalTestEnvironment(new Platform);

class ApiLimitsTest : public ::testing::TestWithParam<std::string> {
 public:
  static std::string Address(const std::string& binary) { return Platform::Address(binary); }
  static const std::string& DeviceId() { return *Platform::device_id_; }

  /// The `*_json` fields of command-dispatch's API.
  static void AddCommandDispatchCases(const std::function<void(FieldCase)>& add,
                                      const std::string& config) {
    add({"command_paras_json", "paras", config, "}", 1, true, [](const std::string& json) {
           cd::CreateAsyncCommandRequest request;
           request.set_device_id(DeviceId());
           request.set_service_id("conf");
           request.set_command_name("configure");
           request.set_paras_json(json);
           request.set_send_strategy("delay");
           cd::AsyncDeviceCommand response;
           return cd::Commands::NewStub(Channel(Address("command-dispatch")))
               ->CreateAsyncCommand(Context(kAdminKey).get(), request, &response);
         }});
    add({"sync_command_paras_json", "paras", config, "}", 1, false, [](const std::string& json) {
           cd::CreateCommandRequest request;
           request.set_device_id(DeviceId());
           request.set_service_id("conf");
           request.set_command_name("configure");
           request.set_paras_json(json);
           request.set_timeout(1);
           cd::CreateCommandResponse response;
           return cd::Commands::NewStub(Channel(Address("command-dispatch")))
               ->CreateCommand(Context(kAdminKey).get(), request, &response);
         }});
    add({"property_set_services_json", "services",
         R"({"services":[{"service_id":"conf","properties":{"config":)", "}}]}", 4, false,
         [](const std::string& json) {
           cd::UpdatePropertiesRequest request;
           request.set_device_id(DeviceId());
           request.set_services_json(json);
           request.set_timeout(1);
           cd::UpdatePropertiesResponse response;
           return cd::Commands::NewStub(Channel(Address("command-dispatch")))
               ->UpdateProperties(Context(kAdminKey).get(), request, &response);
         }});
    add({"message_json", "message", "", "", 0, true, [](const std::string& json) {
           cd::CreateMessageRequest request;
           request.set_device_id(DeviceId());
           request.set_message_json(json);
           cd::CreateMessageResponse response;
           return cd::Commands::NewStub(Channel(Address("command-dispatch")))
               ->CreateMessage(Context(kAdminKey).get(), request, &response);
         }});
  }

  /// Every `*_json` field an API caller (or, for internal RPCs, a peer service) sends.
  static const std::map<std::string, FieldCase>& Cases() {
    static const std::map<std::string, FieldCase> cases = [] {
      std::map<std::string, FieldCase> out;
      const auto add = [&](FieldCase c) { out.emplace(c.name, std::move(c)); };
      const std::string config = R"({"config":)";
      add({"shadow_desired_json", "shadow[0].desired_json", config, "}", 1, true,
           [](const std::string& json) {
             sh::UpdateDeviceShadowDesiredDataRequest request;
             request.set_device_id(DeviceId());
             auto* entry = request.add_shadow();
             entry->set_service_id("conf");
             entry->set_desired_json(json);
             sh::ShowDeviceShadowResponse response;
             return sh::Shadows::NewStub(Channel(Address("shadow")))
                 ->UpdateDeviceShadowDesiredData(Context(kAdminKey).get(), request, &response);
           }});
      AddCommandDispatchCases(add, config);
      add({"rule_action_config_json", "actions[0].config_json", "", "", 0, false,
           [](const std::string& json) {
             rf::CreateRuleRequest request;
             request.set_name("limits");
             request.set_resource("device.property");
             request.set_sql("SELECT *");
             auto* action = request.add_actions();
             action->set_type("history");
             action->set_config_json(json);
             rf::Rule response;
             return rf::Rules::NewStub(Channel(Address("rule-forwarding")))
                 ->CreateRule(Context(kAdminKey).get(), request, &response);
           }});
      add({"validate_properties_report_json", "report_json",
           R"({"services":[{"service_id":"conf","properties":{"config":)", "}}]}", 4, true,
           [](const std::string& json) {
             tm::ValidatePropertiesRequest request;
             request.set_device_id(DeviceId());
             request.set_report_json(json);
             request.set_require_writable(true);
             tm::ValidatePropertiesResponse response;
             return tm::InternalThingModel::NewStub(Channel(Platform::thing_model_->address()))
                 ->ValidateProperties(Context(kServiceKey).get(), request, &response);
           }});
      return out;
    }();
    return cases;
  }

  /// True when `status` refuses the call for one of the JSON limits of `field`.
  static bool RefusedForTheLimit(const grpc::Status& status, const std::string& field) {
    return status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
           status.error_message().starts_with(field + ": JSON ");
  }
};

TEST_P(ApiLimitsTest, NestedOneLevelDeeperThanTheLimitIsRefusedNamingTheField) {
  const FieldCase& c = Cases().at(GetParam());
  const grpc::Status at = c.call(c.Deep(kMaxDepth));
  EXPECT_FALSE(RefusedForTheLimit(at, c.field)) << at.error_message();
  if (c.accepts_deep) {
    EXPECT_TRUE(at.ok()) << at.error_message();
  }
  const grpc::Status over = c.call(c.Deep(kMaxDepth + 1));
  EXPECT_EQ(over.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << over.error_message();
  EXPECT_EQ(over.error_message(),
            fmt::format("{}: JSON nested deeper than {} levels", c.field, kMaxDepth));
  // The reported attack: 800 KB of one array nested 400,000 deep.
  const grpc::Status hostile = c.call(std::string(400'000, '[') + std::string(400'000, ']'));
  EXPECT_TRUE(RefusedForTheLimit(hostile, c.field)) << hostile.error_message();
}

TEST_P(ApiLimitsTest, OneByteLargerThanTheLimitIsRefusedNamingTheField) {
  const FieldCase& c = Cases().at(GetParam());
  const grpc::Status at = c.call(c.Sized(kMaxBytes));
  EXPECT_FALSE(RefusedForTheLimit(at, c.field)) << at.error_message();
  const grpc::Status over = c.call(c.Sized(kMaxBytes + 1));
  EXPECT_EQ(over.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << over.error_message();
  EXPECT_EQ(over.error_message(), fmt::format("{}: JSON of {} bytes exceeds the limit of {}",
                                              c.field, kMaxBytes + 1, kMaxBytes));
}

grpc::Status CreateProduct(const std::string& product_json) {
  tm::CreateProductRequest request;
  request.set_product_json(product_json);
  tm::Product created;
  return tm::Products::NewStub(Channel(Platform::thing_model_->address()))
      ->CreateProduct(Context(kAdminKey).get(), request, &created);
}

/// kProduct under another product id, padded with spaces after its closing brace to `bytes`.
std::string PaddedProduct(const std::string& product_id, size_t bytes) {
  std::string text = kProduct;
  text.replace(text.find("limits01"), 8, product_id);
  text.append(bytes - text.size(), ' ');
  return text;
}

TEST(ProductModelLimitsTest, ProductModelHasItsOwnFixedLimits) {
  // thing-model's product documents: 500 KiB and 64 levels (services/thing_model, kMaxModel*).
  // 64 levels are parsed (and refused as no product), 65 are not even parsed.
  const grpc::Status at = CreateProduct(std::string(64, '[') + std::string(64, ']'));
  EXPECT_EQ(at.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(at.error_message().find("nested deeper"), std::string::npos) << at.error_message();
  const grpc::Status over = CreateProduct(std::string(65, '[') + std::string(65, ']'));
  EXPECT_EQ(over.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(over.error_message(), "product model nested deeper than 64 levels");
  // 500 KiB exactly is created; one byte more is refused before it is parsed.
  const size_t max_bytes = 500 * 1024;
  const grpc::Status fits = CreateProduct(PaddedProduct("limits02", max_bytes));
  EXPECT_TRUE(fits.ok()) << fits.error_message();
  const grpc::Status large = CreateProduct(PaddedProduct("limits03", max_bytes + 1));
  EXPECT_EQ(large.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(large.error_message(),
            fmt::format("product model too large: {} bytes > {} bytes", max_bytes + 1, max_bytes));
}

INSTANTIATE_TEST_SUITE_P(Fields, ApiLimitsTest,
                         ::testing::Values("shadow_desired_json", "command_paras_json",
                                           "sync_command_paras_json", "property_set_services_json",
                                           "message_json", "rule_action_config_json",
                                           "validate_properties_report_json"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           return param_info.param;
                         });

}  // namespace
}  // namespace iot
