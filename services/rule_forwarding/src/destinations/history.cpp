#include "destinations/history.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "iot/common/status.h"

namespace iot::rule_forwarding {
namespace {

prometheus::Counter& RowsCounter(prometheus::Registry& registry, const std::string& outcome) {
  return prometheus::BuildCounter()
      .Name("iot_rf_history_rows_total")
      .Help("Property values offered to telemetry history, by outcome")
      .Register(registry)
      .Add({{"outcome", outcome}});
}

}  // namespace

HistoryMetrics::HistoryMetrics(prometheus::Registry& registry)
    : stored(RowsCounter(registry, "stored")),
      duplicate(RowsCounter(registry, "duplicate")),
      out_of_window(RowsCounter(registry, "out_of_window")),
      failed(RowsCounter(registry, "failed")),
      buffered(prometheus::BuildGauge()
                   .Name("iot_rf_history_buffered_rows")
                   .Help("Rows waiting in the history writer's buffer")
                   .Register(registry)
                   .Add({})),
      partitions_dropped(prometheus::BuildCounter()
                             .Name("iot_rf_history_partitions_dropped_total")
                             .Help("Daily history partitions dropped by retention")
                             .Register(registry)
                             .Add({})) {}

HistoryDestination::HistoryDestination(std::shared_ptr<PgHistoryStore> store,
                                       std::shared_ptr<HistoryWriter> writer,
                                       std::shared_ptr<HistoryMetrics> metrics)
    : store_(std::move(store)), writer_(std::move(writer)), metrics_(std::move(metrics)) {}

absl::Status HistoryDestination::ValidateConfig(const nlohmann::json& config) const {
  if (!config.is_null() && !(config.is_object() && config.empty())) {
    return common::InvalidField("config", "history takes no settings: {}");
  }
  return absl::OkStatus();
}

absl::Status HistoryDestination::Deliver(std::span<const Delivery> batch) {
  std::vector<HistoryRow> rows;
  for (const Delivery& delivery : batch) {
    if (delivery.resource == "device.property") {
      std::vector<HistoryRow> more = RowsOf(delivery);
      rows.insert(rows.end(), std::make_move_iterator(more.begin()),
                  std::make_move_iterator(more.end()));
    }
  }
  const size_t offered = rows.size();
  rows = store_->InWindow(rows, NowMs());
  metrics_->out_of_window.Increment(static_cast<double>(offered - rows.size()));
  const size_t n = rows.size();
  absl::Status status = writer_->Write(std::move(rows));
  if (!status.ok()) {
    metrics_->failed.Increment(static_cast<double>(n));
  }
  return status;
}

}  // namespace iot::rule_forwarding
