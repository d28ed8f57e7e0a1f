// Application subscriptions end to end: a rule with a consumer_group action puts ingested records
// into a group (a Redis Stream of the real Redis); applications read it over the real Subscribe
// stream of the real rule-forwarding and ack. Two consumers share a group, unacked messages go to
// the other consumer after the ack timeout, acked ones never come back, a Redis restart is
// survived, tenants are kept apart, bad inputs are INVALID_ARGUMENT naming the field.
#include "iot/rule_forwarding/subscriptions.h"

#include <gtest/gtest.h>

#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include "history_subscriptions_platform.h"
#include "iot/common/redis.h"

namespace iot {
namespace {

using iot::testing::kHsAdminKey;
using iot::testing::PropertyRecord;
using iot::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;
namespace rf = iot::rule_forwarding::v1;

/// One Subscribe stream: collects messages on a thread, acks them at once when `auto_ack`.
class Consumer {
 public:
  Consumer(const std::shared_ptr<grpc::Channel>& channel, const std::string& key,
           const std::string& group, const std::string& name, int max_in_flight, bool auto_ack)
      : stub_(rf::Subscriptions::NewStub(channel)), auto_ack_(auto_ack) {
    common::SetBearer(ctx_, key);
    stream_ = stub_->Subscribe(&ctx_);
    rf::SubscribeRequest start;
    start.mutable_start()->set_group_name(group);
    start.mutable_start()->set_consumer_name(name);
    start.mutable_start()->set_max_in_flight(max_in_flight);
    EXPECT_TRUE(stream_->Write(start));
    reader_ = std::thread([this] { Read(); });
  }
  ~Consumer() { Abort(); }

  /// Goes away without acking anything it still holds.
  void Abort() {
    if (reader_.joinable()) {
      ctx_.TryCancel();
      reader_.join();
    }
  }
  /// Acks one message (for consumers without auto_ack).
  void Ack(const std::string& message_id) {
    rf::SubscribeRequest ack;
    ack.mutable_ack()->add_message_ids(message_id);
    std::lock_guard lock(write_mu_);
    stream_->Write(ack);
  }
  /// Ends the stream and returns its status.
  grpc::Status Finish() {
    {
      std::lock_guard lock(write_mu_);
      stream_->WritesDone();
    }
    reader_.join();
    return status_;
  }

  std::vector<rf::SubscribedMessage> messages() {
    std::lock_guard lock(mu_);
    return messages_;
  }
  bool WaitFor(size_t n, std::chrono::milliseconds timeout = seconds(15)) {
    return WaitUntil([&] { return messages().size() >= n; }, timeout);
  }
  bool done() {
    std::lock_guard lock(mu_);
    return done_;
  }
  grpc::Status status() {
    std::lock_guard lock(mu_);
    return status_;
  }

 private:
  void Read() {
    rf::SubscribeResponse response;
    while (stream_->Read(&response)) {
      {
        std::lock_guard lock(mu_);
        messages_.push_back(response.message());
      }
      if (auto_ack_) {
        rf::SubscribeRequest ack;
        ack.mutable_ack()->add_message_ids(response.message().message_id());
        std::lock_guard lock(write_mu_);
        stream_->Write(ack);
      }
    }
    grpc::Status status = stream_->Finish();
    std::lock_guard lock(mu_);
    status_ = status;
    done_ = true;
  }

  std::unique_ptr<rf::Subscriptions::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<rf::SubscribeRequest, rf::SubscribeResponse>> stream_;
  bool auto_ack_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::vector<rf::SubscribedMessage> messages_;
  grpc::Status status_;
  bool done_ = false;
  std::thread reader_;
};

std::set<std::string> DeliveryIds(const std::vector<rf::SubscribedMessage>& messages) {
  std::set<std::string> ids;
  for (const auto& m : messages) {
    ids.insert(m.delivery_id());
  }
  return ids;
}

class SubscriptionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    platform_ = new iot::testing::HistorySubscriptionsPlatform(std::map<std::string, std::string>{
        {"IOT_RULE_FORWARDING_GROUP_METRICS_INTERVAL", "200ms"}});
  }
  static void TearDownTestSuite() {
    delete platform_;
    platform_ = nullptr;
  }

  static std::unique_ptr<rf::Subscriptions::Stub> Stub() {
    return rf::Subscriptions::NewStub(platform_->channel());
  }

