// Causal grouped-query attention for prefill on tensor cores, in the FlashAttention-2 style:
// each warp owns 16 queries of one head, keeps Q, the running softmax statistics and the output
// accumulator in registers, and streams 64-key tiles of K and V through shared memory. Scores
// never leave the chip. Matrix products are mma.sync m16n8k16 (bf16 in, fp32 accumulate). Tiles
// are double-buffered with cp.async: the next tile streams in while this one is multiplied,
// which hides the load latency that the register-limited occupancy (2 CTAs per SM) cannot.
#include <cstdint>

#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

constexpr int kHeadDim = 128;
constexpr int kWarps = 4;
constexpr int kQueriesPerWarp = 16;
constexpr int kQueriesPerBlock = kWarps * kQueriesPerWarp;
constexpr int kKeysPerTile = 64;
// K and V rows are padded by 8 bf16 (16 bytes) so the fragment loads of a warp hit distinct banks.
constexpr int kRowStride = kHeadDim + 8;

constexpr int kTileElements = kKeysPerTile * kRowStride;
constexpr int kSharedBytes = 2 /*stages*/ * 2 /*K, V*/ * kTileElements * sizeof(bf16);

// Starts copying keys/values [tile, tile + 64) into one stage; rows at or past `visible` are zero.
__device__ __forceinline__ void LoadTileAsync(bf16* k_stage, bf16* v_stage, const bf16* keys,
                                              const bf16* values, int64_t tile, int64_t visible) {
  for (int c = threadIdx.x; c < kKeysPerTile * kHeadDim / 8; c += blockDim.x) {
    const int r = c / (kHeadDim / 8), col = (c % (kHeadDim / 8)) * 8;
    const bool inside = tile + r < visible;
    const int64_t row = inside ? tile + r : 0;
    const int bytes = inside ? 16 : 0;  // 0: the copy writes zeros
    const uint32_t k_dst =
        static_cast<uint32_t>(__cvta_generic_to_shared(k_stage + r * kRowStride + col));
    const uint32_t v_dst =
        static_cast<uint32_t>(__cvta_generic_to_shared(v_stage + r * kRowStride + col));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(k_dst),
                 "l"(keys + row * kHeadDim + col), "r"(bytes));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(v_dst),
                 "l"(values + row * kHeadDim + col), "r"(bytes));
  }
  asm volatile("cp.async.commit_group;\n" ::);
}

