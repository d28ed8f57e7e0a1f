#include "iot/device_gateway/presence.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "iot/testing/process.h"

namespace iot::device_gateway {
namespace {

TEST(ParsePresenceTest, ReadsThePluginsEvents) {
  auto event = ParsePresence(
      "$iot/presence/p1_n1",
      R"({"event":"connected","device_id":"p1_n1","client_id":"p1_n1_0_0_2026112617","time":"2026-11-26T17:42:48.123Z","reason":"connect","seq":4})");
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->device_id, "p1_n1");
  EXPECT_TRUE(event->online);
  EXPECT_EQ(event->time, "2026-11-26T17:42:48.123Z");
  auto gone = ParsePresence("$iot/presence/p1_n1",
                            R"({"event":"disconnected","time":"2026-11-26T17:43:00.000Z"})");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->online);
}

TEST(ParsePresenceTest, RejectsBadInputNamingTheField) {
  struct Case {
    const char* topic;
    const char* payload;
    const char* field;
  };
  const Case cases[] = {
      {"$iot/presence/", R"({"event":"connected","time":"t"})", "topic"},
      {"$oc/devices/d/sys/x", R"({"event":"connected","time":"t"})", "topic"},
      {"$iot/presence/d", "not json", "payload"},
      {"$iot/presence/d", R"({"event":"maybe","time":"t"})", "event"},
      {"$iot/presence/d", R"({"event":"connected"})", "time"},
      {"$iot/presence/d", R"({"event":"connected","device_id":"other","time":"t"})", "device_id"},
  };
  for (const Case& c : cases) {
    auto event = ParsePresence(c.topic, c.payload);
    ASSERT_FALSE(event.ok()) << c.payload;
    EXPECT_EQ(std::string(event.status().message()).rfind(c.field, 0), 0u)
        << event.status().message();
  }
}

/// A sink that fails with UNAVAILABLE `failures` times, then records.
class FakeSink final : public DeviceStatusSink {
 public:
  explicit FakeSink(int failures) : failures_(failures) {}
  absl::Status ReportPresence(const PresenceEvent& event) override {
    if (failures_-- > 0) {
      return absl::UnavailableError("thing-model down");
    }
    if (event.device_id == "gone") {
      return absl::NotFoundError("device 'gone' not found");
    }
    std::lock_guard lock(mu_);
    seen_.push_back(event.device_id + (event.online ? "+" : "-"));
    return absl::OkStatus();
  }
  std::vector<std::string> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  std::atomic<int> failures_;
  std::mutex mu_;
  std::vector<std::string> seen_;
};

TEST(PresenceForwarderTest, RetriesTransientFailuresInOrderAndDropsFinalOnes) {
  auto sink = std::make_shared<FakeSink>(3);
  prometheus::Registry registry;
  PresenceForwarder forwarder(sink, registry);
  ASSERT_TRUE(forwarder.Submit({.device_id = "a", .online = true, .time = "t1", .reason = {}}));
  ASSERT_TRUE(forwarder.Submit({.device_id = "gone", .online = true, .time = "t2", .reason = {}}));
  ASSERT_TRUE(forwarder.Submit({.device_id = "a", .online = false, .time = "t3", .reason = {}}));
  ASSERT_TRUE(
      iot::testing::WaitUntil([&] { return sink->seen().size() == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(sink->seen(), (std::vector<std::string>{"a+", "a-"}));
  forwarder.Stop();
  EXPECT_FALSE(forwarder.Submit({.device_id = "a", .online = true, .time = "t4", .reason = {}}));
}

TEST(PresenceForwarderTest, FullQueueBlocksTheProducerInsteadOfGrowing) {
  auto sink = std::make_shared<FakeSink>(1'000'000);  // down for the whole test
  prometheus::Registry registry;
  PresenceForwarder forwarder(sink, registry, /*capacity=*/2);
  ASSERT_TRUE(forwarder.Submit({.device_id = "a", .online = true, .time = "1", .reason = {}}));
  ASSERT_TRUE(forwarder.Submit({.device_id = "b", .online = true, .time = "2", .reason = {}}));
  std::atomic<bool> third_done{false};
  std::thread producer([&] {
    forwarder.Submit({.device_id = "c", .online = true, .time = "3", .reason = {}});
    third_done = true;
  });
  EXPECT_FALSE(
      iot::testing::WaitUntil([&] { return third_done.load(); }, std::chrono::milliseconds(300)));
  EXPECT_EQ(forwarder.queued(), 2u);
  forwarder.Stop(std::chrono::milliseconds(100));  // releases the blocked producer
  producer.join();
  EXPECT_TRUE(third_done);
}

}  // namespace
}  // namespace iot::device_gateway
