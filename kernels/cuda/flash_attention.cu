// Causal grouped-query attention for prefill on tensor cores, in the FlashAttention-2 style: a
// CTA of four warps owns 128 queries of one head, each warp 32 of them (two m16 tiles), and
// streams 64-key tiles of K and V through shared memory. Scores, the running softmax statistics
// and the output accumulator stay in registers. Matrix products are mma.sync m16n8k16 (bf16 in,
// fp32 accumulate).
//
// Why this shape: the kernel is latency-bound (occupancy is capped at two CTAs per SM by
// registers), so every fragment loaded from shared memory must feed as many MMAs as possible.
// Two m-tiles per warp let each K and V fragment serve two MMAs instead of one; Q then no longer
// fits in registers and is re-read from shared memory (one ldmatrix per m-tile and k-step).
// Causal masking costs integer work per score, so only the tiles that cross a warp's diagonal
// are masked. CTAs are launched heaviest first (last queries first) to shorten the tail.
//
// This is the portable kernel (any GPU with bf16 mma.sync); Hopper runs the wgmma kernel of
// flash_attention_sm90.cu instead (LaunchFlashAttention picks).
#include <cstdint>

#include "kernels/cuda/flash_softmax.cuh"
#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

constexpr int kHeadDim = 128;
constexpr int kWarps = 4;
constexpr int kTilesPerWarp = 2;  // m16 tiles of queries
constexpr int kQueriesPerWarp = 16 * kTilesPerWarp;
constexpr int kQueriesPerBlock = kWarps * kQueriesPerWarp;
constexpr int kKeysPerTile = 64;
constexpr int kKeyTiles = kKeysPerTile / 8;  // n8 tiles of S
constexpr int kDimTiles = kHeadDim / 8;      // n8 tiles of O
// Rows are padded by 8 bf16 (16 bytes) so the eight rows an ldmatrix reads hit distinct banks.
constexpr int kRowStride = kHeadDim + 8;

constexpr int kQElements = kQueriesPerBlock * kRowStride;
constexpr int kTileElements = kKeysPerTile * kRowStride;
// Q, then [stage][K, V] tiles; two stages double-buffer the key/value stream.
constexpr int kSharedBytes = (kQElements + 2 * 2 * kTileElements) * sizeof(bf16);

// Starts copying `rows` rows of head_dim bf16 (source rows `src_stride` apart) into shared
// memory; rows at or past `valid` are zero-filled without reading global memory.
__device__ __forceinline__ void CopyRowsAsync(bf16* dst, const bf16* src, int64_t src_stride,
                                              int rows, int valid) {
  constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks
  for (int c = threadIdx.x; c < rows * kChunksPerRow; c += blockDim.x) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const bool inside = r < valid;
    const bf16* from = src + (inside ? r * src_stride : 0) + col;
    const uint32_t to = static_cast<uint32_t>(__cvta_generic_to_shared(dst + r * kRowStride + col));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(from),
                 "r"(inside ? 16 : 0));
  }
}

__device__ __forceinline__ void CommitAsync() { asm volatile("cp.async.commit_group;\n" ::); }

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

// In mma fragments a thread holds two rows of each m-tile: row `group` (elements 0, 1) and row
// `group + 8` (elements 2, 3). "Half" r in {0, 1} below names one of them.
struct RowState {
  float max[kTilesPerWarp][2];  // raw scores (before scaling)
  float sum[kTilesPerWarp][2];  // this thread's partial sums, reduced over the quad at the end
};

