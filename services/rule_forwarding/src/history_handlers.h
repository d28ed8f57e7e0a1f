#pragma once

// gRPC handlers of History and Subscriptions: authenticate, convert protos, call the logic.

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "iot/common/auth.h"
#include "iot/rule_forwarding/history.h"
#include "iot/rule_forwarding/subscriptions.h"
#include "iot/rule_forwarding/v1/rule_forwarding.grpc.pb.h"

namespace iot::rule_forwarding {

namespace pb = iot::rule_forwarding::v1;

/// The tenant of the calling key: PERMISSION_DENIED for keys bound to no tenant (service keys).
absl::StatusOr<std::string> CallerTenant(common::Authenticator& auth,
                                         const grpc::ServerContext& context, common::Access access);

class HistoryHandler final : public pb::History::Service {
 public:
  HistoryHandler(std::shared_ptr<HistoryStore> store, std::shared_ptr<common::Authenticator> auth)
      : store_(std::move(store)), auth_(std::move(auth)) {}

  grpc::Status ListPropertyHistory(grpc::ServerContext* context,
                                   const pb::ListPropertyHistoryRequest* request,
                                   pb::ListPropertyHistoryResponse* response) override;

 private:
  std::shared_ptr<HistoryStore> store_;
  std::shared_ptr<common::Authenticator> auth_;
};

/// The open Subscribe sessions of this replica, stopped together on shutdown so that the drain
/// does not wait for streams that never end by themselves.
class SubscriptionHub {
 public:
  /// False once stopping: the session is stopped at once.
  bool Add(const std::shared_ptr<SubscriptionSession>& session);
  void Remove(const std::shared_ptr<SubscriptionSession>& session);
  void StopAll();

 private:
  std::mutex mu_;
  bool stopping_ = false;
  std::set<std::shared_ptr<SubscriptionSession>> sessions_;
};

struct SubscriptionsDeps {
  std::shared_ptr<GroupStore> groups;
  std::shared_ptr<GroupStreams> streams;  ///< on the service's shared Redis client
  std::shared_ptr<common::Authenticator> auth;
  std::shared_ptr<SubscriptionHub> hub;
  std::shared_ptr<SubscriptionMetrics> metrics;
  std::string redis_url;  ///< each Subscribe stream gets its own connections (blocking reads)
};

class SubscriptionsHandler final : public pb::Subscriptions::Service {
 public:
  explicit SubscriptionsHandler(SubscriptionsDeps deps) : deps_(std::move(deps)) {}

  grpc::Status CreateConsumerGroup(grpc::ServerContext* context,
                                   const pb::CreateConsumerGroupRequest* request,
                                   pb::ConsumerGroup* response) override;
  grpc::Status DeleteConsumerGroup(grpc::ServerContext* context,
                                   const pb::DeleteConsumerGroupRequest* request,
                                   pb::DeleteConsumerGroupResponse* response) override;
  grpc::Status ListConsumerGroups(grpc::ServerContext* context,
                                  const pb::ListConsumerGroupsRequest* request,
                                  pb::ListConsumerGroupsResponse* response) override;
  grpc::Status Subscribe(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<pb::SubscribeResponse, pb::SubscribeRequest>* stream) override;

 private:
  SubscriptionsDeps deps_;
};

}  // namespace iot::rule_forwarding
