#include "iot/common/postgres.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <pqxx/except>
#include <pqxx/nontransaction>

#include "absl/strings/str_cat.h"
#include "iot/common/backoff.h"
#include "iot/common/url.h"

namespace iot::common {
namespace {

using Clock = std::chrono::steady_clock;

// PostgreSQL messages span lines ("ERROR:  ...\nDETAIL:  ..."); statuses and logs want one.
std::string OneLine(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (const char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = true;
      continue;
    }
    if (space && !out.empty()) {
      out.push_back(' ');
    }
    space = false;
    out.push_back(c);
  }
  return out;
}

bool IsUri(std::string_view conninfo) {
  return conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://");
}

// Where the key=value conninfo names `key` as a keyword (not inside a value), or npos.
size_t FindKeyword(std::string_view conninfo, std::string_view key) {
  size_t pos = 0;
  while ((pos = conninfo.find(key, pos)) != std::string_view::npos) {
    const bool starts = pos == 0 || std::isspace(static_cast<unsigned char>(conninfo[pos - 1]));
    size_t after = pos + key.size();
    while (after < conninfo.size() && conninfo[after] == ' ') {
      ++after;
    }
    if (starts && after < conninfo.size() && conninfo[after] == '=') {
      return pos;
    }
    pos += key.size();
  }
  return std::string_view::npos;
}

absl::Status CodeForSqlState(std::string_view state, const std::string& message) {
  if (state == "23505") {
    return absl::AlreadyExistsError(message);
  }
  if (state == "23503" || state == "23001") {
    return absl::FailedPreconditionError(message);
  }
  if (state == "23514" || state == "23502" || state.starts_with("22")) {
    return absl::InvalidArgumentError(message);
  }
  if (state == "40001" || state == "40P01" || state == "55P03") {
    return absl::AbortedError(message);
  }
  if (state == "57014") {
    return absl::DeadlineExceededError(message);
  }
  if (state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03" ||
      state == "53300") {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

}  // namespace

absl::Status FromPqxx(const std::exception& e) {
  const std::string message = OneLine(e.what());
  // Order matters: the specific classes before the ones they derive from.
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr ||
      dynamic_cast<const pqxx::statement_completion_unknown*>(&e) != nullptr) {
    return absl::UnknownError(absl::StrCat("outcome unknown: ", message));
  }
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    return absl::UnavailableError(message);
  }
  if (dynamic_cast<const pqxx::serialization_failure*>(&e) != nullptr ||
      dynamic_cast<const pqxx::deadlock_detected*>(&e) != nullptr ||
      dynamic_cast<const pqxx::transaction_rollback*>(&e) != nullptr) {
    return absl::AbortedError(message);
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e); sql != nullptr) {
    if (!sql->sqlstate().empty()) {
      return CodeForSqlState(sql->sqlstate(), message);
    }
    if (dynamic_cast<const pqxx::unique_violation*>(&e) != nullptr) {
      return absl::AlreadyExistsError(message);
    }
    if (dynamic_cast<const pqxx::foreign_key_violation*>(&e) != nullptr ||
        dynamic_cast<const pqxx::restrict_violation*>(&e) != nullptr) {
      return absl::FailedPreconditionError(message);
    }
    if (dynamic_cast<const pqxx::check_violation*>(&e) != nullptr ||
        dynamic_cast<const pqxx::not_null_violation*>(&e) != nullptr ||
        dynamic_cast<const pqxx::data_exception*>(&e) != nullptr) {
      return absl::InvalidArgumentError(message);
    }
  }
  return absl::InternalError(message);
}

std::string WithConnectTimeout(std::string_view conninfo, std::chrono::milliseconds timeout) {
  // libpq takes whole seconds and treats 1 as 2; 0 would mean "wait forever".
  const int64_t seconds = std::max<int64_t>(2, (timeout.count() + 999) / 1000);
  std::string out(conninfo);
  if (IsUri(conninfo)) {
    const size_t query = conninfo.find('?');
    if (query != std::string_view::npos) {
      const std::string_view params = conninfo.substr(query + 1);
      if (params.starts_with("connect_timeout=") ||
          params.find("&connect_timeout=") != std::string_view::npos) {
        return out;
      }
      if (!params.empty() && params.back() != '&') {
        out.push_back('&');
      }
    } else {
      out.push_back('?');
    }
    absl::StrAppend(&out, "connect_timeout=", seconds);
    return out;
  }
  if (FindKeyword(conninfo, "connect_timeout") != std::string_view::npos) {
    return out;
  }
  if (!out.empty() && out.back() != ' ') {
    out.push_back(' ');
  }
  absl::StrAppend(&out, "connect_timeout=", seconds);
  return out;
}

std::string MaskConninfo(std::string_view conninfo) {
  if (IsUri(conninfo)) {
    std::string out = MaskUrl(conninfo);
    // libpq also accepts ?password=... in the query string.
    for (const std::string_view key : {"?password=", "&password="}) {
      size_t pos = 0;
      while ((pos = out.find(key, pos)) != std::string::npos) {
        const size_t start = pos + key.size();
        const size_t end = std::min(out.find('&', start), out.size());
        out.replace(start, end - start, "***");
        pos = start;
      }
    }
    return out;
  }
  std::string out(conninfo);
  const size_t key = FindKeyword(out, "password");
  if (key == std::string::npos) {
    return out;
  }
  size_t start = out.find('=', key) + 1;
  while (start < out.size() && out[start] == ' ') {
    ++start;
  }
  size_t end = start;
  if (end < out.size() && out[end] == '\'') {
    for (++end; end < out.size() && out[end] != '\''; ++end) {
      if (out[end] == '\\') {
        ++end;
      }
    }
    end = std::min(end + 1, out.size());
  } else {
    while (end < out.size() && !std::isspace(static_cast<unsigned char>(out[end]))) {
      ++end;
    }
  }
  out.replace(start, end - start, "***");
  return out;
}

