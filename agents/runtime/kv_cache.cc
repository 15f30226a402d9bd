#include "agents/runtime/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "kernels/ops.h"

namespace kvcomm::runtime {

KvCache::KvCache(const ModelConfig& config, int64_t capacity, Device device)
    : device_(device),
      layers_(config.num_layers),
      kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim),
      capacity_(capacity),
      valid_(capacity, false) {}

Result<KvCache> KvCache::Create(const ModelConfig& config, int64_t capacity, Device device) {
  if (capacity <= 0) return InvalidArgument("cache capacity must be positive, got {}", capacity);
  KvCache cache(config, capacity, device);
  const int64_t elements = cache.kv_heads_ * capacity * cache.head_dim_;
  if (device == Device::kCpu) {
    cache.host_k_.assign(cache.layers_, std::vector<float>(elements));
    cache.host_v_.assign(cache.layers_, std::vector<float>(elements));
  } else {
    KVCOMM_ASSIGN_OR_RETURN(cache.device_k_,
                            kernels::DeviceBuffer::Allocate(cache.layers_ * cache.LayerBytes()));
    KVCOMM_ASSIGN_OR_RETURN(cache.device_v_,
                            kernels::DeviceBuffer::Allocate(cache.layers_ * cache.LayerBytes()));
  }
  return cache;
}

int64_t KvCache::length() const {
  return std::find(valid_.begin(), valid_.end(), false) - valid_.begin();
}

void KvCache::MarkValid(int64_t begin, int64_t end) {
  std::fill(valid_.begin() + begin, valid_.begin() + end, true);
}

void KvCache::Truncate(int64_t position) {
  std::fill(valid_.begin() + position, valid_.end(), false);
  for (auto& layer : dropped_)
    for (int64_t h = 0; h < kv_heads_; ++h)
      std::fill(layer.begin() + h * capacity_ + position, layer.begin() + (h + 1) * capacity_, 0);
}

KvLayout KvCache::SegmentLayout(int64_t tokens, DType dtype) const {
  return KvLayout{static_cast<uint32_t>(layers_), static_cast<uint32_t>(kv_heads_),
                  static_cast<uint32_t>(tokens), static_cast<uint32_t>(head_dim_), dtype};
}

Status KvCache::ReadRows(int64_t layer, int kv, int64_t head, int64_t begin, int64_t end,
                         float* out) const {
  const int64_t offset = (head * capacity_ + begin) * head_dim_, n = (end - begin) * head_dim_;
  if (device_ == Device::kCpu) {
    const float* from = (kv == 0 ? keys(layer) : values(layer)) + offset;
    std::copy_n(from, n, out);
    return Status::Ok();
  }
  std::vector<uint16_t> staging(n);
  const std::byte* from = (kv == 0 ? device_keys(layer) : device_values(layer)) + offset * 2;
  KVCOMM_RETURN_IF_ERROR(kernels::CopyDeviceToHost(staging.data(), from, n * 2));
  return kernels::ConvertDType({staging.data(), DType::kBF16, {n}}, {out, DType::kF32, {n}});
}

Status KvCache::WriteRows(int64_t layer, int kv, int64_t head, int64_t begin, int64_t end,
                          const float* in) {
  const int64_t offset = (head * capacity_ + begin) * head_dim_, n = (end - begin) * head_dim_;
  if (device_ == Device::kCpu) {
    std::copy_n(in, n, (kv == 0 ? keys(layer) : values(layer)) + offset);
    return Status::Ok();
  }
  std::vector<uint16_t> staging(n);
  KVCOMM_RETURN_IF_ERROR(kernels::ConvertDType({const_cast<float*>(in), DType::kF32, {n}},
                                               {staging.data(), DType::kBF16, {n}}));
  std::byte* to = (kv == 0 ? device_keys(layer) : device_values(layer)) + offset * 2;
  return kernels::CopyHostToDevice(to, staging.data(), n * 2);
}

void KvCache::AllocateDropMask() {
  if (dropped_.empty()) dropped_.assign(layers_, std::vector<uint8_t>(kv_heads_ * capacity_, 0));
}

