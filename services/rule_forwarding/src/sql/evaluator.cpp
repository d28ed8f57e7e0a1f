// The interpreter of compiled rule programs. Hot path: every function here runs per message,
// so values are views (no copies of envelope strings) and nothing allocates unless a function
// builds a new string (lower, upper, concat, to_string).

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "iot/rule_forwarding/sql/program.h"

namespace iot::rule_forwarding::sql::internal {

namespace {

using json = nlohmann::json;

constexpr double kTwo63 = 9223372036854775808.0;  // 2^63, exactly representable

// An integral double inside int64 range becomes an Int; anything else stays a Double.
Value IntegralDouble(double v) {
  if (std::isfinite(v) && v >= -kTwo63 && v < kTwo63 && std::trunc(v) == v) {
    return Value::Int(static_cast<std::int64_t>(v));
  }
  return Value::Double(v);
}

std::optional<std::int64_t> AsInteger(const Value& v) {
  if (v.kind == Value::Kind::kInt) {
    return v.i;
  }
  if (v.kind == Value::Kind::kDouble && v.d >= -kTwo63 && v.d < kTwo63 && std::trunc(v.d) == v.d) {
    return static_cast<std::int64_t>(v.d);
  }
  return std::nullopt;
}

// Exact ordering of an int64 and a finite double.
int CompareIntDouble(std::int64_t a, double b) {
  if (b >= kTwo63) {
    return -1;
  }
  if (b < -kTwo63) {
    return 1;
  }
  const double t = std::trunc(b);
  const auto ti = static_cast<std::int64_t>(t);
  if (a != ti) {
    return a < ti ? -1 : 1;
  }
  const double frac = b - t;
  return frac > 0 ? -1 : (frac < 0 ? 1 : 0);
}

int CompareNumbers(const Value& a, const Value& b) {
  if (a.kind == Value::Kind::kInt && b.kind == Value::Kind::kInt) {
    return a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
  }
  if (a.kind == Value::Kind::kInt) {
    return CompareIntDouble(a.i, b.d);
  }
  if (b.kind == Value::Kind::kInt) {
    return -CompareIntDouble(b.i, a.d);
  }
  return a.d < b.d ? -1 : (a.d > b.d ? 1 : 0);
}

enum class Order : std::uint8_t { kLess, kEqual, kGreater, kSame, kUnequal, kUnknown };

// kSame / kUnequal: JSON objects and arrays, which compare for equality only.
// kUnknown: NULL involved or different types.
bool IsEqual(Order order) { return order == Order::kEqual || order == Order::kSame; }
Order Compare(const Value& a, const Value& b) {
  auto sign = [](int c) {
    return c < 0 ? Order::kLess : (c > 0 ? Order::kGreater : Order::kEqual);
  };
  if (a.is_number() && b.is_number()) {
    return sign(CompareNumbers(a, b));
  }
  if (a.kind != b.kind) {
    return Order::kUnknown;
  }
  switch (a.kind) {
    case Value::Kind::kString:
      return sign(a.s.compare(b.s));
    case Value::Kind::kBool:
      return sign(static_cast<int>(a.b) - static_cast<int>(b.b));
    case Value::Kind::kJson:
      return *a.j == *b.j ? Order::kSame : Order::kUnequal;
    default:
      return Order::kUnknown;
  }
}

Value ApplyComparison(Op op, Order order) {
  if (order == Order::kUnknown) {
    return Value::Null();
  }
  if (order == Order::kSame || order == Order::kUnequal) {
    if (op == Op::kEq || op == Op::kNe) {
      return Value::Bool((op == Op::kEq) == (order == Order::kSame));
    }
    return Value::Null();
  }
  switch (op) {
    case Op::kEq:
      return Value::Bool(order == Order::kEqual);
    case Op::kNe:
      return Value::Bool(order != Order::kEqual);
    case Op::kLt:
      return Value::Bool(order == Order::kLess);
    case Op::kLe:
      return Value::Bool(order != Order::kGreater);
    case Op::kGt:
      return Value::Bool(order == Order::kGreater);
    case Op::kGe:
      return Value::Bool(order != Order::kLess);
    default:
      return Value::Null();
  }
}

Value Arithmetic(Op op, const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) {
    return Value::Null();
  }
  if (a.kind == Value::Kind::kInt && b.kind == Value::Kind::kInt) {
    std::int64_t out = 0;
    const double x = static_cast<double>(a.i);
    const double y = static_cast<double>(b.i);
    switch (op) {
      case Op::kAdd:
        return __builtin_add_overflow(a.i, b.i, &out) ? Value::Double(x + y) : Value::Int(out);
      case Op::kSub:
        return __builtin_sub_overflow(a.i, b.i, &out) ? Value::Double(x - y) : Value::Int(out);
      case Op::kMul:
        return __builtin_mul_overflow(a.i, b.i, &out) ? Value::Double(x * y) : Value::Int(out);
      case Op::kDiv:
        if (b.i == 0) {
          return Value::Null();
        }
        if (b.i == -1) {
          return a.i == std::numeric_limits<std::int64_t>::min() ? Value::Double(-x)
                                                                 : Value::Int(-a.i);
        }
        return a.i % b.i == 0 ? Value::Int(a.i / b.i) : Value::Double(x / y);
      case Op::kMod:
        if (b.i == 0) {
          return Value::Null();
        }
        return b.i == -1 ? Value::Int(0) : Value::Int(a.i % b.i);
      default:
        return Value::Null();
    }
  }
  const double x = a.AsDouble();
  const double y = b.AsDouble();
  switch (op) {
    case Op::kAdd:
      return Value::Double(x + y);
    case Op::kSub:
      return Value::Double(x - y);
    case Op::kMul:
      return Value::Double(x * y);
    case Op::kDiv:
      return y == 0 ? Value::Null() : Value::Double(x / y);
    case Op::kMod:
      return y == 0 ? Value::Null() : Value::Double(std::fmod(x, y));
    default:
      return Value::Null();
  }
}

// SQL truth of a value: TRUE, FALSE or unknown (NULL and every non-boolean).
enum class Truth : std::uint8_t { kFalse, kTrue, kUnknown };

Truth TruthOf(const Value& v) {
  if (v.kind != Value::Kind::kBool) {
    return Truth::kUnknown;
  }
  return v.b ? Truth::kTrue : Truth::kFalse;
}

Value FromTruth(Truth t) {
  return t == Truth::kUnknown ? Value::Null() : Value::Bool(t == Truth::kTrue);
}

std::string_view Keep(Frame& frame, std::string text) {
  frame.scratch.push_front(std::move(text));
  return frame.scratch.front();
}

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0U) == 0x80U; }

