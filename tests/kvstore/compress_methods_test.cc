// The value- and output-aware selection methods (CurDKV, OBCache, Compactor, KVCrush) and the
// score-aware allocators (CAKE layers, AdaKV heads), each on an input built so that what it
// should keep differs from what an attention-only method keeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "kernels/compress.h"
#include "kvstore/compress/compress.h"
#include "kvstore/compress/methods.h"
#include "tests/kvstore/compress_fixtures.h"

namespace kvcomm::kvstore::compress {
namespace {

bool Contains(const std::vector<int32_t>& v, int32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST(CompressMethods, CurDkvCombinesLocallyNormalisedKeyAndValueNorms) {
  auto kv = RandomKv(31);
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h)
      for (uint32_t d = 0; d < kDim; ++d) {
        At(kv, l, 0, h, 30, d) *= 10;  // token 30: large key and value
        At(kv, l, 1, h, 30, d) *= 10;
        At(kv, l, 1, h, 40, d) *= 20;  // token 40: the largest value, an ordinary key
      }
  const std::pair<const char*, int32_t> cases[] = {{"curdkv:sinks=0", 30},
                                                   {"curdkv:sinks=0,combine=key", 30},
                                                   {"curdkv:sinks=0,combine=value", 40}};
  for (const auto& [method, expected] : cases) {
    auto c = CompressKv(kv, method, "1");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    for (uint32_t l = 0; l < kLayers; ++l)
      for (uint32_t h = 0; h < kHeads; ++h)
        EXPECT_EQ(KeptOf(*c, l, h), std::vector<int32_t>{expected}) << method;
  }
  auto sinks = CompressKv(kv, "curdkv:sketch=16", "5");
  ASSERT_TRUE(sinks.ok()) << sinks.status().ToString();
  EXPECT_EQ(KeptOf(*sinks, 1, 1), (std::vector<int32_t>{0, 1, 2, 3, 30}));
}

TEST(CompressMethods, ObCacheWeighsAttentionByWhatRemovingTheTokenChanges) {
  auto kv = RandomKv(32);
  const int64_t window = 4;
  const auto queries = QueriesPointingAt(kv, 20, window);
  for (uint32_t l = 0; l < kLayers; ++l)  // the attended token carries a zero value
    for (uint32_t h = 0; h < kHeads; ++h)
      for (uint32_t d = 0; d < kDim; ++d) At(kv, l, 1, h, 20, d) = 0;
  auto attention = CompressKv(kv, "snapkv:window=4,kernel=1", "5", "uniform", &queries, window);
  auto value = CompressKv(kv, "obcache:window=4,target=value", "5", "uniform", &queries, window);
  auto joint = CompressKv(kv, "obcache:window=4", "5", "uniform", &queries, window);
  auto key = CompressKv(kv, "obcache:window=4,target=key", "5", "uniform", &queries, window);
  ASSERT_TRUE(attention.ok() && value.ok() && joint.ok() && key.ok());
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h) {
      EXPECT_TRUE(Contains(KeptOf(*attention, l, h), 20));
      // Zeroing a zero value changes nothing; removing the token (or its key) moves the output
      // from ~0 to the mean of the others.
      EXPECT_FALSE(Contains(KeptOf(*value, l, h), 20));
      EXPECT_TRUE(Contains(KeptOf(*joint, l, h), 20));
      EXPECT_TRUE(Contains(KeptOf(*key, l, h), 20));
      for (int32_t t = kTokens - window; t < static_cast<int32_t>(kTokens); ++t)
        EXPECT_TRUE(Contains(KeptOf(*joint, l, h), t));
    }
}

TEST(CompressMethods, CompactorBlendsKeyLeverageWithNonCausalAttention) {
  auto kv = RandomKv(33);
  auto queries = QueriesPointingAt(kv, 20, kTokens);  // every token's query attends to 20
  // Token 30's key is an outlier orthogonal to the queries: high leverage, little attention.
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h)
      for (uint32_t d = 0; d < kDim; ++d) At(kv, l, 0, h, 30, d) = d % 2 ? -12.f : 12.f;
  // Zero frequencies: RoPE is the identity, so the stored keys are the pre-RoPE keys.
  const std::vector<float> inv_freq(kDim / 2, 0.f);
  auto run = [&](const char* method) {
    CompressRequest r;
    r.layout = Layout();
    r.kv = kv;
    r.queries = queries;
    r.q_heads = 2 * kHeads;
    r.window = kTokens;
    r.inv_freq = inv_freq;
    r.method = method;
    r.budget = "13";  // 8 sinks + 4 recent + 1
    return Compress(r);
  };
  auto attention_only = run("compactor:blend=0");
  auto leverage_heavy = run("compactor:blend=100");
  ASSERT_TRUE(attention_only.ok()) << attention_only.status().ToString();
  ASSERT_TRUE(leverage_heavy.ok()) << leverage_heavy.status().ToString();
  std::vector<int32_t> fixed = {0, 1, 2, 3, 4, 5, 6, 7, 60, 61, 62, 63};
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h) {
      auto a = KeptOf(*attention_only, l, h), b = KeptOf(*leverage_heavy, l, h);
      for (int32_t t : fixed) EXPECT_TRUE(Contains(a, t) && Contains(b, t));
      // Attention is mean-pooled over 3 tokens: token 20 or a neighbour sharing its score.
      EXPECT_TRUE(Contains(a, 19) || Contains(a, 20) || Contains(a, 21))
          << ::testing::PrintToString(a);
      EXPECT_TRUE(Contains(b, 30));
    }
  queries.resize(queries.size() / kTokens * 4);
  CompressRequest partial;
  partial.layout = Layout();
  partial.kv = kv;
  partial.queries = queries;
  partial.q_heads = 2 * kHeads;
  partial.window = 4;
  partial.inv_freq = inv_freq;
  partial.method = "compactor";
  partial.budget = "13";
  auto refused = Compress(partial);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("queries of every token"), std::string::npos);
}

