#include "iot/command_dispatch/pg_request_store.h"

#include <fmt/format.h>

#include <charconv>
#include <pqxx/pqxx>
#include <unordered_map>

#include "iot/common/crypto.h"
#include "iot/common/logging.h"
#include "iot/common/status.h"

namespace iot::command_dispatch {
namespace {

using std::chrono::milliseconds;

/// A timestamp column as RFC 3339 UTC text ("" for NULL).
std::string Rfc3339(std::string_view column) {
  return fmt::format(
      "coalesce(to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')", column);
}

const std::string& Columns() {
  static const std::string columns = fmt::format(
      "request_id, tenant_id, device_id, kind, service_id, command_name, name, body, raw, topic, "
      "payload, send_strategy, expire_seconds, status, result, error, {}, {}, {}, {}, {}, seq",
      Rfc3339("created_at"), Rfc3339("sent_at"), Rfc3339("delivered_at"), Rfc3339("response_at"),
      Rfc3339("finished_at"));
  return columns;
}

std::string Bytes(const pqxx::field& f) {
  return f.is_null() ? std::string() : pqxx::binarystring(f).str();
}

RequestRecord FromRow(const pqxx::row& r) {
  RequestRecord rec;
  rec.request_id = r[0].as<std::string>();
  rec.tenant_id = r[1].as<std::string>();
  rec.device_id = r[2].as<std::string>();
  rec.kind = ParseKind(r[3].as<std::string>()).value_or(Kind::kCommand);
  rec.service_id = r[4].as<std::string>();
  rec.command_name = r[5].as<std::string>();
  rec.name = r[6].as<std::string>();
  rec.body = r[7].as<std::string>();
  rec.raw = Bytes(r[8]);
  rec.topic = r[9].as<std::string>();
  rec.payload = Bytes(r[10]);
  rec.send_strategy = r[11].as<std::string>();
  rec.expire_seconds = r[12].as<int64_t>();
  rec.status = r[13].as<std::string>();
  if (!r[14].is_null()) {
    rec.result = r[14].as<std::string>();
  }
  rec.error = r[15].as<std::string>();
  rec.created_time = r[16].as<std::string>();
  rec.sent_time = r[17].as<std::string>();
  rec.delivered_time = r[18].as<std::string>();
  rec.response_time = r[19].as<std::string>();
  rec.finished_time = r[20].as<std::string>();
  return rec;
}

/// -1 means "no time" (NULL) in the SQL below.
int64_t MillisOrNone(std::optional<milliseconds> d) { return d ? d->count() : -1; }

constexpr const char* kInterval =
    "CASE WHEN {0}::bigint >= 0 THEN now() + {0}::bigint * interval '1 millisecond' END";

void AddHistory(pqxx::work& w, const std::string& request_id, std::string_view status,
                const std::string& detail) {
  w.exec_params(
      "INSERT INTO command_dispatch.status_history (request_id, status, detail) "
      "VALUES ($1, $2, $3)",
      request_id, std::string(status), detail);
}

/// SENT, at the time the request was sent.
void AddSentHistory(pqxx::work& w, const std::string& request_id) {
  w.exec_params(
      "INSERT INTO command_dispatch.status_history (request_id, status, at) "
      "SELECT request_id, 'SENT', sent_at FROM command_dispatch.requests WHERE request_id = $1",
      request_id);
}

/// A PostgreSQL array literal of `values` ('{"a","b\\"c"}'), for a text[] or bigint[]
/// parameter.
std::string TextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (const std::string& value : values) {
    out += out.size() > 1 ? ",\"" : "\"";
    for (const char c : value) {
      if (c == '"' || c == '\\') {
        out += '\\';
      }
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string Joined(const std::vector<std::string_view>& statuses) {
  std::string out;
  for (std::string_view s : statuses) {
    out += (out.empty() ? "" : ",") + std::string(s);
  }
  return out;
}

}  // namespace

absl::Status PgRequestStore::Insert(const RequestRecord& request,
                                    std::optional<milliseconds> expire_in,
                                    std::optional<milliseconds> deadline_in) {
  return InsertMany({{.record = request, .expire_in = expire_in, .deadline_in = deadline_in}})
      .front();
}

std::vector<absl::Status> PgRequestStore::InsertMany(const std::vector<NewRequest>& requests) {
  // One statement for the batch (the requests and their first history entries): one round
  // trip, atomic, planned once per connection.
  static const std::string kSql = fmt::format(
      "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
      "  $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], "
      "  $12::text[], $13::bigint[], $14::text[], $15::bigint[], $16::bigint[], $17::text[]) "
      "  WITH ORDINALITY AS v(request_id, tenant_id, device_id, kind, service_id, command_name, "
      "  name, body, raw, topic, payload, send_strategy, expire_seconds, status, expire_ms, "
      "  deadline_ms, owner, n)), "
      "inserted AS (INSERT INTO command_dispatch.requests (request_id, tenant_id, device_id, "
      "  kind, service_id, command_name, name, body, raw, topic, payload, send_strategy, "
      "  expire_seconds, status, expire_at, deadline_at, sent_at, owner) "
      "  SELECT request_id, tenant_id, device_id, kind, service_id, command_name, name, body, "
      "    nullif(decode(raw, 'hex'), ''::bytea), topic, decode(payload, 'hex'), send_strategy, "
      "    expire_seconds, status, {}, {}, CASE WHEN status = 'SENT' THEN now() END, owner "
      "  FROM v ORDER BY n RETURNING request_id, status) "
      "INSERT INTO command_dispatch.status_history (request_id, status) "
      "SELECT request_id, status FROM inserted",
      fmt::format(kInterval, "expire_ms"), fmt::format(kInterval, "deadline_ms"));
  const auto column = [&](auto get) {
    std::vector<std::string> values;
    values.reserve(requests.size());
    for (const NewRequest& r : requests) {
      values.push_back(get(r));
    }
    return TextArray(values);
  };
  const absl::Status status = pool_->Run([&](pqxx::connection& c) {
    c.prepare("cd_insert_many", kSql);
    pqxx::nontransaction n(c);
    n.exec_prepared(
        "cd_insert_many", column([](const NewRequest& r) { return r.record.request_id; }),
        column([](const NewRequest& r) { return r.record.tenant_id; }),
        column([](const NewRequest& r) { return r.record.device_id; }),
        column([](const NewRequest& r) { return std::string(KindName(r.record.kind)); }),
        column([](const NewRequest& r) { return r.record.service_id; }),
        column([](const NewRequest& r) { return r.record.command_name; }),
        column([](const NewRequest& r) { return r.record.name; }),
        column([](const NewRequest& r) { return r.record.body; }),
        column([](const NewRequest& r) { return common::HexEncode(r.record.raw); }),
        column([](const NewRequest& r) { return r.record.topic; }),
        column([](const NewRequest& r) { return common::HexEncode(r.record.payload); }),
        column([](const NewRequest& r) { return r.record.send_strategy; }),
        column([](const NewRequest& r) { return std::to_string(r.record.expire_seconds); }),
        column([](const NewRequest& r) { return r.record.status; }),
        column([](const NewRequest& r) { return std::to_string(MillisOrNone(r.expire_in)); }),
        column([](const NewRequest& r) { return std::to_string(MillisOrNone(r.deadline_in)); }),
        column([](const NewRequest& r) { return r.record.owner; }));
  });
  if (status.ok() || requests.size() == 1) {
    return std::vector<absl::Status>(requests.size(), status);
  }
  // One bad request (a taken id) fails the statement: each on its own says which.
  std::vector<absl::Status> out;
  out.reserve(requests.size());
  for (const NewRequest& r : requests) {
    out.push_back(InsertMany({r}).front());
  }
  return out;
}

absl::StatusOr<bool> PgRequestStore::Move(const std::string& request_id, const Transition& t) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("UPDATE command_dispatch.requests SET status = $2, "
                    "error = CASE WHEN $3 = '' THEN error ELSE $3 END, deadline_at = {}, "
                    "sent_at = CASE WHEN $5 THEN now() WHEN $6 THEN NULL ELSE sent_at END, "
                    "delivered_at = CASE WHEN $7 THEN now() ELSE delivered_at END, "
                    "finished_at = CASE WHEN $8 THEN now() ELSE finished_at END "
                    "WHERE request_id = $1 AND status = ANY(string_to_array($9, ','))",
                    fmt::format(kInterval, "$4")),
        request_id, std::string(t.to), t.error, MillisOrNone(t.deadline_in), t.stamp_sent,
        t.clear_sent, t.stamp_delivered, t.finished, Joined(t.from));
    const bool moved = r.affected_rows() > 0;
    if (moved && t.record_history) {
      AddHistory(w, request_id, t.to, t.error);
    }
    w.commit();
    return moved;
  });
}

