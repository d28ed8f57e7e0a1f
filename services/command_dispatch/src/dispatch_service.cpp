#include "iot/command_dispatch/dispatch_service.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "iot/common/crypto.h"
#include "iot/common/json_limits.h"
#include "iot/common/logging.h"
#include "iot/common/metrics.h"
#include "iot/common/status.h"

namespace iot::command_dispatch {
namespace {

using common::InvalidField;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int32_t kDefaultLimit = 50;
constexpr int32_t kMaxLimit = 500;
constexpr int64_t kDefaultExpireSeconds = 86'400;
constexpr int64_t kMaxExpireSeconds = 172'800;
constexpr int64_t kMaxTtlMinutes = 30 * 24 * 60;
constexpr size_t kMaxIdLength = 64;
constexpr size_t kMaxTopicLength = 128;

/// A random decimal below 2^63 without leading zeros: Alibaba's C SDKs read the `id` of a
/// request as an unsigned integer (LinkSDK 4.x: uint64) and echo it back as one, and IoTDA
/// devices take any string. 63 random bits: unique enough for the table's primary key.
std::string NewRequestId() {
  const std::string bytes = common::RandomBytes(8);
  uint64_t value = 0;
  for (const char byte : bytes) {
    value = (value << 8) | static_cast<unsigned char>(byte);
  }
  value >>= 1;
  return std::to_string(value == 0 ? 1 : value);
}

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

absl::Status CheckId(std::string_view field, const std::string& id) {
  if (id.empty() || id.size() > kMaxIdLength || !std::all_of(id.begin(), id.end(), IsIdChar)) {
    return InvalidField(field, "must be 1 to 64 characters of [A-Za-z0-9_-]");
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseObject(std::string_view field, const std::string& text) {
  if (text.empty()) {
    return nlohmann::json::object();
  }
  auto value = common::ParseJson(field, text);
  if (!value.ok()) {
    return value.status();
  }
  if (!value->is_object()) {
    return InvalidField(field, "must be a JSON object");
  }
  return value;
}

absl::Status CheckTopic(const std::string& topic) {
  if (topic.size() > kMaxTopicLength) {
    return InvalidField("topic", "at most 128 characters");
  }
  if (topic.starts_with('/') || topic.find_first_of("+#") != std::string::npos ||
      topic.find("..") != std::string::npos || topic.find('\0') != std::string::npos) {
    return InvalidField("topic", "a topic below $oc/devices/{device_id}/user/, without wildcards");
  }
  return absl::OkStatus();
}

absl::StatusOr<milliseconds> SyncTimeout(int32_t timeout_seconds, const DispatchOptions& options) {
  if (timeout_seconds == 0) {
    return options.default_timeout;
  }
  const milliseconds timeout = seconds(timeout_seconds);
  if (timeout_seconds < 0 || timeout > options.max_timeout) {
    return InvalidField("timeout",
                        fmt::format("must be 1 to {} seconds", options.max_timeout.count() / 1000));
  }
  return timeout;
}

absl::StatusOr<int32_t> PageLimit(int32_t limit) {
  if (limit == 0) {
    return kDefaultLimit;
  }
  if (limit < 1 || limit > kMaxLimit) {
    return InvalidField("limit", "must be 1 to 500");
  }
  return limit;
}

std::string PropertiesSetPayload(const std::string& device_id, const nlohmann::json& services) {
  return nlohmann::json{{"object_device_id", device_id}, {"services", services}}.dump();
}

/// A command's service and name and its paras, checked against the model.
absl::StatusOr<nlohmann::json> CheckCommand(const DeviceInfo& device, const std::string& service_id,
                                            const std::string& command_name,
                                            const std::string& paras_json) {
  if (service_id.empty()) {
    return InvalidField("service_id", "required");
  }
  if (command_name.empty()) {
    return InvalidField("command_name", "required");
  }
  auto paras = ParseObject("paras", paras_json);
  if (!paras.ok()) {
    return paras.status();
  }
  if (absl::Status s =
          device.validator->ValidateCommand(service_id, command_name, *paras).ToStatus();
      !s.ok()) {
    return s;
  }
  return paras;
}

/// {"services":[{"service_id","properties":{}}]}, every property writable.
absl::StatusOr<nlohmann::json> CheckPropertiesSet(const DeviceInfo& device,
                                                  const std::string& services_json) {
  auto body = ParseObject("services", services_json);
  if (!body.ok()) {
    return body.status();
  }
  const auto it = body->find("services");
  if (it == body->end() || !it->is_array() || it->empty()) {
    return InvalidField("services", "a non-empty array of {service_id, properties}");
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& entry = (*it)[i];
    const std::string at = fmt::format("services[{}]", i);
    if (!entry.is_object() || !entry.contains("service_id") || !entry["service_id"].is_string()) {
      return InvalidField(at + ".service_id", "required");
    }
    if (!entry.contains("properties") || !entry["properties"].is_object() ||
        entry["properties"].empty()) {
      return InvalidField(at + ".properties", "a non-empty JSON object");
    }
    const std::string service_id = entry["service_id"].get<std::string>();
    auto result = device.validator->ValidateProperties(service_id, entry["properties"],
                                                       thing_model::PropertyMode::kWrite);
    if (absl::Status s = result.ToStatus(); !s.ok()) {
      // The validator names the property within its service; the caller needs the entry too.
      const std::string field = common::FieldOf(s);
      const std::string message(s.message());
      return InvalidField(fmt::format("{}.{}", at, field),
                          message.substr(std::min(message.size(), field.size() + 2)));
    }
  }
  return *it;
}

/// A move to a final status.
Transition Finish(std::string_view from, std::string_view to, std::string error) {
  Transition t;
  t.from = {from};
  t.to = to;
  t.error = std::move(error);
  t.finished = true;
  return t;
}

/// The record of a sync request (SENT, owned by `owner`) with the payload to publish; the body
/// checked against the device's model.
absl::StatusOr<RequestRecord> SyncRecord(const DeviceInfo& device, const SyncRequest& request,
                                         const std::string& owner) {
  RequestRecord record;
  record.request_id = NewRequestId();
  record.tenant_id = device.tenant_id;
  record.device_id = request.device_id;
  record.kind = request.kind;
  record.service_id = request.service_id;
  record.command_name = request.command_name;
  record.body = request.body_json;
  record.status = status::kSent;
  record.owner = owner;
  switch (request.kind) {
    case Kind::kCommand: {
      auto paras =
          CheckCommand(device, request.service_id, request.command_name, request.body_json);
      if (!paras.ok()) {
        return paras.status();
      }
      record.body = paras->dump();
      record.payload =
          CommandPayload(request.device_id, request.service_id, request.command_name, *paras);
      break;
    }
    case Kind::kPropertiesSet: {
      auto services = CheckPropertiesSet(device, request.body_json);
      if (!services.ok()) {
        return services.status();
      }
      record.body = services->dump();
      record.payload = PropertiesSetPayload(request.device_id, *services);
      break;
    }
    case Kind::kPropertiesGet: {
      if (!request.service_id.empty() &&
          device.validator->model().FindService(request.service_id) == nullptr) {
        return InvalidField("service_id", fmt::format("unknown service '{}'", request.service_id));
      }
      nlohmann::json payload{{"object_device_id", request.device_id}};
      if (!request.service_id.empty()) {
        payload["service_id"] = request.service_id;
      }
      record.payload = payload.dump();
      break;
    }
    default:
      return absl::InternalError("not a sync kind");
  }
  return record;
}

}  // namespace

std::string CommandPayload(const std::string& device_id, const std::string& service_id,
                           const std::string& command_name, const nlohmann::json& paras) {
  return nlohmann::json{{"object_device_id", device_id},
                        {"service_id", service_id},
                        {"command_name", command_name},
                        {"paras", paras}}
      .dump();
}

std::string_view ResultStatus(const std::string& payload_json) {
  // A device's response (from the gateway): bounded before it is parsed.
  const auto parsed =
      common::ParseJson("payload_json", payload_json, common::ProcessJsonLimits().Internal());
  const nlohmann::json payload = parsed.ok() ? *parsed : nlohmann::json();
  if (payload.is_object()) {
    const auto code = payload.find("result_code");
    if (code != payload.end() && !(code->is_number() && *code == 0)) {
      return status::kFailed;
    }
  }
  return status::kSuccessful;
}

DispatchMetrics::DispatchMetrics(prometheus::Registry& registry)
    : requests(prometheus::BuildCounter()
                   .Name("iot_command_dispatch_requests_total")
                   .Help("Requests to devices reaching a status, by kind and status")
                   .Register(registry)),
      responses(prometheus::BuildCounter()
                    .Name("iot_command_dispatch_responses_total")
                    .Help("Device responses by route: local (this replica waited), forwarded "
                          "(to the waiting replica), stored (async, late or nobody waiting), "
                          "unknown (no such open request)")
                    .Register(registry)),
      latency(prometheus::BuildHistogram()
                  .Name("iot_command_dispatch_sync_duration_seconds")
                  .Help("Sync command / property set / get round trip, by kind")
                  .Register(registry)),
      swept(prometheus::BuildCounter()
                .Name("iot_command_dispatch_swept_total")
                .Help("Requests the sweeper moved to EXPIRED or TIMEOUT")
                .Register(registry)
                .Add({})),
      rejections(registry, "iot_command_dispatch_rejected_records_total",
                 "Records refused for good and returned in IngestAck.rejected, by reason") {}

DispatchService::DispatchService(std::shared_ptr<RequestStore> store,
                                 std::shared_ptr<DeviceDirectory> devices,
                                 std::shared_ptr<DevicePublisher> publisher,
                                 std::shared_ptr<ResponseRouter> router,
                                 std::shared_ptr<DispatchMetrics> metrics, DispatchOptions options)
    : store_(std::move(store)),
      devices_(std::move(devices)),
      publisher_(std::move(publisher)),
      router_(std::move(router)),
      metrics_(std::move(metrics)),
      options_(std::move(options)),
      inserts_([this](const std::vector<NewRequest>& batch) { return store_->InsertMany(batch); },
               options_.max_batch),
      completions_(
          [this](const std::vector<ResponseRecord>& batch) { return store_->CompleteMany(batch); },
          options_.max_batch) {}

absl::Status DispatchService::Start() {
  return router_->Start([this](const Completion& c) { Resolve(c); }, [this] { ResyncWaiters(); });
}

void DispatchService::Stop() { router_->Stop(); }

void DispatchService::Count(Kind kind, std::string_view status) {
  metrics_->requests.Add({{"kind", std::string(KindName(kind))}, {"status", std::string(status)}})
      .Increment();
}

absl::StatusOr<DeviceInfo> DispatchService::DeviceOf(const common::Principal& caller,
                                                     const std::string& device_id) {
  if (device_id.empty()) {
    return InvalidField("device_id", "required");
  }
  auto device = devices_->Lookup(device_id);
  if (!device.ok()) {
    return device.status();
  }
  if (caller.role != common::Role::kService && device->tenant_id != caller.tenant_id) {
    return absl::NotFoundError(fmt::format("device '{}' not found", device_id));
  }
  return device;
}

std::shared_ptr<DispatchService::Waiter> DispatchService::AddWaiter(const std::string& id,
                                                                    const std::string& device_id,
                                                                    Kind kind) {
  auto waiter = std::make_shared<Waiter>();
  waiter->device_id = device_id;
  waiter->kind = kind;
  std::lock_guard lock(waiters_mu_);
  waiters_[id] = waiter;
  return waiter;
}

void DispatchService::RemoveWaiter(const std::string& id) {
  std::lock_guard lock(waiters_mu_);
  waiters_.erase(id);
}

bool DispatchService::Resolve(const Completion& completion) {
  std::shared_ptr<Waiter> waiter;
  {
    std::lock_guard lock(waiters_mu_);
    auto it = waiters_.find(completion.request_id);
    if (it == waiters_.end()) {
      return false;
    }
    waiter = it->second;
  }
  {
    std::lock_guard lock(waiter->mu);
    if (waiter->completion) {
      return false;  // a duplicate
    }
    waiter->completion = completion;
  }
  waiter->cv.notify_all();
  return true;
}

bool DispatchService::ResolveEarly(const DeviceResponse& response) {
  std::shared_ptr<Waiter> waiter;
  {
    std::lock_guard lock(waiters_mu_);
    auto it = waiters_.find(response.request_id);
    if (it == waiters_.end() || it->second->device_id != response.device_id) {
      return false;
    }
    waiter = it->second;
  }
  return Resolve({.request_id = response.request_id,
                  .kind = waiter->kind,
                  .status = std::string(ResultStatus(response.payload_json)),
                  .payload_json = response.payload_json,
                  .owner = options_.replica_id});
}

void DispatchService::ResyncWaiters() {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(waiters_mu_);
    for (const auto& [id, waiter] : waiters_) {
      ids.push_back(id);
    }
  }
  for (const std::string& id : ids) {
    auto found = store_->Find(id);
    if (found.ok() && found->result &&
        (found->status == status::kSuccessful || found->status == status::kFailed)) {
      Resolve({.request_id = id,
               .kind = found->kind,
               .status = found->status,
               .payload_json = *found->result,
               .owner = options_.replica_id});
    }
  }
}

absl::StatusOr<SyncResult> DispatchService::SendSync(
    const common::Principal& caller, const SyncRequest& request,
    std::chrono::system_clock::time_point deadline) {
  auto device = DeviceOf(caller, request.device_id);
  if (!device.ok()) {
    return device.status();
  }
  auto timeout = SyncTimeout(request.timeout_seconds, options_);
  if (!timeout.ok()) {
    return timeout.status();
  }
  auto record = SyncRecord(*device, request, options_.replica_id);
  if (!record.ok()) {
    return record.status();
  }

  const auto started = std::chrono::steady_clock::now();
  auto waiter = AddWaiter(record->request_id, record->device_id, record->kind);
  struct Cleanup {
    DispatchService* self;
    const std::string& id;
    ~Cleanup() { self->RemoveWaiter(id); }
  } cleanup{this, record->request_id};
  // Recorded (with this replica as its owner, for the response's routing) before it is sent;
  // concurrent calls share one statement.
  if (absl::Status s = inserts_.Submit(
          NewRequest{.record = *record, .expire_in = std::nullopt, .deadline_in = *timeout});
      !s.ok()) {
    return s;
  }
  Count(record->kind, status::kSent);
  if (absl::Status s = PublishSync(*record); !s.ok()) {
    return s;
  }

  const auto wait_until = std::min(std::chrono::system_clock::now() + *timeout, deadline);
  auto completion = AwaitSync(*waiter, *record, wait_until);
  if (!completion.ok()) {
    return absl::DeadlineExceededError(
        fmt::format("no response from device '{}' within {} s (request {})", record->device_id,
                    std::chrono::duration_cast<seconds>(*timeout).count(), record->request_id));
  }
  metrics_->latency.Add({{"kind", std::string(KindName(record->kind))}}, common::LatencyBuckets())
      .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return SyncResult{.request_id = record->request_id, .response_json = completion->payload_json};
}

absl::Status DispatchService::PublishSync(const RequestRecord& record) {
  auto online = publisher_->Publish({.tenant_id = record.tenant_id,
                                     .device_id = record.device_id,
                                     .kind = record.kind,
                                     .request_id = record.request_id,
                                     .payload = record.payload,
                                     .user_topic = {}});
  if (online.ok() && *online) {
    return absl::OkStatus();
  }
  const std::string error =
      online.ok() ? "device offline" : "device-gateway: " + std::string(online.status().message());
  (void)store_->Move(record.request_id, Finish(status::kSent, status::kFailed, error));
  Count(record.kind, status::kFailed);
  if (!online.ok()) {
    return absl::UnavailableError(error);
  }
  return absl::FailedPreconditionError(fmt::format("device '{}' is offline", record.device_id));
}

absl::StatusOr<Completion> DispatchService::AwaitSync(
    Waiter& waiter, const RequestRecord& record, std::chrono::system_clock::time_point wait_until) {
  {
    std::unique_lock lock(waiter.mu);
    waiter.cv.wait_until(lock, wait_until, [&] { return waiter.completion.has_value(); });
    if (waiter.completion) {
      return *waiter.completion;
    }
  }
  auto moved = store_->Move(record.request_id,
                            Finish(status::kSent, status::kTimeout, "no response in time"));
  if (moved.ok() && !*moved) {
    // Completed meanwhile, but the routed completion was lost: the record has it.
    auto found = store_->Find(record.request_id);
    if (found.ok() && found->result && found->status != status::kTimeout) {
      return Completion{.request_id = record.request_id,
                        .kind = record.kind,
                        .status = found->status,
                        .payload_json = *found->result,
                        .owner = options_.replica_id};
    }
  }
  Count(record.kind, status::kTimeout);
  return absl::DeadlineExceededError("no response in time");
}

absl::Status DispatchService::Drain(const std::string& device_id, std::string* failure) {
  std::shared_ptr<std::mutex> device_mu;
  {
    std::lock_guard lock(drains_mu_);
    auto& slot = drains_[device_id];
    if (!slot) {
      slot = std::make_shared<std::mutex>();
    }
    device_mu = slot;
  }
  absl::Status result;
  {
    std::lock_guard device_lock(*device_mu);
    auto drained = store_->DrainPending(
        device_id, options_.claim_timeout, options_.async_response_timeout,
        [&](const RequestRecord& item) {
          auto online = publisher_->Publish({.tenant_id = item.tenant_id,
                                             .device_id = item.device_id,
                                             .kind = item.kind,
                                             .request_id = item.request_id,
                                             .payload = item.payload,
                                             .user_topic = item.topic});
          if (!online.ok()) {
            if (failure != nullptr) {
              *failure = "device-gateway: " + std::string(online.status().message());
            }
            return SendOutcome::kFailed;
          }
          if (!*online) {
            if (failure != nullptr) {
              *failure = "device offline";
            }
            return SendOutcome::kOffline;
          }
          Count(item.kind, status::kDelivered);
          return SendOutcome::kDelivered;
        });
    result = drained.status();
  }
  std::lock_guard lock(drains_mu_);
  if (auto it = drains_.find(device_id); it != drains_.end() && it->second.use_count() <= 2) {
    drains_.erase(it);
  }
  return result;
}

absl::StatusOr<RequestRecord> DispatchService::CreateMessage(const common::Principal& caller,
                                                             const MessageRequest& request) {
  auto device = DeviceOf(caller, request.device_id);
  if (!device.ok()) {
    return device.status();
  }
  RequestRecord record;
  record.request_id = request.message_id;
  record.tenant_id = device->tenant_id;
  record.device_id = request.device_id;
  record.kind = Kind::kMessage;
  record.name = request.name;
  record.topic = request.topic;
  record.send_strategy = request.payload_format.empty() ? "standard" : request.payload_format;
  record.status = status::kPending;
  if (record.request_id.empty()) {
    record.request_id = NewRequestId();
  } else if (absl::Status s = CheckId("message_id", record.request_id); !s.ok()) {
    return s;
  }
  if (request.name.size() > kMaxTopicLength) {
    return InvalidField("name", "at most 128 characters");
  }
  if (absl::Status s = CheckTopic(request.topic); !s.ok()) {
    return s;
  }
  if (record.send_strategy == "standard") {
    if (request.message_json.empty()) {
      return InvalidField("message", "a JSON value is required (payload_format standard)");
    }
    auto parsed = common::ParseJson("message", request.message_json);
    if (!parsed.ok()) {
      return parsed.status();
    }
    const nlohmann::json content = *std::move(parsed);
    record.body = content.dump();
    record.payload = nlohmann::json{
        {"object_device_id", request.device_id},
        {"name", request.name},
        {"id", record.request_id},
        {"content",
         content}}.dump();
  } else if (record.send_strategy == "raw") {
    if (request.raw_message.empty()) {
      return InvalidField("raw_message", "required with payload_format raw");
    }
    record.raw = request.raw_message;
    record.payload = request.raw_message;
  } else {
    return InvalidField("payload_format", "standard or raw");
  }
  milliseconds ttl = options_.default_message_ttl;
  if (request.ttl_seconds > 0) {
    ttl = seconds(request.ttl_seconds);
  } else if (request.ttl_seconds < 0 || request.ttl_minutes < 0 ||
             request.ttl_minutes > kMaxTtlMinutes) {
    return InvalidField(request.ttl_seconds < 0 ? "ttl_seconds" : "ttl",
                        "must be 0 (default) up to 30 days");
  } else if (request.ttl_minutes > 0) {
    ttl = std::chrono::minutes(request.ttl_minutes);
  }
  record.expire_seconds = std::chrono::duration_cast<seconds>(ttl).count();
  if (absl::Status s = store_->Insert(record, ttl, std::nullopt); !s.ok()) {
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(
          fmt::format("message_id '{}' already exists", record.request_id));
    }
    return s;
  }
  Count(Kind::kMessage, status::kPending);
  if (absl::Status s = Drain(request.device_id, nullptr); !s.ok()) {
    common::LogWarn("message stays pending",
                    {{"message_id", record.request_id}, {"error", std::string(s.message())}});
  }
  return store_->Get(record.tenant_id, record.device_id, Kind::kMessage, record.request_id);
}

absl::StatusOr<RequestRecord> DispatchService::CreateAsyncCommand(
    const common::Principal& caller, const AsyncCommandRequest& request) {
  auto device = DeviceOf(caller, request.device_id);
  if (!device.ok()) {
    return device.status();
  }
  auto paras = CheckCommand(*device, request.service_id, request.command_name, request.paras_json);
  if (!paras.ok()) {
    return paras.status();
  }
  const std::string strategy =
      request.send_strategy.empty() ? "immediately" : request.send_strategy;
  if (strategy != "immediately" && strategy != "delay") {
    return InvalidField("send_strategy", "immediately or delay");
  }
  if (request.expire_time < 0 || request.expire_time > kMaxExpireSeconds) {
    return InvalidField("expire_time", "must be 0 (default: 86400) up to 172800 seconds");
  }
  const int64_t expire = request.expire_time == 0 ? kDefaultExpireSeconds : request.expire_time;
  RequestRecord record;
  record.request_id = NewRequestId();
  record.tenant_id = device->tenant_id;
  record.device_id = request.device_id;
  record.kind = Kind::kAsyncCommand;
  record.service_id = request.service_id;
  record.command_name = request.command_name;
  record.body = paras->dump();
  record.payload =
      CommandPayload(request.device_id, request.service_id, request.command_name, *paras);
  record.send_strategy = strategy;
  record.expire_seconds = expire;
  record.status = status::kPending;
  if (absl::Status s = store_->Insert(record, seconds(expire), std::nullopt); !s.ok()) {
    return s;
  }
  Count(Kind::kAsyncCommand, status::kPending);
  std::string failure;
  if (absl::Status s = Drain(request.device_id, &failure); !s.ok()) {
    failure = std::string(s.message());
  }
  if (strategy == "immediately" && !failure.empty()) {
    auto moved =
        store_->Move(record.request_id, Finish(status::kPending, status::kFailed, failure));
    if (moved.ok() && *moved) {
      Count(Kind::kAsyncCommand, status::kFailed);
    }
  }
  return store_->Get(record.tenant_id, record.device_id, Kind::kAsyncCommand, record.request_id);
}

absl::StatusOr<RequestRecord> DispatchService::Show(const common::Principal& caller,
                                                    const std::string& device_id, Kind kind,
                                                    const std::string& request_id) {
  std::string tenant = caller.tenant_id;
  if (caller.role == common::Role::kService) {
    auto device = DeviceOf(caller, device_id);
    if (!device.ok()) {
      return device.status();
    }
    tenant = device->tenant_id;
  }
  if (device_id.empty()) {
    return InvalidField("device_id", "required");
  }
  if (request_id.empty()) {
    return InvalidField(kind == Kind::kMessage ? "message_id" : "command_id", "required");
  }
  return store_->Get(tenant, device_id, kind, request_id);
}

absl::StatusOr<Page<RequestRecord>> DispatchService::List(const common::Principal& caller,
                                                          const std::string& device_id, Kind kind,
                                                          const std::string& status_filter,
                                                          int32_t limit,
                                                          const std::string& marker) {
  if (device_id.empty()) {
    return InvalidField("device_id", "required");
  }
  if (!status_filter.empty() && !IsStatusOf(kind, status_filter)) {
    return InvalidField("status",
                        fmt::format("'{}' is not a status of {}", status_filter, KindName(kind)));
  }
  auto page_limit = PageLimit(limit);
  if (!page_limit.ok()) {
    return page_limit.status();
  }
  std::string tenant = caller.tenant_id;
  if (caller.role == common::Role::kService) {
    auto device = DeviceOf(caller, device_id);
    if (!device.ok()) {
      return device.status();
    }
    tenant = device->tenant_id;
  }
  return store_->List(tenant, device_id, kind, status_filter, *page_limit, marker);
}

absl::StatusOr<common::Rejected> DispatchService::CompleteRequests(
    const std::vector<DeviceResponse>& all) {
  // A call waiting here gets its response at once. The response is recorded before this
  // returns OK, and the gateway retries until then (at least once), so the recorded final
  // status cannot be lost even if this process dies after answering the call.
  common::Rejected rejected;
  std::vector<DeviceResponse> responses;
  responses.reserve(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const DeviceResponse& r = all[i];
    const char* missing = r.device_id.empty()    ? "device.device_id"
                          : r.request_id.empty() ? "request_id"
                                                 : nullptr;
    if (missing != nullptr) {
      metrics_->rejections.Reject(
          {.message_id = r.message_id,
           .device_id = r.device_id,
           .reason = "malformed",
           .detail = fmt::format("responses[{}].{}: is required", i, missing)},
          rejected);
      continue;
    }
    // A device's answer, from the gateway: over the limits it would never have been admitted.
    if (absl::Status s =
            common::CheckJsonLimits(fmt::format("responses[{}].payload_json", i), r.payload_json,
                                    common::ProcessJsonLimits().Internal());
        !s.ok()) {
      metrics_->rejections.Reject({.message_id = r.message_id,
                                   .device_id = r.device_id,
                                   .reason = "malformed",
                                   .detail = std::string(s.message())},
                                  rejected);
      continue;
    }
    responses.push_back(r);
  }
  std::vector<bool> local;
  std::vector<ResponseRecord> records;
  for (const DeviceResponse& response : responses) {
    local.push_back(ResolveEarly(response));
    records.push_back(ResponseRecord{
        .response = response, .final_status = std::string(ResultStatus(response.payload_json))});
  }
  // Concurrent calls share one statement.
  auto results = completions_.Submit(std::move(records));
  absl::Status failed;
  for (size_t i = 0; i < responses.size(); ++i) {
    auto& completed = results[i];
    if (!completed.ok()) {
      failed.Update(completed.status());
      continue;
    }
    std::string route = local[i] ? "local" : "unknown";
    if (*completed) {
      Count((*completed)->kind, (*completed)->status);
      if (!local[i]) {
        route = IsSync((*completed)->kind) ? Route(**completed) : "stored";
      }
    }
    metrics_->responses.Add({{"route", route}}).Increment();
  }
  if (!failed.ok()) {
    return failed;
  }
  return rejected;
}

absl::StatusOr<common::Rejected> DispatchService::ReportPresence(
    const std::vector<DevicePresence>& events) {
  common::Rejected rejected;
  // A device's last event in the batch decides: connect-then-disconnect sends nothing.
  std::vector<std::string> online;
  for (size_t i = 0; i < events.size(); ++i) {
    const DevicePresence& event = events[i];
    if (event.device_id.empty()) {
      metrics_->rejections.Reject(
          {.message_id = event.message_id,
           .device_id = {},
           .reason = "malformed",
           .detail = fmt::format("events[{}].device.device_id: is required", i)},
          rejected);
      continue;
    }
    std::erase(online, event.device_id);
    if (event.online) {
      online.push_back(event.device_id);
    }
  }
  for (const std::string& device_id : online) {
    if (absl::Status s = DeviceOnline(device_id); !s.ok()) {
      return s;
    }
  }
  return rejected;
}

std::string DispatchService::Route(const Completion& completion) {
  if (Resolve(completion)) {
    return "local";
  }
  auto forwarded = router_->Forward(completion);
  if (!forwarded.ok()) {
    // The waiting replica reads it back after its timeout (ResyncWaiters / Find).
    common::LogWarn("response not forwarded",
                    {{"request_id", completion.request_id},
                     {"error", std::string(forwarded.status().message())}});
    return "stored";
  }
  return *forwarded ? "forwarded" : "stored";
}

absl::Status DispatchService::DeviceOnline(const std::string& device_id) {
  return Drain(device_id, nullptr);
}

absl::Status DispatchService::Sweep() {
  auto moved = store_->Sweep(options_.sweep_grace);
  if (!moved.ok()) {
    return moved.status();
  }
  metrics_->swept.Increment(*moved);
  return absl::OkStatus();
}

}  // namespace iot::command_dispatch
