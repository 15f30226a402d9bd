// Raw kernel launchers, compiled by nvcc. This header is the boundary between .cu files and the
// rest of kernels/: it includes nothing of ours (nvcc cannot compile fmt's consteval checks), so
// dtypes travel as their wire values and errors as cudaError_t. The .cc wrappers beside each
// launcher check shapes and turn errors into Status.
//
// Model ops use bf16 (__nv_bfloat16) activations and weights with fp32 math, and an fp32
// residual stream; layouts match kernels/model_ops.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvcomm::kernels::cuda {

using bf16 = __nv_bfloat16;

// dtype codes are kvcomm::DType values (0 F32, 1 F16, 2 BF16).
cudaError_t LaunchConvertDType(const void* src, uint8_t src_dtype, void* dst, uint8_t dst_dtype,
                               int64_t n, cudaStream_t stream);

// out[t] (fp32) = table[ids[t]] (bf16) for rows of `dim`.
cudaError_t LaunchEmbedding(const bf16* table, const int32_t* ids, int64_t tokens, int64_t dim,
                            float* out, cudaStream_t stream);
// out (bf16) = rmsnorm(x (fp32)) * weight (bf16), per row.
cudaError_t LaunchRmsNorm(const float* x, const bf16* weight, int64_t rows, int64_t dim, float eps,
                          bf16* out, cudaStream_t stream);
// Rotates q [tokens][heads][hd] and k [tokens][kv_heads][hd] (bf16, rows of `row_stride`
// elements, so they can be the q and k parts of a fused qkv row) in place, HF rotate-half.
cudaError_t LaunchRope(bf16* qkv, int64_t tokens, int64_t row_stride, int64_t heads,
                       int64_t kv_heads, int64_t head_dim, const int32_t* positions,
                       const float* inv_freq, cudaStream_t stream);
// Copies k and v of each token (bf16, inside fused qkv rows) into the cache
// [kv_heads][capacity][hd] at positions start .. start + tokens - 1.
cudaError_t LaunchWriteKv(const bf16* qkv, int64_t tokens, int64_t row_stride, int64_t heads,
                          int64_t kv_heads, int64_t head_dim, bf16* k_cache, bf16* v_cache,
                          int64_t capacity, int64_t start, cudaStream_t stream);
// out [tokens][n] = silu(gate_up[:, :n]) * gate_up[:, n:] for rows of 2n (bf16).
cudaError_t LaunchSwiGlu(const bf16* gate_up, int64_t tokens, int64_t n, bf16* out,
                         cudaStream_t stream);
// Attention with blocks per (token, head, split of the keys) whose warps share the split's
// keys, online softmax: the decode path and small batches. q from fused qkv rows; out
// [tokens][heads][hd] bf16. Long contexts are split over several blocks when `partials` (fp32
// device memory of AttentionStreamingPartialFloats floats) is given; null runs one split.
int64_t AttentionStreamingPartialFloats(int64_t tokens, int64_t q_start, int64_t heads,
                                        int64_t head_dim);
cudaError_t LaunchAttentionStreaming(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                     int64_t q_start, int64_t heads, int64_t kv_heads,
                                     int64_t head_dim, const bf16* k_cache, const bf16* v_cache,
                                     int64_t capacity, float scale, bf16* out, float* partials,
                                     cudaStream_t stream);
// A bf16 KV segment [layer][K|V][kv_heads][tokens][head_dim] in device memory into a cache
// [layer][kv_heads][capacity][head_dim] (K and V apart, device memory) at positions
// [position, position + tokens), and back. head_dim a multiple of 8, 16-byte aligned pointers.
cudaError_t LaunchSegmentToCache(const bf16* segment, int64_t layers, int64_t kv_heads,
                                 int64_t tokens, int64_t head_dim, bf16* k_cache, bf16* v_cache,
                                 int64_t capacity, int64_t position, cudaStream_t stream);
cudaError_t LaunchCacheToSegment(const bf16* k_cache, const bf16* v_cache, int64_t capacity,
                                 int64_t position, int64_t layers, int64_t kv_heads, int64_t tokens,
                                 int64_t head_dim, bf16* segment, cudaStream_t stream);

