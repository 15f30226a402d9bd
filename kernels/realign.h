// Realignment of a KV segment for reuse at other positions (KVCOMM, ../shared/KVCOMM.md): one
// pass that re-rotates keys to their new positions and blends in anchor deviations.
//
// For every layer l, head h, token t:
//   K_out = R(target[t]) . ( R(-base_pos[t]) . K_base + [l >= first_blended_layer] sum_a wk[a][t]
//   dK_a ) V_out = V_base + [l >= first_blended_layer] sum_a wv[a][t] dV_a
// where R(p) is the RoPE rotation at position p (Hugging Face rotate-half pairing) and the
// deviations dK are kept position-free (keys un-rotated), so one anchor serves any offset.
// With no anchors this is the pure positional realignment. All arrays use the segment layout
// [layer][K|V][kv_heads][tokens][head_dim]; deltas are [anchor][...segment layout...], weights
// [anchor][tokens].
#pragma once

#include <cstdint>
#include <span>

namespace kvcomm::kernels {

struct RealignShape {
  int64_t layers = 0, kv_heads = 0, tokens = 0, head_dim = 0;
  int64_t anchors = 0;
  int64_t first_blended_layer = 1;  // layer 0's KV depends on token and position only
  int64_t SegmentElements() const { return layers * 2 * kv_heads * tokens * head_dim; }
};

namespace cpu {
// fp32 reference. inv_freq has head_dim / 2 entries.
void RealignKv(const RealignShape& shape, const float* base,
               std::span<const int32_t> base_positions, std::span<const int32_t> target_positions,
               std::span<const float> inv_freq, const float* deltas, const float* key_weights,
               const float* value_weights, float* out);
}  // namespace cpu

}  // namespace kvcomm::kernels
