// command-dispatch across real processes: thing-model (models, devices, API keys in Redis), two
// command-dispatch replicas on real PostgreSQL and Redis. The device-gateway is played by a gRPC
// server in this process (InternalDownlink.Publish, with online/offline per device) whose
// simulated devices answer by calling InternalCommandDispatch.CompleteRequests, on either
// replica, as a device connected to another gateway replica would.
#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <thread>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace cd = iot::command_dispatch::v1;
namespace gw = iot::device_gateway::v1;
namespace tm = iot::thing_model::v1;
using iot::testing::WaitUntil;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kSecretKey(64, 'd');
const std::string kAdminKey = "command-dispatch-admin-key-0123456789";
const std::string kServiceKey = "command-dispatch-service-key-0123456789";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// How a simulated device answers the requests it gets.
enum class Answer { kSuccess, kError, kSilent };

/// The device-gateway's downlink, played in-process: records what is published, says whether
/// the device is online, and lets the device answer (asynchronously, like a real one) through
/// the replica `respond_via` names.
class FakeGateway final : public gw::InternalDownlink::Service {
 public:
  FakeGateway() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    address_ = "127.0.0.1:" + std::to_string(port);
    responder_ = std::thread([this] { Respond(); });
  }
  ~FakeGateway() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    responder_.join();
    server_->Shutdown();
  }

  grpc::Status Publish(grpc::ServerContext* context, const gw::PublishRequest* request,
                       gw::PublishResponse* response) override {
    const auto auth = context->client_metadata().find("authorization");
    if (auth == context->client_metadata().end() ||
        std::string(auth->second.data(), auth->second.size()) != "Bearer " + kServiceKey) {
      return {grpc::StatusCode::UNAUTHENTICATED, "no service key"};
    }
    std::lock_guard lock(mu_);
    const bool online = online_[request->device_id()];
    response->set_online(online);
    if (online) {
      published_[request->device_id()].push_back(*request);
      if (request->kind() != gw::DOWNLINK_KIND_MESSAGE &&
          answers_[request->device_id()] != Answer::kSilent) {
        pending_.push_back(*request);
      }
      cv_.notify_all();
    }
    return grpc::Status::OK;
  }

  void SetOnline(const std::string& device_id, bool online) {
    std::lock_guard lock(mu_);
    online_[device_id] = online;
  }
  void SetAnswer(const std::string& device_id, Answer answer) {
    std::lock_guard lock(mu_);
    answers_[device_id] = answer;
  }
  /// The replicas the devices answer through, and which one they use.
  void SetReplicas(std::vector<std::string> addresses) {
    std::lock_guard lock(mu_);
    replicas_.clear();
    for (const auto& address : addresses) {
      replicas_.push_back(cd::InternalCommandDispatch::NewStub(
          grpc::CreateChannel(address, grpc::InsecureChannelCredentials())));
    }
  }
  void RespondVia(size_t replica) {
    std::lock_guard lock(mu_);
    respond_via_ = replica;
  }
  std::vector<gw::PublishRequest> Published(const std::string& device_id) {
    std::lock_guard lock(mu_);
    return published_[device_id];
  }
  bool WaitPublished(const std::string& device_id, size_t count,
                     milliseconds timeout = seconds(10)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return published_[device_id].size() >= count; });
  }
  [[nodiscard]] const std::string& address() const { return address_; }

  /// Sends `payload` as the device's answer to `request_id` through replica `replica`.
  grpc::Status Complete(size_t replica, const std::string& device_id, gw::DownlinkKind kind,
                        const std::string& request_id, const std::string& payload) {
    cd::CompleteRequestsRequest request;
    auto* r = request.add_responses();
    r->set_message_id("resp-" + request_id);
    r->mutable_device()->set_device_id(device_id);
    r->set_kind(kind == gw::DOWNLINK_KIND_COMMAND          ? cd::RESPONSE_KIND_COMMAND
                : kind == gw::DOWNLINK_KIND_PROPERTIES_SET ? cd::RESPONSE_KIND_PROPERTIES_SET
                                                           : cd::RESPONSE_KIND_PROPERTIES_GET);
    r->set_request_id(request_id);
    r->set_payload_json(payload);
    grpc::ClientContext context;
    common::SetBearer(context, kServiceKey);
    context.set_deadline(std::chrono::system_clock::now() + seconds(10));
    gw::IngestAck ack;
    cd::InternalCommandDispatch::Stub* stub = nullptr;
    {
      std::lock_guard lock(mu_);
      stub = replicas_.at(replica).get();
    }
    return stub->CompleteRequests(&context, request, &ack);
  }

 private:
  static std::string AnswerPayload(const gw::PublishRequest& request, Answer answer) {
    switch (request.kind()) {
      case gw::DOWNLINK_KIND_COMMAND:
        return answer == Answer::kError
                   ? R"({"result_code":1,"response_name":"reboot_response","paras":{"result":"busy"}})"
                   : R"({"result_code":0,"response_name":"reboot_response","paras":{"result":"ok"}})";
      case gw::DOWNLINK_KIND_PROPERTIES_SET:
        return answer == Answer::kError ? R"({"result_code":1,"result_desc":"refused"})"
                                        : R"({"result_code":0,"result_desc":"success"})";
      default:
        return R"({"services":[{"service_id":"meter","properties":{"voltage":231.5}}]})";
    }
  }

  void Respond() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
      if (stop_) {
        return;
      }
      const gw::PublishRequest request = pending_.front();
      pending_.pop_front();
      const Answer answer = answers_[request.device_id()];
      const size_t via = respond_via_;
      lock.unlock();
      const grpc::Status s = Complete(via, request.device_id(), request.kind(),
                                      request.request_id(), AnswerPayload(request, answer));
      EXPECT_TRUE(s.ok()) << s.error_message();
      lock.lock();
    }
  }

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::map<std::string, bool> online_;
  std::map<std::string, Answer> answers_;
  std::map<std::string, std::vector<gw::PublishRequest>> published_;
  std::deque<gw::PublishRequest> pending_;
  std::vector<std::unique_ptr<cd::InternalCommandDispatch::Stub>> replicas_;
  size_t respond_via_ = 0;
  std::thread responder_;
};

class CommandDispatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new iot::testing::TestRedis();
    thing_model_ = new iot::testing::ThingModelProcess({.redis_url = redis_->Url(),
                                                        .secret_key = kSecretKey,
                                                        .admin_key = kAdminKey,
                                                        .service_key = kServiceKey,
                                                        .pg_url = {}});
    ASSERT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    gateway_ = new FakeGateway();
    pg_url_ = new std::string(iot::testing::CreateTestDatabase());
    for (int i = 0; i < 2; ++i) {
      replicas_[i] = new iot::testing::ServiceProcess(
          {.binary = "command-dispatch",
           .env_prefix = "IOT_COMMAND_DISPATCH",
           .env = {{"IOT_PG_URL", *pg_url_},
                   {"IOT_REDIS_URL", redis_->Url()},
                   {"IOT_SERVICE_API_KEY", kServiceKey},
                   {"IOT_THING_MODEL_ADDR", thing_model_->address()},
                   {"IOT_DEVICE_GATEWAY_ADDR", gateway_->address()},
                   {"IOT_COMMAND_DISPATCH_SWEEP_INTERVAL", "200ms"},
                   {"IOT_COMMAND_DISPATCH_ASYNC_RESPONSE_TIMEOUT", "1s"},
                   {"IOT_COMMAND_DISPATCH_REPLICA_ID", fmt::format("replica-{}", i)},
                   {"IOT_LOG_LEVEL", "debug"}},
           .args = {}});
    }
    for (auto* replica : replicas_) {
      ASSERT_TRUE(replica->WaitServing()) << replica->process().Log();
    }
    gateway_->SetReplicas({replicas_[0]->address(), replicas_[1]->address()});

    auto channel = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    tm::CreateProductRequest product;
    product.set_product_json(ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    tm::Product created;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    ASSERT_TRUE(tm::Products::NewStub(channel)->CreateProduct(&ctx, product, &created).ok());
  }

  static void TearDownTestSuite() {
    for (auto*& replica : replicas_) {
      delete replica;
      replica = nullptr;
    }
    delete gateway_;
    delete thing_model_;
    delete redis_;
    delete pg_url_;
  }

  void SetUp() override {
    device_id_ = AddDevice();
    gateway_->SetOnline(device_id_, true);
    gateway_->SetAnswer(device_id_, Answer::kSuccess);
    gateway_->RespondVia(0);
  }

  static std::string AddDevice() {
    static int counter = 0;
    auto channel = grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials());
    tm::AddDeviceRequest add;
    add.set_product_id("smartmeter01");
    add.set_node_id(fmt::format("node{}", ++counter));
    tm::AddDeviceResponse added;
    grpc::ClientContext ctx;
    common::SetBearer(ctx, kAdminKey);
    const grpc::Status s = tm::Devices::NewStub(channel)->AddDevice(&ctx, add, &added);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return added.device().device_id();
  }

  static std::unique_ptr<cd::Commands::Stub> Commands(size_t replica = 0) {
    return cd::Commands::NewStub(
        grpc::CreateChannel(replicas_[replica]->address(), grpc::InsecureChannelCredentials()));
  }

  static std::unique_ptr<grpc::ClientContext> Context(const std::string& key = kAdminKey) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!key.empty()) {
      common::SetBearer(*ctx, key);
    }
    ctx->set_deadline(std::chrono::system_clock::now() + seconds(30));
    return ctx;
  }

  grpc::Status SendCommand(const std::string& command, const std::string& paras,
                           cd::CreateCommandResponse* out, int timeout = 0, size_t replica = 0,
                           const std::string& key = kAdminKey) {
    cd::CreateCommandRequest request;
    request.set_device_id(device_id_);
    request.set_service_id("meter");
    request.set_command_name(command);
    request.set_paras_json(paras);
    request.set_timeout(timeout);
    auto ctx = Context(key);
    return Commands(replica)->CreateCommand(ctx.get(), request, out);
  }

  cd::DeviceMessage SendMessage(const std::string& content, int64_t ttl_seconds = 0,
                                size_t replica = 0) {
    cd::CreateMessageRequest request;
    request.set_device_id(device_id_);
    request.set_name("note");
    request.set_message_json(content);
    request.set_ttl_seconds(ttl_seconds);
    cd::CreateMessageResponse response;
    auto ctx = Context();
    const grpc::Status s = Commands(replica)->CreateMessage(ctx.get(), request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.result();
  }

  cd::DeviceMessage ShowMessage(const std::string& message_id) {
    cd::ShowDeviceMessageRequest request;
    request.set_device_id(device_id_);
    request.set_message_id(message_id);
    cd::DeviceMessage message;
    auto ctx = Context();
    const grpc::Status s = Commands()->ShowDeviceMessage(ctx.get(), request, &message);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return message;
  }

  cd::AsyncDeviceCommand SendAsync(const std::string& strategy, int expire_time = 0,
                                   size_t replica = 0) {
    cd::CreateAsyncCommandRequest request;
    request.set_device_id(device_id_);
    request.set_service_id("meter");
    request.set_command_name("reboot");
    request.set_paras_json(R"({"delay":5})");
    request.set_send_strategy(strategy);
    request.set_expire_time(expire_time);
    cd::AsyncDeviceCommand command;
    auto ctx = Context();
    const grpc::Status s = Commands(replica)->CreateAsyncCommand(ctx.get(), request, &command);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return command;
  }

  cd::AsyncDeviceCommand ShowAsync(const std::string& command_id) {
    cd::ShowAsyncDeviceCommandRequest request;
    request.set_device_id(device_id_);
    request.set_command_id(command_id);
    cd::AsyncDeviceCommand command;
    auto ctx = Context();
    const grpc::Status s = Commands()->ShowAsyncDeviceCommand(ctx.get(), request, &command);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return command;
  }

  /// The gateway's presence report of this device connecting, to replica `replica`.
  grpc::Status Connect(size_t replica = 0, const std::string& key = kServiceKey) {
    gateway_->SetOnline(device_id_, true);
    gw::PresenceEvents events;
    auto* e = events.add_events();
    e->set_message_id("presence-" + device_id_ + std::to_string(++presence_));
    e->mutable_device()->set_device_id(device_id_);
    e->set_online(true);
    auto ctx = Context(key);
    gw::IngestAck ack;
    return cd::InternalCommandDispatch::NewStub(
               grpc::CreateChannel(replicas_[replica]->address(),
                                   grpc::InsecureChannelCredentials()))
        ->ReportPresence(ctx.get(), events, &ack);
  }

  /// A row of the requests table (status, result) straight from PostgreSQL.
  static std::pair<std::string, std::string> Row(const std::string& request_id) {
    pqxx::connection c(*pg_url_);
    pqxx::read_transaction w(c);
    auto r = w.exec_params(
        "SELECT status, coalesce(result, '') FROM command_dispatch.requests WHERE request_id = $1",
        request_id);
    return r.empty() ? std::pair<std::string, std::string>{}
                     : std::pair{r[0][0].as<std::string>(), r[0][1].as<std::string>()};
  }

  /// The call is answered as soon as the response arrives; its status is recorded before the
  /// gateway's CompleteRequests returns, a moment later.
  static bool RecordedAs(const std::string& request_id, const std::string& status) {
    return WaitUntil([&] { return Row(request_id).first == status; }, std::chrono::seconds(5));
  }

  static std::vector<std::string> PublishedIds(const std::vector<gw::PublishRequest>& published) {
    std::vector<std::string> ids;
    for (const auto& p : published) {
      if (p.kind() == gw::DOWNLINK_KIND_MESSAGE) {
        ids.push_back(json::parse(p.payload()).value("id", ""));
      } else {
        ids.push_back(p.request_id());
      }
    }
    return ids;
  }

  static inline iot::testing::TestRedis* redis_ = nullptr;
  static inline iot::testing::ThingModelProcess* thing_model_ = nullptr;
  static inline FakeGateway* gateway_ = nullptr;
  static inline std::string* pg_url_ = nullptr;
  static inline iot::testing::ServiceProcess* replicas_[2] = {nullptr, nullptr};
  std::string device_id_;
  int presence_ = 0;
};