// Prefill attention on tensor cores (FlashAttention-2 style: online softmax, scores kept on
// chip). Same arguments and result as LaunchAttentionStreaming; head_dim 128 only (see
// FlashAttentionSupports). LaunchFlashAttention runs the wgmma kernel where the GPU has it
// (Hopper, code built for sm_90a: FlashAttentionWgmmaAvailable) and the mma.sync kernel
// elsewhere; both are exposed so tests can hold each to the CPU reference. Arguments outside
// FlashAttentionArgumentsValid give cudaErrorInvalidValue.
bool FlashAttentionSupports(int64_t head_dim);
bool FlashAttentionArgumentsValid(int64_t row_stride, int64_t tokens, int64_t q_start,
                                  int64_t heads, int64_t kv_heads, int64_t head_dim,
                                  int64_t capacity, float scale);
bool FlashAttentionWgmmaAvailable();
cudaError_t LaunchFlashAttention(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                 int64_t q_start, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                 const bf16* k_cache, const bf16* v_cache, int64_t capacity,
                                 float scale, bf16* out, float* workspace, cudaStream_t stream);
cudaError_t LaunchFlashAttentionMmaSync(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                        int64_t q_start, int64_t heads, int64_t kv_heads,
                                        int64_t head_dim, const bf16* k_cache, const bf16* v_cache,
                                        int64_t capacity, float scale, bf16* out, float* workspace,
                                        cudaStream_t stream);
// The wgmma kernel can also split the keys of few queries over a long cache across several
// CTAs per head and merge their partial results: it does when `workspace` (device memory of
// FlashAttentionSplitFloats floats; 0 floats: no split for this shape or no wgmma kernel) is
// given. LaunchFlashAttention passes it on; the mma.sync kernel never splits (ignores it).
// When the queries of a kv group's heads fit one warpgroup (FlashAttentionPacksGroups: decode,
// a few new tokens) the wgmma kernel reads each group's keys once for all its heads.
int64_t FlashAttentionSplitFloats(int64_t tokens, int64_t q_start, int64_t heads, int64_t kv_heads);
bool FlashAttentionPacksGroups(int64_t tokens, int64_t heads, int64_t kv_heads);
cudaError_t LaunchFlashAttentionWgmma(const bf16* qkv, int64_t row_stride, int64_t tokens,
                                      int64_t q_start, int64_t heads, int64_t kv_heads,
                                      int64_t head_dim, const bf16* k_cache, const bf16* v_cache,
                                      int64_t capacity, float scale, bf16* out, float* workspace,
                                      cudaStream_t stream);
// Prefill helpers around batched GEMMs (any head_dim): gather q into [heads][tokens][hd]; causal
// softmax of fp32 scores [heads][tokens][ctx] (row t sees keys < q_start + t + 1) into bf16 probs;
// scatter o [heads][tokens][hd] back to [tokens][heads][hd].
cudaError_t LaunchGatherQ(const bf16* qkv, int64_t row_stride, int64_t tokens, int64_t heads,
                          int64_t head_dim, bf16* q_heads, cudaStream_t stream);
cudaError_t LaunchCausalSoftmax(const float* scores, int64_t heads, int64_t tokens, int64_t ctx,
                                int64_t q_start, float scale, bf16* probs, cudaStream_t stream);
cudaError_t LaunchScatterO(const bf16* o_heads, int64_t tokens, int64_t heads, int64_t head_dim,
                           bf16* out, cudaStream_t stream);
// Single-row linear layer for decode: y[out] = w[out][in] . x[in] (bf16 in, fp32 math), written
// as bf16, or as fp32 y = result + beta * y. Needs in % 8 == 0 and 16-byte aligned w and x.
cudaError_t LaunchGemv(const bf16* w, const bf16* x, int64_t in, int64_t out, void* y, bool y_fp32,
                       float beta, cudaStream_t stream);
