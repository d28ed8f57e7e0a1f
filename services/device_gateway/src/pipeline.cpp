#include "iot/device_gateway/pipeline.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include <functional>
#include <optional>

#include "iot/common/backoff.h"
#include "iot/common/logging.h"
#include "iot/common/metrics.h"
#include "iot/device_gateway/alink/uplink_codec.h"

namespace iot::device_gateway {
namespace {

using Clock = std::chrono::steady_clock;
namespace dg = device_gateway::v1;
using Rejections = std::vector<dg::RejectedRecord>;

const std::string& DeviceOf(const WorkItem& item) {
  return std::visit([](const auto& value) -> const std::string& { return value.device_id; }, item);
}

/// The device an item names, for items whose topic named none.
bool HasDevice(const WorkItem& item) { return !DeviceOf(item).empty(); }

// The records of each batch request, for splitting one an owner refuses.
const auto& ItemsOf(const shadow::v1::ReportPropertiesRequest& r) { return r.reports(); }
auto* MutableItemsOf(shadow::v1::ReportPropertiesRequest& r) { return r.mutable_reports(); }
const auto& ItemsOf(const command_dispatch::v1::CompleteRequestsRequest& r) {
  return r.responses();
}
auto* MutableItemsOf(command_dispatch::v1::CompleteRequestsRequest& r) {
  return r.mutable_responses();
}
const auto& ItemsOf(const rule_forwarding::v1::IngestRequest& r) { return r.records(); }
auto* MutableItemsOf(rule_forwarding::v1::IngestRequest& r) { return r.mutable_records(); }
const auto& ItemsOf(const dg::PresenceEvents& r) { return r.events(); }
auto* MutableItemsOf(dg::PresenceEvents& r) { return r.mutable_events(); }

template <typename Request>
int Count(const Request& request) {
  return ItemsOf(request).size();
}
int Count(const shadow::v1::PropertySetResult& /*single*/) { return 1; }

template <typename Request>
Request Slice(const Request& request, int begin, int end) {
  Request out;
  auto* items = MutableItemsOf(out);
  for (int i = begin; i < end; ++i) {
    *items->Add() = ItemsOf(request)[i];
  }
  return out;
}
shadow::v1::PropertySetResult Slice(const shadow::v1::PropertySetResult& single, int, int) {
  return single;
}

/// The most one call to an owner carries. A gRPC server refuses a larger request (4 MiB by
/// default; the services accept 16 MiB, common::ServiceHost) with RESOURCE_EXHAUSTED, which is
/// retried: a device sending a few large messages at its rate would stall its shard for good. A
/// larger request goes in parts, in order; one item larger than this goes alone.
constexpr size_t kMaxCallBytes = 3 * 1024 * 1024;

/// What item `i` adds to a request (with its field's tag and length).
template <typename Request>
size_t ItemBytes(const Request& request, int i) {
  return ItemsOf(request)[i].ByteSizeLong() + 16;
}
size_t ItemBytes(const shadow::v1::PropertySetResult& single, int /*i*/) {
  return single.ByteSizeLong();
}

template <typename Request>
const auto& OnlyItem(const Request& request) {
  return ItemsOf(request)[0];
}
const shadow::v1::PropertySetResult& OnlyItem(const shadow::v1::PropertySetResult& single) {
  return single;
}

/// `$oc/devices/{id}/sys/...` of a device response.
std::string ResponseTopic(const command_dispatch::v1::DeviceResponse& response) {
  const char* kind = "commands/response";
  if (response.kind() == command_dispatch::v1::RESPONSE_KIND_PROPERTIES_SET) {
    kind = "properties/set/response";
  } else if (response.kind() == command_dispatch::v1::RESPONSE_KIND_PROPERTIES_GET) {
    kind = "properties/get/response";
  }
  return fmt::format("$oc/devices/{}/sys/{}/request_id={}", response.device().device_id(), kind,
                     response.request_id());
}

/// What an owner's refused record was, found in what was sent to it.
struct Sent {
  dg::DeviceRef device;
  std::string topic;
  int64_t at_unix_ms = 0;
  bool validation_failed = false;  ///< itself a validation_failed record
};

/// Where a refused record came from (in what was sent): its device, topic and time for
/// validation_failed.
std::optional<Sent> FindSent(const Outputs& sent, const std::string& message_id) {
  for (const auto& report : sent.shadow_reports.reports()) {
    if (report.message_id() == message_id) {
      const auto& device = report.device();
      return Sent{
          .device = device,
          .topic = device.dialect() == "alink"
                       ? fmt::format("/sys/{}/{}/thing/event/property/post", device.product_id(),
                                     device.node_id())
                       : fmt::format("$oc/devices/{}/sys/properties/report", device.device_id()),
          .at_unix_ms = report.received_at_unix_ms(),
          .validation_failed = false};
    }
  }
  for (const auto& result : sent.shadow_set_results) {
    if (result.message_id() == message_id) {
      return Sent{.device = result.device(),
                  .topic = fmt::format("$oc/devices/{}/sys/properties/set/response/request_id={}",
                                       result.device().device_id(), result.request_id()),
                  .at_unix_ms = result.received_at_unix_ms(),
                  .validation_failed = false};
    }
  }
  for (const auto& response : sent.responses.responses()) {
    if (response.message_id() == message_id) {
      return Sent{.device = response.device(),
                  .topic = ResponseTopic(response),
                  .at_unix_ms = response.received_at_unix_ms(),
                  .validation_failed = false};
    }
  }
  for (const auto& event : sent.presence.events()) {
    if (event.message_id() == message_id) {
      return Sent{.device = event.device(),
                  .topic = "",
                  .at_unix_ms = ParseDeviceTime(event.event_time()).value_or(NowUnixMs()),
                  .validation_failed = false};
    }
  }
  for (const auto& record : sent.records.records()) {
    if (record.message_id() == message_id) {
      return Sent{.device = record.device(),
                  .topic = record.topic(),
                  .at_unix_ms = record.event_time_unix_ms(),
                  .validation_failed = record.event() == "validation_failed"};
    }
  }
  return std::nullopt;
}

}  // namespace

bool Retryable(absl::StatusCode code) {
  return code != absl::StatusCode::kInvalidArgument &&
         code != absl::StatusCode::kFailedPrecondition && code != absl::StatusCode::kOutOfRange;
}

bool UplinkPipeline::HasWork(Owner owner, const Outputs& out) {
  switch (owner) {
    case Owner::kShadow:
      return out.shadow_reports.reports_size() > 0 || !out.shadow_set_results.empty() ||
             out.presence.events_size() > 0 || !out.shadow_gets.empty() || !out.replies.empty();
    case Owner::kCommands:
      return out.responses.responses_size() > 0 || out.presence.events_size() > 0;
    case Owner::kRules:
      return out.records.records_size() > 0;
  }
  return false;
}

void UplinkPipeline::MergeInto(Owner owner, const Outputs& from, Outputs& to) {
  switch (owner) {
    case Owner::kShadow:
      to.shadow_reports.MergeFrom(from.shadow_reports);
      to.shadow_set_results.insert(to.shadow_set_results.end(), from.shadow_set_results.begin(),
                                   from.shadow_set_results.end());
      to.presence.MergeFrom(from.presence);
      to.shadow_gets.insert(to.shadow_gets.end(), from.shadow_gets.begin(), from.shadow_gets.end());
      to.replies.insert(to.replies.end(), from.replies.begin(), from.replies.end());
      return;
    case Owner::kCommands:
      to.responses.MergeFrom(from.responses);
      to.presence.MergeFrom(from.presence);
      return;
    case Owner::kRules:
      to.records.MergeFrom(from.records);
      return;
  }
}

std::string_view UplinkPipeline::OwnerName(Owner owner) {
  switch (owner) {
    case Owner::kShadow:
      return "shadow";
    case Owner::kCommands:
      return "command-dispatch";
    case Owner::kRules:
      return "rule-forwarding";
  }
  return "unknown";
}

std::string_view TargetName(Target target) {
  switch (target) {
    case Target::kThingModelPresence:
      return "thing_model.ReportDevicePresence";
    case Target::kShadowReport:
      return "shadow.ReportProperties";
    case Target::kShadowPropertySet:
      return "shadow.CompletePropertySet";
    case Target::kShadowGet:
      return "shadow.GetDeviceShadowForDevice";
    case Target::kShadowPresence:
      return "shadow.ReportPresence";
    case Target::kCommandResponses:
      return "command_dispatch.CompleteRequests";
    case Target::kCommandPresence:
      return "command_dispatch.ReportPresence";
    case Target::kRuleIngest:
      return "rule_forwarding.Ingest";
  }
  return "unknown";
}

UplinkPipeline::UplinkPipeline(PipelineOptions options, std::shared_ptr<DeviceCache> devices,
                               std::shared_ptr<Downstream> downstream,
                               std::shared_ptr<DeviceStatusSink> device_status,
                               std::shared_ptr<DevicePublisher> publisher,
                               std::shared_ptr<DeadLetterStore> dead_letters,
                               GatewayMetrics& metrics)
    : options_(std::move(options)),
      devices_(std::move(devices)),
      downstream_(std::move(downstream)),
      device_status_(std::move(device_status)),
      publisher_(std::move(publisher)),
      dead_letters_(std::move(dead_letters)),
      metrics_(metrics),
      ids_(options_.message_id_prefix),
      processor_(metrics_, options_.limits) {
  options_.shards = std::max<size_t>(options_.shards, 1);
  options_.max_batch = std::max<size_t>(options_.max_batch, 1);
  options_.owner_batches = std::max<size_t>(options_.owner_batches, 1);
  options_.max_attempts = std::max(options_.max_attempts, 1);
  for (size_t i = 0; i < options_.shards; ++i) {
    auto shard = std::make_unique<Shard>();
    for (size_t o = 0; o < kOwners; ++o) {
      shard->lanes[o] = std::make_unique<Lane>();
      shard->lanes[o]->owner = static_cast<Owner>(o);
    }
    shards_.push_back(std::move(shard));
  }
  for (auto& shard : shards_) {
    for (auto& lane : shard->lanes) {
      lane->thread = std::thread([this, l = lane.get()] { RunLane(*l); });
    }
    shard->sender = std::thread([this, s = shard.get()] { Run(*s); });
  }
}

UplinkPipeline::~UplinkPipeline() { Stop(Clock::now()); }

bool UplinkPipeline::Submit(WorkItem item, Ack ack) {
  std::visit(
      [this](auto& value) {
        if (value.message_id.empty()) {
          value.message_id = ids_.Next();
        }
      },
      item);
  Shard& shard = *shards_[std::hash<std::string>{}(DeviceOf(item)) % shards_.size()];
  {
    std::lock_guard lock(shard.mu);
    {
      std::lock_guard stop_lock(stop_mu_);
      if (stopping_) {
        return false;  // not acknowledged: the broker delivers it again
      }
    }
    shard.queue.push_back({.item = std::move(item), .ack = std::move(ack)});
  }
  ++pending_;
  metrics_.queue_depth.Increment();
  shard.changed.notify_all();
  return true;
}

void UplinkPipeline::Stop(Clock::time_point deadline) {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) {
      drain_deadline_ = std::min(drain_deadline_, deadline);
    } else {
      stopping_ = true;
      drain_deadline_ = deadline;
    }
  }
  stop_changed_.notify_all();
  size_t left = 0;
  for (auto& shard : shards_) {
    { std::lock_guard lock(shard->mu); }
    shard->changed.notify_all();
    if (shard->sender.joinable()) {
      shard->sender.join();
    }
    // The sender hands nothing more on: the lanes finish what they hold (or give up at the
    // deadline) and stop.
    for (auto& lane : shard->lanes) {
      {
        std::lock_guard lock(lane->mu);
        lane->closed = true;
      }
      lane->changed.notify_all();
      if (lane->thread.joinable()) {
        lane->thread.join();
      }
    }
    std::lock_guard lock(shard->mu);
    left += shard->queue.size();
    shard->queue.clear();
  }
  if (left > 0) {
    pending_ -= left;
    metrics_.unacknowledged.Increment(static_cast<double>(left));
    metrics_.queue_depth.Decrement(static_cast<double>(left));
    common::LogWarn(
        "gateway stopped before handing on every message it took: they are not acknowledged, "
        "the broker delivers them again",
        {{"messages", left}});
  }
}

