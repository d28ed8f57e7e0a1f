#include "iot/shadow/shadow_service.h"

#include <fmt/format.h>

#include <set>

#include "iot/common/crypto.h"
#include "iot/common/json_limits.h"
#include "iot/common/logging.h"
#include "iot/common/status.h"
#include "iot/thing_model/validator.h"

namespace iot::shadow {
namespace {

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& registry,
                                                       const std::string& name,
                                                       const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

absl::Status DeviceNotFound(const std::string& device_id) {
  return absl::NotFoundError("device " + device_id + " not found");
}

}  // namespace

ShadowMetrics::ShadowMetrics(prometheus::Registry& registry)
    : reports(CounterFamily(registry, "iot_shadow_reports_total",
                            "Property reports merged into the live store, by outcome")),
      reports_applied(reports.Add({{"outcome", "applied"}})),
      reports_unchanged(reports.Add({{"outcome", "unchanged"}})),
      reports_duplicate(reports.Add({{"outcome", "duplicate"}})),
      reports_too_large(reports.Add({{"outcome", "too_large"}})),
      reports_malformed(reports.Add({{"outcome", "malformed"}})),
      properties_refused(CounterFamily(registry, "iot_shadow_properties_refused_total",
                                       "Reported properties refused (bad key or value)")
                             .Add({})),
      flushed_devices(CounterFamily(registry, "iot_shadow_flushed_devices_total",
                                    "Device shadows written behind to PostgreSQL")
                          .Add({})),
      flush_batches(CounterFamily(registry, "iot_shadow_flush_batches_total",
                                  "Write-behind batches written to PostgreSQL")
                        .Add({})),
      flush_failures(CounterFamily(registry, "iot_shadow_flush_failures_total",
                                   "Write-behind batches that failed and will be retried")
                         .Add({})),
      restores(CounterFamily(registry, "iot_shadow_restores_total",
                             "Device shadows restored from PostgreSQL into Redis")
                   .Add({})),
      rebuilds(CounterFamily(registry, "iot_shadow_rebuilds_total",
                             "Full rebuilds of the live store after Redis lost its data")
                   .Add({})),
      deltas_pushed(CounterFamily(registry, "iot_shadow_deltas_pushed_total",
                                  "Deltas pushed to online devices as property sets")
                        .Add({})),
      deltas_offline(CounterFamily(registry, "iot_shadow_deltas_offline_total",
                                   "Deltas not pushed because the device was offline")
                         .Add({})),
      push_failures(CounterFamily(registry, "iot_shadow_push_failures_total",
                                  "Delta pushes that failed at the gateway")
                        .Add({})),
      property_set_results(CounterFamily(registry, "iot_shadow_property_set_results_total",
                                         "Property-set responses recorded")
                               .Add({})),
      rejections(registry, "iot_shadow_rejected_records_total",
                 "Records refused for good and returned in IngestAck.rejected, by reason") {}

ShadowService::ShadowService(std::shared_ptr<LiveStore> live, std::shared_ptr<DurableStore> durable,
                             std::shared_ptr<DeviceDirectory> directory,
                             std::shared_ptr<DevicePublisher> publisher,
                             std::shared_ptr<ShadowMetrics> metrics, ShadowOptions options)
    : live_(std::move(live)),
      durable_(std::move(durable)),
      directory_(std::move(directory)),
      publisher_(std::move(publisher)),
      metrics_(std::move(metrics)),
      options_(options) {}

void ShadowService::Reject(common::Rejected& out, const std::string& message_id,
                           const std::string& device_id, std::string reason, std::string detail) {
  metrics_->rejections.Reject({.message_id = message_id,
                               .device_id = device_id,
                               .reason = std::move(reason),
                               .detail = std::move(detail)},
                              out);
}

absl::Status ShadowService::ParseReport(const Report& report, LiveStore::ReportWrite& write,
                                        size_t& refused) {
  write.device_id = report.device_id;
  write.tenant_id = report.tenant_id;
  write.message_id = report.message_id;
  // The gateway's selection of a device report: bounded before it is parsed and walked.
  if (absl::Status s = common::CheckJsonLimits("services_json", report.services_json,
                                               common::ProcessJsonLimits().Internal());
      !s.ok()) {
    return s;
  }
  const auto services = nlohmann::json::parse(report.services_json, nullptr, false);
  if (services.is_discarded() || !services.is_array()) {
    return common::InvalidField("services_json", "not a JSON array of services");
  }
  const int64_t received = report.received_at_ms > 0 ? report.received_at_ms : NowMs();
  for (const nlohmann::json& entry : services) {
    if (!entry.is_object() || !entry.contains("service_id") || !entry["service_id"].is_string() ||
        !entry.contains("properties") || !entry["properties"].is_object()) {
      ++refused;
      continue;
    }
    const std::string& service_id = entry["service_id"].get_ref<const std::string&>();
    if (!CheckKey("service_id", service_id).ok()) {
      ++refused;
      continue;
    }
    int64_t time_ms = received;
    if (auto it = entry.find("event_time"); it != entry.end() && it->is_string()) {
      time_ms = ParseEventTime(it->get_ref<const std::string&>()).value_or(received);
    }
    size_t kept = 0;
    for (const auto& [name, value] : entry["properties"].items()) {
      if (!CheckKey(name, name).ok() || value.is_null()) {
        ++refused;
        continue;
      }
      write.fields.emplace_back(PropertyField(field::kReported, service_id, name),
                                Stamp(time_ms, value.dump()));
      ++kept;
    }
    if (kept > 0) {
      write.fields.emplace_back(ServiceTimeField(field::kReportedTime, service_id),
                                Stamp(time_ms, IotdaTime(time_ms)));
    }
  }
  metrics_->properties_refused.Increment(static_cast<double>(refused));
  return absl::OkStatus();
}

absl::StatusOr<common::Rejected> ShadowService::ReportProperties(
    const std::vector<Report>& reports) {
  common::Rejected rejected;
  std::vector<LiveStore::ReportWrite> writes;
  std::vector<size_t> index;  // writes[k] is reports[index[k]]
  writes.reserve(reports.size());
  index.reserve(reports.size());
  for (size_t i = 0; i < reports.size(); ++i) {
    const Report& report = reports[i];
    const auto malformed = [&](const std::string& detail) {
      metrics_->reports_malformed.Increment();
      Reject(rejected, report.message_id, report.device_id, "malformed", detail);
    };
    if (report.device_id.empty()) {
      malformed(fmt::format("reports[{}].device.device_id: is required", i));
      continue;
    }
    if (report.message_id.empty()) {
      malformed(fmt::format("reports[{}].message_id: is required", i));
      continue;
    }
    LiveStore::ReportWrite write;
    size_t refused = 0;
    if (absl::Status parsed = ParseReport(report, write, refused); !parsed.ok()) {
      malformed(fmt::format("reports[{}].{}", i, std::string(parsed.message())));
      continue;
    }
    if (write.fields.empty()) {
      if (refused > 0) {
        metrics_->reports_malformed.Increment();
        Reject(rejected, report.message_id, report.device_id, "invalid_property",
               fmt::format("reports[{}].services_json: none of its {} properties can be kept "
                           "(keys with '.', '$' or NUL, null values, malformed services)",
                           i, refused));
      } else {
        metrics_->reports_unchanged.Increment();
      }
      continue;
    }
    writes.push_back(std::move(write));
    index.push_back(i);
  }
  if (writes.empty()) {
    return rejected;
  }
  auto results = live_->MergeReports(writes);
  if (!results.ok()) {
    return results.status();
  }
  std::set<std::string> restored;
  for (size_t k = 0; k < results->size(); ++k) {
    const LiveStore::WriteResult& result = (*results)[k];
    switch (result.outcome) {
      case LiveStore::Outcome::kApplied:
        metrics_->reports_applied.Increment();
        break;
      case LiveStore::Outcome::kUnchanged:
      case LiveStore::Outcome::kConflict:
        metrics_->reports_unchanged.Increment();
        break;
      case LiveStore::Outcome::kDuplicate:
        metrics_->reports_duplicate.Increment();
        break;
      case LiveStore::Outcome::kTooLarge:
        metrics_->reports_too_large.Increment();
        Reject(rejected, writes[k].message_id, writes[k].device_id, "too_large",
               fmt::format("reports[{}].services_json: the device's shadow would exceed {} bytes",
                           index[k], options_.max_document_bytes));
        break;
    }
    // First write after Redis lost the device: bring the older durable state back under it.
    if (result.created && restored.insert(writes[k].device_id).second) {
      if (absl::Status s = RestoreFromDurable(writes[k].device_id); !s.ok()) {
        common::LogWarn("restore from PostgreSQL failed; the rebuild will retry",
                        {{"device_id", writes[k].device_id}, {"error", std::string(s.message())}});
      }
    }
  }
  return rejected;
}

absl::Status ShadowService::RestoreFromDurable(const std::string& device_id) {
  auto durable = durable_->Load(device_id);
  if (!durable.ok()) {
    return durable.status();
  }
  if (!durable->has_value()) {
    return absl::OkStatus();
  }
  metrics_->restores.Increment();
  return live_->Restore(**durable);
}

absl::StatusOr<DeviceShadow> ShadowService::LoadLive(const std::string& device_id) {
  auto shadow = live_->Load(device_id);
  if (!shadow.ok() || shadow->exists) {
    return shadow;
  }
  if (absl::Status s = RestoreFromDurable(device_id); !s.ok()) {
    return s;
  }
  return live_->Load(device_id);
}

absl::StatusOr<std::string> ShadowService::DeviceShadowGet(const std::string& device_id,
                                                           const std::string& service_id) {
  auto shadow = LoadLive(device_id);
  if (!shadow.ok()) {
    return shadow.status();
  }
  return DeviceGetResponse(*shadow, service_id).dump();
}

absl::StatusOr<common::Rejected> ShadowService::CompletePropertySet(
    const std::string& message_id, const std::string& tenant_id, const std::string& device_id,
    const std::string& request_id, const std::string& payload_json, int64_t received_at_ms) {
  common::Rejected rejected;
  for (const auto& [value, name] :
       {std::pair{&device_id, "device.device_id"}, std::pair{&request_id, "request_id"},
        std::pair{&message_id, "message_id"}}) {
    if (value->empty()) {
      Reject(rejected, message_id, device_id, "malformed", fmt::format("{}: is required", name));
      return rejected;
    }
  }
  PropertySetRecord record;
  record.request_id = request_id;
  record.time_ms = received_at_ms > 0 ? received_at_ms : NowMs();
  const auto parsed =
      common::ParseJson("payload_json", payload_json, common::ProcessJsonLimits().Internal());
  const nlohmann::json payload = parsed.ok() ? *parsed : nlohmann::json();
  if (payload.is_object()) {
    if (auto it = payload.find("result_code"); it != payload.end() && it->is_number_integer()) {
      record.result_code = it->get<int>();
    }
    if (auto it = payload.find("result_desc"); it != payload.end() && it->is_string()) {
      record.result_desc = it->get<std::string>();
    }
  } else {
    record.result_code = -1;
    record.result_desc = "malformed response";
  }
  auto recorded = live_->RecordPropertySet(device_id, tenant_id, message_id, record);
  if (!recorded.ok()) {
    return recorded.status();
  }
  if (*recorded) {
    metrics_->property_set_results.Increment();
  }
  return rejected;
}

void ShadowService::PushDelta(const DeviceShadow& shadow) {
  auto body = PropertySetBody(shadow);
  if (!body) {
    return;
  }
  const std::string request_id = "shadow-" + common::HexEncode(common::RandomBytes(8));
  auto online =
      publisher_->PublishPropertySet(shadow.tenant_id, shadow.device_id, request_id, body->dump());
  if (!online.ok()) {
    metrics_->push_failures.Increment();
    common::LogWarn(
        "delta push failed; it is pushed again on the next connect",
        {{"device_id", shadow.device_id}, {"error", std::string(online.status().message())}});
  } else if (*online) {
    metrics_->deltas_pushed.Increment();
  } else {
    metrics_->deltas_offline.Increment();
  }
}

absl::StatusOr<common::Rejected> ShadowService::ReportPresence(
    const std::vector<Presence>& events) {
  common::Rejected rejected;
  for (size_t i = 0; i < events.size(); ++i) {
    const Presence& event = events[i];
    if (event.device_id.empty()) {
      Reject(rejected, event.message_id, event.device_id, "malformed",
             fmt::format("events[{}].device.device_id: is required", i));
      continue;
    }
    if (!event.online) {
      continue;
    }
    const std::string done_key = "presence:" + event.message_id;
    if (!event.message_id.empty()) {
      auto done = live_->IsDone(done_key);
      if (!done.ok()) {
        return done.status();
      }
      if (*done) {
        continue;
      }
    }
    // Best effort: a connect must not hold up the gateway's other traffic while PostgreSQL
    // is down (a device Redis does not hold needs it); the next connect pushes again.
    auto shadow = LoadLive(event.device_id);
    if (!shadow.ok()) {
      metrics_->push_failures.Increment();
      common::LogWarn(
          "cannot load the shadow for the connect push",
          {{"device_id", event.device_id}, {"error", std::string(shadow.status().message())}});
      continue;
    }
    if (shadow->tenant_id.empty()) {
      shadow->tenant_id = event.tenant_id;
    }
    PushDelta(*shadow);
    // Marked after the push: a redelivery after a crash in between pushes again (the device
    // gets the same delta twice), never not at all.
    if (!event.message_id.empty()) {
      if (absl::Status s = live_->MarkDone(done_key, options_.dedupe_ttl); !s.ok()) {
        common::LogDebug("presence event not marked done", {{"error", std::string(s.message())}});
      }
    }
  }
  return rejected;
}

absl::StatusOr<DeviceInfo> ShadowService::Authorize(const common::Principal& caller,
                                                    const std::string& device_id) {
  if (device_id.empty()) {
    return common::InvalidField("device_id", "required");
  }
  auto device = directory_->Find(device_id);
  if (!device.ok()) {
    return device.status().code() == absl::StatusCode::kNotFound ? DeviceNotFound(device_id)
                                                                 : device.status();
  }
  if (!caller.tenant_id.empty() && device->tenant_id != caller.tenant_id) {
    return DeviceNotFound(device_id);
  }
  return device;
}

namespace {

ShadowView MakeView(DeviceShadow shadow, const DeviceInfo& device, const std::string& only) {
  ShadowView view;
  for (const thing_model::Service& service : device.model->services()) {
    if (only.empty() || service.service_id == only) {
      view.service_ids.push_back(service.service_id);
    }
  }
  // Services stored but no longer in the model are still shown.
  for (const auto& [service_id, unused] : shadow.services) {
    if ((only.empty() || service_id == only) && !device.model->FindService(service_id)) {
      view.service_ids.push_back(service_id);
    }
  }
  shadow.device_id = device.device_id;
  shadow.tenant_id = device.tenant_id;
  view.shadow = std::move(shadow);
  return view;
}

/// Checks one service's desired properties (`at`: its place in the request) against the model:
/// a service of the model not `seen` before, writable properties, valid values (null removes).
absl::Status CheckDesiredService(const DeviceInfo& device, const thing_model::Validator& validator,
                                 const DesiredUpdate& update, const std::string& at,
                                 std::set<std::string>& seen) {
  if (!device.model->FindService(update.service_id)) {
    return common::InvalidField(at + ".service_id",
                                "'" + update.service_id + "' is not a service of the model");
  }
  if (!seen.insert(update.service_id).second) {
    return common::InvalidField(at + ".service_id", "service listed twice");
  }
  if (!update.properties.is_object() || update.properties.empty()) {
    return common::InvalidField(at + ".desired", "must be a non-empty JSON object");
  }
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [name, value] : update.properties.items()) {
    if (absl::Status s = CheckKey(fmt::format("{}.desired.{}", at, name), name); !s.ok()) {
      return s;
    }
    if (!value.is_null()) {
      values[name] = value;
    }
  }
  const thing_model::ValidationResult checked =
      validator.ValidateProperties(update.service_id, values, thing_model::PropertyMode::kWrite);
  if (!checked.ok()) {
    // The validator names `properties.<name>`; desired_json is the properties object itself.
    const thing_model::ValidationError& error = checked.errors.front();
    std::string_view path = error.path;
    if (path.starts_with("properties.")) {
      path.remove_prefix(std::string_view("properties.").size());
    }
    return common::InvalidField(at + ".desired." + std::string(path), error.message);
  }
  return absl::OkStatus();
}

/// Checks a desired update (every service once, each valid, one version); returns the version
/// it expects, if any.
absl::StatusOr<std::optional<int64_t>> CheckDesired(const DeviceInfo& device,
                                                    const std::vector<DesiredUpdate>& updates) {
  if (updates.empty()) {
    return common::InvalidField("shadow", "at least one service is required");
  }
  const thing_model::Validator validator(device.model);
  std::optional<int64_t> expected;
  std::set<std::string> seen;
  for (size_t i = 0; i < updates.size(); ++i) {
    const DesiredUpdate& update = updates[i];
    const std::string at = fmt::format("shadow[{}]", i);
    if (absl::Status s = CheckDesiredService(device, validator, update, at, seen); !s.ok()) {
      return s;
    }
    if (update.version) {
      if (expected && *expected != *update.version) {
        return common::InvalidField(at + ".version", "differs from the other entries' version");
      }
      expected = update.version;
    }
  }
  return expected;
}

/// Applies the updates to the durable desired side of `services` (stamped `now`) and returns
/// the live store's fields for the same change.
FieldValues ApplyDesiredFields(const std::vector<DesiredUpdate>& updates, int64_t now,
                               std::map<std::string, ServiceShadow>& services) {
  FieldValues fields;
  for (const DesiredUpdate& update : updates) {
    ShadowSide& side = services[update.service_id].desired;
    for (const auto& [name, value] : update.properties.items()) {
      const std::string key = PropertyField(field::kDesired, update.service_id, name);
      if (value.is_null()) {
        side.properties.erase(name);
        fields.emplace_back(key, "");
      } else {
        side.properties[name] = PropertyValue{.value = value, .time_ms = now};
        fields.emplace_back(key, Stamp(now, value.dump()));
      }
    }
    side.event_ms = now;
    side.event_time = IotdaTime(now);
    fields.emplace_back(ServiceTimeField(field::kDesiredTime, update.service_id),
                        Stamp(now, side.event_time));
  }
  return fields;
}

}  // namespace

