#include "iot/rule_forwarding/ingest.h"

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <chrono>

#include "iot/common/redis.h"
#include "iot/common/status.h"

namespace iot::rule_forwarding {
namespace {

constexpr size_t kMaxMessageIdBytes = 256;

std::string DedupeKey(const std::string& id) { return "rf:msg:" + id; }

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Delivery DeliveryOf(const IngestRecord& record) {
  Delivery d;
  d.tenant_id = record.tenant_id;
  d.device_id = record.device_id;
  d.product_id = record.product_id;
  d.resource = record.resource;
  d.event = record.event;
  d.topic = record.topic;
  d.event_time_unix_ms = record.event_time_unix_ms;
  return d;
}

bool IsRetryable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsResourceExhausted(status);
}

absl::Status CheckRecord(const IngestRecord& r, size_t i) {
  if (r.message_id.empty() || r.message_id.size() > kMaxMessageIdBytes) {
    return common::InvalidField(fmt::format("records[{}].message_id", i),
                                "is required (at most 256 bytes)");
  }
  if (r.tenant_id.empty()) {
    return common::InvalidField(fmt::format("records[{}].device.tenant_id", i), "is required");
  }
  if (r.resource.empty()) {
    return common::InvalidField(fmt::format("records[{}].resource", i), "is required");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<bool>> RedisDedupe::Claim(const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(ids.size());
  const std::string ttl = std::to_string(ttl_.count());
  for (const std::string& id : ids) {
    commands.push_back({"SET", DedupeKey(id), "1", "NX", "PX", ttl});
  }
  auto replies = redis_->Pipeline(commands);
  if (!replies.ok()) {
    return replies.status();
  }
  std::vector<bool> fresh;
  fresh.reserve(ids.size());
  for (const common::RedisReply& reply : *replies) {
    if (reply.is_error()) {
      return absl::UnavailableError("dedupe: " + reply.str);
    }
    fresh.push_back(!reply.is_nil());
  }
  return fresh;
}

void RedisDedupe::Release(const std::vector<std::string>& ids) {
  if (ids.empty()) {
    return;
  }
  std::vector<std::string> command = {"DEL"};
  for (const std::string& id : ids) {
    command.push_back(DedupeKey(id));
  }
  (void)redis_->Command(command);
}

IngestMetrics::IngestMetrics(prometheus::Registry& registry)
    : records(prometheus::BuildCounter()
                  .Name("iot_rf_ingested_records_total")
                  .Help("Forwarded records received from the gateway, by outcome (accepted, "
                        "duplicate, invalid_envelope)")
                  .Register(registry)),
      matches(prometheus::BuildCounter()
                  .Name("iot_rf_rule_matches_total")
                  .Help("Records that matched a rule (one per record and rule)")
                  .Register(registry)
                  .Add({})) {}

std::vector<DispatchItem> Route(const RuleSet& rules, const IngestRecord& record,
                                const nlohmann::json& envelope, int64_t receive_time_ms,
                                bool with_history) {
  static const nlohmann::json kNoConfig = nlohmann::json::object();
  std::vector<DispatchItem> items;
  const sql::EvalContext ctx{
      .topic = record.topic, .receive_time_ms = receive_time_ms, .tenant_id = record.tenant_id};
  for (const auto& rule : rules.ForTenant(record.tenant_id)) {
    const RuleRecord& r = rule->record;
    if (r.resource != record.resource ||
        (!r.product_id.empty() && r.product_id != record.product_id) ||
        (!r.device_id.empty() && r.device_id != record.device_id)) {
      continue;
    }
    // Matches() is allocation-free; most rules fail their WHERE on most records.
    if (!rule->compiled.Matches(envelope, ctx)) {
      continue;
    }
    auto output = rule->compiled.Evaluate(envelope, ctx);
    if (!output) {
      continue;
    }
    for (size_t i = 0; i < r.actions.size(); ++i) {
      DispatchItem item{.delivery = DeliveryOf(record),
                        .action_type = r.actions[i].type,
                        .action_index = static_cast<int>(i),
                        .keep_alive = rule};
      item.delivery.delivery_id = fmt::format("{}:{}:{}", record.message_id, r.rule_id, i);
      item.delivery.rule_id = r.rule_id;
      item.delivery.action_config = &r.actions[i].config;
      item.delivery.payload = i + 1 == r.actions.size() ? std::move(*output) : *output;
      items.push_back(std::move(item));
    }
  }
  if (with_history && record.resource == "device.property") {
    DispatchItem item{.delivery = DeliveryOf(record),
                      .action_type = "history",
                      .action_index = 0,
                      .keep_alive = nullptr};
    item.delivery.delivery_id = record.message_id + ":history";
    item.delivery.action_config = &kNoConfig;
    item.delivery.payload = envelope;
    items.push_back(std::move(item));
  }
  return items;
}

IngestService::IngestService(RulesSource rules, std::shared_ptr<Dedupe> dedupe,
                             std::shared_ptr<Dispatcher> dispatcher,
                             std::shared_ptr<IngestMetrics> metrics, std::shared_ptr<Outbox> outbox,
                             std::shared_ptr<Destination> history,
                             std::vector<std::shared_ptr<Destination>> direct)
    : rules_(std::move(rules)),
      dedupe_(std::move(dedupe)),
      dispatcher_(std::move(dispatcher)),
      metrics_(std::move(metrics)),
      outbox_(std::move(outbox)),
      history_(std::move(history)),
      direct_(std::move(direct)) {}

absl::Status IngestService::DeliverNow(Destination& destination, bool built_in_only,
                                       std::vector<DispatchItem>& items) {
  std::vector<DispatchItem> direct;
  std::erase_if(items, [&](DispatchItem& item) {
    if (item.action_type != destination.type() ||
        (built_in_only && !item.delivery.rule_id.empty())) {
      return false;
    }
    direct.push_back(std::move(item));
    return true;
  });
  if (direct.empty()) {
    return absl::OkStatus();
  }
  std::vector<Delivery> deliveries;
  deliveries.reserve(direct.size());
  for (DispatchItem& item : direct) {
    deliveries.push_back(std::move(item.delivery));
  }
  const absl::Status status = destination.Deliver(deliveries);
  if (status.ok() || IsRetryable(status)) {
    return status;  // a transient failure: the gateway retries the batch (backpressure)
  }
  // A permanent failure: the dispatcher retries and dead-letters them as any delivery.
  for (size_t i = 0; i < direct.size(); ++i) {
    direct[i].delivery = std::move(deliveries[i]);
    items.push_back(std::move(direct[i]));
  }
  return absl::OkStatus();
}

absl::Status IngestService::Ingest(const std::vector<IngestRecord>& records) {
  if (records.empty()) {
    return absl::OkStatus();
  }
  for (size_t i = 0; i < records.size(); ++i) {
    if (absl::Status s = CheckRecord(records[i], i); !s.ok()) {
      return s;
    }
  }
  const std::shared_ptr<const RuleSet> rules = rules_();
  if (!rules) {
    return absl::UnavailableError("rules are not loaded yet");
  }
  std::vector<std::string> ids;
  ids.reserve(records.size());
  for (const IngestRecord& r : records) {
    ids.push_back(r.message_id);
  }
  auto fresh = dedupe_->Claim(ids);
  if (!fresh.ok()) {
    return fresh.status();
  }
  const bool with_history = history_ != nullptr || dispatcher_->Has("history");
  const int64_t now = NowMs();
  std::vector<DispatchItem> items;
  std::vector<std::string> claimed;
  double duplicates = 0;
  double invalid = 0;
  double matches = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    if (!(*fresh)[i]) {
      ++duplicates;
      continue;
    }
    claimed.push_back(records[i].message_id);
    const auto envelope = nlohmann::json::parse(records[i].envelope_json, nullptr, false);
    if (envelope.is_discarded() || !envelope.is_object()) {
      ++invalid;
      continue;
    }
    auto routed = Route(*rules, records[i], envelope, now, with_history);
    for (DispatchItem& item : routed) {
      matches += item.delivery.rule_id.empty() || item.action_index != 0 ? 0 : 1;
      items.push_back(std::move(item));
    }
  }
  if (history_ || !direct_.empty()) {
    // What is delivered now cannot be taken back: refuse a batch the queues cannot take first
    // (its retry would deliver it again; the history through its slower duplicate path).
    if (absl::Status s = dispatcher_->CheckRoom(items); !s.ok()) {
      dedupe_->Release(claimed);
      return s;
    }
    // The history last: a retry after a failure of the others stores no row twice.
    for (const auto& destination : direct_) {
      if (absl::Status s = DeliverNow(*destination, false, items); !s.ok()) {
        dedupe_->Release(claimed);
        return s;
      }
    }
    if (history_) {
      if (absl::Status s = DeliverNow(*history_, true, items); !s.ok()) {
        dedupe_->Release(claimed);
        return s;
      }
    }
  }
  if (outbox_) {
    if (absl::Status s = outbox_->Add(items); !s.ok()) {
      dedupe_->Release(claimed);
      return s;
    }
  }
  std::vector<int64_t> stored;
  for (const DispatchItem& item : items) {
    if (item.outbox_id != 0) {
      stored.push_back(item.outbox_id);
    }
  }
  if (absl::Status s = dispatcher_->Enqueue(std::move(items)); !s.ok()) {
    if (!stored.empty()) {
      // If this fails, the rows stay with this replica: delivered after its restart, and again
      // for the gateway's retry - a duplicate, never a loss.
      (void)outbox_->Remove(stored);
    }
    dedupe_->Release(claimed);
    return s;
  }
  if (metrics_) {
    metrics_->records.Add({{"outcome", "accepted"}})
        .Increment(static_cast<double>(claimed.size()) - invalid);
    metrics_->records.Add({{"outcome", "duplicate"}}).Increment(duplicates);
    metrics_->records.Add({{"outcome", "invalid_envelope"}}).Increment(invalid);
    metrics_->matches.Increment(matches);
  }
  return absl::OkStatus();
}

}  // namespace iot::rule_forwarding
