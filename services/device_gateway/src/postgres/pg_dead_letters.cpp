#include "iot/device_gateway/pg_dead_letters.h"

#include <pqxx/pqxx>

namespace iot::device_gateway {
namespace {

class PgDeadLetterStore final : public DeadLetterStore {
 public:
  explicit PgDeadLetterStore(std::shared_ptr<common::PgPool> pool) : pool_(std::move(pool)) {}

  absl::Status Put(const DeadLetter& letter) override {
    return pool_->Run([&](pqxx::connection& c) {
      pqxx::work w(c);
      w.exec_params(
          "INSERT INTO device_gateway.dead_letters "
          "  (target, code, error, attempts, message_id, tenant_id, device_id, request) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) "
          "ON CONFLICT (target, message_id) DO NOTHING",
          std::string(TargetName(letter.target)), letter.code, letter.error, letter.attempts,
          letter.message_id, letter.device.tenant_id(), letter.device.device_id(),
          letter.request_json);
      w.commit();
    });
  }

 private:
  std::shared_ptr<common::PgPool> pool_;
};

}  // namespace

std::shared_ptr<DeadLetterStore> MakePgDeadLetterStore(std::shared_ptr<common::PgPool> pool) {
  return std::make_shared<PgDeadLetterStore>(std::move(pool));
}

}  // namespace iot::device_gateway
