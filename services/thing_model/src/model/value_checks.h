#pragma once

// Value checks shared by the report path (simdjson) and the API-side validators and model
// default values (nlohmann): one definition of what a valid int, string, enum ... is.

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "iot/thing_model/product_model.h"
#include "iot/thing_model/validator.h"

namespace iot::thing_model::detail {

/// Why a value was rejected. `sub_path` locates it inside the value ("[2]" for an element of a
/// string list), appended to the value's own path.
struct ValueIssue {
  ErrorKind kind;
  std::string message;
  std::string sub_path;
};
using CheckResult = std::optional<ValueIssue>;

/// A parsed JSON number. `text` is the number as written, when known (for messages).
struct Number {
  enum class Kind : std::uint8_t { kSigned, kUnsigned, kDouble };
  Kind kind = Kind::kSigned;
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double d = 0;
  std::string_view text;
};

/// Checks a number against an int, long or decimal parameter (type, int32/int64 range, min,
/// max); any other data type is a wrong type.
CheckResult CheckNumber(const Parameter& param, const Number& number);

/// Checks a string against a string, DateTime or enum parameter, or an element of a string list
/// (format, max_length, enum_list). The caller has checked that the type takes strings.
CheckResult CheckText(const Parameter& param, std::string_view text);

/// True for data types whose JSON value is a string.
inline bool TakesString(DataType type) {
  return type == DataType::kString || type == DataType::kDateTime || type == DataType::kEnum;
}
inline bool IsNumeric(DataType type) {
  return type == DataType::kInt || type == DataType::kLong || type == DataType::kDecimal;
}

/// "wrong type: expected <data_type>, got <got>".
ValueIssue WrongType(const Parameter& param, std::string_view got);

/// Checks any nlohmann value against `param` (the API side and model default values).
CheckResult CheckJsonValue(const Parameter& param, const nlohmann::json& value);

/// Number of UTF-8 code points (continuation bytes are not counted).
std::size_t Utf8Length(std::string_view text);

/// True if `token` is a JSON number by RFC 8259's grammar.
bool IsJsonNumber(std::string_view token);

/// `'text'`, shortened to at most 64 characters (on a code-point boundary) with "...".
std::string Quoted(std::string_view text);

}  // namespace iot::thing_model::detail
