// CUDA version of kernels/realign.h (bf16 segments, fp32 math): one pass over base and deltas
// with 16-byte accesses. Needs head_dim % 16 == 0 and 16-byte aligned arrays.
#include <algorithm>

#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

constexpr int kPairsPerThread = 8;  // one 16-byte load from each half of the row
constexpr int kThreadsPerBlock = 256;

// Blocks for kernels whose threads take kPairsPerThread RoPE pairs each (grid-stride beyond
// the cap). Sized by threads, not pairs: blocks with no work still cost their launch.
int BlocksForPairs(int64_t pairs) {
  const int64_t threads = (pairs + kPairsPerThread - 1) / kPairsPerThread;
  return static_cast<int>(
      std::min<int64_t>((threads + kThreadsPerBlock - 1) / kThreadsPerBlock, 65536));
}

__device__ __forceinline__ void LoadBf16x8(const bf16* p, float (&v)[kPairsPerThread]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(pairs[j]);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}

__device__ __forceinline__ void StoreBf16x8(bf16* p, const float (&v)[kPairsPerThread]) {
  uint4 raw;
  __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
  for (int j = 0; j < 4; ++j) pairs[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// Each thread takes 8 RoPE pairs (i .. i + 7 with i + half .. i + half + 7) of one row.
__global__ void RealignKernel(int64_t layers, int64_t kv_heads, int64_t tokens, int64_t head_dim,
                              int64_t anchors, int64_t first_blended_layer,
                              bool per_channel_weights, const bf16* base,
                              const int32_t* base_positions, const int32_t* target_positions,
                              const float* inv_freq, AnchorRefs deltas, const float* key_weights,
                              const float* value_weights, bf16* out) {
  const int64_t half = head_dim / 2, groups = half / kPairsPerThread;
  const int64_t rows = layers * 2 * kv_heads * tokens;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < rows * groups;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / groups, i = (idx % groups) * kPairsPerThread;
    const int64_t t = r % tokens, layer = r / (2 * kv_heads * tokens);
    const bool is_key = (r / (kv_heads * tokens)) % 2 == 0;
    const int64_t lo = r * head_dim + i, hi = lo + half;
    float a[kPairsPerThread], b[kPairsPerThread];
    LoadBf16x8(base + lo, a);
    LoadBf16x8(base + hi, b);
    if (is_key) {
      for (int j = 0; j < kPairsPerThread; ++j) {
        float sn, c;
        sincosf(-static_cast<float>(base_positions[t]) * inv_freq[i + j], &sn, &c);
        const float ua = a[j] * c - b[j] * sn, ub = b[j] * c + a[j] * sn;
        a[j] = ua;
        b[j] = ub;
      }
    }
    if (layer >= first_blended_layer) {
      const float* weights = is_key ? key_weights : value_weights;
      const int64_t channels = layers * 2 * kv_heads * head_dim;
      for (int64_t k = 0; k < anchors; ++k) {
        float da[kPairsPerThread], db[kPairsPerThread];
        const bf16* delta = deltas.At(k, r / tokens, t, head_dim) + i;
        LoadBf16x8(delta, da);
        LoadBf16x8(delta + half, db);
        if (per_channel_weights) {  // channel row (layer, kv, head) = r / tokens
          const float* w = weights + k * channels + (r / tokens) * head_dim;
          for (int j = 0; j < kPairsPerThread; ++j) {
            a[j] += w[i + j] * da[j];
            b[j] += w[i + half + j] * db[j];
          }
        } else {
          const float w = weights[k * tokens + t];
          for (int j = 0; j < kPairsPerThread; ++j) {
            a[j] += w * da[j];
            b[j] += w * db[j];
          }
        }
      }
    }
    if (is_key) {
      for (int j = 0; j < kPairsPerThread; ++j) {
        float sn, c;
        sincosf(static_cast<float>(target_positions[t]) * inv_freq[i + j], &sn, &c);
        const float ra = a[j] * c - b[j] * sn, rb = b[j] * c + a[j] * sn;
        a[j] = ra;
        b[j] = rb;
      }
    }
    StoreBf16x8(out + lo, a);
    StoreBf16x8(out + hi, b);
  }
}

// kernels/realign.h's PositionFreeDifference; each thread takes 8 RoPE pairs of one row.
__global__ void PositionFreeDifferenceKernel(int64_t layers, int64_t kv_heads, int64_t tokens,
                                             int64_t head_dim, const bf16* a, int32_t a_first,
                                             const bf16* b, int32_t b_first, const float* inv_freq,
                                             bf16* out) {
  const int64_t half = head_dim / 2, groups = half / kPairsPerThread;
  const int64_t rows = layers * 2 * kv_heads * tokens;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < rows * groups;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / groups, i = (idx % groups) * kPairsPerThread;
    const int64_t t = r % tokens;
    const bool is_key = (r / (kv_heads * tokens)) % 2 == 0;
    const int64_t lo = r * head_dim + i, hi = lo + half;
    float xa[kPairsPerThread], xb[kPairsPerThread], ya[kPairsPerThread], yb[kPairsPerThread];
    LoadBf16x8(a + lo, xa);
    LoadBf16x8(a + hi, xb);
    LoadBf16x8(b + lo, ya);
    LoadBf16x8(b + hi, yb);
    float lo_out[kPairsPerThread], hi_out[kPairsPerThread];
    for (int j = 0; j < kPairsPerThread; ++j) {
      if (is_key) {
        float sx, cx, sy, cy;
        sincosf(-static_cast<float>(a_first + t) * inv_freq[i + j], &sx, &cx);
        sincosf(-static_cast<float>(b_first + t) * inv_freq[i + j], &sy, &cy);
        lo_out[j] = (xa[j] * cx - xb[j] * sx) - (ya[j] * cy - yb[j] * sy);
        hi_out[j] = (xb[j] * cx + xa[j] * sx) - (yb[j] * cy + ya[j] * sy);
      } else {
        lo_out[j] = xa[j] - ya[j];
        hi_out[j] = xb[j] - yb[j];
      }
    }
    StoreBf16x8(out + lo, lo_out);
    StoreBf16x8(out + hi, hi_out);
  }
}

