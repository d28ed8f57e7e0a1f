// Telemetry history without a database: time formats, buckets, partition names and retention,
// page markers, row extraction from deliveries, and the group-commit writer with a fake sink.
#include "iot/rule_forwarding/history.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "iot/common/status.h"
#include "iot/rule_forwarding/history_writer.h"

namespace iot::rule_forwarding {
namespace {

using ::testing::ElementsAre;

constexpr int64_t kNov26 = 1'764'115'200'000;  // 2025-11-26T00:00:00Z

TEST(HistoryTimeTest, ParsesRfc3339AndIotdaForms) {
  EXPECT_EQ(*ParseTimestamp("2025-11-26T00:00:00Z"), kNov26);
  EXPECT_EQ(*ParseTimestamp("20251126T000000Z"), kNov26);
  EXPECT_EQ(*ParseTimestamp("2025-11-26T01:30:00.250+01:30"), kNov26 + 250);
  EXPECT_EQ(*ParseTimestamp("2025-11-25T23:00:00-01:00"), kNov26);
  EXPECT_EQ(*ParseTimestamp("1969-12-31T23:59:59Z"), -1000);
  for (const char* bad : {"", "2025-11-26", "2025-13-01T00:00:00Z", "2025-02-30T00:00:00Z",
                          "2025-11-26T24:00:00Z", "2025-11-26T00:00:00", "20251126T000000",
                          "2025-11-26T00:00:00Zjunk", "2025-11-26T00:00:00.Z", "yesterday"}) {
    EXPECT_FALSE(ParseTimestamp(bad).ok()) << bad;
  }
}

TEST(HistoryTimeTest, FormatsUtcWithMilliseconds) {
  EXPECT_EQ(FormatTimestamp(kNov26 + 3'723'004), "2025-11-26T01:02:03.004Z");
  EXPECT_EQ(PgTimestamp(kNov26 + 3'723'004), "2025-11-26 01:02:03.004+00");
  EXPECT_EQ(FormatTimestamp(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(*ParseTimestamp(FormatTimestamp(kNov26 + 123'456)), kNov26 + 123'456);
}

TEST(HistoryBucketTest, ParsesWidths) {
  EXPECT_EQ(*ParseBucket("30s"), 30);
  EXPECT_EQ(*ParseBucket("5m"), 300);
  EXPECT_EQ(*ParseBucket("1h"), 3600);
  EXPECT_EQ(*ParseBucket("1d"), 86'400);
  EXPECT_EQ(*ParseBucket("31d"), 31 * 86'400);
  EXPECT_EQ(*ParseBucket("90"), 90);
  for (const char* bad :
       {"", "0s", "-5m", "32d", "1w", "m", "1.5h", "5 m", "99999999999999999999"}) {
    EXPECT_FALSE(ParseBucket(bad).ok()) << bad;
  }
}

TEST(HistoryBucketTest, StartsAlignToTheEpochAlsoBeforeIt) {
  EXPECT_EQ(BucketStart(kNov26 + 299'999, 300'000), kNov26);
  EXPECT_EQ(BucketStart(kNov26 + 300'000, 300'000), kNov26 + 300'000);
  EXPECT_EQ(BucketStart(-1, 60'000), -60'000);
  EXPECT_EQ(BucketStart(0, 60'000), 0);
}

TEST(HistoryPartitionTest, NamesAndDaysRoundTrip) {
  EXPECT_EQ(DayOf(kNov26), 20'418);
  EXPECT_EQ(DayOf(kNov26 - 1), 20'417);
  EXPECT_EQ(DayOf(-1), -1);
  EXPECT_EQ(PartitionName(DayOf(kNov26)), "property_history_p20251126");
  EXPECT_EQ(PartitionDay("property_history_p20251126"), DayOf(kNov26));
  EXPECT_EQ(PartitionDay("property_history_p20251131"), std::nullopt);
  EXPECT_EQ(PartitionDay("property_history_default"), std::nullopt);
  EXPECT_EQ(PartitionDay("other_p20251126"), std::nullopt);
}

TEST(HistoryPartitionTest, DropsOnlyPartitionsWhollyPastRetention) {
  const std::vector<std::string> parts = {
      "property_history_p20251122", "property_history_p20251123", "property_history_p20251124",
      "property_history_p20251126", "property_history_default"};
  // Retention 2 days at 2025-11-26T12:00Z: the cut-off is 2025-11-24T12:00Z; the 24th still
  // holds rows newer than it.
  EXPECT_THAT(PartitionsToDrop(parts, kNov26 + 12 * 3'600'000, 2),
              ElementsAre("property_history_p20251122", "property_history_p20251123"));
  // At midnight exactly the 23rd ends at the cut-off and goes.
  EXPECT_THAT(PartitionsToDrop(parts, kNov26 + kMsPerDay, 2),
              ElementsAre("property_history_p20251122", "property_history_p20251123",
                          "property_history_p20251124"));
  EXPECT_TRUE(PartitionsToDrop(parts, kNov26, 30).empty());
}

HistoryQueryInput Input() {
  return {.device_id = "d1",
          .service_id = "meter",
          .property = "voltage",
          .start_time = "2025-11-26T00:00:00Z",
          .end_time = "2025-11-26T01:00:00Z",
          .limit = 0,
          .marker = "",
          .bucket = ""};
}

std::string FieldOf(const absl::StatusOr<HistoryQuery>& q) {
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << q.status();
  return common::FieldOf(q.status());
}

TEST(HistoryQueryTest, ChecksEveryFieldAndNamesIt) {
  auto q = MakeHistoryQuery("t1", Input(), kNov26);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->start_ms, kNov26);
  EXPECT_EQ(q->end_ms, kNov26 + 3'600'000);
  EXPECT_EQ(q->limit, 100);
  EXPECT_EQ(q->bucket_seconds, 0);

  auto in = Input();
  in.device_id.clear();
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "device_id");
  in = Input();
  in.property.clear();
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "property");
  in = Input();
  in.start_time = "noon";
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "start_time");
  in = Input();
  in.end_time = "2025-11-26T25:00:00Z";
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "end_time");
  in = Input();
  in.start_time = in.end_time;
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "start_time");
  in = Input();
  in.limit = 1001;
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "limit");
  in = Input();
  in.bucket = "1w";
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "bucket");
  in = Input();
  in.marker = "zz";
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "marker");
  in = Input();
  in.marker = BucketMarker(kNov26);  // a bucket marker on a raw query
  EXPECT_EQ(FieldOf(MakeHistoryQuery("t1", in, kNov26)), "marker");
}

TEST(HistoryQueryTest, DefaultsToTheLastDayAndReadsMarkers) {
  auto in = Input();
  in.start_time.clear();
  in.end_time.clear();
  auto q = MakeHistoryQuery("t1", in, kNov26);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->end_ms, kNov26);
  EXPECT_EQ(q->start_ms, kNov26 - kMsPerDay);

  in = Input();
  in.marker = RawMarker(kNov26 + 5, "msg:1");
  q = MakeHistoryQuery("t1", in, kNov26);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->after_ms, kNov26 + 5);
  EXPECT_EQ(q->after_key, "msg:1");

  in = Input();
  in.bucket = "5m";
  in.marker = BucketMarker(kNov26 + 300'000);
  q = MakeHistoryQuery("t1", in, kNov26);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->bucket_seconds, 300);
  EXPECT_EQ(q->after_ms, kNov26 + 300'000);
}

Delivery PropertyDelivery(nlohmann::json payload) {
  Delivery d;
  d.delivery_id = "m1::0";
  d.tenant_id = "t1";
  d.device_id = "d1";
  d.resource = "device.property";
  d.event_time_unix_ms = kNov26 + 42;
  d.payload = std::move(payload);
  return d;
}

TEST(HistoryRowsTest, OneRowPerPropertyFromTheEnvelopeOrABody) {
  const auto envelope = nlohmann::json::parse(R"({
    "resource": "device.property", "event": "report",
    "notify_data": {"header": {"device_id": "d1"}, "body": {"services": [
      {"service_id": "meter", "properties": {"voltage": 220.5, "state": "on"},
       "event_time": "20251126T000001Z"},
      {"service_id": "gps", "properties": {"fix": true}},
      {"service_id": 7, "properties": {"x": 1}},
      "junk"]}}})");
  const auto rows = RowsOf(PropertyDelivery(envelope));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].service_id, "meter");
  EXPECT_EQ(rows[0].property, "state");
  EXPECT_EQ(rows[0].value_json, R"("on")");
  EXPECT_FALSE(rows[0].num);
  EXPECT_EQ(rows[0].time_ms, kNov26 + 1000);  // the service's event_time wins
  EXPECT_EQ(rows[1].property, "voltage");
  EXPECT_EQ(rows[1].num, 220.5);
  EXPECT_EQ(rows[2].service_id, "gps");
  EXPECT_EQ(rows[2].value_json, "true");
  EXPECT_FALSE(rows[2].num);
  EXPECT_EQ(rows[2].time_ms, kNov26 + 42);  // else the record's time
  EXPECT_EQ(rows[2].dedupe_key, "m1::0");
  EXPECT_EQ(rows[2].tenant_id, "t1");

