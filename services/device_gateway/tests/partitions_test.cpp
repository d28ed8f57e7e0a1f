// Uplink partition ownership (partitions.h) against a real Redis: replicas split the partitions,
// hand one over only once drained, take over an expired lease, and the old holder stops.

#include "iot/device_gateway/partitions.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>

#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::device_gateway {
namespace {

using namespace std::chrono_literals;
using ::iot::testing::WaitUntil;

TEST(PartitionMathTest, FairShareAndAnnouncedCount) {
  EXPECT_EQ(FairShare(16, 1), 16U);
  EXPECT_EQ(FairShare(16, 2), 8U);
  EXPECT_EQ(FairShare(16, 3), 6U);
  EXPECT_EQ(FairShare(2, 3), 1U);
  EXPECT_EQ(FairShare(16, 0), 16U);
  EXPECT_EQ(ParsePartitionCount("16"), 16U);
  EXPECT_EQ(ParsePartitionCount("1024"), 1024U);
  for (const char* bad : {"", "0", "x", "16 ", "-1", "1025", "99999999999"}) {
    EXPECT_FALSE(ParsePartitionCount(bad).has_value()) << bad;
  }
}

/// What the owner asked of one replica's sessions.
struct FakeSessions {
  std::mutex mu;
  std::set<uint32_t> consuming;
  int stops = 0;
  std::atomic<bool> drained{false};

  PartitionHooks hooks() {
    return {.start =
                [this](uint32_t p) {
                  std::lock_guard lock(mu);
                  EXPECT_TRUE(consuming.insert(p).second) << "started twice: " << p;
                },
            .stop = [this](uint32_t p) -> std::function<bool()> {
              std::lock_guard lock(mu);
              EXPECT_EQ(consuming.erase(p), 1U) << "stopped but not consuming: " << p;
              ++stops;
              return [this] { return drained.load(); };
            }};
  }
  std::set<uint32_t> Consuming() {
    std::lock_guard lock(mu);
    return consuming;
  }
};

class PartitionOwnerTest : public ::testing::Test {
 protected:
  std::unique_ptr<PartitionOwner> Owner(const std::string& replica, FakeSessions& sessions,
                                        std::chrono::milliseconds lease = 5s) {
    auto redis = common::RedisClient::Create({.url = redis_.Url()});
    EXPECT_TRUE(redis.ok());
    std::shared_ptr<common::RedisClient> client = *std::move(redis);
    auto owner = std::make_unique<PartitionOwner>(
        PartitionOwner::Options{.tick = 100ms, .drain_timeout = 60s},
        std::make_unique<PartitionLeases>(client, group_, replica, lease), sessions.hooks(),
        metrics_);
    owner->SetPartitionCount(16);
    return owner;
  }

