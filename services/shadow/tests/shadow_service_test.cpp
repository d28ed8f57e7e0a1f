// ShadowService against in-memory fakes of its ports: validation, tenant isolation, version
// conflicts, delta pushes, presence, and the write-behind / rebuild bookkeeping. The real Redis
// scripts and PostgreSQL are covered by tests/integration/shadow_test.cpp.
#include "iot/shadow/shadow_service.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "iot/common/status.h"

namespace iot::shadow {
namespace {

using nlohmann::json;

int64_t StampOf(const std::string& stamped) {
  return std::stoll(stamped.substr(0, stamped.find(' ')));
}

/// The live store's semantics without Redis: per-field newest stamp wins, version per write.
class FakeLive final : public LiveStore {
 public:
  struct Device {
    std::string tenant;
    int64_t version = 0;
    int64_t write_seq = 0;
    std::map<std::string, std::string> fields;
    std::optional<PropertySetRecord> ps;
  };

  absl::StatusOr<std::vector<WriteResult>> MergeReports(
      const std::vector<ReportWrite>& reports) override {
    if (down) {
      return absl::UnavailableError("redis down");
    }
    std::vector<WriteResult> out;
    for (const ReportWrite& r : reports) {
      if (seen.contains(r.device_id + ":" + r.message_id)) {
        out.push_back({Outcome::kDuplicate, devices[r.device_id].version, false});
        continue;
      }
      const bool created = !devices.contains(r.device_id);
      Device& d = devices[r.device_id];
      bool changed = false;
      for (const auto& [f, v] : r.fields) {
        auto it = d.fields.find(f);
        if (it == d.fields.end() || (it->second != v && StampOf(v) >= StampOf(it->second))) {
          d.fields[f] = v;
          changed = true;
        }
      }
      if (changed) {
        seen.insert(r.device_id + ":" + r.message_id);  // remembered with its writes
        d.tenant = r.tenant_id;
        ++d.version;
        ++d.write_seq;
        dirty.insert(r.device_id);
      }
      out.push_back({changed ? Outcome::kApplied : Outcome::kUnchanged, d.version, created});
    }
    return out;
  }

  absl::StatusOr<WriteResult> ApplyDesired(const std::string& device_id,
                                           const std::string& tenant_id, int64_t expected,
                                           const FieldValues& fields) override {
    Device& d = devices[device_id];
    if (expected >= 0 && expected != d.version) {
      return WriteResult{Outcome::kConflict, d.version, false};
    }
    for (const auto& [f, v] : fields) {
      if (v.empty()) {
        d.fields.erase(f);
      } else {
        d.fields[f] = v;
      }
    }
    d.tenant = tenant_id;
    ++d.write_seq;
    dirty.insert(device_id);
    return WriteResult{Outcome::kApplied, ++d.version, false};
  }

  absl::StatusOr<DeviceShadow> Load(const std::string& device_id) override {
    if (down) {
      return absl::UnavailableError("redis down");
    }
    auto it = devices.find(device_id);
    if (it == devices.end()) {
      return DecodeHash(device_id, {});
    }
    return Decode(device_id, it->second);
  }

  absl::Status Restore(const DeviceShadow& durable) override {
    ++restores;
    const bool existed = devices.contains(durable.device_id);
    Device& d = devices[durable.device_id];
    FieldValues fields;
    for (const auto& [id, service] : durable.services) {
      AppendSideFields(id, service.reported, false, fields);
      AppendSideFields(id, service.desired, true, fields);
    }
    bool changed = false;
    for (const auto& [f, v] : fields) {
      auto it = d.fields.find(f);
      if (it == d.fields.end() || StampOf(v) > StampOf(it->second)) {
        d.fields[f] = v;
        changed = true;
      }
    }
    d.tenant = durable.tenant_id;
    d.version = std::max(d.version, durable.version) + (existed && changed ? 1 : 0);
    return absl::OkStatus();
  }

