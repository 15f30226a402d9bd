// CUDA version of kernels/realign.h (bf16 segments, fp32 math): one pass over base and deltas,
// each thread one (row, i < head_dim / 2) RoPE pair.
#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

__global__ void RealignKernel(int64_t layers, int64_t kv_heads, int64_t tokens, int64_t head_dim,
                              int64_t anchors, int64_t first_blended_layer, const bf16* base,
                              const int32_t* base_positions, const int32_t* target_positions,
                              const float* inv_freq, const bf16* deltas, const float* key_weights,
                              const float* value_weights, bf16* out) {
  const int64_t half = head_dim / 2, rows = layers * 2 * kv_heads * tokens,
                segment = rows * head_dim;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < rows * half;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / half, i = idx % half;
    const int64_t t = r % tokens, layer = r / (2 * kv_heads * tokens);
    const bool is_key = (r / (kv_heads * tokens)) % 2 == 0;
    const int64_t lo = r * head_dim + i, hi = lo + half;
    float a = __bfloat162float(base[lo]), b = __bfloat162float(base[hi]);
    if (is_key) {
      float s, c;
      sincosf(-static_cast<float>(base_positions[t]) * inv_freq[i], &s, &c);
      const float ua = a * c - b * s, ub = b * c + a * s;
      a = ua;
      b = ub;
    }
    if (layer >= first_blended_layer) {
      const float* weights = is_key ? key_weights : value_weights;
      for (int64_t k = 0; k < anchors; ++k) {
        const float w = weights[k * tokens + t];
        a += w * __bfloat162float(deltas[k * segment + lo]);
        b += w * __bfloat162float(deltas[k * segment + hi]);
      }
    }
    if (is_key) {
      float s, c;
      sincosf(static_cast<float>(target_positions[t]) * inv_freq[i], &s, &c);
      const float ra = a * c - b * s, rb = b * c + a * s;
      a = ra;
      b = rb;
    }
    out[lo] = __float2bfloat16_rn(a);
    out[hi] = __float2bfloat16_rn(b);
  }
}

}  // namespace

cudaError_t LaunchRealignKv(int64_t layers, int64_t kv_heads, int64_t tokens, int64_t head_dim,
                            int64_t anchors, int64_t first_blended_layer, const bf16* base,
                            const int32_t* base_positions, const int32_t* target_positions,
                            const float* inv_freq, const bf16* deltas, const float* key_weights,
                            const float* value_weights, bf16* out, cudaStream_t stream) {
  const int64_t pairs = layers * 2 * kv_heads * tokens * (head_dim / 2);
  const int threads = 256;
  const int blocks = static_cast<int>(
      (pairs + threads - 1) / threads < 65536 ? (pairs + threads - 1) / threads : 65536);
  RealignKernel<<<blocks, threads, 0, stream>>>(
      layers, kv_heads, tokens, head_dim, anchors, first_blended_layer, base, base_positions,
      target_positions, inv_freq, deltas, key_weights, value_weights, out);
  return cudaGetLastError();
}

}  // namespace kvcomm::kernels::cuda