// One block per (anchor, token); its threads stride over that token's rows in 16-byte chunks
// (8 dims), so each row's head_dim values are read together.
__global__ void AnchorDistancesKernel(int64_t layers, int64_t kv_heads, int64_t tokens,
                                      int64_t head_dim, const bf16* base, AnchorRefs anchors,
                                      float* out) {
  const int64_t a = blockIdx.y, t = blockIdx.x;
  const int64_t chunks = head_dim / 8, rows = layers * 2 * kv_heads;
  float sums[3] = {0.f, 0.f, 0.f};
  // Each thread takes 16-byte chunks (8 dims) of this token's rows.
  for (int64_t i = threadIdx.x; i < rows * chunks; i += blockDim.x) {
    const int64_t r = i / chunks, at = (r * tokens + t) * head_dim + (i % chunks) * 8;
    float x[kPairsPerThread], y[kPairsPerThread];
    LoadBf16x8(base + at, x);
    LoadBf16x8(anchors.At(a, r, t, head_dim) + (i % chunks) * 8, y);
    const bool is_key = (r / kv_heads) % 2 == 0;
    for (int j = 0; j < kPairsPerThread; ++j) {
      const float diff = x[j] - y[j];
      sums[is_key ? 0 : 1] += fabsf(diff);
      if (!is_key) sums[2] += diff * diff;
    }
  }
  __shared__ float partial[3][32];
  for (int k = 0; k < 3; ++k) {
    float v = sums[k];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) partial[k][threadIdx.x / 32] = v;
  }
  __syncthreads();
  if (threadIdx.x < 3) {
    float total = 0.f;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += partial[threadIdx.x][w];
    out[(a * tokens + t) * 3 + threadIdx.x] = total;
  }
}

// Block per (row, anchor): kTokenGroups groups of threads split the tokens, each thread 8 dims
// of a row (16-byte loads); the groups' sums meet in shared memory.
constexpr int kTokenGroups = 16;
__global__ void AnchorChannelDistancesKernel(int64_t rows, int64_t tokens, int64_t head_dim,
                                             const bf16* base, AnchorRefs anchors, float* out) {
  extern __shared__ float group_sums[];  // [kTokenGroups][head_dim]
  const int64_t r = blockIdx.x, a = blockIdx.y, chunks = head_dim / 8;
  const int64_t chunk = threadIdx.x % chunks, group = threadIdx.x / chunks;
  float sum[kPairsPerThread] = {};
  for (int64_t t = group; t < tokens; t += kTokenGroups) {
    const int64_t at = (r * tokens + t) * head_dim + chunk * 8;
    float x[kPairsPerThread], y[kPairsPerThread];
    LoadBf16x8(base + at, x);
    LoadBf16x8(anchors.At(a, r, t, head_dim) + chunk * 8, y);
    for (int j = 0; j < kPairsPerThread; ++j) sum[j] += (x[j] - y[j]) * (x[j] - y[j]);
  }
  for (int j = 0; j < kPairsPerThread; ++j) group_sums[group * head_dim + chunk * 8 + j] = sum[j];
  __syncthreads();
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float total = 0.f;
    for (int g = 0; g < kTokenGroups; ++g) total += group_sums[g * head_dim + d];
    out[a * rows * head_dim + r * head_dim + d] = total;
  }
}

