// thing-model as a process over real gRPC, with real PostgreSQL and a private Redis: tenants
// and keys, roles, products with Huawei models, devices, the credential projection.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <sstream>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/health_client.h"
#include "iot/common/redis.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace pb = iot::thing_model::v1;
using iot::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kSecretKeyHex(64, 'a');
const std::string kAdminKey = "bootstrap-admin-key-0123456789abcdef";
const std::string kServiceKey = "platform-service-key-0123456789abcdef";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string SmartMeter(const std::string& product_id) {
  auto body = nlohmann::json::parse(ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
  body["product_id"] = product_id;
  return body.dump();
}

/// The sample thermostat TSL (tests/data/alink) under a product key of its own: product ids
/// are unique across tenants and tests share the database.
nlohmann::json Thermostat(const std::string& product_key) {
  auto tsl = nlohmann::json::parse(ReadFile(IOT_ALINK_TESTDATA_DIR "/thermostat_tsl.json"));
  tsl["profile"]["productKey"] = product_key;
  return tsl;
}

/// One thing-model process for the whole suite; each test uses its own tenant.
void ExpectNotFound(const char* what, const grpc::Status& s) {
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << what << ": " << s.error_message();
}

class ThingModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = std::make_unique<iot::testing::TestRedis>();
    server_ = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis_->Url(),
                                               .secret_key = kSecretKeyHex,
                                               .admin_key = kAdminKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    ASSERT_TRUE(server_->WaitServing()) << server_->process().Log();
    pg_url_ = server_->pg_url();
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    redis_client_ = *common::RedisClient::Create({.url = redis_->Url()});
  }

  static void TearDownTestSuite() {
    if (server_) {
      EXPECT_EQ(server_->process().Stop(), 0) << server_->process().Log();
    }
    server_.reset();
    redis_client_.reset();
    redis_.reset();
  }

  void SetUp() override {
    tenants_ = pb::Tenants::NewStub(channel_);
    products_ = pb::Products::NewStub(channel_);
    devices_ = pb::Devices::NewStub(channel_);
    internal_ = pb::InternalThingModel::NewStub(channel_);
    // A fresh tenant per test, with its own admin key.
    pb::CreateTenantRequest request;
    request.set_name("tenant for " +
                     std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    request.set_create_admin_key(true);
    pb::CreateTenantResponse response;
    auto ctx = Context(kAdminKey);
    ASSERT_TRUE(tenants_->CreateTenant(ctx.get(), request, &response).ok());
    tenant_ = response.tenant().tenant_id();
    admin_ = response.admin_key_secret();
    ASSERT_FALSE(admin_.empty());
  }

  static std::unique_ptr<grpc::ClientContext> Context(const std::string& key) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!key.empty()) {
      common::SetBearer(*ctx, key);
    }
    ctx->set_deadline(std::chrono::system_clock::now() + seconds(10));
    return ctx;
  }

  std::string CreateKey(pb::Role role) {
    pb::CreateApiKeyRequest request;
    request.set_name("k");
    request.set_role(role);
    pb::CreateApiKeyResponse response;
    auto ctx = Context(admin_);
    EXPECT_TRUE(tenants_->CreateApiKey(ctx.get(), request, &response).ok());
    return response.secret();
  }

  grpc::Status CreateProduct(const std::string& key, const std::string& json,
                             pb::Product* out = nullptr, grpc::ClientContext* use = nullptr) {
    pb::CreateProductRequest request;
    request.set_product_json(json);
    pb::Product response;
    auto ctx = Context(key);
    return products_->CreateProduct(use ? use : ctx.get(), request, out ? out : &response);
  }

  grpc::Status CreateFromTsl(const std::string& tsl_json, pb::Product* out = nullptr,
                             grpc::ClientContext* use = nullptr) {
    pb::CreateProductRequest request;
    request.set_tsl_json(tsl_json);
    pb::Product response;
    auto ctx = Context(admin_);
    return products_->CreateProduct(use ? use : ctx.get(), request, out ? out : &response);
  }

  grpc::Status UpdateProduct(const std::string& product_id, const std::string& product_json,
                             const std::string& tsl_json, pb::Product* out = nullptr) {
    pb::UpdateProductRequest request;
    request.set_product_id(product_id);
    request.set_product_json(product_json);
    request.set_tsl_json(tsl_json);
    pb::Product response;
    auto ctx = Context(admin_);
    return products_->UpdateProduct(ctx.get(), request, out ? out : &response);
  }

  pb::Product Show(const std::string& product_id, int32_t version = 0) {
    pb::ShowProductRequest request;
    request.set_product_id(product_id);
    request.set_model_version(version);
    pb::Product product;
    auto ctx = Context(admin_);
    EXPECT_TRUE(products_->ShowProduct(ctx.get(), request, &product).ok());
    return product;
  }

  std::map<std::string, std::string> ProjectedDevice(const std::string& device_id) {
    auto hash = redis_client_->Command({"HGETALL", "tm:dev:" + device_id});
    EXPECT_TRUE(hash.ok());
    std::map<std::string, std::string> fields;
    for (size_t i = 0; hash.ok() && i + 1 < hash->elements.size(); i += 2) {
      fields[hash->elements[i].str] = hash->elements[i + 1].str;
    }
    return fields;
  }

  pb::DeviceContext DeviceContext(const std::string& device_id) {
    pb::GetDeviceContextRequest request;
    request.set_device_id(device_id);
    pb::DeviceContext context;
    auto ctx = Context(kServiceKey);
    EXPECT_TRUE(internal_->GetDeviceContext(ctx.get(), request, &context).ok());
    return context;
  }

  /// An Alibaba-style product key: a1 + 9 characters.
  std::string UniqueProductKey() {
    return "a1" + common::HexEncode(common::RandomBytes(5)).substr(0, 9);
  }

  grpc::Status AddDevice(const std::string& key, const std::string& product_id,
                         const std::string& node_id, pb::AddDeviceResponse* out = nullptr,
                         const std::string& secret = {}) {
    pb::AddDeviceRequest request;
    request.set_product_id(product_id);
    request.set_node_id(node_id);
    request.set_secret(secret);
    request.set_device_name("meter " + node_id);
    pb::AddDeviceResponse response;
    auto ctx = Context(key);
    return devices_->AddDevice(ctx.get(), request, out ? out : &response);
  }

  std::string UniqueProduct() { return "p" + common::HexEncode(common::RandomBytes(6)); }

  /// Pages of 3 through the product's 7 devices: 3 + 3 + 1, in order, no duplicates.
  void ExpectPagesOfThree(const std::string& id) {
    std::vector<std::string> seen;
    std::string marker;
    int pages = 0;
    do {
      pb::ListDevicesRequest request;
      request.set_product_id(id);
      request.set_limit(3);
      request.set_marker(marker);
      pb::ListDevicesResponse response;
      auto ctx = Context(admin_);
      ASSERT_TRUE(devices_->ListDevices(ctx.get(), request, &response).ok());
      for (const auto& d : response.devices()) {
        seen.push_back(d.device_id());
      }
      marker = response.next_marker();
      ++pages;
    } while (!marker.empty() && pages < 10);
    EXPECT_EQ(pages, 3);
    ASSERT_EQ(seen.size(), 7u);
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  }

  /// Bad device input names its field.
  void ExpectBadDeviceInputNamesItsField(const std::string& id) {
    pb::AddDeviceResponse added;
    pb::AddDeviceRequest bad;
    bad.set_product_id(id);
    bad.set_node_id("has space");
    auto ctx5 = Context(admin_);
    grpc::Status status = devices_->AddDevice(ctx5.get(), bad, &added);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message().rfind("node_id:", 0), 0u) << status.error_message();
    EXPECT_EQ(AddDevice(admin_, id, "short", nullptr, "1234").error_message().rfind("secret:", 0),
              0u);
    pb::ListDevicesRequest bad_limit;
    bad_limit.set_limit(501);
    pb::ListDevicesResponse none;
    auto ctx6 = Context(admin_);
    status = devices_->ListDevices(ctx6.get(), bad_limit, &none);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message().rfind("limit:", 0), 0u);
    EXPECT_EQ(AddDevice(admin_, "no-such-product", "n").error_code(), grpc::StatusCode::NOT_FOUND);
  }

  /// `key`'s tenant sees none of product `id`.
  void ExpectProductHiddenFrom(const std::string& key, const std::string& id) {
    {
      pb::ShowProductRequest r;
      r.set_product_id(id);
      pb::Product p;
      auto c = Context(key);
      ExpectNotFound("ShowProduct", products_->ShowProduct(c.get(), r, &p));
    }
    {
      pb::UpdateProductRequest r;
      r.set_product_id(id);
      r.set_product_json(SmartMeter(id));
      pb::Product p;
      auto c = Context(key);
      ExpectNotFound("UpdateProduct", products_->UpdateProduct(c.get(), r, &p));
    }
    {
      pb::DeleteProductRequest r;
      r.set_product_id(id);
      r.set_force(true);
      pb::DeleteProductResponse p;
      auto c = Context(key);
      ExpectNotFound("DeleteProduct", products_->DeleteProduct(c.get(), r, &p));
    }
    {
      pb::ListProductModelVersionsRequest r;
      r.set_product_id(id);
      pb::ListProductModelVersionsResponse p;
      auto c = Context(key);
      ExpectNotFound("ListProductModelVersions",
                     products_->ListProductModelVersions(c.get(), r, &p));
    }
  }

  /// `key`'s tenant sees nothing of `device`.
  void ExpectDeviceHiddenFrom(const std::string& key, const std::string& device) {
    {
      pb::ShowDeviceRequest r;
      r.set_device_id(device);
      pb::Device d;
      auto c = Context(key);
      ExpectNotFound("ShowDevice", devices_->ShowDevice(c.get(), r, &d));
    }
    {
      pb::UpdateDeviceRequest r;
      r.set_device_id(device);
      r.set_device_name("mine now");
      pb::Device d;
      auto c = Context(key);
      ExpectNotFound("UpdateDevice", devices_->UpdateDevice(c.get(), r, &d));
    }
    {
      pb::FreezeDeviceRequest r;
      r.set_device_id(device);
      pb::Device d;
      auto c = Context(key);
      ExpectNotFound("FreezeDevice", devices_->FreezeDevice(c.get(), r, &d));
    }
    {
      pb::UnfreezeDeviceRequest r;
      r.set_device_id(device);
      pb::Device d;
      auto c = Context(key);
      ExpectNotFound("UnfreezeDevice", devices_->UnfreezeDevice(c.get(), r, &d));
    }
    {
      pb::ResetDeviceSecretRequest r;
      r.set_device_id(device);
      pb::ResetDeviceSecretResponse d;
      auto c = Context(key);
      ExpectNotFound("ResetDeviceSecret", devices_->ResetDeviceSecret(c.get(), r, &d));
    }
    {
      pb::DeleteDeviceRequest r;
      r.set_device_id(device);
      pb::DeleteDeviceResponse d;
      auto c = Context(key);
      ExpectNotFound("DeleteDevice", devices_->DeleteDevice(c.get(), r, &d));
    }
  }

  static inline std::unique_ptr<iot::testing::TestRedis> redis_;
  static inline std::unique_ptr<iot::testing::ThingModelProcess> server_;
  static inline std::string pg_url_;
  static inline std::shared_ptr<grpc::Channel> channel_;
  static inline std::unique_ptr<common::RedisClient> redis_client_;

  std::unique_ptr<pb::Tenants::Stub> tenants_;
  std::unique_ptr<pb::Products::Stub> products_;
  std::unique_ptr<pb::Devices::Stub> devices_;
  std::unique_ptr<pb::InternalThingModel::Stub> internal_;
  std::string tenant_;
  std::string admin_;
};

