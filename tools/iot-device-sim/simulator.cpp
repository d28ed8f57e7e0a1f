#include "simulator.h"

#include <fmt/format.h>
#include <mosquitto.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "iot/common/crypto.h"
#include "model_values.h"

namespace devsim {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using iot::thing_model::ProductModel;

constexpr auto kRetryDelay = std::chrono::seconds(1);
constexpr auto kConnackTimeout = std::chrono::seconds(10);
constexpr auto kMaxPollWait = std::chrono::milliseconds(50);
constexpr auto kMiscInterval = std::chrono::seconds(1);
constexpr int kMaxPrintedErrors = 20;

std::mutex g_print_mutex;
int g_printed_errors = 0;

void PrintError(SimStats& stats, const std::string& message) {
  stats.errors.fetch_add(1);
  const std::lock_guard lock(g_print_mutex);
  if (g_printed_errors < kMaxPrintedErrors) {
    std::cerr << "iot-device-sim: " << message << "\n";
  } else if (g_printed_errors == kMaxPrintedErrors) {
    std::cerr << "iot-device-sim: (more errors not printed; see the summary)\n";
  }
  ++g_printed_errors;
}

Clock::duration Seconds(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

/// The text after `marker` in `suffix` when `suffix` starts with it.
bool StripPrefix(std::string_view& text, std::string_view prefix) {
  if (text.substr(0, prefix.size()) != prefix) {
    return false;
  }
  text.remove_prefix(prefix.size());
  return true;
}

class Device {
 public:
  Device(const SimOptions& options, std::shared_ptr<const ProductModel> model,
         DeviceCredentials credentials, SimStats& stats, std::uint64_t seed)
      : options_(options),
        model_(std::move(model)),
        credentials_(std::move(credentials)),
        stats_(stats),
        rng_(seed),
        values_(model_, options.report_interval_seconds, options.interval_property, rng_),
        topic_prefix_("$oc/devices/" + credentials_.device_id + "/") {}

  ~Device() { DestroyClient(); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  [[nodiscard]] bool finished() const { return finished_; }
  [[nodiscard]] int socket() const { return mosq_ != nullptr ? mosquitto_socket(mosq_) : -1; }
  [[nodiscard]] bool want_write() const { return mosq_ != nullptr && mosquitto_want_write(mosq_); }
  [[nodiscard]] Clock::time_point next_due() const { return next_due_; }

  /// Reads and writes what poll() found the socket ready for. mosquitto_loop() is not used: it
  /// select()s, which fails for descriptors beyond FD_SETSIZE (many devices).
  void Loop(short revents) {
    if (mosq_ == nullptr || socket() < 0) {
      return;
    }
    int rc = MOSQ_ERR_SUCCESS;
    if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
      rc = mosquitto_loop_read(mosq_, 1);
    }
    if (rc == MOSQ_ERR_SUCCESS && (revents & POLLOUT) != 0) {
      rc = mosquitto_loop_write(mosq_, 1);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
      ConnectionLost(rc);
    }
  }

  void Misc() {
    if (mosq_ != nullptr && socket() >= 0) {
      mosquitto_loop_misc(mosq_);
    }
  }

  /// Does whatever is due at `now`; `stopping` asks the device to finish.
  void Tick(Clock::time_point now, bool stopping) {
    if (finished_) {
      return;
    }
    next_due_ = now + kMaxPollWait;
    const bool done_reporting = stopping || (options_.count > 0 && reports_sent_ >= options_.count);
    if (!connected_) {
      if (socket() >= 0) {  // waiting for the CONNACK
        if (now - connect_started_ > kConnackTimeout) {
          PrintError(stats_, credentials_.device_id + ": no CONNACK within 10 s");
          DestroyClient();
          ScheduleRetry(now);
        }
        return;
      }
      if (done_reporting && (ever_connected_ || stopping)) {
        Finish(now);
        return;
      }
      if (now >= next_connect_) {
        Connect(now);
      }
      next_due_ = std::min(next_due_, next_connect_);
      return;
    }

    if (!greeted_) {
      greeted_ = true;
      SendGreetings();
    }
    while (!pending_.empty() && pending_.front().due <= now) {
      Publish(pending_.front().topic, pending_.front().payload);
      stats_.*(pending_.front().counter) += 1;
      pending_.pop_front();
    }
    if (!pending_.empty()) {
      next_due_ = std::min(next_due_, pending_.front().due);
    }
    if (!done_reporting) {
      if (now >= next_report_) {
        SendReport();
        next_report_ += Seconds(options_.report_interval_seconds);
        if (next_report_ < now) {
          next_report_ = now + Seconds(options_.report_interval_seconds);
        }
      }
      next_due_ = std::min(next_due_, next_report_);
      return;
    }
    if (finishing_since_ == Clock::time_point{}) {
      finishing_since_ = now;
    }
    const bool drained = inflight_reports_.empty() && pending_.empty();
    if (drained || now - finishing_since_ > Seconds(options_.drain_seconds)) {
      Finish(now);
    }
  }

  // libmosquitto callbacks (on this device's worker thread, inside Loop()).
  void OnConnect(int rc) {
    if (rc != 0) {
      stats_.connect_failures.fetch_add(1);
      PrintError(stats_, fmt::format("{}: connection refused: {}", credentials_.device_id,
                                     mosquitto_connack_string(rc)));
      ScheduleRetry(Clock::now());
      return;
    }
    connected_ = true;
    attempts_ = 0;
    stats_.connects.fetch_add(1);
    if (!ever_connected_) {
      ever_connected_ = true;
      stats_.connected.fetch_add(1);
      next_report_ = Clock::now();
    }
  }

  /// The connection failed (read/write error, CONNACK refusal): drop the client; Tick()
  /// reconnects after kRetryDelay.
  void ConnectionLost(int rc) {
    OnDisconnect(rc == MOSQ_ERR_CONN_REFUSED ? 0 : rc);
    if (!inflight_reports_.empty()) {
      PrintError(stats_, fmt::format("{}: {} reports lost with the connection",
                                     credentials_.device_id, inflight_reports_.size()));
      inflight_reports_.clear();
    }
    DestroyClient();
    ScheduleRetry(Clock::now());
  }

  void OnDisconnect(int rc) {
    const bool was_connected = connected_;
    connected_ = false;
    // QoS 1 reports in flight are resent by libmosquitto on reconnect; keep counting them.
    if (rc != 0 && was_connected && !finished_) {
      stats_.disconnects.fetch_add(1);
      PrintError(stats_, fmt::format("{}: connection lost: {}", credentials_.device_id,
                                     mosquitto_strerror(rc)));
    }
  }

  void OnPublish(int mid) {
    if (inflight_reports_.erase(mid) > 0) {
      stats_.reports_acked.fetch_add(1);
    }
  }

  void OnMessage(const mosquitto_message& message) {
    std::string_view suffix(message.topic);
    const std::string payload(static_cast<const char*>(message.payload),
                              static_cast<std::size_t>(std::max(message.payloadlen, 0)));
    if (!StripPrefix(suffix, topic_prefix_)) {
      stats_.other_downlink.fetch_add(1);
      return;
    }
    if (StripPrefix(suffix, "sys/commands/request_id=")) {
      AnswerCommand(std::string(suffix), payload);
    } else if (StripPrefix(suffix, "sys/properties/set/request_id=")) {
      AnswerPropertySet(std::string(suffix), payload);
    } else if (StripPrefix(suffix, "sys/properties/get/request_id=")) {
      AnswerPropertyGet(std::string(suffix), payload);
    } else if (StripPrefix(suffix, "sys/shadow/get/response/")) {
      stats_.shadow_responses.fetch_add(1);
    } else {
      stats_.other_downlink.fetch_add(1);
    }
  }

 private:
  struct Pending {
    Clock::time_point due;
    std::string topic;
    std::string payload;
    std::atomic<std::uint64_t> SimStats::*counter;
  };

  void Connect(Clock::time_point now) {
    DestroyClient();
    if (attempts_ >= options_.max_connect_attempts) {
      PrintError(stats_, fmt::format("{}: giving up after {} connection attempts",
                                     credentials_.device_id, attempts_));
      finished_ = true;
      return;
    }
    ++attempts_;
    const std::string hour = HourStamp(std::chrono::system_clock::now());
    const std::string client_id = fmt::format("{}_0_0_{}", credentials_.device_id, hour);
    mosq_ = mosquitto_new(client_id.c_str(), true, this);
    if (mosq_ == nullptr) {
      PrintError(stats_, credentials_.device_id + ": out of memory");
      finished_ = true;
      return;
    }
    mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(mosq_, 100);
    const std::string password = iot::common::HmacSha256Hex(hour, credentials_.secret);
    mosquitto_username_pw_set(mosq_, credentials_.device_id.c_str(), password.c_str());
    mosquitto_connect_callback_set(
        mosq_, [](mosquitto*, void* self, int rc) { static_cast<Device*>(self)->OnConnect(rc); });
    mosquitto_disconnect_callback_set(mosq_, [](mosquitto*, void* self, int rc) {
      static_cast<Device*>(self)->OnDisconnect(rc);
    });
    mosquitto_publish_callback_set(
        mosq_, [](mosquitto*, void* self, int mid) { static_cast<Device*>(self)->OnPublish(mid); });
    mosquitto_message_callback_set(mosq_,
                                   [](mosquitto*, void* self, const mosquitto_message* message) {
                                     static_cast<Device*>(self)->OnMessage(*message);
                                   });
    const int rc =
        mosquitto_connect(mosq_, options_.host.c_str(), options_.port, options_.keepalive_seconds);
    if (rc != MOSQ_ERR_SUCCESS) {
      stats_.connect_failures.fetch_add(1);
      ++tcp_failures_;
      PrintError(stats_,
                 fmt::format("{}: cannot connect to the broker at {}:{}: {}",
                             credentials_.device_id, options_.host, options_.port,
                             rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc)));
      if (!ever_connected_ && tcp_failures_ >= options_.max_connect_attempts) {
        stats_.broker_unreachable.store(true);
      }
      DestroyClient();
      ScheduleRetry(now);
      return;
    }
    connect_started_ = now;
  }

  void ScheduleRetry(Clock::time_point now) { next_connect_ = now + kRetryDelay; }

  void DestroyClient() {
    if (mosq_ != nullptr) {
      mosquitto_destroy(mosq_);
      mosq_ = nullptr;
    }
    connected_ = false;
  }

  void Finish(Clock::time_point now) {
    (void)now;
    if (!inflight_reports_.empty()) {
      PrintError(stats_, fmt::format("{}: {} reports not acknowledged", credentials_.device_id,
                                     inflight_reports_.size()));
      inflight_reports_.clear();
    }
    finished_ = true;
    if (mosq_ != nullptr && connected_) {
      mosquitto_disconnect(mosq_);  // written at once: we are not inside a callback
    }
    DestroyClient();
  }

  /// Publishes at QoS 1; the message id, or -1 on failure.
  int Publish(const std::string& topic, const std::string& payload) {
    int mid = 0;
    const int rc = mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                                     payload.data(), 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
      PrintError(stats_, fmt::format("{}: publish on {} failed: {}", credentials_.device_id, topic,
                                     mosquitto_strerror(rc)));
      return -1;
    }
    return mid;
  }

