// Telemetry history end to end: property records enter the real rule-forwarding through
// InternalIngest (the built-in history delivery), land in the day-partitioned table in the real
// PostgreSQL, and come back through History.ListPropertyHistory raw, paged and bucketed;
// retention drops old partitions; tenants see only their own history.
#include "iot/rule_forwarding/history.h"

#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "history_subscriptions_platform.h"
#include "iot/common/postgres.h"
#include "iot/rule_forwarding/history_store.h"

namespace iot {
namespace {

using iot::testing::kHsAdminKey;
using iot::testing::PropertyRecord;
using iot::testing::WaitUntil;
using rule_forwarding::FormatTimestamp;
using std::chrono::seconds;
namespace rf = iot::rule_forwarding::v1;

constexpr int64_t kMinute = 60'000;

class HistoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    platform_ = new iot::testing::HistorySubscriptionsPlatform(
        {{"IOT_RULE_FORWARDING_HISTORY_RETENTION_DAYS", "2"},
         {"IOT_RULE_FORWARDING_HISTORY_MAINTENANCE_INTERVAL", "300ms"}});
    // An aligned 5-minute boundary two hours ago: well inside retention, buckets predictable.
    base_ = (rule_forwarding::NowMs() - 2 * 3'600'000) / (5 * kMinute) * (5 * kMinute);
  }
  static void TearDownTestSuite() {
    delete platform_;
    platform_ = nullptr;
  }

  static grpc::Status List(const rf::ListPropertyHistoryRequest& request,
                           rf::ListPropertyHistoryResponse* response,
                           const std::string& key = kHsAdminKey) {
    auto stub = rf::History::NewStub(platform_->channel());
    return stub->ListPropertyHistory(platform_->Ctx(key).get(), request, response);
  }

  static rf::ListPropertyHistoryRequest Request(const std::string& device,
                                                const std::string& property) {
    rf::ListPropertyHistoryRequest request;
    request.set_device_id(device);
    request.set_service_id("meter");
    request.set_property(property);
    request.set_start_time(FormatTimestamp(base_ - kMinute));
    request.set_end_time(FormatTimestamp(base_ + 60 * kMinute));
    return request;
  }

