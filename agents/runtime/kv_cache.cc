#include "agents/runtime/kv_cache.h"

#include <algorithm>

#include "kernels/ops.h"

namespace kvcomm::runtime {

KvCache::KvCache(const ModelConfig& config, int64_t capacity)
    : layers_(config.num_layers),
      kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim),
      capacity_(capacity),
      k_(layers_, std::vector<float>(kv_heads_ * capacity * head_dim_)),
      v_(layers_, std::vector<float>(kv_heads_ * capacity * head_dim_)),
      valid_(capacity, false) {}

int64_t KvCache::length() const {
  auto first_invalid = std::find(valid_.begin(), valid_.end(), false);
  return first_invalid - valid_.begin();
}

void KvCache::MarkValid(int64_t begin, int64_t end) {
  std::fill(valid_.begin() + begin, valid_.begin() + end, true);
}

void KvCache::Truncate(int64_t position) { std::fill(valid_.begin() + position, valid_.end(), false); }

KvLayout KvCache::SegmentLayout(int64_t tokens, DType dtype) const {
  return KvLayout{static_cast<uint32_t>(layers_), static_cast<uint32_t>(kv_heads_),
                  static_cast<uint32_t>(tokens), static_cast<uint32_t>(head_dim_), dtype};
}

Result<Blob> KvCache::Export(int64_t begin, int64_t end, DType dtype) const {
  if (begin < 0 || end > capacity_ || begin >= end) {
    return InvalidArgument("export range [{}, {}) is not inside the cache's {} positions", begin, end, capacity_);
  }
  for (int64_t p = begin; p < end; ++p) {
    if (!valid_[p]) return InvalidArgument("cannot export position {}: it holds no KV yet", p);
  }
  const KvLayout layout = SegmentLayout(end - begin, dtype);
  KVCOMM_RETURN_IF_ERROR(layout.Validate());
  std::vector<std::byte> payload(layout.PayloadBytes());
  const int64_t row = (end - begin) * head_dim_;
  for (int64_t layer = 0; layer < layers_; ++layer) {
    for (int kv = 0; kv < 2; ++kv) {
      const float* source = kv == 0 ? keys(layer) : values(layer);
      for (int64_t h = 0; h < kv_heads_; ++h) {
        const float* from = source + (h * capacity_ + begin) * head_dim_;
        std::byte* to = payload.data() + layout.Offset(layer, kv, h, 0);
        KVCOMM_RETURN_IF_ERROR(kernels::ConvertDType({const_cast<float*>(from), DType::kF32, {row}}, {to, dtype, {row}}));
      }
    }
  }
  return Blob::FromVector(std::move(payload));
}

Status KvCache::Import(const KvLayout& layout, std::span<const std::byte> payload, int64_t position) {
  KVCOMM_RETURN_IF_ERROR(layout.Validate());
  if (layout.num_layers != layers_ || layout.kv_heads != kv_heads_ || layout.head_dim != head_dim_) {
    return InvalidArgument("segment {} does not fit this model ({} layers, {} kv heads, head dim {})",
                           layout.ToString(), layers_, kv_heads_, head_dim_);
  }
  if (payload.size() != layout.PayloadBytes()) {
    return InvalidArgument("segment payload has {} bytes, its layout needs {}", payload.size(), layout.PayloadBytes());
  }
  const int64_t tokens = layout.tokens;
  if (position < 0 || position + tokens > capacity_) {
    return InvalidArgument("segment of {} tokens at position {} does not fit a cache of {} positions", tokens,
                           position, capacity_);
  }
  const int64_t row = tokens * head_dim_;
  for (int64_t layer = 0; layer < layers_; ++layer) {
    for (int kv = 0; kv < 2; ++kv) {
      float* target = kv == 0 ? keys(layer) : values(layer);
      for (int64_t h = 0; h < kv_heads_; ++h) {
        const std::byte* from = payload.data() + layout.Offset(layer, kv, h, 0);
        float* to = target + (h * capacity_ + position) * head_dim_;
        KVCOMM_RETURN_IF_ERROR(
            kernels::ConvertDType({const_cast<std::byte*>(from), layout.dtype, {row}}, {to, DType::kF32, {row}}));
      }
    }
  }
  MarkValid(position, position + tokens);
  return Status::Ok();
}

}  // namespace kvcomm::runtime