  void SendGreetings() {
    if (options_.shadow_get) {
      const Json body = {{"object_device_id", credentials_.device_id}};
      if (Publish(fmt::format("{}sys/shadow/get/request_id=sim-{}", topic_prefix_, NextId()),
                  body.dump()) >= 0) {
        stats_.shadow_gets_sent.fetch_add(1);
      }
    }
    if (!options_.message_up.empty()) {
      if (Publish(topic_prefix_ + "sys/messages/up", options_.message_up) >= 0) {
        stats_.messages_sent.fetch_add(1);
      }
    }
    if (!options_.event_type.empty()) {
      for (const auto& service : model_->services()) {
        if (const auto* event = service.FindEvent(options_.event_type); event != nullptr) {
          const Json body = {
              {"object_device_id", credentials_.device_id},
              {"services",
               Json::array({{{"service_id", service.service_id},
                             {"event_type", event->type},
                             {"event_time", IotdaTime(std::chrono::system_clock::now())},
                             {"paras", GenerateParas(event->paras, rng_)}}})}};
          if (Publish(topic_prefix_ + "sys/events/up", body.dump()) >= 0) {
            stats_.events_sent.fetch_add(1);
          }
          break;
        }
      }
    }
  }

  void SendReport() {
    const std::string now = IotdaTime(std::chrono::system_clock::now());
    Json services = Json::array();
    for (const auto& service : model_->services()) {
      Json properties = values_.Readable(service.service_id);
      if (properties.empty()) {
        continue;
      }
      services.push_back(
          {{"service_id", service.service_id}, {"properties", properties}, {"event_time", now}});
    }
    const Json body = {{"services", services}};
    const int mid = Publish(topic_prefix_ + "sys/properties/report", body.dump());
    ++reports_sent_;
    values_.Advance(rng_);
    if (mid >= 0) {
      stats_.reports_sent.fetch_add(1);
      inflight_reports_.insert(mid);
    }
  }

