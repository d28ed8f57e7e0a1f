#include "iot/rule_forwarding/history_store.h"

#include <fmt/format.h>

#include <pqxx/pqxx>
#include <pqxx/tablewriter>

namespace iot::rule_forwarding {
namespace {

constexpr const char* kTable = "rule_forwarding.property_history";
constexpr const char* kMsOf = "(extract(epoch FROM {}) * 1000)::bigint";

/// Whether `e` is the "already exists" of two replicas creating the same partition at once.
bool IsDuplicateObject(const pqxx::sql_error& e) {
  return e.sqlstate() == "42P07" || e.sqlstate() == "23505";
}

/// Appends `text` to a line of COPY's text format: backslash and control characters escaped.
void AppendCopyField(std::string& line, std::string_view text) {
  size_t plain = 0;
  while (plain < text.size() && static_cast<unsigned char>(text[plain]) >= 0x20 &&
         text[plain] != '\\') {
    ++plain;
  }
  line.append(text.substr(0, plain));
  for (const char c : text.substr(plain)) {
    switch (c) {
      case '\\':
        line += "\\\\";
        break;
      case '\n':
        line += "\\n";
        break;
      case '\r':
        line += "\\r";
        break;
      case '\t':
        line += "\\t";
        break;
      case '\b':
        line += "\\b";
        break;
      case '\f':
        line += "\\f";
        break;
      case '\v':
        line += "\\v";
        break;
      default:
        line += c;
    }
  }
}

}  // namespace

void CopyHistoryRows(pqxx::transaction_base& tx, const std::string& table,
                     std::span<const HistoryRow> rows) {
  // The lines are built here: pqxx::stream_to escapes every field a character at a time, which
  // was the largest single cost of rule-forwarding at ~30k rows/s. tablewriter is the
  // deprecated way to write raw COPY lines in libpqxx 6 (stream_to keeps that private).
  const std::vector<std::string> columns = {"tenant_id", "device_id",  "service_id", "property",
                                            "ts",        "dedupe_key", "num",        "value"};
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  pqxx::tablewriter writer(tx, table, columns.begin(), columns.end());
#pragma GCC diagnostic pop
  std::string line;
  for (const HistoryRow& row : rows) {
    line.clear();
    for (const std::string* field :
         {&row.tenant_id, &row.device_id, &row.service_id, &row.property}) {
      AppendCopyField(line, *field);
      line += '\t';
    }
    AppendCopyField(line, PgTimestamp(row.time_ms));
    line += '\t';
    AppendCopyField(line, row.dedupe_key);
    line += '\t';
    if (row.num) {
      fmt::format_to(std::back_inserter(line), "{}", *row.num);
    } else {
      line += "\\N";
    }
    line += '\t';
    AppendCopyField(line, row.value_json);
    writer.write_raw_line(line);
  }
  writer.complete();
}

PgHistoryStore::PgHistoryStore(std::shared_ptr<common::PgPool> pool, HistoryRetention retention)
    : pool_(std::move(pool)), retention_(retention) {}

std::vector<HistoryRow> PgHistoryStore::InWindow(std::span<const HistoryRow> rows,
                                                 int64_t now_ms) const {
  const int64_t oldest = now_ms - retention_.retention_days * kMsPerDay;
  const int64_t newest_day = DayOf(now_ms) + retention_.days_ahead;
  std::vector<HistoryRow> kept;
  kept.reserve(rows.size());
  for (const HistoryRow& row : rows) {
    if (row.time_ms >= oldest && DayOf(row.time_ms) <= newest_day) {
      kept.push_back(row);
    }
  }
  return kept;
}

absl::Status PgHistoryStore::EnsurePartitions(const std::set<int64_t>& days) {
  std::vector<int64_t> missing;
  {
    std::lock_guard lock(mu_);
    for (int64_t day : days) {
      if (!known_days_.contains(day)) {
        missing.push_back(day);
      }
    }
  }
  if (missing.empty()) {
    return absl::OkStatus();
  }
  absl::Status status = pool_->Run([&](pqxx::connection& c) {
    for (int64_t day : missing) {
      const std::string sql = fmt::format(
          "CREATE TABLE IF NOT EXISTS rule_forwarding.{} PARTITION OF {} FOR VALUES FROM ('{}') "
          "TO ('{}')",
          PartitionName(day), kTable, PgTimestamp(day * kMsPerDay),
          PgTimestamp((day + 1) * kMsPerDay));
      try {
        pqxx::nontransaction tx(c);
        tx.exec0(sql);
      } catch (const pqxx::sql_error& e) {
        if (!IsDuplicateObject(e)) {
          throw;
        }
      }
    }
  });
  if (status.ok()) {
    std::lock_guard lock(mu_);
    known_days_.insert(missing.begin(), missing.end());
  }
  return status;
}

absl::StatusOr<int64_t> PgHistoryStore::Insert(std::span<const HistoryRow> rows) {
  if (rows.empty()) {
    return 0;
  }
  std::set<int64_t> days;
  for (const HistoryRow& row : rows) {
    days.insert(DayOf(row.time_ms));
  }
  if (absl::Status s = EnsurePartitions(days); !s.ok()) {
    return s;
  }
  // Fast path: one COPY straight into the table. Only a batch holding rows stored before (a
  // retried delivery) hits the primary key; that batch goes through a staging table instead.
  auto direct = pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<int64_t> {
    try {
      pqxx::work tx(c);
      CopyHistoryRows(tx, kTable, rows);
      tx.commit();
      return static_cast<int64_t>(rows.size());
    } catch (const pqxx::unique_violation&) {
      return absl::AlreadyExistsError("some rows are stored already");
    }
  });
  if (!absl::IsAlreadyExists(direct.status())) {
    return direct;
  }
  return pool_->Call([&](pqxx::connection& c) -> int64_t {
    pqxx::work tx(c);
    tx.exec0(fmt::format("CREATE TEMP TABLE history_stage (LIKE {}) ON COMMIT DROP", kTable));
    CopyHistoryRows(tx, "history_stage", rows);
    const pqxx::result r = tx.exec(
        fmt::format("INSERT INTO {} SELECT * FROM history_stage ON CONFLICT DO NOTHING", kTable));
    tx.commit();
    return static_cast<int64_t>(r.affected_rows());
  });
}