TEST_F(ThingModelTest, ProductModelRoundTripsUnchanged) {
  const std::string id = UniqueProduct();
  const std::string json = SmartMeter(id);
  pb::Product created;
  ASSERT_TRUE(CreateProduct(admin_, json, &created).ok());
  EXPECT_EQ(created.product_id(), id);
  EXPECT_EQ(created.model_version(), 1);
  EXPECT_EQ(created.name(), "Smart Meter SM-200");

  pb::ShowProductRequest show;
  show.set_product_id(id);
  pb::Product shown;
  auto ctx = Context(admin_);
  ASSERT_TRUE(products_->ShowProduct(ctx.get(), show, &shown).ok());
  EXPECT_EQ(nlohmann::json::parse(shown.product_json()), nlohmann::json::parse(json));
  EXPECT_EQ(shown.device_type(), "SmartMeter");

  // Filters: name substring (any case) and exact device type.
  auto count = [&](const std::string& name, const std::string& type) {
    pb::ListProductsRequest r;
    r.set_name(name);
    r.set_device_type(type);
    pb::ListProductsResponse products;
    auto c = Context(admin_);
    EXPECT_TRUE(products_->ListProducts(c.get(), r, &products).ok());
    for (const auto& p : products.products()) {
      EXPECT_TRUE(p.product_json().empty()) << "lists leave the model out";
    }
    return products.products_size();
  };
  EXPECT_EQ(count("sm-200", ""), 1);
  EXPECT_EQ(count("", "SmartMeter"), 1);
  EXPECT_EQ(count("", "Thermostat"), 0);
  EXPECT_EQ(count("no such", ""), 0);
}

