// CUDA versions of the kernels/compress.h primitives on bf16 KV (fp32 math and scores). The
// observation-window attention runs as one batched GEMM per layer (queries x keys into an fp32
// workspace, tensor cores) followed by these kernels: per-query softmax statistics, then
// column sums of the normalised attention per kv head.
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTopKThreads = 1024;

int Blocks(int64_t n, int threads = kThreads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535 * 8));
}

// Row r of the logits belongs to window query i = r % window, which sees keys up to
// tokens - window + i. One pass over the row: each thread keeps an online (max, sum of
// exponentials), merged across the block.
constexpr int kStatsThreads = 1024;

__device__ __forceinline__ void MergeOnline(float& m, float& s, float m2, float s2) {
  const float top = fmaxf(m, m2);
  s = (m == -INFINITY ? 0.f : s * __expf(m - top)) +
      (m2 == -INFINITY ? 0.f : s2 * __expf(m2 - top));
  m = top;
}

__global__ void SoftmaxStatsKernel(const float* logits, int64_t rows, int64_t tokens,
                                   int64_t window, float scale, float2* stats) {
  const int64_t r = blockIdx.x;
  const float* row = logits + r * tokens;
  const int64_t visible = tokens - window + r % window + 1;
  float m = -INFINITY, s = 0;
  for (int64_t t = threadIdx.x; t < visible; t += blockDim.x) {
    const float x = row[t] * scale;
    if (x > m) {
      s = (m == -INFINITY ? 0.f : s * __expf(m - x)) + 1.f;
      m = x;
    } else {
      s += __expf(x - m);
    }
  }
  for (int o = 16; o > 0; o /= 2) {
    const float m2 = __shfl_xor_sync(0xffffffff, m, o), s2 = __shfl_xor_sync(0xffffffff, s, o);
    MergeOnline(m, s, m2, s2);
  }
  __shared__ float shared_m[kStatsThreads / 32], shared_s[kStatsThreads / 32];
  if (threadIdx.x % 32 == 0) {
    shared_m[threadIdx.x / 32] = m;
    shared_s[threadIdx.x / 32] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kStatsThreads / 32; ++w) MergeOnline(m, s, shared_m[w], shared_s[w]);
    stats[r] = make_float2(m, 1.f / s);  // the column sums multiply
  }
}

// scores[h][t] = sum over the head's rows of softmax(row)[t], causal. Four consecutive tokens a
// thread (one 16-byte load per row when aligned) so each row's statistics are read once per four.
constexpr int kColumnsPerThread = 4;

__global__ void ColumnSumsKernel(const float* logits, const float2* stats, int64_t kv_heads,
                                 int64_t rows_per_head, int64_t tokens, int64_t window, float scale,
                                 float* scores) {
  const int64_t quads = (tokens + kColumnsPerThread - 1) / kColumnsPerThread;
  const bool aligned = tokens % kColumnsPerThread == 0;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < kv_heads * quads;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t h = idx / quads, t0 = (idx % quads) * kColumnsPerThread;
    float acc[kColumnsPerThread] = {0, 0, 0, 0};
    for (int64_t j = 0; j < rows_per_head; ++j) {
      const int64_t r = h * rows_per_head + j;
      const int64_t last = tokens - window + r % window;  // the last key row r sees
      if (t0 > last) continue;
      const float2 s = stats[r];
      const float* row = logits + r * tokens;
      float x[kColumnsPerThread];
      if (aligned) {
        const float4 v = *reinterpret_cast<const float4*>(row + t0);
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
      } else {
        for (int c = 0; c < kColumnsPerThread; ++c) x[c] = t0 + c < tokens ? row[t0 + c] : 0.f;
      }
      for (int c = 0; c < kColumnsPerThread; ++c)
        if (t0 + c <= last) acc[c] += __expf(x[c] * scale - s.x) * s.y;
    }
    for (int c = 0; c < kColumnsPerThread; ++c)
      if (t0 + c < tokens) scores[h * tokens + t0 + c] = acc[c];
  }
}

__global__ void Pool1DKernel(const float* in, int64_t rows, int64_t n, int64_t kernel, bool max,
                             float* out) {
  const int64_t half = kernel / 2;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < rows * n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / n, t = idx % n;
    const int64_t lo = t - half < 0 ? 0 : t - half, hi = t + half >= n ? n - 1 : t + half;
    float acc = max ? -INFINITY : 0.f;
    for (int64_t j = lo; j <= hi; ++j) acc = max ? fmaxf(acc, in[r * n + j]) : acc + in[r * n + j];
    out[idx] = max ? acc : acc / static_cast<float>(hi - lo + 1);
  }
}

