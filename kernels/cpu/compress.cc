#include "kernels/compress.h"

#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace kvcomm::kernels::cpu {

void ObservationScores(const float* queries, const float* keys, int64_t q_heads, int64_t kv_heads,
                       int64_t window, int64_t tokens, int64_t head_dim, float* scores,
                       bool causal) {
  assert(q_heads % kv_heads == 0 && (window <= tokens || !causal));
  // Blocks of window queries go through one GEMM each (H2O and Compactor send every query of
  // a long prompt); softmax and column sums then run over the block's rows.
  constexpr int64_t kBlock = 256;
  const int64_t group = q_heads / kv_heads, block = std::min(kBlock, window);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> logits(block * tokens);
  std::vector<double> total(tokens);
  for (int64_t h = 0; h < kv_heads; ++h) {
    std::fill(total.begin(), total.end(), 0.0);
    const float* k = keys + h * tokens * head_dim;
    for (int64_t g = 0; g < group; ++g) {
      const float* q_head = queries + (h * group + g) * window * head_dim;
      for (int64_t first = 0; first < window; first += block) {
        const int64_t rows = std::min(block, window - first);
        // What the block's last row sees.
        const int64_t width = causal ? tokens - window + first + rows : tokens;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                    static_cast<int>(width), static_cast<int>(head_dim), scale,
                    q_head + first * head_dim, static_cast<int>(head_dim), k,
                    static_cast<int>(head_dim), 0.0f, logits.data(), static_cast<int>(width));
        ParallelFor(rows, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            float* row = logits.data() + r * width;
            const int64_t visible = causal ? tokens - window + first + r + 1 : tokens;
            const float top = *std::max_element(row, row + visible);
            double sum = 0;
            for (int64_t t = 0; t < visible; ++t) sum += (row[t] = std::exp(row[t] - top));
            const float inv = static_cast<float>(1.0 / sum);
            for (int64_t t = 0; t < visible; ++t) row[t] *= inv;
            std::fill(row + visible, row + width, 0.0f);
          }
        });
        ParallelFor(width, [&](int64_t begin, int64_t end) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t t = begin; t < end; ++t) total[t] += logits[r * width + t];
        });
      }
    }
    for (int64_t t = 0; t < tokens; ++t) scores[h * tokens + t] = static_cast<float>(total[t]);
  }
}

void Pool1D(const float* in, int64_t rows, int64_t n, int64_t kernel, PoolKind kind, float* out) {
  assert(kernel >= 1 && kernel % 2 == 1);
  const int64_t half = kernel / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * n;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t lo = std::max<int64_t>(0, t - half), hi = std::min(n - 1, t + half);
      double acc = kind == PoolKind::kMax ? -INFINITY : 0.0;
      for (int64_t j = lo; j <= hi; ++j)
        acc = kind == PoolKind::kMax ? std::max(acc, double{x[j]}) : acc + x[j];
      out[r * n + t] = static_cast<float>(kind == PoolKind::kMax ? acc : acc / (hi - lo + 1));
    }
  }
}

void TopKPerRow(const float* in, int64_t rows, int64_t n, int64_t k, int32_t* indices) {
  assert(k <= n);
  std::vector<int32_t> order(n);
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * n;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
    std::sort(order.begin(), order.begin() + k);
    std::copy(order.begin(), order.begin() + k, indices + r * k);
  }
}

void GatherRows(const float* in, int64_t rows, int64_t n, int64_t dim, const int32_t* indices,
                int64_t k, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t t = indices[r * k + j];
      assert(t >= 0 && t < n);
      std::copy_n(in + (r * n + t) * dim, dim, out + (r * k + j) * dim);
    }
}

void QuantizeGroups(const float* in, int64_t groups, int64_t group_size, int bits, uint8_t* packed,
                    float* scale, float* zero) {
  assert((bits == 2 || bits == 4 || bits == 8) && group_size * bits % 8 == 0);
  const int levels = (1 << bits) - 1, per_byte = 8 / bits;
  const int64_t bytes_per_group = group_size * bits / 8;
  for (int64_t g = 0; g < groups; ++g) {
    const float* x = in + g * group_size;
    const auto [lo, hi] = std::minmax_element(x, x + group_size);
    const float s = (*hi - *lo) / levels;
    scale[g] = s;
    zero[g] = *lo;
    uint8_t* p = packed + g * bytes_per_group;
    std::fill_n(p, bytes_per_group, uint8_t{0});
    for (int64_t i = 0; i < group_size; ++i) {
      const int code =
          s > 0 ? std::clamp(static_cast<int>(std::lround((x[i] - *lo) / s)), 0, levels) : 0;
      p[i / per_byte] |= static_cast<uint8_t>(code << (bits * (i % per_byte)));
    }
  }
}

void DequantizeGroups(const uint8_t* packed, const float* scale, const float* zero, int64_t groups,
                      int64_t group_size, int bits, float* out) {
  const int per_byte = 8 / bits, mask = (1 << bits) - 1;
  const int64_t bytes_per_group = group_size * bits / 8;
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* p = packed + g * bytes_per_group;
    for (int64_t i = 0; i < group_size; ++i) {
      const int code = (p[i / per_byte] >> (bits * (i % per_byte))) & mask;
      out[g * group_size + i] = zero[g] + scale[g] * static_cast<float>(code);
    }
  }
}

void LeverageScores(const float* x, int64_t rows, int64_t cols, float* out) {
  std::vector<double> gram(cols * cols, 0.0), factor(cols * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j <= i; ++j)
        gram[i * cols + j] += double{x[r * cols + i]} * x[r * cols + j];
  double trace = 0;
  for (int64_t i = 0; i < cols; ++i) trace += gram[i * cols + i];
  // Cholesky (lower) of gram + ridge I, the ridge relative to the mean diagonal.
  for (double ridge = 1e-6 * (trace / cols + 1e-30);; ridge *= 10) {
    bool ok = true;
    for (int64_t i = 0; i < cols && ok; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        double sum = gram[i * cols + j] + (i == j ? ridge : 0.0);
        for (int64_t k = 0; k < j; ++k) sum -= factor[i * cols + k] * factor[j * cols + k];
        if (i == j) {
          if (!(sum > 0)) {
            ok = false;
            break;
          }
          factor[i * cols + i] = std::sqrt(sum);
        } else {
          factor[i * cols + j] = sum / factor[j * cols + j];
        }
      }
    }
    if (ok) break;
  }
  // out[r] = ||L^-1 x_r||^2.
  std::vector<double> y(cols);
  for (int64_t r = 0; r < rows; ++r) {
    double score = 0;
    for (int64_t i = 0; i < cols; ++i) {
      double sum = x[r * cols + i];
      for (int64_t k = 0; k < i; ++k) sum -= factor[i * cols + k] * y[k];
      y[i] = sum / factor[i * cols + i];
      score += y[i] * y[i];
    }
    out[r] = static_cast<float>(score);
  }
}

}  // namespace kvcomm::kernels::cpu