bool UplinkPipeline::Stopped() {
  std::lock_guard lock(stop_mu_);
  return stopping_ && Clock::now() >= drain_deadline_;
}

bool UplinkPipeline::Wait(std::chrono::milliseconds delay) {
  std::unique_lock lock(stop_mu_);
  const auto until = Clock::now() + delay;
  stop_changed_.wait_until(lock, stopping_ ? std::min(until, drain_deadline_) : until,
                           [&] { return stopping_ && Clock::now() >= drain_deadline_; });
  return !(stopping_ && Clock::now() >= drain_deadline_);
}

absl::Status UplinkPipeline::Attempt(Target target, const std::function<absl::Status()>& call) {
  const std::string name(TargetName(target));
  common::Backoff backoff(options_.retry_initial, options_.retry_max);
  int refusals = 0;
  while (true) {
    const auto start = Clock::now();
    absl::Status status = call();
    metrics_.call_duration.Add({{"target", name}}, common::LatencyBuckets())
        .Observe(std::chrono::duration<double>(Clock::now() - start).count());
    if (status.ok()) {
      return status;
    }
    const std::string code(absl::StatusCodeToString(status.code()));
    metrics_.call_errors.Add({{"target", name}, {"code", code}}).Increment();
    if (!Retryable(status.code()) && ++refusals >= options_.max_attempts) {
      return status;
    }
    const auto delay = backoff.Next();
    if (backoff.attempts() == 1 || backoff.attempts() % 20 == 0) {
      common::LogWarn(Retryable(status.code()) ? "owner unavailable, retrying"
                                               : "owner refused a request, trying again",
                      {{"target", name},
                       {"code", code},
                       {"error", std::string(status.message())},
                       {"attempts", backoff.attempts()},
                       {"retry_in_ms", delay.count()}});
    }
    if (!Wait(delay)) {
      return absl::CancelledError("gateway stopped");
    }
  }
}

