// The dispatcher's queueing, batching, retry and dead-letter logic against fake destinations.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "fake_outbox.h"
#include "iot/rule_forwarding/dispatcher.h"

namespace iot::rule_forwarding {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

/// Fails the first `failures` Deliver calls with `error`, then succeeds; records batches.
class FakeDestination final : public Destination {
 public:
  FakeDestination(std::string type, int failures,
                  absl::Status error = absl::UnavailableError("down"))
      : type_(std::move(type)), failures_(failures), error_(std::move(error)) {}

  [[nodiscard]] std::string_view type() const override { return type_; }
  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& /*config*/) const override {
    return absl::OkStatus();
  }
  absl::Status Deliver(std::span<const Delivery> batch) override {
    std::lock_guard lock(mu_);
    ++calls_;
    if (failures_ < 0 || calls_ <= failures_) {
      return error_;
    }
    std::vector<std::string> ids;
    for (const Delivery& d : batch) {
      ids.push_back(d.delivery_id);
    }
    batches_.push_back(ids);
    return absl::OkStatus();
  }

  int calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::vector<std::vector<std::string>> batches() {
    std::lock_guard lock(mu_);
    return batches_;
  }

 private:
  std::string type_;
  int failures_;  // < 0: always
  absl::Status error_;
  std::mutex mu_;
  int calls_ = 0;
  std::vector<std::vector<std::string>> batches_;
};

class FakeSink final : public DeadLetterSink {
 public:
  absl::Status Add(const std::vector<DeadLetterRecord>& letters) override {
    std::lock_guard lock(mu_);
    letters_.insert(letters_.end(), letters.begin(), letters.end());
    return absl::OkStatus();
  }
  std::vector<DeadLetterRecord> letters() {
    std::lock_guard lock(mu_);
    return letters_;
  }

 private:
  std::mutex mu_;
  std::vector<DeadLetterRecord> letters_;
};

using fakes::FakeOutbox;

DispatchItem Item(const std::string& type, const std::string& id, const std::string& rule = "r1",
                  int action = 0) {
  DispatchItem item;
  item.delivery.delivery_id = id;
  item.delivery.tenant_id = "t1";
  item.delivery.rule_id = rule;
  item.delivery.device_id = "d1";
  item.delivery.payload = {{"id", id}};
  item.action_type = type;
  item.action_index = action;
  return item;
}

bool WaitIdleOf(FakeOutbox& outbox, size_t left) {
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (outbox.stored().size() != left) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

DispatcherOptions FastRetries(int max_attempts) {
  return DispatcherOptions{.queue_capacity = 100,
                           .workers = 1,
                           .workers_by_type = {},
                           .max_batch = 10,
                           .max_batch_by_type = {},
                           .max_attempts = max_attempts,
                           .retry_initial = milliseconds(1),
                           .retry_max = milliseconds(5)};
}

class DispatcherTest : public ::testing::Test {
 protected:
  std::shared_ptr<Dispatcher> Make(std::shared_ptr<FakeDestination> destination,
                                   DispatcherOptions options,
                                   std::shared_ptr<Outbox> outbox = nullptr) {
    DestinationRegistry registry;
    registry.emplace(std::string(destination->type()), destination);
    return std::make_shared<Dispatcher>(
        registry, sink_, std::make_shared<DispatcherMetrics>(registry_), options, outbox);
  }
  double Metric(const std::string& name, const std::map<std::string, std::string>& labels) {
    double sum = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) {
        continue;
      }
      for (const auto& metric : family.metric) {
        bool match = true;
        for (const auto& [k, v] : labels) {
          bool found = false;
          for (const auto& label : metric.label) {
            found = found || (label.name == k && label.value == v);
          }
          match = match && found;
        }
        if (match) {
          sum += metric.counter.value + metric.gauge.value;
        }
      }
    }
    return sum;
  }

  prometheus::Registry registry_;
  std::shared_ptr<FakeSink> sink_ = std::make_shared<FakeSink>();
};