  const auto body = RowsOf(PropertyDelivery(
      nlohmann::json::parse(R"({"services": [{"service_id": "s", "properties": {"p": 1}}]})")));
  ASSERT_EQ(body.size(), 1u);
  EXPECT_EQ(body[0].num, 1.0);

  EXPECT_TRUE(RowsOf(PropertyDelivery(nlohmann::json::parse(R"({"temperature": 3})"))).empty());
  EXPECT_TRUE(RowsOf(PropertyDelivery(nlohmann::json("text"))).empty());
}

HistoryRow Row(int i) {
  HistoryRow r;
  r.tenant_id = "t";
  r.device_id = "d";
  r.service_id = "s";
  r.property = "p";
  r.time_ms = i;
  r.value_json = std::to_string(i);
  return r;
}

TEST(HistoryWriterTest, ConcurrentWritesShareBatchesAndAllLand) {
  std::mutex mu;
  std::vector<size_t> batches;
  std::vector<int64_t> seen;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  HistoryWriter writer(
      [&](std::span<const HistoryRow> rows) -> absl::StatusOr<int64_t> {
        released.wait();  // hold the first flush so that the other writes pile up
        std::lock_guard lock(mu);
        batches.push_back(rows.size());
        for (const auto& r : rows) {
          seen.push_back(r.time_ms);
        }
        return static_cast<int64_t>(rows.size());
      },
      {.max_batch_rows = 1000, .max_buffered_rows = 10'000, .flushers = 1});
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      if (writer.Write({Row(t * 2), Row(t * 2 + 1)}).ok()) {
        ++ok;
      }
    });
  }
  while (writer.buffered() < 16) {
    std::this_thread::yield();
  }
  release.set_value();
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(ok, 8);
  EXPECT_EQ(seen.size(), 16u);
  EXPECT_LT(batches.size(), 8u) << "writes waiting together should share a flush";
  EXPECT_EQ(writer.buffered(), 0u);
}

