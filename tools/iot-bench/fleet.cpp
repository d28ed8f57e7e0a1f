#include "fleet.h"

#include <fmt/format.h>
#include <mosquitto.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "iot/common/backoff.h"
#include "iot/common/crypto.h"

namespace iotbench {
namespace {

enum Phase : int { kIdle = 0, kConnect = 1, kPublish = 2, kDisconnect = 3 };
/// kWaiting: a device that was connected lost its connection and reconnects at `retry_at`;
/// kReconnecting: its reconnect awaits the CONNACK.
enum class State { kIdle, kConnecting, kConnected, kWaiting, kReconnecting, kFailed };

constexpr auto kConnackTimeout = std::chrono::seconds(10);
constexpr int kPollTimeoutMs = 10;
constexpr int kKeepaliveSeconds = 60;

std::int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

Clock::time_point FromNs(std::int64_t ns) {
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

/// What the main thread and the workers share.
struct Shared {
  FleetOptions options;
  std::atomic<int> phase{kIdle};
  std::atomic<int> publish_target{0};
  std::atomic<int> publish_generation{0};
  std::mutex payload_mutex;
  std::shared_ptr<const PayloadFn> payload;  ///< replaced before publish_generation is bumped
  std::shared_ptr<const AckedFn> on_acked;   ///< likewise

  std::shared_ptr<const PayloadFn> Payload() {
    const std::lock_guard lock(payload_mutex);
    return payload;
  }
  std::shared_ptr<const AckedFn> Acked() {
    const std::lock_guard lock(payload_mutex);
    return on_acked;
  }

  std::atomic<std::size_t> connected{0};
  std::atomic<std::size_t> refused{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> acked{0};
  std::atomic<std::uint64_t> commands_answered{0};
  std::atomic<std::uint64_t> connections_lost{0};
  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::uint64_t> republished{0};
  std::atomic<std::int64_t> last_event_ns{0};
  Latencies connect_latencies;

  std::mutex error_mutex;
  std::string first_error;

  void Error(const std::string& message) {
    const std::lock_guard lock(error_mutex);
    if (first_error.empty()) {
      first_error = message;
    }
  }
  void Event() { last_event_ns.store(NowNs()); }
};

/// One device; used only by its worker thread (callbacks run inside that thread's
/// mosquitto_loop_read/write calls).
struct Client {
  Client(Shared& shared_state, DeviceCredentials credentials, std::size_t device_index,
         int& connecting_count)
      : shared(shared_state),
        device(std::move(credentials)),
        index(device_index),
        prefix("$oc/devices/" + device.device_id + "/"),
        report_topic(ReportTopic(device, shared.options.dialect)),
        connecting(connecting_count) {}
  ~Client() { Destroy(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void Destroy() {
    if (mosq != nullptr) {
      mosquitto_destroy(mosq);
      mosq = nullptr;
    }
  }

  void Fail(const std::string& message) {
    if (state == State::kConnecting) {
      --connecting;
      shared.refused.fetch_add(1);
      shared.Event();
    }
    state = State::kFailed;
    shared.Error(message);
    Destroy();
  }

  /// The connection of a device that had connected broke (or its reconnect failed): it
  /// reconnects after a backoff, as a device SDK does, keeping its unacknowledged reports.
  void Lost(Clock::time_point now) {
    if (state == State::kConnected) {
      shared.connections_lost.fetch_add(1);
    }
    state = State::kWaiting;
    retry_at = now + backoff.Next();
  }

  /// A device waiting to reconnect tries now: libmosquitto keeps the QoS 1 reports that were
  /// not acknowledged and sends them again (DUP) once the new connection's CONNACK arrives.
  void Reconnect(Clock::time_point now) {
    if (mosquitto_reconnect(mosq) != MOSQ_ERR_SUCCESS) {
      retry_at = now + backoff.Next();
      return;
    }
    state = State::kReconnecting;
    connect_started = now;
  }

  void StartConnect() {
    const DeviceLogin login = LoginFor(device, shared.options.dialect);
    mosq = mosquitto_new(login.client_id.c_str(), true, this);
    if (mosq == nullptr) {
      state = State::kFailed;
      shared.refused.fetch_add(1);
      shared.Error("mosquitto_new failed (out of memory)");
      return;
    }
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_username_pw_set(mosq, login.username.c_str(), login.password.c_str());
    mosquitto_connect_callback_set(
        mosq, [](mosquitto*, void* self, int rc) { static_cast<Client*>(self)->OnConnect(rc); });
    mosquitto_publish_callback_set(
        mosq, [](mosquitto*, void* self, int mid) { static_cast<Client*>(self)->OnPublish(mid); });
    mosquitto_message_callback_set(mosq, [](mosquitto*, void* self, const mosquitto_message* m) {
      static_cast<Client*>(self)->OnMessage(*m);
    });
    connect_started = Clock::now();
    state = State::kConnecting;
    ++connecting;
    const int rc = mosquitto_connect(mosq, shared.options.host.c_str(), shared.options.port,
                                     kKeepaliveSeconds);
    if (rc != MOSQ_ERR_SUCCESS) {
      Fail(fmt::format("{}: cannot connect to {}:{}: {}", device.device_id, shared.options.host,
                       shared.options.port,
                       rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc)));
    }
  }

  void OnConnect(int rc) {
    if (state == State::kReconnecting) {
      if (rc != 0) {
        shared.Error(fmt::format("{}: reconnect refused: {}", device.device_id,
                                 mosquitto_connack_string(rc)));
        Lost(Clock::now());
        return;
      }
      state = State::kConnected;
      backoff.Reset();
      shared.reconnects.fetch_add(1);
      shared.republished.fetch_add(inflight.size());
      shared.Event();
      return;
    }
    if (state != State::kConnecting) {
      return;
    }
    if (rc != 0) {
      Fail(fmt::format("{}: connection refused: {}", device.device_id,
                       mosquitto_connack_string(rc)));
      return;
    }
    --connecting;
    state = State::kConnected;
    shared.connect_latencies.Add(
        std::chrono::duration<double, std::milli>(Clock::now() - connect_started).count());
    shared.connected.fetch_add(1);
    shared.Event();
  }

  void OnPublish(int mid) {
    const auto it = inflight.find(mid);
    if (it == inflight.end()) {
      return;
    }
    const auto [seq, fn] = it->second;
    inflight.erase(it);
    shared.acked.fetch_add(1);
    shared.Event();
    if (fn != nullptr && *fn) {
      (*fn)(index, seq);
    }
  }

  void OnMessage(const mosquitto_message& message) {
    static constexpr std::string_view kRequest = "sys/commands/request_id=";
    const std::string_view topic(message.topic);
    if (!shared.options.answer_commands || topic.substr(0, prefix.size()) != prefix ||
        topic.substr(prefix.size(), kRequest.size()) != kRequest) {
      return;
    }
    const std::string request_id(topic.substr(prefix.size() + kRequest.size()));
    static constexpr std::string_view kAnswer =
        R"({"result_code":0,"response_name":"ping_response","paras":{"result":"ok"}})";
    const std::string response_topic = prefix + "sys/commands/response/request_id=" + request_id;
    if (mosquitto_publish(mosq, nullptr, response_topic.c_str(), static_cast<int>(kAnswer.size()),
                          kAnswer.data(), 1, false) == MOSQ_ERR_SUCCESS) {
      shared.commands_answered.fetch_add(1);
    }
  }

  /// Publishes reports up to the target of the current generation, keeping at most
  /// publish_window in flight.
  void PublishDue(int current_generation, int target, Clock::time_point now) {
    const double rate = shared.options.publish_rate;
    const auto interval =
        rate > 0
            ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate))
            : Clock::duration::zero();
    if (current_generation != generation) {
      generation = current_generation;
      published = 0;
      payload = shared.Payload();
      acked_fn = shared.Acked();
      // Spread the devices' first reports over one interval instead of a synchronised burst.
      next_due = now + interval * static_cast<int>(index % 100) / 100;
    }
    // A device that could not publish for a while (its connection was down) sends what fell
    // due at once, but not more than a second's worth ahead of its pace: a burst beyond that
    // would cross the gateway's per-device rate limit and be rejected.
    if (interval > Clock::duration::zero() && now - next_due > std::chrono::seconds(1)) {
      next_due = now - std::chrono::seconds(1);
    }
    while (published < target && now >= next_due &&
           inflight.size() < static_cast<std::size_t>(shared.options.publish_window)) {
      const std::string body = (*payload)(index, published);
      int mid = 0;
      const int rc = mosquitto_publish(mosq, &mid, report_topic.c_str(),
                                       static_cast<int>(body.size()), body.data(), 1, false);
      if (rc != MOSQ_ERR_SUCCESS) {
        Fail(fmt::format("{}: publish failed: {}", device.device_id, mosquitto_strerror(rc)));
        return;
      }
      inflight.emplace(mid, std::pair{published, acked_fn});
      ++published;
      next_due += interval;
      shared.sent.fetch_add(1);
    }
  }

  Shared& shared;
  DeviceCredentials device;
  std::size_t index;
  std::string prefix;
  std::string report_topic;
  int& connecting;
  mosquitto* mosq = nullptr;
  State state = State::kIdle;
  Clock::time_point connect_started{};
  Clock::time_point retry_at{};
  iot::common::Backoff backoff{std::chrono::milliseconds(200), std::chrono::milliseconds(2000)};
  int generation = -1;
  int published = 0;
  Clock::time_point next_due{};
  std::shared_ptr<const PayloadFn> payload;
  std::shared_ptr<const AckedFn> acked_fn;
  /// mid -> (report number, the acknowledgement callback of its generation).
  std::unordered_map<int, std::pair<int, std::shared_ptr<const AckedFn>>> inflight;
};

}  // namespace

std::string HourStamp() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char text[16] = {};
  std::strftime(text, sizeof(text), "%Y%m%d%H", &utc);
  return text;
}

const char* DialectName(Dialect dialect) { return dialect == Dialect::kAlink ? "alink" : "iotda"; }

DeviceLogin LoginFor(const DeviceCredentials& device, Dialect dialect) {
  if (dialect == Dialect::kIotda) {
    const std::string hour = HourStamp();
    return {.client_id = fmt::format("{}_0_0_{}", device.device_id, hour),
            .username = device.device_id,
            .password = iot::common::HmacSha256Hex(hour, device.secret)};
  }
  const std::string& pk = device.product_id;
  const std::string& dn = device.node_id;
  const std::string cid = pk + "." + dn;
  const std::string timestamp = std::to_string(UnixMillis());
  return {.client_id =
              fmt::format("{}|securemode=3,signmethod=hmacsha256,timestamp={}|", cid, timestamp),
          .username = dn + "&" + pk,
          .password = iot::common::HmacSha256Hex(
              device.secret, fmt::format("clientId{}deviceName{}productKey{}timestamp{}", cid, dn,
                                         pk, timestamp))};
}

std::string ReportTopic(const DeviceCredentials& device, Dialect dialect) {
  return dialect == Dialect::kAlink
             ? fmt::format("/sys/{}/{}/thing/event/property/post", device.product_id,
                           device.node_id)
             : fmt::format("$oc/devices/{}/sys/properties/report", device.device_id);
}

struct Fleet::Impl {
  struct Worker {
    explicit Worker(Shared& shared_state) : shared(shared_state) {}