  bool SimulateFailure() {
    if (options_.failure_rate <= 0 ||
        !std::bernoulli_distribution(std::min(options_.failure_rate, 1.0))(rng_)) {
      return false;
    }
    stats_.simulated_failures.fetch_add(1);
    return true;
  }

  /// Queues an answer; returns when it goes out.
  Clock::time_point Respond(const std::string& topic, const Json& body,
                            std::atomic<std::uint64_t> SimStats::*counter) {
    const auto due = Clock::now() + std::chrono::milliseconds(options_.response_delay_ms);
    pending_.push_back(
        Pending{.due = due, .topic = topic, .payload = body.dump(), .counter = counter});
    return due;
  }

  void AnswerCommand(const std::string& request_id, const std::string& payload) {
    const Json request = Json::parse(payload, nullptr, false);
    std::string command;
    if (request.is_object() && request.contains("command_name") &&
        request["command_name"].is_string()) {
      command = request["command_name"].get<std::string>();
    }
    Json body = {
        {"result_code", 0}, {"response_name", command + "_response"}, {"paras", Json::object()}};
    if (SimulateFailure()) {
      body["result_code"] = 1;
      body["result_desc"] = "simulated failure";
    }
    Respond(topic_prefix_ + "sys/commands/response/request_id=" + request_id, body,
            &SimStats::commands_answered);
  }

