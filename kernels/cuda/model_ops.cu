#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

constexpr int kWarp = 32;

__device__ float WarpSum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduces one value per thread over the whole block (blockDim.x a multiple of 32, at most
// 1024); every thread gets the result.
template <typename Op>
__device__ float BlockReduce(float value, Op op, float identity) {
  __shared__ float partial[32];
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  __syncthreads();  // partial[] may still be read by a previous call
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = value;
  __syncthreads();
  value = threadIdx.x % kWarp < blockDim.x / kWarp ? partial[threadIdx.x % kWarp] : identity;
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

__global__ void EmbeddingKernel(const bf16* table, const int32_t* ids, int64_t dim, float* out) {
  const int64_t t = blockIdx.x;
  const bf16* row = table + int64_t{ids[t]} * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    out[t * dim + i] = __bfloat162float(row[i]);
}

// One block per row. A few rows (decode, a reusing turn's gaps) leave most of the GPU idle, so
// what counts is latency: each thread loads all its inputs and weights at once (float4 and 4
// bf16) and keeps them in registers for the scaling, one memory round trip instead of one per
// strided element. Needs dim % 4 == 0, dim <= 4 * kRmsNormVecs * blockDim.x and 16-byte aligned
// rows.
constexpr int kRmsNormVecs = 4;
__global__ void RmsNormKernel(const float* x, const bf16* weight, int64_t dim, float eps,
                              bf16* out) {
  const int64_t r = blockIdx.x;
  const float4* in = reinterpret_cast<const float4*>(x + r * dim);
  const uint2* w4 = reinterpret_cast<const uint2*>(weight);
  const int64_t vecs = dim / 4;
  float4 v[kRmsNormVecs];
  uint2 w[kRmsNormVecs];
#pragma unroll
  for (int k = 0; k < kRmsNormVecs; ++k) {
    const int64_t i = threadIdx.x + int64_t{k} * blockDim.x;
    if (i < vecs) {
      v[k] = in[i];
      w[k] = __ldg(w4 + i);
    }
  }
  float sum = 0;
#pragma unroll
  for (int k = 0; k < kRmsNormVecs; ++k)
    if (threadIdx.x + int64_t{k} * blockDim.x < vecs)
      sum += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
  sum = BlockReduce(sum, SumOp(), 0.f);
  const float inv = rsqrtf(sum / dim + eps);
  uint2* out4 = reinterpret_cast<uint2*>(out + r * dim);
#pragma unroll
  for (int k = 0; k < kRmsNormVecs; ++k) {
    const int64_t i = threadIdx.x + int64_t{k} * blockDim.x;
    if (i >= vecs) continue;
    const __nv_bfloat162* wb = reinterpret_cast<const __nv_bfloat162*>(&w[k]);
    const float2 w01 = __bfloat1622float2(wb[0]), w23 = __bfloat1622float2(wb[1]);
    __nv_bfloat162 o[2] = {__floats2bfloat162_rn(v[k].x * inv * w01.x, v[k].y * inv * w01.y),
                           __floats2bfloat162_rn(v[k].z * inv * w23.x, v[k].w * inv * w23.y)};
    out4[i] = *reinterpret_cast<const uint2*>(o);
  }
}

// Any dim: threads stride over the row.
__global__ void RmsNormStridedKernel(const float* x, const bf16* weight, int64_t dim, float eps,
                                     bf16* out) {
  const int64_t r = blockIdx.x;
  const float* in = x + r * dim;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += in[i] * in[i];
  sum = BlockReduce(sum, SumOp(), 0.f);
  const float inv = rsqrtf(sum / dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[r * dim + i] = __float2bfloat16_rn(in[i] * inv * __bfloat162float(weight[i]));
  }
}

// One block per (token, q or k head), a thread per rotated pair: a single token's rotation is
// spread over as many blocks as it has heads instead of looping in one.
__global__ void RopeKernel(bf16* qkv, int64_t row_stride, int64_t head_dim,
                           const int32_t* positions, const float* inv_freq) {
  const int64_t t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
  const int64_t half = head_dim / 2;
  float s, c;
  sincosf(static_cast<float>(positions[t]) * inv_freq[i], &s, &c);
  bf16* x = qkv + t * row_stride + h * head_dim;  // k heads follow q heads in the fused row
  const float a = __bfloat162float(x[i]), b = __bfloat162float(x[i + half]);
  x[i] = __float2bfloat16_rn(a * c - b * s);
  x[i + half] = __float2bfloat16_rn(b * c + a * s);
}

__global__ void WriteKvKernel(const bf16* qkv, int64_t row_stride, int64_t heads, int64_t kv_heads,
                              int64_t head_dim, bf16* k_cache, bf16* v_cache, int64_t capacity,
                              int64_t start) {
  const int64_t t = blockIdx.x;
  const bf16* k = qkv + t * row_stride + heads * head_dim;
  const bf16* v = k + kv_heads * head_dim;
  for (int64_t e = threadIdx.x; e < kv_heads * head_dim; e += blockDim.x) {
    const int64_t g = e / head_dim, d = e % head_dim;
    const int64_t to = (g * capacity + start + t) * head_dim + d;
    k_cache[to] = k[e];
    v_cache[to] = v[e];
  }
}

__global__ void SwiGluKernel(const bf16* gate_up, int64_t n, int64_t total, bf16* out) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / n, i = idx % n;
    const float g = __bfloat162float(gate_up[r * 2 * n + i]);
    const float u = __bfloat162float(gate_up[r * 2 * n + n + i]);
    out[idx] = __float2bfloat16_rn(g / (1.0f + __expf(-g)) * u);
  }
}

