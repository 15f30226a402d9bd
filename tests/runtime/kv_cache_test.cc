// The KV-cache primitives reuse depends on: export, import at any position, prefill around
// imported segments, with exactly the logits of computing everything.
#include "agents/runtime/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "agents/runtime/generate.h"
#include "agents/runtime/model.h"

namespace kvcomm::runtime {
namespace {

std::unique_ptr<Model> TinyModel(const std::string& type = "llama") {
  auto config = ModelConfig::FromJson(
      R"({"model_type": ")" + type + R"(", "vocab_size": 97, "hidden_size": 48,
      "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
      "torch_dtype": "float32"})",
      "test");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return *Model::FromWeights(*config, RandomWeights(*config, 7));
}

std::vector<int32_t> Tokens(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % 97);
  return ids;
}

TEST(KvCache, ImportedSegmentGivesExactlyTheLogitsOfComputingIt) {
  auto model = TinyModel();
  const auto ids = Tokens(40, 1);
  // Computed: [0, 10), [10, 30), [30, 40). Reused: [0, 10), import of [10, 30), [30, 40).
  // Both run the same GEMM shapes, so any difference could only come from the imported KV.
  KvCache full = *model->NewCache(64);
  ASSERT_TRUE(model->Forward(std::span(ids).first(10), full).ok());
  ASSERT_TRUE(model->Forward(std::span(ids).subspan(10, 20), full).ok());
  auto expected = model->Forward(std::span(ids).subspan(30), full, true);
  ASSERT_TRUE(expected.ok());
  auto segment = full.Export(10, 30, DType::kF32);
  ASSERT_TRUE(segment.ok()) << segment.status().ToString();
  KvCache reused = *model->NewCache(64);
  ASSERT_TRUE(model->Forward(std::span(ids).first(10), reused).ok());
  ASSERT_TRUE(reused.Import(reused.SegmentLayout(20, DType::kF32), segment->span(), 10).ok());
  EXPECT_EQ(reused.length(), 30);
  auto got = model->Forward(std::span(ids).subspan(30), reused, true);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  const int64_t vocab = 97;
  for (int64_t t = 0; t < 10; ++t) {
    for (int64_t v = 0; v < vocab; ++v) {
      ASSERT_EQ((*got)[t * vocab + v], (*expected)[t * vocab + v]) << t << "," << v;
    }
  }
}

TEST(KvCache, ImportBeyondTheComputedPrefixLeavesAGapThatForwardFills) {
  auto model = TinyModel("qwen2");
  const auto ids = Tokens(24, 2);
  KvCache full = *model->NewCache(32);
  ASSERT_TRUE(model->Forward(std::span(ids).first(16), full).ok());
  ASSERT_TRUE(model->Forward(std::span(ids).subspan(16), full).ok());
  auto tail_kv = full.Export(16, 24, DType::kF32);
  ASSERT_TRUE(tail_kv.ok());

  KvCache gapped = *model->NewCache(32);
  ASSERT_TRUE(gapped.Import(gapped.SegmentLayout(8, DType::kF32), tail_kv->span(), 16).ok());
  EXPECT_EQ(gapped.length(), 0);
  // Overlapping the imported segment is refused; computing exactly the gap is fine.
  EXPECT_EQ(model->Forward(std::span(ids).first(20), gapped).status().code(),
            ErrorCode::kInvalidArgument);
  ASSERT_TRUE(model->Forward(std::span(ids).first(16), gapped).ok());
  EXPECT_EQ(gapped.length(), 24);
  // The cache now equals the fully computed one, so the next token's logits agree exactly.
  const int32_t next = 5;
  auto a = model->Forward(std::span(&next, 1), full);
  auto b = model->Forward(std::span(&next, 1), gapped);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(KvCache, Bf16ExportRoundTripsWithinBf16Precision) {
  auto model = TinyModel();
  const auto ids = Tokens(12, 3);
  KvCache cache = *model->NewCache(16);
  ASSERT_TRUE(model->Forward(ids, cache).ok());
  auto bf16 = cache.Export(0, 12, DType::kBF16);
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(bf16->size(), cache.SegmentLayout(12, DType::kBF16).PayloadBytes());
  KvCache copy = *model->NewCache(16);
  ASSERT_TRUE(copy.Import(copy.SegmentLayout(12, DType::kBF16), bf16->span(), 0).ok());
  for (int64_t layer = 0; layer < 3; ++layer) {
    for (int64_t i = 0; i < 2 * 16 * 8; ++i) {
      if (!cache.IsValid((i / 8) % 16)) continue;
      const float a = cache.keys(layer)[i], b = copy.keys(layer)[i];
      ASSERT_NEAR(a, b, std::abs(a) * 0x1p-8f + 1e-30f);
    }
  }
}

TEST(KvCache, TruncateDropsTheTailAndForwardRecomputesItIdentically) {
  auto model = TinyModel();
  const auto ids = Tokens(16, 4);
  KvCache cache = *model->NewCache(32);
  ASSERT_TRUE(model->Forward(std::span(ids).first(10), cache).ok());
  auto expected = model->Forward(std::span(ids).subspan(10), cache, true);
  ASSERT_TRUE(expected.ok());
  cache.Truncate(10);
  EXPECT_EQ(cache.length(), 10);
  auto again = model->Forward(std::span(ids).subspan(10), cache, true);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *expected);
}

