#include "iot/common/redis_subscriber.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::common {
namespace {

using ::iot::testing::WaitUntil;

constexpr auto kTimeout = std::chrono::seconds(15);

struct Received {
  std::mutex mutex;
  std::vector<std::pair<std::string, std::string>> messages;
  std::atomic<int> resyncs{0};

  RedisSubscriber::Handler Handler() {
    return [this](const std::string& channel, const std::string& message) {
      std::lock_guard lock(mutex);
      messages.emplace_back(channel, message);
    };
  }
  size_t size() {
    std::lock_guard lock(mutex);
    return messages.size();
  }
};

TEST(RedisSubscriberTest, DeliversMessagesOfItsChannelsInOrder) {
  iot::testing::TestRedis redis;
  auto client = RedisClient::Create({.url = redis.Url()});
  ASSERT_TRUE(client.ok());
  Received received;
  auto subscriber = RedisSubscriber::Start(redis.Url(), {"a", "b"}, received.Handler(),
                                           [&] { ++received.resyncs; });
  ASSERT_TRUE(subscriber.ok()) << subscriber.status();
  ASSERT_TRUE((*subscriber)->WaitSubscribed(kTimeout));
  EXPECT_EQ(received.resyncs.load(), 1);

  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE((*client)->Command({"PUBLISH", i % 2 == 0 ? "a" : "b", std::to_string(i)}).ok());
  }
  ASSERT_TRUE((*client)->Command({"PUBLISH", "other", "x"}).ok());
  ASSERT_TRUE(WaitUntil([&] { return received.size() >= 100; }, kTimeout));
  std::lock_guard lock(received.mutex);
  ASSERT_EQ(received.messages.size(), 100U);
  for (size_t i = 0; i < 100; ++i) {
    EXPECT_EQ(received.messages[i].first, i % 2 == 0 ? "a" : "b");
    EXPECT_EQ(received.messages[i].second, std::to_string(i));
  }
}

TEST(RedisSubscriberTest, ResubscribesAfterRestartAndSignalsResync) {
  iot::testing::TestRedis redis;
  Received received;
  auto subscriber = RedisSubscriber::Start(redis.Url(), {"feed"}, received.Handler(),
                                           [&] { ++received.resyncs; });
  ASSERT_TRUE(subscriber.ok());
  ASSERT_TRUE((*subscriber)->WaitSubscribed(kTimeout));

  redis.Stop();
  ASSERT_TRUE(WaitUntil([&] { return !(*subscriber)->subscribed(); }, kTimeout));
  redis.Start();
  ASSERT_TRUE((*subscriber)->WaitSubscribed(kTimeout));
  EXPECT_EQ(received.resyncs.load(), 2);

  auto client = RedisClient::Create({.url = redis.Url()});
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Command({"PUBLISH", "feed", "after"}).ok());
  ASSERT_TRUE(WaitUntil([&] { return received.size() == 1; }, kTimeout));
}

TEST(RedisSubscriberTest, RejectsBadArguments) {
  EXPECT_FALSE(RedisSubscriber::Start("redis://127.0.0.1:1", {}, {}).ok());
  EXPECT_FALSE(RedisSubscriber::Start("http://nope", {"a"}, {}).ok());
}

}  // namespace
}  // namespace iot::common
