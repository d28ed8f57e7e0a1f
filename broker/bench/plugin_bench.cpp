// iot_auth benchmark: authenticated connects per second, and QoS 1 publish throughput through a
// broker with the plugin (ACL on every publish and delivery) against the same broker without it.
//
//   build/bin/broker_plugin_bench [devices=2000] [messages=20000] [rounds=3] [window=64]
//   build/bin/broker_plugin_bench flood [devices=1000] [flood_rate=10000] [rounds=3] [window=64]
//                                       [flood_window=512]
//
// Connects: `rounds` rounds of connect storms of `devices` devices each (raw MQTT CONNECTs,
// `window` awaiting their CONNACK at a time, all staying connected until the storm ends): against
// the broker without the plugin, then with it for devices in the projection when the broker
// started, the same devices again, and devices written to Redis after the start without a
// `tm:changes` message (each needs its own Redis read). Medians over the rounds at the end.
//
// Flood: `devices` real devices (in the projection) connect in a storm from 127.0.0.1, alone and
// while bogus connects of made-up device ids come from 127.0.0.2 at `flood_rate` a second, against
// the plugin with its connect guard (defaults) and with the guard opened wide; the real devices'
// connect rate with the flood over the rate without it, medians of the rounds.

#include <fmt/format.h>
#include <mosquitto.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "connect_storm.h"
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

/// Writes `tm:dev:{id}` as thing-model does (secret `secret-{id}`).
bool WriteDevices(iot::common::RedisClient& client, const iot::common::SecretBox& box,
                  const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(ids.size());
  for (const auto& id : ids) {
    commands.push_back({"HSET", "tm:dev:" + id, "tenant_id", "t", "product_id", "bench", "node_id",
                        id, "frozen", "0", "secret", box.Seal("secret-" + id, id), "version", "1"});
  }
  auto written = client.Pipeline(commands);
  return written.ok() && written->size() == commands.size();
}

std::vector<std::string> DeviceIds(const std::string& prefix, int count) {
  std::vector<std::string> ids;
  ids.reserve(static_cast<size_t>(std::max(count, 0)));
  for (int i = 0; i < count; ++i) {
    ids.push_back(fmt::format("{}_d{}", prefix, i));
  }
  return ids;
}

std::vector<iot::broker_bench::StormClient> StormClients(const std::vector<std::string>& ids,
                                                         bool with_auth) {
  std::vector<iot::broker_bench::StormClient> clients;
  const std::string ts = Hour();
  for (const auto& id : ids) {
    iot::broker_bench::StormClient client{.client_id = fmt::format("{}_0_0_{}", id, ts),
                                          .username = std::nullopt,
                                          .password = std::nullopt};
    if (with_auth) {
      client.username = id;
      client.password = iot::common::HmacSha256Hex(ts, "secret-" + id);
    }
    clients.push_back(std::move(client));
  }
  return clients;
}

