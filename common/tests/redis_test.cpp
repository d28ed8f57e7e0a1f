#include "iot/common/redis.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::common {
namespace {

using ::iot::testing::WaitUntil;
using ::testing::HasSubstr;
using Type = RedisReply::Type;

constexpr auto kRecoveryTimeout = std::chrono::seconds(20);

std::string UniqueKey(const std::string& name) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t run = std::random_device{}();
  return "test:" + name + ":" + std::to_string(run) + ":" + std::to_string(++counter);
}

std::unique_ptr<RedisClient> MakeClient(RedisOptions options) {
  auto client = RedisClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::unique_ptr<RedisClient> MakeClient(const std::string& url) {
  return MakeClient(RedisOptions{.url = url});
}

TEST(RedisClientTest, SetGetDel) {
  auto client = MakeClient(iot::testing::SharedRedisUrl());
  ASSERT_NE(client, nullptr);
  const std::string key = UniqueKey("setget");

  auto set = client->Command({"SET", key, "hello"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, Type::kStatus);
  EXPECT_EQ(set->str, "OK");

  auto get = client->Command({"GET", key});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->type, Type::kString);
  EXPECT_EQ(get->str, "hello");

  auto del = client->Command(std::vector<std::string>{"DEL", key});
  ASSERT_TRUE(del.ok()) << del.status();
  EXPECT_EQ(del->type, Type::kInteger);
  EXPECT_EQ(del->integer, 1);

  auto missing = client->Command({"GET", key});
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_TRUE(missing->is_nil());
  EXPECT_TRUE(client->Ping().ok());
}

TEST(RedisClientTest, BinarySafeKeysAndValues) {
  auto client = MakeClient(iot::testing::SharedRedisUrl());
  ASSERT_NE(client, nullptr);
  const std::string key = UniqueKey("bin") + std::string("\0k\r\n", 4);
  const std::string value("a\0b\r\n\xff\0", 7);

  ASSERT_TRUE(client->Command({"SET", key, value}).ok());
  auto get = client->Command({"GET", key});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, value);
  EXPECT_EQ(get->str.size(), 7U);
  auto len = client->Command({"STRLEN", key});
  ASSERT_TRUE(len.ok());
  EXPECT_EQ(len->integer, 7);
}

TEST(RedisClientTest, ErrorReplyIsData) {
  auto client = MakeClient(iot::testing::SharedRedisUrl());
  ASSERT_NE(client, nullptr);
  const std::string key = UniqueKey("err");
  ASSERT_TRUE(client->Command({"SET", key, "not a number"}).ok());

  auto incr = client->Command({"INCR", key});
  ASSERT_TRUE(incr.ok()) << incr.status();
  EXPECT_TRUE(incr->is_error());
  EXPECT_THAT(incr->str, HasSubstr("not an integer"));
  EXPECT_THAT(incr->DebugString(), HasSubstr("(error)"));

  auto unknown = client->Command({"NOSUCHCOMMAND"});
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_TRUE(unknown->is_error());

  auto checked = CheckReply(client->Command({"INCR", key}));
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CheckReply(client->Command({"GET", key})).ok());

  // The connection is still usable after error replies.
  EXPECT_TRUE(client->Ping().ok());
}

TEST(RedisClientTest, ArrayReplies) {
  auto client = MakeClient(iot::testing::SharedRedisUrl());
  ASSERT_NE(client, nullptr);
  const std::string key = UniqueKey("list");
  ASSERT_TRUE(client->Command({"RPUSH", key, "a", "b", "c"}).ok());
  auto range = client->Command({"LRANGE", key, "0", "-1"});
  ASSERT_TRUE(range.ok()) << range.status();
  ASSERT_EQ(range->type, Type::kArray);
  ASSERT_EQ(range->elements.size(), 3U);
  EXPECT_EQ(range->elements[2].str, "c");
  EXPECT_EQ(range->DebugString(), R"(["a", "b", "c"])");
}