__global__ void ForceKeepKernel(float* scores, int64_t rows, int64_t n, int64_t sinks,
                                int64_t recent) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < rows * n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = idx % n;
    if (t < sinks || t >= n - recent) scores[idx] = INFINITY;
  }
}

// Larger float -> larger unsigned key.
__device__ __forceinline__ uint32_t OrderKey(float f) {
  const uint32_t bits = __float_as_uint(f);
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

// One block per row: radix select of the k-th largest key (8 bits a pass), then an ordered
// compaction: every thread owns a contiguous chunk, so positions come out ascending; ties at
// the threshold go to the earliest positions, as on the CPU.
__global__ void TopKKernel(const float* in, int64_t n, int64_t k, int32_t* indices) {
  const float* x = in + blockIdx.x * n;
  int32_t* out = indices + blockIdx.x * k;
  __shared__ uint32_t histogram[256];
  __shared__ uint32_t prefix, mask;
  __shared__ int64_t remaining;  // still to take among the keys matching `prefix`
  if (threadIdx.x == 0) {
    prefix = 0;
    mask = 0;
    remaining = k;
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) histogram[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const uint32_t key = OrderKey(x[i]);
      if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 255], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t above = 0;
      int bin = 255;
      for (; bin > 0 && above + histogram[bin] < remaining; --bin) above += histogram[bin];
      remaining -= above;
      prefix |= static_cast<uint32_t>(bin) << shift;
      mask |= 255u << shift;
    }
    __syncthreads();
  }
  const uint32_t threshold = prefix;
  const int64_t chunk = (n + blockDim.x - 1) / blockDim.x;
  const int64_t begin = threadIdx.x * chunk, end = begin + chunk < n ? begin + chunk : n;
  int greater = 0, equal = 0;
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t key = OrderKey(x[i]);
    greater += key > threshold;
    equal += key == threshold;
  }
  using Scan = cub::BlockScan<int, kTopKThreads>;
  __shared__ typename Scan::TempStorage scan;
  int equal_before = 0;
  Scan(scan).ExclusiveSum(equal, equal_before);
  __syncthreads();
  const int take =
      static_cast<int>(max(int64_t{0}, min(static_cast<int64_t>(equal), remaining - equal_before)));
  int at = 0;
  Scan(scan).ExclusiveSum(greater + take, at);
  int taken = 0;
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t key = OrderKey(x[i]);
    if (key > threshold || (key == threshold && taken++ < take))
      out[at++] = static_cast<int32_t>(i);
  }
}

// out[r][j] = in[r][indices[r][j]], 16 bytes (8 bf16) a thread.
__global__ void GatherRowsKernel(const bf16* in, int64_t rows, int64_t n, int64_t dim,
                                 const int32_t* indices, int64_t k, bf16* out) {
  const int64_t vectors = dim / 8;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < rows * k * vectors;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t v = idx % vectors, j = (idx / vectors) % k, r = idx / (vectors * k);
    const int64_t from = (r * n + indices[r * k + j]) * dim + v * 8;
    reinterpret_cast<uint4*>(out)[idx] = *reinterpret_cast<const uint4*>(in + from);
  }
}

// One thread per group; codes as the CPU packs them (little end first, round half away).
__global__ void QuantizeKernel(const bf16* in, int64_t groups, int64_t group_size, int bits,
                               uint8_t* packed, float* scale, float* zero) {
  const int levels = (1 << bits) - 1, per_byte = 8 / bits;
  const int64_t bytes = group_size * bits / 8;
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups;
       g += int64_t{gridDim.x} * blockDim.x) {
    const bf16* x = in + g * group_size;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < group_size; ++i) {
      const float v = __bfloat162float(x[i]);
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
    const float s = (hi - lo) / levels;
    scale[g] = s;
    zero[g] = lo;
    uint8_t* p = packed + g * bytes;
    for (int64_t b = 0; b < bytes; ++b) {
      uint32_t byte = 0;
      for (int j = 0; j < per_byte; ++j) {
        const float v = __bfloat162float(x[b * per_byte + j]);
        const int code = s > 0 ? min(max(static_cast<int>(roundf((v - lo) / s)), 0), levels) : 0;
        byte |= static_cast<uint32_t>(code) << (bits * j);
      }
      p[b] = static_cast<uint8_t>(byte);
    }
  }
}

