#include "iot/common/migrations.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <latch>
#include <pqxx/nontransaction>
#include <pqxx/result>
#include <thread>
#include <vector>

#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

PgPoolOptions Options(std::string url) {
  return {.url = std::move(url), .size = 2, .acquire_timeout = 10s};
}

// Advisory locks are tagged with their database: count only this test's.
constexpr const char* kAdvisoryLocksHere =
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

std::vector<Migration> ThreeMigrations() {
  return {
      {1, "001_devices.sql", "CREATE TABLE devices (id text PRIMARY KEY, name text NOT NULL);"},
      {2, "002_index.sql",
       "CREATE INDEX devices_name ON devices (name);\n"
       "INSERT INTO devices VALUES ('d1', 'first');"},
      {3, "003_status.sql", "ALTER TABLE devices ADD COLUMN status text NOT NULL DEFAULT 'x';"},
  };
}

class MigrationsTest : public ::testing::Test {
 protected:
  MigrationsTest() : url_(testing::CreateTestDatabase()), pool_(Options(url_)) {}

  template <typename T>
  T Query(const std::string& sql) {
    auto value = pool_.Call([&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return tx.exec1(sql)[0].as<T>();
    });
    EXPECT_TRUE(value.ok()) << sql << ": " << value.status();
    return value.ok() ? *value : T{};
  }
  bool Exists(const std::string& relation) {
    return Query<bool>("SELECT to_regclass('" + relation + "') IS NOT NULL");
  }
  std::vector<int> Recorded(const std::string& schema) {
    auto versions = pool_.Call([&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      std::vector<int> out;
      for (const auto& row :
           tx.exec("SELECT version FROM " + schema + ".schema_migrations ORDER BY version")) {
        out.push_back(row[0].as<int>());
      }
      return out;
    });
    EXPECT_TRUE(versions.ok()) << versions.status();
    return versions.value_or(std::vector<int>{});
  }

  std::string url_;
  PgPool pool_;
};

TEST_F(MigrationsTest, AppliesOnceIntoTheSchemaThenNothing) {
  auto applied = ApplyMigrations(pool_, "things", ThreeMigrations());
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, 3);
  // Unqualified names landed in the schema, not in public.
  EXPECT_TRUE(Exists("things.devices"));
  EXPECT_FALSE(Exists("public.devices"));
  EXPECT_EQ(Query<std::string>("SELECT status FROM things.devices WHERE id = 'd1'"), "x");
  EXPECT_THAT(Recorded("things"), ElementsAre(1, 2, 3));
  EXPECT_EQ(Query<std::string>("SELECT checksum FROM things.schema_migrations WHERE version = 2"),
            MigrationChecksum(ThreeMigrations()[1].sql));
  EXPECT_EQ(Query<std::string>("SELECT name FROM things.schema_migrations WHERE version = 3"),
            "003_status.sql");

  auto again = ApplyMigrations(pool_, "things", ThreeMigrations());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, 0);

  auto more = ThreeMigrations();
  more.push_back({4, "004_more.sql", "CREATE TABLE products (id text PRIMARY KEY);"});
  auto one = ApplyMigrations(pool_, "things", more);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 1);
  EXPECT_THAT(Recorded("things"), ElementsAre(1, 2, 3, 4));
  // The pooled session's search_path was not changed.
  EXPECT_EQ(Query<std::string>("SHOW search_path"), "\"$user\", public");
}

TEST_F(MigrationsTest, OrderIsByVersionNotByPosition) {
  auto migrations = ThreeMigrations();
  std::swap(migrations[0], migrations[2]);
  auto applied = ApplyMigrations(pool_, "things", migrations);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, 3);
}

TEST_F(MigrationsTest, SchemasAreIndependent) {
  ASSERT_EQ(ApplyMigrations(pool_, "svc_a", ThreeMigrations()).value_or(-1), 3);
  ASSERT_EQ(ApplyMigrations(pool_, "svc_b", ThreeMigrations()).value_or(-1), 3);
  EXPECT_TRUE(Exists("svc_a.devices"));
  EXPECT_TRUE(Exists("svc_b.devices"));
}

TEST_F(MigrationsTest, ConcurrentRunnersApplyEachMigrationOnce) {
  constexpr int kRunners = 4;
  auto migrations = ThreeMigrations();
  // A slow first migration keeps the others waiting on the lock rather than racing past.
  migrations[0].sql += "\nSELECT pg_sleep(0.2);";
  std::vector<std::unique_ptr<PgPool>> pools;
  for (int i = 0; i < kRunners; ++i) {
    pools.push_back(std::make_unique<PgPool>(Options(url_)));
    ASSERT_TRUE(pools.back()->Ping().ok());  // connected up front, so all start together
  }
  std::vector<absl::StatusOr<int>> results(kRunners, 0);
  std::latch start(kRunners);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < kRunners; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = ApplyMigrations(*pools[i], "things", migrations);
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  int total = 0;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    total += *r;
  }
  EXPECT_EQ(total, 3);
  EXPECT_THAT(Recorded("things"), ElementsAre(1, 2, 3));
  EXPECT_EQ(Query<int>("SELECT count(*) FROM things.devices"), 1);
  EXPECT_EQ(Query<int>(kAdvisoryLocksHere), 0);
}

