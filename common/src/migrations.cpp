#include "iot/common/migrations.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <map>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/result>
#include <pqxx/transaction>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "iot/common/crypto.h"
#include "iot/common/status.h"

namespace iot::common {
namespace {

constexpr size_t kMaxIdentifierBytes = 63;

absl::Status ValidateSchemaName(const std::string& schema) {
  if (schema.empty() || schema.size() > kMaxIdentifierBytes) {
    return InvalidField("schema", absl::StrCat("'", schema, "' must be 1 to 63 characters"));
  }
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  const auto ok_char = [&](char c) { return (c >= 'a' && c <= 'z') || is_digit(c) || c == '_'; };
  if (is_digit(schema.front()) || !std::all_of(schema.begin(), schema.end(), ok_char)) {
    return InvalidField(
        "schema", absl::StrCat("'", schema, "' is not a lowercase identifier [a-z_][a-z0-9_]*"));
  }
  if (schema.starts_with("pg_")) {
    return InvalidField("schema", absl::StrCat("'", schema, "': pg_* names are reserved"));
  }
  return absl::OkStatus();
}

// The migrations in version order, or INVALID_ARGUMENT for duplicates and bad entries.
absl::StatusOr<std::vector<const Migration*>> Ordered(const std::vector<Migration>& migrations) {
  std::vector<const Migration*> out;
  out.reserve(migrations.size());
  for (const Migration& m : migrations) {
    if (m.version < 0 || m.name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "migration '", m.name, "' (version ", m.version, ") needs a name and a version >= 0"));
    }
    out.push_back(&m);
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Migration* a, const Migration* b) { return a->version < b->version; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i]->version == out[i - 1]->version) {
      return absl::InvalidArgumentError(absl::StrCat("migrations ", out[i - 1]->name, " and ",
                                                     out[i]->name, " have the same version ",
                                                     out[i]->version));
    }
  }
  return out;
}

// Holds the schema's migration lock for the life of the object, on one session. The unlock
// never throws; if it cannot run, the session is closed, which releases the lock too.
class MigrationLock {
 public:
  MigrationLock(pqxx::connection& conn, const std::string& schema) : conn_(conn), schema_(schema) {
    pqxx::nontransaction tx(conn_);
    tx.exec_params(std::string(kLock), schema_);
  }
  ~MigrationLock() {
    try {
      if (conn_.is_open()) {
        pqxx::nontransaction tx(conn_);
        tx.exec_params(std::string(kUnlock), schema_);
      }
    } catch (const std::exception& e) {
      spdlog::warn("releasing the migration lock of schema {} failed ({}); closing the session",
                   schema_, e.what());
      conn_.disconnect();
    }
  }
  MigrationLock(const MigrationLock&) = delete;
  MigrationLock& operator=(const MigrationLock&) = delete;

 private:
  // Two-key form: its key space is separate from single bigint advisory locks.
  static constexpr std::string_view kLock =
      "SELECT pg_advisory_lock(hashtext('iot.migrations'), hashtext($1))";
  static constexpr std::string_view kUnlock =
      "SELECT pg_advisory_unlock(hashtext('iot.migrations'), hashtext($1))";

  pqxx::connection& conn_;
  std::string schema_;
};

struct Recorded {
  std::string name;
  std::string checksum;
};

// The schema and its history table, if missing.
void CreateHistory(pqxx::connection& conn, const std::string& quoted, const std::string& history) {
  pqxx::work tx(conn);
  tx.exec0("CREATE SCHEMA IF NOT EXISTS " + quoted);
  tx.exec0("CREATE TABLE IF NOT EXISTS " + history +
           " (version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
           " applied_at timestamptz NOT NULL DEFAULT now())");
  tx.commit();
}

std::map<int, Recorded> ReadHistory(pqxx::connection& conn, const std::string& history) {
  std::map<int, Recorded> recorded;
  pqxx::nontransaction tx(conn);
  for (const auto& row : tx.exec("SELECT version, name, checksum FROM " + history)) {
    recorded[row[0].as<int>()] = {row[1].as<std::string>(), row[2].as<std::string>()};
  }
  return recorded;
}

// FAILED_PRECONDITION when an applied migration changed since; warns about renamed ones and
// about applied versions this binary does not know.
absl::Status CheckHistory(const std::vector<const Migration*>& ordered,
                          const std::vector<std::string>& checksums,
                          const std::map<int, Recorded>& recorded, const std::string& schema) {
  for (size_t i = 0; i < ordered.size(); ++i) {
    const Migration& m = *ordered[i];
    const auto it = recorded.find(m.version);
    if (it == recorded.end()) {
      continue;
    }
    if (it->second.checksum != checksums[i]) {
      return absl::FailedPreconditionError(
          absl::StrCat("migration ", m.name, " (version ", m.version, ") of schema ", schema,
                       " changed after it was applied (as ", it->second.name, "): checksum ",
                       it->second.checksum, " recorded, ", checksums[i],
                       " now; add a new migration instead of editing an applied one"));
    }
    if (it->second.name != m.name) {
      spdlog::warn("migration {} of schema {} was applied as {}", m.name, schema, it->second.name);
    }
  }
  for (const auto& [version, entry] : recorded) {
    const bool known = std::any_of(ordered.begin(), ordered.end(),
                                   [v = version](const Migration* m) { return m->version == v; });
    if (!known) {
      spdlog::warn("schema {} has migration {} ({}) that this binary does not know", schema,
                   entry.name, version);
    }
  }
  return absl::OkStatus();
}

