#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "iot/rule_forwarding/history.h"

namespace iot::rule_forwarding {

struct HistoryWriterOptions {
  size_t max_batch_rows = 5000;      ///< rows per COPY at most
  size_t max_buffered_rows = 50000;  ///< the bound of the buffer
  /// How long Write() waits for room in a full buffer before RESOURCE_EXHAUSTED.
  std::chrono::milliseconds enqueue_timeout{2000};
  size_t flushers = 2;  ///< threads (and so database connections) writing batches
};

/// Group commit in front of a HistoryStore: Write() puts rows into a bounded buffer and waits
/// until a flusher has stored them (together with whatever other callers buffered meanwhile)
/// and returns that outcome, so nothing is acknowledged before it is in PostgreSQL. Batches form
/// by themselves while a flush is running; no timer delays a lone write. Thread-safe.
class HistoryWriter {
 public:
  /// `sink` stores one batch (PgHistoryStore::Insert): the count is of rows new to the store.
  using Sink = std::function<absl::StatusOr<int64_t>(std::span<const HistoryRow>)>;

  HistoryWriter(Sink sink, HistoryWriterOptions options);
  ~HistoryWriter();
  HistoryWriter(const HistoryWriter&) = delete;
  HistoryWriter& operator=(const HistoryWriter&) = delete;

  /// Stores `rows`; blocks until they are stored or failed. RESOURCE_EXHAUSTED when the buffer
  /// stays full for enqueue_timeout, UNAVAILABLE after Stop(), else the store's status.
  absl::Status Write(std::vector<HistoryRow> rows);

  /// Rows waiting in the buffer (a gauge).
  [[nodiscard]] size_t buffered() const;
  /// Flushes what is buffered, then stops the flushers. Idempotent.
  void Stop();

 private:
  struct Ticket {
    std::vector<HistoryRow> rows;
    bool done = false;
    absl::Status status;
  };

  void FlushLoop();

  Sink sink_;
  HistoryWriterOptions options_;
  mutable std::mutex mu_;
  std::condition_variable work_;  ///< flushers wait for tickets
  std::condition_variable room_;  ///< writers wait for room or completion
  std::deque<std::shared_ptr<Ticket>> queue_;
  size_t buffered_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> flushers_;
};

}  // namespace iot::rule_forwarding
