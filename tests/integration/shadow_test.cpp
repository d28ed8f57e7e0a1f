// The shadow service as a process over real gRPC, with real PostgreSQL, Redis and a real
// thing-model. The device-gateway's side is a gRPC server in this test implementing
// InternalDownlink.Publish, so the test sees every pushed delta and decides whether the device
// is online; reports, presence and property-set responses come in through InternalShadow as
// the gateway sends them.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <thread>

#include "iot/common/auth.h"
#include "iot/common/crypto.h"
#include "iot/common/postgres.h"
#include "iot/common/redis.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "iot/testing/http.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace tm = iot::thing_model::v1;
namespace sh = iot::shadow::v1;
namespace gw = iot::device_gateway::v1;
using iot::testing::WaitUntil;
using nlohmann::json;
using std::chrono::seconds;

const std::string kSecretKey(64, 'd');
const std::string kAdminKey = "shadow-test-admin-key-0123456789";
const std::string kServiceKey = "shadow-test-service-key-0123456789";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The gateway's downlink as the shadow sees it: records publishes, answers online per device.
class FakeDownlink final : public gw::InternalDownlink::Service {
 public:
  grpc::Status Publish(grpc::ServerContext* context, const gw::PublishRequest* request,
                       gw::PublishResponse* response) override {
    std::lock_guard lock(mu_);
    const auto auth = context->client_metadata().find("authorization");
    if (auth == context->client_metadata().end() ||
        std::string(auth->second.data(), auth->second.size()) != "Bearer " + kServiceKey) {
      return {grpc::StatusCode::UNAUTHENTICATED, "no service key"};
    }
    published_.push_back(*request);
    response->set_online(online_.contains(request->device_id()));
    return grpc::Status::OK;
  }

  void SetOnline(const std::string& device_id, bool online) {
    std::lock_guard lock(mu_);
    if (online) {
      online_.insert(device_id);
    } else {
      online_.erase(device_id);
    }
  }

