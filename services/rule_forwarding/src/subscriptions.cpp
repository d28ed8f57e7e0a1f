#include "iot/rule_forwarding/subscriptions.h"

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <cctype>
#include <pqxx/pqxx>
#include <tuple>

#include "iot/common/backoff.h"
#include "iot/common/logging.h"
#include "iot/common/status.h"
#include "iot/rule_forwarding/history.h"

namespace iot::rule_forwarding {
namespace {

using common::InvalidField;
using common::RedisReply;
using std::chrono::milliseconds;

constexpr std::string_view kRedisGroup = "app";

/// Set for a minute when a group is deleted (see kAppendScript).
std::string Tombstone(const std::string& key) { return key + ":deleted"; }

// Adds a delivery once: the dedupe key lives as long as the backlog keeps messages. Refuses
// while the group's tombstone exists, so that a replica still caching a deleted group's settings
// does not bring its stream back.
// KEYS: stream, dedupe key, tombstone. ARGV: ttl seconds, max length, then field/value pairs.
constexpr std::string_view kAppendScript = R"lua(
if redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('NOGROUP consumer group deleted')
end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
)lua";

#define IOT_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
constexpr const char* kGroupColumns =
    "tenant_id, group_name, description, max_backlog_length, max_backlog_age_seconds, "
    "ack_timeout_seconds, " IOT_TS("created_at");

ConsumerGroupSettings GroupFromRow(const pqxx::row& r) {
  return {.tenant_id = r[0].as<std::string>(),
          .group_name = r[1].as<std::string>(),
          .description = r[2].as<std::string>(),
          .max_backlog_length = r[3].as<int64_t>(),
          .max_backlog_age_seconds = r[4].as<int64_t>(),
          .ack_timeout_seconds = r[5].as<int32_t>(),
          .create_time = r[6].as<std::string>()};
}

absl::Status CheckRange(std::string_view field, int64_t value, int64_t min, int64_t max) {
  if (value < min || value > max) {
    return InvalidField(field, fmt::format("must be {}..{} (0: default)", min, max));
  }
  return absl::OkStatus();
}

/// A Redis error reply as a status: NOGROUP → NOT_FOUND, anything else → UNAVAILABLE (OOM,
/// LOADING, a replica: transient as far as we can tell).
absl::Status ReplyError(const RedisReply& reply) {
  if (reply.str.starts_with("NOGROUP")) {
    return absl::NotFoundError(reply.str);
  }
  return absl::UnavailableError("redis: " + reply.str);
}

absl::StatusOr<RedisReply> Run(common::RedisClient& redis, const std::vector<std::string>& args) {
  auto reply = redis.Command(args);
  if (reply.ok() && reply->is_error()) {
    return ReplyError(*reply);
  }
  return reply;
}

/// One stream entry [id, [field, value, ...]] (fields nil for an entry trimmed away).
std::optional<GroupMessage> EntryOf(const RedisReply& entry, bool redelivered) {
  if (entry.type != RedisReply::Type::kArray || entry.elements.size() != 2) {
    return std::nullopt;
  }
  GroupMessage m;
  m.id = entry.elements[0].str;
  m.redelivered = redelivered;
  const auto& fields = entry.elements[1].elements;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    const std::string& name = fields[i].str;
    const std::string& value = fields[i + 1].str;
    if (name == "d") {
      m.delivery_id = value;
    } else if (name == "dev") {
      m.device_id = value;
    } else if (name == "prod") {
      m.product_id = value;
    } else if (name == "res") {
      m.resource = value;
    } else if (name == "evt") {
      m.event = value;
    } else if (name == "topic") {
      m.topic = value;
    } else if (name == "rule") {
      m.rule_id = value;
    } else if (name == "p") {
      m.payload_json = value;
    } else if (name == "t") {
      m.event_time_ms = std::strtoll(value.c_str(), nullptr, 10);
    }
  }
  return m;
}

