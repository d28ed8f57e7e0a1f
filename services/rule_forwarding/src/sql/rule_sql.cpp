#include "iot/rule_forwarding/sql/rule_sql.h"

#include <fmt/format.h>

#include <utility>

#include "absl/strings/cord.h"
#include "iot/rule_forwarding/sql/lexer.h"
#include "iot/rule_forwarding/sql/program.h"
#include "iot/rule_forwarding/sql/topic_filter.h"

namespace iot::rule_forwarding::sql {

namespace {

using internal::Program;

SqlError MakeError(std::string_view sql, std::size_t offset, std::string message) {
  SqlError error;
  error.offset = offset;
  error.message = std::move(message);
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < offset && i < sql.size(); ++i) {
    if (sql[i] == '\n') {
      ++error.line;
      line_start = i + 1;
    }
  }
  int column = 1;
  for (std::size_t i = line_start; i < offset && i < sql.size(); ++i) {
    column += (static_cast<unsigned char>(sql[i]) & 0xC0U) == 0x80U ? 0 : 1;
  }
  error.column = column;
  return error;
}

absl::Status ToStatus(const SqlError& error) {
  absl::Status status = absl::InvalidArgumentError(error.ToString());
  const nlohmann::json payload = {{"offset", error.offset},
                                  {"line", error.line},
                                  {"column", error.column},
                                  {"message", error.message}};
  status.SetPayload(
      kSqlErrorPayload,
      absl::Cord(payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  return status;
}

}  // namespace

std::string SqlError::ToString() const {
  return fmt::format("line {}, column {}: {}", line, column, message);
}

std::optional<SqlError> SqlErrorOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kSqlErrorPayload);
  if (!payload) {
    return std::nullopt;
  }
  const auto parsed = nlohmann::json::parse(std::string(*payload), nullptr, false);
  if (!parsed.is_object()) {
    return std::nullopt;
  }
  SqlError error;
  error.offset = parsed.value("offset", std::size_t{0});
  error.line = parsed.value("line", 1);
  error.column = parsed.value("column", 1);
  error.message = parsed.value("message", std::string());
  return error;
}

absl::StatusOr<CompiledRule> CompileRule(std::string_view sql) {
  if (sql.size() > kMaxSqlBytes) {
    return ToStatus(MakeError(
        sql, kMaxSqlBytes,
        fmt::format("statement is {} bytes long, the limit is {}", sql.size(), kMaxSqlBytes)));
  }
  if (const std::size_t bad = internal::FindInvalidUtf8(sql); bad != std::string_view::npos) {
    return ToStatus(
        MakeError(sql, bad,
                  fmt::format("invalid UTF-8 byte 0x{:02X}",
                              static_cast<unsigned>(static_cast<unsigned char>(sql[bad])))));
  }
  auto built = internal::BuildProgram(sql);
  if (auto* error = std::get_if<internal::CompileError>(&built)) {
    return ToStatus(MakeError(sql, error->offset, std::move(error->message)));
  }
  return CompiledRule(std::get<std::shared_ptr<const Program>>(std::move(built)));
}

CompiledRule::CompiledRule(std::shared_ptr<const internal::Program> program)
    : program_(std::move(program)) {}

std::optional<nlohmann::json> CompiledRule::Evaluate(const nlohmann::json& envelope,
                                                     const EvalContext& ctx) const {
  const Program& program = *program_;
  if (!MatchesTopic(ctx.topic)) {
    return std::nullopt;
  }
  internal::Frame frame(envelope, ctx);
  if (program.where) {
    const internal::Value condition = internal::Eval(program, *program.where, frame);
    if (condition.kind != internal::Value::Kind::kBool || !condition.b) {
      return std::nullopt;
    }
  }
  if (program.select_all && program.items.empty()) {
    return envelope;
  }
  nlohmann::json out =
      program.select_all && envelope.is_object() ? envelope : nlohmann::json::object();
  auto& object = out.get_ref<nlohmann::json::object_t&>();
  for (const internal::SelectItem& item : program.items) {
    const internal::Node& node = program.nodes[item.node];
    if (node.op == internal::Op::kPath) {
      // Copy the node itself: keeps unsigned and large integers exactly as they came.
      const nlohmann::json* value = internal::ResolvePath(program, node.aux, frame);
      object.insert_or_assign(item.name, value == nullptr ? nlohmann::json() : *value);
    } else {
      object.insert_or_assign(item.name,
                              internal::ToJson(internal::Eval(program, item.node, frame)));
    }
  }
  return out;
}

bool CompiledRule::Matches(const nlohmann::json& envelope, const EvalContext& ctx) const {
  const Program& program = *program_;
  if (!MatchesTopic(ctx.topic)) {
    return false;
  }
  if (!program.where) {
    return true;
  }
  internal::Frame frame(envelope, ctx);
  const internal::Value condition = internal::Eval(program, *program.where, frame);
  return condition.kind == internal::Value::Kind::kBool && condition.b;
}

bool CompiledRule::MatchesTopic(std::string_view topic) const {
  if (program_->topic_filters.empty()) {
    return true;
  }
  for (const std::string& filter : program_->topic_filters) {
    if (TopicMatchesFilter(filter, topic)) {
      return true;
    }
  }
  return false;
}

const std::string& CompiledRule::sql() const { return program_->sql; }

bool CompiledRule::selects_all() const { return program_->select_all; }

const std::vector<std::string>& CompiledRule::output_names() const {
  return program_->output_names;
}

const std::vector<std::string>& CompiledRule::topic_filters() const {
  return program_->topic_filters;
}

}  // namespace iot::rule_forwarding::sql