  /// Publishes for `device_id` so far.
  std::vector<gw::PublishRequest> For(const std::string& device_id) {
    std::lock_guard lock(mu_);
    std::vector<gw::PublishRequest> out;
    for (const auto& p : published_) {
      if (p.device_id() == device_id) {
        out.push_back(p);
      }
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::set<std::string> online_;
  std::vector<gw::PublishRequest> published_;
};

std::unique_ptr<grpc::ClientContext> Context(const std::string& key) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  common::SetBearer(*ctx, key);
  ctx->set_deadline(std::chrono::system_clock::now() + seconds(10));
  return ctx;
}

std::map<std::string, std::string> ShadowEnv(const std::string& pg_url,
                                             const std::string& redis_url,
                                             const std::string& thing_model,
                                             const std::string& gateway) {
  return {{"IOT_PG_URL", pg_url},
          {"IOT_REDIS_URL", redis_url},
          {"IOT_THING_MODEL_ADDR", thing_model},
          {"IOT_DEVICE_GATEWAY_ADDR", gateway},
          {"IOT_SERVICE_API_KEY", kServiceKey},
          {"IOT_SHADOW_FLUSH_INTERVAL", "100ms"},
          {"IOT_SHADOW_DEVICE_CACHE_TTL", "1s"},
          {"IOT_SHADOW_MAX_DOCUMENT_BYTES", "8192"}};
}

/// One Redis, thing-model, fake gateway and shadow process for the suite; each test uses its
/// own device (and tenant, where it matters).
class ShadowTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = std::make_unique<iot::testing::TestRedis>();
    thing_model_ = std::make_unique<iot::testing::ThingModelProcess>(
        iot::testing::ThingModelProcessOptions{.redis_url = redis_->Url(),
                                               .secret_key = kSecretKey,
                                               .admin_key = kAdminKey,
                                               .service_key = kServiceKey,
                                               .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    tm_channel_ = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());

    downlink_ = std::make_unique<FakeDownlink>();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(downlink_.get());
    gateway_ = builder.BuildAndStart();
    ASSERT_GT(port, 0);
    gateway_address_ = "127.0.0.1:" + std::to_string(port);

    pg_url_ = iot::testing::CreateTestDatabase();
    shadow_ = StartShadow(pg_url_);
    ASSERT_TRUE(shadow_->WaitServing()) << shadow_->process().Log();
    shadow_channel_ = grpc::CreateChannel(shadow_->address(), grpc::InsecureChannelCredentials());
    redis_client_ = *common::RedisClient::Create({.url = redis_->Url()});

    // The product, once, in the bootstrap tenant.
    auto products = tm::Products::NewStub(tm_channel_);
    tm::CreateProductRequest product;
    product.set_product_json(ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    tm::Product created;
    auto ctx = Context(kAdminKey);
    ASSERT_TRUE(products->CreateProduct(ctx.get(), product, &created).ok());
  }

  static std::unique_ptr<iot::testing::ServiceProcess> StartShadow(const std::string& pg_url) {
    return std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
        .binary = "shadow",
        .env_prefix = "IOT_SHADOW",
        .env = ShadowEnv(pg_url, redis_->Url(), thing_model_->address(), gateway_address_),
        .args = {}});
  }

  static void TearDownTestSuite() {
    if (shadow_) {
      EXPECT_EQ(shadow_->process().Stop(), 0) << shadow_->process().Log();
    }
    shadow_.reset();
    if (gateway_) {
      gateway_->Shutdown();
    }
    gateway_.reset();
    downlink_.reset();
    thing_model_.reset();
    redis_client_.reset();
    redis_.reset();
  }

  void SetUp() override {
    shadows_ = sh::Shadows::NewStub(shadow_channel_);
    internal_ = sh::InternalShadow::NewStub(shadow_channel_);
    device_id_ = AddDevice(kAdminKey);
  }

  std::string AddDevice(const std::string& key) {
    auto devices = tm::Devices::NewStub(tm_channel_);
    tm::AddDeviceRequest add;
    add.set_product_id("smartmeter01");
    add.set_node_id("n" + common::HexEncode(common::RandomBytes(6)));
    tm::AddDeviceResponse added;
    auto ctx = Context(key);
    const grpc::Status status = devices->AddDevice(ctx.get(), add, &added);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return added.device().device_id();
  }

  gw::DeviceRef Ref(const std::string& device_id) {
    gw::DeviceRef ref;
    ref.set_tenant_id(tenant_);
    ref.set_device_id(device_id);
    ref.set_product_id("smartmeter01");
    return ref;
  }

  /// One property report through InternalShadow.ReportProperties, as the gateway sends it.
  grpc::Status Report(const json& properties, const std::string& event_time = {},
                      std::string message_id = {}, const std::string& device_id = {},
                      sh::InternalShadow::Stub* via = nullptr, gw::IngestAck* ack_out = nullptr) {
    sh::ReportPropertiesRequest request;
    sh::PropertyReport* report = request.add_reports();
    report->set_message_id(message_id.empty() ? common::HexEncode(common::RandomBytes(8))
                                              : message_id);
    *report->mutable_device() = Ref(device_id.empty() ? device_id_ : device_id);
    json service = {{"service_id", "meter"}, {"properties", properties}};
    if (!event_time.empty()) {
      service["event_time"] = event_time;
    }
    report->set_services_json(json::array({service}).dump());
    gw::IngestAck ack;
    auto ctx = Context(kServiceKey);
    return (via ? via : internal_.get())
        ->ReportProperties(ctx.get(), request, ack_out ? ack_out : &ack);
  }

  grpc::Status Show(sh::ShowDeviceShadowResponse* out, const std::string& key = kAdminKey,
                    const std::string& device_id = {}, sh::Shadows::Stub* via = nullptr) {
    sh::ShowDeviceShadowRequest request;
    request.set_device_id(device_id.empty() ? device_id_ : device_id);
    auto ctx = Context(key);
    return (via ? via : shadows_.get())->ShowDeviceShadow(ctx.get(), request, out);
  }

  /// The meter service's shadow.
  sh::DeviceShadowData Meter(const std::string& device_id = {}, sh::Shadows::Stub* via = nullptr) {
    sh::ShowDeviceShadowResponse response;
    const grpc::Status status = Show(&response, kAdminKey, device_id, via);
    EXPECT_TRUE(status.ok()) << status.error_message();
    for (const auto& data : response.shadow()) {
      if (data.service_id() == "meter") {
        return data;
      }
    }
    ADD_FAILURE() << "no meter service in the shadow";
    return {};
  }

  grpc::Status SetDesired(const json& desired, std::optional<int64_t> version = std::nullopt,
                          sh::ShowDeviceShadowResponse* out = nullptr,
                          const std::string& key = kAdminKey, sh::Shadows::Stub* via = nullptr) {
    sh::UpdateDeviceShadowDesiredDataRequest request;
    request.set_device_id(device_id_);
    sh::UpdateDesireData* entry = request.add_shadow();
    entry->set_service_id("meter");
    entry->set_desired_json(desired.dump());
    if (version) {
      entry->set_version(*version);
    }
    sh::ShowDeviceShadowResponse response;
    auto ctx = Context(key);
    return (via ? via : shadows_.get())
        ->UpdateDeviceShadowDesiredData(ctx.get(), request, out ? out : &response);
  }

  grpc::Status Presence(bool online) {
    gw::PresenceEvents events;
    gw::PresenceEvent* event = events.add_events();
    event->set_message_id(common::HexEncode(common::RandomBytes(8)));
    *event->mutable_device() = Ref(device_id_);
    event->set_online(online);
    gw::IngestAck ack;
    auto ctx = Context(kServiceKey);
    return internal_->ReportPresence(ctx.get(), events, &ack);
  }

  /// The reported side of the device's row in PostgreSQL ("" when there is none).
  static json DurableReported(const std::string& pg_url, const std::string& device_id) {
    try {
      pqxx::connection c(pg_url);
      pqxx::read_transaction r(c);
      const pqxx::result rows = r.exec_params(
          "SELECT reported::text FROM shadow.device_shadows WHERE device_id = $1", device_id);
      if (rows.empty()) {
        return json();
      }
      return json::parse(rows[0][0].as<std::string>());
    } catch (const std::exception&) {
      return json();
    }
  }

  static inline std::unique_ptr<iot::testing::TestRedis> redis_;
  static inline std::unique_ptr<iot::testing::ThingModelProcess> thing_model_;
  static inline std::shared_ptr<grpc::Channel> tm_channel_;
  static inline std::unique_ptr<FakeDownlink> downlink_;
  static inline std::unique_ptr<grpc::Server> gateway_;
  static inline std::string gateway_address_;
  static inline std::string pg_url_;
  static inline std::unique_ptr<iot::testing::ServiceProcess> shadow_;
  static inline std::shared_ptr<grpc::Channel> shadow_channel_;
  static inline std::unique_ptr<common::RedisClient> redis_client_;

  std::unique_ptr<sh::Shadows::Stub> shadows_;
  std::unique_ptr<sh::InternalShadow::Stub> internal_;
  std::string tenant_ = "default";
  std::string device_id_;
};