TEST_F(ThingModelTest, GeneratesProductIdWhenAbsent) {
  auto body = nlohmann::json::parse(SmartMeter("x"));
  body.erase("product_id");
  pb::Product created;
  ASSERT_TRUE(CreateProduct(admin_, body.dump(), &created).ok());
  EXPECT_EQ(created.product_id().size(), 24u);
}

TEST_F(ThingModelTest, InvalidModelsAreRejectedWithTheirPath) {
  struct Case {
    std::string pointer;
    nlohmann::json value;
    std::string path;
  };
  const std::vector<Case> cases = {
      {"/service_capabilities/0/properties/0/data_type", "float",
       "service_capabilities[0].properties[0].data_type"},
      {"/service_capabilities/0/properties/4/min", "5000", "service_capabilities[0].properties[4]"},
      {"/service_capabilities/0/properties/3/enum_list", nlohmann::json::array(),
       "service_capabilities[0].properties[3]"},
      {"/service_capabilities/0/properties/1/property_name", "voltage",
       "service_capabilities[0].properties[1].property_name"},
      {"/service_capabilities/0/properties/3/method", "RX",
       "service_capabilities[0].properties[3].method"},
  };
  for (const Case& c : cases) {
    auto body = nlohmann::json::parse(SmartMeter(UniqueProduct()));
    body[nlohmann::json::json_pointer(c.pointer)] = c.value;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, admin_);
    const grpc::Status status = CreateProduct(admin_, body.dump(), nullptr, &ctx);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.pointer;
    EXPECT_NE(status.error_message().find(c.path), std::string::npos)
        << c.pointer << ": " << status.error_message();
    auto it = ctx.GetServerTrailingMetadata().find("iot-model-errors-bin");
    ASSERT_NE(it, ctx.GetServerTrailingMetadata().end()) << c.pointer;
    pb::ModelErrors errors;
    ASSERT_TRUE(errors.ParseFromString(std::string(it->second.data(), it->second.size())));
    ASSERT_GE(errors.errors_size(), 1);
    EXPECT_NE(errors.errors(0).path().find(c.path), std::string::npos);
  }
  // Duplicate service ids; not JSON at all.
  auto body = nlohmann::json::parse(SmartMeter(UniqueProduct()));
  body["service_capabilities"].push_back(body["service_capabilities"][0]);
  grpc::Status dup = CreateProduct(admin_, body.dump());
  EXPECT_EQ(dup.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(dup.error_message().find("service_capabilities[1].service_id"), std::string::npos)
      << dup.error_message();
  EXPECT_EQ(CreateProduct(admin_, "{not json").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ThingModelTest, ModelUpdatesCreateVersionsAndKeepHistory) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  auto body = nlohmann::json::parse(SmartMeter(id));
  body["service_capabilities"][0]["properties"].push_back(
      {{"property_name", "frequency"}, {"data_type", "decimal"}, {"method", "R"}});
  pb::UpdateProductRequest update;
  update.set_product_id(id);
  update.set_product_json(body.dump());
  pb::Product updated;
  auto ctx = Context(admin_);
  ASSERT_TRUE(products_->UpdateProduct(ctx.get(), update, &updated).ok());
  EXPECT_EQ(updated.model_version(), 2);

  pb::ShowProductRequest show;
  show.set_product_id(id);
  show.set_model_version(1);
  pb::Product v1;
  auto ctx2 = Context(admin_);
  ASSERT_TRUE(products_->ShowProduct(ctx2.get(), show, &v1).ok());
  EXPECT_EQ(nlohmann::json::parse(v1.product_json()), nlohmann::json::parse(SmartMeter(id)));

  pb::ListProductModelVersionsRequest versions_request;
  versions_request.set_product_id(id);
  pb::ListProductModelVersionsResponse versions;
  auto ctx3 = Context(admin_);
  ASSERT_TRUE(products_->ListProductModelVersions(ctx3.get(), versions_request, &versions).ok());
  EXPECT_EQ(versions.versions_size(), 2);

  // A metadata-only change keeps the version.
  body["description"] = "renamed";
  update.set_product_json(body.dump());
  auto ctx4 = Context(admin_);
  ASSERT_TRUE(products_->UpdateProduct(ctx4.get(), update, &updated).ok());
  EXPECT_EQ(updated.model_version(), 2);
  EXPECT_EQ(updated.description(), "renamed");
}

