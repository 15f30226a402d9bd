#include "daemon/anchor_pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace kvcomm::daemon {
namespace {

// A segment of `tokens` tokens (2 layers, 1 kv head, head_dim 4) filled from `seed`, plus
// `shift` added to every value (V) element.
std::vector<float> Segment(uint32_t tokens, uint32_t seed, float shift = 0.f) {
  KvLayout layout{2, 1, tokens, 4, DType::kF32};
  std::vector<float> data(layout.PayloadBytes() / 4);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  for (auto& x : data) x = d(rng);
  for (uint32_t layer = 0; layer < 2; ++layer) {
    float* v = data.data() + layout.Offset(layer, 1, 0, 0) / 4;
    for (uint32_t i = 0; i < tokens * 4; ++i) v[i] += shift;
  }
  return data;
}
KvView View(const std::vector<float>& data, uint32_t tokens) {
  return {data.data(), {2, 1, tokens, 4, DType::kF32}};
}

TEST(AnchorPool, FewerThanTwoCandidatesMeansPrefill) {
  AnchorPoolConfig config;
  auto p = Segment(8, 1), a = Segment(8, 2), short_anchor = Segment(4, 3);
  EXPECT_TRUE(DecideReuse(View(p, 8), {}, config).prefill);
  EXPECT_TRUE(DecideReuse(View(p, 8), {View(a, 8)}, config).prefill);
  // The short anchor cannot cover 8 tokens, so only one candidate remains.
  EXPECT_TRUE(DecideReuse(View(p, 8), {View(a, 8), View(short_anchor, 4)}, config).prefill);
}

TEST(AnchorPool, ACloseAnchorGivesLowEntropyAndReuseAndIsCredited) {
  AnchorPoolConfig config;
  auto p = Segment(8, 1);
  auto near = p;  // same values but a tiny deviation
  near[near.size() - 1] += 0.01f;
  auto far1 = Segment(8, 5, 10.f), far2 = Segment(8, 6, -10.f);
  auto decision = DecideReuse(View(p, 8), {View(far1, 8), View(near, 8), View(far2, 8)}, config);
  EXPECT_FALSE(decision.prefill);
  EXPECT_LT(decision.entropy, 1e-6);
  EXPECT_NEAR(decision.limit, 0.3 * std::log2(3.0), 1e-12);
  EXPECT_EQ(decision.credited, std::vector<size_t>{1});
}

TEST(AnchorPool, TheClosestAnchorMustBeWithinTheRelativeDistanceLimit) {
  AnchorPoolConfig config;
  auto p = Segment(8, 1);
  auto near = p;
  for (auto& x : near) x *= 1.05f;  // 5% away
  auto far = Segment(8, 5, 10.f);
  auto decision = DecideReuse(View(p, 8), {View(near, 8), View(far, 8)}, config);
  EXPECT_FALSE(decision.prefill);
  EXPECT_NEAR(decision.relative_distance, 0.05, 1e-4);
  config.max_relative_distance = 0.04;  // the standout anchor is still not close enough
  EXPECT_TRUE(DecideReuse(View(p, 8), {View(near, 8), View(far, 8)}, config).prefill);
  config.max_relative_distance = 0;  // no limit: KVCOMM's entropy rule alone
  auto unrelated = Segment(8, 7, 3.f);
  EXPECT_FALSE(DecideReuse(View(p, 8), {View(unrelated, 8), View(far, 8)}, config).prefill);
}

TEST(AnchorPool, EquidistantAnchorsGiveMaximumEntropyAndPrefill) {
  AnchorPoolConfig config;
  auto p = Segment(8, 1);
  auto up = p, down = p;  // both at the same distance from p
  KvLayout layout{2, 1, 8, 4, DType::kF32};
  for (uint32_t layer = 0; layer < 2; ++layer) {
    const size_t v = layout.Offset(layer, 1, 0, 0) / 4;
    for (size_t i = 0; i < 32; ++i) {
      up[v + i] += 0.5f;
      down[v + i] -= 0.5f;
    }
  }
  auto decision = DecideReuse(View(p, 8), {View(up, 8), View(down, 8)}, config);
  EXPECT_TRUE(decision.prefill);
  EXPECT_NEAR(decision.entropy, 1.0, 1e-9);  // two equal weights: one bit
}

TEST(AnchorPool, TopPCreditsTheSmallestSetReachingTheMass) {
  // Value distances 1.5, 0, 1: softmax(-d) gives weights ~0.14, 0.63, 0.23.
  AnchorPoolConfig config;
  config.entropy_threshold = 1.0;  // reuse whatever the entropy
  config.top_p = 0.75;
  auto p = Segment(1, 1);
  KvLayout layout{2, 1, 1, 4, DType::kF32};
  auto shifted = [&](float norm) {
    auto copy = p;
    copy[layout.Offset(1, 1, 0, 0) / 4] += norm;  // one value element moved by `norm`
    return copy;
  };
  auto a0 = shifted(0.f), a1 = shifted(1.f), a2 = shifted(1.5f);
  auto decision = DecideReuse(View(p, 1), {View(a2, 1), View(a0, 1), View(a1, 1)}, config);
  EXPECT_FALSE(decision.prefill);
  EXPECT_EQ(decision.credited, (std::vector<size_t>{1, 2}));  // 0.63 < 0.75 <= 0.63 + 0.23
}

TEST(AnchorPool, PlaceholderWeightsFollowTheFormula) {
  // One layer-token element differs: anchor 0 by 1 in K, anchor 1 by 3 in K; values equal.
  auto p = Segment(2, 1);
  KvLayout layout{2, 1, 2, 4, DType::kF32};
  auto a0 = p, a1 = p;
  a0[layout.Offset(0, 0, 0, 1) / 4] += 1.f;  // token 1, layer 0, K
  a1[layout.Offset(0, 0, 0, 1) / 4] += 3.f;
  auto w = PlaceholderWeights(View(p, 2), {View(a0, 2), View(a1, 2)}, 1.0);
  // Token 0: no difference: equal weights. Token 1: mean |d| over 2 layers x 1 head x 4 dims.
  EXPECT_NEAR(w.key[0 * 2 + 0], 0.5, 1e-6);
  EXPECT_NEAR(w.key[1 * 2 + 0], 0.5, 1e-6);
  const double d0 = 1.0 / 8, d1 = 3.0 / 8;
  EXPECT_NEAR(w.key[0 * 2 + 1], std::exp(-d0) / (std::exp(-d0) + std::exp(-d1)), 1e-6);
  EXPECT_NEAR(w.key[1 * 2 + 1], std::exp(-d1) / (std::exp(-d0) + std::exp(-d1)), 1e-6);
  EXPECT_NEAR(w.value[0 * 2 + 1], 0.5, 1e-6);
  // The reuse decision's distance sums give the same weights.
  AnchorPoolConfig config;
  config.max_relative_distance = 0;
  const ReuseDecision decision = DecideReuse(View(p, 2), {View(a0, 2), View(a1, 2)}, config);
  const BlendWeights from_sums = PlaceholderWeights(decision.token_sums, 2, layout, 1.0);
  EXPECT_EQ(from_sums.key, w.key);
  EXPECT_EQ(from_sums.value, w.value);
}

TEST(AnchorPool, FollowingSegmentWeightsArePerChannelL2AlongTokens) {
  auto p = Segment(2, 1);
  KvLayout layout{2, 1, 2, 4, DType::kF32};
  auto a0 = p, a1 = p;
  // Channel (layer 1, V, head 0, dim 2): anchor 0 differs by 3 and 4 at tokens 0 and 1 (L2 5),
  // anchor 1 by 1 at token 0 (L2 1). Every other channel is identical: equal weights.
  a0[layout.Offset(1, 1, 0, 0) / 4 + 2] += 3.f;
  a0[layout.Offset(1, 1, 0, 1) / 4 + 2] += 4.f;
  a1[layout.Offset(1, 1, 0, 0) / 4 + 2] += 1.f;
  auto w = FollowingSegmentWeights(View(p, 2), {View(a0, 2), View(a1, 2)}, 2.0);
  const size_t channels = 2 * 2 * 1 * 4, channel = ((1 * 2 + 1) * 1 + 0) * 4 + 2;
  ASSERT_EQ(w.size(), 2 * channels);
  const double e0 = std::exp(-5.0 / 2), e1 = std::exp(-1.0 / 2);
  EXPECT_NEAR(w[channel], e0 / (e0 + e1), 1e-6);
  EXPECT_NEAR(w[channels + channel], e1 / (e0 + e1), 1e-6);
  EXPECT_NEAR(w[0], 0.5, 1e-6);
  EXPECT_NEAR(w[channels + 0], 0.5, 1e-6);
}

TEST(AnchorSlot, AtCapacityEvictsTheLeastActivatedOfTheOldest) {
  AnchorPoolConfig config;
  config.capacity = 6;
  config.eviction_window = 3;
  AnchorSlot slot(config);
  for (uint64_t i = 0; i < 6; ++i) ASSERT_FALSE(slot.Add({SegmentKey{0, i}, 8, 0, {}}).has_value());
  slot.Credit({0, 0, 2, 3, 3, 3});  // activations: 2, 0, 1, 3, 0, 0
  auto evicted = slot.Add({SegmentKey{0, 100}, 8, 0, {}});
  ASSERT_TRUE(evicted.has_value());
  EXPECT_EQ(evicted->base, (SegmentKey{0, 1}));  // fewest among the 3 oldest (ids 0, 1, 2)
  ASSERT_EQ(slot.anchors().size(), 6u);
  EXPECT_EQ(slot.anchors().back().base, (SegmentKey{0, 100}));
  // Next: the least activated of the new three oldest (ids 0, 2, 3 with 2, 1, 3).
  evicted = slot.Add({SegmentKey{0, 101}, 8, 0, {}});
  EXPECT_EQ(evicted->base, (SegmentKey{0, 2}));
}

TEST(AnchorSlot, CandidatesDeltasAndReplacement) {
  AnchorSlot slot(AnchorPoolConfig{});
  slot.Add({SegmentKey{0, 1}, 4, 0, {}});
  slot.Add({SegmentKey{0, 2}, 16, 0, {}});
  EXPECT_EQ(slot.CandidatesFor(8), std::vector<size_t>{1});
  EXPECT_TRUE(slot.SetDeltas(SegmentKey{0, 2}, "coder", {SegmentKey{1, 1}, SegmentKey{1, 2}}));
  EXPECT_FALSE(slot.SetDeltas(SegmentKey{9, 9}, "coder", {}));
  EXPECT_EQ(slot.anchors()[1].deltas.at("coder").following, (SegmentKey{1, 2}));
  slot.Add({SegmentKey{0, 1}, 32, 0, {}});  // same base again: replaced, not duplicated
  EXPECT_EQ(slot.anchors().size(), 2u);
  EXPECT_EQ(slot.anchors()[0].tokens, 32u);
}

TEST(AnchorPoolConfig, RejectsBadSettings) {
  EXPECT_TRUE(AnchorPoolConfig{}.Validate().ok());
  AnchorPoolConfig c;
  c.eviction_window = 30;
  EXPECT_FALSE(c.Validate().ok());
  c = {};
  c.top_p = 0;
  EXPECT_FALSE(c.Validate().ok());
  c = {};
  c.entropy_threshold = 2;
  EXPECT_FALSE(c.Validate().ok());
}

}  // namespace
}  // namespace kvcomm::daemon
