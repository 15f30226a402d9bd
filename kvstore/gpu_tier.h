// GpuTier: payloads in one device-memory arena (a single cudaMalloc of the configured capacity,
// sub-allocated first-fit). Reads copy to a host Blob for the socket; Share() hands out the
// device bytes themselves, for kernels that work on them in place. Without CUDA in the build,
// or with no device, Create() reports kUnavailable and the store runs without a GPU tier.
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include "common/arena_allocator.h"
#include "common/lru_index.h"
#include "kernels/device.h"
#include "kvstore/tier.h"

namespace kvcomm::kvstore {

// A stored payload's device bytes. The block stays allocated while any DeviceBytes of it lives,
// even if the segment is erased, demoted or replaced meanwhile (its arena space is reused only
// after the last holder lets go), so a kernel reading it never sees other data.
class DeviceBytes {
 public:
  DeviceBytes() = default;
  const std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  friend class GpuTier;
  DeviceBytes(std::shared_ptr<const void> hold, const std::byte* data, uint64_t size)
      : hold_(std::move(hold)), data_(data), size_(size) {}
  std::shared_ptr<const void> hold_;
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

class GpuTier final : public StorageTier {
 public:
  static Result<std::unique_ptr<GpuTier>> Create(uint64_t capacity_bytes);

  TierKind kind() const override { return TierKind::kGpu; }
  uint64_t capacity_bytes() const override { return arena_->allocator.capacity(); }
  uint64_t used_bytes() const override { return used_; }
  uint64_t segment_count() const override { return index_.size(); }
  bool Contains(const SegmentKey& key) const override { return index_.Contains(key); }
  bool CanFit(uint64_t bytes) const override;
  Status Put(const SegmentMeta& meta, const Blob& payload) override;
  // The same from `bytes` of device memory (copied within the GPU).
  Status PutFromDevice(const SegmentMeta& meta, const std::byte* device, uint64_t bytes);
  Result<Blob> Read(const SegmentKey& key) override;
  Status Erase(const SegmentKey& key) override;
  std::optional<SegmentKey> Coldest() const override { return index_.Coldest(); }

  // The device bytes of a stored payload (marked most recently used), or empty if absent.
  DeviceBytes Share(const SegmentKey& key);

 private:
  // Blocks free themselves into the arena, possibly after the tier let go of them.
  struct Arena {
    kernels::DeviceBuffer memory;
    ArenaAllocator allocator;
    std::mutex mutex;  // blocks are freed by their last holder, on any thread
  };
  struct Block {
    std::shared_ptr<Arena> arena;
    uint64_t offset, bytes;
    ~Block();
    const std::byte* data() const { return arena->memory.data() + offset; }
  };
  explicit GpuTier(std::shared_ptr<Arena> arena) : arena_(std::move(arena)) {}
  // Allocates a block of `bytes`, has `fill` write it and indexes it under meta's key.
  Status Place(const SegmentMeta& meta, uint64_t bytes,
               const std::function<Status(std::byte*)>& fill);

  std::shared_ptr<Arena> arena_;
  uint64_t used_ = 0;  // payload bytes of the stored segments, not rounded
  LruIndex<std::shared_ptr<Block>> index_;
};

}  // namespace kvcomm::kvstore
