// Primitive operations of KV compression (kvstore/compress builds its methods from them): the
// attention that an observation window of queries gives each cached key (GQA-aware), 1-D pooling
// of scores along tokens, per-row top-k, gathering kept rows, and group quantization. fp32 CPU
// references here; the methods only call these, so a CUDA version slots in per op.
#pragma once

#include <cstdint>

namespace kvcomm::kernels::cpu {

// scores[kv_head][token] = sum over the window's queries i and the query heads of the group
// sharing kv_head of softmax_t(q_i . k_t / sqrt(head_dim)), each query seeing the keys up to
// its own position (window query i sits at token tokens - window + i: causal). queries:
// [q_heads][window][head_dim]; keys: [kv_heads][tokens][head_dim]; q_heads % kv_heads == 0,
// window <= tokens.
// With causal = false the queries are of tokens after the segment (LAQ's look-ahead draft):
// each sees every key, and the window may be longer than the segment.
void ObservationScores(const float* queries, const float* keys, int64_t q_heads, int64_t kv_heads,
                       int64_t window, int64_t tokens, int64_t head_dim, float* scores,
                       bool causal = true);

// probs[q_head][i][t] = softmax_t(q_i . k_t / sqrt(head_dim)) over the keys window query i sees
// (causal, as above), 0 for the keys after it. Shapes as in ObservationScores.
void ObservationAttention(const float* queries, const float* keys, int64_t q_heads,
                          int64_t kv_heads, int64_t window, int64_t tokens, int64_t head_dim,
                          float* probs);

// OBCache (Gu et al. 2025): how much removing one token perturbs the attention output o_i =
// sum_t a_it v_t of each window query, summed over the window and the group's query heads
// (scores[kv_head][token]; causal as above):
//   kValue: the value zeroed, first order:        a_it^2 ||v_t||^2
//   kKey:   the key zeroed (logit z_it -> 0):     a_it^2 z_it^2 ||v_t - o_i||^2
//   kJoint: the token removed (exact):            a_it^2 ||v_t - o_i||^2 / (1 - a_it)^2
enum class SaliencyTarget { kValue, kKey, kJoint };
void OutputSaliency(const float* queries, const float* keys, const float* values, int64_t q_heads,
                    int64_t kv_heads, int64_t window, int64_t tokens, int64_t head_dim,
                    SaliencyTarget target, float* scores);

// Compactor's non-causal chunked attention (Chari & Van Durme 2025): the tokens are cut into
// chunks of `chunk`; every query attends (softmax of the unscaled dot products) to all keys of
// its own chunk, before and after it; scores[kv_head][t] = the attention key t receives, summed
// over its chunk's queries and averaged over the group's query heads. queries: one per token,
// [q_heads][tokens][head_dim].
void ChunkedAttentionScores(const float* queries, const float* keys, int64_t q_heads,
                            int64_t kv_heads, int64_t tokens, int64_t head_dim, int64_t chunk,
                            float* scores);

enum class PoolKind { kMax, kMean };
// out[r][t] = max (or mean) of in[r][t - kernel/2 .. t + kernel/2], clipped to the row (odd
// kernel; 1 copies).
void Pool1D(const float* in, int64_t rows, int64_t n, int64_t kernel, PoolKind kind, float* out);

// indices[r][0..k) = positions of the k largest in[r][:] in ascending position order; ties go
// to the earlier position. k <= n.
void TopKPerRow(const float* in, int64_t rows, int64_t n, int64_t k, int32_t* indices);

// out[r][j][:] = in[r][indices[r][j]][:] for rows of n vectors of dim values.
void GatherRows(const float* in, int64_t rows, int64_t n, int64_t dim, const int32_t* indices,
                int64_t k, float* out);

// Statistical leverage of each row of x [rows][cols]: out[r] = x_r^T (X^T X + ridge I)^-1 x_r,
// through a Cholesky factorisation of the cols x cols Gram matrix (the ridge grows tenfold
// until it factors). Rows that stick out of the others' span score high (at most 1).
void LeverageScores(const float* x, int64_t rows, int64_t cols, float* out);

// Asymmetric uniform quantization of `groups` contiguous groups of group_size values to `bits`
// (2, 4 or 8): code = round((x - min) / scale), scale = (max - min) / (2^bits - 1). Codes are
// packed little-end first into bytes (group_size * bits % 8 == 0). scale and zero (= min) are
// per group.
void QuantizeGroups(const float* in, int64_t groups, int64_t group_size, int bits, uint8_t* packed,
                    float* scale, float* zero);
void DequantizeGroups(const uint8_t* packed, const float* scale, const float* zero, int64_t groups,
                      int64_t group_size, int bits, float* out);

// Rank-`rank` approximation x ~= u v^T of x [rows][cols] by seeded randomized subspace
// iteration (`iterations` power steps, each re-orthonormalised): u [rows][rank] has
// orthonormal columns, v [cols][rank] = x^T u. Exact for a matrix of rank <= `rank`.
void LowRank(const float* x, int64_t rows, int64_t cols, int64_t rank, int iterations, float* u,
             float* v);

// The low-rank factors at work: out[r][c] += sum_j a[r][j] b[c][j] for a [rows][rank] and
// b [cols][rank] (GEAR's residual added back), and the projection y[r][j] = sum_c x[r][c]
// b[c][j] of rows onto a basis.
void LowRankReconstruct(const float* a, const float* b, int64_t rows, int64_t cols, int64_t rank,
                        float* out);
void LowRankProject(const float* x, const float* b, int64_t rows, int64_t cols, int64_t rank,
                    float* y);

// MiniCache's merge of two vectors per row: the unit directions of a and b interpolated along
// the great circle (SLERP) at t, and both norms kept so each side can be rebuilt as
// norm * direction. angle[r] is the angle between a and b (radians), what decides whether a
// row is too different to merge. Rows of zero norm take the other row's direction.
void SlerpMerge(const float* a, const float* b, int64_t rows, int64_t dim, float t,
                float* direction, float* norm_a, float* norm_b, float* angle);

}  // namespace kvcomm::kernels::cpu
