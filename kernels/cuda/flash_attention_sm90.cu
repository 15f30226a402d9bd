// Causal grouped-query attention for prefill on Hopper's warpgroup tensor cores (wgmma), in the
// FlashAttention-2 style. A CTA of kGroups warpgroups owns 64 * kGroups queries of one head; each
// warpgroup computes S = Q K^T for its 64 queries and a tile of kKeys keys with one chain of
// wgmma (both operands in shared memory), runs the online softmax in registers, and accumulates
// O += P V with P straight from registers. K and V tiles are double-buffered with cp.async into
// the 128-byte-swizzled layout wgmma reads without bank conflicts. Each warpgroup waits for its
// own matrix work; two CTAs per SM fill those gaps with each other's softmax. A few queries
// over a long cache (one query block) would leave one CTA per head: there the keys are split
// over several CTAs per head, each leaving unnormalised partials that a second kernel merges.
// When the queries of all heads of one kv group fit one warpgroup (decode and a few new tokens:
// group * tokens <= 64) a CTA packs them instead, rows (head of the group, token): the group's
// keys and values then cross HBM once rather than once per head.
//
// Needs sm_90a (wgmma is not part of the portable sm_90 target): this file is built for
// compute_90a, and FlashAttentionWgmmaAvailable() says whether the running GPU got that code.
// Elsewhere the mma.sync kernel of flash_attention.cu runs.
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/flash_softmax.cuh"
#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

constexpr int kHeadDim = 128;
// A row of 128 bf16 is stored as two 64-element halves of 128 bytes: the span of the 128-byte
// swizzle, in which the 16-byte chunk c of row r sits at chunk c ^ (r % 8).
constexpr uint32_t kHalfRowBytes = 128;
constexpr uint32_t kSwizzleAtomBytes = 8 * kHalfRowBytes;  // 8 rows: the swizzle's period
constexpr int kKeys = 64;  // per tile; 128-key tiles measured slower (bench/RESULTS.md)
// Two CTAs of two warpgroups per SM: measured best among 1-3 warpgroups, 64- or 128-key tiles
// and 1-2 CTAs per SM (bench/RESULTS.md).
constexpr int kLaunchedGroups = 2;

template <int kGroups>
struct Sm90Tiles {
  static constexpr int kQueries = 64 * kGroups;
  static constexpr int kThreads = 128 * kGroups;
  static constexpr uint32_t kQBytes = kQueries * 2 * kHalfRowBytes;
  static constexpr uint32_t kTileBytes = kKeys * 2 * kHalfRowBytes;  // K or V of one tile
  // Swizzled tiles must start on a 1024-byte boundary; dynamic shared memory is only 16-byte
  // aligned, hence the slack.
  static constexpr int kSharedBytes = kSwizzleAtomBytes + kQBytes + 2 * 2 * kTileBytes;
};

// Starts copying `rows` rows of head_dim bf16 (row r at `row_source(r)`) into the swizzled
// [half][row][64] layout at shared address `dst`; rows at or past `valid` are zero-filled.
template <typename RowSource>
__device__ __forceinline__ void CopySwizzledAsync(uint32_t dst, RowSource row_source, int rows,
                                                  int valid, int threads) {
  for (int c = threadIdx.x; c < rows * 16; c += threads) {
    const int r = c / 16, chunk = c % 16, half = chunk / 8;
    const bool inside = r < valid;
    const bf16* from = row_source(inside ? r : 0) + chunk * 8;
    const uint32_t to =
        dst + half * rows * kHalfRowBytes + r * kHalfRowBytes + (((chunk % 8) ^ (r % 8)) << 4);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(from),
                 "r"(inside ? 16 : 0));
  }
}
__device__ __forceinline__ void CopySwizzledAsync(uint32_t dst, const bf16* src, int64_t src_stride,
                                                  int rows, int valid, int threads) {
  CopySwizzledAsync(
      dst, [=](int r) { return src + r * src_stride; }, rows, valid, threads);
}