prometheus::Counter& MessagesCounter(prometheus::Registry& registry, const std::string& kind) {
  return prometheus::BuildCounter()
      .Name("iot_rf_subscription_messages_total")
      .Help("Consumer-group messages sent to and acked by subscribers")
      .Register(registry)
      .Add({{"kind", kind}});
}

prometheus::Family<prometheus::Gauge>& GroupGauge(prometheus::Registry& registry,
                                                  const std::string& name,
                                                  const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

}  // namespace

absl::Status CheckName(std::string_view field, std::string_view name) {
  const bool ok =
      !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
      });
  return ok ? absl::OkStatus() : InvalidField(field, "must match [A-Za-z0-9_.-]{1,64}");
}

absl::StatusOr<ConsumerGroupSettings> NormalizeGroup(ConsumerGroupSettings group) {
  if (absl::Status s = CheckName("group_name", group.group_name); !s.ok()) {
    return s;
  }
  if (group.description.size() > 256) {
    return InvalidField("description", "at most 256 characters");
  }
  for (auto [field, value, fallback, min, max] :
       {std::tuple<std::string_view, int64_t*, int64_t, int64_t, int64_t>{
            "max_backlog_length", &group.max_backlog_length, 100'000, 1, 10'000'000},
        {"max_backlog_age_seconds", &group.max_backlog_age_seconds, 86'400, 60, 604'800}}) {
    if (*value == 0) {
      *value = fallback;
    }
    if (absl::Status s = CheckRange(field, *value, min, max); !s.ok()) {
      return s;
    }
  }
  if (group.ack_timeout_seconds == 0) {
    group.ack_timeout_seconds = 30;
  }
  if (absl::Status s = CheckRange("ack_timeout_seconds", group.ack_timeout_seconds, 1, 3600);
      !s.ok()) {
    return s;
  }
  return group;
}

std::string StreamKey(std::string_view tenant_id, std::string_view group_name) {
  return fmt::format("rf:cg:{}:{}", tenant_id, group_name);
}

// ---- PgGroupStore

absl::StatusOr<ConsumerGroupSettings> PgGroupStore::Create(const ConsumerGroupSettings& g) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work tx(c);
    const pqxx::row r = tx.exec_params1(
        fmt::format("INSERT INTO rule_forwarding.consumer_groups (tenant_id, group_name, "
                    "description, max_backlog_length, max_backlog_age_seconds, "
                    "ack_timeout_seconds) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
                    kGroupColumns),
        g.tenant_id, g.group_name, g.description, g.max_backlog_length, g.max_backlog_age_seconds,
        g.ack_timeout_seconds);
    tx.commit();
    return GroupFromRow(r);
  });
}

absl::StatusOr<ConsumerGroupSettings> PgGroupStore::Get(const std::string& tenant_id,
                                                        const std::string& group_name) {
  auto found = pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<ConsumerGroupSettings> {
    pqxx::read_transaction tx(c);
    const pqxx::result r = tx.exec_params(
        fmt::format("SELECT {} FROM rule_forwarding.consumer_groups WHERE tenant_id = $1 AND "
                    "group_name = $2",
                    kGroupColumns),
        tenant_id, group_name);
    if (r.empty()) {
      return absl::NotFoundError(fmt::format("no consumer group named '{}'", group_name));
    }
    return GroupFromRow(r[0]);
  });
  return found;
}

