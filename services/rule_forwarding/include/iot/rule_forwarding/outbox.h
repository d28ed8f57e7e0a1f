#pragma once

// The durable outbox of accepted deliveries (PostgreSQL), and the replica keeper that
// heartbeats this replica's ownership and takes over what stopped replicas left behind.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "iot/rule_forwarding/action_secrets.h"
#include "iot/rule_forwarding/dispatcher.h"

namespace iot::common {
class PgPool;
}  // namespace iot::common

namespace iot::rule_forwarding {

/// Tables rule_forwarding.outbox and outbox_owners. A row belongs to the replica (`owner`) that
/// accepted it; rows whose owner has not heartbeaten within the lease are taken over. The
/// actions' secret settings in a row are sealed with `secrets`.
class PgOutbox final : public Outbox {
 public:
  PgOutbox(std::shared_ptr<common::PgPool> pool, std::string owner,
           std::shared_ptr<const ActionSecrets> secrets)
      : pool_(std::move(pool)), owner_(std::move(owner)), secrets_(std::move(secrets)) {}

  absl::Status Add(std::vector<DispatchItem>& items) override;
  absl::Status Remove(const std::vector<int64_t>& ids) override;

  /// Registers or refreshes this replica's ownership.
  absl::Status Heartbeat();
  /// Takes over up to `limit` deliveries of replicas silent for longer than `lease` (or
  /// disowned), oldest first, as queueable items.
  absl::StatusOr<std::vector<DispatchItem>> TakeOver(std::chrono::milliseconds lease, size_t limit);
  absl::Status Disown(const std::vector<int64_t>& ids) override;
  /// Ends this replica's ownership: what it leaves is taken over at the next sweep (shutdown).
  absl::Status Retire();
  [[nodiscard]] const std::string& owner() const { return owner_; }
  /// Seals the secret settings of rows written before sealing existed (migration 006 marks
  /// them); returns how many it sealed. Run at start-up.
  absl::StatusOr<size_t> SealPlainSecrets();

 private:
  std::shared_ptr<common::PgPool> pool_;
  std::string owner_;
  std::shared_ptr<const ActionSecrets> secrets_;
};

/// Heartbeats every lease/3 and sweeps for orphaned deliveries every lease/2, queueing them on
/// `dispatcher`.
class OutboxKeeper {
 public:
  OutboxKeeper(std::shared_ptr<PgOutbox> outbox, std::shared_ptr<Dispatcher> dispatcher,
               std::chrono::milliseconds lease);
  ~OutboxKeeper();
  OutboxKeeper(const OutboxKeeper&) = delete;
  OutboxKeeper& operator=(const OutboxKeeper&) = delete;

  void Start();
  void Stop();

 private:
  void Run();
  void Sweep();

  std::shared_ptr<PgOutbox> outbox_;
  std::shared_ptr<Dispatcher> dispatcher_;
  std::chrono::milliseconds lease_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace iot::rule_forwarding
