#include "iot/rule_forwarding/ingest.h"

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <chrono>
#include <unordered_set>

#include "iot/common/json_limits.h"
#include "iot/common/logging.h"
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

absl::StatusOr<std::vector<bool>> RedisDedupe::Done(const std::vector<std::string>& ids) {
  // Marks not written yet first: one leaving them for Redis meanwhile is found there.
  std::vector<bool> done(ids.size(), false);
  std::vector<std::string> command = {"MGET"};
  std::vector<size_t> asked;
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (pending_.contains(ids[i]) || writing_.contains(ids[i])) {
        done[i] = true;
      } else {
        command.push_back(DedupeKey(ids[i]));
        asked.push_back(i);
      }
    }
  }
  if (asked.empty()) {
    return done;
  }
  auto reply = common::CheckReply(redis_->Command(command));
  if (!reply.ok()) {
    return reply.status();
  }
  if (reply->elements.size() != asked.size()) {
    return absl::UnavailableError("dedupe: unexpected MGET reply");
  }
  for (size_t k = 0; k < asked.size(); ++k) {
    done[asked[k]] = !reply->elements[k].is_nil();
  }
  return done;
}

RedisDedupe::RedisDedupe(std::shared_ptr<common::RedisClient> redis, std::chrono::milliseconds ttl,
                         size_t max_pending)
    : redis_(std::move(redis)), ttl_(ttl), max_pending_(max_pending) {
  writer_ = std::thread([this] { Run(); });
}

RedisDedupe::~RedisDedupe() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  writer_.join();
}

absl::Status RedisDedupe::MarkDone(const std::vector<std::string>& ids) {
  if (ids.empty()) {
    return absl::OkStatus();
  }
  {
    std::lock_guard lock(mu_);
    if (pending_.size() + ids.size() <= max_pending_ && !stopping_) {
      pending_.insert(ids.begin(), ids.end());
      wake_.notify_one();
      return absl::OkStatus();
    }
  }
  return Write(ids);  // the writer is behind (Redis slow): this caller waits for its own marks
}

absl::Status RedisDedupe::Write(const std::vector<std::string>& ids) {
  constexpr size_t kPipeline = 1000;
  const std::string ttl = std::to_string(ttl_.count());
  for (size_t from = 0; from < ids.size(); from += kPipeline) {
    std::vector<std::vector<std::string>> commands;
    const size_t to = std::min(ids.size(), from + kPipeline);
    commands.reserve(to - from);
    for (size_t i = from; i < to; ++i) {
      commands.push_back({"SET", DedupeKey(ids[i]), "1", "PX", ttl});
    }
    if (absl::Status s = redis_->Pipeline(commands).status(); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void RedisDedupe::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) {
      return;  // stopping, and every mark is written
    }
    writing_.swap(pending_);
    const std::vector<std::string> ids(writing_.begin(), writing_.end());
    lock.unlock();
    if (absl::Status s = Write(ids); !s.ok()) {
      common::LogDebug("dedupe marks not written (redeliveries run again, idempotently)",
                       {{"ids", ids.size()}, {"error", std::string(s.message())}});
    }
    lock.lock();
    writing_.clear();
  }
}

IngestMetrics::IngestMetrics(prometheus::Registry& registry)
    : records(prometheus::BuildCounter()
                  .Name("iot_rf_ingested_records_total")
                  .Help("Forwarded records received from the gateway, by outcome (accepted, "
                        "duplicate, rejected)")
                  .Register(registry)),
      matches(prometheus::BuildCounter()
                  .Name("iot_rf_rule_matches_total")
                  .Help("Records that matched a rule (one per record and rule)")
                  .Register(registry)
                  .Add({})),
      rejections(registry, "iot_rf_rejected_records_total",
                 "Records refused for good and returned in IngestAck.rejected, by reason") {}

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

absl::Status IngestService::StoreAndQueue(std::vector<DispatchItem> items) {
  if (outbox_) {
    if (absl::Status s = outbox_->Add(items); !s.ok()) {
      return s;
    }
  }
  std::vector<int64_t> stored;
  for (const DispatchItem& item : items) {
    if (item.outbox_id != 0) {
      stored.push_back(item.outbox_id);
    }
  }
  absl::Status queued = dispatcher_->Enqueue(std::move(items));
  if (!queued.ok() && !stored.empty()) {
    // Not deleted: a concurrent attempt of the same records may count on these rows. Any
    // replica's sweep takes them over, and the gateway's retry takes them back at once.
    if (absl::Status s = outbox_->Disown(stored); !s.ok()) {
      common::LogWarn("cannot disown outbox rows; the gateway's retry takes them over",
                      {{"rows", stored.size()}, {"error", std::string(s.message())}});
    }
  }
  return queued;
}

