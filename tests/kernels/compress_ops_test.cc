// The compression primitives on small hand-checkable inputs and their invariants on random ones.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/compress.h"
#include "tests/kernels/random_values.h"

namespace kvcomm::kernels::cpu {
namespace {

TEST(ObservationScores, MatchesTheSoftmaxByHandAndIsCausal) {
  // One kv head, one query head, head_dim 1 (scale 1), three keys, a window of two queries.
  const float keys[] = {0.f, std::log(3.f), 5.f};
  const float queries[] = {1.f, 1.f};
  float scores[3];
  ObservationScores(queries, keys, 1, 1, 2, 3, 1, scores);
  // Query 0 sits at token 1: sees keys 0 and 1 -> softmax(0, ln 3) = (1/4, 3/4).
  // Query 1 sits at token 2: sees all -> softmax(0, ln 3, 5).
  const double z = 1 + 3 + std::exp(5.0);
  EXPECT_NEAR(scores[0], 0.25 + 1 / z, 1e-6);
  EXPECT_NEAR(scores[1], 0.75 + 3 / z, 1e-6);
  EXPECT_NEAR(scores[2], std::exp(5.0) / z, 1e-6);
}

TEST(ObservationScores, EachQueryGivesOneUnitOfAttentionPerGroupHead) {
  const int64_t q_heads = 8, kv_heads = 2, window = 5, tokens = 40, dim = 16;
  auto q = testing::RandomNormal(q_heads * window * dim, 1);
  auto k = testing::RandomNormal(kv_heads * tokens * dim, 2);
  std::vector<float> scores(kv_heads * tokens);
  ObservationScores(q.data(), k.data(), q_heads, kv_heads, window, tokens, dim, scores.data());
  for (int64_t h = 0; h < kv_heads; ++h) {
    const double total =
        std::accumulate(scores.begin() + h * tokens, scores.begin() + (h + 1) * tokens, 0.0);
    EXPECT_NEAR(total, (q_heads / kv_heads) * window, 1e-4);
    for (int64_t t = 0; t < tokens; ++t) EXPECT_GT(scores[h * tokens + t], 0.f);
  }
}

TEST(ObservationScores, QueriesAfterTheSegmentSeeEveryToken) {
  // A window longer than the segment is fine when the queries follow it (LAQ's draft).
  const int64_t q_heads = 4, kv_heads = 2, window = 7, tokens = 5, dim = 8;
  auto q = testing::RandomNormal(q_heads * window * dim, 5);
  auto k = testing::RandomNormal(kv_heads * tokens * dim, 6);
  std::vector<float> scores(kv_heads * tokens), by_hand(kv_heads * tokens, 0.f);
  ObservationScores(q.data(), k.data(), q_heads, kv_heads, window, tokens, dim, scores.data(),
                    /*causal=*/false);
  for (int64_t qh = 0; qh < q_heads; ++qh)
    for (int64_t i = 0; i < window; ++i) {
      std::vector<double> w(tokens);
      double sum = 0;
      for (int64_t t = 0; t < tokens; ++t) {
        double dot = 0;
        for (int64_t d = 0; d < dim; ++d)
          dot += double{q[(qh * window + i) * dim + d]} * k[((qh / 2) * tokens + t) * dim + d];
        sum += (w[t] = std::exp(dot / std::sqrt(double(dim))));
      }
      for (int64_t t = 0; t < tokens; ++t) by_hand[(qh / 2) * tokens + t] += w[t] / sum;
    }
  for (size_t i = 0; i < scores.size(); ++i) EXPECT_NEAR(scores[i], by_hand[i], 1e-5);
}

TEST(Pool1D, MaxAndMeanOverAClippedWindow) {
  const float in[] = {1, 5, 2, 0, 3};
  float out[5];
  Pool1D(in, 1, 5, 3, PoolKind::kMax, out);
  EXPECT_EQ(std::vector<float>(out, out + 5), (std::vector<float>{5, 5, 5, 3, 3}));
  Pool1D(in, 1, 5, 3, PoolKind::kMean, out);
  EXPECT_FLOAT_EQ(out[0], 3.f);  // (1 + 5) / 2 at the edge
  EXPECT_FLOAT_EQ(out[2], 7.f / 3);
  Pool1D(in, 1, 5, 1, PoolKind::kMax, out);
  EXPECT_EQ(std::vector<float>(out, out + 5), (std::vector<float>{1, 5, 2, 0, 3}));
}

TEST(TopKPerRow, KeepsTheLargestInPositionOrderTiesToTheEarlier) {
  const float in[] = {0.5f, 2.f, 1.f, 2.f, -1.f,  // row 0
                      3.f,  3.f, 3.f, 0.f, 4.f};  // row 1
  int32_t idx[6];
  TopKPerRow(in, 2, 5, 3, idx);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 3), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(std::vector<int32_t>(idx + 3, idx + 6), (std::vector<int32_t>{0, 1, 4}));
}

TEST(GatherRows, CopiesTheIndexedRowsPerHead) {
  const float in[] = {0,  1,  10, 11, 20, 21,   // head 0: three rows of dim 2
                      30, 31, 40, 41, 50, 51};  // head 1
  const int32_t idx[] = {0, 2, 1, 2};
  float out[8];
  GatherRows(in, 2, 3, 2, idx, 2, out);
  EXPECT_EQ(std::vector<float>(out, out + 8), (std::vector<float>{0, 1, 20, 21, 40, 41, 50, 51}));
}

TEST(LeverageScores, MatchTheHatMatrixDiagonal) {
  // Gram = [[3, 0], [0, 1]]: rows along the first axis share 1/3 each, the lone second-axis
  // row has leverage 1; they sum to the rank.
  const float x[] = {1, 0, 0, 1, 1, 0, 1, 0};
  float out[4];
  LeverageScores(x, 4, 2, out);
  EXPECT_NEAR(out[0], 1.0 / 3, 1e-5);
  EXPECT_NEAR(out[1], 1.0, 1e-5);
  EXPECT_NEAR(out[2], 1.0 / 3, 1e-5);
  EXPECT_NEAR(out[0] + out[1] + out[2] + out[3], 2.0, 1e-4);
  // A rank-deficient matrix still factors (ridge) and ranks its rows.
  const float flat[] = {1, 2, 2, 4, 3, 6};
  LeverageScores(flat, 3, 2, out);
  EXPECT_LT(out[0], out[1]);
  EXPECT_LT(out[1], out[2]);
}

TEST(QuantizeGroups, RoundTripsWithinHalfAStep) {
  for (int bits : {2, 4, 8}) {
    const int64_t groups = 37, size = 32;
    auto x = testing::RandomNormal(groups * size, 3 + bits);
    std::vector<uint8_t> packed(groups * size * bits / 8);
    std::vector<float> scale(groups), zero(groups), back(x.size());
    QuantizeGroups(x.data(), groups, size, bits, packed.data(), scale.data(), zero.data());
    DequantizeGroups(packed.data(), scale.data(), zero.data(), groups, size, bits, back.data());
    for (int64_t g = 0; g < groups; ++g) {
      EXPECT_GT(scale[g], 0.f);
      for (int64_t i = 0; i < size; ++i)
        EXPECT_LE(std::abs(back[g * size + i] - x[g * size + i]), scale[g] / 2 + 1e-5)
            << bits << " bits";
    }
  }
  // A constant group is exact (zero scale).
  const float same[8] = {1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f};
  uint8_t packed[2];
  float scale, zero, back[8];
  QuantizeGroups(same, 1, 8, 2, packed, &scale, &zero);
  DequantizeGroups(packed, &scale, &zero, 1, 8, 2, back);
  for (float v : back) EXPECT_EQ(v, 1.5f);
}

TEST(LowRank, RecoversAMatrixOfThatRankAndShrinksTheErrorOfOthers) {
  const int64_t rows = 40, cols = 16, rank = 3;
  auto a = testing::RandomNormal(rows * rank, 11), b = testing::RandomNormal(cols * rank, 12);
  std::vector<float> x(rows * cols, 0.f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t j = 0; j < rank; ++j) x[r * cols + c] += a[r * rank + j] * b[c * rank + j];
  auto error = [&](const std::vector<float>& m, int64_t k) {
    std::vector<float> u(rows * k), v(cols * k);
    LowRank(m.data(), rows, cols, k, 2, u.data(), v.data());
    double err = 0, norm = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        double approx = 0;
        for (int64_t j = 0; j < k; ++j) approx += double{u[r * k + j]} * v[c * k + j];
        err += (approx - m[r * cols + c]) * (approx - m[r * cols + c]);
        norm += double{m[r * cols + c]} * m[r * cols + c];
      }
    // u's columns are orthonormal.
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double dot = 0;
        for (int64_t r = 0; r < rows; ++r) dot += double{u[r * k + i]} * u[r * k + j];
        EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-4);
      }
    return std::sqrt(err / norm);
  };
  EXPECT_LT(error(x, rank), 1e-5);
  const auto noise = testing::RandomNormal(rows * cols, 13);
  const double e1 = error(noise, 1), e4 = error(noise, 4), e12 = error(noise, 12);
  EXPECT_GT(e1, e4);
  EXPECT_GT(e4, e12);
  EXPECT_LT(e12, 0.6);
}