TEST_F(ShadowTest, ReportedValuesAreVisibleWithVersionAndMetadata) {
  sh::DeviceShadowData before = Meter();
  EXPECT_EQ(json::parse(before.reported().properties_json()), json::object());
  EXPECT_EQ(before.version(), 0);

  ASSERT_TRUE(Report({{"voltage", 230.5}, {"current", 4}}, "20261126T174248Z").ok());
  const sh::DeviceShadowData meter = Meter();
  EXPECT_EQ(json::parse(meter.reported().properties_json()),
            json({{"voltage", 230.5}, {"current", 4}}));
  EXPECT_EQ(meter.reported().event_time(), "20261126T174248Z");
  EXPECT_EQ(meter.version(), 1);
  EXPECT_EQ(json::parse(meter.metadata_json())["reported"]["voltage"]["timestamp"],
            "20261126T174248Z");
  EXPECT_EQ(json::parse(meter.delta_json()), json::object());
}

TEST_F(ShadowTest, SameMessageIdIsAppliedOnce) {
  ASSERT_TRUE(Report({{"voltage", 230}}, {}, "msg-1").ok());
  ASSERT_TRUE(Report({{"voltage", 231}}, {}, "msg-1").ok());  // a redelivery
  const sh::DeviceShadowData meter = Meter();
  EXPECT_EQ(json::parse(meter.reported().properties_json())["voltage"], 230);
  EXPECT_EQ(meter.version(), 1);
}

TEST_F(ShadowTest, OlderEventTimeDoesNotOverwriteNewerValue) {
  ASSERT_TRUE(Report({{"voltage", 230}, {"current", 5}}, "20261126T120000Z").ok());
  // Arrives later but was measured earlier; current is new though.
  ASSERT_TRUE(Report({{"voltage", 220}}, "20261126T110000Z").ok());
  ASSERT_TRUE(Report({{"current", 6}}, "2026-11-26T12:00:01Z").ok());
  sh::DeviceShadowData meter = Meter();
  EXPECT_EQ(json::parse(meter.reported().properties_json()),
            json({{"voltage", 230}, {"current", 6}}));
  EXPECT_EQ(meter.version(), 2) << "the stale report changed nothing";
  ASSERT_TRUE(Report({{"voltage", 240}}, "20261126T130000Z").ok());
  meter = Meter();
  EXPECT_EQ(json::parse(meter.reported().properties_json())["voltage"], 240);
  EXPECT_EQ(meter.reported().event_time(), "20261126T130000Z");
}

TEST_F(ShadowTest, ManyPropertiesInOneReportAreMergedByTheirStamps) {
  // The merge script reads and writes the fields of a report with one HMGET and one HSET.
  json first = json::object();
  json second = json::object();
  for (int i = 0; i < 150; ++i) {
    first[fmt::format("p{}", i)] = i;
    if (i % 2 == 0) {
      second[fmt::format("p{}", i)] = i + 1000;
    }
  }
  second["voltage"] = 230;
  ASSERT_TRUE(Report(first, "20261126T120000Z").ok());
  ASSERT_TRUE(Report(second, "20261126T130000Z").ok());
  ASSERT_TRUE(Report({{"p0", -1}, {"p1", -1}}, "20261126T110000Z").ok());  // older: no change
  sh::DeviceShadowData meter = Meter();
  const json reported = json::parse(meter.reported().properties_json());
  ASSERT_EQ(reported.size(), 151u) << reported;
  for (int i = 0; i < 150; ++i) {
    EXPECT_EQ(reported[fmt::format("p{}", i)], i % 2 == 0 ? i + 1000 : i) << i;
  }
  EXPECT_EQ(reported["voltage"], 230);
  EXPECT_EQ(meter.version(), 2);
}