    void Run() {
      std::vector<pollfd> fds;
      std::vector<Client*> polled;
      auto last_misc = Clock::now();
      while (true) {
        const int phase = shared.phase.load();
        if (phase == kDisconnect) {
          Close();
          return;
        }
        const auto now = Clock::now();
        if (phase == kConnect || phase == kPublish) {
          for (auto& client : clients) {
            if (client->state == State::kIdle && connecting < shared.options.connect_window) {
              client->StartConnect();
            } else if (client->state == State::kConnecting &&
                       now - client->connect_started > kConnackTimeout) {
              client->Fail(client->device.device_id + ": no CONNACK within 10 s");
            } else if (client->state == State::kWaiting && now >= client->retry_at) {
              client->Reconnect(now);
            } else if (client->state == State::kReconnecting &&
                       now - client->connect_started > kConnackTimeout) {
              client->Lost(now);
            } else if (client->state == State::kConnected && mosquitto_socket(client->mosq) < 0) {
              client->Lost(now);  // closed by libmosquitto itself (keepalive)
            }
          }
        }
        if (phase == kPublish) {
          const int generation = shared.publish_generation.load(std::memory_order_acquire);
          const int target = shared.publish_target.load();
          for (auto& client : clients) {
            if (client->state == State::kConnected) {
              client->PublishDue(generation, target, now);
            }
          }
        }
        fds.clear();
        polled.clear();
        for (auto& client : clients) {
          const int fd = client->mosq != nullptr ? mosquitto_socket(client->mosq) : -1;
          if (client->state != State::kFailed && fd >= 0) {
            const bool write = mosquitto_want_write(client->mosq);
            fds.push_back(pollfd{.fd = fd,
                                 .events = static_cast<short>(POLLIN | (write ? POLLOUT : 0)),
                                 .revents = 0});
            polled.push_back(client.get());
          }
        }
        if (::poll(fds.data(), fds.size(), kPollTimeoutMs) > 0) {
          for (std::size_t i = 0; i < fds.size(); ++i) {
            Service(*polled[i], fds[i].revents);
          }
        }
        if (Clock::now() - last_misc > std::chrono::seconds(1)) {
          last_misc = Clock::now();
          for (auto& client : clients) {
            if (client->state == State::kConnected) {
              mosquitto_loop_misc(client->mosq);
            }
          }
        }
      }
    }