TEST(HistoryWriterTest, ReportsTheSinkErrorToEveryWriterOfTheBatch) {
  HistoryWriter writer(
      [](std::span<const HistoryRow>) -> absl::StatusOr<int64_t> {
        return absl::UnavailableError("db down");
      },
      {});
  EXPECT_EQ(writer.Write({Row(1)}).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(writer.Write({}).ok());
}

TEST(HistoryWriterTest, AFullBufferIsResourceExhaustedAfterTheTimeout) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  HistoryWriter writer(
      [&](std::span<const HistoryRow> rows) -> absl::StatusOr<int64_t> {
        released.wait();
        return static_cast<int64_t>(rows.size());
      },
      {.max_batch_rows = 10,
       .max_buffered_rows = 2,
       .enqueue_timeout = std::chrono::milliseconds(50),
       .flushers = 1});
  auto first = std::async(std::launch::async, [&] { return writer.Write({Row(1), Row(2)}); });
  while (writer.buffered() < 2) {
    std::this_thread::yield();
  }
  EXPECT_EQ(writer.Write({Row(3)}).code(), absl::StatusCode::kResourceExhausted);
  release.set_value();
  EXPECT_TRUE(first.get().ok());
  EXPECT_TRUE(writer.Write({Row(3)}).ok());
}

TEST(HistoryWriterTest, StopFlushesWhatIsBufferedThenRefuses) {
  std::atomic<int> stored{0};
  auto writer = std::make_unique<HistoryWriter>(
      [&](std::span<const HistoryRow> rows) -> absl::StatusOr<int64_t> {
        stored += static_cast<int>(rows.size());
        return static_cast<int64_t>(rows.size());
      },
      HistoryWriterOptions{});
  EXPECT_TRUE(writer->Write({Row(1), Row(2)}).ok());
  writer->Stop();
  EXPECT_EQ(writer->Write({Row(3)}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(stored, 2);
}

}  // namespace
}  // namespace iot::rule_forwarding
