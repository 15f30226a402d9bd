// What the two prefill attention kernels (flash_attention.cu: mma.sync; flash_attention_sm90.cu:
// wgmma) share: the causal mask and the online softmax on accumulator fragments. In both an
// m16n8 (mma.sync) and an m64nN (wgmma) accumulator a thread holds, for each 8-column chunk j,
// x[j][0..1] of row `group` and x[j][2..3] of row `group + 8` (columns 8j + 2 quad + {0, 1});
// "half" 0 / 1 names those two rows. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace kvcomm::kernels::cuda {

inline constexpr float kInf = __builtin_huge_valf();

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

// 2^x; -inf gives 0.
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Scores of one half's row past its last visible key become -inf; `limit` is that key's index
// minus the tile's first key.
template <int kChunks>
__device__ __forceinline__ void MaskHalfRow(float (&s)[kChunks][4], int half, int limit, int quad) {
  for (int j = 0; j < kChunks; ++j) {
    for (int e = 0; e < 2; ++e) {
      if (j * 8 + quad * 2 + e > limit) s[j][2 * half + e] = -kInf;
    }
  }
}

// One half's row of a tile through the online softmax: the row maximum (raw scores, reduced over
// the quad) and this thread's partial sum move on, the probabilities (scaled by 2^(-max)) land in
// p[j][half] as bf16 pairs (mma A-fragment registers). Returns the factor by which the row's
// output so far must be scaled.
template <int kChunks>
__device__ __forceinline__ float SoftmaxHalfRow(const float (&s)[kChunks][4], int half,
                                                float scale_log2, float& row_max, float& row_sum,
                                                uint32_t (&p)[kChunks][2]) {
  float tile_max = row_max;
  for (int j = 0; j < kChunks; ++j)
    tile_max = fmaxf(tile_max, fmaxf(s[j][2 * half], s[j][2 * half + 1]));
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
  // A row with every key so far masked keeps -inf; subtracting 0 then keeps exp at 0.
  const float base = tile_max == -kInf ? 0.f : tile_max * scale_log2;
  const float correction = Exp2(row_max * scale_log2 - base);
  row_max = tile_max;
  float tile_sum = 0.f;
  for (int j = 0; j < kChunks; ++j) {
    const float p0 = Exp2(fmaf(s[j][2 * half], scale_log2, -base));
    const float p1 = Exp2(fmaf(s[j][2 * half + 1], scale_log2, -base));
    tile_sum += p0 + p1;
    p[j][half] = PackBf16(p0, p1);
  }
  row_sum = row_sum * correction + tile_sum;
  return correction;
}

template <int kChunks>
__device__ __forceinline__ void ScaleHalfRow(float (&o)[kChunks][4], int half, float factor) {
  for (int j = 0; j < kChunks; ++j) {
    o[j][2 * half] *= factor;
    o[j][2 * half + 1] *= factor;
  }
}

}  // namespace kvcomm::kernels::cuda