  absl::StatusOr<bool> RecordPropertySet(const std::string& device_id, const std::string&,
                                         const std::string& message_id,
                                         const PropertySetRecord& record) override {
    if (!seen.insert(device_id + ":" + message_id).second) {
      return false;
    }
    devices[device_id].ps = record;
    return true;
  }

  absl::StatusOr<bool> IsDone(const std::string& key) override {
    if (down) {
      return absl::UnavailableError("redis down");
    }
    return done.contains(key);
  }
  absl::Status MarkDone(const std::string& key, std::chrono::seconds) override {
    done.insert(key);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<DeviceShadow>> ClaimDirty(size_t max,
                                                       std::chrono::milliseconds) override {
    std::vector<DeviceShadow> out;
    for (const std::string& id : dirty) {
      if (out.size() == max) {
        break;
      }
      out.push_back(Decode(id, devices[id]));
    }
    for (const auto& s : out) {
      dirty.erase(s.device_id);
      claimed.insert(s.device_id);
    }
    return out;
  }
  absl::Status AckFlushed(const std::vector<DeviceShadow>& flushed) override {
    for (const auto& s : flushed) {
      claimed.erase(s.device_id);
      if (devices[s.device_id].write_seq != s.write_seq) {
        dirty.insert(s.device_id);
      }
    }
    return absl::OkStatus();
  }
  absl::Status ReleaseClaims(const std::vector<DeviceShadow>& claims) override {
    for (const auto& s : claims) {
      claimed.erase(s.device_id);
      dirty.insert(s.device_id);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<bool> HasMarker() override { return marker; }
  absl::Status SetMarker() override {
    marker = true;
    locked = false;
    return absl::OkStatus();
  }
  absl::StatusOr<bool> TryLockRebuild(std::chrono::milliseconds) override {
    if (locked) {
      return false;
    }
    locked = true;
    return true;
  }
  absl::Status UnlockRebuild() override {
    locked = false;
    return absl::OkStatus();
  }

  static DeviceShadow Decode(const std::string& id, const Device& d) {
    FieldValues hash(d.fields.begin(), d.fields.end());
    hash.emplace_back("v", std::to_string(d.version));
    hash.emplace_back("t", d.tenant);
    hash.emplace_back("w", std::to_string(d.write_seq));
    if (d.ps) {
      hash.emplace_back("ps", PropertySetToJson(*d.ps).dump());
    }
    return DecodeHash(id, hash);
  }

  std::map<std::string, Device> devices;
  std::set<std::string> seen;
  std::set<std::string> done;
  std::set<std::string> dirty;
  std::set<std::string> claimed;
  bool marker = true;
  bool locked = false;
  bool down = false;
  int restores = 0;
};

class FakeDurable final : public DurableStore {
 public:
  absl::Status WriteReported(const std::vector<DeviceShadow>& shadows) override {
    if (down) {
      return absl::UnavailableError("postgres down");
    }
    for (const DeviceShadow& s : shadows) {
      DeviceShadow& row = rows[s.device_id];
      row.device_id = s.device_id;
      row.tenant_id = s.tenant_id;
      row.version = s.version;
      row.exists = true;
      for (const auto& [id, service] : s.services) {
        row.services[id].reported = service.reported;
      }
    }
    ++batches;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<DeviceShadow>> Load(const std::string& device_id) override {
    if (down) {
      return absl::UnavailableError("postgres down");
    }
    auto it = rows.find(device_id);
    return it == rows.end() ? std::nullopt : std::optional<DeviceShadow>(it->second);
  }
  absl::StatusOr<std::vector<DeviceShadow>> Scan(const std::string& after, size_t limit) override {
    if (down) {
      return absl::UnavailableError("postgres down");
    }
    std::vector<DeviceShadow> out;
    for (auto it = rows.upper_bound(after); it != rows.end() && out.size() < limit; ++it) {
      out.push_back(it->second);
    }
    return out;
  }
  absl::Status UpdateDesired(const std::string& device_id, const std::string& tenant_id,
                             const DesiredApply& apply) override {
    if (down) {
      return absl::UnavailableError("postgres down");
    }
    std::map<std::string, ServiceShadow> services;
    if (auto it = rows.find(device_id); it != rows.end()) {
      services = it->second.services;
    }
    auto version = apply(services);
    if (!version.ok()) {
      return version.status();
    }
    DeviceShadow& row = rows[device_id];
    row.device_id = device_id;
    row.tenant_id = tenant_id;
    row.exists = true;
    row.version = std::max(row.version, *version);
    for (const auto& [id, service] : services) {
      row.services[id].desired = service.desired;
    }
    return absl::OkStatus();
  }

  std::map<std::string, DeviceShadow> rows;
  bool down = false;
  int batches = 0;
};

std::shared_ptr<const thing_model::CompiledModel> SmartMeter() {
  std::ifstream in(IOT_TESTDATA_DIR "/smart_meter_product.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto product = thing_model::ParseProductModel(ss.str());
  EXPECT_TRUE(product.ok()) << product.status();
  return product->model;
}

class FakeDirectory final : public DeviceDirectory {
 public:
  absl::StatusOr<DeviceInfo> Find(const std::string& device_id) override {
    if (device_id == "dev-a" || device_id == "dev-b") {
      return DeviceInfo{device_id, device_id == "dev-a" ? "tenant-a" : "tenant-b", "smartmeter01",
                        model};
    }
    return absl::NotFoundError("no device " + device_id);
  }
  std::shared_ptr<const thing_model::CompiledModel> model = SmartMeter();
};

class FakePublisher final : public DevicePublisher {
 public:
  absl::StatusOr<bool> PublishPropertySet(const std::string&, const std::string& device_id,
                                          const std::string& request_id,
                                          const std::string& payload) override {
    if (failing) {
      return absl::UnavailableError("gateway down");
    }
    sent.push_back({device_id, request_id, json::parse(payload)});
    return online.contains(device_id);
  }
  struct Sent {
    std::string device_id;
    std::string request_id;
    json payload;
  };
  std::vector<Sent> sent;
  std::set<std::string> online;
  bool failing = false;
};

class ShadowServiceTest : public ::testing::Test {
 protected:
  ShadowServiceTest()
      : service_(live_, durable_, directory_, publisher_,
                 std::make_shared<ShadowMetrics>(registry_), ShadowOptions{.flush_batch = 2}) {}

  absl::Status SendReport(const std::string& device, const json& properties,
                          const std::string& message_id, const std::string& event_time = {}) {
    json entry = {{"service_id", "meter"}, {"properties", properties}};
    if (!event_time.empty()) {
      entry["event_time"] = event_time;
    }
    return service_
        .ReportProperties(
            {iot::shadow::Report{message_id, device == "dev-a" ? "tenant-a" : "tenant-b", device,
                                 json::array({entry}).dump(), 1000}})
        .status();
  }

  double Rejected(const std::string& reason) {
    for (const auto& family : registry_.Collect()) {
      if (family.name != "iot_shadow_rejected_records_total") {
        continue;
      }
      for (const auto& metric : family.metric) {
        for (const auto& label : metric.label) {
          if (label.name == "reason" && label.value == reason) {
            return metric.counter.value;
          }
        }
      }
    }
    return 0;
  }

  absl::StatusOr<ShadowView> Desire(const json& properties, std::optional<int64_t> version = {},
                                    const std::string& tenant = "tenant-a") {
    return service_.UpdateDesired(caller(tenant), "dev-a",
                                  {DesiredUpdate{"meter", properties, version}});
  }

  static common::Principal caller(const std::string& tenant) {
    return common::Principal{tenant, common::Role::kOperator, "k", false};
  }

  prometheus::Registry registry_;
  std::shared_ptr<FakeLive> live_ = std::make_shared<FakeLive>();
  std::shared_ptr<FakeDurable> durable_ = std::make_shared<FakeDurable>();
  std::shared_ptr<FakeDirectory> directory_ = std::make_shared<FakeDirectory>();
  std::shared_ptr<FakePublisher> publisher_ = std::make_shared<FakePublisher>();
  ShadowService service_;
};

TEST_F(ShadowServiceTest, DesiredIsValidatedAgainstTheModelNamingTheField) {
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"voltage", 1}}, "shadow[0].desired.voltage"},
      {{{"report_interval", 0}}, "shadow[0].desired.report_interval"},
      {{{"relay_state", 1}}, "shadow[0].desired.relay_state"},
      {{{"x.y", 1}}, "shadow[0].desired.x.y"},
      {json::object(), "shadow[0].desired"},
      {json::array(), "shadow[0].desired"},
  };
  for (const auto& [desired, field] : cases) {
    auto result = Desire(desired);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << desired.dump();
    EXPECT_EQ(common::FieldOf(result.status()), field) << result.status();
  }
  auto unknown = service_.UpdateDesired(caller("tenant-a"), "dev-a",
                                        {DesiredUpdate{"nope", {{"a", 1}}, std::nullopt}});
  EXPECT_EQ(common::FieldOf(unknown.status()), "shadow[0].service_id");
  auto mixed = service_.UpdateDesired(
      caller("tenant-a"), "dev-a",
      {DesiredUpdate{"meter", {{"relay_state", "ON"}}, 1}, DesiredUpdate{"meter", {{"a", 1}}, 2}});
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(durable_->rows.empty()) << "nothing written";
}

TEST_F(ShadowServiceTest, AnotherTenantsOrAnUnknownDeviceIsNotFound) {
  EXPECT_EQ(Desire({{"relay_state", "ON"}}, {}, "tenant-b").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(service_.Show(caller("tenant-b"), "dev-a", "").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(service_.Show(caller("tenant-a"), "ghost", "").status().code(),
            absl::StatusCode::kNotFound);
  auto mine = service_.Show(caller("tenant-a"), "dev-a", "");
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->service_ids, std::vector<std::string>{"meter"});
}

TEST_F(ShadowServiceTest, DesiredIsDurableAndItsDeltaPushed) {
  publisher_->online.insert("dev-a");
  ASSERT_TRUE(SendReport("dev-a", {{"relay_state", "ON"}, {"report_interval", 60}}, "m1").ok());
  auto updated = Desire({{"relay_state", "OFF"}, {"report_interval", 60}}, 1);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->shadow.version, 2);
  ASSERT_EQ(durable_->rows["dev-a"].services["meter"].desired.properties.size(), 2U);
  ASSERT_EQ(publisher_->sent.size(), 1U);
  EXPECT_TRUE(publisher_->sent[0].request_id.starts_with("shadow-"));
  EXPECT_EQ(publisher_->sent[0].payload["services"][0]["properties"],
            json({{"relay_state", "OFF"}}));

  // Stale version: ABORTED naming the current one; nothing pushed.
  auto stale = Desire({{"relay_state", "ON"}}, 1);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_NE(std::string(stale.status().message()).find("current version is 2"), std::string::npos);
  EXPECT_EQ(publisher_->sent.size(), 1U);

  // A failing gateway does not fail the update.
  publisher_->failing = true;
  EXPECT_TRUE(Desire({{"report_interval", 10}}).ok());
  // PostgreSQL down: the desired update fails (it must be durable).
  durable_->down = true;
  EXPECT_EQ(Desire({{"report_interval", 11}}).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ShadowServiceTest, ConnectPushesPendingDeltaOnceEvenIfRedelivered) {
  ASSERT_TRUE(Desire({{"report_interval", 30}}).ok());
  EXPECT_EQ(publisher_->sent.size(), 1U);  // attempted; the device was offline
  publisher_->online.insert("dev-a");
  const Presence connect{"p1", "tenant-a", "dev-a", true};
  ASSERT_TRUE(service_.ReportPresence({connect, connect}).ok());
  ASSERT_TRUE(service_.ReportPresence({Presence{"p2", "tenant-a", "dev-a", false}}).ok());
  EXPECT_EQ(publisher_->sent.size(), 2U);
  // Caught up: nothing to push on the next connect.
  ASSERT_TRUE(SendReport("dev-a", {{"report_interval", 30}}, "m1").ok());
  ASSERT_TRUE(service_.ReportPresence({Presence{"p3", "tenant-a", "dev-a", true}}).ok());
  EXPECT_EQ(publisher_->sent.size(), 2U);
}

TEST_F(ShadowServiceTest, BadReportsAreRejectedAloneAndTheRestIsMerged) {
  const std::string good = R"([{"service_id":"meter","properties":{"voltage":230}}])";
  auto rejected = service_.ReportProperties({
      iot::shadow::Report{"m1", "tenant-a", "dev-a", "not json", 1},
      iot::shadow::Report{"m2", "tenant-a", "dev-a", R"({"services":[]})", 1},
      iot::shadow::Report{"m3", "tenant-a", "dev-a",
                          R"([{"service_id":"meter","properties":{"a.b":1,"$x":null}}])", 1},
      iot::shadow::Report{"m4", "tenant-a", "", good, 1},
      iot::shadow::Report{"", "tenant-a", "dev-a", good, 1},
      iot::shadow::Report{"m6", "tenant-a", "dev-a", good, 1},
      // Deeper than device JSON may be (issue #15): refused before it is parsed.
      iot::shadow::Report{"m7", "tenant-a", "dev-a",
                          std::string(100'000, '[') + std::string(100'000, ']'), 1},
  });
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  ASSERT_EQ(rejected->size(), 6U);
  EXPECT_EQ((*rejected)[0].message_id, "m1");
  EXPECT_EQ((*rejected)[0].device_id, "dev-a");
  EXPECT_EQ((*rejected)[0].reason, "malformed");
  EXPECT_EQ((*rejected)[0].detail, "reports[0].services_json: not a JSON array of services");
  EXPECT_EQ((*rejected)[1].message_id, "m2");
  EXPECT_EQ((*rejected)[2].reason, "invalid_property");
  EXPECT_TRUE((*rejected)[2].detail.starts_with("reports[2].services_json: none of its 2"))
      << (*rejected)[2].detail;
  EXPECT_EQ((*rejected)[3].detail, "reports[3].device.device_id: is required");
  EXPECT_EQ((*rejected)[4].detail, "reports[4].message_id: is required");
  EXPECT_EQ((*rejected)[5].message_id, "m7");
  EXPECT_EQ((*rejected)[5].reason, "malformed");
  EXPECT_EQ((*rejected)[5].detail, "reports[6].services_json: JSON nested deeper than 72 levels");
  EXPECT_EQ(Rejected("malformed"), 5);
  EXPECT_EQ(Rejected("invalid_property"), 1);
  // The good one of the batch is merged.
  auto shown = service_.Show(caller("tenant-a"), "dev-a", "");
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->shadow.services["meter"].reported.properties.at("voltage").value, 230);
  // Refused properties of an otherwise good report are dropped, the rest merged.
  ASSERT_TRUE(SendReport("dev-a", {{"a.b", 1}, {"$x", 2}, {"voltage", 231}}, "m7").ok());
  shown = service_.Show(caller("tenant-a"), "dev-a", "");
  EXPECT_EQ(shown->shadow.services["meter"].reported.properties.size(), 1U);
  // Redis down: the gateway must retry.
  live_->down = true;
  EXPECT_EQ(SendReport("dev-a", {{"voltage", 232}}, "m8").code(), absl::StatusCode::kUnavailable);
}

TEST_F(ShadowServiceTest, ARedeliveredReportIsMergedOnceEvenWithTheSameTimestamp) {
  // Two reports stamped the same second: the later wins. A redelivery of the earlier one must
  // neither roll the value back nor count as a new version.
  const std::string t = "20261126T100000Z";
  ASSERT_TRUE(SendReport("dev-a", {{"voltage", 1}}, "m1", t).ok());
  ASSERT_TRUE(SendReport("dev-a", {{"voltage", 2}}, "m2", t).ok());
  ASSERT_TRUE(SendReport("dev-a", {{"voltage", 1}}, "m1", t).ok());
  auto shown = service_.Show(caller("tenant-a"), "dev-a", "");
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->shadow.services["meter"].reported.properties.at("voltage").value, 2);
  EXPECT_EQ(shown->shadow.version, 2);
}

TEST_F(ShadowServiceTest, PropertySetAnswersAreRecordedOnceAndMalformedOnesRejected) {
  ASSERT_TRUE(service_.CompletePropertySet("r1", "tenant-a", "dev-a", "shadow-1", "{}", 5).ok());
  auto again = service_.CompletePropertySet("r1", "tenant-a", "dev-a", "shadow-1", "{}", 5);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty());
  auto missing = service_.CompletePropertySet("r2", "tenant-a", "dev-a", "", "{}", 5);
  ASSERT_TRUE(missing.ok());
  ASSERT_EQ(missing->size(), 1U);
  EXPECT_EQ((*missing)[0].detail, "request_id: is required");
  auto no_device = service_.ReportPresence(
      {Presence{"p1", "tenant-a", "", true}, Presence{"p2", "t", "x", false}});
  ASSERT_TRUE(no_device.ok());
  ASSERT_EQ(no_device->size(), 1U);
  EXPECT_EQ((*no_device)[0].detail, "events[0].device.device_id: is required");
}

TEST_F(ShadowServiceTest, WriteBehindRetriesAfterAFailedBatchAndCoalesces) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(SendReport("dev-a", {{"voltage", 200 + i}}, "a" + std::to_string(i)).ok());
    ASSERT_TRUE(SendReport("dev-b", {{"voltage", 100 + i}}, "b" + std::to_string(i)).ok());
  }
  durable_->down = true;
  EXPECT_FALSE(service_.FlushOnce().ok());
  EXPECT_EQ(live_->dirty.size(), 2U) << "released for the next attempt";
  durable_->down = false;
  EXPECT_EQ(*service_.FlushOnce(), 2U);
  EXPECT_EQ(durable_->batches, 1) << "ten reports, one batch";
  EXPECT_EQ(durable_->rows["dev-a"].services["meter"].reported.properties["voltage"].value, 204);
  EXPECT_EQ(*service_.FlushOnce(), 0U);
}

