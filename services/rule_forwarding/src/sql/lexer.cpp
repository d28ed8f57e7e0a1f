#include "iot/rule_forwarding/sql/lexer.h"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <limits>
#include <optional>
#include <utility>

namespace iot::rule_forwarding::sql::internal {

namespace {

constexpr bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool IsDigit(char c) { return c >= '0' && c <= '9'; }
constexpr bool IsIdentStart(char c) { return IsAsciiLetter(c) || c == '_'; }
constexpr bool IsIdentPart(char c) { return IsIdentStart(c) || IsDigit(c); }
constexpr bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

constexpr char ToUpperAscii(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view upper) {
  if (a.size() != upper.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ToUpperAscii(a[i]) != upper[i]) {
      return false;
    }
  }
  return true;
}

struct Keyword {
  std::string_view upper;
  TokenKind kind;
};

constexpr std::array<Keyword, 19> kKeywords{{
    {"SELECT", TokenKind::kSelect},   {"FROM", TokenKind::kFrom}, {"WHERE", TokenKind::kWhere},
    {"AS", TokenKind::kAs},           {"AND", TokenKind::kAnd},   {"OR", TokenKind::kOr},
    {"NOT", TokenKind::kNot},         {"IN", TokenKind::kIn},     {"LIKE", TokenKind::kLike},
    {"IS", TokenKind::kIs},           {"NULL", TokenKind::kNull}, {"TRUE", TokenKind::kTrue},
    {"FALSE", TokenKind::kFalse},     {"CASE", TokenKind::kCase}, {"WHEN", TokenKind::kWhen},
    {"THEN", TokenKind::kThen},       {"ELSE", TokenKind::kElse}, {"END", TokenKind::kEndKeyword},
    {"BETWEEN", TokenKind::kBetween},
}};

std::string_view PunctuationText(TokenKind kind) {
  switch (kind) {
    case TokenKind::kComma:
      return ",";
    case TokenKind::kDot:
      return ".";
    case TokenKind::kLParen:
      return "(";
    case TokenKind::kRParen:
      return ")";
    case TokenKind::kLBracket:
      return "[";
    case TokenKind::kRBracket:
      return "]";
    case TokenKind::kStar:
      return "*";
    case TokenKind::kPlus:
      return "+";
    case TokenKind::kMinus:
      return "-";
    case TokenKind::kSlash:
      return "/";
    case TokenKind::kPercent:
      return "%";
    case TokenKind::kEq:
      return "=";
    case TokenKind::kNe:
      return "!=";
    case TokenKind::kLt:
      return "<";
    case TokenKind::kLe:
      return "<=";
    case TokenKind::kGt:
      return ">";
    case TokenKind::kGe:
      return ">=";
    case TokenKind::kSemicolon:
      return ";";
    default:
      return "";
  }
}

// Shortens what an error message quotes from the statement.
std::string Excerpt(std::string_view text) {
  constexpr std::size_t kMax = 40;
  if (text.size() <= kMax) {
    return std::string(text);
  }
  std::size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0U) == 0x80U) {
    --cut;
  }
  return fmt::format("{}...", text.substr(0, cut));
}

class Lexer {
 public:
  explicit Lexer(std::string_view sql) : sql_(sql) {}

  std::variant<std::vector<Token>, LexError> Run() {
    for (;;) {
      if (auto error = SkipSpaceAndComments()) {
        return *std::move(error);
      }
      if (pos_ >= sql_.size()) {
        Token end;
        end.kind = TokenKind::kEnd;
        end.offset = sql_.size();
        tokens_.push_back(std::move(end));
        return std::move(tokens_);
      }
      if (auto error = Next()) {
        return *std::move(error);
      }
    }
  }

 private:
  std::optional<LexError> SkipSpaceAndComments() {
    while (pos_ < sql_.size()) {
      const char c = sql_[pos_];
      if (IsSpace(c)) {
        ++pos_;
      } else if (c == '-' && Peek(1) == '-') {
        while (pos_ < sql_.size() && sql_[pos_] != '\n') {
          ++pos_;
        }
      } else if (c == '/' && Peek(1) == '*') {
        const std::size_t close = sql_.find("*/", pos_ + 2);
        if (close == std::string_view::npos) {
          return LexError{pos_, "unterminated comment: expected '*/'"};
        }
        pos_ = close + 2;
      } else {
        break;
      }
    }
    return std::nullopt;
  }

  char Peek(std::size_t ahead) const {
    return pos_ + ahead < sql_.size() ? sql_[pos_ + ahead] : '\0';
  }

