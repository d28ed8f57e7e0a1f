#pragma once

// The platform of the history and subscriptions integration tests: a private Redis (the
// subscription tests restart it), thing-model for tenants and API keys, and one real
// rule-forwarding process on a fresh database. Records enter through InternalIngest as the
// device-gateway sends them.

#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "iot/common/auth.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"
#include "iot/testing/http.h"
#include "iot/testing/platform.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "iot/thing_model/v1/thing_model.grpc.pb.h"

namespace iot::testing {

namespace rf = iot::rule_forwarding::v1;

inline const std::string kHsSecretKey(64, 'e');
inline const std::string kHsAdminKey = "history-test-admin-key-0123456789";  // tenant "default"
inline const std::string kHsServiceKey = "history-test-service-key-0123456789";

/// One property record as the gateway forwards it: `properties` of service `service_id`.
struct PropertyRecord {
  std::string message_id;
  std::string device_id;
  int64_t time_ms = 0;
  nlohmann::json properties;
  std::string service_id = "meter";
  std::string tenant_id = "default";
};

class HistorySubscriptionsPlatform {
 public:
  explicit HistorySubscriptionsPlatform(std::map<std::string, std::string> extra_env = {}) {
    thing_model_ =
        std::make_unique<ThingModelProcess>(ThingModelProcessOptions{.redis_url = redis_.Url(),
                                                                     .secret_key = kHsSecretKey,
                                                                     .admin_key = kHsAdminKey,
                                                                     .service_key = kHsServiceKey,
                                                                     .pg_url = {}});
    EXPECT_TRUE(thing_model_->WaitServing()) << thing_model_->process().Log();
    pg_url_ = CreateTestDatabase();
    std::map<std::string, std::string> env = {
        {"IOT_PG_URL", pg_url_},
        {"IOT_REDIS_URL", redis_.Url()},
        {"IOT_MQTT_URL", SharedMqttUrl()},
        {"IOT_RULE_FORWARDING_MQTT_CLIENT_ID", "rule-forwarding-" + std::to_string(FreePort())},
        {"IOT_SECRET_KEY", kHsSecretKey},
        {"IOT_LOG_LEVEL", "debug"}};
    env.merge(extra_env);
    service_ = std::make_unique<ServiceProcess>(ServiceProcessOptions{
        .binary = "rule-forwarding", .env_prefix = "IOT_RULE_FORWARDING", .env = env, .args = {}});
    EXPECT_TRUE(service_->WaitServing()) << service_->process().Log();
    channel_ = grpc::CreateChannel(service_->address(), grpc::InsecureChannelCredentials());
    other_key_ = CreateTenant("other");
  }

  /// A tenant with its own admin key (returned).
  std::string CreateTenant(const std::string& tenant_id) {
    auto tenants = iot::thing_model::v1::Tenants::NewStub(
        grpc::CreateChannel(thing_model_->address(), grpc::InsecureChannelCredentials()));
    iot::thing_model::v1::CreateTenantRequest request;
    request.set_tenant_id(tenant_id);
    request.set_name(tenant_id);
    request.set_create_admin_key(true);
    iot::thing_model::v1::CreateTenantResponse response;
    const grpc::Status status = tenants->CreateTenant(Ctx(kHsAdminKey).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.admin_key_secret();
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(
      const std::string& key, std::chrono::seconds deadline = std::chrono::seconds(10)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!key.empty()) {
      common::SetBearer(*ctx, key);
    }
    ctx->set_deadline(std::chrono::system_clock::now() + deadline);
    return ctx;
  }

  /// Calls InternalIngest with device.property records in the IoTDA forwarding envelope; the
  /// answer's rejected records in `ack` when given.
  grpc::Status Ingest(const std::vector<PropertyRecord>& records,
                      iot::device_gateway::v1::IngestAck* ack = nullptr,
                      std::chrono::seconds deadline = std::chrono::seconds(10)) {
    auto stub = rf::InternalIngest::NewStub(channel_);
    iot::device_gateway::v1::IngestAck unused;
    return stub->Ingest(Ctx(kHsServiceKey, deadline).get(), IngestRequestOf(records),
                        ack ? ack : &unused);
  }

  /// The InternalIngest request of device.property records, as the gateway builds it.
  static rf::IngestRequest IngestRequestOf(const std::vector<PropertyRecord>& records) {
    rf::IngestRequest request;
    for (const PropertyRecord& p : records) {
      auto* r = request.add_records();
      r->set_message_id(p.message_id);
      r->mutable_device()->set_tenant_id(p.tenant_id);
      r->mutable_device()->set_device_id(p.device_id);
      r->mutable_device()->set_product_id("meter");
      r->mutable_device()->set_node_id("n1");
      r->set_resource("device.property");
      r->set_event("report");
      r->set_topic("$oc/devices/" + p.device_id + "/sys/properties/report");
      r->set_event_time_unix_ms(p.time_ms);
      const nlohmann::json envelope = {
          {"resource", "device.property"},
          {"event", "report"},
          {"notify_data",
           {{"header",
             {{"device_id", p.device_id},
              {"product_id", "meter"},
              {"node_id", "n1"},
              {"tenant_id", p.tenant_id}}},
            {"body",
             {{"services", nlohmann::json::array({{{"service_id", p.service_id},
                                                   {"properties", p.properties}}})}}}}}};
      r->set_envelope_json(envelope.dump());
    }
    return request;
  }

  /// A consumer group of the tenant whose admin key is `key`.
  grpc::Status CreateGroup(const std::string& name, int ack_timeout_seconds = 0,
                           const std::string& key = kHsAdminKey) {
    rf::CreateConsumerGroupRequest request;
    request.mutable_group()->set_group_name(name);
    request.mutable_group()->set_ack_timeout_seconds(ack_timeout_seconds);
    rf::ConsumerGroup group;
    return rf::Subscriptions::NewStub(channel_)->CreateConsumerGroup(Ctx(key).get(), request,
                                                                     &group);
  }

  /// A rule of the key's tenant putting every record of `resource` that `where` selects (a rule
  /// SQL condition; empty: all) into consumer group `group`.
  grpc::Status ForwardToGroup(const std::string& where, const std::string& group,
                              const std::string& key = kHsAdminKey,
                              const std::string& resource = "device.property") {
    rf::CreateRuleRequest request;
    request.set_name("to " + group);
    request.set_resource(resource);
    request.set_sql(where.empty() ? "SELECT *" : "SELECT * WHERE " + where);
    auto* action = request.add_actions();
    action->set_type("consumer_group");
    action->set_config_json(nlohmann::json{{"group", group}}.dump());
    rf::Rule rule;
    return rf::Rules::NewStub(channel_)->CreateRule(Ctx(key).get(), request, &rule);
  }

  double Metric(const std::string& name, const std::map<std::string, std::string>& labels) {
    auto series = ParsePrometheusText(service_->Metrics());
    return series.ok() ? SumSeries(*series, name, labels) : -1;
  }

  TestRedis& redis() { return redis_; }
  ServiceProcess& service() { return *service_; }
  const std::shared_ptr<grpc::Channel>& channel() { return channel_; }
  [[nodiscard]] const std::string& pg_url() const { return pg_url_; }
  [[nodiscard]] const std::string& other_key() const { return other_key_; }

 private:
  TestRedis redis_;
  std::unique_ptr<ThingModelProcess> thing_model_;
  std::string pg_url_;
  std::unique_ptr<ServiceProcess> service_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string other_key_;
};

}  // namespace iot::testing
