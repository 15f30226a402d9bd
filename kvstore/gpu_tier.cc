#include "kvstore/gpu_tier.h"

#include <vector>

namespace kvcomm::kvstore {

Result<std::unique_ptr<GpuTier>> GpuTier::Create(uint64_t capacity_bytes) {
  if (!kernels::CudaAvailable()) {
    return Error(ErrorCode::kUnavailable, "no GPU tier: {}", kernels::CudaDeviceDescription());
  }
  KVCOMM_ASSIGN_OR_RETURN(auto arena, kernels::DeviceBuffer::Allocate(capacity_bytes));
  return std::unique_ptr<GpuTier>(new GpuTier(std::move(arena), capacity_bytes));
}

Status GpuTier::Put(const SegmentMeta& meta, const Blob& payload) {
  assert(!index_.Contains(meta.context_key));
  auto offset = allocator_.Allocate(payload.size());
  if (!offset) {
    return Error(ErrorCode::kResourceExhausted, "GPU arena has no free block of {} bytes",
                 payload.size());
  }
  Status copied =
      kernels::CopyHostToDevice(arena_.data() + *offset, payload.data(), payload.size());
  if (!copied.ok()) {
    allocator_.Free(*offset);
    return copied;
  }
  index_.Insert(meta.context_key, Placed{*offset, payload.size()});
  used_ += payload.size();
  return Status::Ok();
}

Result<Blob> GpuTier::Read(const SegmentKey& key) {
  const Placed* placed = index_.Touch(key);
  if (placed == nullptr)
    return Error(ErrorCode::kNotFound, "GPU tier has no segment {}", key.ToHex());
  std::vector<std::byte> host(placed->bytes);
  KVCOMM_RETURN_IF_ERROR(
      kernels::CopyDeviceToHost(host.data(), arena_.data() + placed->offset, placed->bytes));
  return Blob::FromVector(std::move(host));
}

Status GpuTier::Erase(const SegmentKey& key) {
  auto placed = index_.Remove(key);
  if (placed) {
    allocator_.Free(placed->offset);
    used_ -= placed->bytes;
  }
  return Status::Ok();
}

const std::byte* GpuTier::DevicePointer(const SegmentKey& key) const {
  const Placed* placed = index_.Find(key);
  return placed == nullptr ? nullptr : arena_.data() + placed->offset;
}

}  // namespace kvcomm::kvstore