TEST(CompressMethods, D2oMergesEvictedTokensIntoTheirMostSimilarKeptKey) {
  // One head, three tokens of dimension 2: token 2's key points like token 0's.
  const KvLayout layout{1, 1, 3, 2, DType::kF32};
  std::vector<float> keys = {1, 0, 0, 1, 2, 0}, values = {1, 1, 5, 5, 3, -1};
  LayerView view{keys.data(), values.data()};
  const std::vector<int32_t> kept = {0, 1};
  auto merge = [&](const std::string& method) {
    auto scorer = MakeScorer(*ParseMethodSpec(method));
    EXPECT_TRUE(scorer.ok()) << scorer.status().ToString();
    std::vector<float> k = {1, 0, 0, 1}, v = {1, 1, 5, 5};
    (*scorer)->MergeEvicted(layout, view, 0, kept, k, v);
    return std::make_pair(k, v);
  };
  // Similarity 1: weights e and e^1 -> the mean of the two tokens; token 1 untouched.
  auto [k, v] = merge("d2o:threshold=0.5");
  EXPECT_NEAR(k[0], 1.5f, 1e-6);
  EXPECT_NEAR(k[1], 0.f, 1e-6);
  EXPECT_NEAR(v[0], 2.f, 1e-6);
  EXPECT_NEAR(v[1], 0.f, 1e-6);
  EXPECT_EQ(std::vector<float>(k.begin() + 2, k.end()), (std::vector<float>{0, 1}));
  EXPECT_EQ(std::vector<float>(v.begin() + 2, v.end()), (std::vector<float>{5, 5}));
  // Below the threshold nothing moves.
  keys[4] = 0.5f;
  keys[5] = 0.5f;  // cosine 0.71 with both kept keys
  auto [k2, v2] = merge("d2o:threshold=0.8");
  EXPECT_EQ(k2, (std::vector<float>{1, 0, 0, 1}));
  EXPECT_EQ(v2, (std::vector<float>{1, 1, 5, 5}));

  // Through Compress: H2O's choice of tokens, with merged rows.
  auto kv = RandomKv(37);
  const auto queries = QueriesPointingAt(kv, 5, kTokens);
  auto h2o = CompressKv(kv, "h2o", "8", "uniform", &queries, kTokens);
  auto d2o = CompressKv(kv, "d2o", "8", "uniform", &queries, kTokens);
  ASSERT_TRUE(h2o.ok() && d2o.ok()) << d2o.status().ToString();
  auto plain = DecodeTokenSubset(h2o->bytes), merged = DecodeTokenSubset(d2o->bytes);
  ASSERT_TRUE(plain.ok() && merged.ok());
  EXPECT_EQ(plain->indices, merged->indices);
  EXPECT_NE(plain->values, merged->values);
  EXPECT_EQ(plain->values.size(), merged->values.size());
}

