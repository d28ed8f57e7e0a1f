// Recursive-descent parser, static type checks and constant folding for rule statements.
//
// Errors unwind the parser with an internal exception that never leaves this file:
// BuildProgram turns it into a CompileError value. Threading an error value through every
// grammar function would double their size for a path that only runs once per statement.

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "iot/rule_forwarding/sql/lexer.h"
#include "iot/rule_forwarding/sql/program.h"
#include "iot/rule_forwarding/sql/topic_filter.h"

namespace iot::rule_forwarding::sql::internal {

namespace {

struct ParseFailure {
  std::size_t offset;
  std::string message;
};

/// What a function argument must be at compile time. kInteger: a number, and when it is a
/// literal, an integral one.
enum class ArgKind : std::uint8_t { kAny, kNumber, kInteger, kString };

struct FunctionInfo {
  std::string_view name;
  Func func;
  std::uint32_t min_args;
  std::uint32_t max_args;  // kVariadic = no limit
  Type result;
  std::array<ArgKind, 3> args;  // per position; the last entry repeats for variadic calls
  bool pure;                    // depends only on its arguments (constant-foldable)
};

constexpr std::uint32_t kVariadic = std::numeric_limits<std::uint32_t>::max();
constexpr ArgKind kA = ArgKind::kAny;
constexpr ArgKind kN = ArgKind::kNumber;
constexpr ArgKind kI = ArgKind::kInteger;
constexpr ArgKind kS = ArgKind::kString;

constexpr std::array<FunctionInfo, 20> kFunctions{{
    {"device_id", Func::kDeviceId, 0, 0, Type::kString, {kA, kA, kA}, false},
    {"product_id", Func::kProductId, 0, 0, Type::kString, {kA, kA, kA}, false},
    {"dialect", Func::kDialect, 0, 0, Type::kString, {kA, kA, kA}, false},
    {"tenant_id", Func::kTenantId, 0, 0, Type::kString, {kA, kA, kA}, false},
    {"topic", Func::kTopic, 0, 1, Type::kString, {kI, kI, kI}, false},
    {"timestamp", Func::kTimestamp, 0, 0, Type::kNumber, {kA, kA, kA}, false},
    {"abs", Func::kAbs, 1, 1, Type::kNumber, {kN, kN, kN}, true},
    {"round", Func::kRound, 1, 2, Type::kNumber, {kN, kI, kI}, true},
    {"floor", Func::kFloor, 1, 1, Type::kNumber, {kN, kN, kN}, true},
    {"ceil", Func::kCeil, 1, 1, Type::kNumber, {kN, kN, kN}, true},
    {"lower", Func::kLower, 1, 1, Type::kString, {kS, kS, kS}, true},
    {"upper", Func::kUpper, 1, 1, Type::kString, {kS, kS, kS}, true},
    {"concat", Func::kConcat, 1, kVariadic, Type::kString, {kA, kA, kA}, true},
    {"startswith", Func::kStartsWith, 2, 2, Type::kBool, {kS, kS, kS}, true},
    {"endswith", Func::kEndsWith, 2, 2, Type::kBool, {kS, kS, kS}, true},
    {"substring", Func::kSubstring, 2, 3, Type::kString, {kS, kI, kI}, true},
    {"length", Func::kLength, 1, 1, Type::kNumber, {kA, kA, kA}, true},
    {"coalesce", Func::kCoalesce, 1, kVariadic, Type::kAny, {kA, kA, kA}, true},
    {"to_number", Func::kToNumber, 1, 1, Type::kNumber, {kA, kA, kA}, true},
    {"to_string", Func::kToString, 1, 1, Type::kString, {kA, kA, kA}, true},
}};

const FunctionInfo* FindFunction(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  for (const FunctionInfo& info : kFunctions) {
    if (info.name == lower) {
      return &info;
    }
  }
  return nullptr;
}

std::string ArgCountText(const FunctionInfo& info) {
  if (info.max_args == 0) {
    return "no arguments";
  }
  if (info.max_args == kVariadic) {
    return fmt::format("at least {} argument{}", info.min_args, info.min_args == 1 ? "" : "s");
  }
  if (info.min_args == info.max_args) {
    return fmt::format("{} argument{}", info.min_args, info.min_args == 1 ? "" : "s");
  }
  return fmt::format("{} or {} arguments", info.min_args, info.max_args);
}

Type TypeOf(const Value& value) {
  switch (value.kind) {
    case Value::Kind::kNull:
      return Type::kNull;
    case Value::Kind::kBool:
      return Type::kBool;
    case Value::Kind::kInt:
    case Value::Kind::kDouble:
      return Type::kNumber;
    case Value::Kind::kString:
      return Type::kString;
    case Value::Kind::kJson:
      return Type::kAny;
  }
  return Type::kAny;
}

bool IsKeyword(TokenKind kind) { return kind >= TokenKind::kSelect; }

class Parser {
 public:
  Parser(std::vector<Token> tokens, Program& program)
      : tokens_(std::move(tokens)), program_(program) {}

