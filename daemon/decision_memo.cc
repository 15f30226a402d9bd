#include "daemon/decision_memo.h"

namespace kvcomm::daemon {

std::optional<ReuseDecision> DecisionMemo::Find(const Bases& bases) {
  std::lock_guard lock(mutex_);
  auto found = index_.find(bases);
  if (found == index_.end()) return std::nullopt;
  entries_.splice(entries_.begin(), entries_, found->second);
  return found->second->second;
}

void DecisionMemo::Insert(const Bases& bases, ReuseDecision decision) {
  if (capacity_ == 0) return;
  std::lock_guard lock(mutex_);
  if (auto found = index_.find(bases); found != index_.end()) {
    found->second->second = std::move(decision);
    entries_.splice(entries_.begin(), entries_, found->second);
    return;
  }
  entries_.emplace_front(bases, std::move(decision));
  index_.emplace(bases, entries_.begin());
  if (entries_.size() > capacity_) {
    index_.erase(entries_.back().first);
    entries_.pop_back();
  }
}

size_t DecisionMemo::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace kvcomm::daemon
