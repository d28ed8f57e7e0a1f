#include <fmt/format.h>

#include <pqxx/pqxx>

#include "iot/common/postgres.h"
#include "iot/common/redis.h"
#include "iot/rule_forwarding/rules.h"

namespace iot::rule_forwarding {
namespace {

#define IOT_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

constexpr const char* kRuleColumns =
    "tenant_id, rule_id, name, description, resource, product_id, device_id, sql, "
    "actions::text, enabled, " IOT_TS("created_at") ", " IOT_TS("updated_at");

constexpr int32_t kDefaultLimit = 50;

RuleRecord RuleFromRow(const pqxx::row& r, const ActionSecrets& secrets) {
  RuleRecord rule;
  rule.tenant_id = r[0].as<std::string>();
  rule.rule_id = r[1].as<std::string>();
  rule.name = r[2].as<std::string>();
  rule.description = r[3].as<std::string>();
  rule.resource = r[4].as<std::string>();
  rule.product_id = r[5].as<std::string>();
  rule.device_id = r[6].as<std::string>();
  rule.sql = r[7].as<std::string>();
  const auto actions = nlohmann::json::parse(r[8].as<std::string>(), nullptr, false);
  if (actions.is_array()) {
    for (const auto& a : actions) {
      RuleAction action{.type = a.value("type", ""),
                        .config = a.value("config", nlohmann::json::object())};
      const size_t index = rule.actions.size();
      auto opened = secrets.Open(
          a, {.tenant_id = rule.tenant_id, .rule_id = rule.rule_id, .action_index = index});
      if (opened.ok()) {
        action.config = *std::move(opened);
      } else {
        rule.unreadable_secrets[index] = std::string(opened.status().message());
      }
      rule.actions.push_back(std::move(action));
    }
  }
  rule.enabled = r[9].as<bool>();
  rule.create_time = r[10].as<std::string>();
  rule.update_time = r[11].as<std::string>();
  return rule;
}

/// The stored form of a rule's actions: secret settings sealed (action_secrets.h).
std::string ActionsJson(const RuleRecord& rule, const ActionSecrets& secrets) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < rule.actions.size(); ++i) {
    nlohmann::json stored =
        secrets.Seal(rule.actions[i].config,
                     {.tenant_id = rule.tenant_id, .rule_id = rule.rule_id, .action_index = i});
    stored["type"] = rule.actions[i].type;
    out.push_back(std::move(stored));
  }
  return out.dump();
}

int32_t LimitOf(const PageRequest& page) { return page.limit > 0 ? page.limit : kDefaultLimit; }

absl::StatusOr<RuleRecord> OneRule(const pqxx::result& result, const ActionSecrets& secrets) {
  if (result.empty()) {
    return absl::NotFoundError("rule not found");
  }
  return RuleFromRow(result[0], secrets);
}

}  // namespace

absl::StatusOr<RuleRecord> PgRuleStore::Insert(const RuleRecord& rule) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto result = tx.exec_params(
        fmt::format("INSERT INTO rule_forwarding.rules (tenant_id, rule_id, name, description, "
                    "resource, product_id, device_id, sql, actions, enabled, secrets_sealed) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, true) RETURNING {}",
                    kRuleColumns),
        rule.tenant_id, rule.rule_id, rule.name, rule.description, rule.resource, rule.product_id,
        rule.device_id, rule.sql, ActionsJson(rule, *secrets_), rule.enabled);
    tx.commit();
    return RuleFromRow(result[0], *secrets_);
  });
}

absl::StatusOr<RuleRecord> PgRuleStore::Get(const std::string& tenant_id,
                                            const std::string& rule_id) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return OneRule(
        tx.exec_params(
            fmt::format(
                "SELECT {} FROM rule_forwarding.rules WHERE tenant_id = $1 AND rule_id = $2",
                kRuleColumns),
            tenant_id, rule_id),
        *secrets_);
  });
}

absl::StatusOr<RuleRecord> PgRuleStore::Update(const RuleRecord& rule) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto result = tx.exec_params(
        fmt::format("UPDATE rule_forwarding.rules SET name = $3, description = $4, resource = $5, "
                    "product_id = $6, device_id = $7, sql = $8, actions = $9::jsonb, "
                    "secrets_sealed = true, updated_at = now() "
                    "WHERE tenant_id = $1 AND rule_id = $2 RETURNING {}",
                    kRuleColumns),
        rule.tenant_id, rule.rule_id, rule.name, rule.description, rule.resource, rule.product_id,
        rule.device_id, rule.sql, ActionsJson(rule, *secrets_));
    tx.commit();
    return OneRule(result, *secrets_);
  });
}

absl::StatusOr<RuleRecord> PgRuleStore::SetEnabled(const std::string& tenant_id,
                                                   const std::string& rule_id, bool enabled) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto result = tx.exec_params(
        fmt::format("UPDATE rule_forwarding.rules SET enabled = $3, updated_at = now() "
                    "WHERE tenant_id = $1 AND rule_id = $2 RETURNING {}",
                    kRuleColumns),
        tenant_id, rule_id, enabled);
    tx.commit();
    return OneRule(result, *secrets_);
  });
}

absl::Status PgRuleStore::Delete(const std::string& tenant_id, const std::string& rule_id) {
  return pool_->Call([&](pqxx::connection& c) -> absl::Status {
    pqxx::work tx(c);
    auto result =
        tx.exec_params("DELETE FROM rule_forwarding.rules WHERE tenant_id = $1 AND rule_id = $2",
                       tenant_id, rule_id);
    tx.commit();
    return result.affected_rows() == 0 ? absl::NotFoundError("rule not found") : absl::OkStatus();
  });
}