TEST_F(ThingModelTest, DeletingAProductWithDevicesNeedsForce) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  ASSERT_TRUE(AddDevice(admin_, id, "n1").ok());
  pb::DeleteProductRequest request;
  request.set_product_id(id);
  pb::DeleteProductResponse response;
  auto ctx = Context(admin_);
  EXPECT_EQ(products_->DeleteProduct(ctx.get(), request, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  request.set_force(true);
  auto ctx2 = Context(admin_);
  ASSERT_TRUE(products_->DeleteProduct(ctx2.get(), request, &response).ok());
  EXPECT_EQ(response.deleted_devices(), 1);
  auto exists = redis_client_->Command({"EXISTS", "tm:dev:" + id + "_n1"});
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(exists->integer, 0) << "deleted device still in the projection";
}

TEST_F(ThingModelTest, DeviceCrudFiltersAndPaging) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(AddDevice(admin_, id, "node" + std::to_string(i)).ok());
  }
  ASSERT_NO_FATAL_FAILURE(ExpectPagesOfThree(id));

  // Update name and tags; filter by tag, name prefix, status.
  pb::UpdateDeviceRequest update;
  update.set_device_id(id + "_node3");
  update.set_device_name("kitchen meter");
  (*update.mutable_tags())["floor"] = "2";
  update.set_replace_tags(true);
  pb::Device updated;
  auto ctx = Context(admin_);
  ASSERT_TRUE(devices_->UpdateDevice(ctx.get(), update, &updated).ok());
  EXPECT_EQ(updated.tags().at("floor"), "2");
  EXPECT_EQ(updated.status(), pb::INACTIVE);

  auto list = [&](const std::function<void(pb::ListDevicesRequest&)>& filter) {
    pb::ListDevicesRequest request;
    request.set_product_id(id);
    filter(request);
    pb::ListDevicesResponse response;
    auto c = Context(admin_);
    EXPECT_TRUE(devices_->ListDevices(c.get(), request, &response).ok());
    return response.devices_size();
  };
  EXPECT_EQ(list([](auto& r) {
              r.set_tag_key("floor");
              r.set_tag_value("2");
            }),
            1);
  EXPECT_EQ(list([](auto& r) { r.set_tag_key("floor"); }), 1);
  EXPECT_EQ(list([](auto& r) { r.set_name_prefix("kitchen"); }), 1);
  EXPECT_EQ(list([](auto& r) { r.set_status(pb::INACTIVE); }), 7);

  pb::FreezeDeviceRequest freeze;
  freeze.set_device_id(id + "_node4");
  pb::Device frozen;
  auto ctx2 = Context(admin_);
  ASSERT_TRUE(devices_->FreezeDevice(ctx2.get(), freeze, &frozen).ok());
  EXPECT_EQ(frozen.status(), pb::FROZEN);
  EXPECT_EQ(list([](auto& r) { r.set_status(pb::FROZEN); }), 1);
  auto frozen_flag = redis_client_->Command({"HGET", "tm:dev:" + id + "_node4", "frozen"});
  ASSERT_TRUE(frozen_flag.ok());
  EXPECT_EQ(frozen_flag->str, "1");

  pb::DeleteDeviceRequest del;
  del.set_device_id(id + "_node5");
  pb::DeleteDeviceResponse deleted;
  auto ctx3 = Context(admin_);
  ASSERT_TRUE(devices_->DeleteDevice(ctx3.get(), del, &deleted).ok());
  pb::ShowDeviceRequest show;
  show.set_device_id(id + "_node5");
  pb::Device shown;
  auto ctx4 = Context(admin_);
  EXPECT_EQ(devices_->ShowDevice(ctx4.get(), show, &shown).error_code(),
            grpc::StatusCode::NOT_FOUND);

  ExpectBadDeviceInputNamesItsField(id);
}

TEST_F(ThingModelTest, ConcurrentAddOfTheSameNodeIdCreatesExactlyOne) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  std::vector<std::future<grpc::StatusCode>> calls;
  calls.reserve(8);
  for (int i = 0; i < 8; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      auto stub = pb::Devices::NewStub(channel_);
      pb::AddDeviceRequest request;
      request.set_product_id(id);
      request.set_node_id("same");
      pb::AddDeviceResponse response;
      auto ctx = Context(admin_);
      return stub->AddDevice(ctx.get(), request, &response).error_code();
    }));
  }
  int ok = 0;
  int exists = 0;
  for (auto& call : calls) {
    const auto code = call.get();
    ok += code == grpc::StatusCode::OK;
    exists += code == grpc::StatusCode::ALREADY_EXISTS;
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(exists, 7);
}

TEST_F(ThingModelTest, TenantsNeverSeeEachOthersResources) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  ASSERT_TRUE(AddDevice(admin_, id, "n1").ok());
  const std::string device = id + "_n1";

  pb::CreateTenantRequest other_request;
  other_request.set_name("other");
  other_request.set_create_admin_key(true);
  pb::CreateTenantResponse other;
  auto c0 = Context(kAdminKey);
  ASSERT_TRUE(tenants_->CreateTenant(c0.get(), other_request, &other).ok());
  const std::string b = other.admin_key_secret();

  ExpectProductHiddenFrom(b, id);
  ExpectNotFound("AddDevice", AddDevice(b, id, "n2"));
  ExpectDeviceHiddenFrom(b, device);
  {
    pb::ListDevicesRequest r;
    pb::ListDevicesResponse d;
    auto c = Context(b);
    ASSERT_TRUE(devices_->ListDevices(c.get(), r, &d).ok());
    EXPECT_EQ(d.devices_size(), 0);
    pb::ListProductsRequest pr;
    pb::ListProductsResponse p;
    auto c2 = Context(b);
    ASSERT_TRUE(products_->ListProducts(c2.get(), pr, &p).ok());
    EXPECT_EQ(p.products_size(), 0);
  }
  {
    // Keys of tenant A cannot be revoked by tenant B.
    pb::ListApiKeysRequest r;
    pb::ListApiKeysResponse keys;
    auto c = Context(admin_);
    ASSERT_TRUE(tenants_->ListApiKeys(c.get(), r, &keys).ok());
    ASSERT_GE(keys.keys_size(), 1);
    pb::RevokeApiKeyRequest revoke;
    revoke.set_key_id(keys.keys(0).key_id());
    pb::RevokeApiKeyResponse revoked;
    auto c2 = Context(b);
    ExpectNotFound("RevokeApiKey", tenants_->RevokeApiKey(c2.get(), revoke, &revoked));
  }
  // The device is untouched.
  pb::ShowDeviceRequest r;
  r.set_device_id(device);
  pb::Device d;
  auto c = Context(admin_);
  ASSERT_TRUE(devices_->ShowDevice(c.get(), r, &d).ok());
  EXPECT_EQ(d.device_name(), "meter n1");
}