TEST(CompressMethods, KvCrushKeepsRepresentativesOfWhatWouldBeDropped) {
  auto kv = RandomKv(34);
  const int64_t window = 4;
  const auto queries = QueriesPointingAt(kv, 20, window);
  // share=0: exactly the window attention's choice.
  auto plain = CompressKv(kv, "snapkv:window=4,kernel=1", "10", "uniform", &queries, window);
  auto none = CompressKv(kv, "kvcrush:window=4,share=0", "10", "uniform", &queries, window);
  auto crush = CompressKv(kv, "kvcrush:window=4,share=50", "10", "uniform", &queries, window);
  ASSERT_TRUE(plain.ok() && none.ok() && crush.ok()) << crush.status().ToString();
  for (uint32_t l = 0; l < kLayers; ++l) {
    std::vector<int32_t> representatives;
    for (uint32_t h = 0; h < kHeads; ++h) {
      EXPECT_EQ(KeptOf(*none, l, h), KeptOf(*plain, l, h));
      const auto kept = KeptOf(*crush, l, h);
      ASSERT_EQ(kept.size(), 10u);
      // 5 representatives (50% of 10, within the 6 not forced); the other 5: the window + 20.
      EXPECT_TRUE(Contains(kept, 20));
      std::vector<int32_t> rest;
      for (int32_t t : kept)
        if (t != 20 && t < static_cast<int32_t>(kTokens) - window) rest.push_back(t);
      ASSERT_EQ(rest.size(), 5u);
      if (h == 0) representatives = rest;
      EXPECT_EQ(rest, representatives) << "representatives are shared by the layer's heads";
    }
  }
}

TEST(CompressMethods, MikvKeepsSnapKvsChoiceExactlyAndQuantizesTheRest) {
  auto kv = RandomKv(38);
  const int64_t window = 4;
  const auto queries = QueriesPointingAt(kv, 20, window);
  auto mikv =
      CompressKv(kv, "mikv:window=4,kernel=1,bits=4,group=8", "6", "uniform", &queries, window);
  auto snap = CompressKv(kv, "snapkv:window=4,kernel=1", "6", "uniform", &queries, window);
  ASSERT_TRUE(mikv.ok() && snap.ok()) << mikv.status().ToString();
  EXPECT_EQ(mikv->codec, CompressedCodec::kMixed);
  EXPECT_EQ(mikv->bytes.size(), MixedBytes(Layout(), 6 * kLayers * kHeads, {4, 8}));
  auto decoded = DecodeMixed(mikv->bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  auto subset = DecodeTokenSubset(snap->bytes);
  ASSERT_TRUE(subset.ok());
  EXPECT_EQ(decoded->indices, subset->indices);
  // Kept rows as stored (fp32 here); the others within half a 4-bit step of their group.
  size_t row = 0;
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h) {
      std::vector<bool> kept(kTokens, false);
      for (int i = 0; i < 6; ++i, ++row) kept[decoded->indices[row]] = true;
      for (uint32_t half = 0; half < 2; ++half)
        for (uint32_t t = 0; t < kTokens; ++t)
          for (uint32_t d = 0; d < kDim; ++d) {
            const float want = At(kv, l, half, h, t, d), got = At(decoded->kv, l, half, h, t, d);
            if (kept[t]) {
              ASSERT_EQ(got, want);
            } else {
              ASSERT_NEAR(got, want, 0.5);  // unit normals: a 4-bit step is below 0.6
            }
          }
    }
  // A byte budget is met exactly, and damage is refused.
  auto bytes =
      CompressKv(kv, "mikv:window=4,kernel=1,group=8", "9000B", "uniform", &queries, window);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_LE(bytes->bytes.size(), 9000u);
  uint64_t kept = 0;
  for (uint32_t c : bytes->kept) kept += c;
  EXPECT_GT(MixedBytes(Layout(), kept + kLayers * kHeads, {2, 8}), 9000u);
  auto damaged = bytes->bytes;
  damaged.pop_back();
  EXPECT_EQ(DecodeMixed(damaged).status().code(), ErrorCode::kDataLoss);
  EXPECT_FALSE(CompressKv(kv, "mikv:bits=3", "6", "uniform", &queries, window).ok());
  EXPECT_FALSE(CompressKv(kv, "mikv:group=16", "6", "uniform", &queries, window).ok());
}