// Anchor segments (bases or deltas) wherever they lie, passed by value to the kernels (no staging
// copies): anchor a's row r (layer, K|V, head), token t starts at data[a] + (r * tokens[a] + t) *
// head_dim. Each must be at least as long as the segment worked on (only its first tokens count).
constexpr int kMaxAnchorRefs = 32;
struct AnchorRefs {
  const bf16* data[kMaxAnchorRefs];
  int64_t tokens[kMaxAnchorRefs];
  int count;
  __host__ __device__ const bf16* At(int64_t a, int64_t row, int64_t t, int64_t head_dim) const {
    return data[a] + (row * tokens[a] + t) * head_dim;
  }
  bool Valid(int64_t segment_tokens) const {
    if (count < 0 || count > kMaxAnchorRefs) return false;
    for (int a = 0; a < count; ++a)
      if (tokens[a] < segment_tokens || reinterpret_cast<uintptr_t>(data[a]) % 16 != 0)
        return false;
    return true;
  }
};
// `anchors` contiguous segments of `tokens` tokens from `first` ([anchor][segment]).
AnchorRefs ContiguousAnchors(const bf16* first, int64_t anchors, int64_t rows, int64_t tokens,
                             int64_t head_dim);
cudaError_t LaunchRealignKv(int64_t layers, int64_t kv_heads, int64_t tokens, int64_t head_dim,
                            int64_t first_blended_layer, bool per_channel_weights, const bf16* base,
                            const int32_t* base_positions, const int32_t* target_positions,
                            const float* inv_freq, const AnchorRefs& deltas,
                            const float* key_weights, const float* value_weights, bf16* out,
                            cudaStream_t stream);
// kernels/realign.h's PositionFreeDifference on bf16 segments (fp32 math).
cudaError_t LaunchPositionFreeDifference(int64_t layers, int64_t kv_heads, int64_t tokens,
                                         int64_t head_dim, const bf16* a, int32_t a_first,
                                         const bf16* b, int32_t b_first, const float* inv_freq,
                                         bf16* out, cudaStream_t stream);
cudaError_t LaunchAnchorDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                  int64_t head_dim, const bf16* base, const AnchorRefs& anchors,
                                  float* out, cudaStream_t stream);
cudaError_t LaunchAnchorChannelDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                         int64_t head_dim, const bf16* base,
                                         const AnchorRefs& anchors, float* out,
                                         cudaStream_t stream);
// The same with contiguous [anchor][segment] arrays (at most kMaxAnchorRefs anchors).
// kernels/realign.h on the GPU: bf16 base / deltas / out, fp32 weights and inv_freq, int32
// positions, all in device memory. 16-byte accesses: head_dim % 16 == 0, arrays 16-byte aligned.
cudaError_t LaunchRealignKv(int64_t layers, int64_t kv_heads, int64_t tokens, int64_t head_dim,
                            int64_t anchors, int64_t first_blended_layer, bool per_channel_weights,
                            const bf16* base, const int32_t* base_positions,
                            const int32_t* target_positions, const float* inv_freq,
                            const bf16* deltas, const float* key_weights,
                            const float* value_weights, bf16* out, cudaStream_t stream);
// kernels/realign.h's AnchorDistances on the GPU: bf16 base and anchor bases, fp32 sums out.
cudaError_t LaunchAnchorDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                  int64_t head_dim, int64_t anchors, const bf16* base,
                                  const bf16* anchor_bases, float* out, cudaStream_t stream);
// ... and AnchorChannelDistances: per (row, anchor), threads over 8-dim chunks and token groups.
// Both need head_dim % 8 == 0 (16-byte loads), else cudaErrorInvalidValue.
cudaError_t LaunchAnchorChannelDistances(int64_t layers, int64_t kv_heads, int64_t tokens,
                                         int64_t head_dim, int64_t anchors, const bf16* base,
                                         const bf16* anchor_bases, float* out, cudaStream_t stream);