  iot::testing::TestRedis redis_;
  prometheus::Registry registry_;
  PartitionMetrics metrics_{registry_};
  std::string group_ = "test" + std::to_string(::getpid());
};

TEST_F(PartitionOwnerTest, ReplicasSplitThePartitionsAndHandOverOnlyWhenDrained) {
  FakeSessions a_sessions;
  FakeSessions b_sessions;
  auto a = Owner("a", a_sessions);
  auto b = Owner("b", b_sessions);

  a->Tick();
  EXPECT_EQ(a_sessions.Consuming().size(), 16U);
  EXPECT_TRUE(a->settled());
  b->Tick();  // b joins: its share is 8, but a holds everything
  EXPECT_TRUE(b_sessions.Consuming().empty());
  EXPECT_TRUE(b->settled());  // nothing free: ready as a standby

  a->Tick();  // a sees two replicas: hands 8 over, and waits for them to drain
  EXPECT_EQ(a_sessions.Consuming().size(), 8U);
  EXPECT_EQ(a->owned().size(), 8U);
  b->Tick();
  EXPECT_TRUE(b_sessions.Consuming().empty()) << "taken before the hand-over drained";

  a_sessions.drained = true;
  a->Tick();  // drained: released
  b->Tick();  // and taken
  const auto a_set = a_sessions.Consuming();
  const auto b_set = b_sessions.Consuming();
  EXPECT_EQ(a_set.size(), 8U);
  EXPECT_EQ(b_set.size(), 8U);
  std::set<uint32_t> all(a_set.begin(), a_set.end());
  all.insert(b_set.begin(), b_set.end());
  EXPECT_EQ(all.size(), 16U);

  // b leaves gracefully: its partitions go back to a at once.
  b->Stop();
  EXPECT_TRUE(b_sessions.Consuming().empty());
  b->ReleaseAll();
  a->Tick();
  EXPECT_EQ(a_sessions.Consuming().size(), 16U);
}

TEST_F(PartitionOwnerTest, AnExpiredLeaseIsTakenOverAndItsOldHolderStops) {
  FakeSessions a_sessions;
  FakeSessions b_sessions;
  a_sessions.drained = true;
  auto a = Owner("a", a_sessions, 400ms);
  auto b = Owner("b", b_sessions, 400ms);
  a->Tick();
  b->Tick();
  a->Tick();  // hands 8 over (drained at once here)
  a->Tick();  // releases them
  b->Tick();  // takes them
  ASSERT_EQ(b_sessions.Consuming().size(), 8U);

  // b stops renewing (hung, cut off): after its lease, a takes everything.
  ASSERT_TRUE(WaitUntil(
      [&] {
        a->Tick();
        return a_sessions.Consuming().size() == 16U;
      },
      5s));
  // b finds out at its next round and stops consuming: never two consumers for long.
  b->Tick();
  EXPECT_TRUE(b_sessions.Consuming().empty());
  EXPECT_GE(metrics_.changes.Add({{"event", "lost"}}).Value(), 8);
}

TEST_F(PartitionOwnerTest, NothingIsConsumedUntilTheBrokerAnnouncesTheCount) {
  FakeSessions sessions;
  auto redis = common::RedisClient::Create({.url = redis_.Url()});
  ASSERT_TRUE(redis.ok());
  PartitionOwner owner(
      PartitionOwner::Options{},
      std::make_unique<PartitionLeases>(std::shared_ptr(*std::move(redis)), group_, "c", 5s),
      sessions.hooks(), metrics_);
  owner.Tick();
  EXPECT_TRUE(sessions.Consuming().empty());
  EXPECT_FALSE(owner.settled());
  owner.SetPartitionCount(4);
  owner.Tick();
  EXPECT_EQ(sessions.Consuming(), (std::set<uint32_t>{0, 1, 2, 3}));
  // Fewer partitions announced later: the extra ones are handed over.
  owner.SetPartitionCount(2);
  owner.Tick();
  EXPECT_EQ(sessions.Consuming(), (std::set<uint32_t>{0, 1}));
}

TEST_F(PartitionOwnerTest, RedisUnreachablePastTheLeaseStopsConsuming) {
  FakeSessions sessions;
  auto owner = Owner("d", sessions, 300ms);
  const auto renewed = std::chrono::steady_clock::now();
  owner->Tick();
  ASSERT_EQ(sessions.Consuming().size(), 16U);
  redis_.Stop();
  owner->Tick();  // within the lease: keeps consuming
  EXPECT_EQ(sessions.Consuming().size(), 16U);
  // Consuming stops once the lease has passed without a renewal, not before.
  ASSERT_TRUE(WaitUntil(
      [&] {
        owner->Tick();
        return sessions.Consuming().empty();
      },
      5s));
  EXPECT_GE(std::chrono::steady_clock::now() - renewed, 300ms);
  redis_.Start();
  ASSERT_TRUE(WaitUntil(
      [&] {
        owner->Tick();
        return sessions.Consuming().size() == 16U;
      },
      10s));
}

}  // namespace
}  // namespace iot::device_gateway