absl::StatusOr<HistoryPage> PgHistoryStore::Query(const HistoryQuery& q) {
  return pool_->Call([&](pqxx::connection& c) -> HistoryPage {
    pqxx::read_transaction tx(c);
    HistoryPage page;
    const std::string start = PgTimestamp(q.start_ms);
    const std::string end = PgTimestamp(q.end_ms);
    const int limit = q.limit + 1;
    if (q.bucket_seconds == 0) {
      const std::string after = PgTimestamp(q.after_ms ? *q.after_ms : q.start_ms - 1);
      const pqxx::result r = tx.exec_params(
          fmt::format("SELECT {}, value::text, dedupe_key FROM {} WHERE tenant_id = $1 AND "
                      "device_id = $2 AND service_id = $3 AND property = $4 AND ts >= $5 AND "
                      "ts < $6 AND (ts, dedupe_key) > ($7::timestamptz, $8) "
                      "ORDER BY ts, dedupe_key LIMIT $9",
                      fmt::format(kMsOf, "ts"), kTable),
          q.tenant_id, q.device_id, q.service_id, q.property, start, end, after,
          q.after_ms ? q.after_key : std::string(), limit);
      for (const auto& row : r) {
        page.values.push_back({.time_ms = row[0].as<int64_t>(),
                               .value_json = row[1].as<std::string>(),
                               .key = row[2].as<std::string>()});
      }
      if (page.values.size() > static_cast<size_t>(q.limit)) {
        page.values.pop_back();
        page.next_marker = RawMarker(page.values.back().time_ms, page.values.back().key);
      }
      return page;
    }
    const std::string from = q.after_ms ? PgTimestamp(std::max(*q.after_ms, q.start_ms)) : start;
    const pqxx::result r = tx.exec_params(
        fmt::format("SELECT {}, count(*), min(num), max(num), avg(num) FROM (SELECT "
                    "date_bin(make_interval(secs => $7::double precision), ts, "
                    "TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b, num FROM {} WHERE "
                    "tenant_id = $1 AND device_id = $2 AND service_id = $3 AND property = $4 "
                    "AND ts >= $5 AND ts < $6) x GROUP BY b ORDER BY b LIMIT $8",
                    fmt::format(kMsOf, "b"), kTable),
        q.tenant_id, q.device_id, q.service_id, q.property, from, end, q.bucket_seconds, limit);
    for (const auto& row : r) {
      HistoryBucket b;
      b.start_ms = row[0].as<int64_t>();
      b.count = row[1].as<int64_t>();
      if (!row[2].is_null()) {
        b.min = row[2].as<double>();
        b.max = row[3].as<double>();
        b.avg = row[4].as<double>();
      }
      page.buckets.push_back(b);
    }
    if (page.buckets.size() > static_cast<size_t>(q.limit)) {
      page.buckets.pop_back();
      page.next_marker = BucketMarker(page.buckets.back().start_ms + q.bucket_seconds * 1000);
    }
    return page;
  });
}

absl::StatusOr<std::vector<std::string>> PgHistoryStore::Partitions() {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<std::string> names;
    for (const auto& row : tx.exec(fmt::format(
             "SELECT child.relname FROM pg_inherits i JOIN pg_class child ON child.oid = "
             "i.inhrelid WHERE i.inhparent = '{}'::regclass ORDER BY 1",
             kTable))) {
      names.push_back(row[0].as<std::string>());
    }
    return names;
  });
}

absl::StatusOr<std::vector<std::string>> PgHistoryStore::Maintain(int64_t now_ms) {
  std::set<int64_t> days;
  for (int64_t d = DayOf(now_ms) - 1; d <= DayOf(now_ms) + retention_.days_ahead; ++d) {
    days.insert(d);
  }
  if (absl::Status s = EnsurePartitions(days); !s.ok()) {
    return s;
  }
  auto partitions = Partitions();
  if (!partitions.ok()) {
    return partitions.status();
  }
  std::vector<std::string> drop = PartitionsToDrop(*partitions, now_ms, retention_.retention_days);
  absl::Status status = pool_->Run([&](pqxx::connection& c) {
    for (const std::string& name : drop) {
      pqxx::work tx(c);
      tx.exec0(fmt::format("DROP TABLE IF EXISTS rule_forwarding.{}", tx.quote_name(name)));
      tx.commit();
    }
  });
  if (!status.ok()) {
    return status;
  }
  std::lock_guard lock(mu_);
  for (const std::string& name : drop) {
    if (auto day = PartitionDay(name)) {
      known_days_.erase(*day);
    }
  }
  return drop;
}

}  // namespace iot::rule_forwarding
