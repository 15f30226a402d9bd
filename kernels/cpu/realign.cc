#include "kernels/realign.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace kvcomm::kernels::cpu {

void RealignKv(const RealignShape& s, const float* base, std::span<const int32_t> base_positions,
               std::span<const int32_t> target_positions, std::span<const float> inv_freq,
               const float* deltas, const float* key_weights, const float* value_weights,
               float* out) {
  const int64_t half = s.head_dim / 2, segment = s.SegmentElements();
  // Rows are (layer, kv, head, token); each row is head_dim values.
  ParallelFor(s.layers * 2 * s.kv_heads * s.tokens, [&](int64_t begin, int64_t end) {
    std::vector<float> row(s.head_dim);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r % s.tokens, layer = r / (2 * s.kv_heads * s.tokens);
      const bool is_key = (r / (s.kv_heads * s.tokens)) % 2 == 0;
      const float* in = base + r * s.head_dim;
      if (is_key) {  // un-rotate from the base position
        for (int64_t i = 0; i < half; ++i) {
          const double angle = -double{static_cast<float>(base_positions[t])} * inv_freq[i];
          const float c = static_cast<float>(std::cos(angle)),
                      sn = static_cast<float>(std::sin(angle));
          row[i] = in[i] * c - in[i + half] * sn;
          row[i + half] = in[i + half] * c + in[i] * sn;
        }
      } else {
        std::copy_n(in, s.head_dim, row.begin());
      }
      if (layer >= s.first_blended_layer) {
        const float* weights = is_key ? key_weights : value_weights;
        for (int64_t a = 0; a < s.anchors; ++a) {
          const float* d = deltas + a * segment + r * s.head_dim;
          if (s.per_channel_weights) {  // channel row (layer, kv, head) = r / tokens
            const float* w = weights + a * s.Channels() + (r / s.tokens) * s.head_dim;
            for (int64_t i = 0; i < s.head_dim; ++i) row[i] += w[i] * d[i];
          } else {
            const float w = weights[a * s.tokens + t];
            for (int64_t i = 0; i < s.head_dim; ++i) row[i] += w * d[i];
          }
        }
      }
      float* o = out + r * s.head_dim;
      if (is_key) {  // rotate to the target position
        for (int64_t i = 0; i < half; ++i) {
          const double angle = double{static_cast<float>(target_positions[t])} * inv_freq[i];
          const float c = static_cast<float>(std::cos(angle)),
                      sn = static_cast<float>(std::sin(angle));
          o[i] = row[i] * c - row[i + half] * sn;
          o[i + half] = row[i + half] * c + row[i] * sn;
        }
      } else {
        std::copy_n(row.begin(), s.head_dim, o);
      }
    }
  });
}

}  // namespace kvcomm::kernels::cpu