TEST_F(ThingModelTest, RolesAndRevocation) {
  const std::string reader = CreateKey(pb::ROLE_READER);
  const std::string operator_key = CreateKey(pb::ROLE_OPERATOR);
  const std::string id = UniqueProduct();

  EXPECT_EQ(CreateProduct(reader, SmartMeter(id)).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(CreateProduct(operator_key, SmartMeter(id)).ok());
  pb::ListProductsRequest list;
  pb::ListProductsResponse products;
  auto c = Context(reader);
  ASSERT_TRUE(products_->ListProducts(c.get(), list, &products).ok());
  EXPECT_EQ(products.products_size(), 1);
  EXPECT_EQ(AddDevice(reader, id, "n1").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(AddDevice(operator_key, id, "n1").ok());

  // Operators cannot manage keys; tenant admins cannot create tenants.
  pb::CreateApiKeyRequest key_request;
  key_request.set_role(pb::ROLE_READER);
  pb::CreateApiKeyResponse key_response;
  auto c2 = Context(operator_key);
  EXPECT_EQ(tenants_->CreateApiKey(c2.get(), key_request, &key_response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  pb::CreateTenantRequest tenant_request;
  tenant_request.set_name("nope");
  pb::CreateTenantResponse tenant_response;
  auto c3 = Context(admin_);
  EXPECT_EQ(tenants_->CreateTenant(c3.get(), tenant_request, &tenant_response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // The internal API needs the service credential.
  pb::GetDeviceContextRequest internal_request;
  internal_request.set_device_id(id + "_n1");
  pb::DeviceContext device_context;
  auto c4 = Context(admin_);
  EXPECT_EQ(internal_->GetDeviceContext(c4.get(), internal_request, &device_context).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  // No key, a malformed header, an unknown key.
  pb::ShowProductRequest show;
  show.set_product_id(id);
  pb::Product product;
  auto none = Context("");
  EXPECT_EQ(products_->ShowProduct(none.get(), show, &product).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext malformed;
  malformed.AddMetadata("authorization", "Basic abc");
  EXPECT_EQ(products_->ShowProduct(&malformed, show, &product).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto unknown = Context("iot_not-a-real-key");
  EXPECT_EQ(products_->ShowProduct(unknown.get(), show, &product).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // Revocation takes effect within 1 s (the key was just used, so it is cached).
  auto c5 = Context(reader);
  ASSERT_TRUE(products_->ShowProduct(c5.get(), show, &product).ok());
  pb::ListApiKeysRequest keys_request;
  pb::ListApiKeysResponse keys;
  auto c6 = Context(admin_);
  ASSERT_TRUE(tenants_->ListApiKeys(c6.get(), keys_request, &keys).ok());
  std::string reader_id;
  for (const auto& k : keys.keys()) {
    if (k.role() == pb::ROLE_READER) {
      reader_id = k.key_id();
    }
    EXPECT_EQ(reader.find(k.key_id()), std::string::npos);
  }
  pb::RevokeApiKeyRequest revoke;
  revoke.set_key_id(reader_id);
  pb::RevokeApiKeyResponse revoked;
  auto c7 = Context(admin_);
  ASSERT_TRUE(tenants_->RevokeApiKey(c7.get(), revoke, &revoked).ok());
  const auto revoked_at = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto c8 = Context(reader);
        return products_->ShowProduct(c8.get(), show, &product).error_code() ==
               grpc::StatusCode::UNAUTHENTICATED;
      },
      seconds(1)));
  EXPECT_LE(std::chrono::steady_clock::now() - revoked_at, seconds(1));
}

TEST_F(ThingModelTest, SecretsNeverStoredInPlaintextAndProjectionIsCurrent) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  const std::string secret = "PlainSecret-42x";
  pb::AddDeviceResponse added;
  ASSERT_TRUE(AddDevice(admin_, id, "n1", &added, secret).ok());
  EXPECT_EQ(added.secret(), secret);
  const std::string device = id + "_n1";

  // Visible in the projection at once (the call returns after the write).
  auto hash = redis_client_->Command({"HGETALL", "tm:dev:" + device});
  ASSERT_TRUE(hash.ok());
  std::map<std::string, std::string> fields;
  for (size_t i = 0; i + 1 < hash->elements.size(); i += 2) {
    fields[hash->elements[i].str] = hash->elements[i + 1].str;
  }
  EXPECT_EQ(fields["tenant_id"], tenant_);
  EXPECT_EQ(fields["product_id"], id);
  EXPECT_EQ(fields["frozen"], "0");
  ASSERT_FALSE(fields["secret"].empty());
  EXPECT_EQ(fields["secret"].find(secret), std::string::npos);
  auto box = common::SecretBox::FromKeyText(kSecretKeyHex);
  ASSERT_TRUE(box.ok());
  EXPECT_EQ(*box->Open(fields["secret"], device), secret);

  // No column of any row holds the plaintext.
  pqxx::connection c(pg_url_);
  pqxx::work w(c);
  for (const char* table : {"devices", "products", "product_models", "api_keys", "tenants"}) {
    const auto rows = w.exec(std::string("SELECT t::text FROM thing_model.") + table + " t");
    for (const auto& row : rows) {
      EXPECT_EQ(row[0].as<std::string>().find(secret), std::string::npos) << table;
      EXPECT_EQ(row[0].as<std::string>().find(admin_), std::string::npos) << table;
    }
  }
  // Nor any Redis value.
  auto keys = redis_client_->Command({"KEYS", "*"});
  ASSERT_TRUE(keys.ok());
  for (const auto& key : keys->elements) {
    auto dump = redis_client_->Command({"DUMP", key.str});
    ASSERT_TRUE(dump.ok());
    EXPECT_EQ(dump->str.find(secret), std::string::npos) << key.str;
  }

  // A reset secret replaces the projected one.
  pb::ResetDeviceSecretRequest reset;
  reset.set_device_id(device);
  pb::ResetDeviceSecretResponse new_secret;
  auto ctx = Context(admin_);
  ASSERT_TRUE(devices_->ResetDeviceSecret(ctx.get(), reset, &new_secret).ok());
  EXPECT_GE(new_secret.secret().size(), 8u);
  auto sealed = redis_client_->Command({"HGET", "tm:dev:" + device, "secret"});
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(*box->Open(sealed->str, device), new_secret.secret());
}

TEST_F(ThingModelTest, FlushedRedisIsRebuiltFromPostgres) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  ASSERT_TRUE(AddDevice(admin_, id, "n1").ok());
  ASSERT_TRUE(redis_client_->Command({"FLUSHALL"}).ok());
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto exists = redis_client_->Command({"EXISTS", "tm:dev:" + id + "_n1"});
        return exists.ok() && exists->integer == 1;
      },
      seconds(10)))
      << server_->process().Log();
  // API keys come back too: the tenant admin still works.
  EXPECT_TRUE(WaitUntil(
      [&] {
        pb::ListDevicesRequest r;
        pb::ListDevicesResponse d;
        auto c = Context(admin_);
        return devices_->ListDevices(c.get(), r, &d).ok();
      },
      seconds(10)));
}

TEST_F(ThingModelTest, PresenceFromTheServiceCredential) {
  const std::string id = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(id)).ok());
  ASSERT_TRUE(AddDevice(admin_, id, "n1").ok());
  auto report = [&](bool online, const std::string& time) {
    pb::ReportDevicePresenceRequest r;
    r.set_device_id(id + "_n1");
    r.set_online(online);
    r.set_time(time);
    pb::ReportDevicePresenceResponse response;
    auto c = Context(kServiceKey);
    EXPECT_TRUE(internal_->ReportDevicePresence(c.get(), r, &response).ok());
    return response.device();
  };
  auto device = report(true, "2026-11-26T10:00:00.000Z");
  EXPECT_EQ(device.status(), pb::ONLINE);
  EXPECT_EQ(device.last_online_time(), "2026-11-26T10:00:00.000Z");
  // An older event arriving late changes nothing.
  device = report(false, "2026-11-26T09:59:00.000Z");
  EXPECT_EQ(device.status(), pb::ONLINE);
  device = report(false, "2026-11-26T10:05:00.000Z");
  EXPECT_EQ(device.status(), pb::OFFLINE);
  EXPECT_EQ(device.last_offline_time(), "2026-11-26T10:05:00.000Z");

  pb::GetDeviceContextRequest r;
  r.set_device_id(id + "_n1");
  pb::DeviceContext context;
  auto c = Context(kServiceKey);
  ASSERT_TRUE(internal_->GetDeviceContext(c.get(), r, &context).ok());
  EXPECT_EQ(context.tenant_id(), tenant_);
  EXPECT_EQ(context.model_version(), 1);

  pb::ValidatePropertiesRequest v;
  v.set_device_id(id + "_n1");
  v.set_report_json(
      R"({"services":[{"service_id":"meter","properties":{"voltage":230.1,"report_interval":99999}}]})");
  pb::ValidatePropertiesResponse errors;
  auto c2 = Context(kServiceKey);
  ASSERT_TRUE(internal_->ValidateProperties(c2.get(), v, &errors).ok());
  ASSERT_EQ(errors.errors_size(), 1);
  EXPECT_EQ(errors.errors(0).path(), "services[0].properties.report_interval");

  // Writes (desired shadow, property set) need W: voltage is read-only.
  v.set_require_writable(true);
  v.set_report_json(
      R"({"services":[{"service_id":"meter","properties":{"voltage":230.1,"report_interval":60}}]})");
  pb::ValidatePropertiesResponse write_errors;
  auto c3 = Context(kServiceKey);
  ASSERT_TRUE(internal_->ValidateProperties(c3.get(), v, &write_errors).ok());
  ASSERT_EQ(write_errors.errors_size(), 1);
  EXPECT_EQ(write_errors.errors(0).path(), "services[0].properties.voltage");
}

}  // namespace
}  // namespace iot

