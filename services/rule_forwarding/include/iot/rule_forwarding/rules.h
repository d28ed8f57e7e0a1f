#pragma once

// Rules: a tenant's SQL statement over the forwarding envelope plus the actions that receive
// what its SELECT produced. Stored in PostgreSQL, compiled into an in-memory RuleSet that every
// replica reloads within a second of a change.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "iot/common/auth.h"
#include "iot/rule_forwarding/action_secrets.h"
#include "iot/rule_forwarding/dispatcher.h"
#include "iot/rule_forwarding/sql/rule_sql.h"

namespace iot::common {
class PgPool;
class RedisClient;
}  // namespace iot::common

namespace iot::rule_forwarding {

/// The resources a rule may listen to.
const std::vector<std::string>& RuleResources();

struct RuleAction {
  std::string type;
  /// The settings in plain text (sealed only where they are stored: action_secrets.h).
  nlohmann::json config = nlohmann::json::object();
};

struct RuleRecord {
  std::string tenant_id;
  std::string rule_id;
  std::string name;
  std::string description;
  std::string resource;
  std::string product_id;
  std::string device_id;
  std::string sql;
  std::vector<RuleAction> actions;
  /// Actions (by index) whose stored secret settings could not be opened, and why. Their
  /// `config` holds the masked values instead, and the rule is not loaded for delivery.
  std::map<size_t, std::string> unreadable_secrets;
  bool enabled = true;
  std::string create_time;
  std::string update_time;
};

struct RulePage {
  std::vector<RuleRecord> items;
  std::string next_marker;
};

struct PageRequest {
  int32_t limit = 0;  ///< 0: default
  std::string marker;
};

struct DeadLetterPage {
  std::vector<DeadLetterRecord> items;
  std::string next_marker;
};

/// Port: where rules live. NOT_FOUND for a rule missing in the tenant.
class RuleStore {
 public:
  virtual ~RuleStore() = default;
  virtual absl::StatusOr<RuleRecord> Insert(const RuleRecord& rule) = 0;
  virtual absl::StatusOr<RuleRecord> Get(const std::string& tenant_id,
                                         const std::string& rule_id) = 0;
  /// Replaces definition fields (not enabled, not create_time).
  virtual absl::StatusOr<RuleRecord> Update(const RuleRecord& rule) = 0;
  virtual absl::StatusOr<RuleRecord> SetEnabled(const std::string& tenant_id,
                                                const std::string& rule_id, bool enabled) = 0;
  virtual absl::Status Delete(const std::string& tenant_id, const std::string& rule_id) = 0;
  virtual absl::StatusOr<RulePage> List(const std::string& tenant_id, const PageRequest& page,
                                        const std::string& resource) = 0;
  /// Every enabled rule of every tenant (the replicas' in-memory rule set).
  virtual absl::StatusOr<std::vector<RuleRecord>> LoadEnabled() = 0;
  virtual absl::StatusOr<DeadLetterPage> ListDeadLetters(const std::string& tenant_id,
                                                         const std::string& rule_id,
                                                         const PageRequest& page) = 0;
};

/// Port: tells every replica that rules changed, and tells this replica whether they did.
class RuleChangeFeed {
 public:
  virtual ~RuleChangeFeed() = default;
  virtual absl::Status Publish() = 0;
  /// An opaque token that changes with every Publish() (and when the feed's store was lost).
  virtual absl::StatusOr<std::string> Version() = 0;
};

/// PostgreSQL tables rule_forwarding.rules and rule_forwarding.dead_letters. Actions' secret
/// settings are sealed in the table with `secrets` and opened when read.
class PgRuleStore final : public RuleStore, public DeadLetterSink {
 public:
  PgRuleStore(std::shared_ptr<common::PgPool> pool, std::shared_ptr<const ActionSecrets> secrets)
      : pool_(std::move(pool)), secrets_(std::move(secrets)) {}
  absl::StatusOr<RuleRecord> Insert(const RuleRecord& rule) override;
  absl::StatusOr<RuleRecord> Get(const std::string& tenant_id, const std::string& rule_id) override;
  absl::StatusOr<RuleRecord> Update(const RuleRecord& rule) override;
  absl::StatusOr<RuleRecord> SetEnabled(const std::string& tenant_id, const std::string& rule_id,
                                        bool enabled) override;
  absl::Status Delete(const std::string& tenant_id, const std::string& rule_id) override;
  absl::StatusOr<RulePage> List(const std::string& tenant_id, const PageRequest& page,
                                const std::string& resource) override;
  absl::StatusOr<std::vector<RuleRecord>> LoadEnabled() override;
  absl::StatusOr<DeadLetterPage> ListDeadLetters(const std::string& tenant_id,
                                                 const std::string& rule_id,
                                                 const PageRequest& page) override;
  absl::Status Add(const std::vector<DeadLetterRecord>& letters) override;

