// The KV layout every module agrees on (kvstore, daemon, runtime, wire, files):
//
//   [layer][K|V][kv_heads][tokens][head_dim], contiguous, row-major, in one dtype.
//
// Keys are stored after RoPE at the segment's recorded positions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/dtype.h"
#include "common/status.h"

namespace kvcomm {

struct KvLayout {
  uint32_t num_layers = 0;
  uint32_t kv_heads = 0;
  uint32_t tokens = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kF32;

  // Sanity limits for shapes that arrive from outside.
  static constexpr uint32_t kMaxLayers = 1024;
  static constexpr uint32_t kMaxKvHeads = 1024;
  static constexpr uint32_t kMaxHeadDim = 4096;
  static constexpr uint32_t kMaxTokens = 1u << 24;

  // Rejects zero or absurd dimensions and non-float dtypes, naming the offending field.
  Status Validate() const;

  uint64_t ElementsPerHalf() const {  // K (or V) of one layer
    return uint64_t{kv_heads} * tokens * head_dim;
  }
  uint64_t PayloadBytes() const {
    return uint64_t{num_layers} * 2 * ElementsPerHalf() * DTypeSize(dtype);
  }
  // Byte offset of element (layer, kv (0=K, 1=V), head, token, dim 0).
  uint64_t Offset(uint32_t layer, uint32_t kv, uint32_t head, uint32_t token) const {
    uint64_t index = ((uint64_t{layer} * 2 + kv) * kv_heads + head) * tokens + token;
    return index * head_dim * DTypeSize(dtype);
  }
  std::string ToString() const;
  bool operator==(const KvLayout&) const = default;
};

}  // namespace kvcomm
