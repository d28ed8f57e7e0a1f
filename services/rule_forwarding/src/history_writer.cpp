#include "iot/rule_forwarding/history_writer.h"

namespace iot::rule_forwarding {

HistoryWriter::HistoryWriter(Sink sink, HistoryWriterOptions options)
    : sink_(std::move(sink)), options_(options) {
  options_.flushers = std::max<size_t>(options_.flushers, 1);
  options_.max_batch_rows = std::max<size_t>(options_.max_batch_rows, 1);
  for (size_t i = 0; i < options_.flushers; ++i) {
    flushers_.emplace_back([this] { FlushLoop(); });
  }
}

HistoryWriter::~HistoryWriter() { Stop(); }

void HistoryWriter::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& t : flushers_) {
    if (t.joinable()) {
      t.join();
    }
  }
}

size_t HistoryWriter::buffered() const {
  std::lock_guard lock(mu_);
  return buffered_;
}

absl::Status HistoryWriter::Write(std::vector<HistoryRow> rows) {
  if (rows.empty()) {
    return absl::OkStatus();
  }
  auto ticket = std::make_shared<Ticket>();
  const size_t n = rows.size();
  ticket->rows = std::move(rows);
  std::unique_lock lock(mu_);
  // A write larger than the whole buffer still goes through once the buffer is empty.
  const bool has_room = room_.wait_for(lock, options_.enqueue_timeout, [&] {
    return stopping_ || buffered_ == 0 || buffered_ + n <= options_.max_buffered_rows;
  });
  if (stopping_) {
    return absl::UnavailableError("history writer is stopping");
  }
  if (!has_room) {
    return absl::ResourceExhaustedError("history buffer full: PostgreSQL is not keeping up");
  }
  buffered_ += n;
  queue_.push_back(ticket);
  work_.notify_one();
  room_.wait(lock, [&] { return ticket->done; });
  return ticket->status;
}

void HistoryWriter::FlushLoop() {
  std::unique_lock lock(mu_);
  while (true) {
    work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) {
      return;  // stopping, and everything buffered has been flushed
    }
    std::vector<std::shared_ptr<Ticket>> batch;
    size_t rows = 0;
    while (!queue_.empty() &&
           (batch.empty() || rows + queue_.front()->rows.size() <= options_.max_batch_rows)) {
      rows += queue_.front()->rows.size();
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    absl::Status status;
    if (batch.size() == 1) {
      status = sink_(batch.front()->rows).status();
    } else {
      std::vector<HistoryRow> all;
      all.reserve(rows);
      for (const auto& ticket : batch) {
        all.insert(all.end(), ticket->rows.begin(), ticket->rows.end());
      }
      status = sink_(all).status();
    }
    lock.lock();
    buffered_ -= rows;
    for (const auto& ticket : batch) {
      ticket->done = true;
      ticket->status = status;
    }
    room_.notify_all();
  }
}

}  // namespace iot::rule_forwarding