absl::Status PgGroupStore::Delete(const std::string& tenant_id, const std::string& group_name) {
  return pool_->Call([&](pqxx::connection& c) -> absl::Status {
    pqxx::work tx(c);
    const pqxx::result r = tx.exec_params(
        "DELETE FROM rule_forwarding.consumer_groups WHERE tenant_id = $1 AND group_name = $2",
        tenant_id, group_name);
    tx.commit();
    if (r.affected_rows() == 0) {
      return absl::NotFoundError(fmt::format("no consumer group named '{}'", group_name));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<ConsumerGroupSettings>> PgGroupStore::List(const std::string& tenant_id,
                                                                      int32_t limit,
                                                                      const std::string& marker) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<ConsumerGroupSettings> groups;
    for (const auto& row : tx.exec_params(
             fmt::format("SELECT {} FROM rule_forwarding.consumer_groups WHERE tenant_id = $1 "
                         "AND group_name > $2 ORDER BY group_name LIMIT $3",
                         kGroupColumns),
             tenant_id, marker, limit + 1)) {
      groups.push_back(GroupFromRow(row));
    }
    return groups;
  });
}

absl::StatusOr<std::vector<ConsumerGroupSettings>> PgGroupStore::ListAll() {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<ConsumerGroupSettings> groups;
    for (const auto& row :
         tx.exec(fmt::format("SELECT {} FROM rule_forwarding.consumer_groups ORDER BY 1, 2 "
                             "LIMIT 10000",
                             kGroupColumns))) {
      groups.push_back(GroupFromRow(row));
    }
    return groups;
  });
}

// ---- GroupStreams

absl::Status GroupStreams::EnsureGroup(const std::string& key) {
  auto replies =
      redis_->Pipeline({{"DEL", Tombstone(key)},
                        {"XGROUP", "CREATE", key, std::string(kRedisGroup), "0", "MKSTREAM"}});
  if (!replies.ok()) {
    return replies.status();
  }
  const RedisReply& reply = (*replies)[1];
  if (reply.is_error() && !reply.str.starts_with("BUSYGROUP")) {
    return ReplyError(reply);
  }
  return absl::OkStatus();
}

