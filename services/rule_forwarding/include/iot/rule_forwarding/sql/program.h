#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <forward_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "iot/rule_forwarding/sql/rule_sql.h"

/// Implementation detail of CompiledRule (rule_sql.h): the compiled form of a statement and its
/// interpreter. Not an API; exposed for the library's own sources and tests.
namespace iot::rule_forwarding::sql::internal {

/// What an expression is known to produce at compile time when it is not NULL.
enum class Type : std::uint8_t { kAny, kNull, kBool, kNumber, kString };

/// "a number", "a string", "a boolean", "NULL", "a value".
std::string_view TypeName(Type type);

/// A runtime value. Trivially copyable; strings and JSON values are views into the envelope,
/// the program or the evaluation's scratch storage.
struct Value {
  enum class Kind : std::uint8_t { kNull, kBool, kInt, kDouble, kString, kJson };

  Kind kind = Kind::kNull;
  union {
    bool b;
    std::int64_t i = 0;
    double d;
    const nlohmann::json* j;  // kJson: an object or an array
  };
  std::string_view s;  // kString

  static Value Null() { return {}; }
  static Value Bool(bool v) {
    Value out;
    out.kind = Kind::kBool;
    out.b = v;
    return out;
  }
  static Value Int(std::int64_t v) {
    Value out;
    out.kind = Kind::kInt;
    out.i = v;
    return out;
  }
  /// Non-finite doubles become NULL.
  static Value Double(double v);
  static Value String(std::string_view v) {
    Value out;
    out.kind = Kind::kString;
    out.s = v;
    return out;
  }
  static Value Json(const nlohmann::json* v) {
    Value out;
    out.kind = Kind::kJson;
    out.j = v;
    return out;
  }
  /// The value of a JSON node (numbers beyond int64 become doubles, NaN becomes NULL).
  static Value FromJson(const nlohmann::json& v);

  bool is_null() const { return kind == Kind::kNull; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kDouble; }
  double AsDouble() const { return kind == Kind::kInt ? static_cast<double>(i) : d; }
};

enum class Op : std::uint8_t {
  kLiteral,  // aux = index into literals
  kPath,     // aux = index into paths
  kCall,     // func; args = arguments
  kNeg,
  kNot,
  kAnd,  // n-ary
  kOr,   // n-ary
  kAdd,
  kSub,
  kMul,
  kDiv,
  kMod,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kIn,       // args = operand, items...; negated = NOT IN
  kLike,     // args = operand, pattern; aux = index into likes when the pattern is literal
  kIsNull,   // negated = IS NOT NULL
  kBetween,  // args = operand, low, high; negated = NOT BETWEEN
  kCase,     // args = [operand], (when, then)..., [else]; has_operand, has_else
};

enum class Func : std::uint8_t {
  kNone,
  kDeviceId,
  kProductId,
  kDialect,
  kTenantId,
  kTopic,
  kTimestamp,
  kAbs,
  kRound,
  kFloor,
  kCeil,
  kLower,
  kUpper,
  kConcat,
  kStartsWith,
  kEndsWith,
  kSubstring,
  kLength,
  kCoalesce,
  kToNumber,
  kToString,
};

struct Node {
  Op op = Op::kLiteral;
  Type type = Type::kAny;
  Func func = Func::kNone;
  bool negated = false;
  bool has_operand = false;
  bool has_else = false;
  bool constant_pattern = false;  // kLike: aux indexes Program::likes
  std::uint32_t first_arg = 0;    // into Program::args
  std::uint32_t arg_count = 0;
  std::uint32_t aux = 0;
  std::uint32_t offset = 0;  // source byte offset, for compile-time errors
  std::uint32_t height = 1;
};

struct PathSegment {
  std::string key;  // when !is_index
  std::size_t index = 0;
  bool is_index = false;
};

using Path = std::vector<PathSegment>;

/// One step of the path trie: paths of a program share their common prefixes
/// (`a.b.c` and `a.b.d` share `a` and `a.b`), so each prefix is looked up once per message.
struct PathStep {
  static constexpr std::uint32_t kRoot = 0xFFFFFFFFU;
  std::uint32_t parent = kRoot;  // index into Program::path_steps, or kRoot
  PathSegment segment;
};

/// Longest accepted path, in segments.
inline constexpr std::size_t kMaxPathSegments = 128;

/// A LIKE pattern known at compile time, pre-classified so that common shapes avoid the
/// general matcher.
struct LikePattern {
  enum class Kind : std::uint8_t { kExact, kPrefix, kSuffix, kContains, kAny, kGeneral };
  Kind kind = Kind::kGeneral;
  std::string text;  // unescaped literal text for the simple kinds, the raw pattern for kGeneral
};

struct SelectItem {
  std::string name;
  std::uint32_t node = 0;
};

struct Program {
  std::string sql;
  std::vector<Node> nodes;
  std::vector<std::uint32_t> args;
  std::vector<Value> literals;
  std::deque<std::string> strings;  // storage behind literal string views (stable addresses)
  std::vector<Path> paths;
  std::vector<std::uint32_t> path_ends;  // per path: its last step in path_steps
  std::vector<PathStep> path_steps;      // parents come before their children
  std::vector<LikePattern> likes;
  std::vector<std::string> topic_filters;
  bool select_all = false;
  std::vector<SelectItem> items;
  std::vector<std::string> output_names;
  std::optional<std::uint32_t> where;
};

/// Why a statement did not compile; offset is a byte offset into the statement.
struct CompileError {
  std::size_t offset = 0;
  std::string message;
};

/// Parses, checks and compiles a statement (size and UTF-8 already checked by the caller).
std::variant<std::shared_ptr<const Program>, CompileError> BuildProgram(std::string_view sql);

/// Per-evaluation state: inputs plus storage for strings computed by functions.
struct Frame {
  static constexpr std::size_t kCachedSteps = 64;

  // `resolved` is deliberately left uninitialised: resolved_mask says which entries are set.
  Frame(const nlohmann::json& envelope_in, const EvalContext& ctx_in)
      : envelope(envelope_in), ctx(ctx_in) {}

  const nlohmann::json& envelope;
  const EvalContext& ctx;
  std::forward_list<std::string> scratch;
  // Path steps resolved so far (bit i set: resolved[i] holds step i's node or nullptr).
  std::uint64_t resolved_mask = 0;
  std::array<const nlohmann::json*, kCachedSteps> resolved;
};

/// Evaluates node `index` of `program`. Never throws except std::bad_alloc.
Value Eval(const Program& program, std::uint32_t index, Frame& frame);

/// Follows a path from `root`; nullptr when any step is missing or of the wrong kind.
const nlohmann::json* Resolve(const Path& path, const nlohmann::json& root);

/// Resolve for path `index` of `program` against the frame's envelope, sharing prefixes
/// already resolved for this frame.
const nlohmann::json* ResolvePath(const Program& program, std::uint32_t index, Frame& frame);

/// The JSON form of a value (strings and JSON values are copied).
nlohmann::json ToJson(const Value& value);

/// LIKE with `%`, `_` (one UTF-8 code point) and `\` escapes. nullopt for an invalid pattern
/// (a trailing lone `\`).
std::optional<bool> LikeMatch(std::string_view text, std::string_view pattern);

/// Classifies a valid pattern (see LikePattern).
LikePattern CompileLike(std::string_view pattern);

}  // namespace iot::rule_forwarding::sql::internal