// wgmma shared-memory matrix descriptor, 128-byte swizzle: start address, leading and stride
// byte offsets (all in 16-byte units).
__device__ __forceinline__ uint64_t Descriptor(uint32_t address, uint32_t leading_bytes,
                                               uint32_t stride_bytes) {
  return (uint64_t{(address & 0x3FFFF) >> 4}) | (uint64_t{leading_bytes >> 4} << 16) |
         (uint64_t{stride_bytes >> 4} << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
// Commits the wgmma issued since the fence and waits for them. The compiler sees an
// accumulator as written when its wgmma is issued, not when it completes: naming the
// accumulators in the wait keeps any code that reads or moves them after it.
template <int kChunks>
__device__ __forceinline__ void WgmmaCommitAndWait(float (&accumulators)[kChunks][4]) {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  for (int j = 0; j < kChunks; ++j)
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(accumulators[j][e])::"memory");
}

// d (+)= A * B for m64n64k16, A and B in shared memory (K-major); `accumulate` 0 overwrites d.
__device__ __forceinline__ void WgmmaSS64(float (&d)[8][4], uint64_t a, uint64_t b,
                                          int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, "
      "%9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, "
      "%27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(a), "l"(b), "r"(accumulate));
}
// d += A * B for m64n128k16, A in registers, B in shared memory MN-major (transposed).
__device__ __forceinline__ void WgmmaRS128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, "
      "%9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, "
      "%27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, "
      "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, "
      "%63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
        "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]),
        "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
        "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]),
        "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]),
        "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

// Accumulator fragments of a warpgroup's m64nN result: warp w holds rows 16w .. 16w + 15, laid
// out per thread as flash_softmax.cuh describes. Unpacked, CTA (x, y) takes head x's query block
// y; packed (kPacked, kGroups == 1), CTA x takes kv group x and row r is token r % tokens of the
// group's head r / tokens.
template <int kGroups, int kBlocksPerSm, bool kPacked>
__global__ void __launch_bounds__(128 * kGroups, kBlocksPerSm)
    FlashAttentionWgmmaKernel(const bf16* qkv, int64_t row_stride, int tokens, int q_start,
                              int heads, int kv_heads, const bf16* k_cache, const bf16* v_cache,
                              int64_t capacity, float scale_log2, bf16* out, int key_split,
                              float* partials) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tiles = Sm90Tiles<kGroups>;
  extern __shared__ uint8_t raw_shared[];
  const uint32_t raw_address = static_cast<uint32_t>(__cvta_generic_to_shared(raw_shared));
  const uint32_t q_smem = (raw_address + kSwizzleAtomBytes - 1) & ~(kSwizzleAtomBytes - 1);
  const uint32_t kv_smem = q_smem + Tiles::kQBytes;  // [stage][K, V]
  uint8_t* const q_shared = raw_shared + (q_smem - raw_address);

  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int group = lane / 4, quad = lane % 4;
  static_assert(!kPacked || kGroups == 1, "a packed CTA is one warpgroup");
  const int heads_per_group = heads / kv_heads;
  const int g = kPacked ? blockIdx.x : blockIdx.x / heads_per_group;
  // Unpacked: this block's first query, longest blocks first.
  const int block_first = kPacked ? 0 : (gridDim.y - 1 - blockIdx.y) * Tiles::kQueries;
  const int block_rows =
      kPacked ? heads_per_group * tokens : min(tokens - block_first, Tiles::kQueries);
  auto row_token = [&](int r) { return kPacked ? r % tokens : block_first + r; };
  auto row_head = [&](int r) {
    return kPacked ? g * heads_per_group + r / tokens : static_cast<int>(blockIdx.x);
  };
  // Keys the block's last query sees.
  const int visible = q_start + (kPacked ? tokens : block_first + block_rows);
  const int wg_first = wg * 64;                        // CTA row of this warpgroup's first row
  const int wg_rows = min(block_rows - wg_first, 64);  // <= 0: nothing to do
  // Positions of this warpgroup's first and last queries.
  const int first_pos = kPacked ? q_start : q_start + block_first + wg_first;
  const int last_pos = kPacked ? q_start + tokens - 1 : first_pos + wg_rows - 1;
  const bf16* keys = k_cache + g * capacity * kHeadDim;
  const bf16* values = v_cache + g * capacity * kHeadDim;
  // With partials, CTA z takes keys [z * key_split, (z + 1) * key_split) and leaves its
  // unnormalised O and softmax statistics for MergeSplitsKernel.
  const int key_begin = partials == nullptr ? 0 : blockIdx.z * key_split;
  const int key_end = partials == nullptr ? visible : min(visible, key_begin + key_split);

  CopySwizzledAsync(
      q_smem,
      [&](int r) { return qkv + int64_t{row_token(r)} * row_stride + row_head(r) * kHeadDim; },
      Tiles::kQueries, block_rows, Tiles::kThreads);
  if (key_begin < key_end) {
    CopySwizzledAsync(kv_smem, keys + int64_t{key_begin} * kHeadDim, kHeadDim, kKeys,
                      visible - key_begin, Tiles::kThreads);
    CopySwizzledAsync(kv_smem + Tiles::kTileBytes, values + int64_t{key_begin} * kHeadDim, kHeadDim,
                      kKeys, visible - key_begin, Tiles::kThreads);
  }
  asm volatile("cp.async.commit_group;\n" ::);

  // This warpgroup's 64 rows of Q in each half; halves are kQueries rows apart.
  const uint32_t q_rows = q_smem + wg * 64 * kHalfRowBytes;
  constexpr uint32_t kQHalfBytes = Tiles::kQueries * kHalfRowBytes;
  constexpr uint32_t kTileHalfBytes = kKeys * kHalfRowBytes;
  float o[kHeadDim / 8][4] = {};
  float row_max[2] = {-kInf, -kInf}, row_sum[2] = {0.f, 0.f};

  int stage = 0;
  for (int tile = key_begin; tile < key_end; tile += kKeys, stage ^= 1) {
    const uint32_t k_tile = kv_smem + stage * 2 * Tiles::kTileBytes;
    const uint32_t v_tile = k_tile + Tiles::kTileBytes;
    const int next = tile + kKeys;
    if (next < key_end) {
      const uint32_t next_k = kv_smem + (stage ^ 1) * 2 * Tiles::kTileBytes;
      CopySwizzledAsync(next_k, keys + int64_t{next} * kHeadDim, kHeadDim, kKeys, visible - next,
                        Tiles::kThreads);
      CopySwizzledAsync(next_k + Tiles::kTileBytes, values + int64_t{next} * kHeadDim, kHeadDim,
                        kKeys, visible - next, Tiles::kThreads);
      asm volatile("cp.async.commit_group;\n" ::);
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    // cp.async wrote through the generic proxy; wgmma reads through the async proxy.
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    if (wg_rows > 0 && tile <= last_pos) {
      // S = Q K^T: 8 k-steps of 16 head dims; within a 128-byte half a step moves 32 bytes.
      float s[kKeys / 8][4] = {};
      WgmmaFence();
      for (int st = 0; st < kHeadDim / 16; ++st) {
        const uint32_t offset = (st % 4) * 32;
        WgmmaSS64(s, Descriptor(q_rows + (st / 4) * kQHalfBytes + offset, 16, kSwizzleAtomBytes),
                  Descriptor(k_tile + (st / 4) * kTileHalfBytes + offset, 16, kSwizzleAtomBytes),
                  st > 0);
      }
      WgmmaCommitAndWait(s);

      if (tile + kKeys - 1 > first_pos) {  // the tile crosses this warpgroup's diagonal
        for (int half = 0; half < 2; ++half) {
          const int row = wg_first + warp * 16 + half * 8 + group;
          MaskHalfRow(s, half, q_start + row_token(row) - tile, quad);
        }
      }
      uint32_t p[kKeys / 8][2];  // probabilities as bf16 pairs in A-fragment order
      for (int half = 0; half < 2; ++half)
        ScaleHalfRow(o, half, SoftmaxHalfRow(s, half, scale_log2, row_max[half], row_sum[half], p));

      // O += P V: k-steps of 16 keys (2048 bytes of V rows); B is V read MN-major, its two
      // 64-dim halves a tile-half apart.
      WgmmaFence();
      for (int st = 0; st < kKeys / 16; ++st) {
        const uint32_t a[4] = {p[2 * st][0], p[2 * st][1], p[2 * st + 1][0], p[2 * st + 1][1]};
        WgmmaRS128(o, a,
                   Descriptor(v_tile + st * 16 * kHalfRowBytes, kTileHalfBytes, kSwizzleAtomBytes));
      }
      WgmmaCommitAndWait(o);
    }
    __syncthreads();  // every warpgroup is done with this stage before it is refilled
  }

  if (partials != nullptr) {  // [split][token][head][head_dim] O, then [split][token][head] stats
    for (int half = 0; half < 2; ++half) {
      float sum = row_sum[half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int row = wg_first + warp * 16 + half * 8 + group;
      if (row >= block_rows) continue;
      const int64_t at = (int64_t{blockIdx.z} * tokens + row_token(row)) * heads + row_head(row);
      float* o_row = partials + at * kHeadDim;
      for (int j = 0; j < kHeadDim / 8; ++j) {
        *reinterpret_cast<float2*>(o_row + j * 8 + quad * 2) =
            make_float2(o[j][2 * half], o[j][2 * half + 1]);
      }
      if (quad == 0) {
        float* stats = partials + int64_t{gridDim.z} * tokens * heads * kHeadDim + at * 2;
        stats[0] = row_max[half];
        stats[1] = sum;
      }
    }
    return;
  }

  // Normalise and stage O in this warpgroup's rows of Q (same swizzled layout, so the 4-byte
  // writes of a warp hit distinct banks), then store whole 16-byte chunks of rows.
  if (wg_rows > 0) {
    for (int half = 0; half < 2; ++half) {
      float sum = row_sum[half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = 1.f / sum;
      const int r = warp * 16 + half * 8 + group;
      for (int j = 0; j < kHeadDim / 8; ++j) {
        const uint32_t at = (j / 8) * kQHalfBytes + wg * 64 * kHalfRowBytes + r * kHalfRowBytes +
                            (((j % 8) ^ (r % 8)) << 4) + quad * 4;
        *reinterpret_cast<uint32_t*>(q_shared + at) =
            PackBf16(o[j][2 * half] * inv, o[j][2 * half + 1] * inv);
      }
    }
  }
  __syncthreads();
  if (wg_rows > 0) {
    for (int c = threadIdx.x % 128; c < wg_rows * 16; c += 128) {
      const int r = c / 16, chunk = c % 16;
      const uint32_t at = (chunk / 8) * kQHalfBytes + wg * 64 * kHalfRowBytes + r * kHalfRowBytes +
                          (((chunk % 8) ^ (r % 8)) << 4);
      const int row = wg_first + r;
      *reinterpret_cast<uint4*>(out + (int64_t{row_token(row)} * heads + row_head(row)) * kHeadDim +
                                chunk * 8) = *reinterpret_cast<const uint4*>(q_shared + at);
    }
  }
#endif
}

__global__ void ProbeWgmmaKernel(int* built_for_sm90a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *built_for_sm90a = 1;
#else
  *built_for_sm90a = 0;
#endif
}

// One block per (token, head), a thread per dim: O = sum_z 2^(m_z - m) O_z / sum_z 2^(m_z - m) l_z
// over the key splits z (m in scaled log2 units; a split that saw no key has m_z = -inf). The
// splits' statistics are staged in shared memory first so that the loads of the partial outputs
// do not wait on one another.
constexpr int kMaxKeySplits = 64;
static_assert(kMaxKeySplits <= kHeadDim, "a thread stages each split's statistics");
__global__ void MergeSplitsKernel(const float* partials, int splits, int tokens, int heads,
                                  float scale_log2, bf16* out) {
  __shared__ float split_max[kMaxKeySplits], split_sum[kMaxKeySplits];
  const int64_t row_head = blockIdx.x, rows = int64_t{tokens} * heads;
  const float* stats = partials + splits * rows * kHeadDim;
  if (threadIdx.x < splits) {
    split_max[threadIdx.x] = stats[(threadIdx.x * rows + row_head) * 2];
    split_sum[threadIdx.x] = stats[(threadIdx.x * rows + row_head) * 2 + 1];
  }
  __syncthreads();
  float top = -kInf;
  for (int z = 0; z < splits; ++z) top = fmaxf(top, split_max[z]);
  float total = 0.f, value = 0.f;
#pragma unroll 8
  for (int z = 0; z < splits; ++z) {
    const float weight = split_max[z] == -kInf ? 0.f : Exp2((split_max[z] - top) * scale_log2);
    total += weight * split_sum[z];
    value += weight * partials[(z * rows + row_head) * kHeadDim + threadIdx.x];
  }
  out[row_head * kHeadDim + threadIdx.x] = __float2bfloat16_rn(value / total);
}

// Whether the queries of a kv group's heads fit one packed CTA.
bool PacksGroups(int64_t tokens, int64_t heads, int64_t kv_heads) {
  return heads / kv_heads * tokens <= 64;
}

// Key splits for few queries over a long cache: CTAs per head (packed: per kv group, so more
// splits of fewer keys) so that the GPU is covered; 0 when one query block already gives enough
// CTAs or the cache is short.
struct KeySplit {
  int splits = 0, keys = 0;
};
KeySplit ChooseKeySplit(int64_t tokens, int64_t q_start, int64_t heads, int64_t kv_heads) {
  const bool packed = PacksGroups(tokens, heads, kv_heads);
  const int64_t min_keys_per_split = packed ? 256 : 512, max_splits = packed ? kMaxKeySplits : 16;
  const int64_t visible = q_start + tokens;
  if (tokens > Sm90Tiles<kLaunchedGroups>::kQueries || visible < 2 * min_keys_per_split) return {};
  const int64_t splits =
      std::min(max_splits, (visible + min_keys_per_split - 1) / min_keys_per_split);
  const int64_t keys = ((visible + splits - 1) / splits + kKeys - 1) / kKeys * kKeys;
  return {static_cast<int>((visible + keys - 1) / keys), static_cast<int>(keys)};
}

template <int kGroups, int kBlocksPerSm, bool kPacked>
cudaError_t LaunchWgmmaVariant(const bf16* qkv, int64_t row_stride, int64_t tokens, int64_t q_start,
                               int64_t heads, int64_t kv_heads, const bf16* k_cache,
                               const bf16* v_cache, int64_t capacity, float scale, bf16* out,
                               float* workspace, cudaStream_t stream) {
  using Tiles = Sm90Tiles<kGroups>;
  auto* kernel = FlashAttentionWgmmaKernel<kGroups, kBlocksPerSm, kPacked>;
  static const cudaError_t configured = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tiles::kSharedBytes);
  if (configured != cudaSuccess) return configured;
  const int64_t query_blocks = kPacked ? 1 : (tokens + Tiles::kQueries - 1) / Tiles::kQueries;
  if (query_blocks > 65535) return cudaErrorInvalidValue;
  // x: heads (packed: kv groups), so CTAs that read the same keys (one kv group, one query block)
  // run together; y: query blocks, reversed inside the kernel so the longest ones start first.
  // z: key splits (workspace only).
  const KeySplit split =
      workspace != nullptr ? ChooseKeySplit(tokens, q_start, heads, kv_heads) : KeySplit{};
  const dim3 grid(static_cast<unsigned>(kPacked ? kv_heads : heads),
                  static_cast<unsigned>(query_blocks),
                  static_cast<unsigned>(std::max(split.splits, 1)));
  const float scale_log2 = scale * 1.4426950408889634f;
  float* partials = split.splits > 0 ? workspace : nullptr;
  kernel<<<grid, Tiles::kThreads, Tiles::kSharedBytes, stream>>>(
      qkv, row_stride, static_cast<int>(tokens), static_cast<int>(q_start), static_cast<int>(heads),
      static_cast<int>(kv_heads), k_cache, v_cache, capacity, scale_log2, out, split.keys,
      partials);
  if (partials != nullptr) {
    MergeSplitsKernel<<<static_cast<unsigned>(tokens * heads), kHeadDim, 0, stream>>>(
        partials, split.splits, static_cast<int>(tokens), static_cast<int>(heads), scale_log2, out);
  }
  return cudaGetLastError();
}

}  // namespace

bool FlashAttentionWgmmaAvailable() {
  static const bool available = [] {
    int* flag = nullptr;
    if (cudaMalloc(&flag, sizeof(int)) != cudaSuccess) return (cudaGetLastError(), false);
    int built = 0;
    cudaMemset(flag, 0, sizeof(int));
    ProbeWgmmaKernel<<<1, 1>>>(flag);
    const bool ok = cudaMemcpy(&built, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
    cudaFree(flag);
    cudaGetLastError();  // a GPU without this image reports no kernel image: not an error here
    return ok && built == 1;
  }();
  return available;
}

bool FlashAttentionPacksGroups(int64_t tokens, int64_t heads, int64_t kv_heads) {
  return FlashAttentionWgmmaAvailable() && kv_heads > 0 && heads % kv_heads == 0 &&
         PacksGroups(tokens, heads, kv_heads);
}

int64_t FlashAttentionSplitFloats(int64_t tokens, int64_t q_start, int64_t heads,
                                  int64_t kv_heads) {
  if (!FlashAttentionWgmmaAvailable() || kv_heads <= 0 || heads % kv_heads != 0) return 0;
  const KeySplit split = ChooseKeySplit(tokens, q_start, heads, kv_heads);
  return int64_t{split.splits} * tokens * heads * (kHeadDim + 2);
}

cudaError_t LaunchFlashAttentionWgmma(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                      int64_t q_start, int64_t heads, int64_t kv_heads,
                                      int64_t head_dim, const bf16* k_cache, const bf16* v_cache,
                                      int64_t capacity, float scale, bf16* out, float* workspace,
                                      cudaStream_t stream) {
  if (!FlashAttentionArgumentsValid(row_stride, tokens, q_start, heads, kv_heads, head_dim,
                                    capacity, scale) ||
      !FlashAttentionWgmmaAvailable()) {
    return cudaErrorInvalidValue;
  }
  if (PacksGroups(tokens, heads, kv_heads)) {
    return LaunchWgmmaVariant<1, 2, true>(qkv, row_stride, tokens, q_start, heads, kv_heads,
                                          k_cache, v_cache, capacity, scale, out, workspace,
                                          stream);
  }
  return LaunchWgmmaVariant<kLaunchedGroups, 2, false>(qkv, row_stride, tokens, q_start, heads,
                                                       kv_heads, k_cache, v_cache, capacity, scale,
                                                       out, workspace, stream);
}

}  // namespace kvcomm::kernels::cuda