TEST(KvCache, BadImportsAndExportsAreRefused) {
  auto model = TinyModel();
  KvCache cache = *model->NewCache(16);
  EXPECT_FALSE(cache.Export(0, 4, DType::kF32).ok());  // nothing computed yet
  std::vector<std::byte> bytes(cache.SegmentLayout(4, DType::kF32).PayloadBytes());
  EXPECT_FALSE(cache.Import(cache.SegmentLayout(4, DType::kF32), bytes, 14).ok());  // past the end
  KvLayout wrong = cache.SegmentLayout(4, DType::kF32);
  wrong.kv_heads = 3;
  EXPECT_FALSE(cache.Import(wrong, bytes, 0).ok());
  EXPECT_FALSE(
      cache.Import(cache.SegmentLayout(4, DType::kF32), std::span(bytes).first(8), 0).ok());
  const int32_t bad_token = 1000;
  EXPECT_EQ(model->Forward(std::span(&bad_token, 1), cache).status().code(),
            ErrorCode::kInvalidArgument);
}

TEST(KvCache, KeptRowsPerHeadActLikeACacheWithoutTheDroppedTokens) {
  auto model = TinyModel();
  const auto ids = Tokens(30, 9);
  KvCache full = *model->NewCache(32);
  ASSERT_TRUE(model->Forward(std::span(ids).first(29), full).ok());
  auto expected = model->Forward(std::span(ids).subspan(29), full);
  auto segment = full.Export(0, 29, DType::kF32);
  ASSERT_TRUE(expected.ok() && segment.ok());
  const auto layout = full.SegmentLayout(29, DType::kF32);
  const float* kv = reinterpret_cast<const float*>(segment->span().data());
  auto row = [&](uint32_t layer, int half, uint32_t head, int32_t t) {
    return kv + ((uint64_t{layer} * 2 + half) * layout.kv_heads + head) * 29 * layout.head_dim +
           t * layout.head_dim;
  };
  // Places, per (layer, head), the rows of `kept` (every token, or a head-dependent subset).
  auto place = [&](KvCache& cache, bool drop_some) {
    for (uint32_t l = 0; l < layout.num_layers; ++l)
      for (uint32_t h = 0; h < layout.kv_heads; ++h) {
        std::vector<int32_t> kept;
        std::vector<float> keys, values;
        for (int32_t t = 0; t < 29; ++t) {
          if (drop_some && t > 0 && (t + h) % 3 == 0) continue;
          kept.push_back(t);
          keys.insert(keys.end(), row(l, 0, h, t), row(l, 0, h, t) + layout.head_dim);
          values.insert(values.end(), row(l, 1, h, t), row(l, 1, h, t) + layout.head_dim);
        }
        ASSERT_TRUE(cache.ImportKept(l, h, 0, 29, kept, keys.data(), values.data()).ok());
      }
    cache.MarkValid(0, 29);
  };
  KvCache all = *model->NewCache(32), some = *model->NewCache(32);
  place(all, false);
  place(some, true);
  auto same = model->Forward(std::span(ids).subspan(29), all);
  auto differs = model->Forward(std::span(ids).subspan(29), some);
  ASSERT_TRUE(same.ok() && differs.ok());
  EXPECT_EQ(*same, *expected);  // keeping everything changes nothing
  double diff = 0;
  for (size_t i = 0; i < expected->size(); ++i) diff += std::abs((*differs)[i] - (*expected)[i]);
  EXPECT_GT(diff, 1e-3);  // dropped tokens are really skipped
  // Truncating forgets the drops: recomputing the tail gives the full cache's logits again.
  some.Truncate(0);
  ASSERT_TRUE(model->Forward(std::span(ids).first(29), some).ok());
  EXPECT_EQ(*model->Forward(std::span(ids).subspan(29), some), *expected);

  const float zeros[8] = {};
  EXPECT_FALSE(all.ImportKept(0, 2, 0, 29, {}, zeros, zeros).ok());  // no head 2
  const int32_t unordered[] = {3, 1};
  EXPECT_FALSE(all.ImportKept(0, 0, 0, 29, unordered, zeros, zeros).ok());
  const int32_t outside[] = {29};
  EXPECT_FALSE(all.ImportKept(0, 0, 0, 29, outside, zeros, zeros).ok());
}

