// iotctl as a process against a real thing-model process (real PostgreSQL, private Redis):
// tenants and keys, products, devices, JSON and table output, errors and exit codes.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "iot/common/crypto.h"
#include "iot/common/health_client.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot {
namespace {

using iot::testing::WaitUntil;
using std::chrono::seconds;

const std::string kSecretKeyHex(64, 'b');
const std::string kRootKey = "iotctl-test-root-admin-key-0123456789";
const std::string kServiceKey = "iotctl-test-service-key-0123456789ab";

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// The value after `label: ` (and any alignment) at the start of a line of `output`, or empty.
std::string ValueAfter(const std::string& output, const std::string& label) {
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(label + ": ", 0) == 0) {
      const std::string value = line.substr(label.size() + 2);
      return value.substr(std::min(value.find_first_not_of(' '), value.size()));
    }
  }
  return {};
}

struct Result {
  int code = -1;
  std::string output;  // stdout and stderr
};

/// One thing-model process for the suite; each test makes its own tenant through iotctl.
class IotctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = std::make_unique<iot::testing::TestRedis>();
    dir_ = std::make_unique<iot::testing::TempDir>("iot-iotctl");
    server_ = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis_->Url(),
                                               .secret_key = kSecretKeyHex,
                                               .admin_key = kRootKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    address_ = server_->address();
    ASSERT_TRUE(server_->WaitServing()) << server_->process().Log();
  }

  static void TearDownTestSuite() {
    if (server_) {
      EXPECT_EQ(server_->process().Stop(), 0) << server_->process().Log();
    }
    server_.reset();
    redis_.reset();
  }

  void SetUp() override {
    const Result created =
        Run(kRootKey, {"tenant", "create", "--name", "iotctl test tenant", "--with-admin-key"});
    ASSERT_EQ(created.code, 0) << created.output;
    admin_ = ValueAfter(created.output, "admin key");
    ASSERT_GE(admin_.size(), 24u) << created.output;
    EXPECT_TRUE(Contains(created.output, "shown once")) << created.output;
  }

  /// Runs iotctl with `key` in IOTCTL_API_KEY (none when empty) against the test server.
  static Result Run(const std::string& key, const std::vector<std::string>& args,
                    std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv = {iot::testing::ExecutablePath("iotctl").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    env.emplace("IOTCTL_ADDR", address_);
    env.emplace("IOTCTL_API_KEY", key);
    env.emplace("IOTCTL_API_KEY_FILE", "");
    const auto log = dir_->path() / ("iotctl-" + std::to_string(++runs_) + ".log");
    iot::testing::Process process(iot::testing::Process::Options{
        .argv = argv, .env = env, .log_file = log, .run_as_user = {}});
    Result result;
    result.code = process.Wait(seconds(60)).value_or(-1);
    result.output = ReadFile(log);
    return result;
  }

  /// Runs iotctl with `--json` and parses its output.
  static nlohmann::json Json(const std::string& key, std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    const Result result = Run(key, args);
    EXPECT_EQ(result.code, 0) << result.output;
    auto json = nlohmann::json::parse(result.output, nullptr, false);
    EXPECT_FALSE(json.is_discarded()) << result.output;
    return json;
  }

  /// The smart meter product JSON with `product_id`, written to a file.
  std::string ProductFile(const std::string& product_id) {
    auto body = nlohmann::json::parse(ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    body["product_id"] = product_id;
    const auto path = dir_->path() / (product_id + ".json");
    WriteFile(path, body.dump());
    return path.string();
  }

  /// `product show` (--json: the response message, proto field names, the model as imported;
  /// --model; the table), `product list` and `product versions` of product `id`.
  void ExpectProductViews(const std::string& id, const nlohmann::json& original) const {
    const auto shown = Json(admin_, {"product", "show", id});
    EXPECT_EQ(shown["product_id"], id);
    EXPECT_EQ(shown["model_version"], 1);
    EXPECT_EQ(shown["device_type"], "SmartMeter");
    EXPECT_EQ(nlohmann::json::parse(shown["product_json"].get<std::string>()), original);

    Result model = Run(admin_, {"product", "show", id, "--model"});
    ASSERT_EQ(model.code, 0) << model.output;
    EXPECT_EQ(nlohmann::json::parse(model.output), original);

    Result table = Run(admin_, {"product", "show", id});
    ASSERT_EQ(table.code, 0) << table.output;
    EXPECT_TRUE(Contains(table.output, "SERVICE_ID")) << table.output;
    EXPECT_EQ(ValueAfter(table.output, "model version"), "1") << table.output;

    Result list = Run(admin_, {"product", "list"});
    ASSERT_EQ(list.code, 0) << list.output;
    EXPECT_TRUE(Contains(list.output, "PRODUCT_ID")) << list.output;
    EXPECT_TRUE(Contains(list.output, "Smart Meter SM-200")) << list.output;
    EXPECT_EQ(Json(admin_, {"product", "list", "--name", "no such product"})["products"].size(),
              0u);

    Result versions = Run(admin_, {"product", "versions", id});
    ASSERT_EQ(versions.code, 0) << versions.output;
    EXPECT_TRUE(Contains(versions.output, "VERSION")) << versions.output;
  }

  static std::string UniqueId(const std::string& prefix) {
    return prefix + common::HexEncode(common::RandomBytes(6));
  }

  static inline std::unique_ptr<iot::testing::TestRedis> redis_;
  static inline std::unique_ptr<iot::testing::TempDir> dir_;
  static inline std::unique_ptr<iot::testing::ThingModelProcess> server_;
  static inline std::string address_;
  static inline int runs_ = 0;

  std::string admin_;
};

TEST_F(IotctlTest, ProductsAndDevicesEndToEnd) {
  const std::string file = IOT_TESTDATA_DIR "/smart_meter_product.json";
  const auto original = nlohmann::json::parse(ReadFile(file));
  const std::string id = original["product_id"];

  Result created = Run(admin_, {"product", "create", "--file", file});
  ASSERT_EQ(created.code, 0) << created.output;
  EXPECT_EQ(ValueAfter(created.output, "product"), id) << created.output;

  ASSERT_NO_FATAL_FAILURE(ExpectProductViews(id, original));

  // A device: the secret is printed once.
  Result added = Run(admin_, {"device", "add", "--product", id, "--node", "n1", "--name",
                              "hall meter", "--tag", "floor=2"});
  ASSERT_EQ(added.code, 0) << added.output;
  const std::string secret = ValueAfter(added.output, "secret");
  EXPECT_GE(secret.size(), 8u) << added.output;
  EXPECT_TRUE(Contains(added.output, "shown once")) << added.output;

  const auto devices = Json(admin_, {"device", "list", "--product", id});
  ASSERT_EQ(devices["devices"].size(), 1u) << devices.dump();
  const auto& device = devices["devices"][0];
  EXPECT_EQ(device["device_id"], id + "_n1");
  EXPECT_EQ(device["node_id"], "n1");
  EXPECT_EQ(device["device_name"], "hall meter");
  EXPECT_EQ(device["status"], "INACTIVE");
  EXPECT_EQ(device["tags"]["floor"], "2");
  EXPECT_EQ(device["has_secret"], true);
  EXPECT_FALSE(Contains(devices.dump(), secret));

  // Tags merge unless --replace-tags.
  const auto updated =
      Json(admin_, {"device", "update", id + "_n1", "--tag", "room=kitchen", "--name", "kitchen"});
  EXPECT_EQ(updated["tags"], nlohmann::json({{"floor", "2"}, {"room", "kitchen"}}));
  EXPECT_EQ(updated["device_name"], "kitchen");
  const auto replaced =
      Json(admin_, {"device", "update", id + "_n1", "--tag", "a=b", "--replace-tags"});
  EXPECT_EQ(replaced["tags"], nlohmann::json({{"a", "b"}}));

  Result frozen = Run(admin_, {"device", "freeze", id + "_n1"});
  ASSERT_EQ(frozen.code, 0) << frozen.output;
  EXPECT_EQ(ValueAfter(frozen.output, "status"), "FROZEN") << frozen.output;
  EXPECT_EQ(Json(admin_, {"device", "show", id + "_n1"})["status"], "FROZEN");
  EXPECT_EQ(Json(admin_, {"device", "list", "--status", "frozen"})["devices"].size(), 1u);
  EXPECT_EQ(Json(admin_, {"device", "list", "--status", "online"})["devices"].size(), 0u);
  EXPECT_EQ(Json(admin_, {"device", "unfreeze", id + "_n1"})["status"], "INACTIVE");

  Result devices_table = Run(admin_, {"device", "list", "--tag", "a=b"});
  ASSERT_EQ(devices_table.code, 0) << devices_table.output;
  EXPECT_TRUE(Contains(devices_table.output, "DEVICE_ID")) << devices_table.output;
  EXPECT_TRUE(Contains(devices_table.output, id + "_n1")) << devices_table.output;

  Result reset = Run(admin_, {"device", "reset-secret", id + "_n1"});
  ASSERT_EQ(reset.code, 0) << reset.output;
  EXPECT_GE(ValueAfter(reset.output, "secret").size(), 8u) << reset.output;
  EXPECT_NE(ValueAfter(reset.output, "secret"), secret);

  // Deleting a product with devices needs --force.
  Result refused = Run(admin_, {"product", "delete", id});
  EXPECT_EQ(refused.code, 1) << refused.output;
  EXPECT_TRUE(Contains(refused.output, "error: FAILED_PRECONDITION: ")) << refused.output;
  EXPECT_EQ(Json(admin_, {"product", "delete", id, "--force"})["deleted_devices"], "1");
  Result gone = Run(admin_, {"device", "show", id + "_n1"});
  EXPECT_EQ(gone.code, 1) << gone.output;
  EXPECT_TRUE(Contains(gone.output, "error: NOT_FOUND: ")) << gone.output;
}

TEST_F(IotctlTest, PagingFollowsMarkersWithAll) {
  const std::string id = UniqueId("p");
  ASSERT_EQ(Run(admin_, {"product", "create", "-f", ProductFile(id)}).code, 0);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(
        Run(admin_, {"device", "add", "--product", id, "--node", "n" + std::to_string(i)}).code, 0);
  }
  const auto page = Json(admin_, {"device", "list", "--product", id, "--limit", "2"});
  EXPECT_EQ(page["devices"].size(), 2u);
  EXPECT_NE(page["next_marker"], "");
  const auto all = Json(admin_, {"device", "list", "--product", id, "--limit", "2", "--all"});
  EXPECT_EQ(all["devices"].size(), 5u);
  EXPECT_EQ(all["next_marker"], "");
}