  void ParseStatement() {
    if (!Accept(TokenKind::kSelect)) {
      Expected("SELECT");
    }
    bool last_item_named = true;
    if (Accept(TokenKind::kStar)) {
      program_.select_all = true;
      if (Accept(TokenKind::kComma)) {
        last_item_named = ParseItems(2);
      }
    } else {
      last_item_named = ParseItems(1);
    }
    if (Accept(TokenKind::kFrom)) {
      do {
        ParseTopicFilter();
      } while (Accept(TokenKind::kComma));
      if (!At(TokenKind::kWhere) && !At(TokenKind::kSemicolon) && !At(TokenKind::kEnd)) {
        Expected("',', WHERE or end of input");
      }
    } else if (!At(TokenKind::kWhere) && !At(TokenKind::kSemicolon) && !At(TokenKind::kEnd)) {
      Expected(last_item_named ? "',', FROM, WHERE or end of input"
                               : "AS, ',', FROM, WHERE or end of input");
    }
    if (Accept(TokenKind::kWhere)) {
      const std::uint32_t where = ParseExpr();
      RequireType(where, Type::kBool, "WHERE");
      program_.where = where;
    }
    Accept(TokenKind::kSemicolon);
    if (!At(TokenKind::kEnd)) {
      Expected("end of input");
    }
  }

 private:
  class DepthGuard {
   public:
    DepthGuard(Parser& parser, std::size_t offset) : parser_(parser) {
      if (++parser_.depth_ > kMaxNestingDepth) {
        parser_.Fail(offset, NestingMessage());
      }
    }
    ~DepthGuard() { --parser_.depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Parser& parser_;
  };

  static std::string NestingMessage() {
    return fmt::format("expression is nested too deeply (limit {} levels)", kMaxNestingDepth);
  }

  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Ahead(std::size_t n) const {
    return tokens_[std::min(pos_ + n, tokens_.size() - 1)];
  }
  bool At(TokenKind kind) const { return Cur().kind == kind; }
  bool Accept(TokenKind kind) {
    if (!At(kind)) {
      return false;
    }
    ++pos_;
    return true;
  }

  [[noreturn]] void Fail(std::size_t offset, std::string message) const {
    throw ParseFailure{offset, std::move(message)};
  }

  [[noreturn]] void Expected(std::string_view what) const {
    std::string after;
    if (pos_ > 0) {
      after = fmt::format(" after {}", Describe(tokens_[pos_ - 1]));
    }
    Fail(Cur().offset, fmt::format("expected {}{}, found {}", what, after, Describe(Cur())));
  }

  // Returns whether the last item had an explicit or implicit name that AS could not follow.
  bool ParseItems(std::size_t position) {
    bool named = true;
    do {
      if (At(TokenKind::kStar)) {
        Fail(Cur().offset, program_.select_all ? "'*' may appear only once in the select list"
                                               : "'*' must be the first item of the select list");
      }
      named = ParseItem(position++);
    } while (Accept(TokenKind::kComma));
    return named;
  }

