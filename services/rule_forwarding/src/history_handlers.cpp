#include "history_handlers.h"

#include "iot/common/status.h"

namespace iot::rule_forwarding {

using common::ToGrpcStatus;

absl::StatusOr<std::string> CallerTenant(common::Authenticator& auth,
                                         const grpc::ServerContext& context,
                                         common::Access access) {
  auto caller = auth.Authorize(context, access);
  if (!caller.ok()) {
    return caller.status();
  }
  if (caller->tenant_id.empty()) {
    return absl::PermissionDeniedError("this API needs a tenant's API key");
  }
  return caller->tenant_id;
}

grpc::Status HistoryHandler::ListPropertyHistory(grpc::ServerContext* context,
                                                 const pb::ListPropertyHistoryRequest* request,
                                                 pb::ListPropertyHistoryResponse* response) {
  auto tenant = CallerTenant(*auth_, *context, common::Access::kRead);
  if (!tenant.ok()) {
    return ToGrpcStatus(tenant.status());
  }
  auto query = MakeHistoryQuery(*tenant,
                                {.device_id = request->device_id(),
                                 .service_id = request->service_id(),
                                 .property = request->property(),
                                 .start_time = request->start_time(),
                                 .end_time = request->end_time(),
                                 .limit = request->limit(),
                                 .marker = request->marker(),
                                 .bucket = request->bucket()},
                                NowMs());
  if (!query.ok()) {
    return ToGrpcStatus(query.status());
  }
  auto page = store_->Query(*query);
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const HistoryValue& v : page->values) {
    auto* out = response->add_values();
    out->set_time(FormatTimestamp(v.time_ms));
    out->set_value_json(v.value_json);
  }
  for (const HistoryBucket& b : page->buckets) {
    auto* out = response->add_buckets();
    out->set_start_time(FormatTimestamp(b.start_ms));
    out->set_count(b.count);
    if (b.min) {
      out->set_min(*b.min);
      out->set_max(*b.max);
      out->set_avg(*b.avg);
    }
  }
  response->set_next_marker(page->next_marker);
  return grpc::Status::OK;
}

}  // namespace iot::rule_forwarding