absl::StatusOr<ShadowView> ShadowService::Show(const common::Principal& caller,
                                               const std::string& device_id,
                                               const std::string& service_id) {
  auto device = Authorize(caller, device_id);
  if (!device.ok()) {
    return device.status();
  }
  if (!service_id.empty() && !device->model->FindService(service_id)) {
    return common::InvalidField("service_id", "not a service of the device's product model");
  }
  auto shadow = LoadLive(device_id);
  if (!shadow.ok()) {
    return shadow.status();
  }
  return MakeView(*std::move(shadow), *device, service_id);
}

absl::StatusOr<ShadowView> ShadowService::UpdateDesired(const common::Principal& caller,
                                                        const std::string& device_id,
                                                        const std::vector<DesiredUpdate>& updates) {
  auto device = Authorize(caller, device_id);
  if (!device.ok()) {
    return device.status();
  }
  auto expected = CheckDesired(*device, updates);
  if (!expected.ok()) {
    return expected.status();
  }
  // Redis must hold the device (restored if it lost it) before its version is compared.
  if (auto live = LoadLive(device_id); !live.ok()) {
    return live.status();
  }

  const int64_t now = NowMs();
  absl::Status written = durable_->UpdateDesired(
      device_id, device->tenant_id,
      [&](std::map<std::string, ServiceShadow>& services) -> absl::StatusOr<int64_t> {
        const FieldValues fields = ApplyDesiredFields(updates, now, services);
        auto result =
            live_->ApplyDesired(device_id, device->tenant_id, expected->value_or(-1), fields);
        if (!result.ok()) {
          return result.status();
        }
        switch (result->outcome) {
          case LiveStore::Outcome::kConflict:
            return absl::AbortedError(
                fmt::format("version mismatch: expected {}, current version is {}", **expected,
                            result->version));
          case LiveStore::Outcome::kTooLarge:
            return common::InvalidField("shadow",
                                        fmt::format("the shadow document would exceed {} bytes",
                                                    options_.max_document_bytes));
          default:
            return result->version;
        }
      });
  if (!written.ok()) {
    return written;
  }
  auto shadow = live_->Load(device_id);
  if (!shadow.ok()) {
    return shadow.status();
  }
  PushDelta(*shadow);
  return MakeView(*std::move(shadow), *device, "");
}

