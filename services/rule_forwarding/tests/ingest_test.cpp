// IngestService with fakes: the built-in history written before Ingest answers (not through the
// outbox), rules' actions through the outbox and the dispatcher, what a failure of either leaves
// behind for the gateway's retry, records marked done only after their effects, overlapping
// attempts of one record, and invalid records rejected alone.
#include "iot/rule_forwarding/ingest.h"

#include <gtest/gtest.h>

#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "fake_outbox.h"

namespace iot::rule_forwarding {
namespace {

using std::chrono::seconds;

class FakeDedupe final : public Dedupe {
 public:
  absl::StatusOr<std::vector<bool>> Done(const std::vector<std::string>& ids) override {
    std::lock_guard lock(mu_);
    if (!down_.ok()) {
      return down_;
    }
    std::vector<bool> done;
    for (const std::string& id : ids) {
      done.push_back(done_.contains(id));
    }
    return done;
  }
  absl::Status MarkDone(const std::vector<std::string>& ids) override {
    std::lock_guard lock(mu_);
    if (!down_.ok()) {
      return down_;
    }
    done_.insert(ids.begin(), ids.end());
    return absl::OkStatus();
  }
  bool IsDone(const std::string& id) {
    std::lock_guard lock(mu_);
    return done_.contains(id);
  }
  void SetDown(absl::Status status) {
    std::lock_guard lock(mu_);
    down_ = std::move(status);
  }

 private:
  std::mutex mu_;
  absl::Status down_;
  std::set<std::string> done_;
};

/// Records delivery ids; answers `next` once (then OK again).
class FakeDestination final : public Destination {
 public:
  explicit FakeDestination(std::string type) : type_(std::move(type)) {}
  [[nodiscard]] std::string_view type() const override { return type_; }
  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& /*config*/) const override {
    return absl::OkStatus();
  }
  absl::Status Deliver(std::span<const Delivery> batch) override {
    std::function<absl::Status()> hook;
    {
      std::lock_guard lock(mu_);
      hook = std::exchange(before_next_, nullptr);
    }
    if (hook) {
      if (absl::Status s = hook(); !s.ok()) {
        return s;
      }
    }
    std::lock_guard lock(mu_);
    ++calls_;
    if (!next_.ok()) {
      return std::exchange(next_, absl::OkStatus());
    }
    for (const Delivery& d : batch) {
      ids_.push_back(d.delivery_id);
    }
    return absl::OkStatus();
  }
  void FailNext(absl::Status status) {
    std::lock_guard lock(mu_);
    next_ = std::move(status);
  }
  /// Runs `hook` at the start of the next Deliver (on its thread); its error fails that call.
  void BeforeNext(std::function<absl::Status()> hook) {
    std::lock_guard lock(mu_);
    before_next_ = std::move(hook);
  }
  std::vector<std::string> ids() {
    std::lock_guard lock(mu_);
    return ids_;
  }
  int calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  std::string type_;
  std::mutex mu_;
  absl::Status next_;
  std::function<absl::Status()> before_next_;
  int calls_ = 0;
  std::vector<std::string> ids_;
};

using fakes::FakeOutbox;

IngestRecord Property(const std::string& message_id) {
  return IngestRecord{
      .message_id = message_id,
      .tenant_id = "t1",
      .device_id = "d1",
      .product_id = "p1",
      .node_id = "n1",
      .resource = "device.property",
      .event = "report",
      .topic = "$oc/devices/d1/sys/properties/report",
      .event_time_unix_ms = 1,
      .envelope_json =
          R"({"notify_data":{"body":{"services":[{"service_id":"s","properties":{"v":1}}]}}})"};
}

class IngestTest : public ::testing::Test {
 protected:
  void Build(size_t queue_capacity = 100, bool rule_action_direct = false,
             bool history_direct = true) {
    DestinationRegistry registry;
    registry.emplace("history", history_);
    registry.emplace("postgres", rule_target_);
    dispatcher_ = std::make_shared<Dispatcher>(
        registry, nullptr, nullptr,
        DispatcherOptions{.queue_capacity = queue_capacity,
                          .workers = 1,
                          .workers_by_type = {},
                          .max_batch = 10,
                          .max_batch_by_type = {},
                          .max_attempts = 3,
                          .retry_initial = std::chrono::milliseconds(1),
                          .retry_max = std::chrono::milliseconds(5)},
        outbox_);
    RuleRecord rule{.tenant_id = "t1",
                    .rule_id = "r1",
                    .name = "all",
                    .description = {},
                    .resource = "device.property",
                    .product_id = {},
                    .device_id = {},
                    .sql = "SELECT *",
                    .actions = {RuleAction{.type = "postgres", .config = {}}},
                    .unreadable_secrets = {},
                    .enabled = true,
                    .create_time = {},
                    .update_time = {}};
    rules_ = RuleSet::Build({rule});
    std::vector<std::shared_ptr<Destination>> direct;
    if (rule_action_direct) {
      direct.push_back(rule_target_);
    }
    ingest_ =
        std::make_shared<IngestService>([this] { return rules_; }, dedupe_, dispatcher_, nullptr,
                                        outbox_, history_direct ? history_ : nullptr, direct);
  }