__global__ void SoftmaxOverAnchorsKernel(const float* sums, int64_t anchors, int64_t n,
                                         int64_t stride, int64_t component, float scale, bool root,
                                         float temperature, float* out) {
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < n;
       j += int64_t{gridDim.x} * blockDim.x) {
    float lowest = INFINITY, total = 0.f;
    for (int64_t a = 0; a < anchors; ++a) {
      const float x = sums[(a * n + j) * stride + component];
      lowest = fminf(lowest, (root ? sqrtf(x) : x) * scale);
    }
    for (int64_t a = 0; a < anchors; ++a) {
      const float x = sums[(a * n + j) * stride + component];
      total += (out[a * n + j] = expf(-((root ? sqrtf(x) : x) * scale - lowest) / temperature));
    }
    for (int64_t a = 0; a < anchors; ++a) out[a * n + j] /= total;
  }
}

// Sum of squares of a segment's values (its V rows), accumulated into *out: one atomic per
// block (per warp, thousands of atomics on one address serialised into a visible cost).
__global__ void ValueSquaredNormKernel(int64_t layers, int64_t layer_values, const bf16* segment,
                                       float* out) {
  const int64_t chunks = layer_values / 8;
  float sum = 0.f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < layers * chunks;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t layer = i / chunks;
    float x[kPairsPerThread];
    LoadBf16x8(segment + (2 * layer + 1) * layer_values + (i % chunks) * 8, x);
    for (float v : x) sum += v * v;
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  __shared__ float warp_sums[32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += warp_sums[w];
    atomicAdd(out, total);
  }
}

}  // namespace

cudaError_t LaunchSoftmaxOverAnchors(const float* sums, int64_t anchors, int64_t n, int64_t stride,
                                     int64_t component, float scale, bool root, float temperature,
                                     float* out, cudaStream_t stream) {
  if (n == 0 || anchors == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 4096));
  SoftmaxOverAnchorsKernel<<<blocks, threads, 0, stream>>>(sums, anchors, n, stride, component,
                                                           scale, root, temperature, out);
  return cudaGetLastError();
}

AnchorRefs ContiguousAnchors(const bf16* first, int64_t anchors, int64_t rows, int64_t tokens,
                             int64_t head_dim) {
  AnchorRefs refs{};
  refs.count = static_cast<int>(anchors);
  for (int64_t a = 0; a < anchors && a < kMaxAnchorRefs; ++a) {
    refs.data[a] = first + a * rows * tokens * head_dim;
    refs.tokens[a] = tokens;
  }
  return refs;
}

cudaError_t LaunchAnchorChannelDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                         int64_t head_dim, const bf16* base,
                                         const AnchorRefs& anchors, float* out,
                                         cudaStream_t stream) {
  const int64_t rows = layers * 2 * kv_heads;
  if (rows == 0 || anchors.count == 0) return cudaSuccess;
  const int64_t threads = head_dim / 8 * kTokenGroups;
  if (head_dim % 8 != 0 || threads > 1024 || !anchors.Valid(tokens)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(anchors.count));
  AnchorChannelDistancesKernel<<<grid, static_cast<int>(threads),
                                 kTokenGroups * head_dim * sizeof(float), stream>>>(
      rows, tokens, head_dim, base, anchors, out);
  return cudaGetLastError();
}

cudaError_t LaunchAnchorChannelDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                         int64_t head_dim, int64_t anchors, const bf16* base,
                                         const bf16* anchor_bases, float* out,
                                         cudaStream_t stream) {
  if (anchors > kMaxAnchorRefs) return cudaErrorInvalidValue;
  return LaunchAnchorChannelDistances(
      layers, kv_heads, tokens, head_dim, base,
      ContiguousAnchors(anchor_bases, anchors, layers * 2 * kv_heads, tokens, head_dim), out,
      stream);
}