    /// mosquitto_loop() select()s, which fails beyond FD_SETSIZE descriptors: read and write
    /// what poll() reported instead.
    static void Service(Client& client, short revents) {
      if (revents == 0 || client.mosq == nullptr) {
        return;
      }
      int rc = MOSQ_ERR_SUCCESS;
      if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
        rc = mosquitto_loop_read(client.mosq, 1);
      }
      if (rc == MOSQ_ERR_SUCCESS && client.mosq != nullptr && (revents & POLLOUT) != 0) {
        rc = mosquitto_loop_write(client.mosq, 1);
      }
      if (rc == MOSQ_ERR_SUCCESS) {
        return;
      }
      if (client.state == State::kConnected || client.state == State::kReconnecting) {
        client.Lost(Clock::now());
      } else if (client.state != State::kFailed && client.state != State::kWaiting) {
        client.Fail(fmt::format("{}: connection lost: {}", client.device.device_id,
                                mosquitto_strerror(rc)));
      }
    }

    void Close() {
      for (auto& client : clients) {
        if (client->mosq != nullptr && client->state == State::kConnected) {
          mosquitto_disconnect(client->mosq);
        }
        client->Destroy();
      }
    }

    Shared& shared;
    int connecting = 0;
    std::vector<std::unique_ptr<Client>> clients;
  };