absl::StatusOr<std::optional<Completion>> PgRequestStore::Complete(const DeviceResponse& response,
                                                                   std::string_view final_status) {
  return CompleteMany({{.response = response, .final_status = std::string(final_status)}}).front();
}

std::vector<absl::StatusOr<std::optional<Completion>>> PgRequestStore::CompleteMany(
    const std::vector<ResponseRecord>& responses) {
  // One statement: lock the open requests, record the responses and their history. An async
  // command answered before its delivery was recorded gets SENT and DELIVERED first (the
  // answer proves it); a closed request keeps its status and records the late response.
  static const std::string kSql =
      "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) "
      "    AS v(request_id, device_id, result, final)), "
      "o AS (SELECT r.request_id, r.status AS old, v.result, v.final "
      "    FROM command_dispatch.requests r JOIN v USING (request_id, device_id) "
      "    WHERE r.response_at IS NULL AND r.kind <> 'message' ORDER BY r.request_id "
      "    FOR UPDATE OF r), "
      "u AS (UPDATE command_dispatch.requests r SET result = o.result, response_at = now(), "
      "    status = CASE WHEN o.old IN ('SENT', 'DELIVERED') THEN o.final ELSE r.status END, "
      "    finished_at = CASE WHEN o.old IN ('SENT', 'DELIVERED') THEN now() "
      "      ELSE r.finished_at END, "
      "    deadline_at = CASE WHEN o.old IN ('SENT', 'DELIVERED') THEN NULL "
      "      ELSE r.deadline_at END, "
      "    delivered_at = CASE WHEN r.kind = 'async_command' "
      "      THEN coalesce(r.delivered_at, now()) ELSE r.delivered_at END "
      "  FROM o WHERE r.request_id = o.request_id "
      "  RETURNING r.request_id, r.kind, o.old, r.status, r.sent_at, r.owner), "
      "h AS (INSERT INTO command_dispatch.status_history (request_id, status, at, detail) "
      "  SELECT request_id, 'SENT', sent_at, '' FROM u "
      "    WHERE old = 'SENT' AND kind = 'async_command' "
      "  UNION ALL SELECT request_id, 'DELIVERED', now(), '' FROM u "
      "    WHERE old = 'SENT' AND kind = 'async_command' "
      "  UNION ALL SELECT request_id, "
      "    CASE WHEN old IN ('SENT', 'DELIVERED') THEN status ELSE old END, now(), "
      "    CASE WHEN old IN ('SENT', 'DELIVERED') THEN '' ELSE 'late response recorded' END "
      "    FROM u) "
      "SELECT request_id, kind, old, owner FROM u";
  using Result = absl::StatusOr<std::optional<Completion>>;
  // A request answered twice in the batch is recorded once; the repeat is a duplicate.
  std::vector<std::string> ids;
  std::vector<std::string> devices;
  std::vector<std::string> results;
  std::vector<std::string> finals;
  std::unordered_map<std::string, size_t> first;
  for (size_t i = 0; i < responses.size(); ++i) {
    const DeviceResponse& r = responses[i].response;
    if (first.emplace(r.request_id, i).second) {
      ids.push_back(r.request_id);
      devices.push_back(r.device_id);
      results.push_back(r.payload_json);
      finals.push_back(responses[i].final_status);
    }
  }
  auto rows = pool_->Call([&](pqxx::connection& c) {
    c.prepare("cd_complete_many", kSql);
    pqxx::nontransaction n(c);
    return n.exec_prepared("cd_complete_many", TextArray(ids), TextArray(devices),
                           TextArray(results), TextArray(finals));
  });
  if (!rows.ok() && responses.size() > 1) {
    // A deadlock with another replica's batch, say: each on its own.
    std::vector<Result> out;
    out.reserve(responses.size());
    for (const ResponseRecord& r : responses) {
      out.push_back(CompleteMany({r}).front());
    }
    return out;
  }
  std::vector<Result> out(responses.size(), Result(std::nullopt));
  if (!rows.ok()) {
    out.front() = rows.status();
    return out;
  }
  for (const auto& row : *rows) {
    const size_t i = first.at(row[0].as<std::string>());
    const std::string old = row[2].as<std::string>();
    if (old != status::kSent && old != status::kDelivered) {
      continue;  // late: recorded, nobody to complete
    }
    out[i] = Completion{.request_id = responses[i].response.request_id,
                        .kind = ParseKind(row[1].as<std::string>()).value_or(Kind::kCommand),
                        .status = responses[i].final_status,
                        .payload_json = responses[i].response.payload_json,
                        .owner = row[3].as<std::string>()};
  }
  return out;
}

