#pragma once

#include <memory>

#include "iot/rule_forwarding/destination.h"
#include "iot/rule_forwarding/history_store.h"
#include "iot/rule_forwarding/history_writer.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
template <typename T>
class Family;
}  // namespace prometheus

namespace iot::rule_forwarding {

/// iot_rf_history_rows_total{outcome}: stored, duplicate (already stored: a retried delivery),
/// out_of_window (older than retention or too far ahead), failed; iot_rf_history_buffered_rows;
/// iot_rf_history_partitions_dropped_total.
struct HistoryMetrics {
  explicit HistoryMetrics(prometheus::Registry& registry);

  prometheus::Counter& stored;
  prometheus::Counter& duplicate;
  prometheus::Counter& out_of_window;
  prometheus::Counter& failed;
  prometheus::Gauge& buffered;
  prometheus::Counter& partitions_dropped;
};

/// `history`: stores the properties of device.property deliveries (the envelope's
/// notify_data.body.services[].properties, or services[] of a selected body) through the
/// writer. Other resources and payloads without services store nothing. Config: {} (no keys).
/// Idempotent on delivery_id (the store's dedupe key).
class HistoryDestination final : public Destination {
 public:
  HistoryDestination(std::shared_ptr<PgHistoryStore> store, std::shared_ptr<HistoryWriter> writer,
                     std::shared_ptr<HistoryMetrics> metrics);

  [[nodiscard]] std::string_view type() const override { return "history"; }
  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& config) const override;
  absl::Status Deliver(std::span<const Delivery> batch) override;

 private:
  std::shared_ptr<PgHistoryStore> store_;
  std::shared_ptr<HistoryWriter> writer_;
  std::shared_ptr<HistoryMetrics> metrics_;
};

}  // namespace iot::rule_forwarding