TEST_F(IotctlTest, ApiKeysCreateListRevoke) {
  const auto created = Json(admin_, {"key", "create", "--name", "ops", "--role", "operator"});
  const std::string key_id = created["key"]["key_id"];
  const std::string secret = created["secret"];
  ASSERT_FALSE(key_id.empty());
  EXPECT_EQ(created["key"]["role"], "ROLE_OPERATOR");

  // The operator key works for devices and products, not for keys.
  EXPECT_EQ(Run(secret, {"product", "list"}).code, 0);
  Result denied = Run(secret, {"key", "list"});
  EXPECT_EQ(denied.code, 1) << denied.output;
  EXPECT_TRUE(Contains(denied.output, "error: PERMISSION_DENIED: ")) << denied.output;

  Result list = Run(admin_, {"key", "list"});
  ASSERT_EQ(list.code, 0) << list.output;
  EXPECT_TRUE(Contains(list.output, "KEY_ID")) << list.output;
  EXPECT_TRUE(Contains(list.output, key_id)) << list.output;
  EXPECT_TRUE(Contains(list.output, "operator")) << list.output;
  EXPECT_FALSE(Contains(list.output, secret)) << list.output;

  Result revoked = Run(admin_, {"key", "revoke", key_id});
  ASSERT_EQ(revoked.code, 0) << revoked.output;
  EXPECT_FALSE(ValueAfter(revoked.output, "revoked").empty()) << revoked.output;
  EXPECT_FALSE(Contains(Run(admin_, {"key", "list"}).output, key_id));
  EXPECT_TRUE(Contains(Run(admin_, {"key", "list", "--include-revoked"}).output, key_id));

  // A revoked key is refused (within the services' key cache TTL); the key is never echoed.
  Result refused;
  EXPECT_TRUE(WaitUntil(
      [&] {
        refused = Run(secret, {"product", "list"});
        return refused.code == 1;
      },
      seconds(10)))
      << refused.output;
  EXPECT_TRUE(Contains(refused.output, "error: UNAUTHENTICATED: ")) << refused.output;
  EXPECT_TRUE(Contains(refused.output, "IOTCTL_API_KEY")) << refused.output;
  EXPECT_FALSE(Contains(refused.output, secret)) << refused.output;

  // Bad role: a usage error before any call.
  EXPECT_EQ(Run(admin_, {"key", "create", "--name", "x", "--role", "superuser"}).code, 2);
}