absl::Status GroupStreams::Append(const ConsumerGroupSettings& group,
                                  std::span<const Delivery> batch) {
  if (batch.empty()) {
    return absl::OkStatus();
  }
  const std::string key = StreamKey(group.tenant_id, group.group_name);
  std::vector<std::vector<std::string>> commands;
  commands.reserve(batch.size() + 1);
  for (const Delivery& d : batch) {
    commands.push_back(
        {"EVAL",
         std::string(kAppendScript),
         "3",
         key,
         fmt::format("rf:cgd:{}:{}:{}", group.tenant_id, group.group_name, d.delivery_id),
         Tombstone(key),
         std::to_string(group.max_backlog_age_seconds),
         std::to_string(group.max_backlog_length),
         "d",
         d.delivery_id,
         "dev",
         d.device_id,
         "prod",
         d.product_id,
         "res",
         d.resource,
         "evt",
         d.event,
         "topic",
         d.topic,
         "rule",
         d.rule_id,
         "t",
         std::to_string(d.event_time_unix_ms),
         "p",
         d.payload.dump()});
  }
  const int64_t min_id = NowMs() - group.max_backlog_age_seconds * 1000;
  commands.push_back({"XTRIM", key, "MINID", "~", std::to_string(std::max<int64_t>(min_id, 0))});
  auto replies = redis_->Pipeline(commands);
  if (!replies.ok()) {
    return replies.status();
  }
  for (const RedisReply& reply : *replies) {
    if (reply.is_error()) {
      return ReplyError(reply);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GroupMessage>> GroupStreams::Read(const std::string& key,
                                                             const std::string& consumer, int count,
                                                             bool pending,
                                                             const std::string& after_id,
                                                             milliseconds block) {
  std::vector<std::string> args = {"XREADGROUP", "GROUP", std::string(kRedisGroup),
                                   consumer,     "COUNT", std::to_string(count)};
  if (!pending) {
    args.insert(args.end(), {"BLOCK", std::to_string(block.count())});
  }
  args.insert(args.end(), {"STREAMS", key, pending ? after_id : ">"});
  auto reply = Run(*redis_, args);
  if (!reply.ok()) {
    return reply.status();
  }
  std::vector<GroupMessage> messages;
  // [[key, [entry, ...]]] or nil on a timeout.
  if (reply->type == RedisReply::Type::kArray && !reply->elements.empty() &&
      reply->elements[0].elements.size() == 2) {
    std::vector<std::string> trimmed;
    for (const RedisReply& entry : reply->elements[0].elements[1].elements) {
      if (entry.elements.size() == 2 && entry.elements[1].is_nil()) {
        trimmed.push_back(entry.elements[0].str);  // pending but trimmed by the backlog limits
        continue;
      }
      if (auto m = EntryOf(entry, pending)) {
        messages.push_back(*std::move(m));
      }
    }
    if (!trimmed.empty()) {
      if (absl::Status s = Ack(key, trimmed); !s.ok()) {
        return s;
      }
      if (messages.empty()) {
        // Only trimmed entries on this page: report the last id so the caller moves on.
        GroupMessage placeholder;
        placeholder.id = trimmed.back();
        messages.push_back(std::move(placeholder));
      }
    }
  }
  return messages;
}

absl::StatusOr<std::vector<GroupMessage>> GroupStreams::Claim(const std::string& key,
                                                              const std::string& consumer,
                                                              int count, milliseconds min_idle) {
  auto reply =
      Run(*redis_, {"XAUTOCLAIM", key, std::string(kRedisGroup), consumer,
                    std::to_string(min_idle.count()), "0-0", "COUNT", std::to_string(count)});
  if (!reply.ok()) {
    return reply.status();
  }
  std::vector<GroupMessage> messages;
  if (reply->type == RedisReply::Type::kArray && reply->elements.size() >= 2) {
    for (const RedisReply& entry : reply->elements[1].elements) {
      if (auto m = EntryOf(entry, true)) {
        messages.push_back(*std::move(m));
      }
    }
  }
  return messages;
}

absl::Status GroupStreams::Ack(const std::string& key, std::span<const std::string> ids) {
  if (ids.empty()) {
    return absl::OkStatus();
  }
  std::vector<std::string> args = {"XACK", key, std::string(kRedisGroup)};
  args.insert(args.end(), ids.begin(), ids.end());
  return Run(*redis_, args).status();
}

absl::StatusOr<GroupStats> GroupStreams::Stats(const std::string& key) {
  auto replies = redis_->Pipeline({{"XLEN", key}, {"XINFO", "GROUPS", key}});
  if (!replies.ok()) {
    return replies.status();
  }
  GroupStats stats;
  stats.length = (*replies)[0].integer;
  const RedisReply& groups = (*replies)[1];
  if (groups.is_error()) {
    return absl::NotFoundError(groups.str);  // no such key: nothing kept
  }
  for (const RedisReply& g : groups.elements) {
    bool ours = false;
    GroupStats found;
    for (size_t i = 0; i + 1 < g.elements.size(); i += 2) {
      const std::string& name = g.elements[i].str;
      const RedisReply& value = g.elements[i + 1];
      if (name == "name") {
        ours = value.str == kRedisGroup;
      } else if (name == "pending") {
        found.pending = value.integer;
      } else if (name == "lag") {
        found.lag = value.is_nil() ? -1 : value.integer;
      }
    }
    if (ours) {
      stats.pending = found.pending;
      stats.lag = found.lag;
    }
  }
  return stats;
}

absl::Status GroupStreams::Drop(const std::string& key) {
  auto replies = redis_->Pipeline({{"SET", Tombstone(key), "1", "EX", "60"}, {"DEL", key}});
  return replies.status();
}

// ---- SubscriptionMetrics

SubscriptionMetrics::SubscriptionMetrics(prometheus::Registry& registry)
    : delivered(MessagesCounter(registry, "delivered")),
      redelivered(MessagesCounter(registry, "redelivered")),
      acked(MessagesCounter(registry, "acked")),
      consumers(prometheus::BuildGauge()
                    .Name("iot_rf_subscription_consumers")
                    .Help("Open Subscribe streams on this replica")
                    .Register(registry)
                    .Add({})),
      backlog(GroupGauge(registry, "iot_rf_group_backlog",
                         "Messages kept for a consumer group and not acked yet")),
      lag(GroupGauge(registry, "iot_rf_group_lag",
                     "Messages of a consumer group not delivered to any consumer yet")),
      pending(GroupGauge(registry, "iot_rf_group_pending",
                         "Messages of a consumer group delivered and not acked yet")),
      length(GroupGauge(registry, "iot_rf_group_length",
                        "Messages kept in a consumer group's stream (acked or not)")) {}

void SubscriptionMetrics::SetGroups(
    const std::vector<std::pair<ConsumerGroupSettings, GroupStats>>& groups) {
  std::lock_guard lock(mu_);
  std::map<std::pair<std::string, std::string>, std::vector<prometheus::Gauge*>> next;
  for (const auto& [group, stats] : groups) {
    auto id = std::make_pair(group.tenant_id, group.group_name);
    auto it = gauges_.find(id);
    std::vector<prometheus::Gauge*> gauges;
    if (it != gauges_.end()) {
      gauges = it->second;
      gauges_.erase(it);
    } else {
      const std::map<std::string, std::string> labels = {{"tenant", group.tenant_id},
                                                         {"group", group.group_name}};
      gauges = {&backlog.Add(labels), &lag.Add(labels), &pending.Add(labels), &length.Add(labels)};
    }
    const int64_t lag_value = std::max<int64_t>(stats.lag, 0);
    gauges[0]->Set(static_cast<double>(stats.pending + lag_value));
    gauges[1]->Set(static_cast<double>(lag_value));
    gauges[2]->Set(static_cast<double>(stats.pending));
    gauges[3]->Set(static_cast<double>(stats.length));
    next.emplace(std::move(id), std::move(gauges));
  }
  for (auto& [id, gauges] : gauges_) {
    backlog.Remove(gauges[0]);
    lag.Remove(gauges[1]);
    pending.Remove(gauges[2]);
    length.Remove(gauges[3]);
  }
  gauges_ = std::move(next);
}

// ---- SubscriptionSession

SubscriptionSession::SubscriptionSession(ConsumerGroupSettings group, std::string consumer,
                                         int max_in_flight, std::shared_ptr<GroupStreams> streams,
                                         std::shared_ptr<GroupStore> groups,
                                         std::shared_ptr<SubscriptionMetrics> metrics)
    : group_(std::move(group)),
      key_(StreamKey(group_.tenant_id, group_.group_name)),
      consumer_(std::move(consumer)),
      max_in_flight_(max_in_flight),
      streams_(std::move(streams)),
      groups_(std::move(groups)),
      metrics_(std::move(metrics)) {}

void SubscriptionSession::Stop() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
  }
  cv_.notify_all();
}

bool SubscriptionSession::WaitStop(milliseconds delay) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, delay, [&] { return stopped_; });
}

