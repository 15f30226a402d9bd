// Moves bf16 KV segments between their store layout [layer][K|V][kv_heads][tokens][head_dim]
// and a device KV cache [layer][kv_heads][capacity][head_dim] (K and V apart), 16 bytes a
// thread, in one launch: a segment of a long prompt otherwise takes a copy per layer and K|V,
// whose per-call cost exceeded the bytes' (64 copies per import at the Llama-3-8B shape).
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

template <bool kIntoCache>
__global__ void KvCopyKernel(bf16* segment, int64_t layers, int64_t kv_heads, int64_t tokens,
                             int64_t head_dim, bf16* k_cache, bf16* v_cache, int64_t capacity,
                             int64_t position) {
  const int64_t chunks = head_dim / 8, rows = layers * 2 * kv_heads * tokens;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * chunks;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / chunks, chunk = i % chunks;
    const int64_t t = row % tokens, head = (row / tokens) % kv_heads;
    const int64_t kv = (row / (tokens * kv_heads)) % 2, layer = row / (tokens * kv_heads * 2);
    bf16* cache_row = (kv == 0 ? k_cache : v_cache) +
                      ((layer * kv_heads + head) * capacity + position + t) * head_dim;
    uint4* in_cache = reinterpret_cast<uint4*>(cache_row) + chunk;
    uint4* in_segment = reinterpret_cast<uint4*>(segment + row * head_dim) + chunk;
    if constexpr (kIntoCache) {
      *in_cache = *in_segment;
    } else {
      *in_segment = *in_cache;
    }
  }
}

template <bool kIntoCache>
cudaError_t LaunchKvCopy(bf16* segment, int64_t layers, int64_t kv_heads, int64_t tokens,
                         int64_t head_dim, bf16* k_cache, bf16* v_cache, int64_t capacity,
                         int64_t position, cudaStream_t stream) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (head_dim % 8 != 0 || position < 0 || tokens < 0 || position + tokens > capacity ||
      !aligned(segment) || !aligned(k_cache) || !aligned(v_cache)) {
    return cudaErrorInvalidValue;
  }
  const int64_t work = layers * 2 * kv_heads * tokens * (head_dim / 8);
  if (work == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((work + threads - 1) / threads, 1 << 16));
  KvCopyKernel<kIntoCache><<<blocks, threads, 0, stream>>>(
      segment, layers, kv_heads, tokens, head_dim, k_cache, v_cache, capacity, position);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSegmentToCache(const bf16* segment, int64_t layers, int64_t kv_heads,
                                 int64_t tokens, int64_t head_dim, bf16* k_cache, bf16* v_cache,
                                 int64_t capacity, int64_t position, cudaStream_t stream) {
  return LaunchKvCopy<true>(const_cast<bf16*>(segment), layers, kv_heads, tokens, head_dim, k_cache,
                            v_cache, capacity, position, stream);
}

cudaError_t LaunchCacheToSegment(const bf16* k_cache, const bf16* v_cache, int64_t capacity,
                                 int64_t position, int64_t layers, int64_t kv_heads, int64_t tokens,
                                 int64_t head_dim, bf16* segment, cudaStream_t stream) {
  return LaunchKvCopy<false>(segment, layers, kv_heads, tokens, head_dim,
                             const_cast<bf16*>(k_cache), const_cast<bf16*>(v_cache), capacity,
                             position, stream);
}

}  // namespace kvcomm::kernels::cuda