  void AnswerPropertySet(const std::string& request_id, const std::string& payload) {
    const Json request = Json::parse(payload, nullptr, false);
    Json body = {{"result_code", 0}, {"result_desc", "success"}};
    std::size_t taken = 0;
    if (SimulateFailure()) {
      body = {{"result_code", 1}, {"result_desc", "simulated failure"}};
    } else if (request.is_object() && request.contains("services") &&
               request["services"].is_array()) {
      for (const auto& entry : request["services"]) {
        if (entry.is_object() && entry.contains("service_id") && entry["service_id"].is_string() &&
            entry.contains("properties") && entry["properties"].is_object()) {
          taken += values_.Set(entry["service_id"].get<std::string>(), entry["properties"]);
        }
      }
    } else {
      body = {{"result_code", 1}, {"result_desc", "malformed property set"}};
    }
    const auto answered =
        Respond(topic_prefix_ + "sys/properties/set/response/request_id=" + request_id, body,
                &SimStats::property_sets_answered);
    // As a device does: it reports its new values right after answering, so that the platform
    // (the shadow's reported side) sees them at once rather than at the next periodic report.
    if (taken > 0) {
      next_report_ = std::min(next_report_, answered);
    }
  }

  void AnswerPropertyGet(const std::string& request_id, const std::string& payload) {
    const Json request = Json::parse(payload, nullptr, false);
    std::string service_id;
    if (request.is_object() && request.contains("service_id") &&
        request["service_id"].is_string()) {
      service_id = request["service_id"].get<std::string>();
    }
    Json body;
    if (SimulateFailure()) {
      body = {{"result_code", 1}, {"result_desc", "simulated failure"}};
    } else {
      Json services = Json::array();
      for (const auto& service : model_->services()) {
        if (service_id.empty() || service.service_id == service_id) {
          services.push_back({{"service_id", service.service_id},
                              {"properties", values_.Readable(service.service_id)}});
        }
      }
      body = {{"services", services}};
    }
    Respond(topic_prefix_ + "sys/properties/get/response/request_id=" + request_id, body,
            &SimStats::property_gets_answered);
  }