// One block per (token, head, key split). Its warps split the split's keys (warp w takes keys
// w, w + W, ...), each keeping an online softmax over its share; the warps' partial results are
// then merged, into the output when there is one split, else into a partial (max, denominator,
// unnormalised sum) that AttentionMergeKernel combines: long contexts then keep every SM busy
// instead of one block per head walking thousands of keys. Each lane holds head_dim / 32
// elements (head_dim <= 256).
constexpr int kStreamingWarps = 16;
constexpr int64_t kKeysPerSplit = 256;
constexpr int64_t kMaxSplits = 64;

template <int kPerLane>
__global__ void AttentionStreamingKernel(const bf16* qkv, int64_t row_stride, int64_t q_start,
                                         int64_t heads, int64_t kv_heads, int64_t head_dim,
                                         const bf16* k_cache, const bf16* v_cache, int64_t capacity,
                                         float scale, bf16* out, float* partials) {
  const int64_t t = blockIdx.x / heads, h = blockIdx.x % heads, g = h / (heads / kv_heads);
  const int64_t split = blockIdx.y, splits = gridDim.y;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  float q[kPerLane], acc[kPerLane];
  const bf16* query = qkv + t * row_stride + h * head_dim;
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + e * kWarp;
    q[e] = d < head_dim ? __bfloat162float(query[d]) * scale : 0.f;
    acc[e] = 0.f;
  }
  const bf16* keys = k_cache + g * capacity * head_dim;
  const bf16* values = v_cache + g * capacity * head_dim;
  float max_score = -INFINITY, denom = 0.f;
  const int64_t visible = q_start + t + 1;
  const int64_t chunk = (q_start + int64_t{gridDim.x / heads} + splits - 1) / splits;
  const int64_t first = split * chunk, last = min(visible, first + chunk);
  for (int64_t j = first + warp; j < last; j += kStreamingWarps) {
    float k_row[kPerLane], v_row[kPerLane];
    for (int e = 0; e < kPerLane; ++e) {  // issue both loads before any use
      const int64_t d = lane + e * kWarp;
      k_row[e] = d < head_dim ? __bfloat162float(keys[j * head_dim + d]) : 0.f;
      v_row[e] = d < head_dim ? __bfloat162float(values[j * head_dim + d]) : 0.f;
    }
    float dot = 0.f;
    for (int e = 0; e < kPerLane; ++e) dot += q[e] * k_row[e];
    dot = WarpSum(dot);
    const float new_max = fmaxf(max_score, dot);
    const float correction = __expf(max_score - new_max);
    const float p = __expf(dot - new_max);
    denom = denom * correction + p;
    for (int e = 0; e < kPerLane; ++e) acc[e] = acc[e] * correction + p * v_row[e];
    max_score = new_max;
  }
  __shared__ float warp_max[kStreamingWarps], warp_denom[kStreamingWarps];
  __shared__ float warp_acc[kStreamingWarps][kPerLane * kWarp];
  if (lane == 0) {
    warp_max[warp] = max_score;
    warp_denom[warp] = denom;
  }
  for (int e = 0; e < kPerLane; ++e) warp_acc[warp][lane + e * kWarp] = acc[e];
  __syncthreads();
  if (warp != 0) return;
  float global_max = -INFINITY;
  for (int w = 0; w < kStreamingWarps; ++w) global_max = fmaxf(global_max, warp_max[w]);
  float total = 0.f, merged[kPerLane] = {};
  for (int w = 0; w < kStreamingWarps; ++w) {
    if (warp_max[w] == -INFINITY) continue;  // a warp that saw no key
    const float weight = __expf(warp_max[w] - global_max);
    total += warp_denom[w] * weight;
    for (int e = 0; e < kPerLane; ++e) merged[e] += warp_acc[w][lane + e * kWarp] * weight;
  }
  if (splits == 1) {
    bf16* o = out + (t * heads + h) * head_dim;
    for (int e = 0; e < kPerLane; ++e) {
      const int64_t d = lane + e * kWarp;
      if (d < head_dim) o[d] = __float2bfloat16_rn(merged[e] / total);
    }
    return;
  }
  float* partial = partials + (blockIdx.x * splits + split) * (head_dim + 2);
  if (lane == 0) {
    partial[0] = global_max;  // -inf: this split saw no key of this token
    partial[1] = total;
  }
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + e * kWarp;
    if (d < head_dim) partial[2 + d] = merged[e];
  }
}

