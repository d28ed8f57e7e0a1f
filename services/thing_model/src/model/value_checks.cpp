#include "model/value_checks.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace iot::thing_model::detail {
namespace {

constexpr std::size_t kQuoteLimit = 64;
constexpr std::size_t kEnumListLimit = 10;

// Integral doubles in [-2^63, 2^63) convert to int64 exactly.
constexpr double kTwoTo63 = 9223372036854775808.0;

std::string NumberText(const Number& number) {
  if (!number.text.empty()) {
    return std::string(number.text);
  }
  switch (number.kind) {
    case Number::Kind::kSigned:
      return fmt::format("{}", number.i);
    case Number::Kind::kUnsigned:
      return fmt::format("{}", number.u);
    case Number::Kind::kDouble:
      break;
  }
  return fmt::format("{}", number.d);
}

bool Below(std::int64_t value, const NumericLimit& limit) {
  return limit.integer ? value < *limit.integer : static_cast<double>(value) < limit.value;
}
bool Above(std::int64_t value, const NumericLimit& limit) {
  return limit.integer ? value > *limit.integer : static_cast<double>(value) > limit.value;
}

CheckResult CheckRange(const Parameter& param, const Number& number, bool below, bool above) {
  if (below) {
    return ValueIssue{ErrorKind::kOutOfRange,
                      fmt::format("out of range: {} < min {}", NumberText(number), param.min->text),
                      {}};
  }
  if (above) {
    return ValueIssue{ErrorKind::kOutOfRange,
                      fmt::format("out of range: {} > max {}", NumberText(number), param.max->text),
                      {}};
  }
  return std::nullopt;
}

std::string EnumChoices(const Parameter& param) {
  std::string out;
  std::size_t shown = 0;
  for (const auto& value : param.enum_list) {
    if (shown == kEnumListLimit) {
      fmt::format_to(std::back_inserter(out), ", ... ({} values)", param.enum_list.size());
      break;
    }
    if (shown > 0) {
      out += ", ";
    }
    out += value;
    ++shown;
  }
  return out;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

ValueIssue WrongType(const Parameter& param, std::string_view got) {
  return {ErrorKind::kWrongType,
          fmt::format("wrong type: expected {}, got {}", DataTypeName(param.type), got),
          {}};
}

CheckResult CheckNumber(const Parameter& param, const Number& number) {
  switch (param.type) {
    case DataType::kInt:
    case DataType::kLong: {
      std::int64_t value = 0;
      switch (number.kind) {
        case Number::Kind::kSigned:
          value = number.i;
          break;
        case Number::Kind::kUnsigned:
          return WrongType(param,
                           fmt::format("{} (beyond 64-bit integer range)", NumberText(number)));
        case Number::Kind::kDouble:
          if (!std::isfinite(number.d) || std::trunc(number.d) != number.d) {
            return WrongType(param, fmt::format("{} (not an integer)", NumberText(number)));
          }
          if (number.d < -kTwoTo63 || number.d >= kTwoTo63) {
            return WrongType(param,
                             fmt::format("{} (beyond 64-bit integer range)", NumberText(number)));
          }
          value = static_cast<std::int64_t>(number.d);
          break;
      }
      if (param.type == DataType::kInt && (value < std::numeric_limits<std::int32_t>::min() ||
                                           value > std::numeric_limits<std::int32_t>::max())) {
        return WrongType(param,
                         fmt::format("{} (beyond 32-bit integer range)", NumberText(number)));
      }
      return CheckRange(param, number, param.min && Below(value, *param.min),
                        param.max && Above(value, *param.max));
    }
    case DataType::kDecimal: {
      double value = number.d;
      if (number.kind == Number::Kind::kSigned) {
        value = static_cast<double>(number.i);
      } else if (number.kind == Number::Kind::kUnsigned) {
        value = static_cast<double>(number.u);
      }
      if (!std::isfinite(value)) {
        return WrongType(param, "a non-finite number");
      }
      return CheckRange(param, number, param.min && value < param.min->value,
                        param.max && value > param.max->value);
    }
    default:
      return WrongType(param, "number");
  }
}

CheckResult CheckText(const Parameter& param, std::string_view text) {
  if (param.type == DataType::kDateTime && !IsValidDateTime(text)) {
    return ValueIssue{ErrorKind::kWrongType,
                      fmt::format("wrong type: expected DateTime (yyyyMMdd'T'HHmmss'Z' or "
                                  "ISO-8601 with a zone), got {}",
                                  Quoted(text)),
                      {}};
  }
  if (param.max_length) {
    const std::size_t length = Utf8Length(text);
    if (length > static_cast<std::uint64_t>(*param.max_length)) {
      return ValueIssue{
          ErrorKind::kTooLong,
          fmt::format("too long: {} characters > max_length {}", length, *param.max_length),
          {}};
    }
  }
  if (!param.enum_list.empty() && !param.InEnum(text)) {
    return ValueIssue{
        ErrorKind::kNotInEnum,
        fmt::format("not in enum: {} is not one of {}", Quoted(text), EnumChoices(param)),
        {}};
  }
  return std::nullopt;
}

CheckResult CheckJsonValue(const Parameter& param, const nlohmann::json& value) {
  using Type = nlohmann::json::value_t;
  switch (value.type()) {
    case Type::number_integer: {
      Number number;
      number.i = value.get<std::int64_t>();
      return CheckNumber(param, number);
    }
    case Type::number_unsigned: {
      Number number;
      const auto u = value.get<std::uint64_t>();
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        number.i = static_cast<std::int64_t>(u);
      } else {
        number.kind = Number::Kind::kUnsigned;
        number.u = u;
      }
      return CheckNumber(param, number);
    }
    case Type::number_float: {
      Number number;
      number.kind = Number::Kind::kDouble;
      number.d = value.get<double>();
      return CheckNumber(param, number);
    }
    case Type::string:
      if (!TakesString(param.type)) {
        return WrongType(param, "string");
      }
      return CheckText(param, value.get_ref<const std::string&>());
    case Type::boolean:
      if (param.type != DataType::kBoolean) {
        return WrongType(param, "boolean");
      }
      return std::nullopt;
    case Type::object:
      if (param.type != DataType::kJsonObject) {
        return WrongType(param, "object");
      }
      return std::nullopt;
    case Type::array: {
      if (param.accepts_array) {
        return std::nullopt;
      }
      if (param.type != DataType::kStringList) {
        return WrongType(param, "array");
      }
      std::size_t k = 0;
      for (const auto& element : value) {
        CheckResult issue;
        if (!element.is_string()) {
          issue = ValueIssue{ErrorKind::kWrongType,
                             fmt::format("wrong type: expected string (element of string list), "
                                         "got {}",
                                         element.type_name()),
                             {}};
        } else {
          issue = CheckText(param, element.get_ref<const std::string&>());
        }
        if (issue) {
          issue->sub_path = fmt::format("[{}]", k);
          return issue;
        }
        ++k;
      }
      return std::nullopt;
    }
    case Type::null:
      return WrongType(param, "null");
    default:
      return WrongType(param, value.type_name());
  }
}

std::size_t Utf8Length(std::string_view text) {
  std::size_t length = 0;
  for (const char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0U) != 0x80U) {
      ++length;
    }
  }
  return length;
}