TEST_F(DispatcherTest, RetriesATransientFailureUntilDelivered) {
  auto webhook = std::make_shared<FakeDestination>("webhook", 3);
  auto dispatcher = Make(webhook, FastRetries(5));
  dispatcher->Start();
  ASSERT_TRUE(dispatcher->Enqueue({Item("webhook", "m1")}).ok());
  ASSERT_TRUE(dispatcher->WaitIdle(seconds(10)));
  EXPECT_EQ(webhook->calls(), 4);
  ASSERT_EQ(webhook->batches().size(), 1u);
  EXPECT_EQ(webhook->batches()[0], std::vector<std::string>{"m1"});
  EXPECT_TRUE(sink_->letters().empty());
  EXPECT_EQ(Metric("iot_rf_deliveries_total", {{"type", "webhook"}, {"outcome", "retried"}}), 3);
  EXPECT_EQ(Metric("iot_rf_deliveries_total", {{"type", "webhook"}, {"outcome", "delivered"}}), 1);
  EXPECT_EQ(Metric("iot_rf_queue_depth", {{"type", "webhook"}}), 0);
}

TEST_F(DispatcherTest, DeadLettersAfterMaxAttempts) {
  auto webhook = std::make_shared<FakeDestination>("webhook", -1);
  auto dispatcher = Make(webhook, FastRetries(3));
  dispatcher->Start();
  ASSERT_TRUE(dispatcher->Enqueue({Item("webhook", "m1"), Item("webhook", "m2")}).ok());
  ASSERT_TRUE(dispatcher->WaitIdle(seconds(10)));
  EXPECT_EQ(webhook->calls(), 3);
  auto letters = sink_->letters();
  ASSERT_EQ(letters.size(), 2u);
  EXPECT_EQ(letters[0].delivery_id, "m1");
  EXPECT_EQ(letters[0].attempts, 3);
  EXPECT_EQ(letters[0].error, "down");
  EXPECT_EQ(letters[0].action_type, "webhook");
  EXPECT_EQ(letters[0].rule_id, "r1");
  EXPECT_EQ(letters[0].payload_json, R"({"id":"m1"})");
  EXPECT_EQ(Metric("iot_rf_dead_letters_total", {{"type", "webhook"}}), 2);
}

TEST_F(DispatcherTest, PermanentErrorIsDeadLetteredWithoutRetry) {
  auto pg = std::make_shared<FakeDestination>("postgres", -1,
                                              absl::InvalidArgumentError("no such column"));
  auto dispatcher = Make(pg, FastRetries(5));
  dispatcher->Start();
  ASSERT_TRUE(dispatcher->Enqueue({Item("postgres", "m1")}).ok());
  ASSERT_TRUE(dispatcher->WaitIdle(seconds(10)));
  EXPECT_EQ(pg->calls(), 1);
  ASSERT_EQ(sink_->letters().size(), 1u);
  EXPECT_EQ(sink_->letters()[0].attempts, 1);
}

TEST_F(DispatcherTest, BatchesConsecutiveDeliveriesOfOneActionInOrder) {
  auto pg = std::make_shared<FakeDestination>("postgres", 0);
  DispatcherOptions options = FastRetries(3);
  options.max_batch = 2;
  auto dispatcher = Make(pg, options);
  // Queued before the worker starts, so the batches are deterministic.
  ASSERT_TRUE(dispatcher
                  ->Enqueue({Item("postgres", "a1"), Item("postgres", "a2"), Item("postgres", "a3"),
                             Item("postgres", "b1", "r2"), Item("postgres", "a4")})
                  .ok());
  dispatcher->Start();
  ASSERT_TRUE(dispatcher->WaitIdle(seconds(10)));
  const std::vector<std::vector<std::string>> expected = {{"a1", "a2"}, {"a3"}, {"b1"}, {"a4"}};
  EXPECT_EQ(pg->batches(), expected);
}

TEST_F(DispatcherTest, FullQueueRefusesTheWholeBatch) {
  auto pg = std::make_shared<FakeDestination>("postgres", 0);
  DispatcherOptions options = FastRetries(3);
  options.queue_capacity = 2;
  auto dispatcher = Make(pg, options);
  ASSERT_TRUE(dispatcher->Enqueue({Item("postgres", "m1")}).ok());
  absl::Status full = dispatcher->Enqueue({Item("postgres", "m2"), Item("postgres", "m3")});
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_EQ(dispatcher->pending(), 1u);
  dispatcher->Start();
  ASSERT_TRUE(dispatcher->WaitIdle(seconds(10)));
  EXPECT_EQ(pg->batches(), std::vector<std::vector<std::string>>{{"m1"}});
}

TEST_F(DispatcherTest, UnknownTypeIsDeadLetteredAtOnce) {
  auto pg = std::make_shared<FakeDestination>("postgres", 0);
  auto dispatcher = Make(pg, FastRetries(3));
  ASSERT_TRUE(dispatcher->Enqueue({Item("history", "m1")}).ok());
  ASSERT_EQ(sink_->letters().size(), 1u);
  EXPECT_EQ(sink_->letters()[0].error, "no destination of type 'history'");
}

