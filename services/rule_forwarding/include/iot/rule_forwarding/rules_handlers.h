#pragma once

#include <memory>

#include "iot/common/auth.h"
#include "iot/rule_forwarding/ingest.h"
#include "iot/rule_forwarding/rules.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"

namespace iot::rule_forwarding {

namespace pb = iot::rule_forwarding::v1;

/// Rules API: authenticate (tenant API keys), convert, call RulesService.
class RulesHandler final : public pb::Rules::Service {
 public:
  RulesHandler(std::shared_ptr<RulesService> service, std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status CreateRule(grpc::ServerContext* context, const pb::CreateRuleRequest* request,
                          pb::Rule* response) override;
  grpc::Status ShowRule(grpc::ServerContext* context, const pb::ShowRuleRequest* request,
                        pb::Rule* response) override;
  grpc::Status UpdateRule(grpc::ServerContext* context, const pb::UpdateRuleRequest* request,
                          pb::Rule* response) override;
  grpc::Status DeleteRule(grpc::ServerContext* context, const pb::DeleteRuleRequest* request,
                          pb::DeleteRuleResponse* response) override;
  grpc::Status ListRules(grpc::ServerContext* context, const pb::ListRulesRequest* request,
                         pb::ListRulesResponse* response) override;
  grpc::Status ChangeRuleStatus(grpc::ServerContext* context,
                                const pb::ChangeRuleStatusRequest* request,
                                pb::Rule* response) override;
  grpc::Status ListDeadLetters(grpc::ServerContext* context,
                               const pb::ListDeadLettersRequest* request,
                               pb::ListDeadLettersResponse* response) override;

 private:
  std::shared_ptr<RulesService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

/// InternalIngest: the device-gateway's calls (service credential).
class IngestHandler final : public pb::InternalIngest::Service {
 public:
  IngestHandler(std::shared_ptr<IngestService> service, std::shared_ptr<common::Authenticator> auth)
      : service_(std::move(service)), auth_(std::move(auth)) {}

  grpc::Status Ingest(grpc::ServerContext* context, const pb::IngestRequest* request,
                      iot::device_gateway::v1::IngestAck* response) override;

 private:
  std::shared_ptr<IngestService> service_;
  std::shared_ptr<common::Authenticator> auth_;
};

}  // namespace iot::rule_forwarding
