// The PostgreSQL part of iot/testing/servers.h.

#include <pwd.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "iot/testing/servers.h"

namespace iot::testing {
namespace {

namespace fs = std::filesystem;

constexpr auto kStartTimeout = std::chrono::seconds(60);
constexpr auto kStopTimeout = std::chrono::seconds(30);
constexpr const char* kServerUser = "postgres";

bool RunningAsRoot() { return geteuid() == 0; }

// The bin directory of the newest installed server (Debian: /usr/lib/postgresql/<N>/bin).
fs::path ServerBinDir() {
  static const fs::path dir = [] {
    fs::path best;
    int best_version = -1;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
      const fs::path bin = entry.path() / "bin";
      if (!fs::exists(bin / "postgres", ec)) {
        continue;
      }
      const int version = std::atoi(entry.path().filename().c_str());
      if (version > best_version) {
        best_version = version;
        best = bin;
      }
    }
    return best;
  }();
  return dir;
}

// A PostgreSQL program: from the server's bin directory if there is one, else from PATH.
std::string PgProgram(const std::string& name) {
  const fs::path dir = ServerBinDir();
  std::error_code ec;
  if (!dir.empty() && fs::exists(dir / name, ec)) {
    return (dir / name).string();
  }
  return name;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// When root, the server's directories must belong to the server's user.
void GiveToServerUser(const fs::path& path) {
  if (!RunningAsRoot()) {
    return;
  }
  const passwd* pw = getpwnam(kServerUser);
  if (pw == nullptr) {
    throw std::runtime_error("TestPostgres: running as root but there is no user 'postgres'");
  }
  if (chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    throw std::runtime_error("chown " + path.string() + ": " + std::strerror(errno));
  }
}

std::string RunAs() { return RunningAsRoot() ? kServerUser : ""; }

// `url` with its database (the path) replaced by `db`; query parameters kept.
std::string WithDatabase(const std::string& url, const std::string& db) {
  const size_t scheme = url.find("://");
  const size_t authority = scheme == std::string::npos ? 0 : scheme + 3;
  const size_t query = url.find('?', authority);
  const size_t authority_end = std::min(url.find('/', authority), query);
  std::string out = url.substr(0, std::min(authority_end, url.size()));
  out += "/" + db;
  if (query != std::string::npos) {
    out += url.substr(query);
  }
  return out;
}

// Runs one SQL statement with psql against `url`; throws with psql's output on failure.
void Psql(const std::string& url, const std::string& sql, const fs::path& log) {
  const int rc = RunCommand(
      {PgProgram("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql}, log);
  if (rc != 0) {
    throw std::runtime_error("psql '" + sql + "' failed (" + std::to_string(rc) +
                             "): " + ReadFile(log));
  }
}

// The server every test of the binary shares, and the databases made on it.
struct SharedServer {
  std::mutex mu;
  pid_t owner = getpid();
  std::unique_ptr<TestPostgres> server;  // null when IOT_TEST_PG_URL names one
  std::string external_url;
  std::vector<std::string> created;  // on the external server, dropped at exit
  std::unique_ptr<TempDir> scratch;
  // Resolved now, so that it is still there when the destructor runs at exit.
  std::string psql = PgProgram("psql");

  ~SharedServer() {
    if (getpid() != owner) {
      // A forked child (death test) exiting: the server and its files are the parent's.
      (void)server.release();
      (void)scratch.release();
      return;
    }
    if (!external_url.empty() && !created.empty() && scratch != nullptr) {
      // Best effort, in one psql run: a leftover database on a throwaway server is harmless.
      std::vector<std::string> argv = {psql, "-X", "-q", "-d",
                                       WithDatabase(external_url, "postgres")};
      for (const auto& db : created) {
        argv.insert(argv.end(), {"-c", "DROP DATABASE IF EXISTS " + db + " WITH (FORCE)"});
      }
      try {
        RunCommand(argv, scratch->path() / "drop.log");
      } catch (const std::exception&) {
        // No psql: the databases stay.
      }
    }
  }
};

SharedServer& Shared() {
  static SharedServer shared;
  return shared;
}

// The base URL of the shared server, starting it on first use. Call with shared.mu held.
std::string SharedBaseUrlLocked(SharedServer& shared) {
  if (shared.scratch == nullptr) {
    shared.scratch = std::make_unique<TempDir>("iot-pg-shared");
  }
  if (const char* env = std::getenv("IOT_TEST_PG_URL"); env != nullptr && *env != '\0') {
    shared.external_url = env;
    return shared.external_url;
  }
  if (shared.server == nullptr) {
    shared.server = std::make_unique<TestPostgres>();
  }
  return shared.server->Url();
}

}  // namespace

TestPostgres::TestPostgres() : dir_("iot-pg"), port_(FreePort()) {
  const fs::path sockets = dir_.path() / "sockets";
  fs::create_directory(sockets);
  GiveToServerUser(sockets);
  // initdb creates data/ itself, as the server's user, inside the world-writable temp dir.
  const fs::path log = dir_.path() / "initdb.log";
  const int rc =
      RunCommand({PgProgram("initdb"), "-D", (dir_.path() / "data").string(), "-A", "trust", "-U",
                  "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"},
                 log, RunAs());
  if (rc != 0) {
    throw std::runtime_error("initdb failed (" + std::to_string(rc) + "): " + ReadFile(log));
  }
  Start();
}

TestPostgres::~TestPostgres() {
  try {
    Stop();
  } catch (const std::exception&) {
    // Process's destructor kills what is left.
  }
}

void TestPostgres::Start() {
  if (process_ != nullptr && process_->running()) {
    return;
  }
  const fs::path log = dir_.path() / "postgres.log";
  process_ = std::make_unique<Process>(Process::Options{
      .argv = {PgProgram("postgres"), "-D", (dir_.path() / "data").string(), "-p",
               std::to_string(port_), "-k", (dir_.path() / "sockets").string(), "-c",
               "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
               "-c", "full_page_writes=off", "-c", "max_connections=200"},
      .env = {},
      .log_file = log,
      .run_as_user = RunAs()});
  // The port opens before the server accepts sessions (startup, recovery): ask pg_isready.
  const fs::path probe_log = dir_.path() / "pg_isready.log";
  const auto exited = [&] { return !process_->running(); };
  const bool ready =
      WaitUntil([&] { return exited() || WaitForPort(port_, std::chrono::milliseconds(0)); },
                kStartTimeout) &&
      WaitUntil(
          [&] {
            return exited() ||
                   RunCommand({PgProgram("pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                               std::to_string(port_), "-U", "postgres", "-d", "postgres"},
                              probe_log) == 0;
          },
          kStartTimeout) &&
      process_->running();
  if (!ready) {
    const std::string output = ReadFile(log);
    Stop();
    throw std::runtime_error("PostgreSQL did not start on port " + std::to_string(port_) + ": " +
                             output);
  }
}

void TestPostgres::Stop() {
  if (process_ == nullptr || !process_->running()) {
    process_.reset();
    return;
  }
  // Signal the postmaster itself: the process we started may be `runuser`, which does not pass
  // SIGINT on. SIGINT is the fast shutdown: sessions are cut, nothing waits for clients.
  pid_t postmaster = process_->pid();
  std::ifstream pid_file(dir_.path() / "data" / "postmaster.pid");
  if (long pid = 0; pid_file >> pid && pid > 0) {
    postmaster = static_cast<pid_t>(pid);
  }
  kill(postmaster, SIGINT);
  if (!process_->Wait(kStopTimeout)) {
    kill(postmaster, SIGQUIT);  // immediate shutdown
    process_->Stop(std::chrono::seconds(5));
  }
  process_.reset();
}

std::string TestPostgres::Url(const std::string& db) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::string SharedPostgresUrl(const std::string& db) {
  SharedServer& shared = Shared();
  std::lock_guard lock(shared.mu);
  return WithDatabase(SharedBaseUrlLocked(shared), db);
}

std::string CreateTestDatabase() {
  static std::atomic<int> counter{0};
  static const std::string salt = [] {
    std::random_device rd;
    const unsigned value = rd() % 0x1000000;
    char hex[8];
    std::snprintf(hex, sizeof hex, "%06x", value);
    return std::string(hex);
  }();
  const std::string name = "iot_test_" + std::to_string(getpid()) + "_" +
                           std::to_string(counter.fetch_add(1)) + "_" + salt;
  SharedServer& shared = Shared();
  std::string admin_url;
  fs::path log;
  {
    std::lock_guard lock(shared.mu);
    admin_url = WithDatabase(SharedBaseUrlLocked(shared), "postgres");
    log = shared.scratch->path() / (name + ".log");
    if (!shared.external_url.empty()) {
      shared.created.push_back(name);
    }
  }
  Psql(admin_url, "CREATE DATABASE " + name, log);
  return WithDatabase(admin_url, name);
}

}  // namespace iot::testing