absl::StatusOr<common::Rejected> IngestService::Ingest(const std::vector<IngestRecord>& records) {
  common::Rejected rejected;
  if (records.empty()) {
    return rejected;
  }
  // Refused records, by their index in the batch (answered in batch order).
  std::vector<std::pair<size_t, common::RejectedRecord>> refused;
  const auto refuse = [&](size_t i, std::string reason, const absl::Status& why) {
    refused.emplace_back(i, common::RejectedRecord{.message_id = records[i].message_id,
                                                   .device_id = records[i].device_id,
                                                   .reason = std::move(reason),
                                                   .detail = std::string(why.message())});
  };
  // The records to take, each once (a record repeated within the batch is a duplicate).
  std::vector<size_t> candidates;
  std::vector<std::string> ids;
  candidates.reserve(records.size());
  ids.reserve(records.size());
  double duplicates = 0;
  std::unordered_set<std::string_view> seen;
  for (size_t i = 0; i < records.size(); ++i) {
    if (absl::Status s = CheckRecord(records[i], i); !s.ok()) {
      refuse(i, "malformed", s);
    } else if (!seen.insert(records[i].message_id).second) {
      ++duplicates;
    } else {
      candidates.push_back(i);
      ids.push_back(records[i].message_id);
    }
  }
  const std::shared_ptr<const RuleSet> rules = rules_();
  if (!rules) {
    return absl::UnavailableError("rules are not loaded yet");
  }
  // Records marked done are skipped before their envelopes are even parsed. Without the marks
  // (Redis down) every record is run again: still idempotent.
  auto done =
      ids.empty() ? absl::StatusOr<std::vector<bool>>(std::vector<bool>{}) : dedupe_->Done(ids);
  if (!done.ok()) {
    common::LogDebug("dedupe marks unavailable; the batch is run in full",
                     {{"error", std::string(done.status().message())}});
    done = std::vector<bool>(ids.size(), false);
  }
  std::vector<const IngestRecord*> taken;
  std::vector<nlohmann::json> envelopes;
  taken.reserve(candidates.size());
  envelopes.reserve(candidates.size());
  for (size_t k = 0; k < candidates.size(); ++k) {
    if ((*done)[k]) {
      ++duplicates;
      continue;
    }
    const size_t i = candidates[k];
    // Device JSON in the gateway's envelope: bounded before it is parsed and the rules walk it.
    const std::string field = fmt::format("records[{}].envelope_json", i);
    if (absl::Status s = common::CheckJsonLimits(field, records[i].envelope_json,
                                                 common::ProcessJsonLimits().Internal());
        !s.ok()) {
      refuse(i, "invalid_envelope", s);
      continue;
    }
    auto envelope = nlohmann::json::parse(records[i].envelope_json, nullptr, false);
    if (envelope.is_discarded() || !envelope.is_object()) {
      refuse(i, "invalid_envelope", common::InvalidField(field, "is not a JSON object"));
      continue;
    }
    taken.push_back(&records[i]);
    envelopes.push_back(std::move(envelope));
  }
  std::sort(refused.begin(), refused.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [i, record] : refused) {
    if (metrics_) {
      metrics_->rejections.Reject(std::move(record), rejected);
    } else {
      rejected.push_back(std::move(record));
    }
  }
  const bool with_history = history_ != nullptr || dispatcher_->Has("history");
  const int64_t now = NowMs();
  std::vector<DispatchItem> items;
  std::vector<std::string> accepted;
  double matches = 0;
  for (size_t k = 0; k < taken.size(); ++k) {
    accepted.push_back(taken[k]->message_id);
    for (DispatchItem& item : Route(*rules, *taken[k], envelopes[k], now, with_history)) {
      matches += item.delivery.rule_id.empty() || item.action_index != 0 ? 0 : 1;
      items.push_back(std::move(item));
    }
  }
  if (history_ || !direct_.empty()) {
    // What is delivered now is not taken back: refuse a batch the queues cannot take first
    // (its retry would deliver it again, idempotently but for nothing).
    if (absl::Status s = dispatcher_->CheckRoom(items); !s.ok()) {
      return s;
    }
    for (const auto& destination : direct_) {
      if (absl::Status s = DeliverNow(*destination, false, items); !s.ok()) {
        return s;
      }
    }
    if (history_) {
      if (absl::Status s = DeliverNow(*history_, true, items); !s.ok()) {
        return s;
      }
    }
  }
  if (absl::Status s = StoreAndQueue(std::move(items)); !s.ok()) {
    return s;
  }
  // Every effect is durable: a redelivery from now on skips the rules. A lost mark costs a
  // redelivery a second run of its (idempotent) effects, never a record.
  if (absl::Status s = dedupe_->MarkDone(accepted); !s.ok()) {
    common::LogDebug("dedupe marks not written", {{"error", std::string(s.message())}});
  }
  if (metrics_) {
    metrics_->records.Add({{"outcome", "accepted"}})
        .Increment(static_cast<double>(accepted.size()));
    metrics_->records.Add({{"outcome", "duplicate"}}).Increment(duplicates);
    metrics_->records.Add({{"outcome", "rejected"}})
        .Increment(static_cast<double>(rejected.size()));
    metrics_->matches.Increment(matches);
  }
  return rejected;
}

}  // namespace iot::rule_forwarding
