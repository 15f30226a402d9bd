#include "kernels/realign.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace kvcomm::kernels::cpu {
namespace {

// cos and sin of sign * position(t) * inv_freq[i] for every token t and frequency i, computed
// once per call: every (layer, K, head) row of a token turns by the same angles.
class Rotations {
 public:
  template <typename Position>
  Rotations(int64_t tokens, std::span<const float> inv_freq, double sign, Position position)
      : half_(static_cast<int64_t>(inv_freq.size())), cos_(tokens * half_), sin_(tokens * half_) {
    for (int64_t t = 0; t < tokens; ++t) {
      const double p = sign * double{static_cast<float>(position(t))};
      for (int64_t i = 0; i < half_; ++i) {
        const double angle = p * inv_freq[i];
        cos_[t * half_ + i] = static_cast<float>(std::cos(angle));
        sin_[t * half_ + i] = static_cast<float>(std::sin(angle));
      }
    }
  }
  const float* Cos(int64_t t) const { return cos_.data() + t * half_; }
  const float* Sin(int64_t t) const { return sin_.data() + t * half_; }

 private:
  int64_t half_;
  std::vector<float> cos_, sin_;
};

}  // namespace

void RealignKv(const RealignShape& s, const float* base, std::span<const int32_t> base_positions,
               std::span<const int32_t> target_positions, std::span<const float> inv_freq,
               const float* deltas, const float* key_weights, const float* value_weights,
               float* out) {
  const int64_t half = s.head_dim / 2, segment = s.SegmentElements();
  const Rotations from(s.tokens, inv_freq, -1, [&](int64_t t) { return base_positions[t]; });
  const Rotations to(s.tokens, inv_freq, 1, [&](int64_t t) { return target_positions[t]; });
  // Rows are (layer, kv, head, token); each row is head_dim values.
  ParallelFor(s.layers * 2 * s.kv_heads * s.tokens, [&](int64_t begin, int64_t end) {
    std::vector<float> row(s.head_dim);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r % s.tokens, layer = r / (2 * s.kv_heads * s.tokens);
      const bool is_key = (r / (s.kv_heads * s.tokens)) % 2 == 0;
      const float* in = base + r * s.head_dim;
      if (is_key) {  // un-rotate from the base position
        const float *c = from.Cos(t), *sn = from.Sin(t);
        for (int64_t i = 0; i < half; ++i) {
          row[i] = in[i] * c[i] - in[i + half] * sn[i];
          row[i + half] = in[i + half] * c[i] + in[i] * sn[i];
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
        const float *c = to.Cos(t), *sn = to.Sin(t);
        for (int64_t i = 0; i < half; ++i) {
          o[i] = row[i] * c[i] - row[i + half] * sn[i];
          o[i + half] = row[i + half] * c[i] + row[i] * sn[i];
        }
      } else {
        std::copy_n(row.begin(), s.head_dim, o);
      }
    }
  });
}

void PositionFreeDifference(const RealignShape& s, const float* a, int32_t a_first, const float* b,
                            int32_t b_first, std::span<const float> inv_freq, float* out) {
  const int64_t half = s.head_dim / 2;
  const Rotations at_a(s.tokens, inv_freq, -1, [&](int64_t t) { return a_first + t; });
  const Rotations at_b(s.tokens, inv_freq, -1, [&](int64_t t) { return b_first + t; });
  ParallelFor(s.layers * 2 * s.kv_heads * s.tokens, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r % s.tokens;
      const bool is_key = (r / (s.kv_heads * s.tokens)) % 2 == 0;
      const float *x = a + r * s.head_dim, *y = b + r * s.head_dim;
      float* o = out + r * s.head_dim;
      if (!is_key) {
        for (int64_t i = 0; i < s.head_dim; ++i) o[i] = x[i] - y[i];
        continue;
      }
      const float *cx = at_a.Cos(t), *sx = at_a.Sin(t), *cy = at_b.Cos(t), *sy = at_b.Sin(t);
      for (int64_t i = 0; i < half; ++i) {
        o[i] = (x[i] * cx[i] - x[i + half] * sx[i]) - (y[i] * cy[i] - y[i + half] * sy[i]);
        o[i + half] = (x[i + half] * cx[i] + x[i] * sx[i]) - (y[i + half] * cy[i] + y[i] * sy[i]);
      }
    }
  });
}

void AnchorDistances(const RealignShape& s, const float* base, const float* anchor_bases,
                     float* out) {
  const int64_t segment = s.SegmentElements(), rows = s.layers * 2 * s.kv_heads;
  ParallelFor(s.anchors * s.tokens, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t a = i / s.tokens, t = i % s.tokens;
      double key_l1 = 0, value_l1 = 0, value_l2 = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const bool is_key = (r / s.kv_heads) % 2 == 0;
        const int64_t at = (r * s.tokens + t) * s.head_dim;
        for (int64_t d = 0; d < s.head_dim; ++d) {
          const double diff = double{base[at + d]} - anchor_bases[a * segment + at + d];
          if (is_key) {
            key_l1 += std::abs(diff);
          } else {
            value_l1 += std::abs(diff);
            value_l2 += diff * diff;
          }
        }
      }
      out[i * 3] = static_cast<float>(key_l1);
      out[i * 3 + 1] = static_cast<float>(value_l1);
      out[i * 3 + 2] = static_cast<float>(value_l2);
    }
  });
}

void AnchorChannelDistances(const RealignShape& s, const float* base, const float* anchor_bases,
                            float* out) {
  const int64_t segment = s.SegmentElements(), rows = s.layers * 2 * s.kv_heads;
  ParallelFor(s.anchors * rows, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t a = i / rows, r = i % rows;
      for (int64_t d = 0; d < s.head_dim; ++d) {
        double sum = 0;
        for (int64_t t = 0; t < s.tokens; ++t) {
          const int64_t at = (r * s.tokens + t) * s.head_dim + d;
          const double diff = double{base[at]} - anchor_bases[a * segment + at];
          sum += diff * diff;
        }
        out[a * s.Channels() + r * s.head_dim + d] = static_cast<float>(sum);
      }
    }
  });
}

void SoftmaxOverAnchors(const float* sums, int64_t anchors, int64_t n, int64_t stride,
                        int64_t component, float scale, bool root, float temperature, float* out) {
  for (int64_t j = 0; j < n; ++j) {
    auto value = [&](int64_t a) {
      const float x = sums[(a * n + j) * stride + component];
      return (root ? std::sqrt(x) : x) * scale;
    };
    float lowest = INFINITY, total = 0.f;
    for (int64_t a = 0; a < anchors; ++a) lowest = std::min(lowest, value(a));
    for (int64_t a = 0; a < anchors; ++a)
      total += (out[a * n + j] = std::exp(-(value(a) - lowest) / temperature));
    for (int64_t a = 0; a < anchors; ++a) out[a * n + j] /= total;
  }
}

}  // namespace kvcomm::kernels::cpu