namespace iot {
namespace {

TEST_F(ThingModelTest, AlinkProductFromTslKeepsTheTslAndDerivesTheModel) {
  const std::string key = UniqueProductKey();
  // Indented, key order of the file: what is given back must be these very bytes.
  const std::string tsl = Thermostat(key).dump(2);
  pb::Product created;
  ASSERT_TRUE(CreateFromTsl(tsl, &created).ok());
  EXPECT_EQ(created.product_id(), key);
  EXPECT_EQ(created.dialect(), "alink");
  EXPECT_EQ(created.tsl_json(), tsl);
  EXPECT_EQ(created.name(), key) << "a TSL has no product name: the product key stands in";
  EXPECT_EQ(created.model_version(), 1);

  const pb::Product shown = Show(key);
  EXPECT_EQ(shown.dialect(), "alink");
  EXPECT_EQ(shown.tsl_json(), tsl);
  const auto model = nlohmann::json::parse(shown.product_json());
  EXPECT_EQ(model["product_id"], key);
  ASSERT_EQ(model["service_capabilities"].size(), 2u);
  EXPECT_EQ(model["service_capabilities"][0]["service_id"], "default");
  EXPECT_EQ(model["service_capabilities"][1]["service_id"], "airQuality");

  // Huawei products say so; lists carry the dialect, not the documents.
  const std::string huawei = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(huawei)).ok());
  EXPECT_EQ(Show(huawei).dialect(), "huawei");
  EXPECT_EQ(Show(huawei).tsl_json(), "");
  pb::ListProductsRequest list;
  pb::ListProductsResponse listed;
  auto ctx = Context(admin_);
  ASSERT_TRUE(products_->ListProducts(ctx.get(), list, &listed).ok());
  std::map<std::string, std::string> dialects;
  for (const auto& p : listed.products()) {
    dialects[p.product_id()] = p.dialect();
    EXPECT_TRUE(p.tsl_json().empty());
  }
  EXPECT_EQ(dialects[key], "alink");
  EXPECT_EQ(dialects[huawei], "huawei");

  // The same product key twice.
  EXPECT_EQ(CreateFromTsl(tsl).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ThingModelTest, AlinkProductKeyIsGeneratedWhenAbsent) {
  auto tsl = Thermostat("x");
  tsl["profile"].erase("productKey");
  pb::Product created;
  ASSERT_TRUE(CreateFromTsl(tsl.dump(), &created).ok());
  const std::string& id = created.product_id();
  ASSERT_EQ(id.size(), 11u) << id;
  EXPECT_EQ(id.substr(0, 2), "a1");
  EXPECT_TRUE(std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(c) != 0; })) << id;
  EXPECT_EQ(created.tsl_json(), tsl.dump()) << "the TSL is kept as given, without the key";
}

