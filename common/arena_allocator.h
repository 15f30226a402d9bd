// ArenaAllocator: first-fit allocation of byte ranges inside a fixed arena, with coalescing of
// freed neighbours. Pure bookkeeping (offsets only), so the GPU tier's placement logic is
// testable without a GPU. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

namespace kvcomm {

class ArenaAllocator {
 public:
  // Allocations are rounded up to `alignment` (a power of two).
  ArenaAllocator(uint64_t capacity, uint64_t alignment = 256);

  std::optional<uint64_t> Allocate(uint64_t bytes);
  // `offset` must come from Allocate and not be freed yet.
  void Free(uint64_t offset);
  bool CanAllocate(uint64_t bytes) const;

  uint64_t capacity() const { return capacity_; }
  uint64_t allocated_bytes() const { return allocated_; }  // rounded sizes
  uint64_t RoundUp(uint64_t bytes) const { return (bytes + alignment_ - 1) & ~(alignment_ - 1); }

 private:
  uint64_t capacity_;
  uint64_t alignment_;
  uint64_t allocated_ = 0;
  std::map<uint64_t, uint64_t> free_;  // offset -> size
  std::map<uint64_t, uint64_t> used_;  // offset -> size
};

}  // namespace kvcomm