std::size_t NextCodePoint(std::string_view s, std::size_t i) {
  ++i;
  while (i < s.size() && IsContinuation(s[i])) {
    ++i;
  }
  return i;
}

std::int64_t CountCodePoints(std::string_view s) {
  std::int64_t n = 0;
  for (const char c : s) {
    n += IsContinuation(c) ? 0 : 1;
  }
  return n;
}

// Byte offset of code point `index` (0-based), or s.size() past the end.
std::size_t CodePointOffset(std::string_view s, std::int64_t index) {
  std::size_t i = 0;
  for (std::int64_t k = 0; k < index && i < s.size(); ++k) {
    i = NextCodePoint(s, i);
  }
  return i;
}

void AppendNumber(std::string& out, const Value& v) {
  std::array<char, 64> buffer{};
  const auto result = v.kind == Value::Kind::kInt
                          ? std::to_chars(buffer.data(), buffer.data() + buffer.size(), v.i)
                          : std::to_chars(buffer.data(), buffer.data() + buffer.size(), v.d);
  out.append(buffer.data(), result.ptr);
}

// The text form used by concat and to_string; false for NULL.
bool AppendText(std::string& out, const Value& v) {
  switch (v.kind) {
    case Value::Kind::kNull:
      return false;
    case Value::Kind::kBool:
      out.append(v.b ? "true" : "false");
      return true;
    case Value::Kind::kInt:
    case Value::Kind::kDouble:
      AppendNumber(out, v);
      return true;
    case Value::Kind::kString:
      out.append(v.s);
      return true;
    case Value::Kind::kJson:
      out.append(v.j->dump(-1, ' ', false, json::error_handler_t::replace));
      return true;
  }
  return false;
}