absl::StatusOr<RulePage> PgRuleStore::List(const std::string& tenant_id, const PageRequest& page,
                                           const std::string& resource) {
  const int32_t limit = LimitOf(page);
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto result = tx.exec_params(
        fmt::format("SELECT {} FROM rule_forwarding.rules WHERE tenant_id = $1 AND rule_id > $2 "
                    "AND ($3 = '' OR resource = $3) ORDER BY rule_id LIMIT $4",
                    kRuleColumns),
        tenant_id, page.marker, resource, limit + 1);
    RulePage out;
    for (const auto& row : result) {
      if (static_cast<int32_t>(out.items.size()) == limit) {
        out.next_marker = out.items.back().rule_id;
        break;
      }
      out.items.push_back(RuleFromRow(row, *secrets_));
    }
    return out;
  });
}

absl::StatusOr<std::vector<RuleRecord>> PgRuleStore::LoadEnabled() {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto result =
        tx.exec(fmt::format("SELECT {} FROM rule_forwarding.rules WHERE enabled ORDER BY "
                            "tenant_id, created_at, rule_id",
                            kRuleColumns));
    std::vector<RuleRecord> rules;
    rules.reserve(result.size());
    for (const auto& row : result) {
      rules.push_back(RuleFromRow(row, *secrets_));
    }
    return rules;
  });
}

absl::StatusOr<DeadLetterPage> PgRuleStore::ListDeadLetters(const std::string& tenant_id,
                                                            const std::string& rule_id,
                                                            const PageRequest& page) {
  const int32_t limit = LimitOf(page);
  int64_t after = 0;
  if (!page.marker.empty()) {
    try {
      after = std::stoll(page.marker);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError("marker: not a marker returned by ListDeadLetters");
    }
  }
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto result = tx.exec_params(
        "SELECT id, rule_id, action_index, action_type, delivery_id, device_id, payload, error, "
        "attempts, " IOT_TS("created_at") " FROM rule_forwarding.dead_letters "
        "WHERE tenant_id = $1 AND ($2 = '' OR rule_id = $2) AND id > $3 ORDER BY id LIMIT $4",
        tenant_id, rule_id, after, limit + 1);
    DeadLetterPage out;
    for (const auto& r : result) {
      if (static_cast<int32_t>(out.items.size()) == limit) {
        out.next_marker = out.items.back().dead_letter_id;
        break;
      }
      out.items.push_back(DeadLetterRecord{.dead_letter_id = r[0].as<std::string>(),
                                           .tenant_id = tenant_id,
                                           .rule_id = r[1].as<std::string>(),
                                           .action_index = r[2].as<int>(),
                                           .action_type = r[3].as<std::string>(),
                                           .delivery_id = r[4].as<std::string>(),
                                           .device_id = r[5].as<std::string>(),
                                           .payload_json = r[6].as<std::string>(),
                                           .error = r[7].as<std::string>(),
                                           .attempts = r[8].as<int>(),
                                           .create_time = r[9].as<std::string>()});
    }
    return out;
  });
}

absl::Status PgRuleStore::Add(const std::vector<DeadLetterRecord>& letters) {
  return pool_->Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    for (const DeadLetterRecord& l : letters) {
      tx.exec_params(
          "INSERT INTO rule_forwarding.dead_letters (tenant_id, rule_id, action_index, "
          "action_type, delivery_id, device_id, payload, error, attempts) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
          l.tenant_id, l.rule_id, l.action_index, l.action_type, l.delivery_id, l.device_id,
          l.payload_json, l.error, l.attempts);
    }
    tx.commit();
  });
}

absl::StatusOr<size_t> PgRuleStore::SealPlainSecrets() {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto result = tx.exec(
        "SELECT tenant_id, rule_id, actions::text FROM rule_forwarding.rules "
        "WHERE NOT secrets_sealed FOR UPDATE SKIP LOCKED");
    size_t sealed = 0;
    for (const auto& row : result) {
      RuleRecord rule;
      rule.tenant_id = row[0].as<std::string>();
      rule.rule_id = row[1].as<std::string>();
      const auto actions = nlohmann::json::parse(row[2].as<std::string>(), nullptr, false);
      for (const auto& a : actions.is_array() ? actions : nlohmann::json::array()) {
        rule.actions.push_back(RuleAction{.type = a.value("type", ""),
                                          .config = a.value("config", nlohmann::json::object())});
      }
      tx.exec_params(
          "UPDATE rule_forwarding.rules SET actions = $3::jsonb, secrets_sealed = true "
          "WHERE tenant_id = $1 AND rule_id = $2",
          rule.tenant_id, rule.rule_id, ActionsJson(rule, *secrets_));
      ++sealed;
    }
    tx.commit();
    return sealed;
  });
}

// ---- RedisRuleChangeFeed

namespace {
constexpr const char* kVersionKey = "rf:rules:version";
}  // namespace

absl::Status RedisRuleChangeFeed::Publish() {
  return common::CheckReply(redis_->Command({"INCR", kVersionKey})).status();
}

absl::StatusOr<std::string> RedisRuleChangeFeed::Version() {
  auto reply = common::CheckReply(redis_->Command({"GET", kVersionKey}));
  if (!reply.ok()) {
    return reply.status();
  }
  return reply->is_nil() ? std::string("none") : reply->str;
}

}  // namespace iot::rule_forwarding