  bool ParseItem(std::size_t position) {
    const std::size_t start = Cur().offset;
    const std::uint32_t node = ParseExpr();
    std::string name;
    std::size_t name_offset = start;
    bool explicit_name = false;
    if (Accept(TokenKind::kAs)) {
      if (!At(TokenKind::kIdentifier) && !At(TokenKind::kQuotedIdentifier)) {
        Expected("a name");
      }
      name = Cur().text;
      name_offset = Cur().offset;
      explicit_name = true;
      ++pos_;
    } else if (const auto path = implicit_path_names_.find(node);
               path != implicit_path_names_.end()) {
      name = path->second;
    } else if (const auto call = implicit_call_names_.find(node);
               call != implicit_call_names_.end()) {
      name = call->second;
    } else {
      name = fmt::format("expr_{}", position);
    }
    if (!output_names_.insert(name).second) {
      Fail(name_offset,
           fmt::format("duplicate output name '{}'{}", name,
                       explicit_name ? "" : ": give one of the items another name with AS"));
    }
    program_.items.push_back(SelectItem{name, node});
    program_.output_names.push_back(std::move(name));
    return explicit_name;
  }

  void ParseTopicFilter() {
    if (!At(TokenKind::kString)) {
      Expected("a topic filter string");
    }
    const Token& token = Cur();
    if (auto error = ValidateTopicFilter(token.text)) {
      Fail(SourceOffsetInString(token, error->offset),
           fmt::format("invalid topic filter: {}", error->message));
    }
    program_.topic_filters.push_back(token.text);
    ++pos_;
  }

  // Maps an offset inside a string literal's unescaped text back to the statement.
  static std::size_t SourceOffsetInString(const Token& token, std::size_t unescaped) {
    std::size_t source = token.offset + 1;
    for (std::size_t i = 0; i < unescaped && i < token.text.size(); ++i) {
      source += token.text[i] == '\'' ? std::size_t{2} : std::size_t{1};
    }
    return source;
  }

  // ---- expressions ----

  std::uint32_t ParseExpr() {
    DepthGuard guard(*this, Cur().offset);
    return ParseOr();
  }

  std::uint32_t ParseOr() { return ParseLogical(TokenKind::kOr, Op::kOr, "'OR'"); }

  std::uint32_t ParseLogical(TokenKind keyword, Op op, std::string_view name) {
    const std::uint32_t first = op == Op::kOr ? ParseLogicalAnd() : ParseNot();
    if (!At(keyword)) {
      return first;
    }
    std::vector<std::uint32_t> operands{first};
    while (Accept(keyword)) {
      operands.push_back(op == Op::kOr ? ParseLogicalAnd() : ParseNot());
    }
    for (const std::uint32_t operand : operands) {
      RequireType(operand, Type::kBool, name);
    }
    Node node;
    node.op = op;
    node.type = Type::kBool;
    node.offset = nodes()[first].offset;
    return Add(node, operands);
  }

  std::uint32_t ParseLogicalAnd() { return ParseLogical(TokenKind::kAnd, Op::kAnd, "'AND'"); }

  std::uint32_t ParseNot() {
    if (!At(TokenKind::kNot)) {
      return ParsePredicate();
    }
    const std::size_t start = Cur().offset;
    ++pos_;
    DepthGuard guard(*this, start);
    const std::uint32_t operand = ParseNot();
    RequireType(operand, Type::kBool, "'NOT'");
    Node node;
    node.op = Op::kNot;
    node.type = Type::kBool;
    node.offset = static_cast<std::uint32_t>(start);
    return Add(node, {operand});
  }