TEST_F(ShadowTest, DesiredUpdateSendsOnlineDeviceExactlyTheDelta) {
  downlink_->SetOnline(device_id_, true);
  ASSERT_TRUE(Report({{"relay_state", "ON"}, {"report_interval", 60}}).ok());
  sh::ShowDeviceShadowResponse updated;
  const grpc::Status status =
      SetDesired({{"relay_state", "OFF"}, {"report_interval", 60}}, std::nullopt, &updated);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(updated.version(), 2);

  const auto pushed = downlink_->For(device_id_);
  ASSERT_EQ(pushed.size(), 1U);
  EXPECT_EQ(pushed[0].kind(), gw::DOWNLINK_KIND_PROPERTIES_SET);
  EXPECT_TRUE(pushed[0].request_id().starts_with("shadow-")) << pushed[0].request_id();
  EXPECT_EQ(pushed[0].tenant_id(), tenant_);
  EXPECT_EQ(
      json::parse(pushed[0].payload()),
      json({{"object_device_id", device_id_},
            {"services", {{{"service_id", "meter"}, {"properties", {{"relay_state", "OFF"}}}}}}}));

  // The device applies it and reports back: the delta empties.
  ASSERT_TRUE(Report({{"relay_state", "OFF"}}).ok());
  const sh::DeviceShadowData meter = Meter();
  EXPECT_EQ(json::parse(meter.delta_json()), json::object());
  EXPECT_EQ(json::parse(meter.desired().properties_json()),
            json({{"relay_state", "OFF"}, {"report_interval", 60}}));

  // The device's property-set response is recorded.
  sh::PropertySetResult result;
  result.set_message_id("resp-1");
  *result.mutable_device() = Ref(device_id_);
  result.set_request_id(pushed[0].request_id());
  result.set_payload_json(R"({"result_code":0,"result_desc":"success"})");
  gw::IngestAck ack;
  auto ctx = Context(kServiceKey);
  ASSERT_TRUE(internal_->CompletePropertySet(ctx.get(), result, &ack).ok());
  sh::ShowDeviceShadowResponse shown;
  ASSERT_TRUE(Show(&shown).ok());
  EXPECT_EQ(shown.last_property_set().request_id(), pushed[0].request_id());
  EXPECT_EQ(shown.last_property_set().result_desc(), "success");
}

TEST_F(ShadowTest, OfflineDeviceGetsPendingDeltaWhenItConnects) {
  downlink_->SetOnline(device_id_, false);
  ASSERT_TRUE(SetDesired({{"report_interval", 30}}).ok());
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}).ok());
  // The gateway answered "offline" to each attempt.
  EXPECT_EQ(downlink_->For(device_id_).size(), 2U);

  downlink_->SetOnline(device_id_, true);
  ASSERT_TRUE(Presence(true).ok());
  const auto pushed = downlink_->For(device_id_);
  ASSERT_EQ(pushed.size(), 3U);
  EXPECT_EQ(json::parse(pushed[2].payload())["services"][0]["properties"],
            json({{"relay_state", "OFF"}, {"report_interval", 30}}));

  // Once reported state caught up, a reconnect pushes nothing; a disconnect never does.
  ASSERT_TRUE(Report({{"relay_state", "OFF"}, {"report_interval", 30}}).ok());
  ASSERT_TRUE(Presence(false).ok());
  ASSERT_TRUE(Presence(true).ok());
  EXPECT_EQ(downlink_->For(device_id_).size(), 3U);
  EXPECT_EQ(json::parse(Meter().delta_json()), json::object());
}

TEST_F(ShadowTest, VersionMismatchIsAbortedWithTheCurrentVersion) {
  ASSERT_TRUE(Report({{"voltage", 230}}).ok());
  const int64_t version = Meter().version();
  const grpc::Status stale = SetDesired({{"relay_state", "OFF"}}, version - 1);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_NE(stale.error_message().find("current version is " + std::to_string(version)),
            std::string::npos)
      << stale.error_message();
  EXPECT_EQ(json::parse(Meter().desired().properties_json()), json::object());

  sh::ShowDeviceShadowResponse updated;
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}, version, &updated).ok());
  EXPECT_EQ(updated.version(), version + 1);
}

TEST_F(ShadowTest, InvalidDesiredIsRefusedNamingTheProperty) {
  struct Case {
    json desired;
    std::string names;
  };
  const std::vector<Case> cases = {
      {{{"voltage", 230}}, "voltage"},                   // method R: not writable
      {{{"report_interval", 4000}}, "report_interval"},  // max 3600
      {{{"report_interval", "60"}}, "report_interval"},  // wrong type
      {{{"relay_state", "HALF"}}, "relay_state"},        // not in enum
      {{{"no_such_property", 1}}, "no_such_property"},
      {{{"a.b", 1}}, "a.b"},
      {{{"$set", 1}}, "$set"},
      {{{std::string("nul\0key", 7), 1}}, "nul"},
  };
  for (const Case& c : cases) {
    const grpc::Status status = SetDesired(c.desired);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.desired.dump();
    EXPECT_NE(status.error_message().find(c.names), std::string::npos)
        << c.desired.dump() << ": " << status.error_message();
  }
  EXPECT_EQ(Meter().version(), 0) << "nothing was written";

  // A null removes a desired property.
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}, {"report_interval", 10}}).ok());
  ASSERT_TRUE(SetDesired({{"relay_state", nullptr}}).ok());
  EXPECT_EQ(json::parse(Meter().desired().properties_json()), json({{"report_interval", 10}}));
}