Value ParseNumber(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  if (!text.empty() && text.front() == '+') {
    text.remove_prefix(1);
  }
  if (text.empty()) {
    return Value::Null();
  }
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  std::int64_t i = 0;
  if (const auto r = std::from_chars(begin, end, i); r.ec == std::errc() && r.ptr == end) {
    return Value::Int(i);
  }
  double d = 0;
  if (const auto r = std::from_chars(begin, end, d); r.ec == std::errc() && r.ptr == end) {
    return Value::Double(d);
  }
  return Value::Null();
}

Value CaseMapped(Frame& frame, const Value& v, bool upper) {
  if (v.kind != Value::Kind::kString) {
    return Value::Null();
  }
  const char from_lo = upper ? 'a' : 'A';
  const char from_hi = upper ? 'z' : 'Z';
  const auto changes = [&](char c) { return c >= from_lo && c <= from_hi; };
  if (std::none_of(v.s.begin(), v.s.end(), changes)) {
    return v;
  }
  std::string out(v.s);
  for (char& c : out) {
    if (changes(c)) {
      c = static_cast<char>(upper ? c - 'a' + 'A' : c - 'A' + 'a');
    }
  }
  return Value::String(Keep(frame, std::move(out)));
}

// substring(s, start[, len]) with SQL semantics: 1-based, positions before 1 count towards len.
Value Substring(const Value& s, const Value& start_value, const Value* len_value) {
  const auto start = AsInteger(start_value);
  if (s.kind != Value::Kind::kString || !start) {
    return Value::Null();
  }
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  std::int64_t end = kMax;  // exclusive, 1-based
  if (len_value != nullptr) {
    const auto len = AsInteger(*len_value);
    if (!len || *len < 0) {
      return Value::Null();
    }
    if (__builtin_add_overflow(*start, *len, &end)) {
      end = *start > 0 ? kMax : std::numeric_limits<std::int64_t>::min();
    }
  }
  const std::int64_t first = std::max<std::int64_t>(*start, 1);
  if (end <= first) {
    return Value::String(s.s.substr(0, 0));
  }
  const std::size_t begin = CodePointOffset(s.s, first - 1);
  const std::size_t stop =
      end == kMax ? s.s.size() : begin + CodePointOffset(s.s.substr(begin), end - first);
  return Value::String(s.s.substr(begin, stop - begin));
}

Value Round(const Value& x, const Value* digits_value) {
  if (!x.is_number()) {
    return Value::Null();
  }
  std::int64_t digits = 0;
  if (digits_value != nullptr) {
    const auto d = AsInteger(*digits_value);
    if (!d) {
      return Value::Null();
    }
    digits = *d;
  }
  if (x.kind == Value::Kind::kInt && digits >= 0) {
    return x;
  }
  const double v = x.AsDouble();
  if (digits == 0) {
    return IntegralDouble(std::round(v));
  }
  if (digits > 0) {
    if (digits > 15) {
      return x;
    }
    const double p = std::pow(10.0, static_cast<double>(digits));
    const double scaled = v * p;
    return std::isfinite(scaled) ? Value::Double(std::round(scaled) / p) : x;
  }
  if (digits < -308) {
    return Value::Int(0);
  }
  const double p = std::pow(10.0, static_cast<double>(-digits));
  return IntegralDouble(std::round(v / p) * p);
}

const Path& HeaderPath(std::string_view field) {
  static const Path kDevice{
      {"notify_data", 0, false}, {"header", 0, false}, {"device_id", 0, false}};
  static const Path kProduct{
      {"notify_data", 0, false}, {"header", 0, false}, {"product_id", 0, false}};
  static const Path kTenant{
      {"notify_data", 0, false}, {"header", 0, false}, {"tenant_id", 0, false}};
  static const Path kDialect{
      {"notify_data", 0, false}, {"header", 0, false}, {"dialect", 0, false}};
  if (field == "device_id") {
    return kDevice;
  }
  if (field == "dialect") {
    return kDialect;
  }
  return field == "product_id" ? kProduct : kTenant;
}

Value HeaderString(const Frame& frame, std::string_view field) {
  const json* v = Resolve(HeaderPath(field), frame.envelope);
  if (v == nullptr || !v->is_string()) {
    return Value::Null();
  }
  return Value::String(*v->get_ptr<const json::string_t*>());
}