template <typename Request>
bool UplinkPipeline::DeadLetterOf(Target target, const Request& request,
                                  const absl::Status& refusal, int attempts) {
  const auto& item = OnlyItem(request);
  DeadLetter letter{.target = target,
                    .code = std::string(absl::StatusCodeToString(refusal.code())),
                    .error = std::string(refusal.message()),
                    .attempts = attempts,
                    .message_id = item.message_id(),
                    .device = item.device(),
                    .request_json = {}};
  (void)google::protobuf::util::MessageToJsonString(request, &letter.request_json);
  common::Backoff backoff(options_.retry_initial, options_.retry_max);
  while (true) {
    const absl::Status stored = dead_letters_->Put(letter);
    if (stored.ok()) {
      break;
    }
    if (backoff.attempts() % 20 == 0) {
      common::LogWarn("dead letter not stored yet, retrying",
                      {{"target", std::string(TargetName(target))},
                       {"message_id", letter.message_id},
                       {"error", std::string(stored.message())}});
    }
    if (!Wait(backoff.Next())) {
      return false;
    }
  }
  metrics_.dead_letters.Add({{"target", std::string(TargetName(target))}}).Increment();
  common::LogError("owner refused a record for good: stored in device_gateway.dead_letters",
                   {{"target", std::string(TargetName(target))},
                    {"device_id", letter.device.device_id()},
                    {"message_id", letter.message_id},
                    {"code", letter.code},
                    {"error", letter.error}});
  return true;
}