TEST(RedisClientTest, PipelineReturnsRepliesInOrder) {
  auto client = MakeClient(iot::testing::SharedRedisUrl());
  ASSERT_NE(client, nullptr);
  const std::string key = UniqueKey("pipe");
  constexpr int kCommands = 500;
  std::vector<std::vector<std::string>> commands;
  commands.reserve(kCommands + 2);
  for (int i = 0; i < kCommands; ++i) {
    commands.push_back({"INCR", key});
  }
  commands.push_back({"HGET", key, "field"});  // WRONGTYPE: an error element, not a failure.
  commands.push_back({"GET", key});

  auto replies = client->Pipeline(commands);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), commands.size());
  for (int i = 0; i < kCommands; ++i) {
    ASSERT_EQ((*replies)[static_cast<size_t>(i)].integer, i + 1);
  }
  EXPECT_TRUE((*replies)[kCommands].is_error());
  EXPECT_EQ((*replies)[kCommands + 1].str, std::to_string(kCommands));

  auto empty = client->Pipeline({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(client->Pipeline({{"PING"}, {}}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RedisClientTest, ConcurrentCallersShareThePool) {
  auto client = MakeClient(RedisOptions{.url = iot::testing::SharedRedisUrl(), .pool_size = 3});
  ASSERT_NE(client, nullptr);
  const std::string key = UniqueKey("concurrent");
  constexpr int kThreads = 8;
  constexpr int kPerThread = 200;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        auto reply = (i % 10 == 0) ? client->Pipeline({{"INCR", key}}).status()
                                   : client->Command({"INCR", key}).status();
        if (!reply.ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(failures.load(), 0);
  auto total = client->Command({"GET", key});
  ASSERT_TRUE(total.ok());
  EXPECT_EQ(total->str, std::to_string(kThreads * kPerThread));
}

TEST(RedisClientTest, CommandTimeoutThenRecovers) {
  auto client = MakeClient(RedisOptions{.url = iot::testing::SharedRedisUrl(),
                                        .command_timeout = std::chrono::milliseconds(200),
                                        .pool_size = 1});
  ASSERT_NE(client, nullptr);
  // BLPOP on an empty list blocks this connection for 5 s without blocking the server.
  auto blocked = client->Command({"BLPOP", UniqueKey("never"), "5"});
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kUnavailable) << blocked.status();
  EXPECT_THAT(blocked.status().message(), HasSubstr("timed out"));
  // The timed-out connection was dropped (its late reply must not answer the next command).
  EXPECT_TRUE(WaitUntil([&] { return client->Ping().ok(); }, kRecoveryTimeout));
  const std::string key = UniqueKey("after-timeout");
  ASSERT_TRUE(client->Command({"SET", key, "v"}).ok());
  auto get = client->Command({"GET", key});
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->str, "v");
}

TEST(RedisClientTest, ServerRestartFailsThenRecoversByItself) {
  iot::testing::TestRedis redis;
  auto client = MakeClient(RedisOptions{.url = redis.Url(), .pool_size = 2});
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Command({"SET", "k", "before"}).ok());

  redis.Stop();
  for (int i = 0; i < 5; ++i) {
    auto reply = client->Command({"GET", "k"});
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
  }
  EXPECT_EQ(client->Pipeline({{"PING"}}).status().code(), absl::StatusCode::kUnavailable);

  redis.Start();
  EXPECT_TRUE(WaitUntil([&] { return client->Ping().ok(); }, kRecoveryTimeout));
  // Every pooled connection works again (stale ones fail once and reconnect).
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto a = client->Command({"SET", "k", "after"});
        auto b = client->Command({"GET", "k"});
        return a.ok() && b.ok() && b->str == "after";
      },
      kRecoveryTimeout));
}

TEST(RedisClientTest, ServerDownAtConstructionThenComesUp) {
  iot::testing::TestRedis redis;
  redis.Stop();
  auto client = MakeClient(redis.Url());
  ASSERT_NE(client, nullptr);
  const absl::Status down = client->Ping();
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_THAT(down.message(), HasSubstr("127.0.0.1"));

  redis.Start();
  EXPECT_TRUE(WaitUntil([&] { return client->Ping().ok(); }, kRecoveryTimeout));
}

TEST(RedisClientTest, PasswordAndDatabase) {
  iot::testing::TestRedis redis;
  {
    auto admin = MakeClient(redis.Url());
    ASSERT_NE(admin, nullptr);
    ASSERT_TRUE(CheckReply(admin->Command({"CONFIG", "SET", "requirepass", "s3cret"})).ok());
  }
  const std::string base = "127.0.0.1:" + std::to_string(redis.port());

  auto bad = MakeClient("redis://:badpw123@" + base + "/0");
  ASSERT_NE(bad, nullptr);
  const absl::Status bad_status = bad->Ping();
  EXPECT_EQ(bad_status.code(), absl::StatusCode::kUnauthenticated) << bad_status;
  EXPECT_THAT(bad_status.message(), HasSubstr("authentication failed"));
  EXPECT_THAT(bad_status.message(), ::testing::Not(HasSubstr("badpw123")));
  // Within the backoff window the same cause comes back without a new attempt.
  EXPECT_EQ(bad->Ping().code(), absl::StatusCode::kUnauthenticated);

  auto none = MakeClient("redis://" + base);
  ASSERT_NE(none, nullptr);
  EXPECT_EQ(none->Ping().code(), absl::StatusCode::kUnauthenticated);

  auto db0 = MakeClient("redis://:s3cret@" + base + "/0");
  auto db3 = MakeClient("redis://:s3cret@" + base + "/3");
  ASSERT_NE(db0, nullptr);
  ASSERT_NE(db3, nullptr);
  ASSERT_TRUE(db3->Command({"SET", "only-in-3", "x"}).ok());
  auto in3 = db3->Command({"GET", "only-in-3"});
  ASSERT_TRUE(in3.ok()) << in3.status();
  EXPECT_EQ(in3->str, "x");
  auto in0 = db0->Command({"GET", "only-in-3"});
  ASSERT_TRUE(in0.ok()) << in0.status();
  EXPECT_TRUE(in0->is_nil());
}

TEST(RedisClientTest, CreateRejectsBadOptions) {
  EXPECT_EQ(RedisClient::Create({.url = "localhost:6379"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RedisClient::Create({.url = "http://localhost"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RedisClient::Create({.url = "redis://localhost/x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RedisClient::Create({.url = "redis://localhost", .pool_size = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto status = RedisClient::Create({.url = "ftp://:pw@localhost"}).status();
  EXPECT_THAT(status.message(), ::testing::Not(HasSubstr("pw")));
  // A valid URL to nowhere is fine: nothing connects before the first command.
  EXPECT_TRUE(RedisClient::Create({.url = "redis://no-such-host.invalid:1/2"}).ok());
}

}  // namespace
}  // namespace iot::common