void SubscriptionSession::Ack(std::vector<std::string> ids) {
  absl::Status status = streams_->Ack(key_, ids);
  std::lock_guard lock(mu_);
  for (const std::string& id : ids) {
    in_flight_.erase(id);
  }
  if (status.ok()) {
    metrics_->acked.Increment(static_cast<double>(ids.size()));
  } else {
    unacked_.insert(unacked_.end(), ids.begin(), ids.end());
  }
  cv_.notify_all();
}

void SubscriptionSession::ExpireInFlight() {
  // Past the ack timeout a message is up for redelivery (to anyone): it no longer takes room.
  const auto cutoff =
      std::chrono::steady_clock::now() - std::chrono::seconds(group_.ack_timeout_seconds);
  std::lock_guard lock(mu_);
  std::erase_if(in_flight_, [&](const auto& entry) { return entry.second < cutoff; });
}

void SubscriptionSession::DropHeld(std::vector<GroupMessage>& pending) {
  std::lock_guard lock(mu_);
  std::erase_if(pending, [&](const GroupMessage& m) {
    return in_flight_.contains(m.id) ||
           std::find(unacked_.begin(), unacked_.end(), m.id) != unacked_.end();
  });
}

int SubscriptionSession::Room() {
  std::lock_guard lock(mu_);
  return max_in_flight_ - static_cast<int>(in_flight_.size());
}