template <typename Request>
bool UplinkPipeline::DeliverBatch(Target target, const Request& request,
                                  const std::function<OwnerAnswer(const Request&)>& call,
                                  Rejections& rejected) {
  if (const int count = Count(request); count > 1 && request.ByteSizeLong() > kMaxCallBytes) {
    int begin = 0;
    size_t bytes = 0;
    for (int i = 0; i < count; ++i) {
      const size_t size = ItemBytes(request, i);
      if (i > begin && bytes + size > kMaxCallBytes) {
        if (!DeliverBatch(target, Slice(request, begin, i), call, rejected)) {
          return false;
        }
        begin = i;
        bytes = 0;
      }
      bytes += size;
    }
    return DeliverBatch(target, Slice(request, begin, count), call, rejected);
  }
  OwnerAnswer answer = dg::IngestAck();
  const absl::Status status = Attempt(target, [&] {
    answer = call(request);
    return answer.status();
  });
  if (status.ok()) {
    rejected.insert(rejected.end(), answer->rejected().begin(), answer->rejected().end());
    return true;
  }
  if (status.code() == absl::StatusCode::kCancelled) {
    return false;  // stopped (a CANCELLED answer is retried, never returned)
  }
  const int count = Count(request);
  if (count > 1) {
    // One bad record must not take the others with it: each half gets its own tries.
    common::LogWarn("owner refused a batch: splitting it to find what it refuses",
                    {{"target", std::string(TargetName(target))},
                     {"records", count},
                     {"code", std::string(absl::StatusCodeToString(status.code()))},
                     {"error", std::string(status.message())}});
    return DeliverBatch(target, Slice(request, 0, count / 2), call, rejected) &&
           DeliverBatch(target, Slice(request, count / 2, count), call, rejected);
  }
  return DeadLetterOf(target, request, status, options_.max_attempts);
}

