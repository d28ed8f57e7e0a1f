// iot_auth benchmark: authenticated connects per second, and QoS 1 publish throughput through a
// broker with the plugin (ACL on every publish and delivery) against the same broker without it.
//
//   build/bin/broker_plugin_bench [devices=500] [messages=20000]

#include <fmt/format.h>
#include <mosquitto.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "iot/common/crypto.h"
#include "iot/common/redis.h"
#include "iot/testing/process.h"
#include "iot/testing/servers.h"
#include "test_client.h"

namespace {

using iot::broker_test::TestClient;
using Clock = std::chrono::steady_clock;

constexpr char kKey[] = "5f1c0a3b2e4d6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
constexpr char kSalt[] = "bench";
constexpr char kPassword[] = "bench-password";

std::string Hour() {
  const auto hours = std::chrono::floor<std::chrono::hours>(std::chrono::system_clock::now());
  const std::chrono::year_month_day date{std::chrono::floor<std::chrono::days>(hours)};
  return fmt::format("{:04}{:02}{:02}{:02}", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                     (hours - std::chrono::floor<std::chrono::days>(hours)).count());
}

TestClient::Options DeviceOptions(uint16_t port, const std::string& id, bool with_auth) {
  const std::string ts = Hour();
  TestClient::Options options{.port = port, .client_id = fmt::format("{}_0_0_{}", id, ts)};
  if (with_auth) {
    options.username = id;
    options.password = iot::common::HmacSha256Hex(ts, "secret-" + id);
  }
  return options;
}

/// Publishes `count` QoS 1 messages as fast as libmosquitto takes them (20 in flight) and
/// returns messages per second as seen by `subscriber`.
double Throughput(const TestClient::Options& publisher_options, TestClient& subscriber,
                  const std::string& topic, int count) {
  struct mosquitto* mosq = mosquitto_new(publisher_options.client_id.c_str(), true, nullptr);
  if (publisher_options.username) {
    mosquitto_username_pw_set(mosq, publisher_options.username->c_str(),
                              publisher_options.password->c_str());
  }
  if (mosquitto_connect(mosq, "127.0.0.1", publisher_options.port, 30) != MOSQ_ERR_SUCCESS) {
    std::fprintf(stderr, "publisher cannot connect\n");
    std::exit(1);
  }
  mosquitto_loop_start(mosq);
  const std::string payload(200, 'x');
  const auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    mosquitto_publish(mosq, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                      payload.data(), 1, false);
  }
  const bool all = subscriber.WaitForCount(static_cast<size_t>(count), std::chrono::minutes(5));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  mosquitto_disconnect(mosq);
  mosquitto_loop_stop(mosq, false);
  mosquitto_destroy(mosq);
  if (!all) {
    std::fprintf(stderr, "only %zu of %d messages arrived\n", subscriber.messages().size(), count);
    std::exit(1);
  }
  return count / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  const int devices = argc > 1 ? std::atoi(argv[1]) : 500;
  const int messages = argc > 2 ? std::atoi(argv[2]) : 20000;
  mosquitto_lib_init();

  iot::testing::TestRedis redis;
  auto client = *iot::common::RedisClient::Create({.url = redis.Url()});
  auto box = *iot::common::SecretBox::FromKeyText(kKey);
  if (!client->Command({"SET", "tm:projection:ready", "1"}).ok()) {
    return 1;
  }
  for (int i = 0; i < devices; ++i) {
    const std::string id = fmt::format("bench_d{}", i);
    auto written = client->Command({"HSET", "tm:dev:" + id, "tenant_id", "t", "product_id", "bench",
                                    "node_id", fmt::format("d{}", i), "frozen", "0", "secret",
                                    box.Seal("secret-" + id, id), "version", "1"});
    if (!written.ok()) {
      return 1;
    }
  }
  const std::string accounts =
      fmt::format("gw:{}:{}", kSalt, iot::common::Sha256Hex(std::string(kSalt) + kPassword));
  iot::testing::TestMosquitto with_plugin(fmt::format(
      "allow_anonymous false\nplugin {}\nplugin_opt_redis_url {}\nplugin_opt_secret_key {}\n"
      "plugin_opt_service_accounts {}\nmax_queued_messages 1000000\n",
      iot::testing::LibraryPath("libiot_auth.so").string(), redis.Url(), kKey, accounts));
  iot::testing::TestMosquitto plain("allow_anonymous true\nmax_queued_messages 1000000\n");

  // Connects: each device connects (CONNACK) and disconnects, one after another; the first
  // round reads Redis (cold cache), the second hits the cache.
  for (const char* round : {"cold cache", "warm cache"}) {
    const auto start = Clock::now();
    for (int i = 0; i < devices; ++i) {
      TestClient device(DeviceOptions(with_plugin.port(), fmt::format("bench_d{}", i), true));
      if (device.Connect() != 0) {
        std::fprintf(stderr, "device %d refused\n", i);
        return 1;
      }
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("connect+disconnect with plugin (%s): %.0f/s\n", round, devices / seconds);
  }
  {
    const auto start = Clock::now();
    for (int i = 0; i < devices; ++i) {
      TestClient device(DeviceOptions(plain.port(), fmt::format("bench_d{}", i), false));
      device.Connect();
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("connect+disconnect without plugin: %.0f/s\n", devices / seconds);
  }

  // Throughput: one device reports, one service account receives everything.
  const std::string topic = "$oc/devices/bench_d0/sys/properties/report";
  TestClient gateway({.port = with_plugin.port(),
                      .client_id = "bench-gw",
                      .username = "gw",
                      .password = kPassword,
                      .protocol = 5});
  gateway.Connect();
  gateway.Subscribe("$share/gateway/iot/up/+/sys/#", 1);  // the plugin relays uplink there
  const double with =
      Throughput(DeviceOptions(with_plugin.port(), "bench_d0", true), gateway, topic, messages);
  TestClient plain_sub({.port = plain.port(), .client_id = "bench-sub", .protocol = 5});
  plain_sub.Connect();
  plain_sub.Subscribe("$oc/devices/+/sys/#", 1);
  const double without =
      Throughput(DeviceOptions(plain.port(), "bench_d0", false), plain_sub, topic, messages);
  std::printf(
      "QoS 1 publish->deliver, %d x 200 B: with plugin %.0f msg/s, without %.0f msg/s, "
      "ratio %.2f\n",
      messages, with, without, with / without);
  return 0;
}
