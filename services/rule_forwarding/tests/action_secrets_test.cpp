// Rule actions' secret settings at rest: sealed where stored, bound to their record, masked for
// users, legacy plain rows read as they are.
#include "iot/rule_forwarding/action_secrets.h"

#include <gtest/gtest.h>

namespace iot::rule_forwarding {
namespace {

const std::string kKey(64, 'a');

ActionSecrets Secrets(const std::string& key = kKey) {
  return ActionSecrets(*common::SecretBox::FromKeyText(key));
}

TEST(ActionSecretsTest, SealedFormHoldsNoSecretAndOpensToThePlainSettings) {
  const nlohmann::json config = {{"url", "postgresql://app:hunter2@db.example:5432/x"},
                                 {"secret", "s3cret-value"},
                                 {"table", "t"}};
  const ActionRef ref{.tenant_id = "t1", .rule_id = "r1", .action_index = 2};
  const nlohmann::json stored = Secrets().Seal(config, ref);
  const std::string text = stored.dump();
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  EXPECT_EQ(text.find("s3cret-value"), std::string::npos) << text;
  // The masked settings stay readable for an operator looking at the row.
  EXPECT_EQ(stored["config"]["table"], "t");
  EXPECT_EQ(stored["config"]["secret"], "***");
  EXPECT_EQ(stored["config"]["url"], "postgresql://app:***@db.example:5432/x");
  EXPECT_TRUE(stored["sealed"]["url"].get<std::string>().starts_with("v1:"));
  auto opened = Secrets().Open(stored, ref);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, config);
}

TEST(ActionSecretsTest, ASealedValueOpensOnlyForItsOwnRecordAndKey) {
  const nlohmann::json stored = Secrets().Seal({{"secret", "x"}}, {"t1", "r1", 0});
  for (const ActionRef& other :
       {ActionRef{"t2", "r1", 0}, ActionRef{"t1", "r2", 0}, ActionRef{"t1", "r1", 1}}) {
    auto opened = Secrets().Open(stored, other);
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(std::string(opened.status().message()).find("'secret'"), std::string::npos);
  }
  EXPECT_EQ(Secrets(std::string(64, 'b')).Open(stored, {"t1", "r1", 0}).status().code(),
            absl::StatusCode::kDataLoss);
  // A value moved from one setting to another does not open either.
  nlohmann::json swapped = Secrets().Seal({{"secret", "x"}, {"password", "y"}}, {"t1", "r1", 0});
  std::swap(swapped["sealed"]["secret"], swapped["sealed"]["password"]);
  EXPECT_FALSE(Secrets().Open(swapped, {"t1", "r1", 0}).ok());
}

TEST(ActionSecretsTest, PlainLegacySettingsAreReadAsTheyAreAndRecognised) {
  const nlohmann::json legacy = {{"config", {{"url", "http://h/x"}, {"secret", "plain"}}}};
  auto opened = Secrets().Open(legacy, {"t1", "r1", 0});
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ((*opened)["secret"], "plain");
  EXPECT_TRUE(HasPlainSecrets(legacy["config"]));
  EXPECT_FALSE(HasPlainSecrets({{"topic", "a"}, {"qos", 1}}));
  // Settings without secrets store no "sealed" part.
  EXPECT_FALSE(Secrets().Seal({{"topic", "a"}}, {"t1", "r1", 0}).contains("sealed"));
}

TEST(MaskConfigTest, HidesSecretsAndUrlPasswords) {
  const nlohmann::json masked = MaskConfig({{"url", "postgresql://app:hunter2@db:5432/x"},
                                            {"secret", "s3cret"},
                                            {"table", "t"},
                                            {"password", "pw"}});
  EXPECT_EQ(masked["secret"], "***");
  EXPECT_EQ(masked["password"], "***");
  EXPECT_EQ(masked["table"], "t");
  EXPECT_EQ(masked["url"], "postgresql://app:***@db:5432/x");
  EXPECT_EQ(MaskConfig({{"url", "https://hooks.example/in/abc?token=t0k&x=1"}})["url"],
            "https://hooks.example/in/abc?***");
}

}  // namespace
}  // namespace iot::rule_forwarding
