#include "common/arena_allocator.h"

#include <cassert>

namespace kvcomm {

ArenaAllocator::ArenaAllocator(uint64_t capacity, uint64_t alignment)
    : capacity_(capacity & ~(alignment - 1)), alignment_(alignment) {
  assert(alignment != 0 && (alignment & (alignment - 1)) == 0);
  if (capacity_ > 0) free_.emplace(0, capacity_);
}

bool ArenaAllocator::CanAllocate(uint64_t bytes) const {
  uint64_t need = RoundUp(bytes == 0 ? 1 : bytes);
  for (const auto& [offset, size] : free_) {
    if (size >= need) return true;
  }
  return false;
}

std::optional<uint64_t> ArenaAllocator::Allocate(uint64_t bytes) {
  uint64_t need = RoundUp(bytes == 0 ? 1 : bytes);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    uint64_t offset = it->first;
    uint64_t rest = it->second - need;
    free_.erase(it);
    if (rest > 0) free_.emplace(offset + need, rest);
    used_.emplace(offset, need);
    allocated_ += need;
    return offset;
  }
  return std::nullopt;
}

void ArenaAllocator::Free(uint64_t offset) {
  auto used = used_.find(offset);
  assert(used != used_.end());
  uint64_t size = used->second;
  used_.erase(used);
  allocated_ -= size;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && offset + size == next->first) {  // merge with the following block
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {  // merge into the preceding block
      prev->second += size;
      return;
    }
  }
  free_.emplace(offset, size);
}

}  // namespace kvcomm
