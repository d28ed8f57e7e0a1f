#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

/// The rule engine's SQL (rule-forwarding, "Rules"): a statement is compiled once and then
/// evaluated per message against the IoTDA forwarding envelope.
///
///   SELECT <expr> [AS name], ... | * [, <expr> AS name ...]
///   [FROM '<mqtt topic filter>' [, '<filter>' ...]]
///   [WHERE <condition>] [;]
///
/// Semantics in short:
/// - Operators: `= != <> < <= > >=` (`==` too), `AND OR NOT`, `+ - * / %`, unary `-`,
///   `[NOT] IN (...)`, `[NOT] LIKE`, `[NOT] BETWEEN a AND b`, `IS [NOT] NULL`,
///   `CASE [x] WHEN .. THEN .. [ELSE ..] END`; comments `-- ...` and `/* ... */`.
/// - Paths `a.b[0].c` (and `"odd-key"` or `` `odd-key` `` segments) read the envelope; a missing
///   path is NULL. Keywords and function names are case-insensitive; JSON keys are not.
/// - SQL three-valued logic: any comparison or arithmetic with NULL is NULL; values of different
///   types (e.g. a string and a number) compare as NULL, never as false; WHERE passes only when
///   the condition is TRUE. Division or modulo by zero and non-finite results are NULL.
/// - Integers stay int64 while exact (`7 / 2` is 3.5, `6 / 3` is 2); overflow turns into double.
/// - LIKE: `%` any run, `_` one character (UTF-8 code point), `\` escapes the next character.
/// - FROM matches the MQTT topic of the context with MQTT rules (`+` one level, `#` the rest,
///   including the parent level); as in MQTT, a filter starting with a wildcard does not match a
///   topic starting with `$` (so `#` does not match `$oc/...`; write `$oc/devices/+/sys/#`).
///   Without FROM every topic matches.
/// - Output names: `AS name`; else a path's last key (`a.b[0].voltage` → `voltage`,
///   `a.services[0]` → `services`); else a zero-argument function's name (`device_id()` →
///   `device_id`); else `expr_<n>` with n the item's 1-based position in the select list.
///   Duplicate names are a compile error. `*` copies the envelope; items after it are added to
///   (or replace keys of) that copy.
/// - Functions: device_id() product_id() (envelope header; device_id falls back to the
///   `$oc/devices/{id}/` topic), dialect() (the device's protocol, `huawei` or `alink`, from the
///   header; `huawei` when it has none), tenant_id() (context, else header), topic() topic(n) (n-th
///   level, 1-based), timestamp() (context receive time, ms), abs round(x[,digits]) (half away from
///   zero) floor ceil (integers when they fit in int64), lower upper (ASCII), concat(...) (NULLs
///   skipped), startswith endswith, substring(s, start[, len]) (1-based, in code points), length
///   (code points of a string, elements of an array or object), coalesce(...), to_number,
///   to_string.
namespace iot::rule_forwarding::sql {

/// Longest accepted statement, in bytes.
inline constexpr std::size_t kMaxSqlBytes = 64 * 1024;
/// Deepest accepted expression nesting (parentheses, operators, function calls, NOT chains).
inline constexpr int kMaxNestingDepth = 128;
/// Payload key of the SqlError attached to every CompileRule error status.
inline constexpr const char* kSqlErrorPayload = "iot.rule_sql.error";

/// Where and why a statement failed to compile.
struct SqlError {
  /// Byte offset into the statement (the statement's size for "end of input").
  std::size_t offset = 0;
  /// 1-based line.
  int line = 1;
  /// 1-based column, counted in characters (UTF-8 code points) from the start of the line.
  int column = 1;
  /// What was expected or what is wrong, without the position.
  std::string message;

  /// "line 1, column 24: expected an expression after 'AND', found end of input".
  std::string ToString() const;
  bool operator==(const SqlError&) const = default;
};

/// The SqlError of a status returned by CompileRule, or nullopt for any other status.
std::optional<SqlError> SqlErrorOf(const absl::Status& status);

/// What a message carries besides its envelope.
struct EvalContext {
  /// MQTT topic the message came on, e.g. `$oc/devices/p1_n1/sys/properties/report`.
  std::string_view topic;
  /// Receive time in milliseconds since the epoch (`timestamp()`).
  std::int64_t receive_time_ms = 0;
  /// Tenant of the message (`tenant_id()`); empty = take it from the envelope header.
  std::string_view tenant_id;
};

namespace internal {
struct Program;
}  // namespace internal

/// A compiled statement. Immutable, cheap to copy (shared), safe to evaluate from many threads.
/// Evaluation never throws on any envelope (only std::bad_alloc can escape) and never crashes.
class CompiledRule {
 public:
  /// The SELECT output for a message, or nullopt when FROM does not match the topic or WHERE is
  /// not TRUE.
  std::optional<nlohmann::json> Evaluate(const nlohmann::json& envelope,
                                         const EvalContext& ctx) const;
  /// FROM and WHERE only: whether Evaluate would produce an output. Allocation-free for paths,
  /// literals, comparisons, logic, IN, LIKE with a literal pattern and arithmetic.
  bool Matches(const nlohmann::json& envelope, const EvalContext& ctx) const;
  /// FROM only.
  bool MatchesTopic(std::string_view topic) const;

  /// The statement as compiled.
  const std::string& sql() const;
  /// True for `SELECT *` (with or without further items).
  bool selects_all() const;
  /// Output keys of the select list items (besides `*`), in select-list order.
  const std::vector<std::string>& output_names() const;
  /// The FROM topic filters; empty = every topic.
  const std::vector<std::string>& topic_filters() const;

 private:
  friend absl::StatusOr<CompiledRule> CompileRule(std::string_view sql);
  explicit CompiledRule(std::shared_ptr<const internal::Program> program);

  std::shared_ptr<const internal::Program> program_;
};

/// Compiles a statement. Errors are INVALID_ARGUMENT "line L, column C: <message>" with the
/// SqlError attached (SqlErrorOf): syntax errors, statements over kMaxSqlBytes or nested deeper
/// than kMaxNestingDepth, invalid UTF-8 or topic filters, unknown functions, wrong argument
/// counts, duplicate output names and type errors visible at compile time (e.g. `'a' + 1`,
/// `x LIKE 5`, `WHERE 1`, `abs('x')`, `'a' = 1`).
absl::StatusOr<CompiledRule> CompileRule(std::string_view sql);

}  // namespace iot::rule_forwarding::sql
