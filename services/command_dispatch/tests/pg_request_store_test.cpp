// PgRequestStore's batched statements (one multi-row statement for concurrent calls) on a real
// PostgreSQL: each request and response in a batch keeps its own outcome, the owner replica is
// returned with a completion, values survive the array encoding byte for byte, and a bad item
// fails only itself.
#include "iot/command_dispatch/pg_request_store.h"

#include <gtest/gtest.h>

#include "iot/command_dispatch/service_spec.h"
#include "iot/common/migrations.h"
#include "iot/testing/servers.h"

namespace iot::command_dispatch {
namespace {

using std::chrono::milliseconds;

class PgRequestStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pool_ = new std::shared_ptr<common::PgPool>(std::make_shared<common::PgPool>(
        common::PgPoolOptions{.url = iot::testing::CreateTestDatabase()}));
    auto applied = common::ApplyMigrations(**pool_, "command_dispatch", EmbeddedMigrations());
    ASSERT_TRUE(applied.ok()) << applied.status();
  }

  static NewRequest Sync(const std::string& id, const std::string& device,
                         const std::string& payload) {
    NewRequest n;
    n.record.request_id = id;
    n.record.tenant_id = "t1";
    n.record.device_id = device;
    n.record.kind = Kind::kCommand;
    n.record.service_id = "meter";
    n.record.command_name = "reboot";
    n.record.body = R"({"delay":1})";
    n.record.payload = payload;
    n.record.status = "SENT";
    n.record.owner = "replica-a";
    n.deadline_in = milliseconds(20'000);
    return n;
  }

  static ResponseRecord Answer(const std::string& id, const std::string& device,
                               const std::string& payload, const std::string& status) {
    return {.response = {.device_id = device,
                         .request_id = id,
                         .payload_json = payload,
                         .message_id = "resp-" + id},
            .final_status = status};
  }

  static std::shared_ptr<common::PgPool>* pool_;
  PgRequestStore store_{*pool_};
};

std::shared_ptr<common::PgPool>* PgRequestStoreTest::pool_ = nullptr;

TEST_F(PgRequestStoreTest, EachRequestAndResponseOfABatchKeepsItsOwnOutcome) {
  // Quotes, backslashes, braces, commas and non-ASCII: what the array literals must carry.
  const std::string odd = R"({"text":"a \"quoted\" \\ {b,c} é","n":1})";
  const auto inserted = store_.InsertMany({Sync("b-1", "dev1", odd), Sync("b-2", "dev1", "{}"),
                                           Sync("b-3", "dev2", "{}"), Sync("b-4", "dev2", "{}")});
  ASSERT_EQ(inserted.size(), 4u);
  for (const auto& s : inserted) {
    ASSERT_TRUE(s.ok()) << s;
  }
  Transition timeout;
  timeout.from = {"SENT"};
  timeout.to = "TIMEOUT";
  timeout.finished = true;
  ASSERT_TRUE(store_.Move("b-4", timeout).value());

  const auto done = store_.CompleteMany({
      Answer("b-1", "dev1", odd, "SUCCESSFUL"),
      Answer("b-2", "dev9", "{}", "SUCCESSFUL"),  // not b-2's device
      Answer("b-1", "dev1", odd, "SUCCESSFUL"),   // repeated in the batch
      Answer("b-3", "dev2", R"({"result_code":1})", "FAILED"),
      Answer("b-4", "dev2", "{}", "SUCCESSFUL"),  // closed: recorded as late
      Answer("nope", "dev1", "{}", "SUCCESSFUL"),
  });
  ASSERT_EQ(done.size(), 6u);
  for (const auto& d : done) {
    ASSERT_TRUE(d.ok()) << d.status();
  }
  ASSERT_TRUE(done[0]->has_value());
  EXPECT_EQ((*done[0])->status, "SUCCESSFUL");
  EXPECT_EQ((*done[0])->owner, "replica-a");
  EXPECT_EQ((*done[0])->kind, Kind::kCommand);
  EXPECT_FALSE(done[1]->has_value());
  EXPECT_FALSE(done[2]->has_value()) << "a response counts once";
  ASSERT_TRUE(done[3]->has_value());
  EXPECT_EQ((*done[3])->status, "FAILED");
  EXPECT_FALSE(done[4]->has_value());
  EXPECT_FALSE(done[5]->has_value());

  auto b1 = store_.Get("t1", "dev1", Kind::kCommand, "b-1");
  ASSERT_TRUE(b1.ok()) << b1.status();
  EXPECT_EQ(b1->status, "SUCCESSFUL");
  EXPECT_EQ(b1->payload, odd);
  EXPECT_EQ(b1->result, odd);
  ASSERT_EQ(b1->history.size(), 2u);
  EXPECT_EQ(b1->history[0].status, "SENT");
  EXPECT_EQ(b1->history[1].status, "SUCCESSFUL");
  EXPECT_EQ(store_.Find("b-2")->status, "SENT");
  auto b4 = store_.Get("t1", "dev2", Kind::kCommand, "b-4");
  EXPECT_EQ(b4->status, "TIMEOUT");
  EXPECT_EQ(b4->result, "{}");
  EXPECT_EQ(b4->history.back().detail, "late response recorded");
}

TEST_F(PgRequestStoreTest, ATakenIdFailsOnlyItsOwnRequest) {
  ASSERT_TRUE(store_.InsertMany({Sync("t-1", "dev1", "{}")}).front().ok());
  const auto inserted = store_.InsertMany(
      {Sync("t-2", "dev1", "{}"), Sync("t-1", "dev1", "{}"), Sync("t-3", "dev1", "{}")});
  ASSERT_EQ(inserted.size(), 3u);
  EXPECT_TRUE(inserted[0].ok()) << inserted[0];
  EXPECT_EQ(inserted[1].code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(inserted[2].ok()) << inserted[2];
  EXPECT_EQ(store_.Find("t-3")->status, "SENT");
}

}  // namespace
}  // namespace iot::command_dispatch
