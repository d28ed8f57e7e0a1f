#include <fmt/format.h>

#include <algorithm>

#include "iot/common/crypto.h"
#include "iot/common/logging.h"
#include "iot/common/status.h"
#include "iot/rule_forwarding/rules.h"

namespace iot::rule_forwarding {
namespace {

constexpr size_t kMaxName = 256;
constexpr size_t kMaxDescription = 2048;
constexpr size_t kMaxActions = 10;
constexpr size_t kMaxIdBytes = 128;

absl::Status RequireTenant(const common::Principal& caller) {
  if (caller.tenant_id.empty()) {
    return absl::PermissionDeniedError("rules belong to a tenant: use a tenant API key");
  }
  return absl::OkStatus();
}

absl::Status CheckRuleId(const std::string& rule_id) {
  if (rule_id.empty() || rule_id.size() > kMaxIdBytes) {
    return common::InvalidField("rule_id", "is required (at most 128 characters)");
  }
  return absl::OkStatus();
}

/// A masked value sent back unchanged (Show, edit, Update) keeps the stored secret. A stored
/// secret that cannot be opened cannot be kept: the caller must send it again.
absl::Status KeepMaskedSecrets(RuleRecord& update, const RuleRecord& stored) {
  for (size_t i = 0; i < update.actions.size() && i < stored.actions.size(); ++i) {
    RuleAction& action = update.actions[i];
    const RuleAction& old = stored.actions[i];
    if (action.type != old.type || !action.config.is_object() || !old.config.is_object()) {
      continue;
    }
    const nlohmann::json masked = MaskConfig(old.config);
    for (auto& [key, value] : action.config.items()) {
      if (!old.config.contains(key) || value != masked[key]) {
        continue;
      }
      if (const auto unreadable = stored.unreadable_secrets.find(i);
          unreadable != stored.unreadable_secrets.end() && IsSecretSetting(key)) {
        return absl::FailedPreconditionError(
            fmt::format("actions[{}].config.{}: the stored value cannot be opened ({}); send "
                        "the setting again",
                        i, key, unreadable->second));
      }
      if (masked[key] != old.config[key]) {
        value = old.config[key];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& RuleResources() {
  static const std::vector<std::string> kResources = {
      "device.property", "device.message", "device.event", "device.status", "device.command"};
  return kResources;
}

absl::Status ValidateRule(const RuleRecord& rule, const DestinationRegistry& destinations) {
  if (rule.name.empty() || rule.name.size() > kMaxName) {
    return common::InvalidField("name", "is required (at most 256 characters)");
  }
  if (rule.description.size() > kMaxDescription) {
    return common::InvalidField("description", "at most 2048 characters");
  }
  const auto& resources = RuleResources();
  if (std::find(resources.begin(), resources.end(), rule.resource) == resources.end()) {
    return common::InvalidField("resource", fmt::format("'{}' is not one of {}", rule.resource,
                                                        fmt::join(resources, ", ")));
  }
  if (rule.product_id.size() > kMaxIdBytes) {
    return common::InvalidField("product_id", "at most 128 characters");
  }
  if (rule.device_id.size() > kMaxIdBytes) {
    return common::InvalidField("device_id", "at most 128 characters");
  }
  if (rule.sql.empty()) {
    return common::InvalidField("sql", "is required");
  }
  if (auto compiled = sql::CompileRule(rule.sql); !compiled.ok()) {
    absl::Status status = common::InvalidField("sql", std::string(compiled.status().message()));
    if (auto payload = compiled.status().GetPayload(sql::kSqlErrorPayload)) {
      status.SetPayload(sql::kSqlErrorPayload, *payload);
    }
    return status;
  }
  if (rule.actions.empty() || rule.actions.size() > kMaxActions) {
    return common::InvalidField("actions", "a rule has 1 to 10 actions");
  }
  for (size_t i = 0; i < rule.actions.size(); ++i) {
    const RuleAction& action = rule.actions[i];
    auto it = destinations.find(action.type);
    if (it == destinations.end()) {
      std::vector<std::string> known;
      for (const auto& [type, d] : destinations) {
        known.push_back(type);
      }
      return common::InvalidField(
          fmt::format("actions[{}].type", i),
          fmt::format("unknown action type '{}' (known: {})", action.type, fmt::join(known, ", ")));
    }
    if (absl::Status s = it->second->ValidateConfig(action.config); !s.ok()) {
      const std::string field = common::FieldOf(s);
      return common::InvalidField(
          fmt::format("actions[{}].config{}", i, field.empty() ? "" : "." + field),
          std::string(s.message()));
    }
  }
  return absl::OkStatus();
}

// ---- RuleSet and RuleCache

std::shared_ptr<const RuleSet> RuleSet::Build(std::vector<RuleRecord> rules) {
  auto set = std::make_shared<RuleSet>();
  for (RuleRecord& record : rules) {
    if (!record.unreadable_secrets.empty()) {
      common::LogError("stored rule has a secret that cannot be opened, skipped",
                       {{"tenant_id", record.tenant_id},
                        {"rule_id", record.rule_id},
                        {"error", record.unreadable_secrets.begin()->second}});
      continue;
    }
    auto compiled = sql::CompileRule(record.sql);
    if (!compiled.ok()) {
      common::LogError("stored rule no longer compiles, skipped",
                       {{"tenant_id", record.tenant_id},
                        {"rule_id", record.rule_id},
                        {"error", std::string(compiled.status().message())}});
      continue;
    }
    auto active = std::make_shared<ActiveRule>(
        ActiveRule{.record = std::move(record), .compiled = *std::move(compiled)});
    set->by_tenant_[active->record.tenant_id].push_back(std::move(active));
    ++set->size_;
  }
  return set;
}

const std::vector<std::shared_ptr<const ActiveRule>>& RuleSet::ForTenant(
    const std::string& tenant_id) const {
  static const std::vector<std::shared_ptr<const ActiveRule>> kNone;
  auto it = by_tenant_.find(tenant_id);
  return it == by_tenant_.end() ? kNone : it->second;
}

RuleCache::RuleCache(std::shared_ptr<RuleStore> store, std::shared_ptr<RuleChangeFeed> feed,
                     RuleCacheOptions options)
    : store_(std::move(store)), feed_(std::move(feed)), options_(options) {}

RuleCache::~RuleCache() { Stop(); }

absl::Status RuleCache::Reload() {
  auto rules = store_->LoadEnabled();
  if (!rules.ok()) {
    return rules.status();
  }
  auto set = RuleSet::Build(*std::move(rules));
  std::lock_guard lock(mu_);
  rules_ = std::move(set);
  return absl::OkStatus();
}

std::shared_ptr<const RuleSet> RuleCache::snapshot() const {
  std::lock_guard lock(mu_);
  return rules_;
}

void RuleCache::Start() {
  std::lock_guard lock(mu_);
  if (!thread_.joinable() && !stopping_) {
    thread_ = std::thread([this] { Run(); });
  }
}

void RuleCache::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void RuleCache::Run() {
  std::string seen;
  bool have_seen = false;
  auto last_load = std::chrono::steady_clock::now();
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, options_.poll_interval, [&] { return stopping_; })) {
        return;
      }
    }
    auto version = feed_->Version();
    const bool moved = version.ok() && (!have_seen || *version != seen);
    const bool stale =
        std::chrono::steady_clock::now() - last_load >= options_.full_reload_interval;
    if (!moved && !stale) {
      continue;
    }
    if (absl::Status s = Reload(); !s.ok()) {
      common::LogWarn("rule reload failed", {{"error", std::string(s.message())}});
      continue;
    }
    last_load = std::chrono::steady_clock::now();
    if (version.ok()) {
      seen = *version;
      have_seen = true;
    }
  }
}

// ---- RulesService

RulesService::RulesService(std::shared_ptr<RuleStore> store,
                           const DestinationRegistry& destinations, std::function<void()> on_change)
    : store_(std::move(store)), destinations_(destinations), on_change_(std::move(on_change)) {}

absl::StatusOr<RuleRecord> RulesService::Create(const common::Principal& caller, RuleRecord rule) {
  if (absl::Status s = RequireTenant(caller); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateRule(rule, destinations_); !s.ok()) {
    return s;
  }
  rule.tenant_id = caller.tenant_id;
  rule.rule_id = common::HexEncode(common::RandomBytes(12));
  auto created = store_->Insert(rule);
  if (created.ok()) {
    on_change_();
  }
  return created;
}

absl::StatusOr<RuleRecord> RulesService::Show(const common::Principal& caller,
                                              const std::string& rule_id) {
  if (absl::Status s = RequireTenant(caller); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRuleId(rule_id); !s.ok()) {
    return s;
  }
  return store_->Get(caller.tenant_id, rule_id);
}

absl::StatusOr<RuleRecord> RulesService::Update(const common::Principal& caller, RuleRecord rule) {
  auto stored = Show(caller, rule.rule_id);
  if (!stored.ok()) {
    return stored.status();
  }
  if (absl::Status s = KeepMaskedSecrets(rule, *stored); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateRule(rule, destinations_); !s.ok()) {
    return s;
  }
  rule.tenant_id = caller.tenant_id;
  auto updated = store_->Update(rule);
  if (updated.ok()) {
    on_change_();
  }
  return updated;
}

absl::Status RulesService::Delete(const common::Principal& caller, const std::string& rule_id) {
  if (absl::Status s = RequireTenant(caller); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRuleId(rule_id); !s.ok()) {
    return s;
  }
  absl::Status status = store_->Delete(caller.tenant_id, rule_id);
  if (status.ok()) {
    on_change_();
  }
  return status;
}

absl::StatusOr<RulePage> RulesService::List(const common::Principal& caller,
                                            const PageRequest& page, const std::string& resource) {
  if (absl::Status s = RequireTenant(caller); !s.ok()) {
    return s;
  }
  if (page.limit < 0 || page.limit > 500) {
    return common::InvalidField("limit", "must be between 1 and 500 (0: 50)");
  }
  return store_->List(caller.tenant_id, page, resource);
}

absl::StatusOr<RuleRecord> RulesService::ChangeStatus(const common::Principal& caller,
                                                      const std::string& rule_id,
                                                      const std::string& status) {
  if (absl::Status s = RequireTenant(caller); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRuleId(rule_id); !s.ok()) {
    return s;
  }
  if (status != "active" && status != "inactive") {
    return common::InvalidField("status", "must be active or inactive");
  }
  auto changed = store_->SetEnabled(caller.tenant_id, rule_id, status == "active");
  if (changed.ok()) {
    on_change_();
  }
  return changed;
}

absl::StatusOr<DeadLetterPage> RulesService::ListDeadLetters(const common::Principal& caller,
                                                             const std::string& rule_id,
                                                             const PageRequest& page) {
  if (absl::Status s = RequireTenant(caller); !s.ok()) {
    return s;
  }
  if (page.limit < 0 || page.limit > 500) {
    return common::InvalidField("limit", "must be between 1 and 500 (0: 50)");
  }
  return store_->ListDeadLetters(caller.tenant_id, rule_id, page);
}

}  // namespace iot::rule_forwarding