// *out = the sum of squares of a segment's values (fp32, device memory; head_dim % 8 == 0).
cudaError_t LaunchValueSquaredNorm(int64_t layers, int64_t kv_heads, int64_t tokens,
                                   int64_t head_dim, const bf16* segment, float* out,
                                   cudaStream_t stream);
// ... and SoftmaxOverAnchors (fp32 in and out, device memory).
cudaError_t LaunchSoftmaxOverAnchors(const float* sums, int64_t anchors, int64_t n, int64_t stride,
                                     int64_t component, float scale, bool root, float temperature,
                                     float* out, cudaStream_t stream);
// kernels/compress.h on the GPU. ObservationScores is a batched GEMM (Blas::BatchedABt: the
// group's window queries x the head's keys, unscaled fp32 logits [kv_heads][group * window]
// [tokens]) then: per logits row the softmax max and 1 / sum over the keys its query sees (row r
// is window query r % window), and per kv head the column sums of the normalised rows.
cudaError_t LaunchWindowSoftmaxStats(const float* logits, int64_t rows, int64_t tokens,
                                     int64_t window, float scale, float2* stats,
                                     cudaStream_t stream);
cudaError_t LaunchWindowColumnSums(const float* logits, const float2* stats, int64_t kv_heads,
                                   int64_t rows_per_head, int64_t tokens, int64_t window,
                                   float scale, float* scores, cudaStream_t stream);
cudaError_t LaunchPool1D(const float* in, int64_t rows, int64_t n, int64_t kernel, bool max,
                         float* out, cudaStream_t stream);
// scores of the first `sinks` and last `recent` tokens of each row := +inf (always kept).
cudaError_t LaunchForceKeep(float* scores, int64_t rows, int64_t n, int64_t sinks, int64_t recent,
                            cudaStream_t stream);
// indices [rows][k]: the k largest of each row in ascending position order, ties to the earlier.
cudaError_t LaunchTopKPerRow(const float* in, int64_t rows, int64_t n, int64_t k, int32_t* indices,
                             cudaStream_t stream);
// out [rows][k][dim] = in [rows][n][dim] at indices (bf16; dim % 8 == 0, 16-byte aligned).
cudaError_t LaunchGatherRows(const bf16* in, int64_t rows, int64_t n, int64_t dim,
                             const int32_t* indices, int64_t k, bf16* out, cudaStream_t stream);
// Group quantization of bf16 values, codes packed as QuantizeGroups packs them.
cudaError_t LaunchQuantizeGroups(const bf16* in, int64_t groups, int64_t group_size, int bits,
                                 uint8_t* packed, float* scale, float* zero, cudaStream_t stream);
cudaError_t LaunchDequantizeGroups(const uint8_t* packed, const float* scale, const float* zero,
                                   int64_t groups, int64_t group_size, int bits, bf16* out,
                                   cudaStream_t stream);
// LowRankReconstruct (fp32) and LowRankProject (bf16 rows, fp32 basis and result) of
// kernels/compress.h.
cudaError_t LaunchLowRankReconstruct(const float* a, const float* b, int64_t rows, int64_t cols,
                                     int64_t rank, float* out, cudaStream_t stream);
cudaError_t LaunchLowRankProject(const bf16* x, const float* b, int64_t rows, int64_t cols,
                                 int64_t rank, float* y, cudaStream_t stream);
// SlerpMerge (kernels/compress.h) on bf16 rows: bf16 directions, fp32 norms and angles.
cudaError_t LaunchSlerpMerge(const bf16* a, const bf16* b, int64_t rows, int64_t dim, float t,
                             bf16* direction, float* norm_a, float* norm_b, float* angle,
                             cudaStream_t stream);
// y [rows][n] += bias [n] (bf16).
cudaError_t LaunchAddBias(bf16* y, const bf16* bias, int64_t rows, int64_t n, cudaStream_t stream);
// Deterministic pseudo-random normal(0, std) bf16 values from (seed, index): random weights.
cudaError_t LaunchFillRandom(bf16* out, int64_t n, uint64_t seed, float std, float mean,
                             cudaStream_t stream);

}  // namespace kvcomm::kernels::cuda