TEST_F(ShadowTest, OversizeDocumentIsRefused) {
  const auto refused = [&](int n) {
    return WaitUntil(
        [&] {
          return shadow_->Metrics().find(fmt::format("outcome=\"too_large\"}} {}", n)) !=
                 std::string::npos;
        },
        seconds(5));
  };
  // The suite's limit is 8 KiB; the firmware string alone is bigger.
  ASSERT_TRUE(Report({{"voltage", 230}}).ok());
  gw::IngestAck ack;
  ASSERT_TRUE(Report({{"firmware", std::string(9000, 'x')}}, {}, "big-1", {}, nullptr, &ack).ok());
  ASSERT_EQ(ack.rejected_size(), 1);  // refused for good, not retried
  EXPECT_EQ(ack.rejected(0).message_id(), "big-1");
  EXPECT_EQ(ack.rejected(0).device_id(), device_id_);
  EXPECT_EQ(ack.rejected(0).reason(), "too_large");
  sh::DeviceShadowData meter = Meter();
  EXPECT_FALSE(json::parse(meter.reported().properties_json()).contains("firmware"));
  EXPECT_EQ(meter.version(), 1);
  EXPECT_TRUE(refused(1)) << shadow_->Metrics();

  // More fields than one HMGET of the merge script reads at once: refused whole, no error.
  json many = json::object();
  for (int i = 0; i < 1500; ++i) {
    many[fmt::format("q{}", i)] = i;
  }
  ASSERT_TRUE(Report(many).ok());
  meter = Meter();
  EXPECT_FALSE(json::parse(meter.reported().properties_json()).contains("q0"));
  EXPECT_EQ(meter.version(), 1);
  EXPECT_TRUE(refused(2)) << shadow_->Metrics();
}