bool IsJsonNumber(std::string_view token) {
  std::size_t pos = 0;
  const std::size_t n = token.size();
  if (pos < n && token[pos] == '-') {
    ++pos;
  }
  if (pos == n) {
    return false;
  }
  if (token[pos] == '0') {
    ++pos;
  } else if (IsDigit(token[pos])) {
    while (pos < n && IsDigit(token[pos])) {
      ++pos;
    }
  } else {
    return false;
  }
  if (pos < n && token[pos] == '.') {
    ++pos;
    if (pos == n || !IsDigit(token[pos])) {
      return false;
    }
    while (pos < n && IsDigit(token[pos])) {
      ++pos;
    }
  }
  if (pos < n && (token[pos] == 'e' || token[pos] == 'E')) {
    ++pos;
    if (pos < n && (token[pos] == '+' || token[pos] == '-')) {
      ++pos;
    }
    if (pos == n || !IsDigit(token[pos])) {
      return false;
    }
    while (pos < n && IsDigit(token[pos])) {
      ++pos;
    }
  }
  return pos == n;
}

std::string Quoted(std::string_view text) {
  if (Utf8Length(text) <= kQuoteLimit) {
    return fmt::format("'{}'", text);
  }
  std::size_t chars = 0;
  std::size_t end = 0;
  for (; end < text.size(); ++end) {
    if ((static_cast<unsigned char>(text[end]) & 0xC0U) != 0x80U) {
      if (chars == kQuoteLimit) {
        break;
      }
      ++chars;
    }
  }
  return fmt::format("'{}...'", text.substr(0, end));
}

}  // namespace iot::thing_model::detail

namespace iot::thing_model {
namespace {

// Reads `count` digits at `pos` into `out`; false if any is not a digit.
bool Digits(std::string_view text, std::size_t& pos, std::size_t count, int& out) {
  if (pos + count > text.size()) {
    return false;
  }
  out = 0;
  for (std::size_t k = 0; k < count; ++k) {
    const char c = text[pos + k];
    if (c < '0' || c > '9') {
      return false;
    }
    out = out * 10 + (c - '0');
  }
  pos += count;
  return true;
}

bool Accept(std::string_view text, std::size_t& pos, char c) {
  if (pos < text.size() && text[pos] == c) {
    ++pos;
    return true;
  }
  return false;
}

int DaysInMonth(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

}  // namespace

bool IsValidDateTime(std::string_view text) {
  std::size_t pos = 0;
  int year = 0;
  int month = 0;
  int day = 0;
  int hour = 0;
  int minute = 0;
  int second = 0;
  // Extended (2026-11-26T17:42:48) when a '-' follows the year, else basic (20261126T174248).
  const bool extended = text.size() > 4 && text[4] == '-';
  if (!Digits(text, pos, 4, year) || (extended && !Accept(text, pos, '-')) ||
      !Digits(text, pos, 2, month) || (extended && !Accept(text, pos, '-')) ||
      !Digits(text, pos, 2, day) || !(Accept(text, pos, 'T') || Accept(text, pos, 't')) ||
      !Digits(text, pos, 2, hour) || (extended && !Accept(text, pos, ':')) ||
      !Digits(text, pos, 2, minute) || (extended && !Accept(text, pos, ':')) ||
      !Digits(text, pos, 2, second)) {
    return false;
  }
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month) || hour > 23 ||
      minute > 59 || second > 60) {
    return false;
  }
  if (Accept(text, pos, '.') || Accept(text, pos, ',')) {
    std::size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      ++pos;
      ++digits;
    }
    if (digits == 0 || digits > 9) {
      return false;
    }
  }
  if (Accept(text, pos, 'Z') || Accept(text, pos, 'z')) {
    return pos == text.size();
  }
  if (!(Accept(text, pos, '+') || Accept(text, pos, '-'))) {
    return false;
  }
  int offset_hours = 0;
  int offset_minutes = 0;
  if (!Digits(text, pos, 2, offset_hours)) {
    return false;
  }
  Accept(text, pos, ':');
  if (!Digits(text, pos, 2, offset_minutes)) {
    return false;
  }
  return pos == text.size() && offset_hours <= 23 && offset_minutes <= 59;
}

}  // namespace iot::thing_model