TEST(CompressMethods, GearKeepsOutliersExactlyAndBeatsPlainQuantization) {
  auto kv = RandomKv(39);
  At(kv, 1, 0, 1, 9, 3) = 40.f;  // an outlier that would stretch its group's scale
  auto gear = CompressKv(kv, "gear:bits=2,group=8,rank=2,outliers=1", "");
  ASSERT_TRUE(gear.ok()) << gear.status().ToString();
  EXPECT_EQ(gear->codec, CompressedCodec::kGear);
  const int64_t outliers = static_cast<int64_t>(0.01 * kTokens * kDim);
  EXPECT_EQ(gear->bytes.size(), GearBytes(Layout(), {2, 8, 2, outliers}));
  auto decoded = DecodeGear(gear->bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(At(decoded->kv, 1, 0, 1, 9, 3), 40.f);
  // Against 2-bit quantization of the same groups alone.
  std::vector<float> plain(kv.size());
  std::vector<uint8_t> codes(kv.size() / 4);
  std::vector<float> scale(kv.size() / 8), zero(kv.size() / 8);
  kernels::cpu::QuantizeGroups(kv.data(), kv.size() / 8, 8, 2, codes.data(), scale.data(),
                               zero.data());
  kernels::cpu::DequantizeGroups(codes.data(), scale.data(), zero.data(), kv.size() / 8, 8, 2,
                                 plain.data());
  double gear_error = 0, plain_error = 0;
  for (size_t i = 0; i < kv.size(); ++i) {
    gear_error += (decoded->kv[i] - kv[i]) * (decoded->kv[i] - kv[i]);
    plain_error += (plain[i] - kv[i]) * (plain[i] - kv[i]);
  }
  EXPECT_LT(gear_error, 0.8 * plain_error);
  auto damaged = gear->bytes;
  damaged.resize(damaged.size() - 1);
  EXPECT_EQ(DecodeGear(damaged).status().code(), ErrorCode::kDataLoss);
}

TEST(CompressMethods, MiniCacheSharesDirectionsOfAdjacentLayersAndRetainsOddTokens) {
  auto kv = RandomKv(40);
  // Layer 2 = 2 x layer 1 (same directions) but token 7, which points elsewhere.
  for (uint32_t half = 0; half < 2; ++half)
    for (uint32_t h = 0; h < kHeads; ++h)
      for (uint32_t t = 0; t < kTokens; ++t)
        for (uint32_t d = 0; d < kDim; ++d)
          At(kv, 2, half, h, t, d) = t == 7 ? (d == 0 ? 5.f : 0.f) : 2 * At(kv, 1, half, h, t, d);
  auto c = CompressKv(kv, "minicache:start=1,retain=2", "");  // 2% of 64 tokens: 1
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->codec, CompressedCodec::kMiniCache);
  EXPECT_EQ(c->bytes.size(), MiniCacheBytes(Layout(), {1, 1}));
  EXPECT_LT(c->bytes.size(), kv.size() * 4 * 8 / 10);  // one of three layers nearly halved
  auto decoded = DecodeMiniCache(c->bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  for (uint32_t half = 0; half < 2; ++half)
    for (uint32_t h = 0; h < kHeads; ++h)
      for (uint32_t t = 0; t < kTokens; ++t)
        for (uint32_t d = 0; d < kDim; ++d) {
          ASSERT_EQ(At(decoded->kv, 0, half, h, t, d), At(kv, 0, half, h, t, d));  // not merged
          for (uint32_t l : {1u, 2u})
            ASSERT_NEAR(At(decoded->kv, l, half, h, t, d), At(kv, l, half, h, t, d), 1e-4)
                << l << " " << t;  // parallel rows rebuild exactly; token 7 is retained
        }
  EXPECT_FALSE(CompressKv(kv, "minicache:start=4", "").ok());
  EXPECT_FALSE(CompressKv(kv, "gear", "25%").ok());
  EXPECT_FALSE(CompressKv(kv, "gear:rank=9", "").ok());
  EXPECT_FALSE(CompressKv(kv, "minicache", "100B").ok());
}

TEST(CompressMethods, DuoKeepsEverythingInRetrievalHeadsAndAWindowElsewhere) {
  const auto kv = RandomKv(41);
  const std::vector<float> head_scores = {0.1f, 0.9f, 0.5f, 0.2f, 0.8f, 0.3f};
  auto run = [&](std::string method, std::string budget, bool scores = true) {
    CompressRequest r;
    r.layout = Layout();
    r.kv = kv;
    if (scores) r.head_scores = head_scores;
    r.method = std::move(method);
    r.budget = std::move(budget);
    return Compress(r);
  };
  auto half = run("duo:sinks=2,recent=6,retrieval=50", "");
  ASSERT_TRUE(half.ok()) << half.status().ToString();
  EXPECT_EQ(half->kept, (std::vector<uint32_t>{8, 64, 64, 8, 64, 8}));
  EXPECT_EQ(KeptOf(*half, 0, 0), (std::vector<int32_t>{0, 1, 58, 59, 60, 61, 62, 63}));
  EXPECT_EQ(KeptOf(*half, 0, 1).size(), 64u);
  // A budget of 22 tokens per head on average pays for one retrieval head: the best scored.
  auto budget = run("duo:sinks=2,recent=6", "22");
  ASSERT_TRUE(budget.ok()) << budget.status().ToString();
  EXPECT_EQ(budget->kept, (std::vector<uint32_t>{8, 64, 8, 8, 8, 8}));
  EXPECT_NE(run("duo", "22", false).status().message().find("calibrated score"), std::string::npos);
  EXPECT_NE(run("duo:retrieval=50", "22").status().message().find("not both"), std::string::npos);
  EXPECT_NE(run("duo:sinks=2,recent=6", "5").status().message().find("below the 8"),
            std::string::npos);
}

TEST(CompressMethods, LaqScoresWithTheQueriesOfADraftThatFollowsTheSegment) {
  auto kv = RandomKv(44);
  // Three draft queries (after the segment) per query head, all pointing at token 20.
  const auto draft = QueriesPointingAt(kv, 20, 3);
  CompressRequest r;
  r.layout = Layout();
  r.kv = kv;
  r.queries = draft;
  r.q_heads = 2 * kHeads;
  r.window = 3;
  r.queries_follow = true;
  r.method = "laq:kernel=1,recent=4";
  r.budget = "5";
  auto c = Compress(r);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h)
      EXPECT_EQ(KeptOf(*c, l, h), (std::vector<int32_t>{20, 60, 61, 62, 63}));
  r.queries_follow = false;  // window queries of the segment are not a draft
  auto refused = Compress(r);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("look-ahead draft"), std::string::npos);
}

