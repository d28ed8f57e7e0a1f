#include "iot/common/postgres.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/transaction>
#include <stdexcept>
#include <thread>
#include <vector>

#include "iot/testing/process.h"
#include "iot/testing/servers.h"

namespace iot::common {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

constexpr auto kDeadline = 30s;

PgPoolOptions Options(std::string url, size_t size = 2) {
  return {.url = std::move(url),
          .size = size,
          .acquire_timeout = 5s,
          .connect_timeout = 3s,
          .reconnect_backoff_initial = 20ms,
          .reconnect_backoff_max = 200ms};
}

void Exec(PgPool& pool, const std::string& sql) {
  ASSERT_TRUE(pool.Run([&](pqxx::connection& c) {
                    pqxx::work tx(c);
                    tx.exec(sql);
                    tx.commit();
                  })
                  .ok())
      << sql;
}

absl::StatusOr<int> BackendPid(PgPool& pool) {
  return pool.Call([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1("SELECT pg_backend_pid()")[0].as<int>();
  });
}

// --- Pure functions -------------------------------------------------------------------------

TEST(FromPqxxTest, MapsExceptionsToDomainCodes) {
  EXPECT_EQ(FromPqxx(pqxx::unique_violation("dup", "q", "23505")).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(FromPqxx(pqxx::foreign_key_violation("fk", "q", "23503")).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FromPqxx(pqxx::check_violation("check", "q", "23514")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromPqxx(pqxx::data_exception("bad", "q", "22P02")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromPqxx(pqxx::serialization_failure("ser")).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(FromPqxx(pqxx::deadlock_detected("dl")).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(FromPqxx(pqxx::broken_connection("gone")).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromPqxx(pqxx::in_doubt_error("?")).code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(FromPqxx(pqxx::syntax_error("syntax", "q", "42601")).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(FromPqxx(pqxx::sql_error("cancel", "q", "57014")).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(FromPqxx(std::runtime_error("boom")), absl::InternalError("boom"));
  // Typed classes without a SQLSTATE still map.
  EXPECT_EQ(FromPqxx(pqxx::unique_violation("dup")).code(), absl::StatusCode::kAlreadyExists);
}

TEST(FromPqxxTest, MessageIsOneLine) {
  const absl::Status s =
      FromPqxx(pqxx::unique_violation("ERROR:  duplicate key\nDETAIL:  Key (id)=(1)\n"));
  EXPECT_EQ(s.message(), "ERROR: duplicate key DETAIL: Key (id)=(1)");
}

TEST(ConninfoTest, AddsConnectTimeout) {
  EXPECT_EQ(WithConnectTimeout("postgresql://h/db", 3000ms), "postgresql://h/db?connect_timeout=3");
  EXPECT_EQ(WithConnectTimeout("postgresql://h/db?sslmode=disable", 2500ms),
            "postgresql://h/db?sslmode=disable&connect_timeout=3");
  EXPECT_EQ(WithConnectTimeout("postgresql://h/db?connect_timeout=9", 3000ms),
            "postgresql://h/db?connect_timeout=9");
  EXPECT_EQ(WithConnectTimeout("postgresql://h/db", 100ms), "postgresql://h/db?connect_timeout=2");
  EXPECT_EQ(WithConnectTimeout("host=h dbname=db", 5000ms), "host=h dbname=db connect_timeout=5");
  EXPECT_EQ(WithConnectTimeout("host=h connect_timeout = 7", 5000ms), "host=h connect_timeout = 7");
  EXPECT_EQ(WithConnectTimeout("", 5000ms), "connect_timeout=5");
}

TEST(ConninfoTest, MasksPasswords) {
  EXPECT_EQ(MaskConninfo("postgresql://u:secret@h:5432/db"), "postgresql://u:***@h:5432/db");
  EXPECT_EQ(MaskConninfo("postgresql://u@h/db?password=secret&sslmode=require"),
            "postgresql://u@h/db?password=***&sslmode=require");
  EXPECT_EQ(MaskConninfo("host=h password=secret user=u"), "host=h password=*** user=u");
  EXPECT_EQ(MaskConninfo("host=h password = 'se cret' user=u"), "host=h password = *** user=u");
}

// --- Against a server that is not there ---------------------------------------------------

TEST(PgPoolTest, ConstructionDoesNotConnectAndFailuresAreUnavailable) {
  const std::string url =
      "postgresql://app:s3cr3t@127.0.0.1:" + std::to_string(testing::FreePort()) + "/db";
  PgPool pool(Options(url, 1));
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_THAT(pool.masked_url(), Not(HasSubstr("s3cr3t")));

  const absl::Status first = pool.Ping();
  EXPECT_EQ(first.code(), absl::StatusCode::kUnavailable) << first;
  EXPECT_THAT(first.message(), HasSubstr("cannot connect"));
  EXPECT_THAT(first.message(), HasSubstr("app:***@127.0.0.1"));
  EXPECT_THAT(first.message(), Not(HasSubstr("s3cr3t")));
  // Within the backoff window the slot fails fast, still UNAVAILABLE with the last cause.
  const absl::Status second = pool.Ping();
  EXPECT_EQ(second.code(), absl::StatusCode::kUnavailable) << second;
  EXPECT_THAT(second.message(), Not(HasSubstr("s3cr3t")));
}

TEST(PgPoolTest, GarbageUrlIsUnavailableNotAThrow) {
  PgPool pool(Options("postgresql://[::1/db", 1));
  EXPECT_EQ(pool.Ping().code(), absl::StatusCode::kUnavailable);
}

// --- Against the shared server ----------------------------------------------------------------

class PgPoolDbTest : public ::testing::Test {
 protected:
  PgPoolDbTest() : url_(testing::CreateTestDatabase()), pool_(Options(url_)) {}
  std::string url_;
  PgPool pool_;
};

TEST_F(PgPoolDbTest, RunAndCall) {
  EXPECT_TRUE(pool_.Ping().ok());
  auto sum = pool_.Call([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1("SELECT 40 + 2")[0].as<int>();
  });
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 42);

  const absl::Status passed =
      pool_.Call([](pqxx::connection&) { return absl::NotFoundError("x"); });
  EXPECT_EQ(passed, absl::NotFoundError("x"));
  const absl::StatusOr<std::string> passed_or = pool_.Call(
      [](pqxx::connection&) -> absl::StatusOr<std::string> { return std::string("ok"); });
  EXPECT_EQ(passed_or.value_or(""), "ok");
}

TEST_F(PgPoolDbTest, ConstraintViolationsBecomeDomainErrors) {
  Exec(pool_, "CREATE TABLE parent (id int PRIMARY KEY)");
  Exec(pool_, "CREATE TABLE child (id int PRIMARY KEY REFERENCES parent(id), n int CHECK (n > 0))");
  Exec(pool_, "INSERT INTO parent VALUES (1)");
  const auto exec = [&](const std::string& sql) {
    return pool_.Run([&](pqxx::connection& c) {
      pqxx::work tx(c);
      tx.exec(sql);
      tx.commit();
    });
  };
  const absl::Status dup = exec("INSERT INTO parent VALUES (1)");
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;
  EXPECT_THAT(dup.message(), HasSubstr("parent_pkey"));
  EXPECT_EQ(exec("INSERT INTO child VALUES (7, 1)").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(exec("INSERT INTO child VALUES (1, -1)").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(exec("SELECT 1 / 0").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(exec("SELEKT 1").code(), absl::StatusCode::kInternal);
  // The connection is still good after all that.
  EXPECT_TRUE(pool_.Ping().ok());
}

TEST_F(PgPoolDbTest, ExceptionsFromTheCallerBecomeInternal) {
  const absl::Status s = pool_.Run([](pqxx::connection&) { throw std::logic_error("oops"); });
  EXPECT_EQ(s, absl::InternalError("oops"));
  EXPECT_EQ(pool_.Run([](pqxx::connection&) { throw 42; }).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(pool_.Ping().ok());
}

TEST_F(PgPoolDbTest, BrokenConnectionIsRetriedExactlyOnce) {
  int calls = 0;
  const absl::Status s = pool_.Run([&](pqxx::connection&) {
    ++calls;
    throw pqxx::broken_connection("gone");
  });
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(pool_.Ping().ok());
}

TEST_F(PgPoolDbTest, TerminatedConnectionIsReplacedTransparently) {
  PgPool pool(Options(url_, 1));
  const auto before = BackendPid(pool);
  ASSERT_TRUE(before.ok()) << before.status();

  PgPool admin(Options(url_, 1));
  auto terminated = admin.Call([&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    // The timeout form waits until the backend is gone.
    return tx.exec_params1("SELECT pg_terminate_backend($1, 10000)", *before)[0].as<bool>();
  });
  ASSERT_TRUE(terminated.ok()) << terminated.status();
  ASSERT_TRUE(*terminated);

  const auto after = BackendPid(pool);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_NE(*after, *before);
}

TEST_F(PgPoolDbTest, ExhaustedPoolIsUnavailableAfterAcquireTimeout) {
  PgPoolOptions options = Options(url_, 1);
  options.acquire_timeout = 100ms;
  PgPool pool(options);
  std::promise<void> inside;
  std::promise<void> leave;
  std::shared_future<void> leave_signal = leave.get_future().share();
  std::thread holder([&] {
    EXPECT_TRUE(pool.Run([&](pqxx::connection&) {
                      inside.set_value();
                      leave_signal.wait();
                    })
                    .ok());
  });
  inside.get_future().wait();
  const absl::Status s = pool.Ping();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("no free PostgreSQL connection within 100 ms"));
  leave.set_value();
  holder.join();
  EXPECT_TRUE(pool.Ping().ok());
}

TEST_F(PgPoolDbTest, ManyThreadsShareFewConnections) {
  Exec(pool_, "CREATE TABLE hits (n int)");
  std::vector<std::thread> threads;
  threads.reserve(8);
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        const absl::Status s = pool_.Run([](pqxx::connection& c) {
          pqxx::work tx(c);
          tx.exec("INSERT INTO hits VALUES (1)");
          tx.commit();
        });
        if (!s.ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  auto count = pool_.Call([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1("SELECT count(*) FROM hits")[0].as<int>();
  });
  EXPECT_EQ(count.value_or(-1), 200);
  auto backends = pool_.Call([&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")[0]
        .as<int>();
  });
  EXPECT_LE(backends.value_or(99), 2);
}

// --- Against a private server that goes away and comes back -------------------------------

TEST(PgPoolRestartTest, UnavailableWhileDownThenRecoversWithoutANewPool) {
  testing::TestPostgres server;
  PgPool pool(Options(server.Url(), 2));
  ASSERT_TRUE(pool.Ping().ok());

  server.Stop();
  // Every call fails cleanly while the server is down, idle connections included.
  for (int i = 0; i < 5; ++i) {
    const absl::Status s = pool.Ping();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  }

  server.Start();
  EXPECT_TRUE(testing::WaitUntil([&] { return pool.Ping().ok(); }, kDeadline));
  auto value = pool.Call([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1("SELECT 7")[0].as<int>();
  });
  EXPECT_EQ(value.value_or(0), 7);
}

}  // namespace
}  // namespace iot::common