  /// Every raw value, following markers with `limit` per page; `pages` counts them.
  static std::vector<rf::PropertyValue> AllValues(rf::ListPropertyHistoryRequest request, int limit,
                                                  int* pages = nullptr) {
    std::vector<rf::PropertyValue> values;
    request.set_limit(limit);
    for (int page = 1; page < 100; ++page) {
      rf::ListPropertyHistoryResponse response;
      const grpc::Status status = List(request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      values.insert(values.end(), response.values().begin(), response.values().end());
      if (response.next_marker().empty() || !status.ok()) {
        if (pages != nullptr) {
          *pages = page;
        }
        break;
      }
      request.set_marker(response.next_marker());
    }
    return values;
  }

  /// Ingests one record per minute from base_ with voltage i and state "s{i}".
  static void IngestSeries(const std::string& device, int n, const std::string& tenant = "default",
                           int offset = 0) {
    std::vector<PropertyRecord> records;
    for (int i = 0; i < n; ++i) {
      records.push_back({.message_id = fmt::format("{}-{}-{}", tenant, device, i),
                         .device_id = device,
                         .time_ms = base_ + i * kMinute,
                         .properties = {{"voltage", i + offset}, {"state", fmt::format("s{}", i)}},
                         .tenant_id = tenant});
    }
    const grpc::Status status = platform_->Ingest(records);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  static bool WaitForValues(const std::string& device, size_t n,
                            const std::string& property = "voltage") {
    return WaitUntil([&] { return AllValues(Request(device, property), 1000).size() >= n; },
                     seconds(15));
  }

  static inline iot::testing::HistorySubscriptionsPlatform* platform_ = nullptr;
  static inline int64_t base_ = 0;
};

TEST_F(HistoryTest, IngestedPropertiesAreStoredAndPagedInTimeOrder) {
  IngestSeries("h-raw", 10);
  ASSERT_TRUE(WaitForValues("h-raw", 10)) << platform_->service().process().Log();

  int pages = 0;
  const auto values = AllValues(Request("h-raw", "voltage"), 4, &pages);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(values.size(), 10u);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(values[i].time(), FormatTimestamp(base_ + static_cast<int64_t>(i) * kMinute));
    EXPECT_EQ(nlohmann::json::parse(values[i].value_json()), i);
  }
  const auto states = AllValues(Request("h-raw", "state"), 3);
  ASSERT_EQ(states.size(), 10u);
  EXPECT_EQ(states[9].value_json(), R"("s9")");

  // The time range bounds the rows: start inclusive, end exclusive.
  auto request = Request("h-raw", "voltage");
  request.set_start_time(FormatTimestamp(base_ + 2 * kMinute));
  request.set_end_time(FormatTimestamp(base_ + 5 * kMinute));
  const auto window = AllValues(request, 100);
  ASSERT_EQ(window.size(), 3u);
  EXPECT_EQ(window.front().value_json(), "2");
  EXPECT_EQ(window.back().value_json(), "4");
}

TEST_F(HistoryTest, ValuesNeedingCopyEscapesComeBackAsReported) {
  // The rows go to PostgreSQL as COPY text lines built by the service: backslashes (JSON's own
  // escapes), tabs, newlines and non-ASCII must survive the round trip.
  const nlohmann::json note = "tab\there\nnew line \\ back \"quoted\" caf\u00e9 \u0001";
  const grpc::Status status = platform_->Ingest(
      {{.message_id = "esc-1",
        .device_id = "h-esc",
        .time_ms = base_,
        .properties = {{"note", note}, {"path", "C:\\dir\\file"}, {"tab\tin name", 1.5}}}});
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(WaitForValues("h-esc", 1, "note"));
  const auto notes = AllValues(Request("h-esc", "note"), 10);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(notes[0].value_json()), note);
  const auto paths = AllValues(Request("h-esc", "path"), 10);
  ASSERT_EQ(paths.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(paths[0].value_json()), "C:\\dir\\file");
  // A raw tab is only possible outside the JSON value: in a name.
  const auto volts = AllValues(Request("h-esc", "tab\tin name"), 10);
  ASSERT_EQ(volts.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(volts[0].value_json()), 1.5);
}

TEST_F(HistoryTest, BucketsCarryCountMinMaxAvgAndPage) {
  IngestSeries("h-bucket", 10);
  ASSERT_TRUE(WaitForValues("h-bucket", 10));

  auto request = Request("h-bucket", "voltage");
  request.set_bucket("5m");
  rf::ListPropertyHistoryResponse response;
  ASSERT_TRUE(List(request, &response).ok());
  ASSERT_EQ(response.buckets_size(), 2);
  EXPECT_TRUE(response.next_marker().empty());
  const auto& first = response.buckets(0);
  EXPECT_EQ(first.start_time(), FormatTimestamp(base_));
  EXPECT_EQ(first.count(), 5);
  EXPECT_DOUBLE_EQ(first.min(), 0);
  EXPECT_DOUBLE_EQ(first.max(), 4);
  EXPECT_DOUBLE_EQ(first.avg(), 2);
  const auto& second = response.buckets(1);
  EXPECT_EQ(second.start_time(), FormatTimestamp(base_ + 5 * kMinute));
  EXPECT_EQ(second.count(), 5);
  EXPECT_DOUBLE_EQ(second.min(), 5);
  EXPECT_DOUBLE_EQ(second.max(), 9);
  EXPECT_DOUBLE_EQ(second.avg(), 7);

  // One bucket per page.
  request.set_limit(1);
  rf::ListPropertyHistoryResponse page1;
  ASSERT_TRUE(List(request, &page1).ok());
  ASSERT_EQ(page1.buckets_size(), 1);
  ASSERT_FALSE(page1.next_marker().empty());
  request.set_marker(page1.next_marker());
  rf::ListPropertyHistoryResponse page2;
  ASSERT_TRUE(List(request, &page2).ok());
  ASSERT_EQ(page2.buckets_size(), 1);
  EXPECT_EQ(page2.buckets(0).start_time(), FormatTimestamp(base_ + 5 * kMinute));
  EXPECT_TRUE(page2.next_marker().empty());

  // Non-numeric values are counted; min/max/avg stay absent.
  auto states = Request("h-bucket", "state");
  states.set_bucket("1h");
  rf::ListPropertyHistoryResponse text;
  ASSERT_TRUE(List(states, &text).ok());
  ASSERT_GE(text.buckets_size(), 1);
  int64_t count = 0;
  for (const auto& b : text.buckets()) {
    count += b.count();
    EXPECT_FALSE(b.has_min());
    EXPECT_FALSE(b.has_avg());
  }
  EXPECT_EQ(count, 10);
}

