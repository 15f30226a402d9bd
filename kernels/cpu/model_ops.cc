#include "kernels/model_ops.h"

#include <cblas.h>

#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace kvcomm::kernels::cpu {

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps,
             float* out) {
  ParallelFor(rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = x + r * dim;
      double sum = 0;
      for (int64_t i = 0; i < dim; ++i) sum += double{in[i]} * in[i];
      const float inv = 1.0f / std::sqrt(static_cast<float>(sum / dim) + eps);
      float* o = out + r * dim;
      for (int64_t i = 0; i < dim; ++i) o[i] = in[i] * inv * weight[i];
    }
  });
}

void Linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in_dim,
            int64_t out_dim, float* out) {
  if (bias != nullptr) {
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(out + r * out_dim, bias, out_dim * sizeof(float));
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(out_dim), static_cast<int>(in_dim), 1.0f, x,
              static_cast<int>(in_dim), w, static_cast<int>(in_dim), bias != nullptr ? 1.0f : 0.0f,
              out, static_cast<int>(out_dim));
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  ParallelFor(n, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void Embedding(const float* table, std::span<const int32_t> ids, int64_t dim, float* out) {
  for (size_t t = 0; t < ids.size(); ++t) {
    std::memcpy(out + t * dim, table + int64_t{ids[t]} * dim, dim * sizeof(float));
  }
}

void Rope(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
          std::span<const float> inv_freq) {
  const int64_t half = head_dim / 2;
  assert(static_cast<int64_t>(inv_freq.size()) == half);
  ParallelFor(static_cast<int64_t>(positions.size()), [&](int64_t begin, int64_t end) {
    std::vector<float> cos(half), sin(half);
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        // Angles in double: positions reach 10^5 and fp32 angle error would grow with them.
        const double angle = double{static_cast<float>(positions[t])} * inv_freq[i];
        cos[i] = static_cast<float>(std::cos(angle));
        sin[i] = static_cast<float>(std::sin(angle));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* row = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float a = row[i], b = row[i + half];
          row[i] = a * cos[i] - b * sin[i];
          row[i + half] = b * cos[i] + a * sin[i];
        }
      }
    }
  });
}

void Attention(const float* q, const float* k, const float* v, int64_t tokens, int64_t q_start,
               int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t cache_stride, float scale,
               float* out, const uint8_t* dropped) {
  assert(heads % kv_heads == 0);
  const int64_t group = heads / kv_heads;
  ParallelFor(tokens * heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(q_start + tokens);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t t = job / heads, h = job % heads;
      const float* query = q + (t * heads + h) * head_dim;
      const float* keys = k + (h / group) * cache_stride * head_dim;
      const float* values = v + (h / group) * cache_stride * head_dim;
      const int64_t visible = q_start + t + 1;
      const uint8_t* skip = dropped ? dropped + (h / group) * cache_stride : nullptr;
      float max_score = -INFINITY;
      for (int64_t j = 0; j < visible; ++j) {
        if (skip && skip[j]) {
          scores[j] = -INFINITY;
          continue;
        }
        const float* key = keys + j * head_dim;
        float dot = 0;
        for (int64_t d = 0; d < head_dim; ++d) dot += query[d] * key[d];
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      double denom = 0;
      for (int64_t j = 0; j < visible; ++j) {
        scores[j] = skip && skip[j] ? 0.f : std::exp(scores[j] - max_score);
        denom += scores[j];
      }
      float* o = out + (t * heads + h) * head_dim;
      std::fill(o, o + head_dim, 0.0f);
      const float inv = static_cast<float>(1.0 / denom);
      for (int64_t j = 0; j < visible; ++j) {
        if (skip && skip[j]) continue;
        const float p = scores[j] * inv;
        const float* value = values + j * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] += p * value[d];
      }
    }
  });
}

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace kvcomm::kernels::cpu
