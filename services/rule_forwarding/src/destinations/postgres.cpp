#include "iot/common/postgres.h"

#include <fmt/format.h>

#include <map>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <vector>

#include "destinations/settings.h"
#include "iot/common/status.h"
#include "iot/common/url.h"
#include "iot/rule_forwarding/destinations.h"

namespace iot::rule_forwarding {
namespace {

struct Target {
  std::string url;
  std::string table;  // quoted, schema-qualified when given so
  std::string id_column;
};

absl::StatusOr<std::string> QuotedTable(const std::string& table) {
  const size_t dot = table.find('.');
  const std::string schema = dot == std::string::npos ? "" : table.substr(0, dot);
  const std::string name = dot == std::string::npos ? table : table.substr(dot + 1);
  if ((dot != std::string::npos && !settings::IsIdentifier(schema)) ||
      !settings::IsIdentifier(name)) {
    return common::InvalidField(
        "table", "must be [schema.]table with names matching [A-Za-z_][A-Za-z0-9_]{0,62}");
  }
  return schema.empty() ? fmt::format("\"{}\"", name) : fmt::format("\"{}\".\"{}\"", schema, name);
}

absl::StatusOr<Target> ParseTarget(const nlohmann::json& config) {
  if (auto s = settings::CheckKeys(config, {"url", "table", "id_column"}); !s.ok()) {
    return s;
  }
  auto url = settings::String(config, "url", true);
  if (!url.ok()) {
    return url.status();
  }
  auto parsed = common::ParseUrl(*url);
  if (!parsed.ok() || (parsed->scheme != "postgresql" && parsed->scheme != "postgres") ||
      parsed->host.empty()) {
    return common::InvalidField("url", "must be a postgresql://user:password@host:port/db URL");
  }
  auto table = settings::String(config, "table", true);
  if (!table.ok()) {
    return table.status();
  }
  auto quoted = QuotedTable(*table);
  if (!quoted.ok()) {
    return quoted.status();
  }
  auto id_column = settings::String(config, "id_column", false);
  if (!id_column.ok()) {
    return id_column.status();
  }
  if (!id_column->empty() && !settings::IsIdentifier(*id_column)) {
    return common::InvalidField("id_column", "must match [A-Za-z_][A-Za-z0-9_]{0,62}");
  }
  return Target{.url = *url, .table = *quoted, .id_column = *id_column};
}

std::string SqlValue(pqxx::connection& conn, const nlohmann::json& value) {
  if (value.is_null()) {
    return "NULL";
  }
  const std::string text =
      value.is_string() ? value.get<std::string>()
                        : value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return conn.quote(text);
}

/// One multi-row INSERT of `rows` (payload objects); the columns are the union of their keys.
absl::StatusOr<std::string> InsertStatement(pqxx::connection& conn, const Target& target,
                                            std::span<const Delivery> rows) {
  std::vector<std::string> columns;
  std::set<std::string> seen;
  for (const Delivery& d : rows) {
    if (!d.payload.is_object()) {
      return absl::InvalidArgumentError("the SELECT result is not a JSON object");
    }
    for (const auto& [key, value] : d.payload.items()) {
      if (key == target.id_column) {
        continue;
      }
      if (!settings::IsIdentifier(key)) {
        return absl::InvalidArgumentError(
            fmt::format("'{}' is not a valid column name (use AS to rename it)", key));
      }
      if (seen.insert(key).second) {
        columns.push_back(key);
      }
    }
  }
  std::string sql = "INSERT INTO " + target.table + " (";
  std::vector<std::string> quoted;
  for (const std::string& c : columns) {
    quoted.push_back("\"" + c + "\"");
  }
  if (!target.id_column.empty()) {
    quoted.push_back("\"" + target.id_column + "\"");
  }
  if (quoted.empty()) {
    return absl::InvalidArgumentError("the SELECT result has no fields");
  }
  sql += fmt::format("{}) VALUES ", fmt::join(quoted, ", "));
  for (size_t r = 0; r < rows.size(); ++r) {
    std::vector<std::string> values;
    for (const std::string& c : columns) {
      auto it = rows[r].payload.find(c);
      values.push_back(it == rows[r].payload.end() ? "NULL" : SqlValue(conn, *it));
    }
    if (!target.id_column.empty()) {
      values.push_back(conn.quote(rows[r].delivery_id));
    }
    sql += fmt::format("{}({})", r == 0 ? "" : ", ", fmt::join(values, ", "));
  }
  sql += " ON CONFLICT DO NOTHING";
  return sql;
}

class PostgresDestination final : public Destination {
 public:
  [[nodiscard]] std::string_view type() const override { return "postgres"; }

  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& config) const override {
    return ParseTarget(config).status();
  }

  absl::Status Deliver(std::span<const Delivery> batch) override {
    size_t begin = 0;
    while (begin < batch.size()) {
      size_t end = begin + 1;
      while (end < batch.size() && batch[end].action_config == batch[begin].action_config) {
        ++end;
      }
      if (absl::Status s = DeliverRun(batch.subspan(begin, end - begin)); !s.ok()) {
        return s;
      }
      begin = end;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status DeliverRun(std::span<const Delivery> rows) {
    static const nlohmann::json kEmpty = nlohmann::json::object();
    auto target = ParseTarget(rows.front().action_config ? *rows.front().action_config : kEmpty);
    if (!target.ok()) {
      return absl::InvalidArgumentError(std::string(target.status().message()));
    }
    std::unique_ptr<pqxx::connection> conn = Take(target->url);
    try {
      if (!conn || !conn->is_open()) {
        conn = std::make_unique<pqxx::connection>(
            common::WithConnectTimeout(target->url, std::chrono::seconds(3)));
      }
      auto sql = InsertStatement(*conn, *target, rows);
      if (!sql.ok()) {
        Give(target->url, std::move(conn));
        return sql.status();
      }
      pqxx::work tx(*conn);
      tx.exec("SET LOCAL statement_timeout = 10000");
      tx.exec(*sql);
      tx.commit();
      Give(target->url, std::move(conn));
      return absl::OkStatus();
    } catch (const pqxx::broken_connection& e) {
      return absl::UnavailableError(common::MaskConninfo(e.what()));
    } catch (const std::exception& e) {
      absl::Status status = common::FromPqxx(e);
      if (status.code() != absl::StatusCode::kUnavailable && conn && conn->is_open()) {
        Give(target->url, std::move(conn));
      }
      return status;
    }
  }

  /// An idle connection to `url` (kept open between batches), or null.
  std::unique_ptr<pqxx::connection> Take(const std::string& url) {
    std::lock_guard lock(mu_);
    auto& idle = idle_[url];
    if (idle.empty()) {
      return nullptr;
    }
    auto conn = std::move(idle.back());
    idle.pop_back();
    return conn;
  }
  void Give(const std::string& url, std::unique_ptr<pqxx::connection> conn) {
    std::lock_guard lock(mu_);
    idle_[url].push_back(std::move(conn));
  }

  std::mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<pqxx::connection>>> idle_;
};

}  // namespace

std::shared_ptr<Destination> MakePostgresDestination() {
  return std::make_shared<PostgresDestination>();
}

}  // namespace iot::rule_forwarding
