#include <fmt/format.h>

#include "iot/common/json_limits.h"
#include "iot/common/status.h"
#include "iot/rule_forwarding/rules_handlers.h"

namespace iot::rule_forwarding {
namespace {

using common::Access;
using common::ToGrpcStatus;

void ToProto(const RuleRecord& r, pb::Rule* out) {
  out->set_rule_id(r.rule_id);
  out->set_name(r.name);
  out->set_description(r.description);
  out->set_resource(r.resource);
  out->set_product_id(r.product_id);
  out->set_device_id(r.device_id);
  out->set_sql(r.sql);
  for (const RuleAction& a : r.actions) {
    auto* action = out->add_actions();
    action->set_type(a.type);
    action->set_config_json(MaskConfig(a.config).dump());
  }
  out->set_status(r.enabled ? "active" : "inactive");
  out->set_create_time(r.create_time);
  out->set_update_time(r.update_time);
}

template <typename Actions>
absl::StatusOr<std::vector<RuleAction>> ActionsOf(const Actions& actions) {
  std::vector<RuleAction> out;
  for (int i = 0; i < actions.size(); ++i) {
    const auto& a = actions.Get(i);
    RuleAction action{.type = a.type(), .config = nlohmann::json::object()};
    if (!a.config_json().empty()) {
      const std::string field = fmt::format("actions[{}].config_json", i);
      auto config = common::ParseJson(field, a.config_json());
      if (!config.ok()) {
        return config.status();
      }
      if (!config->is_object()) {
        return common::InvalidField(field, "must be a JSON object");
      }
      action.config = *std::move(config);
    }
    out.push_back(std::move(action));
  }
  return out;
}

template <typename Request>
absl::StatusOr<RuleRecord> RuleOf(const Request& request) {
  auto actions = ActionsOf(request.actions());
  if (!actions.ok()) {
    return actions.status();
  }
  RuleRecord rule;
  rule.name = request.name();
  rule.description = request.description();
  rule.resource = request.resource();
  rule.product_id = request.product_id();
  rule.device_id = request.device_id();
  rule.sql = request.sql();
  rule.actions = *std::move(actions);
  return rule;
}

grpc::Status Answer(const absl::StatusOr<RuleRecord>& rule, pb::Rule* response) {
  if (!rule.ok()) {
    return ToGrpcStatus(rule.status());
  }
  ToProto(*rule, response);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status RulesHandler::CreateRule(grpc::ServerContext* context,
                                      const pb::CreateRuleRequest* request, pb::Rule* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto rule = RuleOf(*request);
  if (!rule.ok()) {
    return ToGrpcStatus(rule.status());
  }
  if (request->status() != "" && request->status() != "active" && request->status() != "inactive") {
    return ToGrpcStatus(common::InvalidField("status", "must be active or inactive"));
  }
  rule->enabled = request->status() != "inactive";
  return Answer(service_->Create(caller, *std::move(rule)), response);
}

grpc::Status RulesHandler::ShowRule(grpc::ServerContext* context,
                                    const pb::ShowRuleRequest* request, pb::Rule* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  return Answer(service_->Show(caller, request->rule_id()), response);
}

grpc::Status RulesHandler::UpdateRule(grpc::ServerContext* context,
                                      const pb::UpdateRuleRequest* request, pb::Rule* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  auto rule = RuleOf(*request);
  if (!rule.ok()) {
    return ToGrpcStatus(rule.status());
  }
  rule->rule_id = request->rule_id();
  return Answer(service_->Update(caller, *std::move(rule)), response);
}

grpc::Status RulesHandler::DeleteRule(grpc::ServerContext* context,
                                      const pb::DeleteRuleRequest* request,
                                      pb::DeleteRuleResponse* /*response*/) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  return ToGrpcStatus(service_->Delete(caller, request->rule_id()));
}

grpc::Status RulesHandler::ListRules(grpc::ServerContext* context,
                                     const pb::ListRulesRequest* request,
                                     pb::ListRulesResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto page =
      service_->List(caller, PageRequest{.limit = request->limit(), .marker = request->marker()},
                     request->resource());
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const RuleRecord& rule : page->items) {
    ToProto(rule, response->add_rules());
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

grpc::Status RulesHandler::ChangeRuleStatus(grpc::ServerContext* context,
                                            const pb::ChangeRuleStatusRequest* request,
                                            pb::Rule* response) {
  IOT_AUTHORIZE(caller, Access::kWrite);
  return Answer(service_->ChangeStatus(caller, request->rule_id(), request->status()), response);
}

grpc::Status RulesHandler::ListDeadLetters(grpc::ServerContext* context,
                                           const pb::ListDeadLettersRequest* request,
                                           pb::ListDeadLettersResponse* response) {
  IOT_AUTHORIZE(caller, Access::kRead);
  auto page = service_->ListDeadLetters(
      caller, request->rule_id(),
      PageRequest{.limit = request->limit(), .marker = request->marker()});
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const DeadLetterRecord& d : page->items) {
    auto* out = response->add_dead_letters();
    out->set_dead_letter_id(d.dead_letter_id);
    out->set_rule_id(d.rule_id);
    out->set_action_index(d.action_index);
    out->set_action_type(d.action_type);
    out->set_delivery_id(d.delivery_id);
    out->set_device_id(d.device_id);
    out->set_payload_json(d.payload_json);
    out->set_error(d.error);
    out->set_attempts(d.attempts);
    out->set_create_time(d.create_time);
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

grpc::Status IngestHandler::Ingest(grpc::ServerContext* context, const pb::IngestRequest* request,
                                   iot::device_gateway::v1::IngestAck* response) {
  IOT_AUTHORIZE(caller, Access::kInternal);
  std::vector<IngestRecord> records;
  records.reserve(static_cast<size_t>(request->records_size()));
  for (const pb::ForwardRecord& r : request->records()) {
    records.push_back(IngestRecord{.message_id = r.message_id(),
                                   .tenant_id = r.device().tenant_id(),
                                   .device_id = r.device().device_id(),
                                   .product_id = r.device().product_id(),
                                   .node_id = r.device().node_id(),
                                   .resource = r.resource(),
                                   .event = r.event(),
                                   .topic = r.topic(),
                                   .event_time_unix_ms = r.event_time_unix_ms(),
                                   .envelope_json = r.envelope_json()});
  }
  return common::Acknowledge(service_->Ingest(records), response);
}

}  // namespace iot::rule_forwarding
