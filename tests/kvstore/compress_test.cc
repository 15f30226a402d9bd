// The compression library: method and budget strings, what each method keeps on inputs built
// to make the answer obvious, budgets met (bytes exactly), pyramid allocation, both codecs'
// round trips and their refusal of damaged bytes, and impossible requests refused.
#include "kvstore/compress/compress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/realign.h"
#include "kvstore/compress/methods.h"
#include "tests/kvstore/compress_fixtures.h"

namespace kvcomm::kvstore::compress {
namespace {

TEST(CompressSpec, MethodsAndBudgetsParseOrSayWhy) {
  auto spec = ParseMethodSpec("snapkv:window=32,kernel=7");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->name, "snapkv");
  EXPECT_EQ(spec->params.at("kernel"), "7");
  EXPECT_FALSE(ParseMethodSpec("SnapKV").ok());
  EXPECT_FALSE(ParseMethodSpec("snapkv:window").ok());
  EXPECT_FALSE(ParseMethodSpec("snapkv:window=1,window=2").ok());
  struct Case {
    std::string text;
    Budget::Kind kind;
    double value;
  } good[] = {{"128", Budget::Kind::kTokens, 128},   {"25%", Budget::Kind::kFraction, 0.25},
              {"0.5", Budget::Kind::kFraction, 0.5}, {"64KiB", Budget::Kind::kBytes, 65536},
              {"2MB", Budget::Kind::kBytes, 2e6},    {"", Budget::Kind::kNone, 0}};
  for (const auto& c : good) {
    auto b = ParseBudget(c.text);
    ASSERT_TRUE(b.ok()) << c.text;
    EXPECT_EQ(b->kind, c.kind) << c.text;
    EXPECT_DOUBLE_EQ(b->value, c.value) << c.text;
  }
  for (const char* bad : {"0", "-3", "150%", "1.5", "12 cats", "0KiB"})
    EXPECT_FALSE(ParseBudget(bad).ok()) << bad;
  EXPECT_EQ(Methods().size(), 18u);
}

TEST(Compress, StreamingLlmKeepsSinksAndTheMostRecent) {
  auto c = CompressKv(RandomKv(1), "streaming_llm:sinks=4", "12");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<int32_t> expected = {0, 1, 2, 3};
  for (int32_t t = kTokens - 8; t < static_cast<int32_t>(kTokens); ++t) expected.push_back(t);
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h) EXPECT_EQ(KeptOf(*c, l, h), expected);
}

TEST(Compress, KeyNormKeepsTheSmallestKeysPerHead) {
  auto kv = RandomKv(2);
  for (uint32_t d = 0; d < kDim; ++d) {  // tokens 5 and 9 of head 1 in layer 2: tiny keys
    At(kv, 2, 0, 1, 5, d) = 1e-3f;
    At(kv, 2, 0, 1, 9, d) = 2e-3f;
  }
  auto c = CompressKv(kv, "key_norm", "2");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(KeptOf(*c, 2, 1), (std::vector<int32_t>{5, 9}));
  EXPECT_NE(KeptOf(*c, 2, 0), (std::vector<int32_t>{5, 9}));
}

TEST(Compress, SnapKvKeepsTheWindowAndWhatItAttendsToWithNeighbours) {
  auto kv = RandomKv(3);
  const int64_t window = 4;
  const auto queries = QueriesPointingAt(kv, 20, window);
  auto c = CompressKv(kv, "snapkv:window=4,kernel=3", "7", "uniform", &queries, window);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h) {
      auto kept = KeptOf(*c, l, h);
      ASSERT_EQ(kept.size(), 7u);
      // Token 20 and its pooled neighbours 19 and 21, then the window 60..63.
      EXPECT_EQ(kept, (std::vector<int32_t>{19, 20, 21, 60, 61, 62, 63})) << l << "/" << h;
    }
  // Without queries a query-aware method is refused.
  auto refused = CompressKv(kv, "snapkv", "8");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("query-aware"), std::string::npos);
}

TEST(Compress, H2oKeepsHeavyHittersOfAllQueriesAndARecentShare) {
  auto kv = RandomKv(8);
  const auto queries = QueriesPointingAt(kv, 5, kTokens);  // every token's query
  auto c = CompressKv(kv, "h2o:recent=50", "4", "uniform", &queries, kTokens);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h) {
      auto kept = KeptOf(*c, l, h);
      ASSERT_EQ(kept.size(), 4u);
      // The heavy hitters: token 5, and one of the first tokens (causal queries before token
      // 5 can only attend to those).
      EXPECT_TRUE(kept[0] == 5 || kept[1] == 5);
      EXPECT_LT(kept[0], 5);
      EXPECT_EQ(kept[2], 62);  // the recent half of the budget
      EXPECT_EQ(kept[3], 63);
    }
  auto partial = CompressKv(kv, "h2o", "4", "uniform", &queries, kTokens - 1);
  EXPECT_FALSE(partial.ok());
}