TEST_F(ThingModelTest, AlinkTslUpdatesMakeVersionsAndKeepTheDialect) {
  const std::string key = UniqueProductKey();
  auto tsl = Thermostat(key);
  ASSERT_TRUE(CreateFromTsl(tsl.dump()).ok());
  auto v2 = tsl;
  v2["properties"].push_back({{"identifier", "Humidity"},
                              {"accessMode", "r"},
                              {"dataType", {{"type", "int"}, {"specs", {{"max", "100"}}}}}});
  pb::Product updated;
  ASSERT_TRUE(UpdateProduct(key, "", v2.dump(), &updated).ok());
  EXPECT_EQ(updated.model_version(), 2);
  EXPECT_EQ(updated.dialect(), "alink");
  EXPECT_EQ(updated.tsl_json(), v2.dump());
  EXPECT_EQ(Show(key, 1).tsl_json(), tsl.dump()) << "every version keeps its own TSL";
  // Without a productKey the TSL updates the product named in the request.
  v2["profile"].erase("productKey");
  ASSERT_TRUE(UpdateProduct(key, "", v2.dump(), &updated).ok());
  EXPECT_EQ(updated.model_version(), 2) << "same model";

  // Another product key, a Huawei model for an alink product, a TSL for a Huawei product.
  v2["profile"]["productKey"] = "a1Other0000";
  grpc::Status other = UpdateProduct(key, "", v2.dump());
  EXPECT_EQ(other.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(other.error_message().rfind("profile.productKey:", 0), 0u) << other.error_message();
  grpc::Status huawei_json = UpdateProduct(key, SmartMeter(key), "");
  EXPECT_EQ(huawei_json.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(huawei_json.error_message().rfind("tsl_json:", 0), 0u) << huawei_json.error_message();
  const std::string huawei = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(huawei)).ok());
  grpc::Status tsl_for_huawei = UpdateProduct(huawei, "", Thermostat(huawei).dump());
  EXPECT_EQ(tsl_for_huawei.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(tsl_for_huawei.error_message().rfind("product_json:", 0), 0u)
      << tsl_for_huawei.error_message();
  EXPECT_EQ(Show(huawei).dialect(), "huawei");
  EXPECT_EQ(UpdateProduct(huawei, SmartMeter(huawei), Thermostat(huawei).dump()).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ThingModelTest, InvalidTslsAreRejectedWithTheirPath) {
  struct Case {
    std::string pointer;
    nlohmann::json value;
    std::string path;
  };
  const std::vector<Case> cases = {
      {"/properties/0/dataType/type", "number", "properties[0].dataType.type"},
      {"/properties/4/dataType/specs/min", "ten", "properties[4].dataType.specs.min"},
      {"/properties/3/dataType/specs", nlohmann::json::object(), "properties[3].dataType.specs"},
      {"/properties/2/identifier", "CurrentTemperature", "properties[2].identifier"},
      {"/services/2/callType", "sometimes", "services[2].callType"},
      {"/profile/productKey", "a1/bad", "profile.productKey"},
  };
  for (const Case& c : cases) {
    auto tsl = Thermostat(UniqueProductKey());
    tsl[nlohmann::json::json_pointer(c.pointer)] = c.value;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, admin_);
    const grpc::Status status = CreateFromTsl(tsl.dump(), nullptr, &ctx);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.pointer;
    EXPECT_EQ(status.error_message().rfind(c.path + ":", 0), 0u)
        << c.pointer << ": " << status.error_message();
    auto it = ctx.GetServerTrailingMetadata().find("iot-model-errors-bin");
    ASSERT_NE(it, ctx.GetServerTrailingMetadata().end()) << c.pointer;
    pb::ModelErrors errors;
    ASSERT_TRUE(errors.ParseFromString(std::string(it->second.data(), it->second.size())));
    ASSERT_GE(errors.errors_size(), 1);
    EXPECT_EQ(errors.errors(0).path(), c.path);
  }
  // The identifier missing.
  auto tsl = Thermostat(UniqueProductKey());
  tsl["events"][1].erase("identifier");
  grpc::Status missing = CreateFromTsl(tsl.dump());
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(missing.error_message(), "events[1].identifier: required");

  // Both documents; neither is a JSON object; the model limits apply to TSLs as to models.
  pb::CreateProductRequest both;
  both.set_product_json(SmartMeter(UniqueProduct()));
  both.set_tsl_json(Thermostat(UniqueProductKey()).dump());
  pb::Product product;
  auto ctx = Context(admin_);
  grpc::Status status = products_->CreateProduct(ctx.get(), both, &product);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("product_json"), std::string::npos);
  EXPECT_NE(status.error_message().find("tsl_json"), std::string::npos) << status.error_message();
  EXPECT_EQ(CreateFromTsl("[1, 2]").error_message(), "TSL must be a JSON object");
  EXPECT_EQ(CreateFromTsl("{\"properties\": ").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateFromTsl(std::string(65, '[') + std::string(65, ']')).error_message(),
            "TSL nested deeper than 64 levels");
  const size_t max_bytes = 500 * 1024;
  std::string padded = Thermostat(UniqueProductKey()).dump();
  padded.append(max_bytes - padded.size(), ' ');
  EXPECT_TRUE(CreateFromTsl(padded).ok()) << "500 KiB exactly";
  padded = Thermostat(UniqueProductKey()).dump();
  padded.append(max_bytes + 1 - padded.size(), ' ');
  EXPECT_EQ(CreateFromTsl(padded).error_message(),
            fmt::format("TSL too large: {} bytes > {} bytes", max_bytes + 1, max_bytes));
}