absl::StatusOr<RequestRecord> PgRequestStore::Get(const std::string& tenant_id,
                                                  const std::string& device_id, Kind kind,
                                                  const std::string& request_id) {
  return pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<RequestRecord> {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {} FROM command_dispatch.requests WHERE tenant_id = $1 AND "
                    "device_id = $2 AND kind = $3 AND request_id = $4",
                    Columns()),
        tenant_id, device_id, std::string(KindName(kind)), request_id);
    if (r.empty()) {
      return absl::NotFoundError(fmt::format("{} '{}' of device '{}' not found",
                                             kind == Kind::kMessage ? "message" : "command",
                                             request_id, device_id));
    }
    RequestRecord rec = FromRow(r[0]);
    const pqxx::result h =
        w.exec_params(fmt::format("SELECT status, {}, detail FROM command_dispatch.status_history "
                                  "WHERE request_id = $1 ORDER BY id",
                                  Rfc3339("at")),
                      request_id);
    for (const auto& row : h) {
      rec.history.push_back({.status = row[0].as<std::string>(),
                             .time = row[1].as<std::string>(),
                             .detail = row[2].as<std::string>()});
    }
    return rec;
  });
}

absl::StatusOr<Page<RequestRecord>> PgRequestStore::List(const std::string& tenant_id,
                                                         const std::string& device_id, Kind kind,
                                                         const std::string& status, int32_t limit,
                                                         const std::string& marker) {
  int64_t after = 0;
  if (!marker.empty()) {
    const auto [end, ec] = std::from_chars(marker.data(), marker.data() + marker.size(), after);
    if (ec != std::errc{} || end != marker.data() + marker.size() || after < 0) {
      return common::InvalidField("marker", "not a marker this list returned");
    }
  }
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {} FROM command_dispatch.requests WHERE tenant_id = $1 AND "
                    "device_id = $2 AND kind = $3 AND ($4 = '' OR status = $4) AND seq > $5 "
                    "ORDER BY seq LIMIT $6",
                    Columns()),
        tenant_id, device_id, std::string(KindName(kind)), status, after, limit + 1);
    Page<RequestRecord> page;
    for (const auto& row : r) {
      if (page.items.size() == static_cast<size_t>(limit)) {
        page.next_marker = r[static_cast<pqxx::result::size_type>(limit) - 1][21].as<std::string>();
        break;
      }
      page.items.push_back(FromRow(row));
    }
    return page;
  });
}