TEST_F(ShadowServiceTest, LostLiveStoreIsRebuiltAndFailedRebuildsRetry) {
  ASSERT_TRUE(SendReport("dev-a", {{"voltage", 230}}, "m1", "20261126T100000Z").ok());
  ASSERT_TRUE(Desire({{"relay_state", "OFF"}}).ok());
  ASSERT_TRUE(service_.FlushOnce().ok());
  live_->devices.clear();
  live_->marker = false;

  durable_->down = true;
  EXPECT_FALSE(service_.RebuildIfFlushed().ok());
  EXPECT_FALSE(live_->locked) << "a failed rebuild releases its lock";
  durable_->down = false;
  // A newer report arrives before the rebuild: it wins over the durable value.
  ASSERT_TRUE(SendReport("dev-a", {{"voltage", 240}}, "m2", "20261126T110000Z").ok());
  EXPECT_EQ(*service_.RebuildIfFlushed(), true);
  EXPECT_TRUE(live_->marker);
  auto shown = service_.Show(caller("tenant-a"), "dev-a", "");
  ASSERT_TRUE(shown.ok());
  const ServiceShadow& meter = shown->shadow.services["meter"];
  EXPECT_EQ(meter.reported.properties.at("voltage").value, 240);
  EXPECT_EQ(meter.desired.properties.at("relay_state").value, "OFF");
  EXPECT_GE(shown->shadow.version, 2);
  EXPECT_EQ(*service_.RebuildIfFlushed(), false);
}

}  // namespace
}  // namespace iot::shadow