// One warp per (token, head): combines the splits' partial softmaxes.
template <int kPerLane>
__global__ void AttentionMergeKernel(const float* partials, int64_t splits, int64_t head_dim,
                                     bf16* out) {
  const int lane = threadIdx.x;
  const float* partial = partials + blockIdx.x * splits * (head_dim + 2);
  float global_max = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) global_max = fmaxf(global_max, partial[s * (head_dim + 2)]);
  float total = 0.f, merged[kPerLane] = {};
  for (int64_t s = 0; s < splits; ++s) {
    const float* p = partial + s * (head_dim + 2);
    if (p[0] == -INFINITY) continue;
    const float weight = __expf(p[0] - global_max);
    total += p[1] * weight;
    for (int e = 0; e < kPerLane; ++e) {
      const int64_t d = lane + e * kWarp;
      if (d < head_dim) merged[e] += p[2 + d] * weight;
    }
  }
  bf16* o = out + blockIdx.x * head_dim;
  for (int e = 0; e < kPerLane; ++e) {
    const int64_t d = lane + e * kWarp;
    if (d < head_dim) o[d] = __float2bfloat16_rn(merged[e] / total);
  }
}

__global__ void GatherQKernel(const bf16* qkv, int64_t row_stride, int64_t tokens, int64_t heads,
                              int64_t head_dim, bf16* q_heads) {
  const int64_t t = blockIdx.x;
  for (int64_t e = threadIdx.x; e < heads * head_dim; e += blockDim.x) {
    const int64_t h = e / head_dim, d = e % head_dim;
    q_heads[(h * tokens + t) * head_dim + d] = qkv[t * row_stride + e];
  }
}

__global__ void ScatterOKernel(const bf16* o_heads, int64_t tokens, int64_t heads, int64_t head_dim,
                               bf16* out) {
  const int64_t t = blockIdx.x;
  for (int64_t e = threadIdx.x; e < heads * head_dim; e += blockDim.x) {
    const int64_t h = e / head_dim, d = e % head_dim;
    out[t * heads * head_dim + e] = o_heads[(h * tokens + t) * head_dim + d];
  }
}

// One block per (head, token) row of scores.
__global__ void CausalSoftmaxKernel(const float* scores, int64_t tokens, int64_t ctx,
                                    int64_t q_start, float scale, bf16* probs) {
  const int64_t row = blockIdx.x;  // h * tokens + t
  const int64_t t = row % tokens;
  const int64_t visible = q_start + t + 1;
  const float* s = scores + row * ctx;
  bf16* p = probs + row * ctx;
  float max_score = -INFINITY;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x)
    max_score = fmaxf(max_score, s[j] * scale);
  max_score = BlockReduce(max_score, MaxOp(), -INFINITY);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x)
    sum += __expf(s[j] * scale - max_score);
  sum = BlockReduce(sum, SumOp(), 0.f);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < ctx; j += blockDim.x) {
    p[j] = __float2bfloat16_rn(j < visible ? __expf(s[j] * scale - max_score) * inv : 0.f);
  }
}

// One warp per output row, 16-byte loads of w and x, several in flight per lane.
template <bool kOutF32>
__global__ void GemvKernel(const bf16* w, const bf16* x, int64_t in, int64_t out, void* y,
                           float beta) {
  const int64_t row = blockIdx.x * int64_t{blockDim.x / kWarp} + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= out) return;
  const uint4* w_row = reinterpret_cast<const uint4*>(w + row * in);
  const uint4* x_vec = reinterpret_cast<const uint4*>(x);
  const int64_t chunks = in / 8;
  float acc = 0.f;