// S = Q K^T for the warp's 32 queries and one 64-key tile.
__device__ __forceinline__ void TileScores(float (&s)[kTilesPerWarp][kKeyTiles][4],
                                           const bf16* q_rows, const bf16* k_tile, int lane) {
  for (int mt = 0; mt < kTilesPerWarp; ++mt)
    for (int n = 0; n < kKeyTiles; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
  // A: lane -> row lane % 16, columns + 8 for the upper half-warp. B (one ldmatrix.x4 for two
  // key n-tiles): matrix lane / 8 = (n-tile lane / 16, dims + 8 if (lane / 8) is odd).
  const bf16* a_row = q_rows + (lane % 16) * kRowStride + (lane / 16) * 8;
  const bf16* b_row = k_tile + ((lane / 16) * 8 + lane % 8) * kRowStride + ((lane / 8) % 2) * 8;
  for (int st = 0; st < kHeadDim / 16; ++st) {
    uint32_t a[kTilesPerWarp][4];
    for (int mt = 0; mt < kTilesPerWarp; ++mt)
      LoadMatrixX4(a[mt], a_row + mt * 16 * kRowStride + st * 16);
    for (int n = 0; n < kKeyTiles; n += 2) {
      uint32_t b[4];
      LoadMatrixX4(b, b_row + n * 8 * kRowStride + st * 16);
      for (int mt = 0; mt < kTilesPerWarp; ++mt) {
        Mma(s[mt][n], a[mt], b[0], b[1]);
        Mma(s[mt][n + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// Scores of keys after a query's position become -inf. `first_pos` is the position of the
// warp's first query, `tile` the tile's first key.
__device__ __forceinline__ void MaskTile(float (&s)[kTilesPerWarp][kKeyTiles][4], int tile,
                                         int first_pos, int group, int quad) {
  for (int mt = 0; mt < kTilesPerWarp; ++mt)
    for (int half = 0; half < 2; ++half)
      MaskHalfRow(s[mt], half, first_pos + mt * 16 + half * 8 + group - tile, quad);
}

// Online softmax over one tile: row maxima and sums move on, O is rescaled, and the scores turn
// into probabilities packed as bf16 pairs (p[mt][n][half], mma A-fragment registers). Packing
// here frees the fp32 scores early (register pressure).
__device__ __forceinline__ void SoftmaxTile(const float (&s)[kTilesPerWarp][kKeyTiles][4],
                                            uint32_t (&p)[kTilesPerWarp][kKeyTiles][2],
                                            float (&o)[kTilesPerWarp][kDimTiles][4], RowState& rows,
                                            float scale_log2) {
  for (int mt = 0; mt < kTilesPerWarp; ++mt) {
    for (int half = 0; half < 2; ++half) {
      ScaleHalfRow(
          o[mt], half,
          SoftmaxHalfRow(s[mt], half, scale_log2, rows.max[mt][half], rows.sum[mt][half], p[mt]));
    }
  }
}

// O += P V: the accumulator fragments of P are reused as A fragments, four k-steps of 16 keys.
__device__ __forceinline__ void AccumulateValues(const uint32_t (&p)[kTilesPerWarp][kKeyTiles][2],
                                                 float (&o)[kTilesPerWarp][kDimTiles][4],
                                                 const bf16* v_tile, int lane) {
  // One transposed ldmatrix.x4 brings the B fragments of two n-tiles of 8 head dims: matrix
  // lane / 8 = (keys + 8 if odd, dims + 8 if lane / 16).
  const bf16* b_row = v_tile + (((lane / 8) % 2) * 8 + lane % 8) * kRowStride + (lane / 16) * 8;
  for (int st = 0; st < kKeysPerTile / 16; ++st) {
    uint32_t a[kTilesPerWarp][4];
    for (int mt = 0; mt < kTilesPerWarp; ++mt) {
      a[mt][0] = p[mt][2 * st][0];
      a[mt][1] = p[mt][2 * st][1];
      a[mt][2] = p[mt][2 * st + 1][0];
      a[mt][3] = p[mt][2 * st + 1][1];
    }
    for (int n = 0; n < kDimTiles; n += 2) {
      uint32_t b[4];
      LoadMatrixX4Transposed(b, b_row + st * 16 * kRowStride + n * 8);
      for (int mt = 0; mt < kTilesPerWarp; ++mt) {
        Mma(o[mt][n], a[mt], b[0], b[1]);
        Mma(o[mt][n + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

__global__ void __launch_bounds__(kWarps * 32, 2)
    FlashAttentionKernel(const bf16* qkv, int64_t row_stride, int tokens, int q_start, int heads,
                         int kv_heads, const bf16* k_cache, const bf16* v_cache, int64_t capacity,
                         float scale_log2, bf16* out) {
  extern __shared__ __align__(16) bf16 shared[];
  bf16* const q_smem = shared;
  bf16* const kv_smem = shared + kQElements;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = lane / 4, quad = lane % 4;  // mma fragment coordinates
  const int h = blockIdx.x, g = h / (heads / kv_heads);
  const int block_first = (gridDim.y - 1 - blockIdx.y) * kQueriesPerBlock;
  const int block_rows = min(tokens - block_first, kQueriesPerBlock);
  const int visible = q_start + block_first + block_rows;  // keys the block's last query sees
  const int warp_first = block_first + warp * kQueriesPerWarp;
  const int warp_rows = min(tokens - warp_first, kQueriesPerWarp);  // <= 0: nothing to do
  const int first_pos = q_start + warp_first, last_pos = first_pos + warp_rows - 1;
  const bf16* keys = k_cache + g * capacity * kHeadDim;
  const bf16* values = v_cache + g * capacity * kHeadDim;
  const bf16* q_rows = q_smem + warp * kQueriesPerWarp * kRowStride;

  CopyRowsAsync(q_smem, qkv + block_first * row_stride + h * kHeadDim, row_stride, kQueriesPerBlock,
                block_rows);
  CopyRowsAsync(kv_smem, keys, kHeadDim, kKeysPerTile, visible);
  CopyRowsAsync(kv_smem + kTileElements, values, kHeadDim, kKeysPerTile, visible);
  CommitAsync();

  float o[kTilesPerWarp][kDimTiles][4] = {};
  RowState rows;
  for (int mt = 0; mt < kTilesPerWarp; ++mt)
    for (int half = 0; half < 2; ++half) rows.max[mt][half] = -kInf, rows.sum[mt][half] = 0.f;

  int stage = 0;
  for (int tile = 0; tile < visible; tile += kKeysPerTile, stage ^= 1) {
    const bf16* k_tile = kv_smem + stage * 2 * kTileElements;
    const bf16* v_tile = k_tile + kTileElements;
    const int next = tile + kKeysPerTile;
    if (next < visible) {
      bf16* next_k = kv_smem + (stage ^ 1) * 2 * kTileElements;
      CopyRowsAsync(next_k, keys + int64_t{next} * kHeadDim, kHeadDim, kKeysPerTile,
                    visible - next);
      CopyRowsAsync(next_k + kTileElements, values + int64_t{next} * kHeadDim, kHeadDim,
                    kKeysPerTile, visible - next);
      CommitAsync();
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();  // this stage's tile (and Q) is in shared memory for every warp
    if (warp_rows > 0 && tile <= last_pos) {
      float s[kTilesPerWarp][kKeyTiles][4];
      TileScores(s, q_rows, k_tile, lane);
      if (tile + kKeysPerTile - 1 > first_pos) MaskTile(s, tile, first_pos, group, quad);
      uint32_t p[kTilesPerWarp][kKeyTiles][2];
      SoftmaxTile(s, p, o, rows, scale_log2);
      AccumulateValues(p, o, v_tile, lane);
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }
  if (warp_rows <= 0) return;

  // Normalise and stage the warp's rows of O in its own (no longer needed) rows of Q, so the
  // global stores are whole 16-byte chunks of rows.
  bf16* o_rows = q_smem + warp * kQueriesPerWarp * kRowStride;
  for (int mt = 0; mt < kTilesPerWarp; ++mt) {
    for (int half = 0; half < 2; ++half) {
      float sum = rows.sum[mt][half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = 1.f / sum;
      bf16* row = o_rows + (mt * 16 + half * 8 + group) * kRowStride + quad * 2;
      for (int n = 0; n < kDimTiles; ++n) {
        *reinterpret_cast<uint32_t*>(row + n * 8) =
            PackBf16(o[mt][n][2 * half] * inv, o[mt][n][2 * half + 1] * inv);
      }
    }
  }
  __syncwarp();
  constexpr int kChunksPerRow = kHeadDim / 8;
  for (int c = lane; c < warp_rows * kChunksPerRow; c += 32) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    *reinterpret_cast<uint4*>(out + (int64_t{warp_first + r} * heads + h) * kHeadDim + col) =
        *reinterpret_cast<const uint4*>(o_rows + r * kRowStride + col);
  }
}

}  // namespace

bool FlashAttentionSupports(int64_t head_dim) { return head_dim == kHeadDim; }

bool FlashAttentionArgumentsValid(int64_t row_stride, int64_t tokens, int64_t q_start,
                                  int64_t heads, int64_t kv_heads, int64_t head_dim,
                                  int64_t capacity, float scale) {
  // 16-byte copies need 8-element aligned rows; positions and row counts fit in int.
  return head_dim == kHeadDim && row_stride % 8 == 0 && tokens > 0 && scale > 0.f && kv_heads > 0 &&
         heads % kv_heads == 0 && heads <= INT32_MAX && q_start >= 0 &&
         q_start + tokens <= capacity && capacity <= INT32_MAX;
}

cudaError_t LaunchFlashAttentionMmaSync(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                        int64_t q_start, int64_t heads, int64_t kv_heads,
                                        int64_t head_dim, const bf16* k_cache, const bf16* v_cache,
                                        int64_t capacity, float scale, bf16* out,
                                        float* /*workspace: never splits*/, cudaStream_t stream) {
  const int64_t query_blocks = (tokens + kQueriesPerBlock - 1) / kQueriesPerBlock;
  if (!FlashAttentionArgumentsValid(row_stride, tokens, q_start, heads, kv_heads, head_dim,
                                    capacity, scale) ||
      query_blocks > 65535) {
    return cudaErrorInvalidValue;
  }
  static const cudaError_t configured = cudaFuncSetAttribute(
      FlashAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  if (configured != cudaSuccess) return configured;
  // x: heads, so CTAs that read the same keys (one kv group, one query block) run together; y:
  // query blocks, reversed inside the kernel so the longest ones start first.
  const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(query_blocks));
  FlashAttentionKernel<<<grid, kWarps * 32, kSharedBytes, stream>>>(
      qkv, row_stride, static_cast<int>(tokens), static_cast<int>(q_start), static_cast<int>(heads),
      static_cast<int>(kv_heads), k_cache, v_cache, capacity, scale * 1.4426950408889634f, out);
  return cudaGetLastError();
}

cudaError_t LaunchFlashAttention(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                 int64_t q_start, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                 const bf16* k_cache, const bf16* v_cache, int64_t capacity,
                                 float scale, bf16* out, float* workspace, cudaStream_t stream) {
  auto* launch =
      FlashAttentionWgmmaAvailable() ? LaunchFlashAttentionWgmma : LaunchFlashAttentionMmaSync;
  return launch(qkv, row_stride, tokens, q_start, heads, kv_heads, head_dim, k_cache, v_cache,
                capacity, scale, out, workspace, stream);
}

}  // namespace kvcomm::kernels::cuda
