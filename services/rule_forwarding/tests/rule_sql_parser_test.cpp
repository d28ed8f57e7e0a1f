#include <gtest/gtest.h>

#include <string>
#include <variant>
#include <vector>

#include "iot/rule_forwarding/sql/lexer.h"
#include "iot/rule_forwarding/sql/program.h"
#include "iot/rule_forwarding/sql/rule_sql.h"
#include "rule_sql_test_util.h"

namespace iot::rule_forwarding::sql {
namespace {

using internal::Lex;
using internal::Token;
using internal::TokenKind;
using nlohmann::json;
using testing::TypicalContext;
using testing::TypicalEnvelope;

std::vector<TokenKind> Kinds(std::string_view sql) {
  auto lexed = Lex(sql);
  EXPECT_TRUE(std::holds_alternative<std::vector<Token>>(lexed)) << sql;
  std::vector<TokenKind> kinds;
  if (auto* tokens = std::get_if<std::vector<Token>>(&lexed)) {
    for (const Token& token : *tokens) {
      kinds.push_back(token.kind);
    }
  }
  return kinds;
}

TEST(RuleSqlLexer, Tokens) {
  using K = TokenKind;
  EXPECT_EQ(Kinds("SELECT a.b[0], 'x' AS \"y\" FROM 't' WHERE c <> 1.5 AND NOT d"),
            (std::vector<K>{K::kSelect,
                            K::kIdentifier,
                            K::kDot,
                            K::kIdentifier,
                            K::kLBracket,
                            K::kInteger,
                            K::kRBracket,
                            K::kComma,
                            K::kString,
                            K::kAs,
                            K::kQuotedIdentifier,
                            K::kFrom,
                            K::kString,
                            K::kWhere,
                            K::kIdentifier,
                            K::kNe,
                            K::kDecimal,
                            K::kAnd,
                            K::kNot,
                            K::kIdentifier,
                            K::kEnd}));
  EXPECT_EQ(Kinds("= == != <> < <= > >= + - * / % ( ) ;"),
            (std::vector<K>{K::kEq, K::kEq, K::kNe, K::kNe, K::kLt, K::kLe, K::kGt, K::kGe,
                            K::kPlus, K::kMinus, K::kStar, K::kSlash, K::kPercent, K::kLParen,
                            K::kRParen, K::kSemicolon, K::kEnd}));
  EXPECT_EQ(Kinds("select From wHeRe as and or not in like is null true false case when then "
                  "else end between"),
            (std::vector<K>{K::kSelect, K::kFrom, K::kWhere,      K::kAs,      K::kAnd,
                            K::kOr,     K::kNot,  K::kIn,         K::kLike,    K::kIs,
                            K::kNull,   K::kTrue, K::kFalse,      K::kCase,    K::kWhen,
                            K::kThen,   K::kElse, K::kEndKeyword, K::kBetween, K::kEnd}));
  EXPECT_EQ(Kinds("a -- comment AND\n/* b\n c */ d"),
            (std::vector<K>{K::kIdentifier, K::kIdentifier, K::kEnd}));
  EXPECT_EQ(Kinds("a-1"), (std::vector<K>{K::kIdentifier, K::kMinus, K::kInteger, K::kEnd}));
  EXPECT_EQ(Kinds(""), (std::vector<K>{K::kEnd}));
}

TEST(RuleSqlLexer, Values) {
  auto lexed = Lex("'it''s' \"a\"\"b\" `c``d` 18446744073709551615 18446744073709551616 2.5e1");
  ASSERT_TRUE(std::holds_alternative<std::vector<Token>>(lexed));
  const auto& tokens = std::get<std::vector<Token>>(lexed);
  ASSERT_EQ(tokens.size(), 7U);
  EXPECT_EQ(tokens[0].text, "it's");
  EXPECT_EQ(tokens[0].offset, 0U);
  EXPECT_EQ(tokens[0].length, 7U);
  EXPECT_EQ(tokens[1].text, "a\"b");
  EXPECT_EQ(tokens[2].text, "c`d");
  EXPECT_TRUE(tokens[3].fits_uint64);
  EXPECT_EQ(tokens[3].unsigned_value, 18446744073709551615U);
  EXPECT_FALSE(tokens[4].fits_uint64);
  EXPECT_DOUBLE_EQ(tokens[4].decimal, 18446744073709551616.0);
  EXPECT_EQ(tokens[5].kind, TokenKind::kDecimal);
  EXPECT_DOUBLE_EQ(tokens[5].decimal, 25.0);
  EXPECT_EQ(tokens[5].offset, 64U);
  EXPECT_EQ(tokens[6].kind, TokenKind::kEnd);
  EXPECT_EQ(tokens[6].offset, 69U);
}

TEST(RuleSqlParser, AcceptsTheLanguage) {
  const std::vector<std::string> ok = {
      "SELECT *",
      "select *",
      "SELECT * FROM '$oc/devices/+/sys/properties/report'",
      "SELECT * WHERE resource = 'device.property'",
      "SELECT * FROM '#' WHERE true;",
      "SELECT a, b.c, d[0].e AS f FROM 'x/+', 'y/#' WHERE g > 1",
      "SELECT *, device_id() AS d",
      "SELECT\n  a AS x,\n  b AS y\nFROM\n  't'\nWHERE\n  a > 1\n  AND b < 2",
      "SELECT a WHERE (a > 1 OR b < 2) AND NOT c IS NULL",
      "SELECT a WHERE a IN (1, 2, 3) AND b NOT IN ('x') AND c LIKE 'x%' AND d NOT LIKE '_'",
      "SELECT a WHERE a BETWEEN 1 AND 2 AND b NOT BETWEEN 'a' AND 'b'",
      "SELECT CASE WHEN a > 1 THEN 'x' WHEN a > 0 THEN 'y' ELSE 'z' END AS c",
      "SELECT CASE a WHEN 1 THEN 'one' END AS c",
      "SELECT abs(a), round(a), round(a, 2), floor(a), ceil(a) AS c",
      "SELECT lower(a), upper(a) AS u, concat(a, b, 1, null) AS c, startswith(a, 'x') AS s, "
      "endswith(a, 'y') AS e, substring(a, 1) AS s1, substring(a, 1, 2) AS s2, length(a) AS l, "
      "coalesce(a, b, 'z') AS co, to_number(a) AS n, to_string(a) AS st",
      "SELECT device_id(), product_id(), tenant_id(), topic(), topic(3) AS t3, timestamp()",
      "SELECT \"a-b\".`c d`.from AS x",
      "SELECT a WHERE a == 1 AND b != 2 AND c <> 3",
      "SELECT -a AS n, +a AS p, a % 2 AS m, a / 2 AS d",
      "SELECT a WHERE x = null",  // legal, never true
      "SELECT a WHERE null",      // legal, never passes
      "SELECT a WHERE a LIKE b",
      "SELECT 1 AS x WHERE 'a' = 'a' AND 1 = 1.0 AND true = false",
      "  SELECT a  ",
      "/* leading */ SELECT a -- trailing",
  };
  for (const std::string& sql : ok) {
    const auto rule = CompileRule(sql);
    EXPECT_TRUE(rule.ok()) << sql << ": " << rule.status();
    if (rule.ok()) {
      EXPECT_EQ(rule->sql(), sql);
      EXPECT_NO_THROW((void)rule->Evaluate(TypicalEnvelope(), TypicalContext()));
    }
  }
}

TEST(RuleSqlParser, PrecedenceAndAssociativity) {
  using testing::Expr;
  EXPECT_EQ(Expr("2 + 3 * 4 - 5"), 9);
  EXPECT_EQ(Expr("100 / 10 / 5"), 2);
  EXPECT_EQ(Expr("2 - 3 - 4"), -5);
  EXPECT_EQ(Expr("-2 * -3"), 6);
  EXPECT_EQ(Expr("1 + 1 = 2 AND 2 * 2 = 4 OR false"), true);
  EXPECT_EQ(Expr("NOT 1 = 2"), true);  // NOT binds looser than comparisons
}

TEST(RuleSqlParser, ConstantFolding) {
  auto rule = CompileRule("SELECT 1 + 2 * 3 AS x, concat('a', upper('b')) AS y WHERE 2 > 1");
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ(rule->Evaluate(json::object(), {}), json::parse(R"({"x": 7, "y": "aB"})"));
  // Context functions never fold: the value comes from each message.
  auto ts = CompileRule("SELECT timestamp() + 1 AS t");
  ASSERT_TRUE(ts.ok()) << ts.status();
  EXPECT_EQ(ts->Evaluate(json::object(), EvalContext{"", 41, ""}), json::parse(R"({"t": 42})"));
  EXPECT_EQ(ts->Evaluate(json::object(), EvalContext{"", 1, ""}), json::parse(R"({"t": 2})"));
}

}  // namespace
}  // namespace iot::rule_forwarding::sql