TEST_F(ThingModelTest, AlinkDevicesAreNamedByTheirDeviceName) {
  const std::string key = UniqueProductKey();
  ASSERT_TRUE(CreateFromTsl(Thermostat(key).dump()).ok());
  // Alibaba's deviceName may hold '@', '.' and ':'; the device's own 32-character secret.
  const std::string name = "hall@home.floor:1";
  const std::string secret = "0123456789abcdefABCDEF0123456789";
  pb::AddDeviceResponse added;
  ASSERT_TRUE(AddDevice(admin_, key, name, &added, secret).ok());
  const std::string device = key + "_" + name;
  EXPECT_EQ(added.device().device_id(), device);
  EXPECT_EQ(added.device().node_id(), name);
  EXPECT_EQ(added.secret(), secret);

  auto fields = ProjectedDevice(device);
  EXPECT_EQ(fields["dialect"], "alink");
  EXPECT_EQ(fields["node_id"], name);
  EXPECT_EQ(fields["product_id"], key);
  auto box = common::SecretBox::FromKeyText(kSecretKeyHex);
  ASSERT_TRUE(box.ok());
  EXPECT_EQ(*box->Open(fields["secret"], device), secret);
  pb::DeviceContext context = DeviceContext(device);
  EXPECT_EQ(context.dialect(), "alink");
  EXPECT_EQ(context.node_id(), name);
  EXPECT_EQ(context.product_json(), Show(key).product_json());

  // Freezing re-projects the device: the dialect stays.
  pb::FreezeDeviceRequest freeze;
  freeze.set_device_id(device);
  pb::Device frozen;
  auto ctx = Context(admin_);
  ASSERT_TRUE(devices_->FreezeDevice(ctx.get(), freeze, &frozen).ok());
  fields = ProjectedDevice(device);
  EXPECT_EQ(fields["frozen"], "1");
  EXPECT_EQ(fields["dialect"], "alink");

  // Huawei devices have no dialect field and keep today's node ids.
  const std::string huawei = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(huawei)).ok());
  ASSERT_TRUE(AddDevice(admin_, huawei, "n1").ok());
  EXPECT_EQ(ProjectedDevice(huawei + "_n1").count("dialect"), 0u);
  EXPECT_EQ(DeviceContext(huawei + "_n1").dialect(), "huawei");
  grpc::Status at = AddDevice(admin_, huawei, "a@b");
  EXPECT_EQ(at.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(at.error_message().rfind("node_id:", 0), 0u) << at.error_message();

  // Bad device names of an alink product.
  for (const std::string& bad : {std::string("has space"), std::string("a/b"), std::string("a&b"),
                                 std::string(65, 'n'), std::string()}) {
    grpc::Status refused = AddDevice(admin_, key, bad);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_EQ(refused.error_message().rfind("node_id:", 0), 0u) << refused.error_message();
  }
  EXPECT_TRUE(AddDevice(admin_, key, std::string(64, 'n')).ok());
  // An alink device's id is always {productKey}_{deviceName}.
  pb::AddDeviceRequest custom;
  custom.set_product_id(key);
  custom.set_node_id("dev2");
  custom.set_device_id("my-own-id");
  auto ctx2 = Context(admin_);
  grpc::Status custom_id = devices_->AddDevice(ctx2.get(), custom, &added);
  EXPECT_EQ(custom_id.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(custom_id.error_message().rfind("device_id:", 0), 0u) << custom_id.error_message();
  custom.set_device_id(key + "_dev2");
  auto ctx3 = Context(admin_);
  EXPECT_TRUE(devices_->AddDevice(ctx3.get(), custom, &added).ok());
  EXPECT_EQ(AddDevice(admin_, key, name).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ThingModelTest, AlinkDialectSurvivesAProjectionRebuild) {
  const std::string key = UniqueProductKey();
  ASSERT_TRUE(CreateFromTsl(Thermostat(key).dump()).ok());
  ASSERT_TRUE(AddDevice(admin_, key, "dev.1").ok());
  const std::string huawei = UniqueProduct();
  ASSERT_TRUE(CreateProduct(admin_, SmartMeter(huawei)).ok());
  ASSERT_TRUE(AddDevice(admin_, huawei, "n1").ok());
  ASSERT_TRUE(redis_client_->Command({"FLUSHALL"}).ok());
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto exists = redis_client_->Command({"EXISTS", "tm:dev:" + huawei + "_n1"});
        auto ready = redis_client_->Command({"EXISTS", "tm:projection:ready"});
        return exists.ok() && exists->integer == 1 && ready.ok() && ready->integer == 1;
      },
      seconds(10)))
      << server_->process().Log();
  EXPECT_EQ(ProjectedDevice(key + "_dev.1")["dialect"], "alink");
  EXPECT_EQ(ProjectedDevice(huawei + "_n1").count("dialect"), 0u);
}

TEST_F(ThingModelTest, DerivedModelValidatesAlinkDevicesProperties) {
  const std::string key = UniqueProductKey();
  ASSERT_TRUE(CreateFromTsl(Thermostat(key).dump()).ok());
  ASSERT_TRUE(AddDevice(admin_, key, "dev1").ok());
  auto validate = [&](const std::string& report, bool writable) {
    pb::ValidatePropertiesRequest v;
    v.set_device_id(key + "_dev1");
    v.set_report_json(report);
    v.set_require_writable(writable);
    pb::ValidatePropertiesResponse errors;
    auto c = Context(kServiceKey);
    EXPECT_TRUE(internal_->ValidateProperties(c.get(), v, &errors).ok());
    std::vector<std::string> paths;
    for (const auto& e : errors.errors()) {
      paths.push_back(e.path());
    }
    return paths;
  };
  using Paths = std::vector<std::string>;
  EXPECT_EQ(validate(R"({"services":[{"service_id":"default","properties":{
      "CurrentTemperature":21.5,"PowerSwitch":true,"WorkMode":3,"Label":"hall",
      "Schedule":{"StartHour":6},"Zones":["a","b"],"RecentTemperatures":[20.5,21]}},
      {"service_id":"airQuality","properties":{"PM25":12,"CO2":600}}]})",
                     false),
            Paths{});
  EXPECT_EQ(validate(R"({"services":[{"service_id":"default","properties":{
      "CurrentTemperature":500,"WorkMode":4,"FanSpeed":2}},
      {"service_id":"airQuality","properties":{"PM25":-1}}]})",
                     false),
            (Paths{"services[0].properties.CurrentTemperature", "services[0].properties.WorkMode",
                   "services[1].properties.PM25"}));
  // Writes need accessMode rw.
  EXPECT_EQ(validate(R"({"services":[{"service_id":"default","properties":{
      "CurrentTemperature":20,"TargetTemperature":21}}]})",
                     true),
            Paths{"services[0].properties.CurrentTemperature"});
}

}  // namespace
}  // namespace iot
