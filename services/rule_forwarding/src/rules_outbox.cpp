#include <fmt/format.h>

#include <algorithm>
#include <pqxx/pqxx>
#include <unordered_map>

#include "iot/common/logging.h"
#include "iot/common/postgres.h"
#include "iot/rule_forwarding/outbox.h"

namespace iot::rule_forwarding {
namespace {

/// Sweeps take at most this many deliveries at once (and never more than fit the queues).
constexpr size_t kTakeOverBatch = 1000;

ActionRef RefOf(const std::string& tenant_id, const std::string& rule_id, int action_index) {
  return {.tenant_id = tenant_id,
          .rule_id = rule_id,
          .action_index = static_cast<size_t>(std::max(action_index, 0))};
}

/// The stored form of a delivery: its action's secret settings sealed (action_secrets.h).
std::string ItemJson(const DispatchItem& item, const ActionSecrets& secrets) {
  const Delivery& d = item.delivery;
  nlohmann::json j = secrets.Seal(d.action_config ? *d.action_config : nlohmann::json::object(),
                                  RefOf(d.tenant_id, d.rule_id, item.action_index));
  j.update(nlohmann::json{{"delivery_id", d.delivery_id},
                          {"tenant_id", d.tenant_id},
                          {"device_id", d.device_id},
                          {"product_id", d.product_id},
                          {"rule_id", d.rule_id},
                          {"resource", d.resource},
                          {"event", d.event},
                          {"topic", d.topic},
                          {"event_time_unix_ms", d.event_time_unix_ms},
                          {"action_type", item.action_type},
                          {"action_index", item.action_index},
                          {"payload", d.payload}});
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// INVALID_ARGUMENT: not an item at all; DATA_LOSS: its sealed settings cannot be opened.
absl::StatusOr<DispatchItem> ItemFromJson(int64_t id, const std::string& text,
                                          const ActionSecrets& secrets) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  DispatchItem item;
  Delivery& d = item.delivery;
  d.delivery_id = j.value("delivery_id", "");
  d.tenant_id = j.value("tenant_id", "");
  d.device_id = j.value("device_id", "");
  d.product_id = j.value("product_id", "");
  d.rule_id = j.value("rule_id", "");
  d.resource = j.value("resource", "");
  d.event = j.value("event", "");
  d.topic = j.value("topic", "");
  d.event_time_unix_ms = j.value("event_time_unix_ms", int64_t{0});
  item.action_type = j.value("action_type", "");
  item.action_index = j.value("action_index", 0);
  auto opened = secrets.Open(j, RefOf(d.tenant_id, d.rule_id, item.action_index));
  if (!opened.ok()) {
    return opened.status();
  }
  auto config = std::make_shared<nlohmann::json>(*std::move(opened));
  d.action_config = config.get();
  d.payload = std::move(j["payload"]);
  item.keep_alive = std::move(config);
  item.outbox_id = id;
  return item;
}

std::string IdArray(const std::vector<int64_t>& ids) {
  return fmt::format("{{{}}}", fmt::join(ids, ","));
}

}  // namespace

absl::Status PgOutbox::Add(std::vector<DispatchItem>& items) {
  if (items.empty()) {
    return absl::OkStatus();
  }
  // One statement, atomic by itself: no BEGIN/COMMIT round trips. A delivery stored before (a
  // retried or concurrent attempt of its record) keeps its row and changes owner: whichever
  // attempt queued it last holds it, and a crashed holder's rows are swept as usual.
  auto ids = pool_->Call([&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    std::string sql =
        "INSERT INTO rule_forwarding.outbox (owner, delivery_id, item, sealed) VALUES ";
    const std::string owner = tx.quote(owner_);
    for (size_t i = 0; i < items.size(); ++i) {
      sql += fmt::format("{}({}, {}, {}, true)", i == 0 ? "" : ", ", owner,
                         tx.quote(items[i].delivery.delivery_id),
                         tx.quote(ItemJson(items[i], *secrets_)));
    }
    sql +=
        " ON CONFLICT (delivery_id) DO UPDATE SET owner = EXCLUDED.owner RETURNING delivery_id, id";
    auto result = tx.exec(sql);
    std::unordered_map<std::string, int64_t> out;
    out.reserve(result.size());
    for (const auto& row : result) {
      out.emplace(row[0].as<std::string>(), row[1].as<int64_t>());
    }
    return out;
  });
  if (!ids.ok()) {
    return ids.status();
  }
  for (DispatchItem& item : items) {
    if (auto it = ids->find(item.delivery.delivery_id); it != ids->end()) {
      item.outbox_id = it->second;
    }
  }
  return absl::OkStatus();
}

absl::Status PgOutbox::Remove(const std::vector<int64_t>& ids) {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params("DELETE FROM rule_forwarding.outbox WHERE id = ANY($1::bigint[])", IdArray(ids));
  });
}

absl::Status PgOutbox::Heartbeat() {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(
        "INSERT INTO rule_forwarding.outbox_owners (owner) VALUES ($1) "
        "ON CONFLICT (owner) DO UPDATE SET heartbeat = now()",
        owner_);
    tx.commit();
  });
}

