// KvCache: per layer K (after RoPE) and V, each [kv_heads][capacity][head_dim], with a record of
// which positions hold valid entries. On the CPU backend they are fp32 host arrays; on the CUDA
// backend bf16 device buffers.
//
// Forward computes from length() (the first position without a valid entry) onwards. Segments
// can be exported from any token range in the kvstore layout (common/kv_layout.h) and imported
// at any position range — including beyond length(), leaving a gap that a later Forward fills —
// which is what reusing KV from kvcommd needs. Imported keys must already be rotated for the
// positions they are placed at.
//
// Not thread-safe; one sequence per cache.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "agents/runtime/model_config.h"
#include "common/blob.h"
#include "common/kv_layout.h"
#include "kernels/device.h"
#include "kernels/tensor_view.h"

namespace kvcomm::runtime {

using kernels::Device;

class KvCache {
 public:
  // Allocates the cache; on kCuda this can fail (no GPU, out of memory).
  static Result<KvCache> Create(const ModelConfig& config, int64_t capacity, Device device);

  Device device() const { return device_; }
  int64_t capacity() const { return capacity_; }
  // First position without a valid entry.
  int64_t length() const;
  bool IsValid(int64_t position) const { return valid_[position]; }
  // Marks [begin, end) valid / drops every entry from `position` on.
  void MarkValid(int64_t begin, int64_t end);
  void Truncate(int64_t position);

  // CPU storage (fp32). Only for device() == kCpu.
  float* keys(int64_t layer) { return host_k_[layer].data(); }
  float* values(int64_t layer) { return host_v_[layer].data(); }
  const float* keys(int64_t layer) const { return host_k_[layer].data(); }
  const float* values(int64_t layer) const { return host_v_[layer].data(); }
  // CUDA storage (bf16 device memory, all layers in one allocation each for K and V, so a
  // segment moves in one kernel). Only for device() == kCuda.
  std::byte* device_keys(int64_t layer) const { return device_k_.data() + layer * LayerBytes(); }
  std::byte* device_values(int64_t layer) const { return device_v_.data() + layer * LayerBytes(); }

  // KV of positions [begin, end), all valid, as a payload in the kvstore layout and `dtype`.
  Result<Blob> Export(int64_t begin, int64_t end, DType dtype) const;
  // The same in the cache's own dtype (fp32 on CPU, bf16 on CUDA) written to `out`, which holds
  // SegmentLayout(end - begin, NativeDType()).PayloadBytes() bytes (on CUDA it may be device
  // memory: segments then move without leaving the GPU).
  Status CopyOut(int64_t begin, int64_t end, std::byte* out) const;
  DType NativeDType() const { return device_ == Device::kCpu ? DType::kF32 : DType::kBF16; }
  // Places a payload of `layout` at positions [position, position + layout.tokens). On CUDA a
  // BF16 payload is copied as is, and may also be in device memory (then in one kernel).
  Status Import(const KvLayout& layout, std::span<const std::byte> payload, int64_t position);
  KvLayout SegmentLayout(int64_t tokens, DType dtype) const;

  // A compressed segment, one (layer, kv head) at a time: row i of keys / values ([n][head_dim],
  // fp32, keys rotated for their positions) goes to position begin + offsets[i]; every other
  // position of [begin, end) is dropped for this head (attention skips it). Different heads may
  // keep different tokens. Mark the range valid once every head is placed. CPU backend only.
  Status ImportKept(int64_t layer, int64_t head, int64_t begin, int64_t end,
                    std::span<const int32_t> offsets, const float* keys, const float* values);
  // Drops positions of one (layer, kv head) from attention (decode-time compression). CPU only.
  Status Drop(int64_t layer, int64_t head, std::span<const int32_t> positions);
  // [kv_heads][capacity]: 1 where a position is dropped for that head; null when none is.
  const uint8_t* dropped(int64_t layer) const {
    return dropped_.empty() ? nullptr : dropped_[layer].data();
  }

 private:
  KvCache(const ModelConfig& config, int64_t capacity, Device device);
  Status CheckExportRange(int64_t begin, int64_t end) const;
  void AllocateDropMask();  // all kept, on first use
  // Copies one head's rows [begin, end) of layer/kv between the cache and an fp32 host buffer.
  Status ReadRows(int64_t layer, int kv, int64_t head, int64_t begin, int64_t end,
                  float* out) const;
  Status WriteRows(int64_t layer, int kv, int64_t head, int64_t begin, int64_t end,
                   const float* in);
  int64_t LayerBytes() const { return kv_heads_ * capacity_ * head_dim_ * 2; }
  // A segment in device memory moves in one kernel (16 bytes a thread); others by 2D copies.
  bool MovesByKernel(const void* segment) const {
    return head_dim_ % 8 == 0 && reinterpret_cast<uintptr_t>(segment) % 16 == 0 &&
           kernels::IsDeviceMemory(segment);
  }
  kernels::DeviceKvCache DeviceView() const {
    return {device_k_.data(), device_v_.data(), layers_, kv_heads_, capacity_, head_dim_};
  }

  Device device_;
  int64_t layers_, kv_heads_, head_dim_, capacity_;
  std::vector<std::vector<float>> host_k_, host_v_;
  kernels::DeviceBuffer device_k_, device_v_;
  std::vector<bool> valid_;
  std::vector<std::vector<uint8_t>> dropped_;  // per layer, allocated by the first ImportKept
};

}  // namespace kvcomm::runtime