  static grpc::Status CreateGroup(const std::string& name, int ack_timeout_seconds = 0,
                                  const std::string& key = kHsAdminKey) {
    return platform_->CreateGroup(name, ack_timeout_seconds, key);
  }

  /// A rule forwarding every property report of `device` to consumer group `group`.
  static void ForwardToGroup(const std::string& device, const std::string& group,
                             const std::string& key = kHsAdminKey) {
    const grpc::Status status =
        platform_->ForwardToGroup(fmt::format("device_id() = '{}'", device), group, key);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  static grpc::Status Ingest(const std::string& device, int from, int to,
                             const std::string& tenant = "default") {
    std::vector<PropertyRecord> records;
    for (int i = from; i < to; ++i) {
      records.push_back({.message_id = fmt::format("{}-{}-{}", tenant, device, i),
                         .device_id = device,
                         .time_ms = 1'790'000'000'000 + i,
                         .properties = {{"seq", i}},
                         .tenant_id = tenant});
    }
    return platform_->Ingest(records);
  }

  static int Seq(const rf::SubscribedMessage& m) {
    return nlohmann::json::parse(
               m.payload_json())["notify_data"]["body"]["services"][0]["properties"]["seq"]
        .get<int>();
  }

  static inline iot::testing::HistorySubscriptionsPlatform* platform_ = nullptr;
};

TEST_F(SubscriptionsTest, TwoConsumersShareAGroupAndUnackedMessagesMoveToTheOther) {
  const grpc::Status created = CreateGroup("orders", 1);
  ASSERT_TRUE(created.ok()) << created.error_message();
  ForwardToGroup("s-share", "orders");

  // A takes at most 5 and never acks; B takes the rest and acks everything.
  Consumer a(platform_->channel(), kHsAdminKey, "orders", "a", 5, false);
  ASSERT_TRUE(Ingest("s-share", 0, 20).ok());
  ASSERT_TRUE(a.WaitFor(5)) << platform_->service().process().Log();
  Consumer b(platform_->channel(), kHsAdminKey, "orders", "b", 50, true);
  ASSERT_TRUE(b.WaitFor(15));
  EXPECT_EQ(a.messages().size(), 5u);
  const auto held_by_a = DeliveryIds(a.messages());

  // A goes away without acking: after the ack timeout its 5 go to B. (On a slow machine B may
  // claim them before A is gone: they are past the ack timeout either way.)
  a.Abort();
  ASSERT_TRUE(b.WaitFor(20)) << "unacked messages were not redelivered";
  const auto all = b.messages();
  std::set<std::string> redelivered;
  std::vector<int> fresh;
  for (const auto& m : all) {
    EXPECT_EQ(m.device_id(), "s-share");
    EXPECT_EQ(m.resource(), "device.property");
    if (m.redelivered()) {
      redelivered.insert(m.delivery_id());
    } else {
      fresh.push_back(Seq(m));
    }
  }
  EXPECT_EQ(redelivered, held_by_a);
  // Per-device order: what B got new follows the ingest order.
  std::vector<int> expected(15);
  std::iota(expected.begin(), expected.end(), 5);
  EXPECT_EQ(fresh, expected);
  EXPECT_EQ(DeliveryIds(all).size(), 20u) << "nothing lost, nothing twice";

  // Everything is acked: a new consumer gets nothing, B gets nothing more, nothing pending.
  Consumer c(platform_->channel(), kHsAdminKey, "orders", "c", 50, true);
  EXPECT_TRUE(WaitUntil(
      [&] {
        return platform_->Metric("iot_rf_group_pending", {{"group", "orders"}}) == 0 &&
               platform_->Metric("iot_rf_group_backlog", {{"group", "orders"}}) == 0;
      },
      seconds(10)));
  // Nothing pending in the group: there is nothing left that could be redelivered to anyone.
  EXPECT_TRUE(c.messages().empty());
  EXPECT_EQ(b.messages().size(), 20u);
  EXPECT_TRUE(c.Finish().ok());
  EXPECT_TRUE(b.Finish().ok());
}

TEST_F(SubscriptionsTest, AConsumerThatComesBackGetsItsUnackedMessagesFirst) {
  ASSERT_TRUE(CreateGroup("resume-self", 30).ok());
  ForwardToGroup("s-self", "resume-self");
  {
    Consumer a(platform_->channel(), kHsAdminKey, "resume-self", "a", 10, false);
    ASSERT_TRUE(Ingest("s-self", 0, 3).ok());
    ASSERT_TRUE(a.WaitFor(3));
  }
  Consumer again(platform_->channel(), kHsAdminKey, "resume-self", "a", 10, true);
  ASSERT_TRUE(again.WaitFor(3));
  for (const auto& m : again.messages()) {
    EXPECT_TRUE(m.redelivered());
  }
  EXPECT_EQ(Seq(again.messages()[0]), 0);
  EXPECT_TRUE(again.Finish().ok());
}

TEST_F(SubscriptionsTest, GroupsAreTenantScoped) {
  ASSERT_TRUE(CreateGroup("mine").ok());
  EXPECT_EQ(CreateGroup("mine").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(CreateGroup("mine", 0, platform_->other_key()).ok()) << "same name, other tenant";

  rf::ListConsumerGroupsRequest list;
  rf::ListConsumerGroupsResponse mine;
  ASSERT_TRUE(Stub()->ListConsumerGroups(platform_->Ctx(kHsAdminKey).get(), list, &mine).ok());
  rf::ListConsumerGroupsResponse theirs;
  ASSERT_TRUE(
      Stub()->ListConsumerGroups(platform_->Ctx(platform_->other_key()).get(), list, &theirs).ok());
  ASSERT_EQ(theirs.groups_size(), 1);
  EXPECT_EQ(theirs.groups(0).group_name(), "mine");
  EXPECT_EQ(theirs.groups(0).ack_timeout_seconds(), 30);
  EXPECT_EQ(theirs.groups(0).max_backlog_age_seconds(), 86'400);
  EXPECT_GE(mine.groups_size(), 1);

  // The other tenant's subscriber on "mine" never sees the default tenant's messages.
  ForwardToGroup("s-tenant", "mine");
  Consumer other(platform_->channel(), platform_->other_key(), "mine", "x", 10, true);
  Consumer own(platform_->channel(), kHsAdminKey, "mine", "x", 10, true);
  ASSERT_TRUE(Ingest("s-tenant", 0, 2).ok());
  ASSERT_TRUE(own.WaitFor(2));
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_TRUE(other.messages().empty());

  // Deleting is per tenant too; the deleted group's subscribers are ended.
  rf::DeleteConsumerGroupRequest del;
  del.set_group_name("mine");
  rf::DeleteConsumerGroupResponse deleted;
  ASSERT_TRUE(Stub()
                  ->DeleteConsumerGroup(platform_->Ctx(platform_->other_key()).get(), del, &deleted)
                  .ok());
  EXPECT_EQ(Stub()
                ->DeleteConsumerGroup(platform_->Ctx(platform_->other_key()).get(), del, &deleted)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(WaitUntil([&] { return other.done(); }, seconds(10)));
  EXPECT_FALSE(own.done());
  EXPECT_TRUE(own.Finish().ok());
}

TEST_F(SubscriptionsTest, BadInputsAreInvalidArgumentNamingTheField) {
  auto expect_field = [](Consumer& consumer, const std::string& field) {
    ASSERT_TRUE(WaitUntil([&] { return consumer.done(); }, seconds(10))) << field;
    EXPECT_EQ(consumer.status().error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_EQ(consumer.status().error_message().rfind(field + ":", 0), 0u)
        << consumer.status().error_message();
  };
  Consumer unknown(platform_->channel(), kHsAdminKey, "no-such-group", "a", 10, true);
  expect_field(unknown, "group_name");
  ASSERT_TRUE(CreateGroup("bad-inputs").ok());
  Consumer nameless(platform_->channel(), kHsAdminKey, "bad-inputs", "", 10, true);
  expect_field(nameless, "consumer_name");
  Consumer greedy(platform_->channel(), kHsAdminKey, "bad-inputs", "a", 5000, true);
  expect_field(greedy, "max_in_flight");

  EXPECT_EQ(CreateGroup("bad name").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateGroup("g", 7200).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  Consumer anonymous(platform_->channel(), "", "bad-inputs", "a", 10, true);
  ASSERT_TRUE(WaitUntil([&] { return anonymous.done(); }, seconds(10)));
  EXPECT_EQ(anonymous.status().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SubscriptionsTest, ARetriedDeliveryIsAddedOnceAndADeletedGroupGetsNothing) {
  // The consumer_group destination on the service's Redis: the dispatcher retries a batch whose
  // outcome it did not learn; the same delivery ids must not be added again.
  auto redis = std::shared_ptr<common::RedisClient>(
      *common::RedisClient::Create({.url = platform_->redis().Url()}));
  auto streams = std::make_shared<rule_forwarding::GroupStreams>(redis);
  rule_forwarding::ConsumerGroupSettings group;
  group.tenant_id = "default";
  group.group_name = "retried";
  group.max_backlog_length = 1000;
  group.max_backlog_age_seconds = 3600;
  group.ack_timeout_seconds = 30;
  std::vector<rule_forwarding::Delivery> batch(3);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].delivery_id = "m" + std::to_string(i) + ":r:0";
    batch[i].tenant_id = "default";
    batch[i].device_id = "d";
    batch[i].payload = {{"i", i}};
  }
  ASSERT_TRUE(streams->Append(group, batch).ok());
  ASSERT_TRUE(streams->Append(group, batch).ok());
  auto length = redis->Command({"XLEN", rule_forwarding::StreamKey("default", "retried")});
  ASSERT_TRUE(length.ok());
  EXPECT_EQ(length->integer, 3);

  // Once the group is deleted, a replica still holding its settings cannot add to it.
  ASSERT_TRUE(streams->Drop(rule_forwarding::StreamKey("default", "retried")).ok());
  batch[0].delivery_id = "m9:r:0";
  EXPECT_EQ(streams->Append(group, std::span(batch).first(1)).code(), absl::StatusCode::kNotFound);
  length = redis->Command({"EXISTS", rule_forwarding::StreamKey("default", "retried")});
  ASSERT_TRUE(length.ok());
  EXPECT_EQ(length->integer, 0);
}

TEST_F(SubscriptionsTest, IotctlCreatesGroupsAndSubscribes) {
  const std::map<std::string, std::string> env = {{"IOTCTL_ADDR", platform_->service().address()},
                                                  {"IOTCTL_API_KEY", kHsAdminKey}};
  iot::testing::TempDir dir("iotctl");
  auto iotctl = [&](std::vector<std::string> args, const std::string& log) {
    args.insert(args.begin(), iot::testing::ExecutablePath("iotctl").string());
    return std::make_unique<iot::testing::Process>(iot::testing::Process::Options{
        .argv = args, .env = env, .log_file = dir.path() / log, .run_as_user = {}});
  };
  auto create = iotctl({"group", "create", "cli-group", "--ack-timeout", "5"}, "create.log");
  ASSERT_EQ(create->Wait(seconds(20)), 0) << create->Log();
  auto list = iotctl({"--json", "group", "list"}, "list.log");
  ASSERT_EQ(list->Wait(seconds(20)), 0) << list->Log();
  EXPECT_NE(list->Log().find(R"("group_name": "cli-group")"), std::string::npos) << list->Log();
  ForwardToGroup("s-cli", "cli-group");

  auto subscribe = iotctl({"subscribe", "--group", "cli-group", "--count", "3"}, "sub.log");
  ASSERT_TRUE(WaitUntil([&] { return platform_->Metric("iot_rf_subscription_consumers", {}) >= 1; },
                        seconds(10)));
  ASSERT_TRUE(Ingest("s-cli", 0, 3).ok());
  ASSERT_EQ(subscribe->Wait(seconds(20)), 0) << subscribe->Log();
  std::vector<nlohmann::json> lines;
  std::istringstream in(subscribe->Log());
  for (std::string line; std::getline(in, line);) {
    lines.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(lines.size(), 3u) << subscribe->Log();
  EXPECT_EQ(lines[0]["device_id"], "s-cli");
  EXPECT_EQ(nlohmann::json::parse(
                lines[2]["payload_json"]
                    .get<std::string>())["notify_data"]["body"]["services"][0]["properties"]["seq"],
            2);
  // What it printed it acked.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return platform_->Metric("iot_rf_group_backlog", {{"group", "cli-group"}}) == 0;
      },
      seconds(10)));

  auto unknown = iotctl({"subscribe", "--group", "nope"}, "unknown.log");
  EXPECT_EQ(unknown->Wait(seconds(20)), 1);
  EXPECT_NE(unknown->Log().find("group_name"), std::string::npos) << unknown->Log();
}

TEST_F(SubscriptionsTest, EntriesALostReadReplyMadeTheConsumersComeAfterTheErrorNotTheAckTimeout) {
  // A Redis that goes away (SIGTERM) may have carried out an XREADGROUP whose reply never reached
  // the service: those entries are the consumer's, pending, and the stream never got them.
  // Modelled exactly: while the consumer holds its one allowed message (so the service reads
  // nothing), the test reads the next entry as that consumer; then the service's next command
  // fails (XACK refused by an ACL rule for a moment). The entry must come well before the ack
  // timeout (60 s), once, and nothing the consumer holds or acked may come again.
  ASSERT_TRUE(CreateGroup("lost-reply", 60).ok());
  ForwardToGroup("s-lost", "lost-reply");
  Consumer consumer(platform_->channel(), kHsAdminKey, "lost-reply", "a", 1, false);
  ASSERT_TRUE(Ingest("s-lost", 0, 1).ok());
  ASSERT_TRUE(consumer.WaitFor(1));
  const std::string key = rule_forwarding::StreamKey("default", "lost-reply");
  auto redis = *common::RedisClient::Create({.url = platform_->redis().Url()});
  ASSERT_TRUE(Ingest("s-lost", 1, 2).ok());
  auto stolen =
      redis->Command({"XREADGROUP", "GROUP", "app", "a", "COUNT", "1", "STREAMS", key, ">"});
  ASSERT_TRUE(stolen.ok() && stolen->type == common::RedisReply::Type::kArray)
      << (stolen.ok() ? stolen->str : stolen.status().ToString());

  ASSERT_TRUE(redis->Command({"ACL", "SETUSER", "default", "-xack"}).ok());
  const size_t log_before = platform_->service().process().Log().size();
  consumer.Ack(consumer.messages()[0].message_id());
  const bool failed = WaitUntil(
      [&] {
        const std::string log = platform_->service().process().Log();
        return log.size() > log_before &&
               log.find("consumer group read failed", log_before) != std::string::npos;
      },
      seconds(10));
  ASSERT_TRUE(redis->Command({"ACL", "SETUSER", "default", "+xack"}).ok());
  ASSERT_TRUE(failed) << "the service's XACK did not fail";

  ASSERT_TRUE(consumer.WaitFor(2, seconds(10)))
      << "the entry the lost reply made the consumer's waited for the ack timeout";
  const auto got = consumer.messages();
  EXPECT_EQ(Seq(got[1]), 1);
  EXPECT_TRUE(got[1].redelivered());
  consumer.Ack(got[1].message_id());
  EXPECT_TRUE(WaitUntil(
      [&] {
        return platform_->Metric("iot_rf_group_backlog", {{"group", "lost-reply"}}) == 0;
      },
      seconds(10)));
  EXPECT_EQ(consumer.messages().size(), 2u) << "something came twice";
  EXPECT_TRUE(consumer.Finish().ok());
}

// Last: it restarts the Redis every other test uses.
TEST_F(SubscriptionsTest, ASubscriptionSurvivesARedisRestart) {
  ASSERT_TRUE(CreateGroup("survivor").ok());
  ForwardToGroup("s-restart", "survivor");
  Consumer consumer(platform_->channel(), kHsAdminKey, "survivor", "a", 10, true);
  ASSERT_TRUE(Ingest("s-restart", 0, 1).ok());
  ASSERT_TRUE(consumer.WaitFor(1));

  platform_->redis().Stop();
  platform_->redis().Start();
  // Redis came back empty: thing-model rebuilds the key projection, the service reconnects and
  // the subscription recreates its group. New records flow to the same open stream.
  int next = 1;
  EXPECT_TRUE(WaitUntil(
      [&] {
        if (consumer.messages().size() < 2) {
          (void)Ingest("s-restart", next, next + 1);
          ++next;
          std::this_thread::sleep_for(milliseconds(200));
        }
        return consumer.messages().size() >= 2;
      },
      seconds(30)))
      << platform_->service().process().Log();
  EXPECT_FALSE(consumer.done());
  EXPECT_TRUE(consumer.Finish().ok());
}

}  // namespace
}  // namespace iot
