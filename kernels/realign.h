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
}  // namespace cpu

}  // namespace kvcomm::kernels
