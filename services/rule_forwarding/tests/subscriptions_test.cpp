// Consumer-group settings and the consumer_group destination's config checks, without Redis.
#include "iot/rule_forwarding/subscriptions.h"

#include <gtest/gtest.h>

#include "iot/common/status.h"

namespace iot::rule_forwarding {
namespace {

ConsumerGroupSettings Group(std::string name) {
  ConsumerGroupSettings g;
  g.tenant_id = "t";
  g.group_name = std::move(name);
  return g;
}

template <typename Fn>
ConsumerGroupSettings Group(std::string name, Fn&& change) {
  ConsumerGroupSettings g = Group(std::move(name));
  change(g);
  return g;
}

TEST(ConsumerGroupSettingsTest, DefaultsFillZeroes) {
  auto g = NormalizeGroup(Group("app-1.orders_v2"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->max_backlog_length, 100'000);
  EXPECT_EQ(g->max_backlog_age_seconds, 86'400);
  EXPECT_EQ(g->ack_timeout_seconds, 30);
}

TEST(ConsumerGroupSettingsTest, BadValuesNameTheirField) {
  auto field = [](ConsumerGroupSettings g) {
    auto out = NormalizeGroup(std::move(g));
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    return common::FieldOf(out.status());
  };
  EXPECT_EQ(field(Group("")), "group_name");
  EXPECT_EQ(field(Group("a:b")), "group_name");
  EXPECT_EQ(field(Group(std::string(65, 'a'))), "group_name");
  EXPECT_EQ(field(Group("g", [](auto& g) { g.description = std::string(257, 'x'); })),
            "description");
  EXPECT_EQ(field(Group("g", [](auto& g) { g.max_backlog_length = -1; })), "max_backlog_length");
  EXPECT_EQ(field(Group("g", [](auto& g) { g.max_backlog_age_seconds = 59; })),
            "max_backlog_age_seconds");
  EXPECT_EQ(field(Group("g", [](auto& g) { g.ack_timeout_seconds = 3601; })),
            "ack_timeout_seconds");
}

TEST(ConsumerGroupSettingsTest, OneStreamPerTenantAndGroup) {
  EXPECT_EQ(StreamKey("t1", "orders"), "rf:cg:t1:orders");
  EXPECT_NE(StreamKey("t1", "orders"), StreamKey("t2", "orders"));
}

TEST(ConsumerGroupDestinationTest, ConfigNamesAGroup) {
  auto destination = MakeConsumerGroupDestination(nullptr, nullptr);
  EXPECT_EQ(destination->type(), "consumer_group");
  EXPECT_TRUE(destination->ValidateConfig({{"group", "orders"}}).ok());
  auto field = [&](const nlohmann::json& config) {
    absl::Status s = destination->ValidateConfig(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << config;
    return common::FieldOf(s);
  };
  EXPECT_EQ(field(nlohmann::json::object()), "config.group");
  EXPECT_EQ(field({{"group", 5}}), "config.group");
  EXPECT_EQ(field({{"group", "no spaces"}}), "config.group");
  EXPECT_EQ(field({{"group", "g"}, {"extra", 1}}), "config.extra");
  EXPECT_EQ(field(nlohmann::json::array()), "config");
}

}  // namespace
}  // namespace iot::rule_forwarding