TEST_F(ShadowTest, DeviceShadowGetIsAnsweredInTheIotdaShape) {
  ASSERT_TRUE(Report({{"voltage", 230}, {"relay_state", "ON"}}, "20261126T174248Z").ok());
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}).ok());
  sh::DeviceShadowGetRequest request;
  *request.mutable_device() = Ref(device_id_);
  request.set_request_id("r1");
  sh::DeviceShadowGetResponse response;
  auto ctx = Context(kServiceKey);
  ASSERT_TRUE(internal_->GetDeviceShadowForDevice(ctx.get(), request, &response).ok());
  const json payload = json::parse(response.payload_json());
  EXPECT_EQ(payload["object_device_id"], device_id_);
  ASSERT_EQ(payload["shadow"].size(), 1U);
  const json& meter = payload["shadow"][0];
  EXPECT_EQ(meter["service_id"], "meter");
  EXPECT_EQ(meter["reported"]["properties"], json({{"voltage", 230}, {"relay_state", "ON"}}));
  EXPECT_EQ(meter["reported"]["event_time"], "20261126T174248Z");
  EXPECT_EQ(meter["desired"]["properties"], json({{"relay_state", "OFF"}}));
  EXPECT_TRUE(meter["desired"]["event_time"].is_string());
  EXPECT_EQ(meter["version"], 2);

  // Only a service key may ask.
  auto user = Context(kAdminKey);
  EXPECT_EQ(internal_->GetDeviceShadowForDevice(user.get(), request, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(ShadowTest, AnotherTenantSeesNoShadow) {
  auto tenants = tm::Tenants::NewStub(tm_channel_);
  tm::CreateTenantRequest create;
  create.set_name("other tenant");
  create.set_create_admin_key(true);
  tm::CreateTenantResponse other;
  auto ctx = Context(kAdminKey);
  ASSERT_TRUE(tenants->CreateTenant(ctx.get(), create, &other).ok());
  const std::string other_key = other.admin_key_secret();
  ASSERT_TRUE(Report({{"voltage", 230}}).ok());

  sh::ShowDeviceShadowResponse shown;
  EXPECT_TRUE(
      WaitUntil([&] { return Show(&shown, other_key).error_code() == grpc::StatusCode::NOT_FOUND; },
                seconds(5)))
      << "another tenant's device must be NOT_FOUND";
  EXPECT_EQ(SetDesired({{"relay_state", "OFF"}}, std::nullopt, nullptr, other_key).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Show(&shown, other_key, "no-such-device").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(json::parse(Meter().desired().properties_json()), json::object());
}

TEST_F(ShadowTest, ReportedStateIsWrittenBehindToPostgres) {
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(Report({{"current", i}}, fmt::format("20261126T1200{:02d}Z", i)).ok());
  }
  EXPECT_TRUE(WaitUntil(
      [&] {
        const json reported = DurableReported(pg_url_, device_id_);
        return reported.is_object() && reported.contains("meter") &&
               reported["meter"]["properties"]["current"] == 49;
      },
      seconds(10)))
      << DurableReported(pg_url_, device_id_).dump();
}

TEST_F(ShadowTest, RedisFlushedIsRebuiltFromPostgresWithoutRestart) {
  ASSERT_TRUE(Report({{"voltage", 230}, {"relay_state", "ON"}}, "20261126T120000Z").ok());
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}).ok());
  const int64_t version = Meter().version();
  ASSERT_TRUE(WaitUntil([&] { return DurableReported(pg_url_, device_id_).contains("meter"); },
                        seconds(10)));

  ASSERT_TRUE(redis_client_->Command({"FLUSHALL"}).ok());
  const std::string key = "shadow:dev:" + device_id_;
  // Rebuilt by the background loop, before anyone asks for the device.
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto exists = redis_client_->Command({"EXISTS", key});
        return exists.ok() && exists->integer == 1;
      },
      seconds(10)));
  sh::DeviceShadowData meter;
  EXPECT_TRUE(WaitUntil(
      [&] {  // thing-model rebuilds its key projection on its own schedule
        sh::ShowDeviceShadowResponse response;
        return Show(&response).ok();
      },
      seconds(10)));
  // The flush took thing-model's API-key projection too: shadow's desired writes and the next
  // tests' AddDevice go there, so wait until it has rebuilt it (and its authenticator's half-second
  // negative cache expired).
  auto products = tm::Products::NewStub(tm_channel_);
  EXPECT_TRUE(WaitUntil(
      [&] {
        tm::ShowProductRequest request;
        request.set_product_id("smartmeter01");
        tm::Product product;
        auto ctx = Context(kAdminKey);
        return products->ShowProduct(ctx.get(), request, &product).ok();
      },
      seconds(30)));
  meter = Meter();
  EXPECT_EQ(json::parse(meter.reported().properties_json()),
            json({{"voltage", 230}, {"relay_state", "ON"}}));
  EXPECT_EQ(json::parse(meter.desired().properties_json()), json({{"relay_state", "OFF"}}));
  EXPECT_GE(meter.version(), version);
  // Version checks keep working across the rebuild.
  EXPECT_EQ(SetDesired({{"relay_state", "ON"}}, meter.version() - 1).error_code(),
            grpc::StatusCode::ABORTED);
  EXPECT_TRUE(SetDesired({{"relay_state", "ON"}}, meter.version()).ok());
}

TEST_F(ShadowTest, RebuildOverIntactRedisChangesNoVersion) {
  // The durable copy the write-behind just wrote, merged back into a live shadow that has it
  // already (a lost marker, or a first report racing the write-behind), changes nothing.
  ASSERT_TRUE(Report({{"voltage", 230}}, "20261126T120000Z").ok());
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}).ok());
  ASSERT_TRUE(WaitUntil([&] { return DurableReported(pg_url_, device_id_).contains("meter"); },
                        seconds(10)));
  const int64_t version = Meter().version();
  ASSERT_TRUE(redis_client_->Command({"DEL", "shadow:marker"}).ok());
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto exists = redis_client_->Command({"EXISTS", "shadow:marker"});
        return exists.ok() && exists->integer == 1;
      },
      seconds(10)));
  EXPECT_EQ(Meter().version(), version);
}

TEST_F(ShadowTest, IotctlShowsAndSetsDesired) {
  iot::testing::TempDir dir("iotctl-shadow");
  std::filesystem::path log;
  int calls = 0;
  auto iotctl = [&](std::vector<std::string> args) {
    log = dir.path() / fmt::format("out{}.txt", ++calls);  // RunCommand appends
    std::vector<std::string> argv = {iot::testing::ExecutablePath("iotctl").string(), "--addr",
                                     shadow_->address(), "--api-key", kAdminKey};
    argv.insert(argv.end(), args.begin(), args.end());
    return iot::testing::RunCommand(argv, log);
  };
  ASSERT_TRUE(Report({{"relay_state", "ON"}}).ok());
  EXPECT_EQ(iotctl({"shadow", "set-desired", device_id_, "--service", "meter", "-p",
                    "relay_state=OFF", "-p", "report_interval=120", "--version", "1"}),
            0)
      << ReadFile(log.string());
  EXPECT_EQ(json::parse(Meter().desired().properties_json()),
            json({{"relay_state", "OFF"}, {"report_interval", 120}}));
  EXPECT_EQ(iotctl({"--json", "shadow", "show", device_id_}), 0);
  const json shown = json::parse(ReadFile(log.string()));
  EXPECT_EQ(shown["version"], "2");  // int64 in proto3 JSON
  EXPECT_EQ(json::parse(shown["shadow"][0]["delta_json"].get<std::string>()),
            json({{"relay_state", "OFF"}, {"report_interval", 120}}));
  // A stale version is a server error (exit 1); a bad value too.
  EXPECT_EQ(iotctl({"shadow", "set-desired", device_id_, "--service", "meter", "-p",
                    "relay_state=ON", "--version", "1"}),
            1);
  EXPECT_NE(ReadFile(log.string()).find("ABORTED"), std::string::npos) << ReadFile(log.string());
  EXPECT_EQ(iotctl({"shadow", "set-desired", device_id_, "--service", "meter", "-p",
                    "report_interval=0"}),
            1);
  EXPECT_NE(ReadFile(log.string()).find("report_interval"), std::string::npos);
}