TEST(LowRank, ProjectAndReconstructAreTheFactorProducts) {
  // x = [[1, 2], [3, 4]]; basis b = [[1], [0]] (cols x rank 1): y = x b = first column.
  const float x[] = {1, 2, 3, 4}, b[] = {1, 0}, a[] = {2, -1};
  float y[2], out[4] = {1, 1, 1, 1};
  LowRankProject(x, b, 2, 2, 1, y);
  EXPECT_EQ(y[0], 1.f);
  EXPECT_EQ(y[1], 3.f);
  LowRankReconstruct(a, b, 2, 2, 1, out);  // adds a b^T = [[2, 0], [-1, 0]]
  EXPECT_EQ(std::vector<float>(out, out + 4), (std::vector<float>{3, 1, 0, 1}));
}

TEST(SlerpMerge, InterpolatesUnitDirectionsAndKeepsBothNorms) {
  // Row 0: orthogonal (3, 0) and (0, 2): halfway is (1, 1) / sqrt 2. Row 1: parallel.
  // Row 2: a zero vector takes the other's direction.
  const float a[] = {3, 0, 1, 1, 0, 0}, b[] = {0, 2, 2, 2, 0, 5};
  float dir[6], na[3], nb[3], angle[3];
  SlerpMerge(a, b, 3, 2, 0.5f, dir, na, nb, angle);
  EXPECT_NEAR(dir[0], std::sqrt(0.5f), 1e-6);
  EXPECT_NEAR(dir[1], std::sqrt(0.5f), 1e-6);
  EXPECT_NEAR(angle[0], M_PI / 2, 1e-6);
  EXPECT_EQ(na[0], 3.f);
  EXPECT_EQ(nb[0], 2.f);
  EXPECT_NEAR(dir[2], std::sqrt(0.5f), 1e-6);
  EXPECT_NEAR(angle[1], 0.f, 1e-3);
  EXPECT_EQ(dir[4], 0.f);
  EXPECT_EQ(dir[5], 1.f);
  EXPECT_EQ(na[2], 0.f);
  // t = 0.25 of a quarter turn: 22.5 degrees from a.
  float d2[2], n1, n2, th;
  SlerpMerge(a, b, 1, 2, 0.25f, d2, &n1, &n2, &th);
  EXPECT_NEAR(d2[0], std::cos(M_PI / 8), 1e-6);
  EXPECT_NEAR(d2[1], std::sin(M_PI / 8), 1e-6);
}

}  // namespace
}  // namespace kvcomm::kernels::cpu
