// DispatchService with in-memory fakes of its ports: validation, the sync wait and its
// completion (local, early, routed to the owner), the queue drain order, immediate vs delayed
// async commands; the Batcher's group commit.
#include "iot/command_dispatch/dispatch_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include "iot/common/status.h"
#include "iot/thing_model/product_model.h"

namespace iot::command_dispatch {
namespace {

using std::chrono::milliseconds;

class FakeStore final : public RequestStore {
 public:
  absl::Status Insert(const RequestRecord& r, std::optional<milliseconds>,
                      std::optional<milliseconds>) override {
    std::lock_guard lock(mu_);
    if (rows_.count(r.request_id) > 0) {
      return absl::AlreadyExistsError("taken");
    }
    rows_[r.request_id] = r;
    order_.push_back(r.request_id);
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Move(const std::string& id, const Transition& t) override {
    std::lock_guard lock(mu_);
    auto& r = rows_.at(id);
    if (std::find(t.from.begin(), t.from.end(), r.status) == t.from.end()) {
      return false;
    }
    r.status = t.to;
    r.error = t.error;
    return true;
  }
  absl::StatusOr<std::optional<Completion>> Complete(const DeviceResponse& response,
                                                     std::string_view final_status) override {
    if (before_complete) {
      before_complete(response);
    }
    std::lock_guard lock(mu_);
    auto it = rows_.find(response.request_id);
    if (it == rows_.end() || it->second.device_id != response.device_id || it->second.result) {
      return std::nullopt;
    }
    it->second.result = response.payload_json;
    if (it->second.status != status::kSent && it->second.status != status::kDelivered) {
      return std::nullopt;
    }
    it->second.status = final_status;
    return Completion{.request_id = response.request_id,
                      .kind = it->second.kind,
                      .status = std::string(final_status),
                      .payload_json = response.payload_json,
                      .owner = it->second.owner};
  }
  absl::StatusOr<RequestRecord> Get(const std::string& tenant, const std::string& device, Kind,
                                    const std::string& id) override {
    std::lock_guard lock(mu_);
    auto it = rows_.find(id);
    if (it == rows_.end() || it->second.tenant_id != tenant || it->second.device_id != device) {
      return absl::NotFoundError("not found");
    }
    return it->second;
  }
  absl::StatusOr<Page<RequestRecord>> List(const std::string&, const std::string&, Kind,
                                           const std::string&, int32_t,
                                           const std::string&) override {
    return Page<RequestRecord>{};
  }
  absl::StatusOr<RequestRecord> Find(const std::string& id) override {
    std::lock_guard lock(mu_);
    return rows_.at(id);
  }
  absl::StatusOr<int> DrainPending(
      const std::string& device, milliseconds, milliseconds,
      const std::function<SendOutcome(const RequestRecord&)>& send) override {
    int delivered = 0;
    for (const std::string& id : std::vector<std::string>(order_)) {
      RequestRecord item;
      {
        std::lock_guard lock(mu_);
        if (rows_[id].device_id != device || rows_[id].status != status::kPending) {
          continue;
        }
        rows_[id].status = status::kSent;
        item = rows_[id];
      }
      const SendOutcome outcome = send(item);
      std::lock_guard lock(mu_);
      rows_[id].status = outcome == SendOutcome::kDelivered ? status::kDelivered : status::kPending;
      if (outcome != SendOutcome::kDelivered) {
        break;
      }
      ++delivered;
    }
    return delivered;
  }
  absl::StatusOr<int> Sweep(milliseconds) override { return 0; }

  std::string StatusOf(const std::string& id) {
    std::lock_guard lock(mu_);
    return rows_.at(id).status;
  }

  /// Runs (outside the store's lock) before each response is recorded.
  std::function<void(const DeviceResponse&)> before_complete;

 private:
  std::mutex mu_;
  std::map<std::string, RequestRecord> rows_;
  std::vector<std::string> order_;
};

class FakeDevices final : public DeviceDirectory {
 public:
  FakeDevices() {
    std::ifstream in(IOT_TESTDATA_DIR "/smart_meter_product.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto model = thing_model::ParseProductModel(ss.str());
    EXPECT_TRUE(model.ok()) << model.status();
    validator_ = std::make_shared<const thing_model::Validator>(model->model);
  }
  absl::StatusOr<DeviceInfo> Lookup(const std::string& device_id) override {
    if (device_id.starts_with("missing")) {
      return absl::NotFoundError("device not found");
    }
    return DeviceInfo{.device_id = device_id,
                      .tenant_id = device_id.starts_with("other") ? "t2" : "t1",
                      .product_id = "smartmeter01",
                      .validator = validator_};
  }

 private:
  std::shared_ptr<const thing_model::Validator> validator_;
};

class FakePublisher final : public DevicePublisher {
 public:
  absl::StatusOr<bool> Publish(const Downlink& d) override {
    std::lock_guard lock(mu_);
    if (!online) {
      return false;
    }
    sent.push_back(d);
    if (on_publish) {
      on_publish(d);
    }
    return true;
  }
  std::mutex mu_;
  bool online = true;
  std::vector<Downlink> sent;
  std::function<void(const Downlink&)> on_publish;
};

/// Another replica's routing: what is forwarded is remembered, and can be delivered.
class FakeRouter final : public ResponseRouter {
 public:
  absl::Status Start(Deliver deliver, Resync) override {
    deliver_ = std::move(deliver);
    return absl::OkStatus();
  }
  void Stop() override {}
  absl::StatusOr<bool> Forward(const Completion& completion) override {
    forwarded.push_back(completion);
    return true;
  }
  void Deliver(const Completion& c) { deliver_(c); }
  std::vector<Completion> forwarded;