absl::StatusOr<RequestRecord> PgRequestStore::Find(const std::string& request_id) {
  return pool_->Call([&](pqxx::connection& c) -> absl::StatusOr<RequestRecord> {
    pqxx::read_transaction w(c);
    const pqxx::result r = w.exec_params(
        fmt::format("SELECT {} FROM command_dispatch.requests WHERE request_id = $1", Columns()),
        request_id);
    if (r.empty()) {
      return absl::NotFoundError(fmt::format("request '{}' not found", request_id));
    }
    return FromRow(r[0]);
  });
}

namespace {

/// The device's drain lock on this session, released when this goes (or the session closes).
class DrainLock {
 public:
  DrainLock(pqxx::connection& c, const std::string& device_id) : c_(c), device_id_(device_id) {
    pqxx::nontransaction n(c_);
    n.exec_params("SELECT pg_advisory_lock(hashtext('iot.command_dispatch'), hashtext($1))",
                  device_id_);
  }
  ~DrainLock() {
    try {
      pqxx::nontransaction n(c_);
      n.exec_params("SELECT pg_advisory_unlock(hashtext('iot.command_dispatch'), hashtext($1))",
                    device_id_);
    } catch (const std::exception& e) {
      common::LogWarn("drain lock not released; closing the session", {{"error", e.what()}});
      c_.disconnect();
    }
  }
  DrainLock(const DrainLock&) = delete;
  DrainLock& operator=(const DrainLock&) = delete;

