#include "iot/common/backoff.h"

#include <gtest/gtest.h>

namespace iot::common {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, GrowsUpToMaxWithJitterAndResets) {
  Backoff backoff(milliseconds(100), milliseconds(1000), 2.0);
  // Ceilings 100, 200, 400, 800, 1000, 1000: each delay is within [ceiling/2, ceiling].
  const int64_t ceilings[] = {100, 200, 400, 800, 1000, 1000};
  for (const int64_t ceiling : ceilings) {
    const auto delay = backoff.Next().count();
    EXPECT_GE(delay, ceiling / 2);
    EXPECT_LE(delay, ceiling);
  }
  EXPECT_EQ(backoff.attempts(), 6u);
  backoff.Reset();
  EXPECT_EQ(backoff.attempts(), 0u);
  EXPECT_LE(backoff.Next().count(), 100);
}

TEST(BackoffTest, JitterSpreadsDelays) {
  Backoff a(milliseconds(1000), milliseconds(1000));
  bool differs = false;
  int64_t first = a.Next().count();
  for (int i = 0; i < 20 && !differs; ++i) {
    differs = a.Next().count() != first;
  }
  EXPECT_TRUE(differs) << "twenty equal delays: no jitter";
}

}  // namespace
}  // namespace iot::common
