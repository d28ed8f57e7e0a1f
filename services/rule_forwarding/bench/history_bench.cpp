// Telemetry history write throughput: rows/s stored through the history writer (group commit,
// one COPY per batch, a staging table only for a batch with rows stored before) against a raw COPY
// of the same rows into the same table of the same PostgreSQL, in the same run. Not a test: it
// prints the figures and their ratio. Run (PostgreSQL from IOT_TEST_PG_URL, else a private one):
//   history_bench --benchmark_min_time=2
// The table is emptied (untimed) before every iteration, so every variant writes into the same
// state: today's partition, empty, with its primary-key index.

#include <benchmark/benchmark.h>

#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <pqxx/pqxx>
#include <thread>

#include "iot/common/migrations.h"
#include "iot/common/postgres.h"
#include "iot/rule_forwarding/history.h"
#include "iot/rule_forwarding/history_store.h"
#include "iot/rule_forwarding/history_writer.h"
#include "iot/rule_forwarding/service_spec.h"
#include "iot/testing/servers.h"

namespace {

using iot::rule_forwarding::HistoryRow;

constexpr int kRowsPerIteration = 20'000;
constexpr int kProducers = 4;          // concurrent Deliver calls
constexpr int kRowsPerDelivery = 200;  // e.g. a batch of 100 deliveries with 2 properties each

struct Env {
  std::string url;
  std::shared_ptr<iot::common::PgPool> pool;
  std::shared_ptr<iot::rule_forwarding::PgHistoryStore> store;
};

Env& Shared() {
  static Env env = [] {
    Env e;
    e.url = iot::testing::CreateTestDatabase();
    e.pool = std::make_shared<iot::common::PgPool>(iot::common::PgPoolOptions{.url = e.url});
    auto applied = iot::common::ApplyMigrations(*e.pool, "rule_forwarding",
                                                iot::rule_forwarding::EmbeddedMigrations());
    if (!applied.ok()) {
      std::cerr << "migrations: " << applied.status() << "\n";
      std::exit(1);
    }
    e.store = std::make_shared<iot::rule_forwarding::PgHistoryStore>(
        e.pool, iot::rule_forwarding::HistoryRetention{});
    if (auto made = e.store->Maintain(iot::rule_forwarding::NowMs()); !made.ok()) {
      std::cerr << "partitions: " << made.status() << "\n";
      std::exit(1);
    }
    return e;
  }();
  return env;
}

/// 100 devices x 2 services x properties, one row per (device, property, second) of today.
std::vector<HistoryRow> MakeRows(int iteration) {
  const int64_t start =
      iot::rule_forwarding::DayOf(iot::rule_forwarding::NowMs()) * iot::rule_forwarding::kMsPerDay;
  std::vector<HistoryRow> rows;
  rows.reserve(kRowsPerIteration);
  for (int i = 0; i < kRowsPerIteration; ++i) {
    HistoryRow r;
    r.tenant_id = "bench";
    r.device_id = "device-" + std::to_string(i % 100);
    r.service_id = i % 2 == 0 ? "meter" : "status";
    r.property = i % 2 == 0 ? "voltage" : "state";
    r.time_ms = start + (i / 100) * 1000 + iteration % 1000;
    if (i % 2 == 0) {
      r.num = 220.0 + (i % 17) * 0.5;
      r.value_json = std::to_string(*r.num);
    } else {
      r.value_json = "\"on\"";
    }
    r.dedupe_key = "msg-" + std::to_string(iteration) + "-" + std::to_string(i) + ":history";
    rows.push_back(std::move(r));
  }
  return rows;
}

void Truncate() {
  (void)Shared().pool->Run([](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec0("TRUNCATE rule_forwarding.property_history");
    tx.commit();
  });
}

/// Times `write` storing a fresh set of rows into the emptied table, once per iteration.
void Iterate(benchmark::State& state,
             const std::function<absl::Status(const std::vector<HistoryRow>&)>& write) {
  int iteration = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Truncate();
    const auto rows = MakeRows(iteration++);
    state.ResumeTiming();
    if (absl::Status status = write(rows); !status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * kRowsPerIteration);
}

/// The service's path: producers call HistoryWriter::Write concurrently, as the dispatcher's
/// history deliveries do, and each waits until its rows are committed.
void BM_HistoryWriter(benchmark::State& state) {
  iot::rule_forwarding::HistoryWriter writer(
      [store = Shared().store](std::span<const HistoryRow> rows) { return store->Insert(rows); },
      {.max_batch_rows = 5000, .max_buffered_rows = 50'000});
  Iterate(state, [&](const std::vector<HistoryRow>& rows) {
    std::vector<std::thread> producers;
    std::atomic<bool> failed{false};
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        for (int i = p * kRowsPerDelivery; i < kRowsPerIteration;
             i += kProducers * kRowsPerDelivery) {
          std::vector<HistoryRow> chunk(rows.begin() + i, rows.begin() + i + kRowsPerDelivery);
          if (!writer.Write(std::move(chunk)).ok()) {
            failed = true;
          }
        }
      });
    }
    for (auto& t : producers) {
      t.join();
    }
    return failed ? absl::InternalError("a write failed") : absl::OkStatus();
  });
}

/// The floor: one raw COPY of the same rows straight into the partitioned table.
void BM_RawCopy(benchmark::State& state) {
  Iterate(state, [](const std::vector<HistoryRow>& rows) {
    return Shared().pool->Run([&](pqxx::connection& c) {
      pqxx::work tx(c);
      iot::rule_forwarding::CopyHistoryRows(tx, "rule_forwarding.property_history", rows);
      tx.commit();
    });
  });
}

BENCHMARK(BM_HistoryWriter)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_RawCopy)->Unit(benchmark::kMillisecond)->UseRealTime();

/// Console output plus the rows/s of each benchmark, for the ratio line.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      auto it = run.counters.find("items_per_second");
      if (it == run.counters.end()) {
        continue;
      }
      if (run.run_type == Run::RT_Iteration) {
        auto& [sum, n] = rates_[run.run_name.function_name];
        sum += it->second.value;
        ++n;
      } else if (run.aggregate_name == "mean") {
        rates_[run.run_name.function_name] = {it->second.value, 1};
      }
    }
  }
  /// Mean rows/s over the repetitions of `name` (the reported mean when only aggregates are).
  double Rate(const std::string& name) {
    const auto& [sum, n] = rates_[name];
    return n == 0 ? 0 : sum / n;
  }

 private:
  std::map<std::string, std::pair<double, int>> rates_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const double writer = reporter.Rate("BM_HistoryWriter");
  const double raw = reporter.Rate("BM_RawCopy");
  if (writer > 0 && raw > 0) {
    std::cout << "history writer: " << static_cast<int64_t>(writer)
              << " rows/s, raw COPY: " << static_cast<int64_t>(raw)
              << " rows/s, ratio writer/raw = " << writer / raw << "\n";
  }
  benchmark::Shutdown();
  return 0;
}
