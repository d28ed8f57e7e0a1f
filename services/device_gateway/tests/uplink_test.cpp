#include "iot/device_gateway/uplink.h"

#include <gtest/gtest.h>

#include <optional>

namespace iot::device_gateway {
namespace {

using std::chrono::milliseconds;

struct FakeClock {
  std::chrono::steady_clock::time_point now{};
  RateLimiter::Clock fn() {
    return [this] { return now; };
  }
};

TEST(AdmitUplinkTest, ClassifiesTheRelayedTopic) {
  RateLimiter limiter(50);
  auto admitted =
      AdmitUplink("iot/up/3/p1_n1/sys/commands/response/request_id=42", "{}", {}, limiter, 1000);
  ASSERT_TRUE(std::holds_alternative<UplinkMessage>(admitted));
  const auto& m = std::get<UplinkMessage>(admitted);
  EXPECT_EQ(m.kind, UplinkKind::kCommandResponse);
  EXPECT_EQ(m.device_id, "p1_n1");
  EXPECT_EQ(m.request_id, "42");
  EXPECT_EQ(m.topic, "$oc/devices/p1_n1/sys/commands/response/request_id=42");
  EXPECT_EQ(m.received_at_unix_ms, 1000);
}

TEST(AdmitUplinkTest, RejectsUnknownTopicsNamingTheDeviceWhenItCan) {
  RateLimiter limiter(50);
  auto unknown = AdmitUplink("iot/up/3/p1_n1/sys/nonsense", "{}", {}, limiter, 0);
  ASSERT_TRUE(std::holds_alternative<RejectedUplink>(unknown));
  EXPECT_EQ(std::get<RejectedUplink>(unknown).reason, RejectReason::kUnknownTopic);
  EXPECT_EQ(std::get<RejectedUplink>(unknown).device_id, "p1_n1");
  auto other = AdmitUplink("somewhere/else", "{}", {}, limiter, 0);
  // The relay topic always carries the partition.
  for (const char* topic : {"iot/up/p1_n1/sys/messages/up", "iot/up//p1_n1/sys/messages/up",
                            "iot/up/x1/p1_n1/sys/messages/up", "iot/up/12"}) {
    auto bad = AdmitUplink(topic, "{}", {}, limiter, 0);
    ASSERT_TRUE(std::holds_alternative<RejectedUplink>(bad)) << topic;
    EXPECT_EQ(std::get<RejectedUplink>(bad).reason, RejectReason::kUnknownTopic) << topic;
  }
  ASSERT_TRUE(std::holds_alternative<RejectedUplink>(other));
  EXPECT_EQ(std::get<RejectedUplink>(other).device_id, "");
}

TEST(AdmitUplinkTest, AppliesTheSizeLimits) {
  RateLimiter limiter(1000);
  const UplinkLimits limits{
      .max_payload_bytes = 100, .max_report_bytes = 10, .rate_per_second = 1000};
  const std::string eleven(11, 'x');
  auto report = AdmitUplink("iot/up/0/d_1/sys/properties/report", eleven, limits, limiter, 0);
  ASSERT_TRUE(std::holds_alternative<RejectedUplink>(report));
  EXPECT_EQ(std::get<RejectedUplink>(report).reason, RejectReason::kTooLarge);
  // The report limit is for property reports; other messages get the payload limit.
  EXPECT_TRUE(std::holds_alternative<UplinkMessage>(
      AdmitUplink("iot/up/0/d_1/sys/messages/up", eleven, limits, limiter, 0)));
  auto big = AdmitUplink("iot/up/0/d_1/sys/messages/up", std::string(101, 'x'), limits, limiter, 0);
  ASSERT_TRUE(std::holds_alternative<RejectedUplink>(big));
  EXPECT_EQ(std::get<RejectedUplink>(big).reason, RejectReason::kTooLarge);
}

TEST(AdmitUplinkTest, AppliesTheTopicLimits) {
  RateLimiter limiter(1000);
  const UplinkLimits limits{.max_topic_bytes = 60, .max_topic_levels = 7, .max_id_bytes = 10};
  const auto reason = [&](const std::string& relay) -> std::optional<RejectReason> {
    auto admitted = AdmitUplink(relay, "{}", limits, limiter, 0);
    if (const auto* rejected = std::get_if<RejectedUplink>(&admitted)) {
      return rejected->reason;
    }
    return std::nullopt;
  };
  // `$oc/devices/d_12345678/user/` is 28 bytes and 4 levels.
  const std::string at = "iot/up/0/d_12345678/user/" + std::string(32, 'x');
  EXPECT_EQ(reason(at), std::nullopt);  // 60 bytes
  EXPECT_EQ(reason(at + "y"), RejectReason::kTooLong);
  EXPECT_EQ(reason("iot/up/0/d_12345678/user/a/b/c"), std::nullopt);  // 7 levels
  EXPECT_EQ(reason("iot/up/0/d_12345678/user/a/b/c/d"), RejectReason::kTooLong);
  EXPECT_EQ(reason("iot/up/0/d_123456789/user/a"), RejectReason::kTooLong);  // id of 11 bytes
  EXPECT_EQ(reason("iot/up/0/d_1/sys/commands/response/request_id=0123456789"), std::nullopt);
  EXPECT_EQ(reason("iot/up/0/d_1/sys/commands/response/request_id=0123456789a"),
            RejectReason::kTooLong);
  // The rejection keeps the device id when it is within the limit, and not the whole topic.
  const std::string huge = "iot/up/0/d_1/user/" + std::string(100'000, 'z');
  auto rejected = std::get<RejectedUplink>(AdmitUplink(huge, "{}", limits, limiter, 0));
  EXPECT_EQ(rejected.device_id, "d_1");
  EXPECT_LE(rejected.topic.size(), 63U);
  EXPECT_NE(rejected.detail.find("100021 bytes exceeds the limit of 60"), std::string::npos)
      << rejected.detail;
}

TEST(AdmitUplinkTest, ResponsesHaveTheirOwnRateBudget) {
  RateLimiter limiter(2);
  const UplinkLimits limits{.rate_per_second = 2};
  const auto admitted = [&](const std::string& topic) {
    return std::holds_alternative<UplinkMessage>(AdmitUplink(topic, "{}", limits, limiter, 0));
  };
  EXPECT_TRUE(admitted("iot/up/0/d_1/sys/messages/up"));
  EXPECT_TRUE(admitted("iot/up/0/d_1/sys/messages/up"));
  EXPECT_FALSE(admitted("iot/up/0/d_1/sys/messages/up"));  // over 2/s
  // The answers the device owes still pass, within their own 2/s.
  EXPECT_TRUE(admitted("iot/up/0/d_1/sys/commands/response/request_id=1"));
  EXPECT_TRUE(admitted("iot/up/0/d_1/sys/properties/set/response/request_id=2"));
  auto third = AdmitUplink("iot/up/0/d_1/sys/properties/get/response/request_id=3", "{}", limits,
                           limiter, 0);
  ASSERT_TRUE(std::holds_alternative<RejectedUplink>(third));
  EXPECT_EQ(std::get<RejectedUplink>(third).reason, RejectReason::kRateLimited);
}

TEST(RateLimiterTest, TokenBucketPerDevice) {
  FakeClock clock;
  RateLimiter limiter(10, 1000, clock.fn());
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(limiter.Allow("a")) << i;  // the burst: one second's worth
  }
  EXPECT_FALSE(limiter.Allow("a"));
  EXPECT_TRUE(limiter.Allow("b"));  // per device
  clock.now += milliseconds(100);   // one token back
  EXPECT_TRUE(limiter.Allow("a"));
  EXPECT_FALSE(limiter.Allow("a"));
}

TEST(RateLimiterTest, ABacklogIsMeasuredAtTheTimesTheDeviceSentIt) {
  FakeClock clock;
  RateLimiter limiter(10, 1000, clock.fn());
  // 60 messages a device sent at 5/s over 12 s, delivered at once (the broker queued them while
  // the gateway was away): each is measured when it was sent, none is over the rate.
  clock.now += std::chrono::seconds(100);
  for (int i = 0; i < 60; ++i) {
    EXPECT_TRUE(limiter.Allow("a", milliseconds(12'000 - i * 200))) << i;
  }
  // Delivered as they come, the same 60 would be a burst: six times the bucket.
  int allowed = 0;
  for (int i = 0; i < 60; ++i) {
    allowed += limiter.Allow("b") ? 1 : 0;
  }
  EXPECT_EQ(allowed, 10);
  // A device that did send too fast is still limited, however late its messages arrive.
  int late = 0;
  for (int i = 0; i < 60; ++i) {
    late += limiter.Allow("c", milliseconds(30'000)) ? 1 : 0;
  }
  EXPECT_EQ(late, 10);
  // An earlier send time than the bucket's last (clocks) takes nothing back.
  EXPECT_FALSE(limiter.Allow("c", milliseconds(40'000)));
  EXPECT_FALSE(limiter.Allow("c", milliseconds(30'000)));
  EXPECT_TRUE(limiter.Allow("c", milliseconds(29'900)));
}

TEST(RateLimiterTest, MemoryIsBoundedByDroppingIdleDevices) {
  FakeClock clock;
  RateLimiter limiter(10, 3, clock.fn());
  limiter.Allow("a");
  limiter.Allow("b");
  limiter.Allow("c");
  clock.now += std::chrono::seconds(2);
  limiter.Allow("d");
  EXPECT_LE(limiter.tracked(), 3U);
}

TEST(DeviceTimeTest, ParsesIotdaAndRfc3339Utc) {
  EXPECT_EQ(ParseDeviceTime("19700101T000001Z"), 1000);
  EXPECT_EQ(ParseDeviceTime("1970-01-01T00:00:01.250Z"), 1250);
  EXPECT_EQ(ParseDeviceTime("1970-01-01T00:00:02Z"), 2000);
  for (const char* bad :
       {"", "2026", "20261326T000000Z", "2026-11-26 17:42:48Z", "x6112617T4248Z"}) {
    EXPECT_FALSE(ParseDeviceTime(bad).has_value()) << bad;
  }
  EXPECT_EQ(CompactUtc(1000), "19700101T000001Z");
}

}  // namespace
}  // namespace iot::device_gateway