  std::uint32_t ParsePredicate() {
    const std::uint32_t left = ParseAdditive();
    const Token& token = Cur();
    Op op = Op::kLiteral;
    switch (token.kind) {
      case TokenKind::kEq:
        op = Op::kEq;
        break;
      case TokenKind::kNe:
        op = Op::kNe;
        break;
      case TokenKind::kLt:
        op = Op::kLt;
        break;
      case TokenKind::kLe:
        op = Op::kLe;
        break;
      case TokenKind::kGt:
        op = Op::kGt;
        break;
      case TokenKind::kGe:
        op = Op::kGe;
        break;
      case TokenKind::kIs:
        return ParseIs(left);
      case TokenKind::kNot:
        if (Ahead(1).kind != TokenKind::kIn && Ahead(1).kind != TokenKind::kLike &&
            Ahead(1).kind != TokenKind::kBetween) {
          ++pos_;
          Expected("IN, LIKE or BETWEEN");
        }
        ++pos_;
        return ParseNegatable(left, true);
      case TokenKind::kIn:
      case TokenKind::kLike:
      case TokenKind::kBetween:
        return ParseNegatable(left, false);
      default:
        return left;
    }
    const std::size_t op_offset = token.offset;
    ++pos_;
    const std::uint32_t right = ParseAdditive();
    RequireComparable(left, right, op_offset);
    Node node;
    node.op = op;
    node.type = Type::kBool;
    node.offset = nodes()[left].offset;
    return Add(node, {left, right});
  }

  std::uint32_t ParseIs(std::uint32_t left) {
    ++pos_;
    Node node;
    node.op = Op::kIsNull;
    node.type = Type::kBool;
    node.negated = Accept(TokenKind::kNot);
    node.offset = nodes()[left].offset;
    if (!Accept(TokenKind::kNull)) {
      Expected(node.negated ? "NULL" : "NULL or NOT NULL");
    }
    return Add(node, {left});
  }

  std::uint32_t ParseNegatable(std::uint32_t left, bool negated) {
    const TokenKind kind = Cur().kind;
    ++pos_;
    Node node;
    node.type = Type::kBool;
    node.negated = negated;
    node.offset = nodes()[left].offset;
    if (kind == TokenKind::kIn) {
      node.op = Op::kIn;
      if (!Accept(TokenKind::kLParen)) {
        Expected("'('");
      }
      std::vector<std::uint32_t> operands{left};
      do {
        const std::size_t item_offset = Cur().offset;
        const std::uint32_t item = ParseExpr();
        RequireComparable(left, item, item_offset);
        operands.push_back(item);
      } while (Accept(TokenKind::kComma));
      if (!Accept(TokenKind::kRParen)) {
        Expected("',' or ')'");
      }
      return Add(node, operands);
    }
    if (kind == TokenKind::kBetween) {
      node.op = Op::kBetween;
      const std::size_t low_offset = Cur().offset;
      const std::uint32_t low = ParseAdditive();
      if (!Accept(TokenKind::kAnd)) {
        Expected("AND");
      }
      const std::size_t high_offset = Cur().offset;
      const std::uint32_t high = ParseAdditive();
      RequireComparable(left, low, low_offset);
      RequireComparable(left, high, high_offset);
      return Add(node, {left, low, high});
    }
    node.op = Op::kLike;
    const std::uint32_t pattern = ParseAdditive();
    RequireType(left, Type::kString, "'LIKE'");
    const Node& pattern_node = nodes()[pattern];
    if (pattern_node.op == Op::kLiteral) {
      const Value& value = program_.literals[pattern_node.aux];
      if (value.kind != Value::Kind::kString) {
        Fail(pattern_node.offset,
             fmt::format("LIKE pattern must be a string, found {}", TypeName(TypeOf(value))));
      }
      if (!LikeMatch("", value.s).has_value()) {
        Fail(pattern_node.offset, "LIKE pattern must not end with a lone escape character '\\'");
      }
      node.constant_pattern = true;
      node.aux = static_cast<std::uint32_t>(program_.likes.size());
      program_.likes.push_back(CompileLike(value.s));
    } else {
      RequireType(pattern, Type::kString, "LIKE pattern");
    }
    return Add(node, {left, pattern});
  }