__global__ void DequantizeKernel(const uint8_t* packed, const float* scale, const float* zero,
                                 int64_t groups, int64_t group_size, int bits, bf16* out) {
  const int per_byte = 8 / bits, mask = (1 << bits) - 1;
  const int64_t bytes = group_size * bits / 8;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < groups * group_size;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t g = idx / group_size, i = idx % group_size;
    const int code = (packed[g * bytes + i / per_byte] >> (bits * (i % per_byte))) & mask;
    out[idx] = __float2bfloat16(zero[g] + scale[g] * static_cast<float>(code));
  }
}

// One warp per row: norms and dot product by warp reduction, then the SLERP weights.
__global__ void SlerpMergeKernel(const bf16* a, const bf16* b, int64_t rows, int64_t dim, float t,
                                 bf16* direction, float* norm_a, float* norm_b, float* angle) {
  const int64_t warps = int64_t{gridDim.x} * blockDim.x / 32;
  const int lane = threadIdx.x % 32;
  for (int64_t r = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32; r < rows; r += warps) {
    const bf16* x = a + r * dim;
    const bf16* y = b + r * dim;
    float nx = 0, ny = 0, dot = 0;
    for (int64_t d = lane; d < dim; d += 32) {
      const float xv = __bfloat162float(x[d]), yv = __bfloat162float(y[d]);
      nx += xv * xv;
      ny += yv * yv;
      dot += xv * yv;
    }
    for (int o = 16; o > 0; o /= 2) {
      nx += __shfl_xor_sync(0xffffffff, nx, o);
      ny += __shfl_xor_sync(0xffffffff, ny, o);
      dot += __shfl_xor_sync(0xffffffff, dot, o);
    }
    nx = sqrtf(nx);
    ny = sqrtf(ny);
    float wa, wb, theta = 0;
    if (nx == 0 || ny == 0) {
      wa = nx == 0 ? 0.f : 1.f / nx;
      wb = nx == 0 && ny > 0 ? 1.f / ny : 0.f;
    } else {
      theta = acosf(fminf(fmaxf(dot / (nx * ny), -1.f), 1.f));
      const float s = sinf(theta);
      wa = (s < 1e-6f ? 1 - t : sinf((1 - t) * theta) / s) / nx;
      wb = (s < 1e-6f ? t : sinf(t * theta) / s) / ny;
    }
    float norm = 0;
    for (int64_t d = lane; d < dim; d += 32) {
      const float m = wa * __bfloat162float(x[d]) + wb * __bfloat162float(y[d]);
      norm += m * m;
    }
    for (int o = 16; o > 0; o /= 2) norm += __shfl_xor_sync(0xffffffff, norm, o);
    norm = sqrtf(norm);
    for (int64_t d = lane; d < dim; d += 32) {
      const float m = wa * __bfloat162float(x[d]) + wb * __bfloat162float(y[d]);
      direction[r * dim + d] = __float2bfloat16(norm > 0 ? m / norm : 0.f);
    }
    if (lane == 0) {
      norm_a[r] = nx;
      norm_b[r] = ny;
      angle[r] = theta;
    }
  }
}

// One thread per output element; rank is small (GEAR: 4), so the factors stay in cache.
__global__ void LowRankReconstructKernel(const float* a, const float* b, int64_t rows, int64_t cols,
                                         int64_t rank, float* out) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < rows * cols;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / cols, c = idx % cols;
    float sum = 0;
    for (int64_t j = 0; j < rank; ++j) sum += a[r * rank + j] * b[c * rank + j];
    out[idx] += sum;
  }
}

// One warp per (row, j): the dot product of a bf16 row with a basis column.
__global__ void LowRankProjectKernel(const bf16* x, const float* b, int64_t rows, int64_t cols,
                                     int64_t rank, float* y) {
  const int64_t warps = int64_t{gridDim.x} * blockDim.x / 32;
  const int lane = threadIdx.x % 32;
  for (int64_t w = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32; w < rows * rank;
       w += warps) {
    const int64_t r = w / rank, j = w % rank;
    float sum = 0;
    for (int64_t c = lane; c < cols; c += 32)
      sum += __bfloat162float(x[r * cols + c]) * b[c * rank + j];
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
    if (lane == 0) y[w] = sum;
  }
}

}  // namespace

cudaError_t LaunchLowRankReconstruct(const float* a, const float* b, int64_t rows, int64_t cols,
                                     int64_t rank, float* out, cudaStream_t stream) {
  LowRankReconstructKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(a, b, rows, cols, rank,
                                                                         out);
  return cudaGetLastError();
}

