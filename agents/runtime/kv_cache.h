// KvCache: per layer K (after RoPE) and V, each [kv_heads][capacity][head_dim] fp32, with a
// record of which positions hold valid entries.
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

namespace kvcomm::runtime {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  // First position without a valid entry.
  int64_t length() const;
  bool IsValid(int64_t position) const { return valid_[position]; }
  // Marks [begin, end) valid / drops every entry from `position` on.
  void MarkValid(int64_t begin, int64_t end);
  void Truncate(int64_t position);

  float* keys(int64_t layer) { return k_[layer].data(); }
  float* values(int64_t layer) { return v_[layer].data(); }
  const float* keys(int64_t layer) const { return k_[layer].data(); }
  const float* values(int64_t layer) const { return v_[layer].data(); }

  // KV of positions [begin, end), all valid, as a payload in the kvstore layout and `dtype`.
  Result<Blob> Export(int64_t begin, int64_t end, DType dtype) const;
  // Places a payload of `layout` at positions [position, position + layout.tokens).
  Status Import(const KvLayout& layout, std::span<const std::byte> payload, int64_t position);
  KvLayout SegmentLayout(int64_t tokens, DType dtype) const;

 private:
  int64_t layers_, kv_heads_, head_dim_, capacity_;
  std::vector<std::vector<float>> k_, v_;
  std::vector<bool> valid_;
};

}  // namespace kvcomm::runtime