TEST(Compress, LeverageKeepsTheOutlierOfThePreRopeKeySpace) {
  auto kv = RandomKv(9);
  std::mt19937 rng(3);
  std::normal_distribution<float> small(0, 1);
  // Pre-RoPE keys in the span of dims 0 and 1, but token 17's, which also has dim 5.
  std::vector<float> plain(kv.size());
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h)
      for (uint32_t t = 0; t < kTokens; ++t)
        for (uint32_t d = 0; d < kDim; ++d)
          At(plain, l, 0, h, t, d) = d < 2 ? small(rng) : (t == 17 && d == 5 ? 3.f : 0.f);
  // Stored after RoPE at positions 100.. (values stay random).
  std::vector<float> inv_freq(kDim / 2);
  for (uint32_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = std::pow(10000.f, -2.f * i / kDim);
  std::vector<int32_t> from(kTokens, 0), to(kTokens);
  for (uint32_t t = 0; t < kTokens; ++t) to[t] = 100 + static_cast<int32_t>(t);
  for (uint32_t l = 0; l < kLayers; ++l) {
    std::vector<float> layer(2 * kHeads * kTokens * kDim), rotated(layer.size());
    std::copy_n(&At(plain, l, 0, 0, 0, 0), kHeads * kTokens * kDim, layer.begin());
    kernels::cpu::RealignKv({1, kHeads, kTokens, kDim, 0}, layer.data(), from, to, inv_freq,
                            nullptr, nullptr, nullptr, rotated.data());
    std::copy_n(rotated.begin(), kHeads * kTokens * kDim, &At(kv, l, 0, 0, 0, 0));
  }
  for (const char* method : {"leverage:sketch=0", "leverage"}) {
    CompressRequest r;
    r.layout = Layout();
    r.kv = kv;
    r.inv_freq = inv_freq;
    r.first_position = 100;
    r.method = method;
    r.budget = "1";
    auto c = Compress(r);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    for (uint32_t l = 0; l < kLayers; ++l)
      for (uint32_t h = 0; h < kHeads; ++h)
        EXPECT_EQ(KeptOf(*c, l, h), (std::vector<int32_t>{17})) << method;
  }
  auto no_rope = CompressKv(kv, "leverage", "1");
  ASSERT_FALSE(no_rope.ok());
  EXPECT_NE(no_rope.status().message().find("pre-RoPE"), std::string::npos);
}

TEST(Compress, BudgetsAreMetByteBudgetsExactlyAndPyramidSpreadsThem) {
  const auto kv = RandomKv(4);
  auto fraction = CompressKv(kv, "key_norm", "25%");
  ASSERT_TRUE(fraction.ok());
  EXPECT_EQ(KeptOf(*fraction, 0, 0).size(), 16u);
  // Bytes: the largest uniform count that fits, in bf16 rows.
  for (uint64_t budget : {2000ull, 5000ull, 12345ull}) {
    auto c = CompressKv(kv, "key_norm", std::to_string(budget) + "B", "uniform", nullptr, 0,
                        DType::kBF16);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_LE(c->bytes.size(), budget);
    const uint64_t kept = KeptOf(*c, 0, 0).size() * kLayers * kHeads;
    EXPECT_EQ(c->bytes.size(), TokenSubsetBytes(Layout(DType::kBF16), kept));
    EXPECT_GT(TokenSubsetBytes(Layout(DType::kBF16), kept + kLayers * kHeads), budget);
  }
  auto pyramid = CompressKv(kv, "key_norm", "10", "pyramid:beta=5");
  ASSERT_TRUE(pyramid.ok()) << pyramid.status().ToString();
  uint32_t total = 0;
  for (uint32_t c : pyramid->kept) total += c;
  EXPECT_EQ(total, 10u * kLayers * kHeads);
  EXPECT_GT(pyramid->kept[0], pyramid->kept[kHeads]);
  EXPECT_GT(pyramid->kept[kHeads], pyramid->kept[2 * kHeads]);
  EXPECT_EQ(pyramid->kept[2 * kHeads], 2u);  // the top layer: 10 / beta
}