// Level `n` (1-based) of the topic, or nullopt.
std::optional<std::string_view> TopicLevel(std::string_view topic, std::int64_t n) {
  if (topic.empty() || n < 1) {
    return std::nullopt;
  }
  std::size_t begin = 0;
  for (std::int64_t level = 1; level < n; ++level) {
    const std::size_t slash = topic.find('/', begin);
    if (slash == std::string_view::npos) {
      return std::nullopt;
    }
    begin = slash + 1;
  }
  const std::size_t slash = topic.find('/', begin);
  return topic.substr(begin,
                      slash == std::string_view::npos ? std::string_view::npos : slash - begin);
}

class Evaluator {
 public:
  Evaluator(const Program& program, Frame& frame) : program_(program), frame_(frame) {}

  Value Eval(std::uint32_t index) {
    const Node& node = program_.nodes[index];
    switch (node.op) {
      case Op::kLiteral:
        return program_.literals[node.aux];
      case Op::kPath: {
        const json* v = ResolvePath(program_, node.aux, frame_);
        return v == nullptr ? Value::Null() : Value::FromJson(*v);
      }
      case Op::kCall:
        return Call(node);
      case Op::kNeg: {
        const Value v = Arg(node, 0);
        if (v.kind == Value::Kind::kInt) {
          return v.i == std::numeric_limits<std::int64_t>::min()
                     ? Value::Double(-static_cast<double>(v.i))
                     : Value::Int(-v.i);
        }
        return v.kind == Value::Kind::kDouble ? Value::Double(-v.d) : Value::Null();
      }
      case Op::kNot: {
        const Truth t = TruthOf(Arg(node, 0));
        return t == Truth::kUnknown ? Value::Null() : Value::Bool(t == Truth::kFalse);
      }
      case Op::kAnd:
      case Op::kOr: {
        const Truth decisive = node.op == Op::kAnd ? Truth::kFalse : Truth::kTrue;
        bool unknown = false;
        for (std::uint32_t k = 0; k < node.arg_count; ++k) {
          const Truth t = TruthOf(Arg(node, k));
          if (t == decisive) {
            return Value::Bool(t == Truth::kTrue);
          }
          unknown = unknown || t == Truth::kUnknown;
        }
        return unknown ? Value::Null() : Value::Bool(node.op == Op::kAnd);
      }
      case Op::kAdd:
      case Op::kSub:
      case Op::kMul:
      case Op::kDiv:
      case Op::kMod:
        return Arithmetic(node.op, Arg(node, 0), Arg(node, 1));
      case Op::kEq:
      case Op::kNe:
      case Op::kLt:
      case Op::kLe:
      case Op::kGt:
      case Op::kGe:
        return ApplyComparison(node.op, Compare(Arg(node, 0), Arg(node, 1)));
      case Op::kIn:
        return In(node);
      case Op::kLike:
        return Like(node);
      case Op::kIsNull:
        return Value::Bool(Arg(node, 0).is_null() != node.negated);
      case Op::kBetween: {
        const Value x = Arg(node, 0);
        if (x.is_null()) {
          return Value::Null();
        }
        const Truth low = TruthOf(ApplyComparison(Op::kGe, Compare(x, Arg(node, 1))));
        const Truth high = TruthOf(ApplyComparison(Op::kLe, Compare(x, Arg(node, 2))));
        Truth both = Truth::kTrue;
        if (low == Truth::kFalse || high == Truth::kFalse) {
          both = Truth::kFalse;
        } else if (low == Truth::kUnknown || high == Truth::kUnknown) {
          both = Truth::kUnknown;
        }
        if (node.negated && both != Truth::kUnknown) {
          both = both == Truth::kTrue ? Truth::kFalse : Truth::kTrue;
        }
        return FromTruth(both);
      }
      case Op::kCase:
        return Case(node);
    }
    return Value::Null();
  }

 private:
  Value Arg(const Node& node, std::uint32_t k) { return Eval(program_.args[node.first_arg + k]); }

  Value In(const Node& node) {
    const Value x = Arg(node, 0);
    if (x.is_null()) {
      return Value::Null();
    }
    bool unknown = false;
    for (std::uint32_t k = 1; k < node.arg_count; ++k) {
      const Order order = Compare(x, Arg(node, k));
      if (IsEqual(order)) {
        return Value::Bool(!node.negated);
      }
      unknown = unknown || order == Order::kUnknown;
    }
    return unknown ? Value::Null() : Value::Bool(node.negated);
  }

