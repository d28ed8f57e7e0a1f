#pragma once

#include <memory>
#include <mutex>
#include <set>

#include "iot/common/postgres.h"
#include "iot/rule_forwarding/history.h"

namespace pqxx {
class transaction_base;
}  // namespace pqxx

namespace iot::rule_forwarding {

/// COPYs `rows` into `table` (the history table or one shaped like it) within `tx`.
void CopyHistoryRows(pqxx::transaction_base& tx, const std::string& table,
                     std::span<const HistoryRow> rows);

struct HistoryRetention {
  int64_t retention_days = 30;  ///< partitions wholly older than this are dropped
  int64_t days_ahead = 3;       ///< partitions created ahead of today
};

/// History in `rule_forwarding.property_history`, range-partitioned by day
/// (`property_history_pYYYYMMDD`). A batch is one COPY into the table; a batch that holds rows
/// stored before (a retried delivery: the primary key includes the delivery id) is redone as a
/// COPY into a temporary staging table and one INSERT ... ON CONFLICT DO NOTHING, so it stores
/// nothing twice. Partitions
/// for the days a batch needs are created on demand (within retention .. days ahead).
class PgHistoryStore final : public HistoryStore {
 public:
  PgHistoryStore(std::shared_ptr<common::PgPool> pool, HistoryRetention retention);

  /// Rows outside [now - retention, now + days_ahead] are not stored (counted by the caller
  /// as dropped): returns the rows that fall inside, in order.
  [[nodiscard]] std::vector<HistoryRow> InWindow(std::span<const HistoryRow> rows,
                                                 int64_t now_ms) const;

  absl::StatusOr<int64_t> Insert(std::span<const HistoryRow> rows) override;
  absl::StatusOr<HistoryPage> Query(const HistoryQuery& query) override;

  /// Creates the partitions of yesterday .. today + days_ahead and drops those past retention;
  /// returns the names dropped. Safe to run on every replica at once.
  absl::StatusOr<std::vector<std::string>> Maintain(int64_t now_ms);

  /// The partition names that exist now.
  absl::StatusOr<std::vector<std::string>> Partitions();

  [[nodiscard]] const HistoryRetention& retention() const { return retention_; }

 private:
  absl::Status EnsurePartitions(const std::set<int64_t>& days);

  std::shared_ptr<common::PgPool> pool_;
  HistoryRetention retention_;
  std::mutex mu_;
  std::set<int64_t> known_days_;
};

}  // namespace iot::rule_forwarding