TEST(CompressAllocators, CakeGivesDispersedShiftingLayersMore) {
  auto kv = RandomKv(35);
  const int64_t window = 8;
  auto queries = QueriesPointingAt(kv, 20, window);  // layer 0: every query on token 20
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0, 1);
  const size_t per_layer = queries.size() / kLayers;
  for (size_t i = per_layer; i < queries.size(); ++i) queries[i] = normal(rng);
  auto c = CompressKv(kv, "snapkv:window=8,kernel=1", "16", "cake", &queries, window);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(std::accumulate(c->kept.begin(), c->kept.end(), 0u), 16u * kLayers * kHeads);
  EXPECT_LT(c->kept[0], c->kept[kHeads]);
  EXPECT_LT(c->kept[0], c->kept[2 * kHeads]);
  EXPECT_GE(c->kept[0], 8u);  // never below the window the method keeps
  for (uint32_t l = 0; l < kLayers; ++l) EXPECT_EQ(c->kept[l * kHeads], c->kept[l * kHeads + 1]);

  const auto single = QueriesPointingAt(kv, 20, 1);
  auto one_query = CompressKv(kv, "snapkv:window=1,kernel=1", "16", "cake", &single, 1);
  ASSERT_FALSE(one_query.ok());
  EXPECT_NE(one_query.status().message().find("at least 2 queries"), std::string::npos);
}