// Applies one migration and records it in one transaction. A lost connection or an unknown
// commit outcome throws pqxx::broken_connection (for the pool to retry); any other failure
// was rolled back and is returned.
absl::Status ApplyOne(pqxx::connection& conn, const std::string& quoted, const std::string& history,
                      const Migration& m, const std::string& checksum, const std::string& schema) {
  try {
    pqxx::work tx(conn);
    tx.exec0("SET LOCAL search_path TO " + quoted);
    tx.exec(m.sql);
    tx.exec_params0("INSERT INTO " + history + " (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, checksum);
    tx.commit();
  } catch (const pqxx::in_doubt_error& e) {
    // Whether the commit happened is unknown: have the pool retry on a new connection,
    // which re-reads the history under the lock and finds out.
    throw pqxx::broken_connection(e.what());
  } catch (const pqxx::broken_connection&) {
    throw;
  } catch (const std::exception& e) {
    if (!conn.is_open()) {
      throw pqxx::broken_connection(e.what());
    }
    const absl::Status cause = FromPqxx(e);
    return absl::Status(cause.code(),
                        absl::StrCat("migration ", m.name, " (version ", m.version, ") of schema ",
                                     schema, " failed and was rolled back: ", cause.message()));
  }
  return absl::OkStatus();
}

}  // namespace

std::string MigrationChecksum(std::string_view sql) { return Sha256Hex(sql); }

absl::StatusOr<std::vector<Migration>> LoadMigrationsFromDir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("migrations directory ", dir.string(), " does not exist"));
  }
  std::vector<Migration> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".sql") || !entry.is_regular_file()) {
      continue;
    }
    // Same rule as cmake/EmbedMigrations.cmake: ^([0-9]+)_.*\.sql$
    const size_t underscore = name.find('_');
    int version = 0;
    const char* digits_end = name.data() + (underscore == std::string::npos ? 0 : underscore);
    const auto [end, parse_error] = std::from_chars(name.data(), digits_end, version);
    if (underscore == std::string::npos || underscore == 0 || parse_error != std::errc{} ||
        end != digits_end ||
        !std::all_of(name.data(), digits_end, [](char c) { return c >= '0' && c <= '9'; })) {
      return absl::InvalidArgumentError(absl::StrCat("migration file ", name, " in ", dir.string(),
                                                     ": name must be NNN_description.sql"));
    }
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream sql;
    sql << in.rdbuf();
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("migration file ", entry.path().string(), " cannot be read"));
    }
    out.push_back(Migration{version, name, sql.str()});
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("reading migrations directory ", dir.string(), ": ", ec.message()));
  }
  std::sort(out.begin(), out.end(), [](const Migration& a, const Migration& b) {
    return a.version != b.version ? a.version < b.version : a.name < b.name;
  });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].version == out[i - 1].version) {
      return absl::InvalidArgumentError(absl::StrCat("migration files ", out[i - 1].name, " and ",
                                                     out[i].name, " in ", dir.string(),
                                                     " have the same version ", out[i].version));
    }
  }
  return out;
}

absl::StatusOr<int> ApplyMigrations(PgPool& pool, const std::string& schema,
                                    const std::vector<Migration>& migrations) {
  if (absl::Status valid = ValidateSchemaName(schema); !valid.ok()) {
    return valid;
  }
  auto ordered = Ordered(migrations);
  if (!ordered.ok()) {
    return ordered.status();
  }
  std::vector<std::string> checksums;
  checksums.reserve(ordered->size());
  for (const Migration* m : *ordered) {
    checksums.push_back(MigrationChecksum(m->sql));
  }

  // Counted across the pool's retry: a retry after a lost connection re-reads the history.
  int applied = 0;
  absl::Status outcome;
  const absl::Status run = pool.Run([&](pqxx::connection& conn) {
    outcome = absl::OkStatus();
    const std::string quoted = conn.quote_name(schema);
    const std::string history = quoted + ".schema_migrations";
    MigrationLock lock(conn, schema);
    CreateHistory(conn, quoted, history);
    std::map<int, Recorded> recorded = ReadHistory(conn, history);
    outcome = CheckHistory(*ordered, checksums, recorded, schema);
    if (!outcome.ok()) {
      return;
    }
    for (size_t i = 0; i < ordered->size(); ++i) {
      const Migration& m = *(*ordered)[i];
      if (recorded.contains(m.version)) {
        continue;
      }
      outcome = ApplyOne(conn, quoted, history, m, checksums[i], schema);
      if (!outcome.ok()) {
        return;
      }
      recorded[m.version] = {m.name, checksums[i]};
      ++applied;
      spdlog::info("applied migration {} to schema {}", m.name, schema);
    }
  });
  if (!run.ok()) {
    return absl::Status(run.code(), absl::StrCat("migrating schema ", schema, ": ", run.message()));
  }
  if (!outcome.ok()) {
    spdlog::warn("{}", std::string(outcome.message()));
    return outcome;
  }
  return applied;
}

}  // namespace iot::common