std::optional<std::shared_ptr<const DeviceInfo>> UplinkPipeline::Resolve(const WorkItem& item) {
  const std::string& device_id = DeviceOf(item);
  common::Backoff backoff(options_.retry_initial, options_.retry_max);
  while (true) {
    auto device = devices_->Get(device_id);
    if (device.ok()) {
      return *device;
    }
    const auto code = device.status().code();
    if (code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInvalidArgument) {
      return std::shared_ptr<const DeviceInfo>();
    }
    metrics_.call_errors
        .Add({{"target", "thing_model.GetDeviceContext"},
              {"code", std::string(absl::StatusCodeToString(code))}})
        .Increment();
    if (backoff.attempts() == 0) {
      common::LogWarn(
          "cannot resolve device, retrying",
          {{"device_id", device_id}, {"error", std::string(device.status().message())}});
    }
    if (!Wait(backoff.Next())) {
      return std::nullopt;
    }
  }
}

bool UplinkPipeline::RecordPresence(const DeviceInfo& device, const PresenceEvent& event,
                                    bool& known) {
  dg::PresenceEvents one;
  auto* record = one.add_events();
  record->set_message_id(event.message_id);
  SetDeviceRef(device, record->mutable_device());
  record->set_online(event.online);
  record->set_event_time(event.time);
  record->set_reason(event.reason);
  record->set_client_address(event.client_address);
  known = true;
  Rejections ignored;
  return DeliverBatch<dg::PresenceEvents>(
      Target::kThingModelPresence, one,
      [&](const dg::PresenceEvents&) -> OwnerAnswer {
        const absl::Status status = device_status_->ReportPresence(event);
        if (status.code() == absl::StatusCode::kNotFound) {
          known = false;
          return dg::IngestAck();
        }
        if (!status.ok()) {
          return status;
        }
        return dg::IngestAck();
      },
      ignored);
}

