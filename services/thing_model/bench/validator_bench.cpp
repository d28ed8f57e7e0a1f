// Report validation cost: parse + validate of a 10-property Huawei property report against the
// smart-meter model. Run: thing_model_bench --benchmark_repetitions=5
//                                           --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>
#include <string>

#include "iot/thing_model/product_model.h"
#include "iot/thing_model/validator.h"

namespace {

using iot::thing_model::ParseProductModel;
using iot::thing_model::ReportResult;
using iot::thing_model::Validator;

std::string SmartMeterModel() {
  std::ifstream in(std::string(IOT_THING_MODEL_TESTDATA) + "/smart_meter.json");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Validator MakeValidator() {
  auto model = ParseProductModel(SmartMeterModel());
  if (!model.ok()) {
    std::abort();
  }
  return Validator(model->model);
}

// Ten properties of eight data types, as a meter would send them.
constexpr const char* kReport =
    R"({"services":[{"service_id":"meter","properties":{"voltage":229.8,"current":4.17,)"
    R"("total_energy":18234.56,"relay_state":"ON","report_interval":60,"firmware":"v2.4.1",)"
    R"("installed_at":"20250301T080000Z","tags":["north","floor-2"],"online":true,)"
    R"("serial":202503010042},"event_time":"20261126T174248Z"}]})";

void BM_ValidateReport(benchmark::State& state) {
  const Validator validator = MakeValidator();
  const std::string report = kReport;
  ReportResult result;
  for (auto _ : state) {
    validator.ValidateReport(report, result);
    benchmark::DoNotOptimize(result.properties.data());
  }
  if (!result.ok() || result.properties.size() != 10) {
    state.SkipWithError("report did not validate");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(report.size()));
}
BENCHMARK(BM_ValidateReport)->Unit(benchmark::kMicrosecond);

// The same report with three invalid properties: the error path allocates messages.
void BM_ValidateReportWithErrors(benchmark::State& state) {
  const Validator validator = MakeValidator();
  std::string report = kReport;
  report.replace(report.find("229.8"), 5, "999.9");
  report.replace(report.find("\"ON\""), 4, "\"XX\"");
  report.replace(report.find("60,"), 2, "\"60\"");
  ReportResult result;
  for (auto _ : state) {
    validator.ValidateReport(report, result);
    benchmark::DoNotOptimize(result.errors.data());
  }
  if (result.errors.size() != 3) {
    state.SkipWithError("expected three errors");
  }
}
BENCHMARK(BM_ValidateReportWithErrors)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