  Shared shared;
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> threads;
  std::size_t total = 0;

  void StartThreads() {
    if (!threads.empty()) {
      return;
    }
    for (auto& worker : workers) {
      threads.emplace_back([w = worker.get()] { w->Run(); });
    }
  }

  static void WaitFor(const std::function<bool()>& done, Clock::time_point deadline) {
    while (!done() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
};

Fleet::Fleet(FleetOptions options, std::vector<DeviceCredentials> devices)
    : impl_(std::make_unique<Impl>()) {
  impl_->shared.options = std::move(options);
  const int threads = std::max(1, impl_->shared.options.threads);
  for (int i = 0; i < threads; ++i) {
    impl_->workers.push_back(std::make_unique<Impl::Worker>(impl_->shared));
  }
  impl_->total = devices.size();
  for (std::size_t i = 0; i < devices.size(); ++i) {
    auto& worker = *impl_->workers[i % impl_->workers.size()];
    worker.clients.push_back(
        std::make_unique<Client>(impl_->shared, std::move(devices[i]), i, worker.connecting));
  }
}

Fleet::~Fleet() { Disconnect(); }

ConnectResult Fleet::Connect(Clock::time_point deadline) {
  auto& shared = impl_->shared;
  const auto started = Clock::now();
  shared.last_event_ns.store(NowNs());
  shared.phase.store(kConnect);
  impl_->StartThreads();
  Impl::WaitFor([&] { return shared.connected.load() + shared.refused.load() >= impl_->total; },
                deadline);
  ConnectResult result;
  result.connected = shared.connected.load();
  result.refused = shared.refused.load();
  result.seconds = SecondsBetween(started, FromNs(shared.last_event_ns.load()));
  result.latency = shared.connect_latencies.Summary();
  const std::lock_guard lock(shared.error_mutex);
  result.first_error = shared.first_error;
  return result;
}

PublishResult Fleet::Publish(int per_device, PayloadFn payload, Clock::time_point deadline,
                             AckedFn acked) {
  auto& shared = impl_->shared;
  const std::uint64_t sent_before = shared.sent.load();
  const std::uint64_t acked_before = shared.acked.load();
  const std::uint64_t expected = static_cast<std::uint64_t>(per_device) * shared.connected.load();
  const auto started = Clock::now();
  shared.last_event_ns.store(NowNs());
  {
    const std::lock_guard lock(shared.payload_mutex);
    shared.payload = std::make_shared<const PayloadFn>(std::move(payload));
    shared.on_acked = std::make_shared<const AckedFn>(std::move(acked));
  }
  shared.publish_target.store(per_device);
  shared.publish_generation.fetch_add(1, std::memory_order_release);
  shared.phase.store(kPublish);
  impl_->StartThreads();
  Impl::WaitFor([&] { return shared.acked.load() - acked_before >= expected; }, deadline);
  PublishResult result;
  result.sent = shared.sent.load() - sent_before;
  result.acked = shared.acked.load() - acked_before;
  result.seconds = SecondsBetween(started, FromNs(shared.last_event_ns.load()));
  result.timed_out = result.acked < expected;
  return result;
}

void Fleet::Disconnect() {
  impl_->shared.phase.store(kDisconnect);
  for (auto& thread : impl_->threads) {
    thread.join();
  }
  impl_->threads.clear();
}

std::size_t Fleet::size() const { return impl_->total; }
std::uint64_t Fleet::commands_answered() const { return impl_->shared.commands_answered.load(); }
std::uint64_t Fleet::connections_lost() const { return impl_->shared.connections_lost.load(); }
std::uint64_t Fleet::reconnects() const { return impl_->shared.reconnects.load(); }
std::uint64_t Fleet::republished() const { return impl_->shared.republished.load(); }

}  // namespace iotbench