bool UplinkPipeline::FlushShadow(const Outputs& out, Rejections& rejected) {
  if (out.shadow_reports.reports_size() > 0 &&
      !DeliverBatch<shadow::v1::ReportPropertiesRequest>(
          Target::kShadowReport, out.shadow_reports,
          [&](const auto& request) { return downstream_->ReportProperties(request); }, rejected)) {
    return false;
  }
  for (const auto& result : out.shadow_set_results) {
    if (!DeliverBatch<shadow::v1::PropertySetResult>(
            Target::kShadowPropertySet, result,
            [&](const auto& request) { return downstream_->CompletePropertySet(request); },
            rejected)) {
      return false;
    }
  }
  if (out.presence.events_size() > 0 &&
      !DeliverBatch<dg::PresenceEvents>(
          Target::kShadowPresence, out.presence,
          [&](const auto& request) { return downstream_->ShadowPresence(request); }, rejected)) {
    return false;
  }
  std::vector<DeviceReply> replies;
  for (const auto& get : out.shadow_gets) {
    std::optional<std::string> body;
    const bool alink = get.device().dialect() == "alink";
    const absl::Status status = Attempt(Target::kShadowGet, [&]() -> absl::Status {
      auto shadow = downstream_->GetDeviceShadow(get);
      if (shadow.ok()) {
        body = *std::move(shadow);
        return absl::OkStatus();
      }
      if (shadow.status().code() != absl::StatusCode::kNotFound) {
        return shadow.status();
      }
      // No shadow for the device: nothing to answer; an Alink device gets an empty document.
      if (alink) {
        body = R"({"shadow":[]})";
      }
      return absl::OkStatus();
    });
    if (status.code() == absl::StatusCode::kCancelled) {
      return false;
    }
    if (!status.ok()) {
      metrics_.call_dropped.Add({{"target", std::string(TargetName(Target::kShadowGet))}})
          .Increment();
      common::LogWarn(
          "shadow get refused: not answered",
          {{"device_id", get.device().device_id()}, {"error", std::string(status.message())}});
    }
    if (body && alink) {
      const auto parsed = nlohmann::json::parse(*body, nullptr, false);
      replies.push_back(
          {.device_topic = AlinkDeviceTopic(
               get.device().device_id(),
               fmt::format("/shadow/get/{}/{}", get.device().product_id(), get.device().node_id())),
           .payload = AlinkShadowReply(parsed.is_discarded() ? nlohmann::json::object() : parsed,
                                       NowUnixMs())
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)});
    } else if (body) {
      replies.push_back({.device_topic = DownlinkTopic(DownlinkKind::kShadowResponse,
                                                       get.device().device_id(), get.request_id()),
                         .payload = *std::move(body)});
    }
  }
  replies.insert(replies.end(), out.replies.begin(), out.replies.end());
  PublishReplies(replies, 1);
  return true;
}

void UplinkPipeline::PublishReplies(const std::vector<DeviceReply>& replies, int qos) {
  for (const auto& reply : replies) {
    // Best effort, as any downlink: a device that went away asks again.
    auto sent = publisher_->Publish(reply.device_topic, reply.payload, qos);
    const char* result = !sent.ok() ? "error" : (*sent ? "online" : "offline");
    metrics_.downlink.Add({{"kind", "reply"}, {"result", result}}).Increment();
    if (!sent.ok()) {
      common::LogWarn(
          "reply to a device not published",
          {{"topic", reply.device_topic}, {"error", std::string(sent.status().message())}});
    }
  }
}

bool UplinkPipeline::FlushCommands(const Outputs& out, Rejections& rejected) {
  if (out.responses.responses_size() > 0 &&
      !DeliverBatch<command_dispatch::v1::CompleteRequestsRequest>(
          Target::kCommandResponses, out.responses,
          [&](const auto& request) { return downstream_->CompleteRequests(request); }, rejected)) {
    return false;
  }
  return out.presence.events_size() == 0 ||
         DeliverBatch<dg::PresenceEvents>(
             Target::kCommandPresence, out.presence,
             [&](const auto& request) { return downstream_->CommandPresence(request); }, rejected);
}