TEST_F(IotctlTest, SecretsCanGoToAFileAndKeysComeFromOne) {
  const auto file = dir_->path() / UniqueId("reader-key-");
  Result created = Run(
      admin_, {"key", "create", "--name", "r", "--role", "reader", "--save-secret", file.string()});
  ASSERT_EQ(created.code, 0) << created.output;
  const std::string key = ReadFile(file);
  ASSERT_GE(key.size(), 24u);
  EXPECT_FALSE(Contains(created.output, key.substr(0, key.size() - 1))) << created.output;
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777U, 0600U);

  // --api-key-file wins over IOTCTL_API_KEY; a reader may list, not create.
  Result listed = Run("wrong-key", {"--api-key-file", file.string(), "product", "list"});
  EXPECT_EQ(listed.code, 0) << listed.output;
  Result denied = Run({}, {"product", "create", "--file", ProductFile(UniqueId("p"))},
                      {{"IOTCTL_API_KEY_FILE", file.string()}});
  EXPECT_EQ(denied.code, 1) << denied.output;
  EXPECT_TRUE(Contains(denied.output, "PERMISSION_DENIED")) << denied.output;
}

TEST_F(IotctlTest, InvalidModelPrintsEveryErrorPath) {
  auto body = nlohmann::json::parse(ReadFile(ProductFile(UniqueId("p"))));
  body["service_capabilities"][0]["properties"][0]["data_type"] = "float";
  body["service_capabilities"][0]["properties"][3]["method"] = "RX";
  const auto file = dir_->path() / UniqueId("invalid-");
  WriteFile(file, body.dump());
  Result result = Run(admin_, {"product", "create", "--file", file.string()});
  EXPECT_EQ(result.code, 1) << result.output;
  EXPECT_EQ(result.output.rfind("error: INVALID_ARGUMENT: ", 0), 0u) << result.output;
  EXPECT_TRUE(Contains(result.output, "\n  service_capabilities[0].properties[0].data_type: "))
      << result.output;
  EXPECT_TRUE(Contains(result.output, "\n  service_capabilities[0].properties[3].method: "))
      << result.output;

  Result missing = Run(admin_, {"product", "create", "--file", "/nonexistent/product.json"});
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_TRUE(Contains(missing.output, "/nonexistent/product.json")) << missing.output;
}