  void Push(TokenKind kind, std::size_t start, std::string text = {}) {
    Token token;
    token.kind = kind;
    token.offset = start;
    token.length = pos_ - start;
    token.text = std::move(text);
    tokens_.push_back(std::move(token));
  }

  std::optional<LexError> Next() {
    const std::size_t start = pos_;
    const char c = sql_[pos_];
    if (IsIdentStart(c)) {
      while (pos_ < sql_.size() && IsIdentPart(sql_[pos_])) {
        ++pos_;
      }
      const std::string_view word = sql_.substr(start, pos_ - start);
      TokenKind kind = TokenKind::kIdentifier;
      for (const Keyword& keyword : kKeywords) {
        if (EqualsIgnoreCase(word, keyword.upper)) {
          kind = keyword.kind;
          break;
        }
      }
      Push(kind, start, std::string(word));
      return std::nullopt;
    }
    if (IsDigit(c)) {
      return Number();
    }
    if (c == '\'') {
      return Quoted('\'', TokenKind::kString);
    }
    if (c == '"' || c == '`') {
      return Quoted(c, TokenKind::kQuotedIdentifier);
    }
    TokenKind kind = TokenKind::kEnd;
    std::size_t length = 1;
    switch (c) {
      case ',':
        kind = TokenKind::kComma;
        break;
      case '.':
        kind = TokenKind::kDot;
        break;
      case '(':
        kind = TokenKind::kLParen;
        break;
      case ')':
        kind = TokenKind::kRParen;
        break;
      case '[':
        kind = TokenKind::kLBracket;
        break;
      case ']':
        kind = TokenKind::kRBracket;
        break;
      case '*':
        kind = TokenKind::kStar;
        break;
      case '+':
        kind = TokenKind::kPlus;
        break;
      case '-':
        kind = TokenKind::kMinus;
        break;
      case '/':
        kind = TokenKind::kSlash;
        break;
      case '%':
        kind = TokenKind::kPercent;
        break;
      case ';':
        kind = TokenKind::kSemicolon;
        break;
      case '=':
        kind = TokenKind::kEq;
        length = Peek(1) == '=' ? 2 : 1;  // `==` is accepted as `=`
        break;
      case '!':
        if (Peek(1) != '=') {
          return LexError{start, "unexpected character '!': did you mean '!='?"};
        }
        kind = TokenKind::kNe;
        length = 2;
        break;
      case '<':
        if (Peek(1) == '=') {
          kind = TokenKind::kLe;
          length = 2;
        } else if (Peek(1) == '>') {
          kind = TokenKind::kNe;
          length = 2;
        } else {
          kind = TokenKind::kLt;
        }
        break;
      case '>':
        kind = Peek(1) == '=' ? TokenKind::kGe : TokenKind::kGt;
        length = Peek(1) == '=' ? 2 : 1;
        break;
      default: {
        const std::size_t n = Utf8SequenceLength(static_cast<unsigned char>(c));
        const std::string_view shown = sql_.substr(start, n);
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
          return LexError{start, fmt::format("unexpected control character U+{:04X}",
                                             static_cast<unsigned>(static_cast<unsigned char>(c)))};
        }
        return LexError{start, fmt::format("unexpected character '{}'", shown)};
      }
    }
    pos_ += length;
    Push(kind, start);
    return std::nullopt;
  }

  std::optional<LexError> Number() {
    const std::size_t start = pos_;
    while (pos_ < sql_.size() && IsDigit(sql_[pos_])) {
      ++pos_;
    }
    bool decimal = false;
    if (Peek(0) == '.' && IsDigit(Peek(1))) {
      decimal = true;
      ++pos_;
      while (pos_ < sql_.size() && IsDigit(sql_[pos_])) {
        ++pos_;
      }
    } else if (Peek(0) == '.' && !IsIdentStart(Peek(1))) {
      return LexError{pos_ + 1, "expected digits after the decimal point"};
    }
    if (Peek(0) == 'e' || Peek(0) == 'E') {
      decimal = true;
      ++pos_;
      if (Peek(0) == '+' || Peek(0) == '-') {
        ++pos_;
      }
      if (!IsDigit(Peek(0))) {
        return LexError{pos_, "expected digits in the exponent of the number"};
      }
      while (pos_ < sql_.size() && IsDigit(sql_[pos_])) {
        ++pos_;
      }
    }
    if (pos_ < sql_.size() && (IsIdentPart(sql_[pos_]) || sql_[pos_] == '.')) {
      while (pos_ < sql_.size() && (IsIdentPart(sql_[pos_]) || sql_[pos_] == '.')) {
        ++pos_;
      }
      return LexError{
          start, fmt::format("invalid number '{}'", Excerpt(sql_.substr(start, pos_ - start)))};
    }
    const std::string_view text = sql_.substr(start, pos_ - start);
    Token token;
    token.offset = start;
    token.length = text.size();
    token.text = std::string(text);
    // from_chars for double ignores the locale and never throws.
    double value = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range) {
      return LexError{start, fmt::format("number '{}' is out of range", Excerpt(text))};
    }
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      return LexError{start, fmt::format("invalid number '{}'", Excerpt(text))};
    }
    token.decimal = value;
    if (decimal) {
      token.kind = TokenKind::kDecimal;
    } else {
      token.kind = TokenKind::kInteger;
      std::uint64_t u = 0;
      const auto [uptr, uec] = std::from_chars(text.data(), text.data() + text.size(), u);
      token.fits_uint64 = uec == std::errc() && uptr == text.data() + text.size();
      token.unsigned_value = token.fits_uint64 ? u : 0;
    }
    tokens_.push_back(std::move(token));
    return std::nullopt;
  }

  std::optional<LexError> Quoted(char quote, TokenKind kind) {
    const std::size_t start = pos_;
    ++pos_;
    std::string text;
    for (;;) {
      if (pos_ >= sql_.size()) {
        return LexError{
            start, kind == TokenKind::kString
                       ? std::string("unterminated string: expected a closing '")
                       : fmt::format("unterminated quoted name: expected a closing {}", quote)};
      }
      const char c = sql_[pos_];
      if (c == quote) {
        if (Peek(1) == quote) {
          text.push_back(quote);
          pos_ += 2;
          continue;
        }
        ++pos_;
        break;
      }
      text.push_back(c);
      ++pos_;
    }
    if (kind == TokenKind::kQuotedIdentifier && text.empty()) {
      return LexError{start, "a quoted name must not be empty"};
    }
    Push(kind, start, std::move(text));
    return std::nullopt;
  }

  std::string_view sql_;
  std::size_t pos_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::variant<std::vector<Token>, LexError> Lex(std::string_view sql) { return Lexer(sql).Run(); }