  /// Seals the secrets of rules stored before sealing existed (SQL cannot encrypt: migration
  /// 006 marks them); returns how many rules it sealed. Run at start-up by every replica.
  absl::StatusOr<size_t> SealPlainSecrets();

 private:
  std::shared_ptr<common::PgPool> pool_;
  std::shared_ptr<const ActionSecrets> secrets_;
};

/// Redis counter `rf:rules:version`, INCR on every change; replicas poll it.
class RedisRuleChangeFeed final : public RuleChangeFeed {
 public:
  explicit RedisRuleChangeFeed(std::shared_ptr<common::RedisClient> redis)
      : redis_(std::move(redis)) {}
  absl::Status Publish() override;
  absl::StatusOr<std::string> Version() override;

 private:
  std::shared_ptr<common::RedisClient> redis_;
};

/// One enabled rule, compiled. Deliveries queued for its actions keep it alive.
struct ActiveRule {
  RuleRecord record;
  sql::CompiledRule compiled;
};

/// The compiled, enabled rules of every tenant. Immutable once built.
class RuleSet {
 public:
  /// Compiles `rules`; one that no longer compiles is skipped (and logged).
  static std::shared_ptr<const RuleSet> Build(std::vector<RuleRecord> rules);

  /// The tenant's rules, empty when it has none.
  [[nodiscard]] const std::vector<std::shared_ptr<const ActiveRule>>& ForTenant(
      const std::string& tenant_id) const;
  [[nodiscard]] size_t size() const { return size_; }

 private:
  std::unordered_map<std::string, std::vector<std::shared_ptr<const ActiveRule>>> by_tenant_;
  size_t size_ = 0;
};

struct RuleCacheOptions {
  /// How often the change feed is polled.
  std::chrono::milliseconds poll_interval{250};
  /// A full reload this often even without a change (a lost notification, a flushed Redis).
  std::chrono::milliseconds full_reload_interval{30'000};
};

/// This replica's RuleSet: loaded at start-up, reloaded when the change feed moves.
class RuleCache {
 public:
  RuleCache(std::shared_ptr<RuleStore> store, std::shared_ptr<RuleChangeFeed> feed,
            RuleCacheOptions options = {});
  ~RuleCache();
  RuleCache(const RuleCache&) = delete;
  RuleCache& operator=(const RuleCache&) = delete;

  /// Loads every enabled rule now.
  absl::Status Reload();
  /// The current rules; null until the first Reload() succeeded.
  [[nodiscard]] std::shared_ptr<const RuleSet> snapshot() const;
  /// Starts the polling thread.
  void Start();
  void Stop();

 private:
  void Run();

  std::shared_ptr<RuleStore> store_;
  std::shared_ptr<RuleChangeFeed> feed_;
  RuleCacheOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::shared_ptr<const RuleSet> rules_;
  std::thread thread_;
};

/// Checks a rule's definition: name, resource, SQL (compiled; errors name `sql` with line,
/// column and what was expected), actions (`actions[i].type` known, `actions[i].config...`
/// accepted by the destination). INVALID_ARGUMENT naming the field.
absl::Status ValidateRule(const RuleRecord& rule, const DestinationRegistry& destinations);

/// The Rules API logic: tenant-scoped CRUD, status, dead letters. Every change is published
/// on the change feed and applied to this replica's cache at once.
class RulesService {
 public:
  RulesService(std::shared_ptr<RuleStore> store, const DestinationRegistry& destinations,
               std::function<void()> on_change);

  absl::StatusOr<RuleRecord> Create(const common::Principal& caller, RuleRecord rule);
  absl::StatusOr<RuleRecord> Show(const common::Principal& caller, const std::string& rule_id);
  absl::StatusOr<RuleRecord> Update(const common::Principal& caller, RuleRecord rule);
  absl::Status Delete(const common::Principal& caller, const std::string& rule_id);
  absl::StatusOr<RulePage> List(const common::Principal& caller, const PageRequest& page,
                                const std::string& resource);
  absl::StatusOr<RuleRecord> ChangeStatus(const common::Principal& caller,
                                          const std::string& rule_id, const std::string& status);
  absl::StatusOr<DeadLetterPage> ListDeadLetters(const common::Principal& caller,
                                                 const std::string& rule_id,
                                                 const PageRequest& page);

 private:
  std::shared_ptr<RuleStore> store_;
  const DestinationRegistry& destinations_;
  std::function<void()> on_change_;
};

}  // namespace iot::rule_forwarding