TEST_F(ShadowTest, TwoReplicasServeTheSameShadows) {
  auto second = StartShadow(pg_url_);
  ASSERT_TRUE(second->WaitServing()) << second->process().Log();
  auto channel = grpc::CreateChannel(second->address(), grpc::InsecureChannelCredentials());
  auto shadows2 = sh::Shadows::NewStub(channel);
  auto internal2 = sh::InternalShadow::NewStub(channel);

  const grpc::Status reported = Report({{"voltage", 230}}, {}, {}, {}, internal2.get());
  ASSERT_TRUE(reported.ok()) << reported.error_message() << second->process().Log();
  ASSERT_TRUE(Report({{"current", 3}}).ok());
  EXPECT_EQ(Meter().version(), 2);
  EXPECT_EQ(Meter({}, shadows2.get()).version(), 2);
  // An update through one replica with a version read from the other.
  ASSERT_TRUE(SetDesired({{"relay_state", "OFF"}}, 2, nullptr, kAdminKey, shadows2.get()).ok());
  EXPECT_EQ(SetDesired({{"relay_state", "ON"}}, 2).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(json::parse(Meter().desired().properties_json()), json({{"relay_state", "OFF"}}));
  EXPECT_EQ(second->process().Stop(), 0) << second->process().Log();
}

TEST_F(ShadowTest, PostgresDownKeepsAcceptingReportsAndWritesThemWhenBack) {
  // A private PostgreSQL this test can stop, and a shadow process on it. The suite's shadow
  // shares the Redis (its write-behind would take the dirty devices), so it pauses meanwhile.
  struct Resume {
    ~Resume() {
      shadow_->Restart();
      EXPECT_TRUE(shadow_->WaitServing());
    }
  } resume;
  shadow_->process().Stop();
  iot::testing::TestPostgres postgres;
  postgres.Start();
  auto own = StartShadow(postgres.Url());
  ASSERT_TRUE(own->WaitServing()) << own->process().Log();
  auto channel = grpc::CreateChannel(own->address(), grpc::InsecureChannelCredentials());
  auto internal = sh::InternalShadow::NewStub(channel);
  auto shadows = sh::Shadows::NewStub(channel);

  ASSERT_TRUE(Report({{"voltage", 230}}, {}, {}, {}, internal.get()).ok());
  ASSERT_TRUE(WaitUntil(
      [&] { return DurableReported(postgres.Url(), device_id_).contains("meter"); }, seconds(10)));

  postgres.Stop();
  for (int i = 0; i < 20; ++i) {
    const grpc::Status status = Report(
        {{"voltage", 200 + i}}, fmt::format("20301126T1200{:02d}Z", i), {}, {}, internal.get());
    ASSERT_TRUE(status.ok()) << "report " << i << ": " << status.error_message();
  }
  EXPECT_EQ(json::parse(Meter({}, shadows.get()).reported().properties_json())["voltage"], 219);

  postgres.Start();
  EXPECT_TRUE(WaitUntil(
      [&] {
        const json reported = DurableReported(postgres.Url(), device_id_);
        return reported.contains("meter") && reported["meter"]["properties"]["voltage"] == 219;
      },
      seconds(20)))
      << DurableReported(postgres.Url(), device_id_).dump() << own->process().Log();
  EXPECT_EQ(own->process().Stop(), 0);
}

TEST_F(ShadowTest, OneInvalidReportIsRejectedAloneAndTheOthersAreMerged) {
  const std::string other = AddDevice(kAdminKey);
  sh::ReportPropertiesRequest request;
  const auto add = [&](const std::string& id, const std::string& device, const std::string& body) {
    sh::PropertyReport* report = request.add_reports();
    report->set_message_id(id);
    *report->mutable_device() = Ref(device);
    report->set_services_json(body);
  };
  add("ok-1", device_id_, R"([{"service_id":"meter","properties":{"voltage":230}}])");
  add("bad-1", device_id_, R"({"not":"an array"})");
  add("bad-2", other, R"([{"service_id":"meter","properties":{"a.b":1}}])");
  add("ok-2", other, R"([{"service_id":"meter","properties":{"current":4}}])");
  gw::IngestAck ack;
  auto ctx = Context(kServiceKey);
  const grpc::Status status = internal_->ReportProperties(ctx.get(), request, &ack);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(ack.rejected_size(), 2) << ack.DebugString();
  EXPECT_EQ(ack.rejected(0).message_id(), "bad-1");
  EXPECT_EQ(ack.rejected(0).device_id(), device_id_);
  EXPECT_EQ(ack.rejected(0).reason(), "malformed");
  EXPECT_EQ(ack.rejected(0).detail(), "reports[1].services_json: not a JSON array of services");
  EXPECT_EQ(ack.rejected(1).message_id(), "bad-2");
  EXPECT_EQ(ack.rejected(1).device_id(), other);
  EXPECT_EQ(ack.rejected(1).reason(), "invalid_property");
  EXPECT_EQ(json::parse(Meter().reported().properties_json())["voltage"], 230);
  EXPECT_EQ(json::parse(Meter(other).reported().properties_json())["current"], 4);
  EXPECT_NE(shadow_->Metrics().find("iot_shadow_rejected_records_total{reason=\"malformed\"}"),
            std::string::npos);
}

TEST_F(ShadowTest, KilledMidBatchEveryDeviceShowsItsLastReportCountedOnce) {
  // Gateways as the shadow sees them: batches of several devices' reports, each retried until
  // OK with the same message ids, while the shadow is SIGKILLed and restarted. Every report of
  // a device carries the same event_time, so merging an older one again (a redelivery) would
  // roll its value back and count a version more: only deduplication keeps the result exact.
  constexpr int kDevices = 8;
  constexpr int kReports = 200;
  constexpr int kPerBatch = 10;  // reports per device per batch: 2 devices a batch
  std::vector<std::string> devices;
  for (int i = 0; i < kDevices; ++i) {
    devices.push_back(AddDevice(kAdminKey));
  }
  std::atomic<int> acked{0};
  std::atomic<int> failed_calls{0};
  std::atomic<int> in_flight{0};
  std::atomic<bool> go{false};
  iot::testing::Workers gateways;
  const auto feed = [&](const std::string& a, const std::string& b) {
    auto stub = sh::InternalShadow::NewStub(shadow_channel_);
    for (int from = 0; from < kReports && !gateways.stopping(); from += kPerBatch) {
      // A third goes through undisturbed; then all gateways start at once and meet the kill.
      while (from >= kReports / 3 && !go && !gateways.stopping()) {
        iot::testing::PollPause();
      }
      sh::ReportPropertiesRequest request;
      for (int k = from; k < from + kPerBatch; ++k) {
        for (const std::string& device : {a, b}) {
          sh::PropertyReport* report = request.add_reports();
          report->set_message_id(fmt::format("{}-{}", device, k));
          *report->mutable_device() = Ref(device);
          report->set_services_json(json::array({{{"service_id", "meter"},
                                                  {"event_time", "20261126T120000Z"},
                                                  {"properties", {{"voltage", k}}}}})
                                        .dump());
        }
      }
      while (!gateways.stopping()) {
        gw::IngestAck ack;
        auto ctx = Context(kServiceKey);
        ++in_flight;
        const grpc::Status status = stub->ReportProperties(ctx.get(), request, &ack);
        --in_flight;
        if (status.ok()) {
          EXPECT_EQ(ack.rejected_size(), 0);
          break;
        }
        ++failed_calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the gateway's backoff
      }
      acked += 2 * kPerBatch;
    }
  };
  for (size_t i = 0; i < devices.size(); i += 2) {
    gateways.Start([&, i] { feed(devices[i], devices[i + 1]); });
  }
  constexpr int kTotal = kDevices * kReports;
  constexpr int kBeforeGate = kDevices * ((kReports / 3 + kPerBatch - 1) / kPerBatch) * kPerBatch;
  ASSERT_TRUE(WaitUntil([&] { return acked == kBeforeGate; }, seconds(60)));
  go = true;
  ASSERT_TRUE(WaitUntil([&] { return in_flight >= 2; }, seconds(10)));
  shadow_->Restart(/*kill=*/true);  // with calls in flight: some of their reports merged
  ASSERT_TRUE(shadow_->WaitServing()) << shadow_->process().Log();
  gateways.Join();
  auto series = iot::testing::ParsePrometheusText(shadow_->Metrics());
  ASSERT_TRUE(series.ok());
  std::printf(
      "[ shadow kill ] %d of %d reports acknowledged before the SIGKILL, %d calls failed and were "
      "sent again; the restarted shadow found %.0f reports merged already\n",
      kBeforeGate, kTotal, failed_calls.load(),
      iot::testing::SumSeries(*series, "iot_shadow_reports_total", {{"outcome", "duplicate"}}));
  for (const std::string& device : devices) {
    const sh::DeviceShadowData meter = Meter(device);
    EXPECT_EQ(json::parse(meter.reported().properties_json())["voltage"], kReports - 1) << device;
    EXPECT_EQ(meter.version(), kReports) << device << ": each report counted once";
  }
}

}  // namespace
}  // namespace iot