#pragma unroll 4
  for (int64_t i = lane; i < chunks; i += kWarp) {
    const uint4 a = __ldg(w_row + i), b = __ldg(x_vec + i);
    const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
    const __nv_bfloat162* b2 = reinterpret_cast<const __nv_bfloat162*>(&b);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 fa = __bfloat1622float2(a2[j]), fb = __bfloat1622float2(b2[j]);
      acc += fa.x * fb.x + fa.y * fb.y;
    }
  }
  acc = WarpSum(acc);
  if (lane == 0) {
    if constexpr (kOutF32) {
      float* out_row = static_cast<float*>(y) + row;
      *out_row = acc + (beta != 0.f ? beta * *out_row : 0.f);
    } else {
      static_cast<bf16*>(y)[row] = __float2bfloat16_rn(acc);
    }
  }
}

__global__ void AddBiasKernel(bf16* y, const bf16* bias, int64_t n, int64_t total) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    y[idx] = __float2bfloat16_rn(__bfloat162float(y[idx]) + __bfloat162float(bias[idx % n]));
  }
}

__device__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void FillRandomKernel(bf16* out, int64_t n, uint64_t seed, float std, float mean) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t r = SplitMix64(seed * 0x100000001b3ull + static_cast<uint64_t>(i));
    const float u1 = ((r >> 40) + 1) * (1.0f / 16777217.0f);
    const float u2 = ((r >> 16) & 0xffffff) * (1.0f / 16777216.0f);
    const float normal = sqrtf(-2.0f * __logf(u1)) * __cosf(6.2831853f * u2);
    out[i] = __float2bfloat16_rn(mean + std * normal);
  }
}

int GridFor(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 1 << 16));
}

}  // namespace

cudaError_t LaunchEmbedding(const bf16* table, const int32_t* ids, int64_t tokens, int64_t dim,
                            float* out, cudaStream_t stream) {
  EmbeddingKernel<<<tokens, 256, 0, stream>>>(table, ids, dim, out);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNorm(const float* x, const bf16* weight, int64_t rows, int64_t dim, float eps,
                          bf16* out, cudaStream_t stream) {
  constexpr int64_t kMaxThreads = 1024;
  const int64_t vecs = dim / 4;
  const bool aligned = (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out) |
                        reinterpret_cast<uintptr_t>(weight)) %
                           16 ==
                       0;
  if (aligned && dim % 4 == 0 && vecs <= kRmsNormVecs * kMaxThreads) {
    // As many threads as it takes to hold the row in kRmsNormVecs float4 each, whole warps.
    const int64_t per_thread = (vecs + kMaxThreads - 1) / kMaxThreads;
    const int64_t threads = ((vecs + per_thread - 1) / per_thread + kWarp - 1) / kWarp * kWarp;
    RmsNormKernel<<<rows, threads, 0, stream>>>(x, weight, dim, eps, out);
  } else {
    RmsNormStridedKernel<<<rows, 256, 0, stream>>>(x, weight, dim, eps, out);
  }
  return cudaGetLastError();
}

cudaError_t LaunchRope(bf16* qkv, int64_t tokens, int64_t row_stride, int64_t heads,
                       int64_t kv_heads, int64_t head_dim, const int32_t* positions,
                       const float* inv_freq, cudaStream_t stream) {
  if (head_dim % 2 != 0 || head_dim / 2 > 1024 || heads + kv_heads > 65535)
    return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(heads + kv_heads));
  RopeKernel<<<grid, head_dim / 2, 0, stream>>>(qkv, row_stride, head_dim, positions, inv_freq);
  return cudaGetLastError();
}

cudaError_t LaunchWriteKv(const bf16* qkv, int64_t tokens, int64_t row_stride, int64_t heads,
                          int64_t kv_heads, int64_t head_dim, bf16* k_cache, bf16* v_cache,
                          int64_t capacity, int64_t start, cudaStream_t stream) {
  WriteKvKernel<<<tokens, 256, 0, stream>>>(qkv, row_stride, heads, kv_heads, head_dim, k_cache,
                                            v_cache, capacity, start);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const bf16* gate_up, int64_t tokens, int64_t n, bf16* out,
                         cudaStream_t stream) {
  SwiGluKernel<<<GridFor(tokens * n, 256), 256, 0, stream>>>(gate_up, n, tokens * n, out);
  return cudaGetLastError();
}