TEST_F(CommandDispatchTest, SyncCommandReturnsTheDevicesResponse) {
  cd::CreateCommandResponse response;
  const grpc::Status s = SendCommand("reboot", R"({"delay":5})", &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(response.command_id().empty());
  const json answer = json::parse(response.response_json());
  EXPECT_EQ(answer["result_code"], 0);
  EXPECT_EQ(answer["paras"]["result"], "ok");

  const auto published = gateway_->Published(device_id_);
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(published[0].kind(), gw::DOWNLINK_KIND_COMMAND);
  EXPECT_EQ(published[0].request_id(), response.command_id());
  const json payload = json::parse(published[0].payload());
  EXPECT_EQ(payload["object_device_id"], device_id_);
  EXPECT_EQ(payload["service_id"], "meter");
  EXPECT_EQ(payload["command_name"], "reboot");
  EXPECT_EQ(payload["paras"]["delay"], 5);
  EXPECT_TRUE(RecordedAs(response.command_id(), "SUCCESSFUL")) << Row(response.command_id()).first;
}

TEST_F(CommandDispatchTest, DeviceErrorResultIsPassedThrough) {
  gateway_->SetAnswer(device_id_, Answer::kError);
  cd::CreateCommandResponse response;
  const grpc::Status s = SendCommand("reboot", "{}", &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const json answer = json::parse(response.response_json());
  EXPECT_EQ(answer["result_code"], 1);
  EXPECT_EQ(answer["paras"]["result"], "busy");
  EXPECT_TRUE(RecordedAs(response.command_id(), "FAILED")) << Row(response.command_id()).first;
}

TEST_F(CommandDispatchTest, NoResponseInTimeIsDeadlineExceededAndALateResponseIsRecorded) {
  gateway_->SetAnswer(device_id_, Answer::kSilent);
  cd::CreateCommandResponse response;
  const grpc::Status s = SendCommand("reboot", "{}", &response, 1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  const auto published = gateway_->Published(device_id_);
  ASSERT_EQ(published.size(), 1u);
  const std::string id = published[0].request_id();
  EXPECT_EQ(Row(id).first, "TIMEOUT");

  ASSERT_TRUE(gateway_
                  ->Complete(1, device_id_, gw::DOWNLINK_KIND_COMMAND, id,
                             R"({"result_code":0,"paras":{"result":"late"}})")
                  .ok());
  const auto [status, result] = Row(id);
  EXPECT_EQ(status, "TIMEOUT") << "a late response does not change the outcome";
  EXPECT_NE(result.find("late"), std::string::npos) << "but it is recorded";
}

TEST_F(CommandDispatchTest, ARedeliveredResponseChangesNothingAndAMalformedOneIsRejectedAlone) {
  cd::CreateCommandResponse response;
  ASSERT_TRUE(SendCommand("reboot", "{}", &response).ok());
  const std::string id = response.command_id();
  ASSERT_TRUE(RecordedAs(id, "SUCCESSFUL"));
  const auto history = [&] {
    pqxx::connection c(*pg_url_);
    pqxx::read_transaction w(c);
    return w
        .exec_params(
            "SELECT count(*) FROM command_dispatch.status_history WHERE "
            "request_id = $1",
            id)[0][0]
        .as<int>();
  };
  const int entries = history();
  const auto [status, result] = Row(id);

  // The broker redelivers the device's answer (same message id) through both replicas, next
  // to an answer without request id, in one batch each.
  for (size_t replica : {0u, 1u}) {
    cd::CompleteRequestsRequest request;
    auto* bad = request.add_responses();
    bad->set_message_id("resp-bad");
    bad->mutable_device()->set_device_id(device_id_);
    bad->set_kind(cd::RESPONSE_KIND_COMMAND);
    bad->set_payload_json("{}");
    auto* again = request.add_responses();
    again->set_message_id("resp-" + id);
    again->mutable_device()->set_device_id(device_id_);
    again->set_kind(cd::RESPONSE_KIND_COMMAND);
    again->set_request_id(id);
    again->set_payload_json(R"({"result_code":1,"paras":{"result":"redelivered"}})");
    auto ctx = Context(kServiceKey);
    gw::IngestAck ack;
    const grpc::Status s =
        cd::InternalCommandDispatch::NewStub(
            grpc::CreateChannel(replicas_[replica]->address(), grpc::InsecureChannelCredentials()))
            ->CompleteRequests(ctx.get(), request, &ack);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(ack.rejected_size(), 1) << ack.DebugString();
    EXPECT_EQ(ack.rejected(0).message_id(), "resp-bad");
    EXPECT_EQ(ack.rejected(0).device_id(), device_id_);
    EXPECT_EQ(ack.rejected(0).reason(), "malformed");
    EXPECT_EQ(ack.rejected(0).detail(), "responses[0].request_id: is required");
  }
  EXPECT_EQ(Row(id), (std::pair{status, result})) << "the first answer stays";
  EXPECT_EQ(history(), entries) << "no status recorded twice";
  EXPECT_NE(replicas_[0]->Metrics().find(
                R"(iot_command_dispatch_rejected_records_total{reason="malformed"} 1)"),
            std::string::npos);
}

TEST_F(CommandDispatchTest, OfflineDeviceFailsAtOnce) {
  gateway_->SetOnline(device_id_, false);
  cd::CreateCommandResponse response;
  const grpc::Status s = SendCommand("reboot", "{}", &response, 30);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("offline"), std::string::npos) << s.error_message();
}

TEST_F(CommandDispatchTest, InvalidRequestsAreRejectedNamingTheField) {
  struct Case {
    std::string command;
    std::string paras;
    int timeout;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"explode", "{}", 0, "command_name"},                                  // unknown command
      {"reboot", R"({"delay":100})", 0, "paras.delay"},                      // above max
      {"reboot", R"({"delay":"soon"})", 0, "paras.delay"},                   // wrong type
      {"reboot", R"({"force":true})", 0, "paras.force"},                     // unknown para
      {"set_tariff", R"({"tariff":"peak"})", 0, "paras.price"},              // missing required
      {"set_tariff", R"({"tariff":"night","price":1})", 0, "paras.tariff"},  // not in enum
      {"reboot", R"({"delay":)", 0, "paras"},                                // not JSON
      {"reboot", R"([1,2])", 0, "paras"},                                    // not an object
      {"reboot", "{}", 61, "timeout"},                                       // beyond 60 s
      {"reboot", "{}", -1, "timeout"},
  };
  for (const Case& c : cases) {
    cd::CreateCommandResponse response;
    const grpc::Status s = SendCommand(c.command, c.paras, &response, c.timeout);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.paras;
    EXPECT_TRUE(s.error_message().starts_with(c.field)) << c.field << " / " << s.error_message();
  }
  EXPECT_TRUE(gateway_->Published(device_id_).empty()) << "nothing invalid reaches the device";

  const std::string mine = device_id_;
  device_id_ = "no-such-device";
  cd::CreateCommandResponse response;
  EXPECT_EQ(SendCommand("reboot", "{}", &response).error_code(), grpc::StatusCode::NOT_FOUND);
  device_id_ = "";
  EXPECT_EQ(SendCommand("reboot", "{}", &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  device_id_ = mine;
}

TEST_F(CommandDispatchTest, PropertySetAndGet) {
  cd::UpdatePropertiesRequest set;
  set.set_device_id(device_id_);
  set.set_services_json(
      R"({"services":[{"service_id":"meter","properties":{"relay_state":"OFF","report_interval":60}}]})");
  cd::UpdatePropertiesResponse set_response;
  auto ctx = Context();
  grpc::Status s = Commands()->UpdateProperties(ctx.get(), set, &set_response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(json::parse(set_response.response_json())["result_desc"], "success");
  auto published = gateway_->Published(device_id_);
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(published[0].kind(), gw::DOWNLINK_KIND_PROPERTIES_SET);
  const json payload = json::parse(published[0].payload());
  EXPECT_EQ(payload["object_device_id"], device_id_);
  EXPECT_EQ(payload["services"][0]["properties"]["relay_state"], "OFF");

  // Read-only, unknown and out-of-range properties, a bad shape.
  for (const auto& [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"services":[{"service_id":"meter","properties":{"voltage":230}}]})",
            "services[0].properties.voltage"},
           {R"({"services":[{"service_id":"meter","properties":{"colour":"red"}}]})",
            "services[0].properties.colour"},
           {R"({"services":[{"service_id":"meter","properties":{"report_interval":0}}]})",
            "services[0].properties.report_interval"},
           {R"({"services":[]})", "services"},
           {R"({"services":[{"service_id":"meter"}]})", "services[0].properties"}}) {
    set.set_services_json(body);
    auto c = Context();
    s = Commands()->UpdateProperties(c.get(), set, &set_response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << body;
    EXPECT_TRUE(s.error_message().starts_with(field)) << field << " / " << s.error_message();
  }

  cd::ListPropertiesRequest get;
  get.set_device_id(device_id_);
  get.set_service_id("meter");
  cd::ListPropertiesResponse got;
  auto ctx2 = Context();
  s = Commands()->ListProperties(ctx2.get(), get, &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(json::parse(got.response_json())["services"][0]["properties"]["voltage"], 231.5);
  published = gateway_->Published(device_id_);
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[1].kind(), gw::DOWNLINK_KIND_PROPERTIES_GET);
  EXPECT_EQ(json::parse(published[1].payload())["service_id"], "meter");

  get.set_service_id("gps");
  auto ctx3 = Context();
  EXPECT_EQ(Commands()->ListProperties(ctx3.get(), get, &got).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(CommandDispatchTest, MessageToAnOnlineDeviceIsDeliveredAtOnce) {
  const cd::DeviceMessage message = SendMessage(R"({"text":"hello"})");
  EXPECT_EQ(message.status(), "DELIVERED");
  auto published = gateway_->Published(device_id_);
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(published[0].kind(), gw::DOWNLINK_KIND_MESSAGE);
  const json payload = json::parse(published[0].payload());
  EXPECT_EQ(payload["id"], message.message_id());
  EXPECT_EQ(payload["name"], "note");
  EXPECT_EQ(payload["content"]["text"], "hello");

  // Raw bytes on a custom topic.
  cd::CreateMessageRequest raw;
  raw.set_device_id(device_id_);
  raw.set_message_id("raw-1");
  raw.set_payload_format("raw");
  raw.set_raw_message(std::string("\x01\x02\x00\xff", 4));
  raw.set_topic("firmware/chunk");
  cd::CreateMessageResponse created;
  auto ctx = Context();
  ASSERT_TRUE(Commands()->CreateMessage(ctx.get(), raw, &created).ok());
  EXPECT_EQ(created.message_id(), "raw-1");
  published = gateway_->Published(device_id_);
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[1].payload(), std::string("\x01\x02\x00\xff", 4));
  EXPECT_EQ(published[1].user_topic(), "firmware/chunk");
  auto ctx2 = Context();
  EXPECT_EQ(Commands()->CreateMessage(ctx2.get(), raw, &created).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  for (const auto& [field, mutate] :
       std::vector<std::pair<std::string, std::function<void(cd::CreateMessageRequest&)>>>{
           {"message", [](auto& r) { r.set_message_json("{not json"); }},
           {"topic", [](auto& r) { r.set_topic("a/#"); }},
           {"payload_format", [](auto& r) { r.set_payload_format("xml"); }},
           {"message_id", [](auto& r) { r.set_message_id("has space"); }},
           {"ttl", [](auto& r) { r.set_ttl(-5); }}}) {
    cd::CreateMessageRequest bad;
    bad.set_device_id(device_id_);
    bad.set_message_json("{}");
    mutate(bad);
    auto c = Context();
    const grpc::Status s = Commands()->CreateMessage(c.get(), bad, &created);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_TRUE(s.error_message().starts_with(field)) << field << " / " << s.error_message();
  }
}

TEST_F(CommandDispatchTest, MessagesWaitForAnOfflineDeviceAndGoOutInOrderOnConnect) {
  gateway_->SetOnline(device_id_, false);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    const auto message =
        SendMessage(fmt::format(R"({{"n":{}}})", i), 0, static_cast<size_t>(i % 2));
    EXPECT_EQ(message.status(), "PENDING");
    ids.push_back(message.message_id());
  }
  cd::ListDeviceMessagesRequest list;
  list.set_device_id(device_id_);
  list.set_status("PENDING");
  cd::ListDeviceMessagesResponse pending;
  auto ctx = Context();
  ASSERT_TRUE(Commands()->ListDeviceMessages(ctx.get(), list, &pending).ok());
  EXPECT_EQ(pending.messages_size(), 3);
  EXPECT_TRUE(gateway_->Published(device_id_).empty());

  ASSERT_TRUE(Connect().ok());
  EXPECT_EQ(PublishedIds(gateway_->Published(device_id_)), ids);
  for (const auto& id : ids) {
    const auto shown = ShowMessage(id);
    EXPECT_EQ(shown.status(), "DELIVERED");
    EXPECT_FALSE(shown.finished_time().empty());
    ASSERT_EQ(shown.history_size(), 2);
    EXPECT_EQ(shown.history(0).status(), "PENDING");
    EXPECT_EQ(shown.history(1).status(), "DELIVERED");
  }
  // The same connect reported again (every gateway replica reports it): nothing goes twice.
  ASSERT_TRUE(Connect(1).ok());
  EXPECT_EQ(gateway_->Published(device_id_).size(), 3u);
}

TEST_F(CommandDispatchTest, PendingMessagePastItsTtlTimesOutAndIsNeverSent) {
  gateway_->SetOnline(device_id_, false);
  const auto message = SendMessage(R"({"n":1})", 1);
  EXPECT_EQ(message.status(), "PENDING");
  EXPECT_TRUE(WaitUntil([&] { return ShowMessage(message.message_id()).status() == "TIMEOUT"; },
                        seconds(10)));
  ASSERT_TRUE(Connect().ok());
  EXPECT_TRUE(gateway_->Published(device_id_).empty());
}

TEST_F(CommandDispatchTest, AsyncCommandsDelayedUntilConnectImmediateFailWhenOffline) {
  gateway_->SetOnline(device_id_, false);
  const auto delayed = SendAsync("delay");
  EXPECT_EQ(delayed.status(), "PENDING");
  EXPECT_EQ(delayed.send_strategy(), "delay");
  EXPECT_EQ(delayed.expire_time(), 86400);
  const auto immediate = SendAsync("immediately");
  EXPECT_EQ(immediate.status(), "FAILED");
  EXPECT_NE(immediate.error().find("offline"), std::string::npos) << immediate.error();
  const auto expiring = SendAsync("delay", 1);
  EXPECT_TRUE(WaitUntil([&] { return ShowAsync(expiring.command_id()).status() == "EXPIRED"; },
                        seconds(10)));

  ASSERT_TRUE(Connect().ok());
  EXPECT_EQ(PublishedIds(gateway_->Published(device_id_)),
            std::vector<std::string>{delayed.command_id()});
  ASSERT_TRUE(WaitUntil([&] { return ShowAsync(delayed.command_id()).status() == "SUCCESSFUL"; },
                        seconds(10)));
  const auto done = ShowAsync(delayed.command_id());
  EXPECT_EQ(json::parse(done.result_json())["paras"]["result"], "ok");
  for (const std::string& t :
       {done.created_time(), done.sent_time(), done.delivered_time(), done.response_time()}) {
    EXPECT_FALSE(t.empty());
  }
  std::vector<std::string> history;
  for (const auto& h : done.history()) {
    history.push_back(h.status());
  }
  EXPECT_EQ(history, (std::vector<std::string>{"PENDING", "SENT", "DELIVERED", "SUCCESSFUL"}));

  // An async command nobody answers times out; lists page by marker and filter by status.
  gateway_->SetAnswer(device_id_, Answer::kSilent);
  const auto unanswered = SendAsync("immediately");
  EXPECT_EQ(unanswered.status(), "DELIVERED");
  EXPECT_TRUE(WaitUntil([&] { return ShowAsync(unanswered.command_id()).status() == "TIMEOUT"; },
                        seconds(15)));
  cd::ListAsyncDeviceCommandsRequest list;
  list.set_device_id(device_id_);
  list.set_limit(2);
  std::vector<std::string> all;
  while (true) {
    cd::ListAsyncDeviceCommandsResponse page;
    auto ctx = Context();
    ASSERT_TRUE(Commands()->ListAsyncDeviceCommands(ctx.get(), list, &page).ok());
    for (const auto& c : page.commands()) {
      all.push_back(c.command_id());
    }
    if (page.next_marker().empty()) {
      break;
    }
    list.set_marker(page.next_marker());
  }
  EXPECT_EQ(all, (std::vector<std::string>{delayed.command_id(), immediate.command_id(),
                                           expiring.command_id(), unanswered.command_id()}));
  list.clear_marker();
  list.set_status("EXPIRED");
  cd::ListAsyncDeviceCommandsResponse expired;
  auto ctx = Context();
  ASSERT_TRUE(Commands()->ListAsyncDeviceCommands(ctx.get(), list, &expired).ok());
  ASSERT_EQ(expired.commands_size(), 1);
  EXPECT_EQ(expired.commands(0).command_id(), expiring.command_id());
  list.set_status("DONE");
  auto ctx2 = Context();
  EXPECT_EQ(Commands()->ListAsyncDeviceCommands(ctx2.get(), list, &expired).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(CommandDispatchTest, ResponseHandledByTheOtherReplicaReachesTheWaitingCall) {
  gateway_->RespondVia(1);  // the device's gateway talks to replica 1; the call waits on 0
  for (int i = 0; i < 3; ++i) {
    cd::CreateCommandResponse response;
    const grpc::Status s = SendCommand("reboot", "{}", &response, 10, 0);
    ASSERT_TRUE(s.ok()) << s.error_message() << replicas_[0]->process().Log();
    EXPECT_EQ(json::parse(response.response_json())["paras"]["result"], "ok");
  }
  EXPECT_NE(
      replicas_[1]->Metrics().find(R"(iot_command_dispatch_responses_total{route="forwarded"})"),
      std::string::npos);
}

TEST_F(CommandDispatchTest, QueuedWorkSurvivesARestartAndIsDeliveredOnce) {
  gateway_->SetOnline(device_id_, false);
  std::vector<std::string> ids = {SendMessage(R"({"n":1})").message_id(),
                                  SendAsync("delay").command_id(),
                                  SendMessage(R"({"n":2})", 0, 1).message_id()};
  replicas_[0]->Restart(/*kill=*/true);
  replicas_[1]->Restart(/*kill=*/false);
  ASSERT_TRUE(replicas_[0]->WaitServing()) << replicas_[0]->process().Log();
  ASSERT_TRUE(replicas_[1]->WaitServing()) << replicas_[1]->process().Log();

  // Two gateways report the same connect to both replicas at once.
  auto other = std::async(std::launch::async, [&] { return Connect(1); });
  EXPECT_TRUE(Connect(0).ok());
  EXPECT_TRUE(other.get().ok());
  EXPECT_EQ(PublishedIds(gateway_->Published(device_id_)), ids);
  ASSERT_TRUE(Connect(0).ok());
  EXPECT_EQ(gateway_->Published(device_id_).size(), 3u) << "delivered once";
  EXPECT_EQ(ShowMessage(ids[2]).status(), "DELIVERED");
}

TEST_F(CommandDispatchTest, TenantsAreIsolatedAndReadersCannotSend) {
  auto tenants = tm::Tenants::NewStub(
      grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials()));
  tm::CreateTenantRequest tenant;
  tenant.set_tenant_id("other-" + device_id_.substr(device_id_.size() - 6));
  tenant.set_name("Other");
  tenant.set_create_admin_key(true);
  tm::CreateTenantResponse other;
  auto ctx = Context();
  const grpc::Status created_tenant = tenants->CreateTenant(ctx.get(), tenant, &other);
  ASSERT_TRUE(created_tenant.ok()) << created_tenant.error_message();
  tm::CreateApiKeyRequest key;
  key.set_name("reader");
  key.set_role(tm::ROLE_READER);
  tm::CreateApiKeyResponse reader;
  auto ctx2 = Context();
  ASSERT_TRUE(tenants->CreateApiKey(ctx2.get(), key, &reader).ok());
  const auto message = SendMessage(R"({"n":1})");

  // Keys reach command-dispatch through the Redis projection; wait for it.
  cd::CreateCommandResponse response;
  ASSERT_TRUE(WaitUntil(
      [&] {
        return SendCommand("reboot", "{}", &response, 0, 0, other.admin_key_secret())
                   .error_code() != grpc::StatusCode::UNAUTHENTICATED;
      },
      seconds(10)));
  EXPECT_EQ(SendCommand("reboot", "{}", &response, 0, 0, other.admin_key_secret()).error_code(),
            grpc::StatusCode::NOT_FOUND);
  cd::ShowDeviceMessageRequest show;
  show.set_device_id(device_id_);
  show.set_message_id(message.message_id());
  cd::DeviceMessage shown;
  auto ctx3 = Context(other.admin_key_secret());
  EXPECT_EQ(Commands()->ShowDeviceMessage(ctx3.get(), show, &shown).error_code(),
            grpc::StatusCode::NOT_FOUND);
  cd::ListDeviceMessagesRequest list;
  list.set_device_id(device_id_);
  cd::ListDeviceMessagesResponse listed;
  auto ctx4 = Context(other.admin_key_secret());
  ASSERT_TRUE(Commands()->ListDeviceMessages(ctx4.get(), list, &listed).ok());
  EXPECT_EQ(listed.messages_size(), 0);

  EXPECT_EQ(SendCommand("reboot", "{}", &response, 0, 0, reader.secret()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  cd::CreateMessageRequest create;
  create.set_device_id(device_id_);
  create.set_message_json("{}");
  cd::CreateMessageResponse created;
  auto ctx5 = Context(reader.secret());
  EXPECT_EQ(Commands()->CreateMessage(ctx5.get(), create, &created).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  auto ctx6 = Context(reader.secret());
  ASSERT_TRUE(Commands()->ListDeviceMessages(ctx6.get(), list, &listed).ok());
  EXPECT_EQ(listed.messages_size(), 1) << "readers read";
  EXPECT_EQ(SendCommand("reboot", "{}", &response, 0, 0, "").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The internal API takes the service credential only.
  EXPECT_EQ(Connect(0, kAdminKey).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(gateway_->Published(device_id_).size(), 1u) << "only the admin's message was sent";
}

TEST_F(CommandDispatchTest, IotctlCommandGroup) {
  iot::testing::TempDir dir;
  int run = 0;
  auto iotctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {iot::testing::ExecutablePath("iotctl").string(),
                                     "--api-key",
                                     kAdminKey,
                                     "command",
                                     "--commands-addr",
                                     replicas_[0]->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto log = dir.path() / fmt::format("iotctl-{}.log", ++run);
    const int code = iot::testing::RunCommand(argv, log);
    return std::pair{code, ReadFile(log.string())};
  };
  auto [code, out] = iotctl(
      {"send", device_id_, "--service", "meter", "--name", "reboot", "--paras", R"({"delay":1})"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(R"("result": "ok")"), std::string::npos) << out;

  std::tie(code, out) = iotctl(
      {"send", device_id_, "--service", "meter", "--name", "reboot", "--paras", R"({"delay":99})"});
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("paras.delay"), std::string::npos) << out;

  std::tie(code, out) = iotctl({"set-properties", device_id_, "--service", "meter", "--set",
                                "relay_state=OFF", "--set", "report_interval=30"});
  EXPECT_EQ(code, 0) << out;
  const auto published = gateway_->Published(device_id_);
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(json::parse(published[1].payload())["services"][0]["properties"]["report_interval"],
            30);

  gateway_->SetOnline(device_id_, false);
  std::tie(code, out) = iotctl({"message", device_id_, "--id", "cli-1", "--content", R"({"a":1})"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("PENDING"), std::string::npos) << out;
  std::tie(code, out) = iotctl({"list", device_id_, "--messages", "--status", "PENDING"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("cli-1"), std::string::npos) << out;
  std::tie(code, out) = iotctl(
      {"async", device_id_, "--service", "meter", "--name", "reboot", "--strategy", "delay"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("PENDING"), std::string::npos) << out;
}

}  // namespace
}  // namespace iot
