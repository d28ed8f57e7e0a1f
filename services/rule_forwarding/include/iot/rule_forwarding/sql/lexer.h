#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

/// Implementation detail of CompileRule (rule_sql.h); exposed for its unit tests only.
namespace iot::rule_forwarding::sql::internal {

enum class TokenKind : std::uint8_t {
  kEnd,
  kIdentifier,        // text = the name as written
  kQuotedIdentifier,  // "a-b" or `a-b`; text = unquoted, doubled quotes undone
  kString,            // 'it''s'; text = unquoted
  kInteger,           // text = digits; integer/unsigned_value/fits_int64
  kDecimal,           // text = as written; decimal = value
  kComma,
  kDot,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kStar,
  kPlus,
  kMinus,
  kSlash,
  kPercent,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kSemicolon,
  // Keywords (case-insensitive).
  kSelect,
  kFrom,
  kWhere,
  kAs,
  kAnd,
  kOr,
  kNot,
  kIn,
  kLike,
  kIs,
  kNull,
  kTrue,
  kFalse,
  kCase,
  kWhen,
  kThen,
  kElse,
  kEndKeyword,
  kBetween,
};

struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::size_t offset = 0;  // byte offset of the first character
  std::size_t length = 0;  // bytes as written
  std::string text;
  std::uint64_t unsigned_value = 0;  // kInteger, when it fits in 64 bits
  bool fits_uint64 = false;          // kInteger
  double decimal = 0;                // kDecimal, and kInteger beyond 64 bits
};

struct LexError {
  std::size_t offset = 0;
  std::string message;
};

/// Splits a statement into tokens, the last one kEnd at offset sql.size(). Skips whitespace,
/// `-- line` and `/* block */` comments. Expects valid UTF-8 (checked by the caller).
std::variant<std::vector<Token>, LexError> Lex(std::string_view sql);

/// "'AND'", "'voltage'", "string 'abc'", "number 12", "','", "end of input".
std::string Describe(const Token& token);

/// Byte length of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes).
std::size_t Utf8SequenceLength(unsigned char lead);

/// Offset of the first byte that is not valid UTF-8 (overlongs, surrogates and code points
/// above U+10FFFF are invalid), or npos.
std::size_t FindInvalidUtf8(std::string_view text);

}  // namespace iot::rule_forwarding::sql::internal
