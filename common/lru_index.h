// LruIndex: key -> value with recency order, the bookkeeping every tier shares.
#pragma once

#include <list>
#include <optional>
#include <unordered_map>

#include "common/hash.h"

namespace kvcomm {

template <typename Value>
class LruIndex {
 public:
  bool Contains(const Hash128& key) const { return map_.count(key) != 0; }
  size_t size() const { return map_.size(); }

  // Inserts as most recently used; the key must be absent.
  void Insert(const Hash128& key, Value value) {
    order_.push_front(key);
    map_.emplace(key, Entry{std::move(value), order_.begin()});
  }
  // Returns nullptr if absent; otherwise marks it most recently used.
  Value* Touch(const Hash128& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second.position);
    return &it->second.value;
  }
  const Value* Find(const Hash128& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second.value;
  }
  std::optional<Value> Remove(const Hash128& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    order_.erase(it->second.position);
    Value value = std::move(it->second.value);
    map_.erase(it);
    return value;
  }
  std::optional<Hash128> Coldest() const {
    if (order_.empty()) return std::nullopt;
    return order_.back();
  }

 private:
  struct Entry {
    Value value;
    typename std::list<Hash128>::iterator position;
  };
  std::list<Hash128> order_;  // front = most recent
  std::unordered_map<Hash128, Entry, Hash128Hasher> map_;
};

}  // namespace kvcomm