TEST_F(HistoryTest, TenantsSeeOnlyTheirOwnHistory) {
  IngestSeries("h-shared", 3);
  IngestSeries("h-shared", 2, "other", 100);
  ASSERT_TRUE(WaitForValues("h-shared", 3));
  ASSERT_TRUE(WaitUntil(
      [&] {
        rf::ListPropertyHistoryResponse response;
        return List(Request("h-shared", "voltage"), &response, platform_->other_key()).ok() &&
               response.values_size() == 2;
      },
      seconds(15)));

  rf::ListPropertyHistoryResponse mine;
  ASSERT_TRUE(List(Request("h-shared", "voltage"), &mine).ok());
  ASSERT_EQ(mine.values_size(), 3);
  EXPECT_EQ(mine.values(0).value_json(), "0");
  rf::ListPropertyHistoryResponse theirs;
  ASSERT_TRUE(List(Request("h-shared", "voltage"), &theirs, platform_->other_key()).ok());
  ASSERT_EQ(theirs.values_size(), 2);
  EXPECT_EQ(theirs.values(0).value_json(), "100");

  rf::ListPropertyHistoryResponse none;
  ASSERT_TRUE(List(Request("h-raw-never", "voltage"), &none, platform_->other_key()).ok());
  EXPECT_EQ(none.values_size(), 0);
}

TEST_F(HistoryTest, IotctlPrintsBuckets) {
  IngestSeries("h-cli", 10);
  ASSERT_TRUE(WaitForValues("h-cli", 10));
  iot::testing::TempDir dir("iotctl");
  iot::testing::Process iotctl(
      {.argv = {iot::testing::ExecutablePath("iotctl").string(), "history", "--device", "h-cli",
                "--service", "meter", "--property", "voltage", "--start", FormatTimestamp(base_),
                "--end", FormatTimestamp(base_ + 10 * kMinute), "--bucket", "5m"},
       .env = {{"IOTCTL_ADDR", platform_->service().address()}, {"IOTCTL_API_KEY", kHsAdminKey}},
       .log_file = dir.path() / "iotctl.log",
       .run_as_user = {}});
  ASSERT_EQ(iotctl.Wait(seconds(20)), 0) << iotctl.Log();
  const std::string out = iotctl.Log();
  EXPECT_NE(out.find("BUCKET"), std::string::npos) << out;
  EXPECT_NE(out.find(FormatTimestamp(base_ + 5 * kMinute) + "  5      5    9    7"),
            std::string::npos)
      << out;
}