cudaError_t LaunchLowRankProject(const bf16* x, const float* b, int64_t rows, int64_t cols,
                                 int64_t rank, float* y, cudaStream_t stream) {
  LowRankProjectKernel<<<Blocks(rows * rank * 32), kThreads, 0, stream>>>(x, b, rows, cols, rank,
                                                                          y);
  return cudaGetLastError();
}

cudaError_t LaunchSlerpMerge(const bf16* a, const bf16* b, int64_t rows, int64_t dim, float t,
                             bf16* direction, float* norm_a, float* norm_b, float* angle,
                             cudaStream_t stream) {
  SlerpMergeKernel<<<Blocks(rows * 32), kThreads, 0, stream>>>(a, b, rows, dim, t, direction,
                                                               norm_a, norm_b, angle);
  return cudaGetLastError();
}

cudaError_t LaunchWindowSoftmaxStats(const float* logits, int64_t rows, int64_t tokens,
                                     int64_t window, float scale, float2* stats,
                                     cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  SoftmaxStatsKernel<<<static_cast<unsigned>(rows), kStatsThreads, 0, stream>>>(
      logits, rows, tokens, window, scale, stats);
  return cudaGetLastError();
}

cudaError_t LaunchWindowColumnSums(const float* logits, const float2* stats, int64_t kv_heads,
                                   int64_t rows_per_head, int64_t tokens, int64_t window,
                                   float scale, float* scores, cudaStream_t stream) {
  ColumnSumsKernel<<<Blocks(kv_heads * (tokens + kColumnsPerThread - 1) / kColumnsPerThread),
                     kThreads, 0, stream>>>(logits, stats, kv_heads, rows_per_head, tokens, window,
                                            scale, scores);
  return cudaGetLastError();
}

cudaError_t LaunchPool1D(const float* in, int64_t rows, int64_t n, int64_t kernel, bool max,
                         float* out, cudaStream_t stream) {
  Pool1DKernel<<<Blocks(rows * n), kThreads, 0, stream>>>(in, rows, n, kernel, max, out);
  return cudaGetLastError();
}

cudaError_t LaunchForceKeep(float* scores, int64_t rows, int64_t n, int64_t sinks, int64_t recent,
                            cudaStream_t stream) {
  ForceKeepKernel<<<Blocks(rows * n), kThreads, 0, stream>>>(scores, rows, n, sinks, recent);
  return cudaGetLastError();
}

cudaError_t LaunchTopKPerRow(const float* in, int64_t rows, int64_t n, int64_t k, int32_t* indices,
                             cudaStream_t stream) {
  if (rows == 0 || k == 0) return cudaSuccess;
  TopKKernel<<<static_cast<unsigned>(rows), kTopKThreads, 0, stream>>>(in, n, k, indices);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const bf16* in, int64_t rows, int64_t n, int64_t dim,
                             const int32_t* indices, int64_t k, bf16* out, cudaStream_t stream) {
  if (dim % 8 != 0) return cudaErrorInvalidValue;
  GatherRowsKernel<<<Blocks(rows * k * dim / 8), kThreads, 0, stream>>>(in, rows, n, dim, indices,
                                                                        k, out);
  return cudaGetLastError();
}

cudaError_t LaunchQuantizeGroups(const bf16* in, int64_t groups, int64_t group_size, int bits,
                                 uint8_t* packed, float* scale, float* zero, cudaStream_t stream) {
  if ((bits != 2 && bits != 4 && bits != 8) || group_size * bits % 8 != 0)
    return cudaErrorInvalidValue;
  QuantizeKernel<<<Blocks(groups), kThreads, 0, stream>>>(in, groups, group_size, bits, packed,
                                                          scale, zero);
  return cudaGetLastError();
}

cudaError_t LaunchDequantizeGroups(const uint8_t* packed, const float* scale, const float* zero,
                                   int64_t groups, int64_t group_size, int bits, bf16* out,
                                   cudaStream_t stream) {
  if ((bits != 2 && bits != 4 && bits != 8) || group_size * bits % 8 != 0)
    return cudaErrorInvalidValue;
  DequantizeKernel<<<Blocks(groups * group_size), kThreads, 0, stream>>>(
      packed, scale, zero, groups, group_size, bits, out);
  return cudaGetLastError();
}

}  // namespace kvcomm::kernels::cuda
