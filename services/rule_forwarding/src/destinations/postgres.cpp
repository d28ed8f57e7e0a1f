#include "iot/common/postgres.h"

#include <fmt/format.h>

#include <algorithm>
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
  common::Url parsed;  // user, password, host, port, dbname (path)
  std::vector<std::pair<std::string, std::string>> params;  // of kUrlParameters
  std::string table;  // quoted, schema-qualified when given so
  std::string id_column;
};

/// The URL parameters an action may set. Nothing else reaches libpq: no `host`/`hostaddr`
/// overriding the checked address, no file names of the platform's host (`service`,
/// `passfile`, `sslkey`, ...).
constexpr std::string_view kUrlParameters[] = {"sslmode", "application_name", "connect_timeout"};

bool IsDatabaseName(std::string_view name) {
  return !name.empty() && name.size() <= 63 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == '$';
  });
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> UrlParameters(
    std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < query.size()) {
    const size_t amp = std::min(query.find('&', pos), query.size());
    const std::string_view pair = query.substr(pos, amp - pos);
    pos = amp + 1;
    if (pair.empty()) {
      continue;
    }
    const size_t eq = pair.find('=');
    const std::string key(pair.substr(0, eq));
    const std::string value(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    if (std::find(std::begin(kUrlParameters), std::end(kUrlParameters), key) ==
        std::end(kUrlParameters)) {
      return common::InvalidField(
          "url",
          fmt::format("parameter '{}' is not supported (only {})", key,
                      fmt::join(std::begin(kUrlParameters), std::end(kUrlParameters), ", ")));
    }
    const bool valid =
        key == "sslmode" ? (value == "disable" || value == "allow" || value == "prefer" ||
                            value == "require" || value == "verify-ca" || value == "verify-full")
        : key == "connect_timeout"
            ? (!value.empty() && value.size() <= 2 &&
               value.find_first_not_of("0123456789") == std::string::npos)
            : value.size() <= 63 && value.find_first_of("'\\ %&=") == std::string::npos;
    if (!valid) {
      return common::InvalidField("url", fmt::format("bad value for parameter '{}'", key));
    }
    out.emplace_back(key, value);
  }
  return out;
}

/// A libpq keyword value in single quotes.
std::string Quoted(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\\' || c == '\'') {
      out += '\\';
    }
    out += c;
  }
  return out + "'";
}

/// The connection string of `target` pinned to `addresses` (checked by the egress policy):
/// libpq connects to them and never resolves the host name (which stays for TLS checks).
/// Every keyword is explicit, so no PG* variable or password file of the platform's host
/// fills one in.
std::string PinnedConninfo(const Target& target, const std::vector<common::IpAddress>& addresses) {
  std::vector<std::string> hosts;
  std::vector<std::string> hostaddrs;
  for (const common::IpAddress& a : addresses) {
    hosts.push_back(target.parsed.host);
    hostaddrs.push_back(a.ToString());
  }
  std::string conninfo = fmt::format(
      "host={} hostaddr={} port={} dbname={} user={} password={} passfile={} "
      "connect_timeout=3",
      Quoted(fmt::format("{}", fmt::join(hosts, ","))),
      Quoted(fmt::format("{}", fmt::join(hostaddrs, ","))),
      target.parsed.port == 0 ? 5432 : target.parsed.port, Quoted(target.parsed.path),
      Quoted(target.parsed.user), Quoted(target.parsed.password),
      Quoted("/nonexistent/iot-rule-forwarding-no-passfile"));
  for (const auto& [key, value] : target.params) {
    conninfo += fmt::format(" {}={}", key, Quoted(value));
  }
  return conninfo;
}

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
      parsed->host.empty() || parsed->user.empty()) {
    return common::InvalidField("url", "must be a postgresql://user:password@host:port/db URL");
  }
  if (!common::IsHostName(parsed->host)) {
    return common::InvalidField("url",
                                fmt::format("'{}' is not a host name or IP address", parsed->host));
  }
  if (!IsDatabaseName(parsed->path)) {
    return common::InvalidField(
        "url", "must name the database (postgresql://user:password@host:port/db, [A-Za-z0-9_.$-])");
  }
  auto params = UrlParameters(parsed->query);
  if (!params.ok()) {
    return params.status();
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
  return Target{.url = *url,
                .parsed = *std::move(parsed),
                .params = *std::move(params),
                .table = *quoted,
                .id_column = *id_column};
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
  explicit PostgresDestination(std::shared_ptr<const common::EgressPolicy> egress)
      : egress_(std::move(egress)) {}

  [[nodiscard]] std::string_view type() const override { return "postgres"; }

  [[nodiscard]] absl::Status ValidateConfig(const nlohmann::json& config) const override {
    auto target = ParseTarget(config);
    if (!target.ok()) {
      return target.status();
    }
    return settings::CheckDestinationHost(*egress_, target->parsed.host, "url");
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
        // Every new connection is checked; a pooled one went to an address checked then.
        auto addresses = settings::ResolveDestination(*egress_, target->parsed.host);
        if (!addresses.ok()) {
          return addresses.status();
        }
        conn = std::make_unique<pqxx::connection>(PinnedConninfo(*target, *addresses));
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

  const std::shared_ptr<const common::EgressPolicy> egress_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<pqxx::connection>>> idle_;
};

}  // namespace

std::shared_ptr<Destination> MakePostgresDestination(
    std::shared_ptr<const common::EgressPolicy> egress) {
  return std::make_shared<PostgresDestination>(std::move(egress));
}

}  // namespace iot::rule_forwarding