absl::StatusOr<size_t> ShadowService::FlushOnce() {
  auto claimed = live_->ClaimDirty(options_.flush_batch, options_.flush_lease);
  if (!claimed.ok()) {
    return claimed.status();
  }
  if (claimed->empty()) {
    return 0;
  }
  // A claimed device whose hash is gone (deleted meanwhile) is only acknowledged.
  std::vector<DeviceShadow> present;
  for (const DeviceShadow& shadow : *claimed) {
    if (shadow.exists) {
      present.push_back(shadow);
    }
  }
  if (absl::Status s = durable_->WriteReported(present); !s.ok()) {
    metrics_->flush_failures.Increment();
    if (absl::Status released = live_->ReleaseClaims(*claimed); !released.ok()) {
      common::LogWarn("releasing write-behind claims failed; they expire with their lease",
                      {{"error", std::string(released.message())}});
    }
    return s;
  }
  metrics_->flush_batches.Increment();
  metrics_->flushed_devices.Increment(static_cast<double>(present.size()));
  if (absl::Status s = live_->AckFlushed(*claimed); !s.ok()) {
    return s;
  }
  return claimed->size();
}

absl::StatusOr<bool> ShadowService::RebuildIfFlushed() {
  auto marked = live_->HasMarker();
  if (!marked.ok()) {
    return marked.status();
  }
  if (*marked) {
    return false;
  }
  auto locked = live_->TryLockRebuild(std::chrono::minutes(5));
  if (!locked.ok()) {
    return locked.status();
  }
  if (!*locked) {
    return false;  // another replica is rebuilding
  }
  common::LogInfo("Redis has no shadow marker: rebuilding shadows from PostgreSQL");
  std::string after;
  size_t restored = 0;
  absl::Status status;
  while (status.ok()) {
    auto page = durable_->Scan(after, 500);
    if (!page.ok()) {
      status = page.status();
      break;
    }
    for (const DeviceShadow& shadow : *page) {
      status.Update(live_->Restore(shadow));
      after = shadow.device_id;
    }
    restored += page->size();
    if (page->size() < 500) {
      break;
    }
  }
  if (status.ok()) {
    status = live_->SetMarker();
  }
  if (!status.ok()) {
    (void)live_->UnlockRebuild();  // let the next attempt (any replica) start at once
    return status;
  }
  metrics_->rebuilds.Increment();
  metrics_->restores.Increment(static_cast<double>(restored));
  common::LogInfo("shadows rebuilt from PostgreSQL", {{"devices", restored}});
  return true;
}

}  // namespace iot::shadow
