// GpuTier: payloads in one device-memory arena (a single cudaMalloc of the configured capacity,
// sub-allocated first-fit). Reads copy to a host Blob for the socket. Without CUDA in the build,
// or with no device, Create() reports kUnavailable and the store runs without a GPU tier.
#pragma once

#include <memory>

#include "common/lru_index.h"
#include "kernels/device.h"
#include "kvstore/internal/arena_allocator.h"
#include "kvstore/tier.h"

namespace kvcomm::kvstore {

class GpuTier final : public StorageTier {
 public:
  static Result<std::unique_ptr<GpuTier>> Create(uint64_t capacity_bytes);

  TierKind kind() const override { return TierKind::kGpu; }
  uint64_t capacity_bytes() const override { return allocator_.capacity(); }
  uint64_t used_bytes() const override { return used_; }
  uint64_t segment_count() const override { return index_.size(); }
  bool Contains(const SegmentKey& key) const override { return index_.Contains(key); }
  bool CanFit(uint64_t bytes) const override { return allocator_.CanAllocate(bytes); }
  Status Put(const SegmentMeta& meta, const Blob& payload) override;
  Result<Blob> Read(const SegmentKey& key) override;
  Status Erase(const SegmentKey& key) override;
  std::optional<SegmentKey> Coldest() const override { return index_.Coldest(); }

  // Device address of a stored payload (for kernels that work on it in place), or nullptr.
  const std::byte* DevicePointer(const SegmentKey& key) const;

 private:
  struct Placed {
    uint64_t offset;
    uint64_t bytes;
  };
  GpuTier(kernels::DeviceBuffer arena, uint64_t capacity)
      : arena_(std::move(arena)), allocator_(capacity) {}

  kernels::DeviceBuffer arena_;
  internal::ArenaAllocator allocator_;
  uint64_t used_ = 0;  // payload bytes, not rounded
  LruIndex<Placed> index_;
};

}  // namespace kvcomm::kvstore