TEST_F(HistoryTest, BadInputsAreInvalidArgumentNamingTheField) {
  auto expect_field = [](const rf::ListPropertyHistoryRequest& request, const std::string& field) {
    rf::ListPropertyHistoryResponse response;
    const grpc::Status status = List(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_EQ(status.error_message().rfind(field + ":", 0), 0u) << status.error_message();
  };
  auto request = Request("d", "voltage");
  request.set_start_time(request.end_time());
  expect_field(request, "start_time");
  request = Request("d", "voltage");
  request.set_end_time("yesterday");
  expect_field(request, "end_time");
  request = Request("d", "voltage");
  request.set_bucket("7x");
  expect_field(request, "bucket");
  request = Request("d", "voltage");
  request.set_bucket("0s");
  expect_field(request, "bucket");
  request = Request("d", "");
  expect_field(request, "property");
  request = Request("d", "voltage");
  request.set_marker("not-a-marker");
  expect_field(request, "marker");
  request = Request("d", "voltage");
  request.set_limit(5000);
  expect_field(request, "limit");

  rf::ListPropertyHistoryResponse response;
  EXPECT_EQ(List(Request("d", "voltage"), &response, "").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(HistoryTest, ARetriedBatchStoresNothingTwice) {
  // The writer's store on the service's own database: the same rows (same delivery id) twice.
  auto pool = std::make_shared<common::PgPool>(common::PgPoolOptions{.url = platform_->pg_url()});
  rule_forwarding::PgHistoryStore store(pool, {.retention_days = 2, .days_ahead = 3});
  std::vector<rule_forwarding::HistoryRow> rows;
  for (int i = 0; i < 3; ++i) {
    rows.push_back({.tenant_id = "default",
                    .device_id = "h-dedupe",
                    .service_id = "meter",
                    .property = "voltage",
                    .time_ms = base_ + i * kMinute,
                    .value_json = std::to_string(i),
                    .num = i,
                    .dedupe_key = fmt::format("m{}:history", i)});
  }
  EXPECT_EQ(store.Insert(rows).value_or(-1), 3);
  EXPECT_EQ(store.Insert(rows).value_or(-1), 0);
  // A different delivery at the same time is a different reading and is kept.
  rows[0].dedupe_key = "m9:history";
  EXPECT_EQ(store.Insert(std::span(rows).first(1)).value_or(-1), 1);
  EXPECT_EQ(AllValues(Request("h-dedupe", "voltage"), 2).size(), 4u);
}

TEST_F(HistoryTest, RetentionDropsWhollyExpiredPartitions) {
  const int64_t now = rule_forwarding::NowMs();
  const int64_t today = rule_forwarding::DayOf(now);
  const std::string old_partition = rule_forwarding::PartitionName(today - 10);
  pqxx::connection c(platform_->pg_url());
  {
    pqxx::work tx(c);
    tx.exec0(fmt::format(
        "CREATE TABLE rule_forwarding.{} PARTITION OF rule_forwarding.property_history FOR "
        "VALUES FROM ('{}') TO ('{}')",
        old_partition, rule_forwarding::PgTimestamp((today - 10) * rule_forwarding::kMsPerDay),
        rule_forwarding::PgTimestamp((today - 9) * rule_forwarding::kMsPerDay)));
    tx.exec0(fmt::format(
        "INSERT INTO rule_forwarding.property_history VALUES ('default', 'old', 'meter', 'v', "
        "'{}', 'k', 1, '1')",
        rule_forwarding::PgTimestamp((today - 10) * rule_forwarding::kMsPerDay + 5)));
    tx.commit();
  }
  auto partitions = [&] {
    pqxx::read_transaction tx(c);
    std::set<std::string> names;
    for (const auto& row :
         tx.exec("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE "
                 "i.inhparent = 'rule_forwarding.property_history'::regclass")) {
      names.insert(row[0].as<std::string>());
    }
    return names;
  };
  ASSERT_TRUE(partitions().contains(old_partition));
  EXPECT_TRUE(WaitUntil([&] { return !partitions().contains(old_partition); }, seconds(15)))
      << platform_->service().process().Log();
  // Today's and the days ahead stay (created at start-up).
  const auto kept = partitions();
  for (int64_t d = today; d <= today + 3; ++d) {
    EXPECT_TRUE(kept.contains(rule_forwarding::PartitionName(d))) << d;
  }
  EXPECT_TRUE(WaitUntil(
      [&] { return platform_->Metric("iot_rf_history_partitions_dropped_total", {}) >= 1; },
      seconds(5)));
}

}  // namespace
}  // namespace iot