Status KvCache::ImportKept(int64_t layer, int64_t head, int64_t begin, int64_t end,
                           std::span<const int32_t> offsets, const float* keys,
                           const float* values) {
  if (device_ != Device::kCpu)
    return Error(ErrorCode::kFailedPrecondition,
                 "compressed (per-head) segments are imported on the CPU backend only");
  if (layer < 0 || layer >= layers_ || head < 0 || head >= kv_heads_ || begin < 0 ||
      end > capacity_ || begin >= end)
    return InvalidArgument("layer {} head {} range [{}, {}) is outside the cache ({} x {} x {})",
                           layer, head, begin, end, layers_, kv_heads_, capacity_);
  AllocateDropMask();
  uint8_t* dropped = dropped_[layer].data() + head * capacity_;
  std::fill(dropped + begin, dropped + end, 1);
  for (size_t i = 0; i < offsets.size(); ++i) {
    const int64_t position = begin + offsets[i];
    if (offsets[i] < 0 || position >= end || (i > 0 && offsets[i] <= offsets[i - 1]))
      return InvalidArgument("kept offsets must ascend inside [0, {}): {} at {}", end - begin,
                             offsets[i], i);
    dropped[position] = 0;
    const int64_t to = (head * capacity_ + position) * head_dim_;
    std::copy_n(keys + i * head_dim_, head_dim_, host_k_[layer].data() + to);
    std::copy_n(values + i * head_dim_, head_dim_, host_v_[layer].data() + to);
  }
  return Status::Ok();
}

Status KvCache::Drop(int64_t layer, int64_t head, std::span<const int32_t> positions) {
  if (device_ != Device::kCpu)
    return Error(ErrorCode::kFailedPrecondition, "positions are dropped on the CPU backend only");
  if (layer < 0 || layer >= layers_ || head < 0 || head >= kv_heads_)
    return InvalidArgument("layer {} head {} is outside the cache ({} x {})", layer, head, layers_,
                           kv_heads_);
  for (int32_t p : positions)
    if (p < 0 || p >= capacity_) return InvalidArgument("position {} is outside the cache", p);
  AllocateDropMask();
  for (int32_t p : positions) dropped_[layer][head * capacity_ + p] = 1;
  return Status::Ok();
}

Status KvCache::CheckExportRange(int64_t begin, int64_t end) const {
  if (begin < 0 || end > capacity_ || begin >= end) {
    return InvalidArgument("export range [{}, {}) is not inside the cache's {} positions", begin,
                           end, capacity_);
  }
  for (int64_t p = begin; p < end; ++p) {
    if (!valid_[p]) return InvalidArgument("cannot export position {}: it holds no KV yet", p);
  }
  return Status::Ok();
}

Status KvCache::CopyOut(int64_t begin, int64_t end, std::byte* out) const {
  KVCOMM_RETURN_IF_ERROR(CheckExportRange(begin, end));
  const KvLayout layout = SegmentLayout(end - begin, NativeDType());
  if (device_ == Device::kCuda && MovesByKernel(out))
    return kernels::CopyCacheToSegment(DeviceView(), begin, end - begin, out);
  const size_t row_bytes = (end - begin) * head_dim_ * DTypeSize(layout.dtype);
  const size_t pitch = capacity_ * head_dim_ * DTypeSize(layout.dtype);
  std::vector<kernels::Copy2D> copies;
  for (int64_t layer = 0; layer < layers_; ++layer) {
    for (int kv = 0; kv < 2; ++kv) {
      std::byte* to = out + layout.Offset(layer, kv, 0, 0);
      if (device_ == Device::kCpu) {
        const float* from = (kv == 0 ? keys(layer) : values(layer)) + begin * head_dim_;
        for (int64_t h = 0; h < kv_heads_; ++h)
          std::memcpy(to + h * row_bytes, from + h * capacity_ * head_dim_, row_bytes);
      } else {
        const std::byte* from =
            (kv == 0 ? device_keys(layer) : device_values(layer)) + begin * head_dim_ * 2;
        copies.push_back({to, row_bytes, from, pitch, row_bytes, static_cast<size_t>(kv_heads_)});
      }
    }
  }
  return copies.empty() ? Status::Ok() : kernels::CopyAll2D(copies);
}

