// The attention-derived compression scores: the window attention against ObservationScores,
// OBCache's saliencies against removing the token and recomputing, and Compactor's chunked
// non-causal attention by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/compress.h"
#include "tests/kernels/random_values.h"

namespace kvcomm::kernels::cpu {
namespace {

TEST(ObservationAttention, RowsAreCausalSoftmaxesThatSumToObservationScores) {
  const int64_t q_heads = 4, kv_heads = 2, window = 3, tokens = 10, dim = 8;
  auto q = testing::RandomNormal(q_heads * window * dim, 11);
  auto k = testing::RandomNormal(kv_heads * tokens * dim, 12);
  std::vector<float> probs(q_heads * window * tokens), scores(kv_heads * tokens);
  ObservationAttention(q.data(), k.data(), q_heads, kv_heads, window, tokens, dim, probs.data());
  ObservationScores(q.data(), k.data(), q_heads, kv_heads, window, tokens, dim, scores.data());
  std::vector<double> summed(kv_heads * tokens, 0.0);
  for (int64_t qh = 0; qh < q_heads; ++qh)
    for (int64_t i = 0; i < window; ++i) {
      const float* row = probs.data() + (qh * window + i) * tokens;
      const int64_t visible = tokens - window + i + 1;
      EXPECT_NEAR(std::accumulate(row, row + tokens, 0.0), 1.0, 1e-5);
      for (int64_t t = visible; t < tokens; ++t) EXPECT_EQ(row[t], 0.f);
      for (int64_t t = 0; t < tokens; ++t) summed[(qh / 2) * tokens + t] += row[t];
    }
  for (int64_t i = 0; i < kv_heads * tokens; ++i) EXPECT_NEAR(summed[i], scores[i], 1e-5);
}

// The attention output of one query over keys/values [0, visible), some tokens left out.
std::vector<double> Output(const float* q, const std::vector<float>& k, const std::vector<float>& v,
                           int64_t visible, int64_t dim, int64_t skip) {
  std::vector<double> w(visible), out(dim, 0.0);
  double top = -INFINITY, sum = 0;
  for (int64_t t = 0; t < visible; ++t) {
    double dot = 0;
    for (int64_t d = 0; d < dim; ++d) dot += double{q[d]} * k[t * dim + d];
    w[t] = dot / std::sqrt(double(dim));
    top = std::max(top, w[t]);
  }
  for (int64_t t = 0; t < visible; ++t) sum += (w[t] = t == skip ? 0 : std::exp(w[t] - top));
  for (int64_t t = 0; t < visible; ++t)
    for (int64_t d = 0; d < dim; ++d) out[d] += w[t] / sum * v[t * dim + d];
  return out;
}

TEST(OutputSaliency, JointIsTheExactOutputChangeOfRemovingTheToken) {
  // One kv head shared by two query heads; every window query's perturbation, summed.
  const int64_t q_heads = 2, window = 3, tokens = 9, dim = 4;
  auto q = testing::RandomNormal(q_heads * window * dim, 21);
  auto k = testing::RandomNormal(tokens * dim, 22);
  auto v = testing::RandomNormal(tokens * dim, 23);
  std::vector<float> joint(tokens), value(tokens);
  OutputSaliency(q.data(), k.data(), v.data(), q_heads, 1, window, tokens, dim,
                 SaliencyTarget::kJoint, joint.data());
  OutputSaliency(q.data(), k.data(), v.data(), q_heads, 1, window, tokens, dim,
                 SaliencyTarget::kValue, value.data());
  for (int64_t t = 0; t < tokens; ++t) {
    double removed = 0, zeroed_value = 0;
    for (int64_t qh = 0; qh < q_heads; ++qh)
      for (int64_t i = 0; i < window; ++i) {
        const int64_t visible = tokens - window + i + 1;
        if (t >= visible) continue;
        const float* query = q.data() + (qh * window + i) * dim;
        const auto full = Output(query, k, v, visible, dim, -1);
        const auto without = Output(query, k, v, visible, dim, t);
        auto v_zero = v;
        for (int64_t d = 0; d < dim; ++d) v_zero[t * dim + d] = 0;
        const auto zero = Output(query, k, v_zero, visible, dim, -1);
        for (int64_t d = 0; d < dim; ++d) {
          removed += (full[d] - without[d]) * (full[d] - without[d]);
          zeroed_value += (full[d] - zero[d]) * (full[d] - zero[d]);
        }
      }
    EXPECT_NEAR(joint[t], removed, 1e-5 * (1 + removed)) << t;
    EXPECT_NEAR(value[t], zeroed_value, 1e-5 * (1 + zeroed_value)) << t;
  }
}

TEST(OutputSaliency, KeyIsTheFirstOrderChangeOfZeroingTheKey) {
  // Small keys keep the logits small, where the first-order estimate is close to exact.
  const int64_t window = 2, tokens = 6, dim = 4;
  auto q = testing::RandomNormal(window * dim, 31);
  auto k = testing::RandomNormal(tokens * dim, 32);
  auto v = testing::RandomNormal(tokens * dim, 33);
  for (auto& x : k) x *= 0.01f;
  std::vector<float> key(tokens);
  OutputSaliency(q.data(), k.data(), v.data(), 1, 1, window, tokens, dim, SaliencyTarget::kKey,
                 key.data());
  for (int64_t t = 0; t < tokens; ++t) {
    double exact = 0;
    for (int64_t i = 0; i < window; ++i) {
      const int64_t visible = tokens - window + i + 1;
      if (t >= visible) continue;
      auto k_zero = k;
      for (int64_t d = 0; d < dim; ++d) k_zero[t * dim + d] = 0;
      const auto full = Output(q.data() + i * dim, k, v, visible, dim, -1);
      const auto zero = Output(q.data() + i * dim, k_zero, v, visible, dim, -1);
      for (int64_t d = 0; d < dim; ++d) exact += (full[d] - zero[d]) * (full[d] - zero[d]);
    }
    EXPECT_NEAR(key[t], exact, 0.05 * exact + 1e-9) << t;
    EXPECT_GT(key[t], 0.f);
  }
}

TEST(ChunkedAttentionScores, EveryQuerySeesItsWholeChunkAndOnlyIt) {
  // head_dim 1, one head, unscaled logits: chunk {0, 1} and chunk {2}.
  const float keys[] = {0.f, std::log(3.f), 7.f};
  const float queries[] = {1.f, 2.f, 1.f};
  float scores[3];
  ChunkedAttentionScores(queries, keys, 1, 1, 3, 1, 2, scores);
  // Query 0: softmax(0, ln 3) = (1/4, 3/4); query 1: softmax(0, 2 ln 3) = (1/10, 9/10).
  EXPECT_NEAR(scores[0], 0.25 + 0.1, 1e-6);
  EXPECT_NEAR(scores[1], 0.75 + 0.9, 1e-6);
  EXPECT_NEAR(scores[2], 1.0, 1e-6);  // alone in its chunk
  // Random: each chunk holds as much attention as it has queries (group heads averaged).
  const int64_t q_heads = 6, kv_heads = 2, tokens = 50, dim = 8, chunk = 16;
  auto q = testing::RandomNormal(q_heads * tokens * dim, 41);
  auto k = testing::RandomNormal(kv_heads * tokens * dim, 42);
  std::vector<float> s(kv_heads * tokens);
  ChunkedAttentionScores(q.data(), k.data(), q_heads, kv_heads, tokens, dim, chunk, s.data());
  for (int64_t h = 0; h < kv_heads; ++h)
    for (int64_t start = 0; start < tokens; start += chunk) {
      const int64_t n = std::min(chunk, tokens - start);
      const float* row = s.data() + h * tokens + start;
      EXPECT_NEAR(std::accumulate(row, row + n, 0.0), double(n), 1e-4);
    }
}

}  // namespace
}  // namespace kvcomm::kernels::cpu