cudaError_t LaunchAnchorDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                  int64_t head_dim, const bf16* base, const AnchorRefs& anchors,
                                  float* out, cudaStream_t stream) {
  if (tokens == 0 || anchors.count == 0) return cudaSuccess;
  if (head_dim % 8 != 0 || !anchors.Valid(tokens)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(anchors.count));
  AnchorDistancesKernel<<<grid, 256, 0, stream>>>(layers, kv_heads, tokens, head_dim, base, anchors,
                                                  out);
  return cudaGetLastError();
}

cudaError_t LaunchAnchorDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                  int64_t head_dim, int64_t anchors, const bf16* base,
                                  const bf16* anchor_bases, float* out, cudaStream_t stream) {
  if (anchors > kMaxAnchorRefs) return cudaErrorInvalidValue;
  return LaunchAnchorDistances(
      layers, kv_heads, tokens, head_dim, base,
      ContiguousAnchors(anchor_bases, anchors, layers * 2 * kv_heads, tokens, head_dim), out,
      stream);
}

cudaError_t LaunchValueSquaredNorm(int64_t layers, int64_t kv_heads, int64_t tokens,
                                   int64_t head_dim, const bf16* segment, float* out,
                                   cudaStream_t stream) {
  if (head_dim % 8 != 0) return cudaErrorInvalidValue;
  const cudaError_t zeroed = cudaMemsetAsync(out, 0, sizeof(float), stream);
  if (zeroed != cudaSuccess) return zeroed;
  const int64_t chunks = layers * kv_heads * tokens * head_dim / 8;
  if (chunks == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((chunks + threads - 1) / threads, 1024));
  ValueSquaredNormKernel<<<blocks, threads, 0, stream>>>(layers, kv_heads * tokens * head_dim,
                                                         segment, out);
  return cudaGetLastError();
}

cudaError_t LaunchRealignKv(int64_t layers, int64_t kv_heads, int64_t tokens, int64_t head_dim,
                            int64_t first_blended_layer, bool per_channel_weights, const bf16* base,
                            const int32_t* base_positions, const int32_t* target_positions,
                            const float* inv_freq, const AnchorRefs& deltas,
                            const float* key_weights, const float* value_weights, bf16* out,
                            cudaStream_t stream) {
  if (head_dim % 16 != 0 || !deltas.Valid(tokens)) return cudaErrorInvalidValue;
  const int64_t pairs = layers * 2 * kv_heads * tokens * (head_dim / 2);
  if (pairs == 0) return cudaSuccess;
  RealignKernel<<<BlocksForPairs(pairs), kThreadsPerBlock, 0, stream>>>(
      layers, kv_heads, tokens, head_dim, deltas.count, first_blended_layer, per_channel_weights,
      base, base_positions, target_positions, inv_freq, deltas, key_weights, value_weights, out);
  return cudaGetLastError();
}

cudaError_t LaunchRealignKv(int64_t layers, int64_t kv_heads, int64_t tokens, int64_t head_dim,
                            int64_t anchors, int64_t first_blended_layer, bool per_channel_weights,
                            const bf16* base, const int32_t* base_positions,
                            const int32_t* target_positions, const float* inv_freq,
                            const bf16* deltas, const float* key_weights,
                            const float* value_weights, bf16* out, cudaStream_t stream) {
  if (anchors > kMaxAnchorRefs) return cudaErrorInvalidValue;
  return LaunchRealignKv(
      layers, kv_heads, tokens, head_dim, first_blended_layer, per_channel_weights, base,
      base_positions, target_positions, inv_freq,
      ContiguousAnchors(deltas, anchors, layers * 2 * kv_heads, tokens, head_dim), key_weights,
      value_weights, out, stream);
}

cudaError_t LaunchPositionFreeDifference(int64_t layers, int64_t kv_heads, int64_t tokens,
                                         int64_t head_dim, const bf16* a, int32_t a_first,
                                         const bf16* b, int32_t b_first, const float* inv_freq,
                                         bf16* out, cudaStream_t stream) {
  if (head_dim % 16 != 0) return cudaErrorInvalidValue;
  const int64_t pairs = layers * 2 * kv_heads * tokens * (head_dim / 2);
  if (pairs == 0) return cudaSuccess;
  PositionFreeDifferenceKernel<<<BlocksForPairs(pairs), kThreadsPerBlock, 0, stream>>>(
      layers, kv_heads, tokens, head_dim, a, a_first, b, b_first, inv_freq, out);
  return cudaGetLastError();
}

}  // namespace kvcomm::kernels::cuda