TEST_F(IotctlTest, AlinkProductsFromATslAndDevicesByDeviceName) {
  // The sample TSL under a key of its own, indented as a user's file would be.
  auto tsl = nlohmann::json::parse(ReadFile(IOT_ALINK_TESTDATA_DIR "/thermostat_tsl.json"));
  const std::string key = "a1" + common::HexEncode(common::RandomBytes(5)).substr(0, 9);
  tsl["profile"]["productKey"] = key;
  const auto file = dir_->path() / (key + ".tsl.json");
  WriteFile(file, tsl.dump(2));

  // Detected as a TSL: no flag needed.
  Result created = Run(admin_, {"product", "create", "--file", file.string()});
  ASSERT_EQ(created.code, 0) << created.output;
  EXPECT_EQ(ValueAfter(created.output, "product"), key) << created.output;
  EXPECT_EQ(ValueAfter(created.output, "dialect"), "alink") << created.output;
  EXPECT_TRUE(Contains(created.output, "airQuality")) << created.output;

  const auto shown = Json(admin_, {"product", "show", key});
  EXPECT_EQ(shown["dialect"], "alink");
  EXPECT_EQ(shown["tsl_json"], tsl.dump(2)) << "the TSL as the file held it";
  Result printed = Run(admin_, {"product", "show", key, "--tsl"});
  ASSERT_EQ(printed.code, 0) << printed.output;
  EXPECT_EQ(nlohmann::json::parse(printed.output), tsl);
  Result model = Run(admin_, {"product", "show", key, "--model"});
  ASSERT_EQ(model.code, 0) << model.output;
  EXPECT_EQ(nlohmann::json::parse(model.output)["service_capabilities"][0]["service_id"],
            "default");
  Result list = Run(admin_, {"product", "list"});
  ASSERT_EQ(list.code, 0) << list.output;
  EXPECT_TRUE(Contains(list.output, "DIALECT")) << list.output;
  EXPECT_TRUE(Contains(list.output, "alink")) << list.output;

  // A TSL update: detected again; a new model version.
  tsl["properties"].push_back(
      {{"identifier", "Humidity"}, {"accessMode", "r"}, {"dataType", {{"type", "int"}}}});
  WriteFile(file, tsl.dump());
  const auto updated = Json(admin_, {"product", "update", key, "--file", file.string()});
  EXPECT_EQ(updated["model_version"], 2);

  // A device with its Alibaba deviceName and deviceSecret.
  const std::string secret = "AbCdEf0123456789AbCdEf0123456789";
  Result added = Run(
      admin_, {"device", "add", "--product", key, "--node", "hall@home.1:a", "--secret", secret});
  ASSERT_EQ(added.code, 0) << added.output;
  EXPECT_EQ(ValueAfter(added.output, "device"), key + "_hall@home.1:a") << added.output;
  EXPECT_EQ(ValueAfter(added.output, "secret"), secret) << added.output;

  // --tsl for a file that does not look like one; without it, it is taken for a Huawei model.
  const auto bare = dir_->path() / (key + ".bare.json");
  WriteFile(bare, R"({"schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json"})");
  Result huawei = Run(admin_, {"product", "create", "--file", bare.string()});
  EXPECT_EQ(huawei.code, 1) << huawei.output;
  EXPECT_TRUE(Contains(huawei.output, "service_capabilities")) << huawei.output;
  Result forced = Run(admin_, {"product", "create", "--file", bare.string(), "--tsl"});
  ASSERT_EQ(forced.code, 0) << forced.output;
  EXPECT_EQ(ValueAfter(forced.output, "dialect"), "alink") << forced.output;
  EXPECT_EQ(ValueAfter(forced.output, "product").substr(0, 2), "a1") << forced.output;

  // An invalid TSL: every error with its TSL path.
  tsl["profile"]["productKey"] = "a1" + common::HexEncode(common::RandomBytes(5)).substr(0, 9);
  tsl["properties"][0]["dataType"]["type"] = "number";
  tsl["services"][2]["callType"] = "later";
  WriteFile(file, tsl.dump());
  Result invalid = Run(admin_, {"product", "create", "--file", file.string()});
  EXPECT_EQ(invalid.code, 1) << invalid.output;
  EXPECT_TRUE(Contains(invalid.output, "\n  properties[0].dataType.type: ")) << invalid.output;
  EXPECT_TRUE(Contains(invalid.output, "\n  services[2].callType: ")) << invalid.output;

  // A Huawei product has no TSL to print.
  const std::string id = UniqueId("p");
  ASSERT_EQ(Run(admin_, {"product", "create", "-f", ProductFile(id)}).code, 0);
  EXPECT_EQ(ValueAfter(Run(admin_, {"product", "show", id}).output, "dialect"), "huawei");
  Result no_tsl = Run(admin_, {"product", "show", id, "--tsl"});
  EXPECT_EQ(no_tsl.code, 2) << no_tsl.output;
  EXPECT_TRUE(Contains(no_tsl.output, "huawei product")) << no_tsl.output;
}