  std::uint32_t ParseAdditive() {
    std::uint32_t left = ParseMultiplicative();
    while (At(TokenKind::kPlus) || At(TokenKind::kMinus)) {
      const Op op = At(TokenKind::kPlus) ? Op::kAdd : Op::kSub;
      const std::string name = Describe(Cur());
      ++pos_;
      const std::uint32_t right = ParseMultiplicative();
      left = Arithmetic(op, name, left, right);
    }
    return left;
  }

  std::uint32_t ParseMultiplicative() {
    std::uint32_t left = ParseUnary();
    while (At(TokenKind::kStar) || At(TokenKind::kSlash) || At(TokenKind::kPercent)) {
      const Op op = At(TokenKind::kStar) ? Op::kMul : At(TokenKind::kSlash) ? Op::kDiv : Op::kMod;
      const std::string name = Describe(Cur());
      ++pos_;
      const std::uint32_t right = ParseUnary();
      left = Arithmetic(op, name, left, right);
    }
    return left;
  }

  std::uint32_t Arithmetic(Op op, std::string_view name, std::uint32_t left, std::uint32_t right) {
    RequireType(left, Type::kNumber, name);
    RequireType(right, Type::kNumber, name);
    Node node;
    node.op = op;
    node.type = Type::kNumber;
    node.offset = nodes()[left].offset;
    return Add(node, {left, right});
  }

  std::uint32_t ParseUnary() {
    if (!At(TokenKind::kMinus) && !At(TokenKind::kPlus)) {
      return ParsePrimary();
    }
    const bool minus = At(TokenKind::kMinus);
    const std::size_t start = Cur().offset;
    // The one integer literal whose magnitude only fits when negated.
    constexpr std::uint64_t kMinMagnitude = std::uint64_t{1} << 63U;
    if (minus && Ahead(1).kind == TokenKind::kInteger && Ahead(1).fits_uint64 &&
        Ahead(1).unsigned_value == kMinMagnitude) {
      pos_ += 2;
      return AddLiteral(Value::Int(std::numeric_limits<std::int64_t>::min()), start);
    }
    const std::string name = Describe(Cur());
    ++pos_;
    DepthGuard guard(*this, start);
    const std::uint32_t operand = ParseUnary();
    RequireType(operand, Type::kNumber, name);
    if (!minus) {
      return operand;
    }
    Node node;
    node.op = Op::kNeg;
    node.type = Type::kNumber;
    node.offset = static_cast<std::uint32_t>(start);
    return Add(node, {operand});
  }

  std::uint32_t ParsePrimary() {
    const Token& token = Cur();
    switch (token.kind) {
      case TokenKind::kInteger: {
        ++pos_;
        constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
        if (token.fits_uint64 && token.unsigned_value <= kMax) {
          return AddLiteral(Value::Int(static_cast<std::int64_t>(token.unsigned_value)),
                            token.offset);
        }
        return AddLiteral(Value::Double(token.decimal), token.offset);
      }
      case TokenKind::kDecimal:
        ++pos_;
        return AddLiteral(Value::Double(token.decimal), token.offset);
      case TokenKind::kString:
        ++pos_;
        return AddLiteral(Value::String(token.text), token.offset);
      case TokenKind::kTrue:
      case TokenKind::kFalse:
        ++pos_;
        return AddLiteral(Value::Bool(token.kind == TokenKind::kTrue), token.offset);
      case TokenKind::kNull:
        ++pos_;
        return AddLiteral(Value::Null(), token.offset);
      case TokenKind::kLParen: {
        ++pos_;
        const std::uint32_t inner = ParseExpr();
        if (!Accept(TokenKind::kRParen)) {
          Expected("')'");
        }
        program_.nodes[inner].offset = static_cast<std::uint32_t>(token.offset);
        return inner;
      }
      case TokenKind::kCase:
        return ParseCase();
      case TokenKind::kIdentifier:
        if (Ahead(1).kind == TokenKind::kLParen) {
          return ParseCall();
        }
        return ParsePath();
      case TokenKind::kQuotedIdentifier:
        return ParsePath();
      default:
        Expected("an expression");
    }
  }