bool UplinkPipeline::Flush(Owner owner, const Outputs& out) {
  Rejections rejected;
  bool handed_on = true;
  switch (owner) {
    case Owner::kShadow:
      handed_on = FlushShadow(out, rejected);
      break;
    case Owner::kCommands:
      handed_on = FlushCommands(out, rejected);
      break;
    case Owner::kRules:
      handed_on = out.records.records_size() == 0 ||
                  DeliverBatch<rule_forwarding::v1::IngestRequest>(
                      Target::kRuleIngest, out.records,
                      [&](const auto& request) { return downstream_->Ingest(request); }, rejected);
      break;
  }
  return handed_on && Refused(owner, out, rejected);
}

bool UplinkPipeline::Refused(Owner owner, const Outputs& sent, const Rejections& rejected) {
  if (rejected.empty()) {
    return true;
  }
  Outputs derived;
  for (const auto& record : rejected) {
    metrics_.Rejected(record.reason());
    if (RejectionLogAllowed()) {
      common::LogWarn("owner refused a record", {{"owner", std::string(OwnerName(owner))},
                                                 {"device_id", record.device_id()},
                                                 {"message_id", record.message_id()},
                                                 {"reason", record.reason()},
                                                 {"detail", record.detail()}});
    }
    const auto origin = FindSent(sent, record.message_id());
    // A refused validation_failed record is not answered with another one.
    if (origin && !origin->validation_failed) {
      processor_.OwnerRejected(origin->device, OwnerName(owner), record, origin->topic,
                               origin->at_unix_ms, derived);
    }
  }
  if (derived.records.records_size() == 0) {
    return true;
  }
  Rejections again;
  if (!DeliverBatch<rule_forwarding::v1::IngestRequest>(
          Target::kRuleIngest, derived.records,
          [&](const auto& request) { return downstream_->Ingest(request); }, again)) {
    return false;
  }
  for (const auto& record : again) {
    metrics_.Rejected(record.reason());
  }
  return true;
}

void UplinkPipeline::Done(Batch& batch, bool ok) {
  if (!ok) {
    batch.unfinished.store(true);
  }
  if (batch.remaining.fetch_sub(1) != 1) {
    return;
  }
  // Lanes finish batches out of order (a lane with nothing to do finishes at once): a batch is
  // acknowledged only once every earlier one of the shard is finished too.
  std::vector<std::shared_ptr<Batch>> finished;
  {
    std::lock_guard lock(batch.shard->finish_mu);
    batch.complete = true;
    auto& unfinished = batch.shard->unfinished;
    while (!unfinished.empty() && unfinished.front()->complete) {
      finished.push_back(std::move(unfinished.front()));
      unfinished.pop_front();
    }
  }
  for (const auto& done : finished) {
    const size_t messages = done->acks.size();
    pending_ -= messages;
    metrics_.queue_depth.Decrement(static_cast<double>(messages));
    if (done->unfinished.load()) {
      metrics_.unacknowledged.Increment(static_cast<double>(messages));
      common::LogWarn(
          "gateway stopped with messages not handed on: they are not acknowledged, the broker "
          "delivers them again",
          {{"messages", messages}});
      continue;
    }
    // Every owner has the batch: its confirmations may go out (at QoS 0: the network thread
    // never waits for them, and a lost one is a reply the device sees time out, as on a network
    // loss), then the broker learns it may forget the messages.
    PublishReplies(done->out.after_handoff, 0);
    for (const Ack& ack : done->acks) {
      if (ack) {
        ack();
      }
    }
  }
}

