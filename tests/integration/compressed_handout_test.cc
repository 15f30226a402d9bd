// kvcommd hands out stored segments compressed to the method and budget a client asks for
// (GetCompressed), through a real socket: the kept rows are the stored rows, query-aware methods
// use the queries sent, KIVI quantizes, and bad requests are refused without harming the daemon.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kvstore/compress/codec.h"
#include "tests/integration/daemon_fixture.h"

namespace kvcomm::testing {
namespace {

using kvstore::compress::DecodeKivi;
using kvstore::compress::DecodeTokenSubset;

class CompressedHandoutTest : public DaemonFixture {
 protected:
  // Stores a 64-token random segment (2 layers, 2 kv heads, head_dim 8, fp32).
  void SetUp() override {
    DaemonFixture::SetUp();
    client_ = Connect();
    ASSERT_NE(client_, nullptr);
    put_ = MakePut(kTokens, 5);  // random bytes: replaced by normal floats
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0, 1);
    std::vector<std::byte> bytes(put_.payload.size());
    for (size_t i = 0; i < bytes.size(); i += sizeof(float)) {
      const float x = normal(rng);
      std::memcpy(bytes.data() + i, &x, sizeof(float));
    }
    put_.payload = Blob::FromVector(std::move(bytes));
    auto info = client_->Put(put_);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    key_ = info->context_key;
    kv_.resize(put_.payload.size() / sizeof(float));
    std::memcpy(kv_.data(), put_.payload.data(), put_.payload.size());
  }
  float Stored(uint32_t layer, uint32_t half, uint32_t head, uint32_t token, uint32_t d) const {
    return kv_[(((layer * 2 + half) * kHeads + head) * kTokens + token) * kDim + d];
  }
  client::CompressedFetch Fetch(std::string method, std::string budget) const {
    client::CompressedFetch f;
    f.key = key_;
    f.method = std::move(method);
    f.budget = std::move(budget);
    f.row_dtype = DType::kF32;
    return f;
  }

  static constexpr uint32_t kLayers = 2, kHeads = 2, kTokens = 64, kDim = 8;
  std::unique_ptr<client::Client> client_;
  client::PutRequest put_;
  SegmentKey key_;
  std::vector<float> kv_;
};

TEST_F(CompressedHandoutTest, StreamingLlmKeepsTheStoredRowsOfSinksAndRecentTokens) {
  auto got = client_->GetCompressed(Fetch("streaming_llm:sinks=4", "12"));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->codec, client::CompressedCodec::kTokenSubset);
  EXPECT_EQ(got->info.context_key, key_);
  EXPECT_EQ(got->kept, std::vector<uint32_t>(kLayers * kHeads, 12));
  auto subset = DecodeTokenSubset(got->bytes.span());
  ASSERT_TRUE(subset.ok()) << subset.status().ToString();
  std::vector<int32_t> expected = {0, 1, 2, 3};
  for (int32_t t = kTokens - 8; t < static_cast<int32_t>(kTokens); ++t) expected.push_back(t);
  size_t row = 0;
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h)
      for (size_t i = 0; i < expected.size(); ++i, ++row) {
        ASSERT_EQ(subset->indices[row], expected[i]);
        for (uint32_t d = 0; d < kDim; ++d) {
          ASSERT_EQ(subset->keys[row * kDim + d], Stored(l, 0, h, expected[i], d));
          ASSERT_EQ(subset->values[row * kDim + d], Stored(l, 1, h, expected[i], d));
        }
      }
}

TEST_F(CompressedHandoutTest, SnapKvScoresWithTheQueriesTheClientSends) {
  // Window queries of 4 query heads (2 per kv head) pointing at token 20's key.
  auto fetch = Fetch("snapkv:window=4,kernel=1", "5");
  fetch.q_heads = 4;
  fetch.window = 4;
  fetch.head_dim = kDim;
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t qh = 0; qh < 4; ++qh)
      for (uint32_t i = 0; i < 4; ++i)
        for (uint32_t d = 0; d < kDim; ++d)
          fetch.queries.push_back(8 * Stored(l, 0, qh / 2, 20, d));
  auto got = client_->GetCompressed(fetch);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  auto subset = DecodeTokenSubset(got->bytes.span());
  ASSERT_TRUE(subset.ok());
  for (size_t head = 0; head < kLayers * kHeads; ++head) {
    const std::vector<int32_t> kept(subset->indices.begin() + head * 5,
                                    subset->indices.begin() + head * 5 + 5);
    EXPECT_EQ(kept, (std::vector<int32_t>{20, 60, 61, 62, 63})) << head;
  }
  fetch.queries.clear();  // the same method without queries is refused by the daemon
  fetch.q_heads = fetch.window = 0;
  auto refused = client_->GetCompressed(fetch);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("query-aware"), std::string::npos);
}

