// The WHERE path must not allocate: counts global operator new calls around Matches.
// (This binary's operator new is replaced for that; it only counts and forwards to malloc.)

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include "iot/rule_forwarding/sql/rule_sql.h"
#include "rule_sql_test_util.h"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

// GCC pairs the malloc inside the replaced operator new with the free inside the replaced
// operator delete after inlining and reports a mismatch that cannot happen here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace iot::rule_forwarding::sql {
namespace {

TEST(RuleSqlAllocations, MatchesDoesNotAllocate) {
  const std::string p = "notify_data.body.services[0].properties.";
  const std::vector<std::string> conditions = {
      "resource = 'device.property' AND " + p + "voltage > 220 AND " + p + "relay_state = 'ON'",
      p + "relay_state IN ('ON', 'OFF') OR " + p + "current BETWEEN 1 AND 5",
      "device_id() LIKE 'p1%' AND product_id() = 'p1' AND tenant_id() <> 'x' AND topic(6) = "
      "'report' AND startswith(resource, 'device.') AND NOT " +
          p + "voltage IS NULL",
      "(" + p + "voltage * 2 + 1) / 3 >= abs(-" + p + "current) AND round(" + p +
          "voltage) % 7 <> 0 AND substring(resource, 1, 6) = 'device' AND length(resource) > 3",
      "CASE WHEN " + p + "voltage > 230 THEN 'high' ELSE 'ok' END = 'ok' AND coalesce(nope, 1) = 1",
  };
  for (const std::string& condition : conditions) {
    auto rule = CompileRule("SELECT * FROM '$oc/devices/+/sys/#' WHERE " + condition);
    ASSERT_TRUE(rule.ok()) << condition << ": " << rule.status();
    const auto ctx = testing::TypicalContext();
    const auto& envelope = testing::TypicalEnvelope();
    ASSERT_TRUE(rule->Matches(envelope, ctx)) << condition;
    const long before = g_allocations.load();
    for (int i = 0; i < 100; ++i) {
      (void)rule->Matches(envelope, ctx);
    }
    EXPECT_EQ(g_allocations.load() - before, 0) << condition;
    // The counter works: building the output (a copy of the envelope) allocates.
    const long before_output = g_allocations.load();
    EXPECT_TRUE(rule->Evaluate(envelope, ctx).has_value());
    EXPECT_GT(g_allocations.load() - before_output, 0);
  }
}

}  // namespace
}  // namespace iot::rule_forwarding::sql
