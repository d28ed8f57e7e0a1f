#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace iot::command_dispatch {

/// Group commit without a thread of its own: items that concurrent callers submit while a
/// batch is being applied are applied together in the next one. The caller that finds no batch
/// in flight applies everything queued (up to `max_batch` items) on its own thread and hands
/// the others their results; every caller returns once its own items are applied. So a lone
/// caller pays one `apply` of its item, and N concurrent callers share about two.
///
/// `apply` gets the items in submission order and returns one result per item, in that order;
/// it must not throw, and is never run by two threads at once.
template <typename Item, typename Result>
class Batcher {
 public:
  using Apply = std::function<std::vector<Result>(const std::vector<Item>&)>;

  Batcher(Apply apply, size_t max_batch)
      : apply_(std::move(apply)), max_batch_(std::max<size_t>(max_batch, 1)) {}

  /// Applies `items` (with whatever else is queued) and returns their results, in order.
  std::vector<Result> Submit(std::vector<Item> items) {
    std::vector<std::shared_ptr<Entry>> mine;
    mine.reserve(items.size());
    std::unique_lock lock(mu_);
    for (Item& item : items) {
      mine.push_back(std::make_shared<Entry>(Entry{std::move(item), std::nullopt}));
      queue_.push_back(mine.back());
    }
    const auto done = [&] {
      return std::all_of(mine.begin(), mine.end(), [](const auto& e) { return e->result; });
    };
    while (!done()) {
      if (busy_) {
        changed_.wait(lock);
        continue;
      }
      busy_ = true;
      const size_t n = std::min(queue_.size(), max_batch_);
      const auto end = queue_.begin() + static_cast<std::ptrdiff_t>(n);
      std::vector<std::shared_ptr<Entry>> batch(queue_.begin(), end);
      queue_.erase(queue_.begin(), end);
      lock.unlock();
      std::vector<Item> batch_items;
      batch_items.reserve(n);
      for (const auto& entry : batch) {
        batch_items.push_back(std::move(entry->item));
      }
      std::vector<Result> results = apply_(batch_items);
      lock.lock();
      for (size_t i = 0; i < n; ++i) {
        batch[i]->result = std::move(results.at(i));
      }
      busy_ = false;
      changed_.notify_all();
    }
    std::vector<Result> out;
    out.reserve(mine.size());
    for (const auto& entry : mine) {
      out.push_back(std::move(*entry->result));
    }
    return out;
  }

  Result Submit(Item item) {
    std::vector<Item> items;
    items.push_back(std::move(item));
    return std::move(Submit(std::move(items)).front());
  }

 private:
  struct Entry {
    Item item;
    std::optional<Result> result;
  };

  Apply apply_;
  size_t max_batch_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::shared_ptr<Entry>> queue_;
  bool busy_ = false;
};

}  // namespace iot::command_dispatch
