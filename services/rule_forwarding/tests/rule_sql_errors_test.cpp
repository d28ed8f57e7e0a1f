// Every compile error, with its position.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "iot/rule_forwarding/sql/rule_sql.h"

namespace iot::rule_forwarding::sql {
namespace {

struct ErrorCase {
  std::string sql;
  int line;
  int column;
  std::string message;
};

void ExpectErrors(const std::vector<ErrorCase>& cases) {
  for (const ErrorCase& c : cases) {
    const auto rule = CompileRule(c.sql);
    ASSERT_FALSE(rule.ok()) << c.sql;
    EXPECT_EQ(rule.status().code(), absl::StatusCode::kInvalidArgument) << c.sql;
    const auto error = SqlErrorOf(rule.status());
    ASSERT_TRUE(error.has_value()) << c.sql;
    EXPECT_EQ(error->message, c.message) << c.sql;
    EXPECT_EQ(error->line, c.line) << c.sql << ": " << error->message;
    EXPECT_EQ(error->column, c.column) << c.sql << ": " << error->message;
    EXPECT_LE(error->offset, c.sql.size()) << c.sql;
    EXPECT_EQ(std::string(rule.status().message()), error->ToString()) << c.sql;
  }
}

// Column of the character at byte `offset` of a single-line ASCII statement.
int Col(std::size_t offset) { return static_cast<int>(offset) + 1; }

TEST(RuleSqlErrors, TheIssueExample) {
  const auto rule = CompileRule("SELECT * WHERE a=1 AND ");
  ASSERT_FALSE(rule.ok());
  EXPECT_EQ(std::string(rule.status().message()),
            "line 1, column 24: expected an expression after 'AND', found end of input");
  const auto error = SqlErrorOf(rule.status());
  ASSERT_TRUE(error);
  EXPECT_EQ(*error,
            (SqlError{23, 1, 24, "expected an expression after 'AND', found end of input"}));
  EXPECT_EQ(SqlErrorOf(absl::InvalidArgumentError("other")), std::nullopt);
  EXPECT_EQ(SqlErrorOf(absl::OkStatus()), std::nullopt);
}

TEST(RuleSqlErrors, Statement) {
  ExpectErrors({
      {"", 1, 1, "expected SELECT, found end of input"},
      {"   ", 1, 4, "expected SELECT, found end of input"},
      {"UPDATE x", 1, 1, "expected SELECT, found 'UPDATE'"},
      {"SELECT", 1, 7, "expected an expression after 'SELECT', found end of input"},
      {"SELECT select", 1, 8, "expected an expression after 'SELECT', found 'SELECT'"},
      {"SELECT FROM 't'", 1, 8, "expected an expression after 'SELECT', found 'FROM'"},
      {"SELECT a,", 1, 10, "expected an expression after ',', found end of input"},
      {"SELECT a, FROM 't'", 1, 11, "expected an expression after ',', found 'FROM'"},
      {"SELECT a b", 1, 10, "expected AS, ',', FROM, WHERE or end of input after 'a', found 'b'"},
      {"SELECT a AS x y", 1, 15, "expected ',', FROM, WHERE or end of input after 'x', found 'y'"},
      {"SELECT * x", 1, 10, "expected ',', FROM, WHERE or end of input after '*', found 'x'"},
      {"SELECT * AS x", 1, 10, "expected ',', FROM, WHERE or end of input after '*', found 'AS'"},
      {"SELECT 1 = 2 = 3", 1, 14,
       "expected AS, ',', FROM, WHERE or end of input after number 2, found '='"},
      {"SELECT a AS", 1, 12, "expected a name after 'AS', found end of input"},
      {"SELECT a AS from", 1, 13, "expected a name after 'AS', found 'FROM'"},
      {"SELECT a AS 'x'", 1, 13, "expected a name after 'AS', found string 'x'"},
      {"SELECT a FROM", 1, 14, "expected a topic filter string after 'FROM', found end of input"},
      {"SELECT a FROM t", 1, 15, "expected a topic filter string after 'FROM', found 't'"},
      {"SELECT a FROM 'x',", 1, 19, "expected a topic filter string after ',', found end of input"},
      {"SELECT a FROM 'x' y", 1, 19,
       "expected ',', WHERE or end of input after string 'x', found 'y'"},
      {"SELECT a FROM 'x' WHERE", 1, 24,
       "expected an expression after 'WHERE', found end of input"},
      {"SELECT a WHERE b = 1 c", 1, 22, "expected end of input after number 1, found 'c'"},
      {"SELECT a WHERE b = 1 FROM 'x'", 1, 22,
       "expected end of input after number 1, found 'FROM'"},
      {"SELECT a;;", 1, 10, "expected end of input after ';', found ';'"},
      {"SELECT a, *", 1, 11, "'*' must be the first item of the select list"},
      {"SELECT *, *", 1, 11, "'*' may appear only once in the select list"},
  });
}

TEST(RuleSqlErrors, Expressions) {
  ExpectErrors({
      {"SELECT (a", 1, 10, "expected ')' after 'a', found end of input"},
      {"SELECT (a b)", 1, 11, "expected ')' after 'a', found 'b'"},
      {"SELECT ()", 1, 9, "expected an expression after '(', found ')'"},
      {"SELECT a +", 1, 11, "expected an expression after '+', found end of input"},
      {"SELECT a * / b", 1, 12, "expected an expression after '*', found '/'"},
      {"SELECT -", 1, 9, "expected an expression after '-', found end of input"},
      {"SELECT a[", 1, 10,
       "expected an array index (a non-negative integer) after '[', found end of input"},
      {"SELECT a[-1]", 1, 10,
       "expected an array index (a non-negative integer) after '[', found '-'"},
      {"SELECT a[1.5]", 1, 10,
       "expected an array index (a non-negative integer) after '[', found number 1.5"},
      {"SELECT a[99999999999999999999]", 1, 10,
       "expected an array index (a non-negative integer) after '[', found number "
       "99999999999999999999"},
      {"SELECT a[0", 1, 11, "expected ']' after number 0, found end of input"},
      {"SELECT a.", 1, 10, "expected a name after '.', found end of input"},
      {"SELECT a.'b'", 1, 10, "expected a name after '.', found string 'b'"},
      {"SELECT a WHERE b AND", 1, 21, "expected an expression after 'AND', found end of input"},
      {"SELECT a WHERE b OR OR c", 1, 21, "expected an expression after 'OR', found 'OR'"},
      {"SELECT a WHERE NOT", 1, 19, "expected an expression after 'NOT', found end of input"},
      {"SELECT a WHERE b IN 1", 1, 21, "expected '(' after 'IN', found number 1"},
      {"SELECT a WHERE b IN ()", 1, 22, "expected an expression after '(', found ')'"},
      {"SELECT a WHERE b IN (1, 2", 1, 26,
       "expected ',' or ')' after number 2, found end of input"},
      {"SELECT a WHERE b IN (1 2)", 1, 24, "expected ',' or ')' after number 1, found number 2"},
      {"SELECT a WHERE b IS 1", 1, 21, "expected NULL or NOT NULL after 'IS', found number 1"},
      {"SELECT a WHERE b IS NOT 1", 1, 25, "expected NULL after 'NOT', found number 1"},
      {"SELECT a WHERE b NOT 1", 1, 22, "expected IN, LIKE or BETWEEN after 'NOT', found number 1"},
      {"SELECT a WHERE b LIKE", 1, 22, "expected an expression after 'LIKE', found end of input"},
      {"SELECT a WHERE b BETWEEN 1 OR 2", 1, 28, "expected AND after number 1, found 'OR'"},
      {"SELECT a WHERE b BETWEEN 1 AND", 1, 31,
       "expected an expression after 'AND', found end of input"},
      {"SELECT CASE END", 1, 13, "expected an expression after 'CASE', found 'END'"},
      {"SELECT CASE a THEN 1 END", 1, 15, "expected WHEN after 'a', found 'THEN'"},
      {"SELECT CASE WHEN a 1 END", 1, 20, "expected THEN after 'a', found number 1"},
      {"SELECT CASE WHEN a THEN 1", 1, 26,
       "expected WHEN, ELSE or END after number 1, found end of input"},
      {"SELECT CASE WHEN a THEN 1 ELSE 2", 1, 33,
       "expected END after number 2, found end of input"},
      {"SELECT CASE WHEN a THEN 1 ELSE 2 WHEN", 1, 34, "expected END after number 2, found 'WHEN'"},
  });
}

TEST(RuleSqlErrors, Functions) {
  ExpectErrors({
      {"SELECT foo(1)", 1, 8, "unknown function 'foo'"},
      {"SELECT a WHERE Count(a) > 1", 1, 16, "unknown function 'Count'"},
      {"SELECT abs(1, 2)", 1, 8, "function abs() takes 1 argument, got 2"},
      {"SELECT abs()", 1, 8, "function abs() takes 1 argument, got 0"},
      {"SELECT device_id(1)", 1, 8, "function device_id() takes no arguments, got 1"},
      {"SELECT concat()", 1, 8, "function concat() takes at least 1 argument, got 0"},
      {"SELECT round()", 1, 8, "function round() takes 1 or 2 arguments, got 0"},
      {"SELECT startswith('a')", 1, 8, "function startswith() takes 2 arguments, got 1"},
      {"SELECT substring('a', 1, 2, 3)", 1, 8,
       "function substring() takes 2 or 3 arguments, got 4"},
      {"SELECT abs(1", 1, 13, "expected ',' or ')' after number 1, found end of input"},
      {"SELECT abs(", 1, 12, "expected an expression after '(', found end of input"},
      {"SELECT abs(1,)", 1, 14, "expected an expression after ',', found ')'"},
      {"SELECT abs('x')", 1, 12, "argument 1 of abs() needs a number, found a string"},
      {"SELECT lower(1)", 1, 14, "argument 1 of lower() needs a string, found a number"},
      {"SELECT startswith(a, true)", 1, 22,
       "argument 2 of startswith() needs a string, found a boolean"},
      {"SELECT round(x, 1.5)", 1, 17, "argument 2 of round() must be an integer"},
      {"SELECT round(x, 'a')", 1, 17, "argument 2 of round() needs a number, found a string"},
      {"SELECT substring('abc', 1.5)", 1, 25, "argument 2 of substring() must be an integer"},
      {"SELECT substring('abc', 1, 0.5)", 1, 28, "argument 3 of substring() must be an integer"},
      {"SELECT topic(0)", 1, 14, "topic level must be at least 1 (levels count from 1)"},
      {"SELECT topic(-2)", 1, 14, "topic level must be at least 1 (levels count from 1)"},
      {"SELECT topic('a')", 1, 14, "argument 1 of topic() needs a number, found a string"},
      {"SELECT topic(1.5)", 1, 14, "argument 1 of topic() must be an integer"},
      {"SELECT abs(lower(a))", 1, 12, "argument 1 of abs() needs a number, found a string"},
  });
}

TEST(RuleSqlErrors, Types) {
  ExpectErrors({
      {"SELECT 'a' + 1", 1, 8, "'+' needs a number, found a string"},
      {"SELECT 1 - true", 1, 12, "'-' needs a number, found a boolean"},
      {"SELECT a * lower(b)", 1, 12, "'*' needs a number, found a string"},
      {"SELECT -'a'", 1, 9, "'-' needs a number, found a string"},
      {"SELECT +true", 1, 9, "'+' needs a number, found a boolean"},
      {"SELECT a WHERE 'a' = 1", 1, 20, "cannot compare a string with a number"},
      {"SELECT a WHERE 1 < 'a'", 1, 18, "cannot compare a number with a string"},
      {"SELECT a WHERE true >= 1", 1, 21, "cannot compare a boolean with a number"},
      {"SELECT a WHERE lower(b) IN ('x', 1)", 1, 34, "cannot compare a string with a number"},
      {"SELECT a WHERE 1 BETWEEN 'a' AND 5", 1, 26, "cannot compare a number with a string"},
      {"SELECT a WHERE 1 BETWEEN 0 AND 'z'", 1, 32, "cannot compare a number with a string"},
      {"SELECT a WHERE 1 AND b", 1, 16, "'AND' needs a boolean, found a number"},
      {"SELECT a WHERE b OR 'c'", 1, 21, "'OR' needs a boolean, found a string"},
      {"SELECT a WHERE NOT 1", 1, 20, "'NOT' needs a boolean, found a number"},
      {"SELECT a WHERE 1", 1, 16, "WHERE needs a boolean, found a number"},
      {"SELECT a WHERE a + 1", 1, 16, "WHERE needs a boolean, found a number"},
      {"SELECT a WHERE (a + 1)", 1, 16, "WHERE needs a boolean, found a number"},
      {"SELECT a WHERE lower(a)", 1, 16, "WHERE needs a boolean, found a string"},
      {"SELECT a WHERE b LIKE 5", 1, 23, "LIKE pattern must be a string, found a number"},
      {"SELECT a WHERE b LIKE null", 1, 23, "LIKE pattern must be a string, found NULL"},
      {"SELECT a WHERE b NOT LIKE true", 1, 27, "LIKE pattern must be a string, found a boolean"},
      {"SELECT a WHERE b LIKE 'ab\\'", 1, 23,
       "LIKE pattern must not end with a lone escape character '\\'"},
      {"SELECT a WHERE b LIKE 1 + c", 1, 23, "LIKE pattern needs a string, found a number"},
      {"SELECT a WHERE 5 LIKE 'a'", 1, 16, "'LIKE' needs a string, found a number"},
      {"SELECT CASE WHEN 1 THEN 2 END", 1, 18, "WHEN needs a boolean, found a number"},
      {"SELECT CASE 'a' WHEN 1 THEN 2 END", 1, 22, "cannot compare a string with a number"},
      {"SELECT a WHERE (CASE WHEN b THEN 1 ELSE 2 END)", 1, 16,
       "WHERE needs a boolean, found a number"},
      {"SELECT a WHERE coalesce(1, 2)", 1, 16, "WHERE needs a boolean, found a number"},
  });
}

TEST(RuleSqlErrors, Names) {
  ExpectErrors({
      {"SELECT a, a", 1, 11,
       "duplicate output name 'a': give one of the items another name with AS"},
      {"SELECT x.a, y.a", 1, 13,
       "duplicate output name 'a': give one of the items another name with AS"},
      {"SELECT a AS b, c AS b", 1, 21, "duplicate output name 'b'"},
      {"SELECT 1, 2 AS expr_1", 1, 16, "duplicate output name 'expr_1'"},
      {"SELECT device_id(), a AS device_id", 1, 26, "duplicate output name 'device_id'"},
      {"SELECT *, a AS b, c AS b", 1, 24, "duplicate output name 'b'"},
  });
}

TEST(RuleSqlErrors, Lexical) {
  ExpectErrors({
      {"SELECT 'abc", 1, 8, "unterminated string: expected a closing '"},
      {"SELECT 'it''s", 1, 8, "unterminated string: expected a closing '"},
      {"SELECT \"abc", 1, 8, "unterminated quoted name: expected a closing \""},
      {"SELECT `abc", 1, 8, "unterminated quoted name: expected a closing `"},
      {"SELECT \"\"", 1, 8, "a quoted name must not be empty"},
      {"SELECT a # b", 1, 10, "unexpected character '#'"},
      {"SELECT a ! b", 1, 10, "unexpected character '!': did you mean '!='?"},
      {"SELECT a | b", 1, 10, "unexpected character '|'"},
      {"SELECT é", 1, 8, "unexpected character 'é'"},
      {"SELECT a, 'é', 世", 1, 16, "unexpected character '世'"},
      {std::string("SELECT \x01"), 1, 8, "unexpected control character U+0001"},
      {std::string("SELECT a\0b", 10), 1, 9, "unexpected control character U+0000"},
      {"SELECT a /* x", 1, 10, "unterminated comment: expected '*/'"},
      {"SELECT 1.", 1, 10, "expected digits after the decimal point"},
      {"SELECT 1.+2", 1, 10, "expected digits after the decimal point"},
      {"SELECT 1e", 1, 10, "expected digits in the exponent of the number"},
      {"SELECT 1e+x", 1, 11, "expected digits in the exponent of the number"},
      {"SELECT 12abc", 1, 8, "invalid number '12abc'"},
      {"SELECT 1.2.3", 1, 8, "invalid number '1.2.3'"},
      {"SELECT 1.abc", 1, 8, "invalid number '1.abc'"},
      {"SELECT 1e999", 1, 8, "number '1e999' is out of range"},
      {"SELECT '\xff'", 1, 9, "invalid UTF-8 byte 0xFF"},
      {"SELECT 'a\xc3'", 1, 10, "invalid UTF-8 byte 0xC3"},
      {"SELECT '\xc0\x80'", 1, 9, "invalid UTF-8 byte 0xC0"},          // overlong NUL
      {"SELECT '\xed\xa0\x80'", 1, 9, "invalid UTF-8 byte 0xED"},      // surrogate
      {"SELECT '\xf4\x90\x80\x80'", 1, 9, "invalid UTF-8 byte 0xF4"},  // above U+10FFFF
  });
}

TEST(RuleSqlErrors, PositionsAcrossLinesAndCharacters) {
  ExpectErrors({
      {"SELECT a\nFROM 't'\nWHERE b =", 3, 10,
       "expected an expression after '=', found end of input"},
      {"SELECT a\r\n  WHERE b = 1 c", 2, 15, "expected end of input after number 1, found 'c'"},
      {"SELECT 'héllo' AS x,", 1, 21, "expected an expression after ',', found end of input"},
      {"SELECT '世界',\n  '世界' +", 2, 9, "expected an expression after '+', found end of input"},
      {"-- comment\nSELECT /* 'x' */ a AND", 2, 23,
       "expected an expression after 'AND', found end of input"},
      {"SELECT\ta\tb", 1, 10, "expected AS, ',', FROM, WHERE or end of input after 'a', found 'b'"},
  });
}

TEST(RuleSqlErrors, TopicFilters) {
  ExpectErrors({
      {"SELECT a FROM 'a/#/b'", 1, Col(17), "invalid topic filter: '#' must be the last level"},
      {"SELECT a FROM 'a/b#'", 1, Col(18), "invalid topic filter: '#' must occupy a whole level"},
      {"SELECT a FROM 'a/b+'", 1, Col(18), "invalid topic filter: '+' must occupy a whole level"},
      {"SELECT a FROM 'a/+x/c'", 1, Col(17), "invalid topic filter: '+' must occupy a whole level"},
      {"SELECT a FROM ''", 1, Col(15), "invalid topic filter: the filter is empty"},
      {"SELECT a FROM 'it''s/#/x'", 1, Col(21), "invalid topic filter: '#' must be the last level"},
      {"SELECT a FROM 'ok', 'a#'", 1, Col(22),
       "invalid topic filter: '#' must occupy a whole level"},
  });
}

TEST(RuleSqlErrors, Limits) {
  // Statement size.
  const std::string big = "SELECT '" + std::string(70000, 'x') + "'";
  ExpectErrors({{big, 1, Col(kMaxSqlBytes), "statement is 70009 bytes long, the limit is 65536"}});
  // Exactly at the limit compiles.
  const std::string at_limit = "SELECT '" + std::string(kMaxSqlBytes - 9, 'x') + "'";
  ASSERT_EQ(at_limit.size(), kMaxSqlBytes);
  EXPECT_TRUE(CompileRule(at_limit).ok());

  const std::string message = "expression is nested too deeply (limit 128 levels)";
  // Parentheses: the WHERE expression is level 1, the k-th '(' opens level k + 1.
  const std::string parens =
      "SELECT a WHERE " + std::string(200, '(') + "b" + std::string(200, ')');
  // Unary minus chains ("- - - 1"; "--" would start a comment).
  std::string minus = "SELECT ";
  for (int i = 0; i < 200; ++i) {
    minus += "- ";
  }
  minus += "1";
  std::string nots = "SELECT a WHERE ";
  for (int i = 0; i < 200; ++i) {
    nots += "NOT ";
  }
  nots += "b";
  // A left-deep chain of paths (literals would fold and never grow).
  std::string chain = "SELECT a";
  for (int i = 0; i < 200; ++i) {
    chain += "+a";
  }
  std::string calls = "SELECT ";
  for (int i = 0; i < 200; ++i) {
    calls += "abs(";
  }
  calls += "a" + std::string(200, ')');
  ExpectErrors({
      {parens, 1, Col(15 + 128), message},
      {minus, 1, Col(7 + 2 * 127), message},
      {nots, 1, Col(15 + 4 * 127), message},
      {chain, 1, Col(7), message},
      {calls, 1, Col(7 + 4 * 128), message},
  });
  // 127 levels of parentheses are fine.
  EXPECT_TRUE(
      CompileRule("SELECT a WHERE " + std::string(127, '(') + "b" + std::string(127, ')')).ok());
  // Huge inputs do not overflow the stack: they hit the nesting limit or the size limit.
  for (const std::string& huge : {"SELECT " + std::string(60000, '('),
                                  "SELECT " + std::string(60000, '['), std::string(70000, '(')}) {
    const auto rule = CompileRule(huge);
    EXPECT_FALSE(rule.ok());
    EXPECT_TRUE(SqlErrorOf(rule.status()).has_value());
  }
}

}  // namespace
}  // namespace iot::rule_forwarding::sql