  Value Like(const Node& node) {
    const Value x = Arg(node, 0);
    if (x.kind != Value::Kind::kString) {
      return Value::Null();
    }
    bool matched = false;
    if (node.constant_pattern) {
      const LikePattern& pattern = program_.likes[node.aux];
      switch (pattern.kind) {
        case LikePattern::Kind::kExact:
          matched = x.s == pattern.text;
          break;
        case LikePattern::Kind::kPrefix:
          matched = x.s.starts_with(pattern.text);
          break;
        case LikePattern::Kind::kSuffix:
          matched = x.s.ends_with(pattern.text);
          break;
        case LikePattern::Kind::kContains:
          matched = x.s.find(pattern.text) != std::string_view::npos;
          break;
        case LikePattern::Kind::kAny:
          matched = true;
          break;
        case LikePattern::Kind::kGeneral:
          matched = LikeMatch(x.s, pattern.text).value_or(false);
          break;
      }
    } else {
      const Value pattern = Arg(node, 1);
      if (pattern.kind != Value::Kind::kString) {
        return Value::Null();
      }
      const auto result = LikeMatch(x.s, pattern.s);
      if (!result) {
        return Value::Null();
      }
      matched = *result;
    }
    return Value::Bool(matched != node.negated);
  }

  Value Case(const Node& node) {
    std::uint32_t k = 0;
    Value operand;
    if (node.has_operand) {
      operand = Arg(node, k++);
    }
    const std::uint32_t end = node.arg_count - (node.has_else ? 1 : 0);
    for (; k + 1 < end; k += 2) {
      const Value when = Arg(node, k);
      const bool hit =
          node.has_operand ? IsEqual(Compare(operand, when)) : TruthOf(when) == Truth::kTrue;
      if (hit) {
        return Arg(node, k + 1);
      }
    }
    return node.has_else ? Arg(node, node.arg_count - 1) : Value::Null();
  }

