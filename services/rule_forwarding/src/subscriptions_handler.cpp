#include <fmt/format.h>
#include <prometheus/gauge.h>

#include <atomic>
#include <thread>

#include "history_handlers.h"
#include "iot/common/redis.h"
#include "iot/common/status.h"

namespace iot::rule_forwarding {
namespace {

using common::Access;
using common::InvalidField;
using common::ToGrpcStatus;

void ToProto(const ConsumerGroupSettings& g, pb::ConsumerGroup* out) {
  out->set_group_name(g.group_name);
  out->set_description(g.description);
  out->set_max_backlog_length(g.max_backlog_length);
  out->set_max_backlog_age_seconds(g.max_backlog_age_seconds);
  out->set_ack_timeout_seconds(g.ack_timeout_seconds);
  out->set_create_time(g.create_time);
}

void ToProto(const GroupMessage& m, pb::SubscribedMessage* out) {
  out->set_message_id(m.id);
  out->set_delivery_id(m.delivery_id);
  out->set_device_id(m.device_id);
  out->set_product_id(m.product_id);
  out->set_resource(m.resource);
  out->set_event(m.event);
  out->set_topic(m.topic);
  out->set_event_time(FormatTimestamp(m.event_time_ms));
  out->set_payload_json(m.payload_json);
  out->set_rule_id(m.rule_id);
  out->set_redelivered(m.redelivered);
}

/// The group named by a Subscribe start message, or INVALID_ARGUMENT naming the field.
absl::StatusOr<ConsumerGroupSettings> StartGroup(GroupStore& groups, const std::string& tenant,
                                                 const pb::SubscribeRequest& first) {
  if (!first.has_start()) {
    return InvalidField("start", "the first message must name the group and the consumer");
  }
  const pb::SubscribeStart& start = first.start();
  if (absl::Status s = CheckName("group_name", start.group_name()); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckName("consumer_name", start.consumer_name()); !s.ok()) {
    return s;
  }
  if (start.max_in_flight() < 0 || start.max_in_flight() > 1000) {
    return InvalidField("max_in_flight", "must be 1..1000 (0: 100)");
  }
  auto group = groups.Get(tenant, start.group_name());
  if (absl::IsNotFound(group.status())) {
    return InvalidField("group_name",
                        fmt::format("no consumer group named '{}'", start.group_name()));
  }
  return group;
}

}  // namespace

bool SubscriptionHub::Add(const std::shared_ptr<SubscriptionSession>& session) {
  std::lock_guard lock(mu_);
  if (stopping_) {
    session->Stop();
    return false;
  }
  sessions_.insert(session);
  return true;
}

void SubscriptionHub::Remove(const std::shared_ptr<SubscriptionSession>& session) {
  std::lock_guard lock(mu_);
  sessions_.erase(session);
}

void SubscriptionHub::StopAll() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  for (const auto& session : sessions_) {
    session->Stop();
  }
}

grpc::Status SubscriptionsHandler::CreateConsumerGroup(
    grpc::ServerContext* context, const pb::CreateConsumerGroupRequest* request,
    pb::ConsumerGroup* response) {
  auto tenant = CallerTenant(*deps_.auth, *context, Access::kWrite);
  if (!tenant.ok()) {
    return ToGrpcStatus(tenant.status());
  }
  const pb::ConsumerGroup& in = request->group();
  auto group = NormalizeGroup({.tenant_id = *tenant,
                               .group_name = in.group_name(),
                               .description = in.description(),
                               .max_backlog_length = in.max_backlog_length(),
                               .max_backlog_age_seconds = in.max_backlog_age_seconds(),
                               .ack_timeout_seconds = in.ack_timeout_seconds(),
                               .create_time = {}});
  if (!group.ok()) {
    return ToGrpcStatus(group.status());
  }
  auto created = deps_.groups->Create(*group);
  if (absl::IsAlreadyExists(created.status())) {
    return ToGrpcStatus(absl::AlreadyExistsError(
        fmt::format("group_name: a consumer group named '{}' exists", group->group_name)));
  }
  if (!created.ok()) {
    return ToGrpcStatus(created.status());
  }
  // A failure here is repaired by the first subscriber (it recreates a missing Redis group).
  (void)deps_.streams->EnsureGroup(StreamKey(*tenant, created->group_name));
  ToProto(*created, response);
  return grpc::Status::OK;
}