  std::uint32_t ParsePath() {
    const std::size_t start = Cur().offset;
    Path path;
    path.push_back(PathSegment{Cur().text, 0, false});
    std::string name = Cur().text;
    ++pos_;
    for (;;) {
      if (Accept(TokenKind::kDot)) {
        const Token& key = Cur();
        if (key.kind != TokenKind::kIdentifier && key.kind != TokenKind::kQuotedIdentifier &&
            !IsKeyword(key.kind)) {
          Expected("a name");
        }
        path.push_back(PathSegment{key.text, 0, false});
        name = key.text;
        ++pos_;
      } else if (Accept(TokenKind::kLBracket)) {
        const Token& index = Cur();
        if (index.kind != TokenKind::kInteger || !index.fits_uint64) {
          Expected("an array index (a non-negative integer)");
        }
        path.push_back(PathSegment{{}, static_cast<std::size_t>(index.unsigned_value), true});
        ++pos_;
        if (!Accept(TokenKind::kRBracket)) {
          Expected("']'");
        }
      } else {
        break;
      }
    }
    Node node;
    node.op = Op::kPath;
    node.offset = static_cast<std::uint32_t>(start);
    if (path.size() > kMaxPathSegments) {
      Fail(start, fmt::format("path is too long (limit {} segments)", kMaxPathSegments));
    }
    node.aux = static_cast<std::uint32_t>(program_.paths.size());
    program_.path_ends.push_back(InternSteps(path));
    program_.paths.push_back(std::move(path));
    const std::uint32_t index = Add(node, {});
    implicit_path_names_.emplace(index, std::move(name));
    return index;
  }

  // Adds the path's prefixes to the program's path trie; returns its last step.
  std::uint32_t InternSteps(const Path& path) {
    std::uint32_t parent = PathStep::kRoot;
    for (const PathSegment& segment : path) {
      const std::string key =
          fmt::format("{}\x1f{}\x1f{}", parent, segment.is_index ? "#" : "k",
                      segment.is_index ? std::to_string(segment.index) : segment.key);
      const auto [it, inserted] =
          step_indexes_.try_emplace(key, static_cast<std::uint32_t>(program_.path_steps.size()));
      if (inserted) {
        program_.path_steps.push_back(PathStep{parent, segment});
      }
      parent = it->second;
    }
    return parent;
  }

  std::uint32_t ParseCall() {
    const Token& name = Cur();
    const FunctionInfo* info = FindFunction(name.text);
    if (info == nullptr) {
      Fail(name.offset, fmt::format("unknown function '{}'", name.text));
    }
    pos_ += 2;
    std::vector<std::uint32_t> args;
    std::vector<std::size_t> offsets;
    if (!At(TokenKind::kRParen)) {
      do {
        offsets.push_back(Cur().offset);
        args.push_back(ParseExpr());
      } while (Accept(TokenKind::kComma));
    }
    if (!Accept(TokenKind::kRParen)) {
      Expected("',' or ')'");
    }
    if (args.size() < info->min_args || args.size() > info->max_args) {
      Fail(name.offset, fmt::format("function {}() takes {}, got {}", info->name,
                                    ArgCountText(*info), args.size()));
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
      CheckArgument(*info, i, args[i], offsets[i]);
    }
    Node node;
    node.op = Op::kCall;
    node.func = info->func;
    node.type = info->result;
    node.offset = static_cast<std::uint32_t>(name.offset);
    if (info->func == Func::kCoalesce) {
      node.type = CommonType(args);
    }
    const std::uint32_t index = Add(node, args);
    if (args.empty()) {
      implicit_call_names_.emplace(index, std::string(info->name));
    }
    return index;
  }