bool SubscriptionSession::SendAll(const Sender& send, std::vector<GroupMessage> messages) {
  for (GroupMessage& m : messages) {
    if (m.delivery_id.empty() && m.payload_json.empty()) {
      continue;  // a trimmed entry's placeholder
    }
    {
      std::lock_guard lock(mu_);
      in_flight_[m.id] = std::chrono::steady_clock::now();
    }
    (m.redelivered ? metrics_->redelivered : metrics_->delivered).Increment();
    if (!send(m)) {
      return false;
    }
  }
  return true;
}

absl::Status SubscriptionSession::Run(const Sender& send) {
  const milliseconds ack_timeout = std::chrono::seconds(group_.ack_timeout_seconds);
  const milliseconds claim_every =
      std::clamp(ack_timeout / 4, milliseconds(250), milliseconds(5000));
  common::Backoff backoff(milliseconds(100), milliseconds(5000));
  const std::string pending_start = "0";
  bool own_pending_done = false;
  std::string pending_cursor = pending_start;
  auto last_claim = std::chrono::steady_clock::now() - claim_every;
  while (!WaitStop(milliseconds(0))) {
    std::vector<std::string> retry_acks;
    {
      std::lock_guard lock(mu_);
      retry_acks.swap(unacked_);
    }
    absl::Status status = streams_->Ack(key_, retry_acks);
    if (!status.ok()) {
      std::lock_guard lock(mu_);
      unacked_.insert(unacked_.end(), retry_acks.begin(), retry_acks.end());
    }
    ExpireInFlight();
    const int room = Room();
    if (status.ok() && room <= 0) {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, milliseconds(100), [&] {
        return stopped_ || static_cast<int>(in_flight_.size()) < max_in_flight_;
      });
      continue;
    }
    absl::StatusOr<std::vector<GroupMessage>> got = std::vector<GroupMessage>{};
    if (!status.ok()) {
      got = status;
    } else if (!own_pending_done) {
      got = streams_->Read(key_, consumer_, room, true, pending_cursor, milliseconds(0));
      if (got.ok() && got->empty()) {
        own_pending_done = true;
      } else if (got.ok()) {
        pending_cursor = got->back().id;
        DropHeld(*got);
      }
    } else if (std::chrono::steady_clock::now() - last_claim >= claim_every) {
      last_claim = std::chrono::steady_clock::now();
      got = streams_->Claim(key_, consumer_, room, ack_timeout);
    } else {
      got = streams_->Read(key_, consumer_, room, false, "", milliseconds(500));
    }
    if (got.ok()) {
      backoff.Reset();
      if (!SendAll(send, *std::move(got))) {
        return absl::OkStatus();  // the client went away
      }
      continue;
    }
    if (absl::IsNotFound(got.status())) {
      // The stream or its Redis group is gone: deleted with the group, or Redis lost it.
      auto exists = groups_->Get(group_.tenant_id, group_.group_name);
      if (absl::IsNotFound(exists.status())) {
        return absl::NotFoundError(
            fmt::format("consumer group '{}' was deleted", group_.group_name));
      }
      if (exists.ok() && streams_->EnsureGroup(key_).ok()) {
        common::LogWarn("consumer group recreated in Redis",
                        {{"tenant", group_.tenant_id}, {"group", group_.group_name}});
        std::lock_guard lock(mu_);
        in_flight_.clear();  // what was pending is gone with the old group
        continue;
      }
    }
    // The failed command may have been an XREADGROUP that Redis carried out (the entries are now
    // this consumer's, pending) but whose reply was lost with the connection: read this
    // consumer's own pending entries again before new ones, or they would wait for the ack
    // timeout (seen: 1-2 of 3,000 reports late past the end of a run after a Redis SIGTERM).
    own_pending_done = false;
    pending_cursor = pending_start;
    common::LogWarn("consumer group read failed, retrying",
                    {{"tenant", group_.tenant_id},
                     {"group", group_.group_name},
                     {"error", std::string(got.status().message())}});
    WaitStop(backoff.Next());
  }
  return absl::OkStatus();
}

}  // namespace iot::rule_forwarding
