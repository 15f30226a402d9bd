#include "kvstore/gpu_tier.h"

#include <vector>

namespace kvcomm::kvstore {

Result<std::unique_ptr<GpuTier>> GpuTier::Create(uint64_t capacity_bytes) {
  if (!kernels::CudaAvailable()) {
    return Error(ErrorCode::kUnavailable, "no GPU tier: {}", kernels::CudaDeviceDescription());
  }
  KVCOMM_ASSIGN_OR_RETURN(auto memory, kernels::DeviceBuffer::Allocate(capacity_bytes));
  auto arena = std::make_shared<Arena>(std::move(memory), ArenaAllocator(capacity_bytes));
  return std::unique_ptr<GpuTier>(new GpuTier(std::move(arena)));
}

GpuTier::Block::~Block() {
  std::lock_guard lock(arena->mutex);
  arena->allocator.Free(offset);
}

bool GpuTier::CanFit(uint64_t bytes) const {
  std::lock_guard lock(arena_->mutex);
  return arena_->allocator.CanAllocate(bytes);
}

Status GpuTier::Put(const SegmentMeta& meta, const Blob& payload) {
  return Place(meta, payload.size(), [&](std::byte* block) {
    return kernels::CopyHostToDevice(block, payload.data(), payload.size());
  });
}

Status GpuTier::PutFromDevice(const SegmentMeta& meta, const std::byte* device, uint64_t bytes) {
  return Place(meta, bytes,
               [&](std::byte* block) { return kernels::CopyDeviceToDevice(block, device, bytes); });
}

Status GpuTier::Place(const SegmentMeta& meta, uint64_t bytes,
                      const std::function<Status(std::byte*)>& fill) {
  assert(!index_.Contains(meta.context_key));
  std::optional<uint64_t> offset;
  {
    std::lock_guard lock(arena_->mutex);
    offset = arena_->allocator.Allocate(bytes);
  }
  if (!offset) {
    return Error(ErrorCode::kResourceExhausted, "GPU arena has no free block of {} bytes", bytes);
  }
  auto block = std::make_shared<Block>(arena_, *offset, bytes);
  KVCOMM_RETURN_IF_ERROR(fill(const_cast<std::byte*>(block->data())));
  index_.Insert(meta.context_key, std::move(block));
  used_ += bytes;
  return Status::Ok();
}

Result<Blob> GpuTier::Read(const SegmentKey& key) {
  const auto* block = index_.Touch(key);
  if (block == nullptr)
    return Error(ErrorCode::kNotFound, "GPU tier has no segment {}", key.ToHex());
  return kernels::CopyDeviceToBlob((*block)->data(), (*block)->bytes);
}

Status GpuTier::Erase(const SegmentKey& key) {
  if (auto block = index_.Remove(key)) used_ -= (*block)->bytes;
  return Status::Ok();
}

DeviceBytes GpuTier::Share(const SegmentKey& key) {
  const auto* block = index_.Touch(key);
  if (block == nullptr) return {};
  return DeviceBytes(*block, (*block)->data(), (*block)->bytes);
}

}  // namespace kvcomm::kvstore