  void CheckArgument(const FunctionInfo& info, std::size_t i, std::uint32_t arg,
                     std::size_t offset) {
    const ArgKind kind = info.args[std::min<std::size_t>(i, info.args.size() - 1)];
    const std::string what = fmt::format("argument {} of {}()", i + 1, info.name);
    switch (kind) {
      case ArgKind::kAny:
        return;
      case ArgKind::kString:
        RequireType(arg, Type::kString, what);
        return;
      case ArgKind::kNumber:
      case ArgKind::kInteger:
        RequireType(arg, Type::kNumber, what);
        break;
    }
    const Node& node = nodes()[arg];
    if (kind != ArgKind::kInteger || node.op != Op::kLiteral) {
      return;
    }
    const Value& value = program_.literals[node.aux];
    if (value.kind == Value::Kind::kDouble && std::trunc(value.d) != value.d) {
      Fail(offset, fmt::format("{} must be an integer", what));
    }
    if (info.func == Func::kTopic && value.kind == Value::Kind::kInt && value.i < 1) {
      Fail(offset, "topic level must be at least 1 (levels count from 1)");
    }
  }

  std::uint32_t ParseCase() {
    const std::size_t start = Cur().offset;
    ++pos_;
    Node node;
    node.op = Op::kCase;
    node.offset = static_cast<std::uint32_t>(start);
    std::vector<std::uint32_t> args;
    std::uint32_t operand = 0;
    if (!At(TokenKind::kWhen)) {
      node.has_operand = true;
      operand = ParseExpr();
      args.push_back(operand);
    }
    if (!At(TokenKind::kWhen)) {
      Expected("WHEN");
    }
    std::vector<std::uint32_t> results;
    while (Accept(TokenKind::kWhen)) {
      const std::size_t when_offset = Cur().offset;
      const std::uint32_t when = ParseExpr();
      if (node.has_operand) {
        RequireComparable(operand, when, when_offset);
      } else {
        RequireType(when, Type::kBool, "WHEN");
      }
      if (!Accept(TokenKind::kThen)) {
        Expected("THEN");
      }
      const std::uint32_t then = ParseExpr();
      args.push_back(when);
      args.push_back(then);
      results.push_back(then);
    }
    if (Accept(TokenKind::kElse)) {
      node.has_else = true;
      const std::uint32_t otherwise = ParseExpr();
      args.push_back(otherwise);
      results.push_back(otherwise);
    }
    if (!Accept(TokenKind::kEndKeyword)) {
      Expected(node.has_else ? "END" : "WHEN, ELSE or END");
    }
    node.type = CommonType(results);
    return Add(node, args);
  }

  // ---- checks ----

  Type CommonType(const std::vector<std::uint32_t>& indexes) const {
    Type common = Type::kNull;
    for (const std::uint32_t index : indexes) {
      const Type type = nodes()[index].type;
      if (type == Type::kNull) {
        continue;
      }
      if (common == Type::kNull) {
        common = type;
      } else if (common != type) {
        return Type::kAny;
      }
    }
    return common;
  }

  void RequireType(std::uint32_t index, Type want, std::string_view what) const {
    const Node& node = nodes()[index];
    if (node.type == Type::kAny || node.type == Type::kNull || node.type == want) {
      return;
    }
    Fail(node.offset,
         fmt::format("{} needs {}, found {}", what, TypeName(want), TypeName(node.type)));
  }

  void RequireComparable(std::uint32_t left, std::uint32_t right, std::size_t offset) const {
    const Type a = nodes()[left].type;
    const Type b = nodes()[right].type;
    if (a == Type::kAny || b == Type::kAny || a == Type::kNull || b == Type::kNull || a == b) {
      return;
    }
    Fail(offset, fmt::format("cannot compare {} with {}", TypeName(a), TypeName(b)));
  }

  // ---- building ----

  const std::vector<Node>& nodes() const { return program_.nodes; }