  std::uint64_t NextId() { return ++ids_; }

  const SimOptions& options_;
  std::shared_ptr<const ProductModel> model_;
  DeviceCredentials credentials_;
  SimStats& stats_;
  std::mt19937_64 rng_;
  DeviceValues values_;  ///< after rng_, which makes the initial values
  const std::string topic_prefix_;

  mosquitto* mosq_ = nullptr;
  bool connected_ = false;
  bool ever_connected_ = false;
  bool greeted_ = false;
  bool finished_ = false;
  int attempts_ = 0;
  int tcp_failures_ = 0;
  int reports_sent_ = 0;
  std::uint64_t ids_ = 0;
  Clock::time_point connect_started_{};
  Clock::time_point next_connect_{};
  Clock::time_point next_report_{};
  Clock::time_point next_due_{};
  Clock::time_point finishing_since_{};
  std::set<int> inflight_reports_;
  std::deque<Pending> pending_;
};

void Worker(std::vector<std::unique_ptr<Device>>& devices, const std::atomic<bool>& stop) {
  std::vector<pollfd> fds;
  std::vector<Device*> polled;
  auto last_misc = Clock::now();
  while (true) {
    const auto now = Clock::now();
    const bool stopping = stop.load();
    bool all_finished = true;
    auto wake = now + kMaxPollWait;
    for (auto& device : devices) {
      device->Tick(now, stopping);
      if (!device->finished()) {
        all_finished = false;
        wake = std::min(wake, device->next_due());
      }
    }
    if (all_finished) {
      return;
    }
    fds.clear();
    polled.clear();
    for (auto& device : devices) {
      const int fd = device->socket();
      if (!device->finished() && fd >= 0) {
        const auto events = static_cast<short>(POLLIN | (device->want_write() ? POLLOUT : 0));
        fds.push_back(pollfd{.fd = fd, .events = events, .revents = 0});
        polled.push_back(device.get());
      }
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - Clock::now());
    const int timeout = static_cast<int>(
        std::clamp<std::chrono::milliseconds::rep>(wait.count(), 0, kMaxPollWait.count()));
    const int ready = ::poll(fds.data(), fds.size(), timeout);
    if (ready > 0) {
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents != 0) {
          polled[i]->Loop(fds[i].revents);
        }
      }
    }
    if (Clock::now() - last_misc >= kMiscInterval) {
      last_misc = Clock::now();
      for (auto& device : devices) {
        device->Misc();
      }
    }
  }
}

}  // namespace

void RunSimulation(const SimOptions& options, std::shared_ptr<const ProductModel> model,
                   const std::vector<DeviceCredentials>& devices, const std::atomic<bool>& stop,
                   SimStats& stats) {
  stats.devices.store(devices.size());
  std::mt19937_64 seeder(options.seed != 0 ? options.seed : std::random_device{}());
  std::vector<std::vector<std::unique_ptr<Device>>> groups;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    if (i % kDevicesPerWorker == 0) {
      groups.emplace_back();
    }
    groups.back().push_back(std::make_unique<Device>(options, model, devices[i], stats, seeder()));
  }
  std::vector<std::thread> threads;
  threads.reserve(groups.size());
  for (auto& group : groups) {
    threads.emplace_back([&group, &stop] { Worker(group, stop); });
  }
  for (auto& thread : threads) {
    thread.join();
  }
}

}  // namespace devsim