TEST_F(CompressedHandoutTest, KiviQuantizesEveryTokenWithinItsStep) {
  auto got = client_->GetCompressed(Fetch("kivi:bits=4,group=8,residual=16", ""));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->codec, client::CompressedCodec::kKivi);
  EXPECT_EQ(got->bytes.size(), kvstore::compress::KiviBytes(
                                   {kLayers, kHeads, kTokens, kDim, DType::kF32}, {4, 8, 16}));
  EXPECT_LT(got->bytes.size(), put_.payload.size() * 6 / 10);  // 16 of 64 tokens kept in fp32
  auto decoded = DecodeKivi(got->bytes.span());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ASSERT_EQ(decoded->kv.size(), kv_.size());
  double worst = 0;
  for (size_t i = 0; i < kv_.size(); ++i)
    worst = std::max(worst, double(std::abs(decoded->kv[i] - kv_[i])));
  EXPECT_GT(worst, 0.0);  // quantized, not copied
  EXPECT_LT(worst, 1.0);  // half a 4-bit step of unit-normal groups
}

TEST_F(CompressedHandoutTest, BadRequestsAreRefusedAndTheDaemonCarriesOn) {
  struct Case {
    client::CompressedFetch fetch;
    ErrorCode code;
    std::string expect;
  };
  std::vector<Case> cases;
  cases.push_back({Fetch("h2o_plus", "8"), ErrorCode::kInvalidArgument, "unknown compression"});
  cases.push_back({Fetch("key_norm", "65"), ErrorCode::kInvalidArgument, "exceeds the segment"});
  cases.push_back({Fetch("key_norm", "8"), ErrorCode::kNotFound, ""});
  cases.back().fetch.key = SegmentKey{1, 2};
  cases.push_back({Fetch("leverage", "8"), ErrorCode::kInvalidArgument, "ropeInvFreq has 3"});
  cases.back().fetch.rope_inv_freq = {1, 2, 3};
  cases.push_back({Fetch("snapkv:window=4", "8"), ErrorCode::kInvalidArgument, "shape"});
  cases.back().fetch.q_heads = 4;
  cases.back().fetch.window = 4;
  cases.back().fetch.head_dim = 4;  // the segment's head_dim is 8
  cases.back().fetch.queries.assign(kLayers * 4 * 4 * 4, 0.5f);
  cases.push_back({Fetch("snapkv:window=4", "8"), ErrorCode::kInvalidArgument, "non-finite"});
  cases.back().fetch.q_heads = 4;
  cases.back().fetch.window = 4;
  cases.back().fetch.head_dim = kDim;
  cases.back().fetch.queries.assign(kLayers * 4 * 4 * kDim, NAN);
  cases.push_back({Fetch("duo", "8"), ErrorCode::kInvalidArgument, "headScores has 3"});
  cases.back().fetch.head_scores = {1, 2, 3};
  cases.push_back({Fetch("key_norm", "8"), ErrorCode::kInvalidArgument, "rowDtype"});
  cases.back().fetch.row_dtype = DType::kI32;
  cases.push_back({Fetch(std::string(300, 'a'), "8"), ErrorCode::kInvalidArgument, "at most 256"});
  for (const auto& c : cases) {
    auto got = client_->GetCompressed(c.fetch);
    ASSERT_FALSE(got.ok()) << c.expect;
    EXPECT_EQ(got.status().code(), c.code) << got.status().ToString();
    EXPECT_NE(got.status().message().find(c.expect), std::string::npos)
        << c.expect << " / " << got.status().message();
  }
  auto garbage = MakePut(kTokens, 6);  // random bytes: NaNs and infinities among them
  auto stored = client_->Put(garbage);
  ASSERT_TRUE(stored.ok());
  auto not_finite = Fetch("key_norm", "8");
  not_finite.key = stored->context_key;
  auto refused = client_->GetCompressed(not_finite);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("non-finite KV value"), std::string::npos);
  auto uneven = Fetch("snapkv", "8");  // refused by the client before sending
  uneven.q_heads = 4;
  uneven.window = 4;
  uneven.head_dim = kDim;
  uneven.queries.assign(100, 1.f);
  EXPECT_EQ(client_->GetCompressed(uneven).status().code(), ErrorCode::kInvalidArgument);
  auto duo = Fetch("duo:sinks=2,recent=6,retrieval=50", "");  // 2 of 4 heads keep everything
  duo.head_scores = {0.9f, 0.1f, 0.2f, 0.8f};
  auto split = client_->GetCompressed(duo);
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  EXPECT_EQ(split->kept, (std::vector<uint32_t>{kTokens, 8, 8, kTokens}));
  EXPECT_TRUE(client_->Ping().ok());
  EXPECT_TRUE(client_->GetCompressed(Fetch("streaming_llm", "8")).ok());
}

}  // namespace
}  // namespace kvcomm::testing