 private:
  ResponseRouter::Deliver deliver_;
};

DispatchOptions Options() {
  DispatchOptions options;
  options.replica_id = "replica-a";
  return options;
}

class DispatchServiceTest : public ::testing::Test {
 protected:
  DispatchServiceTest()
      : service_(store_, std::make_shared<FakeDevices>(), publisher_, router_,
                 std::make_shared<DispatchMetrics>(registry_), Options()) {
    EXPECT_TRUE(service_.Start().ok());
  }

  absl::StatusOr<SyncResult> Command(const std::string& paras, milliseconds wait,
                                     const std::string& device = "dev1") {
    SyncRequest request;
    request.device_id = device;
    request.service_id = "meter";
    request.command_name = "reboot";
    request.body_json = paras;
    return service_.SendSync(caller_, request, std::chrono::system_clock::now() + wait);
  }

  void TearDown() override {
    for (auto& t : threads_) {
      t.join();
    }
  }

  prometheus::Registry registry_;
  std::vector<std::thread> threads_;
  std::shared_ptr<FakeStore> store_ = std::make_shared<FakeStore>();
  std::shared_ptr<FakePublisher> publisher_ = std::make_shared<FakePublisher>();
  std::shared_ptr<FakeRouter> router_ = std::make_shared<FakeRouter>();
  DispatchService service_;
  common::Principal caller_{
      .tenant_id = "t1", .role = common::Role::kOperator, .key_id = "k", .root_tenant = false};
};

TEST_F(DispatchServiceTest, ResponseCompletesTheWaitingCall) {
  publisher_->on_publish = [this](const Downlink& d) {
    threads_.emplace_back([this, d] {
      EXPECT_TRUE(service_
                      .CompleteRequests({{.device_id = d.device_id,
                                          .request_id = d.request_id,
                                          .payload_json = R"({"result_code":0})",
                                          .message_id = {}}})
                      .ok());
    });
  };
  auto result = Command(R"({"delay":1})", std::chrono::seconds(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->response_json, R"({"result_code":0})");
  threads_.back().join();  // the gateway's call returns once the response is recorded
  threads_.pop_back();
  EXPECT_EQ(store_->StatusOf(result->request_id), "SUCCESSFUL");
  EXPECT_TRUE(router_->forwarded.empty()) << "answered locally";
}

TEST_F(DispatchServiceTest, RoutedCompletionAndTimeoutWithTheCallersDeadline) {
  publisher_->on_publish = [this](const Downlink& d) {
    threads_.emplace_back([this, d] {
      router_->Deliver({.request_id = d.request_id,
                        .kind = Kind::kCommand,
                        .status = "FAILED",
                        .payload_json = R"({"result_code":3})",
                        .owner = ""});
    });
  };
  auto routed = Command("{}", std::chrono::seconds(10));
  ASSERT_TRUE(routed.ok()) << routed.status();
  EXPECT_EQ(routed->response_json, R"({"result_code":3})");

  publisher_->on_publish = nullptr;
  auto timed_out = Command("{}", milliseconds(50));
  EXPECT_EQ(timed_out.status().code(), absl::StatusCode::kDeadlineExceeded);
  const std::string id = publisher_->sent.back().request_id;
  EXPECT_EQ(store_->StatusOf(id), "TIMEOUT");
  // A response for a call nobody here waits for is forwarded; for a closed one, not.
  ASSERT_TRUE(
      service_
          .CompleteRequests(
              {{.device_id = "dev1", .request_id = id, .payload_json = "{}", .message_id = {}}})
          .ok());
  EXPECT_TRUE(router_->forwarded.empty());
}

TEST_F(DispatchServiceTest, LocalCallIsAnsweredBeforeItsResponseIsRecorded) {
  std::promise<void> answered;
  std::shared_future<void> answered_future = answered.get_future().share();
  store_->before_complete = [answered_future](const DeviceResponse& r) {
    if (r.device_id == "dev1") {
      answered_future.wait();
    }
  };
  std::promise<absl::Status> recorded;
  auto recorded_future = recorded.get_future();
  publisher_->on_publish = [&](const Downlink& d) {
    threads_.emplace_back([&, d] {
      // Another device's answer to the same id is not this call's.
      (void)service_.CompleteRequests({{.device_id = "dev2",
                                        .request_id = d.request_id,
                                        .payload_json = "{}",
                                        .message_id = {}}});
      recorded.set_value(service_
                             .CompleteRequests({{.device_id = d.device_id,
                                                 .request_id = d.request_id,
                                                 .payload_json = R"({"result_code":1})",
                                                 .message_id = {}}})
                             .status());
    });
  };
  auto result = Command("{}", std::chrono::seconds(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->response_json, R"({"result_code":1})");
  EXPECT_EQ(recorded_future.wait_for(milliseconds(50)), std::future_status::timeout)
      << "the gateway's call returns only once the response is recorded";
  EXPECT_EQ(store_->StatusOf(result->request_id), "SENT");
  answered.set_value();
  EXPECT_TRUE(recorded_future.get().ok());
  EXPECT_EQ(store_->StatusOf(result->request_id), "FAILED");
}

TEST_F(DispatchServiceTest, ResponseToAnotherReplicasCallGoesToItsRecordedOwner) {
  RequestRecord theirs;
  theirs.request_id = "r-b";
  theirs.tenant_id = "t1";
  theirs.device_id = "dev1";
  theirs.status = "SENT";
  theirs.owner = "replica-b";
  ASSERT_TRUE(store_->Insert(theirs, std::nullopt, std::nullopt).ok());
  auto mine = Command("{}", milliseconds(20));  // times out: recorded with this replica
  ASSERT_EQ(mine.status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(
      service_
          .CompleteRequests(
              {{.device_id = "dev1", .request_id = "r-b", .payload_json = "{}", .message_id = {}},
               {.device_id = "dev1", .request_id = "r-b", .payload_json = "{}", .message_id = {}}})
          .ok());
  ASSERT_EQ(router_->forwarded.size(), 1u) << "a repeated response is recorded and routed once";
  EXPECT_EQ(router_->forwarded[0].owner, "replica-b");
  EXPECT_EQ(router_->forwarded[0].status, "SUCCESSFUL");
}

TEST_F(DispatchServiceTest, RejectsBeforeSendingAnything) {
  EXPECT_EQ(common::FieldOf(Command(R"({"delay":61})", milliseconds(10)).status()), "paras.delay");
  EXPECT_EQ(Command("{}", milliseconds(10), "missing").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Command("{}", milliseconds(10), "other").status().code(), absl::StatusCode::kNotFound)
      << "another tenant's device does not exist for the caller";
  SyncRequest set;
  set.kind = Kind::kPropertiesSet;
  set.device_id = "dev1";
  set.body_json = R"({"services":[{"service_id":"meter","properties":{"voltage":1}}]})";
  EXPECT_EQ(
      common::FieldOf(service_.SendSync(caller_, set, std::chrono::system_clock::now()).status()),
      "services[0].properties.voltage");
  publisher_->online = false;
  EXPECT_EQ(Command("{}", std::chrono::seconds(10)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(publisher_->sent.empty());
}

TEST_F(DispatchServiceTest, QueueDrainsInOrderOnConnectAndImmediateFailsOffline) {
  publisher_->online = false;
  MessageRequest message;
  message.device_id = "dev1";
  message.message_json = R"({"n":1})";
  auto first = service_.CreateMessage(caller_, message);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->status, "PENDING");
  AsyncCommandRequest async;
  async.device_id = "dev1";
  async.service_id = "meter";
  async.command_name = "reboot";
  async.send_strategy = "delay";
  auto delayed = service_.CreateAsyncCommand(caller_, async);
  ASSERT_TRUE(delayed.ok());
  async.send_strategy = "immediately";
  auto immediate = service_.CreateAsyncCommand(caller_, async);
  ASSERT_TRUE(immediate.ok());
  EXPECT_EQ(immediate->status, "FAILED");
  EXPECT_EQ(immediate->error, "device offline");

  publisher_->online = true;
  ASSERT_TRUE(service_.DeviceOnline("dev1").ok());
  ASSERT_EQ(publisher_->sent.size(), 2u);
  EXPECT_EQ(publisher_->sent[0].request_id, first->request_id);
  EXPECT_EQ(publisher_->sent[1].request_id, delayed->request_id);
  ASSERT_TRUE(service_.DeviceOnline("dev1").ok());
  EXPECT_EQ(publisher_->sent.size(), 2u) << "nothing twice";
}

TEST_F(DispatchServiceTest, RedeliveredPresenceDrainsOnceAndMalformedEventsAreRejectedAlone) {
  publisher_->online = false;
  MessageRequest message;
  message.device_id = "dev1";
  message.message_json = R"({"n":1})";
  ASSERT_TRUE(service_.CreateMessage(caller_, message).ok());
  publisher_->online = true;
  const DevicePresence connect{.message_id = "p1", .device_id = "dev1", .online = true};
  const DevicePresence nameless{.message_id = "p2", .device_id = "", .online = true};
  auto rejected = service_.ReportPresence({nameless, connect});
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  ASSERT_EQ(rejected->size(), 1u);
  EXPECT_EQ((*rejected)[0].message_id, "p2");
  EXPECT_EQ((*rejected)[0].detail, "events[0].device.device_id: is required");
  ASSERT_EQ(publisher_->sent.size(), 1u);
  // The same event again (the gateway's retry, a redelivery): the queue is empty, nothing new.
  ASSERT_TRUE(service_.ReportPresence({connect}).ok());
  EXPECT_EQ(publisher_->sent.size(), 1u);
  // Connect then disconnect in one batch: the device is gone, nothing is sent.
  ASSERT_TRUE(service_.CreateMessage(caller_, message).ok());
  publisher_->online = false;
  ASSERT_TRUE(
      service_.ReportPresence({connect, {.message_id = "p3", .device_id = "dev1", .online = false}})
          .ok());
}

TEST_F(DispatchServiceTest, ARedeliveredResponseIsRecordedOnceAndAMalformedOneRejectedAlone) {
  RequestRecord open;
  open.request_id = "r-1";
  open.tenant_id = "t1";
  open.device_id = "dev1";
  open.kind = Kind::kAsyncCommand;
  open.status = "DELIVERED";
  ASSERT_TRUE(store_->Insert(open, std::nullopt, std::nullopt).ok());
  const DeviceResponse answer{.device_id = "dev1",
                              .request_id = "r-1",
                              .payload_json = R"({"result_code":0})",
                              .message_id = "m1"};
  const DeviceResponse nameless{
      .device_id = "dev1", .request_id = "", .payload_json = "{}", .message_id = "m2"};
  // Deeper than device JSON may be (issue #15): refused before it is parsed.
  const DeviceResponse deep{.device_id = "dev1",
                            .request_id = "r-1",
                            .payload_json = std::string(100'000, '[') + std::string(100'000, ']'),
                            .message_id = "m3"};
  auto rejected = service_.CompleteRequests({nameless, deep, answer});
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  ASSERT_EQ(rejected->size(), 2u);
  EXPECT_EQ((*rejected)[0].message_id, "m2");
  EXPECT_EQ((*rejected)[0].reason, "malformed");
  EXPECT_EQ((*rejected)[0].detail, "responses[0].request_id: is required");
  EXPECT_EQ((*rejected)[1].message_id, "m3");
  EXPECT_EQ((*rejected)[1].reason, "malformed");
  EXPECT_EQ((*rejected)[1].detail, "responses[1].payload_json: JSON nested deeper than 72 levels");
  EXPECT_EQ(store_->StatusOf("r-1"), "SUCCESSFUL");
  // Redelivered with another result: the first one recorded stays.
  auto again = service_.CompleteRequests({{.device_id = "dev1",
                                           .request_id = "r-1",
                                           .payload_json = R"({"result_code":1})",
                                           .message_id = "m1"}});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty());
  EXPECT_EQ(store_->StatusOf("r-1"), "SUCCESSFUL");
}

TEST(BatcherTest, ConcurrentCallersShareBatchesAndGetTheirOwnResults) {
  std::mutex mu;
  std::vector<size_t> sizes;
  std::atomic<int> applying{0};
  Batcher<int, int> batcher(
      [&](const std::vector<int>& items) {
        EXPECT_EQ(applying.fetch_add(1), 0) << "one batch at a time";
        std::this_thread::sleep_for(milliseconds(5));
        {
          std::lock_guard lock(mu);
          sizes.push_back(items.size());
        }
        std::vector<int> out;
        out.reserve(items.size());
        for (const int i : items) {
          out.push_back(i * 10);
        }
        applying.fetch_sub(1);
        return out;
      },
      4);
  std::vector<std::thread> callers;
  callers.reserve(8);
  std::atomic<int> wrong{0};
  for (int c = 0; c < 8; ++c) {
    callers.emplace_back([&, c] {
      for (int n = 0; n < 5; ++n) {
        const int item = c * 100 + n;
        if (batcher.Submit(item) != item * 10) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  const std::vector<int> several = batcher.Submit(std::vector<int>{1, 2, 3, 4, 5, 6});
  for (auto& t : callers) {
    t.join();
  }
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(several, (std::vector<int>{10, 20, 30, 40, 50, 60}));
  size_t total = 0;
  for (const size_t n : sizes) {
    EXPECT_LE(n, 4u);
    total += n;
  }
  EXPECT_EQ(total, 46u);
  EXPECT_LT(sizes.size(), 46u) << "concurrent items went together";
}

TEST(ResultStatusTest, ResultCodeDecides) {
  EXPECT_EQ(ResultStatus(R"({"result_code":0})"), "SUCCESSFUL");
  EXPECT_EQ(ResultStatus(R"({"services":[]})"), "SUCCESSFUL");
  EXPECT_EQ(ResultStatus(R"({"result_code":1})"), "FAILED");
  EXPECT_EQ(ResultStatus(R"({"result_code":"0"})"), "FAILED");
  EXPECT_EQ(ResultStatus("not json"), "SUCCESSFUL");
}

}  // namespace
}  // namespace iot::command_dispatch