TEST(CompressAllocators, LavaWeighsHeadsByTheirValuesAndLayersByScoreEntropy) {
  auto kv = RandomKv(42);
  const int64_t window = 8;
  auto queries = QueriesPointingAt(kv, 20, window);  // layer 0: every query on token 20
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0, 1);
  const size_t per_layer = queries.size() / kLayers;
  for (size_t i = per_layer; i < queries.size(); ++i) queries[i] = 0.3f * normal(rng);
  for (uint32_t l = 0; l < kLayers; ++l)  // kv head 1 writes 10x larger values
    for (uint32_t t = 0; t < kTokens; ++t)
      for (uint32_t d = 0; d < kDim; ++d) At(kv, l, 1, 1, t, d) *= 10;
  // With uniform budgets LAVa's per-head weight changes nothing: SnapKV's choice.
  auto snap = CompressKv(kv, "snapkv:window=8,kernel=1", "16", "uniform", &queries, window);
  auto uniform = CompressKv(kv, "lava:window=8,kernel=1", "16", "uniform", &queries, window);
  auto lava = CompressKv(kv, "lava:window=8,kernel=1", "16", "lava", &queries, window);
  ASSERT_TRUE(snap.ok() && uniform.ok() && lava.ok()) << lava.status().ToString();
  EXPECT_EQ(uniform->bytes, snap->bytes);
  EXPECT_EQ(std::accumulate(lava->kept.begin(), lava->kept.end(), 0u), 16u * kLayers * kHeads);
  uint32_t layer0 = 0, layer1 = 0;
  for (uint32_t h = 0; h < kHeads; ++h) {
    layer0 += lava->kept[h];
    layer1 += lava->kept[kHeads + h];
  }
  EXPECT_LT(layer0, layer1);  // concentrated attention: lower entropy, fewer tokens
  for (uint32_t l = 1; l < kLayers; ++l)
    EXPECT_GT(lava->kept[l * kHeads + 1], lava->kept[l * kHeads]) << l;  // the larger values
  auto negative = CompressKv(kv, "key_norm", "16", "lava", &queries, window);
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("must not be negative"), std::string::npos);
}

