#include "iot/common/rejections.h"

#include <gtest/gtest.h>

namespace iot::common {
namespace {

double Count(prometheus::Registry& registry, const std::string& reason) {
  for (const auto& family : registry.Collect()) {
    for (const auto& metric : family.metric) {
      for (const auto& label : metric.label) {
        if (label.name == "reason" && label.value == reason) {
          return metric.counter.value;
        }
      }
    }
  }
  return 0;
}

TEST(RejectionCounterTest, CountsByReasonAndKeepsEveryRecord) {
  prometheus::Registry registry;
  RejectionCounter counter(registry, "iot_test_rejected_records_total", "test");
  Rejected out;
  for (int i = 0; i < 30; ++i) {  // more than the log allows a second: all counted and kept
    counter.Reject({.message_id = "m" + std::to_string(i),
                    .device_id = "d1",
                    .reason = i % 3 == 0 ? "too_large" : "malformed",
                    .detail = "x: bad"},
                   out);
  }
  ASSERT_EQ(out.size(), 30u);
  EXPECT_EQ(out[29].message_id, "m29");
  EXPECT_EQ(Count(registry, "too_large"), 10);
  EXPECT_EQ(Count(registry, "malformed"), 20);
}

}  // namespace
}  // namespace iot::common