grpc::Status SubscriptionsHandler::DeleteConsumerGroup(
    grpc::ServerContext* context, const pb::DeleteConsumerGroupRequest* request,
    pb::DeleteConsumerGroupResponse* /*response*/) {
  auto tenant = CallerTenant(*deps_.auth, *context, Access::kWrite);
  if (!tenant.ok()) {
    return ToGrpcStatus(tenant.status());
  }
  if (absl::Status s = CheckName("group_name", request->group_name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  if (absl::Status s = deps_.groups->Delete(*tenant, request->group_name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  // Subscribers see NOGROUP, find the group gone and end; the backlog goes with the stream.
  return ToGrpcStatus(deps_.streams->Drop(StreamKey(*tenant, request->group_name())));
}

grpc::Status SubscriptionsHandler::ListConsumerGroups(grpc::ServerContext* context,
                                                      const pb::ListConsumerGroupsRequest* request,
                                                      pb::ListConsumerGroupsResponse* response) {
  auto tenant = CallerTenant(*deps_.auth, *context, Access::kRead);
  if (!tenant.ok()) {
    return ToGrpcStatus(tenant.status());
  }
  if (request->limit() < 0 || request->limit() > 500) {
    return ToGrpcStatus(InvalidField("limit", "must be 1..500 (0: 50)"));
  }
  const int32_t limit = request->limit() == 0 ? 50 : request->limit();
  auto groups = deps_.groups->List(*tenant, limit, request->marker());
  if (!groups.ok()) {
    return ToGrpcStatus(groups.status());
  }
  const bool more = groups->size() > static_cast<size_t>(limit);
  if (more) {
    groups->pop_back();
    response->set_next_marker(groups->back().group_name);
  }
  for (const ConsumerGroupSettings& g : *groups) {
    ToProto(g, response->add_groups());
  }
  return grpc::Status::OK;
}

grpc::Status SubscriptionsHandler::Subscribe(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pb::SubscribeResponse, pb::SubscribeRequest>* stream) {
  auto tenant = CallerTenant(*deps_.auth, *context, Access::kRead);
  if (!tenant.ok()) {
    return ToGrpcStatus(tenant.status());
  }
  pb::SubscribeRequest first;
  if (!stream->Read(&first)) {
    return grpc::Status::OK;
  }
  auto group = StartGroup(*deps_.groups, *tenant, first);
  if (!group.ok()) {
    return ToGrpcStatus(group.status());
  }
  auto redis = common::RedisClient::Create({.url = deps_.redis_url,
                                            .connect_timeout = std::chrono::milliseconds(2000),
                                            .command_timeout = std::chrono::milliseconds(3000),
                                            .pool_size = 2});
  if (!redis.ok()) {
    return ToGrpcStatus(redis.status());
  }
  const int max_in_flight =
      first.start().max_in_flight() == 0 ? 100 : first.start().max_in_flight();
  auto session = std::make_shared<SubscriptionSession>(
      *group, first.start().consumer_name(), max_in_flight,
      std::make_shared<GroupStreams>(std::shared_ptr<common::RedisClient>(*std::move(redis))),
      deps_.groups, deps_.metrics);
  deps_.hub->Add(session);
  deps_.metrics->consumers.Increment();

  std::atomic<bool> reader_done{false};
  std::thread reader([&] {
    pb::SubscribeRequest request;
    while (stream->Read(&request)) {
      if (request.has_ack() && request.ack().message_ids_size() > 0) {
        session->Ack({request.ack().message_ids().begin(), request.ack().message_ids().end()});
      }
    }
    reader_done = true;
    session->Stop();
  });
  const absl::Status status = session->Run([&](const GroupMessage& m) {
    pb::SubscribeResponse response;
    ToProto(m, response.mutable_message());
    return stream->Write(response);
  });
  if (!reader_done) {
    context->TryCancel();  // unblocks the reader; the client sees CANCELLED and reconnects
  }
  reader.join();
  deps_.metrics->consumers.Decrement();
  deps_.hub->Remove(session);
  return ToGrpcStatus(status);
}

}  // namespace iot::rule_forwarding