TEST_F(IotctlTest, EachGroupTalksToItsOwnServiceUnlessAddrIsGiven) {
  // Nothing listens on these ports: the error names the address the command used.
  const std::string shadow = fmt::format("127.0.0.1:{}", iot::testing::FreePort());
  const std::string rules = fmt::format("127.0.0.1:{}", iot::testing::FreePort());
  const std::map<std::string, std::string> env = {
      {"IOTCTL_ADDR", ""}, {"IOTCTL_SHADOW_ADDR", shadow}, {"IOTCTL_RULE_FORWARDING_ADDR", rules}};
  Result shown = Run(admin_, {"--timeout", "2", "shadow", "show", "d1"}, env);
  EXPECT_EQ(shown.code, 3) << shown.output;
  EXPECT_TRUE(Contains(shown.output, "(server " + shadow + ")")) << shown.output;
  Result listed = Run(admin_, {"--timeout", "2", "rule", "list"}, env);
  EXPECT_EQ(listed.code, 3) << listed.output;
  EXPECT_TRUE(Contains(listed.output, "(server " + rules + ")")) << listed.output;
  // --addr wins; thing-model's groups keep the global address.
  Result explicit_addr = Run(admin_, {"--timeout", "2", "--addr", rules, "shadow", "show", "d1"});
  EXPECT_TRUE(Contains(explicit_addr.output, "(server " + rules + ")")) << explicit_addr.output;
  EXPECT_EQ(Run(admin_, {"product", "list"}).code, 0);
}