  std::shared_ptr<FakeDestination> history_ = std::make_shared<FakeDestination>("history");
  std::shared_ptr<FakeDestination> rule_target_ = std::make_shared<FakeDestination>("postgres");
  std::shared_ptr<FakeOutbox> outbox_ = std::make_shared<FakeOutbox>();
  std::shared_ptr<FakeDedupe> dedupe_ = std::make_shared<FakeDedupe>();
  std::shared_ptr<Dispatcher> dispatcher_;
  std::shared_ptr<const RuleSet> rules_;
  std::shared_ptr<IngestService> ingest_;
};

TEST_F(IngestTest, HistoryIsStoredBeforeTheAnswerAndOnlyRuleActionsUseTheOutbox) {
  Build();
  ASSERT_TRUE(ingest_->Ingest({Property("m1"), Property("m2")}).ok());
  // Stored by the time Ingest answered, without the dispatcher running at all.
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history", "m2:history"}));
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres", "postgres"}));
  EXPECT_EQ(dispatcher_->pending(), 2u);
  dispatcher_->Start();
  ASSERT_TRUE(dispatcher_->WaitIdle(seconds(10)));
  EXPECT_EQ(rule_target_->ids(), (std::vector<std::string>{"m1:r1:0", "m2:r1:0"}));
  EXPECT_EQ(history_->calls(), 1);  // the dispatcher's history worker never saw them

  // The gateway's retry of the same batch: duplicates, nothing stored or queued twice.
  ASSERT_TRUE(ingest_->Ingest({Property("m1"), Property("m2")}).ok());
  EXPECT_EQ(history_->calls(), 1);
  EXPECT_EQ(outbox_->types().size(), 2u);
}

TEST_F(IngestTest, ATransientHistoryFailureIsTheGatewaysToRetry) {
  Build();
  history_->FailNext(absl::UnavailableError("postgres down"));
  const absl::Status failed = ingest_->Ingest({Property("m1")}).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_TRUE(outbox_->types().empty());
  EXPECT_EQ(dispatcher_->pending(), 0u);
  EXPECT_FALSE(dedupe_->IsDone("m1"));  // nothing is marked before its effects are durable
  // The retry is taken in full.
  ASSERT_TRUE(ingest_->Ingest({Property("m1")}).ok());
  EXPECT_TRUE(dedupe_->IsDone("m1"));
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history"}));
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres"}));
}

TEST_F(IngestTest, APermanentHistoryFailureGoesToTheDispatcherToRetryAndDeadLetter) {
  Build();
  history_->FailNext(absl::InternalError("bad row"));
  ASSERT_TRUE(ingest_->Ingest({Property("m1")}).ok());
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres", "history"}));
  dispatcher_->Start();
  ASSERT_TRUE(dispatcher_->WaitIdle(seconds(10)));
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history"}));
}

TEST_F(IngestTest, FullQueuesRefuseTheBatchBeforeTheHistoryIsWritten) {
  Build(/*queue_capacity=*/1);
  ASSERT_TRUE(ingest_->Ingest({Property("m1")}).ok());
  const absl::Status full = ingest_->Ingest({Property("m2")}).status();
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history"}));
  dispatcher_->Start();
  ASSERT_TRUE(dispatcher_->WaitIdle(seconds(10)));
  ASSERT_TRUE(ingest_->Ingest({Property("m2")}).ok());
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history", "m2:history"}));
}

TEST_F(IngestTest, DirectActionsAreDeliveredBeforeTheHistoryAndNeverQueued) {
  Build(/*queue_capacity=*/100, /*rule_action_direct=*/true);
  ASSERT_TRUE(ingest_->Ingest({Property("m1"), Property("m2")}).ok());
  EXPECT_EQ(rule_target_->ids(), (std::vector<std::string>{"m1:r1:0", "m2:r1:0"}));
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history", "m2:history"}));
  EXPECT_TRUE(outbox_->types().empty());
  EXPECT_EQ(dispatcher_->pending(), 0u);

  // Redis down for the action: nothing of the batch is kept, the history is not written yet.
  rule_target_->FailNext(absl::UnavailableError("redis down"));
  const absl::Status failed = ingest_->Ingest({Property("m3")}).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_EQ(history_->ids().size(), 2u);
  ASSERT_TRUE(ingest_->Ingest({Property("m3")}).ok());
  EXPECT_EQ(rule_target_->ids().back(), "m3:r1:0");
  EXPECT_EQ(history_->ids().back(), "m3:history");

  // A permanent failure (a deleted group): the dispatcher retries and dead-letters it.
  rule_target_->FailNext(absl::FailedPreconditionError("group deleted"));
  ASSERT_TRUE(ingest_->Ingest({Property("m4")}).ok());
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres"}));
  EXPECT_EQ(history_->ids().back(), "m4:history");
  dispatcher_->Start();
  ASSERT_TRUE(dispatcher_->WaitIdle(seconds(10)));
  EXPECT_EQ(rule_target_->ids().back(), "m4:r1:0");
}

TEST_F(IngestTest, ARetryOverlappingASlowFirstAttemptThatFailsLaterLosesNothing) {
  // The gateway's call times out while the first attempt is stuck in the history; it retries,
  // the retry succeeds, then the first attempt fails. Claiming ids first lost the record here:
  // the retry was answered "duplicate" and the failure released nothing the retry had stored.
  Build();
  std::promise<void> stuck;
  std::promise<void> fail;
  history_->BeforeNext([&] {
    stuck.set_value();
    fail.get_future().wait();
    return absl::UnavailableError("connection to PostgreSQL lost");
  });
  auto first = std::async(std::launch::async, [&] { return ingest_->Ingest({Property("m1")}); });
  stuck.get_future().wait();
  auto retry = ingest_->Ingest({Property("m1")});
  ASSERT_TRUE(retry.ok()) << retry.status();
  fail.set_value();
  EXPECT_EQ(first.get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history"}));
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres"}));
  EXPECT_TRUE(dedupe_->IsDone("m1"));
  dispatcher_->Start();
  ASSERT_TRUE(dispatcher_->WaitIdle(seconds(10)));
  EXPECT_EQ(rule_target_->ids(), (std::vector<std::string>{"m1:r1:0"}));
}

TEST_F(IngestTest, ConcurrentAttemptsOfOneRecordShareItsOutboxRow) {
  Build();
  std::promise<void> stuck;
  std::promise<void> go;
  history_->BeforeNext([&] {
    stuck.set_value();
    go.get_future().wait();
    return absl::OkStatus();
  });
  auto first = std::async(std::launch::async, [&] { return ingest_->Ingest({Property("m1")}); });
  stuck.get_future().wait();
  ASSERT_TRUE(ingest_->Ingest({Property("m1")}).ok());
  go.set_value();
  ASSERT_TRUE(first.get().ok());
  // One row for the rule's delivery, however many attempts stored it.
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres"}));
  EXPECT_EQ(outbox_->stored().size(), 1u);
}

TEST_F(IngestTest, RowsOfABatchTheQueuesRefuseStayInTheOutboxForTakeover) {
  // Without a direct history nothing checks the queues before the outbox: Enqueue refuses.
  Build(/*queue_capacity=*/1, /*rule_action_direct=*/false, /*history_direct=*/false);
  ASSERT_TRUE(ingest_->Ingest({Property("m1")}).ok());  // postgres + history: one each
  const absl::Status full = ingest_->Ingest({Property("m2")}).status();
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  // Not deleted (a concurrent attempt of m2 may count on them): disowned, swept by any replica.
  EXPECT_EQ(outbox_->stored().size(), 4u);
  EXPECT_EQ(outbox_->disowned().size(), 2u);
  EXPECT_FALSE(dedupe_->IsDone("m2"));
  dispatcher_->Start();
  ASSERT_TRUE(dispatcher_->WaitIdle(seconds(10)));
  // The gateway's retry takes the same rows back.
  ASSERT_TRUE(ingest_->Ingest({Property("m2")}).ok());
  EXPECT_EQ(outbox_->types().size(), 4u);
  EXPECT_TRUE(outbox_->disowned().empty());
  ASSERT_TRUE(dispatcher_->WaitIdle(seconds(10)));
  EXPECT_EQ(rule_target_->ids(), (std::vector<std::string>{"m1:r1:0", "m2:r1:0"}));
}

TEST_F(IngestTest, AnInvalidRecordIsRejectedAloneAndTheRestIsTaken) {
  Build();
  IngestRecord no_tenant = Property("m2");
  no_tenant.tenant_id.clear();
  IngestRecord not_json = Property("m3");
  not_json.envelope_json = "{not json";
  IngestRecord no_id = Property("");
  // Deeper than device JSON in its envelope may be (issue #15): refused before it is parsed.
  IngestRecord too_deep = Property("m5");
  too_deep.envelope_json = std::string(100'000, '[') + std::string(100'000, ']');
  auto rejected = ingest_->Ingest(
      {Property("m1"), no_tenant, not_json, no_id, Property("m4"), Property("m1"), too_deep});
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  ASSERT_EQ(rejected->size(), 4u);
  EXPECT_EQ((*rejected)[0].message_id, "m2");
  EXPECT_EQ((*rejected)[0].device_id, "d1");
  EXPECT_EQ((*rejected)[0].reason, "malformed");
  EXPECT_EQ((*rejected)[0].detail, "records[1].device.tenant_id: is required");
  EXPECT_EQ((*rejected)[1].message_id, "m3");
  EXPECT_EQ((*rejected)[1].reason, "invalid_envelope");
  EXPECT_EQ((*rejected)[1].detail, "records[2].envelope_json: is not a JSON object");
  EXPECT_EQ((*rejected)[2].reason, "malformed");
  EXPECT_TRUE((*rejected)[2].detail.starts_with("records[3].message_id")) << (*rejected)[2].detail;
  EXPECT_EQ((*rejected)[3].message_id, "m5");
  EXPECT_EQ((*rejected)[3].reason, "invalid_envelope");
  EXPECT_EQ((*rejected)[3].detail, "records[6].envelope_json: JSON nested deeper than 72 levels");
  // The valid records are taken, m1 once although the batch holds it twice.
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history", "m4:history"}));
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres", "postgres"}));
  EXPECT_FALSE(dedupe_->IsDone("m2"));
}

TEST_F(IngestTest, WithoutTheDoneMarksTheBatchRunsInFullAndKeepsOneOutboxRowPerDelivery) {
  Build();
  ASSERT_TRUE(ingest_->Ingest({Property("m1")}).ok());
  dedupe_->SetDown(absl::UnavailableError("redis down"));
  // A redelivery while the marks cannot be read: run again, idempotently.
  ASSERT_TRUE(ingest_->Ingest({Property("m1"), Property("m2")}).ok());
  EXPECT_EQ(history_->ids(), (std::vector<std::string>{"m1:history", "m1:history", "m2:history"}));
  EXPECT_EQ(outbox_->types(), (std::vector<std::string>{"postgres", "postgres"}));
  dedupe_->SetDown(absl::OkStatus());
  EXPECT_FALSE(dedupe_->IsDone("m2"));  // the mark could not be written; m2 is taken all the same
}

}  // namespace
}  // namespace iot::rule_forwarding