TEST(KvCache, CapturedQueriesDependOnlyOnTheContext) {
  auto model = TinyModel();
  const auto ids = Tokens(20, 10);
  const auto& c = model->config();
  // The last 4 queries of one 20-token forward = those of 16 tokens, then 4 more.
  KvCache one = *model->NewCache(20), two = *model->NewCache(20);
  QueryCapture whole{4, {}}, tail{4, {}};
  ASSERT_TRUE(model->Forward(ids, one, false, &whole).ok());
  ASSERT_TRUE(model->Forward(std::span(ids).first(16), two).ok());
  ASSERT_TRUE(model->Forward(std::span(ids).subspan(16), two, false, &tail).ok());
  ASSERT_EQ(whole.queries.size(), uint64_t(c.num_layers) * c.num_heads * 4 * c.head_dim);
  for (size_t i = 0; i < whole.queries.size(); ++i)
    EXPECT_NEAR(whole.queries[i], tail.queries[i], 1e-4) << i;
  QueryCapture too_many{5, {}};
  KvCache three = *model->NewCache(20);
  EXPECT_FALSE(model->Forward(std::span(ids).first(4), three, false, &too_many).ok());
}

TEST(KvCache, DraftQueriesAreTheQueriesOfGreedyDecodingSteps) {
  auto model = TinyModel();
  const auto ids = Tokens(12, 11);
  const auto& c = model->config();
  KvCache drafting = *model->NewCache(20), stepping = *model->NewCache(20);
  ASSERT_TRUE(model->Forward(std::span(ids).first(11), drafting).ok());
  ASSERT_TRUE(model->Forward(std::span(ids).first(11), stepping).ok());
  auto draft = DraftQueries(*model, drafting, ids[11], 3);
  ASSERT_TRUE(draft.ok()) << draft.status().ToString();
  ASSERT_EQ(draft->size(), uint64_t(c.num_layers) * c.num_heads * 3 * c.head_dim);
  int32_t token = ids[11];
  for (int64_t step = 0; step < 3; ++step) {  // the same steps by hand
    QueryCapture one{1, {}};
    const int32_t input[] = {token};
    auto logits = model->Forward(input, stepping, false, &one);
    ASSERT_TRUE(logits.ok());
    for (int64_t l = 0; l < c.num_layers; ++l)
      for (int64_t h = 0; h < c.num_heads; ++h)
        for (int64_t d = 0; d < c.head_dim; ++d)
          ASSERT_EQ((*draft)[((l * c.num_heads + h) * 3 + step) * c.head_dim + d],
                    one.queries[(l * c.num_heads + h) * c.head_dim + d]);
    token =
        static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
  }
  EXPECT_EQ(drafting.length(), 14);
  EXPECT_FALSE(DraftQueries(*model, drafting, ids[0], 0).ok());
}

TEST(KvCache, MorphKvKeepsACapacityOfTokensPerHeadWhileDecoding) {
  auto model = TinyModel();
  const auto ids = Tokens(30, 12);
  const auto& c = model->config();
  GenerateOptions plain;
  plain.max_new_tokens = 10;
  KvCache full = *model->NewCache(64);
  auto expected = Generate(*model, nullptr, ids, full, plain);
  ASSERT_TRUE(expected.ok());
  // A capacity above everything changes nothing (and drops nothing).
  auto roomy_options = plain;
  roomy_options.morph = {64, 4};
  KvCache roomy = *model->NewCache(64);
  auto same = Generate(*model, nullptr, ids, roomy, roomy_options);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(same->tokens, expected->tokens);
  EXPECT_EQ(roomy.dropped(0), nullptr);
  // 12 tokens per head: the 4 latest plus the 8 older ones the latest queries attend to most.
  auto tight_options = plain;
  tight_options.morph = {12, 4};
  KvCache tight = *model->NewCache(64);
  auto trimmed = Generate(*model, nullptr, ids, tight, tight_options);
  ASSERT_TRUE(trimmed.ok()) << trimmed.status().ToString();
  EXPECT_EQ(trimmed->tokens[0], expected->tokens[0]);  // computed from the full prompt
  const int64_t length = tight.length();
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (int64_t h = 0; h < c.num_kv_heads; ++h) {
      const uint8_t* gone = tight.dropped(l) + h * tight.capacity();
      int64_t held_old = 0;
      for (int64_t p = 0; p < length - 4; ++p) held_old += !gone[p];
      EXPECT_EQ(held_old, 8) << l << "/" << h;
      for (int64_t p = length - 4; p < length; ++p) EXPECT_FALSE(gone[p]);
    }
  auto bad = plain;
  bad.morph = {4, 4};
  KvCache unused = *model->NewCache(64);
  EXPECT_FALSE(Generate(*model, nullptr, ids, unused, bad).ok());
}

}  // namespace
}  // namespace kvcomm::runtime