struct PgPool::Slot {
  std::unique_ptr<pqxx::connection> conn;
  bool busy = false;
  // Touched only by the caller holding the slot (busy), or under mu_ while it is idle.
  Backoff backoff;
  Clock::time_point next_connect{};
  std::string last_error;

  Slot(std::chrono::milliseconds initial, std::chrono::milliseconds max) : backoff(initial, max) {}
  [[nodiscard]] bool open() const { return conn != nullptr && conn->is_open(); }
};

// Gives the slot back to the pool when the call is done, however it ends.
class PgPool::Lease {
 public:
  Lease(PgPool& pool, Slot* slot) : pool_(pool), slot_(slot) {}
  ~Lease() { pool_.Release(slot_); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

 private:
  PgPool& pool_;
  Slot* slot_;
};

PgPool::PgPool(PgPoolOptions options)
    : options_(std::move(options)),
      conninfo_(WithConnectTimeout(options_.url, options_.connect_timeout)),
      masked_url_(MaskConninfo(options_.url)) {
  const size_t n = std::max<size_t>(1, options_.size);
  slots_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    slots_.push_back(std::make_unique<Slot>(
        options_.reconnect_backoff_initial,
        std::max(options_.reconnect_backoff_initial, options_.reconnect_backoff_max)));
  }
}

PgPool::~PgPool() = default;

absl::StatusOr<PgPool::Slot*> PgPool::Acquire() {
  std::unique_lock lock(mu_);
  Slot* chosen = nullptr;
  const auto pick = [&] {
    const auto now = Clock::now();
    Slot* fresh = nullptr;
    Slot* waiting = nullptr;
    for (const auto& slot : slots_) {
      if (slot->busy) {
        continue;
      }
      if (slot->open()) {
        chosen = slot.get();
        return true;
      }
      if (slot->next_connect <= now) {
        fresh = fresh != nullptr ? fresh : slot.get();
      } else {
        waiting = waiting != nullptr ? waiting : slot.get();
      }
    }
    chosen = fresh != nullptr ? fresh : waiting;
    return chosen != nullptr;
  };
  if (!freed_.wait_for(lock, options_.acquire_timeout, pick)) {
    return absl::UnavailableError(absl::StrCat("no free PostgreSQL connection within ",
                                               options_.acquire_timeout.count(), " ms (pool of ",
                                               slots_.size(), ")"));
  }
  chosen->busy = true;
  return chosen;
}

void PgPool::Release(Slot* slot) {
  {
    std::lock_guard lock(mu_);
    slot->busy = false;
  }
  freed_.notify_one();
}

absl::Status PgPool::Connect(Slot& slot) {
  slot.conn.reset();
  const auto now = Clock::now();
  if (now < slot.next_connect) {
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(slot.next_connect - now);
    return absl::UnavailableError(absl::StrCat("PostgreSQL at ", masked_url_,
                                               " unavailable (next attempt in ", wait.count(),
                                               " ms): ", slot.last_error));
  }
  try {
    auto conn = std::make_unique<pqxx::connection>(conninfo_);
    // libpqxx 6 would otherwise reconnect a broken connection behind our back, silently losing
    // session state (e.g. an advisory lock) the caller relies on. The pool reconnects instead.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    conn->inhibit_reactivation(true);
#pragma GCC diagnostic pop
    slot.conn = std::move(conn);
    if (slot.backoff.attempts() > 0) {
      spdlog::info("PostgreSQL at {} reachable again", masked_url_);
    }
    slot.backoff.Reset();
    slot.next_connect = {};
    slot.last_error.clear();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    slot.last_error = OneLine(e.what());
    slot.next_connect = Clock::now() + slot.backoff.Next();
    if (slot.backoff.attempts() == 1) {
      spdlog::warn("cannot connect to PostgreSQL at {}: {}", masked_url_, slot.last_error);
    }
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL at ", masked_url_, ": ", slot.last_error));
  }
}

absl::Status PgPool::Run(const std::function<void(pqxx::connection&)>& fn) {
  auto acquired = Acquire();
  if (!acquired.ok()) {
    return acquired.status();
  }
  Slot& slot = **acquired;
  Lease lease(*this, &slot);
  for (int attempt = 0;; ++attempt) {
    if (!slot.open()) {
      if (absl::Status connected = Connect(slot); !connected.ok()) {
        return connected;
      }
    }
    absl::Status status;
    bool broken = false;
    try {
      fn(*slot.conn);
      return absl::OkStatus();
    } catch (const pqxx::broken_connection& e) {
      status = FromPqxx(e);
      broken = true;
    } catch (const pqxx::in_doubt_error& e) {
      // The commit may have happened: running fn again could do its work twice.
      status = FromPqxx(e);
    } catch (const std::exception& e) {
      status = FromPqxx(e);
      broken = !slot.open();
    } catch (...) {
      status = absl::InternalError("unknown exception in PostgreSQL call");
    }
    if (!slot.open()) {
      slot.conn.reset();
    }
    if (!broken || attempt > 0) {
      return status;
    }
    spdlog::info("PostgreSQL connection to {} lost ({}); retrying on a new one", masked_url_,
                 std::string(status.message()));
  }
}

absl::Status PgPool::Ping() {
  return Run([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT 1");
  });
}

}  // namespace iot::common