absl::StatusOr<std::vector<DispatchItem>> PgOutbox::TakeOver(std::chrono::milliseconds lease,
                                                             size_t limit) {
  auto rows = pool_->Call([&](pqxx::connection& c) {
    pqxx::work tx(c);
    const std::string interval = fmt::format("{} milliseconds", lease.count());
    auto result = tx.exec_params(
        "UPDATE rule_forwarding.outbox SET owner = $1 WHERE id IN ("
        " SELECT id FROM rule_forwarding.outbox WHERE owner <> $1 AND owner NOT IN ("
        "  SELECT owner FROM rule_forwarding.outbox_owners WHERE heartbeat > now() - $2::interval)"
        " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id, item",
        owner_, interval, static_cast<int64_t>(limit));
    tx.exec_params(
        "DELETE FROM rule_forwarding.outbox_owners WHERE heartbeat < now() - $1::interval * 10",
        interval);
    tx.commit();
    std::vector<std::pair<int64_t, std::string>> out;
    for (const auto& row : result) {
      out.emplace_back(row[0].as<int64_t>(), row[1].as<std::string>());
    }
    return out;
  });
  if (!rows.ok()) {
    return rows.status();
  }
  std::sort(rows->begin(), rows->end());
  std::vector<DispatchItem> items;
  std::vector<int64_t> broken;
  for (const auto& [id, text] : *rows) {
    auto item = ItemFromJson(id, text, *secrets_);
    if (item.ok()) {
      items.push_back(*std::move(item));
    } else if (item.status().code() == absl::StatusCode::kDataLoss) {
      // Kept (owned by this replica): after a restart with the right key another replica, or
      // this one, takes it over again.
      common::LogError("outbox delivery left in the outbox: its settings cannot be opened",
                       {{"outbox_id", id}, {"error", std::string(item.status().message())}});
    } else {
      broken.push_back(id);
    }
  }
  if (!broken.empty()) {
    common::LogError("unreadable outbox rows dropped", {{"rows", broken.size()}});
    (void)Remove(broken);
  }
  return items;
}

absl::StatusOr<size_t> PgOutbox::SealPlainSecrets() {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto result = tx.exec(
        "SELECT id, item FROM rule_forwarding.outbox WHERE NOT sealed FOR UPDATE SKIP LOCKED");
    size_t sealed = 0;
    for (const auto& row : result) {
      auto j = nlohmann::json::parse(row[1].as<std::string>(), nullptr, false);
      if (!j.is_object() || !HasPlainSecrets(j.value("config", nlohmann::json::object()))) {
        tx.exec_params("UPDATE rule_forwarding.outbox SET sealed = true WHERE id = $1",
                       row[0].as<int64_t>());
        continue;
      }
      nlohmann::json stored = secrets_->Seal(
          j["config"],
          RefOf(j.value("tenant_id", ""), j.value("rule_id", ""), j.value("action_index", 0)));
      j.erase("config");
      j.update(stored);
      tx.exec_params("UPDATE rule_forwarding.outbox SET item = $2, sealed = true WHERE id = $1",
                     row[0].as<int64_t>(),
                     j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      ++sealed;
    }
    tx.commit();
    return sealed;
  });
}

absl::Status PgOutbox::Disown(const std::vector<int64_t>& ids) {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params("UPDATE rule_forwarding.outbox SET owner = '' WHERE id = ANY($1::bigint[])",
                   IdArray(ids));
    tx.commit();
  });
}

absl::Status PgOutbox::Retire() {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params("DELETE FROM rule_forwarding.outbox_owners WHERE owner = $1", owner_);
    tx.commit();
  });
}

OutboxKeeper::OutboxKeeper(std::shared_ptr<PgOutbox> outbox, std::shared_ptr<Dispatcher> dispatcher,
                           std::chrono::milliseconds lease)
    : outbox_(std::move(outbox)), dispatcher_(std::move(dispatcher)), lease_(lease) {}

OutboxKeeper::~OutboxKeeper() { Stop(); }

void OutboxKeeper::Start() {
  std::lock_guard lock(mu_);
  if (!thread_.joinable() && !stopping_) {
    thread_ = std::thread([this] { Run(); });
  }
}

void OutboxKeeper::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void OutboxKeeper::Run() {
  const auto beat_every = lease_ / 3;
  const auto sweep_every = lease_ / 2;
  auto next_beat = std::chrono::steady_clock::now();
  auto next_sweep = next_beat;
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_until(lock, std::min(next_beat, next_sweep), [&] { return stopping_; })) {
        return;
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_beat) {
      if (absl::Status s = outbox_->Heartbeat(); !s.ok()) {
        common::LogWarn("outbox heartbeat failed", {{"error", std::string(s.message())}});
      }
      next_beat = now + beat_every;
    }
    if (now >= next_sweep) {
      Sweep();
      next_sweep = now + sweep_every;
    }
  }
}

void OutboxKeeper::Sweep() {
  auto items = outbox_->TakeOver(lease_, kTakeOverBatch);
  if (!items.ok()) {
    common::LogWarn("outbox sweep failed", {{"error", std::string(items.status().message())}});
    return;
  }
  if (items->empty()) {
    return;
  }
  std::vector<int64_t> ids;
  for (const DispatchItem& item : *items) {
    ids.push_back(item.outbox_id);
  }
  const size_t n = items->size();
  if (absl::Status s = dispatcher_->Enqueue(*std::move(items)); !s.ok()) {
    common::LogWarn("taken-over deliveries do not fit the queues; disowned again",
                    {{"deliveries", n}, {"error", std::string(s.message())}});
    (void)outbox_->Disown(ids);
    return;
  }
  common::LogInfo("took over deliveries another replica left", {{"deliveries", n}});
}

}  // namespace iot::rule_forwarding