TEST(CompressAllocators, LossBudgetsKeepTheFewestTokensThatHoldTheWindowsAttention) {
  auto kv = RandomKv(43);
  const int64_t window = 4;
  const auto pointed = QueriesPointingAt(kv, 20, window);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0, 0.2f);
  std::vector<float> spread(pointed.size());
  for (auto& q : spread) q = normal(rng);
  auto focused =
      CompressKv(kv, "snapkv:window=4,kernel=1", "loss=0.05", "uniform", &pointed, window);
  auto diffuse =
      CompressKv(kv, "snapkv:window=4,kernel=1", "loss=0.05", "uniform", &spread, window);
  ASSERT_TRUE(focused.ok() && diffuse.ok()) << focused.status().ToString();
  // Attention on token 20 and the window itself: 5 tokens hold it.
  EXPECT_EQ(focused->kept, std::vector<uint32_t>(kLayers * kHeads, 5));
  EXPECT_GT(diffuse->kept[0], 30u);  // near-uniform attention needs most of the segment
  auto stricter =
      CompressKv(kv, "snapkv:window=4,kernel=1", "loss=0.01", "uniform", &spread, window);
  ASSERT_TRUE(stricter.ok());
  EXPECT_GT(stricter->kept[0], diffuse->kept[0]);
  EXPECT_FALSE(CompressKv(kv, "key_norm", "loss=0.05").ok());  // no queries to estimate with
  for (const char* bad : {"loss=0", "loss=1", "loss=x"}) EXPECT_FALSE(ParseBudget(bad).ok()) << bad;
  EXPECT_FALSE(CompressKv(kv, "kivi:group=8", "loss=0.05").ok());
}

TEST(CompressAllocators, D2oGivesLayersOfEvenAttentionMore) {
  auto kv = RandomKv(45);
  const int64_t window = 8;
  auto queries = QueriesPointingAt(kv, 20, window);  // layer 0: attention piled on one token
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0, 0.1f);
  for (size_t i = queries.size() / kLayers; i < queries.size(); ++i) queries[i] = normal(rng);
  auto c = CompressKv(kv, "snapkv:window=8,kernel=1", "16", "d2o", &queries, window);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(std::accumulate(c->kept.begin(), c->kept.end(), 0u), 16u * kLayers * kHeads);
  EXPECT_LT(c->kept[0], c->kept[kHeads]);  // concentrated (high variance): fewer
  EXPECT_LT(c->kept[0], c->kept[2 * kHeads]);
  EXPECT_FALSE(CompressKv(kv, "key_norm", "16", "d2o").ok());  // negative scores
}

TEST(CompressAllocators, AdaKvMovesBudgetFromConcentratedToDispersedHeads) {
  auto kv = RandomKv(36);
  const int64_t window = 4;
  auto queries = QueriesPointingAt(kv, 20, window);
  // kv head 1's query heads (2 and 3) look almost uniformly at everything.
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t qh = 2; qh < 4; ++qh)
      for (int64_t i = 0; i < window * kDim; ++i)
        queries[(uint64_t{l} * 2 * kHeads + qh) * window * kDim + i] = 0.01f;
  auto c = CompressKv(kv, "snapkv:window=4,kernel=1", "12", "uniform:heads=ada,floor=20", &queries,
                      window);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  for (uint32_t l = 0; l < kLayers; ++l) {
    EXPECT_EQ(c->kept[l * kHeads] + c->kept[l * kHeads + 1], 24u);
    EXPECT_LT(c->kept[l * kHeads], c->kept[l * kHeads + 1]);
    EXPECT_GE(c->kept[l * kHeads], 4u);
    EXPECT_TRUE(Contains(KeptOf(*c, l, 0), 20));
    EXPECT_EQ(KeptOf(*c, l, 0).size(), c->kept[l * kHeads]);
  }
  struct Case {
    std::string method, allocator, expect;
  } refused[] = {
      {"key_norm", "uniform:heads=ada", "must not be negative"},
      {"snapkv:window=4", "uniform:floor=10", "floor= applies to heads=ada only"},
      {"snapkv:window=4", "pyramid:heads=all", "is not one of uniform, ada"},
      {"snapkv:window=4", "cake:tau1=0", "is not in [0.01, 100]"},
  };
  for (const auto& r : refused) {
    auto got = CompressKv(kv, r.method, "12", r.allocator, &queries, window);
    ASSERT_FALSE(got.ok()) << r.allocator;
    EXPECT_NE(got.status().message().find(r.expect), std::string::npos)
        << r.expect << " / " << got.status().message();
  }
}

}  // namespace
}  // namespace kvcomm::kvstore::compress