/// The pid of the mosquitto started with `config_dir`'s mosquitto.conf (0 if none).
pid_t BrokerPid(const std::filesystem::path& config_dir) {
  const std::string config = (config_dir / "mosquitto.conf").string();
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(entry.path() / "cmdline");
    const std::string cmdline((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
    if (cmdline.starts_with("mosquitto") && cmdline.find(config) != std::string::npos) {
      return static_cast<pid_t>(std::atoi(entry.path().filename().c_str()));
    }
  }
  return 0;
}

/// CPU time the process has run, from /proc/{pid}/schedstat (0 when unknown).
std::chrono::nanoseconds CpuTime(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/schedstat", pid));
  long long ns = 0;
  in >> ns;
  return std::chrono::nanoseconds(ns);
}

/// One storm; exits when a device is refused (the bench measures accepted connects only).
double Storm(const char* what, const iot::testing::TestMosquitto& broker,
             const std::vector<std::string>& ids, bool with_auth, int window) {
  const auto clients = StormClients(ids, with_auth);
  const pid_t pid = BrokerPid(broker.dir());
  const auto cpu_before = CpuTime(pid);
  const auto result = iot::broker_bench::ConnectStorm(broker.port(), clients, window);
  const auto cpu = CpuTime(pid) - cpu_before;
  std::printf("  %-46s %6.0f/s  p50 %5.1f ms  p99 %6.1f ms  broker CPU %4.0f us/connect\n", what,
              result.per_second, static_cast<double>(result.p50.count()) / 1000.0,
              static_cast<double>(result.p99.count()) / 1000.0,
              static_cast<double>(cpu.count()) / 1000.0 / static_cast<double>(ids.size()));
  if (result.refused > 0) {
    std::fprintf(stderr, "%s: %d of %zu devices refused\n", what, result.refused, ids.size());
    std::exit(1);
  }
  // Let the broker finish the disconnects before the next storm.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  return result.per_second;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
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

/// The plugin's mosquitto.conf lines for the bench's Redis (service account `gw`).
std::string PluginLines(const std::string& redis_url, const std::string& extra = "") {
  const std::string accounts =
      fmt::format("gw:{}:{}", kSalt, iot::common::Sha256Hex(std::string(kSalt) + kPassword));
  return fmt::format(
      "allow_anonymous false\nplugin {}\nplugin_opt_redis_url {}\nplugin_opt_secret_key {}\n"
      "plugin_opt_service_accounts {}\nmax_queued_messages 1000000\n{}",
      iot::testing::LibraryPath("libiot_auth.so").string(), redis_url, kKey, accounts, extra);
}

/// The last "connect guard" line of the broker's log ("" if none yet).
std::string LastGuardLine(const iot::testing::TestMosquitto& broker) {
  std::ifstream in(broker.dir() / "mosquitto.log");
  std::string line;
  std::string last;
  while (std::getline(in, line)) {
    if (const size_t at = line.find("connect guard"); at != std::string::npos) {
      last = line.substr(at);
    }
  }
  return last;
}

/// Real devices' connect storm while a flood of bogus connects runs from another address.
int FloodMain(int devices, double flood_rate, int rounds, int window, int flood_window) {
  iot::testing::TestRedis redis;
  auto client = *iot::common::RedisClient::Create({.url = redis.Url()});
  auto box = *iot::common::SecretBox::FromKeyText(kKey);
  const auto ids = DeviceIds("flood_real", devices);
  if (!client->Command({"SET", "tm:projection:ready", "1"}).ok() ||
      !WriteDevices(*client, box, ids)) {
    return 1;
  }
  // The connect-guard line every second, so that each phase has its own figures.
  iot::testing::TestMosquitto guarded(
      PluginLines(redis.Url(), "plugin_opt_stats_interval_ms 1000\n"));
  iot::testing::TestMosquitto open(PluginLines(
      redis.Url(),
      "plugin_opt_stats_interval_ms 1000\nplugin_opt_connect_rate_per_address 1000000000\n"
      "plugin_opt_connect_burst_per_address 1000000000\nplugin_opt_lookup_rate 1000000000\n"));
  std::this_thread::sleep_for(std::chrono::seconds(3));  // the projection loads

  struct Brokers {
    const char* name;
    const iot::testing::TestMosquitto* broker;
    std::vector<double> alone;
    std::vector<double> flooded;
    std::vector<double> flood_rates;
  };
  std::vector<Brokers> brokers = {{"guard on (defaults)", &guarded, {}, {}, {}},
                                  {"guard off", &open, {}, {}, {}}};
  std::printf(
      "%d real devices (window %d) from 127.0.0.1; bogus connects at %.0f/s (window %d) from "
      "127.0.0.2\n",
      devices, window, flood_rate, flood_window);
  for (int round = 0; round < rounds; ++round) {
    for (auto& b : brokers) {
      std::printf("round %d, %s\n", round + 1, b.name);
      b.alone.push_back(Storm("real devices, no flood", *b.broker, ids, true, window));
      std::atomic<bool> stop{false};
      iot::broker_bench::FloodResult flood;
      const pid_t pid = BrokerPid(b.broker->dir());
      const auto cpu_before = CpuTime(pid);
      std::thread flooder([&] {
        flood = iot::broker_bench::Flood(b.broker->port(), "127.0.0.2",
                                         fmt::format("flood_r{}_x", round), flood_rate,
                                         flood_window, [&] { return stop.load(); });
      });
      // Into its steady state first: the address's bucket emptied, the guard refusing.
      std::this_thread::sleep_for(std::chrono::seconds(2));
      b.flooded.push_back(Storm("real devices, during the flood", *b.broker, ids, true, window));
      std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // one more guard line
      const std::string guard_line = LastGuardLine(*b.broker);
      stop = true;
      flooder.join();
      const auto cpu = CpuTime(pid) - cpu_before;
      const double achieved = static_cast<double>(flood.finished) / flood.seconds;
      b.flood_rates.push_back(achieved);
      std::printf(
          "  flood: %lld sent, %lld answered (%.0f/s), %lld accepted; broker CPU %.0f%% of a "
          "core, %.0f us per connect (bogus and real)\n",
          static_cast<long long>(flood.started), static_cast<long long>(flood.finished), achieved,
          static_cast<long long>(flood.accepted),
          100.0 * std::chrono::duration<double>(cpu).count() / flood.seconds,
          static_cast<double>(cpu.count()) / 1000.0 /
              static_cast<double>(flood.finished + static_cast<int64_t>(ids.size())));
      std::printf("  %s\n", guard_line.c_str());
    }
  }
  for (auto& b : brokers) {
    std::printf(
        "medians of %d rounds, %s: %.0f/s without the flood, %.0f/s during it (ratio %.2f); "
        "flood answered at %.0f/s\n",
        rounds, b.name, Median(b.alone), Median(b.flooded), Median(b.flooded) / Median(b.alone),
        Median(b.flood_rates));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "flood") {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    return FloodMain(argc > 2 ? std::atoi(argv[2]) : 1000, argc > 3 ? std::atof(argv[3]) : 10000,
                     argc > 4 ? std::atoi(argv[4]) : 3, argc > 5 ? std::atoi(argv[5]) : 64,
                     argc > 6 ? std::atoi(argv[6]) : 512);
  }
  const int devices = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int messages = argc > 2 ? std::atoi(argv[2]) : 20000;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  const int window = argc > 4 ? std::atoi(argv[4]) : 64;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  mosquitto_lib_init();

  iot::testing::TestRedis redis;
  auto client = *iot::common::RedisClient::Create({.url = redis.Url()});
  auto box = *iot::common::SecretBox::FromKeyText(kKey);
  if (!client->Command({"SET", "tm:projection:ready", "1"}).ok()) {
    return 1;
  }
  for (int round = 0; round < rounds; ++round) {
    if (!WriteDevices(*client, box, DeviceIds(fmt::format("bench_r{}", round), devices))) {
      return 1;
    }
  }
  iot::testing::TestMosquitto with_plugin(PluginLines(redis.Url()));
  iot::testing::TestMosquitto plain("allow_anonymous true\nmax_queued_messages 1000000\n");
  // The plugin loads the projection in the background (tens of thousands of devices a second;
  // its log line is not flushed in time to wait for it).
  std::this_thread::sleep_for(std::chrono::seconds(2) +
                              std::chrono::milliseconds(devices * rounds / 20));

  std::vector<double> raw;
  std::vector<double> loaded;
  std::vector<double> warm;
  std::vector<double> fresh;
  std::printf("connect storms: %d devices, %d CONNACKs awaited at a time\n", devices, window);
  for (int round = 0; round < rounds; ++round) {
    std::printf("round %d\n", round + 1);
    const auto ids = DeviceIds(fmt::format("bench_r{}", round), devices);
    raw.push_back(Storm("without plugin", plain, ids, false, window));
    loaded.push_back(
        Storm("with plugin, in the projection at start", with_plugin, ids, true, window));
    warm.push_back(Storm("with plugin, same devices again", with_plugin, ids, true, window));
    const auto created = DeviceIds(fmt::format("bench_new_r{}", round), devices);
    if (!WriteDevices(*client, box, created)) {
      return 1;
    }
    fresh.push_back(Storm("with plugin, created after start (unannounced)", with_plugin, created,
                          true, window));
  }
  const double raw_median = Median(raw);
  std::printf(
      "medians of %d rounds: without plugin %.0f/s; with plugin: known at start %.0f/s "
      "(ratio %.2f), again %.0f/s (%.2f), created after start %.0f/s (%.2f)\n",
      rounds, raw_median, Median(loaded), Median(loaded) / raw_median, Median(warm),
      Median(warm) / raw_median, Median(fresh), Median(fresh) / raw_median);

  // Throughput: one device reports, one service account receives everything.
  const std::string device = "bench_r0_d0";
  const std::string topic = "$oc/devices/" + device + "/sys/properties/report";
  TestClient gateway({.port = with_plugin.port(),
                      .client_id = "bench-gw",
                      .username = "gw",
                      .password = kPassword,
                      .protocol = 5});
  gateway.Connect();
  gateway.Subscribe("$share/gateway/iot/up/+/+/sys/#", 1);  // the plugin relays uplink there
  const double with =
      Throughput(DeviceOptions(with_plugin.port(), device, true), gateway, topic, messages);
  TestClient plain_sub({.port = plain.port(), .client_id = "bench-sub", .protocol = 5});
  plain_sub.Connect();
  plain_sub.Subscribe("$oc/devices/+/sys/#", 1);
  const double without =
      Throughput(DeviceOptions(plain.port(), device, false), plain_sub, topic, messages);
  std::printf(
      "QoS 1 publish->deliver, %d x 200 B: with plugin %.0f msg/s, without %.0f msg/s, "
      "ratio %.2f\n",
      messages, with, without, with / without);
  return 0;
}