 private:
  pqxx::connection& c_;
  std::string device_id_;
};

}  // namespace

absl::StatusOr<int> PgRequestStore::DrainPending(
    const std::string& device_id, milliseconds claim_timeout, milliseconds response_timeout,
    const std::function<SendOutcome(const RequestRecord&)>& send) {
  return pool_->Call([&](pqxx::connection& c) {
    DrainLock lock(c, device_id);
    int delivered = 0;
    while (true) {
      RequestRecord item;
      {
        pqxx::work w(c);
        const pqxx::result r = w.exec_params(
            fmt::format("UPDATE command_dispatch.requests SET status = 'SENT', sent_at = now(), "
                        "deadline_at = now() + $2::bigint * interval '1 millisecond' "
                        "WHERE request_id = (SELECT request_id FROM command_dispatch.requests "
                        "  WHERE device_id = $1 AND status = 'PENDING' "
                        "    AND (expire_at IS NULL OR expire_at > now()) "
                        "  ORDER BY seq LIMIT 1) AND status = 'PENDING' RETURNING {}",
                        Columns()),
            device_id, claim_timeout.count());
        if (r.empty()) {
          w.commit();
          return delivered;
        }
        item = FromRow(r[0]);
        w.commit();
      }
      const SendOutcome outcome = send(item);
      pqxx::work w(c);
      if (outcome != SendOutcome::kDelivered) {
        w.exec_params(
            "UPDATE command_dispatch.requests SET status = 'PENDING', sent_at = NULL, "
            "deadline_at = NULL WHERE request_id = $1 AND status = 'SENT'",
            item.request_id);
        w.commit();
        return delivered;
      }
      const bool async = item.kind == Kind::kAsyncCommand;
      const pqxx::result r = w.exec_params(
          "UPDATE command_dispatch.requests SET status = 'DELIVERED', delivered_at = now(), "
          "deadline_at = CASE WHEN $2 THEN now() + $3::bigint * interval '1 millisecond' END, "
          "finished_at = CASE WHEN $2 THEN NULL ELSE now() END "
          "WHERE request_id = $1 AND status = 'SENT'",
          item.request_id, async, response_timeout.count());
      // Zero rows: the device answered first, and Complete() wrote the history.
      if (r.affected_rows() > 0) {
        if (async) {
          AddSentHistory(w, item.request_id);
        }
        AddHistory(w, item.request_id, status::kDelivered, "");
      }
      w.commit();
      ++delivered;
    }
  });
}

absl::StatusOr<int> PgRequestStore::Sweep(milliseconds grace) {
  return pool_->Call([&](pqxx::connection& c) {
    pqxx::work w(c);
    const pqxx::result r = w.exec_params(
        "WITH expired AS ("
        "  UPDATE command_dispatch.requests SET finished_at = now(), "
        "    status = CASE WHEN kind = 'message' THEN 'TIMEOUT' ELSE 'EXPIRED' END, "
        "    error = 'the device did not come online in time' "
        "  WHERE status = 'PENDING' AND expire_at <= now() RETURNING request_id, status), "
        "timed_out AS ("
        "  UPDATE command_dispatch.requests SET status = 'TIMEOUT', finished_at = now(), "
        "    deadline_at = NULL, error = CASE WHEN kind = 'message' "
        "      THEN 'sent, delivery not confirmed' ELSE 'no response in time' END "
        "  WHERE status IN ('SENT', 'DELIVERED') "
        "    AND deadline_at + $1::bigint * interval '1 millisecond' <= now() "
        "  RETURNING request_id, status) "
        "INSERT INTO command_dispatch.status_history (request_id, status, detail) "
        "SELECT request_id, status, 'swept' FROM expired UNION ALL "
        "SELECT request_id, status, 'swept' FROM timed_out",
        grace.count());
    w.commit();
    return static_cast<int>(r.affected_rows());
  });
}

}  // namespace iot::command_dispatch