TEST_F(MigrationsTest, FailingMigrationRollsBackAndNamesTheFile) {
  auto migrations = ThreeMigrations();
  migrations[1] = {2, "002_broken.sql",
                   "CREATE TABLE half_done (id int);\n"
                   "CREATE TABLE broken (id no_such_type);"};
  auto failed = ApplyMigrations(pool_, "things", migrations);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("002_broken.sql"));
  EXPECT_THAT(failed.status().message(), HasSubstr("type \"no_such_type\" does not exist"));
  // 001 stays applied; 002's first statement is gone with it; 003 was not tried.
  EXPECT_TRUE(Exists("things.devices"));
  EXPECT_FALSE(Exists("things.half_done"));
  EXPECT_FALSE(Exists("things.devices_name"));
  EXPECT_THAT(Recorded("things"), ElementsAre(1));
  // The lock was released on the error path.
  EXPECT_EQ(Query<int>(kAdvisoryLocksHere), 0);

  auto fixed = ApplyMigrations(pool_, "things", ThreeMigrations());
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(*fixed, 2);
  EXPECT_THAT(Recorded("things"), ElementsAre(1, 2, 3));
}

TEST_F(MigrationsTest, ChangedAppliedMigrationIsRefused) {
  auto first = ThreeMigrations();
  first.resize(1);
  ASSERT_EQ(ApplyMigrations(pool_, "things", first).value_or(-1), 1);

  auto edited = ThreeMigrations();
  edited[0].sql += "\n-- edited";
  auto refused = ApplyMigrations(pool_, "things", edited);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("001_devices.sql"));
  // Nothing else was applied either.
  EXPECT_THAT(Recorded("things"), ElementsAre(1));
  EXPECT_EQ(Query<int>(kAdvisoryLocksHere), 0);
}

TEST_F(MigrationsTest, BadInputIsInvalidArgumentBeforeTouchingTheDatabase) {
  for (const std::string& schema :
       std::vector<std::string>{"", "Things", "1things", "things-x", "things; DROP TABLE x",
                                "pg_things", std::string(64, 'a')}) {
    auto r = ApplyMigrations(pool_, schema, ThreeMigrations());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << "'" << schema << "'";
  }
  auto duplicate = ThreeMigrations();
  duplicate[2].version = 1;
  auto r = ApplyMigrations(pool_, "things", duplicate);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("003_status.sql"));
  EXPECT_FALSE(Query<bool>("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'things')"));
}

TEST(MigrationsNoServerTest, UnreachableDatabaseIsUnavailable) {
  PgPool pool(Options("postgresql://127.0.0.1:" + std::to_string(testing::FreePort()) + "/x"));
  auto r = ApplyMigrations(pool, "things", ThreeMigrations());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

// --- LoadMigrationsFromDir -------------------------------------------------------------------

void WriteFile(const std::filesystem::path& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

TEST(LoadMigrationsTest, ReadsSqlFilesSortedByVersion) {
  testing::TempDir dir;
  WriteFile(dir.path() / "010_ten.sql", "SELECT 10;\r\n");
  WriteFile(dir.path() / "002_two.sql", "SELECT 2;");
  WriteFile(dir.path() / "001_one.sql", "SELECT 1;\n");
  WriteFile(dir.path() / "README.md", "not a migration");
  auto loaded = LoadMigrationsFromDir(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 3u);
  EXPECT_EQ((*loaded)[0].version, 1);
  EXPECT_EQ((*loaded)[0].name, "001_one.sql");
  EXPECT_EQ((*loaded)[0].sql, "SELECT 1;\n");
  EXPECT_EQ((*loaded)[1].version, 2);
  EXPECT_EQ((*loaded)[2].version, 10);
  EXPECT_EQ((*loaded)[2].sql, "SELECT 10;\r\n");
}

TEST(LoadMigrationsTest, EmptyDirIsNoMigrations) {
  testing::TempDir dir;
  auto loaded = LoadMigrationsFromDir(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->empty());
}

TEST(LoadMigrationsTest, BadNamesAreRejectedByName) {
  for (const std::string bad : {"init.sql", "_init.sql", "01a_init.sql", "001.sql"}) {
    testing::TempDir dir;
    WriteFile(dir.path() / "001_ok.sql", "SELECT 1;");
    WriteFile(dir.path() / bad, "SELECT 1;");
    auto loaded = LoadMigrationsFromDir(dir.path());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(loaded.status().message(), HasSubstr(bad));
  }
}

TEST(LoadMigrationsTest, DuplicateVersionsAreRejected) {
  testing::TempDir dir;
  WriteFile(dir.path() / "001_one.sql", "SELECT 1;");
  WriteFile(dir.path() / "1_uno.sql", "SELECT 1;");
  auto loaded = LoadMigrationsFromDir(dir.path());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("001_one.sql"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("1_uno.sql"));
}

TEST(LoadMigrationsTest, MissingDirIsNotFound) {
  auto loaded = LoadMigrationsFromDir("/nonexistent/iot/migrations");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
}

TEST(MigrationTest, IsTheAggregateThatEmbedMigrationsGenerates) {
  const std::vector<Migration> embedded = {{1, "001_init.sql", R"iotsql(SELECT 1;)iotsql"}};
  EXPECT_EQ(embedded[0].version, 1);
  EXPECT_EQ(MigrationChecksum("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace iot::common