bool UplinkPipeline::HandOff(Lane& lane, const std::shared_ptr<Batch>& batch) {
  if (!HasWork(lane.owner, batch->out)) {
    Done(*batch, true);
    return true;
  }
  std::unique_lock lock(lane.mu);
  while (lane.queue.size() >= options_.owner_batches) {
    if (Stopped()) {
      lock.unlock();
      Done(*batch, false);
      return false;
    }
    // Re-checks the drain deadline at least every 100 ms (the lane may have given up).
    lane.changed.wait_for(lock, std::chrono::milliseconds(100));
  }
  lane.queue.push_back(batch);
  lane.changed.notify_all();
  return true;
}

void UplinkPipeline::RunLane(Lane& lane) {
  bool stopped = false;
  std::vector<std::shared_ptr<Batch>> taken;
  while (true) {
    {
      std::unique_lock lock(lane.mu);
      lane.changed.wait(lock, [&] { return lane.closed || !lane.queue.empty(); });
      if (lane.queue.empty()) {
        return;  // closed, everything handed on
      }
      taken.assign(lane.queue.begin(), lane.queue.end());
      lane.queue.clear();
    }
    lane.changed.notify_all();  // room for the sender
    if (!stopped) {
      if (taken.size() == 1) {
        stopped = !Flush(lane.owner, taken.front()->out);
      } else {
        Outputs merged;
        for (const auto& batch : taken) {
          MergeInto(lane.owner, batch->out, merged);
        }
        stopped = !Flush(lane.owner, merged);
      }
    }
    // Once stopped for good, whatever else arrives is left unacknowledged.
    for (const auto& batch : taken) {
      Done(*batch, !stopped);
    }
    taken.clear();
  }
}

void UplinkPipeline::Run(Shard& shard) {
  std::vector<Queued> batch;
  while (true) {
    {
      std::unique_lock lock(shard.mu);
      shard.changed.wait(lock, [&] {
        std::lock_guard stop_lock(stop_mu_);
        return stopping_ || !shard.queue.empty();
      });
      if (shard.queue.empty()) {
        return;  // stopping, everything delivered
      }
      while (!shard.queue.empty() && batch.size() < options_.max_batch) {
        batch.push_back(std::move(shard.queue.front()));
        shard.queue.pop_front();
      }
    }
    auto handed = std::make_shared<Batch>();
    handed->shard = &shard;
    handed->acks.reserve(batch.size());
    for (auto& queued : batch) {
      handed->acks.push_back(std::move(queued.ack));
    }
    {
      std::lock_guard lock(shard.finish_mu);
      shard.unfinished.push_back(handed);
    }
    Outputs& out = handed->out;
    bool stopped = false;
    for (const Queued& queued : batch) {
      const WorkItem& item = queued.item;
      if (!HasDevice(item)) {
        // A relayed topic without a device: counted when refused, nobody to tell.
        continue;
      }
      auto device = Resolve(item);
      if (!device) {
        stopped = true;
        break;
      }
      if (*device == nullptr) {
        metrics_.Rejected(RejectReason::kUnknownDevice);
        common::LogWarn("message of an unknown device dropped", {{"device_id", DeviceOf(item)}});
        continue;
      }
      if (const auto* presence = std::get_if<PresenceEvent>(&item)) {
        bool known = true;
        if (!RecordPresence(**device, *presence, known)) {
          stopped = true;
          break;
        }
        if (!known) {
          continue;
        }
      }
      try {
        std::visit([&](const auto& value) { processor_.Process(**device, value, out); }, item);
      } catch (const std::exception& e) {
        // A bug must not take the shard (and every device on it) down with it.
        metrics_.Rejected(RejectReason::kMalformed);
        common::LogError("device message could not be processed",
                         {{"device_id", DeviceOf(item)}, {"error", e.what()}});
      }
    }
    batch.clear();
    if (stopped) {
      handed->remaining.store(1);
      Done(*handed, false);
      return;
    }
    for (auto& lane : shard.lanes) {
      (void)HandOff(*lane, handed);
    }
  }
}

}  // namespace iot::device_gateway