  Value Call(const Node& node) {
    switch (node.func) {
      case Func::kNone:
        return Value::Null();
      case Func::kDeviceId: {
        const Value v = HeaderString(frame_, "device_id");
        if (!v.is_null()) {
          return v;
        }
        constexpr std::string_view kPrefix = "$oc/devices/";
        if (!frame_.ctx.topic.starts_with(kPrefix)) {
          return Value::Null();
        }
        const auto id = TopicLevel(frame_.ctx.topic, 3);
        return id && !id->empty() ? Value::String(*id) : Value::Null();
      }
      case Func::kProductId:
        return HeaderString(frame_, "product_id");
      case Func::kDialect: {
        // Records of Huawei devices made before the gateway named the dialect have none.
        const Value v = HeaderString(frame_, "dialect");
        return v.is_null() ? Value::String("huawei") : v;
      }
      case Func::kTenantId:
        return frame_.ctx.tenant_id.empty() ? HeaderString(frame_, "tenant_id")
                                            : Value::String(frame_.ctx.tenant_id);
      case Func::kTopic: {
        if (node.arg_count == 0) {
          return frame_.ctx.topic.empty() ? Value::Null() : Value::String(frame_.ctx.topic);
        }
        const auto n = AsInteger(Arg(node, 0));
        const auto level = n ? TopicLevel(frame_.ctx.topic, *n) : std::nullopt;
        return level ? Value::String(*level) : Value::Null();
      }
      case Func::kTimestamp:
        return Value::Int(frame_.ctx.receive_time_ms);
      case Func::kAbs: {
        const Value v = Arg(node, 0);
        if (v.kind == Value::Kind::kInt) {
          if (v.i == std::numeric_limits<std::int64_t>::min()) {
            return Value::Double(kTwo63);
          }
          return Value::Int(v.i < 0 ? -v.i : v.i);
        }
        return v.kind == Value::Kind::kDouble ? Value::Double(std::fabs(v.d)) : Value::Null();
      }
      case Func::kRound: {
        const Value x = Arg(node, 0);
        if (node.arg_count < 2) {
          return Round(x, nullptr);
        }
        const Value digits = Arg(node, 1);
        return Round(x, &digits);
      }
      case Func::kFloor:
      case Func::kCeil: {
        const Value v = Arg(node, 0);
        if (v.kind == Value::Kind::kInt) {
          return v;
        }
        if (v.kind != Value::Kind::kDouble) {
          return Value::Null();
        }
        return IntegralDouble(node.func == Func::kFloor ? std::floor(v.d) : std::ceil(v.d));
      }
      case Func::kLower:
      case Func::kUpper:
        return CaseMapped(frame_, Arg(node, 0), node.func == Func::kUpper);
      case Func::kConcat: {
        std::string out;
        for (std::uint32_t k = 0; k < node.arg_count; ++k) {
          AppendText(out, Arg(node, k));
        }
        return Value::String(Keep(frame_, std::move(out)));
      }
      case Func::kStartsWith:
      case Func::kEndsWith: {
        const Value s = Arg(node, 0);
        const Value affix = Arg(node, 1);
        if (s.kind != Value::Kind::kString || affix.kind != Value::Kind::kString) {
          return Value::Null();
        }
        return Value::Bool(node.func == Func::kStartsWith ? s.s.starts_with(affix.s)
                                                          : s.s.ends_with(affix.s));
      }
      case Func::kSubstring: {
        const Value s = Arg(node, 0);
        const Value start = Arg(node, 1);
        if (node.arg_count < 3) {
          return Substring(s, start, nullptr);
        }
        const Value len = Arg(node, 2);
        return Substring(s, start, &len);
      }
      case Func::kLength: {
        const Value v = Arg(node, 0);
        if (v.kind == Value::Kind::kString) {
          return Value::Int(CountCodePoints(v.s));
        }
        if (v.kind == Value::Kind::kJson) {
          return Value::Int(static_cast<std::int64_t>(v.j->size()));
        }
        return Value::Null();
      }
      case Func::kCoalesce:
        for (std::uint32_t k = 0; k < node.arg_count; ++k) {
          const Value v = Arg(node, k);
          if (!v.is_null()) {
            return v;
          }
        }
        return Value::Null();
      case Func::kToNumber: {
        const Value v = Arg(node, 0);
        switch (v.kind) {
          case Value::Kind::kInt:
          case Value::Kind::kDouble:
            return v;
          case Value::Kind::kBool:
            return Value::Int(v.b ? 1 : 0);
          case Value::Kind::kString:
            return ParseNumber(v.s);
          default:
            return Value::Null();
        }
      }
      case Func::kToString: {
        const Value v = Arg(node, 0);
        if (v.kind == Value::Kind::kString || v.is_null()) {
          return v;
        }
        std::string out;
        AppendText(out, v);
        return Value::String(Keep(frame_, std::move(out)));
      }
    }
    return Value::Null();
  }

  const Program& program_;
  Frame& frame_;
};

}  // namespace

Value Value::Double(double v) {
  if (!std::isfinite(v)) {
    return Null();
  }
  Value out;
  out.kind = Kind::kDouble;
  out.d = v;
  return out;
}

Value Value::FromJson(const json& v) {
  switch (v.type()) {
    case json::value_t::boolean:
      return Bool(*v.get_ptr<const json::boolean_t*>());
    case json::value_t::number_integer:
      return Int(*v.get_ptr<const json::number_integer_t*>());
    case json::value_t::number_unsigned: {
      const auto u = *v.get_ptr<const json::number_unsigned_t*>();
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        return Int(static_cast<std::int64_t>(u));
      }
      return Double(static_cast<double>(u));
    }
    case json::value_t::number_float:
      return Double(*v.get_ptr<const json::number_float_t*>());
    case json::value_t::string:
      return String(*v.get_ptr<const json::string_t*>());
    case json::value_t::object:
    case json::value_t::array:
      return Json(&v);
    default:
      return Null();
  }
}

namespace {

const json* Step(const json& from, const PathSegment& segment) {
  if (segment.is_index) {
    const auto* array = from.get_ptr<const json::array_t*>();
    if (array == nullptr || segment.index >= array->size()) {
      return nullptr;
    }
    return &(*array)[segment.index];
  }
  const auto* object = from.get_ptr<const json::object_t*>();
  if (object == nullptr) {
    return nullptr;
  }
  const auto it = object->find(segment.key);
  return it == object->end() ? nullptr : &it->second;
}

// Recursion depth is bounded by kMaxPathSegments.
const json* ResolveStep(const Program& program, std::uint32_t index, Frame& frame) {
  const bool cacheable = index < Frame::kCachedSteps;
  const std::uint64_t bit = cacheable ? std::uint64_t{1} << index : 0;
  if (cacheable && (frame.resolved_mask & bit) != 0) {
    return frame.resolved[index];
  }
  const PathStep& step = program.path_steps[index];
  const json* parent =
      step.parent == PathStep::kRoot ? &frame.envelope : ResolveStep(program, step.parent, frame);
  const json* result = parent == nullptr ? nullptr : Step(*parent, step.segment);
  if (cacheable) {
    frame.resolved[index] = result;
    frame.resolved_mask |= bit;
  }
  return result;
}

}  // namespace