TEST_F(DispatcherTest, StopDeadLettersWhatItCouldNotDeliverAndRefusesMore) {
  auto webhook = std::make_shared<FakeDestination>("webhook", -1);
  DispatcherOptions options = FastRetries(1000);
  options.retry_initial = milliseconds(50);
  options.retry_max = milliseconds(50);
  auto dispatcher = Make(webhook, options);
  dispatcher->Start();
  ASSERT_TRUE(dispatcher->Enqueue({Item("webhook", "m1"), Item("webhook", "m2")}).ok());
  dispatcher->Stop(milliseconds(100));
  auto letters = sink_->letters();
  ASSERT_EQ(letters.size(), 2u);
  EXPECT_TRUE(letters[0].error.starts_with("not delivered before shutdown")) << letters[0].error;
  EXPECT_EQ(dispatcher->Enqueue({Item("webhook", "m3")}).code(), absl::StatusCode::kUnavailable);
}

TEST_F(DispatcherTest, FinishedDeliveriesLeaveTheOutboxUnfinishedOnesStayAtShutdown) {
  auto outbox = std::make_shared<FakeOutbox>();
  auto pg = std::make_shared<FakeDestination>("postgres", 0);
  auto broken = std::make_shared<FakeDestination>("webhook", -1);
  DestinationRegistry registry{{"postgres", pg}, {"webhook", broken}};
  DispatcherOptions options = FastRetries(1000);
  options.retry_initial = milliseconds(20);
  options.retry_max = milliseconds(20);
  auto dispatcher = std::make_shared<Dispatcher>(
      registry, sink_, std::make_shared<DispatcherMetrics>(registry_), options, outbox);
  std::vector<DispatchItem> items = {Item("postgres", "p1"), Item("postgres", "p2"),
                                     Item("webhook", "w1"), Item("history", "h1")};
  ASSERT_TRUE(outbox->Add(items).ok());
  ASSERT_EQ(outbox->stored().size(), 4u);
  dispatcher->Start();
  ASSERT_TRUE(dispatcher->Enqueue(items).ok());
  // Delivered (p1, p2) and dead-lettered at once (h1: no such type) leave the outbox.
  ASSERT_TRUE(WaitIdleOf(*outbox, 1));
  dispatcher->Stop(milliseconds(50));
  // w1 was still retrying: it stays for another replica and is not dead-lettered.
  EXPECT_EQ(outbox->stored(), std::set<int64_t>{3});
  ASSERT_EQ(sink_->letters().size(), 1u);
  EXPECT_EQ(sink_->letters()[0].delivery_id, "h1");
}

/// Fails every delivery of rule "stuck", delivers the others.
class PickyDestination final : public Destination {
 public:
  [[nodiscard]] std::string_view type() const override { return "webhook"; }
  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& /*config*/) const override {
    return absl::OkStatus();
  }
  absl::Status Deliver(std::span<const Delivery> batch) override {
    if (batch.front().rule_id == "stuck") {
      return absl::UnavailableError("down");
    }
    delivered += batch.size();
    return absl::OkStatus();
  }
  std::atomic<size_t> delivered{0};
};

TEST_F(DispatcherTest, AFailingActionHoldsUpOnlyTheActionsSharingItsWorker) {
  auto webhook = std::make_shared<PickyDestination>();
  DispatcherOptions options = FastRetries(1000);
  options.workers = 4;
  options.retry_initial = milliseconds(50);
  options.retry_max = milliseconds(50);
  Dispatcher dispatcher({{"webhook", webhook}}, sink_, nullptr, options);
  dispatcher.Start();
  std::vector<DispatchItem> items = {Item("webhook", "s1", "stuck")};
  for (int i = 0; i < 16; ++i) {
    items.push_back(Item("webhook", fmt::format("ok{}", i), fmt::format("rule{}", i)));
  }
  ASSERT_TRUE(dispatcher.Enqueue(items).ok());
  // 16 rules over 4 workers: the ones away from the stuck rule's worker get through while it
  // keeps retrying (1000 attempts of 50 ms).
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (webhook->delivered < 8 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_GE(webhook->delivered.load(), 8u);
  EXPECT_GT(dispatcher.pending(), 0u);
  dispatcher.Stop(milliseconds(0));
}

}  // namespace
}  // namespace iot::rule_forwarding
