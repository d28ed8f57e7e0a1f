#pragma once

// Real servers for integration tests. Each class starts a private instance on a free loopback
// port (data in a temp dir) and can stop/start it again to test reconnects. The Shared*()
// functions give every test in a binary the same instance: the one named by IOT_TEST_PG_URL /
// IOT_TEST_REDIS_URL / IOT_TEST_MQTT_URL when the harness (scripts/test.sh, .ci/run) started
// one, else a private one started on first use.

#include <cstdint>
#include <memory>
#include <string>

#include "iot/testing/process.h"

namespace iot::testing {

/// PostgreSQL 15: initdb (as user `postgres` when root), `postgres -D ... -p PORT -k DIR`.
class TestPostgres {
 public:
  TestPostgres();
  ~TestPostgres();
  void Start();
  void Stop();
  [[nodiscard]] uint16_t port() const { return port_; }
  /// URL of database `db` (default `postgres`) as superuser `postgres`.
  [[nodiscard]] std::string Url(const std::string& db = "postgres") const;

 private:
  TempDir dir_;
  uint16_t port_;
  std::unique_ptr<Process> process_;
};

/// redis-server on a free port, no persistence.
class TestRedis {
 public:
  TestRedis();
  ~TestRedis();
  void Start();
  void Stop();
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string Url() const;

 private:
  TempDir dir_;
  uint16_t port_;
  std::unique_ptr<Process> process_;
};

/// mosquitto on a free port. `extra_config` is appended to a minimal listener config
/// (allow_anonymous true unless extra_config says otherwise).
class TestMosquitto {
 public:
  explicit TestMosquitto(std::string extra_config = {});
  ~TestMosquitto();
  void Start();
  /// SIGTERM (mosquitto saves its persistence file), SIGKILL after a grace period.
  void Stop();
  /// SIGKILL, as a crash: nothing saved. Start() brings it back on the same port.
  void Kill();
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string Url() const;
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
  uint16_t port_;
  std::string extra_config_;
  std::unique_ptr<Process> process_;
};

/// Shared instances (see above). Never stop a shared instance in a test.
std::string SharedPostgresUrl(const std::string& db = "postgres");
std::string SharedRedisUrl();
std::string SharedMqttUrl();

/// Creates a new, uniquely named database on the shared PostgreSQL and returns its URL.
std::string CreateTestDatabase();

}  // namespace iot::testing