int64_t AttentionStreamingPartialFloats(int64_t tokens, int64_t q_start, int64_t heads,
                                        int64_t head_dim) {
  const int64_t splits =
      std::min(kMaxSplits, (q_start + tokens + kKeysPerSplit - 1) / kKeysPerSplit);
  return splits > 1 ? tokens * heads * splits * (head_dim + 2) : 0;
}

cudaError_t LaunchAttentionStreaming(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                     int64_t q_start, int64_t heads, int64_t kv_heads,
                                     int64_t head_dim, const bf16* k_cache, const bf16* v_cache,
                                     int64_t capacity, float scale, bf16* out, float* partials,
                                     cudaStream_t stream) {
  const int64_t splits =
      partials == nullptr
          ? 1
          : std::max<int64_t>(
                1, std::min(kMaxSplits, (q_start + tokens + kKeysPerSplit - 1) / kKeysPerSplit));
  const dim3 grid(static_cast<unsigned>(tokens * heads), static_cast<unsigned>(splits));
  const int threads = kStreamingWarps * kWarp;
#define KVCOMM_ATTENTION_CASE(N)                                                            \
  do {                                                                                      \
    AttentionStreamingKernel<N>                                                             \
        <<<grid, threads, 0, stream>>>(qkv, row_stride, q_start, heads, kv_heads, head_dim, \
                                       k_cache, v_cache, capacity, scale, out, partials);   \
    if (splits > 1)                                                                         \
      AttentionMergeKernel<N>                                                               \
          <<<tokens * heads, kWarp, 0, stream>>>(partials, splits, head_dim, out);          \
  } while (false)
  if (head_dim <= 32)
    KVCOMM_ATTENTION_CASE(1);
  else if (head_dim <= 64)
    KVCOMM_ATTENTION_CASE(2);
  else if (head_dim <= 128)
    KVCOMM_ATTENTION_CASE(4);
  else if (head_dim <= 256)
    KVCOMM_ATTENTION_CASE(8);
  else
    return cudaErrorInvalidValue;
#undef KVCOMM_ATTENTION_CASE
  return cudaGetLastError();
}

cudaError_t LaunchGatherQ(const bf16* qkv, int64_t row_stride, int64_t tokens, int64_t heads,
                          int64_t head_dim, bf16* q_heads, cudaStream_t stream) {
  GatherQKernel<<<tokens, 256, 0, stream>>>(qkv, row_stride, tokens, heads, head_dim, q_heads);
  return cudaGetLastError();
}

cudaError_t LaunchCausalSoftmax(const float* scores, int64_t heads, int64_t tokens, int64_t ctx,
                                int64_t q_start, float scale, bf16* probs, cudaStream_t stream) {
  CausalSoftmaxKernel<<<heads * tokens, 256, 0, stream>>>(scores, tokens, ctx, q_start, scale,
                                                          probs);
  return cudaGetLastError();
}

cudaError_t LaunchScatterO(const bf16* o_heads, int64_t tokens, int64_t heads, int64_t head_dim,
                           bf16* out, cudaStream_t stream) {
  ScatterOKernel<<<tokens, 256, 0, stream>>>(o_heads, tokens, heads, head_dim, out);
  return cudaGetLastError();
}

cudaError_t LaunchGemv(const bf16* w, const bf16* x, int64_t in, int64_t out, void* y, bool y_fp32,
                       float beta, cudaStream_t stream) {
  if (in % 8 != 0) return cudaErrorInvalidValue;
  const int threads = 256, rows_per_block = threads / kWarp;
  const int blocks = static_cast<int>((out + rows_per_block - 1) / rows_per_block);
  if (y_fp32) {
    GemvKernel<true><<<blocks, threads, 0, stream>>>(w, x, in, out, y, beta);
  } else {
    GemvKernel<false><<<blocks, threads, 0, stream>>>(w, x, in, out, y, beta);
  }
  return cudaGetLastError();
}

cudaError_t LaunchAddBias(bf16* y, const bf16* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  AddBiasKernel<<<GridFor(rows * n, 256), 256, 0, stream>>>(y, bias, n, rows * n);
  return cudaGetLastError();
}

cudaError_t LaunchFillRandom(bf16* out, int64_t n, uint64_t seed, float std, float mean,
                             cudaStream_t stream) {
  FillRandomKernel<<<GridFor(n, 256), 256, 0, stream>>>(out, n, seed, std, mean);
  return cudaGetLastError();
}

}  // namespace kvcomm::kernels::cuda
