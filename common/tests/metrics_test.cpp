#include "iot/common/metrics.h"

#include <gtest/gtest.h>

#include "iot/testing/http.h"

namespace iot::common {
namespace {

TEST(MetricsServerTest, ServesRegistryAndProcessMetrics) {
  MetricsServer server("metrics-test");
  prometheus::BuildCounter()
      .Name("iot_test_events_total")
      .Help("events")
      .Register(server.registry())
      .Add({{"kind", "a\"b"}})
      .Increment(5);
  server.Start("127.0.0.1", 0);
  ASSERT_NE(server.port(), 0);
  auto body = iot::testing::HttpGet(server.port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  auto series = iot::testing::ParsePrometheusText(*body);
  ASSERT_TRUE(series.ok()) << series.status() << "\n" << *body;
  EXPECT_EQ(iot::testing::SumSeries(*series, "iot_test_events_total"), 5);
  EXPECT_EQ(iot::testing::SumSeries(*series, "iot_build_info", {{"service", "metrics-test"}}), 1);
  EXPECT_GT(iot::testing::SumSeries(*series, "iot_process_start_time_seconds"), 1.7e9);
  EXPECT_GT(iot::testing::SumSeries(*series, "iot_process_open_fds"), 0);
  EXPECT_GE(iot::testing::SumSeries(*series, "iot_process_threads"), 1);
}

TEST(MetricsServerTest, GrpcCodeNames) {
  EXPECT_EQ(GrpcCodeName(0), "OK");
  EXPECT_EQ(GrpcCodeName(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(GrpcCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(GrpcCodeName(99), "UNKNOWN");
}

TEST(PrometheusTextTest, RejectsMalformedPages) {
  EXPECT_FALSE(iot::testing::ParsePrometheusText("metric{a=\"1\" 2\n").ok());
  EXPECT_FALSE(iot::testing::ParsePrometheusText("metric abc\n").ok());
  EXPECT_FALSE(iot::testing::ParsePrometheusText("# TYPE m weird\nm 1\n").ok());
  EXPECT_FALSE(iot::testing::ParsePrometheusText("9metric 1\n").ok());
  EXPECT_TRUE(iot::testing::ParsePrometheusText("# TYPE m gauge\nm{a=\"x\\\"y\"} 1.5\n").ok());
}

}  // namespace
}  // namespace iot::common