std::string Describe(const Token& token) {
  switch (token.kind) {
    case TokenKind::kEnd:
      return "end of input";
    case TokenKind::kIdentifier:
      return fmt::format("'{}'", Excerpt(token.text));
    case TokenKind::kQuotedIdentifier:
      return fmt::format("quoted name \"{}\"", Excerpt(token.text));
    case TokenKind::kString:
      return fmt::format("string '{}'", Excerpt(token.text));
    case TokenKind::kInteger:
    case TokenKind::kDecimal:
      return fmt::format("number {}", Excerpt(token.text));
    default:
      break;
  }
  for (const Keyword& keyword : kKeywords) {
    if (keyword.kind == token.kind) {
      return fmt::format("'{}'", keyword.upper);
    }
  }
  return fmt::format("'{}'", PunctuationText(token.kind));
}

std::size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80U) {
    return 1;
  }
  if ((lead & 0xE0U) == 0xC0U) {
    return 2;
  }
  if ((lead & 0xF0U) == 0xE0U) {
    return 3;
  }
  if ((lead & 0xF8U) == 0xF0U) {
    return 4;
  }
  return 1;
}

std::size_t FindInvalidUtf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80U) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    std::uint32_t cp = 0;
    std::uint32_t min = 0;
    if ((lead & 0xE0U) == 0xC0U) {
      n = 2;
      cp = lead & 0x1FU;
      min = 0x80;
    } else if ((lead & 0xF0U) == 0xE0U) {
      n = 3;
      cp = lead & 0x0FU;
      min = 0x800;
    } else if ((lead & 0xF8U) == 0xF0U) {
      n = 4;
      cp = lead & 0x07U;
      min = 0x10000;
    } else {
      return i;
    }
    if (i + n > text.size()) {
      return i;
    }
    for (std::size_t k = 1; k < n; ++k) {
      const auto cont = static_cast<unsigned char>(text[i + k]);
      if ((cont & 0xC0U) != 0x80U) {
        return i;
      }
      cp = (cp << 6U) | (cont & 0x3FU);
    }
    if (cp < min || cp > 0x10FFFFU || (cp >= 0xD800U && cp <= 0xDFFFU)) {
      return i;
    }
    i += n;
  }
  return std::string_view::npos;
}

}  // namespace iot::rule_forwarding::sql::internal