__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 bf16 matrices from shared memory; lane i addresses row i % 8 of matrix i / 8. Plain
// ldmatrix hands out mma A/"col" B fragments of row-major rows; .trans of column-major ones.
__device__ __forceinline__ void LoadMatrixX4(uint32_t (&r)[4], const bf16* row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void LoadMatrixX4Transposed(uint32_t (&r)[4], const bf16* row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

__global__ void __launch_bounds__(kWarps * 32)
    FlashAttentionKernel(const bf16* qkv, int64_t row_stride, int64_t tokens, int64_t q_start,
                         int64_t heads, int64_t kv_heads, const bf16* k_cache, const bf16* v_cache,
                         int64_t capacity, float scale_log2, bf16* out) {
  extern __shared__ __align__(16) bf16 shared[];  // [stage][K, V][key][kRowStride]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = lane / 4, quad = lane % 4;  // mma fragment coordinates
  const int64_t h = blockIdx.y, g = h / (heads / kv_heads);
  const int64_t block_first = int64_t{blockIdx.x} * kQueriesPerBlock;
  const int64_t warp_first = block_first + warp * kQueriesPerWarp;
  // Rows this thread owns: r0 = warp_first + group, r1 = r0 + 8.
  const int64_t row0 = warp_first + group, row1 = row0 + 8;
  const int64_t pos0 = q_start + row0, pos1 = q_start + row1;

  // Q fragments for the 8 k-steps over head_dim.
  uint32_t q[kHeadDim / 16][4];
  {
    const bf16* q0 = qkv + row0 * row_stride + h * kHeadDim;
    const bf16* q1 = qkv + row1 * row_stride + h * kHeadDim;
    for (int s = 0; s < kHeadDim / 16; ++s) {
      const int c = s * 16 + quad * 2;
      q[s][0] = row0 < tokens ? *reinterpret_cast<const uint32_t*>(q0 + c) : 0u;
      q[s][1] = row1 < tokens ? *reinterpret_cast<const uint32_t*>(q1 + c) : 0u;
      q[s][2] = row0 < tokens ? *reinterpret_cast<const uint32_t*>(q0 + c + 8) : 0u;
      q[s][3] = row1 < tokens ? *reinterpret_cast<const uint32_t*>(q1 + c + 8) : 0u;
    }
  }
  float o[kHeadDim / 8][4] = {};
  float max0 = -INFINITY, max1 = -INFINITY, sum0 = 0.f, sum1 = 0.f;

  const int64_t block_rows =
      tokens - block_first < kQueriesPerBlock ? tokens - block_first : kQueriesPerBlock;
  const int64_t visible = q_start + block_first + block_rows;  // keys the block's last query sees
  const bf16* keys = k_cache + g * capacity * kHeadDim;
  const bf16* values = v_cache + g * capacity * kHeadDim;

  LoadTileAsync(shared, shared + kTileElements, keys, values, 0, visible);
  int stage = 0;
  for (int64_t tile = 0; tile < visible; tile += kKeysPerTile, stage ^= 1) {
    const bf16* k_tile = shared + stage * 2 * kTileElements;
    const bf16* v_tile = k_tile + kTileElements;
    if (tile + kKeysPerTile < visible) {
      bf16* next = shared + (stage ^ 1) * 2 * kTileElements;
      LoadTileAsync(next, next + kTileElements, keys, values, tile + kKeysPerTile, visible);
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();  // this stage's tile is in shared memory for every warp
    const bool all_masked =
        warp_first >= tokens || tile > q_start + warp_first + kQueriesPerWarp - 1;
    if (!all_masked) {
      // S = Q K^T: 8 n-tiles of 8 keys; one ldmatrix.x4 brings the B fragments of two k-steps.
      const int matrix = lane / 8, matrix_row = lane % 8;
      float s[kKeysPerTile / 8][4];
      for (int n = 0; n < kKeysPerTile / 8; ++n) {
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
        for (int st = 0; st < kHeadDim / 16; st += 2) {
          uint32_t b[4];  // (k-step st: b0, b1), (k-step st + 1: b0, b1)
          LoadMatrixX4(b, k_tile + (n * 8 + matrix_row) * kRowStride + st * 16 + matrix * 8);
          Mma(s[n], q[st], b[0], b[1]);
          Mma(s[n], q[st + 1], b[2], b[3]);
        }
      }
      // Mask, scale (to log2 units) and take row maxima over this tile.
      float tile_max0 = -INFINITY, tile_max1 = -INFINITY;
      for (int n = 0; n < kKeysPerTile / 8; ++n) {
        for (int e = 0; e < 2; ++e) {
          const int64_t key = tile + n * 8 + quad * 2 + e;
          s[n][e] = key <= pos0 ? s[n][e] * scale_log2 : -INFINITY;
          s[n][2 + e] = key <= pos1 ? s[n][2 + e] * scale_log2 : -INFINITY;
          tile_max0 = fmaxf(tile_max0, s[n][e]);
          tile_max1 = fmaxf(tile_max1, s[n][2 + e]);
        }
      }
      for (int offset = 1; offset < 4; offset *= 2) {
        tile_max0 = fmaxf(tile_max0, __shfl_xor_sync(0xffffffffu, tile_max0, offset));
        tile_max1 = fmaxf(tile_max1, __shfl_xor_sync(0xffffffffu, tile_max1, offset));
      }
      const float new_max0 = fmaxf(max0, tile_max0), new_max1 = fmaxf(max1, tile_max1);
      const float base0 = new_max0 == -INFINITY ? 0.f : new_max0,
                  base1 = new_max1 == -INFINITY ? 0.f : new_max1;
      const float correction0 = exp2f(max0 - base0), correction1 = exp2f(max1 - base1);
      max0 = new_max0;
      max1 = new_max1;
      float tile_sum0 = 0.f, tile_sum1 = 0.f;
      for (int n = 0; n < kKeysPerTile / 8; ++n) {
        s[n][0] = exp2f(s[n][0] - base0);
        s[n][1] = exp2f(s[n][1] - base0);
        s[n][2] = exp2f(s[n][2] - base1);
        s[n][3] = exp2f(s[n][3] - base1);
        tile_sum0 += s[n][0] + s[n][1];
        tile_sum1 += s[n][2] + s[n][3];
      }
      sum0 = sum0 * correction0 + tile_sum0;  // per-thread partial sums; reduced at the end
      sum1 = sum1 * correction1 + tile_sum1;
      for (int n = 0; n < kHeadDim / 8; ++n) {
        o[n][0] *= correction0;
        o[n][1] *= correction0;
        o[n][2] *= correction1;
        o[n][3] *= correction1;
      }
      // O += P V: P's accumulator fragments are reused as A fragments, 4 k-steps of 16 keys.
      for (int st = 0; st < kKeysPerTile / 16; ++st) {
        const uint32_t a[4] = {PackBf16(s[2 * st][0], s[2 * st][1]),
                               PackBf16(s[2 * st][2], s[2 * st][3]),
                               PackBf16(s[2 * st + 1][0], s[2 * st + 1][1]),
                               PackBf16(s[2 * st + 1][2], s[2 * st + 1][3])};
        // One transposed ldmatrix.x4 brings the B fragments of two n-tiles of 8 head dims.
        for (int n = 0; n < kHeadDim / 8; n += 2) {
          uint32_t b[4];  // (n: b0, b1), (n + 1: b0, b1)
          LoadMatrixX4Transposed(b, v_tile +
                                        (st * 16 + (matrix % 2) * 8 + matrix_row) * kRowStride +
                                        (n + matrix / 2) * 8);
          Mma(o[n], a, b[0], b[1]);
          Mma(o[n + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }

  for (int offset = 1; offset < 4; offset *= 2) {
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, offset);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, offset);
  }
  const float inv0 = 1.f / sum0, inv1 = 1.f / sum1;
  for (int n = 0; n < kHeadDim / 8; ++n) {
    const int col = n * 8 + quad * 2;
    if (row0 < tokens) {
      *reinterpret_cast<uint32_t*>(out + (row0 * heads + h) * kHeadDim + col) =
          PackBf16(o[n][0] * inv0, o[n][1] * inv0);
    }
    if (row1 < tokens) {
      *reinterpret_cast<uint32_t*>(out + (row1 * heads + h) * kHeadDim + col) =
          PackBf16(o[n][2] * inv1, o[n][3] * inv1);
    }
  }
}

}  // namespace

bool FlashAttentionSupports(int64_t head_dim) { return head_dim == kHeadDim; }

cudaError_t LaunchFlashAttention(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                 int64_t q_start, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                 const bf16* k_cache, const bf16* v_cache, int64_t capacity,
                                 float scale, bf16* out, cudaStream_t stream) {
  if (head_dim != kHeadDim || row_stride % 2 != 0) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((tokens + kQueriesPerBlock - 1) / kQueriesPerBlock),
                  static_cast<unsigned>(heads));
  static const cudaError_t configured = cudaFuncSetAttribute(
      FlashAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  if (configured != cudaSuccess) return configured;
  FlashAttentionKernel<<<grid, kWarps * 32, kSharedBytes, stream>>>(
      qkv, row_stride, tokens, q_start, heads, kv_heads, k_cache, v_cache, capacity,
      scale * 1.4426950408889634f, out);
  return cudaGetLastError();
}

}  // namespace kvcomm::kernels::cuda
