// Realignment of a KV segment for reuse at other positions (KVCOMM, ../shared/KVCOMM.md): one
// pass that re-rotates keys to their new positions and blends in anchor deviations.
//
// For every layer l, head h, token t (blend only for l >= first_blended_layer):
//
//   K_out = R(target[t]) ( R(-base[t]) K_base + sum_a wk[a] dK_a )
//   V_out = V_base + sum_a wv[a] dV_a
//
// R(p) is the RoPE rotation at position p (Hugging Face rotate-half pairing). Deviations keep
// their keys un-rotated (position-free), so one anchor serves any offset. With no anchors this
// is the pure positional realignment. Segments use the layout [layer][K|V][kv_heads][tokens]
// [head_dim]; deltas are [anchor][segment]. Weights are either per token, [anchor][tokens] (for
// placeholders), or per channel, [anchor][layer][K|V][kv_heads][head_dim] (for the template
// segment after a placeholder; pass the one array as both key and value weights).
#pragma once

#include <cstdint>
#include <span>

namespace kvcomm::kernels {

struct RealignShape {
  int64_t layers = 0, kv_heads = 0, tokens = 0, head_dim = 0;
  int64_t anchors = 0;
  int64_t first_blended_layer = 1;  // layer 0's KV depends on token and position only
  bool per_channel_weights = false;
  int64_t SegmentElements() const { return layers * 2 * kv_heads * tokens * head_dim; }
  int64_t Channels() const { return layers * 2 * kv_heads * head_dim; }
};

namespace cpu {
// fp32 reference. inv_freq has head_dim / 2 entries.
void RealignKv(const RealignShape& shape, const float* base,
               std::span<const int32_t> base_positions, std::span<const int32_t> target_positions,
               std::span<const float> inv_freq, const float* deltas, const float* key_weights,
               const float* value_weights, float* out);

// The deviation an anchor records (../shared/KVCOMM.md, "Anchors"): out = F(a, a_first) -
// F(b, b_first), where F un-rotates the keys of a segment whose token t sits at position
// first + t to position 0 (values stay as they are). Both segments have shape.tokens tokens.
void PositionFreeDifference(const RealignShape& shape, const float* a, int32_t a_first,
                            const float* b, int32_t b_first, std::span<const float> inv_freq,
                            float* out);

// How close a placeholder's base KV is to each anchor's, the inputs of KVCOMM's reuse decision
// and blend weights (daemon/anchor_pool.h): for anchor a and token t, summed over all layers,
// heads and dims, out[(a * tokens + t) * 3 + {0, 1, 2}] = sum |K - K_a|, sum |V - V_a|,
// sum (V - V_a)^2. anchor_bases is [anchor][segment], cut to the placeholder's tokens.
void AnchorDistances(const RealignShape& shape, const float* base, const float* anchor_bases,
                     float* out);
// Per anchor and channel (layer, K|V, head, dim), summed over the tokens: sum (X - X_a)^2 ->
// out[a * Channels() + channel]: the input of the per-channel weights of the template segment
// after a placeholder.
void AnchorChannelDistances(const RealignShape& shape, const float* base, const float* anchor_bases,
                            float* out);

// Blend weights from those distances: for each column j < n, a softmax over the anchors of
// -g(sums[(a * n + j) * stride + component]) / temperature, with g(x) = x * scale, or
// sqrt(x) * scale when `root`. Per token (AnchorDistances: stride 3, component 0 for keys, 1
// for values, scale 1 / (layers * kv_heads * head_dim): the mean absolute difference) or per
// channel (AnchorChannelDistances: stride 1, root: the L2 norm along the tokens).
// out is [anchor][n].
void SoftmaxOverAnchors(const float* sums, int64_t anchors, int64_t n, int64_t stride,
                        int64_t component, float scale, bool root, float temperature, float* out);
}  // namespace cpu

}  // namespace kvcomm::kernels