  std::uint32_t AddLiteral(Value value, std::size_t offset) {
    if (value.kind == Value::Kind::kString) {
      value.s = program_.strings.emplace_back(value.s);
    }
    Node node;
    node.op = Op::kLiteral;
    node.type = TypeOf(value);
    node.offset = static_cast<std::uint32_t>(offset);
    node.aux = static_cast<std::uint32_t>(program_.literals.size());
    program_.literals.push_back(value);
    return Add(node, {});
  }

  std::uint32_t Add(Node node, const std::vector<std::uint32_t>& children) {
    std::uint32_t height = 0;
    bool all_literal = true;
    for (const std::uint32_t child : children) {
      height = std::max(height, nodes()[child].height);
      all_literal = all_literal && nodes()[child].op == Op::kLiteral;
    }
    node.height = height + 1;
    if (node.height > static_cast<std::uint32_t>(kMaxNestingDepth)) {
      Fail(node.offset, NestingMessage());
    }
    node.first_arg = static_cast<std::uint32_t>(program_.args.size());
    node.arg_count = static_cast<std::uint32_t>(children.size());
    program_.args.insert(program_.args.end(), children.begin(), children.end());
    const auto index = static_cast<std::uint32_t>(program_.nodes.size());
    program_.nodes.push_back(node);
    if (!children.empty() && all_literal && Foldable(node)) {
      Fold(index);
    }
    return index;
  }

  static bool Foldable(const Node& node) {
    if (node.op == Op::kCall) {
      for (const FunctionInfo& info : kFunctions) {
        if (info.func == node.func) {
          return info.pure;
        }
      }
      return false;
    }
    return node.op != Op::kLiteral && node.op != Op::kPath;
  }

  // Replaces a node whose operands are all literals by the literal it evaluates to.
  void Fold(std::uint32_t index) {
    static const nlohmann::json kNoEnvelope;
    static const EvalContext kNoContext;
    Frame frame(kNoEnvelope, kNoContext);
    Value value = Eval(program_, index, frame);
    if (value.kind == Value::Kind::kString) {
      value.s = program_.strings.emplace_back(value.s);
    } else if (value.kind == Value::Kind::kJson) {
      return;  // unreachable without paths; keep the node as it is
    }
    Node& node = program_.nodes[index];
    node.op = Op::kLiteral;
    node.type = TypeOf(value);
    node.func = Func::kNone;
    node.arg_count = 0;
    node.height = 1;
    node.aux = static_cast<std::uint32_t>(program_.literals.size());
    program_.literals.push_back(value);
  }

  std::vector<Token> tokens_;
  Program& program_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  std::unordered_set<std::string> output_names_;
  std::unordered_map<std::uint32_t, std::string> implicit_path_names_;
  std::unordered_map<std::uint32_t, std::string> implicit_call_names_;
  std::unordered_map<std::string, std::uint32_t> step_indexes_;
};

}  // namespace

std::string_view TypeName(Type type) {
  switch (type) {
    case Type::kAny:
      return "a value";
    case Type::kNull:
      return "NULL";
    case Type::kBool:
      return "a boolean";
    case Type::kNumber:
      return "a number";
    case Type::kString:
      return "a string";
  }
  return "a value";
}

std::variant<std::shared_ptr<const Program>, CompileError> BuildProgram(std::string_view sql) {
  auto lexed = Lex(sql);
  if (auto* error = std::get_if<LexError>(&lexed)) {
    return CompileError{error->offset, std::move(error->message)};
  }
  auto program = std::make_shared<Program>();
  program->sql = std::string(sql);
  try {
    Parser parser(std::get<std::vector<Token>>(std::move(lexed)), *program);
    parser.ParseStatement();
  } catch (ParseFailure& failure) {
    return CompileError{failure.offset, std::move(failure.message)};
  }
  return std::shared_ptr<const Program>(std::move(program));
}

}  // namespace iot::rule_forwarding::sql::internal