TEST_F(IotctlTest, ExitCodes) {
  Result no_key = Run({}, {"product", "list"});
  EXPECT_EQ(no_key.code, 2) << no_key.output;
  EXPECT_TRUE(Contains(no_key.output, "IOTCTL_API_KEY")) << no_key.output;
  EXPECT_TRUE(Contains(no_key.output, "--api-key")) << no_key.output;

  const std::string closed = "127.0.0.1:" + std::to_string(iot::testing::FreePort());
  Result unreachable = Run(admin_, {"--addr", closed, "--timeout", "5", "product", "list"});
  EXPECT_EQ(unreachable.code, 3) << unreachable.output;
  EXPECT_TRUE(Contains(unreachable.output, "error: UNAVAILABLE: ")) << unreachable.output;
  EXPECT_FALSE(Contains(unreachable.output, admin_)) << unreachable.output;
  Result by_env = Run(admin_, {"product", "list"}, {{"IOTCTL_ADDR", closed}});
  EXPECT_EQ(by_env.code, 3) << by_env.output;

  Result bad_flag = Run(admin_, {"device", "list", "--no-such-flag"});
  EXPECT_EQ(bad_flag.code, 2) << bad_flag.output;
  EXPECT_EQ(Run(admin_, {}).code, 2);
  EXPECT_EQ(Run(admin_, {"device"}).code, 2);
  EXPECT_EQ(Run(admin_, {"device", "add", "--product", "p"}).code, 2);
  EXPECT_EQ(Run(admin_, {"device", "add", "--product", "p", "--node", "n", "--tag", "x"}).code, 2);
  EXPECT_EQ(Run(admin_, {"device", "list", "--status", "sleeping"}).code, 2);
  EXPECT_EQ(Run(admin_, {"device", "update", "d"}).code, 2);
  EXPECT_EQ(Run(admin_, {"--timeout", "0", "product", "list"}).code, 2);

  Result help = Run({}, {"--help"});
  EXPECT_EQ(help.code, 0) << help.output;
  EXPECT_TRUE(Contains(help.output, "device")) << help.output;

  // Only an admin of the root tenant creates tenants.
  Result not_root = Run(admin_, {"tenant", "create", "--name", "x"});
  EXPECT_EQ(not_root.code, 1) << not_root.output;
  EXPECT_TRUE(Contains(not_root.output, "error: PERMISSION_DENIED: ")) << not_root.output;
}

}  // namespace
}  // namespace iot