TEST(Compress, TokenSubsetRoundTripsTheKeptRowsAndRefusesDamage) {
  const auto kv = RandomKv(5);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    auto c = CompressKv(kv, "key_norm", "9", "uniform", nullptr, 0, dtype);
    ASSERT_TRUE(c.ok());
    auto subset = DecodeTokenSubset(c->bytes);
    ASSERT_TRUE(subset.ok()) << subset.status().ToString();
    size_t row = 0;
    for (uint32_t l = 0; l < kLayers; ++l)
      for (uint32_t h = 0; h < kHeads; ++h)
        for (uint32_t j = 0; j < 9; ++j, ++row)
          for (uint32_t d = 0; d < kDim; ++d) {
            const int32_t t = subset->indices[row];
            const float k = At(kv, l, 0, h, t, d);
            const float v = At(kv, l, 1, h, t, d);
            const float tol = dtype == DType::kF32 ? 0.f : 0.008f * std::abs(k) + 1e-6f;
            EXPECT_LE(std::abs(subset->keys[row * kDim + d] - k), tol);
            EXPECT_LE(std::abs(subset->values[row * kDim + d] - v),
                      dtype == DType::kF32 ? 0.f : 0.008f * std::abs(v) + 1e-6f);
          }
  }
  auto c = CompressKv(kv, "key_norm", "9");
  auto truncated = c->bytes;
  truncated.pop_back();
  EXPECT_EQ(DecodeTokenSubset(truncated).status().code(), ErrorCode::kDataLoss);
  auto bad_magic = c->bytes;
  bad_magic[0] = std::byte{'X'};
  EXPECT_EQ(DecodeTokenSubset(bad_magic).status().code(), ErrorCode::kDataLoss);
  auto unordered = c->bytes;
  const size_t first_index = 4 + 6 * 4 + 4 * kLayers * kHeads;
  std::swap_ranges(unordered.begin() + first_index, unordered.begin() + first_index + 4,
                   unordered.begin() + first_index + 4);
  EXPECT_NE(DecodeTokenSubset(unordered).status().message().find("ascending"), std::string::npos);
}

TEST(Compress, KiviQuantizesAllButTheResidualWindowWithinItsBits) {
  const auto kv = RandomKv(6);
  double previous_error = 0;
  for (int bits : {8, 4, 2}) {
    auto c = CompressKv(kv, "kivi:bits=" + std::to_string(bits) + ",group=8,residual=16", "");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    const KiviParams p{bits, 8, 16};
    EXPECT_EQ(c->bytes.size(), KiviBytes(Layout(), p));
    auto back = DecodeKivi(c->bytes);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    double error = 0, norm = 0;
    for (size_t i = 0; i < kv.size(); ++i) {
      error += (back->kv[i] - kv[i]) * (back->kv[i] - kv[i]);
      norm += kv[i] * kv[i];
    }
    error = std::sqrt(error / norm);
    EXPECT_GT(error, previous_error);  // fewer bits, more error
    EXPECT_LT(error, bits == 2 ? 0.5 : bits == 4 ? 0.12 : 0.01) << bits;
    previous_error = error;
    // The residual window (the last 16 tokens) is kept exactly.
    for (uint32_t t = kTokens - 16; t < kTokens; ++t)
      EXPECT_EQ(back->kv[(((1ull * 2 + 1) * kHeads + 1) * kTokens + t) * kDim + 3],
                At(kv, 1, 1, 1, t, 3));
  }
  auto smaller = KiviBytes(Layout(), {2, 8, 16});
  auto refused = CompressKv(kv, "kivi:group=8,residual=16", std::to_string(smaller - 1) + "B");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("needs"), std::string::npos);
  EXPECT_FALSE(CompressKv(kv, "kivi", "50%").ok());
  auto damaged = CompressKv(kv, "kivi:group=8", "")->bytes;
  damaged.resize(damaged.size() - 3);
  EXPECT_EQ(DecodeKivi(damaged).status().code(), ErrorCode::kDataLoss);
}

TEST(Compress, ImpossibleRequestsAreRefusedWithTheReason) {
  const auto kv = RandomKv(7);
  struct Case {
    std::string method, budget, allocator, expect;
  } cases[] = {
      {"h2o_plus", "8", "uniform", "unknown compression method 'h2o_plus'"},
      {"key_norm:sinks=x", "8", "uniform", "is not an integer"},
      {"key_norm:depth=2", "8", "uniform", "has no parameter 'depth'"},
      {"snapkv:kernel=4", "8", "uniform", "must be odd"},
      {"key_norm", "65", "uniform", "exceeds the segment's 64"},
      {"key_norm", "", "uniform", "needs a budget"},
      {"streaming_llm:sinks=10", "8", "uniform", "always keeps 10"},
      {"key_norm", "100B", "uniform", "below the smallest encoding"},
      {"key_norm", "8", "triangle", "unknown allocator"},
      {"kivi:bits=3", "", "uniform", "must be 2, 4 or 8"},
      {"kivi:group=16", "", "uniform", "must divide head_dim"},
  };
  for (const auto& c : cases) {
    auto r = CompressKv(kv, c.method, c.budget, c.allocator);
    ASSERT_FALSE(r.ok()) << c.method << " " << c.budget;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.expect << " / " << r.status().message();
  }
  CompressRequest wrong_size;
  wrong_size.layout = Layout();
  wrong_size.kv = std::span<const float>(kv).first(10);
  wrong_size.method = "key_norm";
  wrong_size.budget = "8";
  EXPECT_NE(Compress(wrong_size).status().message().find("KV has 10 values"), std::string::npos);
}

}  // namespace
}  // namespace kvcomm::kvstore::compress
