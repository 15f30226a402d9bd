// CPU reference model ops against their formulas on small random inputs.
#include "kernels/model_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/kernels/random_values.h"

namespace kvcomm::kernels::cpu {
namespace {

TEST(ModelOps, RmsNormMatchesFormula) {
  auto x = kvcomm::testing::RandomNormal(3 * 10, 1), w = kvcomm::testing::RandomNormal(10, 2);
  std::vector<float> out(30);
  RmsNorm(x.data(), w.data(), 3, 10, 1e-5f, out.data());
  for (int r = 0; r < 3; ++r) {
    double ms = 0;
    for (int i = 0; i < 10; ++i) ms += x[r * 10 + i] * x[r * 10 + i] / 10.0;
    for (int i = 0; i < 10; ++i)
      EXPECT_NEAR(out[r * 10 + i], x[r * 10 + i] / std::sqrt(ms + 1e-5) * w[i], 1e-5);
  }
}

TEST(ModelOps, LinearMatchesNaiveLoopsWithAndWithoutBias) {
  auto x = kvcomm::testing::RandomNormal(5 * 7, 3), w = kvcomm::testing::RandomNormal(4 * 7, 4),
       b = kvcomm::testing::RandomNormal(4, 5);
  std::vector<float> out(20), out_bias(20);
  Linear(x.data(), w.data(), nullptr, 5, 7, 4, out.data());
  Linear(x.data(), w.data(), b.data(), 5, 7, 4, out_bias.data());
  for (int r = 0; r < 5; ++r) {
    for (int o = 0; o < 4; ++o) {
      double dot = 0;
      for (int i = 0; i < 7; ++i) dot += x[r * 7 + i] * w[o * 7 + i];
      EXPECT_NEAR(out[r * 4 + o], dot, 1e-5);
      EXPECT_NEAR(out_bias[r * 4 + o], dot + b[o], 1e-5);
    }
  }
}

TEST(ModelOps, RopeRotatesPairsAndANegativePositionUndoesIt) {
  const int64_t heads = 3, hd = 8;
  auto x = kvcomm::testing::RandomNormal(2 * heads * hd, 6);
  std::vector<float> inv_freq = {1.0f, 0.1f, 0.01f, 0.001f};
  auto y = x;
  std::vector<int32_t> pos = {5, 1000};
  Rope(y.data(), pos, heads, hd, inv_freq);
  // Element (t=1, h=2, i=1): pair (1, 5) rotated by 1000 * 0.1.
  const float* a = x.data() + (1 * heads + 2) * hd;
  const float* b = y.data() + (1 * heads + 2) * hd;
  EXPECT_NEAR(b[1], a[1] * std::cos(100.0) - a[5] * std::sin(100.0), 1e-4);
  EXPECT_NEAR(b[5], a[5] * std::cos(100.0) + a[1] * std::sin(100.0), 1e-4);
  std::vector<int32_t> back = {-5, -1000};
  Rope(y.data(), back, heads, hd, inv_freq);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-4);
}

TEST(ModelOps, AttentionMatchesNaiveCausalGqaAndSkipsDroppedEntries) {
  const int64_t tokens = 3, q_start = 4, heads = 4, kv_heads = 2, hd = 5, stride = 10;
  auto q = kvcomm::testing::RandomNormal(tokens * heads * hd, 7),
       k = kvcomm::testing::RandomNormal(kv_heads * stride * hd, 8),
       v = kvcomm::testing::RandomNormal(kv_heads * stride * hd, 9);
  // Per kv head, entries a compressed cache no longer holds (different ones per head).
  std::vector<uint8_t> dropped(kv_heads * stride, 0);
  dropped[1] = dropped[3] = dropped[stride + 2] = dropped[stride + 5] = 1;
  const uint8_t* masks[] = {nullptr, dropped.data()};
  for (const uint8_t* mask : masks) {
    std::vector<float> out(tokens * heads * hd);
    const float scale = 1 / std::sqrt(5.0f);
    Attention(q.data(), k.data(), v.data(), tokens, q_start, heads, kv_heads, hd, stride, scale,
              out.data(), mask);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t g = h / (heads / kv_heads), visible = q_start + t + 1;
        std::vector<double> p(visible, 0.0);
        double total = 0;
        for (int64_t j = 0; j < visible; ++j) {
          if (mask && mask[g * stride + j]) continue;
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += q[(t * heads + h) * hd + d] * k[(g * stride + j) * hd + d];
          p[j] = std::exp(dot * scale);
          total += p[j];
        }
        for (int64_t d = 0; d < hd; ++d) {
          double o = 0;
          for (int64_t j = 0; j < visible; ++j) o += p[j] / total * v[(g * stride + j) * hd + d];
          EXPECT_NEAR(out[(t * heads + h) * hd + d], o, 1e-5) << (mask ? "with drops" : "");
        }
      }
    }
  }
}

TEST(ModelOps, SwiGluAndEmbedding) {
  std::vector<float> gate = {-2, 0, 3}, up = {1, 5, 2}, out(3);
  SwiGlu(gate.data(), up.data(), 3, out.data());
  EXPECT_NEAR(out[0], -2 / (1 + std::exp(2.0)) * 1, 1e-6);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_NEAR(out[2], 3 / (1 + std::exp(-3.0)) * 2, 1e-5);
  std::vector<float> table = {0, 1, 10, 11, 20, 21}, rows(4);
  std::vector<int32_t> ids = {2, 0};
  Embedding(table.data(), ids, 2, rows.data());
  EXPECT_EQ(rows, (std::vector<float>{20, 21, 0, 1}));
}

}  // namespace
}  // namespace kvcomm::kernels::cpu
