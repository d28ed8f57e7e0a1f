#include "polling.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "scenarios.h"

namespace iotbench {
namespace {

using Json = nlohmann::json;

constexpr auto kCallTimeout = std::chrono::seconds(30);
const std::string kHistory = "iot.rule_forwarding.v1.History";
const std::string kShadows = "iot.shadow.v1.Shadows";

}  // namespace

PollResult PollDevices(const BenchContext& context, std::size_t devices,
                       const std::function<absl::StatusOr<bool>(std::size_t)>& check,
                       Clock::time_point started) {
  const Clock::duration stall = context.Stall();
  const Clock::time_point deadline = context.Deadline();
  std::vector<bool> done(devices);
  PollResult result;
  auto last_progress = Clock::now();
  while (true) {
    // UNAVAILABLE (a service or its Redis restarting, a pooled connection that broke) is what
    // an application retries: the device is checked again next pass, within stall and deadline.
    std::string transient;
    std::mutex mutex;
    std::atomic<std::size_t> next{0};
    std::size_t progress = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (std::size_t i = next.fetch_add(1); i < devices; i = next.fetch_add(1)) {
          if (done[i]) {
            continue;
          }
          auto complete = check(i);
          const std::lock_guard lock(mutex);
          if (!complete.ok() && complete.status().code() == absl::StatusCode::kUnavailable) {
            ++result.retried;
            if (transient.empty()) {
              transient = Describe(complete.status());
            }
          } else if (!complete.ok()) {
            if (result.first_error.empty()) {
              result.first_error = Describe(complete.status());
            }
          } else if (*complete) {
            done[i] = true;
            ++progress;
          }
        }
      });
    }
    for (auto& thread : threads) {
      thread.join();
    }
    result.complete += progress;
    if (progress > 0) {
      last_progress = Clock::now();
      result.seconds = SecondsBetween(started, last_progress);
    }
    if (result.complete == devices || Clock::now() >= deadline ||
        Clock::now() - last_progress >= stall || !result.first_error.empty()) {
      if (result.first_error.empty() && result.complete < devices && !transient.empty()) {
        result.first_error = transient;  // still failing when the time was up
      }
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

Json PollSummary(const PollResult& result, const std::string& call, std::size_t devices,
                 std::size_t per_device, const std::string& what) {
  if (!result.first_error.empty()) {
    return NotAvailable(call + " failed: " + result.first_error);
  }
  Json out = {{"devices_complete", result.complete}, {"devices", devices}};
  if (result.complete == devices) {
    out["complete_after_s"] = Round(result.seconds, 3);
    out[what + "_per_s"] =
        result.seconds > 0 ? Json(Round(static_cast<double>(devices * per_device) / result.seconds))
                           : NotAvailable("no time measured");
  }
  return out;
}

DeviceDataReader::DeviceDataReader(const BenchContext& context)
    : history_(context.config.rule_forwarding_addr, context.config.api_key),
      shadow_(context.config.shadow_addr, context.config.api_key),
      service_id_(context.service_id) {}

absl::Status DeviceDataReader::CheckHistory() const {
  return history_.Check(kHistory, "ListPropertyHistory");
}

absl::Status DeviceDataReader::CheckShadow() const {
  return shadow_.Check(kShadows, "ShowDeviceShadow");
}

absl::StatusOr<std::map<std::int64_t, int>> DeviceDataReader::HistorySeqs(
    const std::string& device_id, const std::string& since, std::int64_t first,
    std::int64_t end) const {
  std::map<std::int64_t, int> rows;
  std::string marker;
  do {
    auto page = history_.Call(kHistory, "ListPropertyHistory",
                              {{"device_id", device_id},
                               {"service_id", service_id_},
                               {"property", "seq"},
                               {"start_time", since},
                               {"limit", 1000},
                               {"marker", marker}},
                              kCallTimeout);
    if (!page.ok()) {
      return page.status();
    }
    for (const auto& row : (*page)["values"]) {
      const Json value = Json::parse(row.value("value_json", ""), nullptr, false);
      if (value.is_number_integer() && value.get<std::int64_t>() >= first &&
          value.get<std::int64_t>() < end) {
        ++rows[value.get<std::int64_t>()];
      }
    }
    marker = page->value("next_marker", "");
  } while (!marker.empty());
  return rows;
}

absl::StatusOr<std::int64_t> DeviceDataReader::ShadowSeq(const std::string& device_id) const {
  auto response =
      shadow_.Call(kShadows, "ShowDeviceShadow",
                   {{"device_id", device_id}, {"service_id", service_id_}}, kCallTimeout);
  if (!response.ok()) {
    return response.status();
  }
  for (const auto& data : (*response)["shadow"]) {
    const Json reported = Json::parse(
        data.value("reported", Json::object()).value("properties_json", ""), nullptr, false);
    if (reported.is_object()) {
      return reported.value("seq", std::int64_t{-1});
    }
  }
  return -1;
}

}  // namespace iotbench
