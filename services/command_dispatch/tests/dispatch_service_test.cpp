// DispatchService with in-memory fakes of its ports: validation, the sync wait and its
// completion (local and routed), the queue drain order, immediate vs delayed async commands.
#include "iot/command_dispatch/dispatch_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
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
    std::lock_guard lock(mu_);
    auto it = rows_.find(response.request_id);
    if (it == rows_.end() || it->second.result) {
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

class DispatchServiceTest : public ::testing::Test {
 protected:
  DispatchServiceTest()
      : service_(store_, std::make_shared<FakeDevices>(), publisher_, router_,
                 std::make_shared<DispatchMetrics>(registry_)) {
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
                                          .payload_json = R"({"result_code":0})"}})
                      .ok());
    });
  };
  auto result = Command(R"({"delay":1})", std::chrono::seconds(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->response_json, R"({"result_code":0})");
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
      service_.CompleteRequests({{.device_id = "dev1", .request_id = id, .payload_json = "{}"}})
          .ok());
  EXPECT_TRUE(router_->forwarded.empty());
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

TEST(ResultStatusTest, ResultCodeDecides) {
  EXPECT_EQ(ResultStatus(R"({"result_code":0})"), "SUCCESSFUL");
  EXPECT_EQ(ResultStatus(R"({"services":[]})"), "SUCCESSFUL");
  EXPECT_EQ(ResultStatus(R"({"result_code":1})"), "FAILED");
  EXPECT_EQ(ResultStatus(R"({"result_code":"0"})"), "FAILED");
  EXPECT_EQ(ResultStatus("not json"), "SUCCESSFUL");
}

}  // namespace
}  // namespace iot::command_dispatch
