// The model operations of a Llama-family forward pass, fp32, row-major. kernels::cpu holds the
// reference implementations (OpenBLAS for GEMM, ParallelFor for the rest); a CUDA version of
// each will take the same arguments with device pointers.
//
// Shapes are given explicitly; callers (agents/runtime) validate them once at model load, so
// these functions assert rather than return Status.
#pragma once

#include <cstdint>
#include <span>

namespace kvcomm::kernels::cpu {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for each of `rows` rows of `dim`.
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);

// out[rows, out_dim] = x[rows, in_dim] @ w[out_dim, in_dim]^T (+ bias[out_dim] if not null).
void Linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in_dim,
            int64_t out_dim, float* out);

// out[i] = silu(gate[i]) * up[i] for n elements (out may alias gate).
void SwiGlu(const float* gate, const float* up, int64_t n, float* out);

// out[t] = table[ids[t]] for rows of `dim`; ids are checked by the caller.
void Embedding(const float* table, std::span<const int32_t> ids, int64_t dim, float* out);

// Rotary embedding in the Hugging Face "rotate half" convention: for each token t, head h and
// i < head_dim/2, the pair (x[i], x[i + head_dim/2]) is rotated by angle positions[t] *
// inv_freq[i]. x is [tokens][heads][head_dim], rotated in place. A negative angle (position) undoes
// it.
void Rope(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
          std::span<const float> inv_freq);

// Causal grouped-query attention of new tokens over a KV cache.
//   q:      [tokens][heads][head_dim], the queries of positions q_start .. q_start + tokens - 1
//   k, v:   [kv_heads][cache_stride][head_dim]; entries 0 .. q_start + tokens - 1 are valid
//   out:    [tokens][heads][head_dim]
// Query head h reads kv head h / (heads / kv_heads); token t attends cache positions
// 0 .. q_start + t. Scores are scaled by `scale` (1/sqrt(head_dim) for Llama). `dropped`
// ([kv_heads][cache_stride], may be null) marks entries a compressed cache no longer holds for
// that kv head: attention skips them.
void Attention(const float* q, const float* k, const float* v, int64_t tokens, int64_t q_start,
               int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t cache_stride, float scale,
               float* out, const uint8_t* dropped = nullptr);

// x[i] += y[i].
void AddInPlace(float* x, const float* y, int64_t n);

}  // namespace kvcomm::kernels::cpu
