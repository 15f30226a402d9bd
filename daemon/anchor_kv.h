// fp32 KV arithmetic for the anchor service: segments are decoded to fp32 host arrays in the
// segment layout ([layer][K|V][kv_heads][tokens][head_dim]), combined, and encoded back.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/blob.h"
#include "common/kv_layout.h"
#include "common/status.h"

namespace kvcomm::daemon {

// A segment's KV as fp32 (layout.dtype is F32).
struct KvF32 {
  KvLayout layout;
  std::vector<float> data;
};

Result<KvF32> DecodeKv(const KvLayout& layout, std::span<const std::byte> payload);
// Encodes to `dtype` (a fresh blob).
Result<Blob> EncodeKv(const KvF32& kv, DType dtype);
// The first `tokens` tokens of every (layer, K|V, head) row.
KvF32 FirstTokens(const KvF32& kv, uint32_t tokens);
// `layout` with `tokens` tokens of `dtype`.
inline KvLayout WithTokens(KvLayout layout, size_t tokens, DType dtype) {
  layout.tokens = static_cast<uint32_t>(tokens);
  layout.dtype = dtype;
  return layout;
}

}  // namespace kvcomm::daemon
