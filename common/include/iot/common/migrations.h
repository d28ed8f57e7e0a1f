#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/common/postgres.h"

namespace iot::common {

/// One versioned SQL migration, from `NNN_name.sql`. An aggregate in this field order:
/// cmake/EmbedMigrations.cmake generates `{1, "001_init.sql", R"iotsql(...)iotsql"}`.
struct Migration {
  int version = 0;
  std::string name;  ///< The file name, e.g. `001_init.sql`; used in errors and the history.
  std::string sql;
};

/// Reads every `*.sql` file of `dir` (other files are ignored), sorted by version. A `.sql`
/// file not named `NNN_name.sql`, or two files with one version -> INVALID_ARGUMENT naming the
/// file(s); `dir` missing -> NOT_FOUND.
absl::StatusOr<std::vector<Migration>> LoadMigrationsFromDir(const std::filesystem::path& dir);

/// Hex SHA-256 of `sql`: what `schema_migrations.checksum` records.
std::string MigrationChecksum(std::string_view sql);

/// Brings `schema` up to date; returns how many migrations this call applied.
///
/// Creates `schema` and `<schema>.schema_migrations` if missing. Runners in any number of
/// threads or processes take turns on a session advisory lock keyed by the schema name.
/// Each pending migration runs, in version order, in its own transaction together with its
/// history row, with `search_path` set to `schema` alone (unqualified names land there; so
/// no statement that cannot run in a transaction block, such as CREATE INDEX CONCURRENTLY).
/// A failing migration is rolled back, the later ones are not tried, and the error names its
/// file and carries PostgreSQL's message. If an applied migration's SQL changed (checksum),
/// nothing is applied and the result is FAILED_PRECONDITION naming the file. `schema` must be
/// a lowercase identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes, not `pg_*`): else
/// INVALID_ARGUMENT, as for duplicate or negative versions.
absl::StatusOr<int> ApplyMigrations(PgPool& pool, const std::string& schema,
                                    const std::vector<Migration>& migrations);

}  // namespace iot::common