Result<Blob> KvCache::Export(int64_t begin, int64_t end, DType dtype) const {
  KVCOMM_RETURN_IF_ERROR(CheckExportRange(begin, end));
  const KvLayout layout = SegmentLayout(end - begin, dtype);
  KVCOMM_RETURN_IF_ERROR(layout.Validate());
  std::vector<std::byte> payload(layout.PayloadBytes());
  if (dtype == NativeDType()) {
    KVCOMM_RETURN_IF_ERROR(CopyOut(begin, end, payload.data()));
    return Blob::FromVector(std::move(payload));
  }
  const int64_t row = (end - begin) * head_dim_;
  std::vector<float> rows(row);
  for (int64_t layer = 0; layer < layers_; ++layer) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int64_t h = 0; h < kv_heads_; ++h) {
        KVCOMM_RETURN_IF_ERROR(ReadRows(layer, kv, h, begin, end, rows.data()));
        std::byte* to = payload.data() + layout.Offset(layer, kv, h, 0);
        KVCOMM_RETURN_IF_ERROR(
            kernels::ConvertDType({rows.data(), DType::kF32, {row}}, {to, dtype, {row}}));
      }
    }
  }
  return Blob::FromVector(std::move(payload));
}

Status KvCache::Import(const KvLayout& layout, std::span<const std::byte> payload,
                       int64_t position) {
  KVCOMM_RETURN_IF_ERROR(layout.Validate());
  if (layout.num_layers != layers_ || layout.kv_heads != kv_heads_ ||
      layout.head_dim != head_dim_) {
    return InvalidArgument(
        "segment {} does not fit this model ({} layers, {} kv heads, head dim {})",
        layout.ToString(), layers_, kv_heads_, head_dim_);
  }
  if (payload.size() != layout.PayloadBytes()) {
    return InvalidArgument("segment payload has {} bytes, its layout needs {}", payload.size(),
                           layout.PayloadBytes());
  }
  const int64_t tokens = layout.tokens;
  if (position < 0 || position + tokens > capacity_) {
    return InvalidArgument(
        "segment of {} tokens at position {} does not fit a cache of {} positions", tokens,
        position, capacity_);
  }
  const int64_t row = tokens * head_dim_;
  if (device_ == Device::kCuda && layout.dtype == DType::kBF16 && MovesByKernel(payload.data())) {
    KVCOMM_RETURN_IF_ERROR(
        kernels::CopySegmentToCache(payload.data(), tokens, DeviceView(), position));
    MarkValid(position, position + tokens);
    return Status::Ok();
  }
  if (device_ == Device::kCuda && layout.dtype == DType::kBF16) {
    // The cache's own dtype from host memory: every head's rows of a (layer, K|V) in one
    // strided copy.
    std::vector<kernels::Copy2D> copies;
    for (int64_t layer = 0; layer < layers_; ++layer)
      for (int kv = 0; kv < 2; ++kv)
        copies.push_back(
            {(kv == 0 ? device_keys(layer) : device_values(layer)) + position * head_dim_ * 2,
             static_cast<size_t>(capacity_ * head_dim_ * 2),
             payload.data() + layout.Offset(layer, kv, 0, 0), static_cast<size_t>(row * 2),
             static_cast<size_t>(row * 2), static_cast<size_t>(kv_heads_)});
    KVCOMM_RETURN_IF_ERROR(kernels::CopyAll2D(copies));
    MarkValid(position, position + tokens);
    return Status::Ok();
  }
  std::vector<float> rows(row);
  for (int64_t layer = 0; layer < layers_; ++layer) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int64_t h = 0; h < kv_heads_; ++h) {
        const std::byte* from = payload.data() + layout.Offset(layer, kv, h, 0);
        KVCOMM_RETURN_IF_ERROR(
            kernels::ConvertDType({const_cast<std::byte*>(from), layout.dtype, {row}},
                                  {rows.data(), DType::kF32, {row}}));
        KVCOMM_RETURN_IF_ERROR(WriteRows(layer, kv, h, position, position + tokens, rows.data()));
      }
    }
  }
  MarkValid(position, position + tokens);
  return Status::Ok();
}

}  // namespace kvcomm::runtime