const json* Resolve(const Path& path, const json& root) {
  const json* current = &root;
  for (const PathSegment& segment : path) {
    current = Step(*current, segment);
    if (current == nullptr) {
      return nullptr;
    }
  }
  return current;
}

const json* ResolvePath(const Program& program, std::uint32_t index, Frame& frame) {
  return ResolveStep(program, program.path_ends[index], frame);
}

json ToJson(const Value& value) {
  switch (value.kind) {
    case Value::Kind::kNull:
      return nullptr;
    case Value::Kind::kBool:
      return value.b;
    case Value::Kind::kInt:
      return value.i;
    case Value::Kind::kDouble:
      return value.d;
    case Value::Kind::kString:
      return std::string(value.s);
    case Value::Kind::kJson:
      return *value.j;
  }
  return nullptr;
}

Value Eval(const Program& program, std::uint32_t index, Frame& frame) {
  return Evaluator(program, frame).Eval(index);
}

std::optional<bool> LikeMatch(std::string_view text, std::string_view pattern) {
  for (std::size_t k = 0; k < pattern.size(); ++k) {
    if (pattern[k] == '\\') {
      if (k + 1 == pattern.size()) {
        return std::nullopt;
      }
      ++k;
    }
  }
  std::size_t p = 0;
  std::size_t t = 0;
  std::size_t star_p = std::string_view::npos;  // pattern position after the last '%'
  std::size_t star_t = 0;                       // text position that '%' was tried at
  while (t < text.size()) {
    if (p < pattern.size()) {
      const char c = pattern[p];
      if (c == '%') {
        star_p = ++p;
        star_t = t;
        continue;
      }
      if (c == '_') {
        t = NextCodePoint(text, t);
        ++p;
        continue;
      }
      const bool escaped = c == '\\';
      const char literal = escaped ? pattern[p + 1] : c;
      if (text[t] == literal) {
        ++t;
        p += escaped ? 2 : 1;
        continue;
      }
    }
    if (star_p == std::string_view::npos) {
      return false;
    }
    star_t = NextCodePoint(text, star_t);
    t = star_t;
    p = star_p;
  }
  while (p < pattern.size() && pattern[p] == '%') {
    ++p;
  }
  return p == pattern.size();
}

LikePattern CompileLike(std::string_view pattern) {
  // Split into literal text and '%' runs; any '_' or an inner '%' needs the general matcher.
  bool leading = false;
  bool trailing = false;
  std::string literal;
  bool literal_done = false;
  for (std::size_t k = 0; k < pattern.size(); ++k) {
    const char c = pattern[k];
    if (c == '_') {
      return LikePattern{LikePattern::Kind::kGeneral, std::string(pattern)};
    }
    if (c == '%') {
      if (literal.empty() && !literal_done) {
        leading = true;
      } else {
        literal_done = true;
        trailing = true;
      }
      continue;
    }
    if (literal_done) {
      return LikePattern{LikePattern::Kind::kGeneral, std::string(pattern)};
    }
    if (c == '\\' && k + 1 < pattern.size()) {
      ++k;
    }
    literal.push_back(pattern[k]);
  }
  if (literal.empty()) {
    return LikePattern{leading ? LikePattern::Kind::kAny : LikePattern::Kind::kExact, ""};
  }
  LikePattern::Kind kind = LikePattern::Kind::kExact;
  if (leading && trailing) {
    kind = LikePattern::Kind::kContains;
  } else if (leading) {
    kind = LikePattern::Kind::kSuffix;
  } else if (trailing) {
    kind = LikePattern::Kind::kPrefix;
  }
  return LikePattern{kind, std::move(literal)};
}

}  // namespace iot::rule_forwarding::sql::internal
