// The attention-derived token scores of kernels/compress.h beyond ObservationScores: the full
// window attention, OBCache's output saliency and Compactor's chunked non-causal attention.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

#include "kernels/compress.h"
#include "kernels/cpu/parallel.h"

namespace kvcomm::kernels::cpu {
namespace {

// Softmax of q . k_t * scale over keys [0, visible), written to probs[0, visible); returns the
// logits' values in `logits` (unnormalised, scaled).
void SoftmaxRow(const float* q, const float* keys, int64_t visible, int64_t head_dim, double scale,
                double* logits, double* probs) {
  double top = -INFINITY;
  for (int64_t t = 0; t < visible; ++t) {
    double dot = 0;
    for (int64_t d = 0; d < head_dim; ++d) dot += double{q[d]} * keys[t * head_dim + d];
    logits[t] = dot * scale;
    top = std::max(top, logits[t]);
  }
  double sum = 0;
  for (int64_t t = 0; t < visible; ++t) sum += (probs[t] = std::exp(logits[t] - top));
  for (int64_t t = 0; t < visible; ++t) probs[t] /= sum;
}

}  // namespace

void ObservationAttention(const float* queries, const float* keys, int64_t q_heads,
                          int64_t kv_heads, int64_t window, int64_t tokens, int64_t head_dim,
                          float* probs) {
  assert(q_heads % kv_heads == 0 && window <= tokens);
  const int64_t group = q_heads / kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  ParallelFor(q_heads, [&](int64_t begin, int64_t end) {
    std::vector<double> logits(tokens), p(tokens);
    for (int64_t qh = begin; qh < end; ++qh) {
      const float* k = keys + (qh / group) * tokens * head_dim;
      for (int64_t i = 0; i < window; ++i) {
        const int64_t visible = tokens - window + i + 1;
        SoftmaxRow(queries + (qh * window + i) * head_dim, k, visible, head_dim, scale,
                   logits.data(), p.data());
        float* out = probs + (qh * window + i) * tokens;
        for (int64_t t = 0; t < tokens; ++t) out[t] = t < visible ? static_cast<float>(p[t]) : 0.f;
      }
    }
  });
}

void OutputSaliency(const float* queries, const float* keys, const float* values, int64_t q_heads,
                    int64_t kv_heads, int64_t window, int64_t tokens, int64_t head_dim,
                    SaliencyTarget target, float* scores) {
  assert(q_heads % kv_heads == 0 && window <= tokens);
  const int64_t group = q_heads / kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  ParallelFor(kv_heads, [&](int64_t begin, int64_t end) {
    std::vector<double> logits(tokens), p(tokens), total(tokens), out(head_dim);
    for (int64_t h = begin; h < end; ++h) {
      std::fill(total.begin(), total.end(), 0.0);
      const float* k = keys + h * tokens * head_dim;
      const float* v = values + h * tokens * head_dim;
      for (int64_t g = 0; g < group; ++g)
        for (int64_t i = 0; i < window; ++i) {
          const int64_t visible = tokens - window + i + 1;
          SoftmaxRow(queries + ((h * group + g) * window + i) * head_dim, k, visible, head_dim,
                     scale, logits.data(), p.data());
          std::fill(out.begin(), out.end(), 0.0);
          for (int64_t t = 0; t < visible; ++t)
            for (int64_t d = 0; d < head_dim; ++d) out[d] += p[t] * v[t * head_dim + d];
          for (int64_t t = 0; t < visible; ++t) {
            double norm2 = 0;  // ||v_t||^2 or ||v_t - o||^2
            for (int64_t d = 0; d < head_dim; ++d) {
              const double x =
                  v[t * head_dim + d] - (target == SaliencyTarget::kValue ? 0 : out[d]);
              norm2 += x * x;
            }
            const double a2 = p[t] * p[t];
            switch (target) {
              case SaliencyTarget::kValue:
                total[t] += a2 * norm2;
                break;
              case SaliencyTarget::kKey:
                total[t] += a2 * logits[t] * logits[t] * norm2;
                break;
              case SaliencyTarget::kJoint: {
                const double rest = std::max(1.0 - p[t], 1e-12);
                total[t] += a2 * norm2 / (rest * rest);
                break;
              }
            }
          }
        }
      for (int64_t t = 0; t < tokens; ++t) scores[h * tokens + t] = static_cast<float>(total[t]);
    }
  });
}

void ChunkedAttentionScores(const float* queries, const float* keys, int64_t q_heads,
                            int64_t kv_heads, int64_t tokens, int64_t head_dim, int64_t chunk,
                            float* scores) {
  assert(q_heads % kv_heads == 0 && chunk > 0);
  const int64_t group = q_heads / kv_heads;
  ParallelFor(kv_heads, [&](int64_t begin, int64_t end) {
    std::vector<double> logits(chunk), p(chunk), total(tokens);
    for (int64_t h = begin; h < end; ++h) {
      std::fill(total.begin(), total.end(), 0.0);
      for (int64_t start = 0; start < tokens; start += chunk) {
        const int64_t n = std::min(chunk, tokens - start);
        const float* k = keys + (h * tokens + start) * head_dim;
        for (int64_t g = 0; g < group; ++g)
          for (int64_t i = 0; i < n; ++i) {
            SoftmaxRow(queries + ((h * group + g) * tokens + start + i) * head_dim, k, n, head_dim,
                       1.0, logits.data(), p.data());
            for (int64_t t = 0; t < n; ++t) total[start + t] += p[t] / group;
          }
      }
      for (int64_t t = 0; t < tokens; ++t) scores[h * tokens + t] = static_cast<float>(total[t]);
    }
  });
}

}  // namespace kvcomm::kernels::cpu
