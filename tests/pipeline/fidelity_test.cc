// The fidelity measure of reuse modes: KL divergence of next-token distributions.
#include <gtest/gtest.h>

#include <cmath>

#include "agents/pipeline/runner.h"

namespace kvcomm::pipeline {
namespace {

TEST(KlDivergence, ZeroForTheSameDistributionWhateverTheShift) {
  const std::vector<float> a = {1.5f, -2.0f, 0.25f, 3.0f};
  const std::vector<float> shifted = {11.5f, 8.0f, 10.25f, 13.0f};  // same softmax
  EXPECT_NEAR(KlDivergence(a, a), 0.0, 1e-12);
  EXPECT_NEAR(KlDivergence(a, shifted), 0.0, 1e-9);
}

TEST(KlDivergence, MatchesTheFormulaOnTwoTokens) {
  // P = softmax(0, 0) = (1/2, 1/2); Q = softmax(0, log 3) = (1/4, 3/4).
  const std::vector<float> p = {0.0f, 0.0f};
  const std::vector<float> q = {0.0f, static_cast<float>(std::log(3.0))};
  const double expected = 0.5 * std::log(0.5 / 0.25) + 0.5 * std::log(0.5 / 0.75);
  EXPECT_NEAR(KlDivergence(p, q), expected, 1e-7);
  EXPECT_GT(KlDivergence(q, p), 0.0);
}

}  // namespace
}  // namespace kvcomm::pipeline
