// Tenant isolation sweep (issue #15, item 9), against the five real services. Every RPC the
// services serve is found at run time: each server is asked through gRPC reflection which
// services it serves, and their methods come from the proto descriptors. Then:
// - every method of a public service is called with tenant B's admin key on tenant A's objects
//   and must answer NOT_FOUND (PERMISSION_DENIED for what B's role may not do; OK only where the
//   call names none of A's objects), and no answer may contain anything of A's;
// - every method of an internal service (`Internal*`) must refuse a tenant key
//   (PERMISSION_DENIED or UNAUTHENTICATED);
// - afterwards every object of A is unchanged.
// A public method without an entry in the table below fails the test: a new RPC cannot be left
// out of the sweep.
#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "iot/command_dispatch/v1/command_dispatch.grpc.pb.h"
#include "iot/common/auth.h"
#include "iot/device_gateway/v1/device_gateway.grpc.pb.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/shadow/v1/shadow.grpc.pb.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot {
namespace {

namespace cd = iot::command_dispatch::v1;
namespace rf = iot::rule_forwarding::v1;
namespace sh = iot::shadow::v1;
namespace tm = iot::thing_model::v1;
using google::protobuf::Message;
using std::chrono::seconds;

const std::string kSecretKey(64, '7');
const std::string kRootKey = "isolation-root-admin-key-0123456789";
const std::string kServiceKey = "isolation-service-key-0123456789";
const std::string kGatewayPassword = "isolation-gateway-mqtt";
const std::string kRulesPassword = "isolation-rules-mqtt";

struct ServiceCase {
  std::string binary;
  std::string prefix;
  std::string package;  ///< proto package it serves
};
const std::vector<ServiceCase> kServices = {
    {"thing-model", "IOT_THING_MODEL", "iot.thing_model.v1"},
    {"shadow", "IOT_SHADOW", "iot.shadow.v1"},
    {"command-dispatch", "IOT_COMMAND_DISPATCH", "iot.command_dispatch.v1"},
    {"rule-forwarding", "IOT_RULE_FORWARDING", "iot.rule_forwarding.v1"},
    {"device-gateway", "IOT_DEVICE_GATEWAY", "iot.device_gateway.v1"},
};

/// What a call must answer: one of `codes`. A call answering OK must not leak (checked for
/// every call, whatever its code).
struct Expect {
  std::set<grpc::StatusCode> codes;
};

Expect NotFound() { return {{grpc::StatusCode::NOT_FOUND}}; }
Expect Denied() { return {{grpc::StatusCode::PERMISSION_DENIED}}; }
/// The call names none of A's objects (it lists or creates B's own): it may succeed.
Expect OwnScope() { return {{grpc::StatusCode::OK}}; }

/// The objects of tenant A that B tries to reach.
struct TenantA {
  std::string key;  ///< A's admin key
  std::string key_id;
  std::string product_id = "isoalpha";
  std::string device_id;
  std::string rule_id;
  std::string group = "alpha-readings";
  std::string command_id;
  std::string message_id = "alpha-msg-1";
  std::string product_json;
};

/// Serialized request and the expectation for one public RPC.
using Case = std::function<std::pair<std::string, Expect>(const TenantA&)>;

template <typename Request>
std::pair<std::string, Expect> Call(const Request& request, Expect expect) {
  return {request.SerializeAsString(), std::move(expect)};
}

std::map<std::string, Case> TenantAndProductCases() {
  return {
      // ---- thing-model: Tenants
      {"iot.thing_model.v1.Tenants/CreateTenant",
       [](const TenantA&) {
         tm::CreateTenantRequest r;
         r.set_tenant_id("beta-made");
         r.set_create_admin_key(true);
         return Call(r, Denied());  // only the root tenant creates tenants
       }},
      {"iot.thing_model.v1.Tenants/CreateApiKey",
       [](const TenantA&) {
         tm::CreateApiKeyRequest r;
         r.set_name("beta-own");
         r.set_role(tm::ROLE_READER);
         return Call(r, OwnScope());  // a key of B's own tenant
       }},
      {"iot.thing_model.v1.Tenants/RevokeApiKey",
       [](const TenantA& a) {
         tm::RevokeApiKeyRequest r;
         r.set_key_id(a.key_id);
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Tenants/ListApiKeys",
       [](const TenantA&) {
         tm::ListApiKeysRequest r;
         r.set_include_revoked(true);
         return Call(r, OwnScope());
       }},
      // ---- thing-model: Products
      {"iot.thing_model.v1.Products/CreateProduct",
       [](const TenantA& a) {
         // Product ids are one namespace (device ids derive from them and MQTT client ids are
         // global): B learns that the id is taken, nothing else.
         tm::CreateProductRequest r;
         r.set_product_json(a.product_json);
         return Call(r, Expect{{grpc::StatusCode::ALREADY_EXISTS}});
       }},
      {"iot.thing_model.v1.Products/ShowProduct",
       [](const TenantA& a) {
         tm::ShowProductRequest r;
         r.set_product_id(a.product_id);
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Products/UpdateProduct",
       [](const TenantA& a) {
         tm::UpdateProductRequest r;
         r.set_product_id(a.product_id);
         r.set_product_json(a.product_json);
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Products/DeleteProduct",
       [](const TenantA& a) {
         tm::DeleteProductRequest r;
         r.set_product_id(a.product_id);
         r.set_force(true);
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Products/ListProducts",
       [](const TenantA&) { return Call(tm::ListProductsRequest(), OwnScope()); }},
      {"iot.thing_model.v1.Products/ListProductModelVersions",
       [](const TenantA& a) {
         tm::ListProductModelVersionsRequest r;
         r.set_product_id(a.product_id);
         return Call(r, NotFound());
       }},
  };
}

std::map<std::string, Case> DeviceCases() {
  return {
      // ---- thing-model: Devices
      {"iot.thing_model.v1.Devices/AddDevice",
       [](const TenantA& a) {
         tm::AddDeviceRequest r;
         r.set_product_id(a.product_id);
         r.set_node_id("beta-node");
         return Call(r, NotFound());  // A's product is not B's
       }},
      {"iot.thing_model.v1.Devices/ShowDevice",
       [](const TenantA& a) {
         tm::ShowDeviceRequest r;
         r.set_device_id(a.device_id);
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Devices/UpdateDevice",
       [](const TenantA& a) {
         tm::UpdateDeviceRequest r;
         r.set_device_id(a.device_id);
         r.set_device_name("stolen");
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Devices/DeleteDevice",
       [](const TenantA& a) {
         tm::DeleteDeviceRequest r;
         r.set_device_id(a.device_id);
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Devices/ListDevices",
       [](const TenantA& a) {
         tm::ListDevicesRequest r;
         r.set_product_id(a.product_id);
         return Call(r, Expect{{grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND}});
       }},
      {"iot.thing_model.v1.Devices/ResetDeviceSecret",
       [](const TenantA& a) {
         tm::ResetDeviceSecretRequest r;
         r.set_device_id(a.device_id);
         r.set_secret("beta-chosen-secret");
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Devices/FreezeDevice",
       [](const TenantA& a) {
         tm::FreezeDeviceRequest r;
         r.set_device_id(a.device_id);
         return Call(r, NotFound());
       }},
      {"iot.thing_model.v1.Devices/UnfreezeDevice",
       [](const TenantA& a) {
         tm::UnfreezeDeviceRequest r;
         r.set_device_id(a.device_id);
         return Call(r, NotFound());
       }},
  };
}

std::map<std::string, Case> ShadowCases() {
  return {
      // ---- shadow
      {"iot.shadow.v1.Shadows/ShowDeviceShadow",
       [](const TenantA& a) {
         sh::ShowDeviceShadowRequest r;
         r.set_device_id(a.device_id);
         return Call(r, NotFound());
       }},
      {"iot.shadow.v1.Shadows/UpdateDeviceShadowDesiredData",
       [](const TenantA& a) {
         sh::UpdateDeviceShadowDesiredDataRequest r;
         r.set_device_id(a.device_id);
         auto* s = r.add_shadow();
         s->set_service_id("meter");
         s->set_desired_json(R"({"relay_state":"OFF"})");
         return Call(r, NotFound());
       }},
  };
}

std::map<std::string, Case> CommandCases() {
  return {
      // ---- command-dispatch
      {"iot.command_dispatch.v1.Commands/CreateCommand",
       [](const TenantA& a) {
         cd::CreateCommandRequest r;
         r.set_device_id(a.device_id);
         r.set_service_id("meter");
         r.set_command_name("reboot");
         r.set_paras_json(R"({"delay":1})");
         return Call(r, NotFound());
       }},
      {"iot.command_dispatch.v1.Commands/CreateAsyncCommand",
       [](const TenantA& a) {
         cd::CreateAsyncCommandRequest r;
         r.set_device_id(a.device_id);
         r.set_service_id("meter");
         r.set_command_name("reboot");
         r.set_paras_json(R"({"delay":1})");
         return Call(r, NotFound());
       }},
      {"iot.command_dispatch.v1.Commands/ShowAsyncDeviceCommand",
       [](const TenantA& a) {
         cd::ShowAsyncDeviceCommandRequest r;
         r.set_device_id(a.device_id);
         r.set_command_id(a.command_id);
         return Call(r, NotFound());
       }},
      {"iot.command_dispatch.v1.Commands/ListAsyncDeviceCommands",
       [](const TenantA& a) {
         cd::ListAsyncDeviceCommandsRequest r;
         r.set_device_id(a.device_id);
         return Call(r, Expect{{grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND}});
       }},
      {"iot.command_dispatch.v1.Commands/UpdateProperties",
       [](const TenantA& a) {
         cd::UpdatePropertiesRequest r;
         r.set_device_id(a.device_id);
         r.set_services_json(R"([{"service_id":"meter","properties":{"relay_state":"OFF"}}])");
         return Call(r, NotFound());
       }},
      {"iot.command_dispatch.v1.Commands/ListProperties",
       [](const TenantA& a) {
         cd::ListPropertiesRequest r;
         r.set_device_id(a.device_id);
         return Call(r, NotFound());
       }},
      {"iot.command_dispatch.v1.Commands/CreateMessage",
       [](const TenantA& a) {
         cd::CreateMessageRequest r;
         r.set_device_id(a.device_id);
         r.set_message_json(R"({"hello":"from beta"})");
         return Call(r, NotFound());
       }},
      {"iot.command_dispatch.v1.Commands/ShowDeviceMessage",
       [](const TenantA& a) {
         cd::ShowDeviceMessageRequest r;
         r.set_device_id(a.device_id);
         r.set_message_id(a.message_id);
         return Call(r, NotFound());
       }},
      {"iot.command_dispatch.v1.Commands/ListDeviceMessages",
       [](const TenantA& a) {
         cd::ListDeviceMessagesRequest r;
         r.set_device_id(a.device_id);
         return Call(r, Expect{{grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND}});
       }},
  };
}

std::map<std::string, Case> RuleCases() {
  return {
      // ---- rule-forwarding: Rules
      {"iot.rule_forwarding.v1.Rules/CreateRule",
       [](const TenantA& a) {
         // A rule of B's scoped to A's device: it only ever sees B's records.
         rf::CreateRuleRequest r;
         r.set_name("beta-watch");
         r.set_resource("device.property");
         r.set_device_id(a.device_id);
         r.set_sql("SELECT *");
         auto* action = r.add_actions();
         action->set_type("consumer_group");
         action->set_config_json(nlohmann::json{{"group", "beta-own"}}.dump());
         return Call(r, Expect{{grpc::StatusCode::OK, grpc::StatusCode::INVALID_ARGUMENT}});
       }},
      {"iot.rule_forwarding.v1.Rules/ShowRule",
       [](const TenantA& a) {
         rf::ShowRuleRequest r;
         r.set_rule_id(a.rule_id);
         return Call(r, NotFound());
       }},
      {"iot.rule_forwarding.v1.Rules/UpdateRule",
       [](const TenantA& a) {
         rf::UpdateRuleRequest r;
         r.set_rule_id(a.rule_id);
         r.set_name("stolen");
         r.set_resource("device.property");
         r.set_sql("SELECT *");
         auto* action = r.add_actions();
         action->set_type("republish");
         action->set_config_json(R"({"topic":"beta/out"})");
         return Call(r, NotFound());
       }},
      {"iot.rule_forwarding.v1.Rules/DeleteRule",
       [](const TenantA& a) {
         rf::DeleteRuleRequest r;
         r.set_rule_id(a.rule_id);
         return Call(r, NotFound());
       }},
      {"iot.rule_forwarding.v1.Rules/ListRules",
       [](const TenantA&) { return Call(rf::ListRulesRequest(), OwnScope()); }},
      {"iot.rule_forwarding.v1.Rules/ChangeRuleStatus",
       [](const TenantA& a) {
         rf::ChangeRuleStatusRequest r;
         r.set_rule_id(a.rule_id);
         r.set_status("inactive");
         return Call(r, NotFound());
       }},
      {"iot.rule_forwarding.v1.Rules/ListDeadLetters",
       [](const TenantA& a) {
         rf::ListDeadLettersRequest r;
         r.set_rule_id(a.rule_id);
         return Call(r, OwnScope());  // a filter: B has no dead letters of that rule
       }},
  };
}

std::map<std::string, Case> SubscriptionAndHistoryCases() {
  return {
      // ---- rule-forwarding: Subscriptions
      {"iot.rule_forwarding.v1.Subscriptions/CreateConsumerGroup",
       [](const TenantA&) {
         rf::CreateConsumerGroupRequest r;
         r.mutable_group()->set_group_name("beta-own");
         return Call(r, OwnScope());  // group names are per tenant
       }},
      {"iot.rule_forwarding.v1.Subscriptions/DeleteConsumerGroup",
       [](const TenantA& a) {
         rf::DeleteConsumerGroupRequest r;
         r.set_group_name(a.group);
         return Call(r, NotFound());
       }},
      {"iot.rule_forwarding.v1.Subscriptions/ListConsumerGroups",
       [](const TenantA&) { return Call(rf::ListConsumerGroupsRequest(), OwnScope()); }},
      {"iot.rule_forwarding.v1.Subscriptions/Subscribe",
       [](const TenantA& a) {
         rf::SubscribeRequest r;
         r.mutable_start()->set_group_name(a.group);
         r.mutable_start()->set_consumer_name("beta");
         // As for a group that exists nowhere: INVALID_ARGUMENT naming group_name.
         return Call(r, Expect{{grpc::StatusCode::NOT_FOUND, grpc::StatusCode::INVALID_ARGUMENT}});
       }},
      // ---- rule-forwarding: History
      {"iot.rule_forwarding.v1.History/ListPropertyHistory",
       [](const TenantA& a) {
         rf::ListPropertyHistoryRequest r;
         r.set_device_id(a.device_id);
         r.set_service_id("meter");
         r.set_property("voltage");
         return Call(r, Expect{{grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND}});
       }},
  };
}

/// Every public RPC: how B calls it on A's objects. A method missing here fails the sweep.
const std::map<std::string, Case>& Cases() {
  static const std::map<std::string, Case> kCases = [] {
    std::map<std::string, Case> all = TenantAndProductCases();
    all.merge(DeviceCases());
    all.merge(ShadowCases());
    all.merge(CommandCases());
    all.merge(RuleCases());
    all.merge(SubscriptionAndHistoryCases());
    return all;
  }();
  return kCases;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      out.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return out;
}

struct Answer {
  grpc::Status status;
  std::string response;  ///< every response message, concatenated
};

/// Calls `method` (`/package.Service/Method`) with serialized `request` as `key`.
Answer Invoke(const std::shared_ptr<grpc::Channel>& channel,
              const google::protobuf::MethodDescriptor& method, const std::string& request,
              const std::string& key) {
  const std::string path = fmt::format("/{}/{}", method.service()->full_name(), method.name());
  grpc::ClientContext ctx;
  common::SetBearer(ctx, key);
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(15));
  Answer answer;
  if (!method.client_streaming() && !method.server_streaming()) {
    grpc::ByteBuffer response;
    answer.status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
        channel.get(),
        grpc::internal::RpcMethod(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC), &ctx,
        ToBuffer(request), &response);
    answer.response = FromBuffer(response);
    return answer;
  }
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod(path.c_str(), grpc::internal::RpcMethod::BIDI_STREAMING),
          &ctx));
  stream->Write(ToBuffer(request));
  stream->WritesDone();
  grpc::ByteBuffer message;
  while (stream->Read(&message)) {
    answer.response += FromBuffer(message);
  }
  answer.status = stream->Finish();
  return answer;
}

/// The services `channel`'s server serves, by gRPC reflection (grpc.reflection.v1alpha).
std::vector<std::string> ServedServices(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(15));
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod(
              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
              grpc::internal::RpcMethod::BIDI_STREAMING),
          &ctx));
  // ServerReflectionRequest{list_services (field 7): ""}.
  stream->Write(ToBuffer(std::string("\x3a\x00", 2)));
  stream->WritesDone();
  grpc::ByteBuffer message;
  std::vector<std::string> names;
  // ServerReflectionResponse{list_services_response (6): {service (1): [{name (1)}]}}.
  using google::protobuf::UnknownField;
  using google::protobuf::UnknownFieldSet;
  const auto nested = [](const UnknownFieldSet& set, int number) {
    std::vector<std::string> out;
    for (int i = 0; i < set.field_count(); ++i) {
      if (set.field(i).number() == number &&
          set.field(i).type() == UnknownField::TYPE_LENGTH_DELIMITED) {
        out.push_back(set.field(i).length_delimited());
      }
    }
    return out;
  };
  while (stream->Read(&message)) {
    UnknownFieldSet response;
    EXPECT_TRUE(response.ParseFromString(FromBuffer(message)));
    for (const std::string& list_bytes : nested(response, 6)) {
      UnknownFieldSet list;
      EXPECT_TRUE(list.ParseFromString(list_bytes));
      for (const std::string& service_bytes : nested(list, 1)) {
        UnknownFieldSet service;
        EXPECT_TRUE(service.ParseFromString(service_bytes));
        for (const std::string& name : nested(service, 1)) {
          names.push_back(name);
        }
      }
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  return names;
}

class TenantIsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = std::make_unique<iot::testing::TestRedis>();
    broker_ = std::make_unique<iot::testing::TestMosquitto>(iot::testing::AuthPluginConfig(
        redis_->Url(), kSecretKey,
        iot::testing::ServiceAccountEntry("device-gateway", "s1", kGatewayPassword) + "," +
            iot::testing::ServiceAccountEntry("rule-forwarding", "s2", kRulesPassword)));
    std::map<std::string, std::string> shared = {
        {"IOT_PG_URL", iot::testing::CreateTestDatabase()},
        {"IOT_REDIS_URL", redis_->Url()},
        {"IOT_MQTT_URL", broker_->Url()},
        {"IOT_SECRET_KEY", kSecretKey},
        {"IOT_SERVICE_API_KEY", kServiceKey},
        {"IOT_THING_MODEL_BOOTSTRAP_API_KEY", kRootKey},
        {"IOT_DEVICE_GATEWAY_MQTT_USERNAME", "device-gateway"},
        {"IOT_DEVICE_GATEWAY_MQTT_PASSWORD", kGatewayPassword},
        {"IOT_RULE_FORWARDING_MQTT_USERNAME", "rule-forwarding"},
        {"IOT_RULE_FORWARDING_MQTT_PASSWORD", kRulesPassword}};
    for (const ServiceCase& service : kServices) {
      auto process =
          std::make_unique<iot::testing::ServiceProcess>(iot::testing::ServiceProcessOptions{
              .binary = service.binary, .env_prefix = service.prefix, .env = shared, .args = {}});
      shared[service.prefix + "_ADDR"] = process->address();
      ASSERT_TRUE(process->WaitServing()) << service.binary << ":\n" << process->process().Log();
      channels_[service.package] =
          grpc::CreateChannel(process->address(), grpc::InsecureChannelCredentials());
      processes_.push_back(std::move(process));
    }
    CreateTenants();
  }

  template <typename Stub, typename Request, typename Response>
  void Do(const std::string& package,
          grpc::Status (Stub::*call)(grpc::ClientContext*, const Request&, Response*),
          const std::string& key, const Request& request, Response* response) {
    Stub stub(channels_[package]);
    grpc::ClientContext ctx;
    common::SetBearer(ctx, key);
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(15));
    const grpc::Status status = (stub.*call)(&ctx, request, response);
    ASSERT_TRUE(status.ok()) << request.GetTypeName() << ": " << status.error_message();
  }

  /// Tenants A (with one of everything) and B, each with an admin key.
  void CreateTenants() {
    const std::string tmp = "iot.thing_model.v1";
    for (const char* id : {"alpha", "beta"}) {
      tm::CreateTenantRequest request;
      request.set_tenant_id(id);
      request.set_name(id);
      request.set_create_admin_key(true);
      tm::CreateTenantResponse created;
      Do(tmp, &tm::Tenants::Stub::CreateTenant, kRootKey, request, &created);
      (std::string(id) == "alpha" ? a_.key : b_key_) = created.admin_key_secret();
    }
    tm::ListApiKeysResponse keys;
    Do(tmp, &tm::Tenants::Stub::ListApiKeys, a_.key, tm::ListApiKeysRequest(), &keys);
    ASSERT_EQ(keys.keys_size(), 1);
    a_.key_id = keys.keys(0).key_id();

    auto model = nlohmann::json::parse(ReadFile(IOT_TESTDATA_DIR "/smart_meter_product.json"));
    model["product_id"] = a_.product_id;
    a_.product_json = model.dump();
    tm::CreateProductRequest product;
    product.set_product_json(a_.product_json);
    tm::Product created_product;
    Do(tmp, &tm::Products::Stub::CreateProduct, a_.key, product, &created_product);
    tm::AddDeviceRequest device;
    device.set_product_id(a_.product_id);
    device.set_node_id("n1");
    device.set_device_name("alpha-meter");
    device.set_secret("alpha-device-secret");
    tm::AddDeviceResponse added;
    Do(tmp, &tm::Devices::Stub::AddDevice, a_.key, device, &added);
    a_.device_id = added.device().device_id();

    sh::UpdateDeviceShadowDesiredDataRequest desired;
    desired.set_device_id(a_.device_id);
    auto* s = desired.add_shadow();
    s->set_service_id("meter");
    s->set_desired_json(R"({"report_interval":60})");
    sh::ShowDeviceShadowResponse shadow;
    Do("iot.shadow.v1", &sh::Shadows::Stub::UpdateDeviceShadowDesiredData, a_.key, desired,
       &shadow);

    cd::CreateAsyncCommandRequest command;
    command.set_device_id(a_.device_id);
    command.set_service_id("meter");
    command.set_command_name("reboot");
    command.set_paras_json(R"({"delay":5})");
    command.set_send_strategy("delay");
    cd::AsyncDeviceCommand queued;
    Do("iot.command_dispatch.v1", &cd::Commands::Stub::CreateAsyncCommand, a_.key, command,
       &queued);
    a_.command_id = queued.command_id();
    cd::CreateMessageRequest message;
    message.set_device_id(a_.device_id);
    message.set_message_id(a_.message_id);
    message.set_message_json(R"({"hello":"alpha"})");
    cd::CreateMessageResponse message_created;
    Do("iot.command_dispatch.v1", &cd::Commands::Stub::CreateMessage, a_.key, message,
       &message_created);

    const std::string rfp = "iot.rule_forwarding.v1";
    rf::CreateConsumerGroupRequest group;
    group.mutable_group()->set_group_name(a_.group);
    rf::ConsumerGroup created_group;
    Do(rfp, &rf::Subscriptions::Stub::CreateConsumerGroup, a_.key, group, &created_group);
    rf::CreateRuleRequest rule;
    rule.set_name("alpha-rule");
    rule.set_resource("device.property");
    rule.set_sql("SELECT *");
    auto* action = rule.add_actions();
    action->set_type("consumer_group");
    action->set_config_json(nlohmann::json{{"group", a_.group}}.dump());
    rf::Rule created_rule;
    Do(rfp, &rf::Rules::Stub::CreateRule, a_.key, rule, &created_rule);
    a_.rule_id = created_rule.rule_id();
  }

  /// Strings that only A's objects contain: none may appear in an answer to B.
  [[nodiscard]] std::vector<std::string> Markers() const {
    return {"alpha-meter", "alpha-rule",  a_.key_id,     a_.device_id,         a_.rule_id,
            a_.group,      a_.command_id, a_.message_id, "alpha-device-secret"};
  }

  /// B calls public `method` (`key`) on A's objects: the answer is the case's, and shows nothing
  /// of A's that B did not send itself.
  void CheckPublicCall(const std::shared_ptr<grpc::Channel>& channel,
                       const google::protobuf::MethodDescriptor& method, const std::string& key,
                       std::set<std::string>& covered_public, std::string& sent_by_b) {
    const auto it = Cases().find(key);
    if (it == Cases().end()) {
      ADD_FAILURE() << key << " has no isolation case: add one to Cases()";
      return;
    }
    covered_public.insert(key);
    const auto [request, expect] = it->second(a_);
    sent_by_b += request;
    const Answer answer = Invoke(channel, method, request, b_key_);
    EXPECT_TRUE(expect.codes.contains(answer.status.error_code()))
        << "answered " << answer.status.error_code() << ": " << answer.status.error_message();
    // Nothing of A's that B did not send itself (an id echoed back is not a leak).
    for (const std::string& marker : Markers()) {
      if (sent_by_b.find(marker) != std::string::npos) {
        continue;
      }
      EXPECT_EQ(answer.response.find(marker), std::string::npos)
          << "the answer to B contains A's '" << marker << "'";
      EXPECT_EQ(answer.status.error_message().find(marker), std::string::npos)
          << "the error names A's '" << marker << "': " << answer.status.error_message();
    }
  }

  /// A's objects are all as they were.
  void ExpectAUnchanged() {
    const std::string tmp = "iot.thing_model.v1";
    tm::ShowDeviceRequest show_device;
    show_device.set_device_id(a_.device_id);
    tm::Device device;
    Do(tmp, &tm::Devices::Stub::ShowDevice, a_.key, show_device, &device);
    EXPECT_EQ(device.device_name(), "alpha-meter");
    EXPECT_NE(device.status(), tm::FROZEN);
    tm::ShowProductRequest show_product;
    show_product.set_product_id(a_.product_id);
    tm::Product product;
    Do(tmp, &tm::Products::Stub::ShowProduct, a_.key, show_product, &product);
    EXPECT_EQ(product.model_version(), 1);
    tm::ListApiKeysRequest list_keys;
    list_keys.set_include_revoked(true);
    tm::ListApiKeysResponse keys;
    Do(tmp, &tm::Tenants::Stub::ListApiKeys, a_.key, list_keys, &keys);
    ASSERT_EQ(keys.keys_size(), 1);
    EXPECT_TRUE(keys.keys(0).revoke_time().empty());
    sh::ShowDeviceShadowRequest show_shadow;
    show_shadow.set_device_id(a_.device_id);
    sh::ShowDeviceShadowResponse shadow;
    Do("iot.shadow.v1", &sh::Shadows::Stub::ShowDeviceShadow, a_.key, show_shadow, &shadow);
    EXPECT_NE(shadow.DebugString().find("report_interval"), std::string::npos);
    cd::ShowAsyncDeviceCommandRequest show_command;
    show_command.set_device_id(a_.device_id);
    show_command.set_command_id(a_.command_id);
    cd::AsyncDeviceCommand command;
    Do("iot.command_dispatch.v1", &cd::Commands::Stub::ShowAsyncDeviceCommand, a_.key, show_command,
       &command);
    cd::ListDeviceMessagesRequest list_messages;
    list_messages.set_device_id(a_.device_id);
    cd::ListDeviceMessagesResponse messages;
    Do("iot.command_dispatch.v1", &cd::Commands::Stub::ListDeviceMessages, a_.key, list_messages,
       &messages);
    EXPECT_EQ(messages.messages_size(), 1);
    const std::string rfp = "iot.rule_forwarding.v1";
    rf::ShowRuleRequest show_rule;
    show_rule.set_rule_id(a_.rule_id);
    rf::Rule rule;
    Do(rfp, &rf::Rules::Stub::ShowRule, a_.key, show_rule, &rule);
    EXPECT_EQ(rule.name(), "alpha-rule");
    EXPECT_EQ(rule.status(), "active");
    rf::ListConsumerGroupsResponse groups;
    Do(rfp, &rf::Subscriptions::Stub::ListConsumerGroups, a_.key, rf::ListConsumerGroupsRequest(),
       &groups);
    ASSERT_EQ(groups.groups_size(), 1);
    EXPECT_EQ(groups.groups(0).group_name(), a_.group);
  }

  std::unique_ptr<iot::testing::TestRedis> redis_;
  std::unique_ptr<iot::testing::TestMosquitto> broker_;
  std::vector<std::unique_ptr<iot::testing::ServiceProcess>> processes_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;
  TenantA a_;
  std::string b_key_;
};

TEST_F(TenantIsolationTest, EveryRpcRefusesAnotherTenantsObjects) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  std::set<std::string> covered_public;
  size_t internal_methods = 0;
  std::string sent_by_b;  // every request B sent: an id B sent itself and sees again is no leak
  for (const ServiceCase& service : kServices) {
    const auto& channel = channels_[service.package];
    const std::vector<std::string> served = ServedServices(channel);
    EXPECT_FALSE(served.empty()) << service.binary;
    for (const std::string& name : served) {
      if (name.starts_with("grpc.")) {
        continue;  // health, reflection
      }
      const google::protobuf::ServiceDescriptor* descriptor = pool->FindServiceByName(name);
      ASSERT_NE(descriptor, nullptr)
          << service.binary << " serves " << name << ", which is not in the iot::proto descriptors";
      const bool internal = descriptor->name().starts_with("Internal");
      for (int m = 0; m < descriptor->method_count(); ++m) {
        const google::protobuf::MethodDescriptor& method = *descriptor->method(m);
        const std::string key = descriptor->full_name() + "/" + method.name();
        SCOPED_TRACE(key);
        if (internal) {
          // Internal RPCs need the service credential: a tenant's admin key is refused (with an
          // empty request: the refusal must come before anything is read).
          const Answer answer = Invoke(channel, method, "", b_key_);
          EXPECT_TRUE(answer.status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
                      answer.status.error_code() == grpc::StatusCode::UNAUTHENTICATED)
              << answer.status.error_code() << " " << answer.status.error_message();
          ++internal_methods;
          continue;
        }
        CheckPublicCall(channel, method, key, covered_public, sent_by_b);
      }
    }
  }
  // Every case names a served method (a renamed RPC leaves a stale case behind), and the
  // internal services were found too.
  for (const auto& [key, c] : Cases()) {
    EXPECT_TRUE(covered_public.contains(key)) << key << " is not served by any service";
  }
  EXPECT_GE(internal_methods, 10u);

  ExpectAUnchanged();
}

}  // namespace
}  // namespace iot
